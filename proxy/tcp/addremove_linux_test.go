package tcp

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

// TestRemoveResetsDialing: Remove resets a connection of the removed mapping
// whose backend dial is still under way (the backend drops every SYN and the
// dial timeout is a minute), and counts it as a reset, not a failed dial;
// the loops' dial lists go on working for the mapping that stays.
func TestRemoveResetsDialing(t *testing.T) {
	testenv.RequireNetAdmin(t)
	hole := fileAddr(t, listenFile(t, lo4, sockopt.Options{DropAll: true}))
	_, be := newBackend(t, echo)
	files, addrs := listenFiles(t, 1)
	p, err := New(files[0], Config{Backend: be, DialTimeout: time.Minute})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	serve(t, p)
	f := listenFile(t, lo4, sockopt.Options{})
	addr := fileAddr(t, f)
	if err := p.Add(Mapping{File: f, Backend: hole}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	var cs *proxy.StreamCounters
	p.EachMapping(func(listen, _ netip.AddrPort, c *proxy.StreamCounters) {
		if listen == addr {
			cs = c
		}
	})
	var clients []*net.TCPConn
	for range 3 {
		c := dial(t, addr)
		c.SetReadDeadline(time.Now().Add(waitFor))
		clients = append(clients, c)
	}
	waitUntil(t, "three dials toward the black hole", func() bool { return cs.Active.Load() == 3 })
	if err := p.Remove(addr); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for i, c := range clients {
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client %d of the removed mapping, still dialing: read %v, want ECONNRESET", i, err)
		}
	}
	if s := cs.Snapshot(); s.Resets != 3 || s.DialErrors != 0 || s.Active != 0 {
		t.Errorf("counters of the removed mapping: %+v; want 3 resets, no dial error, none active", s)
	}
	for range 3 {
		roundTrip(t, dial(t, addrs[0]), "the mapping that stays, after Remove")
	}
}

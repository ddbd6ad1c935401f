package tcp

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestAddWhilePaused: Add puts its socket into every loop's epoll set, also
// one whose accepting is paused after an accept error. Another failure
// while paused takes it out again (it would otherwise report its waiting
// connection over and over), and resuming finds it there without failing.
func TestAddWhilePaused(t *testing.T) {
	p := NewListener(loopback(t), Config{Backend: refusedAddr(t)})
	t.Cleanup(func() { p.Close() })
	l, err := newLoop(p, false) // never run: the test calls its handlers
	if err != nil {
		t.Fatalf("newLoop: %v", err)
	}
	p.mu.Lock()
	p.loops = []*loop{l}
	p.mu.Unlock()
	t.Cleanup(func() {
		p.mu.Lock()
		p.loops = nil
		p.mu.Unlock()
		l.close()
	})
	listeners := func() int {
		var evs [8]unix.EpollEvent
		n, err := unix.EpollWait(l.epfd, evs[:], 0)
		if err != nil {
			t.Fatalf("epoll_wait: %v", err)
		}
		k := 0
		for _, ev := range evs[:n] {
			if ev.Pad&3 == evListener {
				k++
			}
		}
		return k
	}

	l.pause(time.Hour)
	files, addrs := listenFiles(t, 1)
	if err := p.Add(Mapping{File: files[0], Backend: refusedAddr(t)}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	dial(t, addrs[0]) // waits in the added socket's queue
	if n := listeners(); n != 1 {
		t.Fatalf("paused loop after Add: %d listening sockets ready, want the added one", n)
	}
	l.pause(time.Hour)
	if n := listeners(); n != 0 {
		t.Fatalf("after another pause: %d listening sockets ready, want none", n)
	}
	if err := p.Add(Mapping{File: listenFile(t, lo4, sockopt.Options{}), Backend: refusedAddr(t)}); err != nil {
		t.Fatalf("second Add: %v", err)
	}
	l.resumeAt = l.now()
	l.timers() // resumes: the second added socket is in the set already
	if p.fatal != nil || l.paused {
		t.Fatalf("resuming after Add: paused %t, serving failed: %v", l.paused, p.fatal)
	}
	if n := listeners(); n != 1 {
		t.Fatalf("after resuming: %d listening sockets ready, want 1", n)
	}
}

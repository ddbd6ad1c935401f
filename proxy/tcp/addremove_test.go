package tcp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
)

// echoConn dials addr and completes one round trip.
func echoConn(t *testing.T, addr netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := echoTrip(c, "hello"); err != nil {
		t.Fatalf("round trip through %s: %v", addr, err)
	}
	return c
}

func echoTrip(c *net.TCPConn, msg string) error {
	c.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// TestRangeAddRemoveChurn adds and removes mappings over and over while the
// connections of a mapping that stays keep relaying, with enough
// connections open at once that every event loop relays some: each removed
// mapping's connections are reset by the time Remove returns, those of the
// mapping that stays never notice, its counters stay exact, and nothing is
// left open.
func TestRangeAddRemoveChurn(t *testing.T) {
	b, be := newBackend(t, echo)
	files, addrs := listenFiles(t, 1)
	p, err := New(files[0], Config{Backend: be})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	serve(t, p)
	const stay = 8
	var kept []*net.TCPConn
	for range stay {
		kept = append(kept, echoConn(t, addrs[0]))
	}
	stop := make(chan struct{})
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed error
	)
	for i, c := range kept {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := echoTrip(c, fmt.Sprintf("kept %d %d", i, n)); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		if failed != nil {
			t.Fatalf("a connection of the mapping that stays failed: %v", failed)
		}
	}()

	fdsBefore := openFDs()
	for round := range 20 {
		f, addr := listenFiles(t, 1)
		if err := p.Add(Mapping{File: f[0], Backend: be}); err != nil {
			t.Fatalf("round %d: Add: %v", round, err)
		}
		var cut []*net.TCPConn
		for range 4 {
			cut = append(cut, echoConn(t, addr[0]))
		}
		if err := p.Remove(addr[0]); err != nil {
			t.Fatalf("round %d: Remove: %v", round, err)
		}
		for _, c := range cut {
			c.SetDeadline(time.Now().Add(waitFor))
			if _, err := io.WriteString(c, "after Remove"); err == nil {
				_, err = c.Read(make([]byte, 64))
				if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("round %d: a connection of the removed mapping was not reset: read %v", round, err)
				}
			}
			c.Close()
		}
		f[0].Close()
	}
	snap := map[netip.AddrPort]proxy.StreamSnapshot{}
	p.EachMapping(func(listen, _ netip.AddrPort, c *proxy.StreamCounters) { snap[listen] = c.Snapshot() })
	if len(snap) != 1 || snap[addrs[0]].Active != stay {
		t.Errorf("after the churn: mappings %+v; want only %s with %d active", snap, addrs[0], stay)
	}
	// The backend closes its side of a reset connection on its own
	// goroutine: wait for it.
	waitUntil(t, "every descriptor of the removed mappings closed", func() bool {
		return b.open() == stay && openFDs() <= fdsBefore
	})
}

// openFDs counts this process's open descriptors, or returns 0 where
// /dev/fd cannot be read.
func openFDs() int {
	ents, err := os.ReadDir("/dev/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

package udp

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/proxytest"
)

// startRange serves a range of n host sockets on 127.0.0.1, socket i relayed
// to a backend that prefixes its answers with "backend i:". It returns the
// range and its ports' addresses.
func startRange(t testing.TB, n int, cfg Config) (*Range, []netip.AddrPort) {
	t.Helper()
	var (
		ms    []Mapping
		addrs []netip.AddrPort
	)
	for i := range n {
		f := hostSocket(t, "127.0.0.1:0")
		ms = append(ms, Mapping{File: f, Backend: taggedBackend(t, "127.0.0.1:0", fmt.Sprintf("backend %d:", i))})
	}
	r, err := NewRange(ms, cfg)
	if err != nil {
		t.Fatalf("NewRange: %v", err)
	}
	for _, m := range r.l.members {
		addrs = append(addrs, hostPort(m))
	}
	for _, m := range ms {
		m.File.Close() // the range has its own descriptors
	}
	proxytest.Serve(t, r)
	return r, addrs
}

func TestRangeRelaysEachPort(t *testing.T) {
	const n = 6
	_, addrs := startRange(t, n, Config{})
	for i := n - 1; i >= 0; i-- {
		msg := fmt.Appendf(nil, "to port %d", i)
		want := fmt.Sprintf("backend %d:to port %d", i, i)
		if got := roundTrip(t, dial(t, addrs[i]), msg); string(got) != want {
			t.Fatalf("port %d answered %q, want %q", i, got, want)
		}
	}
}

// TestRangeRepliesFromManyPorts sends bursts to every port at once, so that
// one round of the loop handles replies for several ports, and checks that
// each client gets exactly its own answers: the ports share the reply batch,
// and one port's replies must be sent before the next port's take it.
func TestRangeRepliesFromManyPorts(t *testing.T) {
	const (
		n     = 4
		burst = 100
	)
	r, addrs := startRange(t, n, Config{})
	conns := make([]*net.UDPConn, n)
	for i := range conns {
		conns[i] = dial(t, addrs[i])
		roundTrip(t, conns[i], []byte("open the flow")) // so the burst is not the flow's first
	}
	for k := range burst {
		for i, c := range conns {
			if _, err := c.Write(fmt.Appendf(nil, "%d.%d", i, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, c := range conns {
		seen := make(map[string]bool)
		buf := make([]byte, 256)
		prefix := fmt.Sprintf("backend %d:%d.", i, i)
		for len(seen) < burst {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, err := c.Read(buf)
			if err != nil {
				t.Fatalf("port %d: %d of %d answers, then %v (stats %+v)", i, len(seen), burst, err, r.Stats())
			}
			got := string(buf[:m])
			if !strings.HasPrefix(got, prefix) {
				t.Fatalf("port %d's client got %q, want an answer starting %q", i, got, prefix)
			}
			seen[got] = true
		}
	}
	if s := r.Stats(); s.Dropped != 0 || s.Flows != n {
		t.Errorf("stats %+v, want no drop and %d flows", s, n)
	}
}

// TestRangeOneLoop checks what a range of n ports holds: one goroutine, its
// n duplicated host sockets and one epoll set.
func TestRangeOneLoop(t *testing.T) {
	const n = 50
	before := countFDs(t)
	_, addrs := startRange(t, n, Config{})
	// startRange's backends hold one descriptor each.
	if got := countFDs(t) - before - n; got != n+1 {
		t.Errorf("a %d-port range holds %d descriptors, want %d", n, got, n+1)
	}
	roundTrip(t, dial(t, addrs[n-1]), []byte("hello"))
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if loops := strings.Count(stacks, "udp.(*loop).run("); loops != 1 {
		t.Errorf("%d event loops for a %d-port range, want 1", loops, n)
	}
}

// TestRangeExpiry checks that flows expire on each port of a range by their
// own clock, with the loop's one deadline.
func TestRangeExpiry(t *testing.T) {
	r, addrs := startRange(t, 3, Config{IdleTimeout: 200 * time.Millisecond})
	roundTrip(t, dial(t, addrs[2]), []byte("first"))
	waitFor(t, 5*time.Second, "the flow on port 2 to expire", func() bool { return r.Stats().FlowsExpired == 1 })
	roundTrip(t, dial(t, addrs[0]), []byte("second"))
	roundTrip(t, dial(t, addrs[1]), []byte("third"))
	waitFor(t, 5*time.Second, "the flows on ports 0 and 1 to expire", func() bool { return r.Stats().FlowsExpired == 3 })
	if s := r.Stats(); s.Flows != 0 || s.FlowsCreated != 3 {
		t.Errorf("stats %+v, want 3 flows created and none left", s)
	}
}

func TestRangeShutdown(t *testing.T) {
	r, addrs := startRange(t, 3, Config{IdleTimeout: 300 * time.Millisecond})
	old := dial(t, addrs[1])
	roundTrip(t, old, []byte("before"))
	// The new client writes to another port of the range.
	checkShutdownDrains(t, r, old, addrs[2], "backend 1:during")
}

func TestNewRangeRejects(t *testing.T) {
	be := echoBackend(t, "127.0.0.1:0")
	f := hostSocket(t, "127.0.0.1:0")
	before := countFDs(t)
	for _, tc := range []struct {
		name string
		ms   []Mapping
	}{
		{"no mapping", nil},
		{"nil file", []Mapping{{f, be}, {nil, be}}},
		{"invalid backend", []Mapping{{f, be}, {f, netip.AddrPort{}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := NewRange(tc.ms, Config{}); err == nil {
				r.Close()
				t.Fatal("NewRange succeeded")
			}
		})
	}
	if got := countFDs(t); got != before {
		t.Errorf("%d descriptors after the failed NewRange calls, %d before", got, before)
	}
}

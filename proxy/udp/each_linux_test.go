package udp

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

type mappingStats struct {
	listen, backend netip.AddrPort
	s               Stats
}

func eachMapping(m interface {
	EachMapping(func(listen, backend netip.AddrPort, s Stats))
}) []mappingStats {
	var got []mappingStats
	m.EachMapping(func(listen, backend netip.AddrPort, s Stats) {
		got = append(got, mappingStats{listen, backend, s})
	})
	return got
}

// TestEachMapping checks that a Range reports each socket with its own
// address, backend and counters, in the order of the mappings, and that a
// Proxy reports its one socket; also after Close.
func TestEachMapping(t *testing.T) {
	const n = 3
	var (
		ms       []Mapping
		backends []netip.AddrPort
	)
	for range n {
		b := taggedBackend(t, "127.0.0.1:0", "")
		ms = append(ms, Mapping{File: hostSocket(t, "127.0.0.1:0"), Backend: b})
		backends = append(backends, b)
	}
	r, err := NewRange(ms, Config{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(context.Background()) }()
	var addrs []netip.AddrPort
	for _, m := range r.l.members {
		addrs = append(addrs, hostPort(m))
	}
	roundTrip(t, dial(t, addrs[1]), []byte("to the middle port"))
	roundTrip(t, dial(t, addrs[1]), []byte("again, from a second client"))
	// A reply is counted once sendmmsg returns, which may be after the
	// client read it.
	waitFor(t, 5*time.Second, "the second reply to be counted", func() bool { return r.Stats().ToClient == 2 })

	check := func(when string, flows int) {
		got := eachMapping(r)
		if len(got) != n {
			t.Fatalf("%s: EachMapping reported %d mappings, want %d", when, len(got), n)
		}
		for i, m := range got {
			if m.listen != addrs[i] || m.backend != backends[i] {
				t.Errorf("%s: mapping %d is %s to %s, want %s to %s", when, i, m.listen, m.backend, addrs[i], backends[i])
			}
			want := Stats{}
			if i == 1 {
				want = Stats{Flows: flows, FlowsCreated: 2, ToBackend: 2, ToClient: 2,
					BytesToBackend: uint64(len("to the middle port") + len("again, from a second client")),
					BytesToClient:  uint64(len("to the middle port") + len("again, from a second client"))}
			}
			if m.s != want {
				t.Errorf("%s: mapping %d counters %+v, want %+v", when, i, m.s, want)
			}
		}
	}
	check("serving", 2)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	check("after Close", 0)

	p, err := New(hostSocket(t, "127.0.0.1:0"), Config{Backend: backends[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := eachMapping(p); len(got) != 1 || got[0].listen != hostPort(p) || got[0].backend != backends[0] || got[0].s != (Stats{}) {
		t.Errorf("Proxy.EachMapping reported %+v, want one idle mapping %s to %s", got, hostPort(p), backends[0])
	}
}

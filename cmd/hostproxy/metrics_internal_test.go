package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/hostproxy/hostproxy/internal/metrics"
	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

// fakeStream is a stream proxy with fixed mappings, standing in for the
// TCP and SCTP relays.
type fakeStream struct {
	listen, backend []netip.AddrPort
	counters        []*proxy.StreamCounters
}

func (f *fakeStream) Serve(ctx context.Context) error    { return proxy.ErrClosed }
func (f *fakeStream) Close() error                       { return nil }
func (f *fakeStream) Shutdown(ctx context.Context) error { return nil }

func (f *fakeStream) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {
	for i := range f.listen {
		fn(f.listen[i], f.backend[i], f.counters[i])
	}
}

// silent is a proxy that reports no counters (as the TCP relay until it
// implements proxy.StreamStats).
type silent struct{}

func (silent) Serve(ctx context.Context) error    { return proxy.ErrClosed }
func (silent) Close() error                       { return nil }
func (silent) Shutdown(ctx context.Context) error { return nil }

func newFake(n int, listen, backend string) *fakeStream {
	f := &fakeStream{}
	for i := range n {
		l, b := netip.MustParseAddrPort(listen), netip.MustParseAddrPort(backend)
		f.listen = append(f.listen, netip.AddrPortFrom(l.Addr(), l.Port()+uint16(i)))
		f.backend = append(f.backend, netip.AddrPortFrom(b.Addr(), b.Port()+uint16(i)))
		f.counters = append(f.counters, new(proxy.StreamCounters))
	}
	return f
}

// TestStatsLinesStreams: SIGUSR2's lines name each stream mapping with its
// protocol, in the order of the proxies and of their mappings, and a proxy
// that reports no counters is left out.
func TestStatsLinesStreams(t *testing.T) {
	tcp := newFake(2, "127.0.0.1:8000", "172.17.0.2:80")
	tcp.counters[1].Accepted.Add(5)
	tcp.counters[1].Active.Add(2)
	tcp.counters[1].BytesUp.Add(100)
	tcp.counters[1].BytesDown.Add(2000)
	tcp.counters[1].DialErrors.Add(1)
	tcp.counters[1].AcceptErrors.Add(3)
	tcp.counters[1].Resets.Add(4)
	sctp := newFake(1, "[::1]:9000", "[fd00::2]:9000")
	sctp.counters[0].Accepted.Add(1)
	var out testenv.Buffer
	s := &server{
		log:     logging.Nop(),
		proxies: []proxy.Proxy{tcp, silent{}, sctp},
		protos:  []sockopt.Proto{sockopt.TCP, sockopt.TCP, sockopt.SCTP},
		stderr:  &out,
	}
	if !s.statsRequested(statsSignal) {
		t.Fatal("the stats signal was not handled")
	}
	want := "" +
		"hostproxy stats proto=tcp listen=127.0.0.1:8000 backend=172.17.0.2:80 connections=0 active=0 bytes_up=0 bytes_down=0 dial_errors=0 accept_errors=0 resets=0\n" +
		"hostproxy stats proto=tcp listen=127.0.0.1:8001 backend=172.17.0.2:81 connections=5 active=2 bytes_up=100 bytes_down=2000 dial_errors=1 accept_errors=3 resets=4\n" +
		"hostproxy stats proto=sctp listen=[::1]:9000 backend=[fd00::2]:9000 connections=1 active=0 bytes_up=0 bytes_down=0 dial_errors=0 accept_errors=0 resets=0\n"
	if got := out.String(); got != want {
		t.Errorf("stats lines:\n%s\nwant:\n%s", got, want)
	}
	if s.statsRequested(stopSignals[0]) {
		t.Error("a stop signal was taken for the stats signal")
	}

	// The same mappings in the exposition.
	c := newCollector(s)
	text := c.r.Exposition(c.collect())
	v, err := metrics.Parse(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if got := v[`hostproxy_resets_total{proto="tcp",listen="127.0.0.1:8001",backend="172.17.0.2:81"}`]; got != 4 {
		t.Errorf("resets %v, want 4:\n%s", got, text)
	}
	if got := strings.Count(string(text), "hostproxy_connections_total{"); got != 3 {
		t.Errorf("%d connection series, want 3", got)
	}
}

// TestCollectAllocs: reading the counters and rendering them allocate
// nothing once the buffers have grown.
func TestCollectAllocs(t *testing.T) {
	s := &server{
		proxies: []proxy.Proxy{newFake(50, "127.0.0.1:8000", "172.17.0.2:80"), newFake(3, "[::1]:9000", "[fd00::2]:9000")},
		protos:  []sockopt.Proto{sockopt.TCP, sockopt.SCTP},
	}
	c := newCollector(s)
	if n := testing.AllocsPerRun(50, func() { c.r.Exposition(c.collect()) }); n != 0 {
		t.Errorf("%v allocations per collect and render, want 0", n)
	}
}

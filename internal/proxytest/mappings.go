package proxytest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
)

// Mapper is a proxy whose mappings (a host socket and its backend) can be
// added and removed while it serves: tcp.Proxy, udp.Range and sctp.Range.
// Each takes its own protocol's Mapping in Add, so a MappingsHarness calls
// Add for Mappings.
type Mapper interface {
	proxy.Proxy
	Remove(listen netip.AddrPort) error
}

// MappingsHarness makes the proxies Mappings is checked on.
type MappingsHarness struct {
	// New returns a proxy of one mapping, a fresh host socket relayed to
	// an echo backend, and that socket's address. It is not serving yet.
	// New registers the clean-up of everything but the proxy with
	// t.Cleanup; Mappings closes the proxy.
	New func(t *testing.T) (Mapper, netip.AddrPort)
	// Socket returns a fresh host socket on loopback (listening, for a
	// stream protocol) and its address, and registers its closing with
	// t.Cleanup.
	Socket func(t *testing.T) (*os.File, netip.AddrPort)
	// Add calls p.Add with a mapping of f to a fresh echo backend.
	Add func(t *testing.T, p Mapper, f *os.File) error
	// Dial opens a client to addr and completes one round trip through it
	// before ctx is done; otherwise it returns an error (and closes what
	// it opened).
	Dial func(ctx context.Context, addr netip.AddrPort) (Client, error)
	// Listed returns the host addresses p reports counters for
	// (EachMapping), in its order.
	Listed func(p Mapper) []netip.AddrPort
	// Stream says that a cut client learns of it (reset or abort), where
	// a UDP client only meets silence.
	Stream bool
	// Probe bounds a Dial or a round trip that is expected to fail; zero
	// means DefaultProbeTimeout.
	Probe time.Duration
}

// Mappings runs, as subtests of t, the contract of adding and removing
// mappings that tcp.Proxy, udp.Range and sctp.Range keep, stated here once:
//
//   - Add(m) starts relaying m's socket, before Serve or while serving;
//     the clients of the other mappings are not disturbed (one of them
//     makes round trips without pause all along). It duplicates
//     m.File: the caller's file stays its own.
//   - Add of an address the proxy already serves fails, and so does Remove
//     of an address it does not serve; neither error is proxy.ErrClosed.
//   - Remove(listen), also while serving, closes the proxy's descriptor
//     of the socket, cuts the mapping's open clients as Close cuts them (a
//     stream's connections and associations are reset or aborted on both
//     sides, a UDP flow is closed) and returns once it has; from then on
//     the socket is not relayed, even while the caller's file keeps it
//     open, and its counters are no longer reported (EachMapping). The
//     other mappings and their clients are not disturbed. The same socket
//     can be added again.
//   - After Close, and once Shutdown has begun, Add and Remove return an
//     error wrapping proxy.ErrClosed.
func Mappings(t *testing.T, h MappingsHarness) {
	t.Helper()
	if h.Probe <= 0 {
		h.Probe = DefaultProbeTimeout
	}
	t.Run("AddRemoveWhileServing", func(t *testing.T) { addRemoveWhileServing(t, h) })
	t.Run("AddBeforeServe", func(t *testing.T) { addBeforeServe(t, h) })
	t.Run("AfterClose", func(t *testing.T) { mappingsAfterClose(t, h) })
	t.Run("DuringShutdown", func(t *testing.T) { mappingsDuringShutdown(t, h) })
}

// mapped is a Mapper whose Serve runs in a goroutine.
type mapped struct {
	p    Mapper
	done chan error
}

func serveMapper(t *testing.T, p Mapper, ctx context.Context) *mapped {
	m := &mapped{p: p, done: make(chan error, 1)}
	t.Cleanup(func() { p.Close() })
	go func() { m.done <- p.Serve(ctx) }()
	return m
}

// dialTo opens a client to addr that must work.
func dialTo(t *testing.T, h MappingsHarness, addr netip.AddrPort, what string) Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	defer cancel()
	c, err := h.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("%s: dial %s through the proxy: %v", what, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// busyClient is a client making round trips without pause in a goroutine.
type busyClient struct {
	trips atomic.Int64
	stop  chan struct{}
	done  chan error // the first failure, or nil once stopped
}

// keepBusy starts c's round trips.
func keepBusy(c Client) *busyClient {
	b := &busyClient{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		for i := 0; ; i++ {
			select {
			case <-b.stop:
				b.done <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
			err := c.RoundTrip(ctx, fmt.Appendf(nil, "busy %d", i))
			cancel()
			if err != nil {
				b.done <- fmt.Errorf("round trip %d: %w", i, err)
				return
			}
			b.trips.Add(1)
		}
	}()
	return b
}

// check waits for two more round trips, then stops the client and fails
// t if any round trip failed.
func (b *busyClient) check(t *testing.T, what string) {
	t.Helper()
	want := b.trips.Load() + 2
	deadline := time.Now().Add(WaitFor)
	for b.trips.Load() < want && len(b.done) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling interval, not a stand-in for the condition
	}
	close(b.stop)
	if err := <-b.done; err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if b.trips.Load() < want {
		t.Fatalf("%s: no round trip completed within %v", what, WaitFor)
	}
}

// notRelayed checks that a new client to addr gets no round trip.
func notRelayed(t *testing.T, h MappingsHarness, addr netip.AddrPort, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Probe)
	defer cancel()
	if c, err := h.Dial(ctx, addr); err == nil {
		c.Close()
		t.Fatalf("%s: a new client of %s reaches the backend", what, addr)
	}
}

// cutBy checks that c, a client of a removed mapping, no longer reaches the
// backend: a stream client because its connection was reset, not because
// the probe timed out.
func cutBy(t *testing.T, h MappingsHarness, c Client, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Probe)
	defer cancel()
	err := c.RoundTrip(ctx, []byte("after Remove"))
	switch {
	case err == nil:
		t.Fatalf("%s: an open client of the removed mapping still reaches the backend", what)
	case h.Stream && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)):
		t.Fatalf("%s: an open client of the removed mapping was not cut (the round trip timed out: %v)", what, err)
	}
}

func listed(t *testing.T, h MappingsHarness, p Mapper, addr netip.AddrPort, want bool, what string) {
	t.Helper()
	if h.Listed == nil {
		return
	}
	if got := slices.Contains(h.Listed(p), addr); got != want {
		t.Fatalf("%s: EachMapping reports %s: %t, want %t (reported: %v)", what, addr, got, want, h.Listed(p))
	}
}

func addRemoveWhileServing(t *testing.T, h MappingsHarness) {
	p, first := h.New(t)
	m := serveMapper(t, p, context.Background())
	c0 := dialTo(t, h, first, "the first mapping")
	busy := keepBusy(dialTo(t, h, first, "a busy client of the first mapping"))

	f, addr := h.Socket(t)
	if err := h.Add(t, p, f); err != nil {
		t.Fatalf("Add while serving: %v", err)
	}
	c1 := dialTo(t, h, addr, "a mapping added while serving")
	roundTrip(t, c0, "the first mapping after Add")
	listed(t, h, p, addr, true, "after Add")
	if err := h.Add(t, p, f); err == nil || errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Add of an address already served = %v, want an error other than proxy.ErrClosed", err)
	}

	if err := p.Remove(addr); err != nil {
		t.Fatalf("Remove while serving: %v", err)
	}
	cutBy(t, h, c1, "after Remove")
	notRelayed(t, h, addr, "after Remove, the caller's file still open")
	roundTrip(t, c0, "the first mapping after Remove")
	dialTo(t, h, first, "the first mapping after Remove")
	listed(t, h, p, addr, false, "after Remove")
	listed(t, h, p, first, true, "after Remove")
	if err := p.Remove(addr); err == nil || errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("second Remove = %v, want an error other than proxy.ErrClosed", err)
	}
	if err := p.Remove(netip.MustParseAddrPort("127.0.0.1:9")); err == nil || errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Remove of an address never served = %v, want an error other than proxy.ErrClosed", err)
	}

	if err := h.Add(t, p, f); err != nil {
		t.Fatalf("Add of the removed socket again: %v", err)
	}
	dialTo(t, h, addr, "the socket added again")
	busy.check(t, "a client of the first mapping making round trips all along")

	if err := p.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case err := <-m.done:
		if err != nil {
			t.Fatalf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(WaitFor):
		t.Fatalf("Serve did not return within %v of Close", WaitFor)
	}
}

func addBeforeServe(t *testing.T, h MappingsHarness) {
	p, first := h.New(t)
	t.Cleanup(func() { p.Close() })
	f, addr := h.Socket(t)
	if err := h.Add(t, p, f); err != nil {
		t.Fatalf("Add before Serve: %v", err)
	}
	g, gone := h.Socket(t)
	if err := h.Add(t, p, g); err != nil {
		t.Fatalf("Add before Serve: %v", err)
	}
	if err := p.Remove(gone); err != nil {
		t.Fatalf("Remove before Serve: %v", err)
	}
	serveMapper(t, p, context.Background())
	dialTo(t, h, addr, "a mapping added before Serve")
	dialTo(t, h, first, "the first mapping")
	notRelayed(t, h, gone, "a mapping removed before Serve")
	listed(t, h, p, gone, false, "a mapping removed before Serve")
}

func mappingsAfterClose(t *testing.T, h MappingsHarness) {
	p, first := h.New(t)
	m := serveMapper(t, p, context.Background())
	dialTo(t, h, first, "before Close")
	if err := p.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	<-m.done
	f, _ := h.Socket(t)
	if err := h.Add(t, p, f); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Add after Close = %v, want proxy.ErrClosed", err)
	}
	if err := p.Remove(first); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Remove after Close = %v, want proxy.ErrClosed", err)
	}
}

func mappingsDuringShutdown(t *testing.T, h MappingsHarness) {
	p, first := h.New(t)
	m := serveMapper(t, p, context.Background())
	c := dialTo(t, h, first, "before Shutdown")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- p.Shutdown(ctx) }()
	deadline := time.Now().Add(WaitFor)
	for {
		roundTrip(t, c, "during Shutdown") // keeps a UDP flow from expiring
		pctx, pcancel := context.WithTimeout(context.Background(), h.Probe)
		nc, err := h.Dial(pctx, first)
		pcancel()
		if err != nil {
			break // Shutdown has begun
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatalf("new clients still accepted %v after Shutdown began", WaitFor)
		}
	}
	f, _ := h.Socket(t)
	if err := h.Add(t, p, f); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Add during Shutdown = %v, want proxy.ErrClosed", err)
	}
	if err := p.Remove(first); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Remove during Shutdown = %v, want proxy.ErrClosed", err)
	}
	roundTrip(t, c, "the open client after Add and Remove during Shutdown")
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown cut short = %v, want context.Canceled", err)
		}
	case <-time.After(WaitFor):
		t.Fatalf("Shutdown did not return within %v of its context's end", WaitFor)
	}
	<-m.done
}

// Package proxytest holds the one test of the lifecycle contract of
// proxy.Proxy (Serve, Close, Shutdown), which every relay runs with a
// Harness of its own: proxy/tcp, proxy/udp (Proxy and Range) and proxy/sctp.
// The contract itself is stated once, in proxy.Proxy's doc comment; Contract
// checks each of its sentences against real sockets. Mappings states and
// checks the contract of adding and removing mappings while serving, which
// tcp.Proxy, udp.Range and sctp.Range keep.
package proxytest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
)

// WaitFor bounds every step the contract expects to succeed. It is generous
// because the SCTP suite runs under CPU emulation.
const WaitFor = 20 * time.Second

// DefaultProbeTimeout is the Probe of a Harness that leaves it zero.
const DefaultProbeTimeout = 500 * time.Millisecond

// Client is one connection, association or flow through the proxy under
// test.
type Client interface {
	// RoundTrip sends msg and waits until the backend's echo of it comes
	// back, or ctx is done.
	RoundTrip(ctx context.Context, msg []byte) error
	// Close closes the client's side. A stream relay sees the end of the
	// connection; a UDP flow stays until its idle timeout (Harness.Linger).
	Close() error
}

// Instance is one proxy under test.
type Instance struct {
	// Proxy serves a fresh host socket; its backend echoes every message.
	// It is not serving yet.
	Proxy proxy.Proxy
	// Dial opens a new client to Proxy and completes one round trip
	// through it before ctx is done; otherwise it returns an error (and
	// closes what it opened).
	Dial func(ctx context.Context) (Client, error)
}

// Harness makes the proxies the contract is checked on.
type Harness struct {
	// New returns a new Instance. It registers the clean-up of everything
	// but the proxy (backend, files) with t.Cleanup; Contract closes the
	// proxy.
	New func(t *testing.T) Instance
	// Probe bounds a Dial that is expected to fail because the proxy no
	// longer takes new clients: a stream proxy refuses at once, a UDP
	// proxy drops the datagram and the probe times out. Zero means
	// DefaultProbeTimeout.
	Probe time.Duration
	// Linger is how long a client's connection or flow stays open in the
	// proxy after Client.Close: zero for streams, the idle timeout for
	// UDP. Shutdown waits for it.
	Linger time.Duration
}

// Contract runs the lifecycle contract of proxy.Proxy as subtests of t:
//
//   - Serve returns nil after Close, and after its ctx is done;
//   - after Close (or a completed Shutdown), Close returns nil and Shutdown
//     and Serve return proxy.ErrClosed, also when Serve never ran;
//   - Shutdown with no connection left returns nil, and Serve returns nil;
//   - Shutdown stops taking new clients at once, lets an open one go on
//     until it ends, then returns nil;
//   - Shutdown whose ctx ends first cuts the open clients and returns
//     ctx.Err();
//   - a second Serve while serving returns an error and leaves the first
//     serving.
func Contract(t *testing.T, h Harness) {
	t.Helper()
	if h.Probe <= 0 {
		h.Probe = DefaultProbeTimeout
	}
	t.Run("CloseEndsServe", func(t *testing.T) { closeEndsServe(t, h) })
	t.Run("ContextEndsServe", func(t *testing.T) { contextEndsServe(t, h) })
	t.Run("CloseBeforeServe", func(t *testing.T) { closeBeforeServe(t, h) })
	t.Run("ShutdownIdle", func(t *testing.T) { shutdownIdle(t, h) })
	t.Run("ShutdownDrains", func(t *testing.T) { shutdownDrains(t, h) })
	t.Run("ShutdownCuts", func(t *testing.T) { shutdownCuts(t, h) })
	t.Run("ServeTwice", func(t *testing.T) { serveTwice(t, h) })
}

// served is a proxy whose Serve runs in a goroutine.
type served struct {
	Instance
	done chan error // Serve's result
}

// start makes an instance, serves it and proves it serves with a first
// client, which it returns.
func start(t *testing.T, h Harness, ctx context.Context) (*served, Client) {
	t.Helper()
	in := h.New(t)
	s := &served{Instance: in, done: make(chan error, 1)}
	t.Cleanup(func() { in.Proxy.Close() })
	go func() { s.done <- in.Proxy.Serve(ctx) }()
	c := s.dial(t)
	return s, c
}

var msgSeq atomic.Int64

// dial opens a client that must work.
func (s *served) dial(t *testing.T) Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	defer cancel()
	c, err := s.Dial(ctx)
	if err != nil {
		t.Fatalf("dial through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one message through c, which must work.
func roundTrip(t *testing.T, c Client, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	defer cancel()
	if err := c.RoundTrip(ctx, fmt.Appendf(nil, "contract %d", msgSeq.Add(1))); err != nil {
		t.Fatalf("%s: round trip through the proxy: %v", what, err)
	}
}

// cut checks that c no longer reaches the backend.
func cut(t *testing.T, h Harness, c Client, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Probe)
	defer cancel()
	if err := c.RoundTrip(ctx, []byte("after the end")); err == nil {
		t.Fatalf("%s: a client still reaches the backend", what)
	}
}

// serveResult waits for Serve's result.
func (s *served) serveResult(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(WaitFor):
		t.Fatalf("%s: Serve did not return within %v", what, WaitFor)
		return nil
	}
}

// afterClose checks what every method returns once the proxy is closed.
func afterClose(t *testing.T, p proxy.Proxy, what string) {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Errorf("%s: Close again = %v, want nil", what, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("%s: Shutdown = %v, want proxy.ErrClosed", what, err)
	}
	if err := p.Serve(ctx); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("%s: Serve = %v, want proxy.ErrClosed", what, err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("%s: Close after Shutdown and Serve = %v, want nil", what, err)
	}
}

func closeEndsServe(t *testing.T, h Harness) {
	s, c := start(t, h, context.Background())
	if err := s.Proxy.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	if err := s.serveResult(t, "after Close"); err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
	cut(t, h, c, "after Close")
	afterClose(t, s.Proxy, "after Close")
}

func contextEndsServe(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, c := start(t, h, ctx)
	cancel()
	if err := s.serveResult(t, "after its context ended"); err != nil {
		t.Fatalf("Serve after its context ended = %v, want nil", err)
	}
	cut(t, h, c, "after Serve's context ended")
	afterClose(t, s.Proxy, "after Serve's context ended")
}

func closeBeforeServe(t *testing.T, h Harness) {
	in := h.New(t)
	if err := in.Proxy.Close(); err != nil {
		t.Fatalf("Close before Serve = %v, want nil", err)
	}
	afterClose(t, in.Proxy, "closed before Serve")
}

func shutdownIdle(t *testing.T, h Harness) {
	s, c := start(t, h, context.Background())
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor+h.Linger)
	defer cancel()
	if err := s.Proxy.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with no client left = %v, want nil", err)
	}
	if err := s.serveResult(t, "after Shutdown"); err != nil {
		t.Fatalf("Serve after Shutdown = %v, want nil", err)
	}
	afterClose(t, s.Proxy, "after Shutdown")
}

// shutdownStarted calls Shutdown(ctx) in a goroutine and returns once the
// proxy refuses new clients, keeping c in use meanwhile (so that a UDP flow
// does not expire). It fails if Shutdown returns while c is open.
func shutdownStarted(t *testing.T, h Harness, s *served, c Client, ctx context.Context) chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- s.Proxy.Shutdown(ctx) }()
	deadline := time.Now().Add(WaitFor)
	for {
		roundTrip(t, c, "during Shutdown")
		pctx, cancel := context.WithTimeout(context.Background(), h.Probe)
		nc, err := s.Dial(pctx)
		cancel()
		if err != nil {
			break // new clients are refused
		}
		nc.Close() // accepted before Shutdown began
		if time.Now().After(deadline) {
			t.Fatalf("new clients still accepted %v after Shutdown began", WaitFor)
		}
	}
	select {
	case err := <-res:
		t.Fatalf("Shutdown returned %v while a client was open", err)
	default:
	}
	roundTrip(t, c, "open client during Shutdown")
	return res
}

func shutdownDrains(t *testing.T, h Harness) {
	s, c := start(t, h, context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*WaitFor+h.Linger)
	defer cancel()
	res := shutdownStarted(t, h, s, c, ctx)
	c.Close()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Shutdown after the last client ended = %v, want nil", err)
		}
	case <-time.After(WaitFor + h.Linger):
		t.Fatalf("Shutdown did not return within %v of the last client's end", WaitFor+h.Linger)
	}
	if err := s.serveResult(t, "after Shutdown"); err != nil {
		t.Fatalf("Serve after Shutdown = %v, want nil", err)
	}
	afterClose(t, s.Proxy, "after Shutdown")
}

func shutdownCuts(t *testing.T, h Harness) {
	s, c := start(t, h, context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := shutdownStarted(t, h, s, c, ctx)
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown cut short = %v, want context.Canceled", err)
		}
	case <-time.After(WaitFor):
		t.Fatalf("Shutdown did not return within %v of its context's end", WaitFor)
	}
	if err := s.serveResult(t, "after Shutdown"); err != nil {
		t.Fatalf("Serve after Shutdown = %v, want nil", err)
	}
	cut(t, h, c, "after Shutdown was cut short")
	afterClose(t, s.Proxy, "after Shutdown was cut short")
}

func serveTwice(t *testing.T, h Harness) {
	s, c := start(t, h, context.Background())
	second := make(chan error, 1)
	go func() { second <- s.Proxy.Serve(context.Background()) }()
	select {
	case err := <-second:
		if err == nil {
			t.Fatal("second Serve = nil, want an error")
		}
	case <-time.After(WaitFor):
		t.Fatal("second Serve did not return")
	}
	roundTrip(t, c, "after a second Serve")
	if err := s.Proxy.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	if err := s.serveResult(t, "after Close"); err != nil {
		t.Fatalf("first Serve after Close = %v, want nil", err)
	}
}

// Serve runs p.Serve in a goroutine for the rest of the test; at cleanup it
// closes p and fails t if Close or Serve returns an error, or if Serve does
// not return within WaitFor of Close.
func Serve(t testing.TB, p proxy.Proxy) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- p.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(WaitFor):
			t.Errorf("Serve did not return within %v of Close", WaitFor)
		}
	})
}

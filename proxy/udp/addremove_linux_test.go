package udp

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
)

// TestRangeAddRemoveWhileServing adds a socket to a serving range and removes
// it: the added socket relays to its own backend and its flow is counted,
// and after Remove nothing reads it. The rest of the contract, a busy
// client of another socket included, is proxytest.Mappings (TestMappings).
func TestRangeAddRemoveWhileServing(t *testing.T) {
	r, addrs := startRange(t, 1, Config{})
	roundTrip(t, dial(t, addrs[0]), []byte("first"))

	f := hostSocket(t, "127.0.0.1:0")
	if err := r.Add(Mapping{File: f, Backend: taggedBackend(t, "127.0.0.1:0", "added:")}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	r.l.mu.Lock()
	if len(r.l.members) != 2 {
		r.l.mu.Unlock()
		t.Fatalf("%d sockets after Add, want 2", len(r.l.members))
	}
	addr := hostPort(r.l.members[1])
	r.l.mu.Unlock()
	c := dial(t, addr)
	if got := roundTrip(t, c, []byte("hi")); string(got) != "added:hi" {
		t.Fatalf("through the added socket: %q", got)
	}
	if s := r.Stats(); s.Flows != 2 {
		t.Fatalf("Stats after Add: %d flows, want 2", s.Flows)
	}
	if err := r.Remove(addr); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	// The caller's descriptor still holds the socket, but nothing reads it.
	c.Write([]byte("after Remove"))
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("removed socket: read %d bytes, %v; want a timeout", n, err)
	}
	if s := r.Stats(); s.Flows != 1 {
		t.Fatalf("Stats after Remove: %d flows, want 1", s.Flows)
	}
}

func TestRangeAddBeforeServeAndAfterClose(t *testing.T) {
	f := hostSocket(t, "127.0.0.1:0")
	r, err := NewRange([]Mapping{{File: f, Backend: echoBackend(t, "127.0.0.1:0")}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	g := hostSocket(t, "127.0.0.1:0")
	if err := r.Add(Mapping{File: g, Backend: taggedBackend(t, "127.0.0.1:0", "g:")}); err != nil {
		t.Fatalf("Add before Serve: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(context.Background()) }()
	c := dial(t, hostPort(r.l.members[1]))
	if got := roundTrip(t, c, []byte("x")); string(got) != "g:x" {
		t.Fatalf("through a socket added before Serve: %q", got)
	}
	r.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	h := hostSocket(t, "127.0.0.1:0")
	if err := r.Add(Mapping{File: h, Backend: echoBackend(t, "127.0.0.1:0")}); !errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Add after Close = %v, want proxy.ErrClosed", err)
	}
	if err := r.Remove(hostPort(r.l.members[0])); !errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Remove after Close = %v, want proxy.ErrClosed", err)
	}
}

func TestRangeAddDuringShutdown(t *testing.T) {
	r, addrs := startRange(t, 1, Config{IdleTimeout: time.Minute})
	c := dial(t, addrs[0])
	roundTrip(t, c, []byte("keeps a flow open"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Shutdown(ctx) }()
	waitFor(t, 10*time.Second, "Shutdown to begin", func() bool { return r.l.draining.Load() })
	h := hostSocket(t, "127.0.0.1:0")
	if err := r.Add(Mapping{File: h, Backend: echoBackend(t, "127.0.0.1:0")}); !errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Add during Shutdown = %v, want proxy.ErrClosed", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
}

package udp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
)

// TestRangeAddRemoveWhileServing keeps a flow busy on one socket of a range
// while another socket is added, relayed, and removed.
func TestRangeAddRemoveWhileServing(t *testing.T) {
	r, addrs := startRange(t, 1, Config{})
	busy := dial(t, addrs[0])
	stop := make(chan struct{})
	var (
		wg     sync.WaitGroup
		trips  atomic.Int64
		mu     sync.Mutex
		failed error
	)
	wg.Go(func() {
		buf := make([]byte, 256)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			want := fmt.Sprintf("backend 0:busy %d", i)
			busy.SetDeadline(time.Now().Add(10 * time.Second))
			_, err := busy.Write([]byte(want[len("backend 0:"):]))
			var n int
			if err == nil {
				n, err = busy.Read(buf)
			}
			if err == nil && string(buf[:n]) != want {
				err = fmt.Errorf("reply %q, want %q", buf[:n], want)
			}
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
				return
			}
			trips.Add(1)
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
		if failed != nil {
			t.Fatalf("the busy flow failed: %v", failed)
		}
	}()

	f := hostSocket(t, "127.0.0.1:0")
	if err := r.Add(Mapping{File: f, Backend: taggedBackend(t, "127.0.0.1:0", "added:")}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := r.Add(Mapping{File: f, Backend: echoBackend(t, "127.0.0.1:0")}); err == nil {
		t.Fatal("Add of an address already served succeeded")
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
	before := trips.Load()
	if err := r.Remove(addr); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	// The caller's descriptor still holds the socket, but nothing reads it.
	c.Write([]byte("after Remove"))
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("removed socket: read %d bytes, %v; want a timeout", n, err)
	}
	if err := r.Remove(addr); err == nil {
		t.Fatal("second Remove succeeded")
	}
	if s := r.Stats(); s.Flows != 1 {
		t.Fatalf("Stats after Remove: %d flows, want 1", s.Flows)
	}
	waitFor(t, 10*time.Second, "the busy flow goes on after Remove", func() bool { return trips.Load() > before+2 })
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

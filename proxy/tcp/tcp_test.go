package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/proxy"
)

// roundTrip writes msg on c and reads the same number of bytes back.
func roundTrip(t testing.TB, c *net.TCPConn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// readAll reads c to EOF and fails on any error.
func readAll(t testing.TB, c *net.TCPConn) string {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read to EOF: %v", err)
	}
	return string(b)
}

// wantReset reads c until it fails and checks that it was reset, not closed.
func wantReset(t testing.TB, c *net.TCPConn) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: got %v, want a reset (ECONNRESET)", err)
	}
}

func TestEcho(t *testing.T) {
	_, be := newBackend(t, echo)
	_, addr := startProxy(t, Config{Backend: be})
	c := dial(t, addr)
	for i := range 3 {
		roundTrip(t, c, fmt.Sprintf("hello %d", i))
	}
	c.CloseWrite()
	if rest := readAll(t, c); rest != "" {
		t.Fatalf("after CloseWrite: read %q, want EOF", rest)
	}
}

func TestHalfClose(t *testing.T) {
	t.Run("client first", func(t *testing.T) {
		be, conns := newHandOver(t)
		_, addr := startProxy(t, Config{Backend: be})
		c := dial(t, addr)
		io.WriteString(c, "request")
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b := accepted(t, conns)
		if got := readAll(t, b); got != "request" { // EOF arrived
			t.Fatalf("backend read %q, want %q then EOF", got, "request")
		}
		// The other direction is still open.
		io.WriteString(b, "response")
		b.CloseWrite()
		if got := readAll(t, c); got != "response" {
			t.Fatalf("client read %q, want %q then EOF", got, "response")
		}
	})
	t.Run("backend first", func(t *testing.T) {
		be, conns := newHandOver(t)
		_, addr := startProxy(t, Config{Backend: be})
		c := dial(t, addr)
		b := accepted(t, conns)
		io.WriteString(b, "banner")
		if err := b.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); got != "banner" {
			t.Fatalf("client read %q, want %q then EOF", got, "banner")
		}
		io.WriteString(c, "late request")
		c.CloseWrite()
		if got := readAll(t, b); got != "late request" {
			t.Fatalf("backend read %q, want %q then EOF", got, "late request")
		}
	})
}

func TestLargeTransferHash(t *testing.T) {
	const size = 64 << 20
	_, be := newBackend(t, echo)
	_, addr := startProxy(t, Config{Backend: be})
	echoHash(t, dial(t, addr), size, 1)
}

func TestManyConnections(t *testing.T) {
	const n = 1000
	// Each connection costs four sockets here plus up to two splice pipes
	// (four descriptors) in the proxy.
	requireFiles(t, 8*n+100)
	b, be := newBackend(t, echo)
	p, addr := startProxy(t, Config{Backend: be})

	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = dial(t, addr)
		conns[i].SetDeadline(time.Now().Add(60 * time.Second))
	}
	for i, c := range conns {
		fmt.Fprintf(c, "conn %04d", i)
	}
	for i, c := range conns {
		want := fmt.Sprintf("conn %04d", i)
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if string(got) != want {
			t.Fatalf("conn %d: echo %q, want %q", i, got, want)
		}
	}
	if got := relayCount(p); got != n {
		t.Errorf("proxy relays %d connections, want %d", got, n)
	}
	if got := b.open(); got != n {
		t.Errorf("backend has %d connections, want %d", got, n)
	}
	for _, c := range conns {
		c.Close()
	}
	waitUntil(t, "every relay to end", func() bool { return relayCount(p) == 0 })
}

// relayCount is the number of connections p has open, from its counters.
func relayCount(p *Proxy) int {
	var n int64
	p.EachMapping(func(_, _ netip.AddrPort, c *proxy.StreamCounters) { n += c.Active.Load() })
	return int(n)
}

// waitUntil polls cond until it holds, failing after waitFor.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a stand-in for the condition
	}
}

func TestResetPropagation(t *testing.T) {
	t.Run("client resets", func(t *testing.T) {
		be, conns := newHandOver(t)
		_, addr := startProxy(t, Config{Backend: be})
		c := dial(t, addr)
		b := accepted(t, conns)
		roundTripVia(t, c, b)
		c.SetLinger(0)
		c.Close()
		wantReset(t, b)
	})
	t.Run("backend resets", func(t *testing.T) {
		be, conns := newHandOver(t)
		_, addr := startProxy(t, Config{Backend: be})
		c := dial(t, addr)
		b := accepted(t, conns)
		roundTripVia(t, c, b)
		b.SetLinger(0)
		b.Close()
		wantReset(t, c)
	})
	t.Run("client resets after backend half-closed", func(t *testing.T) {
		be, conns := newHandOver(t)
		_, addr := startProxy(t, Config{Backend: be})
		c := dial(t, addr)
		b := accepted(t, conns)
		b.CloseWrite()
		if got := readAll(t, c); got != "" {
			t.Fatalf("client read %q, want EOF", got)
		}
		c.SetLinger(0)
		c.Close()
		wantReset(t, b)
	})
}

// roundTripVia sends a byte each way between client c and backend b, which
// shows the relay is established.
func roundTripVia(t testing.TB, c, b *net.TCPConn) {
	t.Helper()
	var buf [1]byte
	c.Write([]byte{'>'})
	if _, err := io.ReadFull(b, buf[:]); err != nil {
		t.Fatalf("backend read: %v", err)
	}
	b.Write([]byte{'<'})
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		t.Fatalf("client read: %v", err)
	}
}

// refusedAddr returns a loopback port that refuses connections and stays
// taken for the test: the local end of a connection, which does not listen.
func refusedAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ln := loopback(t)
	defer ln.Close()
	c := dial(t, addrPort(ln.Addr()))
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return addrPort(c.LocalAddr())
}

func TestBackendRefused(t *testing.T) {
	logger, logs := newRecorder(zapcore.DebugLevel)
	be := refusedAddr(t)
	_, addr := startProxy(t, Config{Backend: be, Logger: logger})

	for i := range 3 {
		c := dialReset(t, addr, time.Second) // the close must come within 1s
		if i == 0 {
			checkDialWarning(t, logs, c, addr, be)
		}
	}
	if got := len(logs.atLeast(zapcore.WarnLevel)); got != 1 {
		t.Errorf("%d warnings for three failed dials in a row, want 1 (the rest at Debug)", got)
	}
}

// dialReset connects to addr and checks that the connection is reset within
// limit. The reset may come so fast that connect(2) itself reports it; then
// the returned address is invalid.
func dialReset(t testing.TB, addr netip.AddrPort, limit time.Duration) netip.AddrPort {
	t.Helper()
	d := net.Dialer{Timeout: limit}
	nc, err := d.Dial("tcp", addr.String())
	if errors.Is(err, syscall.ECONNRESET) {
		return netip.AddrPort{}
	}
	if err != nil {
		t.Fatalf("dial %s/tcp: %v", addr, err)
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	wantReset(t, c)
	return addrPort(c.LocalAddr())
}

// checkDialWarning checks that exactly one warning was logged and that it
// names the client (when known), the listener and the backend.
func checkDialWarning(t testing.TB, logs *recLog, client, listen, be netip.AddrPort) {
	t.Helper()
	var warns []recEntry
	waitUntil(t, "the dial failure to be logged", func() bool {
		warns = logs.atLeast(zapcore.WarnLevel)
		return len(warns) > 0
	})
	if len(warns) != 1 {
		t.Fatalf("%d warnings, want 1: %v", len(warns), warns)
	}
	w := warns[0]
	want := map[string]string{
		"client":  client.String(),
		"listen":  listen.String(),
		"backend": be.String(),
	}
	if !client.IsValid() { // reset during connect: the port is unknown
		want["client"] = fmt.Sprint(w.fields["client"].Interface)
	}
	for key, want := range want {
		f, ok := w.fields[key]
		if !ok {
			t.Errorf("warning %q has no %q field", w.Message, key)
			continue
		}
		if got := fmt.Sprint(f.Interface); got != want {
			t.Errorf("warning field %s = %s, want %s", key, got, want)
		}
	}
	if _, ok := w.fields["error"]; !ok {
		t.Errorf("warning %q has no error field", w.Message)
	}
}

func TestQuietAtInfo(t *testing.T) {
	logger, logs := newRecorder(zapcore.InfoLevel)
	_, be := newBackend(t, echo)
	p, addr := startProxy(t, Config{Backend: be, Logger: logger})
	for range 5 {
		c := dial(t, addr)
		roundTrip(t, c, "x")
		c.Close()
	}
	waitUntil(t, "relays to end", func() bool { return relayCount(p) == 0 })
	if e := logs.atLeast(zapcore.InfoLevel); len(e) != 0 {
		t.Fatalf("normal connections logged at Info or above: %v", e)
	}
}

func TestClose(t *testing.T) {
	be, conns := newHandOver(t)
	p := NewListener(loopback(t), Config{Backend: be})
	addr := addrPort(p.Addr())
	wait := serve(t, p)

	c := dial(t, addr)
	b := accepted(t, conns)
	roundTripVia(t, c, b)

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
	wantReset(t, c) // cut short, so reset
	wantReset(t, b)
	if _, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Close: %v, want ECONNREFUSED", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := p.Serve(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
	if err := p.Shutdown(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Shutdown after Close = %v, want ErrClosed", err)
	}
	if got := relayCount(p); got != 0 {
		t.Errorf("%d relays left after Close", got)
	}
}

func TestCloseConcurrent(t *testing.T) {
	_, be := newBackend(t, echo)
	p, addr := startProxy(t, Config{Backend: be})
	for range 10 {
		roundTrip(t, dial(t, addr), "x")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
}

func TestServeTwice(t *testing.T) {
	_, be := newBackend(t, echo)
	p, addr := startProxy(t, Config{Backend: be})
	roundTrip(t, dial(t, addr), "x") // the first Serve is running
	if err := p.Serve(context.Background()); err == nil || errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("second Serve = %v, want an error saying it is already serving", err)
	}
}

func TestServeContextCancel(t *testing.T) {
	be, conns := newHandOver(t)
	p := NewListener(loopback(t), Config{Backend: be})
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- p.Serve(ctx) }()
	c := dial(t, addrPort(p.Addr()))
	b := accepted(t, conns)
	roundTripVia(t, c, b)
	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	wantReset(t, c)
	if err := p.Shutdown(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Shutdown after cancel = %v, want ErrClosed", err)
	}
}

func TestShutdownDrains(t *testing.T) {
	be, conns := newHandOver(t)
	p := NewListener(loopback(t), Config{Backend: be})
	addr := addrPort(p.Addr())
	wait := serve(t, p)
	c := dial(t, addr)
	b := accepted(t, conns)
	roundTripVia(t, c, b)

	// A probe below that connects before the listener closes is relayed like
	// any connection, and Shutdown rightly waits for it: its backend side is
	// closed here, so that it ends.
	stopDrain, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case extra := <-conns:
				extra.Close()
			case <-stopDrain:
				return
			}
		}
	}()
	defer func() { close(stopDrain); <-drained }()

	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()

	// The listener closes at once...
	waitUntil(t, "the listener to close", func() bool {
		nc, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
		if err == nil {
			nc.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	// ...while the open connection still relays both ways.
	roundTripVia(t, c, b)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a connection open", err)
	default:
	}
	c.CloseWrite()
	b.CloseWrite()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return after the last connection ended")
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if got := readAll(t, c); got != "" { // a clean end, not a reset
		t.Fatalf("client read %q, want EOF", got)
	}
}

func TestShutdownDeadline(t *testing.T) {
	be, conns := newHandOver(t)
	p := NewListener(loopback(t), Config{Backend: be})
	wait := serve(t, p)
	c := dial(t, addrPort(p.Addr()))
	b := accepted(t, conns)
	roundTripVia(t, c, b)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	wantReset(t, c)
	wantReset(t, b)
}

func TestShutdownIdle(t *testing.T) {
	_, be := newBackend(t, echo)
	p := NewListener(loopback(t), Config{Backend: be})
	wait := serve(t, p)
	c := dial(t, addrPort(p.Addr()))
	roundTrip(t, c, "x")
	c.Close()
	waitUntil(t, "no relay", func() bool { return relayCount(p) == 0 })
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if err := p.Shutdown(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("second Shutdown = %v, want ErrClosed", err)
	}
}

func TestShutdownWithoutServe(t *testing.T) {
	p := NewListener(loopback(t), Config{Backend: refusedAddr(t)})
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	if err := p.Serve(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Serve after Shutdown = %v, want ErrClosed", err)
	}
}

func TestInvalidBackend(t *testing.T) {
	logger, logs := newRecorder(zapcore.WarnLevel)
	_, addr := startProxy(t, Config{Backend: netip.AddrPort{}, Logger: logger})
	dialReset(t, addr, time.Second)
	waitUntil(t, "a warning", func() bool { return len(logs.atLeast(zapcore.WarnLevel)) == 1 })
}

func TestNoGoroutineLeft(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first, so it runs after the other Cleanups
	_, be := newBackend(t, echo)
	p := NewListener(loopback(t), Config{Backend: be})
	res := make(chan error, 1)
	go func() { res <- p.Serve(context.Background()) }()
	addr := addrPort(p.Addr())
	// Connections in every state: finished, half-closed, and open.
	for i := range 20 {
		c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitFor))
		roundTrip(t, c, "x")
		switch i % 3 {
		case 0:
			c.Close()
		case 1:
			c.CloseWrite()
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if got := relayCount(p); got != 0 {
		t.Fatalf("%d relays left", got)
	}
}

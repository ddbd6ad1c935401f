package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// listenFiles returns n listening TCP sockets on 127.0.0.1 as files, and
// their addresses; Cleanup closes the files.
func listenFiles(t testing.TB, n int) ([]*os.File, []netip.AddrPort) {
	t.Helper()
	var (
		files []*os.File
		addrs []netip.AddrPort
	)
	for range n {
		ln := loopback(t)
		f, err := ln.File()
		ln.Close() // f is a duplicate: the socket stays listening
		if err != nil {
			t.Fatalf("listener file: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
		addrs = append(addrs, addrPort(ln.Addr()))
	}
	return files, addrs
}

// tagged is a backend handler that writes tag, then echoes.
func tagged(tag string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := io.WriteString(c, tag); err == nil {
			echo(c)
		}
	}
}

// startRange serves a range proxy over n sockets, socket i relayed to a
// backend that greets with "backend i:". It returns the proxy, the
// listening addresses and the backends' addresses.
func startRange(t testing.TB, n int, cfg Config) (*Proxy, []netip.AddrPort, []netip.AddrPort) {
	t.Helper()
	files, addrs := listenFiles(t, n)
	var (
		ms  []Mapping
		bes []netip.AddrPort
	)
	for i, f := range files {
		_, be := newBackend(t, tagged(fmt.Sprintf("backend %d:", i)))
		ms = append(ms, Mapping{File: f, Backend: be})
		bes = append(bes, be)
	}
	p, err := NewRange(ms, cfg)
	if err != nil {
		t.Fatalf("NewRange: %v", err)
	}
	for _, f := range files {
		f.Close() // the proxy has its own descriptors
	}
	serve(t, p)
	return p, addrs, bes
}

// greet reads the backend's tag from c and round-trips a message.
func greet(t testing.TB, c *net.TCPConn, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the backend's greeting: %v", err)
	}
	if string(got) != want {
		t.Fatalf("greeting %q, want %q: relayed to the wrong backend", got, want)
	}
	roundTrip(t, c, "hello "+want)
}

func TestRangeRelaysEachPort(t *testing.T) {
	const n = 8
	_, addrs, _ := startRange(t, n, Config{})
	// Every port at once, then each answered by its own backend.
	conns := make([]*net.TCPConn, n)
	for i, a := range addrs {
		conns[i] = dial(t, a)
	}
	for i := n - 1; i >= 0; i-- {
		greet(t, conns[i], fmt.Sprintf("backend %d:", i))
	}
	// And again on one port, while the others stay open.
	greet(t, dial(t, addrs[3]), "backend 3:")
}

func TestRangeClose(t *testing.T) {
	p, addrs, _ := startRange(t, 4, Config{})
	c := dial(t, addrs[1])
	greet(t, c, "backend 1:")
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantReset(t, c)
	for _, a := range addrs {
		if c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(a)); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Close", a)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s after Close: %v, want connection refused", a, err)
		}
	}
}

func TestRangeShutdownDrains(t *testing.T) {
	p, addrs, _ := startRange(t, 3, Config{})
	c := dial(t, addrs[2])
	greet(t, c, "backend 2:")

	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	waitUntil(t, "every socket to stop accepting", func() bool {
		for _, a := range addrs {
			if c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(a)); err == nil {
				c.Close()
				return false
			}
		}
		return true
	})
	roundTrip(t, c, "still relayed while draining")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a connection open", err)
	default:
	}
	c.CloseWrite()
	if got := readAll(t, c); got != "" {
		t.Fatalf("read %q after the half-close, want EOF", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return after the last connection ended")
	}
}

// TestRangeLogsPort checks that a failure on one socket of a range is
// logged with that socket's address and backend, in a range of three and in
// a range of one (which has no epoll set).
func TestRangeLogsPort(t *testing.T) {
	t.Run("three", func(t *testing.T) {
		logger, logs := newRecorder(zapcore.DebugLevel)
		files, addrs := listenFiles(t, 3)
		refused := refusedAddr(t)
		_, be := newBackend(t, echo)
		ms := []Mapping{{files[0], be}, {files[1], refused}, {files[2], be}}
		p, err := NewRange(ms, Config{Logger: logger})
		if err != nil {
			t.Fatalf("NewRange: %v", err)
		}
		serve(t, p)
		roundTrip(t, dial(t, addrs[0]), "fine")
		client := dialReset(t, addrs[1], time.Second)
		checkDialWarning(t, logs, client, addrs[1], refused)
	})
	t.Run("one", func(t *testing.T) {
		logger, logs := newRecorder(zapcore.DebugLevel)
		files, addrs := listenFiles(t, 1)
		refused := refusedAddr(t)
		p, err := NewRange([]Mapping{{files[0], refused}}, Config{Logger: logger})
		if err != nil {
			t.Fatalf("NewRange: %v", err)
		}
		serve(t, p)
		client := dialReset(t, addrs[0], time.Second)
		checkDialWarning(t, logs, client, addrs[0], refused)
	})
}

func TestNewRangeRejects(t *testing.T) {
	files, addrs := listenFiles(t, 2)
	_, be := newBackend(t, echo)
	for _, tc := range []struct {
		name string
		ms   []Mapping
	}{
		{"no mapping", nil},
		{"nil file", []Mapping{{files[0], be}, {nil, be}}},
		{"invalid backend", []Mapping{{files[0], be}, {files[1], netip.AddrPort{}}}},
		{"backend port 0", []Mapping{{files[0], be}, {files[1], netip.AddrPortFrom(be.Addr(), 0)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := NewRange(tc.ms, Config{}); err == nil {
				p.Close()
				t.Fatal("NewRange succeeded")
			}
		})
	}
	// What NewRange opened before it failed is closed again: once the test's
	// own descriptors are closed, the ports are free.
	for _, f := range files {
		f.Close()
	}
	for _, a := range addrs {
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(a))
		if err != nil {
			t.Fatalf("%s still taken after NewRange failed: %v", a, err)
		}
		ln.Close()
	}
}

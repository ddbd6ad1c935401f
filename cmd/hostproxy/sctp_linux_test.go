package main_test

// Black-box tests of the hostproxy binary with -proto sctp, spawned with the
// package's start/proc helpers. They need a kernel with SCTP: hack/test-sctp.sh
// runs them in a VM with HOSTPROXY_BIN set to a static hostproxy.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
)

// sctpWait bounds every blocking step; generous for TCG emulation.
const sctpWait = 20 * time.Second

var sctpLoopback = netip.MustParseAddr("127.0.0.1")

// sctpEcho starts an SCTP echo server on 127.0.0.1 that answers every message
// on the stream it came with and the PPID plus one.
func sctpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := sctp.Listen(netip.AddrPortFrom(sctpLoopback, 0))
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []*sctp.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, sctp.BufferSize)
				for {
					n, info, _, err := c.ReadMsg(buf)
					if err != nil {
						return
					}
					info.PPID++
					if _, err := c.WriteMsg(buf[:n], info); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Abort()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr()
}

// sctpDial sets up an association within d; it returns nil on a timeout.
func sctpDial(t *testing.T, addr netip.AddrPort, d time.Duration) *sctp.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := sctp.Dial(ctx, addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Abort() })
	return c
}

// sctpCheckEcho sends messages on several streams through addr and checks the
// echo server's replies (same stream, PPID plus one).
func sctpCheckEcho(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	c := sctpDial(t, addr, sctpWait)
	if c == nil {
		t.Fatalf("no association with %s within %v", addr, sctpWait)
	}
	c.SetDeadline(time.Now().Add(sctpWait))
	buf := make([]byte, 1024)
	for i, stream := range []uint16{0, 5, 1000} {
		msg := fmt.Sprintf("message %d via hostproxy", i)
		info := sctp.Info{Stream: stream, PPID: uint32(100 + i)}
		if _, err := c.WriteMsg([]byte(msg), info); err != nil {
			t.Fatalf("write: %v", err)
		}
		n, got, _, err := c.ReadMsg(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		want := sctp.Info{Stream: stream, PPID: info.PPID + 1}
		if string(buf[:n]) != msg || got != want {
			t.Fatalf("reply %q %+v, want %q %+v", buf[:n], got, msg, want)
		}
	}
	c.Close()
}

// sctpFreePort returns a port that was free for SCTP on 127.0.0.1 a moment ago.
func sctpFreePort(t *testing.T) uint16 {
	t.Helper()
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLoopback, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	return info.Local.Port()
}

func sctpPort(p uint16) string { return strconv.Itoa(int(p)) }

// TestSCTPCompatListenFD is docker's way: fd 4 is a listening SCTP socket,
// fd 3 gets exactly "0\n", SIGTERM ends the process with status 0.
func TestSCTPCompatListenFD(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLoopback, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	host := info.Local
	p := start(t, spawn{extra: []*os.File{f}},
		"-proto", "sctp",
		"-host-ip", host.Addr().String(), "-host-port", sctpPort(host.Port()),
		"-container-ip", backend.Addr().String(), "-container-port", sctpPort(backend.Port()),
		"-use-listen-fd",
	)
	p.ready(t, "0\n")
	sctpCheckEcho(t, host)
	sctpCheckEcho(t, host) // a second association
	p.stop(t, syscall.SIGTERM)
	p.quiet(t)
}

// TestSCTPCompatBinds is the older engines' way: hostproxy binds
// host-ip:host-port itself.
func TestSCTPCompatBinds(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	port := sctpFreePort(t)
	p := start(t, spawn{},
		"-proto", "sctp",
		"-host-ip", "127.0.0.1", "-host-port", sctpPort(port),
		"-container-ip", backend.Addr().String(), "-container-port", sctpPort(backend.Port()),
	)
	p.ready(t, "0\n")
	sctpCheckEcho(t, netip.AddrPortFrom(sctpLoopback, port))
	p.stop(t, syscall.SIGINT)
}

// TestSCTPAllocationAwaitNAT: -host-port 0 -await-nat allocates a port,
// reports "0\n<port>\n" on fd 3, and the socket answers nothing until SIGUSR1.
func TestSCTPAllocationAwaitNAT(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	p := start(t, spawn{},
		"-proto", "sctp",
		"-host-ip", "127.0.0.1", "-host-port", "0",
		"-container-ip", backend.Addr().String(), "-container-port", sctpPort(backend.Port()),
		"-await-nat",
	)
	status := p.readStatus(t)
	lines := strings.Split(status, "\n")
	if len(lines) != 3 || lines[0] != "0" || lines[2] != "" {
		t.Fatalf("fd 3: %q, want \"0\\n<port>\\n\"", status)
	}
	port, err := strconv.ParseUint(lines[1], 10, 16)
	if err != nil || port == 0 {
		t.Fatalf("fd 3: port %q: %v", lines[1], err)
	}
	host := netip.AddrPortFrom(sctpLoopback, uint16(port))

	if c := sctpDial(t, host, 500*time.Millisecond); c != nil {
		t.Fatal("the allocated socket answered INIT before SIGUSR1")
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The filter goes away asynchronously after the signal: retry, bounded.
	var c *sctp.Conn
	for i := 0; i < 20 && c == nil; i++ {
		c = sctpDial(t, host, time.Second)
	}
	if c == nil {
		t.Fatal("no association within 20s of SIGUSR1")
	}
	c.Close()
	sctpCheckEcho(t, host)
	p.stop(t, syscall.SIGTERM)
}

// TestSCTPForwarder runs the standalone forwarder with an /sctp mapping.
func TestSCTPForwarder(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	port := sctpFreePort(t)
	p := start(t, spawn{},
		"-L", fmt.Sprintf("127.0.0.1:%d:%s/sctp", port, backend),
	)
	host := netip.AddrPortFrom(sctpLoopback, port)
	var c *sctp.Conn
	for i := 0; i < 20 && c == nil; i++ { // no fd 3 protocol: wait for the listener
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := sctp.Dial(ctx, host)
		cancel()
		if err == nil {
			c = conn
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("hostproxy exited: %v; stderr: %s", p.err, p.stderr)
		case <-time.After(100 * time.Millisecond): // refused: not listening yet
		}
	}
	if c == nil {
		t.Fatal("the forwarder did not listen within 20 attempts")
	}
	c.Close()
	sctpCheckEcho(t, host)
	p.stop(t, syscall.SIGTERM)
}

// TestSCTPListenFDWrongType gives fd 4 a TCP socket with -proto sctp: exit 1
// with "1\n<reason>" on fd 3. It needs no SCTP in the kernel.
func TestSCTPListenFDWrongType(t *testing.T) {
	f, err := sockopt.Listen(sockopt.TCP, netip.AddrPortFrom(sctpLoopback, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, spawn{extra: []*os.File{f}},
		"-proto", "sctp",
		"-host-ip", "127.0.0.1", "-host-port", sctpPort(info.Local.Port()),
		"-container-ip", "127.0.0.1", "-container-port", "9",
		"-use-listen-fd",
	)
	status := p.readStatus(t)
	if !strings.HasPrefix(status, "1\n") || len(strings.TrimSpace(status[2:])) == 0 {
		t.Fatalf("fd 3: %q, want \"1\\n<reason>\"", status)
	}
	t.Logf("reason: %s", strings.TrimSpace(status[2:]))
	if code := p.exitCode(t, sctpWait); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}

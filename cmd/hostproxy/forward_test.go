package main_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForwarder runs several -L mappings in one process: explicit IPv4 and
// IPv6 binds, the loopback default, a host name target, a port range, UDP.
func TestForwarder(t *testing.T) {
	requireIPv6(t)
	t.Parallel()
	b4 := tcpEcho(t, lo4, 0, "b4:")
	b6 := tcpEcho(t, lo6, 0, "b6:")
	u4 := udpEcho(t, lo4, 0, "u4:")
	rbase := echoRange(t, "tcp", lo4, 2)

	var p1, p2, p3, p4, lbase uint16
	// fd 3 is a pipe here: the forwarder reports readiness on it (see README).
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		p1, p2, p3, p4 = freePort(t, lo4), freePort(t, lo6), freePort(t, lo4), freePort(t, lo4)
		lbase = freeRange(t, 2, lo4)
		return []string{
			"-L", fmt.Sprintf("127.0.0.1:%d:%s", p1, b4),
			"-L", fmt.Sprintf("[::1]:%d:[::1]:%d/tcp", p2, b6.Port()),
			"-L", fmt.Sprintf("%d:localhost:%d", p3, b4.Port()), // default bind; name resolved to 127.0.0.1
			"-L", fmt.Sprintf("127.0.0.1:%d:%s/udp", p4, u4),
			"-L", fmt.Sprintf("127.0.0.1:%d-%d:127.0.0.1:%d-%d", lbase, lbase+1, rbase, rbase+1),
			"-drain-timeout", "1s", // an open UDP flow drains until the timeout
		}, "0\n"
	})
	checkTCP(t, netip.AddrPortFrom(lo4, p1), "b4:")
	checkTCP(t, netip.AddrPortFrom(lo6, p2), "b6:")
	checkTCP(t, netip.AddrPortFrom(lo4, p3), "b4:")
	checkTCP(t, netip.AddrPortFrom(lo6, p3), "b4:") // the default bind covers ::1 too
	checkUDP(t, netip.AddrPortFrom(lo4, p4), "u4:")
	checkTCP(t, netip.AddrPortFrom(lo4, lbase), fmt.Sprintf("backend %d:", rbase))
	checkTCP(t, netip.AddrPortFrom(lo4, lbase+1), fmt.Sprintf("backend %d:", rbase+1))
	p.stop(t, syscall.SIGTERM)
	p.quiet(t)
}

// TestForwarderLoopbackOnly: without BIND a mapping is not reachable on a
// non-loopback address; with 0.0.0.0 it is.
func TestForwarderLoopbackOnly(t *testing.T) {
	ext := nonLoopbackIPv4(t)
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	var port, exposed uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port, exposed = freePort(t, lo4), freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("%d:%s", port, b), "-L", fmt.Sprintf("0.0.0.0:%d:%s", exposed, b)}, "0\n"
	})
	if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ext, port).String(), wait); err == nil {
		c.Close()
		t.Fatalf("mapping without BIND reachable on %s", ext)
	}
	checkTCP(t, netip.AddrPortFrom(ext, exposed), "b:")
	p.stop(t, syscall.SIGTERM)
}

func nonLoopbackIPv4(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() {
				return ip.Unmap()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address on this host")
	return netip.Addr{}
}

// TestForwarderFD3 documents the forwarder's use of fd 3: none is needed,
// and an fd 3 that is not a pipe (here a regular file) is never written.
func TestForwarderFD3(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	port := freePort(t, lo4)
	addr := netip.AddrPortFrom(lo4, port)
	spec := fmt.Sprintf("127.0.0.1:%d:%s", port, b)

	p := start(t, spawn{noStatus: true}, "-L", spec)
	waitTCP(t, p, addr, "b:")
	p.stop(t, syscall.SIGTERM)
	p.quiet(t)

	file, err := os.CreateTemp(t.TempDir(), "fd3")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	p = start(t, spawn{fd3: file}, "-L", spec)
	waitTCP(t, p, addr, "b:")
	// fd 3 is left open but close-on-exec.
	fdinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if flags := fdinfoFlags(t, string(fdinfo)); flags&syscall.O_CLOEXEC == 0 {
		t.Errorf("fd 3 flags %#o: not close-on-exec", flags)
	}
	p.stop(t, syscall.SIGTERM)
	if st, err := file.Stat(); err != nil || st.Size() != 0 {
		t.Errorf("the forwarder wrote %d bytes to a regular file on fd 3 (%v)", st.Size(), err)
	}
}

func fdinfoFlags(t *testing.T, fdinfo string) int64 {
	t.Helper()
	for _, line := range strings.Split(fdinfo, "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no flags in fdinfo %q", fdinfo)
	return 0
}

// waitTCP waits (bounded) until addr relays, for runs without a status pipe.
func waitTCP(t *testing.T, p *proc, addr netip.AddrPort, tag string) {
	t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		if err = tryTCP(addr, tag, wait); err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("hostproxy exited: %v", p.err)
		case <-time.After(50 * time.Millisecond): // refused: not listening yet
		}
	}
	t.Fatalf("forwarder not serving: %v", err)
}

// TestForwarderDrain: on SIGTERM the forwarder stops accepting, lets an open
// connection finish, and exits 0 once it has.
func TestForwarderDrain(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b), "-drain-timeout", "30s"}, "0\n"
	})
	addr := netip.AddrPortFrom(lo4, port)
	c := openConn(t, addr, "b:")
	p.signal(t, syscall.SIGTERM)
	// New connections are refused (the listener is closed) ...
	waitRefused(t, p, addr)
	// ... while the open one still relays.
	roundTrip(t, c, "still here")
	select {
	case <-p.exited:
		t.Fatalf("exited with a connection open: %v", p.err)
	default:
	}
	c.Close()
	if code := p.exitCode(t, wait); code != 0 {
		t.Fatalf("exit %d after drain, want 0", code)
	}
	p.quiet(t)
}

// TestForwarderSecondSignal: a second SIGTERM while draining stops at once.
func TestForwarderSecondSignal(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b), "-drain-timeout", "1m"}, "0\n"
	})
	addr := netip.AddrPortFrom(lo4, port)
	c := openConn(t, addr, "b:")
	defer c.Close()
	p.signal(t, syscall.SIGTERM)
	// Two signals sent back to back may merge into one: wait until the
	// first is handled (the listener is closed) before the second.
	waitRefused(t, p, addr)
	roundTrip(t, c, "draining")
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, wait); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after the second signal")
	}
}

// TestForwarderDrainTimeout: an open connection is cut when -drain-timeout
// expires.
func TestForwarderDrainTimeout(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b), "-drain-timeout", "200ms"}, "0\n"
	})
	c := openConn(t, netip.AddrPortFrom(lo4, port), "b:")
	defer c.Close()
	p.signal(t, syscall.SIGINT)
	if code := p.exitCode(t, wait); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// waitRefused waits (bounded) until addr refuses new connections.
func waitRefused(t *testing.T, p *proc, addr netip.AddrPort) {
	t.Helper()
	for i := 0; i < 200; i++ {
		nc, err := net.DialTimeout("tcp", addr.String(), wait)
		if err != nil {
			return
		}
		nc.Close()
		select {
		case <-p.exited:
			t.Fatalf("hostproxy exited: %v", p.err)
		case <-time.After(10 * time.Millisecond): // the signal is on its way
		}
	}
	t.Fatalf("%s still accepting after SIGTERM", addr)
}

// openConn connects through addr and reads the backend's tag.
func openConn(t *testing.T, addr netip.AddrPort, tag string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(wait))
	got := make([]byte, len(tag))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != tag {
		t.Fatalf("read %q, %v; want %q", got, err, tag)
	}
	return c
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
}

package main_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// check relays one exchange of proto through addr.
func check(t *testing.T, proto string, addr netip.AddrPort, tag string) {
	t.Helper()
	if proto == "udp" {
		checkUDP(t, addr, tag)
	} else {
		checkTCP(t, addr, tag)
	}
}

// echo starts the backend of proto on ip (port 0: any).
func echo(t *testing.T, proto string, ip netip.Addr, port uint16, tag string) netip.AddrPort {
	t.Helper()
	if proto == "udp" {
		return udpEcho(t, ip, port, tag)
	}
	return tcpEcho(t, ip, port, tag)
}

func engineArgs(proto string, host netip.AddrPort, backend netip.AddrPort) []string {
	return []string{
		"-proto", proto,
		"-host-ip", host.Addr().String(), "-host-port", itoa(host.Port()),
		"-container-ip", backend.Addr().String(), "-container-port", itoa(backend.Port()),
	}
}

// mappings are the (host address, container address) pairs of the engine
// tests: each family to itself, and an IPv6 host address to an IPv4
// container.
var mappings = []struct {
	name            string
	host, container netip.Addr
}{
	{"IPv4", lo4, lo4},
	{"IPv6", lo6, lo6},
	{"IPv6-to-IPv4", lo6, lo4},
}

// TestCompatBinds: docker-proxy's flags without -use-listen-fd; hostproxy
// binds host-ip:host-port itself, writes exactly "0\n", relays, and stops
// with exit 0 on SIGTERM and on SIGINT, printing nothing.
func TestCompatBinds(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, m := range mappings {
			t.Run(proto+"/"+m.name, func(t *testing.T) {
				if m.host.Is6() || m.container.Is6() {
					requireIPv6(t)
				}
				t.Parallel()
				backend := echo(t, proto, m.container, 0, "backend:")
				var host netip.AddrPort
				p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
					host = netip.AddrPortFrom(m.host, freePort(t, m.host))
					return engineArgs(proto, host, backend), "0\n"
				})
				check(t, proto, host, "backend:")
				check(t, proto, host, "backend:")
				sig := syscall.SIGTERM
				if m.name == "IPv6" {
					sig = syscall.SIGINT
				}
				p.stop(t, sig)
				p.quiet(t)
			})
		}
	}
}

// TestCompatListenFD: -use-listen-fd serves the engine's socket on fd 4 and
// does not bind again.
func TestCompatListenFD(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, m := range mappings {
			t.Run(proto+"/"+m.name, func(t *testing.T) {
				if m.host.Is6() || m.container.Is6() {
					requireIPv6(t)
				}
				t.Parallel()
				backend := echo(t, proto, m.container, 0, "backend:")
				pr, _ := sockopt.ParseProto(proto)
				f, err := sockopt.Listen(pr, netip.AddrPortFrom(m.host, 0), sockopt.Options{})
				if err != nil {
					t.Fatal(err)
				}
				info, err := sockopt.Inspect(f)
				if err != nil {
					t.Fatal(err)
				}
				host := info.Local
				// Without SO_REUSEADDR on a second socket, a bind by
				// hostproxy would fail with EADDRINUSE: "0\n" shows it
				// did not bind.
				args := append(engineArgs(proto, host, backend), "-use-listen-fd")
				p := start(t, spawn{extra: []*os.File{f}}, args...)
				p.ready(t, "0\n")
				check(t, proto, host, "backend:")
				p.stop(t, syscall.SIGTERM)
				p.quiet(t)
			})
		}
	}
}

// TestSignalRightAfterReady: an engine may stop the proxy the instant it
// reads "0\n"; the handlers are installed before it is written, so the
// process exits 0 instead of dying by the signal.
func TestSignalRightAfterReady(t *testing.T) {
	backend := tcpEcho(t, lo4, 0, "")
	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGTERM, syscall.SIGINT} {
		args := engineArgs("tcp", netip.AddrPortFrom(lo4, 0), backend)
		if i%2 == 1 { // allocation mode too
			testenv.RequireNetAdmin(t)
			args = append(args, "-await-nat")
		}
		p := start(t, spawn{}, args...)
		buf := make([]byte, 2)
		p.status.SetReadDeadline(time.Now().Add(wait))
		if _, err := p.status.Read(buf[:1]); err != nil || buf[0] != '0' {
			t.Fatalf("fd 3: %q, %v", buf[:1], err)
		}
		p.stop(t, sig)
		p.quiet(t)
	}
}

// TestStderrClosedPipe: with stderr a pipe nobody reads any more, a logged
// failure must not kill the process with SIGPIPE.
func TestStderrClosedPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	dead := netip.AddrPortFrom(lo4, freePort(t, lo4)) // nothing listens: every dial fails
	var host netip.AddrPort
	p := startOnFreePorts(t, spawn{stderr: w}, func() ([]string, string) {
		host = netip.AddrPortFrom(lo4, freePort(t, lo4))
		return append(engineArgs("tcp", host, dead), "-log-level", "debug", "-dial-timeout", "1s"), "0\n"
	})
	w.Close()
	for i := 0; i < 3; i++ { // each refused backend is logged
		c, err := net.DialTimeout("tcp", host.String(), wait)
		if err != nil {
			continue // the proxy may reset the client before connect returns
		}
		c.SetDeadline(time.Now().Add(wait))
		c.Read(make([]byte, 1)) // the proxy closes the client when the dial fails
		c.Close()
	}
	select {
	case <-p.exited:
		t.Fatalf("hostproxy exited after writing to a closed stderr: %v", p.err)
	default:
	}
	p.stop(t, syscall.SIGTERM)
}

// TestAllocateEphemeral: -host-port 0 allocates a port of the kernel's
// ephemeral range and reports "0\n<port>\n"; without -await-nat the socket
// is live at once.
func TestAllocateEphemeral(t *testing.T) {
	lo, hi := ephemeralRange(t)
	for _, proto := range []string{"tcp", "udp"} {
		for _, m := range mappings {
			t.Run(proto+"/"+m.name, func(t *testing.T) {
				if m.host.Is6() || m.container.Is6() {
					requireIPv6(t)
				}
				t.Parallel()
				backend := echo(t, proto, m.container, 0, "backend:")
				p := start(t, spawn{}, engineArgs(proto, netip.AddrPortFrom(m.host, 0), backend)...)
				port := p.readyPort(t)
				if port < lo || port > hi {
					t.Errorf("port %d outside the ephemeral range %d-%d", port, lo, hi)
				}
				check(t, proto, netip.AddrPortFrom(m.host, port), "backend:")
				p.stop(t, syscall.SIGTERM)
				p.quiet(t)
			})
		}
	}
}

func ephemeralRange(t *testing.T) (uint16, uint16) {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if len(f) != 2 || err1 != nil || err2 != nil {
		t.Fatalf("ip_local_port_range %q", b)
	}
	return uint16(lo), uint16(hi)
}

// TestAllocateManyAddrs: repeated -host-ip gets one common port on every
// address.
func TestAllocateManyAddrs(t *testing.T) {
	requireIPv6(t)
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			backend := echo(t, proto, lo4, 0, "backend:")
			p := start(t, spawn{}, "-proto", proto, "-host-ip", "127.0.0.1", "-host-ip", "::1", "-host-port", "0",
				"-container-ip", "127.0.0.1", "-container-port", itoa(backend.Port()))
			port := p.readyPort(t)
			check(t, proto, netip.AddrPortFrom(lo4, port), "backend:")
			check(t, proto, netip.AddrPortFrom(lo6, port), "backend:")
			p.stop(t, syscall.SIGTERM)
			p.quiet(t)
		})
	}
}

// TestAllocateRange: -host-port A-B with one container port takes any one
// free port of A-B, skipping one that is taken.
func TestAllocateRange(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			if f.ip.Is6() {
				requireIPv6(t)
			}
			t.Parallel()
			backend := tcpEcho(t, f.ip, 0, "backend:")
			// Another process (here: the test) holds the first port. It is
			// bound, not just found free, before the range is used: another
			// process may take a port found free a moment ago.
			var (
				base  uint16
				taken *net.TCPListener
				err   error
			)
			for try := 1; taken == nil; try++ {
				base = freeRange(t, 3, f.ip)
				taken, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(f.ip, base)))
				if err != nil && try == 10 {
					t.Fatal(err)
				}
			}
			defer taken.Close()
			p := start(t, spawn{}, "-proto", "tcp", "-host-ip", f.ip.String(),
				"-host-port", fmt.Sprintf("%d-%d", base, base+2),
				"-container-ip", f.ip.String(), "-container-port", itoa(backend.Port()))
			port := p.readyPort(t)
			if port <= base || port > base+2 {
				t.Fatalf("allocated %d, want one of %d-%d", port, base+1, base+2)
			}
			checkTCP(t, netip.AddrPortFrom(f.ip, port), "backend:")
			p.stop(t, syscall.SIGTERM)
			p.quiet(t)
		})
	}
}

// TestAllocateRangeEach: -host-port A-B -container-port C-D maps every host
// port to its partner, in one process, reported as "0\nA-B\n".
func TestAllocateRangeEach(t *testing.T) {
	const n = 3
	for _, proto := range []string{"tcp", "udp"} {
		for _, m := range mappings {
			t.Run(proto+"/"+m.name, func(t *testing.T) {
				if m.host.Is6() || m.container.Is6() {
					requireIPv6(t)
				}
				t.Parallel()
				cbase := echoRange(t, proto, m.container, n)
				var hbase uint16
				p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
					hbase = freeRange(t, n, m.host)
					return []string{"-proto", proto, "-host-ip", m.host.String(),
						"-host-port", fmt.Sprintf("%d-%d", hbase, hbase+n-1),
						"-container-ip", m.container.String(), "-container-port", fmt.Sprintf("%d-%d", cbase, cbase+n-1),
					}, fmt.Sprintf("0\n%d-%d\n", hbase, hbase+n-1)
				})
				for i := uint16(0); i < n; i++ {
					check(t, proto, netip.AddrPortFrom(m.host, hbase+i), fmt.Sprintf("backend %d:", cbase+i))
				}
				p.stop(t, syscall.SIGTERM)
				p.quiet(t)
			})
		}
	}
}

// TestAwaitNAT observes the drop-all filter from outside: before SIGUSR1 a
// TCP connection is not established and a datagram gets no answer; after it
// both work, on every -host-ip.
func TestAwaitNAT(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, m := range mappings {
			t.Run(proto+"/"+m.name, func(t *testing.T) {
				if m.host.Is6() || m.container.Is6() {
					requireIPv6(t)
				}
				if proto == "tcp" {
					testenv.RequireNetAdmin(t)
				}
				t.Parallel()
				backend := echo(t, proto, m.container, 0, "backend:")
				p := start(t, spawn{}, append(engineArgs(proto, netip.AddrPortFrom(m.host, 0), backend), "-await-nat")...)
				host := netip.AddrPortFrom(m.host, p.readyPort(t))

				const silent = 300 * time.Millisecond
				if proto == "tcp" {
					c, err := net.DialTimeout("tcp", host.String(), silent)
					if err == nil {
						c.Close()
						t.Fatal("TCP connection established before SIGUSR1")
					}
					if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
						t.Fatalf("dial before SIGUSR1: %v, want a timeout (SYN dropped)", err)
					}
				} else if err := tryUDP(host, "backend:", silent); err == nil {
					t.Fatal("datagram answered before SIGUSR1")
				}

				p.signal(t, syscall.SIGUSR1)
				// The signal is handled asynchronously: retry, bounded.
				var err error
				for i := 0; i < 20; i++ {
					if proto == "tcp" {
						err = tryTCP(host, "backend:", 500*time.Millisecond)
					} else {
						err = tryUDP(host, "backend:", 500*time.Millisecond)
					}
					if err == nil {
						break
					}
				}
				if err != nil {
					t.Fatalf("after SIGUSR1: %v", err)
				}
				check(t, proto, host, "backend:")
				p.stop(t, syscall.SIGTERM)
				p.quiet(t)
			})
		}
	}
}

// TestCompatWithoutFD3: run by hand, without a status pipe, the compat form
// serves as usual (and leaves alone whatever the Go runtime opened at fd 3).
func TestCompatWithoutFD3(t *testing.T) {
	t.Parallel()
	backend := tcpEcho(t, lo4, 0, "backend:")
	host := netip.AddrPortFrom(lo4, freePort(t, lo4))
	p := start(t, spawn{noStatus: true}, engineArgs("tcp", host, backend)...)
	waitTCP(t, p, host, "backend:")
	p.stop(t, syscall.SIGTERM)
	p.quiet(t)
}

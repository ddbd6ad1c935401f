package main_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// haproxyConfig has HAProxy accept PROXY headers (accept-proxy) on its
// binds and answer every HTTP request with the client and destination
// addresses it took from the header, and log them to its stdout.
const haproxyConfig = `global
    log stdout format raw local0
    maxconn 64
defaults
    log global
    log-format "client=%%ci:%%cp frontend=%%fi:%%fp"
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
%s
    http-request return status 200 content-type text/plain lf-string "src=%%[src]:%%[src_port] dst=%%[dst]:%%[dst_port]\n"
`

// startHAProxy runs HAProxy in the foreground with accept-proxy binds on
// addrs, until the test ends, and waits until it listens. It returns its
// stdout, where the log lines go.
func startHAProxy(t *testing.T, addrs ...netip.AddrPort) *testenv.Buffer {
	t.Helper()
	bin := "/usr/sbin/haproxy"
	if _, err := os.Stat(bin); err != nil {
		bin = testenv.RequireCommand(t, "haproxy")
	}
	var binds strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&binds, "    bind %s accept-proxy\n", a)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, binds.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &testenv.Buffer{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(wait):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out)
		}
	})
	deadline := time.Now().Add(wait)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a.String(), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("haproxy exited: %s", out)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy does not listen on %s: %v\n%s", a, err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

// askHAProxy connects from src (port 0: any) to to, sends an HTTP request
// and returns HAProxy's answer body and the client's own address.
func askHAProxy(t *testing.T, src netip.Addr, to netip.AddrPort) (body string, local netip.AddrPort) {
	t.Helper()
	d := net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	c, err := d.Dial("tcp", to.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v (got %q)", to, err, b)
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") || !ok {
		t.Fatalf("%s answered %q", to, b)
	}
	return strings.TrimSpace(body), c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// TestProxyProtocolHAProxy proves the PROXY headers against a real
// consumer: HAProxy, with accept-proxy, behind hostproxy's TCP mappings, v1
// and v2. The client connects from another loopback address than the one
// hostproxy dials from, so only the header can tell HAProxy who it is;
// HAProxy answers (and logs) the client address and port and the
// destination it parsed: the address the client reached, the real one on a
// wildcard (0.0.0.0) mapping. IPv4, IPv6, an IPv6 client of an IPv4 backend,
// in -L mode and in docker-proxy's mode.
func TestProxyProtocolHAProxy(t *testing.T) {
	v6 := haveIPv6()
	t.Parallel()
	h4 := netip.AddrPortFrom(lo4, freePort(t, lo4))
	binds := []netip.AddrPort{h4}
	var h6 netip.AddrPort
	if v6 {
		h6 = netip.AddrPortFrom(lo6, freePort(t, lo6))
		binds = append(binds, h6)
	}
	log := startHAProxy(t, binds...)
	client4, reached4 := netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("127.0.0.9")

	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			var p4, pw, p6, p64 uint16
			p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
				p4, pw = freePort(t, lo4), freePort(t, lo4)
				args := []string{"-proxy-protocol", version,
					"-L", fmt.Sprintf("127.0.0.1:%d:%s", p4, h4),
					"-L", fmt.Sprintf("0.0.0.0:%d:%s", pw, h4)}
				if v6 {
					p6, p64 = freePort(t, lo6), freePort(t, lo6)
					args = append(args,
						"-L", fmt.Sprintf("[::1]:%d:[::1]:%d", p6, h6.Port()),
						"-L", fmt.Sprintf("[::1]:%d:%s", p64, h4))
				}
				return args, "0\n"
			})
			type probe struct {
				name   string
				src    netip.Addr
				to, at netip.AddrPort // where the client connects; what HAProxy must see as dst
			}
			probes := []probe{
				{"IPv4", client4, netip.AddrPortFrom(lo4, p4), netip.AddrPortFrom(lo4, p4)},
				{"IPv4 wildcard", client4, netip.AddrPortFrom(reached4, pw), netip.AddrPortFrom(reached4, pw)},
			}
			if v6 {
				probes = append(probes,
					probe{"IPv6", lo6, netip.AddrPortFrom(lo6, p6), netip.AddrPortFrom(lo6, p6)},
					probe{"IPv6 client, IPv4 backend", lo6, netip.AddrPortFrom(lo6, p64), netip.AddrPortFrom(lo6, p64)})
			}
			for _, pr := range probes {
				body, local := askHAProxy(t, pr.src, pr.to)
				want := fmt.Sprintf("src=%s:%d dst=%s:%d", local.Addr(), local.Port(), pr.at.Addr(), pr.at.Port())
				if body != want {
					t.Errorf("%s: HAProxy parsed %q, want %q", pr.name, body, want)
				}
				line := fmt.Sprintf("client=%s:%d frontend=%s:%d", local.Addr(), local.Port(), pr.at.Addr(), pr.at.Port())
				deadline := time.Now().Add(wait)
				for !strings.Contains(log.String(), line) {
					if time.Now().After(deadline) {
						t.Errorf("%s: HAProxy did not log %q", pr.name, line)
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			p.stop(t, syscall.SIGTERM)
		})
	}

	// docker-proxy's flags, as an engine passes them.
	t.Run("engine v2", func(t *testing.T) {
		var hp uint16
		startOnFreePorts(t, spawn{}, func() ([]string, string) {
			hp = freePort(t, lo4)
			return []string{"-proxy-protocol", "v2", "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", itoa(hp),
				"-container-ip", "127.0.0.1", "-container-port", itoa(h4.Port())}, "0\n"
		})
		body, local := askHAProxy(t, client4, netip.AddrPortFrom(lo4, hp))
		if want := fmt.Sprintf("src=%s dst=127.0.0.1:%d", local, hp); body != want {
			t.Errorf("HAProxy parsed %q, want %q", body, want)
		}
	})
}

package tcp

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// readHeader reads one PROXY header of version v from c, and nothing more.
func readHeader(c *net.TCPConn, v proxyproto.Version, buf []byte) ([]byte, error) {
	if v == proxyproto.V2 {
		if _, err := io.ReadFull(c, buf[:16]); err != nil {
			return nil, err
		}
		n := 16 + int(buf[14])<<8 | int(buf[15])
		_, err := io.ReadFull(c, buf[16:n])
		return buf[:n], err
	}
	n := 0
	for n < len(buf) && (n == 0 || buf[n-1] != '\n') {
		if _, err := io.ReadFull(c, buf[n:n+1]); err != nil {
			return nil, err
		}
		n++
	}
	return buf[:n], nil
}

// TestProxyProtocol: with Config.ProxyProtocol the backend gets the header
// of the specification first, naming the client and the address it
// connected to, even when the client sends nothing (the backend speaks
// first here), and then the client's bytes unchanged. On a wildcard
// listener the destination is the local address the client reached, and on
// a dual-stack socket an IPv4 client is announced as TCP4.
func TestProxyProtocol(t *testing.T) {
	type listener struct {
		name         string
		listen, dial string
	}
	cases := []listener{
		{"IPv4", "127.0.0.1:0", "127.0.0.1"},
		{"IPv4 wildcard", "0.0.0.0:0", "127.0.0.3"},
		{"IPv6", "[::1]:0", "::1"},
		{"dual-stack wildcard, IPv4 client", "[::]:0", "127.0.0.4"},
	}
	for _, v := range []proxyproto.Version{proxyproto.V1, proxyproto.V2} {
		for _, lc := range cases {
			t.Run(v.String()+"/"+lc.name, func(t *testing.T) {
				ln, err := net.Listen("tcp", lc.listen)
				if err != nil {
					if netip.MustParseAddrPort(lc.listen).Addr().Is6() {
						t.Skipf("no IPv6 loopback: %v", err)
					}
					t.Fatal(err)
				}
				backendAddr, conns := newHandOver(t)
				p := NewListener(ln.(*net.TCPListener), Config{Backend: backendAddr, ProxyProtocol: v})
				serve(t, p)
				port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
				to := netip.AddrPortFrom(netip.MustParseAddr(lc.dial), port)

				c := dial(t, to)
				b := accepted(t, conns)
				var buf [proxyproto.MaxLen]byte
				got, err := readHeader(b, v, buf[:])
				if err != nil {
					t.Fatalf("read the header: %v", err)
				}
				want := proxyproto.Append(nil, v, addrPort(c.LocalAddr()), to)
				if !bytes.Equal(got, want) {
					t.Fatalf("header\n%q\nwant\n%q", got, want)
				}
				if want[len(want)-1] == '\n' && !bytes.Contains(want, []byte(" TCP")) {
					t.Fatalf("header %q is not TCP4/TCP6", want)
				}
				// The backend speaks first; then the client.
				if _, err := b.Write([]byte("220 hello\r\n")); err != nil {
					t.Fatal(err)
				}
				greet := make([]byte, 11)
				if _, err := io.ReadFull(c, greet); err != nil || string(greet) != "220 hello\r\n" {
					t.Fatalf("client read %q, %v", greet, err)
				}
				if _, err := c.Write([]byte("QUIT\r\n")); err != nil {
					t.Fatal(err)
				}
				c.CloseWrite()
				rest, err := io.ReadAll(b)
				if err != nil || string(rest) != "QUIT\r\n" {
					t.Fatalf("backend read %q after the header, %v", rest, err)
				}
				// The header is not the client's: the byte counters hold
				// only what the client sent.
				waitUntil(t, "BytesUp = 6, the client's bytes without the header", func() bool {
					var up uint64
					p.EachMapping(func(_, _ netip.AddrPort, cs *proxy.StreamCounters) { up = cs.BytesUp.Load() })
					return up == 6
				})
			})
		}
	}
}

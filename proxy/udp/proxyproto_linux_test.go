package udp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// TestProxyProtocolUDP: with ProxyProtocol V2 every datagram reaches the
// backend as one datagram that starts with the v2 DGRAM header (source the
// client, destination the address and port it wrote to, also on a wildcard
// socket; an IPv4 client of a dual-stack socket is AF_INET), then the
// payload intact; replies come back without header. Runs of one size go
// out as UDP GSO sends with the header before each segment's payload (and
// one by one with GSO off), and the backend still sees each datagram whole.
func TestProxyProtocolUDP(t *testing.T) {
	for _, gso := range []bool{true, false} {
		for _, tc := range []struct{ host, to, backend string }{
			{"0.0.0.0:0", "127.0.0.2", "127.0.0.1:0"},
			{"[::]:0", "127.0.0.3", "127.0.0.1:0"},
			{"[::1]:0", "::1", "[::1]:0"},
		} {
			t.Run(fmt.Sprintf("gso=%v/%s via %s", gso, tc.host, tc.to), func(t *testing.T) {
				if strings.Contains(tc.host, ":") && !hasIPv6Loopback() {
					t.Skip("no IPv6 loopback")
				}
				if gso {
					testenv.Require(t, gsoLoadSupported(), "needs UDP GSO and GRO (Linux 5.0+)")
				} else {
					t.Setenv(gsoEnv, "0")
				}
				backend := newRecordingEcho(t, tc.backend, true, true)
				p := start(t, dualStackSocket(t, tc.host), Config{Backend: backend.addr(), ProxyProtocol: proxyproto.V2})
				to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), hostPort(p).Port())
				client := listenUDP(t, map[bool]string{false: "127.0.0.1:0", true: "[::1]:0"}[netip.MustParseAddr(tc.to).Is6()])
				client.SetReadBuffer(1 << 20)
				hdr := proxyproto.AppendV2(nil, proxyproto.Datagram, client.LocalAddr().(*net.UDPAddr).AddrPort(), to)
				if fam := hdr[13]; fam != map[bool]byte{false: 0x12, true: 0x22}[to.Addr().Is6()] {
					t.Fatalf("expected header % x has family byte %#x", hdr, fam)
				}

				var sent [][]byte
				// A single datagram, an empty one, then GSO runs from the
				// client (arriving coalesced with GRO, or as a burst in
				// one recvmmsg): equal sizes, a short last one.
				for _, d := range [][]byte{[]byte("one"), {}} {
					if _, err := client.WriteToUDPAddrPort(d, to); err != nil {
						t.Fatal(err)
					}
					sent = append(sent, d)
				}
				for r, shape := range []struct{ count, seg, last int }{{20, 300, 123}, {40, 1000, 1000}, {60, 16, 16}} {
					dgrams, joined := gsoRun(fmt.Sprintf("run%d", r), shape.count, shape.seg, shape.last)
					writeGSO(t, client, joined, shape.seg, to)
					sent = append(sent, dgrams...)
				}
				buf := make([]byte, MaxDatagram)
				client.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i, d := range sent {
					n, from, err := client.ReadFromUDPAddrPort(buf)
					if err != nil {
						t.Fatalf("reply %d of %d: %v (stats %+v)", i, len(sent), err, p.Stats())
					}
					if from.Addr().Unmap() != to.Addr() || !bytes.Equal(buf[:n], d) {
						t.Fatalf("reply %d from %s is %.20q, want %.20q from %s", i, from, buf[:n], d, to)
					}
				}
				got := backend.received()
				if len(got) != len(sent) {
					t.Fatalf("backend received %d datagrams, want %d", len(got), len(sent))
				}
				for i, d := range sent {
					if want := append(bytes.Clone(hdr), d...); !bytes.Equal(got[i], want) {
						t.Fatalf("backend datagram %d is\n% .80x\nwant\n% .80x", i, got[i], want)
					}
				}
				s := p.Stats()
				var payload uint64
				for _, d := range sent {
					payload += uint64(len(d))
				}
				if s.ToBackend != uint64(len(sent)) || s.BytesToBackend != payload || s.Dropped != 0 {
					t.Errorf("stats after %d datagrams of %d bytes: %+v", len(sent), payload, s)
				}
				if n := p.st.gsoSends.Load(); gso && n == 0 {
					t.Error("no datagrams went out as a GSO send")
				} else if !gso && n != 0 {
					t.Errorf("%d GSO sends with GSO off", n)
				}
			})
		}
	}
}

// dualStackSocket is hostSocket, but a wildcard IPv6 socket takes IPv4 too
// (IPV6_V6ONLY off, as Go's net package makes it).
func dualStackSocket(t testing.TB, addr string) *os.File {
	t.Helper()
	if addr != "[::]:0" {
		return hostSocket(t, addr)
	}
	c := listenUDP(t, addr)
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestProxyProtocolUDPv1: v1 has no UDP form.
func TestProxyProtocolUDPv1(t *testing.T) {
	_, err := New(hostSocket(t, "127.0.0.1:0"), Config{Backend: netip.MustParseAddrPort("127.0.0.1:9"), ProxyProtocol: proxyproto.V1})
	if err == nil || !strings.Contains(err.Error(), "v1") {
		t.Fatalf("New with v1: %v, want an error naming v1", err)
	}
}

// BenchmarkRoundTripProxyProtocol is BenchmarkRoundTrip with a PROXY v2
// header on every datagram to the backend: -benchmem shows that the header
// (an iovec of the flow's, computed once) allocates nothing either.
func BenchmarkRoundTripProxyProtocol(b *testing.B) {
	backend := newRecordingEcho(b, "127.0.0.1:0", false, true)
	benchRoundTrip(b, Config{Backend: backend.addr(), ProxyProtocol: proxyproto.V2})
}

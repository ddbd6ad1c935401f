package sockopt

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClientSource is the contract of -transparent's choice of source, for
// TCP and UDP alike: which clients keep the host's source, and the sockaddr
// the others bind.
func TestClientSource(t *testing.T) {
	v4 := &TransparentBackend{Link: netip.MustParsePrefix("10.78.2.1/24")}
	v6 := &TransparentBackend{V6: true, Link: netip.MustParsePrefix("fd78:2::1/64")}
	local := &TransparentBackend{Local: true}
	dst := netip.MustParseAddr("198.51.100.1") // the host address written to
	for _, tc := range []struct {
		name    string
		b       *TransparentBackend
		client  string
		scope   uint32
		dst     netip.Addr
		want    Source
		bind    string // the sockaddr written, parsed back
		bindSc  uint32
		bindLen uint32
	}{
		{"IPv4 client, IPv4 backend", v4, "203.0.113.7:41234", 0, dst, SourceClient, "203.0.113.7:41234", 0, unix.SizeofSockaddrInet4},
		{"IPv4-mapped client, IPv4 backend", v4, "[::ffff:203.0.113.7]:41234", 0, dst, SourceClient, "203.0.113.7:41234", 0, unix.SizeofSockaddrInet4},
		{"IPv6 client, IPv6 backend", v6, "[2001:db8:7::2]:5000", 0, netip.Addr{}, SourceClient, "[2001:db8:7::2]:5000", 0, unix.SizeofSockaddrInet6},
		{"IPv6 client keeps its scope", v6, "[2001:db8:7::2]:5000", 4, netip.Addr{}, SourceClient, "[2001:db8:7::2]:5000", 4, unix.SizeofSockaddrInet6},
		{"IPv6 client, IPv4 backend", v4, "[2001:db8:7::2]:5000", 0, dst, SourceOtherFamily, "", 0, 0},
		{"IPv4 client, IPv6 backend", v6, "203.0.113.7:41234", 0, dst, SourceOtherFamily, "", 0, 0},
		{"IPv4-mapped client, IPv6 backend", v6, "[::ffff:203.0.113.7]:41234", 0, dst, SourceOtherFamily, "", 0, 0},
		{"loopback", v4, "127.0.0.1:41234", 0, dst, SourceHost, "", 0, 0},
		{"loopback 127/8", v4, "127.3.2.1:41234", 0, netip.Addr{}, SourceHost, "", 0, 0},
		{"IPv4-mapped loopback", v4, "[::ffff:127.0.0.1]:41234", 0, dst, SourceHost, "", 0, 0},
		{"IPv6 loopback", v6, "[::1]:41234", 0, netip.Addr{}, SourceHost, "", 0, 0},
		{"IPv6 loopback, IPv4 backend", v4, "[::1]:41234", 0, netip.Addr{}, SourceHost, "", 0, 0},
		{"unspecified", v4, "0.0.0.0:41234", 0, dst, SourceHost, "", 0, 0},
		{"IPv6 link-local", v6, "[fe80::2]:5000", 3, netip.Addr{}, SourceHost, "", 0, 0},
		{"IPv6 link-local, IPv4 backend", v4, "[fe80::2]:5000", 3, netip.Addr{}, SourceHost, "", 0, 0},
		{"the host address written to", v4, "198.51.100.1:41234", 0, dst, SourceHost, "", 0, 0},
		{"the host address written to, IPv4-mapped", v4, "[::ffff:198.51.100.1]:41234", 0, netip.MustParseAddr("::ffff:198.51.100.1"), SourceHost, "", 0, 0},
		{"on the backend's link", v4, "10.78.2.3:41234", 0, dst, SourceHost, "", 0, 0},
		{"on the backend's link, IPv4-mapped", v4, "[::ffff:10.78.2.3]:41234", 0, dst, SourceHost, "", 0, 0},
		{"on the backend's IPv6 link", v6, "[fd78:2::3]:41234", 0, netip.Addr{}, SourceHost, "", 0, 0},
		{"next to the backend's link", v4, "10.78.3.3:41234", 0, dst, SourceClient, "10.78.3.3:41234", 0, unix.SizeofSockaddrInet4},
		{"a backend on the host", local, "203.0.113.7:41234", 0, dst, SourceHost, "", 0, 0},
		{"a backend on the host, IPv6 client", local, "[2001:db8:7::2]:5000", 0, netip.Addr{}, SourceHost, "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sa := [unix.SizeofSockaddrInet6]byte{0xff, 0xff}
			ap := netip.MustParseAddrPort(tc.client)
			n, src := tc.b.ClientSource(&sa, ap, tc.scope, tc.dst)
			if src != tc.want {
				t.Fatalf("source %d, want %d", src, tc.want)
			}
			if got := tc.b.Source(ap.Addr(), tc.dst); got != src {
				t.Errorf("Source %d, ClientSource %d", got, src)
			}
			if src != SourceClient {
				if n != 0 || sa[0] != 0xff {
					t.Errorf("wrote a sockaddr (%d bytes) for a client that keeps the host's source", n)
				}
				return
			}
			got, scope, ok := ParseSockaddr(sa[:n])
			if !ok || got.String() != tc.bind || scope != tc.bindSc || n != tc.bindLen {
				t.Errorf("binds %s scope %d (%d bytes, ok %v), want %s scope %d (%d bytes)", got, scope, n, ok, tc.bind, tc.bindSc, tc.bindLen)
			}
		})
	}
}

// TestClientSourceAllocs: the per-connection decision allocates nothing.
func TestClientSourceAllocs(t *testing.T) {
	b := &TransparentBackend{V6: true, Link: netip.MustParsePrefix("fd78:2::1/64")}
	ap := netip.MustParseAddrPort("[2001:db8:7::2]:5000")
	var sa [unix.SizeofSockaddrInet6]byte
	if n := testing.AllocsPerRun(100, func() { b.ClientSource(&sa, ap, 0, netip.Addr{}) }); n != 0 {
		t.Errorf("ClientSource: %v allocations, want 0", n)
	}
}

package sockopt

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClientSource: which source a transparent backend connection gets for
// each kind of client, and the sockaddr it binds.
func TestClientSource(t *testing.T) {
	local := &LocalAddrs{}
	local.addrs.Store(&[]netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8::1")})
	for _, tc := range []struct {
		name      string
		client    string
		scope     uint32
		clientV6  bool // the listening socket's family
		backendV6 bool
		want      Source
		bind      string // the sockaddr written, parsed back
		bindScope uint32
	}{
		{"IPv4 client, IPv4 backend", "203.0.113.7:41234", 0, false, false, SourceClient, "203.0.113.7:41234", 0},
		{"IPv4-mapped client, IPv4 backend", "[::ffff:203.0.113.7]:41234", 0, true, false, SourceClient, "203.0.113.7:41234", 0},
		{"IPv6 client, IPv6 backend", "[2001:db8:7::2]:5000", 0, true, true, SourceClient, "[2001:db8:7::2]:5000", 0},
		{"link-local client keeps its scope", "[fe80::2]:5000", 3, true, true, SourceClient, "[fe80::2]:5000", 3},
		{"IPv6 client, IPv4 backend", "[2001:db8:7::2]:5000", 0, true, false, SourceOtherFamily, "", 0},
		{"IPv4 client, IPv6 backend", "203.0.113.7:41234", 0, false, true, SourceOtherFamily, "", 0},
		{"IPv4-mapped client, IPv6 backend", "[::ffff:203.0.113.7]:41234", 0, true, true, SourceOtherFamily, "", 0},
		{"loopback", "127.0.0.1:41234", 0, false, false, SourceLocal, "", 0},
		{"loopback 127/8", "127.3.2.1:41234", 0, false, false, SourceLocal, "", 0},
		{"IPv4-mapped loopback", "[::ffff:127.0.0.1]:41234", 0, true, false, SourceLocal, "", 0},
		{"IPv6 loopback", "[::1]:41234", 0, true, true, SourceLocal, "", 0},
		{"IPv6 loopback, IPv4 backend", "[::1]:41234", 0, true, false, SourceLocal, "", 0},
		{"a host address", "198.51.100.1:41234", 0, false, false, SourceLocal, "", 0},
		{"a host address, IPv4-mapped", "[::ffff:198.51.100.1]:41234", 0, true, false, SourceLocal, "", 0},
		{"a host IPv6 address", "[2001:db8::1]:41234", 0, true, true, SourceLocal, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var client, sa [unix.SizeofSockaddrInet6]byte
			n := PutSockaddr(client[:], tc.clientV6, netip.MustParseAddrPort(tc.client), tc.scope)
			got, src := ClientSource(&sa, client[:n], tc.backendV6, local)
			if src != tc.want {
				t.Fatalf("source %d, want %d", src, tc.want)
			}
			if src != SourceClient {
				return
			}
			ap, scope, ok := ParseSockaddr(sa[:got])
			if !ok || ap.String() != tc.bind || scope != tc.bindScope {
				t.Errorf("binds %s scope %d (ok %v), want %s scope %d", ap, scope, ok, tc.bind, tc.bindScope)
			}
			if v6 := got == unix.SizeofSockaddrInet6; v6 != tc.backendV6 {
				t.Errorf("sockaddr of %d bytes for a backend of IPv6 %v", got, tc.backendV6)
			}
		})
	}
	if _, src := ClientSource(new([unix.SizeofSockaddrInet6]byte), []byte{1}, false, local); src != SourceOtherFamily {
		t.Errorf("a truncated sockaddr: source %d, want SourceOtherFamily", src)
	}
}

//go:build linux

package sockopt_test

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/sockopt"
)

// FuzzParseSockaddr: any msg_name bytes decode or are refused without a
// panic, and what decodes encodes back to the same address.
func FuzzParseSockaddr(f *testing.F) {
	var b [unix.SizeofSockaddrInet6]byte
	for _, tc := range []struct {
		v6   bool
		ap   string
		zone uint32
	}{
		{false, "127.0.0.1:80", 0}, {true, "[::1]:53", 0}, {true, "[fe80::1]:1", 2}, {true, "[::ffff:10.0.0.1]:9", 0},
	} {
		n := sockopt.PutSockaddr(b[:], tc.v6, netip.MustParseAddrPort(tc.ap), tc.zone)
		f.Add(append([]byte(nil), b[:n]...))
	}
	f.Add([]byte{})
	f.Add([]byte{unix.AF_INET6, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		ap, scope, ok := sockopt.ParseSockaddr(in)
		if !ok {
			return
		}
		var out [unix.SizeofSockaddrInet6]byte
		n := sockopt.PutSockaddr(out[:], ap.Addr().Is6(), ap, scope)
		back, scope2, ok := sockopt.ParseSockaddr(out[:n])
		if !ok || back != ap || scope2 != scope {
			t.Fatalf("%x: %v scope %d encodes to %x, which decodes to %v scope %d (%v)", in, ap, scope, out[:n], back, scope2, ok)
		}
	})
}

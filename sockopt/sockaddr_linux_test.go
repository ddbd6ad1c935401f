package sockopt_test

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/sockopt"
)

func TestSockaddr(t *testing.T) {
	for _, tc := range []struct {
		ap    string
		scope uint32
		v6    bool
		want  string // as parsed back
		n     uint32
	}{
		{"192.0.2.1:53", 0, false, "192.0.2.1:53", 16},
		{"[2001:db8::1]:65535", 0, true, "[2001:db8::1]:65535", 28},
		{"[fe80::1]:1", 7, true, "[fe80::1]:1", 28},
		{"192.0.2.1:53", 0, true, "[::ffff:192.0.2.1]:53", 28},
		{"[::ffff:192.0.2.1]:53", 0, false, "192.0.2.1:53", 16},
	} {
		var b [unix.SizeofSockaddrInet6]byte
		n := sockopt.PutSockaddr(b[:], tc.v6, netip.MustParseAddrPort(tc.ap), tc.scope)
		if n != tc.n {
			t.Errorf("PutSockaddr(%s, v6=%v) length %d, want %d", tc.ap, tc.v6, n, tc.n)
		}
		got, scope, ok := sockopt.ParseSockaddr(b[:n])
		if !ok || got.String() != tc.want || scope != tc.scope {
			t.Errorf("ParseSockaddr(PutSockaddr(%s, v6=%v)) = %s scope %d ok %v, want %s scope %d", tc.ap, tc.v6, got, scope, ok, tc.want, tc.scope)
		}
		if _, _, ok := sockopt.ParseSockaddr(b[:n-1]); ok {
			t.Errorf("ParseSockaddr accepted a cut sockaddr for %s", tc.ap)
		}
	}
	if _, _, ok := sockopt.ParseSockaddr(nil); ok {
		t.Error("ParseSockaddr(nil) ok")
	}
	if _, _, ok := sockopt.ParseSockaddr([]byte{0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); ok {
		t.Error("ParseSockaddr accepted an unknown family")
	}
}

package sockopt_test

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// TestBindTransparent: a socket binds an address the host does not have,
// with the client's port; a second one for the same address and port gets
// the address with another port.
func TestBindTransparent(t *testing.T) {
	testenv.RequireNetAdmin(t)
	if err := sockopt.CheckTransparent(); err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddrPort("192.0.2.77:40001") // TEST-NET-1: not the host's
	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for i, wantKept := range []bool{true, false} {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		var sa [unix.SizeofSockaddrInet6]byte
		n := sockopt.PutSockaddr(sa[:], false, client, 0)
		kept, err := sockopt.BindTransparent(fd, &sa, n)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		if kept != wantKept {
			t.Errorf("socket %d: port kept %v, want %v", i, kept, wantKept)
		}
		if got, _, _ := sockopt.ParseSockaddr(sa[:n]); got != client {
			t.Errorf("socket %d: BindTransparent left %s in sa, want %s", i, got, client)
		}
		lsa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		in4 := lsa.(*unix.SockaddrInet4)
		bound := netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
		if bound.Addr() != client.Addr() || (bound.Port() == client.Port()) != wantKept || bound.Port() == 0 {
			t.Errorf("socket %d bound to %s, want %s with port kept %v", i, bound, client.Addr(), wantKept)
		}
	}
}

// TestWatchLocalAddrs: the set holds the addresses the host has, and not
// one it has not; Update with no change pending reports none; Close can be
// called twice.
func TestWatchLocalAddrs(t *testing.T) {
	la, err := sockopt.WatchLocalAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if !la.Contains(netip.MustParseAddr("127.0.0.1")) {
		t.Error("127.0.0.1 (on lo) is not among the host's addresses")
	}
	if la.Contains(netip.MustParseAddr("192.0.2.77")) {
		t.Error("192.0.2.77 (TEST-NET-1) is among the host's addresses")
	}
	if changed, err := la.Update(); changed || err != nil {
		t.Errorf("Update with nothing pending: %v, %v; want false, nil", changed, err)
	}
	if err := la.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := la.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

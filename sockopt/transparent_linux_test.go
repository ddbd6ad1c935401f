package sockopt_test

import (
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// boundTo returns the address fd is bound to.
func boundTo(t *testing.T, fd int) netip.AddrPort {
	t.Helper()
	lsa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch sa := lsa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	t.Fatalf("getsockname: %T", lsa)
	return netip.AddrPort{}
}

func socket(t *testing.T, v6 bool, typ int) int {
	t.Helper()
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestBindTransparent is the contract of the bind, for TCP and UDP alike,
// IPv4 and IPv6: a socket binds an address the host does not have, with
// the client's port; when that port is taken (by a UDP socket bound there
// before, or a TCP listener), the address with another port. TCP sockets
// share the client's port with each other (SO_REUSEADDR: a TIME_WAIT does
// not take it), and BindTransparentOtherPort binds the address with
// another port. When the client is one of the host's own addresses holding
// its port, BoundHostClient. The sockaddr is left as it was.
func TestBindTransparent(t *testing.T) {
	testenv.RequireNetAdmin(t)
	for _, typ := range []struct {
		name   string
		typ    int
		stream bool
	}{{"tcp", unix.SOCK_STREAM, true}, {"udp", unix.SOCK_DGRAM, false}} {
		for _, fam := range []struct {
			name   string
			v6     bool
			remote netip.Addr // not the host's
			host   netip.Addr
		}{
			{"IPv4", false, netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("127.0.0.1")},
			{"IPv6", true, netip.MustParseAddr("2001:db8::77"), netip.MustParseAddr("::1")},
		} {
			t.Run(typ.name+" "+fam.name, func(t *testing.T) {
				if fam.v6 {
					testenv.Require(t, ipv6Loopback(), "no IPv6 loopback")
				}
				client := netip.AddrPortFrom(fam.remote, 40001)
				check := func(i int, fd int, sa *[unix.SizeofSockaddrInet6]byte, n uint32, keepPort bool) {
					t.Helper()
					if back, _, _ := sockopt.ParseSockaddr(sa[:n]); back != client {
						t.Errorf("socket %d: sa left as %s, want %s", i, back, client)
					}
					bound := boundTo(t, fd)
					if bound.Addr() != client.Addr() || (bound.Port() == client.Port()) != keepPort || bound.Port() == 0 {
						t.Errorf("socket %d bound to %s, want %s with port kept %v", i, bound, client.Addr(), keepPort)
					}
				}
				want := []sockopt.Bound{sockopt.BoundClientPort, sockopt.BoundOtherPort}
				if typ.stream {
					want[1] = sockopt.BoundClientPort
				}
				for i, want := range want {
					fd := socket(t, fam.v6, typ.typ)
					var sa [unix.SizeofSockaddrInet6]byte
					n := sockopt.PutSockaddr(sa[:], fam.v6, client, 0)
					got, err := sockopt.BindTransparent(fd, &sa, n, typ.stream)
					if err != nil {
						t.Fatalf("socket %d: %v", i, err)
					}
					if got != want {
						t.Errorf("socket %d: %d, want %d", i, got, want)
					}
					check(i, fd, &sa, n, want == sockopt.BoundClientPort)
				}
				if typ.stream {
					var sa [unix.SizeofSockaddrInet6]byte
					n := sockopt.PutSockaddr(sa[:], fam.v6, client, 0)
					fd := socket(t, fam.v6, typ.typ)
					if err := sockopt.BindTransparentOtherPort(fd, &sa, n); err != nil {
						t.Fatalf("BindTransparentOtherPort: %v", err)
					}
					check(2, fd, &sa, n, false)

					// A listener holds its port even against SO_REUSEADDR.
					busy := netip.AddrPortFrom(client.Addr(), client.Port()+1)
					n = sockopt.PutSockaddr(sa[:], fam.v6, busy, 0)
					ln := socket(t, fam.v6, typ.typ)
					if _, err := sockopt.BindTransparent(ln, &sa, n, false); err != nil {
						t.Fatal(err)
					}
					if err := unix.Listen(ln, 1); err != nil {
						t.Fatal(err)
					}
					fd = socket(t, fam.v6, typ.typ)
					if got, err := sockopt.BindTransparent(fd, &sa, n, true); err != nil || got != sockopt.BoundOtherPort {
						t.Errorf("client %s whose port a listener holds: %d, %v; want BoundOtherPort", busy, got, err)
					}
					if bound := boundTo(t, fd); bound.Addr() != busy.Addr() || bound.Port() == busy.Port() {
						t.Errorf("client %s whose port a listener holds: bound to %s", busy, bound)
					}
				}

				// A client of the host: its own socket holds its port.
				own := socket(t, fam.v6, typ.typ)
				var sa [unix.SizeofSockaddrInet6]byte
				if err := unix.Bind(own, sockaddr(netip.AddrPortFrom(fam.host, 0))); err != nil {
					t.Fatal(err)
				}
				hostClient := boundTo(t, own)
				fd := socket(t, fam.v6, typ.typ)
				n := sockopt.PutSockaddr(sa[:], fam.v6, hostClient, 0)
				if got, err := sockopt.BindTransparent(fd, &sa, n, typ.stream); err != nil || got != sockopt.BoundHostClient {
					t.Errorf("client %s of the host: %d, %v; want BoundHostClient", hostClient, got, err)
				}
			})
		}
	}
}

// TestBindTransparentAllocs: the bind of the common case allocates
// nothing, for TCP and UDP.
func TestBindTransparentAllocs(t *testing.T) {
	testenv.RequireNetAdmin(t)
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
		stream := typ == unix.SOCK_STREAM
		var sa [unix.SizeofSockaddrInet6]byte
		port := uint16(40100)
		n := testing.AllocsPerRun(50, func() {
			port++
			fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				panic(err)
			}
			n := sockopt.PutSockaddr(sa[:], false, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 78}), port), 0)
			if b, err := sockopt.BindTransparent(fd, &sa, n, stream); err != nil || b != sockopt.BoundClientPort {
				panic(err)
			}
			unix.Close(fd)
		})
		if n != 0 {
			t.Errorf("socket type %d: %v allocations per bind, want 0", typ, n)
		}
	}
}

// TestBindTransparentFails: an error names the address and wraps the
// cause.
func TestBindTransparentFails(t *testing.T) {
	testenv.RequireNetAdmin(t)
	fd := socket(t, false, unix.SOCK_DGRAM)
	var sa [unix.SizeofSockaddrInet6]byte
	n := sockopt.PutSockaddr(sa[:], false, netip.MustParseAddrPort("192.0.2.77:40001"), 0)
	if _, err := sockopt.BindTransparent(fd, &sa, n, false); err != nil {
		t.Fatal(err)
	}
	_, err := sockopt.BindTransparent(fd, &sa, n, false) // already bound
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "192.0.2.77:40001") {
		t.Errorf("second bind of one socket: %v; want EINVAL naming 192.0.2.77:40001", err)
	}
}

// TestLearnBackend: a backend on the host is Local; one elsewhere is not,
// and its Link, when found, does not hold loopback.
func TestLearnBackend(t *testing.T) {
	testenv.RequireNetAdmin(t)
	for _, tc := range []struct {
		backend string
		local   bool
	}{
		{"127.0.0.1:8080", true},
		{"[::ffff:127.0.0.1]:8080", true},
		{"192.0.2.77:8080", false},
	} {
		b, err := sockopt.LearnBackend(netip.MustParseAddrPort(tc.backend), 0)
		if err != nil {
			t.Fatalf("%s: %v", tc.backend, err)
		}
		if b.Local != tc.local || b.V6 {
			t.Errorf("%s: Local %v V6 %v, want Local %v V6 false", tc.backend, b.Local, b.V6, tc.local)
		}
		if b.Link.Contains(netip.MustParseAddr("127.0.0.1")) {
			t.Errorf("%s: Link %s holds loopback", tc.backend, b.Link)
		}
	}
}

func ipv6Loopback() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}) == nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// TestLearnBackendNeedsCapability: without CAP_NET_ADMIN and CAP_NET_RAW
// (dropped from the effective set of one thread, capabilities being per
// thread) LearnBackend fails for either family, and CheckTransparent too,
// with ErrNoNetAdmin and the EPERM.
func TestLearnBackendNeedsCapability(t *testing.T) {
	testenv.RequireRoot(t)
	errc := make(chan []error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- []error{err}
			return
		}
		data[0].Effective &^= 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- []error{err}
			return
		}
		var errs []error
		for _, b := range []string{"192.0.2.77:80", "[2001:db8::77]:80"} {
			_, err := sockopt.LearnBackend(netip.MustParseAddrPort(b), 0)
			errs = append(errs, err)
		}
		errc <- append(errs, sockopt.CheckTransparent())
	}()
	for i, err := range <-errc {
		if !errors.Is(err, sockopt.ErrNoNetAdmin) || !errors.Is(err, unix.EPERM) {
			t.Errorf("check %d without the capabilities: %v; want ErrNoNetAdmin and EPERM", i, err)
		}
	}
}

//go:build linux

package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

// keepsHostSource reports whether a flow for client (unmapped) keeps the
// host's normal source, by what the datagram already told, at the cost of no
// system call: a loopback address (the kernel would not send it out), an
// IPv6 link-local one (bound, it would tie the flow socket to the client's
// link), or the address the client wrote to (a host process whose socket is
// not bound writes to a host address from that address, unless the address
// is a secondary one of its subnet). The other clients that are host
// addresses are recognised by bindTransparent, the client holding its own
// port. The interface the datagram arrived on would not tell more: for IPv4
// the kernel reports the device of the address written to, not the loopback
// device.
func keepsHostSource(client netip.Addr, pi sockopt.Pktinfo) bool {
	return client.IsLoopback() || client.IsUnspecified() ||
		(client.Is6() && client.IsLinkLocalUnicast()) || client == pi.Dst.Unmap()
}

// transparentSource returns the address a new flow's socket is bound to
// when the proxy is transparent: the client's, unmapped. It returns false
// when the flow keeps the host's normal source: the proxy is not
// transparent, keepsHostSource says so, or the client
// is of the other family than the backend (said once in the log), or the
// client is on the link of the host's address toward the backend (see
// backendLink).
func (p *Proxy) transparentSource(key flowKey, pi sockopt.Pktinfo) (netip.AddrPort, bool) {
	if !p.transparent {
		return netip.AddrPort{}, false
	}
	a := key.client.Addr().Unmap()
	if keepsHostSource(a, pi) || p.backendLink.Contains(a) {
		return netip.AddrPort{}, false
	}
	if a.Is4() != (p.bfamily == unix.AF_INET) {
		if !p.familyLogged {
			p.familyLogged = true
			p.log.Warn("udp -transparent: client and backend are of different families; "+
				"such flows leave from the host's own address (said once)",
				logging.AddrPort("client", key.client))
		}
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, key.client.Port()), true
}

// transparentOpt is the level and name of the option that lets a socket of
// family bind to an address that is not the host's.
func transparentOpt(family int) (level, opt int, name string) {
	if family == unix.AF_INET6 {
		return unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"
	}
	return unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"
}

// errHostClient is bindTransparent's answer for a client that is one of
// the host's own addresses.
var errHostClient = errors.New("the client is a host address")

// bindTransparent makes fd, a socket of family, transparent and binds it to
// src (scope is the IPv6 scope id). When src's port is taken, it is by
// another flow of the client toward a backend, through this or another
// process, or by the client itself, a process of the host bound to that
// address, which holds its port while it waits for the reply. Then a bind
// without IP_TRANSPARENT to src's address, which succeeds only for a host
// address, tells the two apart: for a host address it returns
// errHostClient (fd is then bound and of no use), otherwise it binds fd to
// src's address with a port the kernel picks. The extra system calls are
// made only when the port is taken.
func bindTransparent(fd, family int, src netip.AddrPort, scope uint32) error {
	level, opt, name := transparentOpt(family)
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return fmt.Errorf("setsockopt %s: %w", name, err)
	}
	err := unix.Bind(fd, sockaddrOf(family, src, scope))
	if errors.Is(err, unix.EADDRINUSE) {
		anyPort := sockaddrOf(family, netip.AddrPortFrom(src.Addr(), 0), scope)
		if err := unix.SetsockoptInt(fd, level, opt, 0); err != nil {
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		err = unix.Bind(fd, anyPort)
		if err == nil {
			return errHostClient
		}
		if !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("bind %s/udp: %w", netip.AddrPortFrom(src.Addr(), 0), err)
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		err = unix.Bind(fd, anyPort)
	}
	if err != nil {
		return fmt.Errorf("bind %s/udp (transparent): %w", src, err)
	}
	return nil
}

func sockaddrOf(family int, ap netip.AddrPort, scope uint32) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: int(ap.Port()), ZoneId: scope, Addr: ap.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// probeTransparent checks, once at start, that the process may make a
// socket of family transparent.
func probeTransparent(family int) error {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("-transparent: socket: %w", err)
	}
	defer unix.Close(fd)
	level, opt, name := transparentOpt(family)
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("-transparent: setsockopt %s: %w (it needs CAP_NET_ADMIN or CAP_NET_RAW)", name, err)
		}
		return fmt.Errorf("-transparent: setsockopt %s: %w", name, err)
	}
	return nil
}

// backendLink returns the prefix of the host's address toward backend, the
// address the kernel picks as the source of a socket connected to it, as
// configured on its interface: the link of the backend when it is directly
// attached (a bridge or veth of containers), or of its gateway. A client on
// that link must keep the host's source: the backend, or its gateway, would
// deliver the replies to it directly instead of to the host, and it would
// get them from the wrong address. It is found once, at start; the zero
// Prefix (which contains nothing) when it cannot be.
func backendLink(family int, backend unix.Sockaddr) netip.Prefix {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return netip.Prefix{}
	}
	defer unix.Close(fd)
	if unix.Connect(fd, backend) != nil {
		return netip.Prefix{}
	}
	var src netip.Addr
	switch sa, _ := unix.Getsockname(fd); sa := sa.(type) {
	case *unix.SockaddrInet4:
		src = netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		src = netip.AddrFrom16(sa.Addr).Unmap()
	default:
		return netip.Prefix{}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok || ip.Unmap() != src {
			continue
		}
		ones, _ := ipn.Mask.Size()
		if src.Is4() && len(ipn.Mask) == net.IPv6len {
			ones -= 96
		}
		if pfx, err := src.Prefix(ones); err == nil && !src.IsLoopback() {
			return pfx
		}
	}
	return netip.Prefix{}
}

// localBackend reports whether backend is one of the host's own addresses:
// whether a socket can be bound to it without IP_TRANSPARENT. The host's
// own replies to a client's address are routed out toward the client,
// never through the prerouting rules that would bring them back to the
// flow socket, so such a backend cannot see its clients. Asked once, at
// start.
func localBackend(family int, backend netip.Addr) bool {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, sockaddrOf(family, netip.AddrPortFrom(backend, 0), 0)) == nil
}

// backendFacts is what -transparent learns about a backend address at start.
type backendFacts struct {
	local bool         // one of the host's own addresses (localBackend)
	link  netip.Prefix // backendLink
}

// learnBackend checks that the process may make sockets of family
// transparent and learns the facts about backend (sa is its sockaddr).
func learnBackend(family int, sa unix.Sockaddr, backend netip.Addr) (backendFacts, error) {
	if err := probeTransparent(family); err != nil {
		return backendFacts{}, err
	}
	if localBackend(family, backend) {
		return backendFacts{local: true}, nil
	}
	return backendFacts{link: backendLink(family, sa)}, nil
}

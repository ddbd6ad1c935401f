//go:build linux

package udp

import (
	"errors"
	"fmt"
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
// is a secondary one of its subnet). Any other client that is a host
// address is not recognised: its flow leaves from that address, with another
// port since the client itself holds its own (bindTransparent), and the
// replies, addressed to the host, are delivered as usual. The interface
// the datagram arrived on would not tell more: for IPv4 the kernel reports
// the device of the address written to, not the loopback device.
func keepsHostSource(client netip.Addr, pi sockopt.Pktinfo) bool {
	return client.IsLoopback() || client.IsUnspecified() ||
		(client.Is6() && client.IsLinkLocalUnicast()) || client == pi.Dst.Unmap()
}

// transparentSource returns the address a new flow's socket is bound to
// when the proxy is transparent: the client's, unmapped. It returns false
// when the flow keeps the host's normal source: the proxy is not
// transparent, keepsHostSource says so, or the client
// is of the other family than the backend (said once in the log).
func (p *Proxy) transparentSource(key flowKey, pi sockopt.Pktinfo) (netip.AddrPort, bool) {
	if !p.transparent {
		return netip.AddrPort{}, false
	}
	a := key.client.Addr().Unmap()
	if keepsHostSource(a, pi) {
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

// bindTransparent makes fd, a socket of family, transparent and binds it to
// src; when src's port is taken (the same client already has a flow toward
// a backend from that port, through this or another process) it binds to
// src's address with a port the kernel picks. scope is the IPv6 scope id.
func bindTransparent(fd, family int, src netip.AddrPort, scope uint32) error {
	level, opt, name := transparentOpt(family)
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return fmt.Errorf("setsockopt %s: %w", name, err)
	}
	err := unix.Bind(fd, sockaddrOf(family, src, scope))
	if errors.Is(err, unix.EADDRINUSE) {
		err = unix.Bind(fd, sockaddrOf(family, netip.AddrPortFrom(src.Addr(), 0), scope))
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

package sockopt

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ClientSource is b.Source for the client at ap (scope is its IPv6 scope
// id) that wrote to dst; when the answer is SourceClient it also writes
// into sa the sockaddr to bind, of the backend's family, and returns its
// length: an IPv4-mapped client becomes a plain IPv4 one. It makes no
// system call and allocates nothing.
func (b *TransparentBackend) ClientSource(sa *[unix.SizeofSockaddrInet6]byte, ap netip.AddrPort, scope uint32, dst netip.Addr) (uint32, Source) {
	src := b.Source(ap.Addr(), dst)
	if src != SourceClient {
		return 0, src
	}
	if !b.V6 {
		scope = 0
	}
	return PutSockaddr(sa[:], b.V6, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), scope), SourceClient
}

// BindTransparent sets IP_TRANSPARENT (IPV6_TRANSPARENT for an AF_INET6
// sa) on fd, a TCP (stream) or UDP socket of sa's family not yet bound, and
// binds it to sa, an address that need not be the host's: two system
// calls, three for TCP, which also gets SO_REUSEADDR first. Then a
// TIME_WAIT that an earlier connection from the same client port left here
// does not take the port: the bind shares it, and connect takes over the
// TIME_WAIT of the same four addresses and ports (the kernel allows that
// to a bound socket when TCP timestamps were on). When a connection between
// the same four is open, connect fails with EADDRNOTAVAIL instead; the
// caller then binds a new socket with BindTransparentOtherPort.
//
// When sa's port is taken (EADDRINUSE) it is by another flow of the client
// here (UDP), a listener, or the client itself, a process of the host
// whose socket holds its port. A bind of sa's address with port 0 without
// IP_TRANSPARENT, which succeeds only for a host address, tells the two
// apart: for the host's own client it reports BoundHostClient, otherwise it
// binds sa's address, transparent, with a port the kernel picks
// (BoundOtherPort). Only then are the extra system calls made. With
// net.ipv4.ip_nonlocal_bind (or its IPv6 twin) set, that probe takes every
// client whose port is taken for the host's own, which keeps the host's
// source.
//
// sa is left as it was. It allocates nothing unless it fails.
func BindTransparent(fd int, sa *[unix.SizeofSockaddrInet6]byte, n uint32, stream bool) (Bound, error) {
	level, opt := transparentOpt(binary.NativeEndian.Uint16(sa[:]) == unix.AF_INET6)
	if stream {
		var one int32 = 1
		if _, _, errno := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, uintptr(unsafe.Pointer(&one)), 4, 0); errno != 0 {
			return 0, os.NewSyscallError("setsockopt SO_REUSEADDR", errno)
		}
	}
	if err := setTransparent(fd, level, opt, 1); err != nil {
		return 0, err
	}
	errno := bind(fd, sa, n)
	if errno == 0 {
		return BoundClientPort, nil
	}
	if errno != unix.EADDRINUSE {
		return 0, bindError(sa, n, errno)
	}
	port := [2]byte{sa[2], sa[3]}
	sa[2], sa[3] = 0, 0
	defer func() { sa[2], sa[3] = port[0], port[1] }()
	if err := setTransparent(fd, level, opt, 0); err != nil {
		return 0, err
	}
	switch errno = bind(fd, sa, n); errno {
	case 0:
		return BoundHostClient, nil
	case unix.EADDRNOTAVAIL:
	default:
		return 0, bindError(sa, n, errno)
	}
	if err := BindTransparentOtherPort(fd, sa, n); err != nil {
		return 0, err
	}
	return BoundOtherPort, nil
}

// BindTransparentOtherPort sets IP_TRANSPARENT (IPV6_TRANSPARENT) on fd, a
// TCP socket of sa's family not yet bound, and binds it to sa's address
// with a port the kernel picks: for a backend connection whose connect from
// the client's port failed with EADDRNOTAVAIL (BindTransparent). sa is left
// as it was.
func BindTransparentOtherPort(fd int, sa *[unix.SizeofSockaddrInet6]byte, n uint32) error {
	level, opt := transparentOpt(binary.NativeEndian.Uint16(sa[:]) == unix.AF_INET6)
	if err := setTransparent(fd, level, opt, 1); err != nil {
		return err
	}
	port := [2]byte{sa[2], sa[3]}
	sa[2], sa[3] = 0, 0
	defer func() { sa[2], sa[3] = port[0], port[1] }()
	if errno := bind(fd, sa, n); errno != 0 {
		return bindError(sa, n, errno)
	}
	return nil
}

func transparentOpt(v6 bool) (level, opt int) {
	if v6 {
		return unix.SOL_IPV6, unix.IPV6_TRANSPARENT
	}
	return unix.SOL_IP, unix.IP_TRANSPARENT
}

func setTransparent(fd, level, opt int, v int32) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	if errno == 0 {
		return nil
	}
	name := "IP_TRANSPARENT"
	if level == unix.SOL_IPV6 {
		name = "IPV6_TRANSPARENT"
	}
	return os.NewSyscallError("setsockopt "+name, errno)
}

func bind(fd int, sa *[unix.SizeofSockaddrInet6]byte, n uint32) unix.Errno {
	_, _, errno := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(n))
	return errno
}

func bindError(sa *[unix.SizeofSockaddrInet6]byte, n uint32, errno unix.Errno) error {
	ap, _, _ := ParseSockaddr(sa[:n])
	return fmt.Errorf("bind %s (transparent): %w", ap, os.NewSyscallError("bind", errno))
}

// CheckTransparent reports whether this process may make IPv4 sockets
// transparent. Without CAP_NET_ADMIN the error wraps ErrNoNetAdmin.
func CheckTransparent() error { return checkTransparent(false) }

// checkTransparent sets IP_TRANSPARENT, or IPV6_TRANSPARENT when v6, on a
// scratch socket.
func checkTransparent(v6 bool) error {
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("check IP_TRANSPARENT: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	level, opt := transparentOpt(v6)
	err = setTransparent(fd, level, opt, 1)
	if errno, ok := unwrapErrno(err); ok && errno == unix.EPERM {
		return fmt.Errorf("%w (%w)", ErrNoNetAdmin, err)
	}
	if err != nil {
		return fmt.Errorf("check IP_TRANSPARENT: %w", err)
	}
	return nil
}

func unwrapErrno(err error) (unix.Errno, bool) {
	if se, ok := err.(*os.SyscallError); ok {
		errno, ok := se.Err.(unix.Errno)
		return errno, ok
	}
	return 0, false
}

// LearnBackend checks that the process may make sockets of backend's
// family transparent (the error wraps ErrNoNetAdmin when it may not) and
// learns what TransparentBackend holds about backend (unmapped; scope is
// its IPv6 scope id): whether a socket binds its address without
// IP_TRANSPARENT (a host address: Local), else the prefix of the address a
// socket connected to it leaves from, as the host's interfaces have it
// (Link; the zero Prefix when it cannot be told, or is loopback).
func LearnBackend(backend netip.AddrPort, scope uint32) (TransparentBackend, error) {
	a := backend.Addr().Unmap()
	b := TransparentBackend{V6: a.Is6()}
	if err := checkTransparent(b.V6); err != nil {
		return b, err
	}
	family := unix.AF_INET
	if b.V6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return b, fmt.Errorf("learn backend %s: %w", backend, os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	var sa [unix.SizeofSockaddrInet6]byte
	if bind(fd, &sa, PutSockaddr(sa[:], b.V6, netip.AddrPortFrom(a, 0), scope)) == 0 {
		b.Local = true
		return b, nil
	}
	port := backend.Port()
	if port == 0 {
		port = 9 // connect(2) of UDP sends nothing; any port finds the route
	}
	n := PutSockaddr(sa[:], b.V6, netip.AddrPortFrom(a, port), scope)
	if _, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(n)); errno != 0 {
		return b, nil
	}
	local, err := localAddr(fd)
	src := local.Addr().Unmap()
	if err != nil || !src.IsValid() || src.IsLoopback() {
		return b, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return b, nil
	}
	for _, ifa := range addrs {
		ipn, ok := ifa.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); !ok || ip.Unmap() != src {
			continue
		}
		ones, _ := ipn.Mask.Size()
		if src.Is4() && len(ipn.Mask) == net.IPv6len {
			ones -= 96
		}
		if pfx, err := src.Prefix(ones); err == nil {
			b.Link = pfx
		}
		break
	}
	return b, nil
}

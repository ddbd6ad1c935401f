package sockopt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ClientSource decides where a transparent connection to a backend of the
// IPv6 family (backendV6) or IPv4 leaves from for the client whose sockaddr
// accept(2) or recvmsg(2) filled into client. When the answer is
// SourceClient it writes into sa the sockaddr to bind, of the backend's
// family, and returns its length: an IPv4-mapped client becomes a plain
// IPv4 one, an IPv6 one keeps its scope id. It makes no system call and
// allocates nothing.
func ClientSource(sa *[unix.SizeofSockaddrInet6]byte, client []byte, backendV6 bool, local *LocalAddrs) (uint32, Source) {
	ap, scope, ok := ParseSockaddr(client)
	if !ok {
		return 0, SourceOtherFamily
	}
	a := ap.Addr().Unmap()
	if IsLocal(a, local) {
		return 0, SourceLocal
	}
	if a.Is6() != backendV6 {
		return 0, SourceOtherFamily
	}
	if !a.Is6() {
		scope = 0
	}
	return PutSockaddr(sa[:], backendV6, netip.AddrPortFrom(a, ap.Port()), scope), SourceClient
}

// BindTransparent sets IP_TRANSPARENT (IPV6_TRANSPARENT for an AF_INET6
// sa) on fd, a socket of sa's family not yet bound, and binds it to sa, an
// address that need not be the host's. When sa's port is taken
// (EADDRINUSE: the client's port is in use toward a backend, or bound on
// the host) it binds the same address with port 0 instead and reports
// portKept false. It allocates nothing unless it fails.
func BindTransparent(fd int, sa *[unix.SizeofSockaddrInet6]byte, n uint32) (portKept bool, err error) {
	level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
	if binary.NativeEndian.Uint16(sa[:]) == unix.AF_INET6 {
		level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
	}
	one := int32(1)
	if _, _, errno := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&one)), 4, 0); errno != 0 {
		return false, os.NewSyscallError("setsockopt IP_TRANSPARENT", errno)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(n))
	if errno == 0 {
		return true, nil
	}
	if errno != unix.EADDRINUSE {
		return false, os.NewSyscallError("bind", errno)
	}
	port := [2]byte{sa[2], sa[3]}
	sa[2], sa[3] = 0, 0
	_, _, errno = unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(n))
	sa[2], sa[3] = port[0], port[1]
	if errno != 0 {
		return false, os.NewSyscallError("bind", errno)
	}
	return false, nil
}

// CheckTransparent reports whether this process may make sockets
// transparent: it sets IP_TRANSPARENT on a scratch TCP socket. Without
// CAP_NET_ADMIN the error wraps ErrNoNetAdmin.
func CheckTransparent() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("check IP_TRANSPARENT: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	switch err {
	case nil:
		return nil
	case unix.EPERM:
		return fmt.Errorf("%w (setsockopt: %w)", ErrNoNetAdmin, err)
	}
	return fmt.Errorf("check IP_TRANSPARENT: %w", os.NewSyscallError("setsockopt", err))
}

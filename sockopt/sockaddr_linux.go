package sockopt

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ParseSockaddr decodes a struct sockaddr_in or sockaddr_in6, as recvmsg
// fills msg_name and getsockname its buffer. The address keeps the form the kernel used (IPv4-mapped stays
// mapped); the IPv6 scope id is returned apart, so no zone string is built.
func ParseSockaddr(b []byte) (ap netip.AddrPort, scope uint32, ok bool) {
	if len(b) < 2 {
		return ap, 0, false
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) < unix.SizeofSockaddrInet4 {
			return ap, 0, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), 0, true
	case unix.AF_INET6:
		if len(b) < unix.SizeofSockaddrInet6 {
			return ap, 0, false
		}
		a := netip.AddrFrom16([16]byte(b[8:24]))
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[2:])), binary.NativeEndian.Uint32(b[24:]), true
	}
	return ap, 0, false
}

// PutSockaddr encodes ap as the sockaddr of a socket of the given family (IPv6
// when v6) into b and returns its length; an IPv4 address on an IPv6 socket
// is written IPv4-mapped.
func PutSockaddr(b []byte, v6 bool, ap netip.AddrPort, scope uint32) uint32 {
	clear(b)
	if v6 {
		binary.NativeEndian.PutUint16(b, unix.AF_INET6)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a := ap.Addr().As16()
		copy(b[8:24], a[:])
		binary.NativeEndian.PutUint32(b[24:], scope)
		return unix.SizeofSockaddrInet6
	}
	binary.NativeEndian.PutUint16(b, unix.AF_INET)
	binary.BigEndian.PutUint16(b[2:], ap.Port())
	a := ap.Addr().Unmap().As4()
	copy(b[4:8], a[:])
	return unix.SizeofSockaddrInet4
}

package sockopt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Control messages (struct cmsghdr) on Linux: a length of type size_t, a level
// and a type (int32 each), then the data; every header and every data part
// starts on a boundary of sizeof(size_t).
const (
	cmsgAlign   = int(unsafe.Sizeof(uintptr(0)))
	cmsgLenSize = int(unsafe.Sizeof(uintptr(0)))
	cmsgHdrLen  = unix.SizeofCmsghdr

	sizeofInPktinfo  = unix.SizeofInet4Pktinfo // ifindex, spec_dst, addr
	sizeofIn6Pktinfo = unix.SizeofInet6Pktinfo // addr, ifindex
)

// PktinfoSpace is the room a caller should reserve for one PKTINFO control
// message of either family, received or sent.
const PktinfoSpace = (cmsgHdrLen+cmsgAlign-1)&^(cmsgAlign-1) + (sizeofIn6Pktinfo+cmsgAlign-1)&^(cmsgAlign-1)

func cmsgAlignUp(n int) int { return (n + cmsgAlign - 1) &^ (cmsgAlign - 1) }

// EnablePktinfo asks the kernel to report, with every datagram f receives, the
// address it was sent to: IP_PKTINFO on an IPv4 socket, IPV6_RECVPKTINFO on an
// IPv6 one (which also covers IPv4 datagrams on a dual-stack socket, reported
// as IPv4-mapped addresses). Enabling it twice is harmless.
func EnablePktinfo(f *os.File) error {
	return control(f, "PKTINFO", func(fd int) error {
		family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return fmt.Errorf("SO_DOMAIN: %w", err)
		}
		switch family {
		case unix.AF_INET:
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
				return fmt.Errorf("IP_PKTINFO: %w", err)
			}
		case unix.AF_INET6:
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
				return fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
			}
		default:
			return fmt.Errorf("address family %d is not IPv4 or IPv6", family)
		}
		return nil
	})
}

// ParsePktinfo finds the IP_PKTINFO or IPV6_PKTINFO message among the control
// messages oob (the first oobn bytes a recvmsg returned) and reports what it
// says. It never reads past oob and never panics: a missing, cut or malformed
// message yields ok == false, and the caller lets the kernel choose the
// source of its reply.
func ParsePktinfo(oob []byte) (pi Pktinfo, ok bool) {
	for len(oob) > 0 {
		level, typ, data, rest, ok := nextCmsg(oob)
		if !ok {
			return Pktinfo{}, false // malformed or cut (MSG_CTRUNC)
		}
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= sizeofInPktinfo:
			pi.Ifindex = binary.NativeEndian.Uint32(data)
			pi.Local = netip.AddrFrom4([4]byte(data[4:8]))
			pi.Dst = netip.AddrFrom4([4]byte(data[8:12]))
			return pi, true
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= sizeofIn6Pktinfo:
			pi.Dst = netip.AddrFrom16([16]byte(data[:16]))
			pi.Local = pi.Dst
			pi.Ifindex = binary.NativeEndian.Uint32(data[16:])
			return pi, true
		}
		oob = rest
	}
	return Pktinfo{}, false
}

// nextCmsg splits the first control message off oob (bytes a recvmsg
// returned): its level, type and data, and the messages after it. ok is
// false when oob does not start with a whole message: too short, cut by
// MSG_CTRUNC, or with a length below its own header. It never reads past
// oob.
func nextCmsg(oob []byte) (level, typ int32, data, rest []byte, ok bool) {
	if len(oob) < cmsgHdrLen {
		return 0, 0, nil, nil, false
	}
	var l uint64
	if cmsgLenSize == 8 {
		l = binary.NativeEndian.Uint64(oob)
	} else {
		l = uint64(binary.NativeEndian.Uint32(oob))
	}
	if l < uint64(cmsgHdrLen) || l > uint64(len(oob)) {
		return 0, 0, nil, nil, false
	}
	level = int32(binary.NativeEndian.Uint32(oob[cmsgLenSize:]))
	typ = int32(binary.NativeEndian.Uint32(oob[cmsgLenSize+4:]))
	if h := cmsgAlignUp(cmsgHdrLen); uint64(h) <= l {
		data = oob[h:l]
	}
	if next := cmsgAlignUp(int(l)); next < len(oob) {
		rest = oob[next:]
	}
	return level, typ, data, rest, true
}

// AppendPktinfo appends to b the control message that makes sendmsg on a
// socket of the given family (IPv6 when v6 is true) use src as the
// datagram's source address, and returns the extended slice. ifindex, when
// not 0, also chooses the outgoing interface (needed for IPv6 link-local
// sources).
//
// An IPv4 src on an IPv6 socket is written IPv4-mapped, which the kernel
// accepts for IPv4 destinations of a dual-stack socket. When src cannot be
// expressed on that family (invalid, or IPv6 on an IPv4 socket) b is
// returned unchanged and the kernel picks the source.
func AppendPktinfo(b []byte, v6 bool, src netip.Addr, ifindex uint32) []byte {
	if !src.IsValid() {
		return b
	}
	var level, typ, n int
	if v6 {
		level, typ, n = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, sizeofIn6Pktinfo
	} else {
		if src = src.Unmap(); !src.Is4() {
			return b
		}
		level, typ, n = unix.IPPROTO_IP, unix.IP_PKTINFO, sizeofInPktinfo
	}
	start := len(b)
	b = slices.Grow(b, cmsgAlignUp(cmsgHdrLen)+cmsgAlignUp(n))
	b = b[:start+cmsgAlignUp(cmsgHdrLen)+cmsgAlignUp(n)]
	m := b[start:]
	clear(m)
	if cmsgLenSize == 8 {
		binary.NativeEndian.PutUint64(m, uint64(cmsgAlignUp(cmsgHdrLen)+n))
	} else {
		binary.NativeEndian.PutUint32(m, uint32(cmsgAlignUp(cmsgHdrLen)+n))
	}
	binary.NativeEndian.PutUint32(m[cmsgLenSize:], uint32(level))
	binary.NativeEndian.PutUint32(m[cmsgLenSize+4:], uint32(typ))
	data := m[cmsgAlignUp(cmsgHdrLen):]
	if v6 {
		a := src.As16()
		copy(data, a[:])
		binary.NativeEndian.PutUint32(data[16:], ifindex)
	} else {
		a := src.As4()
		binary.NativeEndian.PutUint32(data, ifindex)
		copy(data[4:8], a[:]) // ipi_spec_dst: the source to use
	}
	return b
}

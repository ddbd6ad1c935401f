package sockopt

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// UDPSegmentSpace is the room one UDP_SEGMENT control message takes.
const UDPSegmentSpace = (cmsgHdrLen+cmsgAlign-1)&^(cmsgAlign-1) + (2+cmsgAlign-1)&^(cmsgAlign-1)

// UDPGSOSupported reports whether the kernel offers UDP generic segmentation
// offload (UDP_SEGMENT, Linux 4.18+) on the UDP socket f: one sendmsg then
// carries several datagrams of one size to one destination.
func UDPGSOSupported(f *os.File) bool {
	err := control(f, "UDP_SEGMENT", func(fd int) error {
		_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		return err
	})
	return err == nil
}

// AppendUDPSegment appends to b the control message that makes the kernel
// cut a sendmsg's payload into datagrams of size bytes (the last may be
// shorter), and returns the extended slice.
func AppendUDPSegment(b []byte, size uint16) []byte {
	start := len(b)
	b = slices.Grow(b, UDPSegmentSpace)
	b = b[:start+UDPSegmentSpace]
	m := b[start:]
	clear(m)
	l := cmsgAlignUp(cmsgHdrLen) + 2
	if cmsgLenSize == 8 {
		binary.NativeEndian.PutUint64(m, uint64(l))
	} else {
		binary.NativeEndian.PutUint32(m, uint32(l))
	}
	binary.NativeEndian.PutUint32(m[cmsgLenSize:], unix.IPPROTO_UDP) // SOL_UDP
	binary.NativeEndian.PutUint32(m[cmsgLenSize+4:], unix.UDP_SEGMENT)
	binary.NativeEndian.PutUint16(m[cmsgAlignUp(cmsgHdrLen):], size)
	return b
}

// UDPGROSpace is the room one received UDP_GRO control message takes.
const UDPGROSpace = (cmsgHdrLen+cmsgAlign-1)&^(cmsgAlign-1) + (4+cmsgAlign-1)&^(cmsgAlign-1)

// EnableUDPGRO turns on UDP generic receive offload (UDP_GRO, Linux 5.0+) on
// the UDP socket f: the kernel may then hand a run of datagrams from one
// sender, all of one size but the last, to one recvmsg as a single buffer,
// with a UDP_GRO control message giving the size (see ParseUDPGRO). A kernel
// without it returns an error wrapping ENOPROTOOPT, and then never
// coalesces.
func EnableUDPGRO(f *os.File) error {
	return control(f, "UDP_GRO", EnableUDPGROFD)
}

// EnableUDPGROFD is EnableUDPGRO on a raw socket descriptor. Its error is
// the bare errno.
func EnableUDPGROFD(fd int) error {
	return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
}

// ParseUDPGRO finds the UDP_GRO message among the control messages oob (the
// bytes a recvmsg returned) and returns the segment size it carries: the
// received buffer is a run of datagrams of that size, the last possibly
// shorter. ok is false when there is none (the buffer is one datagram) or
// when the messages are malformed or cut; it never reads past oob.
func ParseUDPGRO(oob []byte) (size int, ok bool) {
	for len(oob) > 0 {
		level, typ, data, rest, ok := nextCmsg(oob)
		if !ok {
			return 0, false
		}
		if level == unix.IPPROTO_UDP && typ == unix.UDP_GRO && len(data) >= 4 {
			if n := int(int32(binary.NativeEndian.Uint32(data))); n > 0 {
				return n, true
			}
			return 0, false
		}
		oob = rest
	}
	return 0, false
}

// IsGSOError reports whether err from a sendmsg carrying UDP_SEGMENT means
// the segmented send itself is refused (EIO: the device cannot checksum;
// EINVAL: a segment does not fit the path MTU, or too many segments), so the
// datagrams should be sent one by one instead.
func IsGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}

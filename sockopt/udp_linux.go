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

// IsGSOError reports whether err from a sendmsg carrying UDP_SEGMENT means
// the segmented send itself is refused (EIO: the device cannot checksum;
// EINVAL: a segment does not fit the path MTU, or too many segments), so the
// datagrams should be sent one by one instead.
func IsGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}

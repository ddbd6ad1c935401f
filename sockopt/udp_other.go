//go:build !linux

package sockopt

import (
	"fmt"
	"os"
)

// UDPSegmentSpace is the room one UDP_SEGMENT control message takes.
const UDPSegmentSpace = 24

// UDPGSOSupported reports false on this platform.
func UDPGSOSupported(f *os.File) bool { return false }

// AppendUDPSegment returns b unchanged on this platform.
func AppendUDPSegment(b []byte, size uint16) []byte { return b }

// IsGSOError reports false on this platform.
func IsGSOError(err error) bool { return false }

// UDPGROSpace is the room one received UDP_GRO control message takes.
const UDPGROSpace = 24

// EnableUDPGRO is not supported on this platform.
func EnableUDPGRO(f *os.File) error {
	return fmt.Errorf("setsockopt UDP_GRO on %s: %w", f.Name(), ErrUnsupported)
}

// EnableUDPGROFD is not supported on this platform.
func EnableUDPGROFD(fd int) error { return ErrUnsupported }

// ParseUDPGRO finds nothing on this platform.
func ParseUDPGRO(oob []byte) (size int, ok bool) { return 0, false }

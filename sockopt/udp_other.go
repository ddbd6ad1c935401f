//go:build !linux

package sockopt

import "os"

// UDPSegmentSpace is the room one UDP_SEGMENT control message takes.
const UDPSegmentSpace = 24

// UDPGSOSupported reports false on this platform.
func UDPGSOSupported(f *os.File) bool { return false }

// AppendUDPSegment returns b unchanged on this platform.
func AppendUDPSegment(b []byte, size uint16) []byte { return b }

// IsGSOError reports false on this platform.
func IsGSOError(err error) bool { return false }

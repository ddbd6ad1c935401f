//go:build !linux

package sockopt

import (
	"fmt"
	"net/netip"
	"os"
)

// PktinfoSpace is the room reserved for one PKTINFO control message.
const PktinfoSpace = 64

// EnablePktinfo is not supported on this platform.
func EnablePktinfo(f *os.File) error {
	return fmt.Errorf("PKTINFO on %s: %w", f.Name(), ErrUnsupported)
}

// ParsePktinfo finds nothing on this platform.
func ParsePktinfo(oob []byte) (Pktinfo, bool) { return Pktinfo{}, false }

// AppendPktinfo returns b unchanged on this platform: the kernel picks the
// source address.
func AppendPktinfo(b []byte, v6 bool, src netip.Addr, ifindex uint32) []byte { return b }

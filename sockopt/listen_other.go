//go:build !linux

package sockopt

import (
	"fmt"
	"net/netip"
	"os"
)

// Listen is not supported on this platform.
func Listen(proto Proto, addr netip.AddrPort, opts Options) (*os.File, error) {
	return nil, fmt.Errorf("listen %s/%s: %w", addr, proto, ErrUnsupported)
}

// AttachDropAll is not supported on this platform.
func AttachDropAll(f *os.File) error {
	return fmt.Errorf("SO_ATTACH_FILTER on %s: %w", fileName(f), ErrUnsupported)
}

// DetachFilter is not supported on this platform.
func DetachFilter(f *os.File) error {
	return fmt.Errorf("SO_DETACH_FILTER on %s: %w", fileName(f), ErrUnsupported)
}

// Inspect is not supported on this platform.
func Inspect(f *os.File) (Info, error) {
	return Info{}, fmt.Errorf("inspect %s: %w", fileName(f), ErrUnsupported)
}

// SCTPSupported reports that SCTP is not supported on this platform.
func SCTPSupported() error { return fmt.Errorf("%w: %w", ErrNoSCTP, ErrUnsupported) }

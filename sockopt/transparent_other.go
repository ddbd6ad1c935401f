//go:build !linux

package sockopt

import (
	"fmt"
	"net/netip"
)

// CheckTransparent is not supported on this platform.
func CheckTransparent() error { return fmt.Errorf("IP_TRANSPARENT: %w", ErrUnsupported) }

// LearnBackend is not supported on this platform.
func LearnBackend(backend netip.AddrPort, scope uint32) (TransparentBackend, error) {
	return TransparentBackend{}, fmt.Errorf("IP_TRANSPARENT toward %s: %w", backend, ErrUnsupported)
}

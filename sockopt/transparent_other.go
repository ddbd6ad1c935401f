//go:build !linux

package sockopt

import (
	"fmt"
	"net/netip"
)

// LocalAddrs is the set of the host's own addresses; not supported on this
// platform.
type LocalAddrs struct{}

// WatchLocalAddrs is not supported on this platform.
func WatchLocalAddrs() (*LocalAddrs, error) {
	return nil, fmt.Errorf("watch local addresses: %w", ErrUnsupported)
}

// Contains reports false.
func (*LocalAddrs) Contains(netip.Addr) bool { return false }

// Fd returns -1.
func (*LocalAddrs) Fd() int { return -1 }

// Update does nothing.
func (*LocalAddrs) Update() (bool, error) { return false, nil }

// Close does nothing.
func (*LocalAddrs) Close() error { return nil }

// CheckTransparent is not supported on this platform.
func CheckTransparent() error { return fmt.Errorf("IP_TRANSPARENT: %w", ErrUnsupported) }

//go:build !linux

package udp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

// Proxy is a UDP relay; on this platform New always fails.
type Proxy struct{}

// New is not supported on this platform.
func New(f *os.File, cfg Config) (*Proxy, error) {
	if cfg.Transparent {
		return nil, fmt.Errorf("udp proxy to %s: -transparent: %w", cfg.Backend, sockopt.ErrUnsupported)
	}
	return nil, fmt.Errorf("udp proxy to %s: %w", cfg.Backend, sockopt.ErrUnsupported)
}

// Addr returns nil.
func (p *Proxy) Addr() net.Addr { return nil }

// Stats returns zero counters.
func (p *Proxy) Stats() Stats { return Stats{} }

// Serve returns proxy.ErrClosed.
func (p *Proxy) Serve(ctx context.Context) error { return proxy.ErrClosed }

// Close does nothing.
func (p *Proxy) Close() error { return nil }

// Shutdown does nothing.
func (p *Proxy) Shutdown(ctx context.Context) error { return nil }

// Mapping is one host socket of a range and its backend.
type Mapping struct {
	File    *os.File
	Backend netip.AddrPort
}

// Range is a set of UDP relays; on this platform NewRange always fails.
type Range struct{}

// NewRange is not supported on this platform.
func NewRange(ms []Mapping, cfg Config) (*Range, error) {
	if cfg.Transparent {
		return nil, fmt.Errorf("udp proxy: -transparent: %w", sockopt.ErrUnsupported)
	}
	return nil, fmt.Errorf("udp proxy: %w", sockopt.ErrUnsupported)
}

// Stats returns zero counters.
func (r *Range) Stats() Stats { return Stats{} }

// Add is not supported on this platform.
func (r *Range) Add(m Mapping) error { return fmt.Errorf("udp proxy: %w", sockopt.ErrUnsupported) }

// Remove is not supported on this platform.
func (r *Range) Remove(listen netip.AddrPort) error {
	return fmt.Errorf("udp proxy: %w", sockopt.ErrUnsupported)
}

// Serve returns proxy.ErrClosed.
func (r *Range) Serve(ctx context.Context) error { return proxy.ErrClosed }

// Close does nothing.
func (r *Range) Close() error { return nil }

// Shutdown does nothing.
func (r *Range) Shutdown(ctx context.Context) error { return nil }

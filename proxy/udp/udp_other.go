//go:build !linux

package udp

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

// Proxy is a UDP relay; on this platform New always fails.
type Proxy struct{}

// New is not supported on this platform.
func New(f *os.File, cfg Config) (*Proxy, error) {
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

//go:build !linux

package sctp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

// Proxy is not supported on this platform; New returns an error.
type Proxy struct{}

// New is not supported on this platform.
func New(f *os.File, cfg Config) (*Proxy, error) {
	return nil, fmt.Errorf("sctp proxy: %w", sockopt.ErrUnsupported)
}

// Addr returns nil.
func (p *Proxy) Addr() net.Addr { return nil }

// Serve is not supported on this platform.
func (p *Proxy) Serve(ctx context.Context) error {
	return fmt.Errorf("sctp proxy: %w", sockopt.ErrUnsupported)
}

// Close does nothing.
func (p *Proxy) Close() error { return nil }

// Shutdown does nothing.
func (p *Proxy) Shutdown(ctx context.Context) error { return nil }

// EachMapping does nothing.
func (p *Proxy) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {}

// Range is not supported on this platform; NewRange returns an error.
type Range struct{}

// NewRange is not supported on this platform.
func NewRange(ms []Mapping, cfg Config) (*Range, error) {
	return nil, fmt.Errorf("sctp proxy: %w", sockopt.ErrUnsupported)
}

// Add is not supported on this platform.
func (r *Range) Add(m Mapping) error { return fmt.Errorf("sctp proxy: %w", sockopt.ErrUnsupported) }

// Remove is not supported on this platform.
func (r *Range) Remove(listen netip.AddrPort) error {
	return fmt.Errorf("sctp proxy: %w", sockopt.ErrUnsupported)
}

// EachMapping does nothing.
func (r *Range) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {}

// Serve is not supported on this platform.
func (r *Range) Serve(ctx context.Context) error {
	return fmt.Errorf("sctp proxy: %w", sockopt.ErrUnsupported)
}

// Close does nothing.
func (r *Range) Close() error { return nil }

// Shutdown does nothing.
func (r *Range) Shutdown(ctx context.Context) error { return nil }

// Conn is not supported on this platform; Dial returns an error.
type Conn struct{}

// Dial is not supported on this platform.
func Dial(ctx context.Context, addr netip.AddrPort) (*Conn, error) {
	return nil, fmt.Errorf("dial %s/sctp: %w", addr, sockopt.ErrUnsupported)
}

// LocalAddr returns the zero address.
func (c *Conn) LocalAddr() netip.AddrPort { return netip.AddrPort{} }

// RemoteAddr returns the zero address.
func (c *Conn) RemoteAddr() netip.AddrPort { return netip.AddrPort{} }

// ReadMsg is not supported on this platform.
func (c *Conn) ReadMsg(b []byte) (int, Info, bool, error) {
	return 0, Info{}, false, sockopt.ErrUnsupported
}

// WriteMsg is not supported on this platform.
func (c *Conn) WriteMsg(b []byte, info Info) (int, error) { return 0, sockopt.ErrUnsupported }

// SetDeadline is not supported on this platform.
func (c *Conn) SetDeadline(t time.Time) error { return sockopt.ErrUnsupported }

// SetReadDeadline is not supported on this platform.
func (c *Conn) SetReadDeadline(t time.Time) error { return sockopt.ErrUnsupported }

// SetWriteDeadline is not supported on this platform.
func (c *Conn) SetWriteDeadline(t time.Time) error { return sockopt.ErrUnsupported }

// CloseWrite is not supported on this platform.
func (c *Conn) CloseWrite() error { return sockopt.ErrUnsupported }

// Close does nothing.
func (c *Conn) Close() error { return nil }

// Abort does nothing.
func (c *Conn) Abort() error { return nil }

// Listener is not supported on this platform; Listen returns an error.
type Listener struct{}

// Listen is not supported on this platform.
func Listen(addr netip.AddrPort) (*Listener, error) {
	return nil, fmt.Errorf("listen %s/sctp: %w", addr, sockopt.ErrUnsupported)
}

// FileListener is not supported on this platform.
func FileListener(f *os.File) (*Listener, error) {
	return nil, fmt.Errorf("listen %s: %w", f.Name(), sockopt.ErrUnsupported)
}

// Addr returns the zero address.
func (l *Listener) Addr() netip.AddrPort { return netip.AddrPort{} }

// Accept is not supported on this platform.
func (l *Listener) Accept() (*Conn, error) { return nil, sockopt.ErrUnsupported }

// Close does nothing.
func (l *Listener) Close() error { return nil }

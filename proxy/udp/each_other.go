//go:build !linux

package udp

import "net/netip"

// EachMapping calls fn for no mapping.
func (p *Proxy) EachMapping(fn func(listen, backend netip.AddrPort, s Stats)) {}

// EachMapping calls fn for no mapping.
func (r *Range) EachMapping(fn func(listen, backend netip.AddrPort, s Stats)) {}

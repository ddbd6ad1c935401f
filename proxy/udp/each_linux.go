package udp

import "net/netip"

// EachMapping calls fn once, with the host socket's address, the backend and
// the counters (Stats). It is safe to call at any time, also after Close.
func (p *Proxy) EachMapping(fn func(listen, backend netip.AddrPort, s Stats)) {
	fn(p.laddr.AddrPort(), p.backend, p.Stats())
}

// EachMapping calls fn once per host socket of the range, in the order of
// the mappings given to NewRange, with its address, its backend and its
// counters. It is safe to call at any time, also after Close.
func (r *Range) EachMapping(fn func(listen, backend netip.AddrPort, s Stats)) {
	r.l.mu.Lock()
	members := r.l.members // replaced, never edited in place, by Add and Remove
	r.l.mu.Unlock()
	for _, p := range members {
		p.EachMapping(fn)
	}
}

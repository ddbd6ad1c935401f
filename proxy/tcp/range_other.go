//go:build !linux

package tcp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/hostproxy/hostproxy/proxy"
)

// openMapping checks m and returns its port, as NewRange and Add take it.
func openMapping(m Mapping) (*port, error) {
	if m.File == nil {
		return nil, errors.New("tcp proxy: nil listening socket")
	}
	if err := checkBackend(m.Backend); err != nil {
		return nil, err
	}
	ln, err := fileListener(m.File)
	if err != nil {
		return nil, err
	}
	return newPort(ln, m.Backend), nil
}

// close closes pt's socket, for a proxy that could not be built.
func (pt *port) close() { pt.ln.Close() }

// startAccepting runs pt's accept loop in a goroutine of its own. The first
// loop that fails stops the others. p.mu must be held, with the proxy
// serving and not stopping.
func (p *Proxy) startAccepting(pt *port) {
	p.acceptors.Go(func() {
		if err := p.acceptLoop(pt); err != nil {
			p.mu.Lock()
			if p.fatal == nil {
				p.fatal = err
			}
			p.mu.Unlock()
			p.stopAccepting()
		}
	})
}

// Add starts serving m's socket, also while the proxy serves, with an
// accept loop of its own. Like NewRange it duplicates m.File, which the
// caller closes afterwards. It fails when the socket is not a listening TCP
// socket, the backend is not usable, a socket of the proxy already has the
// same address, or the proxy is closed or shutting down (proxy.ErrClosed).
func (p *Proxy) Add(m Mapping) error {
	pt, err := openMapping(m)
	if err != nil {
		return err
	}
	listen := addrPortOf(pt.addr())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.isStopping() {
		pt.close()
		return fmt.Errorf("tcp proxy: add %s: %w", listen, proxy.ErrClosed)
	}
	for _, o := range p.ports {
		if addrPortOf(o.addr()) == listen {
			pt.close()
			return fmt.Errorf("tcp proxy: add %s: already served", listen)
		}
	}
	p.ports = append(p.ports[:len(p.ports):len(p.ports)], pt) // a new array: EachMapping may hold the old
	if p.accepting {
		p.startAccepting(pt)
	}
	return nil
}

// Remove stops serving the mapping listening on listen, also while the
// proxy serves: this proxy's descriptor of its socket is closed (the
// caller's file is its own, and keeps the socket listening while it is
// open), which ends its accept loop, and its open connections are reset on
// both sides, as Close resets them, before Remove returns. The mapping's
// counters are no longer reported; the other mappings and their connections
// are not disturbed. It fails when no mapping listens on listen or the proxy
// is closed or shutting down (proxy.ErrClosed).
func (p *Proxy) Remove(listen netip.AddrPort) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.isStopping() {
		return fmt.Errorf("tcp proxy: remove %s: %w", listen, proxy.ErrClosed)
	}
	i := -1
	for j, pt := range p.ports {
		if addrPortOf(pt.addr()) == listen {
			i = j
			break
		}
	}
	if i < 0 {
		return fmt.Errorf("tcp proxy: remove %s: no such mapping", listen)
	}
	pt := p.ports[i]
	pt.removed.Store(true)
	ports := make([]*port, 0, len(p.ports)-1)
	p.ports = append(append(ports, p.ports[:i]...), p.ports[i+1:]...)
	pt.close()
	for r := range p.relays {
		if r.port == pt {
			r.abort()
		}
	}
	return nil
}

//go:build !linux

package tcp

import "sync"

// openPort returns the port of m: a TCP listener on a duplicate of m.File.
func openPort(m Mapping, inRange bool) (port, error) {
	ln, err := fileListener(m.File)
	if err != nil {
		return port{}, err
	}
	return newPort(ln, m.Backend), nil
}

// close closes pt's socket, for a proxy that could not be built.
func (pt *port) close() { pt.ln.Close() }

// poller is empty on this platform: a range accepts with a goroutine per
// socket.
type poller struct{}

func newPoller([]port) (*poller, error) { return &poller{}, nil }

func (*poller) close([]port) error { return nil }

// acceptRange runs acceptLoop for every socket of the range. The first
// loop that fails stops the others.
func (p *Proxy) acceptRange() error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range p.ports {
		wg.Go(func() {
			if err := p.acceptLoop(&p.ports[i]); err != nil {
				once.Do(func() { first = err })
				p.stopAccepting()
			}
		})
	}
	wg.Wait()
	return first
}

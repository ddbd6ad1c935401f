//go:build !linux

package tcp

import "sync"

// poller is empty on this platform: a range accepts with a goroutine per
// socket.
type poller struct{}

func newPoller([]port) (*poller, error) { return &poller{}, nil }

func (*poller) close() {}

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

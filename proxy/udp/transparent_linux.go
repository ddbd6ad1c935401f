//go:build linux

package udp

import (
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

// bindSource binds fd, a new flow's socket toward the backend, to the
// client's address and its port where free (Config.Transparent), when
// sockopt's contract says the flow leaves from there (tb.ClientSource,
// with the address the client wrote to; sockopt.BindTransparent). It
// returns the socket to connect: fd, or for a client found to be one of
// the host's own addresses a new socket that keeps the host's normal
// source. A client of the other family than the backend is said once in
// the log. On error fd is closed. It allocates nothing unless it fails.
func (p *Proxy) bindSource(fd int, key flowKey, pi sockopt.Pktinfo) (int, error) {
	n, src := p.tb.ClientSource(&p.src, key.client, key.scope, pi.Dst)
	switch src {
	case sockopt.SourceHost:
		return fd, nil
	case sockopt.SourceOtherFamily:
		if !p.familyLogged {
			p.familyLogged = true
			p.log.Warn("udp -transparent: client and backend are of different families; "+
				"such flows leave from the host's own address (said once)",
				logging.AddrPort("client", key.client))
		}
		return fd, nil
	}
	bound, err := sockopt.BindTransparent(fd, &p.src, n, false)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	if bound == sockopt.BoundHostClient {
		unix.Close(fd)
		return p.flowSocket()
	}
	return fd, nil
}

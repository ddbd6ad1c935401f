//go:build !linux

package tcp

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// relay is one client connection and, once dialed, its backend connection.
type relay struct {
	p       *Proxy
	port    *port // where client was accepted
	client  *net.TCPConn
	backend *net.TCPConn // set by Proxy.attach under Proxy.mu

	closeOnce sync.Once
	wasReset  atomic.Bool
}

// run dials the backend, relays both directions until both have ended, and
// unregisters the relay. It is the goroutine started per accepted connection.
func (r *relay) run() {
	p := r.p
	defer p.forget(r)

	// The client already has keepalive: Go's accept enables it with the same
	// schedule as keepAlive (15s idle, 15s interval, 9 probes), and setting it
	// again would cost four setsockopt calls per connection
	// (TestSocketOptions checks the options on both sides).
	start := time.Now()
	backend, err := p.dial(r.port)
	if err != nil {
		r.close(true)
		p.dialFailed(r.port, r.client, err, time.Since(start))
		return
	}
	p.dialSucceeded()
	if !p.attach(r, backend) { // closed during the dial
		r.close(true)
		reset(backend)
		return
	}
	if p.pp != proxyproto.None && !r.sendHeader(backend) {
		r.close(true)
		return
	}

	// client → backend in a second goroutine, backend → client here.
	var up int64
	done := make(chan struct{})
	go r.pipe(backend, r.client, &up, done)
	down := r.pipe(r.client, backend, nil, nil)
	<-done
	r.close(false)

	if p.log.Enabled(zapcore.DebugLevel) {
		p.logFor(r.port).Debug("connection closed",
			logging.Addr("client", r.client.RemoteAddr()),
			logging.Int64("bytes_up", up), logging.Int64("bytes_down", down),
			logging.String("end", endName(r.wasReset.Load())))
	}
}

// sendHeader writes the PROXY protocol header to backend before anything of
// the client's: the client's address as the source, the address it
// connected to as the destination. It reports false when the write failed.
func (r *relay) sendHeader(backend *net.TCPConn) bool {
	var buf [proxyproto.MaxLen]byte
	h := proxyproto.Append(buf[:0], r.p.pp, addrPortOf(r.client.RemoteAddr()), addrPortOf(r.client.LocalAddr()))
	_, err := backend.Write(h) // Write writes it all or fails
	return err == nil
}

// pipe runs one direction of r. An error on either socket resets the whole
// relay, so that the other peer sees a reset rather than a clean end. When n
// is not nil it receives the byte count and done is closed on return.
func (r *relay) pipe(dst, src *net.TCPConn, n *int64, done chan<- struct{}) int64 {
	written, err := copyStream(dst, src)
	if err != nil {
		r.close(true)
	}
	if n != nil {
		*n = written
		close(done)
	}
	return written
}

// copyStream copies src to dst until src reports EOF, then half-closes dst
// (CloseWrite sends the FIN on). Both are *net.TCPConn with nothing wrapped
// around them, so dst.ReadFrom moves the bytes in the kernel where Go's
// runtime can on this platform, and through a buffer otherwise.
//
// It returns the bytes written and the first error, which is nil only when
// src ended with a clean EOF and the FIN was queued on dst.
func copyStream(dst, src *net.TCPConn) (int64, error) {
	n, err := dst.ReadFrom(src)
	if err != nil {
		return n, err
	}
	return n, dst.CloseWrite()
}

// abort resets both connections of r; used by Proxy.Close.
func (r *relay) abort() { r.close(true) }

// close closes both connections, once: with abortive set, as resets.
// r.backend is read without Proxy.mu: it is set before the copy goroutines
// start, and Proxy.Close calls abort under Proxy.mu, which orders it with
// attach.
func (r *relay) close(abortive bool) {
	r.closeOnce.Do(func() {
		r.wasReset.Store(abortive)
		closeConn(r.client, abortive)
		if r.backend != nil {
			closeConn(r.backend, abortive)
		}
	})
}

func endName(wasReset bool) string {
	if wasReset {
		return "reset"
	}
	return "close"
}

func closeConn(c *net.TCPConn, abortive bool) {
	if abortive {
		reset(c)
		return
	}
	_ = c.Close()
}

// reset closes c with SO_LINGER 0, so that the kernel sends RST instead of FIN
// and drops anything still queued.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// dial connects to pt's backend within the dial timeout, or fails at once
// when the proxy is closed.
func (p *Proxy) dial(pt *port) (*net.TCPConn, error) {
	if pt.backendErr != nil {
		return nil, pt.backendErr
	}
	// Dialer.DialTCP would bind an unset local address to port 0 first, which
	// uses up a port per connection; DialContext leaves the choice to connect.
	d := net.Dialer{Timeout: p.dialTimeout, KeepAliveConfig: keepAlive}
	c, err := d.DialContext(p.ctx, "tcp", pt.backendAddr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialFailed counts and logs a failed backend dial of a client accepted on
// pt. A dial cut short by Close is not a failure. A dial error of class
// Retry or AddrExhausted (proxy.ClassifyDial: no descriptor, no free source
// port toward the backend) also holds the accept loops for a growing delay
// (5ms to 1s), so that clients wait in the kernel's queue instead of being
// accepted and reset in a tight loop. The line is a warning naming the
// client, the listener, the backend and the error when the port's rate limit
// allows it (for want of a source port, the proxy's, with the remedy),
// otherwise at Debug.
func (p *Proxy) dialFailed(pt *port, client *net.TCPConn, err error, took time.Duration) {
	if p.ctx.Err() != nil {
		return
	}
	pt.counters.DialErrors.Add(1)
	class := proxy.ClassifyDial(err)
	if class != proxy.PerConnection {
		p.holdDials()
	}
	rl, msg := p.dialFailureLog(pt, class)
	ok, held := rl.Allow(time.Now())
	if !ok && !p.log.Enabled(zapcore.DebugLevel) {
		return
	}
	p.logDialFailure(pt, class, msg, ok, held, logging.Addr("client", client.RemoteAddr()), err, took)
}

// holdDials holds the accept loops for the next delay of dialOff.
func (p *Proxy) holdDials() {
	p.holdMu.Lock()
	p.holdUntil.Store(time.Now().Add(p.dialOff.Next()).UnixNano())
	p.holdMu.Unlock()
}

// dialSucceeded ends a hold of the accept loops, if any: the next dial
// error of class Retry or AddrExhausted backs off from the shortest delay.
func (p *Proxy) dialSucceeded() {
	if p.holdUntil.Load() == 0 {
		return
	}
	p.holdMu.Lock()
	p.dialOff.Reset()
	p.holdUntil.Store(0)
	p.holdMu.Unlock()
}

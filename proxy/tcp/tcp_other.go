//go:build !linux

package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// Proxy is a TCP relay. Create it with New, NewListener or NewRange and run
// it with Serve.
type Proxy struct {
	// ports is every mapping, in the order given and added (Add); it is
	// replaced, never changed in place, under mu. Each has a goroutine
	// accepting on it while the proxy serves.
	ports       []*port
	addr        net.Addr // of the first mapping New or NewRange was given
	dialTimeout time.Duration
	// log has the fields listen and backend of first when the proxy was
	// made with one port; each line about another port gets them from
	// logFor, added to base.
	log   *logging.Logger
	base  *logging.Logger
	first *port
	// pp is the PROXY protocol header sent to each backend (None: none).
	pp proxyproto.Version

	// ctx is cancelled by Close; it aborts backend dials in progress.
	ctx    context.Context
	cancel context.CancelFunc

	stopOnce sync.Once
	stopping chan struct{} // closed once the listener is being closed

	handlers  sync.WaitGroup // one per accepted connection
	acceptors sync.WaitGroup // one per accept loop

	acceptLog proxy.RateLimited // accept errors of class Retry
	noPortLog proxy.RateLimited // dials that found no source port; Every is noPortLogEvery

	transparent bool // Config.Transparent, which Serve refuses here

	// A dial error of class Retry or AddrExhausted holds the accept loops
	// until holdUntil (Unix ns; 0 for no hold), the next delay of dialOff.
	holdUntil atomic.Int64
	holdMu    sync.Mutex
	dialOff   proxy.Backoff // under holdMu

	mu        sync.Mutex
	serving   bool                // Serve was called
	accepting bool                // the accept loops are running
	closed    bool                // Close ran, or Shutdown finished
	relays    map[*relay]struct{} // open connections
	idle      chan struct{}       // closed when stopping and nothing is left
	fatal     error               // why an accept loop ended serving
}

// port is one listening socket of a Proxy and where its connections go.
type port struct {
	// ln is the listening socket, accepted on by a goroutine of its own.
	ln          *net.TCPListener
	fd          int            // always -1 on this platform (no poller owns a socket)
	removed     atomic.Bool    // Remove took it away; set under Proxy.mu
	listen      netip.AddrPort // unset on this platform: addr asks ln
	backend     netip.AddrPort // unmapped
	backendAddr string         // backend.String(), formatted once
	backendErr  error          // non-nil when the backend is unusable
	counters    *proxy.StreamCounters
	dialLog     *proxy.RateLimited // failed dials toward backend, but for want of a source port
}

func newPort(ln *net.TCPListener, backend netip.AddrPort) *port {
	pt := &port{ln: ln, fd: -1, counters: new(proxy.StreamCounters), dialLog: new(proxy.RateLimited)}
	pt.setBackend(backend)
	return pt
}

func (pt *port) setBackend(backend netip.AddrPort) {
	pt.backend = netip.AddrPortFrom(backend.Addr().Unmap(), backend.Port())
	pt.backendAddr = pt.backend.String()
	pt.backendErr = checkBackend(backend)
}

// addr is the address pt listens on.
func (pt *port) addr() net.Addr {
	if pt.ln != nil {
		return pt.ln.Addr()
	}
	return net.TCPAddrFromAddrPort(pt.listen)
}

// New returns a Proxy serving the listening TCP socket f. New duplicates f,
// so the caller may (and should) close f afterwards. It fails when f is not a
// listening TCP socket or cfg.Backend is not a usable address.
//
// On this platform Close and Shutdown close the proxy's descriptor only:
// the port stops accepting once the caller has closed f too.
func New(f *os.File, cfg Config) (*Proxy, error) {
	if cfg.Transparent {
		return nil, errors.New(transparentUnsupported)
	}
	if f == nil {
		return nil, errors.New("tcp proxy: nil listening socket")
	}
	if err := checkBackend(cfg.Backend); err != nil {
		return nil, err
	}
	ln, err := fileListener(f)
	if err != nil {
		return nil, err
	}
	return NewListener(ln, cfg), nil
}

// fileListener returns a TCP listener on a duplicate of the listening TCP
// socket f.
func fileListener(f *os.File) (*net.TCPListener, error) {
	if err := checkListener(f); err != nil {
		return nil, err
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("tcp proxy on %s: %w", f.Name(), err)
	}
	tln, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("tcp proxy on %s: %T is not a TCP listener", f.Name(), ln)
	}
	return tln, nil
}

// NewRange returns one Proxy serving the socket of every mapping, each
// relayed to its own backend, with one goroutine accepting on each socket.
// Like New, it duplicates the files, which the caller closes afterwards, and
// fails when one is not a listening TCP socket or a backend is unusable;
// cfg.Backend is not used. Serve, Close and Shutdown act on every socket at
// once; Addr is the first mapping's address.
func NewRange(ms []Mapping, cfg Config) (*Proxy, error) {
	if cfg.Transparent {
		return nil, errors.New(transparentUnsupported)
	}
	if len(ms) == 0 {
		return nil, errors.New("tcp proxy: no listening socket")
	}
	ports := make([]*port, 0, len(ms))
	for _, m := range ms {
		pt, err := openMapping(m)
		if err != nil {
			for _, pt := range ports {
				pt.close()
			}
			return nil, err
		}
		ports = append(ports, pt)
	}
	return newProxy(ports, cfg), nil
}

// NewListener returns a Proxy serving ln and takes ownership of it. An
// unusable cfg.Backend is not reported here: every connection is then reset
// and the reason logged (use New, or check the address first, to fail early).
func NewListener(ln *net.TCPListener, cfg Config) *Proxy {
	return newProxy([]*port{newPort(ln, cfg.Backend)}, cfg)
}

func newProxy(ports []*port, cfg Config) *Proxy {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ports:       ports,
		addr:        ports[0].addr(),
		log:         cfg.Logger,
		base:        cfg.Logger,
		dialTimeout: cfg.DialTimeout,
		pp:          cfg.ProxyProtocol,
		ctx:         ctx,
		cancel:      cancel,
		stopping:    make(chan struct{}),
		relays:      make(map[*relay]struct{}),
		transparent: cfg.Transparent,
	}
	p.noPortLog.Every = noPortLogEvery
	if p.dialTimeout <= 0 {
		p.dialTimeout = DefaultDialTimeout
	}
	if len(ports) == 1 {
		p.first = ports[0]
		p.log = portLogger(cfg.Logger, ports[0])
	}
	return p
}

// logFor returns the logger for a line about pt.
func (p *Proxy) logFor(pt *port) *logging.Logger {
	if pt == p.first {
		return p.log // it has listen and backend already
	}
	return portLogger(p.base, pt)
}

// portLogger returns log with pt's fields listen and backend.
func portLogger(log *logging.Logger, pt *port) *logging.Logger {
	return log.With(logging.Addr("listen", pt.addr()), logging.AddrPort("backend", pt.backend))
}

// Addr returns the address the proxy listens on: in a range, the first
// mapping's given to NewRange, also once Remove took it away.
func (p *Proxy) Addr() net.Addr { return p.addr }

// Serve accepts connections and relays each to the backend until ctx is done,
// Close is called or Shutdown completes; then it returns nil. When ctx is done
// Serve closes the proxy as Close does. Serve returns only once every relayed
// connection has ended, so no goroutine of the proxy outlives it.
//
// Accept errors are handled by their proxy.ClassifyAccept class: a shortage
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) is logged and retried after a growing
// delay (5ms to 1s), an error that lost one pending connection is skipped.
// Serve returns an error only when the listening socket itself is unusable
// (EBADF, EINVAL, ENOTSOCK); it then closes the proxy first. Serve returns proxy.ErrClosed if the proxy was
// already closed, and an error if it is called twice.
func (p *Proxy) Serve(ctx context.Context) error {
	// Serve's own frame stays small, and the work before and after the
	// accept loop out of line: see acceptLoop.
	if err := p.beginServe(); err != nil {
		return err
	}
	w := p.closeWhenDone(ctx)
	<-p.stopping
	p.acceptors.Wait()
	p.mu.Lock()
	err := p.fatal
	p.mu.Unlock()
	p.endServe(err, w)
	return err
}

// beginServe marks the proxy serving and starts an accept loop per socket,
// or says why it cannot serve.
//
//go:noinline
func (p *Proxy) beginServe() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return fmt.Errorf("serve tcp on %s: %w", p.Addr(), proxy.ErrClosed)
	case p.serving:
		return fmt.Errorf("serve tcp on %s: Serve called twice", p.Addr())
	case p.transparent: // NewListener, which cannot fail
		return errors.New(transparentUnsupported)
	}
	p.serving, p.accepting = true, true
	for _, pt := range p.ports {
		p.startAccepting(pt)
	}
	return nil
}

// ctxWatch closes the proxy when Serve's context is done.
type ctxWatch struct {
	stop   func() bool
	closed chan struct{} // closed once the context's Close has returned
}

//go:noinline
func (p *Proxy) closeWhenDone(ctx context.Context) *ctxWatch {
	w := &ctxWatch{closed: make(chan struct{})}
	w.stop = context.AfterFunc(ctx, func() {
		defer close(w.closed)
		p.Close()
	})
	return w
}

// endServe runs when the accept loop has returned err: it waits for the
// relayed connections and for a Close started by the context.
//
//go:noinline
func (p *Proxy) endServe(err error, w *ctxWatch) {
	p.mu.Lock()
	p.accepting = false
	p.signalIdle()
	p.mu.Unlock()

	if err != nil {
		p.Close()
	}
	p.handlers.Wait()
	if !w.stop() {
		<-w.closed // ctx fired: let its Close finish before returning
	}
}

// acceptLoop accepts until the listener is closed. It returns nil when the
// proxy is stopping and an error when the listener is unusable.
//
// A range of mappings idles with one goroutine per listener parked in
// AcceptTCP, so the loop keeps its frame small and its failure handling out
// of line: with Serve's frame on top of Go's accept path, the goroutine fits
// the 2 KiB stack it starts with (a 4 KiB one per mapping otherwise).
func (p *Proxy) acceptLoop(pt *port) error {
	var st *acceptFailures // allocated at the first failure
	for {
		if p.holdUntil.Load() != 0 && !p.waitHold() {
			return nil
		}
		c, err := pt.ln.AcceptTCP()
		if err != nil {
			if st == nil {
				st = new(acceptFailures)
			}
			if stop, err := p.acceptFailed(pt, st, err); stop {
				return err
			}
			continue
		}
		if st != nil {
			p.acceptedAgain(pt, st)
			st = nil
		}
		p.start(pt, c)
	}
}

// acceptFailures is the state of a streak of failed accepts.
type acceptFailures struct {
	backoff proxy.Backoff
	n       int64
}

// acceptFailed handles a failed accept by its proxy.ClassifyAccept class: it
// reports whether the loop must end, with the error to return. An error
// that lost only the pending connection is skipped, a shortage (Retry) backs
// off, and Fatal ends the loop.
//
//go:noinline
func (p *Proxy) acceptFailed(pt *port, st *acceptFailures, err error) (bool, error) {
	if p.isStopping() || pt.removed.Load() {
		return true, nil
	}
	pt.counters.AcceptErrors.Add(1)
	log := p.logFor(pt)
	switch proxy.ClassifyAccept(err) {
	case proxy.PerConnection:
		log.Debug("accept failed for one connection", logging.Err(err))
		return false, nil
	case proxy.Fatal:
		log.Error("accept failed; stopping", logging.Err(err))
		return true, fmt.Errorf("accept tcp on %s: %w", pt.addr(), err)
	}
	st.n++
	if !p.acceptLog.Log(log, zapcore.WarnLevel, time.Now(), "accept failed; backing off and retrying", logging.Err(err)) &&
		log.Enabled(zapcore.DebugLevel) {
		log.Debug("accept failed again", logging.Err(err), logging.Int64("failures", st.n))
	}
	return !st.backoff.Sleep(p.stopping), nil
}

// acceptedAgain logs the end of a streak of failed accepts at Debug.
//
//go:noinline
func (p *Proxy) acceptedAgain(pt *port, st *acceptFailures) {
	if st.n > 0 {
		p.logFor(pt).Debug("accepting again", logging.Int64("failed_accepts", st.n))
	}
}

// waitHold waits while a dial error of class Retry or AddrExhausted holds
// accepting (see holdDials). It reports false when the proxy stops
// meanwhile.
//
//go:noinline
func (p *Proxy) waitHold() bool {
	until := p.holdUntil.Load()
	if until == 0 {
		return true
	}
	return proxy.Sleep(time.Until(time.Unix(0, until)), p.stopping)
}

// start registers c, accepted on pt, and relays it in a new goroutine, or
// resets it when the proxy was closed meanwhile.
func (p *Proxy) start(pt *port, c *net.TCPConn) {
	r := &relay{p: p, port: pt, client: c}
	p.mu.Lock()
	if p.closed || pt.removed.Load() {
		p.mu.Unlock()
		reset(c)
		return
	}
	p.relays[r] = struct{}{}
	pt.counters.Accepted.Add(1)
	pt.counters.Active.Add(1)
	p.handlers.Add(1) // under mu and before closed: ordered before Close's Wait
	p.mu.Unlock()
	go r.run()
}

// attach records the dialed backend connection of r. It reports false when
// the proxy was closed, or r's mapping removed, during the dial; the caller
// then resets both.
func (p *Proxy) attach(r *relay, backend *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || r.port.removed.Load() {
		return false
	}
	r.backend = backend
	return true
}

// forget unregisters r once both of its connections are closed.
func (p *Proxy) forget(r *relay) {
	p.mu.Lock()
	delete(p.relays, r)
	r.port.counters.Active.Add(-1)
	p.signalIdle()
	p.mu.Unlock()
	p.handlers.Done()
}

// signalIdle closes p.idle when the proxy is stopping and nothing is left to
// wait for. p.mu must be held.
func (p *Proxy) signalIdle() {
	if p.idle != nil && !p.accepting && len(p.relays) == 0 {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
}

func (p *Proxy) isStopping() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// stopAccepting closes the listening sockets, once.
func (p *Proxy) stopAccepting() error {
	var errs []error
	p.stopOnce.Do(func() {
		// Under mu, so that Add either starts no accept loop or its
		// socket is among these.
		p.mu.Lock()
		close(p.stopping) // first, so that the accept loops read the wake-up as a stop
		ports := p.ports
		p.mu.Unlock()
		for _, pt := range ports {
			stopListening(pt.ln) // the socket itself, even if f is still open elsewhere
			if err := pt.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("close tcp listener %s: %w", pt.ln.Addr(), err))
			}
		}
	})
	return errors.Join(errs...)
}

// Close stops the proxy at once: the listening socket is closed, dials in
// progress are abandoned, and every relayed connection is reset on both sides
// (its data is cut short, so neither peer may take it for a clean end). Close
// returns once every relay goroutine has ended. It is safe to call more than
// once and from any goroutine; later calls return nil.
func (p *Proxy) Close() error {
	err := p.stopAccepting()
	p.cancel()
	p.mu.Lock()
	p.closed = true
	for r := range p.relays {
		r.abort()
	}
	p.mu.Unlock()
	p.handlers.Wait()
	return err
}

// Shutdown closes the listening socket at once (connections still in its
// queue are reset), then waits for the open connections to end by
// themselves. When ctx is done first it closes the rest as Close does and
// returns ctx.Err(); otherwise it returns nil. Serve returns once the last
// connection has ended. Shutdown returns proxy.ErrClosed if the proxy was
// already closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("shutdown tcp on %s: %w", p.Addr(), proxy.ErrClosed)
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	idle := p.idle
	p.mu.Unlock()

	lnErr := p.stopAccepting()
	p.mu.Lock()
	p.signalIdle()
	p.mu.Unlock()

	select {
	case <-idle:
		err := p.Close()
		return errors.Join(lnErr, err)
	case <-ctx.Done():
		p.log.Debug("shutdown deadline; resetting open connections", logging.Err(ctx.Err()))
		p.Close()
		return ctx.Err()
	}
}

// EachMapping calls fn with each listening socket's address, its backend
// and its counters, in the order the sockets were given and added
// (proxy.StreamStats); a mapping Remove took away is no longer reported.
func (p *Proxy) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {
	p.mu.Lock()
	ports := p.ports
	p.mu.Unlock()
	for _, pt := range ports {
		fn(addrPortOf(pt.addr()), pt.backend, pt.counters)
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

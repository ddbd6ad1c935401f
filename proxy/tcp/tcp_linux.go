package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
	"github.com/hostproxy/hostproxy/sockopt"
)

// maxLoops bounds the event loops of one Proxy, whatever GOMAXPROCS is.
const maxLoops = 8

// Proxy is a TCP relay. Create it with New, NewListener or NewRange and run
// it with Serve.
type Proxy struct {
	// ports is every mapping, in the order given and added (Add); slots
	// holds them by the token of their listening socket's epoll events,
	// nil where one was removed. Both are replaced, never changed in
	// place, with mu and lnMu held; the loops read them under lnMu's read
	// lock.
	ports       []*port
	slots       []*port
	addr        net.Addr // of the first mapping New or NewRange was given
	dialTimeout time.Duration
	// log has the fields listen and backend of first when the proxy was
	// made with one port; each line about another port gets them from
	// logFor, added to base.
	log   *logging.Logger
	base  *logging.Logger
	first *port
	// keepCnt is set when the system's default keepalive probe count is not
	// keepAlive.Count, so that backend sockets need TCP_KEEPCNT too.
	keepCnt bool
	// pp is the PROXY protocol header sent to each backend (None: none).
	pp proxyproto.Version

	// lnMu orders closing the listening sockets after an accept4 or an
	// epoll_ctl on them in progress (readers: the loops; writers:
	// closeListeners, Add, Remove), so that no loop uses a descriptor
	// number that was closed and reused.
	lnMu     sync.RWMutex
	lnClosed bool

	stopping atomic.Bool // no more accepting; a loop ends when it has no connection
	closing  atomic.Bool // every loop resets its connections and ends

	acceptLog proxy.RateLimited // accept errors of class Retry
	noPortLog proxy.RateLimited // dials that found no source port; Every is noPortLogEvery

	// Config.Transparent (each port's tb decides the source); otherFamily
	// is set once a client of another family than its backend has been
	// logged.
	transparent bool
	otherFamily atomic.Bool

	mu      sync.Mutex
	serving bool           // Serve was called
	closed  bool           // Close ran, or Shutdown finished
	loops   []*loop        // while Serve runs; the first is Serve's own
	more    sync.WaitGroup // the loops after the first (startLoops)
	done    chan struct{}  // closed when Serve's loops have all ended
	fatal   error          // why serving failed, set by a loop
}

// port is one listening socket of a Proxy and where its connections go.
type port struct {
	fd         int            // non-blocking listening socket, owned by the Proxy; -1 once closed
	tok        int32          // index in Proxy.slots
	removed    atomic.Bool    // Remove took it away: its connections are reset
	listen     netip.AddrPort // fd's address
	backend    netip.AddrPort // unmapped
	backendErr error          // non-nil when the backend is unusable
	family     int            // of backend
	sa         [unix.SizeofSockaddrInet6]byte
	salen      uint32 // of sa, the backend as a raw sockaddr for connect(2)
	counters   *proxy.StreamCounters
	dialLog    *proxy.RateLimited // failed dials toward backend, but for want of a source port
	// Config.Transparent: what was learned of backend at start, and
	// whether its connections leave from the client's address at all
	// (not for a backend on the host).
	tb       sockopt.TransparentBackend
	tpSource bool
}

func newPort(fd int, listen, backend netip.AddrPort) *port {
	pt := &port{fd: fd, listen: listen, counters: new(proxy.StreamCounters), dialLog: new(proxy.RateLimited)}
	pt.backend = netip.AddrPortFrom(backend.Addr().Unmap(), backend.Port())
	pt.backendErr = checkBackend(backend)
	pt.family, pt.salen = putSockaddr(&pt.sa, pt.backend)
	return pt
}

// putSockaddr writes backend into sa for connect(2) and returns the socket
// family to dial it with and the sockaddr's length.
func putSockaddr(sa *[unix.SizeofSockaddrInet6]byte, backend netip.AddrPort) (family int, n uint32) {
	if !backend.Addr().IsValid() {
		return unix.AF_INET, 0
	}
	v6 := backend.Addr().Is6()
	var scope uint32
	if z := backend.Addr().Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			scope = uint32(ifi.Index)
		} else if n, err := strconv.ParseUint(z, 10, 32); err == nil {
			scope = uint32(n)
		}
	}
	family = unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	return family, sockopt.PutSockaddr(sa[:], v6, backend, scope)
}

// addr is the address pt listens on.
func (pt *port) addr() net.Addr { return net.TCPAddrFromAddrPort(pt.listen) }

// New returns a Proxy serving the listening TCP socket f. New duplicates f,
// so the caller may (and should) close f afterwards. It fails when f is not a
// listening TCP socket or cfg.Backend is not a usable address.
//
// Close and Shutdown stop the socket itself from listening (shutdown(2)), so
// the port stops accepting even if another descriptor for it, such as f, is
// still open.
func New(f *os.File, cfg Config) (*Proxy, error) {
	if f == nil {
		return nil, errors.New("tcp proxy: nil listening socket")
	}
	if err := checkBackend(cfg.Backend); err != nil {
		return nil, err
	}
	pt, err := openPort(Mapping{File: f, Backend: cfg.Backend})
	if err != nil {
		return nil, err
	}
	if err := learnBackends([]*port{pt}, cfg); err != nil {
		unix.Close(pt.fd)
		return nil, err
	}
	return newProxy([]*port{pt}, cfg), nil
}

// learnBackends learns, for Config.Transparent, what sockopt.LearnBackend
// tells of each port's backend, once per backend address; it fails when
// the process may not make sockets transparent (no CAP_NET_ADMIN).
func learnBackends(ports []*port, cfg Config) error {
	if !cfg.Transparent {
		return nil
	}
	known := make(map[netip.Addr]sockopt.TransparentBackend, 1)
	for _, pt := range ports {
		if err := pt.learnBackend(known); err != nil {
			return err
		}
	}
	return nil
}

// learnBackend sets pt.tb and pt.tpSource, from known when it has pt's
// backend address (it is added otherwise).
func (pt *port) learnBackend(known map[netip.Addr]sockopt.TransparentBackend) error {
	if pt.backendErr != nil {
		return nil // every connection is reset
	}
	tb, ok := known[pt.backend.Addr()]
	if !ok {
		var scope uint32
		if pt.family == unix.AF_INET6 {
			_, scope, _ = sockopt.ParseSockaddr(pt.sa[:pt.salen])
		}
		var err error
		if tb, err = sockopt.LearnBackend(pt.backend, scope); err != nil {
			// For NewListener, which goes on: each bind fails and says why.
			pt.tb, pt.tpSource = tb, true
			return fmt.Errorf("tcp proxy on %s: transparent: %w", pt.listen, err)
		}
		known[pt.backend.Addr()] = tb
	}
	pt.tb, pt.tpSource = tb, !tb.Local
	return nil
}

// logLocalBackends says, once at start, for each port whose backend is
// one of the host's own addresses that its clients keep the host's source.
func (p *Proxy) logLocalBackends(ports []*port) {
	for _, pt := range ports {
		if p.transparent && pt.backendErr == nil && !pt.tpSource {
			p.logFor(pt).Warn("transparent: the backend is one of the host's own addresses, which would send its replies " +
				"to the clients themselves; its connections leave from the host's address")
		}
	}
}

// NewRange returns one Proxy serving the socket of every mapping, each
// relayed to its own backend, by the same event loops. Like New, it
// duplicates the files, which the caller closes afterwards, and fails when
// one is not a listening TCP socket or a backend is unusable; cfg.Backend is
// not used. Serve, Close and Shutdown act on every socket at once; Addr is
// the first mapping's address.
func NewRange(ms []Mapping, cfg Config) (*Proxy, error) {
	if len(ms) == 0 {
		return nil, errors.New("tcp proxy: no listening socket")
	}
	ports := make([]*port, 0, len(ms))
	for _, m := range ms {
		pt, err := openMapping(m)
		if err != nil {
			for _, pt := range ports {
				unix.Close(pt.fd)
			}
			return nil, err
		}
		ports = append(ports, pt)
	}
	if err := learnBackends(ports, cfg); err != nil {
		for _, pt := range ports {
			unix.Close(pt.fd)
		}
		return nil, err
	}
	return newProxy(ports, cfg), nil
}

// NewListener returns a Proxy serving ln's socket and takes ownership of ln
// (it is closed; the Proxy keeps a duplicate of its socket). An unusable
// cfg.Backend is not reported here: every connection is then reset and the
// reason logged (use New, or check the address first, to fail early).
// Likewise with cfg.Transparent a process without CAP_NET_ADMIN has every
// connection reset (logged).
func NewListener(ln *net.TCPListener, cfg Config) *Proxy {
	listen := ln.Addr().(*net.TCPAddr).AddrPort()
	fd := -1
	if rc, err := ln.SyscallConn(); err == nil {
		rc.Control(func(s uintptr) { fd, _ = dupNonblock(int(s)) })
	}
	ln.Close()
	// Without a descriptor (EMFILE for the duplicate), Serve fails at its
	// first accept with EBADF and says so.
	pt := newPort(fd, netip.AddrPortFrom(listen.Addr().Unmap(), listen.Port()), cfg.Backend)
	err := learnBackends([]*port{pt}, cfg)
	p := newProxy([]*port{pt}, cfg)
	if err != nil {
		p.log.Warn("transparent relaying is impaired", logging.Err(err))
	}
	return p
}

// openMapping checks m and returns its port, as NewRange and Add take it.
func openMapping(m Mapping) (*port, error) {
	if m.File == nil {
		return nil, errors.New("tcp proxy: nil listening socket")
	}
	if err := checkBackend(m.Backend); err != nil {
		return nil, err
	}
	return openPort(m)
}

// openPort returns the port of m with a non-blocking duplicate of its
// socket.
func openPort(m Mapping) (*port, error) {
	info, err := inspectListener(m.File)
	if err != nil {
		return nil, err
	}
	rc, err := m.File.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp proxy on %s: %w", m.File.Name(), err)
	}
	fd := -1
	var opErr error
	if err := rc.Control(func(s uintptr) { fd, opErr = dupNonblock(int(s)) }); err != nil {
		opErr = err
	}
	if opErr != nil {
		return nil, fmt.Errorf("tcp proxy on %s: %w", m.File.Name(), opErr)
	}
	return newPort(fd, info.Local, m.Backend), nil
}

// dupNonblock returns a non-blocking, close-on-exec duplicate of the
// descriptor s. O_NONBLOCK belongs to the open socket, so every other
// descriptor of it becomes non-blocking too.
func dupNonblock(s int) (int, error) {
	fd, err := unix.FcntlInt(uintptr(s), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("dup", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

func newProxy(ports []*port, cfg Config) *Proxy {
	p := &Proxy{
		ports:       ports,
		slots:       ports,
		addr:        ports[0].addr(),
		dialTimeout: cfg.DialTimeout,
		log:         cfg.Logger,
		base:        cfg.Logger,
		keepCnt:     systemKeepCnt() != keepAlive.Count,
		pp:          cfg.ProxyProtocol,
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
	for i, pt := range ports {
		pt.tok = int32(i)
		if pt.fd >= 0 {
			setListenerOptions(pt.fd)
		}
	}
	p.logLocalBackends(ports)
	return p
}

// setListenerOptions turns on keepalive (keepAlive's schedule) and
// TCP_NODELAY on a listening socket. Linux copies them to every connection
// it accepts, which then needs no setsockopt of its own. It is best effort:
// a socket that refuses them still relays.
func setListenerOptions(fd int) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive.Idle/time.Second))
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAlive.Interval/time.Second))
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAlive.Count)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
}

// systemKeepCnt is net.ipv4.tcp_keepalive_probes, or 0 when unreadable.
func systemKeepCnt() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_probes")
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
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
	return log.With(logging.AddrPort("listen", pt.listen), logging.AddrPort("backend", pt.backend))
}

// Addr returns the address the proxy listens on: in a range, the first
// mapping's given to NewRange, also once Remove took it away.
func (p *Proxy) Addr() net.Addr { return p.addr }

// EachMapping calls fn with each listening socket's address, its backend
// and its counters, in the order the sockets were given and added
// (proxy.StreamStats); a mapping Remove took away is no longer reported. It
// is safe to call at any time.
func (p *Proxy) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {
	p.lnMu.RLock()
	ports := p.ports
	p.lnMu.RUnlock()
	for _, pt := range ports {
		fn(pt.listen, pt.backend, pt.counters)
	}
}

// Add starts serving m's socket, also while the proxy serves: every event
// loop accepts on it from its next round. Like NewRange it duplicates
// m.File, which the caller closes afterwards. It fails when the socket is
// not a listening TCP socket, the backend is not usable, a socket of the
// proxy already has the same address, or the proxy is closed or shutting
// down (proxy.ErrClosed).
func (p *Proxy) Add(m Mapping) error {
	pt, err := openMapping(m)
	if err != nil {
		return err
	}
	if p.transparent {
		if err := pt.learnBackend(make(map[netip.Addr]sockopt.TransparentBackend, 1)); err != nil {
			unix.Close(pt.fd)
			return err
		}
		p.logLocalBackends([]*port{pt})
	}
	setListenerOptions(pt.fd)
	p.mu.Lock()
	defer p.mu.Unlock()
	fail := func(err error) error {
		unix.Close(pt.fd)
		return err
	}
	if p.closed || p.stopping.Load() {
		return fail(fmt.Errorf("tcp proxy: add %s: %w", pt.listen, proxy.ErrClosed))
	}
	p.lnMu.Lock()
	defer p.lnMu.Unlock()
	if slices.ContainsFunc(p.ports, func(o *port) bool { return o.listen == pt.listen }) {
		return fail(fmt.Errorf("tcp proxy: add %s: already served", pt.listen))
	}
	pt.tok = int32(len(p.slots))
	for i, o := range p.slots {
		if o == nil {
			pt.tok = int32(i)
			break
		}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: pt.tok, Pad: evListener}
	for i, l := range p.loops {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, pt.fd, &ev); err != nil {
			for _, l := range p.loops[:i] {
				unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, pt.fd, nil)
			}
			return fail(fmt.Errorf("tcp proxy: add %s: epoll_ctl: %w", pt.listen, err))
		}
	}
	slots := append([]*port(nil), p.slots...)
	if int(pt.tok) == len(slots) {
		slots = append(slots, pt)
	} else {
		slots[pt.tok] = pt
	}
	p.slots = slots
	p.ports = append(p.ports[:len(p.ports):len(p.ports)], pt) // a new array: EachMapping may hold the old
	return nil
}

// Remove stops serving the mapping listening on listen, also while the
// proxy serves: its socket leaves the event loops and this proxy's
// descriptor of it is closed (the caller's file is its own, and keeps the
// socket listening while it is open), and its open connections are reset
// on both sides, as Close resets them. Remove returns once they are. The
// mapping's counters are no longer reported; the other mappings and their
// connections are not disturbed. It fails when no mapping listens on listen
// or the proxy is closed or shutting down (proxy.ErrClosed).
func (p *Proxy) Remove(listen netip.AddrPort) error {
	p.mu.Lock()
	if p.closed || p.stopping.Load() {
		p.mu.Unlock()
		return fmt.Errorf("tcp proxy: remove %s: %w", listen, proxy.ErrClosed)
	}
	p.lnMu.Lock()
	i := slices.IndexFunc(p.ports, func(pt *port) bool { return pt.listen == listen })
	if i < 0 {
		p.lnMu.Unlock()
		p.mu.Unlock()
		return fmt.Errorf("tcp proxy: remove %s: no such mapping", listen)
	}
	pt := p.ports[i]
	if pt.fd >= 0 {
		for _, l := range p.loops {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, pt.fd, nil)
		}
		unix.Close(pt.fd)
		pt.fd = -1
	}
	slots := append([]*port(nil), p.slots...)
	slots[pt.tok] = nil
	p.slots = slots
	p.ports = slices.Delete(slices.Clone(p.ports), i, i+1) // a new array: EachMapping may hold the old
	pt.removed.Store(true)
	p.lnMu.Unlock()
	// Each loop resets the connections it relays for pt (sweep).
	var swept sync.WaitGroup
	for _, l := range p.loops {
		if l.ended {
			continue
		}
		swept.Add(1)
		l.sweeps = append(l.sweeps, &swept)
		l.sweep.Store(true)
		l.wake()
	}
	p.mu.Unlock()
	swept.Wait()
	return nil
}

// Serve accepts connections and relays each to its backend until ctx is
// done, Close is called or Shutdown completes; then it returns nil. When ctx
// is done Serve closes the proxy as Close does. Serve returns only once
// every relayed connection has ended and every loop goroutine with it.
//
// Accept errors are handled by their proxy.ClassifyAccept class: a shortage
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) is logged and retried after a growing
// delay (5ms to 1s), an error that lost one pending connection is skipped.
// Serve returns an error only when a listening socket itself is unusable
// (EBADF, EINVAL, ENOTSOCK) or a loop cannot wait; it then closes the proxy
// first. Serve returns proxy.ErrClosed
// if the proxy was already closed, and an error if it is called twice.
//
// Serve relays in one event loop, on its own goroutine, until two
// connections are open at once; then it starts the others, one per P up to
// maxLoops (startLoops). An idle proxy, or one relaying one connection at a
// time, so keeps a single goroutine and wakes no other P.
func (p *Proxy) Serve(ctx context.Context) error {
	first, err := p.beginServe()
	if err != nil {
		return err
	}
	ctxClosed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(ctxClosed)
		p.Close()
	})
	first.run()
	// Only the first loop starts others, so none can start from here on.
	p.more.Wait()
	err = p.endServe()
	if !stop() {
		<-ctxClosed // ctx fired: let its Close finish before returning
	}
	return err
}

// beginServe creates the first event loop, or says why the proxy cannot
// serve.
func (p *Proxy) beginServe() (*loop, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed || p.stopping.Load():
		return nil, fmt.Errorf("serve tcp on %s: %w", p.Addr(), proxy.ErrClosed)
	case p.serving:
		return nil, fmt.Errorf("serve tcp on %s: Serve called twice", p.Addr())
	}
	_, owned := loopCount()
	l, err := newLoop(p, owned > 0)
	if err != nil {
		return nil, fmt.Errorf("serve tcp on %s: %w", p.Addr(), err)
	}
	l.grows = true
	p.serving, p.loops, p.done = true, []*loop{l}, make(chan struct{})
	return l, nil
}

// startLoops starts the event loops that first, the loop Serve runs, left
// for later, up to loopCount's number. The first
// loop calls it when it accepts a connection while it has one open. How
// many there are, and which own their thread, is loopCount's. A loop
// that cannot be created (EMFILE) is logged and the proxy relays with the
// loops it has.
func (p *Proxy) startLoops(first *loop) {
	first.grows = false
	p.mu.Lock()
	defer p.mu.Unlock()
	n, owned := loopCount()
	for len(p.loops) < n {
		if p.stopping.Load() { // Close, Shutdown or fail ran: no new loop
			return
		}
		l, err := newLoop(p, len(p.loops) < owned)
		if err != nil {
			p.log.Warn("cannot start another event loop; relaying with fewer",
				logging.Int("loops", len(p.loops)), logging.Err(err))
			return
		}
		p.loops = append(p.loops, l)
		p.more.Go(l.run)
	}
}

// endServe runs when every loop has ended: it releases them and returns
// the error that ended serving, if any.
func (p *Proxy) endServe() error {
	p.mu.Lock()
	for _, l := range p.loops {
		l.close()
	}
	p.loops = nil
	err := p.fatal
	close(p.done)
	p.mu.Unlock()
	if err != nil {
		p.Close()
	}
	return err
}

// fail ends serving with err: every loop resets its connections and ends.
// A loop calls it; Serve returns err.
func (p *Proxy) fail(err error) {
	p.mu.Lock()
	if p.fatal == nil {
		p.fatal = err
	}
	p.stopping.Store(true)
	p.closing.Store(true)
	for _, l := range p.loops {
		l.wake()
	}
	p.mu.Unlock()
}

// closeListeners stops every listening socket (shutdown(2): its queued
// connections are reset, whoever else holds a descriptor for it), takes it
// out of the loops' epoll sets and closes it, once. p.mu must be held.
func (p *Proxy) closeListeners() error {
	p.lnMu.Lock()
	defer p.lnMu.Unlock()
	if p.lnClosed {
		return nil
	}
	p.lnClosed = true
	var errs []error
	for _, pt := range p.ports {
		if pt.fd < 0 {
			continue
		}
		for _, l := range p.loops {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, pt.fd, nil)
		}
		unix.Shutdown(pt.fd, unix.SHUT_RD)
		if err := unix.Close(pt.fd); err != nil {
			errs = append(errs, fmt.Errorf("close tcp listener %s: %w", pt.listen, err))
		}
		pt.fd = -1
	}
	return errors.Join(errs...)
}

// Close stops the proxy at once: the listening sockets are closed, dials in
// progress are abandoned, and every relayed connection is reset on both sides
// (its data is cut short, so neither peer may take it for a clean end). Close
// returns once every loop has ended. It is safe to call more than once and
// from any goroutine; later calls return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	err := p.closeListeners()
	p.stopping.Store(true)
	p.closing.Store(true)
	for _, l := range p.loops {
		l.wake()
	}
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
	return err
}

// Shutdown closes the listening sockets at once (connections still in their
// queues are reset), then waits for the open connections to end by
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
	lnErr := p.closeListeners()
	p.stopping.Store(true)
	for _, l := range p.loops {
		l.wake()
	}
	done := p.done
	p.mu.Unlock()

	if done == nil { // not serving: nothing to wait for
		return errors.Join(lnErr, p.Close())
	}
	select {
	case <-done:
		return errors.Join(lnErr, p.Close())
	case <-ctx.Done():
		p.log.Debug("shutdown deadline; resetting open connections", logging.Err(ctx.Err()))
		p.Close()
		return ctx.Err()
	}
}

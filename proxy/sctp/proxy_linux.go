package sctp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
)

// Range relays the associations of many listening SCTP sockets, each to its
// own backend, with one accept goroutine: an epoll set of the sockets, so
// that an idle mapping costs its socket and a few hundred bytes. Each
// association is relayed by two goroutines (one per direction) over an
// association of its own to the backend. Mappings can be added and removed
// while it serves. It implements proxy.Proxy and proxy.StreamStats.
type Range struct {
	dialTimeout time.Duration
	log         *logging.Logger // without listen and backend: each port's has them
	pl          *poller
	// bufs holds the Range's relay buffers (BufferSize each): a direction
	// of an association takes one while it relays and gives it back at
	// its end, so the Range holds about as many as it relays at once.
	bufs sync.Pool

	ctx    context.Context // cancelled by Close: ends pending dials
	cancel context.CancelFunc

	// dialFailing is set while backend dials fail for want of local ports
	// or descriptors; the accept loop then waits until holdUntil before
	// taking the next association, instead of spinning through clients it
	// cannot serve.
	dialFailing atomic.Bool
	addrStreak  atomic.Int64 // consecutive dials without a free local port

	mu          sync.Mutex
	ports       []*port // every mapping, in the order given; replaced, never changed in place
	slots       []*port // by epoll token; nil once removed
	serving     bool    // Serve was called
	stopping    bool    // Close or Shutdown began: nothing new is accepted
	closed      bool    // Close began; Serve and Shutdown return proxy.ErrClosed
	sessions    map[*session]struct{}
	wg          sync.WaitGroup // one per session
	stopped     chan struct{}  // closed when stopping begins
	loopDone    chan struct{}  // closed when the accept loop has returned
	holdUntil   time.Time      // see dialFailing
	dialBackoff proxy.Backoff
}

var (
	_ proxy.Proxy       = (*Range)(nil)
	_ proxy.StreamStats = (*Range)(nil)
	_ proxy.StreamStats = (*Proxy)(nil)
)

// port is one listening socket of a Range and where its associations go.
type port struct {
	fd      int   // non-blocking duplicate of the mapping's socket; -1 once closed
	tok     int32 // epoll token: index in Range.slots
	listen  netip.AddrPort
	backend netip.AddrPort
	log     *logging.Logger // with listen and backend
	stats   proxy.StreamCounters
	removed bool // Remove ran; guarded by Range.mu

	acceptLog, dialLog proxy.RateLimited
}

// session is one client association and, once dialled, its backend.
type session struct {
	pt      *port
	client  *Conn
	backend *Conn // nil until dialled; guarded by Range.mu
	reset   atomic.Bool
}

// Proxy accepts SCTP associations on one listening socket and relays each to
// Config.Backend over an association of its own. It is a Range of one
// mapping and implements proxy.Proxy and proxy.StreamStats.
type Proxy struct {
	r    *Range
	addr *Addr
}

// New returns a Proxy serving the listening SCTP socket f. It relays on a
// duplicate of f; the caller may close f after New returns.
func New(f *os.File, cfg Config) (*Proxy, error) {
	r, err := NewRange([]Mapping{{File: f, Backend: cfg.Backend}}, cfg)
	if err != nil {
		return nil, err
	}
	return &Proxy{r: r, addr: &Addr{AddrPort: r.ports[0].listen}}, nil
}

// Addr returns the address the proxy listens on, an *Addr.
func (p *Proxy) Addr() net.Addr { return p.addr }

// Serve accepts associations until ctx is done, Close is called or Shutdown
// completes; see proxy.Proxy.
func (p *Proxy) Serve(ctx context.Context) error { return p.r.Serve(ctx) }

// Close stops at once; see Range.Close.
func (p *Proxy) Close() error { return p.r.Close() }

// Shutdown stops accepting and drains; see Range.Shutdown.
func (p *Proxy) Shutdown(ctx context.Context) error { return p.r.Shutdown(ctx) }

// EachMapping calls fn with the proxy's socket, backend and counters.
func (p *Proxy) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {
	p.r.EachMapping(fn)
}

// NewRange returns a Range serving the socket of every mapping, each relayed
// to its own backend; cfg.Backend is not used. It duplicates the files,
// which the caller closes afterwards, and fails (closing what it opened)
// when one is not a listening SCTP socket or a backend is not usable. An
// empty ms is allowed: mappings can be added with Add.
func NewRange(ms []Mapping, cfg Config) (*Range, error) {
	pl, err := newPoller()
	if err != nil {
		return nil, fmt.Errorf("sctp proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Range{
		dialTimeout: cfg.dialTimeout(),
		log:         cfg.Logger,
		pl:          pl,
		ctx:         ctx,
		cancel:      cancel,
		sessions:    make(map[*session]struct{}),
		stopped:     make(chan struct{}),
		loopDone:    make(chan struct{}),
	}
	r.bufs.New = func() any {
		b := make([]byte, BufferSize)
		return &b
	}
	for _, m := range ms {
		if err := r.Add(m); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// Add starts serving m's socket, also while the Range serves. Like NewRange
// it duplicates m.File, which the caller closes afterwards. It fails when
// the socket is not a listening SCTP socket, the backend is not usable,
// another mapping of the Range listens on the same address, or the Range is
// closed or shutting down (proxy.ErrClosed).
func (r *Range) Add(m Mapping) error {
	backend := netip.AddrPortFrom(m.Backend.Addr().Unmap(), m.Backend.Port())
	if !backend.Addr().IsValid() || backend.Port() == 0 || backend.Addr().IsUnspecified() {
		return fmt.Errorf("sctp proxy: invalid backend address %s", m.Backend)
	}
	fd, listen, err := openListener(m.File)
	if err != nil {
		return fmt.Errorf("sctp proxy: %w", err)
	}
	pt := &port{
		fd:      fd,
		listen:  listen,
		backend: backend,
		log:     r.log.With(logging.AddrPort("listen", listen), logging.AddrPort("backend", backend)),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fail := func(err error) error {
		unix.Close(fd)
		return err
	}
	if r.stopping {
		return fail(fmt.Errorf("sctp proxy: add %s: %w", listen, proxy.ErrClosed))
	}
	if slices.ContainsFunc(r.ports, func(o *port) bool { return o.listen == listen }) {
		return fail(fmt.Errorf("sctp proxy: add %s: already served", listen))
	}
	pt.tok = int32(len(r.slots))
	for i, s := range r.slots {
		if s == nil {
			pt.tok = int32(i)
			break
		}
	}
	if err := r.pl.add(fd, pt.tok); err != nil {
		return fail(fmt.Errorf("sctp proxy on %s: %w", listen, err))
	}
	if int(pt.tok) == len(r.slots) {
		r.slots = append(r.slots, pt)
	} else {
		r.slots[pt.tok] = pt
	}
	r.ports = append(r.ports[:len(r.ports):len(r.ports)], pt) // a new array: EachMapping may hold the old
	return nil
}

// Remove stops serving the mapping listening on listen, also while the Range
// serves: its socket is closed (this Range's descriptor; the caller's file
// is its own) and its open associations are aborted, as Close does for the
// whole Range, before Remove returns. The mapping's counters are no longer
// reported. It fails when no mapping listens on listen or the Range is
// closed or shutting down (proxy.ErrClosed).
func (r *Range) Remove(listen netip.AddrPort) error {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return fmt.Errorf("sctp proxy: remove %s: %w", listen, proxy.ErrClosed)
	}
	i := slices.IndexFunc(r.ports, func(pt *port) bool { return pt.listen == listen })
	if i < 0 {
		r.mu.Unlock()
		return fmt.Errorf("sctp proxy: remove %s: no such mapping", listen)
	}
	pt := r.ports[i]
	pt.removed = true
	r.ports = slices.Delete(slices.Clone(r.ports), i, i+1) // a new array: EachMapping may hold the old
	if pt.fd >= 0 {
		r.pl.del(pt.fd)
		unix.Close(pt.fd)
		pt.fd = -1
		r.slots[pt.tok] = nil
	}
	for s := range r.sessions {
		if s.pt == pt {
			s.abort()
		}
	}
	r.mu.Unlock()
	return nil
}

// EachMapping calls fn once per mapping with its listening address, its
// backend and its counters, in the order the mappings were given and added.
// It is safe to call at any time, also after Close.
func (r *Range) EachMapping(fn func(listen, backend netip.AddrPort, c *proxy.StreamCounters)) {
	r.mu.Lock()
	ports := r.ports
	r.mu.Unlock()
	for _, pt := range ports {
		fn(pt.listen, pt.backend, &pt.stats)
	}
}

// Serve accepts associations on every socket until ctx is done, Close is
// called or Shutdown completes, then returns nil; see proxy.Proxy. Accept
// errors are handled by their proxy.ClassifyAccept class: a resource
// shortage (EMFILE, ENOBUFS, ...) backs off with proxy.Backoff and retries,
// a per-connection error is skipped, and only an unusable socket ends Serve
// with an error (after closing the Range).
func (r *Range) Serve(ctx context.Context) error {
	r.mu.Lock()
	switch {
	case r.closed || r.stopping:
		r.mu.Unlock()
		return fmt.Errorf("sctp proxy: serve: %w", proxy.ErrClosed)
	case r.serving:
		r.mu.Unlock()
		return errors.New("sctp proxy: Serve called twice")
	}
	r.serving = true
	r.mu.Unlock()

	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		r.Close()
	})
	err := r.acceptLoop()
	close(r.loopDone)
	if err != nil {
		r.Close()
	}
	r.wg.Wait()
	if !stop() {
		<-closed // ctx fired: let its Close finish before returning
	}
	return err
}

// errNoneWaiting is accept's answer when the association epoll reported is
// gone (taken by another holder of the socket, or its mapping removed).
var errNoneWaiting = errors.New("no association waiting")

func (r *Range) acceptLoop() error {
	var backoff proxy.Backoff
	for {
		events, err := r.pl.wait()
		if err != nil {
			if r.isStopping() {
				return nil
			}
			return fmt.Errorf("sctp proxy: %w", err)
		}
		// Checked after the wait, so that a streak of failed dials that
		// began while the loop was parked holds the next accept too. The
		// sockets are level-triggered: nothing waiting is lost.
		if !r.waitHold() {
			return nil
		}
		for _, ev := range events {
			pt, err := r.accept(ev.Fd)
			if err == nil {
				backoff.Reset()
				continue
			}
			if err == errNoneWaiting {
				continue
			}
			if r.isStopping() {
				return nil
			}
			pt.stats.AcceptErrors.Add(1)
			switch proxy.ClassifyAccept(err) {
			case proxy.PerConnection:
				pt.log.Debug("accept failed for one association", logging.Err(err))
				continue
			case proxy.Fatal:
				pt.log.Error("accept failed; stopping", logging.Err(err))
				return fmt.Errorf("sctp proxy on %s: %w", pt.listen, err)
			}
			pt.acceptLog.Log(pt.log, zapcore.WarnLevel, time.Now(), "accept failed; backing off and retrying", logging.Err(err))
			if !backoff.Sleep(r.stopped) {
				return nil
			}
			break // the other events are stale after a back-off: wait again
		}
	}
}

// accept takes one association waiting on the socket of token tok and
// starts relaying it. It returns the port for the caller to report an error
// on.
func (r *Range) accept(tok int32) (*port, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return nil, net.ErrClosed
	}
	if tok < 0 || int(tok) >= len(r.slots) || r.slots[tok] == nil {
		return nil, errNoneWaiting
	}
	pt := r.slots[tok]
	c, err := acceptConn(pt.fd, pt.listen)
	if err == unix.EAGAIN {
		return pt, errNoneWaiting
	}
	if err != nil {
		return pt, fmt.Errorf("accept sctp %s: %w", pt.listen, err)
	}
	s := &session{pt: pt, client: c}
	r.sessions[s] = struct{}{}
	r.wg.Add(1) // under mu and before stopping: ordered before Shutdown's and Close's Wait
	pt.stats.Accepted.Add(1)
	pt.stats.Active.Add(1)
	go r.handle(s)
	return pt, nil
}

// waitHold waits while backend dials fail for want of resources (see
// dialFailing). It reports false when the Range stops meanwhile.
func (r *Range) waitHold() bool {
	if !r.dialFailing.Load() {
		return true
	}
	r.mu.Lock()
	d := time.Until(r.holdUntil)
	r.mu.Unlock()
	return proxy.Sleep(d, r.stopped)
}

func (r *Range) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

func (r *Range) handle(s *session) {
	defer r.wg.Done()
	defer r.forget(s)
	pt, client := s.pt, s.client

	ctx, cancel := context.WithTimeout(r.ctx, r.dialTimeout)
	backend, err := Dial(ctx, pt.backend)
	cancel()
	if err != nil {
		if r.ctx.Err() == nil { // not cut short by Close
			r.dialFailed(pt, client, err)
		}
		client.Abort()
		return
	}
	r.dialSucceeded(pt)
	r.mu.Lock()
	closed := r.closed || pt.removed // Close, or Remove, ran while dialling
	if !closed {
		s.backend = backend
	}
	r.mu.Unlock()
	if closed {
		backend.Abort()
		client.Abort()
		return
	}
	if pt.log.Enabled(zapcore.DebugLevel) {
		pt.log.Debug("association relayed", logging.AddrPort("client", client.RemoteAddr()), logging.AddrPort("via", backend.LocalAddr()))
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		r.relay(s, client, backend, &pt.stats.BytesDown)
	}()
	r.relay(s, backend, client, &pt.stats.BytesUp)
	<-done
	client.Close()
	backend.Close()
	if s.reset.Load() {
		pt.stats.Resets.Add(1)
	}
}

// dialFailed counts and reports a failed backend dial. When the failure is
// one of resources (no free local port, no descriptor) the accept loop
// holds off for the next delay of a back-off, so that clients wait in the
// kernel's queue instead of being accepted and aborted in a tight loop; the
// first dial of a streak that finds no free local port is logged as an
// error with the remedy.
func (r *Range) dialFailed(pt *port, client *Conn, err error) {
	pt.stats.DialErrors.Add(1)
	class := proxy.ClassifyDial(err)
	if class == proxy.PerConnection {
		pt.dialLog.Log(pt.log, zapcore.WarnLevel, time.Now(), "backend association failed; client aborted",
			logging.AddrPort("client", client.RemoteAddr()), logging.Err(err))
		return
	}
	r.mu.Lock()
	delay := r.dialBackoff.Next()
	r.holdUntil = time.Now().Add(delay)
	r.dialFailing.Store(true)
	r.mu.Unlock()
	if class == proxy.AddrExhausted {
		if r.addrStreak.Add(1) == 1 {
			pt.log.Error("no free local port for backend associations; clients are aborted and accepting backs off until one is free",
				logging.String("remedy", proxy.AddrExhaustedHint("sctp")), logging.Err(err))
		}
		return
	}
	pt.dialLog.Log(pt.log, zapcore.WarnLevel, time.Now(), "backend association failed; backing off",
		logging.Duration("delay", delay), logging.Err(err))
}

// dialSucceeded ends a streak of failed dials.
func (r *Range) dialSucceeded(pt *port) {
	if !r.dialFailing.Load() {
		return
	}
	r.mu.Lock()
	r.dialFailing.Store(false)
	r.dialBackoff.Reset()
	r.holdUntil = time.Time{}
	r.mu.Unlock()
	if n := r.addrStreak.Swap(0); n > 0 {
		pt.log.Info("backend associations find a local port again", logging.Int64("failed_dials", n))
	}
}

// relay copies messages from src to dst with their stream id, PPID and
// ordering until src ends, adding the bytes to n. EOF (a SHUTDOWN from src's
// peer) becomes a SHUTDOWN towards dst; any other error aborts both
// associations, so that the opposite direction ends too, and marks the
// session reset.
func (r *Range) relay(s *session, dst, src *Conn, n *atomic.Uint64) {
	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	buf := *bp
	log := s.pt.log
	for {
		m, info, _, err := src.ReadMsg(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				dst.CloseWrite()
				return
			}
			if !errors.Is(err, net.ErrClosed) {
				log.Debug("association ended with an error", logging.Err(err))
			}
			s.reset.Store(true)
			dst.Abort()
			src.Abort()
			return
		}
		if _, err := dst.WriteMsg(buf[:m], info); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Warn("relaying a message failed", logging.Int("stream", int(info.Stream)), logging.Err(err))
			}
			s.reset.Store(true)
			dst.Abort()
			src.Abort()
			return
		}
		n.Add(uint64(m))
	}
}

// abort ends s at once with an ABORT on both sides. r.mu must be held.
func (s *session) abort() {
	s.reset.Store(true)
	s.client.Abort()
	if s.backend != nil {
		s.backend.Abort()
	}
}

func (r *Range) forget(s *session) {
	s.pt.stats.Active.Add(-1)
	r.mu.Lock()
	delete(r.sessions, s)
	r.mu.Unlock()
}

// stop stops accepting, once: every listening socket and the epoll set are
// closed.
func (r *Range) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return
	}
	r.stopping = true
	close(r.stopped)
	for _, pt := range r.slots {
		if pt != nil && pt.fd >= 0 {
			unix.Close(pt.fd)
			pt.fd = -1
		}
	}
	r.pl.close()
}

// Close stops at once: every listening socket, every client and backend
// association and every pending dial are closed (with an ABORT), and Close
// returns once every relay goroutine, and Serve's accept loop, have ended.
// It is safe to call more than once and always returns nil.
func (r *Range) Close() error {
	r.stop()
	r.cancel()
	r.mu.Lock()
	r.closed = true
	for s := range r.sessions {
		s.abort()
	}
	serving := r.serving
	r.mu.Unlock()
	r.wg.Wait()
	if serving {
		<-r.loopDone
	}
	return nil
}

// Shutdown stops accepting at once and lets relayed associations end by
// themselves until ctx is done; then it closes the rest as Close does and
// returns ctx.Err(). It returns proxy.ErrClosed if the Range was closed.
func (r *Range) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return fmt.Errorf("sctp proxy: shutdown: %w", proxy.ErrClosed)
	}
	r.stop()
	idle := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		r.Close()
		return nil
	case <-ctx.Done():
		r.Close()
		<-idle
		return ctx.Err()
	}
}

package sctp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"golang.org/x/sys/unix"
)

// Proxy accepts SCTP associations and relays each to Config.Backend over an
// association of its own. It implements proxy.Proxy.
type Proxy struct {
	cfg Config
	log *logging.Logger
	ln  *Listener

	ctx    context.Context // cancelled by Close: ends pending dials
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool // no new associations (Close or Shutdown called)
	serving  bool // Serve was called
	sessions map[*session]struct{}
	wg       sync.WaitGroup // one per session
	loopDone chan struct{}  // closed when the accept loop has returned
	stopped  chan struct{}  // closed when the proxy stops accepting
}

// session is one client association and, once dialled, its backend.
type session struct {
	client  *Conn
	backend *Conn // nil until dialled; guarded by Proxy.mu
}

// New returns a Proxy serving the listening SCTP socket f. It relays on a
// duplicate of f; the caller may close f after New returns.
func New(f *os.File, cfg Config) (*Proxy, error) {
	if !cfg.Backend.IsValid() || !cfg.Backend.Addr().IsValid() || cfg.Backend.Port() == 0 {
		return nil, fmt.Errorf("sctp proxy: invalid backend address %s", cfg.Backend)
	}
	ln, err := FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("sctp proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{
		cfg:      cfg,
		log:      cfg.Logger.With(logging.Stringer("listen", ln.Addr()), logging.Stringer("backend", cfg.Backend)),
		ln:       ln,
		ctx:      ctx,
		cancel:   cancel,
		sessions: make(map[*session]struct{}),
		loopDone: make(chan struct{}),
		stopped:  make(chan struct{}),
	}, nil
}

// Addr returns the address the proxy listens on, an *Addr.
func (p *Proxy) Addr() net.Addr { return &Addr{AddrPort: p.ln.Addr()} }

// Serve accepts associations until ctx is done, Close is called or Shutdown
// completes, then returns nil. Accept errors such as EMFILE are logged and
// retried with proxy.Backoff. Calling Serve after Close or a second time
// returns an error (proxy.ErrClosed after Close).
func (p *Proxy) Serve(ctx context.Context) error {
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return proxy.ErrClosed
	case p.serving:
		p.mu.Unlock()
		return fmt.Errorf("sctp proxy %s: Serve called twice", p.ln.Addr())
	}
	p.serving = true
	p.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	err := p.acceptLoop()
	close(p.loopDone)
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() error {
	var backoff proxy.Backoff
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			if fatalAcceptError(err) {
				p.log.Error("accept failed; stopping", logging.Err(err))
				return fmt.Errorf("sctp proxy: %w", err)
			}
			p.log.Warn("accept failed; retrying", logging.Err(err))
			backoff.Sleep(p.stopped)
			continue
		}
		backoff.Reset()
		s := &session{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Abort()
			return nil
		}
		p.sessions[s] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(s)
	}
}

// fatalAcceptError reports errors that retrying cannot cure: the socket is
// not (or no longer) a listening socket.
func fatalAcceptError(err error) bool {
	return errors.Is(err, unix.EBADF) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOTSOCK) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, net.ErrClosed)
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *Proxy) handle(s *session) {
	defer p.wg.Done()
	defer p.forget(s)
	client := s.client
	log := p.log.With(logging.Stringer("client", client.RemoteAddr()))

	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.dialTimeout())
	backend, err := Dial(ctx, p.cfg.Backend)
	cancel()
	if err != nil {
		if p.ctx.Err() == nil { // not cut short by Close
			log.Warn("backend association failed; closing the client", logging.Err(err))
		}
		client.Close()
		return
	}
	p.mu.Lock()
	closed := p.ctx.Err() != nil // Close ran while dialling
	if !closed {
		s.backend = backend
	}
	p.mu.Unlock()
	if closed {
		backend.Abort()
		client.Abort()
		return
	}
	log.Debug("association relayed", logging.Stringer("via", backend.LocalAddr()))

	done := make(chan struct{})
	go func() {
		defer close(done)
		relayMsgs(backend, client, log)
	}()
	relayMsgs(client, backend, log)
	<-done
	client.Close()
	backend.Close()
	log.Debug("association ended")
}

// relayMsgs copies messages from src to dst with their stream id, PPID and
// ordering until src ends. EOF (a SHUTDOWN from src's peer) becomes a
// SHUTDOWN towards dst; any other error aborts both associations so that the
// opposite direction ends too.
func relayMsgs(dst, src *Conn, log *logging.Logger) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, info, _, err := src.ReadMsg(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				dst.CloseWrite()
				return
			}
			if !errors.Is(err, net.ErrClosed) {
				log.Debug("association ended with an error", logging.Err(err))
			}
			dst.Abort()
			src.Abort()
			return
		}
		if _, err := dst.WriteMsg(buf[:n], info); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Warn("relaying a message failed", logging.Int("stream", int(info.Stream)), logging.Err(err))
			}
			dst.Abort()
			src.Abort()
			return
		}
	}
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, BufferSize)
	return &b
}}

func (p *Proxy) forget(s *session) {
	p.mu.Lock()
	delete(p.sessions, s)
	p.mu.Unlock()
}

// stop marks the proxy closed and closes the listener; it reports whether
// this call did it.
func (p *Proxy) stop() bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.closed = true
	close(p.stopped)
	p.mu.Unlock()
	p.ln.Close()
	return true
}

// Close stops at once: the listener, every client and backend association and
// every pending dial are closed (with an ABORT), and Close returns once every
// relay goroutine has ended. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.stop()
	p.cancel()
	p.mu.Lock()
	for s := range p.sessions {
		s.client.Abort()
		if s.backend != nil {
			s.backend.Abort()
		}
	}
	serving := p.serving
	p.mu.Unlock()
	p.wg.Wait()
	if serving {
		<-p.loopDone
	}
	return nil
}

// Shutdown stops accepting at once and lets relayed associations end by
// themselves until ctx is done; then it closes the rest as Close does and
// returns ctx.Err().
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stop()
	idle := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		p.Close()
		return nil
	case <-ctx.Done():
		p.Close()
		<-idle
		return ctx.Err()
	}
}

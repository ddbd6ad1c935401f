package udp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

// loop is the goroutine and epoll set that serve one Proxy (New) or every
// Proxy of a range (NewRange). Each epoll event carries its Proxy's index in
// the loop (Pad) and a token (Fd): tokHost, or a flow slot. The epoll set is
// itself pollable: Go's netpoller parks the loop until it has events, and
// the set's read deadline times flow expiry and wakes the loop for Close
// and Shutdown.
type loop struct {
	// members are the proxies served, in the order given and added. The
	// slice is replaced, never changed in place, by the serving goroutine
	// (or by Add before Serve) with mu held; other goroutines read it
	// with mu held.
	members []*Proxy
	// slots are the members by index (epoll Pad); nil once removed. Owned
	// by the serving goroutine (by Add before Serve).
	slots []*Proxy
	name  string // the first host socket's address, for errors
	epfd  int    // also held (and closed) by epf
	epf   *os.File
	rc    syscall.RawConn
	start time.Time // flow times are ns since start

	mu       sync.Mutex
	state    int // stateNew, stateServing, stateClosed
	done     chan struct{}
	closing  atomic.Bool
	draining atomic.Bool
	ops      []memberOp  // Add and Remove calls waiting for the serving goroutine; guarded by mu
	opsReady atomic.Bool // ops is not empty

	// Everything below is owned by the serving goroutine.
	events   []unix.EpollEvent
	nev      int
	pollErr  error
	pollFn   func(uintptr) bool
	deadline time.Time // the epoll set's read deadline; zero: none
	w        *work     // held while there are events to handle; nil while parked
}

const (
	stateNew = iota
	stateServing
	stateClosed
)

// newLoop builds the epoll set for members and adds their host sockets.
func newLoop(members []*Proxy) (*loop, error) {
	l := &loop{epfd: -1, start: time.Now(), done: make(chan struct{})}
	if len(members) > 0 {
		l.name = members[0].laddr.String()
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		l.epfd = -1
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for _, p := range members {
		if err := l.attach(p); err != nil {
			l.closeEpoll()
			return nil, err
		}
	}
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		l.closeEpoll()
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	l.epf = os.NewFile(uintptr(l.epfd), "udp-epoll")
	if l.rc, err = l.epf.SyscallConn(); err != nil {
		l.closeEpoll()
		return nil, err
	}
	return l, nil
}

func (l *loop) closeEpoll() {
	if l.epf != nil {
		l.epf.Close()
	} else if l.epfd >= 0 {
		unix.Close(l.epfd)
	}
	l.epfd = -1
}

// now is the loop's clock for flow times.
func (l *loop) now() int64 { return int64(time.Since(l.start)) }

// serve runs the loop until it is closed, or drained of flows.
func (l *loop) serve(ctx context.Context) error {
	l.mu.Lock()
	switch l.state {
	case stateClosed:
		l.mu.Unlock()
		return fmt.Errorf("udp proxy on %s: serve: %w", l.name, proxy.ErrClosed)
	case stateServing:
		l.mu.Unlock()
		return fmt.Errorf("udp proxy on %s: Serve called twice", l.name)
	}
	l.state = stateServing
	l.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { l.close() })
	defer stop()
	l.events = make([]unix.EpollEvent, batchSize)
	l.pollFn = l.poll
	for _, p := range l.members {
		p.flows = make(map[flowKey]*flow)
	}
	err := l.run()
	l.release()
	l.mu.Lock()
	l.state = stateClosed
	ops := l.ops
	l.ops = nil
	l.mu.Unlock()
	for _, op := range ops {
		op.refuse(l.name)
	}
	close(l.done)
	return err
}

// close stops the loop at once; see Proxy.Close.
func (l *loop) close() error {
	l.mu.Lock()
	switch l.state {
	case stateNew:
		l.state = stateClosed
		l.mu.Unlock()
		l.release()
		close(l.done)
		return nil
	case stateServing:
		l.closing.Store(true)
		l.wakeLocked()
	}
	l.mu.Unlock()
	<-l.done
	return nil
}

// shutdown drains the loop; see Proxy.Shutdown.
func (l *loop) shutdown(ctx context.Context) error {
	l.mu.Lock()
	switch l.state {
	case stateClosed:
		l.mu.Unlock()
		return fmt.Errorf("udp proxy on %s: shutdown: %w", l.name, proxy.ErrClosed)
	case stateNew:
		l.mu.Unlock()
		return l.close()
	}
	l.draining.Store(true)
	l.wakeLocked()
	l.mu.Unlock()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
	}
	l.close()
	return ctx.Err()
}

// wakeLocked makes the serving goroutine look at closing and draining: a
// read deadline in the past ends its wait at once, as an expiry would.
// closing or draining is stored first, and the loop checks both after it
// re-arms the deadline (expireAll), so no wake-up is lost. On an epoll file
// already closed it does nothing.
func (l *loop) wakeLocked() {
	l.epf.SetReadDeadline(time.Unix(1, 0))
}

// release closes what newLoop, New and serve opened. Only the serving
// goroutine, or close when serve never ran, calls it.
func (l *loop) release() {
	for _, p := range l.members {
		p.release()
	}
	l.closeEpoll()
	l.putWork()
}

// drained reports whether no member has a flow left.
func (l *loop) drained() bool {
	for _, p := range l.members {
		if len(p.flows) > 0 {
			return false
		}
	}
	return true
}

// run is the event loop.
func (l *loop) run() error {
	for {
		if l.closing.Load() {
			return nil
		}
		if l.opsReady.Load() {
			l.applyOps()
		}
		if l.draining.Load() && l.drained() {
			return nil
		}
		l.nev, l.pollErr = 0, nil
		err := l.rc.Read(l.pollFn)
		if err == nil {
			err = l.pollErr
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				l.expireAll()
				continue
			}
			return fmt.Errorf("udp proxy on %s: epoll_wait: %w", l.name, err)
		}
		now := l.now()
		l.getWork()
		// The members share the work buffers: one has them at a time, and
		// flushes the replies it gathered before the next takes them.
		var cur *Proxy
		for i := range l.events[:l.nev] {
			ev := &l.events[i]
			p := l.slots[ev.Pad]
			if p == nil {
				continue // removed
			}
			if p != cur {
				if cur != nil {
					cur.flushReplies()
					cur.work = nil
				}
				cur, p.work = p, l.w
			}
			if ev.Fd == tokHost {
				p.fromClients(now)
			} else {
				p.fromBackend(ev.Fd-tokFlow0, now)
			}
		}
		if cur != nil {
			cur.flushReplies()
			cur.work = nil
		}
	}
}

// poll is the RawConn.Read callback: it collects ready events without
// blocking and asks the netpoller to wait when there are none. Before the
// loop parks it gives its work buffers back (see work).
func (l *loop) poll(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), l.events, 0)
		if err == unix.EINTR {
			continue
		}
		l.nev, l.pollErr = n, err
		if n == 0 && err == nil {
			l.putWork()
			return false
		}
		return true
	}
}

// armAt makes the loop's wait end by t at the latest. A deadline that fires
// before any flow is due only costs an extra expiry pass.
func (l *loop) armAt(t time.Time) {
	if l.deadline.IsZero() || t.Before(l.deadline) {
		l.deadline = t
		l.epf.SetReadDeadline(t)
	}
}

// expireAll closes the flows that are due in every member and arms the
// deadline for the next one (or clears it).
func (l *loop) expireAll() {
	l.deadline = time.Time{}
	l.epf.SetReadDeadline(time.Time{})
	now := l.now()
	for _, p := range l.members {
		p.expire(now)
	}
}

// work is what an event loop needs only while it moves datagrams: the
// receive batches of both directions and the send scratch, 4 MiB of
// buffers (reserved, and touched only as far as datagrams fill them). A loop
// takes one from the process's free list when it wakes up with events and
// gives it back before it parks, so a process serving many mappings holds
// as many as were busy at the same time, not one per mapping. Nothing in it
// outlives a round of the event loop: flushReplies empties rep.
type work struct {
	in      batch // client → backend, read from the host socket
	rep     batch // backend → client
	scratch       // send-side buffers
}

// worksMade counts newWork calls, for tests.
var worksMade atomic.Int64

func newWork() *work {
	worksMade.Add(1)
	return &work{
		in:      newBatch(batchSize, MaxDatagram, true, true),
		rep:     newBatch(batchSize, MaxDatagram, false, true),
		scratch: newScratch(),
	}
}

// idleWork is the free list of work, shared by every loop of the process.
// It never shrinks: its length is the most loops that were busy at once.
var idleWork struct {
	mu   sync.Mutex
	free []*work
}

// getWork gives l a work, unless it holds one.
func (l *loop) getWork() {
	if l.w != nil {
		return
	}
	idleWork.mu.Lock()
	if n := len(idleWork.free); n > 0 {
		l.w = idleWork.free[n-1]
		idleWork.free[n-1] = nil
		idleWork.free = idleWork.free[:n-1]
	}
	idleWork.mu.Unlock()
	if l.w == nil {
		l.w = newWork()
	}
}

// putWork returns l's work to the free list, if it holds one.
func (l *loop) putWork() {
	if l.w == nil {
		return
	}
	idleWork.mu.Lock()
	idleWork.free = append(idleWork.free, l.w)
	idleWork.mu.Unlock()
	l.w = nil
}

// Mapping is one host socket of a range (NewRange) and the backend its
// datagrams are relayed to.
type Mapping struct {
	File    *os.File // a bound UDP socket; NewRange duplicates it
	Backend netip.AddrPort
}

// Range relays the host sockets of a range, each to its own backend, with
// one goroutine and one epoll set for all of them. Each socket keeps its own
// flows, bound (Config.MaxFlows) and counters.
type Range struct {
	l   *loop
	cfg Config // for Add
}

var _ proxy.Proxy = (*Range)(nil)

// NewRange returns a Range serving every mapping's socket as New would
// serve it alone; cfg.Backend is not used. Like New it duplicates the files,
// which the caller closes afterwards.
func NewRange(ms []Mapping, cfg Config) (*Range, error) {
	if len(ms) == 0 {
		return nil, errors.New("udp proxy: no host socket")
	}
	members := make([]*Proxy, 0, len(ms))
	fail := func(err error) (*Range, error) {
		for _, p := range members {
			p.release()
		}
		return nil, err
	}
	known := make(map[netip.Addr]sockopt.TransparentBackend) // for -transparent
	for _, m := range ms {
		c := cfg
		c.Backend = m.Backend
		p, err := newMember(m.File, c, known)
		if err != nil {
			return fail(err)
		}
		members = append(members, p)
	}
	l, err := newLoop(members)
	if err != nil {
		return fail(fmt.Errorf("udp proxy on %s and %d more: %w", members[0].laddr, len(members)-1, err))
	}
	return &Range{l: l, cfg: cfg}, nil
}

// Stats returns the counters of every socket added up.
func (r *Range) Stats() Stats {
	var sum Stats
	r.l.mu.Lock()
	members := r.l.members
	r.l.mu.Unlock()
	for _, p := range members {
		sum.add(p.Stats())
	}
	return sum
}

// Serve relays until ctx is done, Close is called or Shutdown completes;
// see proxy.Proxy.
func (r *Range) Serve(ctx context.Context) error { return r.l.serve(ctx) }

// Close stops at once; see Proxy.Close.
func (r *Range) Close() error { return r.l.close() }

// Shutdown drains every socket; see Proxy.Shutdown.
func (r *Range) Shutdown(ctx context.Context) error { return r.l.shutdown(ctx) }

// Add starts relaying m's socket as NewRange would, also while the Range
// serves (the serving goroutine takes it between two rounds of events, and
// Add returns once it has). Like NewRange it duplicates m.File, which the
// caller closes afterwards. It fails when the socket is not a bound UDP
// socket, the backend is not usable, a socket of the Range already has the
// same address, or the Range is closed or shutting down (proxy.ErrClosed).
func (r *Range) Add(m Mapping) error {
	c := r.cfg
	c.Backend = m.Backend
	p, err := newMember(m.File, c, nil)
	if err != nil {
		return err
	}
	return r.l.submit(memberOp{add: p})
}

// Remove stops relaying the socket whose address is listen, also while the
// Range serves: its flows and this Range's descriptor of the socket are
// closed (the caller's file is its own) before Remove returns, and its
// counters leave Stats. The other sockets and their flows are not
// disturbed. It fails when no socket of the Range has that address, or the
// Range is closed or shutting down (proxy.ErrClosed).
func (r *Range) Remove(listen netip.AddrPort) error {
	return r.l.submit(memberOp{remove: listen})
}

// memberOp is an Add or a Remove for the serving goroutine.
type memberOp struct {
	add    *Proxy         // to add, or nil
	remove netip.AddrPort // to remove, when add is nil
	done   chan error
}

// refuse answers op when the loop no longer serves.
func (op memberOp) refuse(name string) {
	if op.add != nil {
		op.add.release()
	}
	op.done <- fmt.Errorf("udp proxy on %s: %w", name, proxy.ErrClosed)
}

// submit applies op: at once before Serve, through the serving goroutine
// while serving, not at all after Close or during Shutdown.
func (l *loop) submit(op memberOp) error {
	op.done = make(chan error, 1)
	l.mu.Lock()
	switch {
	case l.state == stateClosed || l.draining.Load() || l.closing.Load():
		l.mu.Unlock()
		op.refuse(l.name)
	case l.state == stateNew:
		err := l.apply(op)
		l.mu.Unlock()
		return err
	default:
		l.ops = append(l.ops, op)
		l.opsReady.Store(true)
		l.wakeLocked()
		l.mu.Unlock()
	}
	return <-op.done
}

// applyOps applies the waiting Add and Remove calls; the serving goroutine
// calls it between two rounds of events.
func (l *loop) applyOps() {
	l.mu.Lock()
	ops := l.ops
	l.ops = nil
	l.opsReady.Store(false)
	for _, op := range ops {
		op.done <- l.apply(op)
	}
	l.mu.Unlock()
}

// apply adds or removes a member. l.mu is held, and either the serving
// goroutine calls it or Serve has not begun.
func (l *loop) apply(op memberOp) error {
	if p := op.add; p != nil {
		for _, o := range l.members {
			if o.laddr.AddrPort() == p.laddr.AddrPort() {
				p.release()
				return fmt.Errorf("udp proxy: add %s: already served", p.laddr)
			}
		}
		if err := l.attach(p); err != nil {
			p.release()
			return err
		}
		if l.state == stateServing {
			p.flows = make(map[flowKey]*flow)
		}
		return nil
	}
	for i, p := range l.members {
		if p.laddr.AddrPort() != op.remove {
			continue
		}
		// The caller's descriptor may keep the socket open: leave the
		// epoll set explicitly.
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, p.hostFD, nil)
		l.slots[p.idx] = nil
		members := make([]*Proxy, 0, len(l.members)-1)
		l.members = append(append(members, l.members[:i]...), l.members[i+1:]...)
		p.release()
		return nil
	}
	return fmt.Errorf("udp proxy: remove %s: no such socket", op.remove)
}

// attach adds p's host socket to the epoll set and p to the members, in a
// free slot. l.mu is held, or l is not shared yet.
func (l *loop) attach(p *Proxy) error {
	idx := len(l.slots)
	for i, o := range l.slots {
		if o == nil {
			idx = i
			break
		}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: tokHost, Pad: int32(idx)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, p.hostFD, &ev); err != nil {
		return fmt.Errorf("epoll_ctl %s: %w", p.laddr, err)
	}
	p.l, p.idx = l, int32(idx)
	if idx == len(l.slots) {
		l.slots = append(l.slots, p)
	} else {
		l.slots[idx] = p
	}
	l.members = append(l.members[:len(l.members):len(l.members)], p)
	if l.name == "" {
		l.name = p.laddr.String()
	}
	return nil
}

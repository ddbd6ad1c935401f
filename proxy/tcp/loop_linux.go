package tcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
	"github.com/hostproxy/hostproxy/sockopt"
)

// What an epoll event is about: the low two bits of EpollEvent.Pad. For a
// connection's socket, Fd is the connection's index in its loop and the
// rest of Pad its generation; for a listening socket, Fd is its index in
// Proxy.slots.
const (
	evClient   = 0
	evBackend  = 1
	evListener = 2
	evWake     = 3
)

const (
	chunkConns  = 256      // connection records allocated together
	maxEvents   = 128      // events taken per epoll_wait
	maxPipes    = 16       // idle pipes a loop keeps for later transfers
	pipeSize    = 1 << 20  // F_SETPIPE_SZ of a new pipe (Go's splice uses the same)
	spliceChunk = 1 << 20  // bytes asked of one splice
	copyBuf     = 64 << 10 // the loop's buffer when no pipe can be had
	smallRead   = 4 << 10  // a read through the loop's buffer; a full one starts splicing

	// connEvents is what each socket of a connection is registered for:
	// edge-triggered, so that the loop keeps each side's readiness in its
	// record, and a socket's registration changes only while the bytes
	// read from it wait for the other side (loop.mute).
	connEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
)

// Side flags of a connection record.
const (
	fReadable = 1 << iota // may have bytes or a FIN to read: read until EAGAIN
	fWritable             // may take bytes: write until EAGAIN, then wait for EPOLLOUT
	fEOF                  // FIN received from this side
	fShut                 // FIN sent to this side (shutdown(SHUT_WR), or the close to come)
	fHup                  // EPOLLRDHUP (or worse) seen: a FIN is queued behind the bytes
	fBulk                 // the last read filled smallRead: splice until one moves less
	fMuted                // EPOLLIN is out of this side's registration (loop.mute)
)

// Sides of a connection, and directions: direction d carries the bytes
// read from side d to side 1-d.
const (
	sideClient  = 0
	sideBackend = 1
)

// pipePair is a pipe that carries one direction's bytes in flight.
type pipePair struct {
	r, w  int32
	slots int32 // buffers the pipe holds (its size in pages); 0: no pipe
}

// conn is the record of one relayed connection, owned by its loop.
type conn struct {
	fd       [2]int32    // client and backend sockets; -1 when not open
	pt       *port       // the mapping it was accepted on
	pipe     [2]pipePair // pipe[d]: only while inPipe[d] > 0 or a splice is under way
	inPipe   [2]uint32   // bytes read from side d, not yet written to the other
	flags    [2]uint8
	wait     uint8  // the wait list it is on: waitNone, waitDial or waitKeepalive
	hdrLeft  uint8  // bytes of the PROXY header in spill[sideClient], not yet sent
	gen      uint32 // changes each time the record is reused
	prev     int32  // in the wait list, while on one
	next     int32
	deadline int64     // of the dial, then of the keepalive wait, in loop time
	bytes    [2]uint64 // relayed in each direction
	// spill holds, per direction, bytes copied through the loop's buffer
	// that the other side did not take yet; only when no pipe could be
	// had (EMFILE), so it is nil otherwise.
	spill *[2][]byte
}

type connChunk [chunkConns]conn

// loop is one event loop: one goroutine, one epoll set with every
// listening socket of the proxy and the sockets of the connections this
// loop accepted. Each loop takes one connection per readiness of a
// listening socket; the loops wake alike for it (EPOLLEXCLUSIVE does not
// reach through the netpoller's epoll set), and one that finds the
// connection taken gets EAGAIN and goes back to waiting.
type loop struct {
	p      *Proxy
	epfd   int
	wakefd int // eventfd: Close and Shutdown wake the loop with it
	events [maxEvents]unix.EpollEvent

	// A loop that does not own a thread has its epoll descriptor in Go's
	// netpoller (it is readable while any socket in it has events), so
	// with nothing to do it parks its goroutine, not a thread in
	// epoll_wait: no blocking system call, so no hand-off of the P and no
	// extra thread to wake. An owned loop's descriptor stays out of it
	// (epf is nil): the netpoller would otherwise be woken by every event
	// the loop takes itself.
	epf     *os.File
	rc      syscall.RawConn
	pollFn  func(fd uintptr) bool // l.poll, bound once
	owned   bool                  // runs runOwned
	pollErr error
	armed   int64 // the epoll file's read deadline, in loop time; -1 for none

	chunks []*connChunk
	free   []int32 // indexes of unused records
	live   int     // connections open

	// dials holds the dialing connections; keepalives the connected ones
	// whose backend socket does not have its keepalive options yet.
	dials, keepalives waitList

	pipes []pipePair // idle, empty pipes
	buf   []byte     // for copySmall and copyOnce, made at the loop's start

	start time.Time // loop time 0

	// grows is set in the first loop until it starts the others, once it
	// has two connections open at once (Proxy.startLoops).
	grows bool

	// Accepting stops for a while after an accept error of class Retry
	// (EMFILE, ...) or a dial error of class Retry or AddrExhausted (no
	// descriptor, no source port): the listening sockets leave the epoll
	// set until resumeAt.
	paused      bool
	resumeAt    int64
	acceptOff   proxy.Backoff // after accept errors
	dialOff     proxy.Backoff // after dial errors; reset by a completed connect
	acceptFails int64         // accept errors of class Retry since the last accept

	// Remove appends to sweeps and sets sweep (with Proxy.mu held) for
	// the loop to reset the connections of removed mappings; ended is set,
	// with Proxy.mu held, when the loop has ended.
	sweep  atomic.Bool
	sweeps []*sync.WaitGroup
	ended  bool
	// Config.Transparent: the client's sockaddr as accept4 filled it, and
	// the source address to bind the backend socket to.
	peer    [unix.SizeofSockaddrInet6]byte
	peerLen uint32
	src     [unix.SizeofSockaddrInet6]byte
	srcLen  uint32
}

// loopCount returns how many event loops a Proxy runs, and how many of
// them (the first ones) own a thread and a P (runOwned). Owned loops leave
// one P to the rest of the program; with a single P the one loop parks in
// the netpoller instead.
func loopCount() (n, owned int) {
	procs := runtime.GOMAXPROCS(0)
	if procs < 2 {
		return 1, 0
	}
	n = min(procs-1, maxLoops)
	return n, n
}

// newLoop makes a loop of p; owned says whether it runs runOwned, else it
// parks in Go's netpoller.
func newLoop(p *Proxy, owned bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &loop{p: p, epfd: epfd, wakefd: wakefd, dials: waitList{-1, -1}, keepalives: waitList{-1, -1}, start: time.Now(), armed: -1,
		buf: make([]byte, copyBuf)}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Pad: evWake}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		l.close()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l.owned = owned
	if !owned {
		// The epoll descriptor goes into Go's netpoller (a non-blocking
		// descriptor does).
		if err := unix.SetNonblock(epfd, true); err != nil {
			l.close()
			return nil, os.NewSyscallError("fcntl", err)
		}
		l.epf = os.NewFile(uintptr(epfd), "tcp relay epoll")
		if l.rc, err = l.epf.SyscallConn(); err != nil {
			l.close()
			return nil, err
		}
		l.pollFn = l.poll
	}
	if err := l.watchListeners(); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// watchListeners adds the listening sockets to the loop's epoll set.
func (l *loop) watchListeners() error {
	p := l.p
	p.lnMu.RLock()
	defer p.lnMu.RUnlock()
	if p.lnClosed {
		return nil
	}
	for _, pt := range p.ports {
		if pt.fd < 0 {
			return fmt.Errorf("tcp proxy on %s: no descriptor for the listening socket", pt.listen)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: pt.tok, Pad: evListener}
		// EEXIST: Add put a socket in while accepting was paused.
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, pt.fd, &ev); err != nil && err != unix.EEXIST {
			return fmt.Errorf("epoll add %s: %w", pt.listen, err)
		}
	}
	return nil
}

// unwatchListeners takes the listening sockets out of the epoll set.
func (l *loop) unwatchListeners() {
	p := l.p
	p.lnMu.RLock()
	defer p.lnMu.RUnlock()
	if p.lnClosed {
		return
	}
	for _, pt := range p.ports {
		if pt.fd >= 0 {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, pt.fd, nil)
		}
	}
}

// close releases the loop's descriptors once it has ended (or never ran).
func (l *loop) close() {
	if l.epf != nil {
		l.epf.Close()
	} else { // owned, or newLoop failed before the netpoller had it
		unix.Close(l.epfd)
	}
	unix.Close(l.wakefd)
	for _, pp := range l.pipes {
		closePipe(pp)
	}
	l.pipes = nil
}

var wakeOne = [8]byte{1} // a non-zero eventfd increment in either byte order

// wake makes the loop look at the proxy's state. Proxy.mu must be held, so
// that the loop's descriptors are still open.
func (l *loop) wake() { unix.Write(l.wakefd, wakeOne[:]) }

// now is the loop's clock, in nanoseconds.
func (l *loop) now() int64 { return int64(time.Since(l.start)) }

// run waits for events and handles them until the proxy closes, or stops
// accepting and has no connection left in this loop.
func (l *loop) run() {
	defer l.end()
	if l.owned {
		l.runOwned()
		return
	}
	for !l.over() {
		l.park()
		l.timers()
	}
	if l.p.closing.Load() {
		l.resetAll()
	}
}

// poll is the RawConn.Read callback, where a netpoller loop does its work:
// it takes the ready events without blocking and handles them, and asks the
// netpoller to park it when there are none. It reports true when run must
// look at the proxy's state (closing, stopping) or epoll_wait failed.
//
// The first call of a Read always looks (Read forgets readiness reported
// before it began). After handling events, poll lets the loop park without
// another epoll_wait when every event it took was edge-triggered and it
// took fewer than it could: each new event then reaches the netpoller,
// which wakes the park or keeps it from starting. Level-triggered ones
// (listening sockets, the wake eventfd) may still be ready without a new
// event, so after those it looks again first.
func (l *loop) poll(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), l.events[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.pollErr = err
			return true
		}
		if n == 0 {
			return false
		}
		again := l.dispatch(n)
		l.timers()
		if l.over() {
			return true
		}
		l.arm()
		if !again {
			return false
		}
	}
}

// dispatch handles the first n events of l.events. It reports whether the
// set may still hold ready events that will not be reported again: it took
// as many as it could, or one was level-triggered.
func (l *loop) dispatch(n int) bool {
	again := n == len(l.events)
	for i := range n {
		ev := &l.events[i]
		switch kind := ev.Pad & 3; kind {
		case evWake:
			var b [8]byte
			unix.Read(l.wakefd, b[:])
			if l.sweep.Load() {
				l.sweepRemoved()
			}
			again = true
		case evListener:
			l.accept(int(ev.Fd))
			again = true
		default:
			if c := l.lookup(ev.Fd, uint32(ev.Pad)>>2); c != nil {
				l.handle(c, ev.Fd, int(kind), ev.Events)
			}
		}
	}
	return again
}

// runOwned is run for a loop that owns its thread and P: it blocks in
// epoll_wait without telling the scheduler (a raw system call), so that an
// event wakes this thread alone and a loop with nothing to do costs no
// scheduler work: no netpoller wake-up, no hand-off of the P, no spinning
// thread. The runtime still reaches it: a preemption signal (a stop of the
// world, or sysmon after 10ms) interrupts epoll_wait with EINTR, and the
// next function call yields. Only loops that leave at least one P to the
// rest of the program run this way (loopCount).
//
// A thread blocked in a raw system call looks busy to the runtime, whose
// sysmon would then preempt it every 10ms for as long as it waits. So an
// owned loop waits that way only while events keep coming: after ownedIdle
// without one it waits in an ordinary epoll_wait (idleWait), which hands
// its P back to the runtime, until the next event or timer, and an idle
// process makes no wake-ups at all.
func (l *loop) runOwned() {
	p := l.p
	for !l.over() {
		msec, idle := l.timeout(), false
		if msec < 0 || msec > ownedIdle {
			msec, idle = ownedIdle, true
		}
		n, errno := epollWaitRaw(l.epfd, l.events[:], msec)
		switch {
		case errno == 0 && n > 0:
			l.dispatch(n)
		case errno == 0 && idle:
			l.timers()
			l.idleWait()
		case errno == 0, errno == unix.EINTR:
		default:
			p.fail(fmt.Errorf("tcp proxy on %s: epoll_wait: %w", p.Addr(), errno))
		}
		l.timers()
	}
	if p.closing.Load() {
		l.resetAll()
	}
}

// ownedIdle is how long, in milliseconds, an owned loop blocks in a raw
// epoll_wait with no event before it waits in an ordinary one.
const ownedIdle = 4

// idleWait is an owned loop's wait once it has been idle for ownedIdle: an
// epoll_wait the scheduler sees as a blocking system call, so that the
// runtime takes the P back and, with nothing else to run, sleeps without
// waking this thread. It handles the events that end it.
func (l *loop) idleWait() {
	for !l.over() {
		n, err := unix.EpollWait(l.epfd, l.events[:], l.timeout())
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			l.p.fail(fmt.Errorf("tcp proxy on %s: epoll_wait: %w", l.p.Addr(), err))
		case n > 0:
			l.dispatch(n)
		}
		return
	}
}

// over reports whether the loop is to end: the proxy is closing (run then
// resets the connections left), or it is stopping and this loop has no
// connection left.
func (l *loop) over() bool {
	return l.p.closing.Load() || (l.p.stopping.Load() && l.live == 0)
}

// park waits in the netpoller until the loop's epoll set has events, a
// timer is due or the proxy is stopping, and handles the events that woke
// it (poll).
func (l *loop) park() {
	if l.over() {
		return
	}
	l.arm()
	l.pollErr = nil
	err := l.rc.Read(l.pollFn)
	if err == nil {
		err = l.pollErr
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		l.p.fail(fmt.Errorf("tcp proxy on %s: epoll_wait: %w", l.p.Addr(), err))
	}
}

// epollWaitRaw is epoll_pwait on epfd with no signal mask, made without
// entering the scheduler's system call state: the thread keeps its P while
// it blocks. It is a real call (not inlined) so that a preemption request
// is honoured at its entry.
//
//go:noinline
func epollWaitRaw(epfd int, events []unix.EpollEvent, msec int) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	return int(n), errno
}

// timeout returns the epoll_wait timeout of an owned loop, in milliseconds
// rounded up: until the loop's next timer (nextTimer), or -1 for none.
func (l *loop) timeout() int {
	until := l.nextTimer()
	if until < 0 {
		return -1
	}
	d := until - l.now()
	if d <= 0 {
		return 0
	}
	return int((d + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

// nextTimer returns the loop time of the first of the loop's timers: the
// first dial deadline, the first keepalive wait's end, the end of an accept
// pause; -1 for none.
func (l *loop) nextTimer() int64 {
	until := int64(-1)
	if l.dials.head >= 0 {
		until = l.conn(l.dials.head).deadline
	}
	if l.keepalives.head >= 0 {
		if t := l.conn(l.keepalives.head).deadline; until < 0 || t < until {
			until = t
		}
	}
	if l.paused && (until < 0 || l.resumeAt < until) {
		until = l.resumeAt
	}
	return until
}

// timers fails the dials past their deadline, gives the connections whose
// keepalive wait is over their backend socket's keepalive options, and ends
// an accept pause that is over.
func (l *loop) timers() {
	if l.dials.head < 0 && l.keepalives.head < 0 && !l.paused {
		return
	}
	now := l.now()
	l.expireDials(now)
	l.keepaliveDue(now)
	if l.paused && now >= l.resumeAt {
		l.paused = false
		if err := l.watchListeners(); err != nil {
			l.p.fail(fmt.Errorf("tcp proxy: resume accepting: %w", err))
		}
	}
}

// arm sets the epoll file's read deadline to the loop's next timer
// (nextTimer), or clears it. An earlier deadline than needed is left alone:
// it only costs a wake-up that re-arms.
func (l *loop) arm() {
	until := l.nextTimer()
	if until == l.armed || (l.armed >= 0 && until > l.armed && l.armed > l.now()) {
		return
	}
	l.armed = until
	if until < 0 {
		l.epf.SetReadDeadline(time.Time{})
	} else {
		l.epf.SetReadDeadline(l.start.Add(time.Duration(until)))
	}
}

func (l *loop) conn(i int32) *conn { return &l.chunks[i/chunkConns][i%chunkConns] }

// lookup returns the record an event is about, or nil when the record has
// been closed (and perhaps reused) since the event was queued.
func (l *loop) lookup(i int32, gen uint32) *conn {
	if i < 0 || int(i) >= len(l.chunks)*chunkConns {
		return nil
	}
	c := l.conn(i)
	if c.gen&(1<<30-1) != gen || c.fd[sideClient] < 0 {
		return nil
	}
	return c
}

// alloc returns an unused record and its index.
func (l *loop) alloc() (*conn, int32) {
	if len(l.free) == 0 {
		base := int32(len(l.chunks) * chunkConns)
		ch := new(connChunk)
		l.chunks = append(l.chunks, ch)
		for i := chunkConns - 1; i >= 0; i-- {
			ch[i].fd = [2]int32{-1, -1}
			l.free = append(l.free, base+int32(i))
		}
	}
	i := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	return l.conn(i), i
}

// release takes c off its wait list and returns its record, whose sockets
// are closed, to the free list.
func (l *loop) release(c *conn, i int32) {
	l.unwait(c)
	c.pt.counters.Active.Add(-1)
	gen := c.gen + 1
	*c = conn{fd: [2]int32{-1, -1}, gen: gen}
	l.free = append(l.free, i)
	l.live--
}

// accept takes one connection waiting on the socket of slot i, if any, and
// starts its relay.
func (l *loop) accept(i int) {
	p := l.p
	p.lnMu.RLock()
	if p.lnClosed || i >= len(p.slots) || p.slots[i] == nil { // removed since the event
		p.lnMu.RUnlock()
		return
	}
	pt := p.slots[i]
	var fd int
	var errno unix.Errno
	if p.transparent {
		l.peerLen = uint32(len(l.peer))
		fd, errno = accept4Peer(pt.fd, &l.peer, &l.peerLen)
	} else {
		fd, errno = accept4(pt.fd)
	}
	p.lnMu.RUnlock()
	switch errno {
	case 0:
	case unix.EAGAIN: // another loop, or another holder of the socket, took it
		return
	default:
		l.acceptFailed(pt, os.NewSyscallError("accept4", errno))
		return
	}
	if l.acceptFails > 0 {
		if p.log.Enabled(zapcore.DebugLevel) {
			p.logFor(pt).Debug("accepting again", logging.Int64("failed_accepts", l.acceptFails))
		}
		l.acceptFails = 0
		l.acceptOff.Reset()
	}
	pt.counters.Accepted.Add(1)
	pt.counters.Active.Add(1)
	if l.grows && l.live > 0 {
		p.startLoops(l)
	}
	l.open(pt, fd)
}

// accept4 accepts on the listening socket fd a non-blocking, close-on-exec
// connection, asking for no peer address.
func accept4(fd int) (int, unix.Errno) {
	for {
		nfd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
		switch errno {
		case 0:
			return int(nfd), 0
		case unix.EINTR, unix.ECONNABORTED:
			continue // as Go's accept does: the next one may be fine
		}
		return -1, errno
	}
}

// accept4Peer is accept4 that also has the kernel fill in the client's
// sockaddr (no extra system call), for Config.Transparent.
func accept4Peer(fd int, sa *[unix.SizeofSockaddrInet6]byte, n *uint32) (int, unix.Errno) {
	for {
		nfd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(n)), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
		switch errno {
		case 0:
			return int(nfd), 0
		case unix.EINTR, unix.ECONNABORTED:
			*n = uint32(len(sa))
			continue
		}
		return -1, errno
	}
}

// acceptFailed handles a failed accept by its proxy.ClassifyAccept class:
// an error that lost only the pending connection is skipped, a shortage
// (Retry) pauses accepting in this loop for a growing delay, and Fatal ends
// serving.
func (l *loop) acceptFailed(pt *port, err error) {
	p := l.p
	pt.counters.AcceptErrors.Add(1)
	switch proxy.ClassifyAccept(err) {
	case proxy.PerConnection:
		if p.log.Enabled(zapcore.DebugLevel) {
			p.logFor(pt).Debug("accept failed for one connection", logging.Err(err))
		}
		return
	case proxy.Fatal:
		p.logFor(pt).Error("accept failed; stopping", logging.Err(err))
		p.fail(fmt.Errorf("accept tcp on %s: %w", pt.listen, err))
		return
	}
	l.acceptFails++
	log := p.logFor(pt)
	if !p.acceptLog.Log(log, zapcore.WarnLevel, time.Now(), "accept failed; backing off and retrying", logging.Err(err)) &&
		log.Enabled(zapcore.DebugLevel) {
		log.Debug("accept failed again", logging.Err(err), logging.Int64("failures", l.acceptFails))
	}
	l.pause(l.acceptOff.Next())
}

// pause stops accepting in this loop for d. Already paused, it takes the
// sockets out again: Add may have put one in meanwhile.
func (l *loop) pause(d time.Duration) {
	l.unwatchListeners()
	l.paused = true
	l.resumeAt = l.now() + int64(d)
}

// open starts the relay of the accepted connection fd on port pt: a
// non-blocking connect to the backend that the loop completes or times out.
func (l *loop) open(pt *port, fd int) {
	p := l.p
	c, idx := l.alloc()
	c.fd[sideClient], c.pt = int32(fd), pt
	l.live++
	if pt.backendErr != nil {
		l.dialFailed(c, idx, pt.backendErr)
		return
	}
	bfd := l.backendSocket(c, idx, pt)
	if bfd < 0 {
		return
	}
	bound := sockopt.BoundOtherPort
	if p.transparent && pt.tpSource {
		if bfd, bound = l.bindSource(c, idx, pt, bfd); bfd < 0 {
			return
		}
	}
	errno := connectBackend(bfd, pt)
	if errno == unix.EADDRNOTAVAIL && bound == sockopt.BoundClientPort {
		// A connection from the client's address and port to the backend
		// is open here already (sockopt.BindTransparent): this one leaves
		// from another port of the client's address.
		if bfd = l.rebindOtherPort(c, idx, pt, bfd); bfd < 0 {
			return
		}
		errno = connectBackend(bfd, pt)
	}
	switch errno {
	case 0, unix.EINPROGRESS:
	default:
		l.dialFailed(c, idx, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pt.backend), Err: os.NewSyscallError("connect", errno)})
		return
	}
	for side := range c.fd {
		if err := l.register(c, idx, side, unix.EPOLL_CTL_ADD, connEvents); err != 0 {
			l.dialFailed(c, idx, os.NewSyscallError("epoll_ctl", err))
			return
		}
	}
	// Connected or not, the backend's first EPOLLOUT (or EPOLLERR) says
	// how the connect ended.
	l.enlist(&l.dials, waitDial, c, idx, l.now()+int64(p.dialTimeout))
}

// bindSource binds the backend socket bfd of c to the client's address
// (Config.Transparent), whose sockaddr accept left in l.peer, and its port
// where free, when sockopt's contract says the connection leaves from
// there (pt.tb.ClientSource, with the address pt listens on, when not a
// wildcard, as the address the client wrote to; sockopt.BindTransparent).
// It returns the socket to connect: bfd, or for a client found to be one of
// the host's own addresses a new socket, which keeps the host's normal
// source; and how it was bound (BoundHostClient also for a socket left
// unbound). A client of another family than the backend is logged once.
// It returns -1 when the bind failed: the dial has then failed and c is
// reset. It allocates nothing unless it logs or fails.
func (l *loop) bindSource(c *conn, idx int32, pt *port, bfd int) (int, sockopt.Bound) {
	p := l.p
	peer, scope, _ := sockopt.ParseSockaddr(l.peer[:l.peerLen])
	n, src := pt.tb.ClientSource(&l.src, peer, scope, pt.listen.Addr())
	l.srcLen = n
	switch src {
	case sockopt.SourceHost:
		return bfd, sockopt.BoundHostClient
	case sockopt.SourceOtherFamily:
		if !p.otherFamily.Swap(true) {
			p.logFor(pt).Warn("transparent: a client of another address family than the backend keeps the host's source address (logged once)",
				logging.AddrPort("client", peer))
		}
		return bfd, sockopt.BoundHostClient
	}
	bound, err := sockopt.BindTransparent(bfd, &l.src, n, true)
	if err != nil {
		l.sourceFailed(c, idx, pt, err)
		return -1, bound
	}
	switch bound {
	case sockopt.BoundHostClient:
		if bfd = l.replaceBackend(c, idx, pt, bfd); bfd < 0 {
			return -1, bound
		}
	case sockopt.BoundOtherPort:
		l.logOtherPort(pt, peer)
	}
	return bfd, bound
}

// rebindOtherPort replaces c's backend socket bfd, bound to the client's
// address and port, whose connect failed with EADDRNOTAVAIL, by one bound
// to the client's address with another port (sockopt.BindTransparent). It
// returns the new socket, or -1 when that failed: the dial has then failed
// and c is reset.
func (l *loop) rebindOtherPort(c *conn, idx int32, pt *port, bfd int) int {
	if bfd = l.replaceBackend(c, idx, pt, bfd); bfd < 0 {
		return -1
	}
	if err := sockopt.BindTransparentOtherPort(bfd, &l.src, l.srcLen); err != nil {
		l.sourceFailed(c, idx, pt, err)
		return -1
	}
	peer, _, _ := sockopt.ParseSockaddr(l.peer[:l.peerLen])
	l.logOtherPort(pt, peer)
	return bfd
}

// backendSocket opens a non-blocking socket toward c's backend, of pt's
// family, and makes it c's backend socket, which it returns; or -1 when
// that failed: the dial has then failed and c is reset.
func (l *loop) backendSocket(c *conn, idx int32, pt *port) int {
	r, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(pt.family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if errno != 0 {
		l.dialFailed(c, idx, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pt.backend), Err: os.NewSyscallError("socket", errno)})
		return -1
	}
	c.fd[sideBackend] = int32(r)
	return int(r)
}

// replaceBackend closes c's backend socket bfd and opens another in its
// place (backendSocket).
func (l *loop) replaceBackend(c *conn, idx int32, pt *port, bfd int) int {
	nfd := l.backendSocket(c, idx, pt)
	if nfd >= 0 {
		closeFD(int32(bfd))
	}
	return nfd
}

// connectBackend sets TCP_NODELAY on the backend socket fd and starts its
// connect to pt's backend; it returns connect's errno (EINPROGRESS when
// the connect goes on). The keepalive options come later (keepaliveDelay).
func connectBackend(fd int, pt *port) unix.Errno {
	setInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&pt.sa)), uintptr(pt.salen))
	return errno
}

// sourceFailed fails c's dial for err, a failed transparent bind to the
// client's address in l.src.
func (l *loop) sourceFailed(c *conn, idx int32, pt *port, err error) {
	from, _, _ := sockopt.ParseSockaddr(l.src[:l.srcLen])
	l.dialFailed(c, idx, &net.OpError{Op: "dial", Net: "tcp", Source: net.TCPAddrFromAddrPort(from), Addr: net.TCPAddrFromAddrPort(pt.backend), Err: err})
}

// logOtherPort says at debug level that peer's backend connection leaves
// from another port of its address.
func (l *loop) logOtherPort(pt *port, peer netip.AddrPort) {
	if l.p.log.Enabled(zapcore.DebugLevel) {
		l.p.logFor(pt).Debug("transparent: the client's port is taken; the backend connection leaves from another port of its address",
			logging.AddrPort("client", peer))
	}
}

// setKeepalive gives a backend socket the keepalive the listening sockets
// give accepted ones: keepAlive's schedule, with TCP_KEEPCNT when keepCnt
// says the system's default count differs.
func setKeepalive(fd int, keepCnt bool) {
	setInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	setInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive.Idle/time.Second))
	setInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAlive.Interval/time.Second))
	if keepCnt {
		setInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAlive.Count)
	}
}

// The system calls of a connection's life that cannot block (on
// non-blocking sockets, without SO_LINGER but for resets that drop the
// queue) are made raw, without the scheduler's entersyscall/exitsyscall.

// setInt sets an int socket option of fd, best effort.
func setInt(fd, level, opt, v int) {
	v32 := int32(v)
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v32)), 4, 0)
}

// closeFD closes fd.
func closeFD(fd int32) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// shutWrite sends a FIN on fd (shutdown SHUT_WR).
func shutWrite(fd int32) unix.Errno {
	_, _, errno := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errno
}

// waitList is a list of connections in the order of their deadlines,
// linked through conn.prev and conn.next. Every member of a list waits
// as long as the others, so appending keeps the order: no timer and no
// sorting per connection. A connection is on one list at most (conn.wait).
type waitList struct{ head, tail int32 }

// The lists a connection waits on (conn.wait).
const (
	waitNone      = iota
	waitDial      // l.dials: its dial, until deadline
	waitKeepalive // l.keepalives: its backend socket's keepalive options, until deadline
)

// enlist appends c, whose index is idx, to list, the loop's list for kind,
// with deadline.
func (l *loop) enlist(list *waitList, kind uint8, c *conn, idx int32, deadline int64) {
	c.wait, c.deadline = kind, deadline
	c.prev, c.next = list.tail, -1
	if list.tail >= 0 {
		l.conn(list.tail).next = idx
	} else {
		list.head = idx
	}
	list.tail = idx
}

// unwait takes c off the list it is on, if any.
func (l *loop) unwait(c *conn) {
	var list *waitList
	switch c.wait {
	case waitDial:
		list = &l.dials
	case waitKeepalive:
		list = &l.keepalives
	default:
		return
	}
	c.wait = waitNone
	if c.prev >= 0 {
		l.conn(c.prev).next = c.next
	} else {
		list.head = c.next
	}
	if c.next >= 0 {
		l.conn(c.next).prev = c.prev
	} else {
		list.tail = c.prev
	}
}

// keepaliveDelay is how long a connection is open before its backend
// socket gets its keepalive options (setKeepalive). Most connections of a
// busy port end sooner, and never pay those system calls; keepalive's
// first probe, after keepAlive.Idle of silence, comes at most this much
// later than it would with the options set at the dial.
const keepaliveDelay = time.Second

// keepaliveDue sets the keepalive options of the backend sockets whose
// connection has waited keepaliveDelay.
func (l *loop) keepaliveDue(now int64) {
	for l.keepalives.head >= 0 {
		c := l.conn(l.keepalives.head)
		if c.deadline > now {
			return
		}
		l.unwait(c)
		setKeepalive(int(c.fd[sideBackend]), l.p.keepCnt)
	}
}

// expireDials fails the dials whose deadline has passed.
func (l *loop) expireDials(now int64) {
	for l.dials.head >= 0 {
		idx := l.dials.head
		c := l.conn(idx)
		if c.deadline > now {
			return
		}
		pt := c.pt
		l.dialFailed(c, idx, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pt.backend), Err: os.ErrDeadlineExceeded})
	}
}

// handle takes the events of one socket of c, whose index is idx.
func (l *loop) handle(c *conn, idx int32, side int, events uint32) {
	connected := false
	if c.wait == waitDial && side == sideBackend {
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			pt := c.pt
			errno, err := unix.GetsockoptInt(int(c.fd[sideBackend]), unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && errno == 0 {
				errno = int(unix.ECONNREFUSED) // hung up without saying why
			}
			l.dialFailed(c, idx, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pt.backend), Err: os.NewSyscallError("connect", unix.Errno(errno))})
			return
		}
		if events&unix.EPOLLOUT == 0 {
			return // nothing about the connect yet
		}
		l.unwait(c)
		l.connected(c, idx)
		connected = true
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.flags[side] |= fReadable
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.flags[side] |= fHup
	}
	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.flags[side] |= fWritable
	}
	if c.wait == waitDial {
		if events&unix.EPOLLERR != 0 { // the client reset while the dial went on
			l.reset(c, idx, false)
		}
		return
	}
	if connected && l.p.pp != proxyproto.None && !l.sendHeader(c) {
		l.reset(c, idx, true)
		return
	}
	l.pump(c, idx)
}

// writeHeader writes a PROXY header; tests replace it to cut the write short.
var writeHeader = func(fd int32, b []byte) (int, unix.Errno) { return rawRW(unix.SYS_WRITE, fd, b) }

// sendHeader writes the PROXY protocol header to c's backend, whose connect
// has just completed, before anything of the client's: the client's
// address as the source, the address the client connected to (the
// accepted socket's own) as the destination. What the backend does not
// take at once waits in c.spill, which move sends before any byte of the
// client's. It reports false when the backend socket failed.
func (l *loop) sendHeader(c *conn) bool {
	cfd := int(c.fd[sideClient])
	h := proxyproto.Append(l.buf[:0], l.p.pp, sockName(unix.SYS_GETPEERNAME, cfd), sockName(unix.SYS_GETSOCKNAME, cfd))
	n, errno := 0, unix.Errno(0)
	if c.flags[sideBackend]&fWritable != 0 {
		n, errno = writeHeader(c.fd[sideBackend], h)
	} else {
		errno = unix.EAGAIN
	}
	switch errno {
	case 0:
	case unix.EAGAIN:
		n = 0
		c.flags[sideBackend] &^= fWritable
	default:
		return false
	}
	if n == len(h) {
		return true
	}
	if c.spill == nil {
		c.spill = new([2][]byte)
	}
	c.spill[sideClient] = append(c.spill[sideClient][:0], h[n:]...)
	c.hdrLeft = uint8(len(h) - n)
	return true
}

// connected ends the dial of c, whose index is idx, with success: the next
// dial error of class Retry or AddrExhausted backs off from the shortest
// delay again, and c waits keepaliveDelay for its keepalive options.
func (l *loop) connected(c *conn, idx int32) {
	l.dialOff.Reset()
	l.enlist(&l.keepalives, waitKeepalive, c, idx, l.now()+int64(keepaliveDelay))
}

// pump moves what it can in both directions of c, whose index is idx, and
// closes c when both have ended or one failed.
func (l *loop) pump(c *conn, idx int32) {
	for d := range 2 {
		if !l.move(c, idx, d) {
			l.reset(c, idx, true)
			return
		}
	}
	if c.ended(sideClient) && c.ended(sideBackend) {
		l.finish(c, idx)
	}
}

// ended reports whether direction d is over: the FIN read from side d was
// passed on, with every byte before it.
func (c *conn) ended(d int) bool {
	return c.flags[d]&fEOF != 0 && c.inPipe[d] == 0 && c.flags[1-d]&fShut != 0 &&
		(c.spill == nil || len(c.spill[d]) == 0)
}

// move relays direction d of c, whose index is idx, until it would block:
// bytes from side d through the direction's pipe to side 1-d, then the
// FIN. While side 1-d takes no more, side d is muted (mute). It reports
// false when a socket failed, and c must be reset.
func (l *loop) move(c *conn, idx int32, d int) bool {
	src, dst := d, 1-d
	for {
		if c.inPipe[d] > 0 {
			if c.flags[dst]&fWritable == 0 {
				l.mute(c, idx, src)
				return true // EPOLLOUT on dst resumes
			}
			n, errno := splice(c.pipe[d].r, c.fd[dst], int(c.inPipe[d]))
			if errno == unix.EAGAIN {
				c.flags[dst] &^= fWritable
				l.mute(c, idx, src)
				return true
			}
			if errno != 0 {
				return false
			}
			c.inPipe[d] -= uint32(n)
			l.count(c, d, n)
			continue
		}
		if c.spill != nil && len(c.spill[d]) > 0 {
			if c.flags[dst]&fWritable == 0 {
				l.mute(c, idx, src)
				return true
			}
			n, err := unix.Write(int(c.fd[dst]), c.spill[d])
			if err == unix.EAGAIN {
				c.flags[dst] &^= fWritable
				l.mute(c, idx, src)
				return true
			}
			if err != nil {
				return false
			}
			c.spill[d] = c.spill[d][n:]
			if d == sideClient && c.hdrLeft > 0 { // header bytes are not the client's
				h := min(n, int(c.hdrLeft))
				c.hdrLeft -= uint8(h)
				n -= h
			}
			l.count(c, d, n)
			continue
		}
		if c.flags[src]&fMuted != 0 && !l.unmute(c, idx, src) {
			return false
		}
		if c.flags[src]&fEOF != 0 {
			l.putPipe(c, d)
			if c.flags[dst]&fShut == 0 {
				c.flags[dst] |= fShut
				// When the other direction is over too, the close to
				// come sends this FIN.
				if !c.ended(dst) {
					if shutWrite(c.fd[dst]) != 0 {
						return false
					}
				}
			}
			return true
		}
		if c.flags[src]&fReadable == 0 {
			l.putPipe(c, d)
			return true
		}
		if c.pipe[d].slots == 0 && c.flags[src]&fBulk == 0 && c.flags[dst]&fWritable != 0 {
			if !l.copySmall(c, d) {
				return false
			}
			continue
		}
		if c.pipe[d].slots == 0 {
			pp, ok := l.getPipe()
			if !ok {
				if !l.copyOnce(c, d) {
					return false
				}
				continue
			}
			c.pipe[d] = pp
		}
		n, errno := splice(c.fd[src], c.pipe[d].w, spliceChunk)
		switch {
		case errno == unix.EAGAIN:
			c.flags[src] &^= fReadable
		case errno != 0:
			return false
		case n == 0:
			c.flags[src] |= fEOF
		default:
			c.inPipe[d] = uint32(n)
			if n < smallRead {
				c.flags[src] &^= fBulk
			}
			// A non-blocking splice from a TCP socket into an empty pipe
			// stops when the receive queue is empty or the pipe is full,
			// and every pipe buffer holds at least a byte: fewer bytes
			// than buffers means the queue was empty. Bytes or a FIN that
			// come later are a new edge; a FIN already seen is read to
			// the end.
			if n < int(c.pipe[d].slots) && c.flags[src]&fHup == 0 {
				c.flags[src] &^= fReadable
			}
		}
	}
}

// mute takes EPOLLIN out of the registration of c's side (idx is c's
// index) while the bytes already read from it wait for the other side to
// take them: each segment that arrives meanwhile would wake the loop for
// nothing (in a bulk transfer toward a slower reader, 19 wake-ups of every
// 20). EPOLLOUT, EPOLLRDHUP and the errors stay. A side whose FIN is
// queued brings no more segments and is left alone. unmute undoes it.
func (l *loop) mute(c *conn, idx int32, side int) {
	if c.flags[side]&(fMuted|fEOF|fHup) != 0 {
		return
	}
	if l.register(c, idx, side, unix.EPOLL_CTL_MOD, connEvents&^unix.EPOLLIN) == 0 {
		c.flags[side] |= fMuted
	}
}

// unmute puts EPOLLIN back into the registration of c's side, muted when
// its direction stalled, and takes the side as readable: what arrived
// while it was muted raised no event. It reports false when the socket
// failed.
func (l *loop) unmute(c *conn, idx int32, side int) bool {
	c.flags[side] = c.flags[side]&^fMuted | fReadable
	return l.register(c, idx, side, unix.EPOLL_CTL_MOD, connEvents) == 0
}

// register adds (op EPOLL_CTL_ADD) or changes (EPOLL_CTL_MOD) the
// registration of c's side in the loop's epoll set, for events, tagged
// with c's index idx, generation and the side.
func (l *loop) register(c *conn, idx int32, side int, op int, events uint32) unix.Errno {
	tag := int32(c.gen&(1<<30-1)) << 2
	ev := unix.EpollEvent{Events: events, Fd: idx, Pad: tag | int32(side)}
	_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(l.epfd), uintptr(op), uintptr(c.fd[side]), uintptr(unsafe.Pointer(&ev)), 0, 0)
	return errno
}

// count adds n bytes relayed in direction d of c.
func (l *loop) count(c *conn, d, n int) {
	c.bytes[d] += uint64(n)
	if cs := c.pt.counters; d == sideClient {
		cs.BytesUp.Add(uint64(n))
	} else {
		cs.BytesDown.Add(uint64(n))
	}
}

// copySmall moves what one read of up to smallRead bytes from side d
// returns to side 1-d, through the loop's buffer: for small messages a read
// and a write cost less than two splices through a pipe. A read that fills
// smallRead marks a bulk transfer, which splices from then on. What the
// other side does not take at once goes into a pipe from the pool (or
// c.spill when none can be had), and move splices it on from there. It
// reports false when a socket failed.
func (l *loop) copySmall(c *conn, d int) bool {
	src, dst := d, 1-d
	n, errno := rawRW(unix.SYS_READ, c.fd[src], l.buf[:smallRead])
	switch {
	case errno == unix.EAGAIN:
		c.flags[src] &^= fReadable
		return true
	case errno != 0:
		return false
	case n == 0:
		c.flags[src] |= fEOF
		return true
	case n == smallRead:
		c.flags[src] |= fBulk
	case c.flags[src]&fHup == 0:
		// A short read from a TCP socket means its queue was empty.
		c.flags[src] &^= fReadable
	}
	w, errno := rawRW(unix.SYS_WRITE, c.fd[dst], l.buf[:n])
	switch errno {
	case 0:
		l.count(c, d, w)
	case unix.EAGAIN:
		w = 0
		c.flags[dst] &^= fWritable
	default:
		return false
	}
	if w == n {
		return true
	}
	if pp, ok := l.getPipe(); ok {
		// An empty pipe takes smallRead bytes in one write.
		k, errno := rawRW(unix.SYS_WRITE, pp.w, l.buf[w:n])
		if errno != 0 || k != n-w {
			closePipe(pp)
			return false
		}
		c.pipe[d], c.inPipe[d] = pp, uint32(k)
		return true
	}
	if c.spill == nil {
		c.spill = new([2][]byte)
	}
	c.spill[d] = append(c.spill[d][:0], l.buf[w:n]...)
	return true
}

// rawRW reads (trap SYS_READ) or writes (SYS_WRITE) the non-blocking
// descriptor fd without entering the scheduler's system call state: the
// call cannot block.
func rawRW(trap uintptr, fd int32, b []byte) (int, unix.Errno) {
	for {
		r, _, errno := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno != unix.EINTR {
			return int(r), errno
		}
	}
}

// copyOnce moves one read's worth of direction d through the loop's buffer,
// for when no pipe can be had (EMFILE): what the other side does not take
// at once waits in c.spill. It reports false when a socket failed.
func (l *loop) copyOnce(c *conn, d int) bool {
	src, dst := d, 1-d
	n, err := unix.Read(int(c.fd[src]), l.buf)
	switch {
	case err == unix.EAGAIN:
		c.flags[src] &^= fReadable
		return true
	case err != nil:
		return false
	case n == 0:
		c.flags[src] |= fEOF
		return true
	}
	// A short read from a TCP socket means its queue was empty.
	if n < len(l.buf) && c.flags[src]&fHup == 0 {
		c.flags[src] &^= fReadable
	}
	w := 0
	if c.flags[dst]&fWritable != 0 {
		w, err = unix.Write(int(c.fd[dst]), l.buf[:n])
		if err == unix.EAGAIN {
			w = 0
			c.flags[dst] &^= fWritable
		} else if err != nil {
			return false
		}
		l.count(c, d, w)
	}
	if w < n {
		if c.spill == nil {
			c.spill = new([2][]byte)
		}
		c.spill[d] = append(c.spill[d][:0], l.buf[w:n]...)
	}
	return true
}

// splice moves up to n bytes from in to out without blocking, so without
// entering the scheduler's system call state.
func splice(in, out int32, n int) (int, unix.Errno) {
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if errno != unix.EINTR {
			return int(r), errno
		}
	}
}

// getPipe returns an empty pipe from the pool, or a new one.
func (l *loop) getPipe() (pipePair, bool) {
	if k := len(l.pipes); k > 0 {
		pp := l.pipes[k-1]
		l.pipes = l.pipes[:k-1]
		return pp, true
	}
	var fds [2]int
	if err := pipe2(fds[:]); err != nil {
		return pipePair{}, false
	}
	// Best effort: a bigger pipe moves a bulk transfer in fewer calls.
	size, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	if err != nil {
		size = 16 * os.Getpagesize() // Linux's default
	}
	return pipePair{r: int32(fds[0]), w: int32(fds[1]), slots: int32(size / os.Getpagesize())}, true
}

// pipe2 makes a non-blocking pipe; tests replace it to make it fail.
var pipe2 = func(fds []int) error { return unix.Pipe2(fds, unix.O_NONBLOCK|unix.O_CLOEXEC) }

// putPipe returns direction d's pipe, which must be empty, to the pool.
func (l *loop) putPipe(c *conn, d int) {
	pp := c.pipe[d]
	if pp.slots == 0 {
		return
	}
	c.pipe[d] = pipePair{}
	if len(l.pipes) < maxPipes {
		l.pipes = append(l.pipes, pp)
		return
	}
	closePipe(pp)
}

func closePipe(pp pipePair) {
	unix.Close(int(pp.r))
	unix.Close(int(pp.w))
}

// dropPipes releases c's pipes when c closes: empty ones to the pool, ones
// with bytes still in them closed.
func (l *loop) dropPipes(c *conn) {
	for d := range 2 {
		if c.inPipe[d] == 0 {
			l.putPipe(c, d)
		} else if c.pipe[d].slots != 0 {
			closePipe(c.pipe[d])
			c.pipe[d] = pipePair{}
		}
	}
}

// finish closes c after both directions ended cleanly. Closing the sockets
// takes them out of the epoll set.
func (l *loop) finish(c *conn, idx int32) {
	l.logClosed(c, "close")
	l.dropPipes(c)
	closeFD(c.fd[sideClient])
	closeFD(c.fd[sideBackend])
	l.release(c, idx)
}

// reset closes both sockets of c with SO_LINGER 0, so that the kernel sends
// RST instead of FIN and drops anything still queued.
// logged says whether to log the end at Debug: not for a failed dial, which
// has its own line.
func (l *loop) reset(c *conn, idx int32, logged bool) {
	c.pt.counters.Resets.Add(1)
	if logged {
		l.logClosed(c, "reset")
	}
	l.dropPipes(c)
	for _, fd := range c.fd {
		if fd >= 0 {
			resetFD(int(fd))
		}
	}
	l.release(c, idx)
}

var lingerNow = unix.Linger{Onoff: 1, Linger: 0}

func resetFD(fd int) {
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&lingerNow)), unsafe.Sizeof(lingerNow), 0)
	closeFD(int32(fd))
}

// sweepRemoved resets the connections of the mappings Remove took away,
// then tells the Remove calls waiting for it.
func (l *loop) sweepRemoved() {
	waiting := l.takeSweeps(false)
	for k, ch := range l.chunks {
		for i := range ch {
			if c := &ch[i]; c.fd[sideClient] >= 0 && c.pt.removed.Load() {
				l.reset(c, int32(k*chunkConns+i), true)
			}
		}
	}
	for _, wg := range waiting {
		wg.Done()
	}
}

// end runs when the loop has ended, its connections reset or none left: a
// Remove waiting for it has nothing more to wait for.
func (l *loop) end() {
	for _, wg := range l.takeSweeps(true) {
		wg.Done()
	}
}

// takeSweeps takes, with Proxy.mu held, the Remove calls waiting for this
// loop and clears the request; ended also marks the loop ended, so that
// no Remove waits for it from then on.
func (l *loop) takeSweeps(ended bool) []*sync.WaitGroup {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	l.ended = l.ended || ended
	waiting := l.sweeps
	l.sweeps = nil
	l.sweep.Store(false)
	return waiting
}

// resetAll resets every connection of the loop; Close calls for it.
func (l *loop) resetAll() {
	for k, ch := range l.chunks {
		for i := range ch {
			if c := &ch[i]; c.fd[sideClient] >= 0 {
				l.reset(c, int32(k*chunkConns+i), true)
			}
		}
	}
}

// logClosed logs the end of c at Debug.
func (l *loop) logClosed(c *conn, end string) {
	p := l.p
	if !p.log.Enabled(zapcore.DebugLevel) {
		return
	}
	p.logFor(c.pt).Debug("connection closed",
		clientField(int(c.fd[sideClient])),
		logging.Uint64("bytes_up", c.bytes[sideClient]), logging.Uint64("bytes_down", c.bytes[sideBackend]),
		logging.String("end", end))
}

// clientField is the client's address for a log line, read from its
// socket fd, or "disconnected" once the client has gone (getpeername fails
// on a reset socket).
func clientField(fd int) zapcore.Field {
	if ap := peerOf(fd); ap.IsValid() {
		return logging.AddrPort("client", ap)
	}
	return logging.String("client", "disconnected")
}

// peerOf returns the address of fd's peer, or the zero AddrPort.
func peerOf(fd int) netip.AddrPort { return sockName(unix.SYS_GETPEERNAME, fd) }

// sockName returns the address of fd's peer (trap SYS_GETPEERNAME) or its
// own (SYS_GETSOCKNAME), or the zero AddrPort.
func sockName(trap uintptr, fd int) netip.AddrPort {
	var buf [unix.SizeofSockaddrInet6]byte
	n := uint32(len(buf))
	if _, _, errno := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&buf)), uintptr(unsafe.Pointer(&n))); errno != 0 {
		return netip.AddrPort{}
	}
	ap, _, _ := sockopt.ParseSockaddr(buf[:min(n, uint32(len(buf)))])
	return ap
}

// dialFailed resets the client of c, whose backend could not be reached,
// and logs why. A dial error of class Retry or AddrExhausted
// (proxy.ClassifyDial: no descriptor, no free source port toward the
// backend) also pauses accepting in this loop for a growing delay (5ms to
// 1s), so that the connections that come meanwhile wait in the kernel's
// queue instead of being accepted and reset in a tight loop: the kernel's
// search for a free port is what costs, and retrying at once would spin.
func (l *loop) dialFailed(c *conn, idx int32, err error) {
	p := l.p
	pt := c.pt
	pt.counters.DialErrors.Add(1)
	class := proxy.ClassifyDial(err)
	if !p.closing.Load() {
		l.logDialFailure(c, pt, class, err)
	}
	l.reset(c, idx, false)
	if class != proxy.PerConnection {
		l.pause(l.dialOff.Next())
	}
}

// logDialFailure logs a failed dial of c (Proxy.logDialFailure); the fields
// are built only when a line is written.
func (l *loop) logDialFailure(c *conn, pt *port, class proxy.ErrorClass, err error) {
	p := l.p
	rl, msg := p.dialFailureLog(pt, class)
	ok, held := rl.Allow(time.Now())
	if !ok && !p.log.Enabled(zapcore.DebugLevel) {
		return
	}
	took := time.Duration(0)
	if c.wait == waitDial {
		took = time.Duration(l.now() - (c.deadline - int64(p.dialTimeout)))
	}
	p.logDialFailure(pt, class, msg, ok, held, clientField(int(c.fd[sideClient])), err, took)
}

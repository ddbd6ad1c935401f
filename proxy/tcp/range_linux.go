package tcp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller is an epoll set of a range's listening sockets, level-triggered
// for EPOLLIN, each tagged with its index in Proxy.ports. The epoll
// descriptor itself sits in Go's netpoller (it is readable while any socket
// in it is), so the accept loop that waits for it parks a goroutine, not a
// thread.
type poller struct {
	f  *os.File
	rc syscall.RawConn

	// The state of one wait, kept here so that waiting allocates nothing:
	// a closure passed to RawConn.Read would escape, with what it captures.
	events []unix.EpollEvent
	n      int
	err    error
	tryFn  func(fd uintptr) bool // pl.try, bound once
}

func newPoller(ports []port) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for i := range ports {
		if err := addToEpoll(epfd, &ports[i], i); err != nil {
			unix.Close(epfd)
			return nil, err
		}
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll: set non-blocking: %w", err)
	}
	// A non-blocking descriptor goes into Go's netpoller.
	f := os.NewFile(uintptr(epfd), "tcp accept epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	pl := &poller{f: f, rc: rc, events: make([]unix.EpollEvent, 64)}
	pl.tryFn = pl.try
	return pl, nil
}

func addToEpoll(epfd int, pt *port, i int) error {
	rc, err := pt.ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("epoll add %s: %w", pt.ln.Addr(), err)
	}
	var addErr error
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
	if err := rc.Control(func(fd uintptr) { addErr = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil {
		return fmt.Errorf("epoll add %s: %w", pt.ln.Addr(), err)
	}
	if addErr != nil {
		return fmt.Errorf("epoll add %s: %w", pt.ln.Addr(), addErr)
	}
	return nil
}

// wait returns the sockets that have connections waiting, parking until
// there is at least one. It fails once close has been called. The result is
// valid until the next wait.
//
// RawConn.Read clears the descriptor's readiness, runs try, and parks only
// when try returns false; a connection that arrives after try's epoll_wait
// makes the epoll descriptor readable again, which wakes the park. The
// sockets are level-triggered, so one that still has connections after the
// loop took one is reported again at the next wait.
func (pl *poller) wait() ([]unix.EpollEvent, error) {
	if err := pl.rc.Read(pl.tryFn); err != nil {
		return nil, err
	}
	if pl.err != nil {
		return nil, fmt.Errorf("epoll_wait: %w", pl.err)
	}
	return pl.events[:pl.n], nil
}

// try is an epoll_wait that does not block; it reports whether wait is done.
func (pl *poller) try(fd uintptr) bool {
	for {
		pl.n, pl.err = unix.EpollWait(int(fd), pl.events, 0)
		if pl.err != unix.EINTR {
			return pl.err != nil || pl.n > 0
		}
	}
}

// close closes the epoll descriptor, which ends a wait in progress.
func (pl *poller) close() { pl.f.Close() }

// readyGrace bounds how long accepting on a socket that epoll reported ready
// may wait. Go's accept calls accept(2) before it waits, and only the
// proxy takes connections from the socket, so it never waits in practice;
// the bound is for a socket shared with another process that took the
// connection in between.
const readyGrace = 5 * time.Millisecond

// acceptRange accepts on every socket of a range with this one goroutine,
// one connection per ready socket per round, until the proxy stops. Failures
// are handled as in acceptLoop, per socket.
func (p *Proxy) acceptRange() error {
	var st *acceptFailures // allocated at the first failure
	for {
		events, err := p.poll.wait()
		if err != nil {
			if p.isStopping() {
				return nil
			}
			return fmt.Errorf("accept tcp on %s and %d more: %w", p.Addr(), len(p.ports)-1, err)
		}
		for _, ev := range events {
			pt := &p.ports[ev.Fd]
			c, err := acceptReady(pt)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // someone else took it
			}
			if err != nil {
				if st == nil {
					st = new(acceptFailures)
				}
				if stop, err := p.acceptFailed(pt, st, err); stop {
					return err
				}
				break // the other events are stale after a back-off: wait again
			}
			if st != nil {
				p.acceptedAgain(pt, st)
				st = nil
			}
			p.start(pt, c)
		}
	}
}

// acceptReady accepts one connection on pt, which epoll reported ready.
func acceptReady(pt *port) (*net.TCPConn, error) {
	pt.ln.SetDeadline(time.Now().Add(readyGrace))
	c, err := pt.ln.AcceptTCP()
	pt.ln.SetDeadline(time.Time{})
	return c, err
}

package tcp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// openPort returns the port of m. In a range (inRange) the socket is
// duplicated as a bare non-blocking descriptor that only the range's epoll
// set watches (see port.ln); a single socket becomes a net.TCPListener.
func openPort(m Mapping, inRange bool) (port, error) {
	if !inRange {
		ln, err := fileListener(m.File)
		if err != nil {
			return port{}, err
		}
		return newPort(ln, m.Backend), nil
	}
	info, err := inspectListener(m.File)
	if err != nil {
		return port{}, err
	}
	fd, err := dupNonblock(m.File)
	if err != nil {
		return port{}, fmt.Errorf("tcp proxy on %s: %w", m.File.Name(), err)
	}
	pt := port{fd: fd, listen: info.Local}
	pt.setBackend(m.Backend)
	return pt, nil
}

// dupNonblock returns a non-blocking, close-on-exec duplicate of f's
// descriptor. O_NONBLOCK belongs to the open socket, so f's own descriptor
// becomes non-blocking too; the caller only closes it.
func dupNonblock(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var opErr error
	err = rc.Control(func(s uintptr) {
		if fd, opErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0); opErr != nil {
			fd, opErr = -1, os.NewSyscallError("dup", opErr)
			return
		}
		if opErr = unix.SetNonblock(fd, true); opErr != nil {
			unix.Close(fd)
			fd, opErr = -1, os.NewSyscallError("fcntl", opErr)
		}
	})
	if err != nil {
		return -1, err
	}
	return fd, opErr
}

// close closes pt's socket, for a proxy that could not be built.
func (pt *port) close() {
	if pt.ln != nil {
		pt.ln.Close()
	} else if pt.fd >= 0 {
		unix.Close(pt.fd)
		pt.fd = -1
	}
}

// poller is a range's epoll set of its listening sockets, level-triggered
// for EPOLLIN, each tagged with its index in Proxy.ports. It owns the
// sockets' descriptors. The epoll descriptor itself sits in Go's netpoller
// (it is readable while any socket in it is), so the accept loop that waits
// for it parks a goroutine, not a thread.
type poller struct {
	f  *os.File
	rc syscall.RawConn

	// mu orders closing the sockets after an accept in progress: accept
	// holds it across one accept4, which does not block, and close while it
	// shuts the sockets down and closes them. No accept can then run on a
	// descriptor number that was closed and reused.
	mu     sync.Mutex
	closed bool

	// The state of one wait, kept here so that waiting allocates nothing:
	// a closure passed to RawConn.Read would escape, with what it captures.
	events []unix.EpollEvent
	n      int
	err    error
	tryFn  func(fd uintptr) bool // pl.try, bound once
}

// newPoller returns the epoll set of ports and takes their sockets.
func newPoller(ports []port) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for i := range ports {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, ports[i].fd, &ev); err != nil {
			unix.Close(epfd)
			return nil, fmt.Errorf("epoll add %s: %w", ports[i].listen, err)
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

// errNoneWaiting is accept's answer when the connection epoll reported was
// taken meanwhile by another holder of the socket.
var errNoneWaiting = errors.New("no connection waiting")

// accept takes one connection waiting on pt, without blocking.
func (pl *poller) accept(pt *port) (*net.TCPConn, error) {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return nil, net.ErrClosed
	}
	nfd, err := accept4(pt.fd)
	pl.mu.Unlock()
	if err == unix.EAGAIN {
		return nil, errNoneWaiting
	}
	if err != nil {
		return nil, os.NewSyscallError("accept4", err)
	}
	return adopt(nfd)
}

// accept4 accepts on the listening socket fd. The connection's descriptor
// is close-on-exec and blocking (adopt makes its own non-blocking), and no
// peer address is asked for, so nothing is allocated.
func accept4(fd int) (int, error) {
	for {
		nfd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
		switch errno {
		case 0:
			return int(nfd), nil
		case unix.EINTR, unix.ECONNABORTED:
			continue // as Go's accept does: the next one may be fine
		}
		return -1, errno
	}
}

// adopt turns the accepted descriptor nfd into a *net.TCPConn with the
// options Go's own accept gives (TCP_NODELAY, keepalive after 15s). Go can
// only adopt a descriptor by duplicating it (net.FileConn), so nfd itself
// is closed; a blocking nfd is not registered with the netpoller first. On
// failure (EMFILE for the duplicate) the connection is closed.
func adopt(nfd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(nfd), "accepted tcp connection")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("accepted a %T, not a TCP connection", c)
	}
	return tc, nil
}

// close stops the sockets from listening (shutdown(2): their queued
// connections are reset, whoever else holds a descriptor for them), closes
// them, and closes the epoll set, which ends a wait in progress.
func (pl *poller) close(ports []port) error {
	var errs []error
	pl.mu.Lock()
	if !pl.closed {
		pl.closed = true
		for i := range ports {
			pt := &ports[i]
			unix.Shutdown(pt.fd, unix.SHUT_RD)
			if err := unix.Close(pt.fd); err != nil {
				errs = append(errs, fmt.Errorf("close tcp listener %s: %w", pt.listen, err))
			}
			pt.fd = -1
		}
	}
	pl.mu.Unlock()
	if err := pl.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		errs = append(errs, fmt.Errorf("close epoll: %w", err))
	}
	return errors.Join(errs...)
}

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
			c, err := p.poll.accept(pt)
			if err == errNoneWaiting {
				continue
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

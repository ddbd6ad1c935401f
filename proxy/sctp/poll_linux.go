package sctp

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is a Range's epoll set of its listening sockets, level-triggered
// for EPOLLIN, each tagged with its slot in Range.slots. The epoll
// descriptor itself sits in Go's netpoller (it is readable while any socket
// in it is), so the accept loop parks a goroutine, not a thread, and the
// listening sockets stay bare descriptors that only this set watches.
type poller struct {
	f     *os.File
	rc    syscall.RawConn
	epfd  int
	ev    []unix.EpollEvent
	n     int
	err   error
	tryFn func(fd uintptr) bool // try, bound once: waiting allocates nothing
}

// pollEvents is the most ready sockets one wait returns. The sockets are
// level-triggered, so more ready ones are reported at the next wait; a
// small array keeps a Proxy of one socket small.
const pollEvents = 8

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll: set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "sctp accept epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	pl := &poller{f: f, rc: rc, epfd: epfd, ev: make([]unix.EpollEvent, pollEvents)}
	pl.tryFn = pl.try
	return pl, nil
}

// add watches the listening socket fd under token tok.
func (pl *poller) add(fd int, tok int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: tok}
	if err := unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// del stops watching fd; closing fd would do it too, unless another
// descriptor of the socket is still open.
func (pl *poller) del(fd int) {
	unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// wait parks until at least one socket has an association waiting and
// returns the tokens' events, valid until the next wait. It fails once the
// poller is closed. A socket that still has associations after one was
// taken is reported again (level-triggered).
func (pl *poller) wait() ([]unix.EpollEvent, error) {
	if err := pl.rc.Read(pl.tryFn); err != nil {
		return nil, err
	}
	if pl.err != nil {
		return nil, fmt.Errorf("epoll_wait: %w", pl.err)
	}
	return pl.ev[:pl.n], nil
}

// try is an epoll_wait that does not block; it reports whether wait is done.
func (pl *poller) try(fd uintptr) bool {
	for {
		pl.n, pl.err = unix.EpollWait(int(fd), pl.ev, 0)
		if pl.err != unix.EINTR {
			return pl.err != nil || pl.n > 0
		}
	}
}

// close closes the epoll set, which ends a wait in progress.
func (pl *poller) close() { pl.f.Close() }

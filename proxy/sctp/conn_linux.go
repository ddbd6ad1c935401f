package sctp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hostproxy/hostproxy/sockopt"
	"golang.org/x/sys/unix"
)

// msgNotification is MSG_NOTIFICATION from <linux/sctp.h>: the message
// recvmsg returned is an SCTP notification, not data.
const msgNotification = 0x8000

// Conn is one SCTP association on a one-to-one (SOCK_STREAM) socket, read and
// written a message at a time. One goroutine may read while another writes;
// neither ReadMsg nor WriteMsg may be called concurrently with itself. Reading
// and writing allocate nothing.
type Conn struct {
	f      *os.File
	rc     syscall.RawConn
	local  netip.AddrPort
	remote netip.AddrPort
	closed atomic.Bool

	r msgOp // used by ReadMsg only
	w msgOp // used by WriteMsg only
}

// msgOp is one recvmsg or sendmsg call prepared in advance, so that the
// closure handed to RawConn and the msghdr are allocated once per Conn.
type msgOp struct {
	hdr   unix.Msghdr
	iov   unix.Iovec
	oob   []byte
	flags int // MSG_* flags passed to the call
	n     int
	err   error
	fn    func(fd uintptr) bool
}

func (m *msgOp) prepare(b []byte, oobn int) {
	m.iov.Base = nil
	if len(b) > 0 {
		m.iov.Base = &b[0]
	}
	m.iov.SetLen(len(b))
	m.hdr.Iov = &m.iov
	m.hdr.SetIovlen(1)
	m.hdr.Control = nil
	if oobn > 0 {
		m.hdr.Control = &m.oob[0]
	}
	m.hdr.SetControllen(oobn)
	m.hdr.Flags = 0
}

func newMsgOp() msgOp {
	return msgOp{oob: make([]byte, sockopt.SCTPSndRcvSpace)}
}

// syscallFn returns the closure RawConn runs: it calls trap (recvmsg or
// sendmsg) once per readiness, retrying EINTR.
func (m *msgOp) syscallFn(trap uintptr) func(fd uintptr) bool {
	return func(fd uintptr) bool {
		for {
			r, _, errno := unix.Syscall(trap, fd, uintptr(unsafe.Pointer(&m.hdr)), uintptr(m.flags))
			switch errno {
			case 0:
				m.n, m.err = int(r), nil
				return true
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			default:
				m.n, m.err = 0, errno
				return true
			}
		}
	}
}

// newConn wraps fd, a non-blocking close-on-exec SCTP socket, in a Conn.
func newConn(fd int, local, remote netip.AddrPort) (*Conn, error) {
	f := os.NewFile(uintptr(fd), "sctp:"+local.String()+"->"+remote.String())
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sctp %s: %w", remote, err)
	}
	c := &Conn{f: f, rc: rc, local: local, remote: remote}
	c.r = newMsgOp()
	c.r.fn = c.r.syscallFn(unix.SYS_RECVMSG)
	c.w = newMsgOp()
	c.w.flags = unix.MSG_NOSIGNAL
	c.w.fn = c.w.syscallFn(unix.SYS_SENDMSG)
	return c, nil
}

// LocalAddr returns the local address of the association's socket.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// RemoteAddr returns the peer's (primary) address.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// ReadMsg reads the next message, or the next piece of a message larger than
// b, into b and returns its length and SCTP information. eor reports that the
// message is complete. When the association ends gracefully (a SHUTDOWN from
// either side) it returns io.EOF; when it is aborted or lost, an error. Other
// notifications are skipped; b should have room for them (64 bytes).
func (c *Conn) ReadMsg(b []byte) (n int, info Info, eor bool, err error) {
	for {
		m := &c.r
		m.prepare(b, len(m.oob))
		if err := c.rc.Read(m.fn); err != nil {
			return 0, info, false, fmt.Errorf("recvmsg sctp %s: %w", c.remote, c.closedErr(err))
		}
		if m.err != nil {
			return 0, info, false, fmt.Errorf("recvmsg sctp %s: %w", c.remote, m.err)
		}
		if m.hdr.Flags&msgNotification != 0 {
			if err := assocEnded(b[:m.n]); err != nil {
				if !errors.Is(err, io.EOF) {
					err = fmt.Errorf("recvmsg sctp %s: %w", c.remote, err)
				}
				return 0, info, false, err
			}
			continue
		}
		if m.n == 0 && m.hdr.Flags&unix.MSG_EOR == 0 {
			return 0, info, false, io.EOF
		}
		si, _, perr := sockopt.ParseSCTPSndRcv(m.oob[:m.hdr.Controllen])
		if perr != nil {
			return 0, info, false, fmt.Errorf("recvmsg sctp %s: %w", c.remote, perr)
		}
		info = Info{Stream: si.Stream, PPID: si.PPID, Unordered: si.Flags&sockopt.SCTPUnordered != 0}
		return m.n, info, m.hdr.Flags&unix.MSG_EOR != 0, nil
	}
}

// assocEnded interprets a notification: io.EOF when it reports that a
// graceful shutdown completed, ECONNRESET when the association was lost, nil
// for anything else. The initiator of a SHUTDOWN learns that the association
// is gone only from SCTP_SHUTDOWN_COMP: the socket never becomes readable
// otherwise.
func assocEnded(b []byte) error {
	ch, err := sockopt.ParseSCTPAssocChange(b)
	if err != nil {
		return nil
	}
	switch ch.State {
	case sockopt.SCTPShutdownComp:
		return io.EOF
	case sockopt.SCTPCommLost, sockopt.SCTPCantStartAssoc:
		return fmt.Errorf("association lost (cause %d): %w", ch.Error, unix.ECONNRESET)
	}
	return nil
}

// WriteMsg sends b as one message with the stream id, PPID and ordering of
// info. The stream must be one the peer granted.
func (c *Conn) WriteMsg(b []byte, info Info) (int, error) {
	m := &c.w
	si := sockopt.SCTPSndRcvInfo{Stream: info.Stream, PPID: info.PPID}
	if info.Unordered {
		si.Flags = sockopt.SCTPUnordered
	}
	m.oob = sockopt.AppendSCTPSndRcv(m.oob[:0], si)
	m.prepare(b, len(m.oob))
	if err := c.rc.Write(m.fn); err != nil {
		return 0, fmt.Errorf("sendmsg sctp %s: %w", c.remote, c.closedErr(err))
	}
	if m.err != nil {
		return 0, fmt.Errorf("sendmsg sctp %s stream %d: %w", c.remote, info.Stream, m.err)
	}
	return m.n, nil
}

// SetDeadline sets the read and write deadlines, as net.Conn does.
func (c *Conn) SetDeadline(t time.Time) error { return c.f.SetDeadline(t) }

// SetReadDeadline sets the deadline of ReadMsg.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of WriteMsg.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// CloseWrite starts a graceful SHUTDOWN: the peer reads EOF once it has read
// everything sent before. SCTP has no half-close, so the peer can send no new
// messages either.
func (c *Conn) CloseWrite() error {
	return c.control("shutdown", func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

// closedErr returns net.ErrClosed for err when the Conn was closed: os.File
// reports a closed descriptor with an unexported error.
func (c *Conn) closedErr(err error) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return err
}

// Close closes the socket; data still queued is delivered and the association
// ends with a graceful SHUTDOWN. Close is safe to call more than once. After
// Close, ReadMsg and WriteMsg return an error wrapping net.ErrClosed.
func (c *Conn) Close() error {
	c.closed.Store(true)
	if err := c.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close sctp %s: %w", c.remote, err)
	}
	return nil
}

// Abort closes the socket at once, sending an ABORT to the peer.
func (c *Conn) Abort() error {
	_ = c.control("SO_LINGER", func(fd int) error {
		return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	})
	return c.Close()
}

func (c *Conn) control(what string, fn func(fd int) error) error {
	var opErr error
	if err := c.rc.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("%s sctp %s: %w", what, c.remote, err)
	}
	if opErr != nil {
		return fmt.Errorf("%s sctp %s: %w", what, c.remote, opErr)
	}
	return nil
}

// Dial sets up an association with addr. The socket asks for
// sockopt.MaxSCTPStreams streams. Dial gives up when ctx is done.
func Dial(ctx context.Context, addr netip.AddrPort) (*Conn, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.Addr().IsValid() || addr.Port() == 0 {
		return nil, fmt.Errorf("dial %s/sctp: invalid address", addr)
	}
	family := unix.AF_INET
	if addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
			err = fmt.Errorf("%w: %w", sockopt.ErrNoSCTP, err)
		}
		return nil, fmt.Errorf("dial %s/sctp: socket: %w", addr, err)
	}
	c, err := newConn(fd, netip.AddrPort{}, addr)
	if err != nil {
		return nil, err
	}
	if err := c.connect(ctx, addr); err != nil {
		c.Abort()
		return nil, fmt.Errorf("dial %s/sctp: %w", addr, err)
	}
	return c, nil
}

// connect starts the association and waits for its SCTP_ASSOC_CHANGE
// notification: SCTP sockets are writable while the handshake is still in
// progress, so a non-blocking connect cannot learn its outcome from POLLOUT.
func (c *Conn) connect(ctx context.Context, addr netip.AddrPort) error {
	if err := sockopt.SetSCTPInitMsg(c.f, sockopt.MaxSCTPStreams); err != nil {
		return err
	}
	if err := sockopt.SubscribeSCTPEvents(c.f, sockopt.SCTPEvents{DataIO: true, Association: true}); err != nil {
		return err
	}
	err := c.control("connect", func(fd int) error { return unix.Connect(fd, sockaddr(addr)) })
	if errors.Is(err, unix.EAGAIN) {
		// Linux reports an SCTP connect that finds no free local port
		// (autobind) as EAGAIN; a non-blocking connect has no other.
		return fmt.Errorf("no free local port: %w (%w)", unix.EADDRNOTAVAIL, err)
	}
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		c.f.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var buf [64]byte
	for {
		m := &c.r
		m.prepare(buf[:], 0)
		if err := c.rc.Read(m.fn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The socket's deadline may fire just before ctx's own timer.
				cerr := ctx.Err()
				if d, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(d) {
					cerr = context.DeadlineExceeded
				}
				if cerr != nil {
					return fmt.Errorf("waiting for the association: %w", cerr)
				}
			}
			return fmt.Errorf("waiting for the association: %w", err)
		}
		if m.err != nil {
			return m.err
		}
		if m.hdr.Flags&msgNotification == 0 {
			return errors.New("data before the association came up")
		}
		ch, err := sockopt.ParseSCTPAssocChange(buf[:m.n])
		if errors.Is(err, sockopt.ErrSCTPNotification) {
			continue // another notification; not subscribed, but harmless
		}
		switch ch.State {
		case sockopt.SCTPCommUp, sockopt.SCTPRestart:
		default:
			// The kernel reports the cause through the socket error first;
			// this is the fallback.
			return fmt.Errorf("association failed (state %d, cause %d): %w", ch.State, ch.Error, unix.ECONNREFUSED)
		}
		break
	}
	c.f.SetReadDeadline(time.Time{})
	if err := c.control("getsockname", func(fd int) error {
		sa, err := unix.Getsockname(fd)
		c.local = addrPort(sa)
		return err
	}); err != nil {
		return err
	}
	return nil
}

// Listener accepts SCTP associations on a listening one-to-one socket.
type Listener struct {
	f      *os.File
	rc     syscall.RawConn
	addr   netip.AddrPort
	closed atomic.Bool
}

// Listen creates an SCTP socket listening on addr (port 0: the kernel
// chooses) with sockopt.Listen.
func Listen(addr netip.AddrPort) (*Listener, error) {
	f, err := sockopt.Listen(sockopt.SCTP, addr, sockopt.Options{})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return FileListener(f)
}

// FileListener returns a Listener on a duplicate of f, which must be a
// listening SCTP socket; the caller may close f afterwards. The duplicate is
// made non-blocking, which (being a property of the shared open file) f sees
// too. The socket gets SCTP_INITMSG asking for the maximum number of streams,
// and the SCTP_SNDRCV and association-change subscriptions.
func FileListener(f *os.File) (*Listener, error) {
	nfd, local, err := openListener(f)
	if err != nil {
		return nil, err
	}
	l := &Listener{f: os.NewFile(uintptr(nfd), "sctp:"+local.String()), addr: local}
	if l.rc, err = l.f.SyscallConn(); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return l, nil
}

// openListener checks that f is a listening one-to-one SCTP socket and
// returns a non-blocking, close-on-exec duplicate of it with SCTP_INITMSG
// and the subscriptions set, and its local address.
func openListener(f *os.File) (int, netip.AddrPort, error) {
	if f == nil {
		return -1, netip.AddrPort{}, errors.New("sctp listener: nil file")
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	if info.Proto != sockopt.SCTP || info.Type != unix.SOCK_STREAM {
		return -1, netip.AddrPort{}, fmt.Errorf("%s: %s is not a one-to-one SCTP socket", f.Name(), info)
	}
	if !info.Listening {
		return -1, netip.AddrPort{}, fmt.Errorf("%s: %s is not listening", f.Name(), info)
	}
	// The options belong to the socket, which the duplicate shares.
	if err := sockopt.SetSCTPInitMsg(f, sockopt.MaxSCTPStreams); err != nil {
		return -1, netip.AddrPort{}, err
	}
	if err := sockopt.SubscribeSCTPEvents(f, sockopt.SCTPEvents{DataIO: true, Association: true}); err != nil {
		return -1, netip.AddrPort{}, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, netip.AddrPort{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	nfd := -1
	var opErr error
	if err := rc.Control(func(fd uintptr) {
		nfd, opErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if opErr == nil {
			if opErr = unix.SetNonblock(nfd, true); opErr != nil {
				unix.Close(nfd)
			}
		}
	}); err != nil {
		return -1, netip.AddrPort{}, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	if opErr != nil {
		return -1, netip.AddrPort{}, fmt.Errorf("dup %s: %w", f.Name(), opErr)
	}
	return nfd, info.Local, nil
}

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Accept waits for the next association. After Close it returns an error
// wrapping net.ErrClosed.
func (l *Listener) Accept() (*Conn, error) {
	var (
		c     *Conn
		opErr error
	)
	err := l.rc.Read(func(fd uintptr) bool {
		c, opErr = acceptConn(int(fd), l.addr)
		return opErr != unix.EAGAIN
	})
	if err != nil && l.closed.Load() {
		err = net.ErrClosed
	}
	if err == nil {
		err = opErr
	}
	if err != nil {
		return nil, fmt.Errorf("accept sctp %s: %w", l.addr, err)
	}
	return c, nil
}

// acceptConn accepts one association on the non-blocking listening socket
// fd bound to laddr. It returns unix.EAGAIN, unwrapped, when none is
// waiting.
func acceptConn(fd int, laddr netip.AddrPort) (*Conn, error) {
	var (
		nfd int
		sa  unix.Sockaddr
		err error
	)
	for {
		nfd, sa, err = unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	remote := addrPort(sa)
	local := laddr
	if lsa, err := unix.Getsockname(nfd); err == nil {
		local = addrPort(lsa)
	}
	c, err := newConn(nfd, local, remote)
	if err != nil {
		return nil, err
	}
	// Accepted sockets inherit SCTP_EVENTS from the listener; set it anyway
	// so that a listener from an engine (fd 4) cannot change the outcome.
	if err := sockopt.SubscribeSCTPEvents(c.f, sockopt.SCTPEvents{DataIO: true, Association: true}); err != nil {
		c.Abort()
		return nil, fmt.Errorf("from %s: %w", remote, err)
	}
	return c, nil
}

// Close stops the listener; a blocked Accept returns.
func (l *Listener) Close() error {
	l.closed.Store(true)
	if err := l.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close sctp listener %s: %w", l.addr, err)
	}
	return nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

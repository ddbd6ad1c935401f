package proxy

import (
	"errors"
	"net"
	"syscall"
)

// ErrorClass says what a stream relay's accept loop or dialer does after a
// failed accept or backend dial. ClassifyAccept and ClassifyDial decide it
// from the errno the error wraps (errors.As; syscall.Errno is unix.Errno),
// never from its text.
type ErrorClass int

const (
	// PerConnection: only this connection failed (a client that reset or
	// gave up before it was accepted, a connection a firewall refused, a
	// backend that refused or did not answer). The next one may succeed:
	// go on at once.
	PerConnection ErrorClass = iota
	// Retry: the process or the host is out of a resource (descriptors,
	// buffers, memory). Trying again at once would spin: back off
	// (Backoff) and retry.
	Retry
	// AddrExhausted: a dial found no free local address and port
	// (EADDRNOTAVAIL), typically when the ephemeral ports toward a busy
	// backend are all held by connections in TIME_WAIT. Back off as for
	// Retry, and tell the operator the remedy once (see AddrExhaustedHint).
	AddrExhausted
	// Fatal: the listening socket itself is unusable or closed. Retrying
	// cannot help; the accept loop ends.
	Fatal
)

// String returns the class's name.
func (c ErrorClass) String() string {
	switch c {
	case PerConnection:
		return "per-connection"
	case Retry:
		return "retry"
	case AddrExhausted:
		return "addresses exhausted"
	case Fatal:
		return "fatal"
	}
	return "unknown"
}

// Errnos by class. Accept(2) documents that the errors of a pending network
// connection (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN,
// EHOSTUNREACH, EOPNOTSUPP for TCP, ENETUNREACH) are returned by accept and
// mean only that this connection is lost.
var (
	fatalAccept = []syscall.Errno{syscall.EBADF, syscall.EINVAL, syscall.ENOTSOCK, syscall.EFAULT}
	resource    = []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM}
)

// ClassifyAccept classifies an error of accept(2) on a listening socket.
// net.ErrClosed and EBADF, EINVAL, ENOTSOCK, EFAULT (the socket is not, or no
// longer, a listening socket) are Fatal; EMFILE, ENFILE, ENOBUFS and ENOMEM
// are Retry; ECONNABORTED, EPERM (a firewall rule), ECONNRESET, EAGAIN and
// the network errors accept reports for a lost pending connection are
// PerConnection. An error it does not know is Retry: an accept loop never
// ends by guessing, and never spins on an error it does not understand.
func ClassifyAccept(err error) ErrorClass {
	if err == nil {
		return PerConnection
	}
	if errors.Is(err, net.ErrClosed) {
		return Fatal
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return Retry
	}
	switch {
	case isOneOf(errno, fatalAccept):
		return Fatal
	case isOneOf(errno, resource):
		return Retry
	}
	switch errno {
	case syscall.ECONNABORTED, syscall.EPERM, syscall.ECONNRESET, syscall.EAGAIN, syscall.EINTR,
		syscall.ENETDOWN, syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EHOSTDOWN,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT:
		return PerConnection
	}
	return Retry
}

// ClassifyDial classifies an error of setting up the backend connection of
// one client. EADDRNOTAVAIL is AddrExhausted; EMFILE, ENFILE, ENOBUFS and
// ENOMEM are Retry; everything else (refused, unreachable, timed out,
// cancelled, reset) is PerConnection: the client is closed and the next one
// dials again. A dial error is never Fatal.
func ClassifyDial(err error) ErrorClass {
	if err == nil {
		return PerConnection
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return PerConnection
	}
	switch {
	case errno == syscall.EADDRNOTAVAIL:
		return AddrExhausted
	case isOneOf(errno, resource):
		return Retry
	}
	return PerConnection
}

// AddrExhaustedHint is the remedy to log with an AddrExhausted dial error of
// protocol proto ("tcp", "sctp"). TCP may reuse a port in TIME_WAIT for a
// new outgoing connection when net.ipv4.tcp_tw_reuse is 1; SCTP has no such
// switch, so for it only a wider range of local ports helps.
func AddrExhaustedHint(proto string) string {
	const wider = "widen net.ipv4.ip_local_port_range"
	if proto == "tcp" {
		return "set net.ipv4.tcp_tw_reuse=1 or " + wider
	}
	return wider + " (net.ipv4.tcp_tw_reuse does not apply to " + proto + ")"
}

func isOneOf(errno syscall.Errno, set []syscall.Errno) bool {
	for _, e := range set {
		if errno == e {
			return true
		}
	}
	return false
}

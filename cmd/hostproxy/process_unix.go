//go:build unix

package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdState is what hostproxy knows of an inherited file descriptor at start.
type fdState struct {
	Open bool // the descriptor exists
	Pipe bool // it is a FIFO (what engines pass as fd 3)
}

// probeFD reports whether fd was inherited open from the parent, and whether
// it is a pipe. A descriptor inherited across exec never has FD_CLOEXEC set,
// while everything the Go runtime opens before main (it keeps the cgroup CPU
// limit files open, for instance, and they take the lowest free numbers) has
// it: so a close-on-exec fd 3 or fd 4 is the runtime's, not the engine's,
// and must not be touched.
func probeFD(fd int) fdState {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC != 0 {
		return fdState{}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fdState{Open: true}
	}
	return fdState{Open: true, Pipe: st.Mode&unix.S_IFMT == unix.S_IFIFO}
}

// closeOnExec marks fd close-on-exec, so that nothing hostproxy might run
// inherits the engine's status pipe or socket.
func closeOnExec(fd int) { syscall.CloseOnExec(fd) }

// Signals hostproxy handles.
var (
	stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	natSignal   = os.Signal(syscall.SIGUSR1) // NAT is in place: detach the filter
	hupSignal   = os.Signal(syscall.SIGHUP)  // logged at info and ignored
)

// ignoreSignals ignores, from the start, the signals whose default action
// would end the process but which must not: SIGPIPE, so that a write to a
// closed pipe (stderr included) returns EPIPE; and SIGHUP, SIGUSR1 and
// SIGUSR2 until run's handlers take them (SIGUSR1 only with -await-nat).
func ignoreSignals() {
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
}

// notSocket reports whether err says a descriptor is not a socket.
func notSocket(err error) bool { return errors.Is(err, syscall.ENOTSOCK) }

// noIPv6 reports whether err from binding ::1 means the host has no IPv6
// loopback (IPv6 disabled or not compiled in).
func noIPv6(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

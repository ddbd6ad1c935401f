package main

import (
	"net/netip"
	"os"
	"syscall"

	"github.com/hostproxy/hostproxy/internal/systemd"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

// serviceManager is what hostproxy takes from systemd at start: the sockets
// of socket activation, which -L mappings use instead of binding, and the
// notification socket, told READY=1 once hostproxy serves and STOPPING=1
// when it starts to stop. Without systemd it holds nothing and does nothing.
type serviceManager struct {
	notifier *systemd.Notifier
	sockets  []activated
	// errs are the problems met before a logger existed, logged by report.
	errs []error
}

// activated is one socket inherited by socket activation.
type activated struct {
	f    *os.File // nil once a mapping took it
	fd   int
	info sockopt.Info
	err  error // what Inspect said, when the descriptor is not a usable socket
}

// takeServiceManager reads (and unsets) the socket activation and
// notification variables. It runs first thing, before anything looks at
// fd 3 or fd 4.
func takeServiceManager() *serviceManager {
	sm := &serviceManager{}
	files, err := systemd.ListenFiles()
	if err != nil {
		sm.errs = append(sm.errs, err)
	}
	for i, f := range files {
		info, err := sockopt.Inspect(f)
		sm.sockets = append(sm.sockets, activated{f: f, fd: systemd.ListenFDsStart + i, info: info, err: err})
	}
	if sm.notifier, err = systemd.NewNotifier(); err != nil {
		sm.errs = append(sm.errs, err)
	}
	return sm
}

// probe is probeFD, except that a socket passed by socket activation is
// neither a status pipe nor an engine's socket: systemd's fds start at 3.
func (sm *serviceManager) probe(fd int) fdState {
	for _, a := range sm.sockets {
		if a.fd == fd {
			return fdState{}
		}
	}
	return probeFD(fd)
}

// report logs what went wrong before the logger existed.
func (sm *serviceManager) report(log *logging.Logger) {
	for _, err := range sm.errs {
		log.Warn("systemd: ignoring the service manager's settings", logging.Err(err))
	}
	sm.errs = nil
}

// listen returns the inherited socket of proto bound to addr (and listening,
// for TCP and SCTP), or binds a new one when none was inherited. Each
// inherited socket serves one mapping.
func (sm *serviceManager) listen(proto sockopt.Proto, addr netip.AddrPort) (*os.File, error) {
	want := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	for i := range sm.sockets {
		a := &sm.sockets[i]
		if a.f != nil && a.err == nil && a.matches(proto, want) {
			f := a.f
			a.f = nil
			return f, nil
		}
	}
	return sockopt.Listen(proto, addr, sockopt.Options{})
}

// matches reports whether the socket is what sockopt.Listen would have made
// for proto on addr: same protocol and socket type, bound to addr, listening
// when proto is a stream protocol.
func (a *activated) matches(proto sockopt.Proto, addr netip.AddrPort) bool {
	if a.info.Proto != proto || a.info.Local != addr {
		return false
	}
	switch proto {
	case sockopt.TCP, sockopt.SCTP:
		return a.info.Type == int(syscall.SOCK_STREAM) && a.info.Listening
	}
	return a.info.Type == int(syscall.SOCK_DGRAM)
}

// closeUnused closes the inherited sockets no mapping took, with a warning
// for each: a .socket unit and the -L flags disagree.
func (sm *serviceManager) closeUnused(log *logging.Logger) {
	for i := range sm.sockets {
		a := &sm.sockets[i]
		if a.f == nil {
			continue
		}
		what := a.info.String()
		if a.err != nil {
			what = "not an IP socket"
		}
		log.Warn("socket activation: no -L mapping matches this inherited socket; closing it",
			logging.Int("fd", a.fd), logging.String("name", a.f.Name()), logging.String("socket", what), logging.Err(a.err))
		a.f.Close()
		a.f = nil
	}
}

// ready tells the service manager that hostproxy serves.
func (sm *serviceManager) ready(log *logging.Logger) {
	sm.notify(log, "READY=1\nSTATUS=serving")
}

// stopping tells the service manager that hostproxy is stopping (draining
// open connections, when -drain-timeout allows). A nil sm does nothing.
func (sm *serviceManager) stopping(log *logging.Logger) {
	if sm == nil {
		return
	}
	sm.notify(log, "STOPPING=1\nSTATUS=stopping")
}

func (sm *serviceManager) notify(log *logging.Logger, state string) {
	if err := sm.notifier.Notify(state); err != nil {
		log.Warn("systemd: notification failed", logging.Err(err))
	}
}

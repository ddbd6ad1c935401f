package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/proxy/tcp"
	"github.com/hostproxy/hostproxy/proxy/udp"
	"github.com/hostproxy/hostproxy/sockopt"
)

// listenFD is the descriptor of the engine's socket with -use-listen-fd.
const listenFD = 4

// run is hostproxy: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// Which of fd 3 and fd 4 did the parent pass (probeFD tells them from
	// what the Go runtime opened itself)? Keep them from leaking into any
	// child. Sockets of systemd's socket activation, which start at fd 3,
	// are neither.
	sm := takeServiceManager()
	fd3, fd4 := sm.probe(statusFD), sm.probe(listenFD)
	if fd3.Open {
		closeOnExec(statusFD)
	}
	if fd4.Open {
		closeOnExec(listenFD)
	}
	ignoreSignals()

	cfg, err := parseArgs(args)
	if err != nil {
		st := newStatus(useStatus(fd3, hasForwardFlag(args)))
		return startFailed(st, stderr, err)
	}
	switch {
	case cfg.Help:
		printUsage(stdout)
		return 0
	case cfg.Version:
		printVersion(stdout)
		return 0
	}
	st := newStatus(useStatus(fd3, cfg.Mode == modeForwarder))

	log, err := newLogger(cfg, stderr)
	if err != nil {
		return startFailed(st, stderr, err)
	}
	defer log.Sync()
	sm.report(log)
	if cfg.Transparent {
		if err := sockopt.CheckTransparent(); err != nil {
			return startFailed(st, stderr, fmt.Errorf("-transparent: %w", err))
		}
	}

	var (
		s     *server
		extra string
	)
	switch cfg.Mode {
	case modeCompat:
		s, err = startCompat(cfg, log, fd4)
	case modeAllocate:
		s, extra, err = startAllocate(cfg, log)
	case modeForwarder:
		s, err = startForwarder(cfg, log, sm)
	}
	if err != nil {
		return startFailed(st, stderr, err)
	}
	sm.closeUnused(log)
	s.sm = sm
	if err := dropPrivileges(cfg, log); err != nil {
		s.closeAll()
		return startFailed(st, stderr, err)
	}
	// The handlers an engine may use the instant it reads "0\n" are in
	// place before any status is written: the stop signals, and SIGUSR1
	// with -await-nat. They are installed only now, after the set-up:
	// os/signal's first Notify starts a goroutine, which wakes a second P
	// (GOMAXPROCS > 1), and any set-up work that then runs there allocates
	// from that P's own heap spans and stack cache, which stay in the
	// private memory of the idle process. A stop signal during the set-up
	// ends the process by the signal's default action, as it does
	// docker-proxy before it is ready.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, stopSignals...)
	if natSignal != nil && cfg.AwaitNAT {
		signal.Notify(sigs, natSignal)
	}
	// Checked once the set-up is done, so as the process that writes it.
	if err := checkMetricsFile(cfg); err != nil {
		s.closeAll()
		return startFailed(st, stderr, err)
	}
	s.stderr = stderr
	s.loopProcs()
	s.serve()
	mw := startMetrics(s, cfg)
	st.ready(extra)
	sm.ready(log)
	// SIGHUP and SIGUSR2, ignored until now, are taken from here on. Each
	// signal os/signal starts to handle costs a round trip to the thread
	// that keeps its signal mask, which is kept off the start-up this way.
	if hupSignal != nil {
		signal.Notify(sigs, hupSignal)
	}
	notifyStats(sigs)
	code := s.wait(sigs)
	mw.stop() // the last counters, after the drain
	return code
}

// startFailed reports err on fd 3 and as one line on stderr.
func startFailed(st *status, stderr io.Writer, err error) int {
	st.fail(err.Error())
	fmt.Fprintf(stderr, "hostproxy: %s\n", oneLine(err.Error()))
	return 1
}

// useStatus reports whether fd 3 is a status pipe to write. The engine modes
// write to fd 3 whenever the parent passed it, as docker-proxy does. The
// forwarder needs no fd 3 and writes to it only when it is a pipe, which is
// what a supervisor waiting for readiness passes; an fd 3 that is a file, a
// socket (systemd socket activation starts at fd 3) or a terminal is left
// alone.
func useStatus(fd3 fdState, forwarder bool) bool {
	return fd3.Open && (!forwarder || fd3.Pipe)
}

// hasForwardFlag reports whether args hold a -L flag, for choosing where a
// parse error goes before the mode is known.
func hasForwardFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == "L" || strings.HasPrefix(a, "L=") {
			return true
		}
	}
	return false
}

// server is the set of running proxies of one process.
type server struct {
	cfg     *config
	log     *logging.Logger
	proxies []proxy.Proxy
	names   []string        // "frontend/proto to backend", per proxy
	protos  []sockopt.Proto // per proxy, for the metrics
	// filtered are the sockets bound with the drop-all filter
	// (-await-nat), held open until SIGUSR1 detaches it.
	filtered []*alloc.Binding
	errc     chan error      // Serve results
	sm       *serviceManager // told when hostproxy stops; nil: nobody

	stderr io.Writer  // for the stats lines (SIGUSR2)
	stats  *collector // made on the first SIGUSR2
}

// add creates the proxy serving the socket f and records it; Serve starts
// later. The proxy has its own descriptor: the caller closes f.
func (s *server) add(f *os.File, proto sockopt.Proto, frontend, backend netip.AddrPort) error {
	// The proxies add "listen" (the frontend) and "backend" themselves.
	log := s.log.With(logging.String("proto", proto.String()))
	var (
		p   proxy.Proxy
		err error
	)
	switch proto {
	case sockopt.TCP:
		p, err = tcp.New(f, tcp.Config{Backend: backend, DialTimeout: s.cfg.DialTimeout, Logger: log,
			ProxyProtocol: s.cfg.ProxyProtocol, Transparent: s.cfg.Transparent})
	case sockopt.UDP:
		p, err = udp.New(f, udp.Config{Backend: backend, IdleTimeout: s.cfg.UDPTimeout,
			MaxFlows: s.cfg.UDPMaxFlows, Logger: log,
			ProxyProtocol: s.cfg.ProxyProtocol, Transparent: s.cfg.Transparent})
	case sockopt.SCTP:
		p, err = sctp.New(f, sctp.Config{Backend: backend, DialTimeout: s.cfg.DialTimeout, Logger: log})
	default:
		err = fmt.Errorf("unsupported protocol %s", proto)
	}
	name := fmt.Sprintf("%s/%s to %s", frontend, proto, backend)
	if err != nil {
		return fmt.Errorf("proxy %s: %w", name, err)
	}
	s.proxies = append(s.proxies, p)
	s.names = append(s.names, name)
	s.protos = append(s.protos, proto)
	return nil
}

// group gathers the sockets of one allocation or one -L mapping (one
// protocol), for addGroup to serve with one proxy.
type group struct {
	proto     sockopt.Proto
	files     []*os.File
	frontends []netip.AddrPort
	backends  []netip.AddrPort
}

// newGroup returns a group with room for n sockets, so that a range of them
// leaves no garbage of outgrown slices in an idle process.
func newGroup(proto sockopt.Proto, n int) group {
	return group{
		proto:     proto,
		files:     make([]*os.File, 0, n),
		frontends: make([]netip.AddrPort, 0, n),
		backends:  make([]netip.AddrPort, 0, n),
	}
}

func (g *group) add(f *os.File, frontend, backend netip.AddrPort) {
	g.files = append(g.files, f)
	g.frontends = append(g.frontends, frontend)
	g.backends = append(g.backends, backend)
}

// addGroup serves the sockets of g with one proxy for all of them. On
// Linux that is tcp.NewRange (the proxy's event loops, at most one per P,
// each with an epoll set holding every socket), udp.NewRange (one event
// loop: a goroutine and an epoll set) or sctp.NewRange (one accept
// goroutine and one epoll set). The proxies have their own descriptors: the
// caller closes the files.
func (s *server) addGroup(g group) error {
	if len(g.files) <= 1 {
		for i, f := range g.files {
			if err := s.add(f, g.proto, g.frontends[i], g.backends[i]); err != nil {
				return err
			}
		}
		return nil
	}
	name := fmt.Sprintf("%s/%s to %s and %d more", g.frontends[0], g.proto, g.backends[0], len(g.files)-1)
	log := s.log.With(logging.String("proto", g.proto.String()))
	var (
		p   proxy.Proxy
		err error
	)
	switch g.proto {
	case sockopt.TCP:
		ms := make([]tcp.Mapping, len(g.files))
		for i, f := range g.files {
			ms[i] = tcp.Mapping{File: f, Backend: g.backends[i]}
		}
		p, err = tcp.NewRange(ms, tcp.Config{DialTimeout: s.cfg.DialTimeout, Logger: log,
			ProxyProtocol: s.cfg.ProxyProtocol, Transparent: s.cfg.Transparent})
	case sockopt.UDP:
		ms := make([]udp.Mapping, len(g.files))
		for i, f := range g.files {
			ms[i] = udp.Mapping{File: f, Backend: g.backends[i]}
		}
		p, err = udp.NewRange(ms, udp.Config{IdleTimeout: s.cfg.UDPTimeout, MaxFlows: s.cfg.UDPMaxFlows, Logger: log,
			ProxyProtocol: s.cfg.ProxyProtocol, Transparent: s.cfg.Transparent})
	case sockopt.SCTP:
		ms := make([]sctp.Mapping, len(g.files))
		for i, f := range g.files {
			ms[i] = sctp.Mapping{File: f, Backend: g.backends[i]}
		}
		p, err = sctp.NewRange(ms, sctp.Config{DialTimeout: s.cfg.DialTimeout, Logger: log})
	default:
		err = fmt.Errorf("unsupported protocol %s", g.proto)
	}
	if err != nil {
		return fmt.Errorf("proxy %s: %w", name, err)
	}
	s.proxies = append(s.proxies, p)
	s.names = append(s.names, name)
	s.protos = append(s.protos, g.proto)
	return nil
}

// closeAll closes every proxy and filtered socket at once.
func (s *server) closeAll() {
	for _, p := range s.proxies {
		p.Close()
	}
	s.releaseFiltered()
}

// releaseFiltered closes the sockets kept for SIGUSR1.
func (s *server) releaseFiltered() {
	for _, b := range s.filtered {
		b.Close()
	}
	s.filtered = nil
}

// detachFilters removes the drop-all filter from every socket (SIGUSR1).
func (s *server) detachFilters() {
	for _, b := range s.filtered {
		for _, f := range b.Files {
			if err := sockopt.DetachFilter(f); err != nil {
				s.log.Error("detaching the drop-all filter failed; the socket stays silent",
					logging.String("proto", b.Proto.String()), logging.Uint64("port", uint64(b.Port)), logging.Err(err))
			}
		}
	}
	s.releaseFiltered()
}

// loopProcs gives a process that relays TCP on Linux at least two Ps
// (GOMAXPROCS), unless the GOMAXPROCS environment variable sets their
// number. The TCP relay's event loop owns a thread and a P only while
// another P is left to the rest of the program; with one P, which is what
// the runtime starts with on a host, CPU set or cgroup limit of one CPU, it
// parks in Go's netpoller instead, and each of its wake-ups passes through
// the runtime's poller and scheduler. It runs before Serve, which counts
// the Ps.
func (s *server) loopProcs() {
	if runtime.GOOS == "linux" && runtime.GOMAXPROCS(0) < 2 && os.Getenv("GOMAXPROCS") == "" &&
		slices.Contains(s.protos, sockopt.TCP) {
		runtime.GOMAXPROCS(2)
	}
}

// serve starts every proxy's Serve.
func (s *server) serve() {
	s.errc = make(chan error, len(s.proxies))
	for i := range s.proxies {
		go s.run(i)
	}
}

// run serves proxy i and reports how it ended; serve starts it in a
// goroutine of its own per proxy (a range of mappings is one proxy), which
// stays in Serve for the life of the process. Its frame is kept small:
// ended, which formats the error, is out of line.
func (s *server) run(i int) {
	s.errc <- s.ended(i, s.proxies[i].Serve(context.Background()))
}

// ended names proxy i in err.
//
//go:noinline
func (s *server) ended(i int, err error) error {
	if err != nil {
		return fmt.Errorf("proxy %s: %w", s.names[i], err)
	}
	return nil
}

// wait runs until a stop signal (exit 0) or until a proxy fails on its own
// (exit 1).
func (s *server) wait(sigs <-chan os.Signal) int {
	running := len(s.proxies)
	for running > 0 {
		select {
		case sig := <-sigs:
			if sig == hupSignal {
				s.log.Info("SIGHUP ignored: hostproxy has no configuration to reload (SIGTERM stops it)")
				continue
			}
			if s.statsRequested(sig) {
				continue
			}
			if natSignal != nil && sig == natSignal {
				if len(s.filtered) == 0 {
					s.log.Debug("SIGUSR1 ignored: no socket has a filter")
				}
				s.detachFilters()
				continue
			}
			s.stop(sigs)
			return 0
		case err := <-s.errc:
			running--
			if err != nil && !errors.Is(err, proxy.ErrClosed) {
				s.log.Error("proxy failed; stopping", logging.Err(err))
				s.closeAll()
				return 1
			}
		}
	}
	s.releaseFiltered()
	return 0
}

// stop ends every proxy: at once when DrainTimeout is 0, otherwise
// gracefully for at most DrainTimeout, or until another stop signal.
func (s *server) stop(sigs <-chan os.Signal) {
	s.sm.stopping(s.log)
	// Our copies of filtered sockets would keep them listening.
	s.releaseFiltered()
	if s.cfg.DrainTimeout <= 0 {
		s.closeAll()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range s.proxies {
		wg.Go(func() {
			if err := p.Shutdown(ctx); err != nil && !errors.Is(err, proxy.ErrClosed) {
				s.log.Info("drain ended; open connections closed", logging.Err(err))
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return
		case sig := <-sigs:
			if natSignal != nil && sig == natSignal || sig == hupSignal || s.statsRequested(sig) {
				continue
			}
			cancel() // a second stop signal: at once
			s.closeAll()
			<-done
			return
		}
	}
}

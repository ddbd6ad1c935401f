package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
	"github.com/hostproxy/hostproxy/proxy/udp"
	"github.com/hostproxy/hostproxy/sockopt"
)

// mode is one of the three ways hostproxy runs.
type mode int

const (
	modeCompat    mode = iota + 1 // docker-proxy's flags: one mapping, fd 3 "0\n"
	modeAllocate                  // hostproxy binds and chooses: fd 3 "0\n<port>\n"
	modeForwarder                 // -L specs
)

func (m mode) String() string {
	switch m {
	case modeCompat:
		return "docker-proxy compatible"
	case modeAllocate:
		return "allocation"
	case modeForwarder:
		return "forwarder"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Defaults of the common flags.
const (
	defaultDialTimeout       = 5 * time.Second
	defaultForwarderDrain    = 10 * time.Second
	defaultLogLevel          = "warn"
	defaultLogFormat         = "console"
	defaultUDPTimeout        = udp.DefaultIdleTimeout
	defaultUDPMaxFlows       = udp.DefaultMaxFlows
	defaultCompatProtoString = "tcp"
	defaultMetricsInterval   = 15 * time.Second
	defaultUser              = "nobody"
)

// config is the validated command line.
type config struct {
	Mode    mode
	Version bool // -v / -version: print the version and exit
	Help    bool // -h: print the usage and exit

	// Engine modes (compat and allocation).
	Proto         sockopt.Proto
	HostIPs       []netip.Addr
	HostPorts     alloc.Range // {0,0}: the ephemeral range (allocation)
	ContainerIP   netip.Addr
	ContainerPort alloc.Range
	UseListenFD   bool
	AwaitNAT      bool

	// Forwarder mode.
	Forwards []forward

	// Common.
	DialTimeout  time.Duration
	UDPTimeout   time.Duration
	UDPMaxFlows  int
	DrainTimeout time.Duration
	LogLevel     zapcore.Level
	LogFormat    logging.Format
	LogTarget    logTarget

	MetricsFile     string        // "": no metrics file
	MetricsInterval time.Duration // between two writes of MetricsFile
	User            string        // -user: the account to run as once the sockets exist ("" keeps the uid)
	Seccomp         bool          // -seccomp: install the system call allow-list

	// The client's address: -proxy-protocol (proxyprotocol.go).
	ProxyProtocol proxyproto.Version // None: no PROXY header
	// -transparent: backend connections and flows leave from the client's
	// address (IP_TRANSPARENT); keeps CAP_NET_ADMIN after the drop.
	Transparent bool
}

// Backend returns the container address host port p maps to.
func (c *config) Backend(p uint16) netip.AddrPort {
	if c.ContainerPort.First == c.ContainerPort.Last {
		return netip.AddrPortFrom(c.ContainerIP, c.ContainerPort.First)
	}
	return netip.AddrPortFrom(c.ContainerIP, c.ContainerPort.First+(p-c.HostPorts.First))
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// flags are the raw flag values before validation.
type flags struct {
	set *flag.FlagSet

	proto, hostPort, containerIP, containerPort string
	hostIPs, forwards                           stringList
	useListenFD, awaitNAT, version, v           bool
	dialTimeout, udpTimeout, drainTimeout       time.Duration
	udpMaxFlows                                 int
	logLevel, logFormat                         string
	logTarget                                   string
	metricsFile                                 string
	metricsInterval                             time.Duration
	user                                        string
	seccomp                                     bool

	proxyProtocol string // -proxy-protocol
	transparent   bool
}

func newFlags() *flags {
	f := &flags{set: flag.NewFlagSet("hostproxy", flag.ContinueOnError)}
	fs := f.set
	fs.SetOutput(io.Discard) // errors are reported as one line by the caller
	fs.Usage = func() {}
	fs.StringVar(&f.proto, "proto", defaultCompatProtoString, "`protocol` of the mapping: tcp, udp or sctp")
	fs.Var(&f.hostIPs, "host-ip", "host `IP` to listen on; repeat to allocate one common port on several addresses")
	fs.StringVar(&f.hostPort, "host-port", "", "host `port`: N, 0 (any port of the kernel's ephemeral range) or A-B")
	fs.StringVar(&f.containerIP, "container-ip", "", "backend (container) `IP`")
	fs.StringVar(&f.containerPort, "container-port", "", "backend `port`: N, or C-D as long as -host-port A-B (port by port)")
	fs.BoolVar(&f.useListenFD, "use-listen-fd", false, "serve the socket the engine passes as fd 4 instead of binding")
	fs.BoolVar(&f.awaitNAT, "await-nat", false, "bind with a drop-all filter and remove it on SIGUSR1 (allocation mode)")
	fs.Var(&f.forwards, "L", "forward `[BIND:]PORT[-END]:HOST:PORT[-END][/tcp|/udp|/sctp]`; repeatable (standalone mode)")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", defaultDialTimeout, "give up connecting to a TCP or SCTP backend after this `duration`")
	fs.DurationVar(&f.udpTimeout, "udp-timeout", defaultUDPTimeout, "close a UDP flow idle for this `duration`")
	fs.IntVar(&f.udpMaxFlows, "udp-max-flows", defaultUDPMaxFlows, "at most this many UDP flows per mapping; the least recently used is evicted")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 0, "on SIGINT/SIGTERM let open connections finish for this `duration` (default 0 with docker-proxy's flags, 10s with -L)")
	fs.StringVar(&f.logLevel, "log-level", defaultLogLevel, "log `level`: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", defaultLogFormat, "log `format`: console or json")
	fs.StringVar(&f.logTarget, "log-target", defaultLogTargetS, "where logs go, a `target`: stderr, journald (the systemd journal's native protocol) or auto (journald when stderr is the journal or /dev/null and the journal socket exists, else stderr)")
	fs.StringVar(&f.metricsFile, "metrics-file", "", "write Prometheus metrics to this `file` (replaced atomically; node_exporter's textfile collector reads it)")
	fs.DurationVar(&f.metricsInterval, "metrics-interval", defaultMetricsInterval, "rewrite -metrics-file every `duration`, and at exit")
	fs.StringVar(&f.user, "user", defaultUser, "started as root, run as this `user` (name, UID or UID:GID) once the sockets exist (\"\" keeps the uid; capabilities are dropped either way)")
	fs.BoolVar(&f.seccomp, "seccomp", true, "confine the process to the system calls the relays make (a seccomp allow-list); -seccomp=false turns it off")
	// The client's address: -proxy-protocol (proxyprotocol.go).
	fs.StringVar(&f.proxyProtocol, "proxy-protocol", "", "send each TCP backend a PROXY protocol header (`version` v1 or v2) naming the client, and start every UDP datagram to the backend with a v2 header (v2 only)")

	fs.BoolVar(&f.transparent, "transparent", false, "connect to the backend from the client's own address (IP_TRANSPARENT; TCP and UDP): needs CAP_NET_ADMIN and the host rules of docs/client-address.md")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.BoolVar(&f.v, "v", false, "print the version and exit")
	return f
}

// parseArgs parses and validates the command line (without the program name).
// Its error is one line that says what is wrong.
func parseArgs(args []string) (*config, error) {
	f := newFlags()
	if err := f.set.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &config{Help: true}, nil
		}
		return nil, fmt.Errorf("%w (see hostproxy -h)", err)
	}
	if f.version || f.v {
		return &config{Version: true}, nil
	}
	if f.set.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (all settings are flags; see -h)", f.set.Arg(0))
	}
	set := map[string]bool{}
	f.set.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	c := &config{
		DialTimeout:  f.dialTimeout,
		UDPTimeout:   f.udpTimeout,
		UDPMaxFlows:  f.udpMaxFlows,
		DrainTimeout: f.drainTimeout,

		MetricsFile:     f.metricsFile,
		MetricsInterval: f.metricsInterval,
		User:            f.user,
		Seccomp:         f.seccomp,

		Transparent: f.transparent,
	}
	var err error
	if c.LogLevel, err = logging.ParseLevel(f.logLevel); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	switch logging.Format(f.logFormat) {
	case logging.FormatConsole, logging.FormatJSON:
		c.LogFormat = logging.Format(f.logFormat)
	default:
		return nil, fmt.Errorf("-log-format: unknown format %q (want console or json)", f.logFormat)
	}
	if c.LogTarget, err = parseLogTarget(f.logTarget); err != nil {
		return nil, fmt.Errorf("-log-target: %w", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		zero bool // 0 allowed
	}{
		{"dial-timeout", c.DialTimeout, false},
		{"udp-timeout", c.UDPTimeout, false},
		{"drain-timeout", c.DrainTimeout, true},
		{"metrics-interval", c.MetricsInterval, false},
	} {
		if d.v < 0 || d.v == 0 && !d.zero {
			return nil, fmt.Errorf("-%s %v: want a positive duration", d.name, d.v)
		}
	}
	if set["metrics-interval"] && c.MetricsFile == "" {
		return nil, errors.New("-metrics-interval needs -metrics-file")
	}
	if c.UDPMaxFlows < 1 {
		return nil, fmt.Errorf("-udp-max-flows %d: want at least 1", c.UDPMaxFlows)
	}

	if len(f.forwards) > 0 {
		for _, name := range []string{"proto", "host-ip", "host-port", "container-ip", "container-port", "use-listen-fd", "await-nat"} {
			if set[name] {
				return nil, fmt.Errorf("-L cannot be combined with -%s", name)
			}
		}
		c.Mode = modeForwarder
		if !set["drain-timeout"] {
			c.DrainTimeout = defaultForwarderDrain
		}
		for _, s := range f.forwards {
			fw, err := parseForward(s)
			if err != nil {
				return nil, err
			}
			c.Forwards = append(c.Forwards, fw)
		}
		if err := c.setProxyProtocol(f.proxyProtocol, set["proxy-protocol"]); err != nil {
			return nil, err
		}
		return c, c.checkTransparent()
	}
	if err := c.parseEngine(f); err != nil {
		return c, err
	}
	if err := c.setProxyProtocol(f.proxyProtocol, set["proxy-protocol"]); err != nil {
		return c, err
	}
	return c, c.checkTransparent()
}

// checkTransparent refuses -transparent with SCTP, which has no
// transparent sockets.
func (c *config) checkTransparent() error {
	if !c.Transparent {
		return nil
	}
	if c.Proto == sockopt.SCTP {
		return errors.New("-transparent works with -proto tcp and udp, not sctp")
	}
	for _, fw := range c.Forwards {
		if fw.Proto == sockopt.SCTP {
			return fmt.Errorf("-transparent works with tcp and udp, not sctp (-L %s)", fw)
		}
	}
	return nil
}

// parseEngine validates docker-proxy's flags and picks compat or allocation
// mode.
func (c *config) parseEngine(f *flags) error {
	var err error
	if c.Proto, err = sockopt.ParseProto(f.proto); err != nil {
		return fmt.Errorf("-proto: %w", err)
	}
	if len(f.hostIPs) == 0 {
		return errors.New("missing -host-ip (or -L for the standalone forwarder; see -h)")
	}
	for _, s := range f.hostIPs {
		a, err := parseAddr(s)
		if err != nil {
			return fmt.Errorf("-host-ip: %w", err)
		}
		for _, b := range c.HostIPs {
			if a == b {
				return fmt.Errorf("-host-ip %s given twice", a)
			}
		}
		c.HostIPs = append(c.HostIPs, a)
	}
	switch f.hostPort {
	case "":
		return errors.New("missing -host-port")
	case "0":
		c.HostPorts = alloc.Range{}
	default:
		if c.HostPorts, err = parsePortRange(f.hostPort); err != nil {
			return fmt.Errorf("-host-port: %w", err)
		}
	}
	if f.containerIP == "" {
		return errors.New("missing -container-ip")
	}
	if c.ContainerIP, err = parseAddr(f.containerIP); err != nil {
		return fmt.Errorf("-container-ip: %w", err)
	}
	if c.ContainerIP.IsUnspecified() {
		return fmt.Errorf("-container-ip %s: want a unicast address", c.ContainerIP)
	}
	if f.containerPort == "" {
		return errors.New("missing -container-port")
	}
	if c.ContainerPort, err = parsePortRange(f.containerPort); err != nil {
		return fmt.Errorf("-container-port: %w", err)
	}
	if c.ContainerPort.First != c.ContainerPort.Last && c.ContainerPort.Len() != c.HostPorts.Len() {
		if c.HostPorts.First == 0 {
			return fmt.Errorf("-container-port %s is a range: -host-port must be a range of the same length, not 0", c.ContainerPort)
		}
		return fmt.Errorf("-host-port %s and -container-port %s differ in length (%d and %d ports)",
			c.HostPorts, c.ContainerPort, c.HostPorts.Len(), c.ContainerPort.Len())
	}
	c.UseListenFD, c.AwaitNAT = f.useListenFD, f.awaitNAT

	c.Mode = modeCompat
	if len(c.HostIPs) > 1 || c.HostPorts.First == 0 || c.HostPorts.First != c.HostPorts.Last || c.AwaitNAT {
		c.Mode = modeAllocate
	}
	if c.UseListenFD && c.Mode == modeAllocate {
		return errors.New("-use-listen-fd takes one -host-ip and one -host-port, without -await-nat (the engine bound the socket)")
	}
	return nil
}

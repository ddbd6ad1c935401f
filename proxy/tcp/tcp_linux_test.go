package tcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

func init() {
	childModes["emfile"] = emfileChild
	childModes["splice"] = spliceChild
}

// listenFile returns a listening TCP socket from sockopt, closed at Cleanup.
func listenFile(t testing.TB, ap netip.AddrPort, opts sockopt.Options) *os.File {
	t.Helper()
	f, err := sockopt.Listen(sockopt.TCP, ap, opts)
	if err != nil {
		t.Fatalf("sockopt.Listen: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fileAddr(t testing.TB, f *os.File) netip.AddrPort {
	t.Helper()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	return info.Local
}

var lo4 = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)

func TestNewFromFile(t *testing.T) {
	_, be := newBackend(t, echo)
	f := listenFile(t, lo4, sockopt.Options{})
	p, err := New(f, Config{Backend: be})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.Close() // New duplicated it
	serve(t, p)
	roundTrip(t, dial(t, addrPort(p.Addr())), "from a file")
}

// TestShutdownStopsSharedSocket shows that Shutdown stops the port accepting
// even while the caller still holds its own descriptor of the socket (as an
// allocator's Binding does).
func TestShutdownStopsSharedSocket(t *testing.T) {
	_, be := newBackend(t, echo)
	f := listenFile(t, lo4, sockopt.Options{}) // stays open
	p, err := New(f, Config{Backend: be})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	wait := serve(t, p)
	addr := fileAddr(t, f)
	c := dial(t, addr) // Serve is running
	roundTrip(t, c, "x")
	c.Close()
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr)); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial after Shutdown with the caller's descriptor open: %v, want ECONNREFUSED", err)
	}
}

func TestNewRejects(t *testing.T) {
	be := netip.MustParseAddrPort("127.0.0.1:80")
	udp, err := sockopt.Listen(sockopt.UDP, lo4, sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unbound := os.NewFile(uintptr(fd), "unbound tcp socket")
	t.Cleanup(func() { unbound.Close() })
	regular, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { regular.Close() })
	good := listenFile(t, lo4, sockopt.Options{})

	for _, tc := range []struct {
		name string
		f    *os.File
		be   netip.AddrPort
	}{
		{"nil file", nil, be},
		{"udp socket", udp, be},
		{"tcp socket not listening", unbound, be},
		{"not a socket", regular, be},
		{"no backend", good, netip.AddrPort{}},
		{"backend port 0", good, netip.MustParseAddrPort("127.0.0.1:0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.f, Config{Backend: tc.be})
			if err == nil {
				p.Close()
				t.Fatal("New succeeded")
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestIPv6ListenerIPv4Backend(t *testing.T) {
	f, err := sockopt.Listen(sockopt.TCP, netip.MustParseAddrPort("[::1]:0"), sockopt.Options{})
	testenv.Require(t, err == nil, fmt.Sprintf("needs IPv6 loopback (%v)", err))
	defer f.Close()
	_, be := newBackend(t, echo) // 127.0.0.1
	p, err := New(f, Config{Backend: be})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	serve(t, p)
	addr := addrPort(p.Addr())
	if !addr.Addr().Is6() {
		t.Fatalf("proxy listens on %s, want ::1", addr)
	}
	c := dial(t, addr)
	roundTrip(t, c, "v6 to v4")
}

// TestMappedBackend: an IPv4-mapped backend address is dialed as IPv4,
// from an IPv4 listener and from an IPv6 one.
func TestMappedBackend(t *testing.T) {
	_, be := newBackend(t, echo) // 127.0.0.1
	mapped := netip.AddrPortFrom(netip.AddrFrom16(be.Addr().As16()), be.Port())
	if !mapped.Addr().Is4In6() {
		t.Fatalf("%s is not IPv4-mapped", mapped)
	}
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		f, err := sockopt.Listen(sockopt.TCP, netip.MustParseAddrPort(listen), sockopt.Options{})
		testenv.Require(t, err == nil, fmt.Sprintf("needs %s (%v)", listen, err))
		defer f.Close()
		p, err := New(f, Config{Backend: mapped})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		serve(t, p)
		roundTrip(t, dial(t, addrPort(p.Addr())), "mapped from "+listen)
		p.EachMapping(func(_, b netip.AddrPort, _ *proxy.StreamCounters) {
			if b != be {
				t.Errorf("mapping's backend %s, want %s", b, be)
			}
		})
	}
}

// TestBlackHoleBackend: the backend socket drops every SYN, so only the dial
// timeout ends the dial.
func TestBlackHoleBackend(t *testing.T) {
	testenv.RequireNetAdmin(t)
	const timeout = 300 * time.Millisecond
	hole := listenFile(t, lo4, sockopt.Options{DropAll: true})
	be := fileAddr(t, hole)
	logger, logs := newRecorder(zapcore.DebugLevel)
	_, addr := startProxy(t, Config{Backend: be, DialTimeout: timeout, Logger: logger})

	start := time.Now()
	client := dialReset(t, addr, 3*time.Second) // well below the 5s default
	took := time.Since(start)
	if took < timeout-50*time.Millisecond {
		t.Errorf("client reset after %v, before the %v dial timeout", took, timeout)
	}
	checkDialWarning(t, logs, client, addr, be)
	var err error
	if f, ok := logs.atLeast(zapcore.WarnLevel)[0].fields["error"]; ok {
		err, _ = f.Interface.(error)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("logged error %v, want a timeout", err)
	}
}

// TestSocketOptions checks keepalive and TCP_NODELAY on both sockets of a
// relay: the client's from the listening socket at once, the backend's
// TCP_NODELAY at the dial and its keepalive once the connection has been
// open for keepaliveDelay. Connections opened and closed before and after
// it take their places on the loop's keepalive list and leave it.
func TestSocketOptions(t *testing.T) {
	be, conns := newHandOver(t)
	p, addr := startProxy(t, Config{Backend: be})
	short := func() {
		for range 3 {
			c := dial(t, addr)
			b := accepted(t, conns)
			roundTripVia(t, c, b)
			c.Close()
			b.Close()
		}
	}
	short()
	c := dial(t, addr)
	b := accepted(t, conns)
	roundTripVia(t, c, b)
	opened := time.Now()
	short()
	waitUntil(t, "the short connections closed", func() bool { return relayCount(p) == 1 })

	// The proxy's own sockets: the one whose peer is the client, and the
	// one whose peer is the backend, connected from b's peer address.
	client := proxySocket(t, addrPort(c.LocalAddr()), addrPort(c.RemoteAddr()))
	backend := proxySocket(t, addrPort(b.LocalAddr()), addrPort(b.RemoteAddr()))
	type option struct {
		name       string
		level, opt int
		want       int
	}
	nodelay := option{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1}
	keepalive := []option{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive.Idle / time.Second)},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAlive.Interval / time.Second)},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAlive.Count},
	}
	// wrong returns what differs from want on fd.
	wrong := func(fd int, opts ...option) []string {
		var bad []string
		for _, o := range opts {
			got, err := unix.GetsockoptInt(fd, o.level, o.opt)
			if err != nil {
				bad = append(bad, fmt.Sprintf("getsockopt %s: %v", o.name, err))
			} else if got != o.want {
				bad = append(bad, fmt.Sprintf("%s = %d, want %d", o.name, got, o.want))
			}
		}
		return bad
	}
	if bad := wrong(client, append(keepalive, nodelay)...); bad != nil {
		t.Errorf("client socket: %s", strings.Join(bad, "; "))
	}
	if bad := wrong(backend, nodelay); bad != nil {
		t.Errorf("backend socket: %s", strings.Join(bad, "; "))
	}
	waitUntil(t, "the backend socket's keepalive options", func() bool { return wrong(backend, keepalive...) == nil })
	if took := time.Since(opened); took < keepaliveDelay/2 {
		t.Errorf("the backend socket had its keepalive options %v after the connection opened, want about %v", took, keepaliveDelay)
	}
}

// proxySocket finds the descriptor of this process whose socket has peer as
// its peer and local as its own address: one of the proxy's.
func proxySocket(t testing.TB, peer, local netip.AddrPort) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getpeername(fd)
		if err != nil {
			continue
		}
		la, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		if sockaddrAddrPort(sa) == peer && sockaddrAddrPort(la) == local {
			return fd
		}
	}
	t.Fatalf("no socket with peer %s and address %s", peer, local)
	return -1
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// lineReader delivers a child's stdout lines on a channel.
func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

func nextLine(t testing.TB, lines <-chan string, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("child exited before printing %q", prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("child printed %q, want %q...", l, prefix)
		}
		return strings.TrimPrefix(l, prefix)
	case <-time.After(waitFor):
		t.Fatalf("child did not print %q in time", prefix)
		return ""
	}
}

// startChild runs this test binary in a child mode with extra environment;
// the child stops when its stdin closes. stop (also run by Cleanup) closes
// stdin, waits for a clean exit (killing the child after waitFor) and logs
// its stderr.
func startChild(t testing.TB, argv0 string, args []string, env ...string) (lines <-chan string, stop func()) {
	t.Helper()
	cmd := exec.Command(argv0, args...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv0, err)
	}
	lines = lineReader(stdout)
	stop = sync.OnceFunc(func() {
		stdin.Close()
		exited := make(chan error, 1)
		go func() {
			for range lines { // drain, so that the child never blocks on stdout
			}
			exited <- cmd.Wait()
		}()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("child: %v\nstderr:\n%s", err, stderr.String())
			}
		case <-time.After(waitFor):
			cmd.Process.Kill()
			<-exited
			t.Errorf("child did not exit; killed it\nstderr:\n%s", stderr.String())
		}
	})
	t.Cleanup(stop)
	return lines, stop
}

// TestEMFILERecovery floods a proxy running with a low RLIMIT_NOFILE until
// accept(2) fails with EMFILE, then shows that it relays again once the
// flood's connections are gone: a proxy of one socket, and a range of two
// (flooded on its first).
func TestEMFILERecovery(t *testing.T) {
	for _, mode := range []string{"single", "range"} {
		t.Run(mode, func(t *testing.T) { testEMFILERecovery(t, mode) })
	}
}

func testEMFILERecovery(t *testing.T, mode string) {
	_, be := newBackend(t, echo)
	lines, _ := startChild(t, os.Args[0], []string{"-test.run=^$"}, childEnv+"=emfile",
		"HOSTPROXY_TCP_BACKEND="+be.String(), "HOSTPROXY_TCP_MODE="+mode)
	addr, err := netip.ParseAddrPort(nextLine(t, lines, "listen "))
	if err != nil {
		t.Fatal(err)
	}

	// Flood: far more connections than the child has descriptors for.
	var flood []*net.TCPConn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	emfile := make(chan struct{})
	go func() {
		for l := range lines {
			if l == "emfile" {
				close(emfile)
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
		if errors.Is(err, syscall.ECONNRESET) {
			// The child accepted it and reset it, unable to dial the
			// backend: its accept loop can take the last two descriptors
			// before the first of those connections dials. That is the
			// proxy shedding load, not failing; the reset can beat the
			// end of connect here.
			continue
		}
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
		select {
		case <-emfile:
			i = 200
		default:
		}
	}
	select {
	case <-emfile:
	case <-time.After(waitFor):
		t.Fatal("accept in the child never failed with EMFILE")
	}
	for _, c := range flood {
		c.Close()
	}
	flood = nil

	// Relaying again. A connection may still be reset while the child
	// catches up (a dial can fail with EMFILE too), so try a few times.
	deadline := time.Now().Add(waitFor)
	for attempt := 1; ; attempt++ {
		err := echoOnce(nil, addr, deadline)
		if err == nil {
			break
		}
		if attempt == 5 || time.Now().After(deadline) {
			t.Fatalf("no echo after the flood (attempt %d): %v", attempt, err)
		}
	}
}

// echoOnce connects to addr (from from, when not nil), sends "again" and
// expects it echoed before deadline.
func echoOnce(from *net.TCPAddr, addr netip.AddrPort, deadline time.Time) error {
	c, err := net.DialTCP("tcp", from, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "again"); err != nil {
		return err
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != "again" {
		return fmt.Errorf("echo %q, want %q", got, "again")
	}
	return nil
}

// emfileChild is the subprocess of TestEMFILERecovery: a proxy (a range of
// two sockets with HOSTPROXY_TCP_MODE=range) with RLIMIT_NOFILE 64 whose
// logger prints "emfile" when accept fails with EMFILE.
func emfileChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "emfile child:", err); return 1 }
	be, err := netip.ParseAddrPort(os.Getenv("HOSTPROXY_TCP_BACKEND"))
	if err != nil {
		return fail(err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fail(err)
	}
	rl.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fail(err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fail(err)
	}
	var once sync.Once
	logger := logging.New(&emfileSpotter{report: func() { once.Do(func() { fmt.Println("emfile") }) }})
	cfg := Config{Backend: be, Logger: logger}
	var p *Proxy
	if os.Getenv("HOSTPROXY_TCP_MODE") == "range" {
		if p, err = rangeOf(ln, cfg); err != nil {
			return fail(err)
		}
	} else {
		p = NewListener(ln, cfg)
	}
	// Every connection takes descriptors in pairs (two sockets, splice
	// pipes), so with an odd number free accept would never be the call that
	// runs out. Make it even.
	if free, err := evenFreeFiles(); err != nil {
		return fail(err)
	} else {
		fmt.Fprintln(os.Stderr, "emfile child: free descriptors:", free)
	}
	res := make(chan error, 1)
	go func() { res <- p.Serve(context.Background()) }()
	fmt.Println("listen", p.Addr())
	io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	if err := p.Close(); err != nil {
		return fail(err)
	}
	if err := <-res; err != nil {
		return fail(err)
	}
	return 0
}

// rangeOf returns a range proxy of ln's socket and a second one, both
// relayed to cfg.Backend.
func rangeOf(ln *net.TCPListener, cfg Config) (*Proxy, error) {
	ln2, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	var ms []Mapping
	for _, l := range []*net.TCPListener{ln, ln2} {
		f, err := l.File()
		l.Close()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		ms = append(ms, Mapping{File: f, Backend: cfg.Backend})
	}
	return NewRange(ms, cfg)
}

// evenFreeFiles counts the free descriptors below RLIMIT_NOFILE and, when
// that is odd, keeps one open so that the rest is even.
func evenFreeFiles() (int, error) {
	var fds []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) {
			break
		}
		if err != nil {
			return 0, err
		}
		fds = append(fds, fd)
		if len(fds) > 1<<16 {
			return 0, errors.New("no descriptor limit")
		}
	}
	free := len(fds)
	keep := free % 2
	for _, fd := range fds[keep:] {
		unix.Close(fd)
	}
	return free - keep, nil
}

// emfileSpotter is a zapcore.Core that calls report when an accept error
// wrapping EMFILE is logged.
type emfileSpotter struct{ report func() }

func (s *emfileSpotter) Enabled(zapcore.Level) bool        { return true }
func (s *emfileSpotter) With([]zapcore.Field) zapcore.Core { return s }
func (s *emfileSpotter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, s)
}
func (s *emfileSpotter) Sync() error { return nil }
func (s *emfileSpotter) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if !strings.HasPrefix(e.Message, "accept failed") {
		return nil
	}
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && errors.Is(err, syscall.EMFILE) {
			s.report()
		}
	}
	return nil
}

// TestRelayUsesSplice runs a transfer through the proxy in a child process
// under strace and checks that the bytes went through splice(2). The child's
// client and backend use plain read/write, so every splice is the proxy's.
func TestRelayUsesSplice(t *testing.T) {
	strace := testenv.RequireCommand(t, "strace")
	out := t.TempDir() + "/strace.out"
	lines, stop := startChild(t, strace, []string{"-f", "-qq", "-e", "trace=splice", "-o", out, os.Args[0], "-test.run=^$"}, childEnv+"=splice")
	n, err := strconv.ParseInt(nextLine(t, lines, "relayed "), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	nextLine(t, lines, "done")
	stop() // strace writes its last lines when the child exits

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var calls, spliced int64
	for _, l := range strings.Split(string(b), "\n") {
		// A call another thread interrupts is printed in two lines, the
		// result on the second: "splice(... <unfinished ...>", then
		// "<... splice resumed>...) = N".
		call := strings.Contains(l, "splice(") || strings.Contains(l, "<... splice resumed>")
		j := strings.LastIndex(l, " = ")
		if !call || j < 0 {
			continue
		}
		calls++
		if v, err := strconv.ParseInt(strings.Fields(l[j+3:])[0], 10, 64); err == nil && v > 0 {
			spliced += v
		}
	}
	t.Logf("%d splice calls moved %d bytes for %d bytes relayed", calls, spliced, n)
	// A bulk transfer goes socket → pipe and pipe → socket; only the
	// first read of a burst (smallRead bytes) may go through the loop's
	// buffer, so at least 15/16 of the bytes are spliced twice.
	if want := 2 * (n - n/16); spliced < want {
		t.Fatalf("splice moved %d bytes, want at least %d (2 × 15/16 of %d relayed): the relay copies bulk through user space", spliced, want, n)
	}
}

// spliceChild relays 8 MiB through a proxy, client and backend using
// read/write, and prints "relayed N" then "done".
func spliceChild() int {
	const size = 8 << 20
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "splice child:", err); return 1 }
	bln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fail(err)
	}
	defer bln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := bln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		var n int64
		for {
			m, err := c.Read(buf) // plain read: no splice on this side
			n += int64(m)
			if err != nil {
				break
			}
		}
		got <- n
	}()
	pln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fail(err)
	}
	p := NewListener(pln, Config{Backend: bln.Addr().(*net.TCPAddr).AddrPort()})
	res := make(chan error, 1)
	go func() { res <- p.Serve(context.Background()) }()
	c, err := net.DialTCP("tcp", nil, pln.Addr().(*net.TCPAddr))
	if err != nil {
		return fail(err)
	}
	buf := make([]byte, 64<<10)
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			return fail(err)
		}
	}
	c.CloseWrite()
	n := <-got
	c.Close()
	fmt.Println("relayed", n)
	p.Close()
	if err := <-res; err != nil {
		return fail(err)
	}
	if n != size {
		return fail(fmt.Errorf("backend received %d bytes, want %d", n, size))
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestRangeSharedSocket checks a range whose socket another holder accepts
// on too: when that holder takes the connection epoll reported, the range's
// accept finds none waiting and goes back to waiting, serving later
// connections on every socket.
func TestRangeSharedSocket(t *testing.T) {
	files, addrs := listenFiles(t, 2)
	var ms []Mapping
	for i, f := range files {
		_, be := newBackend(t, tagged(fmt.Sprintf("backend %d:", i)))
		ms = append(ms, Mapping{File: f, Backend: be})
	}
	p, err := NewRange(ms, Config{})
	if err != nil {
		t.Fatalf("NewRange: %v", err)
	}
	// Nothing waiting: accept says so at once, as when the other holder
	// took the connection.
	if fd, errno := accept4(p.ports[0].fd); errno != unix.EAGAIN {
		t.Fatalf("accept with no connection waiting = %d, %v; want EAGAIN", fd, errno)
	}
	serve(t, p)

	// The other holder is files[0], which the test keeps: it accepts as
	// fast as it can, without blocking (the range made the socket
	// non-blocking), while clients connect to that port.
	rc, err := files[0].SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	stolen := make(chan int, 1)
	go func() {
		n := 0
		defer func() { stolen <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rc.Control(func(fd uintptr) {
				if nfd, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC); err == nil {
					unix.Close(nfd)
					n++
				}
			})
		}
	}()
	const clients = 200
	for range clients {
		c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addrs[0]))
		if err != nil {
			t.Fatalf("dial %s: %v", addrs[0], err)
		}
		c.Close()
	}
	close(stop)
	t.Logf("the other holder took %d of %d connections", <-stolen, clients)
	// The range still serves both sockets.
	greet(t, dial(t, addrs[0]), "backend 0:")
	greet(t, dial(t, addrs[1]), "backend 1:")
}

// TestRangeLoops: a range relays in one event loop (one goroutine) while
// its connections come one at a time, and in one loop per P (up to
// maxLoops, as loopCount says) from the first time two are open at once:
// one goroutine per event loop however many sockets it has.
func TestRangeLoops(t *testing.T) {
	const n = 50
	p, addrs, _ := startRange(t, n, Config{})
	// Earlier tests' proxies have all returned from Serve, so every loop
	// goroutine in the process is this range's.
	loops := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "tcp.(*loop).run(")
	}
	for i := range 3 {
		c := dial(t, addrs[n-1-i])
		greet(t, c, fmt.Sprintf("backend %d:", n-1-i))
		c.Close()
		waitUntil(t, "the relay to end", func() bool { return relayCount(p) == 0 })
	}
	if got := loops(); got != 1 {
		t.Fatalf("a %d-socket range relaying one connection at a time runs %d event loops, want 1", n, got)
	}

	c0 := dial(t, addrs[0])
	greet(t, c0, "backend 0:")
	c1 := dial(t, addrs[1])
	greet(t, c1, "backend 1:")
	want, _ := loopCount()
	if got := loops(); got != want {
		t.Fatalf("with two connections open, the range runs %d event loops, want %d (loopCount)", got, want)
	}
	// Every loop accepts: more connections, each relayed, whichever loop
	// takes it.
	for i := range 8 {
		c := dial(t, addrs[2+i])
		greet(t, c, fmt.Sprintf("backend %d:", 2+i))
		c.Close()
	}
	c0.Close()
	c1.Close()
	waitUntil(t, "the relays to end", func() bool { return relayCount(p) == 0 })
	if got := loops(); got != want {
		t.Fatalf("after the connections ended, the range runs %d event loops, want %d", got, want)
	}
}

// TestCounters checks the per-mapping counters (proxy.StreamStats): a clean
// connection, a reset one, a refused dial, each on its own mapping.
func TestCounters(t *testing.T) {
	be, conns := newHandOver(t)
	files, addrs := listenFiles(t, 2)
	refused := refusedAddr(t)
	p, err := NewRange([]Mapping{{files[0], be}, {files[1], refused}}, Config{})
	if err != nil {
		t.Fatalf("NewRange: %v", err)
	}
	serve(t, p)
	get := func(i int) proxy.StreamSnapshot {
		var s []proxy.StreamSnapshot
		p.EachMapping(func(_, _ netip.AddrPort, c *proxy.StreamCounters) { s = append(s, c.Snapshot()) })
		return s[i]
	}

	c := dial(t, addrs[0])
	b := accepted(t, conns)
	io.WriteString(c, "12345")
	io.ReadFull(b, make([]byte, 5))
	io.WriteString(b, "123")
	io.ReadFull(c, make([]byte, 3))
	// The loop counts the bytes once the splice that wrote them returns,
	// which may be after the peer read them.
	waitUntil(t, "the bytes to be counted", func() bool { s := get(0); return s.BytesUp == 5 && s.BytesDown == 3 })
	if s := get(0); s.Accepted != 1 || s.Active != 1 || s.BytesUp != 5 || s.BytesDown != 3 {
		t.Errorf("open connection: %+v, want 1 accepted, 1 active, 5 bytes up, 3 down", s)
	}
	c.CloseWrite()
	b.CloseWrite()
	readAll(t, c)
	waitUntil(t, "the clean close", func() bool { return get(0).Active == 0 })
	if s := get(0); s.Resets != 0 {
		t.Errorf("after a clean close: %+v, want no reset", s)
	}

	c = dial(t, addrs[0])
	b = accepted(t, conns)
	b.SetLinger(0)
	b.Close()
	wantReset(t, c)
	waitUntil(t, "the reset", func() bool { return get(0).Active == 0 })
	if s := get(0); s.Accepted != 2 || s.Resets != 1 {
		t.Errorf("after a reset: %+v, want 2 accepted, 1 reset", s)
	}

	dialReset(t, addrs[1], time.Second)
	waitUntil(t, "the failed dial", func() bool { s := get(1); return s.DialErrors == 1 && s.Active == 0 })
	if s := get(1); s.Accepted != 1 || s.Active != 0 {
		t.Errorf("refused backend: %+v, want 1 accepted, 0 active", s)
	}
}

// TestNoPipe: when no pipe can be made (EMFILE), the loops copy through
// their buffer instead, keeping every byte, its order and the half-close.
func TestNoPipe(t *testing.T) {
	orig := pipe2
	t.Cleanup(func() { pipe2 = orig }) // registered first: runs after the proxies are closed
	pipe2 = func([]int) error { return unix.EMFILE }

	t.Run("half-close", func(t *testing.T) {
		be, conns := newHandOver(t)
		_, addr := startProxy(t, Config{Backend: be})
		c := dial(t, addr)
		io.WriteString(c, "request")
		c.CloseWrite()
		b := accepted(t, conns)
		if got := readAll(t, b); got != "request" {
			t.Fatalf("backend read %q, want %q then EOF", got, "request")
		}
		io.WriteString(b, "response")
		b.CloseWrite()
		if got := readAll(t, c); got != "response" {
			t.Fatalf("client read %q, want %q then EOF", got, "response")
		}
	})
	t.Run("bulk", func(t *testing.T) {
		const size = 16 << 20
		_, be := newBackend(t, echo)
		p, addr := startProxy(t, Config{Backend: be})
		echoHash(t, dial(t, addr), size, 4)
		var s proxy.StreamSnapshot
		p.EachMapping(func(_, _ netip.AddrPort, c *proxy.StreamCounters) { s = c.Snapshot() })
		if s.BytesUp != size || s.BytesDown != size {
			t.Errorf("counted %d bytes up and %d down, want %d each", s.BytesUp, s.BytesDown, size)
		}
	})
}

// TestTransparentLocalClient: with Config.Transparent a client on loopback
// (one of the host's own addresses, here 127.0.0.2) is relayed from the
// host's normal source, not from its own address; New and NewRange both
// take the option. The backend, on loopback, is the host's own as well,
// which alone keeps every client's normal source. The decision itself is
// sockopt's TestClientSource; clients from elsewhere, the container's
// neighbour and a backend on a host address the end-to-end suite's
// (e2e/transparent_test.go, in namespaces with the host rules).
func TestTransparentLocalClient(t *testing.T) {
	testenv.RequireNetAdmin(t)
	backend, conns := newHandOver(t)
	for _, ctor := range []string{"New", "NewRange"} {
		t.Run(ctor, func(t *testing.T) {
			ln := loopback(t)
			f, err := ln.File()
			ln.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cfg := Config{Backend: backend, Transparent: true}
			var p *Proxy
			if ctor == "New" {
				p, err = New(f, cfg)
			} else {
				p, err = NewRange([]Mapping{{File: f, Backend: backend}}, cfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			serve(t, p)
			// From 127.0.0.2: the normal source toward the backend on
			// 127.0.0.1 is 127.0.0.1, so the backend tells them apart.
			c, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, net.TCPAddrFromAddrPort(addrPort(p.Addr())))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitFor))
			b := accepted(t, conns)
			client, seen := addrPort(c.LocalAddr()), addrPort(b.RemoteAddr())
			if seen.Addr() != backend.Addr() {
				t.Errorf("backend saw %s for the loopback client %s: want the normal source %s", seen, client, backend.Addr())
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "ping" {
				t.Errorf("backend read %q, %v; want ping", buf, err)
			}
		})
	}
}

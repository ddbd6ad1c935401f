package main_test

// Black-box tests of the hostproxy binary, spawned exactly as an engine
// spawns docker-proxy: fd 3 a pipe, fd 4 the host socket with -use-listen-fd.
// The binary is $HOSTPROXY_BIN when set, else built once into a temporary
// directory.

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// wait bounds every blocking step of a test.
const wait = 10 * time.Second

var (
	binDir  string
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hostproxy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostproxyBin returns the binary under test, building it on first use.
func hostproxyBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("HOSTPROXY_BIN"); p != "" {
			binPath = p
			return
		}
		binPath, binErr = buildHostproxy("hostproxy", nil)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// buildHostproxy builds this package into binDir/name, with env as the
// build's whole environment (nil: the test's own), and returns the binary's
// path.
func buildHostproxy(name string, env []string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not on PATH and HOSTPROXY_BIN unset: %w", err)
	}
	out := filepath.Join(binDir, name)
	cmd := exec.Command(gobin, "build", "-o", out, ".")
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hostproxy as %s: %w\n%s", name, err, b)
	}
	return out, nil
}

// proc is a running hostproxy.
type proc struct {
	args   []string
	cmd    *exec.Cmd
	status *os.File // read end of fd 3; nil without a status pipe
	stdout *testenv.Buffer
	stderr *testenv.Buffer
	exited chan struct{}
	err    error // Wait's result, once exited is closed
}

// spawn describes how to start hostproxy.
type spawn struct {
	noStatus bool       // no fd 3
	fd3      *os.File   // fd 3 instead of a pipe (e.g. a regular file)
	extra    []*os.File // fd 4, ...; closed in the parent after start
	stderr   io.Writer  // instead of a buffer
	bin      string     // the program instead of hostproxyBin's
	// env holds KEY=VALUE settings that replace KEY in the environment
	// hostproxy inherits.
	env []string
	// run starts the command instead of its Start method.
	run func(*exec.Cmd) error
}

// start runs hostproxy with args. It is killed at cleanup if still running.
func start(t *testing.T, sp spawn, args ...string) *proc {
	t.Helper()
	p := &proc{args: args, stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}, exited: make(chan struct{})}
	bin := sp.bin
	if bin == "" {
		bin = hostproxyBin(t)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if sp.stderr != nil {
		p.cmd.Stderr = sp.stderr
	}
	var w *os.File
	switch {
	case sp.fd3 != nil:
		p.cmd.ExtraFiles = []*os.File{sp.fd3}
	case !sp.noStatus:
		r, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		p.status, w = r, pw
		p.cmd.ExtraFiles = []*os.File{w}
	case len(sp.extra) > 0:
		p.cmd.ExtraFiles = []*os.File{nil}
	}
	p.cmd.ExtraFiles = append(p.cmd.ExtraFiles, sp.extra...)
	if len(sp.env) > 0 {
		p.cmd.Env = os.Environ()
		for _, kv := range sp.env {
			key, _, _ := strings.Cut(kv, "=")
			p.cmd.Env = slices.DeleteFunc(p.cmd.Env, func(e string) bool { return strings.HasPrefix(e, key+"=") })
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	run := p.cmd.Start
	if sp.run != nil {
		run = func() error { return sp.run(p.cmd) }
	}
	if err := run(); err != nil {
		t.Fatalf("start hostproxy %s: %v", strings.Join(args, " "), err)
	}
	if w != nil {
		w.Close()
	}
	for _, f := range sp.extra {
		f.Close()
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.status != nil {
			p.status.Close()
		}
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("hostproxy %s\nstderr:\n%s", strings.Join(args, " "), p.stderr)
		}
	})
	return p
}

// readStatus reads fd 3 until hostproxy closes it.
func (p *proc) readStatus(t *testing.T) string {
	t.Helper()
	if err := p.status.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.LimitReader(p.status, 4096))
	if err != nil {
		t.Fatalf("reading fd 3 (so far %q): %v", b, err)
	}
	return string(b)
}

// ready reads fd 3 and requires exactly want.
func (p *proc) ready(t *testing.T, want string) {
	t.Helper()
	if got := p.readStatus(t); got != want {
		t.Fatalf("fd 3: %q, want %q; stderr: %s", got, want, p.stderr)
	}
}

// startOnFreePorts spawns hostproxy with the arguments try returns and reads
// the status try expects from fd 3. try picks its ports with freePort or
// freeRange, and a port found free can be bound by another process before
// hostproxy binds it: when hostproxy reports "address already in use", try
// picks again and hostproxy is spawned anew, up to 5 times.
func startOnFreePorts(t *testing.T, sp spawn, try func() (args []string, want string)) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		args, want := try()
		p := start(t, sp, args...)
		got := p.readStatus(t)
		if got == want {
			return p
		}
		if attempt == 5 || !strings.Contains(got, "address already in use") {
			t.Fatalf("fd 3: %q, want %q; stderr: %s", got, want, p.stderr)
		}
		if code := p.exitCode(t, wait); code != 1 {
			t.Fatalf("hostproxy exited %d after a failed start, want 1", code)
		}
	}
}

// readyPort reads "0\n<port>\n" from fd 3 and returns the port.
func (p *proc) readyPort(t *testing.T) uint16 {
	t.Helper()
	got := p.readStatus(t)
	rest, ok := strings.CutPrefix(got, "0\n")
	line, ok2 := strings.CutSuffix(rest, "\n")
	port, err := strconv.ParseUint(line, 10, 16)
	if !ok || !ok2 || err != nil || port == 0 {
		t.Fatalf("fd 3: %q, want \"0\\n<port>\\n\"; stderr: %s", got, p.stderr)
	}
	return uint16(port)
}

// exitCode waits for the process to end and returns its exit code; a death
// by signal fails the test.
func (p *proc) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("hostproxy did not exit within %v", within)
	}
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("wait: %v", p.err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("hostproxy killed by %v; stderr: %s", ws.Signal(), p.stderr)
	}
	return ee.ExitCode()
}

// stop sends sig and requires exit code 0 within a few seconds.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.signal(t, sig)
	if code := p.exitCode(t, wait); code != 0 {
		t.Fatalf("exit code %d after %v, want 0; stderr: %s", code, sig, p.stderr)
	}
}

// signalCaught waits until hostproxy handles sig, as /proc says (SigCgt),
// then sends it: SIGHUP and SIGUSR2 are ignored until just after the ready
// report.
func (p *proc) signalCaught(t *testing.T, sig syscall.Signal) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a handler for %v", sig), func() bool { return p.catches(t, sig) })
	p.signal(t, sig)
}

// catches reports whether hostproxy has a handler for sig (SigCgt in
// /proc/PID/status).
func (p *proc) catches(t *testing.T, sig syscall.Signal) bool {
	t.Helper()
	return p.sigMask(t, "SigCgt")&sigBit(sig) != 0
}

// sigBit is sig's bit in a /proc signal mask.
func sigBit(sig syscall.Signal) uint64 { return 1 << (uint(sig) - 1) }

// sigMask returns the signal mask named field (SigCgt, SigIgn, ...) of
// hostproxy's /proc/PID/status.
func (p *proc) sigMask(t *testing.T, field string) uint64 {
	t.Helper()
	hex := p.statusField(t, field)
	mask, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		t.Fatalf("hostproxy's %s %q: %v", field, hex, err)
	}
	return mask
}

// statusField returns the value of field in hostproxy's /proc/PID/status.
func (p *proc) statusField(t *testing.T, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("hostproxy's status: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in hostproxy's status", field)
	return ""
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// quiet requires that nothing was written to stderr.
func (p *proc) quiet(t *testing.T) {
	t.Helper()
	if s := p.stderr.String(); s != "" {
		t.Errorf("hostproxy printed on stderr during a normal start and stop:\n%s", s)
	}
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

// haveIPv6 reports whether the host has ::1.
var haveIPv6 = sync.OnceValue(func() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
})

func requireIPv6(t *testing.T) {
	t.Helper()
	testenv.Require(t, haveIPv6(), "needs IPv6 loopback (::1)")
}

// families are the loopback addresses the tests run over.
var families = []struct {
	name string
	ip   netip.Addr
}{{"IPv4", lo4}, {"IPv6", lo6}}

// tcpEcho is a TCP server on ip (port 0: any) that answers every connection
// with tag and then echoes, half-closing after the client does.
func tcpEcho(t *testing.T, ip netip.Addr, port uint16, tag string) netip.AddrPort {
	t.Helper()
	return startEcho(t, "tcp", ip, port, tag)
}

// udpEcho is a UDP server on ip that answers every datagram with tag+datagram.
func udpEcho(t *testing.T, ip netip.Addr, port uint16, tag string) netip.AddrPort {
	t.Helper()
	return startEcho(t, "udp", ip, port, tag)
}

func startEcho(t *testing.T, proto string, ip netip.Addr, port uint16, tag string) netip.AddrPort {
	t.Helper()
	c, err := listenEcho(proto, ip, port, tag)
	if err != nil {
		t.Fatalf("%s echo server on %s: %v", proto, netip.AddrPortFrom(ip, port), err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(echoServer).addr
}

// checkTCP connects to addr, expects the backend's tag, and an echo of a
// message followed by EOF after a half-close.
func checkTCP(t *testing.T, addr netip.AddrPort, tag string) {
	t.Helper()
	if err := tryTCP(addr, tag, wait); err != nil {
		t.Fatal(err)
	}
}

func tryTCP(addr netip.AddrPort, tag string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr.String(), timeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	msg := "hello through " + addr.String()
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read from %s (got %q): %w", addr, got, err)
	}
	if string(got) != tag+msg {
		return fmt.Errorf("via %s got %q, want %q", addr, got, tag+msg)
	}
	return nil
}

// checkUDP sends a datagram to addr and expects tag+datagram back from addr.
func checkUDP(t *testing.T, addr netip.AddrPort, tag string) {
	t.Helper()
	var err error
	for i := 0; i < 5; i++ { // UDP may lose a datagram: bounded retries
		if err = tryUDP(addr, tag, wait/5); err == nil {
			return
		}
	}
	t.Fatal(err)
}

func tryUDP(addr netip.AddrPort, tag string, timeout time.Duration) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return fmt.Errorf("dial %s/udp: %w", addr, err)
	}
	defer c.Close()
	msg := "datagram to " + addr.String()
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("send to %s/udp: %w", addr, err)
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("no reply from %s/udp: %w", addr, err)
	}
	if string(buf[:n]) != tag+msg {
		return fmt.Errorf("from %s/udp got %q, want %q", addr, buf[:n], tag+msg)
	}
	return nil
}

// freePort returns a port that was free on ip for TCP and UDP a moment ago.
func freePort(t testing.TB, ip netip.Addr) uint16 {
	t.Helper()
	return freeRange(t, 1, ip)
}

// Test ports come from [portsLo, portsHi): below the kernel's ephemeral
// range, where outgoing connections (and their TIME_WAIT) do not take ports,
// and apart from the alloc package's tests (20000-29999), which run at the
// same time under go test ./... .
const portsLo, portsHi = 10000, 20000

// nextPort is where freeRange looks next. Successive calls look at
// successive windows, so that parallel tests never probe (and briefly hold)
// each other's ports.
var nextPort atomic.Uint32

func init() { nextPort.Store(uint32(rand.IntN(portsHi - portsLo))) }

// freeRange returns the first of n consecutive ports that were free for TCP
// and UDP on every address of ips a moment ago.
func freeRange(t testing.TB, n int, ips ...netip.Addr) uint16 {
	t.Helper()
	for try := 0; try < 50; try++ {
		off := (nextPort.Add(uint32(n)) - uint32(n)) % (portsHi - portsLo)
		if off+uint32(n) > portsHi-portsLo {
			continue // the window would wrap: take the next one
		}
		base := uint16(portsLo + off)
		ok := true
		var held []io.Closer
		for p := base; p < base+uint16(n) && ok; p++ {
			for _, ip := range ips {
				ap := netip.AddrPortFrom(ip, p)
				ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
				if err != nil {
					ok = false
					break
				}
				held = append(held, ln)
				u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
				if err != nil {
					ok = false
					break
				}
				held = append(held, u)
			}
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// echoRange starts n echo servers of proto on consecutive ports of ip, each
// tagged "backend <port>:", and returns the first port. It binds directly
// (retrying elsewhere) rather than checking first: other processes on the
// host bind ports too.
func echoRange(t *testing.T, proto string, ip netip.Addr, n int) uint16 {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := uint16(20000 + rand.IntN(12000))
		var closers []io.Closer
		ok := true
		for p := base; p < base+uint16(n); p++ {
			c, err := listenEcho(proto, ip, p, fmt.Sprintf("backend %d:", p))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, c)
		}
		if ok {
			t.Cleanup(func() {
				for _, c := range closers {
					c.Close()
				}
			})
			return base
		}
		for _, c := range closers {
			c.Close()
		}
	}
	t.Fatalf("no %d consecutive free ports for echo servers on %s", n, ip)
	return 0
}

// listenEcho is tcpEcho/udpEcho returning its closer (which waits for the
// server's goroutines) instead of registering a cleanup.
func listenEcho(proto string, ip netip.Addr, port uint16, tag string) (io.Closer, error) {
	ap := netip.AddrPortFrom(ip, port)
	if proto == "udp" {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, err
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf[len(tag):])
				if err != nil {
					return
				}
				copy(buf, tag)
				c.WriteToUDPAddrPort(buf[:len(tag)+n], from)
			}
		}()
		return echoServer{netip.MustParseAddrPort(c.LocalAddr().String()), func() error { err := c.Close(); <-done; return err }}, nil
	}
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * wait))
				io.WriteString(c, tag)
				io.Copy(c, c)
				c.CloseWrite()
			})
		}
	})
	return echoServer{netip.MustParseAddrPort(ln.Addr().String()), func() error { err := ln.Close(); wg.Wait(); return err }}, nil
}

type echoServer struct {
	addr  netip.AddrPort
	close func() error
}

func (e echoServer) Close() error { return e.close() }

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

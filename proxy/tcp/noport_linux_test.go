package tcp

import (
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
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
)

func init() { childModes["noport"] = noPortChild }

// TestNoSourcePort runs the proxy in a network namespace whose only route
// to the backend is a veth pair into a second namespace (so TIME_WAIT ports
// toward it are not reused: net.ipv4.tcp_tw_reuse is 2, loopback only) with
// net.ipv4.ip_local_port_range narrowed to four ports. Once those are in
// TIME_WAIT every backend connect fails with EADDRNOTAVAIL (moby#47537).
// While clients hammer it for two seconds the proxy must not spin: it
// makes a bounded number of connect attempts, uses little CPU, logs the
// cause with its remedy (proxy.AddrExhaustedHint) once, and relays again as soon as ports are free.
func TestNoSourcePort(t *testing.T) {
	testenv.RequireRoot(t)
	ip := testenv.RequireCommand(t, "ip")
	id := fmt.Sprintf("%d", os.Getpid())
	nsA, nsB := "tcploop-np-a-"+id, "tcploop-np-b-"+id
	vethA, vethB := "tlnpa"+id, "tlnpb"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", nsA)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", nsA).Run() })
	run("netns", "add", nsB)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", nsB).Run() })
	run("link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	run("-n", nsA, "addr", "add", "10.231.7.1/24", "dev", vethA)
	run("-n", nsB, "addr", "add", "10.231.7.2/24", "dev", vethB)
	for _, nl := range [][2]string{{nsA, vethA}, {nsB, vethB}, {nsA, "lo"}, {nsB, "lo"}} {
		run("-n", nl[0], "link", "set", nl[1], "up")
	}

	ln := listenInNetns(t, nsB, netip.MustParseAddrPort("10.231.7.2:0"))
	be := addrPort(ln.Addr())
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitFor))
				io.Copy(c, c)
			})
		}
	})

	lines, stop := startChild(t, ip, []string{"netns", "exec", nsA, os.Args[0], "-test.run=^$"},
		childEnv+"=noport", "HOSTPROXY_TCP_BACKEND="+be.String())
	used, err := strconv.Atoi(nextLine(t, lines, "echoed "))
	if err != nil {
		t.Fatal(err)
	}
	var attempts, clients int
	var cpuMS int64
	if _, err := fmt.Sscanf(nextLine(t, lines, "hammered "), "%d connects %d clients %d ms", &attempts, &clients, &cpuMS); err != nil {
		t.Fatal(err)
	}
	cpu := time.Duration(cpuMS) * time.Millisecond
	warns, err := strconv.Atoi(nextLine(t, lines, "warnings "))
	if err != nil {
		t.Fatal(err)
	}
	recovered := nextLine(t, lines, "recovered ")
	nextLine(t, lines, "done")
	stop()
	t.Logf("%d connections relayed before the 4 source ports ran out; then in 2s, %d clients got %d backend connect attempts, %v of CPU (whole child process, clients included); %d warning(s); recovered after %s",
		used, clients, attempts, cpu, warns, recovered)
	if used < 1 {
		t.Errorf("no connection relayed before the ports ran out")
	}
	// Backing off 5ms, 10ms, ... 1s allows about ten attempts per loop in
	// two seconds; a proxy that retries at once makes thousands.
	if limit := 16 * maxLoops; attempts > limit {
		t.Errorf("%d connect attempts in 2s while no source port was free, want at most %d", attempts, limit)
	}
	if cpu > 500*time.Millisecond {
		t.Errorf("the child used %v of CPU in 2s while no source port was free: spinning", cpu)
	}
	if warns != 1 {
		t.Errorf("%d warnings naming the remedy, want exactly 1", warns)
	}
}

// listenInNetns listens on ap inside the named network namespace. The
// socket keeps its namespace; the goroutine's thread returns to its own.
func listenInNetns(t testing.TB, ns string, ap netip.AddrPort) *net.TCPListener {
	t.Helper()
	type result struct {
		ln  *net.TCPListener
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked if the way back fails: the thread then ends with the goroutine
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		ln, lerr := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			if ln != nil {
				ln.Close()
			}
			res <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		res <- result{ln, lerr}
	}()
	r := <-res
	if r.err != nil {
		t.Fatalf("listen %s in %s: %v", ap, ns, r.err)
	}
	return r.ln
}

// noPortChild is the subprocess of TestNoSourcePort, run in the proxy's
// namespace. It narrows ip_local_port_range to four ports, relays echo
// connections until one is reset for want of a port ("echoed N"), hammers
// the proxy with clients for two seconds ("hammered A connects C clients
// D ms": A backend connect attempts, D the process's CPU time), reports
// the warnings logged ("warnings N"), widens the range and waits for an
// echo ("recovered D"), then "done".
func noPortChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "noport child:", err); return 1 }
	be, err := netip.ParseAddrPort(os.Getenv("HOSTPROXY_TCP_BACKEND"))
	if err != nil {
		return fail(err)
	}
	for file, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_local_port_range": "40000 40003",
		"/proc/sys/net/ipv4/tcp_tw_reuse":        "0",
	} {
		if err := os.WriteFile(file, []byte(v), 0o644); err != nil {
			return fail(err)
		}
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fail(err)
	}
	var warns atomic.Int64
	logger := logging.New(&warnCounter{n: &warns, want: "tcp_tw_reuse=1"})
	p := NewListener(ln, Config{Backend: be, Logger: logger})
	res := make(chan error, 1)
	go func() { res <- p.Serve(context.Background()) }()
	addr := addrPort(p.Addr())

	// The clients share the namespace, and with it the four ports: they
	// bind their own, outside the range.
	var lport atomic.Int64
	echo := func(deadline time.Time) error {
		from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 45000 + int(lport.Add(1)%15000)}
		return echoOnce(from, addr, deadline)
	}
	used := 0
	for ; used < 16; used++ {
		if err := echo(time.Now().Add(2 * time.Second)); err != nil {
			break
		}
	}
	fmt.Println("echoed", used)

	// Every accepted connection is one backend connect attempt.
	connects := func() uint64 {
		var n uint64
		p.EachMapping(func(_, _ netip.AddrPort, c *proxy.StreamCounters) { n += c.Accepted.Load() })
		return n
	}
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	before := connects()
	var clients atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(2 * time.Second)
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(end) {
				clients.Add(1)
				echo(time.Now().Add(100 * time.Millisecond))
			}
		})
	}
	wg.Wait()
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	fmt.Printf("hammered %d connects %d clients %d ms\n", connects()-before, clients.Load(), cpu.Milliseconds())
	fmt.Println("warnings", warns.Load())

	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40999"), 0o644); err != nil {
		return fail(err)
	}
	start := time.Now()
	for {
		err := echo(time.Now().Add(time.Second))
		if err == nil {
			break
		}
		if time.Since(start) > waitFor {
			return fail(fmt.Errorf("no echo %v after the port range was widened: %w", waitFor, err))
		}
	}
	fmt.Println("recovered", time.Since(start).Round(time.Millisecond))
	if err := p.Close(); err != nil {
		return fail(err)
	}
	if err := <-res; err != nil && !errors.Is(err, proxy.ErrClosed) {
		return fail(err)
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// warnCounter is a zapcore.Core that counts warnings whose message or a
// string field contains want.
type warnCounter struct {
	n    *atomic.Int64
	want string
}

func (w *warnCounter) Enabled(l zapcore.Level) bool      { return l >= zapcore.WarnLevel }
func (w *warnCounter) With([]zapcore.Field) zapcore.Core { return w }
func (w *warnCounter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if w.Enabled(e.Level) {
		return ce.AddCore(e, w)
	}
	return ce
}
func (w *warnCounter) Sync() error { return nil }
func (w *warnCounter) Write(e zapcore.Entry, fields []zapcore.Field) error {
	found := strings.Contains(e.Message, w.want)
	for _, f := range fields {
		found = found || (f.Type == zapcore.StringType && strings.Contains(f.String, w.want))
	}
	if found {
		w.n.Add(1)
	}
	fmt.Fprintln(os.Stderr, e.Level, e.Message)
	return nil
}

//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// hostproxyBin returns $HOSTPROXY_BIN, or builds cmd/hostproxy for t the way
// the README installs it (testenv.ReleaseEnv), so the figures the suite
// records are those of the shipped build.
func hostproxyBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HOSTPROXY_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("HOSTPROXY_BIN=%s: %v", p, err)
		}
		return abs
	}
	out := filepath.Join(t.TempDir(), "hostproxy")
	goBuild(t, "github.com/hostproxy/hostproxy/cmd/hostproxy", out, testenv.ReleaseEnv())
	return out
}

// echoserverBin builds the static echo server for t.
func echoserverBin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "echoserver")
	goBuild(t, "github.com/hostproxy/hostproxy/e2e/internal/echoserver", out, append(os.Environ(), "CGO_ENABLED=0"))
	return out
}

func goBuild(t *testing.T, pkg, out string, env []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// command runs name with args, bounded in time, and returns its stdout. On
// failure it fails t with the command's output.
func command(t *testing.T, stdin io.Reader, name string, args ...string) string {
	t.Helper()
	out, err := tryCommand(stdin, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryCommand(stdin io.Reader, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// waitFor polls cond until it holds or timeout passes, then fails t with
// what it waited for.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// poll reports whether cond held before timeout passed.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a stand-in for the condition
	}
}

var nsSeq atomic.Int32

// netns is a network namespace created by the test (ip netns add).
type netns struct {
	name string
	ino  uint64 // inode of the namespace, to recognise its processes
}

// newNetns creates a uniquely named namespace with loopback up. Cleanup
// kills every process still in it and deletes it, and with it its links,
// addresses and firewall rules.
func newNetns(t *testing.T, role string) netns {
	t.Helper()
	name := fmt.Sprintf("hpe2e-%d-%d-%s", os.Getpid(), nsSeq.Add(1), role)
	command(t, nil, "ip", "netns", "add", name)
	ns := netns{name: name}
	t.Cleanup(func() {
		ns.killAll(t)
		if _, err := tryCommand(nil, "ip", "netns", "del", name); err != nil {
			t.Errorf("delete namespace: %v", err)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(ns.path(), &st); err != nil {
		t.Fatalf("stat %s: %v", ns.path(), err)
	}
	ns.ino = st.Ino
	command(t, nil, "ip", "-n", name, "link", "set", "lo", "up")
	return ns
}

func (n netns) path() string { return "/run/netns/" + n.name }

// exec runs a command inside n.
func (n netns) exec(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	return command(t, stdin, "ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// do runs fn on an OS thread that has entered n. Sockets fn creates belong to
// n for their whole life and may be used from any goroutine afterwards. The
// thread returns to its own namespace afterwards; if it cannot, it stays
// locked and is discarded when the goroutine ends.
func (n netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		f, err := os.Open(n.path())
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// dialTCP connects to addr from inside n.
func (n netns) dialTCP(addr netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := n.do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialUDP creates a UDP socket inside n connected to addr.
func (n netns) dialUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

// bindable reports nil when addr can be bound for proto inside n.
func (n netns) bindable(proto string, addr netip.AddrPort) error {
	return n.do(func() error {
		var c io.Closer
		var err error
		if proto == "udp" {
			c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		} else {
			c, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		}
		if err != nil {
			return fmt.Errorf("bind %s/%s: %w", addr, proto, err)
		}
		return c.Close()
	})
}

// pids lists the processes whose network namespace is n.
func (n netns) pids() []int {
	want := fmt.Sprintf("net:[%d]", n.ino)
	var pids []int
	for _, pid := range allPIDs() {
		if pid == os.Getpid() {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && link == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAll kills every process in n, by pid, and waits for them to go.
func (n netns) killAll(t *testing.T) {
	t.Helper()
	pids := n.pids()
	if len(pids) == 0 {
		return
	}
	t.Logf("killing %d processes left in namespace %s", len(pids), n.name)
	killPIDs(t, pids)
	if !poll(10*time.Second, func() bool { return len(n.pids()) == 0 }) {
		t.Errorf("processes still in namespace %s: %v", n.name, n.pids())
	}
}

func killPIDs(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kill %d: %v", pid, err)
		}
	}
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// proc is a running process seen in /proc.
type proc struct {
	pid        int
	rssKiB     uint64 // resident set size
	privateKiB uint64 // resident pages not shared with any other process
}

// procsOf lists the processes running exe inside n, with their resident
// set size.
func procsOf(n netns, exe string) []proc {
	var out []proc
	for _, pid := range n.pids() {
		if p, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || p != exe {
			continue
		}
		out = append(out, proc{
			pid:        pid,
			rssKiB:     statusKiB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:"),
			privateKiB: statusKiB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Private_Clean:", "Private_Dirty:"),
		})
	}
	return out
}

// statusKiB sums the "Key: N kB" lines of keys in a /proc file (0 when the
// process is gone).
func statusKiB(path string, keys ...string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var sum uint64
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		for _, k := range keys {
			if rest, ok := strings.CutPrefix(s.Text(), k); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					v, _ := strconv.ParseUint(f[0], 10, 64)
					sum += v
				}
			}
		}
	}
	return sum
}

// roundTripTCP reads the peer line the echo server sends first, then sends
// payload, half-closes and expects payload back followed by EOF.
func roundTripTCP(c *net.TCPConn, payload string) (peer netip.AddrPort, err error) {
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return peer, err
	}
	go func() {
		c.Write([]byte(payload))
		c.CloseWrite()
	}()
	all, err := io.ReadAll(c)
	if err != nil {
		return peer, fmt.Errorf("read from %s: %w (got %q)", c.RemoteAddr(), err, all)
	}
	line, rest, ok := bytes.Cut(all, []byte("\n"))
	if !ok {
		return peer, fmt.Errorf("from %s: no peer line in %q", c.RemoteAddr(), all)
	}
	if peer, err = netip.ParseAddrPort(string(line)); err != nil {
		return peer, fmt.Errorf("from %s: peer line %q: %w", c.RemoteAddr(), line, err)
	}
	if string(rest) != payload {
		return peer, fmt.Errorf("from %s: echoed %q, want %q", c.RemoteAddr(), rest, payload)
	}
	return peer, nil
}

// roundTripUDP sends payload on c and expects "<peer>\n<payload>" back,
// retrying a few times in case a datagram is lost.
func roundTripUDP(c *net.UDPConn, payload string) (peer netip.AddrPort, err error) {
	buf := make([]byte, 2048)
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = c.Write([]byte(payload)); err != nil {
			return peer, fmt.Errorf("send to %s: %w", c.RemoteAddr(), err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		if n, err = c.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return peer, fmt.Errorf("read from %s: %w", c.RemoteAddr(), err)
		}
		line, rest, ok := bytes.Cut(buf[:n], []byte("\n"))
		if !ok {
			return peer, fmt.Errorf("from %s: no peer line in %q", c.RemoteAddr(), buf[:n])
		}
		if peer, err = netip.ParseAddrPort(string(line)); err != nil {
			return peer, fmt.Errorf("from %s: peer line %q: %w", c.RemoteAddr(), line, err)
		}
		if string(rest) != payload {
			return peer, fmt.Errorf("from %s: echoed %q, want %q", c.RemoteAddr(), rest, payload)
		}
		return peer, nil
	}
	return peer, fmt.Errorf("no answer from %s after 5 datagrams: %w", c.RemoteAddr(), err)
}

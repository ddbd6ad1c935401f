package main_test

// The least-privilege drop seen from outside: /proc/PID/task/*/status of a
// root-started hostproxy after ready, in every form, and the seccomp filter
// killing the process on a system call outside its list.

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

var (
	privOnce sync.Once
	privPath string
	privErr  error
)

// privBin is hostproxy as shipped (testenv.ReleaseEnv: static, which
// changes per-thread state on every thread, with the entry point that
// clears the bounding set) with the test-only trigger compiled in (-tags
// hostproxy_testtrigger, privilege_trigger.go).
func privBin(t *testing.T) string {
	t.Helper()
	privOnce.Do(func() {
		privPath, privErr = buildHostproxy("hostproxy-priv", testenv.ReleaseEnv("-tags=hostproxy_testtrigger"))
	})
	if privErr != nil {
		t.Fatal(privErr)
	}
	return privPath
}

// nobody returns the uid and gid of user nobody from /etc/passwd.
func nobody(t *testing.T) (uid, gid string) {
	t.Helper()
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) >= 4 && f[0] == "nobody" {
			return f[2], f[3]
		}
	}
	testenv.Require(t, false, "needs user nobody in /etc/passwd")
	return "", ""
}

// want is what every thread's status must show.
type want struct {
	uid, gid string // every field of Uid: and Gid:
	groups   string
	capEff   string // CapEff and CapPrm
	capBnd   string
	nnp      string
	seccomp  string
}

func dropped(t *testing.T) want {
	uid, gid := nobody(t)
	return want{uid: uid, gid: gid, capEff: "0000000000000000", capBnd: "0000000000000000", nnp: "1", seccomp: "2"}
}

// checkThreads reads /proc/pid/task/*/status and requires w of every
// thread.
func checkThreads(t *testing.T, pid int, w want) {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads of %d: %v", pid, err)
	}
	for _, path := range tasks {
		st := readStatusFile(t, path)
		wantFields := map[string]string{
			"Uid":        strings.Repeat(w.uid+" ", 4),
			"Gid":        strings.Repeat(w.gid+" ", 4),
			"Groups":     w.groups,
			"CapInh":     "0000000000000000",
			"CapPrm":     w.capEff,
			"CapEff":     w.capEff,
			"CapBnd":     w.capBnd,
			"CapAmb":     "0000000000000000",
			"NoNewPrivs": w.nnp,
			"Seccomp":    w.seccomp,
		}
		for k, v := range wantFields {
			if got := st[k]; got != strings.TrimSpace(v) {
				t.Errorf("%s: %s %q, want %q", path, k, got, strings.TrimSpace(v))
			}
		}
	}
	t.Logf("%d threads checked", len(tasks))
}

// readStatusFile parses a /proc status file into its fields, the values'
// whitespace reduced to single spaces.
func readStatusFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

// TestPrivilegeDropped: started as root, in every form, hostproxy reports
// ready as nobody with no capability, no_new_privs and the seccomp filter
// on every thread, and then still relays (new TCP connections and backend
// dials, new UDP flows, SIGUSR1 detaching the -await-nat filter) and stops
// cleanly on SIGTERM (a system call outside the list would kill it).
func TestPrivilegeDropped(t *testing.T) {
	testenv.RequireRoot(t)
	bin := privBin(t)
	w := dropped(t)

	t.Run("compat", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			backend := echo(t, proto, lo4, 0, "backend:")
			var host netip.AddrPort
			p := startOnFreePorts(t, spawn{bin: bin}, func() ([]string, string) {
				host = netip.AddrPortFrom(lo4, freePort(t, lo4))
				return engineArgs(proto, host, backend), "0\n"
			})
			checkThreads(t, p.cmd.Process.Pid, w)
			check(t, proto, host, "backend:")
			check(t, proto, host, "backend:")
			checkThreads(t, p.cmd.Process.Pid, w)
			p.stop(t, syscall.SIGTERM)
		}
	})
	t.Run("compat -use-listen-fd", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			backend := echo(t, proto, lo4, 0, "backend:")
			pr, _ := sockopt.ParseProto(proto)
			f, err := sockopt.Listen(pr, netip.AddrPortFrom(lo4, 0), sockopt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			info, err := sockopt.Inspect(f)
			if err != nil {
				t.Fatal(err)
			}
			host := info.Local
			p := start(t, spawn{bin: bin, extra: []*os.File{f}}, append(engineArgs(proto, host, backend), "-use-listen-fd")...)
			p.ready(t, "0\n")
			checkThreads(t, p.cmd.Process.Pid, w)
			check(t, proto, host, "backend:")
			p.stop(t, syscall.SIGTERM)
		}
	})
	t.Run("allocation -await-nat", func(t *testing.T) {
		testenv.RequireNetAdmin(t)
		for _, proto := range []string{"tcp", "udp"} {
			backend := echo(t, proto, lo4, 0, "backend:")
			p := start(t, spawn{bin: bin}, append(engineArgs(proto, netip.AddrPortFrom(lo4, 0), backend), "-await-nat")...)
			host := netip.AddrPortFrom(lo4, p.readyPort(t))
			checkThreads(t, p.cmd.Process.Pid, w)
			// SO_DETACH_FILTER needs no capability.
			p.signal(t, syscall.SIGUSR1)
			var err error
			for range 20 {
				if proto == "tcp" {
					err = tryTCP(host, "backend:", wait/20)
				} else {
					err = tryUDP(host, "backend:", wait/20)
				}
				if err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("%s after SIGUSR1: %v; stderr: %s", proto, err, p.stderr)
			}
			check(t, proto, host, "backend:")
			checkThreads(t, p.cmd.Process.Pid, w)
			p.stop(t, syscall.SIGTERM)
		}
	})
	t.Run("-L", func(t *testing.T) {
		tb := tcpEcho(t, lo4, 0, "tcp:")
		ub := udpEcho(t, lo4, 0, "udp:")
		var tf, uf netip.AddrPort
		p := startOnFreePorts(t, spawn{bin: bin}, func() ([]string, string) {
			port := freeRange(t, 2, lo4)
			tf, uf = netip.AddrPortFrom(lo4, port), netip.AddrPortFrom(lo4, port+1)
			return []string{
				"-L", fmt.Sprintf("%s:%s", tf, tb),
				"-L", fmt.Sprintf("%s:%s/udp", uf, ub),
				"-drain-timeout", "1s",
			}, "0\n"
		})
		checkThreads(t, p.cmd.Process.Pid, w)
		for range 3 {
			checkTCP(t, tf, "tcp:")
			checkUDP(t, uf, "udp:")
		}
		checkThreads(t, p.cmd.Process.Pid, w)
		p.stop(t, syscall.SIGTERM) // the graceful drain, with nothing open
	})
	t.Run("-transparent keeps CAP_NET_ADMIN only", func(t *testing.T) {
		testenv.RequireNetAdmin(t)
		w := w
		w.capEff = "0000000000001000" // CAP_NET_ADMIN (12) alone
		for _, proto := range []string{"tcp", "udp"} {
			backend := echo(t, proto, lo4, 0, "backend:")
			var host netip.AddrPort
			p := startOnFreePorts(t, spawn{bin: bin}, func() ([]string, string) {
				host = netip.AddrPortFrom(lo4, freePort(t, lo4))
				return append(engineArgs(proto, host, backend), "-transparent"), "0\n"
			})
			checkThreads(t, p.cmd.Process.Pid, w)
			check(t, proto, host, "backend:") // a loopback client: the normal source
			checkThreads(t, p.cmd.Process.Pid, w)
			p.stop(t, syscall.SIGTERM)
		}
	})
	t.Run("-seccomp=false", func(t *testing.T) {
		backend := tcpEcho(t, lo4, 0, "backend:")
		var host netip.AddrPort
		p := startOnFreePorts(t, spawn{bin: bin}, func() ([]string, string) {
			host = netip.AddrPortFrom(lo4, freePort(t, lo4))
			return append(engineArgs("tcp", host, backend), "-seccomp=false"), "0\n"
		})
		w := w
		w.seccomp = "0"
		checkThreads(t, p.cmd.Process.Pid, w)
		checkTCP(t, host, "backend:")
		p.stop(t, syscall.SIGTERM)
	})
	t.Run("the entry point cleared the bounding set", func(t *testing.T) {
		testenv.Require(t, runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64", "the entry point is built for amd64 and arm64 only")
		backend := tcpEcho(t, lo4, 0, "backend:")
		var host netip.AddrPort
		p := startOnFreePorts(t, spawn{bin: bin}, func() ([]string, string) {
			host = netip.AddrPortFrom(lo4, freePort(t, lo4))
			return append(engineArgs("tcp", host, backend), "-log-level", "debug"), "0\n"
		})
		checkThreads(t, p.cmd.Process.Pid, w)
		checkTCP(t, host, "backend:")
		p.stop(t, syscall.SIGTERM)
		// Drop found the set empty: no stop of the world per capability.
		if !strings.Contains(p.stderr.String(), `"bounding_dropped": 0}`) {
			t.Errorf("the drop cleared the bounding set itself (built without %s?); stderr:\n%s", testenv.EntryLDFlags, p.stderr)
		}
	})
	t.Run("-user UID:GID", func(t *testing.T) {
		backend := tcpEcho(t, lo4, 0, "backend:")
		var host netip.AddrPort
		p := startOnFreePorts(t, spawn{bin: bin}, func() ([]string, string) {
			host = netip.AddrPortFrom(lo4, freePort(t, lo4))
			return append(engineArgs("tcp", host, backend), "-user", "12345:23456"), "0\n"
		})
		w := w
		w.uid, w.gid = "12345", "23456"
		checkThreads(t, p.cmd.Process.Pid, w)
		checkTCP(t, host, "backend:")
		p.stop(t, syscall.SIGTERM)
		p.quiet(t)
	})
	t.Run("missing user keeps uid 0, drops the rest", func(t *testing.T) {
		backend := tcpEcho(t, lo4, 0, "backend:")
		var host netip.AddrPort
		// Started with supplementary groups, which go all the same.
		setpriv := testenv.RequireCommand(t, "setpriv")
		p := startOnFreePorts(t, spawn{bin: setpriv}, func() ([]string, string) {
			host = netip.AddrPortFrom(lo4, freePort(t, lo4))
			return append(append([]string{"--groups=1,2", "--", bin}, engineArgs("tcp", host, backend)...),
				"-user", "hostproxy-no-such-user"), "0\n"
		})
		w := w
		w.uid, w.gid = "0", "0"
		checkThreads(t, p.cmd.Process.Pid, w)
		checkTCP(t, host, "backend:")
		p.stop(t, syscall.SIGTERM)
		if !strings.Contains(p.stderr.String(), "not in /etc/passwd") {
			t.Errorf("stderr %q does not say why the uid was kept", p.stderr)
		}
	})
}

// TestPrivilegeNonRoot: started as an ordinary user (setpriv), hostproxy
// keeps its uid and still sets no_new_privs and the filter on every thread.
func TestPrivilegeNonRoot(t *testing.T) {
	testenv.RequireRoot(t)
	setpriv := testenv.RequireCommand(t, "setpriv")
	bin := privBin(t)
	w := dropped(t)
	backend := tcpEcho(t, lo4, 0, "backend:")
	var host netip.AddrPort
	p := startOnFreePorts(t, spawn{bin: setpriv}, func() ([]string, string) {
		host = netip.AddrPortFrom(lo4, freePort(t, lo4))
		return append([]string{"--reuid=" + w.uid, "--regid=" + w.gid, "--clear-groups", "--inh-caps=-all", "--", bin},
			engineArgs("tcp", host, backend)...), "0\n"
	})
	// setpriv leaves the bounding set to hostproxy, which cannot shrink it
	// without CAP_SETPCAP: only execve consults it, and execve is outside
	// the filter.
	w.capBnd = readStatusFile(t, fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))["CapBnd"]
	checkThreads(t, p.cmd.Process.Pid, w)
	checkTCP(t, host, "backend:")
	p.stop(t, syscall.SIGTERM)
}

// TestSeccompKills: a system call outside the list (mount(2), made by the
// test-only trigger right after the drop) kills the process with SIGSYS
// before it reports ready.
func TestSeccompKills(t *testing.T) {
	testenv.RequireRoot(t)
	bin := privBin(t)
	t.Setenv("HOSTPROXY_TEST_FORBIDDEN_SYSCALL", "1")
	backend := tcpEcho(t, lo4, 0, "backend:")
	p := start(t, spawn{bin: bin}, "-L", fmt.Sprintf("%s:%d:%s", lo4, freePort(t, lo4), backend))
	if got := p.readStatus(t); got != "" {
		t.Fatalf("fd 3: %q, want nothing (killed before ready); stderr: %s", got, p.stderr)
	}
	<-p.exited
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("wait: %v, want death by SIGSYS; stderr: %s", p.err, p.stderr)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("hostproxy ended with %v, want killed by SIGSYS; stderr: %s", p.err, p.stderr)
	}
}

// TestTransparentNeedsNetAdmin: -transparent without CAP_NET_ADMIN (root
// with it, and CAP_NET_RAW that the kernel also accepts for
// IP_TRANSPARENT, taken out of the bounding set) fails at start with one
// line naming the capability, in every form.
func TestTransparentNeedsNetAdmin(t *testing.T) {
	testenv.RequireRoot(t)
	setpriv := testenv.RequireCommand(t, "setpriv")
	bin := privBin(t)
	backend := netip.MustParseAddrPort("10.0.0.2:80")
	for _, args := range [][]string{
		engineArgs("tcp", netip.AddrPortFrom(lo4, freePort(t, lo4)), backend),
		engineArgs("udp", netip.AddrPortFrom(lo4, 0), backend),
		{"-L", fmt.Sprintf("%d:%s", freePort(t, lo4), backend)},
	} {
		p := start(t, spawn{bin: setpriv}, append(append([]string{"--bounding-set=-net_admin,-net_raw", "--", bin}, args...), "-transparent")...)
		status := p.readStatus(t)
		if code := p.exitCode(t, wait); code != 1 {
			t.Errorf("%v: exit code %d, want 1", args, code)
		}
		stderr := p.stderr.String()
		if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "-transparent") || !strings.Contains(stderr, "CAP_NET_ADMIN") {
			t.Errorf("%v: stderr %q, want one line naming -transparent and CAP_NET_ADMIN", args, stderr)
		}
		if !strings.HasPrefix(status, "1\n") || !strings.Contains(status, "CAP_NET_ADMIN") {
			t.Errorf("%v: fd 3 %q, want the same reason", args, status)
		}
		t.Logf("%s", strings.TrimSpace(stderr))
	}
}

package main_test

// Signals and systemd: SIGHUP, sd_notify and socket activation, against the
// built binary.

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// startCmd starts cmd (the binary, or a wrapper that execs it) as start
// does, with stdout and stderr into the proc's buffers unless cmd sets
// Stderr. It is killed at cleanup if still running.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{args: cmd.Args, cmd: cmd, stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout = p.stdout
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s\nstderr:\n%s", strings.Join(cmd.Args, " "), p.stderr)
		}
	})
	return p
}

// listenTCP4 returns a TCP socket listening on 127.0.0.1, a port of the
// kernel's choice, closed at cleanup.
func listenTCP4(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// startCmdStatus starts cmd as startCmd does, with a status pipe as fd 3,
// and returns what hostproxy wrote there.
func startCmdStatus(t *testing.T, cmd *exec.Cmd) (*proc, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	p := startCmd(t, cmd)
	w.Close()
	p.status = r
	return p, p.readStatus(t)
}

// waitFor polls cond until it holds, failing the test after wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dgramSocket is a unixgram socket the test listens on, in a directory of
// its own, standing in for systemd's notification socket or journald's.
type dgramSocket struct {
	path string
	c    *net.UnixConn
}

func listenDgram(t *testing.T, name string) dgramSocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return dgramSocket{path: path, c: c}
}

// notifySocket stands in for systemd's notification socket.
type notifySocket struct{ dgramSocket }

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	return &notifySocket{listenDgram(t, "notify")}
}

// expect reads the next notification and requires that it holds every
// assignment of want.
func (n *notifySocket) expect(t *testing.T, p *proc, want ...string) {
	t.Helper()
	n.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	k, err := n.c.Read(buf)
	if err != nil {
		t.Fatalf("no notification %q: %v; stderr: %s", want, err, p.stderr)
	}
	got := strings.Split(string(buf[:k]), "\n")
	for _, w := range want {
		if !contains(got, w) {
			t.Fatalf("notification %q lacks %q", buf[:k], w)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSIGHUPKeepsServing: SIGHUP is logged at info and ignored; the
// forwarder keeps serving, and SIGTERM still stops it.
func TestSIGHUPKeepsServing(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b), "-log-level", "info"}, "0\n"
	})
	for i := 1; i <= 2; i++ {
		p.signalCaught(t, syscall.SIGHUP)
		waitFor(t, "the SIGHUP log line", func() bool { return strings.Count(p.stderr.String(), "SIGHUP ignored") == i })
		checkTCP(t, netip.AddrPortFrom(lo4, port), "b:")
	}
	select {
	case <-p.exited:
		t.Fatalf("hostproxy exited after SIGHUP: %v", p.err)
	default:
	}
	p.stop(t, syscall.SIGTERM)
}

// TestSIGHUPDuringDrain: a SIGHUP while draining neither stops the drain at
// once (a second SIGTERM would) nor changes the exit code.
func TestSIGHUPDuringDrain(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b), "-drain-timeout", "30s"}, "0\n"
	})
	// An open connection keeps the drain going.
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(lo4, port).String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil { // "b:": the relay is up
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGTERM)
	p.signalCaught(t, syscall.SIGHUP)
	// Still draining: the open connection still relays.
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("the open connection stopped relaying after SIGHUP: %q, %v", buf, err)
	}
	select {
	case <-p.exited:
		t.Fatalf("hostproxy stopped draining on SIGHUP: %v", p.err)
	default:
	}
	c.Close() // the drain ends with the last connection
	if code := p.exitCode(t, wait); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// TestNotifyReadyAndStopping: with NOTIFY_SOCKET, hostproxy sends READY=1
// once it serves (a connection made right after it is relayed) and
// STOPPING=1 when SIGTERM starts the drain; a normal start and stop prints
// nothing.
func TestNotifyReadyAndStopping(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	n := listenNotify(t)
	for attempt := 1; ; attempt++ {
		port := freePort(t, lo4)
		cmd := exec.Command(hostproxyBin(t), "-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b))
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path)
		p := startCmd(t, cmd)
		n.c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 4096)
		k, err := n.c.Read(buf)
		if err != nil {
			if attempt < 5 && strings.Contains(p.stderr.String(), "address already in use") {
				continue
			}
			t.Fatalf("no READY=1: %v; stderr: %s", err, p.stderr)
		}
		if lines := strings.Split(string(buf[:k]), "\n"); !contains(lines, "READY=1") {
			t.Fatalf("first notification %q, want READY=1", buf[:k])
		}
		checkTCP(t, netip.AddrPortFrom(lo4, port), "b:")
		p.signal(t, syscall.SIGTERM)
		n.expect(t, p, "STOPPING=1")
		if code := p.exitCode(t, wait); code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		p.quiet(t)
		return
	}
}

// activationCmd runs hostproxy as systemd's socket activation does: files
// as fds 3, 4, ... and LISTEN_PID set to hostproxy's own pid, which only the
// child knows: sh exports its $$ and execs hostproxy in the same process.
func activationCmd(t *testing.T, names []string, files []*os.File, args ...string) *exec.Cmd {
	t.Helper()
	sh := testenv.RequireCommand(t, "sh")
	script := fmt.Sprintf(`export LISTEN_PID=$$ LISTEN_FDS=%d LISTEN_FDNAMES=%s; exec "$0" "$@"`, len(files), strings.Join(names, ":"))
	cmd := exec.Command(sh, append([]string{"-c", script, hostproxyBin(t)}, args...)...)
	cmd.ExtraFiles = files
	return cmd
}

// socketFile returns a dup of c's socket as an *os.File.
func socketFile(t *testing.T, c interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSocketActivation: the test binds a TCP and a UDP socket itself and
// passes them, with a third socket no mapping wants, as systemd does. The
// test holds its own copies until READY=1, so hostproxy could not have
// bound those ports itself (the bind would fail with EADDRINUSE and
// hostproxy exit 1): the mappings serve the inherited sockets. Once the test
// closes its copies, traffic still flows, so it flows through hostproxy's
// copies; the unused socket is closed with a warning (a connection to it is
// refused), and fd 3, a socket here, is not taken for a status pipe.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	u := udpEcho(t, lo4, 0, "u:")
	tl := listenTCP4(t)
	ul, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	spare := listenTCP4(t)
	tport := netip.MustParseAddrPort(tl.Addr().String())
	uport := netip.MustParseAddrPort(ul.LocalAddr().String())
	sport := netip.MustParseAddrPort(spare.Addr().String())

	files := []*os.File{socketFile(t, tl), socketFile(t, ul), socketFile(t, spare)}
	n := listenNotify(t)
	cmd := activationCmd(t, []string{"web", "dns", "spare"}, files,
		"-L", fmt.Sprintf("%s:%s", tport, b), "-L", fmt.Sprintf("%s:%s/udp", uport, u),
		"-drain-timeout", "1s") // an open UDP flow drains until the timeout
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path)
	p := startCmd(t, cmd)
	for _, f := range files {
		f.Close()
	}
	n.expect(t, p, "READY=1")
	tl.Close()
	ul.Close()
	spare.Close()

	checkTCP(t, tport, "b:")
	checkUDP(t, uport, "u:")
	if c, err := net.DialTimeout("tcp", sport.String(), wait); err == nil {
		c.Close()
		t.Errorf("the unused inherited socket %s still accepts connections", sport)
	}
	log := p.stderr.String()
	if !strings.Contains(log, "no -L mapping matches") || !strings.Contains(log, "spare") || strings.Count(log, "\n") != 1 {
		t.Errorf("want one warning naming the unused socket \"spare\", got:\n%s", log)
	}
	p.stop(t, syscall.SIGTERM)
}

// TestSocketActivationOtherPID: LISTEN_PID naming another process means the
// variables were inherited, not meant for hostproxy: fd 3 is then the status
// pipe as usual, and hostproxy binds its port itself.
func TestSocketActivationOtherPID(t *testing.T) {
	t.Parallel()
	b := tcpEcho(t, lo4, 0, "b:")
	for attempt := 1; ; attempt++ {
		port := freePort(t, lo4)
		cmd := exec.Command(hostproxyBin(t), "-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b))
		cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_PID=%d", os.Getpid()), "LISTEN_FDS=1")
		p, got := startCmdStatus(t, cmd)
		if attempt < 5 && strings.Contains(got, "address already in use") {
			continue
		}
		if got != "0\n" {
			t.Fatalf("fd 3: %q, want \"0\\n\"", got)
		}
		checkTCP(t, netip.AddrPortFrom(lo4, port), "b:")
		p.stop(t, syscall.SIGTERM)
		p.quiet(t)
		return
	}
}

// TestSystemdSocketActivate runs hostproxy under systemd's own
// systemd-socket-activate, which binds the port, waits for the first
// connection and then execs hostproxy with LISTEN_FDS, LISTEN_PID and
// LISTEN_FDNAMES set as systemd does: that first connection, queued on the
// inherited socket before hostproxy started, is relayed, and so are later
// ones.
func TestSystemdSocketActivate(t *testing.T) {
	t.Parallel()
	ssa := testenv.RequireCommand(t, "systemd-socket-activate")
	b := tcpEcho(t, lo4, 0, "b:")
	n := listenNotify(t)
	port := freePort(t, lo4)
	front := netip.AddrPortFrom(lo4, port)
	cmd := exec.Command(ssa, "-l", front.String(), "--fdname=web", "-E", "NOTIFY_SOCKET="+n.path,
		hostproxyBin(t), "-L", fmt.Sprintf("%s:%s", front, b))
	p := startCmd(t, cmd)
	// systemd-socket-activate is listening once it says so on stderr.
	waitFor(t, "systemd-socket-activate to listen", func() bool { return strings.Contains(p.stderr.String(), "Listening on") })
	checkTCP(t, front, "b:")
	n.expect(t, p, "READY=1")
	checkTCP(t, front, "b:")
	p.stop(t, syscall.SIGTERM)
	n.expect(t, p, "STOPPING=1")
}

// TestSocketActivationBadCount: LISTEN_FDS that is not a count, with our
// pid in LISTEN_PID, is reported as a warning and ignored: fd 3 is the
// status pipe, and hostproxy binds its port itself and serves.
func TestSocketActivationBadCount(t *testing.T) {
	t.Parallel()
	sh := testenv.RequireCommand(t, "sh")
	b := tcpEcho(t, lo4, 0, "b:")
	for attempt := 1; ; attempt++ {
		port := freePort(t, lo4)
		cmd := exec.Command(sh, "-c", `export LISTEN_PID=$$ LISTEN_FDS=many; exec "$0" "$@"`,
			hostproxyBin(t), "-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b))
		p, got := startCmdStatus(t, cmd)
		if attempt < 5 && strings.Contains(got, "address already in use") {
			continue
		}
		if got != "0\n" {
			t.Fatalf("fd 3: %q, want \"0\\n\"", got)
		}
		checkTCP(t, netip.AddrPortFrom(lo4, port), "b:")
		if log := p.stderr.String(); !strings.Contains(log, `LISTEN_FDS=\"many\"`) || strings.Count(log, "\n") != 1 {
			t.Errorf("want one warning naming LISTEN_FDS, got:\n%s", log)
		}
		p.stop(t, syscall.SIGTERM)
		return
	}
}

// TestSignalDispositions: by the ready report hostproxy handles SIGINT and
// SIGTERM, and SIGUSR1 with -await-nat; SIGHUP and SIGUSR2 from just after
// it; SIGPIPE is ignored, and so is SIGUSR1 without -await-nat.
func TestSignalDispositions(t *testing.T) {
	for _, await := range []bool{false, true} {
		t.Run(fmt.Sprintf("await-nat=%v", await), func(t *testing.T) {
			t.Parallel()
			backend := echo(t, "udp", lo4, 0, "b:")
			args := engineArgs("udp", netip.AddrPortFrom(lo4, 0), backend)
			if await {
				args = append(args, "-await-nat")
			}
			p := start(t, spawn{}, args...)
			p.readyPort(t)
			caught := p.sigMask(t, "SigCgt")
			for _, s := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
				if caught&sigBit(s) == 0 {
					t.Errorf("no handler for %v at the ready report", s)
				}
			}
			if got := caught&sigBit(syscall.SIGUSR1) != 0; got != await {
				t.Errorf("a handler for SIGUSR1 at the ready report: %v, want %v", got, await)
			}
			waitFor(t, "handlers for SIGHUP and SIGUSR2", func() bool {
				return p.catches(t, syscall.SIGHUP) && p.catches(t, syscall.SIGUSR2)
			})
			ignored := p.sigMask(t, "SigIgn")
			if ignored&sigBit(syscall.SIGPIPE) == 0 {
				t.Error("SIGPIPE is not ignored")
			}
			if got := ignored&sigBit(syscall.SIGUSR1) != 0; got == await {
				t.Errorf("SIGUSR1 ignored: %v, want %v", got, !await)
			}
			p.stop(t, syscall.SIGTERM)
		})
	}
}

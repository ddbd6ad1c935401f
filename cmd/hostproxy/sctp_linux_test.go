package main_test

// Black-box tests of the hostproxy binary with -proto sctp. Every helper here
// is prefixed with sctp so that it cannot clash with the rest of the package's
// tests. The binary is $HOSTPROXY_BIN when set (the SCTP VM sets it), else
// built into the test's temporary directory.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
)

// sctpWait bounds every blocking step; generous for TCG emulation.
const sctpWait = 20 * time.Second

var sctpLoopback = netip.MustParseAddr("127.0.0.1")

// sctpProc is a running hostproxy with fd 3 connected to status.
type sctpProc struct {
	cmd    *exec.Cmd
	status *os.File // read end of fd 3
	stderr *syncBuffer
	waited chan error
}

// sctpStart runs hostproxy with args, fd 3 a pipe, and extra as fd 4, ....
// The process is killed at cleanup if it is still running.
func sctpStart(t *testing.T, args []string, extra ...*os.File) *sctpProc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &sctpProc{status: r, stderr: &syncBuffer{}, waited: make(chan error, 1)}
	p.cmd = exec.Command(hostproxyBin(t), args...)
	p.cmd.Stderr = p.stderr
	p.cmd.ExtraFiles = append([]*os.File{w}, extra...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	w.Close()
	for _, f := range extra {
		f.Close()
	}
	go func() { p.waited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		r.Close()
		select {
		case <-p.waited:
		default:
			p.cmd.Process.Kill()
			<-p.waited
		}
		if t.Failed() {
			t.Logf("hostproxy %s\nstderr:\n%s", strings.Join(args, " "), p.stderr)
		}
	})
	return p
}

// readStatus reads fd 3 until EOF or until it holds lines lines.
func (p *sctpProc) readStatus(t *testing.T, lines int) string {
	t.Helper()
	p.status.SetReadDeadline(time.Now().Add(sctpWait))
	var got []byte
	buf := make([]byte, 256)
	for bytes.Count(got, []byte("\n")) < lines && len(got) < 4096 {
		n, err := p.status.Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading fd 3 (so far %q): %v", got, err)
		}
	}
	return string(got)
}

// stop sends sig and expects the process to exit with code want.
func (p *sctpProc) stop(t *testing.T, sig os.Signal, want int) {
	t.Helper()
	if sig != nil {
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatalf("signal %v: %v", sig, err)
		}
	}
	select {
	case err := <-p.waited:
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if code != want {
			t.Fatalf("exit code %d, want %d; stderr:\n%s", code, want, p.stderr)
		}
		p.waited <- err // for cleanup
	case <-time.After(sctpWait):
		t.Fatalf("hostproxy did not exit within %v of %v", sctpWait, sig)
	}
}

// sctpEcho starts an SCTP echo server on 127.0.0.1 that answers every message
// on the stream it came with and the PPID plus one.
func sctpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := sctp.Listen(netip.AddrPortFrom(sctpLoopback, 0))
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []*sctp.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, sctp.BufferSize)
				for {
					n, info, _, err := c.ReadMsg(buf)
					if err != nil {
						return
					}
					info.PPID++
					if _, err := c.WriteMsg(buf[:n], info); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Abort()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr()
}

// sctpDial sets up an association within d; it returns nil on a timeout.
func sctpDial(t *testing.T, addr netip.AddrPort, d time.Duration) *sctp.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := sctp.Dial(ctx, addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Abort() })
	return c
}

// sctpCheckEcho sends messages on several streams through addr and checks the
// echo server's replies (same stream, PPID plus one).
func sctpCheckEcho(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	c := sctpDial(t, addr, sctpWait)
	if c == nil {
		t.Fatalf("no association with %s within %v", addr, sctpWait)
	}
	c.SetDeadline(time.Now().Add(sctpWait))
	buf := make([]byte, 1024)
	for i, stream := range []uint16{0, 5, 1000} {
		msg := fmt.Sprintf("message %d via hostproxy", i)
		info := sctp.Info{Stream: stream, PPID: uint32(100 + i)}
		if _, err := c.WriteMsg([]byte(msg), info); err != nil {
			t.Fatalf("write: %v", err)
		}
		n, got, _, err := c.ReadMsg(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		want := sctp.Info{Stream: stream, PPID: info.PPID + 1}
		if string(buf[:n]) != msg || got != want {
			t.Fatalf("reply %q %+v, want %q %+v", buf[:n], got, msg, want)
		}
	}
	c.Close()
}

// sctpFreePort returns a port that was free for SCTP on 127.0.0.1 a moment ago.
func sctpFreePort(t *testing.T) uint16 {
	t.Helper()
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLoopback, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	return info.Local.Port()
}

func sctpPort(p uint16) string { return strconv.Itoa(int(p)) }

// TestSCTPCompatListenFD is docker's way: fd 4 is a listening SCTP socket,
// fd 3 gets exactly "0\n", SIGTERM ends the process with status 0.
func TestSCTPCompatListenFD(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLoopback, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	host := info.Local
	p := sctpStart(t, []string{
		"-proto", "sctp",
		"-host-ip", host.Addr().String(), "-host-port", sctpPort(host.Port()),
		"-container-ip", backend.Addr().String(), "-container-port", sctpPort(backend.Port()),
		"-use-listen-fd",
	}, f)
	if got := p.readStatus(t, 2); got != "0\n" {
		t.Fatalf("fd 3: %q, want %q", got, "0\n")
	}
	sctpCheckEcho(t, host)
	sctpCheckEcho(t, host) // a second association
	p.stop(t, syscall.SIGTERM, 0)
	if s := p.stderr.String(); s != "" {
		t.Errorf("a normal start and stop printed on stderr:\n%s", s)
	}
}

// TestSCTPCompatBinds is the older engines' way: hostproxy binds
// host-ip:host-port itself.
func TestSCTPCompatBinds(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	port := sctpFreePort(t)
	p := sctpStart(t, []string{
		"-proto", "sctp",
		"-host-ip", "127.0.0.1", "-host-port", sctpPort(port),
		"-container-ip", backend.Addr().String(), "-container-port", sctpPort(backend.Port()),
	})
	if got := p.readStatus(t, 2); got != "0\n" {
		t.Fatalf("fd 3: %q, want %q", got, "0\n")
	}
	sctpCheckEcho(t, netip.AddrPortFrom(sctpLoopback, port))
	p.stop(t, syscall.SIGINT, 0)
}

// TestSCTPAllocationAwaitNAT: -host-port 0 -await-nat allocates a port,
// reports "0\n<port>\n" on fd 3, and the socket answers nothing until SIGUSR1.
func TestSCTPAllocationAwaitNAT(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	p := sctpStart(t, []string{
		"-proto", "sctp",
		"-host-ip", "127.0.0.1", "-host-port", "0",
		"-container-ip", backend.Addr().String(), "-container-port", sctpPort(backend.Port()),
		"-await-nat",
	})
	status := p.readStatus(t, 2)
	lines := strings.Split(status, "\n")
	if len(lines) != 3 || lines[0] != "0" || lines[2] != "" {
		t.Fatalf("fd 3: %q, want \"0\\n<port>\\n\"", status)
	}
	port, err := strconv.ParseUint(lines[1], 10, 16)
	if err != nil || port == 0 {
		t.Fatalf("fd 3: port %q: %v", lines[1], err)
	}
	host := netip.AddrPortFrom(sctpLoopback, uint16(port))

	if c := sctpDial(t, host, 500*time.Millisecond); c != nil {
		t.Fatal("the allocated socket answered INIT before SIGUSR1")
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The filter goes away asynchronously after the signal: retry, bounded.
	var c *sctp.Conn
	for i := 0; i < 20 && c == nil; i++ {
		c = sctpDial(t, host, time.Second)
	}
	if c == nil {
		t.Fatal("no association within 20s of SIGUSR1")
	}
	c.Close()
	sctpCheckEcho(t, host)
	p.stop(t, syscall.SIGTERM, 0)
}

// TestSCTPForwarder runs the standalone forwarder with an /sctp mapping.
func TestSCTPForwarder(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	port := sctpFreePort(t)
	p := sctpStart(t, []string{
		"-L", fmt.Sprintf("127.0.0.1:%d:%s/sctp", port, backend),
	})
	host := netip.AddrPortFrom(sctpLoopback, port)
	var c *sctp.Conn
	for i := 0; i < 20 && c == nil; i++ { // no fd 3 protocol: wait for the listener
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := sctp.Dial(ctx, host)
		cancel()
		if err == nil {
			c = conn
			break
		}
		select {
		case err := <-p.waited:
			p.waited <- err
			t.Fatalf("hostproxy exited: %v", err)
		case <-time.After(100 * time.Millisecond): // refused: not listening yet
		}
	}
	if c == nil {
		t.Fatal("the forwarder did not listen within 20 attempts")
	}
	c.Close()
	sctpCheckEcho(t, host)
	p.stop(t, syscall.SIGTERM, 0)
}

// TestSCTPListenFDWrongType gives fd 4 a TCP socket with -proto sctp: exit 1
// with "1\n<reason>" on fd 3. It needs no SCTP in the kernel.
func TestSCTPListenFDWrongType(t *testing.T) {
	f, err := sockopt.Listen(sockopt.TCP, netip.AddrPortFrom(sctpLoopback, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	p := sctpStart(t, []string{
		"-proto", "sctp",
		"-host-ip", "127.0.0.1", "-host-port", sctpPort(info.Local.Port()),
		"-container-ip", "127.0.0.1", "-container-port", "9",
		"-use-listen-fd",
	}, f)
	status := p.readStatus(t, 2)
	if !strings.HasPrefix(status, "1\n") || len(strings.TrimSpace(status[2:])) == 0 {
		t.Fatalf("fd 3: %q, want \"1\\n<reason>\"", status)
	}
	t.Logf("reason: %s", strings.TrimSpace(status[2:]))
	p.stop(t, nil, 1)
}

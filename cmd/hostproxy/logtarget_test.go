package main_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// journal is a unixgram socket standing in for journald's, passed to
// hostproxy through its test-only variable.
type journal struct{ dgramSocket }

func listenJournal(t *testing.T) *journal {
	t.Helper()
	return &journal{listenDgram(t, "journal.socket")}
}

func (j *journal) env() []string {
	return append(os.Environ(), "HOSTPROXY_TEST_JOURNAL_SOCKET="+j.path)
}

// next reads one entry and decodes the native protocol.
func (j *journal) next(t *testing.T, p *proc) map[string]string {
	t.Helper()
	j.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, err := j.c.Read(buf)
	if err != nil {
		t.Fatalf("no journal entry: %v; stderr: %s", err, p.stderr)
	}
	return decodeJournal(t, buf[:n])
}

// empty requires that no entry is queued.
func (j *journal) empty(t *testing.T) {
	t.Helper()
	j.c.SetReadDeadline(time.Now()) // already expired: only what is queued
	buf := make([]byte, 65536)
	if n, err := j.c.Read(buf); err == nil {
		t.Fatalf("unexpected journal entry: %q", buf[:n])
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
}

func decodeJournal(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		if name, value, ok := bytes.Cut(b[:nl], []byte("=")); ok {
			out[string(name)] = string(value)
			b = b[nl+1:]
			continue
		}
		name := string(b[:nl])
		b = b[nl+1:]
		if len(b) < 8 {
			t.Fatalf("field %s: no length", name)
		}
		n := binary.LittleEndian.Uint64(b)
		if uint64(len(b)) < 8+n+1 {
			t.Fatalf("field %s: %d bytes do not fit", name, n)
		}
		out[name] = string(b[8 : 8+n])
		b = b[8+n+1:]
	}
	return out
}

func devNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestLogTargetAutoDevNull: with stderr on /dev/null, as dockerd 20.10
// starts its proxies, the default -log-target auto writes to the journal:
// the warning about an unused activation socket arrives with its priority,
// identifier, message and fields, and so does SIGHUP's info line.
func TestLogTargetAutoDevNull(t *testing.T) {
	t.Parallel()
	j := listenJournal(t)
	b := tcpEcho(t, lo4, 0, "b:")
	tl := listenTCP4(t)
	spare := listenTCP4(t)
	files := []*os.File{socketFile(t, tl), socketFile(t, spare)}
	cmd := activationCmd(t, []string{"web", "spare"}, files, "-L", fmt.Sprintf("%s:%s", tl.Addr(), b), "-log-level", "info")
	cmd.Env = j.env()
	cmd.Stderr = devNull(t)
	p := startCmd(t, cmd)
	for _, f := range files {
		f.Close()
	}
	e := j.next(t, p)
	for name, want := range map[string]string{
		"PRIORITY":          "4",
		"SYSLOG_IDENTIFIER": "hostproxy",
		"FD":                "4",
		"NAME":              "spare (LISTEN_FDS fd 4)",
		"SOCKET":            "tcp socket on " + spare.Addr().String(),
	} {
		if e[name] != want {
			t.Errorf("%s=%q, want %q (entry %q)", name, e[name], want, e)
		}
	}
	if !strings.Contains(e["MESSAGE"], "no -L mapping matches") {
		t.Errorf("MESSAGE=%q", e["MESSAGE"])
	}
	checkTCP(t, netip.MustParseAddrPort(tl.Addr().String()), "b:")
	p.signalCaught(t, syscall.SIGHUP)
	e = j.next(t, p)
	if e["PRIORITY"] != "6" || !strings.Contains(e["MESSAGE"], "SIGHUP ignored") {
		t.Errorf("after SIGHUP: %q, want an info entry about SIGHUP", e)
	}
	p.stop(t, syscall.SIGTERM)
}

// TestLogTargetAutoQuiet: a normal start and stop under auto with stderr on
// /dev/null sends nothing to the journal (the default level is warn).
func TestLogTargetAutoQuiet(t *testing.T) {
	t.Parallel()
	j := listenJournal(t)
	b := tcpEcho(t, lo4, 0, "b:")
	var port uint16
	p := startOnFreePorts(t, spawn{stderr: devNull(t)}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b)}, "0\n"
	})
	checkTCP(t, netip.AddrPortFrom(lo4, port), "b:")
	p.stop(t, syscall.SIGTERM)
	j.empty(t)
}

// TestLogTargetStderr: auto with stderr a pipe (not the journal stream)
// writes to stderr, and -log-target journald to the journal whatever
// stderr is.
func TestLogTargetStderr(t *testing.T) {
	t.Parallel()
	j := listenJournal(t)
	b := tcpEcho(t, lo4, 0, "b:")
	for _, target := range []string{"auto", "stderr", "journald"} {
		t.Run(target, func(t *testing.T) {
			port := freePort(t, lo4)
			cmd := exec.Command(hostproxyBin(t), "-L", fmt.Sprintf("127.0.0.1:%d:%s", port, b), "-log-level", "info", "-log-target", target)
			cmd.Env = j.env()
			n := listenNotify(t)
			cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.path)
			p := startCmd(t, cmd)
			n.expect(t, p, "READY=1")
			p.signalCaught(t, syscall.SIGHUP)
			if target == "journald" {
				if e := j.next(t, p); !strings.Contains(e["MESSAGE"], "SIGHUP ignored") {
					t.Errorf("journal entry %q, want the SIGHUP line", e)
				}
			} else {
				waitFor(t, "the SIGHUP line on stderr", func() bool { return strings.Contains(p.stderr.String(), "SIGHUP ignored") })
			}
			p.stop(t, syscall.SIGTERM)
			j.empty(t)
			if target == "journald" && p.stderr.String() != "" {
				t.Errorf("stderr with -log-target journald: %s", p.stderr)
			}
		})
	}
}

// TestLogTargetJournaldMissing: -log-target journald without a journal
// socket is a start error, one line, exit 1.
func TestLogTargetJournaldMissing(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(hostproxyBin(t), "-L", "127.0.0.1:1:127.0.0.1:1", "-log-target", "journald")
	cmd.Env = append(os.Environ(), "HOSTPROXY_TEST_JOURNAL_SOCKET="+filepath.Join(t.TempDir(), "absent"))
	p := startCmd(t, cmd)
	if code := p.exitCode(t, wait); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if got := p.stderr.String(); !strings.HasPrefix(got, "hostproxy: -log-target journald: no journal socket at ") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one line naming the missing socket", got)
	}
}

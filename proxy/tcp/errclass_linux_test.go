package tcp

import (
	"errors"
	"net"
	"os"
	"testing"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/proxy"
)

// TestErrorClasses drives a loop's accept and dial failure paths with each
// class of error (proxy.ClassifyAccept, proxy.ClassifyDial) and checks what
// the loop does: skip, back off or stop, and what it logs.
func TestErrorClasses(t *testing.T) {
	logger, logs := newRecorder(zapcore.WarnLevel)
	p := NewListener(loopback(t), Config{Backend: refusedAddr(t), Logger: logger})
	t.Cleanup(func() { p.Close() })
	l, err := newLoop(p, false) // never run: the test calls its handlers
	if err != nil {
		t.Fatalf("newLoop: %v", err)
	}
	t.Cleanup(l.close)
	pt := p.ports[0]
	warnings := func() int { return len(logs.atLeast(zapcore.WarnLevel)) }

	accept := func(e unix.Errno) error { return os.NewSyscallError("accept4", e) }
	l.acceptFailed(pt, accept(unix.EPERM))
	if l.paused || warnings() != 0 {
		t.Errorf("EPERM from accept (one connection lost): paused %t, %d warnings; want no pause, no warning", l.paused, warnings())
	}
	l.acceptFailed(pt, accept(unix.EMFILE))
	if !l.paused || warnings() != 1 {
		t.Errorf("EMFILE from accept: paused %t, %d warnings; want a pause and 1 warning", l.paused, warnings())
	}
	l.acceptFailed(pt, accept(unix.EMFILE))
	if warnings() != 1 {
		t.Errorf("a second EMFILE at once logged %d warnings, want 1 (rate-limited)", warnings())
	}
	if got := pt.counters.AcceptErrors.Load(); got != 3 {
		t.Errorf("AcceptErrors = %d, want 3", got)
	}

	// dial fails a fresh record of an accepted connection with err.
	dial := func(err error) {
		t.Helper()
		fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if serr != nil {
			t.Fatal(serr)
		}
		c, idx := l.alloc()
		c.fd[sideClient], c.pt = int32(fd), pt
		l.live++
		pt.counters.Active.Add(1)
		l.paused = false
		l.dialFailed(c, idx, err)
	}
	connect := func(e unix.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", e)}
	}
	before := warnings()
	dial(connect(unix.ECONNREFUSED))
	dial(connect(unix.ECONNREFUSED))
	if l.paused || warnings() != before+1 {
		t.Errorf("refused twice: paused %t, %d new warnings; want no pause, 1 warning", l.paused, warnings()-before)
	}
	before = warnings()
	dial(connect(unix.EADDRNOTAVAIL))
	if !l.paused || warnings() != before+1 {
		t.Fatalf("EADDRNOTAVAIL: paused %t, %d new warnings; want a pause and 1 warning", l.paused, warnings()-before)
	}
	w := logs.atLeast(zapcore.WarnLevel)[before]
	if f, ok := w.fields["remedy"]; !ok || f.String != proxy.AddrExhaustedHint("tcp") {
		t.Errorf("warning %q: remedy %q, want %q", w.Message, f.String, proxy.AddrExhaustedHint("tcp"))
	}
	dial(connect(unix.EADDRNOTAVAIL))
	if !l.paused || warnings() != before+1 {
		t.Errorf("second EADDRNOTAVAIL: paused %t, %d new warnings; want a pause, no new warning", l.paused, warnings()-before-1)
	}
	if got := pt.counters.DialErrors.Load(); got != 4 {
		t.Errorf("DialErrors = %d, want 4", got)
	}
	if l.live != 0 || pt.counters.Active.Load() != 0 {
		t.Errorf("after the failed dials: %d live records, Active %d; want 0", l.live, pt.counters.Active.Load())
	}

	// Fatal: the listening socket is unusable.
	l.acceptFailed(pt, accept(unix.EBADF))
	p.mu.Lock()
	fatal := p.fatal
	p.mu.Unlock()
	if !errors.Is(fatal, unix.EBADF) {
		t.Errorf("after EBADF from accept the proxy's error is %v, want EBADF", fatal)
	}
}

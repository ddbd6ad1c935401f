package tcp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/logging"
)

func TestMain(m *testing.M) {
	if child, ok := childModes[os.Getenv(childEnv)]; ok {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m)
}

// childEnv selects a subprocess mode of the test binary (see childModes,
// filled in by the Linux test files).
const childEnv = "HOSTPROXY_TCP_TEST_CHILD"

var childModes = map[string]func() int{}

// waitFor bounds every wait in these tests.
const waitFor = 10 * time.Second

// loopback returns a TCP listener on 127.0.0.1:0.
func loopback(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen 127.0.0.1:0/tcp: %v", err)
	}
	return ln
}

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

// startProxy serves a proxy on 127.0.0.1:0 relaying to backend. Cleanup
// closes it and checks that Serve returned nil.
func startProxy(t testing.TB, cfg Config) (*Proxy, netip.AddrPort) {
	t.Helper()
	p := NewListener(loopback(t), cfg)
	serve(t, p)
	return p, addrPort(p.Addr())
}

// serve runs p.Serve in a goroutine and returns a function that waits for
// its result (bounded). Cleanup closes p and checks that Serve returned nil.
func serve(t testing.TB, p *Proxy) (wait func() error) {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- p.Serve(context.Background()) }()
	var (
		once sync.Once
		err  error
	)
	wait = func() error {
		once.Do(func() {
			select {
			case err = <-res:
			case <-time.After(waitFor):
				err = errors.New("Serve did not return")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return wait
}

// backend is a test server on 127.0.0.1:0 running handle for each connection.
type backend struct {
	ln    *net.TCPListener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*net.TCPConn]struct{}
}

// newBackend starts a backend; Cleanup closes it and every connection and
// waits for its goroutines.
func newBackend(t testing.TB, handle func(*net.TCPConn)) (*backend, netip.AddrPort) {
	t.Helper()
	b := &backend{ln: loopback(t), conns: make(map[*net.TCPConn]struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := b.ln.AcceptTCP()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				handle(c)
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		b.ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b, addrPort(b.ln.Addr())
}

func (b *backend) open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// echo copies everything back, then half-closes.
func echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		c.CloseWrite()
	}
}

// newHandOver starts a backend that passes each connection to the test and
// leaves it alone until the test ends.
func newHandOver(t testing.TB) (netip.AddrPort, <-chan *net.TCPConn) {
	t.Helper()
	ch := make(chan *net.TCPConn, 16)
	quit := make(chan struct{})
	_, addr := newBackend(t, func(c *net.TCPConn) {
		ch <- c
		<-quit
	})
	t.Cleanup(func() { close(quit) }) // runs before the backend's Cleanup
	return addr, ch
}

func dial(t testing.TB, ap netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("dial %s/tcp: %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	return c
}

func accepted(t testing.TB, ch <-chan *net.TCPConn) *net.TCPConn {
	t.Helper()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(waitFor))
		return c
	case <-time.After(waitFor):
		t.Fatal("backend accepted no connection")
		return nil
	}
}

// requireFiles skips (fails under HOSTPROXY_STRICT=1) unless the process may
// open n descriptors. Go raises the soft RLIMIT_NOFILE to the hard limit at
// start-up; this checks the result.
func requireFiles(t testing.TB, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("getrlimit RLIMIT_NOFILE: %v", err)
	}
	if rl.Cur < n && rl.Max >= n {
		rl.Cur = n
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatalf("setrlimit RLIMIT_NOFILE %d: %v", n, err)
		}
	}
	testenv.Require(t, rl.Cur >= n, fmt.Sprintf("needs RLIMIT_NOFILE >= %d (have %d, hard %d)", n, rl.Cur, rl.Max))
}

// recorder is a zapcore.Core that keeps every entry, for checking logs.
type recorder struct {
	level  zapcore.Level
	fields []zapcore.Field
	log    *recLog
}

type recLog struct {
	mu      sync.Mutex
	entries []recEntry
}

type recEntry struct {
	zapcore.Entry
	fields map[string]zapcore.Field
}

func newRecorder(level zapcore.Level) (*logging.Logger, *recLog) {
	l := &recLog{}
	return logging.New(&recorder{level: level, log: l}), l
}

func (r *recorder) Enabled(l zapcore.Level) bool { return l >= r.level }
func (r *recorder) With(f []zapcore.Field) zapcore.Core {
	c := *r
	c.fields = append(append([]zapcore.Field(nil), r.fields...), f...)
	return &c
}
func (r *recorder) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if r.Enabled(e.Level) {
		return ce.AddCore(e, r)
	}
	return ce
}
func (r *recorder) Write(e zapcore.Entry, f []zapcore.Field) error {
	m := make(map[string]zapcore.Field)
	for _, x := range append(append([]zapcore.Field(nil), r.fields...), f...) {
		m[x.Key] = x
	}
	r.log.mu.Lock()
	r.log.entries = append(r.log.entries, recEntry{e, m})
	r.log.mu.Unlock()
	return nil
}
func (r *recorder) Sync() error { return nil }

// atLeast returns the entries at level or above.
func (l *recLog) atLeast(level zapcore.Level) []recEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []recEntry
	for _, e := range l.entries {
		if e.Level >= level {
			out = append(out, e)
		}
	}
	return out
}

// noDeadline clears a deadline.
var noDeadline time.Time

// echoHash sends size pseudo-random bytes (seeded by seed) on c through an
// echo backend, half-closes it, reads the echo to EOF, and fails t unless
// it is size bytes with the same SHA-256.
func echoHash(t *testing.T, c *net.TCPConn, size int64, seed byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := rand.NewChaCha8([32]byte{seed})
		_, err := io.Copy(io.MultiWriter(c, sent), io.LimitReader(src, size))
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != size {
		t.Fatalf("read %d bytes, want %d", n, size)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatal("SHA-256 of the echoed stream differs from what was sent")
	}
}

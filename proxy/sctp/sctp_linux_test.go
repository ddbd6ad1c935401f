package sctp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/proxytest"
	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

// waitFor bounds every blocking step of these tests. It is generous because
// the tests also run under TCG emulation.
const waitFor = 20 * time.Second

// msg is one message with its SCTP information, as a test sees it.
type msg struct {
	info sctp.Info
	data string
}

// echoServer accepts associations on addr (port 0) and answers every message
// with reply(message) on the stream and PPID reply chooses. It records what it
// received. Closing happens at cleanup.
type echoServer struct {
	ln    *sctp.Listener
	reply func(msg) msg

	mu    sync.Mutex
	got   []msg
	conns []*sctp.Conn
	eofs  int // associations that ended with EOF
	wg    sync.WaitGroup
	done  chan struct{}
}

func startEcho(t *testing.T, addr netip.Addr, reply func(msg) msg) *echoServer {
	t.Helper()
	ln, err := sctp.Listen(netip.AddrPortFrom(addr, 0))
	if err != nil {
		t.Fatalf("backend: %v", err)
	}
	if reply == nil {
		reply = func(m msg) msg { return m }
	}
	s := &echoServer{ln: ln, reply: reply, done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Abort()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) serve() {
	defer s.wg.Done()
	var backoff proxy.Backoff
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // EMFILE in TestSCTPAcceptErrorBacksOff
			backoff.Sleep(s.done)
			continue
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.echo(c)
	}
}

func (s *echoServer) echo(c *sctp.Conn) {
	defer s.wg.Done()
	defer c.Close()
	buf := make([]byte, sctp.BufferSize)
	for {
		n, info, _, err := c.ReadMsg(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.mu.Lock()
				s.eofs++
				s.mu.Unlock()
			}
			return
		}
		in := msg{info: info, data: string(buf[:n])}
		s.mu.Lock()
		s.got = append(s.got, in)
		s.mu.Unlock()
		out := s.reply(in)
		if _, err := c.WriteMsg([]byte(out.data), out.info); err != nil {
			return
		}
	}
}

// startRawEcho is an echo backend that allocates nothing per message, for
// allocation tests and benchmarks. It serves one association.
func startRawEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := sctp.Listen(netip.AddrPortFrom(lo4, 0))
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	var (
		mu   sync.Mutex
		conn *sctp.Conn
	)
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conn = c
		mu.Unlock()
		defer c.Close()
		buf := make([]byte, sctp.BufferSize)
		for {
			n, info, _, err := c.ReadMsg(buf)
			if err != nil {
				return
			}
			if _, err := c.WriteMsg(buf[:n], info); err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		if conn != nil {
			conn.Abort()
		}
		mu.Unlock()
		<-done
	})
	return ln.Addr()
}

func (s *echoServer) received() []msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]msg(nil), s.got...)
}

func (s *echoServer) eofCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eofs
}

// startProxy serves an SCTP listener on listen (port 0) relaying to backend,
// and checks at cleanup that Close works and Serve returned nil.
func startProxy(t *testing.T, listen netip.Addr, cfg sctp.Config) (*sctp.Proxy, netip.AddrPort) {
	t.Helper()
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(listen, 0), sockopt.Options{})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p, err := sctp.New(f, cfg)
	f.Close() // New dups it
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	proxytest.Serve(t, p)
	a, ok := p.Addr().(*sctp.Addr)
	if !ok || p.Addr().Network() != "sctp" {
		t.Fatalf("Addr() = %#v, want an *sctp.Addr", p.Addr())
	}
	return p, a.AddrPort
}

func dial(t *testing.T, addr netip.AddrPort) *sctp.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := sctp.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Abort() })
	return c
}

func send(t *testing.T, c *sctp.Conn, m msg) {
	t.Helper()
	if err := c.SetWriteDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.WriteMsg([]byte(m.data), m.info); err != nil || n != len(m.data) {
		t.Fatalf("WriteMsg(%+v): %d, %v", m, n, err)
	}
}

func recv(t *testing.T, c *sctp.Conn) msg {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sctp.BufferSize)
	n, info, eor, err := c.ReadMsg(buf)
	if err != nil {
		t.Fatalf("ReadMsg: %v", err)
	}
	if !eor {
		t.Fatalf("ReadMsg: message of %d bytes not complete", n)
	}
	return msg{info: info, data: string(buf[:n])}
}

// expectEnd waits until c's peer ends the association (EOF or an error other
// than the deadline).
func expectEnd(t *testing.T, c *sctp.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 1024)
	for range 100 {
		_, _, _, err := c.ReadMsg(buf)
		if err == nil {
			continue // a message sent before the end; keep reading
		}
		if errors.Is(err, io.EOF) || !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		break
	}
	t.Fatalf("%s: the association was not ended within %v", what, waitFor)
}

func TestSCTPEcho(t *testing.T) {
	testenv.RequireSCTP(t)
	for _, tc := range []struct {
		name            string
		listen, backend netip.Addr
	}{
		{"IPv4", lo4, lo4},
		{"IPv6", lo6, lo6},
		{"IPv6HostIPv4Backend", lo6, lo4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startEcho(t, tc.backend, nil)
			_, addr := startProxy(t, tc.listen, sctp.Config{Backend: srv.ln.Addr()})
			c := dial(t, addr)
			for i := range 3 {
				m := msg{info: sctp.Info{Stream: uint16(i), PPID: uint32(i + 1)}, data: fmt.Sprintf("hello %d over %s", i, tc.name)}
				send(t, c, m)
				if got := recv(t, c); got != m {
					t.Fatalf("echo %d: got %+v, want %+v", i, got, m)
				}
			}
		})
	}
}

// TestSCTPStreamsAndPPIDs checks that stream id, PPID and the unordered flag
// survive the relay both ways: the backend answers on another stream with
// another PPID than the client used.
func TestSCTPStreamsAndPPIDs(t *testing.T) {
	testenv.RequireSCTP(t)
	reply := func(m msg) msg {
		return msg{
			info: sctp.Info{Stream: 65534 - m.info.Stream, PPID: ^m.info.PPID, Unordered: m.info.Unordered},
			data: "re: " + m.data,
		}
	}
	srv := startEcho(t, lo4, reply)
	_, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})
	c := dial(t, addr)

	sent := []msg{
		{sctp.Info{Stream: 0, PPID: 0}, "stream 0"},
		{sctp.Info{Stream: 1, PPID: 46}, "stream 1, PPID 46 (diameter)"},
		{sctp.Info{Stream: 7, PPID: 0xdeadbeef}, "stream 7"},
		{sctp.Info{Stream: 1000, PPID: 0x01000000, Unordered: true}, "stream 1000, unordered"},
		{sctp.Info{Stream: 65534, PPID: 0xffffffff}, "the last stream"},
	}
	for _, m := range sent {
		send(t, c, m)
		want := reply(m)
		if got := recv(t, c); got != want {
			t.Errorf("reply to %+v: got %+v, want %+v", m, got, want)
		}
	}
	got := srv.received()
	if len(got) != len(sent) {
		t.Fatalf("backend received %d messages, want %d: %+v", len(got), len(sent), got)
	}
	for i := range sent {
		if got[i] != sent[i] {
			t.Errorf("backend message %d: got %+v, want %+v", i, got[i], sent[i])
		}
	}
}

// TestSCTPLargeMessage sends a message larger than the relay's buffer: it
// arrives whole in content and order, in BufferSize pieces that all carry the
// message's stream id and PPID.
func TestSCTPLargeMessage(t *testing.T) {
	testenv.RequireSCTP(t)
	ln, err := sctp.Listen(netip.AddrPortFrom(lo4, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, addr := startProxy(t, lo4, sctp.Config{Backend: ln.Addr()})
	c := dial(t, addr)

	big := make([]byte, sctp.BufferSize+sctp.BufferSize/2)
	for i := range big {
		big[i] = byte(i * 7)
	}
	info := sctp.Info{Stream: 11, PPID: 0xabcdef}
	sent := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(waitFor))
		_, err := c.WriteMsg(big, info)
		sent <- err
	}()
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	b.SetReadDeadline(time.Now().Add(waitFor))
	var got []byte
	buf := make([]byte, 4*sctp.BufferSize)
	for pieces := 0; len(got) < len(big) && pieces < 10; pieces++ {
		n, gotInfo, _, err := b.ReadMsg(buf)
		if err != nil {
			t.Fatalf("backend read after %d bytes: %v", len(got), err)
		}
		if gotInfo != info {
			t.Fatalf("piece %d: info %+v, want %+v", pieces, gotInfo, info)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("backend received %d bytes differing from the %d sent", len(got), len(big))
	}
	if err := <-sent; err != nil {
		t.Fatalf("client write: %v", err)
	}
}

func TestSCTPManyAssociations(t *testing.T) {
	testenv.RequireSCTP(t)
	const clients, msgs = 32, 4
	srv := startEcho(t, lo4, nil)
	_, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})

	errc := make(chan error, clients)
	for i := range clients {
		go func() {
			errc <- func() error {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				c, err := sctp.Dial(ctx, addr)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitFor))
				buf := make([]byte, 256)
				for j := range msgs {
					want := msg{sctp.Info{Stream: uint16(j), PPID: uint32(i)}, fmt.Sprintf("client %d message %d", i, j)}
					if _, err := c.WriteMsg([]byte(want.data), want.info); err != nil {
						return fmt.Errorf("client %d: %w", i, err)
					}
					n, info, _, err := c.ReadMsg(buf)
					if err != nil {
						return fmt.Errorf("client %d: %w", i, err)
					}
					if got := (msg{info, string(buf[:n])}); got != want {
						return fmt.Errorf("client %d: got %+v, want %+v", i, got, want)
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	if got := len(srv.received()); got != clients*msgs {
		t.Errorf("backend received %d messages, want %d", got, clients*msgs)
	}
}

// TestSCTPBackendRefusedClosesClient: a client of a backend that refuses is
// closed, the proxy keeps serving, and each refused dial is counted.
func TestSCTPBackendRefusedClosesClient(t *testing.T) {
	testenv.RequireSCTP(t)
	// A port nobody listens on: the backend answers INIT with ABORT.
	ln, err := sctp.Listen(netip.AddrPortFrom(lo4, 0))
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr()
	ln.Close()

	p, addr := startProxy(t, lo4, sctp.Config{Backend: dead})
	for i := range 2 { // the proxy keeps serving after a refused backend
		c := dial(t, addr)
		start := time.Now()
		expectEnd(t, c, fmt.Sprintf("client %d", i))
		t.Logf("client %d closed %v after the refused dial", i, time.Since(start).Round(time.Millisecond))
		waitUntil(t, "dial error counted", func() bool { return counters(p)[addr].DialErrors == uint64(i+1) })
		if s := counters(p)[addr]; s.Accepted != uint64(i+1) {
			t.Errorf("counters %+v, want %d accepted", s, i+1)
		}
	}
}

func TestSCTPBackendDialTimeout(t *testing.T) {
	testenv.RequireSCTP(t)
	// A backend that drops every packet never answers INIT.
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(lo4, 0), sockopt.Options{DropAll: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startProxy(t, lo4, sctp.Config{Backend: info.Local, DialTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	expectEnd(t, c, "client of a silent backend")
}

func TestSCTPShutdownPropagates(t *testing.T) {
	testenv.RequireSCTP(t)
	t.Run("ClientToBackend", func(t *testing.T) {
		srv := startEcho(t, lo4, nil)
		_, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})
		c := dial(t, addr)
		m := msg{sctp.Info{Stream: 3, PPID: 9}, "last words"}
		send(t, c, m)
		if got := recv(t, c); got != m {
			t.Fatalf("echo: got %+v, want %+v", got, m)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, c, "client after its SHUTDOWN")
		deadline := time.Now().Add(waitFor)
		for srv.eofCount() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling a counter, bounded by deadline
		}
		if srv.eofCount() != 1 {
			t.Fatalf("backend saw %d EOFs, want 1", srv.eofCount())
		}
	})
	t.Run("BackendToClient", func(t *testing.T) {
		// The backend ends every association after the first message.
		srv := startEcho(t, lo4, nil)
		_, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})
		c := dial(t, addr)
		send(t, c, msg{sctp.Info{}, "ping"})
		recv(t, c)
		srv.mu.Lock()
		conns := append([]*sctp.Conn(nil), srv.conns...)
		srv.mu.Unlock()
		if len(conns) != 1 {
			t.Fatalf("backend has %d associations, want 1", len(conns))
		}
		if err := conns[0].CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(waitFor))
		_, _, _, err := c.ReadMsg(make([]byte, 64))
		if !errors.Is(err, io.EOF) {
			t.Fatalf("client read after the backend's SHUTDOWN: %v, want EOF", err)
		}
	})
}

func TestSCTPCloseAndShutdown(t *testing.T) {
	testenv.RequireSCTP(t)
	t.Run("CloseEndsAssociations", func(t *testing.T) {
		srv := startEcho(t, lo4, nil)
		p, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})
		c := dial(t, addr)
		send(t, c, msg{sctp.Info{}, "x"})
		recv(t, c)
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, c, "client after Close")
		if err := p.Serve(context.Background()); !errors.Is(err, proxy.ErrClosed) {
			t.Errorf("Serve after Close: %v, want proxy.ErrClosed", err)
		}
	})
	t.Run("ShutdownWaits", func(t *testing.T) {
		srv := startEcho(t, lo4, nil)
		p, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})
		c := dial(t, addr)
		send(t, c, msg{sctp.Info{}, "x"})
		recv(t, c)
		done := make(chan error, 1)
		go func() { done <- p.Shutdown(context.Background()) }()
		// New associations are refused once Shutdown has begun, while the
		// open one still relays.
		deadline := time.Now().Add(waitFor)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c2, err := sctp.Dial(ctx, addr)
			cancel()
			if err != nil {
				break
			}
			c2.Abort()
			if time.Now().After(deadline) {
				t.Fatal("the proxy still accepts after Shutdown")
			}
		}
		m := msg{sctp.Info{Stream: 2, PPID: 5}, "during shutdown"}
		send(t, c, m)
		if got := recv(t, c); got != m {
			t.Fatalf("echo during Shutdown: got %+v, want %+v", got, m)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with an association open", err)
		default:
		}
		c.CloseWrite()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(waitFor):
			t.Fatal("Shutdown did not return after the last association ended")
		}
	})
	t.Run("ShutdownDeadline", func(t *testing.T) {
		srv := startEcho(t, lo4, nil)
		p, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr()})
		c := dial(t, addr)
		send(t, c, msg{sctp.Info{}, "x"})
		recv(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want context.DeadlineExceeded", err)
		}
		expectEnd(t, c, "client cut by Shutdown")
	})
}

// TestSCTPAcceptErrorBacksOff runs the proxy out of file descriptors: accept
// fails with EMFILE, the proxy logs it and backs off instead of returning, and
// once descriptors are available again it relays new associations.
func TestSCTPAcceptErrorBacksOff(t *testing.T) {
	testenv.RequireSCTP(t)
	var logs testenv.Buffer
	log, err := logging.NewWriter(&logs, zapcore.DebugLevel, logging.FormatConsole)
	if err != nil {
		t.Fatal(err)
	}
	srv := startEcho(t, lo4, nil)
	_, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr(), Logger: log})

	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
			t.Fatalf("restoring RLIMIT_NOFILE: %v", err)
		}
	}
	t.Cleanup(restore)
	// The client is a plain blocking socket created before the limit drops
	// to the lowest free descriptor: the kernel completes the handshake in
	// connect, and the proxy's accept has no descriptor left. A descriptor
	// that a goroutine of an earlier test frees meanwhile lets the accept
	// succeed (the backend dial then meets EMFILE instead), so the attempt
	// is repeated, each with a new client, until accept fails.
	failed := func() bool { return strings.Contains(logs.String(), "accept failed; backing off") }
	for attempt := 1; !failed(); attempt++ {
		if attempt > 5 {
			t.Fatalf("no accept failure logged in 5 attempts; logs:\n%s", logs.String())
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		tv := unix.NsecToTimeval(waitFor.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		lowest, err := unix.Dup(0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(lowest)
		low := saved
		low.Cur = uint64(lowest)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
			restore()
			t.Fatalf("connect %s: %v", addr, err)
		}
		for deadline := time.Now().Add(2 * time.Second); !failed() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond) // polling the log, bounded by deadline
		}
		restore()
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "accept failed; backing off") && !strings.Contains(line, "too many open files") {
			t.Errorf("the logged accept failure is not EMFILE: %s", line)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			srv.mu.Lock()
			t.Logf("backend: %d associations, received %+v", len(srv.conns), srv.got)
			srv.mu.Unlock()
			t.Logf("proxy logs:\n%s", logs.String())
		}
	})
	// The proxy kept serving. (Whether the association that met EMFILE is
	// relayed depends on descriptors other goroutines free meanwhile, so only
	// a new one is checked.)
	c := dial(t, addr)
	m := msg{sctp.Info{Stream: 4, PPID: 44}, "after EMFILE"}
	send(t, c, m)
	if got := recv(t, c); got != m {
		t.Fatalf("echo after EMFILE: got %+v, want %+v", got, m)
	}
}

// TestSCTPNewRejects needs no SCTP: New refuses sockets that are not a
// listening SCTP socket, and bad backends.
func TestSCTPNewRejects(t *testing.T) {
	tcp, err := sockopt.Listen(sockopt.TCP, netip.AddrPortFrom(lo4, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if p, err := sctp.New(tcp, sctp.Config{Backend: netip.MustParseAddrPort("127.0.0.1:9")}); err == nil {
		p.Close()
		t.Fatal("New accepted a TCP socket")
	} else {
		t.Logf("TCP socket: %v", err)
	}
	if p, err := sctp.New(tcp, sctp.Config{}); err == nil {
		p.Close()
		t.Fatal("New accepted a zero backend")
	}
	if p, err := sctp.New(nil, sctp.Config{Backend: netip.MustParseAddrPort("127.0.0.1:9")}); err == nil {
		p.Close()
		t.Fatal("New accepted a nil file")
	}
}

func TestSCTPMessagesAllocateNothing(t *testing.T) {
	testenv.RequireSCTP(t)
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c := dial(t, startRawEcho(t))
	c.SetDeadline(time.Now().Add(waitFor))
	out := []byte("no allocation per message")
	buf := make([]byte, 256)
	info := sctp.Info{Stream: 1, PPID: 2}
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := c.WriteMsg(out, info); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.ReadMsg(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("WriteMsg+ReadMsg allocate %.1f times per message, want 0", allocs)
	}
}

func BenchmarkSCTPRelayRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			testenv.RequireSCTP(b)
			backend := startRawEcho(b)
			f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(lo4, 0), sockopt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			p, err := sctp.New(f, sctp.Config{Backend: backend})
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			go p.Serve(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			c, err := sctp.Dial(ctx, p.Addr().(*sctp.Addr).AddrPort)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			out := bytes.Repeat([]byte{'x'}, size)
			buf := make([]byte, sctp.BufferSize)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.WriteMsg(out, sctp.Info{Stream: 1, PPID: 7}); err != nil {
					b.Fatal(err)
				}
				if _, _, _, err := c.ReadMsg(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

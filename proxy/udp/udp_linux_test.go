package udp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/proxytest"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hostSocket binds a UDP socket the way the engine or the allocator does.
func hostSocket(t testing.TB, addr string) *os.File {
	t.Helper()
	f, err := sockopt.Listen(sockopt.UDP, netip.MustParseAddrPort(addr), sockopt.Options{})
	if err != nil {
		t.Fatalf("host socket: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// start serves f with cfg until the test ends, then checks Serve's result.
func start(t testing.TB, f *os.File, cfg Config) *Proxy {
	t.Helper()
	p, err := New(f, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	proxytest.Serve(t, p)
	return p
}

func hostPort(p *Proxy) netip.AddrPort { return p.Addr().(*net.UDPAddr).AddrPort() }

func listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("listen %s/udp: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoBackend answers every datagram with the same bytes until the test ends.
func echoBackend(t testing.TB, addr string) netip.AddrPort {
	t.Helper()
	return taggedBackend(t, addr, "")
}

// taggedBackend answers every datagram with tag followed by the datagram,
// until the test ends.
func taggedBackend(t testing.TB, addr, tag string) netip.AddrPort {
	t.Helper()
	c := listenUDP(t, addr)
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { c.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, MaxDatagram)
		out := make([]byte, 0, MaxDatagram)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			out = append(append(out[:0], tag...), buf[:n]...)
			c.WriteToUDPAddrPort(out, from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// sinkBackend records the source of every datagram and never answers.
type sinkBackend struct {
	c    *net.UDPConn
	mu   sync.Mutex
	from []netip.AddrPort
}

func newSink(t testing.TB, addr string) *sinkBackend {
	t.Helper()
	s := &sinkBackend{c: listenUDP(t, addr)}
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { s.c.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, MaxDatagram)
		for {
			_, from, err := s.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.from = append(s.from, from)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sinkBackend) addr() netip.AddrPort { return s.c.LocalAddr().(*net.UDPAddr).AddrPort() }

func (s *sinkBackend) sources() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.from...)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// roundTrip sends msg on c (connected) and returns the reply, retrying a
// lost datagram a few times.
func roundTrip(t testing.TB, c *net.UDPConn, msg []byte) []byte {
	t.Helper()
	buf := make([]byte, MaxDatagram)
	for attempt := 0; attempt < 5; attempt++ {
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("write %d bytes to %s: %v", len(msg), c.RemoteAddr(), err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return buf[:n]
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read from %s: %v", c.RemoteAddr(), err)
		}
	}
	t.Fatalf("no reply from %s after 5 attempts", c.RemoteAddr())
	return nil
}

func dial(t testing.TB, to netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatalf("dial %s/udp: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hasIPv6Loopback() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestEcho(t *testing.T) {
	for _, tc := range []struct {
		name, host, backend string
		v6                  bool
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", false},
		{"ipv6", "[::1]:0", "[::1]:0", true},
		{"ipv6-to-ipv4", "[::1]:0", "127.0.0.1:0", true},
		{"wildcard-ipv4", "0.0.0.0:0", "127.0.0.1:0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v6 && !hasIPv6Loopback() {
				t.Skip("no IPv6 loopback on this host")
			}
			p := start(t, hostSocket(t, tc.host), Config{Backend: echoBackend(t, tc.backend)})
			to := hostPort(p)
			if to.Addr().IsUnspecified() {
				to = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), to.Port())
			}
			c := dial(t, to)
			for i := range 10 {
				msg := fmt.Appendf(nil, "%s datagram %d", tc.name, i)
				if got := roundTrip(t, c, msg); !bytes.Equal(got, msg) {
					t.Fatalf("reply %q, want %q", got, msg)
				}
			}
			// The counters move just after the send that the client saw.
			waitFor(t, 5*time.Second, "the counters of 10 round trips", func() bool {
				s := p.Stats()
				return s.ToBackend >= 10 && s.ToClient >= 10
			})
			if s := p.Stats(); s.Flows != 1 || s.FlowsCreated != 1 {
				t.Errorf("stats after 10 round trips of one client: %+v", s)
			}
		})
	}
}

// A host socket bound to 0.0.0.0 answers a client from the address that
// client wrote to, even on an unconnected client socket; one bound to a
// single address answers from that address.
func TestReplySource(t *testing.T) {
	t.Run("wildcard", func(t *testing.T) {
		p := start(t, hostSocket(t, "0.0.0.0:0"), Config{Backend: echoBackend(t, "127.0.0.1:0")})
		checkReplySources(t, p, "127.0.0.2", "127.0.0.3", "127.0.0.2")
		// One client, two local addresses: two flows.
		if s := p.Stats(); s.FlowsCreated != 2 {
			t.Errorf("FlowsCreated = %d, want 2 (one per local address)", s.FlowsCreated)
		}
	})
	t.Run("one address", func(t *testing.T) {
		p := start(t, hostSocket(t, "127.0.0.2:0"), Config{Backend: echoBackend(t, "127.0.0.1:0")})
		checkReplySources(t, p, "127.0.0.2", "127.0.0.2")
	})
}

// checkReplySources sends a datagram to p's port at each address of dsts,
// from one unconnected client socket, and checks that each reply comes
// from where its datagram went.
func checkReplySources(t *testing.T, p *Proxy, dsts ...string) {
	t.Helper()
	port := hostPort(p).Port()
	client := listenUDP(t, "127.0.0.1:0")
	buf := make([]byte, 100)
	for _, dst := range dsts {
		to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
		msg := []byte("to " + dst)
		var from netip.AddrPort
		var n int
		for attempt := 0; ; attempt++ {
			if _, err := client.WriteToUDPAddrPort(msg, to); err != nil {
				t.Fatalf("write to %s: %v", to, err)
			}
			client.SetReadDeadline(time.Now().Add(time.Second))
			var err error
			if n, from, err = client.ReadFromUDPAddrPort(buf); err == nil {
				break
			}
			if attempt == 4 {
				t.Fatalf("no reply to a datagram sent to %s: %v", to, err)
			}
		}
		if from != to {
			t.Errorf("reply to a datagram sent to %s came from %s", to, from)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Errorf("reply %q, want %q", buf[:n], msg)
		}
	}
}

func TestIdleExpiry(t *testing.T) {
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{
		Backend:     echoBackend(t, "127.0.0.1:0"),
		IdleTimeout: 100 * time.Millisecond,
	})
	c := dial(t, hostPort(p))
	roundTrip(t, c, []byte("hello"))
	waitFor(t, 5*time.Second, "the flow to expire", func() bool {
		s := p.Stats()
		return s.Flows == 0 && s.FlowsExpired == 1
	})
	// The client is served again, by a new flow.
	roundTrip(t, c, []byte("again"))
	if s := p.Stats(); s.FlowsCreated != 2 || s.Flows != 1 {
		t.Errorf("after expiry and a new datagram: %+v", s)
	}
}

// A client that keeps sending keeps its flow, and so its backend source
// port, even though the backend never answers.
func TestOneSidedFlowKept(t *testing.T) {
	const timeout = 150 * time.Millisecond
	sink := newSink(t, "127.0.0.1:0")
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: sink.addr(), IdleTimeout: timeout})
	c := dial(t, hostPort(p))
	// Send for four idle timeouts, well inside each.
	tick := time.NewTicker(timeout / 5)
	defer tick.Stop()
	for range 20 {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	waitFor(t, 5*time.Second, "the backend to receive most datagrams", func() bool { return len(sink.sources()) >= 15 })
	src := sink.sources()
	for _, s := range src {
		if s != src[0] {
			t.Fatalf("backend saw the client from %s and from %s: the flow was replaced", src[0], s)
		}
	}
	if s := p.Stats(); s.FlowsCreated != 1 || s.FlowsExpired != 0 {
		t.Errorf("stats of a one-sided flow: %+v", s)
	}
	// Once the client stops, the flow expires.
	waitFor(t, 5*time.Second, "the one-sided flow to expire", func() bool { return p.Stats().FlowsExpired == 1 })
}

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}

// A flood of 5,000 sources never makes the relay hold more than MaxFlows
// sockets, and a new client is still served afterwards.
func TestFlowBound(t *testing.T) {
	const maxFlows, sources, chunk = 64, 5000, 100
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: echoBackend(t, "127.0.0.1:0"), MaxFlows: maxFlows})
	to := net.UDPAddrFromAddrPort(hostPort(p))
	before := countFDs(t)
	peak := 0
	for sent := 0; sent < sources; {
		for range chunk {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatalf("client %d: %v", sent, err)
			}
			_, err = c.WriteToUDP([]byte("x"), to)
			c.Close()
			if err != nil {
				t.Fatalf("client %d: write: %v", sent, err)
			}
			sent++
		}
		// Let the relay catch up so that the kernel drops nothing.
		waitFor(t, 10*time.Second, "the relay to handle the datagrams", func() bool {
			s := p.Stats()
			return s.ToBackend+s.Dropped >= uint64(sent)
		})
		peak = max(peak, countFDs(t))
		if s := p.Stats(); s.Flows > maxFlows {
			t.Fatalf("%d flows open, bound is %d", s.Flows, maxFlows)
		}
	}
	if peak > before+maxFlows+4 {
		t.Errorf("fds peaked at %d, from %d with a bound of %d flows", peak, before, maxFlows)
	}
	s := p.Stats()
	// A source port the kernel handed out twice joins its earlier flow.
	if s.FlowsCreated < sources*9/10 || s.FlowsEvicted < s.FlowsCreated-maxFlows || s.Flows != maxFlows {
		t.Errorf("after %d sources with MaxFlows %d: %+v", sources, maxFlows, s)
	}
	roundTrip(t, dial(t, hostPort(p)), []byte("still served"))
}

func TestLargeDatagrams(t *testing.T) {
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: echoBackend(t, "127.0.0.1:0")})
	c := dial(t, hostPort(p))
	for _, size := range []int{0, 1, 1472, 9000, 65507} {
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(i*7 + size)
		}
		if got := roundTrip(t, c, msg); !bytes.Equal(got, msg) {
			t.Errorf("%d-byte datagram came back as %d bytes, or changed", size, len(got))
		}
	}
	if s := p.Stats(); s.Truncated != 0 {
		t.Errorf("Truncated = %d", s.Truncated)
	}
}

// freePort returns a loopback UDP port nobody listens on (now).
func freePort(t testing.TB) netip.AddrPort {
	t.Helper()
	c := listenUDP(t, "127.0.0.1:0")
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return ap
}

// The backend is down (ICMP port unreachable), then comes up: the flow
// survives and works again.
func TestConnRefusedThenRecovery(t *testing.T) {
	backend := freePort(t)
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: backend})
	c := dial(t, hostPort(p))
	if _, err := c.Write([]byte("nobody home")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the backend's ICMP error to be seen", func() bool { return p.Stats().Refused >= 1 })
	echoBackend(t, backend.String())
	if got := roundTrip(t, c, []byte("back")); string(got) != "back" {
		t.Errorf("reply %q", got)
	}
	if s := p.Stats(); s.FlowsCreated != 1 || s.Flows != 1 {
		t.Errorf("the refused flow was replaced or closed: %+v", s)
	}
}

// toBackend retries the datagram whose send reported an earlier ICMP
// error, so that datagram is not lost.
func TestSendRetriedAfterConnRefused(t *testing.T) {
	backend := freePort(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(backend.Port()), Addr: backend.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, []byte("lost")); err != nil {
		t.Fatal(err)
	}
	// Wait for the ICMP error to be pending on the socket.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLERR}}
	if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 || pfd[0].Revents&unix.POLLERR == 0 {
		t.Fatalf("no ICMP error pending after 5s: n=%d revents=%#x err=%v", n, pfd[0].Revents, err)
	}
	sink := newSink(t, backend.String())

	p := &Proxy{work: &work{scratch: newScratch()}}
	f := &flow{fd: fd}
	payload := []byte("must arrive")
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	p.toBackend(f, []unix.Iovec{iov}, 0)

	s := p.Stats()
	if s.Refused != 1 || s.ToBackend != 1 || s.Dropped != 0 {
		t.Errorf("stats after a send that met ECONNREFUSED: %+v", s)
	}
	waitFor(t, 5*time.Second, "the retried datagram at the backend", func() bool { return len(sink.sources()) == 1 })
}

// A datagram whose flow cannot be opened counts once, in FlowsFailed, and
// not again in Dropped. connect(2) to the broadcast address fails (EACCES)
// on a socket without SO_BROADCAST, so every flow fails.
func TestFlowFailedCountedOnce(t *testing.T) {
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: netip.MustParseAddrPort("255.255.255.255:9")})
	c := dial(t, hostPort(p))
	const n = 3
	for i := range n {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "three failed flows", func() bool { return p.Stats().FlowsFailed >= n })
	if s := p.Stats(); s.FlowsFailed != n || s.Dropped != 0 || s.Flows != 0 || s.FlowsCreated != 0 {
		t.Errorf("after %d datagrams whose flow failed: %+v; want FlowsFailed %d and nothing else", n, s, n)
	}
}

func TestConcurrentClients(t *testing.T) {
	const clients, each = 16, 50
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: echoBackend(t, "127.0.0.1:0")})
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		c := dial(t, hostPort(p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for j := 0; j < each; j++ {
				msg := fmt.Appendf(nil, "client %d datagram %d", i, j)
				ok := false
				for attempt := 0; attempt < 5 && !ok; attempt++ {
					if _, err := c.Write(msg); err != nil {
						errs <- err
						return
					}
					c.SetReadDeadline(time.Now().Add(time.Second))
					for {
						n, err := c.Read(buf)
						if err != nil {
							break // lost: send again
						}
						if bytes.Equal(buf[:n], msg) {
							ok = true
							break
						}
						// A late duplicate of an earlier datagram: read on.
					}
				}
				if !ok {
					errs <- fmt.Errorf("client %d: no reply to datagram %d", i, j)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := p.Stats(); s.Flows != clients {
		t.Errorf("%d flows for %d clients", s.Flows, clients)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("waits for idle flows", func(t *testing.T) {
		p := start(t, hostSocket(t, "127.0.0.1:0"), Config{
			Backend:     echoBackend(t, "127.0.0.1:0"),
			IdleTimeout: 300 * time.Millisecond,
		})
		old := dial(t, hostPort(p))
		roundTrip(t, old, []byte("before"))
		checkShutdownDrains(t, p, old, hostPort(p), "during")
		if s := p.Stats(); s.FlowsExpired != 1 || s.Flows != 0 {
			t.Errorf("after Shutdown: %+v", s)
		}
	})
	t.Run("cut short by ctx", func(t *testing.T) {
		p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: echoBackend(t, "127.0.0.1:0")})
		roundTrip(t, dial(t, hostPort(p)), []byte("hello"))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a 90s flow and a 50ms ctx = %v, want DeadlineExceeded", err)
		}
		if s := p.Stats(); s.Flows != 0 {
			t.Errorf("%d flows left after Shutdown", s.Flows)
		}
	})
}

// drainer is what checkShutdownDrains needs: a Proxy or a Range.
type drainer interface {
	Shutdown(context.Context) error
	Stats() Stats
}

// checkShutdownDrains shuts d down while old has a flow through it: a new
// client (writing to fresh) is rejected, old is still answered (the echo of
// "during" is want), and Shutdown returns once old's flow has gone idle.
func checkShutdownDrains(t *testing.T, d drainer, old *net.UDPConn, fresh netip.AddrPort, want string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- d.Shutdown(context.Background()) }()
	waitFor(t, 5*time.Second, "a new client to be rejected", func() bool {
		dial(t, fresh).Write([]byte("new"))
		return d.Stats().Rejected > 0
	})
	// The existing flow is still served while it is active.
	if got := roundTrip(t, old, []byte("during")); string(got) != want {
		t.Errorf("reply %q during Shutdown, want %q", got, want)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the flow went idle")
	}
}

func TestCloseEndsEverything(t *testing.T) {
	backend := echoBackend(t, "127.0.0.1:0")
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := hostSocket(t, "127.0.0.1:0")
	before := countFDs(t)
	p, err := New(f, Config{Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { served <- p.Serve(ctx) }()
	for range 5 {
		c := dial(t, hostPort(p))
		roundTrip(t, c, []byte("x"))
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Serve(ctx); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
	// The 5 client sockets are still open; the relay's own are not.
	if n := countFDs(t); n != before+5 {
		t.Errorf("%d fds open after Close, want %d", n, before+5)
	}
}

func TestServeEndsWithContext(t *testing.T) {
	p, err := New(hostSocket(t, "127.0.0.1:0"), Config{Backend: netip.MustParseAddrPort("127.0.0.1:9")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v after ctx was cancelled, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after ctx was cancelled")
	}
	if err := p.Serve(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Serve again = %v, want ErrClosed", err)
	}
}

func TestNewErrors(t *testing.T) {
	udp := hostSocket(t, "127.0.0.1:0")
	tcp, err := sockopt.Listen(sockopt.TCP, netip.MustParseAddrPort("127.0.0.1:0"), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	good := netip.MustParseAddrPort("127.0.0.1:53")
	for _, tc := range []struct {
		name string
		f    *os.File
		cfg  Config
	}{
		{"nil file", nil, Config{Backend: good}},
		{"no backend", udp, Config{}},
		{"backend port 0", udp, Config{Backend: netip.MustParseAddrPort("127.0.0.1:0")}},
		{"unspecified backend", udp, Config{Backend: netip.MustParseAddrPort("0.0.0.0:53")}},
		{"tcp socket", tcp, Config{Backend: good}},
		{"not a socket", pipeR, Config{Backend: good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.f, tc.cfg)
			if err == nil {
				p.Close()
				t.Fatal("New succeeded")
			}
			t.Log(err)
		})
	}
	// A closed proxy that never served.
	p, err := New(udp, Config{Backend: good})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown before Serve: %v", err)
	}
	if err := p.Serve(context.Background()); !errors.Is(err, proxy.ErrClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrClosed", err)
	}
}

func TestPlanGroups(t *testing.T) {
	a, b := &flow{}, &flow{}
	big := gsoMaxSegment + 1
	type g = group
	for _, tc := range []struct {
		name  string
		sizes []int
		flows []*flow
		gso   bool
		want  []group
	}{
		{"empty", nil, nil, true, nil},
		{"no gso", []int{64, 64}, []*flow{a, a}, false, []g{{0, 1, 64}, {1, 1, 64}}},
		{"one run", []int{64, 64, 64}, []*flow{a, a, a}, true, []g{{0, 3, 64}}},
		{"short last", []int{64, 64, 10}, []*flow{a, a, a}, true, []g{{0, 3, 64}}},
		{"short ends the run", []int{64, 10, 64}, []*flow{a, a, a}, true, []g{{0, 2, 64}, {2, 1, 64}}},
		{"longer starts a new run", []int{10, 64}, []*flow{a, a}, true, []g{{0, 1, 10}, {1, 1, 64}}},
		{"flows split", []int{64, 64, 64, 64}, []*flow{a, b, b, a}, true, []g{{0, 1, 64}, {1, 2, 64}, {3, 1, 64}}},
		{"empty datagrams alone", []int{0, 0, 64, 0}, []*flow{a, a, a, a}, true, []g{{0, 1, 0}, {1, 1, 0}, {2, 1, 64}, {3, 1, 0}}},
		{"too big for gso", []int{big, big}, []*flow{a, a}, true, []g{{0, 1, big}, {1, 1, big}}},
		{"byte cap", []int{1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400,
			1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400,
			1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400}, nil, true, []g{{0, 46, 1400}, {46, 2, 1400}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows := tc.flows
			if flows == nil {
				flows = make([]*flow, len(tc.sizes))
				for i := range flows {
					flows[i] = a
				}
			}
			got := planGroups(nil, tc.sizes, flows, tc.gso)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("planGroups(%v) = %v, want %v", tc.sizes, got, tc.want)
			}
		})
	}
	// The segment cap.
	sizes, flows := make([]int, 100), make([]*flow, 100)
	for i := range sizes {
		sizes[i], flows[i] = 10, a
	}
	if got := planGroups(nil, sizes, flows, true); len(got) != 2 || got[0].count != gsoMaxSegments {
		t.Errorf("100 small datagrams: %v, want runs of at most %d", got, gsoMaxSegments)
	}
}

// A burst of same-size datagrams (coalesced with UDP GSO where the kernel
// has it) arrives whole and in order, both ways.
func TestBurst(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			f := hostSocket(t, "127.0.0.1:0")
			p, err := New(f, Config{Backend: echoBackend(t, "127.0.0.1:0")})
			if err != nil {
				t.Fatal(err)
			}
			if gso && !p.gso {
				p.Close()
				t.Skip("no UDP GSO in this kernel")
			}
			p.gso = gso
			served := make(chan error, 1)
			go func() { served <- p.Serve(context.Background()) }()
			t.Cleanup(func() { p.Close(); <-served })
			c := dial(t, hostPort(p))
			c.SetReadBuffer(1 << 20)
			const n = 40
			for round := range 5 {
				for i := range n {
					msg := fmt.Appendf(nil, "round %d datagram %03d ", round, i)
					msg = append(msg, bytes.Repeat([]byte{byte(i)}, 200-len(msg))...)
					if i == n-1 {
						msg = msg[:50] // a short last one
					}
					if _, err := c.Write(msg); err != nil {
						t.Fatal(err)
					}
				}
				buf := make([]byte, 1000)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i := range n {
					m, err := c.Read(buf)
					if err != nil {
						t.Fatalf("round %d: reply %d: %v (stats %+v)", round, i, err, p.Stats())
					}
					want := fmt.Sprintf("round %d datagram %03d ", round, i)
					if !bytes.HasPrefix(buf[:m], []byte(want)) || (i < n-1 && m != 200) || (i == n-1 && m != 50) {
						t.Fatalf("round %d: reply %d is %d bytes %q, want %q...", round, i, m, buf[:min(m, 30)], want)
					}
				}
			}
		})
	}
}

// TestIdleProxiesShareWork relays through 20 proxies one after the other and
// checks that they made at most a few work buffers between them (one each
// would be 80 MiB reserved), and that every one is back on the free list
// once all are parked.
func TestIdleProxiesShareWork(t *testing.T) {
	const n = 20
	be := echoBackend(t, "127.0.0.1:0")
	made := worksMade.Load()
	var proxies []*Proxy
	for range n {
		proxies = append(proxies, start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: be}))
	}
	for i, p := range proxies {
		c := dial(t, hostPort(p))
		msg := fmt.Appendf(nil, "through proxy %d", i)
		if got := roundTrip(t, c, msg); !bytes.Equal(got, msg) {
			t.Fatalf("proxy %d echoed %q, want %q", i, got, msg)
		}
	}
	if got := worksMade.Load() - made; got > 4 {
		t.Errorf("%d proxies used one at a time made %d work buffers, want at most 4", n, got)
	}
	waitFor(t, 10*time.Second, "every work buffer back on the free list", func() bool {
		idleWork.mu.Lock()
		defer idleWork.mu.Unlock()
		return int64(len(idleWork.free)) == worksMade.Load()
	})
}

// TestProxyDescriptors checks what an idle mapping costs in descriptors: its
// duplicate of the host socket and its epoll set, nothing else (Close and
// Shutdown wake the loop through the epoll set's deadline).
func TestProxyDescriptors(t *testing.T) {
	f := hostSocket(t, "127.0.0.1:0")
	be := echoBackend(t, "127.0.0.1:0")
	before := countFDs(t)
	p := start(t, f, Config{Backend: be})
	if got := countFDs(t) - before; got != 2 {
		t.Errorf("a serving proxy with no flow holds %d descriptors, want 2", got)
	}
	roundTrip(t, dial(t, hostPort(p)), []byte("one flow"))
	if got := countFDs(t) - before; got != 4 {
		t.Errorf("with one flow (and the test's client socket) %d descriptors, want 4", got)
	}
}

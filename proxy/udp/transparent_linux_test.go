package udp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
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
	"github.com/hostproxy/hostproxy/sockopt"
)

// The transparent topology, in namespaces the test creates; no DNAT and no
// forwarding, so only the relay carries the traffic:
//
//	clients 10.78.1.2-4 ── 10.78.1.1, 10.78.1.11 host 10.78.2.1 ─┬─ 10.78.2.2 container
//	fd78:1::2-4           fd78:1::1, fd78:1::11     fd78:2::1    │  fd78:2::2
//	                                                             └─ 10.78.2.3 neighbour
//	                                                                fd78:2::3
//
// The client, the container and the container's neighbour route through
// the host, whose address toward the container is on a bridge (as
// docker0) joining the container and its neighbour.
type tpFamily struct {
	name      string
	clients   []netip.Addr
	hostOut   netip.Addr // a published address
	hostOut2  netip.Addr // another address of the same mapping, secondary in its subnet
	hostIn    netip.Addr // the host's side toward the container
	container netip.Addr
	neighbour netip.Addr // on the container's link
	loopback  netip.Addr
	wildcard  netip.Addr
	bits      int
}

func (f *tpFamily) backend() netip.AddrPort { return netip.AddrPortFrom(f.container, 5300) }

var (
	tp4 = &tpFamily{"IPv4", tpAddrs("10.78.1.2", "10.78.1.3", "10.78.1.4"), netip.MustParseAddr("10.78.1.1"),
		netip.MustParseAddr("10.78.1.11"), netip.MustParseAddr("10.78.2.1"), netip.MustParseAddr("10.78.2.2"), netip.MustParseAddr("10.78.2.3"),
		netip.MustParseAddr("127.0.0.1"), netip.IPv4Unspecified(), 24}
	tp6 = &tpFamily{"IPv6", tpAddrs("fd78:1::2", "fd78:1::3", "fd78:1::4"), netip.MustParseAddr("fd78:1::1"),
		netip.MustParseAddr("fd78:1::11"), netip.MustParseAddr("fd78:2::1"), netip.MustParseAddr("fd78:2::2"), netip.MustParseAddr("fd78:2::3"),
		netip.IPv6Loopback(), netip.IPv6Unspecified(), 64}
	// IPv4 names for the tests that need no other family.
	tpClients = tp4.clients
	tpHostOut = tp4.hostOut
	tpBackend = tp4.backend()
)

func tpAddrs(ss ...string) []netip.Addr {
	as := make([]netip.Addr, len(ss))
	for i, s := range ss {
		as[i] = netip.MustParseAddr(s)
	}
	return as
}

var tpSeq atomic.Int32

// tpNetns is a network namespace the test created (ip netns add).
type tpNetns string

func newTPNetns(t testing.TB, role string) tpNetns {
	t.Helper()
	n := tpNetns(fmt.Sprintf("hp_tpu_%d_%d_%s", os.Getpid(), tpSeq.Add(1), role))
	tpRun(t, "ip", "netns", "add", string(n))
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", string(n)).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n, err, out)
		}
	})
	tpRun(t, "ip", "-n", string(n), "link", "set", "lo", "up")
	return n
}

func tpRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// enter moves the calling thread, which the caller has locked, into n.
func (n tpNetns) enter() error {
	f, err := os.Open("/run/netns/" + string(n))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", n, err)
	}
	return nil
}

// do runs fn on a thread inside n; the sockets fn creates belong to n for
// their whole life. The thread is discarded afterwards (the goroutine ends
// locked), so no other goroutine ever runs in n by accident.
func (n tpNetns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := n.enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (n tpNetns) listenUDP(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatalf("listen %s/udp in %s: %v", addr, n, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type tpTopo struct{ client, host, ctr, nb tpNetns }

// newTPTopo builds the topology. With rules, the host gets the rules every
// transparent proxy needs (docs/client-address.md); with forward, the host
// forwards between its links (off by default in a new namespace).
func newTPTopo(t *testing.T, rules, forward bool) *tpTopo {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	if rules {
		testenv.RequireCommand(t, "nft")
	}
	tp := &tpTopo{newTPNetns(t, "cl"), newTPNetns(t, "host"), newTPNetns(t, "ctr"), newTPNetns(t, "nb")}
	tpRun(t, "ip", "link", "add", "tp-c", "netns", string(tp.client), "type", "veth", "peer", "name", "tp-h0", "netns", string(tp.host))
	tpRun(t, "ip", "link", "add", "tp-k", "netns", string(tp.ctr), "type", "veth", "peer", "name", "tp-h1", "netns", string(tp.host))
	tpRun(t, "ip", "link", "add", "tp-n", "netns", string(tp.nb), "type", "veth", "peer", "name", "tp-h2", "netns", string(tp.host))
	tpRun(t, "ip", "-n", string(tp.host), "link", "add", "tp-br", "type", "bridge")
	for _, dev := range []string{"tp-h1", "tp-h2"} {
		tpRun(t, "ip", "-n", string(tp.host), "link", "set", dev, "master", "tp-br")
	}
	for _, f := range []*tpFamily{tp4, tp6} {
		addr := func(n tpNetns, dev string, a netip.Addr) {
			args := []string{"-n", string(n), "addr", "add", fmt.Sprintf("%s/%d", a, f.bits), "dev", dev}
			if a.Is6() {
				args = append(args, "nodad")
			}
			tpRun(t, "ip", args...)
		}
		for _, a := range f.clients {
			addr(tp.client, "tp-c", a)
		}
		addr(tp.host, "tp-h0", f.hostOut)
		addr(tp.host, "tp-h0", f.hostOut2)
		addr(tp.host, "tp-br", f.hostIn)
		addr(tp.ctr, "tp-k", f.container)
		addr(tp.nb, "tp-n", f.neighbour)
	}
	for _, l := range []struct {
		n   tpNetns
		dev string
	}{{tp.client, "tp-c"}, {tp.host, "tp-h0"}, {tp.host, "tp-h1"}, {tp.host, "tp-h2"}, {tp.host, "tp-br"}, {tp.ctr, "tp-k"}, {tp.nb, "tp-n"}} {
		tpRun(t, "ip", "-n", string(l.n), "link", "set", l.dev, "up")
	}
	for _, f := range []*tpFamily{tp4, tp6} {
		tpRun(t, "ip", "-n", string(tp.client), "route", "add", "default", "via", f.hostOut.String())
		tpRun(t, "ip", "-n", string(tp.ctr), "route", "add", "default", "via", f.hostIn.String())
		tpRun(t, "ip", "-n", string(tp.nb), "route", "add", "default", "via", f.hostIn.String())
	}
	if forward {
		tpRun(t, "ip", "netns", "exec", string(tp.host), "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	if rules {
		table := fmt.Sprintf("hp_tpu_%d", os.Getpid())
		cmd := exec.Command("ip", "netns", "exec", string(tp.host), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`table inet %s {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto { tcp, udp } socket transparent 1 meta mark set 0x1
	}
}
`, table))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
		tpRun(t, "ip", "-n", string(tp.host), "rule", "add", "fwmark", "0x1", "lookup", "100")
		tpRun(t, "ip", "-n", string(tp.host), "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
		tpRun(t, "ip", "-n", string(tp.host), "-6", "rule", "add", "fwmark", "0x1", "lookup", "100")
		tpRun(t, "ip", "-n", string(tp.host), "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")
	}
	return tp
}

// tpEcho answers every datagram with "<payload>|<sender as seen>" and
// records the senders it saw.
type tpEcho struct {
	mu   sync.Mutex
	seen []netip.AddrPort
}

func (tp *tpTopo) startEcho(t *testing.T, at netip.AddrPort) *tpEcho {
	c := tp.ctr.listenUDP(t, at)
	e := &tpEcho{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, peer, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.seen = append(e.seen, peer)
			e.mu.Unlock()
			c.WriteToUDPAddrPort(fmt.Appendf(nil, "%s|%s", buf[:n], peer), peer) // errors: the reply is lost, as the test sees
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return e
}

func (e *tpEcho) senders() []netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netip.AddrPort(nil), e.seen...)
}

// startRelay makes the relay inside the host namespace (New looks at the
// route to the backend) and serves it on a goroutine locked to a thread
// there, so that the flow sockets it makes are the host's.
func (tp *tpTopo) startRelay(t *testing.T, f *os.File, cfg Config) *Proxy {
	t.Helper()
	var p *Proxy
	err := tp.host.do(func() (err error) {
		p, err = New(f, cfg)
		return err
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tp.serve(t, p)
	return p
}

// serve serves p on a goroutine locked to a thread inside the host
// namespace, so that the flow sockets it makes are the host's, until the
// test ends; then it closes p and requires Serve's nil.
func (tp *tpTopo) serve(t *testing.T, p proxy.Proxy) {
	t.Helper()
	served := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := tp.host.enter(); err != nil {
			p.Close()
			served <- err
			return
		}
		served <- p.Serve(context.Background())
	}()
	t.Cleanup(func() {
		p.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// hostSocketIn binds the relay's socket to port 0 of wildcard inside the
// host namespace: a sockopt.Listen socket, or with dual a dual-stack [::]
// socket (IPv4 clients arrive IPv4-mapped).
func (tp *tpTopo) hostSocketIn(t *testing.T, wildcard netip.Addr, dual bool) *os.File {
	t.Helper()
	var f *os.File
	err := tp.host.do(func() (err error) {
		if !dual {
			f, err = sockopt.Listen(sockopt.UDP, netip.AddrPortFrom(wildcard, 0), sockopt.Options{})
			return err
		}
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return err
		}
		defer c.Close()
		f, err = c.File()
		return err
	})
	if err != nil {
		t.Fatalf("host socket: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func filePort(t *testing.T, f *os.File) uint16 {
	t.Helper()
	sa, err := unix.Getsockname(int(f.Fd()))
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	t.Fatalf("getsockname: %T", sa)
	return 0
}

// exchange sends payload from c to to and waits for its echo; it returns
// the reply's source (unmapped) and the sender the container saw.
func exchange(c *net.UDPConn, to netip.AddrPort, payload string, timeout time.Duration) (from, seen netip.AddrPort, err error) {
	if _, err := c.WriteToUDPAddrPort([]byte(payload), to); err != nil {
		return from, seen, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return from, seen, fmt.Errorf("%s to %s: %w", payload, to, err)
		}
		got, peer, ok := bytes.Cut(buf[:n], []byte("|"))
		if !ok || string(got) != payload {
			continue // an older reply
		}
		seen, err := netip.ParseAddrPort(string(peer))
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		return src, seen, err
	}
}

func localAddrPort(c *net.UDPConn) netip.AddrPort {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// TestTransparent relays with Transparent and the host rules: several
// clients at once reach the container, which sees each one's own address
// and port, and each reply comes from the host address the client wrote
// to; a client writing to two addresses of the mapping from one port gets
// two flows, the second from another port of its address; the host's own
// clients keep the host's source, or one of its addresses. Over an IPv4
// socket, a dual-stack one (IPv4-mapped clients) and an IPv6 one.
func TestTransparent(t *testing.T) {
	for _, c := range []struct {
		name string
		f    *tpFamily
		dual bool
	}{{"IPv4", tp4, false}, {"IPv4-mapped", tp4, true}, {"IPv6", tp6, false}} {
		t.Run(c.name, func(t *testing.T) {
			testTransparent(t, c.f, c.dual)
		})
	}
}

func testTransparent(t *testing.T, fam *tpFamily, dual bool) {
	tp := newTPTopo(t, true, false)
	tp.startEcho(t, fam.backend())
	f := tp.hostSocketIn(t, fam.wildcard, dual)
	port := filePort(t, f)
	p := tp.startRelay(t, f, Config{Backend: fam.backend(), Transparent: true})
	to := netip.AddrPortFrom(fam.hostOut, port)
	to2 := netip.AddrPortFrom(fam.hostOut2, port)

	t.Run("clients", func(t *testing.T) {
		var conns []*net.UDPConn
		for _, a := range fam.clients {
			for range 2 {
				conns = append(conns, tp.client.listenUDP(t, netip.AddrPortFrom(a, 0)))
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(conns))
		for i, c := range conns {
			wg.Go(func() {
				me := localAddrPort(c)
				for k := range 3 {
					from, seen, err := exchange(c, to, fmt.Sprintf("c%d-%d", i, k), 5*time.Second)
					switch {
					case err != nil:
						errs <- fmt.Errorf("client %s: %w", me, err)
					case seen != me:
						errs <- fmt.Errorf("client %s: the container saw %s", me, seen)
					case from != to:
						errs <- fmt.Errorf("client %s: reply from %s, want %s", me, from, to)
					default:
						continue
					}
					return
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("two host addresses", func(t *testing.T) {
		c := tp.client.listenUDP(t, netip.AddrPortFrom(fam.clients[0], 0))
		me := localAddrPort(c)
		var seen1, seen2 netip.AddrPort
		for round := range 2 {
			from, seen, err := exchange(c, to, fmt.Sprintf("a%d", round), 5*time.Second)
			if err != nil || from != to {
				t.Fatalf("to %s: reply from %s, %v", to, from, err)
			}
			if seen != me {
				t.Errorf("to %s: the container saw %s, want %s", to, seen, me)
			}
			seen1 = seen
			from, seen, err = exchange(c, to2, fmt.Sprintf("b%d", round), 5*time.Second)
			if err != nil || from != to2 {
				t.Fatalf("to %s: reply from %s, %v", to2, from, err)
			}
			if round == 1 && seen != seen2 {
				t.Errorf("second flow moved from %s to %s", seen2, seen)
			}
			seen2 = seen
		}
		if seen2.Addr() != me.Addr() || seen2.Port() == me.Port() {
			t.Errorf("second flow seen as %s; want %s with another port than the first flow's %s", seen2, me.Addr(), seen1)
		}
		t.Logf("one client %s, two flows: the container saw %s and %s", me, seen1, seen2)
	})

	// Every process of the host keeps the host's source toward the
	// container (hostIn): one writing to a loopback address, or to the
	// address its unbound socket writes from, recognised at once, and one
	// bound to another host address than it writes to, recognised by its
	// port, which it holds. For IPv4 an unbound socket writing to the
	// secondary address hostOut2 writes from the primary one, hostOut, and
	// is one of the latter.
	t.Run("from the host", func(t *testing.T) {
		for _, c := range []struct {
			bind, to netip.AddrPort
		}{
			{netip.AddrPortFrom(fam.loopback, 0), netip.AddrPortFrom(fam.loopback, port)},
			{netip.AddrPortFrom(fam.wildcard, 0), to},
			{netip.AddrPortFrom(fam.wildcard, 0), to2},
			{netip.AddrPortFrom(fam.hostOut, 0), to2},
			{netip.AddrPortFrom(fam.hostIn, 0), to},
		} {
			conn := tp.host.listenUDP(t, c.bind)
			me := localAddrPort(conn)
			from, seen, err := exchange(conn, c.to, "h", 5*time.Second)
			if err != nil {
				t.Errorf("from %s to %s: %v", me, c.to, err)
				continue
			}
			if from != c.to {
				t.Errorf("from %s to %s: reply from %s", me, c.to, from)
			}
			if seen.Addr() != fam.hostIn || seen.Port() == me.Port() {
				t.Errorf("from %s to %s: the container saw %s, want the host's %s with another port", me, c.to, seen, fam.hostIn)
			}
		}
	})

	// The container's neighbour keeps the host's source: the container
	// would answer it directly, over the bridge, and from its own address.
	t.Run("neighbour of the container", func(t *testing.T) {
		c := tp.nb.listenUDP(t, netip.AddrPortFrom(fam.neighbour, 0))
		from, seen, err := exchange(c, to, "n", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if from != to || seen.Addr() != fam.hostIn {
			t.Errorf("reply from %s, the container saw %s; want %s and the host's %s", from, seen, to, fam.hostIn)
		}
	})

	if st := p.Stats(); st.FlowsFailed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestTransparentOtherFamily: IPv6 clients of an IPv4 backend keep the
// host's source, which the log says once.
func TestTransparentOtherFamily(t *testing.T) {
	tp := newTPTopo(t, true, false)
	tp.startEcho(t, tp4.backend())
	f := tp.hostSocketIn(t, tp6.wildcard, false)
	port := filePort(t, f)
	var buf testenv.Buffer
	log, err := logging.NewWriter(&buf, zapcore.InfoLevel, logging.FormatConsole)
	if err != nil {
		t.Fatal(err)
	}
	tp.startRelay(t, f, Config{Backend: tp4.backend(), Transparent: true, Logger: log})
	to := netip.AddrPortFrom(tp6.hostOut, port)
	for _, a := range tp6.clients {
		c := tp.client.listenUDP(t, netip.AddrPortFrom(a, 0))
		from, seen, err := exchange(c, to, "o", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if from != to || seen.Addr() != tp4.hostIn {
			t.Errorf("client %s: reply from %s, the container saw %s; want %s and %s", localAddrPort(c), from, seen, to, tp4.hostIn)
		}
	}
	if n := strings.Count(buf.String(), "different families"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, buf.String())
	}
	t.Log(strings.TrimSpace(buf.String()))
}

// TestTransparentLocalBackend: a backend on one of the host's addresses
// would answer the client's address straight out toward the client, so its
// flows keep the host's source, said once at start, and work.
func TestTransparentLocalBackend(t *testing.T) {
	tp := newTPTopo(t, true, false)
	backend := netip.AddrPortFrom(tp4.hostIn, 5301)
	ln := tp.host.listenUDP(t, backend)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, peer, err := ln.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			ln.WriteToUDPAddrPort(fmt.Appendf(nil, "%s|%s", buf[:n], peer), peer)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	f := tp.hostSocketIn(t, tp4.wildcard, false)
	var buf testenv.Buffer
	log, err := logging.NewWriter(&buf, zapcore.InfoLevel, logging.FormatConsole)
	if err != nil {
		t.Fatal(err)
	}
	tp.startRelay(t, f, Config{Backend: backend, Transparent: true, Logger: log})
	to := netip.AddrPortFrom(tp4.hostOut, filePort(t, f))
	c := tp.client.listenUDP(t, netip.AddrPortFrom(tp4.clients[0], 0))
	from, seen, err := exchange(c, to, "l", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if from != to || seen.Addr() != tp4.hostIn {
		t.Errorf("reply from %s, the backend saw %s; want %s and the host's %s", from, seen, to, tp4.hostIn)
	}
	if n := strings.Count(buf.String(), "the backend is one of the host's own addresses"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, buf.String())
	}
}

// TestTransparentRange: every socket of a Range is transparent. One client
// port writing to two ports of the range relayed to one backend makes two
// flows with one 4-tuple to be, so the second takes another port.
func TestTransparentRange(t *testing.T) {
	tp := newTPTopo(t, true, false)
	tp.startEcho(t, tp4.backend())
	fs := []*os.File{tp.hostSocketIn(t, tp4.wildcard, false), tp.hostSocketIn(t, tp4.wildcard, false)}
	var r *Range
	err := tp.host.do(func() (err error) {
		r, err = NewRange([]Mapping{{fs[0], tp4.backend()}, {fs[1], tp4.backend()}}, Config{Transparent: true})
		return err
	})
	if err != nil {
		t.Fatalf("NewRange: %v", err)
	}
	tp.serve(t, r)
	c := tp.client.listenUDP(t, netip.AddrPortFrom(tp4.clients[1], 0))
	me := localAddrPort(c)
	var seen []netip.AddrPort
	for i, f := range fs {
		to := netip.AddrPortFrom(tp4.hostOut, filePort(t, f))
		from, s, err := exchange(c, to, fmt.Sprint("r", i), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if from != to || s.Addr() != me.Addr() {
			t.Errorf("to %s: reply from %s, the container saw %s; want the client's address", to, from, s)
		}
		seen = append(seen, s)
	}
	if seen[0] != me || seen[1].Port() == me.Port() {
		t.Errorf("the container saw %v; want %s, then %s with another port", seen, me, me.Addr())
	}
}

// TestTransparentWithoutRules shows what the host rules are for. The flow
// socket leaves from the client's address, so the container sees the
// client, but its reply is addressed to the client, and without the rules
// the host does not deliver it to the flow socket: the relay sends nothing
// back and the client waits in vain. With forwarding off (a new namespace's
// default) the host drops the reply as not its own (IpInAddrErrors); with
// forwarding on it drops it too, silently: UDP early demux attaches the
// flow socket, whose 4-tuple the reply matches, and the kernel does not
// forward a packet that has a socket. Only with net.ipv4.udp_early_demux=0
// as well is it forwarded, and the client gets it from the container's
// address, not from the address it wrote to.
func TestTransparentWithoutRules(t *testing.T) {
	for _, c := range []struct {
		name             string
		forward, nodemux bool
	}{{"forward=0", false, false}, {"forward=1", true, false}, {"forward=1,udp_early_demux=0", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			tp := newTPTopo(t, false, c.forward)
			if c.nodemux {
				tpRun(t, "ip", "netns", "exec", string(tp.host), "sysctl", "-qw", "net.ipv4.udp_early_demux=0")
			}
			echo := tp.startEcho(t, tpBackend)
			f := tp.hostSocketIn(t, tp4.wildcard, false)
			to := netip.AddrPortFrom(tpHostOut, filePort(t, f))
			p := tp.startRelay(t, f, Config{Backend: tpBackend, Transparent: true})
			cl := tp.client.listenUDP(t, netip.AddrPortFrom(tpClients[0], 0))
			me := localAddrPort(cl)
			if c.nodemux {
				from, seen, err := exchange(cl, to, "x", 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if from != tpBackend || seen != me {
					t.Errorf("reply from %s (the container saw %s); want it from the container %s, which saw %s", from, seen, tpBackend, me)
				}
			} else {
				// The absence of a reply can only be waited for.
				_, _, err := exchange(cl, to, "x", time.Second)
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("got %v, want no reply", err)
				}
				if s := echo.senders(); len(s) != 1 || s[0] != me {
					t.Errorf("the container saw %v, want [%s]", s, me)
				}
			}
			// The relay counts a datagram after its send returns, which
			// may be after the forwarded reply reached the client.
			waitFor(t, 5*time.Second, "the relay to count its datagram to the backend", func() bool { return p.Stats().ToBackend >= 1 })
			if st := p.Stats(); st.ToBackend != 1 || st.ToClient != 0 {
				t.Errorf("relay sent %d to the backend and %d to the client, want 1 and 0", st.ToBackend, st.ToClient)
			}
		})
	}
}

// TestTransparentSource: the relay follows sockopt's contract (stated and
// tested in sockopt's TestClientSource) with the address the datagram was
// written to, and says once that clients of the other family keep the
// host's source; those flows still connect.
func TestTransparentSource(t *testing.T) {
	var buf testenv.Buffer
	log, err := logging.NewWriter(&buf, zapcore.DebugLevel, logging.FormatConsole)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{transparent: true, bfamily: unix.AF_INET, log: log,
		backend: netip.MustParseAddrPort("127.0.0.1:9"), bsa: &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}}
	for _, client := range []string{"[2001:db8::2]:4000", "[2001:db8::3]:4000", "10.0.0.1:4000", "127.0.0.1:4000"} {
		// The last two keep the host's source too (the address written
		// to; loopback), without a log line, and make no transparent bind
		// (which needs no capability then).
		fd, err := p.dialBackend(flowKey{client: netip.MustParseAddrPort(client)}, sockopt.Pktinfo{Dst: netip.MustParseAddr("10.0.0.1"), Ifindex: 2})
		if err != nil {
			t.Fatalf("client %s: %v", client, err)
		}
		lsa, err := unix.Getsockname(fd)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if got := netip.AddrFrom4(lsa.(*unix.SockaddrInet4).Addr); got != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("client %s: flow socket on %s, want the host's normal source 127.0.0.1", client, got)
		}
	}
	if n := strings.Count(buf.String(), "different families"); n != 1 {
		t.Errorf("family fallback logged %d times, want once:\n%s", n, buf.String())
	}
}

// TestTransparentNeedsCapability: without CAP_NET_ADMIN and CAP_NET_RAW
// (dropped from the effective set of one thread, capabilities being per
// thread) New fails at once and says what is missing.
func TestTransparentNeedsCapability(t *testing.T) {
	testenv.RequireRoot(t)
	f := hostSocket(t, "127.0.0.1:0")
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		p, err := New(f, Config{Backend: netip.MustParseAddrPort("127.0.0.1:9"), Transparent: true})
		if err == nil {
			p.Close()
			err = errors.New("New succeeded")
		}
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("New without the capabilities: %v", err)
	}
	t.Log(err)
}

// BenchmarkFlowSocket measures what making a new flow's socket costs
// (socket, connect, the receive buffer option, and with
// transparent setsockopt and bind; closing it is not counted), on a
// thread inside a namespace where the backend is routable from any source.
// Plain and transparent sockets alternate, so that both see the same noise;
// plain-ns/flow and transparent-ns/flow are the averages of each kind.
func BenchmarkFlowSocket(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.RequireCommand(b, "ip")
	ns := newTPNetns(b, "bench")
	tpRun(b, "ip", "-n", string(ns), "link", "add", "tp-d", "type", "veth", "peer", "name", "tp-e")
	tpRun(b, "ip", "-n", string(ns), "addr", "add", "10.79.0.1/24", "dev", "tp-d")
	tpRun(b, "ip", "-n", string(ns), "link", "set", "tp-d", "up")
	var ps [2]*Proxy
	for i := range ps {
		ps[i] = &Proxy{transparent: i == 1, bfamily: unix.AF_INET, log: logging.Nop(),
			backend: netip.MustParseAddrPort("10.79.0.2:9"), bsa: &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 79, 0, 2}}}
	}
	pi := sockopt.Pktinfo{Dst: tpHostOut, Ifindex: 2}
	var spent [2]time.Duration
	errc := make(chan error, 1)
	b.ResetTimer()
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := ns.enter(); err != nil {
			errc <- err
			return
		}
		for i := range b.N {
			key := flowKey{client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 80, byte(i >> 8), byte(i)}), uint16(1024+i%60000))}
			for k, p := range ps {
				t0 := time.Now()
				fd, err := p.dialBackend(key, pi)
				if err != nil {
					errc <- err
					return
				}
				spent[k] += time.Since(t0)
				unix.Close(fd)
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(spent[0].Nanoseconds())/float64(b.N), "plain-ns/flow")
	b.ReportMetric(float64(spent[1].Nanoseconds())/float64(b.N), "transparent-ns/flow")
}

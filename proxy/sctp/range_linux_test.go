package sctp_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/proxytest"
	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
)

// sctpClient is a proxytest.Client over an association.
type sctpClient struct{ c *sctp.Conn }

func (s sctpClient) RoundTrip(ctx context.Context, m []byte) error {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(waitFor)
	}
	s.c.SetDeadline(d)
	stop := context.AfterFunc(ctx, func() { s.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := s.c.WriteMsg(m, sctp.Info{Stream: 1, PPID: 7}); err != nil {
		return err
	}
	buf := make([]byte, len(m)+64)
	n, _, _, err := s.c.ReadMsg(buf)
	if err != nil {
		return err
	}
	if !bytes.Equal(buf[:n], m) {
		return fmt.Errorf("echo %q, want %q", buf[:n], m)
	}
	return nil
}

func (s sctpClient) Close() error { return s.c.Close() }

func dialClient(ctx context.Context, addr netip.AddrPort) (proxytest.Client, error) {
	c, err := sctp.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	sc := sctpClient{c}
	if err := sc.RoundTrip(ctx, []byte("hello")); err != nil {
		c.Abort()
		return nil, err
	}
	return sc, nil
}

// listenFile is a listening SCTP socket on loopback, closed at cleanup.
func listenFile(t *testing.T) (*os.File, netip.AddrPort) {
	t.Helper()
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(lo4, 0), sockopt.Options{})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	return f, info.Local
}

func TestSCTPContract(t *testing.T) {
	testenv.RequireSCTP(t)
	proxytest.Contract(t, proxytest.Harness{New: func(t *testing.T) proxytest.Instance {
		srv := startEcho(t, lo4, nil)
		f, addr := listenFile(t)
		p, err := sctp.New(f, sctp.Config{Backend: srv.ln.Addr()})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return proxytest.Instance{Proxy: p, Dial: func(ctx context.Context) (proxytest.Client, error) {
			return dialClient(ctx, addr)
		}}
	}})
}

func TestSCTPRangeContract(t *testing.T) {
	testenv.RequireSCTP(t)
	proxytest.Contract(t, proxytest.Harness{New: func(t *testing.T) proxytest.Instance {
		srv := startEcho(t, lo4, nil)
		f1, a1 := listenFile(t)
		f2, a2 := listenFile(t)
		r, err := sctp.NewRange([]sctp.Mapping{{File: f1, Backend: srv.ln.Addr()}, {File: f2, Backend: srv.ln.Addr()}}, sctp.Config{})
		if err != nil {
			t.Fatalf("NewRange: %v", err)
		}
		addrs := []netip.AddrPort{a1, a2}
		var n atomic.Int64
		return proxytest.Instance{Proxy: r, Dial: func(ctx context.Context) (proxytest.Client, error) {
			return dialClient(ctx, addrs[n.Add(1)%2]) // alternate between the sockets
		}}
	}})
}

// startRange serves a Range of n sockets, socket i relayed to a backend
// that prefixes its replies with "i:".
func startRange(t *testing.T, n int, cfg sctp.Config) (*sctp.Range, []netip.AddrPort) {
	t.Helper()
	var (
		ms    []sctp.Mapping
		addrs []netip.AddrPort
	)
	for i := range n {
		srv := startEcho(t, lo4, func(m msg) msg { m.data = fmt.Sprintf("%d:%s", i, m.data); return m })
		f, a := listenFile(t)
		ms = append(ms, sctp.Mapping{File: f, Backend: srv.ln.Addr()})
		addrs = append(addrs, a)
	}
	r, err := sctp.NewRange(ms, cfg)
	if err != nil {
		t.Fatalf("NewRange: %v", err)
	}
	proxytest.Serve(t, r)
	return r, addrs
}

// counters returns the snapshot of every mapping of s, by listening address.
func counters(s proxy.StreamStats) map[netip.AddrPort]proxy.StreamSnapshot {
	m := make(map[netip.AddrPort]proxy.StreamSnapshot)
	s.EachMapping(func(listen, backend netip.AddrPort, c *proxy.StreamCounters) { m[listen] = c.Snapshot() })
	return m
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, bounded by deadline
	}
}

func TestSCTPRangeRelaysEachPortAndCounts(t *testing.T) {
	testenv.RequireSCTP(t)
	r, addrs := startRange(t, 3, sctp.Config{})
	for i, a := range addrs {
		c := dial(t, a)
		m := msg{sctp.Info{Stream: 2, PPID: 9}, "ping"}
		send(t, c, m)
		want := msg{m.info, fmt.Sprintf("%d:ping", i)}
		if got := recv(t, c); got != want {
			t.Fatalf("socket %d: got %+v, want %+v", i, got, want)
		}
		if i == 0 {
			c.Abort() // ends with an ABORT: a reset
		} else {
			c.Close()
		}
	}
	waitUntil(t, "every association ended", func() bool {
		for _, s := range counters(r) {
			if s.Active != 0 {
				return false
			}
		}
		return true
	})
	got := counters(r)
	var order []netip.AddrPort
	r.EachMapping(func(listen, _ netip.AddrPort, _ *proxy.StreamCounters) { order = append(order, listen) })
	if fmt.Sprint(order) != fmt.Sprint(addrs) {
		t.Errorf("EachMapping order %v, want %v", order, addrs)
	}
	for i, a := range addrs {
		s := got[a]
		if s.Accepted != 1 || s.BytesUp != 4 || s.BytesDown != 6 || s.DialErrors != 0 {
			t.Errorf("socket %d counters %+v: want 1 accepted, 4 bytes up, 6 down, no dial error", i, s)
		}
		if wantResets := uint64(0); i == 0 && s.Resets != 1 || i > 0 && s.Resets != wantResets {
			t.Errorf("socket %d: %d resets", i, s.Resets)
		}
	}
}

// TestSCTPRangeAddRemoveWhileServing adds a mapping to a serving range and
// removes it: the added mapping relays to its own backend with the stream
// and PPID kept and is reported, and after Remove its association ends and
// the port refuses once the caller's descriptor is closed. The rest of the
// contract, a busy client of another mapping included, is
// proxytest.Mappings (TestSCTPMappings).
func TestSCTPRangeAddRemoveWhileServing(t *testing.T) {
	testenv.RequireSCTP(t)
	r, _ := startRange(t, 1, sctp.Config{})
	srv := startEcho(t, lo4, func(m msg) msg { m.data = "added:" + m.data; return m })
	f, added := listenFile(t)
	if err := r.Add(sctp.Mapping{File: f, Backend: srv.ln.Addr()}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := r.Add(sctp.Mapping{File: f, Backend: srv.ln.Addr()}); err == nil {
		t.Fatal("Add of an address already served succeeded")
	}
	c := dial(t, added)
	m := msg{sctp.Info{Stream: 3, PPID: 1}, "hi"}
	send(t, c, m)
	if got := recv(t, c); got.data != "added:hi" {
		t.Fatalf("through the added mapping: got %+v", got)
	}
	if n := len(counters(r)); n != 2 {
		t.Fatalf("%d mappings reported after Add, want 2", n)
	}
	if err := r.Remove(added); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	expectEnd(t, c, "association of the removed mapping")
	// The caller's own descriptor still holds the socket: close it, then
	// the port refuses.
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if c, err := sctp.Dial(ctx, added); err == nil {
		c.Abort()
		t.Fatal("the removed mapping still accepts")
	}
	if err := r.Remove(added); err == nil {
		t.Fatal("second Remove succeeded")
	}
	if n := len(counters(r)); n != 1 {
		t.Fatalf("%d mappings reported after Remove, want 1", n)
	}
}

// TestSCTPDialNoFreePort narrows the local port range to one port, held by
// a relayed association, so that the next backend dial finds none: the
// proxy must count the failure, abort the client, log the cause once with
// the remedy, and relay again once the port is free. It changes
// net.ipv4.ip_local_port_range, so it runs only inside the test VM.
func TestSCTPDialNoFreePort(t *testing.T) {
	testenv.RequireSCTP(t)
	testenv.Require(t, os.Getenv("HOSTPROXY_SCTP_VM") == "1", "changes net.ipv4.ip_local_port_range: runs in the SCTP test VM only")
	const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	saved, err := os.ReadFile(rangeFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(rangeFile, saved, 0o644); err != nil {
			t.Errorf("restoring %s: %v", rangeFile, err)
		}
	})
	var logs testenv.Buffer
	log, err := logging.NewWriter(&logs, zapcore.DebugLevel, logging.FormatConsole)
	if err != nil {
		t.Fatal(err)
	}
	srv := startEcho(t, lo4, nil)
	p, addr := startProxy(t, lo4, sctp.Config{Backend: srv.ln.Addr(), Logger: log})
	if err := os.WriteFile(rangeFile, []byte("47123 47123"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Clients bind their own port explicitly, outside the range. connect
	// returns once the association is up; when the proxy aborts it at once
	// (a dial that fails without a packet), connect may see the ABORT
	// first and fail with ECONNREFUSED.
	client := func(port int) (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		tv := unix.NsecToTimeval(waitFor.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: lo4.As4()}); err != nil {
			t.Fatalf("bind client port %d: %v", port, err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
			return fd, fmt.Errorf("connect %s: %w", addr, err)
		}
		return fd, nil
	}
	echo := func(fd int) error {
		if _, err := unix.Write(fd, []byte("x")); err != nil {
			return err
		}
		var b [16]byte
		n, err := unix.Read(fd, b[:])
		if err == nil && n != 1 {
			err = fmt.Errorf("read %d bytes, want 1", n)
		}
		return err
	}
	holder, err := client(47200) // its backend association takes port 47123
	if err == nil {
		err = echo(holder)
	}
	if err != nil {
		t.Fatalf("first association: %v", err)
	}
	for i := range 3 {
		fd, err := client(47201 + i)
		if err == nil {
			err = echo(fd)
		}
		if err == nil {
			t.Fatalf("client %d relayed although no local port was free", i)
		}
		t.Logf("client %d: %v", i, err)
	}
	waitUntil(t, "dial errors counted", func() bool { return counters(p)[addr].DialErrors >= 3 })
	if n := strings.Count(logs.String(), "no free local port for backend associations"); n != 1 {
		t.Errorf("%d lines about the missing local port, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "ip_local_port_range") || !strings.Contains(logs.String(), "tcp_tw_reuse does not apply") {
		t.Errorf("the remedy is not logged:\n%s", logs.String())
	}
	// The port comes free: the proxy relays again (after its back-off).
	if err := os.WriteFile(rangeFile, saved, 0o644); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "relaying again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := dialClient(ctx, addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// TestSCTPMappings runs the contract of Add and Remove
// (proxytest.Mappings) on a Range.
func TestSCTPMappings(t *testing.T) {
	testenv.RequireSCTP(t)
	add := func(t *testing.T, p proxytest.Mapper, f *os.File) error {
		srv := startEcho(t, lo4, nil)
		return p.(*sctp.Range).Add(sctp.Mapping{File: f, Backend: srv.ln.Addr()})
	}
	proxytest.Mappings(t, proxytest.MappingsHarness{
		New: func(t *testing.T) (proxytest.Mapper, netip.AddrPort) {
			r, err := sctp.NewRange(nil, sctp.Config{})
			if err != nil {
				t.Fatalf("NewRange: %v", err)
			}
			f, addr := listenFile(t)
			if err := add(t, r, f); err != nil {
				r.Close()
				t.Fatalf("Add: %v", err)
			}
			return r, addr
		},
		Socket: listenFile,
		Add:    add,
		Dial:   dialClient,
		Listed: func(p proxytest.Mapper) []netip.AddrPort {
			var l []netip.AddrPort
			for a := range counters(p.(*sctp.Range)) {
				l = append(l, a)
			}
			return l
		},
		Stream: true,
	})
}

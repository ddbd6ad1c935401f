package alloc_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
	"golang.org/x/sys/unix"
)

var (
	lo4  = netip.MustParseAddr("127.0.0.1")
	lo4b = netip.MustParseAddr("127.0.0.2")
	lo6  = netip.MustParseAddr("::1")
)

func requireIPv6Loopback(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err == nil {
		ln.Close()
	}
	testenv.Require(t, err == nil, fmt.Sprintf("needs ::1 (%v)", err))
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting open fds: %v", err)
	}
	return len(ents)
}

// leakCheck records the open fds and a's reservations; the returned
// function fails t if either changed.
func leakCheck(t *testing.T, a *alloc.Allocator) func(what string) {
	t.Helper()
	// Warm up the runtime's poller, which opens fds of its own the first
	// time a socket is registered.
	if f, err := sockopt.Listen(sockopt.UDP, netip.AddrPortFrom(lo4, 0), sockopt.Options{}); err == nil {
		f.Close()
	}
	fds, n := fdCount(t), a.Allocated()
	return func(what string) {
		t.Helper()
		if got := fdCount(t); got != fds {
			t.Errorf("after %s: %d open fds, want %d", what, got, fds)
		}
		if got := a.Allocated(); got != n {
			t.Errorf("after %s: %d reservations, want %d", what, got, n)
		}
	}
}

// freeRun returns the first of n consecutive ports that proto can bind on
// every address of ips right now. It looks below the ephemeral range, where
// other tests' sockets do not land.
func freeRun(t *testing.T, proto sockopt.Proto, ips []netip.Addr, n int) uint16 {
	t.Helper()
	start := 20000 + (os.Getpid()*37)%10000
	for try := 0; try < 50; try++ {
		first := start + try*n*3
		if first+n > 32000 {
			first -= 12000
		}
		if runFree(proto, ips, uint16(first), n) {
			return uint16(first)
		}
	}
	t.Fatalf("no %d consecutive free %s ports found", n, proto)
	return 0
}

func runFree(proto sockopt.Proto, ips []netip.Addr, first uint16, n int) bool {
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	for p := first; p < first+uint16(n); p++ {
		for _, ip := range ips {
			f, err := sockopt.Listen(proto, netip.AddrPortFrom(ip, p), sockopt.Options{})
			if err != nil {
				return false
			}
			open = append(open, f)
		}
	}
	return true
}

// hold binds port p on ip with a socket the allocator does not know of.
func hold(t *testing.T, proto sockopt.Proto, ip netip.Addr, p uint16) {
	t.Helper()
	f, err := sockopt.Listen(proto, netip.AddrPortFrom(ip, p), sockopt.Options{})
	if err != nil {
		t.Fatalf("holding %s/%s: %v", netip.AddrPortFrom(ip, p), proto, err)
	}
	t.Cleanup(func() { f.Close() })
}

func kernelAllocator(t *testing.T) *alloc.Allocator {
	t.Helper()
	a, err := alloc.New(alloc.Config{})
	if err != nil {
		t.Fatalf("alloc.New: %v", err)
	}
	return a
}

func wantType(proto sockopt.Proto) (typ, protocol int) {
	switch proto {
	case sockopt.TCP:
		return unix.SOCK_STREAM, unix.IPPROTO_TCP
	case sockopt.UDP:
		return unix.SOCK_DGRAM, unix.IPPROTO_UDP
	}
	return unix.SOCK_STREAM, unix.IPPROTO_SCTP
}

// checkSocket checks that f is a close-on-exec, non-blocking proto socket
// bound to want.
func checkSocket(t *testing.T, f *os.File, proto sockopt.Proto, want netip.AddrPort) {
	t.Helper()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatalf("Inspect %s: %v", f.Name(), err)
	}
	typ, protocol := wantType(proto)
	family := unix.AF_INET
	if want.Addr().Is6() {
		family = unix.AF_INET6
	}
	if info.Proto != proto || info.Type != typ || info.Protocol != protocol || info.Family != family ||
		info.Local != want || info.Listening != proto.Stream() {
		t.Errorf("%s: %+v, want a %s socket (family %d type %d protocol %d) on %s, listening %v",
			f.Name(), info, proto, family, typ, protocol, want, proto.Stream())
	}
	fdFlags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil || fdFlags&unix.FD_CLOEXEC == 0 {
		t.Errorf("%s: F_GETFD = %#x, %v; want FD_CLOEXEC", f.Name(), fdFlags, err)
	}
}

// TestBindSamePortEverywhere binds one port on 127.0.0.1, 127.0.0.2 and ::1.
func TestBindSamePortEverywhere(t *testing.T) {
	requireIPv6Loopback(t)
	for _, proto := range []sockopt.Proto{sockopt.TCP, sockopt.UDP, sockopt.SCTP} {
		t.Run(proto.String(), func(t *testing.T) {
			if proto == sockopt.SCTP {
				testenv.RequireSCTP(t)
			}
			a := kernelAllocator(t)
			done := leakCheck(t, a)
			ips := []netip.Addr{lo4, lo4b, lo6}
			b, err := a.Bind(alloc.Request{Proto: proto, Addrs: ips}, sockopt.Options{})
			if err != nil {
				t.Fatalf("Bind %s on %v: %v", proto, ips, err)
			}
			if !a.Ephemeral().Contains(b.Port) || b.Proto != proto || len(b.Files) != len(ips) {
				t.Fatalf("Bind: %s port %d with %d files; want %s, a port in %s, %d files",
					b.Proto, b.Port, len(b.Files), proto, a.Ephemeral(), len(ips))
			}
			for i, f := range b.Files {
				checkSocket(t, f, proto, netip.AddrPortFrom(ips[i], b.Port))
			}
			if n := a.Allocated(); n != len(ips) {
				t.Errorf("Allocated() = %d while bound, want %d", n, len(ips))
			}
			if err := b.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := b.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			done("Close")
		})
	}
}

// TestBindSkipsPortHeldElsewhere: within a range, a port another socket holds
// is skipped.
func TestBindSkipsPortHeldElsewhere(t *testing.T) {
	for _, proto := range []sockopt.Proto{sockopt.TCP, sockopt.UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			if proto == sockopt.TCP {
				testenv.RequireNetAdmin(t) // the allocator's TCP probe attaches a filter
			}
			ips := []netip.Addr{lo4}
			p := freeRun(t, proto, ips, 3)
			hold(t, proto, lo4, p)
			a := kernelAllocator(t)
			done := leakCheck(t, a)
			b, err := a.Bind(alloc.Request{Proto: proto, Addrs: ips, Range: alloc.Range{First: p, Last: p + 2}}, sockopt.Options{DropAll: true})
			if err != nil {
				t.Fatalf("Bind %d-%d with %d held: %v", p, p+2, p, err)
			}
			if b.Port != p+1 {
				t.Errorf("Bind %d-%d with %d held: port %d, want %d", p, p+2, p, b.Port, p+1)
			}
			checkSocket(t, b.Files[0], proto, netip.AddrPortFrom(lo4, b.Port))
			if n := a.Allocated(); n != 1 {
				t.Errorf("Allocated() = %d, want 1: the refused port must be released", n)
			}
			b.Close()
			done("Close")
		})
	}
}

// TestBindExplicitPortHeldElsewhere: an explicit port held by another socket
// fails at once with the OS error, naming the address and port, even when
// the sockets on earlier addresses were bound.
func TestBindExplicitPortHeldElsewhere(t *testing.T) {
	for _, proto := range []sockopt.Proto{sockopt.TCP, sockopt.UDP} {
		for _, heldOn := range []netip.Addr{lo4, lo4b} {
			t.Run(fmt.Sprintf("%s/held on %s", proto, heldOn), func(t *testing.T) {
				if proto == sockopt.TCP {
					testenv.RequireNetAdmin(t) // the allocator's TCP probe attaches a filter
				}
				ips := []netip.Addr{lo4, lo4b}
				p := freeRun(t, proto, ips, 1)
				hold(t, proto, heldOn, p)
				a := kernelAllocator(t)
				done := leakCheck(t, a)
				b, err := a.Bind(alloc.Request{Proto: proto, Addrs: ips, Range: alloc.Range{First: p, Last: p}}, sockopt.Options{DropAll: true})
				if err == nil {
					b.Close()
					t.Fatalf("Bind of port %d held on %s succeeded", p, heldOn)
				}
				if !errors.Is(err, syscall.EADDRINUSE) {
					t.Errorf("Bind of port %d held on %s: %v, want EADDRINUSE", p, heldOn, err)
				}
				if want := netip.AddrPortFrom(heldOn, p).String(); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
				if errors.As(err, new(alloc.AlreadyAllocatedError)) {
					t.Errorf("error %v is an AlreadyAllocatedError; the allocator did not hold the port", err)
				}
				done("failed Bind")
			})
		}
	}
}

// TestBindExplicitPortOurs: an explicit port this allocator holds fails with
// an AlreadyAllocatedError, also through the wildcard.
func TestBindExplicitPortOurs(t *testing.T) {
	a := kernelAllocator(t)
	b, err := a.Bind(alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{lo4}}, sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	done := leakCheck(t, a)
	for _, ip := range []netip.Addr{lo4, netip.IPv4Unspecified()} {
		_, err := a.Bind(alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{ip}, Range: alloc.Range{First: b.Port, Last: b.Port}}, sockopt.Options{})
		var already alloc.AlreadyAllocatedError
		if !errors.As(err, &already) {
			t.Fatalf("Bind %s:%d while bound: %v, want an AlreadyAllocatedError", ip, b.Port, err)
		}
		if already.Addr != ip || already.Port != b.Port || already.Proto != sockopt.TCP {
			t.Errorf("AlreadyAllocatedError %+v, want %s port %d/tcp", already, ip, b.Port)
		}
		if msg := err.Error(); !strings.Contains(msg, ip.String()) || !strings.Contains(msg, fmt.Sprint(b.Port)) {
			t.Errorf("error %q does not name %s and %d", msg, ip, b.Port)
		}
	}
	done("refused Binds")
}

// TestBindGivesUp: at most MaxAttempts ports are tried; a range whose every
// port is held elsewhere ends with ErrAllPortsAllocated.
func TestBindGivesUp(t *testing.T) {
	ips := []netip.Addr{lo4}
	n := alloc.MaxAttempts + 2
	p := freeRun(t, sockopt.TCP, ips, n)
	for q := p; q < p+uint16(n)-1; q++ { // all but the last
		hold(t, sockopt.TCP, lo4, q)
	}
	a := kernelAllocator(t)
	done := leakCheck(t, a)

	_, err := a.Bind(alloc.Request{Proto: sockopt.TCP, Addrs: ips, Range: alloc.Range{First: p, Last: p + uint16(n) - 1}}, sockopt.Options{})
	if !errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, alloc.ErrAllPortsAllocated) {
		t.Errorf("Bind with the first %d of %d ports held: %v, want EADDRINUSE after %d attempts", n-1, n, err, alloc.MaxAttempts)
	}
	done("giving up")

	_, err = a.Bind(alloc.Request{Proto: sockopt.TCP, Addrs: ips, Range: alloc.Range{First: p, Last: p + 2}}, sockopt.Options{})
	if !errors.Is(err, alloc.ErrAllPortsAllocated) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Bind of %d-%d, all held: %v, want ErrAllPortsAllocated wrapping EADDRINUSE", p, p+2, err)
	}
	done("exhausting a range")
}

// TestBindEach binds every port of a range, all or nothing.
func TestBindEach(t *testing.T) {
	ips := []netip.Addr{lo4, lo4b}
	p := freeRun(t, sockopt.UDP, ips, 4)
	r := alloc.Range{First: p, Last: p + 3}
	a := kernelAllocator(t)
	done := leakCheck(t, a)

	bs, err := a.BindEach(alloc.Request{Proto: sockopt.UDP, Addrs: ips, Range: r}, sockopt.Options{DropAll: true})
	if err != nil {
		t.Fatalf("BindEach %s: %v", r, err)
	}
	if len(bs) != r.Len() {
		t.Fatalf("BindEach %s: %d bindings", r, len(bs))
	}
	for i, b := range bs {
		if b.Port != p+uint16(i) || len(b.Files) != len(ips) {
			t.Fatalf("binding %d: port %d, %d files", i, b.Port, len(b.Files))
		}
		for j, f := range b.Files {
			checkSocket(t, f, sockopt.UDP, netip.AddrPortFrom(ips[j], b.Port))
		}
	}
	for _, b := range bs {
		b.Close()
	}
	done("closing BindEach's bindings")

	// A port held elsewhere in the middle of the range: nothing stays.
	hold(t, sockopt.UDP, lo4b, p+2)
	done = leakCheck(t, a)
	if _, err := a.BindEach(alloc.Request{Proto: sockopt.UDP, Addrs: ips, Range: r}, sockopt.Options{}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("BindEach %s with %d held: %v, want EADDRINUSE", r, p+2, err)
	}
	done("failed BindEach (OS)")

	// A port reserved here: nothing stays either.
	if _, err := a.Reserve(alloc.Request{Proto: sockopt.UDP, Addrs: []netip.Addr{lo4}, Range: alloc.Range{First: p + 3, Last: p + 3}}); err != nil {
		t.Fatal(err)
	}
	done = leakCheck(t, a)
	if _, err := a.BindEach(alloc.Request{Proto: sockopt.UDP, Addrs: ips, Range: r}, sockopt.Options{}); !errors.As(err, new(alloc.AlreadyAllocatedError)) {
		t.Errorf("BindEach %s with %d reserved: %v, want AlreadyAllocatedError", r, p+3, err)
	}
	if _, err := a.BindEach(alloc.Request{Proto: sockopt.UDP, Addrs: ips}, sockopt.Options{}); !errors.Is(err, alloc.ErrInvalidRange) {
		t.Errorf("BindEach of the ephemeral range: %v, want ErrInvalidRange", err)
	}
	done("failed BindEach (reserved)")
}

// TestBindDropAll: Bind passes the filter option on; the socket stays silent
// until the filter is detached.
func TestBindDropAll(t *testing.T) {
	testenv.RequireNetAdmin(t)
	a := kernelAllocator(t)
	b, err := a.Bind(alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{lo4}}, sockopt.Options{DropAll: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	addr := netip.AddrPortFrom(lo4, b.Port).String()
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("connect to %s completed through the drop-all filter", addr)
	}
	if err := sockopt.DetachFilter(b.Files[0]); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("connect to %s after DetachFilter: %v", addr, err)
	}
	c.Close()
}

// TestConcurrentBind binds from several goroutines at once: no port is handed
// out twice, and every socket really is bound.
func TestConcurrentBind(t *testing.T) {
	testenv.RequireNetAdmin(t)
	a := kernelAllocator(t)
	done := leakCheck(t, a)
	const workers, each = 6, 15
	var (
		mu   sync.Mutex
		all  []*alloc.Binding
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		proto := sockopt.TCP
		ip := lo4
		if w%2 == 1 {
			ip = netip.IPv4Unspecified()
		}
		wg.Go(func() {
			for range each {
				b, err := a.Bind(alloc.Request{Proto: proto, Addrs: []netip.Addr{ip}}, sockopt.Options{DropAll: true})
				if err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				mu.Lock()
				all = append(all, b)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := make(map[uint16]bool)
	for _, b := range all {
		if seen[b.Port] {
			t.Errorf("port %d handed out twice", b.Port)
		}
		seen[b.Port] = true
	}
	if n := a.Allocated(); n != len(all) {
		t.Errorf("Allocated() = %d with %d bindings", n, len(all))
	}
	for _, b := range all {
		b.Close()
	}
	done("closing every binding")
}

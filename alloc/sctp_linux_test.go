package alloc_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
	"golang.org/x/sys/unix"
)

var (
	sctpLo4 = netip.MustParseAddr("127.0.0.1")
	sctpLo6 = netip.MustParseAddr("::1")
)

func sctpAllocator(t *testing.T) *alloc.Allocator {
	t.Helper()
	a, err := alloc.New(alloc.Config{})
	if err != nil {
		t.Fatalf("alloc.New: %v", err)
	}
	return a
}

// sctpCheckFile checks that f is a listening SCTP socket on want.
func sctpCheckFile(t *testing.T, f *os.File, want netip.AddrPort) {
	t.Helper()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	if info.Proto != sockopt.SCTP || !info.Listening || info.Local != want {
		t.Fatalf("socket %s: %+v, want a listening SCTP socket on %s", f.Name(), info, want)
	}
}

// sctpAnswers reports whether an association with addr comes up within d.
func sctpAnswers(t *testing.T, addr netip.AddrPort, d time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := sctp.Dial(ctx, addr)
	if err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dial %s: %v, want success or a timeout", addr, err)
		}
		return false
	}
	c.Close()
	return true
}

// sctpAlreadyAllocated finds an alloc.AlreadyAllocatedError in err's chain,
// whether it is returned by value or by pointer.
func sctpAlreadyAllocated(err error) (alloc.AlreadyAllocatedError, bool) {
	stack := []error{err}
	for len(stack) > 0 && len(stack) < 100 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch v := any(e).(type) {
		case alloc.AlreadyAllocatedError:
			return v, true
		case *alloc.AlreadyAllocatedError:
			if v != nil {
				return *v, true
			}
		case interface{ Unwrap() error }:
			if u := v.Unwrap(); u != nil {
				stack = append(stack, u)
			}
		case interface{ Unwrap() []error }:
			stack = append(stack, v.Unwrap()...)
		}
	}
	return alloc.AlreadyAllocatedError{}, false
}

// TestSCTPBindSilentUntilDetached allocates one SCTP port on 127.0.0.1 and
// ::1 with the drop-all filter: both sockets listen and answer nothing until
// the filter is detached, and the reservation is per protocol.
func TestSCTPBindSilentUntilDetached(t *testing.T) {
	testenv.RequireSCTP(t)
	a := sctpAllocator(t)
	addrs := []netip.Addr{sctpLo4, sctpLo6}
	b, err := a.Bind(alloc.Request{Proto: sockopt.SCTP, Addrs: addrs}, sockopt.Options{DropAll: true})
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if b.Proto != sockopt.SCTP || b.Port == 0 || len(b.Files) != len(addrs) {
		t.Fatalf("Bind: proto %s port %d with %d files, want sctp, a port, %d files", b.Proto, b.Port, len(b.Files), len(addrs))
	}
	for i, f := range b.Files {
		ap := netip.AddrPortFrom(addrs[i], b.Port)
		sctpCheckFile(t, f, ap)
		if sctpAnswers(t, ap, 500*time.Millisecond) {
			t.Fatalf("%s answered INIT through the drop-all filter", ap)
		}
	}
	for i, f := range b.Files {
		if err := sockopt.DetachFilter(f); err != nil {
			t.Fatal(err)
		}
		if ap := netip.AddrPortFrom(addrs[i], b.Port); !sctpAnswers(t, ap, 20*time.Second) {
			t.Fatalf("%s does not answer after DetachFilter", ap)
		}
	}

	// The port is reserved for SCTP only.
	exact := alloc.Range{First: b.Port, Last: b.Port}
	_, err = a.Reserve(alloc.Request{Proto: sockopt.SCTP, Addrs: []netip.Addr{sctpLo4}, Range: exact})
	already, ok := sctpAlreadyAllocated(err)
	if !ok {
		t.Fatalf("Reserve of the bound SCTP port: %v, want an AlreadyAllocatedError", err)
	}
	if already.Port != b.Port || already.Proto != sockopt.SCTP {
		t.Errorf("AlreadyAllocatedError %+v, want port %d/sctp", already, b.Port)
	}
	port, err := a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{sctpLo4}, Range: exact})
	if err != nil || port != b.Port {
		t.Fatalf("Reserve of the same port for TCP: %d, %v", port, err)
	}
	a.Release(sockopt.TCP, []netip.Addr{sctpLo4}, port)

	// Closing the binding releases the port: in the allocator at once, in
	// the kernel once the probes' associations are torn down (the kernel
	// frees a closed SCTP endpoint asynchronously, so a bind right after
	// close can still see EADDRINUSE).
	if err := b.Close(); err != nil {
		t.Fatalf("Binding.Close: %v", err)
	}
	var b2 *alloc.Binding
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b2, err = a.Bind(alloc.Request{Proto: sockopt.SCTP, Addrs: addrs, Range: exact}, sockopt.Options{})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("Bind of the released port %d: %v", exact.First, err)
		}
	}
	defer b2.Close()
	sctpCheckFile(t, b2.Files[0], netip.AddrPortFrom(sctpLo4, exact.First))
}

// TestSCTPBindPortTakenElsewhere holds an SCTP port with a socket the
// allocator does not know of: an exact request for it fails with EADDRINUSE,
// a range holding it and one free port gets the free one.
func TestSCTPBindPortTakenElsewhere(t *testing.T) {
	testenv.RequireSCTP(t)
	a := sctpAllocator(t)
	held, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLo4, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	info, err := sockopt.Inspect(held)
	if err != nil {
		t.Fatal(err)
	}
	p := info.Local.Port()
	lo := []netip.Addr{sctpLo4}

	_, err = a.Bind(alloc.Request{Proto: sockopt.SCTP, Addrs: lo, Range: alloc.Range{First: p, Last: p}}, sockopt.Options{DropAll: true})
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Bind of port %d held by another socket: %v, want EADDRINUSE", p, err)
	}

	if p == 65535 {
		t.Skip("the held port is the last one; no range above it")
	}
	// Make sure p+1 is free before asking for {p, p+1}.
	probe, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLo4, p+1), sockopt.Options{})
	if err != nil {
		t.Skipf("port %d is not free: %v", p+1, err)
	}
	probe.Close()
	b, err := a.Bind(alloc.Request{Proto: sockopt.SCTP, Addrs: lo, Range: alloc.Range{First: p, Last: p + 1}}, sockopt.Options{DropAll: true})
	if err != nil {
		t.Fatalf("Bind of range %d-%d with %d held: %v", p, p+1, p, err)
	}
	defer b.Close()
	if b.Port != p+1 {
		t.Fatalf("Bind of range %d-%d: port %d, want %d", p, p+1, b.Port, p+1)
	}
	sctpCheckFile(t, b.Files[0], netip.AddrPortFrom(sctpLo4, p+1))
}

// TestSCTPBindEach binds every port of a three-port range.
func TestSCTPBindEach(t *testing.T) {
	testenv.RequireSCTP(t)
	a := sctpAllocator(t)
	// Find three consecutive free ports: start from one the kernel chose.
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(sctpLo4, 0), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sockopt.Inspect(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	first := info.Local.Port()
	if first > 65533 {
		first = 65533 - 3
	}
	r := alloc.Range{First: first, Last: first + 2}
	bs, err := a.BindEach(alloc.Request{Proto: sockopt.SCTP, Addrs: []netip.Addr{sctpLo4}, Range: r}, sockopt.Options{DropAll: true})
	if err != nil {
		t.Fatalf("BindEach %d-%d: %v", r.First, r.Last, err)
	}
	t.Cleanup(func() {
		for _, b := range bs {
			b.Close()
		}
	})
	if len(bs) != 3 {
		t.Fatalf("BindEach %d-%d: %d bindings, want 3", r.First, r.Last, len(bs))
	}
	for i, b := range bs {
		want := netip.AddrPortFrom(sctpLo4, r.First+uint16(i))
		if b.Port != want.Port() || len(b.Files) != 1 {
			t.Fatalf("binding %d: port %d with %d files, want %d with 1", i, b.Port, len(b.Files), want.Port())
		}
		sctpCheckFile(t, b.Files[0], want)
	}
}

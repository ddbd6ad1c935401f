package alloc_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/sockopt"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// newAllocator returns an Allocator that does not depend on this machine's
// /proc: ephemeral range eph, nothing reserved by the kernel.
func newAllocator(t testing.TB, eph alloc.Range) *alloc.Allocator {
	t.Helper()
	a, err := alloc.New(alloc.Config{Ephemeral: eph, Reserved: []alloc.Range{}})
	if err != nil {
		t.Fatalf("alloc.New: %v", err)
	}
	return a
}

func one(p uint16) alloc.Range { return alloc.Range{First: p, Last: p} }

// TestOverlap reserves an explicit port on a first address, then asks for the
// same port on a second one.
func TestOverlap(t *testing.T) {
	tests := []struct {
		name          string
		first, second string
		p1, p2        sockopt.Proto
		conflict      bool
	}{
		{"v4 wildcard then address", "0.0.0.0", "127.0.0.1", sockopt.TCP, sockopt.TCP, true},
		{"v4 address then wildcard", "127.0.0.1", "0.0.0.0", sockopt.TCP, sockopt.TCP, true},
		{"v4 wildcard twice", "0.0.0.0", "0.0.0.0", sockopt.UDP, sockopt.UDP, true},
		{"same v4 address", "10.1.2.3", "10.1.2.3", sockopt.TCP, sockopt.TCP, true},
		{"two v4 addresses", "127.0.0.1", "127.0.0.2", sockopt.TCP, sockopt.TCP, false},
		{"v6 wildcard then address", "::", "::1", sockopt.TCP, sockopt.TCP, true},
		{"v6 address then wildcard", "2001:db8::1", "::", sockopt.UDP, sockopt.UDP, true},
		{"two v6 addresses", "::1", "2001:db8::1", sockopt.TCP, sockopt.TCP, false},
		{"v4 wildcard and v6 wildcard", "0.0.0.0", "::", sockopt.TCP, sockopt.TCP, false},
		{"v6 wildcard and v4 address", "::", "127.0.0.1", sockopt.TCP, sockopt.TCP, false},
		{"v4-mapped is v4", "::ffff:127.0.0.1", "127.0.0.1", sockopt.TCP, sockopt.TCP, true},
		{"v4-mapped wildcard is v4", "::ffff:0.0.0.0", "192.0.2.1", sockopt.TCP, sockopt.TCP, true},
		{"v4 address then v4-mapped wildcard", "192.0.2.1", "::ffff:0.0.0.0", sockopt.TCP, sockopt.TCP, true},
		{"v4-mapped is not v6 wildcard", "::ffff:127.0.0.1", "::", sockopt.TCP, sockopt.TCP, false},
		{"protocols are independent", "0.0.0.0", "0.0.0.0", sockopt.TCP, sockopt.UDP, false},
		{"sctp and tcp are independent", "127.0.0.1", "0.0.0.0", sockopt.SCTP, sockopt.TCP, false},
		{"sctp overlaps sctp", "127.0.0.1", "0.0.0.0", sockopt.SCTP, sockopt.SCTP, true},
		{"zones are distinct addresses", "fe80::1%eth0", "fe80::1%eth1", sockopt.TCP, sockopt.TCP, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAllocator(t, alloc.Range{First: 1000, Last: 1999})
			const port = 1234
			first, second := addrs(tt.first), addrs(tt.second)
			if p, err := a.Reserve(alloc.Request{Proto: tt.p1, Addrs: first, Range: one(port)}); err != nil || p != port {
				t.Fatalf("Reserve %s %d/%s: %d, %v", tt.first, port, tt.p1, p, err)
			}
			p, err := a.Reserve(alloc.Request{Proto: tt.p2, Addrs: second, Range: one(port)})
			if !tt.conflict {
				if err != nil || p != port {
					t.Fatalf("Reserve %s %d/%s after %s: %d, %v; want %d", tt.second, port, tt.p2, tt.first, p, err, port)
				}
				return
			}
			var already alloc.AlreadyAllocatedError
			if !errors.As(err, &already) {
				t.Fatalf("Reserve %s %d/%s after %s: %d, %v; want an AlreadyAllocatedError", tt.second, port, tt.p2, tt.first, p, err)
			}
			want := alloc.AlreadyAllocatedError{Addr: second[0], Proto: tt.p2, Port: port}
			if already != want {
				t.Errorf("error %+v, want %+v", already, want)
			}
			if a.Allocated() != 1 {
				t.Errorf("Allocated() = %d after a refused request, want 1", a.Allocated())
			}
			// Once the first is released the second gets the port.
			a.Release(tt.p1, first, port)
			if p, err := a.Reserve(alloc.Request{Proto: tt.p2, Addrs: second, Range: one(port)}); err != nil || p != port {
				t.Fatalf("Reserve %s after Release of %s: %d, %v", tt.second, tt.first, p, err)
			}
		})
	}
}

// TestWildcardReleaseKeepsOthers checks the per-port counts behind the
// wildcard: 0.0.0.0 stays blocked until the last IPv4 holder goes.
func TestWildcardReleaseKeepsOthers(t *testing.T) {
	a := newAllocator(t, alloc.Range{First: 1000, Last: 1999})
	req := func(s string) alloc.Request {
		return alloc.Request{Proto: sockopt.TCP, Addrs: addrs(s), Range: one(1500)}
	}
	for _, s := range []string{"127.0.0.1", "127.0.0.2"} {
		if _, err := a.Reserve(req(s)); err != nil {
			t.Fatal(err)
		}
	}
	a.Release(sockopt.TCP, addrs("127.0.0.1"), 1500)
	a.Release(sockopt.TCP, addrs("127.0.0.1"), 1500) // twice: no effect
	a.Release(sockopt.TCP, addrs("127.0.0.3"), 1500) // never reserved
	if _, err := a.Reserve(req("0.0.0.0")); !errors.As(err, new(alloc.AlreadyAllocatedError)) {
		t.Fatalf("0.0.0.0 while 127.0.0.2 holds the port: %v, want AlreadyAllocatedError", err)
	}
	a.Release(sockopt.TCP, addrs("127.0.0.2"), 1500)
	if _, err := a.Reserve(req("0.0.0.0")); err != nil {
		t.Fatalf("0.0.0.0 once every holder released: %v", err)
	}
	if n := a.Allocated(); n != 1 {
		t.Fatalf("Allocated() = %d, want 1", n)
	}
}

// TestSequence runs a sequence of reserve/release steps on one allocator.
func TestSequence(t *testing.T) {
	type step struct {
		release bool // release port on addrs instead of reserving
		addrs   []string
		r       alloc.Range
		port    uint16 // expected port (or port to release)
		err     error  // expected error (errors.Is), nil for success
	}
	eph := alloc.Range{First: 100, Last: 104}
	tests := []struct {
		name  string
		steps []step
	}{
		{"common port over several addresses", []step{
			{addrs: []string{"127.0.0.1"}, r: one(100), port: 100},
			{addrs: []string{"127.0.0.2"}, r: one(101), port: 101},
			{addrs: []string{"::"}, r: one(102), port: 102},
			{addrs: []string{"127.0.0.1", "127.0.0.2", "::1"}, r: alloc.Range{First: 100, Last: 104}, port: 103},
			{addrs: []string{"127.0.0.2", "::1"}, r: alloc.Range{First: 100, Last: 104}, port: 104},
			{addrs: []string{"127.0.0.2", "::1"}, r: alloc.Range{First: 100, Last: 104}, port: 100},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 100, Last: 104}, port: 101},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 100, Last: 104}, port: 102},
			{addrs: []string{"0.0.0.0"}, r: alloc.Range{First: 100, Last: 104}, err: alloc.ErrAllPortsAllocated},
		}},
		{"wildcard needs the port free on every address", []step{
			{addrs: []string{"127.0.0.1"}, r: one(100), port: 100},
			{addrs: []string{"10.0.0.1"}, r: one(101), port: 101},
			{addrs: []string{"0.0.0.0"}, r: alloc.Range{First: 100, Last: 102}, port: 102},
		}},
		{"range starts after the last port and wraps", []step{
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 10},
			{release: true, addrs: []string{"127.0.0.1"}, port: 10},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 11},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 12},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 13},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 14},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 10},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, err: alloc.ErrAllPortsAllocated},
			{release: true, addrs: []string{"127.0.0.1"}, port: 12},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 14}, port: 12},
		}},
		{"other address has its own ports", []step{
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 11}, port: 10},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 11}, port: 11},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 10, Last: 11}, err: alloc.ErrAllPortsAllocated},
			{addrs: []string{"127.0.0.2"}, r: alloc.Range{First: 10, Last: 11}, port: 10},
			{addrs: []string{"::"}, r: alloc.Range{First: 10, Last: 11}, port: 11},
		}},
		{"ephemeral range", []step{
			{addrs: []string{"::1"}, port: 100},
			{addrs: []string{"::1"}, port: 101},
			{addrs: []string{"::1"}, r: one(103), port: 103},
			{addrs: []string{"::1"}, port: 102},
			{addrs: []string{"::1"}, port: 104},
			{addrs: []string{"::1"}, err: alloc.ErrAllPortsAllocated},
			{addrs: []string{"::1"}, r: one(105), port: 105}, // outside the ephemeral range: honoured
			{addrs: []string{"::2"}, port: 100},
		}},
		{"range of one port in the middle of others", []step{
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 65534, Last: 65535}, port: 65534},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 65534, Last: 65535}, port: 65535},
			{addrs: []string{"127.0.0.1"}, r: one(65535), err: alloc.AlreadyAllocatedError{}},
			{addrs: []string{"127.0.0.1"}, r: alloc.Range{First: 1, Last: 1}, port: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAllocator(t, eph)
			for i, s := range tt.steps {
				ips := addrs(s.addrs...)
				if s.release {
					a.Release(sockopt.TCP, ips, s.port)
					continue
				}
				before := a.Allocated()
				p, err := a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: ips, Range: s.r})
				switch {
				case s.err == nil && err != nil:
					t.Fatalf("step %d: Reserve %v %s: %v, want port %d", i, s.addrs, s.r, err, s.port)
				case s.err == nil && p != s.port:
					t.Fatalf("step %d: Reserve %v %s: port %d, want %d", i, s.addrs, s.r, p, s.port)
				case errors.As(s.err, new(alloc.AlreadyAllocatedError)):
					if !errors.As(err, new(alloc.AlreadyAllocatedError)) {
						t.Fatalf("step %d: Reserve %v %s: %d, %v, want an AlreadyAllocatedError", i, s.addrs, s.r, p, err)
					}
				case s.err != nil && !errors.Is(err, s.err):
					t.Fatalf("step %d: Reserve %v %s: %d, %v, want %v", i, s.addrs, s.r, p, err, s.err)
				}
				if want := before + len(ips); err == nil && a.Allocated() != want {
					t.Fatalf("step %d: Allocated() = %d, want %d", i, a.Allocated(), want)
				}
				if err != nil && a.Allocated() != before {
					t.Fatalf("step %d: a failed Reserve changed Allocated() from %d to %d", i, before, a.Allocated())
				}
			}
		})
	}
}

func TestKernelReservedSkippedInEphemeralOnly(t *testing.T) {
	a, err := alloc.New(alloc.Config{
		Ephemeral: alloc.Range{First: 1000, Last: 1004},
		Reserved:  []alloc.Range{{First: 1001, Last: 1002}, {First: 7, Last: 7}},
	})
	if err != nil {
		t.Fatal(err)
	}
	lo := addrs("127.0.0.1")
	var got []uint16
	for {
		p, err := a.Reserve(alloc.Request{Proto: sockopt.UDP, Addrs: lo})
		if errors.Is(err, alloc.ErrAllPortsAllocated) {
			break
		}
		if err != nil || len(got) > 5 {
			t.Fatalf("Reserve: %d, %v after %v", p, err, got)
		}
		got = append(got, p)
	}
	if want := []uint16{1000, 1003, 1004}; !equalPorts(got, want) {
		t.Fatalf("ephemeral ports %v, want %v", got, want)
	}
	// Asked for explicitly, a reserved port is honoured.
	for _, r := range []alloc.Range{one(1001), {First: 1001, Last: 1002}, one(7)} {
		if _, err := a.Reserve(alloc.Request{Proto: sockopt.UDP, Addrs: lo, Range: r}); err != nil {
			t.Errorf("explicit %s: %v", r, err)
		}
	}
}

func equalPorts(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBadRequests(t *testing.T) {
	a := newAllocator(t, alloc.Range{First: 1000, Last: 1999})
	lo := addrs("127.0.0.1")
	tests := []struct {
		name string
		req  alloc.Request
		want error
	}{
		{"no addresses", alloc.Request{Proto: sockopt.TCP}, alloc.ErrNoAddrs},
		{"empty addresses", alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{}}, alloc.ErrNoAddrs},
		{"zero proto", alloc.Request{Addrs: lo}, alloc.ErrUnknownProto},
		{"unknown proto", alloc.Request{Proto: sockopt.Proto(42), Addrs: lo}, alloc.ErrUnknownProto},
		{"reversed range", alloc.Request{Proto: sockopt.TCP, Addrs: lo, Range: alloc.Range{First: 9, Last: 8}}, alloc.ErrInvalidRange},
		{"range from 0", alloc.Request{Proto: sockopt.TCP, Addrs: lo, Range: alloc.Range{First: 0, Last: 8}}, alloc.ErrInvalidRange},
		{"zero address", alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{{}}}, alloc.ErrInvalidAddr},
		{"duplicate address", alloc.Request{Proto: sockopt.TCP, Addrs: addrs("127.0.0.1", "::1", "127.0.0.1")}, alloc.ErrInvalidAddr},
		{"wildcard and address", alloc.Request{Proto: sockopt.TCP, Addrs: addrs("0.0.0.0", "127.0.0.1")}, alloc.ErrInvalidAddr},
		{"mapped duplicate", alloc.Request{Proto: sockopt.TCP, Addrs: addrs("::ffff:10.0.0.1", "10.0.0.1")}, alloc.ErrInvalidAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := a.Reserve(tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("Reserve(%+v) = %d, %v; want %v", tt.req, p, err, tt.want)
			}
			if b, err := a.Bind(tt.req, sockopt.Options{}); !errors.Is(err, tt.want) {
				if b != nil {
					b.Close()
				}
				t.Fatalf("Bind(%+v): %v; want %v", tt.req, err, tt.want)
			}
			if n := a.Allocated(); n != 0 {
				t.Fatalf("Allocated() = %d after a bad request", n)
			}
		})
	}
}

func writeProc(t *testing.T, portRange, reserved *string) string {
	t.Helper()
	dir := t.TempDir()
	ipv4 := filepath.Join(dir, "sys/net/ipv4")
	if err := os.MkdirAll(ipv4, 0o755); err != nil {
		t.Fatal(err)
	}
	if portRange != nil {
		if err := os.WriteFile(filepath.Join(ipv4, "ip_local_port_range"), []byte(*portRange), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if reserved != nil {
		if err := os.WriteFile(filepath.Join(ipv4, "ip_local_reserved_ports"), []byte(*reserved), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestConfigFromProc(t *testing.T) {
	s := func(v string) *string { return &v }
	tests := []struct {
		name        string
		portRange   *string
		reserved    *string
		cfg         alloc.Config // ProcDir is filled in
		wantErr     error
		wantRange   alloc.Range
		wantPorts   []uint16 // the ports handed out in order until exhaustion
		exhaustions int
	}{
		{name: "kernel files", portRange: s("5000\t5003\n"), reserved: s("5001\n"),
			wantRange: alloc.Range{First: 5000, Last: 5003}, wantPorts: []uint16{5000, 5002, 5003}},
		{name: "empty reserved list", portRange: s("5000 5001\n"), reserved: s("\n"),
			wantRange: alloc.Range{First: 5000, Last: 5001}, wantPorts: []uint16{5000, 5001}},
		{name: "no reserved file", portRange: s("5000 5001"),
			wantRange: alloc.Range{First: 5000, Last: 5001}, wantPorts: []uint16{5000, 5001}},
		{name: "no range file: Linux default", reserved: s("32768-60990"),
			wantRange: alloc.DefaultEphemeral, wantPorts: []uint16{60991, 60992, 60993, 60994, 60995, 60996, 60997, 60998, 60999}},
		{name: "config overrides files", portRange: s("5000 5001"), reserved: s("7000"),
			cfg:       alloc.Config{Ephemeral: alloc.Range{First: 7000, Last: 7001}},
			wantRange: alloc.Range{First: 7000, Last: 7001}, wantPorts: []uint16{7001}},
		{name: "malformed range file", portRange: s("5000\n"), wantErr: alloc.ErrInvalidRange},
		{name: "reversed range file", portRange: s("6000 5000\n"), wantErr: alloc.ErrInvalidRange},
		{name: "malformed reserved file", portRange: s("5000 5001"), reserved: s("1,,2"), wantErr: alloc.ErrInvalidRange},
		{name: "bad config range", cfg: alloc.Config{Ephemeral: alloc.Range{First: 10, Last: 9}}, wantErr: alloc.ErrInvalidRange},
		{name: "bad config reserved", cfg: alloc.Config{Reserved: []alloc.Range{{First: 10, Last: 9}}}, wantErr: alloc.ErrInvalidRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.ProcDir = writeProc(t, tt.portRange, tt.reserved)
			a, err := alloc.New(cfg)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("New: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := a.Ephemeral(); got != tt.wantRange {
				t.Fatalf("Ephemeral() = %s, want %s", got, tt.wantRange)
			}
			var got []uint16
			for range len(tt.wantPorts) + 1 {
				p, err := a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: addrs("0.0.0.0")})
				if errors.Is(err, alloc.ErrAllPortsAllocated) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p)
			}
			if !equalPorts(got, tt.wantPorts) {
				t.Fatalf("ports %v, want %v", got, tt.wantPorts)
			}
		})
	}
}

// TestConcurrentReserve reserves from many goroutines, on a specific address
// and on the wildcard, and checks that no port is handed out twice.
func TestConcurrentReserve(t *testing.T) {
	a := newAllocator(t, alloc.Range{First: 2000, Last: 2999})
	const workers, each = 8, 100
	ports := make([][]uint16, workers)
	var wg sync.WaitGroup
	for w := range workers {
		ip := "127.0.0.1"
		if w%2 == 1 {
			ip = "0.0.0.0"
		}
		wg.Go(func() {
			for i := range each {
				p, err := a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: addrs(ip)})
				if err != nil {
					t.Errorf("worker %d, request %d: %v", w, i, err)
					return
				}
				ports[w] = append(ports[w], p)
				if i%10 == 9 { // release some, so that ports are reused
					a.Release(sockopt.TCP, addrs(ip), p)
					ports[w] = ports[w][:len(ports[w])-1]
				}
			}
		})
	}
	wg.Wait()
	seen := make(map[uint16]int)
	for w, ps := range ports {
		for _, p := range ps {
			if other, dup := seen[p]; dup {
				t.Fatalf("port %d handed out to workers %d and %d at once", p, other, w)
			}
			seen[p] = w
		}
	}
	if want := workers * each * 9 / 10; len(seen) != want || a.Allocated() != want {
		t.Fatalf("%d distinct ports, Allocated() = %d, want %d", len(seen), a.Allocated(), want)
	}
}

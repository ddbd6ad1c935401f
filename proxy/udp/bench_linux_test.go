package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// baselineRelay relays the way docker-proxy does: one goroutine reads the
// host socket a datagram at a time into a 64 KiB buffer, looks the client up
// in a locked map, and writes the datagram to that client's connected
// backend socket; each client has a goroutine with its own 64 KiB buffer
// that reads replies one at a time and writes each back with WriteTo. It is
// the yardstick for the benchmarks, not a relay to use.
type baselineRelay struct {
	host    *net.UDPConn
	backend *net.UDPAddr
	mu      sync.Mutex
	flows   map[netip.AddrPort]*net.UDPConn
	wg      sync.WaitGroup
}

func newBaseline(tb testing.TB, backend netip.AddrPort) *baselineRelay {
	tb.Helper()
	r := &baselineRelay{
		host:    listenUDP(tb, "127.0.0.1:0"),
		backend: net.UDPAddrFromAddrPort(backend),
		flows:   make(map[netip.AddrPort]*net.UDPConn),
	}
	r.wg.Add(1)
	go r.serve()
	tb.Cleanup(r.close)
	return r
}

func (r *baselineRelay) addr() netip.AddrPort { return r.host.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *baselineRelay) numFlows() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}

func (r *baselineRelay) serve() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.host.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		c, ok := r.flows[from]
		if !ok {
			if c, err = net.DialUDP("udp", nil, r.backend); err != nil {
				r.mu.Unlock()
				continue
			}
			r.flows[from] = c
			r.wg.Add(1)
			go r.replies(c, from)
		}
		r.mu.Unlock()
		c.Write(buf[:n])
	}
}

func (r *baselineRelay) replies(c *net.UDPConn, client netip.AddrPort) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED and the like
		}
		r.host.WriteToUDPAddrPort(buf[:n], client)
	}
}

func (r *baselineRelay) close() {
	r.host.Close()
	r.mu.Lock()
	for _, c := range r.flows {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// relayUnderTest starts either relay in front of backend and returns its
// address and a function counting its flows.
type relayUnderTest func(b *testing.B, backend netip.AddrPort, maxFlows int) (netip.AddrPort, func() int)

func ours(b *testing.B, backend netip.AddrPort, maxFlows int) (netip.AddrPort, func() int) {
	p := start(b, hostSocket(b, "127.0.0.1:0"), Config{Backend: backend, MaxFlows: maxFlows})
	return hostPort(p), func() int { return p.Stats().Flows }
}

func baseline(b *testing.B, backend netip.AddrPort, _ int) (netip.AddrPort, func() int) {
	r := newBaseline(b, backend)
	return r.addr(), r.numFlows
}

// BenchmarkThroughput measures echoed datagrams per second (client → relay
// → echo backend → relay → client, 64-byte payloads, each client keeping a
// window of datagrams in flight) through hostproxy's relay and through the
// docker-proxy-style baseline. The two run in alternating chunks of the same
// benchmark, so that the load of a shared machine weighs on both alike; an op
// is one round trip through each. It reports both rates and their ratio.
func BenchmarkThroughput(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchThroughput(b, clients, 64)
		})
	}
}

func benchThroughput(b *testing.B, clients, size int) {
	backend := echoBackend(b, "127.0.0.1:0")
	oursAddr, _ := ours(b, backend, 0)
	baseAddr, _ := baseline(b, backend, 0)
	oursConns, baseConns := clientConns(b, oursAddr, clients, size), clientConns(b, baseAddr, clients, size)
	var oursLoad, baseLoad load
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	b.ResetTimer()
	const chunk = 2000
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		oursLoad.add(pump(b, oursConns, n, size))
		baseLoad.add(pump(b, baseConns, n, size))
	}
	b.StopTimer()
	b.ReportMetric(oursLoad.rate(), "hostproxy-datagrams/s")
	b.ReportMetric(baseLoad.rate(), "baseline-datagrams/s")
	b.ReportMetric(oursLoad.rate()/baseLoad.rate(), "x-baseline")
	b.ReportMetric(float64(oursLoad.lost)/float64(b.N), "hostproxy-lost/op")
	b.ReportMetric(float64(baseLoad.lost)/float64(b.N), "baseline-lost/op")
}

func clientConns(b *testing.B, to netip.AddrPort, n, size int) []*net.UDPConn {
	conns := make([]*net.UDPConn, n)
	for i := range conns {
		conns[i] = dial(b, to)
		conns[i].SetReadBuffer(1 << 20)
		roundTrip(b, conns[i], make([]byte, size)) // open the flow
	}
	return conns
}

// load sums what pump measured.
type load struct {
	received, lost int
	elapsed        time.Duration
}

func (l *load) add(o load) {
	l.received += o.received
	l.lost += o.lost
	l.elapsed += o.elapsed
}

func (l *load) rate() float64 { return float64(l.received) / l.elapsed.Seconds() }

// pump makes n round trips spread over conns, each keeping up to 16
// datagrams in flight; a window that gets no reply for 50ms counts as lost.
func pump(b *testing.B, conns []*net.UDPConn, n, size int) load {
	const window = 16
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		sum load
	)
	begin := time.Now()
	for i, c := range conns {
		share := n / len(conns)
		if i < n%len(conns) {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, buf := make([]byte, size), make([]byte, 2048)
			sent, done, inflight, got, gone := 0, 0, 0, 0, 0
			for done < share {
				for inflight < window && sent < share {
					if _, err := c.Write(msg); err != nil {
						b.Errorf("write: %v", err)
						return
					}
					sent++
					inflight++
				}
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := c.Read(buf); err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						b.Errorf("read: %v", err)
						return
					}
					// The rest of the window is lost, or late: a late reply
					// then counts for the next window, erring towards loss.
					done += inflight
					gone += inflight
					inflight = 0
					continue
				}
				inflight--
				done++
				got++
			}
			mu.Lock()
			sum.received += got
			sum.lost += gone
			mu.Unlock()
		}()
	}
	wg.Wait()
	sum.elapsed = time.Since(begin)
	return sum
}

// BenchmarkIdleFlow measures the memory an idle flow costs: the growth of
// heap plus goroutine stacks after 10,000 clients each sent one datagram
// (the baseline: 1,000 clients, its cost per flow being a goroutine and a
// 64 KiB buffer). The backend never answers.
func BenchmarkIdleFlow(b *testing.B) {
	b.Run("relay=hostproxy/flows=10000", func(b *testing.B) { benchIdleFlows(b, ours, 10000) })
	b.Run("relay=baseline/flows=1000", func(b *testing.B) { benchIdleFlows(b, baseline, 1000) })
}

func benchIdleFlows(b *testing.B, relay relayUnderTest, n int) {
	sink := listenUDP(b, "127.0.0.1:0") // never read: the kernel drops what overflows
	to, flows := relay(b, sink.LocalAddr().(*net.UDPAddr).AddrPort(), n+1)
	toAddr := net.UDPAddrFromAddrPort(to)
	// Warm up: the relay's buffers and one flow exist before measuring.
	send := func(i int) {
		// Distinct source addresses in 127.1.0.0/16, so every client is new.
		src := &net.UDPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))}
		c, err := net.ListenUDP("udp4", src)
		if err != nil {
			b.Fatalf("client %d on %s: %v", i, src, err)
		}
		defer c.Close()
		if _, err := c.WriteToUDP([]byte("x"), toAddr); err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
	}
	send(n)
	waitFor(b, 5*time.Second, "the warm-up flow", func() bool { return flows() == 1 })
	before, slabBefore := memInUse(), slabBytes()
	for i := 0; i < n; {
		for end := min(i+200, n); i < end; i++ {
			send(i)
		}
		want := i + 1
		waitFor(b, 10*time.Second, fmt.Sprintf("%d flows", want), func() bool { return flows() >= want })
	}
	after, slabAfter := memInUse(), slabBytes()
	for b.Loop() {
		flows()
	}
	// After the loop: b.Loop's first call resets user metrics.
	b.ReportMetric(float64(after-before)/float64(n), "B/idle-flow")
	// The kernel's side (socket, file, epoll item), read from the
	// system-wide Slab figure: a rough guide on a busy machine.
	if slabBefore > 0 && slabAfter > slabBefore {
		b.ReportMetric(float64(slabAfter-slabBefore)/float64(n), "kernel-slab-B/idle-flow")
	}
}

// slabBytes is the Slab line of /proc/meminfo, or 0.
func slabBytes() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Slab:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			return kb << 10
		}
	}
	return 0
}

// memInUse is the heap in use plus goroutine stacks, after a collection.
func memInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc) + int64(ms.StackInuse)
}

// BenchmarkRoundTrip checks with -benchmem that relaying a datagram
// allocates nothing: each op is one round trip of one client.
func BenchmarkRoundTrip(b *testing.B) {
	p := start(b, hostSocket(b, "127.0.0.1:0"), Config{Backend: echoBackend(b, "127.0.0.1:0")})
	c := dial(b, hostPort(p))
	msg, buf := make([]byte, 64), make([]byte, 2048)
	roundTrip(b, c, msg)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

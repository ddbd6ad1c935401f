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
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/sockopt"
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
	f := hostSocket(b, "127.0.0.1:0")
	p := start(b, f, Config{Backend: backend, MaxFlows: maxFlows})
	f.Close() // as cmd/hostproxy does: the relay serves its own descriptor
	return hostPort(p), func() int { return p.Stats().Flows }
}

func baseline(b *testing.B, backend netip.AddrPort, _ int) (netip.AddrPort, func() int) {
	r := newBaseline(b, backend)
	return r.addr(), r.numFlows
}

// BenchmarkThroughput measures echoed datagrams per second through
// hostproxy's relay and through the docker-proxy-style baseline, with 1 and
// with 8 client sockets and 64-byte payloads. An op is one round trip (client
// → relay → backend → relay → client) through each relay.
//
// The load is made cheap so that the relays, not the load, use the CPU. Each
// client is a goroutine with a connected socket keeping a window of 16
// datagrams in flight: it sends what the window lacks with one sendmmsg
// (plain datagrams, one per message, no GSO) and collects replies with one
// recvmmsg per wake-up, both through Go's poller (RawConn), with a 50ms read
// deadline: a window that gets no reply for 50ms counts as lost. The backend
// (batchEchoBackend, shared by both relays) reads up to 64 datagrams with one
// recvmmsg and echoes them with one sendmmsg. The two relays run in
// alternating chunks of the same benchmark, so that the load of a shared
// machine weighs on both alike. It reports both rates and their ratio.
func BenchmarkThroughput(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchThroughput(b, clients, 64, false)
		})
	}
}

// BenchmarkThroughputGSO is a second, QUIC-style load, not the primary
// figure: clients send what their window lacks with one sendmsg carrying
// UDP_SEGMENT (UDP GSO) and receive with UDP_GRO on, and the echo backend
// has UDP_GRO on and echoes each coalesced run with UDP_SEGMENT, so each
// syscall of the load moves many datagrams, as quic-go does. Datagrams are
// still counted one by one, and the relays are the same as in
// BenchmarkThroughput.
func BenchmarkThroughputGSO(b *testing.B) {
	if !gsoLoadSupported() {
		b.Skip("no UDP GSO/GRO in this kernel")
	}
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchThroughput(b, clients, 64, true)
		})
	}
}

func benchThroughput(b *testing.B, clients, size int, gso bool) {
	backend := batchEchoBackend(b, "127.0.0.1:0", gso)
	oursAddr, _ := ours(b, backend, 0)
	baseAddr, _ := baseline(b, backend, 0)
	oursConns, baseConns := clientConns(b, oursAddr, clients, size, gso), clientConns(b, baseAddr, clients, size, gso)
	directConns := clientConns(b, backend, clients, size, gso)
	var oursLoad, baseLoad, directLoad load
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	b.ResetTimer()
	const chunk = 2000
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		oursLoad.add(pump(b, oursConns, n))
		baseLoad.add(pump(b, baseConns, n))
		directLoad.add(pump(b, directConns, n))
	}
	b.StopTimer()
	b.ReportMetric(oursLoad.rate(), "hostproxy-datagrams/s")
	b.ReportMetric(baseLoad.rate(), "baseline-datagrams/s")
	b.ReportMetric(oursLoad.rate()/baseLoad.rate(), "x-baseline")
	b.ReportMetric(directLoad.rate()/baseLoad.rate(), "direct-x-baseline")
	b.ReportMetric(float64(oursLoad.lost)/float64(b.N), "hostproxy-lost/op")
	b.ReportMetric(float64(baseLoad.lost)/float64(b.N), "baseline-lost/op")
}

func clientConns(b *testing.B, to netip.AddrPort, n, size int, gso bool) []*loadClient {
	conns := make([]*loadClient, n)
	for i := range conns {
		c := dial(b, to)
		c.SetReadBuffer(1 << 20)
		roundTrip(b, c, make([]byte, size)) // open the flow
		conns[i] = newLoadClient(b, c, size, gso)
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

// pump makes n round trips spread over conns, each keeping up to
// loadWindow datagrams in flight; a window that gets no reply for 50ms
// counts as lost.
func pump(b *testing.B, conns []*loadClient, n int) load {
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
			got, gone, err := c.run(share)
			if err != nil {
				b.Error(err)
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

// loadWindow is the number of datagrams a load client keeps in flight.
const loadWindow = 16

// loadClient is one client socket of the load, moving its datagrams with
// sendmmsg and recvmmsg (or, with gso, one UDP_SEGMENT sendmsg and UDP_GRO
// reads) through Go's poller. All its buffers are made once.
type loadClient struct {
	c    *net.UDPConn
	rc   syscall.RawConn
	size int
	gso  bool

	out, in   batch
	ctl       []byte // the UDP_SEGMENT control message (gso)
	gsoIov    unix.Iovec
	gsoHdr    unix.Msghdr
	gsoBuf    []byte
	k         int // datagrams to send, or received
	err       unix.Errno
	sendFn    func(uintptr) bool
	sendGSOFn func(uintptr) bool
	recvFn    func(uintptr) bool
}

func newLoadClient(tb testing.TB, c *net.UDPConn, size int, gso bool) *loadClient {
	tb.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	l := &loadClient{c: c, rc: rc, size: size, gso: gso, out: newBatch(loadWindow, size, false, false)}
	l.sendFn, l.sendGSOFn, l.recvFn = l.send, l.sendGSO, l.recv
	if gso {
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) })
		if serr != nil {
			tb.Fatalf("UDP_GRO on a load client: %v", serr)
		}
		// A coalesced read holds up to a window of datagrams.
		l.in = newBatch(loadWindow, loadWindow*max(size, 1)+size, false, true)
		l.gsoBuf = make([]byte, loadWindow*size)
		l.ctl = sockopt.AppendUDPSegment(nil, uint16(size))
		l.gsoIov.Base = &l.gsoBuf[0]
		l.gsoHdr.Iov = &l.gsoIov
		l.gsoHdr.SetIovlen(1)
		l.gsoHdr.Control = &l.ctl[0]
		l.gsoHdr.SetControllen(len(l.ctl))
	} else {
		l.in = newBatch(loadWindow, 2048, false, false)
	}
	return l
}

func (l *loadClient) send(fd uintptr) bool {
	for l.k > 0 {
		n, errno := mmsg(unix.SYS_SENDMMSG, int(fd), l.out.hdrs[:l.k])
		switch errno {
		case 0:
			l.k -= n
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			l.err = errno
			return true
		}
	}
	return true
}

func (l *loadClient) sendGSO(fd uintptr) bool {
	for {
		l.gsoIov.SetLen(l.k * l.size)
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&l.gsoHdr)), unix.MSG_DONTWAIT)
		switch e {
		case 0:
			l.k = 0
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			l.err = e
			return true
		}
	}
}

func (l *loadClient) recv(fd uintptr) bool {
	for i := range l.in.hdrs[:l.k] {
		if l.in.oobs != nil {
			l.in.hdrs[i].Hdr.SetControllen(len(l.in.oobs[i]))
		}
		l.in.hdrs[i].Hdr.Flags = 0
	}
	n, errno := mmsg(unix.SYS_RECVMMSG, int(fd), l.in.hdrs[:l.k])
	switch errno {
	case 0:
	case unix.EINTR:
		return false
	case unix.EAGAIN:
		return false
	default:
		l.err = errno
		return true
	}
	// Count datagrams: a coalesced (UDP_GRO) read carries its segment size.
	got := 0
	for i := range l.in.hdrs[:n] {
		h := &l.in.hdrs[i]
		if l.gso {
			seg, ok := sockopt.ParseUDPGRO(l.in.oobs[i][:h.Hdr.Controllen])
			if ok && seg > 0 {
				got += (int(h.Len) + seg - 1) / seg
				continue
			}
		}
		got++
	}
	l.k = got
	return true
}

// run makes share round trips and returns how many replies came back and
// how many datagrams were counted lost.
func (l *loadClient) run(share int) (got, gone int, err error) {
	sent, done, inflight := 0, 0, 0
	for done < share {
		if k := min(loadWindow-inflight, share-sent); k > 0 {
			l.k, l.err = k, 0
			fn := l.sendFn
			if l.gso {
				fn = l.sendGSOFn
			}
			if err := l.rc.Write(fn); err != nil || l.err != 0 {
				return got, gone, fmt.Errorf("send %d datagrams to %s: %v%v", k, l.c.RemoteAddr(), err, l.err)
			}
			sent += k
			inflight += k
		}
		l.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		l.k, l.err = min(inflight, loadWindow), 0
		if err := l.rc.Read(l.recvFn); err != nil || l.err != 0 {
			if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
				return got, gone, fmt.Errorf("receive from %s: %v%v", l.c.RemoteAddr(), err, l.err)
			}
			// The rest of the window is lost, or late: a late reply
			// then counts for the next window, erring towards loss.
			done += inflight
			gone += inflight
			inflight = 0
			continue
		}
		k := min(l.k, inflight)
		inflight -= k
		done += k
		got += k
	}
	return got, gone, nil
}

// batchEchoBackend answers every datagram with the same bytes until the test
// ends, reading up to 64 datagrams with one recvmmsg and echoing them with
// one sendmmsg, through Go's poller. It is the benchmarks' backend. With gso
// it has UDP_GRO on, and echoes a coalesced run as one GSO (UDP_SEGMENT)
// message, as a QUIC server would.
func batchEchoBackend(tb testing.TB, addr string, gso bool) netip.AddrPort {
	tb.Helper()
	c := listenUDP(tb, addr)
	c.SetReadBuffer(4 << 20)
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	tb.Cleanup(func() { c.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		size := 2048
		m := newBatch(64, size, true, false)
		if gso {
			var serr error
			rc.Control(func(fd uintptr) { serr = sockopt.EnableUDPGROFD(int(fd)) })
			if serr != nil {
				tb.Errorf("UDP_GRO on the echo backend: %v", serr)
				return
			}
			size = MaxDatagram
			m = newBatch(64, size, true, true)
		}
		var n, k int
		recv := func(fd uintptr) bool {
			for i := range m.hdrs {
				h := &m.hdrs[i].Hdr
				h.Namelen = sizeofName
				m.iovs[i].SetLen(size)
				if gso {
					h.Control = &m.oobs[i][0]
					h.SetControllen(len(m.oobs[i]))
				}
			}
			r, errno := mmsg(unix.SYS_RECVMMSG, int(fd), m.hdrs)
			if errno == unix.EAGAIN || errno == unix.EINTR {
				return false
			}
			n = r // 0 on another error (say, ECONNREFUSED): read again
			return true
		}
		send := func(fd uintptr) bool {
			for k < n {
				r, errno := mmsg(unix.SYS_SENDMMSG, int(fd), m.hdrs[k:n])
				switch errno {
				case 0:
					k += r
				case unix.EAGAIN:
					return false
				case unix.EINTR:
				default:
					k++ // this one's destination is gone
				}
			}
			return true
		}
		for {
			if err := rc.Read(recv); err != nil {
				return
			}
			for i := range m.hdrs[:n] {
				h := &m.hdrs[i]
				m.iovs[i].SetLen(int(h.Len))
				if gso {
					seg, ok := sockopt.ParseUDPGRO(m.oobs[i][:h.Hdr.Controllen])
					h.Hdr.Control, h.Hdr.Controllen = nil, 0
					if ok && seg < int(h.Len) {
						h.Hdr.Control = &m.oobs[i][0]
						h.Hdr.SetControllen(len(sockopt.AppendUDPSegment(m.oobs[i][:0], uint16(seg))))
					}
				}
			}
			k = 0
			if err := rc.Write(send); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// gsoLoadSupported reports whether this kernel has UDP_SEGMENT and UDP_GRO.
func gsoLoadSupported() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
		return false
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
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
	benchRoundTrip(b, Config{Backend: echoBackend(b, "127.0.0.1:0")})
}

// benchRoundTrip makes b.N round trips of a 64-byte datagram through a
// proxy with cfg, whose backend echoes it.
func benchRoundTrip(b *testing.B, cfg Config) {
	p := start(b, hostSocket(b, "127.0.0.1:0"), cfg)
	c := dial(b, hostPort(p))
	msg, buf := make([]byte, 64), make([]byte, 2048)
	roundTrip(b, c, msg)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || n != len(msg) {
			b.Fatalf("read %d bytes, %v; want %d", n, err, len(msg))
		}
	}
}

package tcp

import (
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// sink starts a backend that reads each connection to EOF into a fixed
// buffer and sends the byte count on the returned channel.
func sink(b testing.TB) (netip.AddrPort, <-chan int64) {
	b.Helper()
	got := make(chan int64, 1)
	_, addr := newBackend(b, func(c *net.TCPConn) {
		buf := make([]byte, 256<<10)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		got <- n
	})
	return addr, got
}

// BenchmarkBulk writes b.N chunks of 1 MiB from a client to a sink on
// loopback, directly and through the proxy, in the same run. Compare the two
// MB/s figures for the proxy's cost; allocs/op shows none per byte relayed.
func BenchmarkBulk(b *testing.B) {
	const chunk = 1 << 20
	run := func(b *testing.B, viaProxy bool) {
		dst, got := sink(b)
		if viaProxy {
			_, dst = startProxy(b, Config{Backend: dst})
		}
		c := dial(b, dst)
		c.SetDeadline(noDeadline)
		buf := make([]byte, chunk)
		b.SetBytes(chunk)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.CloseWrite()
		if n := <-got; n != int64(b.N)*chunk { // all delivered
			b.Fatalf("sink received %d bytes, want %d", n, int64(b.N)*chunk)
		}
		b.StopTimer()
	}
	b.Run("direct", func(b *testing.B) { run(b, false) })
	b.Run("proxy", func(b *testing.B) { run(b, true) })
}

// ackSink starts a backend that reads into a fixed buffer and writes one
// byte back each time another every bytes have arrived.
func ackSink(b *testing.B, every int64) netip.AddrPort {
	b.Helper()
	_, addr := newBackend(b, func(c *net.TCPConn) {
		buf := make([]byte, 256<<10)
		var n int64
		for {
			m, err := c.Read(buf)
			if err != nil {
				return
			}
			for n += int64(m); n >= every; n -= every {
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
			}
		}
	})
	return addr
}

// BenchmarkBulkRatio interleaves the two transfers of BenchmarkBulk: per
// iteration 4 MiB go direct, then 4 MiB through the proxy, each leg timed
// until the sink acknowledges the last byte. A busy machine slows both alike,
// so the reported proxy/direct (throughput through the proxy as a fraction
// of direct; 1.0 = no cost) is steadier than two separate benchmarks.
func BenchmarkBulkRatio(b *testing.B) {
	const chunk, per = 1 << 20, 4
	direct := dial(b, ackSink(b, per*chunk))
	_, pAddr := startProxy(b, Config{Backend: ackSink(b, per*chunk)})
	proxied := dial(b, pAddr)
	buf := make([]byte, chunk)
	var ack [1]byte
	var times [2]time.Duration
	b.SetBytes(2 * per * chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for i, c := range []*net.TCPConn{direct, proxied} {
			c.SetDeadline(time.Now().Add(waitFor))
			start := time.Now()
			for range per {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := io.ReadFull(c, ack[:]); err != nil {
				b.Fatal(err)
			}
			times[i] += time.Since(start)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(times[0])/float64(times[1]), "proxy/direct")
}

// BenchmarkConnect opens a connection, exchanges one byte with an echo
// backend and closes it: directly, through the proxy, and through the first
// socket of a range (NewRange). The difference in allocs/op and B/op is what
// the proxy costs per connection; so is the difference in cpu-ns/op, the
// process's CPU time per connection. proxy-v1 and proxy-v2 send a PROXY
// header to a backend that reads it (into buffers it reuses) before it
// echoes: their allocs/op equal proxy's when the header costs none.
func BenchmarkConnect(b *testing.B) {
	run := func(b *testing.B, via string) {
		handle := echo
		pp := map[string]proxyproto.Version{"proxy-v1": proxyproto.V1, "proxy-v2": proxyproto.V2}[via]
		if pp != proxyproto.None {
			bufs := make(chan []byte, 64)
			for range cap(bufs) {
				bufs <- make([]byte, proxyproto.MaxLen)
			}
			handle = func(c *net.TCPConn) {
				buf := <-bufs
				_, err := readHeader(c, pp, buf)
				bufs <- buf
				if err == nil {
					echo(c)
				}
			}
		}
		_, dst := newBackend(b, handle)
		switch via {
		case "proxy", "proxy-v1", "proxy-v2":
			_, dst = startProxy(b, Config{Backend: dst, ProxyProtocol: pp})
		case "range": // the first socket of a range of two
			files, addrs := listenFiles(b, 2)
			p, err := NewRange([]Mapping{{files[0], dst}, {files[1], dst}}, Config{})
			if err != nil {
				b.Fatal(err)
			}
			serve(b, p)
			dst = addrs[0]
		}
		addr := net.TCPAddrFromAddrPort(dst)
		var one [1]byte
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := cpuTime(b)
		for range b.N {
			c, err := net.DialTCP("tcp", nil, addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(one[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, one[:]); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
	}
	for _, via := range []string{"direct", "proxy", "range", "proxy-v1", "proxy-v2"} {
		b.Run(via, func(b *testing.B) { run(b, via) })
	}
}

// BenchmarkRoundTrip sends 64 bytes and reads the echo back on one open
// connection, directly and through the proxy: the cost of a small
// request/response is the difference. cpu-ns/op is the process's CPU time
// (user and system, client and backend included) per round trip, steadier
// than the wall time on a shared machine.
func BenchmarkRoundTrip(b *testing.B) {
	for _, via := range []string{"direct", "proxy"} {
		b.Run(via, func(b *testing.B) {
			_, dst := newBackend(b, echo)
			if via == "proxy" {
				_, dst = startProxy(b, Config{Backend: dst})
			}
			c := dial(b, dst)
			c.SetDeadline(time.Now().Add(time.Minute))
			msg := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package sctp_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
)

// memInUse is the live heap and the goroutine stacks in use after a GC.
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// BenchmarkSCTPIdleMapping measures the memory an idle SCTP mapping costs
// while served: as one Range of n sockets (one accept goroutine, an epoll
// set) and as n Proxies (a goroutine and a netpoller registration each, as
// cmd/hostproxy served SCTP groups before). Reported as bytes/mapping.
func BenchmarkSCTPIdleMapping(b *testing.B) {
	testenv.RequireSCTP(b)
	const n = 100
	backend := netip.MustParseAddrPort("127.0.0.1:9")
	files := func(b *testing.B) []*os.File {
		fs := make([]*os.File, n)
		for i := range fs {
			f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(lo4, 0), sockopt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			fs[i] = f
		}
		return fs
	}
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	serve := func(b *testing.B, ps []proxy.Proxy, fs []*os.File) func() {
		done := make(chan error, len(ps))
		for _, p := range ps {
			go func() { done <- p.Serve(context.Background()) }()
		}
		// One association through every socket (aborted: the backend
		// refuses) proves each accept loop ran and is parked again.
		for _, f := range fs {
			info, err := sockopt.Inspect(f)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			c, err := sctp.Dial(ctx, info.Local)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(waitFor))
			if _, _, _, err := c.ReadMsg(make([]byte, 64)); errors.Is(err, os.ErrDeadlineExceeded) {
				b.Fatal("association not ended")
			}
			c.Close()
		}
		runtime.GC()
		time.Sleep(100 * time.Millisecond) // let the relay goroutines of those associations exit
		return func() {
			for _, p := range ps {
				p.Close()
			}
			for range ps {
				if err := <-done; err != nil {
					b.Error(err)
				}
			}
		}
	}
	b.Run("Range", func(b *testing.B) {
		var per float64
		for b.Loop() {
			fs := files(b)
			before := memInUse()
			ms := make([]sctp.Mapping, n)
			for i, f := range fs {
				ms[i] = sctp.Mapping{File: f, Backend: backend}
			}
			r, err := sctp.NewRange(ms, sctp.Config{})
			if err != nil {
				b.Fatal(err)
			}
			stop := serve(b, []proxy.Proxy{r}, fs)
			per = float64(memInUse()-before) / n
			stop()
			closeAll(fs)
		}
		b.ReportMetric(per, "bytes/mapping")
	})
	b.Run("ProxyEach", func(b *testing.B) {
		var per float64
		for b.Loop() {
			fs := files(b)
			before := memInUse()
			ps := make([]proxy.Proxy, n)
			for i, f := range fs {
				p, err := sctp.New(f, sctp.Config{Backend: backend})
				if err != nil {
					b.Fatal(err)
				}
				ps[i] = p
			}
			stop := serve(b, ps, fs)
			per = float64(memInUse()-before) / n
			stop()
			closeAll(fs)
		}
		b.ReportMetric(per, "bytes/mapping")
	})
}

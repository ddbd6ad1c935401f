package main_test

// Benchmarks of the process itself, side by side with Debian's docker-proxy
// in the same run:
//
//	go test -run '^$' -bench . -benchmem -benchtime 20x ./cmd/hostproxy/
//
// BenchmarkStart times spawn to the first byte of "0\n" on fd 3.
// BenchmarkIdleMemory reports VmRSS and Pss (from /proc/PID/smaps_rollup) of
// one idle process serving one TCP mapping, after one relayed connection.
// BenchmarkRange100 reports the summed Pss of whatever serves a 100-port
// range: one hostproxy, or 100 docker-proxy processes.
//
// "hostproxy" is the default build (cgo resolver, dynamically linked),
// "hostproxy-static" the build the README installs (testenv.ReleaseEnv:
// static, like docker.io's docker-proxy, and without Green Tea GC).

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

const dockerProxy = "/usr/sbin/docker-proxy"

var staticOnce = sync.OnceValues(func() (string, error) {
	return buildHostproxy("hostproxy-static", testenv.ReleaseEnv())
})

// benchBinaries returns the binaries to compare, by name.
func benchBinaries(b *testing.B) []struct{ name, path string } {
	b.Helper()
	static, err := staticOnce()
	if err != nil {
		b.Fatal(err)
	}
	_, err = os.Stat(dockerProxy)
	testenv.Require(b, err == nil, "needs "+dockerProxy+" (Debian package docker.io)")
	return []struct{ name, path string }{
		{"hostproxy", hostproxyBin(b)},
		{"hostproxy-static", static},
		{"docker-proxy", dockerProxy},
	}
}

// benchProc is a proxy process started for a benchmark.
type benchProc struct {
	cmd    *exec.Cmd
	status *os.File
}

func startBench(b *testing.B, bin string, args ...string) *benchProc {
	b.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	w.Close()
	return &benchProc{cmd: cmd, status: r}
}

// ready waits for the first byte of the status, which must be '0'.
func (p *benchProc) ready(b *testing.B) {
	b.Helper()
	p.status.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1)
	if _, err := p.status.Read(buf); err != nil || buf[0] != '0' {
		b.Fatalf("%s: status %q, %v", p.cmd.Path, buf, err)
	}
}

func (p *benchProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-done
	}
	p.status.Close()
}

// memory returns VmRSS and Pss of pid in KiB.
func memory(b *testing.B, pid int) (rss, pss float64) {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss
}

func compatArgs(host, backend netip.AddrPort) []string {
	return []string{"-proto", "tcp", "-host-ip", host.Addr().String(), "-host-port", itoa(host.Port()),
		"-container-ip", backend.Addr().String(), "-container-port", itoa(backend.Port())}
}

func BenchmarkStart(b *testing.B) {
	backend := netip.MustParseAddrPort("127.0.0.1:9") // never dialed
	for _, bin := range benchBinaries(b) {
		b.Run(bin.name, func(b *testing.B) {
			for b.Loop() {
				p := startBench(b, bin.path, compatArgs(netip.AddrPortFrom(lo4, 0), backend)...)
				p.ready(b)
				b.StopTimer()
				p.stop()
				b.StartTimer()
			}
		})
	}
}

func BenchmarkIdleMemory(b *testing.B) {
	for _, bin := range benchBinaries(b) {
		b.Run(bin.name, func(b *testing.B) {
			backend := benchEcho(b)
			var rss, pss float64
			n := 0
			for b.Loop() {
				host := netip.AddrPortFrom(lo4, freePort(b, lo4))
				p := startBench(b, bin.path, compatArgs(host, backend)...)
				p.ready(b)
				if err := tryTCP(host, "", wait); err != nil {
					b.Fatal(err)
				}
				r, s := memory(b, p.cmd.Process.Pid)
				rss, pss, n = rss+r, pss+s, n+1
				p.stop()
			}
			b.ReportMetric(rss/float64(n), "rss-KiB")
			b.ReportMetric(pss/float64(n), "pss-KiB")
		})
	}
}

func BenchmarkRange100(b *testing.B) {
	const n = 100
	backend := netip.MustParseAddrPort("127.0.0.1:20000") // ports 20000-20099, never dialed
	for _, bin := range benchBinaries(b) {
		b.Run(bin.name, func(b *testing.B) {
			var total float64
			runs := 0
			for b.Loop() {
				base := freeRange(b, n, lo4)
				var procs []*benchProc
				if bin.path == dockerProxy {
					for i := uint16(0); i < n; i++ {
						procs = append(procs, startBench(b, bin.path, compatArgs(netip.AddrPortFrom(lo4, base+i),
							netip.AddrPortFrom(backend.Addr(), backend.Port()+i))...))
					}
				} else {
					procs = append(procs, startBench(b, bin.path, "-proto", "tcp", "-host-ip", "127.0.0.1",
						"-host-port", fmt.Sprintf("%d-%d", base, base+n-1), "-container-ip", "127.0.0.1",
						"-container-port", fmt.Sprintf("%d-%d", backend.Port(), backend.Port()+n-1)))
				}
				var sum float64
				for _, p := range procs {
					p.ready(b)
				}
				for _, p := range procs {
					_, pss := memory(b, p.cmd.Process.Pid)
					sum += pss
				}
				for _, p := range procs {
					p.stop()
				}
				total += sum
				runs++
			}
			b.ReportMetric(total/float64(runs), "pss-KiB")
		})
	}
}

// The benchmark variants of the test helpers, which take a *testing.T.

func benchEcho(b *testing.B) netip.AddrPort {
	b.Helper()
	c, err := listenEcho("tcp", lo4, 0, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c.(echoServer).addr
}

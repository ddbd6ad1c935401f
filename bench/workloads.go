package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// metricDef describes one number a test reports.
type metricDef struct {
	Key    string // JSON key and table label
	Unit   string
	Higher bool // higher is better
}

// testDef is one benchmark test.
type testDef struct {
	Name    string
	Proto   string
	Desc    string
	Backend backendKind
	// Metrics lists what Run reports; the first is the headline.
	Metrics []metricDef
	// Spawn: the test starts (and times) the peer itself; it is not run
	// for direct.
	Spawn bool
	// MemAfter: the proxy's memory at the end of the run is reported as
	// rss_after_mib / pss_after_mib.
	MemAfter bool
	// ProxyOnly: the test measures the proxy process; it is not run for
	// direct.
	ProxyOnly bool
	// NoPeer gives, per peer the test does not run, the reason.
	NoPeer map[string]string
	// Op names the operation the test counts (round.ops) for its CPU per
	// operation, and OpScale how many counted units make one Op ("MiB" of
	// bytes: 1<<20). Tests without Op report no CPU per operation.
	Op      string
	OpScale float64
	Run     func(ctx context.Context, r *round) (map[string]float64, error)
}

// cpuPerOpKey is the key of the CPU per operation in a round's metrics
// and a peer's medians: CPU µs of the proxy's process tree per Op.
const cpuPerOpKey = "cpu_us_per_op"

// round is what one test round runs against.
type round struct {
	cfg    *config
	peer   *peerSpec
	be     *backends
	target netip.AddrPort // where clients send: the proxy, or the backend for direct
	// pids are the proxy's top-level processes (nil for direct and Spawn
	// tests), and inst the instance they belong to.
	pids []int
	inst *instance
	// res is filled by Spawn tests (others are measured by the harness).
	res resources

	// ops is what the test counted (connections, bytes, datagrams), and
	// opTicks the proxy's CPU ticks over the same interval when the test
	// measured them (opTimed); otherwise the round's CPU is used.
	ops     float64
	opTicks uint64
	opTimed bool
	// note, when set, says what went wrong in a round that still reports
	// numbers (a partial result).
	note string
}

// proxyTicks returns the CPU ticks of the round's proxy so far, and false
// when there is no proxy process to read.
func (r *round) proxyTicks() (uint64, bool) {
	if r.pids == nil {
		return 0, false
	}
	u, err := treeRead(r.pids, false)
	return u.Ticks, err == nil && u.Procs > 0
}

// tests returns every test in run order.
func tests() []*testDef {
	gbps := []metricDef{{"gbit_s", "Gbit/s", true}}
	open := func(n int, name string) *testDef {
		return &testDef{Name: name, Proto: "tcp", Backend: tcpEcho, Run: openConns(n), ProxyOnly: true, Op: "conn", OpScale: 1,
			NoPeer: map[string]string{"socat": "socat forks a process per connection"},
			Desc: fmt.Sprintf("%d connections opened (1-byte echo each) and held idle; the proxy's descriptors and Pss "+
				"with them open, minus its idle baseline, per connection", n),
			Metrics: []metricDef{{"kib_per_conn", "KiB", false}, {"fds_per_conn", "", false}, {"opened", "", true},
				{"pss_mib", "MiB", false}, {"open_s", "s", false}}}
	}
	return []*testDef{
		{Name: "tcp-bulk-up", Proto: "tcp", Backend: tcpSink, Metrics: gbps, Run: runBulkUp, Op: "MiB", OpScale: 1 << 20,
			Desc: "one connection, client writes, backend discards"},
		{Name: "tcp-bulk-down", Proto: "tcp", Backend: tcpSource, Metrics: gbps, Run: runBulkDown, Op: "MiB", OpScale: 1 << 20,
			Desc: "one connection, backend writes, client discards"},
		{Name: "tcp-rr", Proto: "tcp", Backend: tcpEcho, Run: runRR, Op: "RR", OpScale: 1,
			Desc:    "64-byte request/response on one connection",
			Metrics: []metricDef{{"rr_s", "RR/s", true}, {"p50_us", "µs", false}, {"p99_us", "µs", false}}},
		{Name: "tcp-conn-rate", Proto: "tcp", Backend: tcpEcho, Run: runConnRate, Op: "conn", OpScale: 1,
			Desc:    "parallel clients: connect, 1-byte echo, close",
			Metrics: []metricDef{{"conn_s", "conn/s", true}, {"errors", "", false}}},
		open(1000, "tcp-open-1k"),
		open(4000, "tcp-open-4k"),
		{Name: "udp-dgrams", Proto: "udp", Backend: udpEcho, Run: runUDPDgrams, Op: "dgram", OpScale: 1,
			Desc:    "parallel sockets, 256-byte datagrams echoed, 32 in flight each; CPU per datagram echoed (relayed both ways)",
			Metrics: []metricDef{{"dgrams_s", "dgrams/s", true}, {"loss_pct", "%", false}}},
		{Name: "udp-flows", Proto: "udp", Backend: udpEcho, Run: runUDPFlows, MemAfter: true, Op: "flow", OpScale: 1,
			Desc:    "N new client sockets, one echo each; proxy memory with the N flows open",
			Metrics: []metricDef{{"flows_s", "flows/s", true}, {"lost", "", false}, {"rss_after_mib", "MiB", false}, {"pss_after_mib", "MiB", false}}},
		{Name: "startup", Proto: "tcp", Backend: tcpEcho, Run: runStartup, Spawn: true,
			Desc:    "spawn to ready (fd 3 status, else first echo), median of 7 spawns a round after one not counted, then idle memory",
			Metrics: []metricDef{{"start_ms", "ms", false}, {"idle_rss_mib", "MiB", false}, {"idle_pss_mib", "MiB", false}}},
		{Name: "range-100", Proto: "tcp", Backend: tcpEcho, Run: runRange, Spawn: true,
			Desc:    "100 TCP ports: one process if the peer can, else one process each; memory idle, then after one echo through each port",
			Metrics: []metricDef{{"idle_pss_mib", "MiB", false}, {"idle_rss_mib", "MiB", false}, {"pss_mib", "MiB", false}, {"rss_mib", "MiB", false}, {"start_ms", "ms", false}, {"procs", "", false}}},
	}
}

// phases runs work until stop is closed, and measures the counters it
// updates over cfg.Duration after cfg.Warmup. It returns the deltas of the
// counters and the measured time, and records the proxy's CPU ticks over
// the same interval in r.
// onMeasure, if given, runs when the measured interval starts.
func phases(ctx context.Context, r *round, counters []*atomic.Int64, work func(stop <-chan struct{}), onMeasure ...func()) ([]int64, time.Duration, error) {
	cfg := r.cfg
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { work(stop) })
	defer wg.Wait()
	defer close(stop)
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(cfg.Warmup); err != nil {
		return nil, 0, err
	}
	for _, f := range onMeasure {
		f()
	}
	ticks0, ok0 := r.proxyTicks()
	before := make([]int64, len(counters))
	for i, c := range counters {
		before[i] = c.Load()
	}
	t0 := time.Now()
	if err := wait(cfg.Duration); err != nil {
		return nil, 0, err
	}
	el := time.Since(t0)
	for i, c := range counters {
		before[i] = c.Load() - before[i]
	}
	if ticks1, ok1 := r.proxyTicks(); ok0 && ok1 {
		r.opTicks, r.opTimed = ticks1-min(ticks1, ticks0), true
	}
	return before, el, nil
}

func dialTCP(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func runBulkUp(ctx context.Context, r *round) (map[string]float64, error) {
	c, err := dialTCP(ctx, r.target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var n atomic.Int64
	var werr error
	d, el, err := phases(ctx, r, []*atomic.Int64{&n}, func(stop <-chan struct{}) {
		go func() { <-stop; c.SetWriteDeadline(time.Now()) }()
		bp := chunkPool.Get().(*[]byte)
		defer chunkPool.Put(bp)
		for {
			k, err := c.Write(*bp)
			n.Add(int64(k))
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					werr = fmt.Errorf("write to %s: %w", r.target, err)
				}
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if werr != nil {
		return nil, werr
	}
	r.ops = float64(d[0])
	return map[string]float64{"gbit_s": float64(d[0]) * 8 / el.Seconds() / 1e9}, nil
}

func runBulkDown(ctx context.Context, r *round) (map[string]float64, error) {
	c, err := dialTCP(ctx, r.target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var n atomic.Int64
	var rerr error
	d, el, err := phases(ctx, r, []*atomic.Int64{&n}, func(stop <-chan struct{}) {
		go func() { <-stop; c.SetReadDeadline(time.Now()) }()
		bp := chunkPool.Get().(*[]byte)
		defer chunkPool.Put(bp)
		for {
			k, err := c.Read(*bp)
			n.Add(int64(k))
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					rerr = fmt.Errorf("read from %s: %w", r.target, err)
				}
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	r.ops = float64(d[0])
	return map[string]float64{"gbit_s": float64(d[0]) * 8 / el.Seconds() / 1e9}, nil
}

// maxLatencies bounds the latency samples one RR round keeps.
const maxLatencies = 1 << 21

func runRR(ctx context.Context, r *round) (map[string]float64, error) {
	c, err := dialTCP(ctx, r.target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var n atomic.Int64
	var measuring atomic.Bool
	lat := make([]time.Duration, 0, 1<<16)
	var rerr error
	d, el, err := phases(ctx, r, []*atomic.Int64{&n}, func(stop <-chan struct{}) {
		var req, resp [64]byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			t := time.Now()
			if _, err := c.Write(req[:]); err != nil {
				rerr = fmt.Errorf("write to %s: %w", r.target, err)
				return
			}
			if _, err := io.ReadFull(c, resp[:]); err != nil {
				rerr = fmt.Errorf("read from %s: %w", r.target, err)
				return
			}
			if measuring.Load() && len(lat) < maxLatencies {
				lat = append(lat, time.Since(t))
			}
			n.Add(1)
		}
	}, func() { measuring.Store(true) })
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	slices.Sort(lat)
	r.ops = float64(d[0])
	return map[string]float64{
		"rr_s":   float64(d[0]) / el.Seconds(),
		"p50_us": float64(percentile(lat, 50)) / 1e3,
		"p99_us": float64(percentile(lat, 99)) / 1e3,
	}, nil
}

func runConnRate(ctx context.Context, r *round) (map[string]float64, error) {
	var ok, bad atomic.Int64
	var firstErr atomic.Pointer[error]
	d, el, err := phases(ctx, r, []*atomic.Int64{&ok, &bad}, func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		for range r.cfg.Parallel {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := connOnce(r.target); err != nil {
						bad.Add(1)
						firstErr.CompareAndSwap(nil, &err)
						// Do not spin on an error such as EADDRNOTAVAIL.
						time.Sleep(time.Millisecond)
						continue
					}
					ok.Add(1)
				}
			})
		}
		wg.Wait()
	})
	if err != nil {
		return nil, err
	}
	if e := firstErr.Load(); e != nil && d[0] == 0 {
		return nil, *e
	}
	r.ops = float64(d[0])
	return map[string]float64{"conn_s": float64(d[0]) / el.Seconds(), "errors": float64(d[1])}, nil
}

// connOnce connects to addr, echoes one byte and closes.
func connOnce(addr netip.AddrPort) error {
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := [1]byte{'x'}
	if _, err := c.Write(b[:]); err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("read from %s: %w", addr, err)
	}
	return nil
}

// udpWindow is how many datagrams each UDP socket keeps in flight.
const udpWindow = 32

func runUDPDgrams(ctx context.Context, r *round) (map[string]float64, error) {
	var sent, recv atomic.Int64
	conns := make([]*net.UDPConn, r.cfg.Parallel)
	for i := range conns {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.target))
		if err != nil {
			return nil, fmt.Errorf("dial %s/udp: %w", r.target, err)
		}
		defer c.Close()
		c.SetReadBuffer(1 << 20)
		conns[i] = c
	}
	var werr atomic.Pointer[error]
	d, el, err := phases(ctx, r, []*atomic.Int64{&sent, &recv}, func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				var buf [256]byte
				inflight := 0
				for {
					select {
					case <-stop:
						return
					default:
					}
					for ; inflight < udpWindow; inflight++ {
						if _, err := c.Write(buf[:]); err != nil {
							// ECONNREFUSED from an ICMP error counts as
							// loss; anything else ends the round.
							if !errors.Is(err, errConnRefused) {
								werr.CompareAndSwap(nil, &err)
								return
							}
						}
						sent.Add(1)
					}
					c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
					if _, err := c.Read(buf[:]); err != nil {
						inflight = 0 // the rest are lost
						continue
					}
					recv.Add(1)
					inflight--
				}
			})
		}
		wg.Wait()
	})
	if err != nil {
		return nil, err
	}
	if e := werr.Load(); e != nil {
		return nil, fmt.Errorf("send to %s/udp: %w", r.target, *e)
	}
	loss := 0.0
	if d[0] > 0 {
		loss = max(0, float64(d[0]-d[1])/float64(d[0])*100)
	}
	r.ops = float64(d[1])
	return map[string]float64{"dgrams_s": float64(d[1]) / el.Seconds(), "loss_pct": loss}, nil
}

func runUDPFlows(ctx context.Context, r *round) (map[string]float64, error) {
	var next, ok, lost atomic.Int64
	var firstErr atomic.Pointer[error]
	t0 := time.Now()
	var wg sync.WaitGroup
	for range r.cfg.Parallel {
		wg.Go(func() {
			for next.Add(1) <= int64(r.cfg.Flows) && ctx.Err() == nil {
				if err := flowOnce(r.target); err != nil {
					lost.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if e := firstErr.Load(); e != nil && ok.Load() == 0 {
		return nil, *e
	}
	// CPU per flow is over the whole round: the flows are the round.
	r.ops = float64(ok.Load())
	return map[string]float64{"flows_s": float64(ok.Load()) / el.Seconds(), "lost": float64(lost.Load())}, nil
}

// flowOnce sends one datagram from a new socket (a new flow for the proxy)
// and waits for its echo.
func flowOnce(addr netip.AddrPort) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return fmt.Errorf("dial %s/udp: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	b := [32]byte{'f'}
	if _, err := c.Write(b[:]); err != nil {
		return fmt.Errorf("send to %s/udp: %w", addr, err)
	}
	if _, err := c.Read(b[:]); err != nil {
		return fmt.Errorf("receive from %s/udp: %w", addr, err)
	}
	return nil
}

// startSpawns is how many times a round of the startup test starts the
// peer.
const startSpawns = 7

func runStartup(ctx context.Context, r *round) (map[string]float64, error) {
	// A start takes about 10 ms, which this shared machine's noise moves
	// by a third: each round times startSpawns starts and keeps the
	// median, and measures the memory of the last. One more start comes
	// first and is not counted, as the other tests warm up: in a full run
	// the first peer of each round measured 10-15% slower than the same
	// binary measured second, even with stop waiting for the previous
	// peer's process group.
	var (
		in  *instance
		dts []time.Duration
	)
	for i := range startSpawns + 1 {
		if in != nil {
			in.stop()
		}
		var dt time.Duration
		var err error
		maps := []mapping{{Proto: "tcp", Host: loopbackAny, Backend: r.be.addr[tcpEcho]}} // start picks the port
		if in, dt, err = start(ctx, r.peer, maps, true); err != nil {
			return nil, fmt.Errorf("spawn %d: %w", i+1, err)
		}
		if i > 0 {
			dts = append(dts, dt)
		}
	}
	defer in.stop()
	slices.Sort(dts)
	dt := dts[len(dts)/2]
	mem, ticks, err := treeUsage(in.pids())
	if err != nil {
		return nil, err
	}
	r.res = resources{PeakRSS: mem.RSS, PeakPSS: mem.PSS, CPU: float64(ticks) / clockTicks}
	return map[string]float64{
		"start_ms":     float64(dt) / 1e6,
		"idle_rss_mib": mib(mem.RSS),
		"idle_pss_mib": mib(mem.PSS),
	}, nil
}

func runRange(ctx context.Context, r *round) (map[string]float64, error) {
	maps := make([]mapping, r.cfg.RangeSize)
	for i := range maps {
		maps[i] = mapping{Proto: "tcp", Host: loopbackAny, Backend: r.be.addr[tcpEcho]}
	}
	in, dt, err := start(ctx, r.peer, maps, true)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	// Idle, as startup measures it: at once when the peer says it is ready.
	idle, _, err := treeUsage(in.pids())
	if err != nil {
		return nil, err
	}
	// Every port must forward, whatever the readiness signal said.
	for _, m := range maps {
		if err := probeOnce(m, true); err != nil {
			// The status pipe can say ready a moment before the accept loop
			// runs; give each port the start-up deadline.
			if err := waitServing(ctx, in, m, true, time.Now().Add(startTimeout)); err != nil {
				return nil, err
			}
		}
	}
	mem, ticks, err := treeUsage(in.pids())
	if err != nil {
		return nil, err
	}
	r.res = resources{PeakRSS: mem.RSS, PeakPSS: mem.PSS, CPU: float64(ticks) / clockTicks}
	return map[string]float64{
		"idle_pss_mib": mib(idle.PSS),
		"idle_rss_mib": mib(idle.RSS),
		"pss_mib":      mib(mem.PSS),
		"rss_mib":      mib(mem.RSS),
		"start_ms":     float64(dt) / 1e6,
		"procs":        float64(len(in.procs)),
	}, nil
}

var errConnRefused = syscall.ECONNREFUSED

var loopbackAny = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

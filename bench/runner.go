package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// resources is what a proxy used during one round: peak memory summed over
// its processes, and CPU seconds (user+system, including children).
type resources struct {
	PeakRSS uint64  `json:"peak_rss"`
	PeakPSS uint64  `json:"peak_pss"`
	CPU     float64 `json:"cpu_s"`
}

// report is a whole run: what the JSON holds and the table shows.
type report struct {
	Machine machine       `json:"machine"`
	Config  config        `json:"config"`
	Peers   []string      `json:"peers"`
	Tests   []*testResult `json:"tests"`
}

type machine struct {
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Date   string `json:"date"`
}

type testResult struct {
	Name    string      `json:"name"`
	Proto   string      `json:"proto"`
	Desc    string      `json:"desc"`
	Metrics []metricDef `json:"metrics"`
	// Op is what the CPU per operation (cpu_us_per_op, µs) counts; empty
	// when the test reports none.
	Op    string        `json:"op,omitempty"`
	Peers []*peerResult `json:"peers"`
}

type peerResult struct {
	Peer   string        `json:"peer"`
	Skip   string        `json:"skip,omitempty"`
	Err    string        `json:"error,omitempty"`
	Rounds []roundResult `json:"rounds,omitempty"`
	// Median holds the median over rounds of each metric, and of the
	// resources as peak_rss_mib, peak_pss_mib and cpu_s.
	Median map[string]float64 `json:"median,omitempty"`
	// VsDirect and VsDocker are Median divided by direct's and
	// docker-proxy's medians in the same run.
	VsDirect map[string]float64 `json:"vs_direct,omitempty"`
	VsDocker map[string]float64 `json:"vs_docker_proxy,omitempty"`
	// CPUVsLeanest is the median CPU per operation divided by the lowest
	// of every peer's in the same run (1 for the leanest).
	CPUVsLeanest float64 `json:"cpu_per_op_vs_leanest,omitempty"`
}

type roundResult struct {
	Metrics   map[string]float64 `json:"metrics"`
	Resources resources          `json:"resources"`
	// Note says what went wrong in a round that still has numbers.
	Note string `json:"note,omitempty"`
}

// get returns the test's result for peer, or nil.
func (t *testResult) get(peer string) *peerResult {
	for _, p := range t.Peers {
		if p.Peer == peer {
			return p
		}
	}
	return nil
}

// value returns the median of metric key for peer, or NaN.
func (t *testResult) value(peer, key string) float64 {
	p := t.get(peer)
	if p == nil {
		return math.NaN()
	}
	v, ok := p.Median[key]
	if !ok {
		return math.NaN()
	}
	return v
}

// runAll runs every test in interleaved rounds over peers.
func runAll(ctx context.Context, cfg *config, ts []*testDef, peers []*peerSpec, log io.Writer) (*report, error) {
	be, err := startBackends()
	if err != nil {
		return nil, err
	}
	defer be.Close()
	rep := &report{Machine: thisMachine(), Config: *cfg}
	for _, p := range peers {
		rep.Peers = append(rep.Peers, p.Name)
	}
	for _, t := range ts {
		tr := &testResult{Name: t.Name, Proto: t.Proto, Desc: t.Desc, Metrics: t.Metrics, Op: t.Op}
		rep.Tests = append(rep.Tests, tr)
		for _, p := range peers {
			pr := &peerResult{Peer: p.Name}
			switch {
			case (t.Spawn || t.ProxyOnly) && p.Name == "direct":
				pr.Skip = "no proxy process"
			case !p.supports(t.Proto):
				pr.Skip = p.NoProto[t.Proto]
				fmt.Fprintf(log, "skip %s for %s: %s\n", p.Name, t.Name, pr.Skip)
			case t.NoPeer[p.Name] != "":
				pr.Skip = t.NoPeer[p.Name]
				fmt.Fprintf(log, "skip %s for %s: %s\n", p.Name, t.Name, pr.Skip)
			}
			tr.Peers = append(tr.Peers, pr)
		}
		for i := range cfg.Rounds {
			for j, p := range peers {
				pr := tr.Peers[j]
				if pr.Skip != "" {
					continue
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				rr, err := runRound(ctx, cfg, t, p, be)
				if err != nil {
					fmt.Fprintf(log, "%s round %d/%d %s: error: %v\n", t.Name, i+1, cfg.Rounds, p.Name, err)
					if pr.Err == "" {
						pr.Err = err.Error()
					}
					continue
				}
				pr.Rounds = append(pr.Rounds, rr)
				fmt.Fprintf(log, "%s round %d/%d %-12s %s\n", t.Name, i+1, cfg.Rounds, p.Name, describe(t, rr))
			}
		}
		summarize(tr)
	}
	return rep, nil
}

// runRound runs one round of t against a fresh instance of p.
func runRound(ctx context.Context, cfg *config, t *testDef, p *peerSpec, be *backends) (roundResult, error) {
	r := &round{cfg: cfg, peer: p, be: be, target: be.addr[t.Backend]}
	if t.Spawn {
		m, err := t.Run(ctx, r)
		return roundResult{Metrics: m, Resources: r.res}, err
	}
	var mon *monitor
	if p.Name != "direct" {
		maps := []mapping{{Proto: t.Proto, Host: loopbackAny, Backend: r.target}}
		in, _, err := start(ctx, p, maps, t.Backend == tcpEcho || t.Backend == udpEcho)
		if err != nil {
			return roundResult{}, err
		}
		defer in.stop()
		r.target = maps[0].Host
		r.pids, r.inst = in.pids(), in
		mon = startMonitor(r.pids)
	}
	m, err := t.Run(ctx, r)
	if err != nil {
		mon.finish()
		return roundResult{}, err
	}
	res, last := mon.finish()
	if t.MemAfter && mon != nil {
		m["rss_after_mib"] = mib(last.RSS)
		m["pss_after_mib"] = mib(last.PSS)
	}
	if t.Op != "" && mon != nil && r.ops > 0 {
		cpu := res.CPU
		if r.opTimed {
			cpu = float64(r.opTicks) / clockTicks
		}
		m[cpuPerOpKey] = cpu * 1e6 / (r.ops / t.OpScale)
	}
	return roundResult{Metrics: m, Resources: res, Note: r.note}, nil
}

// monitor samples a process tree's memory while a round runs.
type monitor struct {
	pids  []int
	stop  chan struct{}
	done  chan struct{}
	peak  Mem
	ticks uint64
}

// sampleEvery is the monitor's sampling period.
const sampleEvery = 100 * time.Millisecond

func startMonitor(pids []int) *monitor {
	m := &monitor{pids: pids, stop: make(chan struct{}), done: make(chan struct{})}
	mem, ticks, _ := treeUsage(pids)
	m.peak, m.ticks = mem, ticks
	go func() {
		defer close(m.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				mem, _, _ := treeUsage(pids)
				m.peak = Mem{RSS: max(m.peak.RSS, mem.RSS), PSS: max(m.peak.PSS, mem.PSS)}
			}
		}
	}()
	return m
}

// finish stops sampling and returns the round's resources and the last
// memory sample. A nil monitor (direct) returns zeros.
func (m *monitor) finish() (resources, Mem) {
	if m == nil {
		return resources{}, Mem{}
	}
	close(m.stop)
	<-m.done
	mem, ticks, _ := treeUsage(m.pids)
	m.peak = Mem{RSS: max(m.peak.RSS, mem.RSS), PSS: max(m.peak.PSS, mem.PSS)}
	return resources{PeakRSS: m.peak.RSS, PeakPSS: m.peak.PSS, CPU: float64(ticks-min(ticks, m.ticks)) / clockTicks}, mem
}

// summarize fills the medians and ratios of every peer of t.
func summarize(t *testResult) {
	keys := []string{"peak_rss_mib", "peak_pss_mib", "cpu_s", cpuPerOpKey}
	for _, m := range t.Metrics {
		keys = append(keys, m.Key)
	}
	for _, p := range t.Peers {
		if len(p.Rounds) == 0 {
			continue
		}
		p.Median = map[string]float64{}
		for _, k := range keys {
			var xs []float64
			for _, r := range p.Rounds {
				v, ok := r.Metrics[k]
				switch k {
				case "peak_rss_mib":
					v, ok = mib(r.Resources.PeakRSS), r.Resources.PeakRSS > 0
				case "peak_pss_mib":
					v, ok = mib(r.Resources.PeakPSS), r.Resources.PeakPSS > 0
				case "cpu_s":
					v, ok = r.Resources.CPU, p.Peer != "direct"
				}
				if ok {
					xs = append(xs, v)
				}
			}
			if v := median(xs); !math.IsNaN(v) {
				p.Median[k] = v
			}
		}
	}
	leanest := math.NaN()
	for _, p := range t.Peers {
		if v, ok := p.Median[cpuPerOpKey]; ok && v > 0 && !(v >= leanest) {
			leanest = v
		}
	}
	for _, p := range t.Peers {
		p.VsDirect = ratios(p.Median, t.get("direct"))
		p.VsDocker = ratios(p.Median, t.get("docker-proxy"))
		if v, ok := p.Median[cpuPerOpKey]; ok {
			if r := ratio(v, leanest); !math.IsNaN(r) {
				p.CPUVsLeanest = r
			}
		}
	}
}

// ratios divides each of med by base's median of the same key, leaving out
// what cannot be divided (JSON has no NaN).
func ratios(med map[string]float64, base *peerResult) map[string]float64 {
	if base == nil || len(med) == 0 {
		return nil
	}
	out := map[string]float64{}
	for k, v := range med {
		b, ok := base.Median[k]
		if !ok {
			continue
		}
		if r := ratio(v, b); !math.IsNaN(r) {
			out[k] = r
		}
	}
	return out
}

// describe prints one round's numbers for the progress log.
func describe(t *testDef, rr roundResult) string {
	var b strings.Builder
	for _, d := range t.Metrics {
		if v, ok := rr.Metrics[d.Key]; ok {
			fmt.Fprintf(&b, " %s=%s", d.Key, formatNum(v))
		}
	}
	if v, ok := rr.Metrics[cpuPerOpKey]; ok {
		fmt.Fprintf(&b, " cpu=%sµs/%s", formatNum(v), t.Op)
	}
	if rr.Note != "" {
		fmt.Fprintf(&b, " FAILED: %s", rr.Note)
	}
	return strings.TrimSpace(b.String())
}

func thisMachine() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

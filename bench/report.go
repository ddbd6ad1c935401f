package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
)

// formatNum prints v with three significant digits, switching to k and M
// suffixes for large values: 0.0123, 1.23, 12.3, 123, 12.3k, 1.23M.
func formatNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "-"
	case math.IsInf(v, 0):
		return "inf"
	case a == 0:
		return "0"
	case a >= 1e6:
		return trim3(v/1e6) + "M"
	case a >= 1e4:
		return trim3(v/1e3) + "k"
	default:
		return trim3(v)
	}
}

// trim3 formats v with three significant digits but no exponent.
func trim3(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// formatRatio prints a ratio as "1.23x", or "-" when there is none.
func formatRatio(r float64, ok bool) string {
	if !ok || math.IsNaN(r) {
		return "-"
	}
	return trim3(r) + "x"
}

var tableHeader = []string{"test", "peer", "result", "x direct", "x docker-proxy", "CPU/op", "CPU/op x leanest", "also", "peak RSS MiB", "peak Pss MiB", "CPU s"}

// alsoColumn is the index of the free-text column in tableHeader.
const alsoColumn = 7

// tableRows renders the report as rows of cells, one per test and peer.
func tableRows(rep *report) [][]string {
	var rows [][]string
	for _, t := range rep.Tests {
		head := t.Metrics[0]
		for _, p := range t.Peers {
			row := []string{t.Name, p.Peer}
			empty := make([]string, len(tableHeader)-3)
			switch {
			case p.Skip != "":
				rows = append(rows, append(append(row, "skipped: "+p.Skip), empty...))
				continue
			case len(p.Rounds) == 0:
				rows = append(rows, append(append(row, "error: "+p.Err), empty...))
				continue
			}
			v, ok := p.Median[head.Key]
			res := "-"
			if ok {
				res = strings.TrimSpace(formatNum(v) + " " + head.Unit)
			}
			rd, okd := p.VsDirect[head.Key]
			rk, okk := p.VsDocker[head.Key]
			var also []string
			for _, m := range t.Metrics[1:] {
				if v, ok := p.Median[m.Key]; ok {
					also = append(also, strings.TrimSpace(m.Key+" "+formatNum(v)+" "+m.Unit))
				}
			}
			if p.Err != "" {
				also = append(also, fmt.Sprintf("(%d of %d rounds failed)", rep.Config.Rounds-len(p.Rounds), rep.Config.Rounds))
			}
			var notes []string
			for _, r := range p.Rounds {
				if r.Note != "" {
					notes = append(notes, r.Note)
				}
			}
			if len(notes) > 0 {
				also = append(also, fmt.Sprintf("FAILED in %d of %d rounds: %s", len(notes), len(p.Rounds), notes[0]))
			}
			cpu, cpuRel := "-", "-"
			if v, ok := p.Median[cpuPerOpKey]; ok {
				cpu = formatNum(v) + " µs/" + t.Op
				cpuRel = formatRatio(p.CPUVsLeanest, p.CPUVsLeanest > 0)
			}
			row = append(row, res, formatRatio(rd, okd), formatRatio(rk, okk), cpu, cpuRel, strings.Join(also, ", "),
				medianCell(p, "peak_rss_mib"), medianCell(p, "peak_pss_mib"), medianCell(p, "cpu_s"))
			rows = append(rows, row)
		}
	}
	return rows
}

func medianCell(p *peerResult, key string) string {
	v, ok := p.Median[key]
	if !ok {
		return "-"
	}
	return formatNum(v)
}

// writeTable prints the report for a terminal.
func writeTable(w io.Writer, rep *report) {
	fmt.Fprintf(w, "%d cores, kernel %s, %s, %d round(s) of %v\n\n", rep.Machine.Cores, rep.Machine.Kernel, rep.Machine.Go, rep.Config.Rounds, rep.Config.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, r := range tableRows(rep) {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target for hostproxy\twant\tmeasured\t")
	for _, t := range evalTargets(rep) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Want, t.Got, t.Verdict)
	}
	tw.Flush()
}

// writeMarkdown writes the table and the targets as GitHub markdown.
func writeMarkdown(w io.Writer, rep *report) {
	mdRow := func(cells []string) {
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	mdRow(append([]string(nil), tableHeader...))
	sep := make([]string, len(tableHeader))
	for i := range sep {
		sep[i] = "---"
		if i >= 2 && i != alsoColumn {
			sep[i] = "---:"
		}
	}
	mdRow(sep)
	for _, r := range tableRows(rep) {
		mdRow(r)
	}
	fmt.Fprintln(w)
	mdRow([]string{"target for hostproxy", "want", "measured", "verdict"})
	mdRow([]string{"---", "---", "---:", "---"})
	for _, t := range evalTargets(rep) {
		mdRow([]string{t.Name, t.Want, t.Got, t.Verdict})
	}
}

func (rep *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// target is one of hostproxy's goals, measured in the same run as the
// peers it is compared with.
type target struct {
	Name   string
	Test   string
	Metric string
	// Against is what hostproxy's value is divided by: a peer's name, or
	// bestPeer for the best of comparedPeers on the metric (the highest,
	// or the lowest where lower is better). Empty: hostproxy's value itself
	// is bounded.
	Against string
	// Max, when set, bounds the value from above; otherwise Min bounds it
	// from below.
	Max, Min float64
	// NoHigher compares values instead of a ratio: hostproxy's must not
	// exceed Against's (loss).
	NoHigher bool
}

// bestPeer stands for the best of comparedPeers in target.Against.
const bestPeer = "best"

// comparedPeers are the proxies a target against the best peer looks at.
var comparedPeers = []string{"docker-proxy", "nginx", "haproxy"}

var targets = []target{
	{Name: "TCP bulk up", Test: "tcp-bulk-up", Metric: "gbit_s", Against: "docker-proxy", Min: 1.3},
	{Name: "TCP bulk down", Test: "tcp-bulk-down", Metric: "gbit_s", Against: "docker-proxy", Min: 1.3},
	{Name: "CPU per byte, bulk up", Test: "tcp-bulk-up", Metric: cpuPerOpKey, Against: bestPeer, Max: 0.7},
	{Name: "CPU per byte, bulk down", Test: "tcp-bulk-down", Metric: cpuPerOpKey, Against: bestPeer, Max: 0.7},
	{Name: "connections/s", Test: "tcp-conn-rate", Metric: "conn_s", Against: bestPeer, Min: 1.1},
	{Name: "CPU per connection", Test: "tcp-conn-rate", Metric: cpuPerOpKey, Against: bestPeer, Max: 0.9},
	{Name: "CPU per request/response", Test: "tcp-rr", Metric: cpuPerOpKey, Against: bestPeer, Max: 0.9},
	{Name: "request/response p99 latency", Test: "tcp-rr", Metric: "p99_us", Against: "docker-proxy", Max: 0.8},
	{Name: "4,000 open connections", Test: "tcp-open-4k", Metric: "opened", Min: 4000},
	{Name: "descriptors per open connection", Test: "tcp-open-4k", Metric: "fds_per_conn", Max: 2.2},
	{Name: "memory per open connection", Test: "tcp-open-4k", Metric: "kib_per_conn", Against: "haproxy", Max: 0.3},
	{Name: "UDP delivered dgrams/s", Test: "udp-dgrams", Metric: "dgrams_s", Against: "docker-proxy", Min: 1.5},
	{Name: "UDP loss", Test: "udp-dgrams", Metric: "loss_pct", Against: "docker-proxy", NoHigher: true},
	{Name: "CPU per datagram", Test: "udp-dgrams", Metric: cpuPerOpKey, Against: bestPeer, Max: 0.7},
	{Name: "RSS after N UDP flows", Test: "udp-flows", Metric: "rss_after_mib", Against: "docker-proxy", Max: 0.1},
	{Name: "idle RSS", Test: "startup", Metric: "idle_rss_mib", Against: "docker-proxy", Max: 1.07},
	{Name: "start-up time", Test: "startup", Metric: "start_ms", Against: "docker-proxy", Max: 1.1},
	{Name: "100-port range idle Pss (one process vs 100)", Test: "range-100", Metric: "idle_pss_mib", Against: "docker-proxy", Max: 0.05},
}

// higherBetter reports whether a higher value of metric key is better in t.
func (t *testResult) higherBetter(key string) bool {
	for _, m := range t.Metrics {
		if m.Key == key {
			return m.Higher
		}
	}
	return false // CPU per operation and the resources
}

// best returns the best value of key among comparedPeers and the peer
// holding it, or NaN when none has one.
func (t *testResult) best(key string) (float64, string) {
	v, who := math.NaN(), ""
	higher := t.higherBetter(key)
	for _, p := range comparedPeers {
		x := t.value(p, key)
		if math.IsNaN(x) {
			continue
		}
		if math.IsNaN(v) || (higher && x > v) || (!higher && x < v) {
			v, who = x, p
		}
	}
	return v, who
}

// targetRatio prints a ratio with enough digits that it never appears to
// meet a target it misses (1.498 is "1.498x", not "1.50x").
func targetRatio(r float64) string {
	if math.IsNaN(r) {
		return "-"
	}
	return strconv.FormatFloat(r, 'f', 3, 64) + "x"
}

type targetResult struct {
	Name, Want, Got, Verdict string
}

// evalTargets checks every target the report has data for.
func evalTargets(rep *report) []targetResult {
	var out []targetResult
	for _, tg := range targets {
		var tr *testResult
		for _, t := range rep.Tests {
			if t.Name == tg.Test {
				tr = t
			}
		}
		if tr == nil {
			continue
		}
		res := targetResult{Name: tg.Name}
		hp := tr.value("hostproxy", tg.Metric)
		base, against := 1.0, tg.Against
		switch tg.Against {
		case "":
		case bestPeer:
			base, against = tr.best(tg.Metric)
			if tr.higherBetter(tg.Metric) {
				res.Want = "best peer"
			} else {
				res.Want = "leanest peer"
			}
		default:
			base = tr.value(tg.Against, tg.Metric)
			res.Want = tg.Against
		}
		r := ratio(hp, base)
		var pass bool
		switch {
		case tg.NoHigher:
			res.Want = "no higher than " + res.Want
			res.Got = fmt.Sprintf("%s vs %s", formatNum(hp), formatNum(base))
			pass = hp <= base
		case tg.Against == "":
			if tg.Max > 0 {
				res.Want = "<= " + trim3(tg.Max)
				pass = hp <= tg.Max
			} else {
				res.Want = ">= " + trim3(tg.Min)
				pass = hp >= tg.Min
			}
			res.Got = strconv.FormatFloat(hp, 'f', -1, 64)
			if hp != math.Trunc(hp) {
				res.Got = strconv.FormatFloat(hp, 'f', 3, 64)
			}
		case tg.Max > 0:
			res.Want = "<= " + trim3(tg.Max) + "x " + res.Want
			res.Got = targetRatio(r)
			pass = r <= tg.Max
		default:
			res.Want = ">= " + trim3(tg.Min) + "x " + res.Want
			res.Got = targetRatio(r)
			pass = r >= tg.Min
		}
		if tg.Against == bestPeer && against != "" {
			res.Got += " (" + against + ")"
		}
		switch {
		case math.IsNaN(hp) || math.IsNaN(base):
			res.Verdict = "no data"
			res.Got = "-"
		case pass:
			res.Verdict = "met"
		default:
			res.Verdict = "MISSED"
		}
		out = append(out, res)
	}
	return out
}

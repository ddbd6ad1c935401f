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

var tableHeader = []string{"test", "peer", "result", "x direct", "x docker-proxy", "also", "peak RSS MiB", "peak Pss MiB", "CPU s"}

// tableRows renders the report as rows of cells, one per test and peer.
func tableRows(rep *report) [][]string {
	var rows [][]string
	for _, t := range rep.Tests {
		head := t.Metrics[0]
		for _, p := range t.Peers {
			row := []string{t.Name, p.Peer}
			switch {
			case p.Skip != "":
				rows = append(rows, append(row, "skipped: "+p.Skip, "", "", "", "", "", ""))
				continue
			case len(p.Rounds) == 0:
				rows = append(rows, append(row, "error: "+p.Err, "", "", "", "", "", ""))
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
			row = append(row, res, formatRatio(rd, okd), formatRatio(rk, okk), strings.Join(also, ", "),
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
	fmt.Fprintln(tw, "target (hostproxy vs docker-proxy)\twant\tmeasured\t")
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
		if i >= 2 && i != 5 {
			sep[i] = "---:"
		}
	}
	mdRow(sep)
	for _, r := range tableRows(rep) {
		mdRow(r)
	}
	fmt.Fprintln(w)
	mdRow([]string{"target (hostproxy vs docker-proxy)", "want", "measured", "verdict"})
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

// target is one of the issues' goals for hostproxy relative to docker-proxy.
type target struct {
	Name   string
	Test   string
	Metric string
	// Max, when set, bounds the ratio from above; otherwise Min bounds it
	// from below.
	Max, Min float64
	// NoHigher compares values instead of a ratio: hostproxy's must not
	// exceed docker-proxy's (loss).
	NoHigher bool
}

var targets = []target{
	{Name: "TCP bulk up", Test: "tcp-bulk-up", Metric: "gbit_s", Min: 1.2},
	{Name: "TCP bulk down", Test: "tcp-bulk-down", Metric: "gbit_s", Min: 1.2},
	{Name: "TCP connection rate", Test: "tcp-conn-rate", Metric: "conn_s", Min: 1.3},
	{Name: "TCP RR p99 latency", Test: "tcp-rr", Metric: "p99_us", Max: 0.8},
	{Name: "UDP delivered dgrams/s", Test: "udp-dgrams", Metric: "dgrams_s", Min: 1.5},
	{Name: "UDP loss", Test: "udp-dgrams", Metric: "loss_pct", NoHigher: true},
	{Name: "RSS after N UDP flows", Test: "udp-flows", Metric: "rss_after_mib", Max: 0.1},
	{Name: "idle RSS (issue: 0.7x)", Test: "startup", Metric: "idle_rss_mib", Max: 0.7},
	{Name: "idle RSS (lead: no more)", Test: "startup", Metric: "idle_rss_mib", Max: 1.0},
	{Name: "start-up time", Test: "startup", Metric: "start_ms", Max: 1.0},
	{Name: "100-port range idle Pss (issue: 1/20)", Test: "range-100", Metric: "idle_pss_mib", Max: 0.05},
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
		hp, dp := tr.value("hostproxy", tg.Metric), tr.value("docker-proxy", tg.Metric)
		r := ratio(hp, dp)
		var pass bool
		switch {
		case tg.NoHigher:
			res.Want = "no higher"
			res.Got = fmt.Sprintf("%s vs %s", formatNum(hp), formatNum(dp))
			pass = hp <= dp
		case tg.Max > 0:
			res.Want = "<= " + trim3(tg.Max) + "x"
			res.Got = targetRatio(r)
			pass = r <= tg.Max
		default:
			res.Want = ">= " + trim3(tg.Min) + "x"
			res.Got = targetRatio(r)
			pass = r >= tg.Min
		}
		switch {
		case math.IsNaN(hp) || math.IsNaN(dp):
			res.Verdict = "no data"
		case pass:
			res.Verdict = "met"
		default:
			res.Verdict = "MISSED"
		}
		out = append(out, res)
	}
	return out
}

package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// chartMetric is one group of bars in the chart.
type chartMetric struct{ Test, Metric, Label string }

var chartMetrics = []chartMetric{
	{"tcp-bulk-up", "gbit_s", "bulk up"},
	{"tcp-bulk-down", "gbit_s", "bulk down"},
	{"tcp-rr", "rr_s", "RR/s"},
	{"tcp-rr", "p99_us", "RR p99"},
	{"tcp-rr", cpuPerOpKey, "CPU per RR"},
	{"tcp-conn-rate", "conn_s", "conn/s"},
	{"tcp-conn-rate", cpuPerOpKey, "CPU per conn"},
	{"tcp-open-1k", "kib_per_conn", "memory per open conn"},
	{"udp-dgrams", "dgrams_s", "UDP dgrams/s"},
	{"udp-flows", "flows_s", "UDP flows/s"},
	{"udp-flows", "rss_after_mib", "RSS after flows"},
	{"startup", "start_ms", "start-up"},
	{"startup", "idle_rss_mib", "idle RSS"},
	{"range-100", "idle_pss_mib", "100 ports idle Pss"},
}

// chartBar is one bar: how many times better than docker-proxy a peer is on
// a metric (the ratio, inverted where lower is better).
type chartBar struct {
	Peer  string
	Group int
	Value float64
}

// chartBars computes the chart's bars from the report.
func chartBars(rep *report) ([]chartBar, []string) {
	var bars []chartBar
	var labels []string
	for _, cm := range chartMetrics {
		var tr *testResult
		for _, t := range rep.Tests {
			if t.Name == cm.Test {
				tr = t
			}
		}
		if tr == nil {
			continue
		}
		higher := tr.higherBetter(cm.Metric)
		g := len(labels)
		labels = append(labels, cm.Label)
		for _, peer := range rep.Peers {
			if peer == "docker-proxy" {
				continue
			}
			a := advantage(ratio(tr.value(peer, cm.Metric), tr.value("docker-proxy", cm.Metric)), higher)
			if math.IsNaN(a) || math.IsInf(a, 0) || a <= 0 {
				continue
			}
			bars = append(bars, chartBar{Peer: peer, Group: g, Value: a})
		}
	}
	return bars, labels
}

var peerColors = map[string]color.RGBA{
	"direct":    {0x99, 0x99, 0x99, 0xff},
	"hostproxy": {0x1f, 0x77, 0xb4, 0xff},
	"socat":     {0x2c, 0xa0, 0x2c, 0xff},
	"haproxy":   {0xff, 0x7f, 0x0e, 0xff},
	"nginx":     {0x94, 0x67, 0xbd, 0xff},
}

// writeChart draws the ratios to docker-proxy as grouped bars on a log2
// axis (bars above the 1x line are better than docker-proxy) and saves it
// as SVG or PNG, by the file's extension.
func writeChart(name string, rep *report) error {
	bars, labels := chartBars(rep)
	if len(labels) == 0 {
		return fmt.Errorf("chart %s: no data to plot", name)
	}
	p := plot.New()
	p.Title.Text = "relative to docker-proxy: higher is better (lower-is-better metrics inverted); no bar = not measured"
	p.Y.Label.Text = "times better than docker-proxy (log scale)"
	var peers []string
	for _, peer := range rep.Peers {
		if peer != "docker-proxy" {
			peers = append(peers, peer)
		}
	}
	// The legend goes in a column right of the plot, where no bar hides it.
	leg := plot.NewLegend()
	leg.Top = true
	w := vg.Points(max(6, 40/float64(max(len(peers), 1))))
	lo, hi := 0.0, 0.0
	for i, peer := range peers {
		legend := false
		for _, b := range bars {
			if b.Peer != peer {
				continue
			}
			y := math.Log2(b.Value)
			lo, hi = min(lo, y), max(hi, y)
			bc, err := plotter.NewBarChart(plotter.Values{y}, w)
			if err != nil {
				return fmt.Errorf("chart %s: %w", name, err)
			}
			bc.XMin = float64(b.Group)
			bc.Offset = vg.Length(float64(i)-float64(len(peers)-1)/2) * w
			bc.LineStyle.Width = 0
			if c, ok := peerColors[peer]; ok {
				bc.Color = c
			}
			p.Add(bc)
			if !legend {
				leg.Add(peer, bc)
				legend = true
			}
		}
	}
	lo, hi = math.Floor(lo)-0.5, math.Ceil(hi)+0.5
	p.Y.Min, p.Y.Max = lo, hi
	var ticks plot.ConstantTicks
	for e := math.Ceil(lo); e <= hi; e++ {
		ticks = append(ticks, plot.Tick{Value: e, Label: strings.TrimSuffix(trim3(math.Exp2(e)), ".00") + "x"})
	}
	p.Y.Tick.Marker = ticks
	one := plotter.NewFunction(func(float64) float64 { return 0 })
	one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	leg.Add("docker-proxy = 1x", one)
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = -0.9
	p.X.Tick.Label.YAlign = -0.3
	format := strings.TrimPrefix(filepath.Ext(name), ".")
	const width, height, legendWidth = 900, 420, 120
	cw, err := draw.NewFormattedCanvas(vg.Points(width), vg.Points(height), format)
	if err != nil {
		return fmt.Errorf("chart %s: %w", name, err)
	}
	dc := draw.New(cw)
	p.Draw(draw.Crop(dc, 0, -vg.Points(legendWidth), 0, 0))
	leg.Draw(draw.Crop(dc, vg.Points(width-legendWidth+10), 0, 0, -vg.Points(30)))
	return writeFile(name, func(w io.Writer) error {
		_, err := cw.WriteTo(w)
		return err
	})
}

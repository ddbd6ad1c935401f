package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestExpandArgs(t *testing.T) {
	vars := mappingVars(mapping{
		Proto:   "udp",
		Host:    netip.MustParseAddrPort("127.0.0.1:8080"),
		Backend: netip.MustParseAddrPort("[::1]:80"),
	}, "/tmp/x")
	for _, tc := range []struct {
		in   []string
		want []string
		err  bool
	}{
		{[]string{"-proto", "{proto}", "-host-port", "{host_port}"}, []string{"-proto", "udp", "-host-port", "8080"}, false},
		{[]string{"{host_ip}:{host_port}:{backend_ip}:{backend_port}/{proto}"}, []string{"127.0.0.1:8080:::1:80/udp"}, false},
		{[]string{"TCP:{backend}", "{config}"}, []string{"TCP:[::1]:80", "/tmp/x/proxy.conf"}, false},
		{[]string{"no placeholders", "{"}, []string{"no placeholders", "{"}, false},
		{[]string{"{host_prt}"}, nil, true},
		{[]string{"ok", "{PROTO}"}, []string{"ok", "{PROTO}"}, false}, // only lower-case names are placeholders
	} {
		got, err := expandArgs(tc.in, vars)
		if (err != nil) != tc.err {
			t.Errorf("expandArgs(%q): err = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("expandArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestPeerTemplates expands every built-in peer's templates, so that a typo
// in one fails here instead of in a benchmark run.
func TestPeerTemplates(t *testing.T) {
	maps := []mapping{
		{Proto: "tcp", Host: netip.MustParseAddrPort("127.0.0.1:1000"), Backend: netip.MustParseAddrPort("127.0.0.1:2000")},
		{Proto: "udp", Host: netip.MustParseAddrPort("127.0.0.1:1001"), Backend: netip.MustParseAddrPort("127.0.0.1:2001")},
	}
	for _, p := range defaultPeers("/bin/hostproxy") {
		vars := mappingVars(maps[0], "/tmp/prefix")
		if _, err := expandArgs(p.Args, vars); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
		if _, err := expandArgs(p.Each, vars); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
		for _, proto := range []string{"tcp", "udp"} {
			if !p.supports(proto) && p.NoProto[proto] == "" {
				t.Errorf("%s: no reason given for skipping %s", p.Name, proto)
			}
		}
		if p.Config == nil {
			continue
		}
		var buf bytes.Buffer
		if err := p.Config.Execute(&buf, configData{Prefix: "/tmp/prefix", Maps: maps}); err != nil {
			t.Errorf("%s config: %v", p.Name, err)
			continue
		}
		conf := buf.String()
		for _, want := range []string{"127.0.0.1:1000", "127.0.0.1:2000"} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s config lacks %s:\n%s", p.Name, want, conf)
			}
		}
		if p.Name == "nginx" {
			for _, want := range []string{"listen 127.0.0.1:1001 udp;", "pid /tmp/prefix/nginx.pid;", "ngx_stream_module.so"} {
				if !strings.Contains(conf, want) {
					t.Errorf("nginx config lacks %q:\n%s", want, conf)
				}
			}
			if strings.Contains(conf, "listen 127.0.0.1:1000 udp") {
				t.Errorf("nginx config makes the TCP mapping UDP:\n%s", conf)
			}
		}
	}
	hp := defaultPeers("/bin/hostproxy")[1]
	argv, err := expandArgs(hp.Each, mappingVars(maps[1], ""))
	if err != nil || !reflect.DeepEqual(argv, []string{"-L", "127.0.0.1:1001:127.0.0.1:2001/udp"}) {
		t.Errorf("hostproxy -L = %q, %v", argv, err)
	}
}

// sampleReport is a small report with known numbers.
func sampleReport() *report {
	rep := &report{
		Machine: machine{Cores: 2, Kernel: "6.1.0", Go: "go1.26"},
		Config:  config{Rounds: 3},
		Peers:   []string{"direct", "hostproxy", "docker-proxy", "haproxy"},
	}
	mk := func(peer string, rounds ...map[string]float64) *peerResult {
		p := &peerResult{Peer: peer}
		for _, m := range rounds {
			p.Rounds = append(p.Rounds, roundResult{Metrics: m, Resources: resources{PeakRSS: 2 << 20, PeakPSS: 1 << 20, CPU: 0.5}})
		}
		return p
	}
	bulk := &testResult{Name: "tcp-bulk-up", Proto: "tcp", Metrics: []metricDef{{"gbit_s", "Gbit/s", true}}, Peers: []*peerResult{
		mk("direct", map[string]float64{"gbit_s": 40}, map[string]float64{"gbit_s": 30}, map[string]float64{"gbit_s": 50}),
		mk("hostproxy", map[string]float64{"gbit_s": 20}, map[string]float64{"gbit_s": 10}, map[string]float64{"gbit_s": 12}),
		mk("docker-proxy", map[string]float64{"gbit_s": 10}),
		{Peer: "haproxy", Err: "start haproxy: boom"},
	}}
	rr := &testResult{Name: "tcp-rr", Proto: "tcp", Op: "RR", Metrics: []metricDef{{"rr_s", "RR/s", true}, {"p99_us", "µs", false}}, Peers: []*peerResult{
		mk("direct", map[string]float64{"rr_s": 80000, "p99_us": 10}),
		mk("hostproxy", map[string]float64{"rr_s": 20000, "p99_us": 100, cpuPerOpKey: 10}),
		mk("docker-proxy", map[string]float64{"rr_s": 10000, "p99_us": 200, cpuPerOpKey: 20}),
		{Peer: "haproxy", Skip: "not today"},
	}}
	conn := &testResult{Name: "tcp-conn-rate", Proto: "tcp", Op: "conn", Metrics: []metricDef{{"conn_s", "conn/s", true}}, Peers: []*peerResult{
		mk("hostproxy", map[string]float64{"conn_s": 1100, cpuPerOpKey: 9}),
		mk("docker-proxy", map[string]float64{"conn_s": 800, cpuPerOpKey: 12}),
		mk("haproxy", map[string]float64{"conn_s": 1000, cpuPerOpKey: 10}),
	}}
	open := &testResult{Name: "tcp-open-4k", Proto: "tcp", Op: "conn",
		Metrics: []metricDef{{"kib_per_conn", "KiB", false}, {"fds_per_conn", "", false}, {"opened", "", true}}, Peers: []*peerResult{
			mk("hostproxy", map[string]float64{"kib_per_conn": 14.4, "fds_per_conn": 6, "opened": 3332}),
			mk("haproxy", map[string]float64{"kib_per_conn": 3.4, "fds_per_conn": 2, "opened": 4000}),
		}}
	open.Peers[0].Rounds[0].Note = "opened 3332 of 4000: connection 3333 of 4000: i/o timeout"
	udp := &testResult{Name: "udp-dgrams", Proto: "udp", Metrics: []metricDef{{"dgrams_s", "dgrams/s", true}, {"loss_pct", "%", false}}, Peers: []*peerResult{
		mk("hostproxy", map[string]float64{"dgrams_s": 100, "loss_pct": 1}),
		mk("docker-proxy", map[string]float64{"dgrams_s": 100, "loss_pct": 0}),
	}}
	rep.Tests = []*testResult{bulk, rr, conn, open, udp}
	for _, t := range rep.Tests {
		summarize(t)
	}
	return rep
}

func TestSummarize(t *testing.T) {
	rep := sampleReport()
	bulk := rep.Tests[0]
	hp := bulk.get("hostproxy")
	if got := hp.Median["gbit_s"]; got != 12 {
		t.Errorf("hostproxy median = %v, want 12", got)
	}
	if got := hp.VsDirect["gbit_s"]; got != 0.3 {
		t.Errorf("hostproxy vs direct = %v, want 0.3", got)
	}
	if got := hp.VsDocker["gbit_s"]; got != 1.2 {
		t.Errorf("hostproxy vs docker-proxy = %v, want 1.2", got)
	}
	if got := hp.Median["peak_rss_mib"]; got != 2 {
		t.Errorf("peak RSS median = %v MiB, want 2", got)
	}
	if _, ok := bulk.get("direct").Median["cpu_s"]; ok {
		t.Error("direct has a CPU median; it has no process")
	}
	if bulk.get("haproxy").Median != nil {
		t.Error("a peer without rounds has medians")
	}
	conn := rep.Tests[2]
	for peer, want := range map[string]float64{"hostproxy": 1, "docker-proxy": 12.0 / 9, "haproxy": 10.0 / 9} {
		if got := conn.get(peer).CPUVsLeanest; got != want {
			t.Errorf("%s CPU per connection vs leanest = %v, want %v", peer, got, want)
		}
	}
	if got := bulk.get("hostproxy").CPUVsLeanest; got != 0 {
		t.Errorf("CPU vs leanest without CPU per operation = %v", got)
	}
	var buf bytes.Buffer
	if err := rep.writeJSON(&buf); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	var back report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not read back: %v", err)
	}
	if back.Tests[0].Peers[1].VsDocker["gbit_s"] != 1.2 {
		t.Errorf("JSON lost the ratio: %s", buf.String())
	}
}

func TestTableRows(t *testing.T) {
	rep := sampleReport()
	rows := tableRows(rep)
	want := [][]string{
		{"tcp-bulk-up", "direct", "40 Gbit/s", "1x", "4x", "-", "-", "", "2", "1", "-"},
		{"tcp-bulk-up", "hostproxy", "12 Gbit/s", "0.3x", "1.20x", "-", "-", "", "2", "1", "0.5"},
		{"tcp-bulk-up", "docker-proxy", "10 Gbit/s", "0.25x", "1x", "-", "-", "", "2", "1", "0.5"},
		{"tcp-bulk-up", "haproxy", "error: start haproxy: boom", "", "", "", "", "", "", "", ""},
		{"tcp-rr", "direct", "80k RR/s", "1x", "8x", "-", "-", "p99_us 10 µs", "2", "1", "-"},
		{"tcp-rr", "hostproxy", "20k RR/s", "0.25x", "2x", "10 µs/RR", "1x", "p99_us 100 µs", "2", "1", "0.5"},
		{"tcp-rr", "docker-proxy", "10k RR/s", "0.125x", "1x", "20 µs/RR", "2x", "p99_us 200 µs", "2", "1", "0.5"},
		{"tcp-rr", "haproxy", "skipped: not today", "", "", "", "", "", "", "", ""},
		{"tcp-conn-rate", "hostproxy", "1100 conn/s", "-", "1.38x", "9 µs/conn", "1x", "", "2", "1", "0.5"},
		{"tcp-conn-rate", "docker-proxy", "800 conn/s", "-", "1x", "12 µs/conn", "1.33x", "", "2", "1", "0.5"},
		{"tcp-conn-rate", "haproxy", "1000 conn/s", "-", "1.25x", "10 µs/conn", "1.11x", "", "2", "1", "0.5"},
		{"tcp-open-4k", "hostproxy", "14.4 KiB", "-", "-", "-", "-",
			"fds_per_conn 6, opened 3332, FAILED in 1 of 1 rounds: opened 3332 of 4000: connection 3333 of 4000: i/o timeout", "2", "1", "0.5"},
		{"tcp-open-4k", "haproxy", "3.40 KiB", "-", "-", "-", "-", "fds_per_conn 2, opened 4000", "2", "1", "0.5"},
		{"udp-dgrams", "hostproxy", "100 dgrams/s", "-", "1x", "-", "-", "loss_pct 1 %", "2", "1", "0.5"},
		{"udp-dgrams", "docker-proxy", "100 dgrams/s", "-", "1x", "-", "-", "loss_pct 0 %", "2", "1", "0.5"},
	}
	if !reflect.DeepEqual(rows, want) {
		for i := range max(len(rows), len(want)) {
			var g, w []string
			if i < len(rows) {
				g = rows[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("row %d:\n got %q\nwant %q", i, g, w)
			}
		}
	}

	var md bytes.Buffer
	writeMarkdown(&md, rep)
	lines := strings.Split(strings.TrimSpace(md.String()), "\n")
	if !strings.HasPrefix(lines[0], "| test | peer | result |") || !strings.HasPrefix(lines[1], "| --- | --- | ---: |") {
		t.Errorf("markdown header:\n%s", md.String())
	}
	for _, l := range lines {
		if l != "" && (!strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|")) {
			t.Errorf("markdown line %q is not a table row", l)
		}
	}
	var txt bytes.Buffer
	writeTable(&txt, rep)
	if !strings.Contains(txt.String(), "2 cores, kernel 6.1.0") {
		t.Errorf("table lacks the machine line:\n%s", txt.String())
	}
}

func TestEvalTargets(t *testing.T) {
	got := map[string]targetResult{}
	for _, r := range evalTargets(sampleReport()) {
		got[r.Name] = r
	}
	for name, want := range map[string]targetResult{
		"TCP bulk up":                     {Want: ">= 1.30x docker-proxy", Got: "1.200x", Verdict: "MISSED"},
		"request/response p99 latency":    {Want: "<= 0.8x docker-proxy", Got: "0.500x", Verdict: "met"},
		"CPU per request/response":        {Want: "<= 0.9x leanest peer", Got: "0.500x (docker-proxy)", Verdict: "met"},
		"connections/s":                   {Want: ">= 1.10x best peer", Got: "1.100x (haproxy)", Verdict: "met"},
		"CPU per connection":              {Want: "<= 0.9x leanest peer", Got: "0.900x (haproxy)", Verdict: "met"},
		"4,000 open connections":          {Want: ">= 4000", Got: "3332", Verdict: "MISSED"},
		"descriptors per open connection": {Want: "<= 2.20", Got: "6", Verdict: "MISSED"},
		"memory per open connection":      {Want: "<= 0.3x haproxy", Got: "4.235x", Verdict: "MISSED"},
		"UDP delivered dgrams/s":          {Want: ">= 1.50x docker-proxy", Got: "1.000x", Verdict: "MISSED"},
		"UDP loss":                        {Want: "no higher than docker-proxy", Got: "1 vs 0", Verdict: "MISSED"},
		"CPU per datagram":                {Want: "<= 0.7x leanest peer", Got: "-", Verdict: "no data"},
	} {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: not evaluated", name)
			continue
		}
		g.Name = ""
		if g != want {
			t.Errorf("%s: %+v, want %+v", name, g, want)
		}
	}
	if _, ok := got["start-up time"]; ok {
		t.Error("a target without its test in the report was evaluated")
	}
	for _, r := range evalTargets(sampleReport()) {
		for _, word := range []string{"issue", "lead"} {
			if strings.Contains(r.Name+r.Want, word) {
				t.Errorf("target %q says %q", r.Name, word)
			}
		}
	}
}

func TestChart(t *testing.T) {
	rep := sampleReport()
	bars, labels := chartBars(rep)
	if !reflect.DeepEqual(labels, []string{"bulk up", "RR/s", "RR p99", "CPU per RR", "conn/s", "CPU per conn", "UDP dgrams/s"}) {
		t.Errorf("labels %q", labels)
	}
	// hostproxy's p99 is 100µs against 200µs: twice as good.
	found := false
	for _, b := range bars {
		if b.Peer == "hostproxy" && labels[b.Group] == "RR p99" {
			found = b.Value == 2
		}
		if b.Peer == "docker-proxy" {
			t.Error("docker-proxy has a bar; it is the 1x line")
		}
	}
	if !found {
		t.Errorf("no hostproxy RR p99 bar of 2x in %+v", bars)
	}
	for _, name := range []string{"chart.svg", "chart.png"} {
		file := filepath.Join(t.TempDir(), name)
		if err := writeChart(file, rep); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 1000 {
			t.Errorf("%s: only %d bytes", name, len(b))
		}
	}
	if err := writeChart(filepath.Join(t.TempDir(), "c.svg"), &report{}); err == nil {
		t.Error("a chart of an empty report did not fail")
	}
}

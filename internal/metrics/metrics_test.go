package metrics

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/udp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// sample is a process with every kind of mapping: TCP, SCTP, UDP over
// IPv4 and IPv6, each counter a distinct value.
func sample() *Snapshot {
	var s Snapshot
	s.AddStream("tcp", netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("172.17.0.2:80"),
		proxy.StreamSnapshot{Accepted: 12, Active: 3, BytesUp: 1234, BytesDown: 567890, DialErrors: 2, AcceptErrors: 1, Resets: 4})
	s.AddStream("sctp", netip.MustParseAddrPort("[::]:9000"), netip.MustParseAddrPort("[fd00::2]:9000"),
		proxy.StreamSnapshot{Accepted: 1, Active: 0, BytesUp: 18446744073709551615})
	s.AddUDP(netip.MustParseAddrPort("0.0.0.0:5353"), netip.MustParseAddrPort("172.17.0.3:53"), udp.Stats{
		Flows: 2, FlowsCreated: 7, FlowsExpired: 4, FlowsEvicted: 1, FlowsFailed: 13, ToBackend: 100, ToClient: 99,
		BytesToBackend: 4000, BytesToClient: 39600, Truncated: 8, Refused: 9, Dropped: 10, Rejected: 11})
	s.AddUDP(netip.MustParseAddrPort("[::1]:5353"), netip.MustParseAddrPort("172.17.0.3:53"), udp.Stats{})
	return &s
}

func renderer() *Renderer {
	return &Renderer{Version: "v1.2.3", Start: time.Unix(1764921600, 250e6)}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to accept)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestExpositionGolden(t *testing.T) {
	golden(t, "exposition.prom", renderer().Exposition(sample()))
}

func TestLogLinesGolden(t *testing.T) {
	golden(t, "loglines.txt", renderer().LogLines(sample()))
}

// TestExpositionParses checks the exposition of several snapshots against
// the format's rules, and that every counter of the sample arrives with its
// value under its series.
func TestExpositionParses(t *testing.T) {
	for name, s := range map[string]*Snapshot{
		"empty":   {},
		"streams": {Streams: sample().Streams},
		"udp":     {UDP: sample().UDP},
		"all":     sample(),
	} {
		t.Run(name, func(t *testing.T) {
			r := renderer()
			r.File = "web.prom"
			text := r.Exposition(s)
			values, err := Parse(text)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			// Every family with samples has exactly one HELP and TYPE.
			for _, fam := range []string{famBuildInfo, famStartTime, famConnections, famActive, famBytes, famDialErrors,
				famAcceptErrors, famResets, famFlows, famActiveFlows, famEvictions, famExpired, famDatagrams, famDrops} {
				has := false
				for k := range values {
					has = has || k == fam || strings.HasPrefix(k, fam+"{")
				}
				helps := bytes.Count(text, []byte("# HELP "+fam+" "))
				types := bytes.Count(text, []byte("# TYPE "+fam+" "))
				if want := map[bool]int{true: 1, false: 0}[has]; helps != want || types != want {
					t.Errorf("%s: %d HELP and %d TYPE lines, want %d", fam, helps, types, want)
				}
			}
			if got := values[`hostproxy_build_info{version="v1.2.3",file="web.prom"}`]; got != 1 {
				t.Errorf("build info %v, want 1", got)
			}
			if got := values[`hostproxy_start_time_seconds{file="web.prom"}`]; got != 1764921600.25 {
				t.Errorf("start time %v, want 1764921600.25", got)
			}
			wantSamples := 2 + len(s.Streams)*7 + len(s.UDP)*(6+2+5)
			if len(values) != wantSamples {
				t.Errorf("%d samples, want %d", len(values), wantSamples)
			}
		})
	}
	values, _ := Parse(renderer().Exposition(sample()))
	udp4 := `proto="udp",listen="0.0.0.0:5353",backend="172.17.0.3:53"`
	for series, want := range map[string]float64{
		`hostproxy_connections_total{proto="tcp",listen="127.0.0.1:8080",backend="172.17.0.2:80"}`:              12,
		`hostproxy_active_connections{proto="tcp",listen="127.0.0.1:8080",backend="172.17.0.2:80"}`:             3,
		`hostproxy_bytes_total{proto="sctp",listen="[::]:9000",backend="[fd00::2]:9000",direction="up"}`:        18446744073709551615,
		`hostproxy_resets_total{proto="tcp",listen="127.0.0.1:8080",backend="172.17.0.2:80"}`:                   4,
		`hostproxy_bytes_total{` + udp4 + `,direction="down"}`:                                                  39600,
		`hostproxy_udp_flows_total{` + udp4 + `}`:                                                               7,
		`hostproxy_udp_active_flows{` + udp4 + `}`:                                                              2,
		`hostproxy_udp_flow_evictions_total{` + udp4 + `}`:                                                      1,
		`hostproxy_udp_flows_expired_total{` + udp4 + `}`:                                                       4,
		`hostproxy_udp_datagrams_total{` + udp4 + `,direction="up"}`:                                            100,
		`hostproxy_udp_drops_total{` + udp4 + `,reason="truncated"}`:                                            8,
		`hostproxy_udp_drops_total{` + udp4 + `,reason="refused"}`:                                              9,
		`hostproxy_udp_drops_total{` + udp4 + `,reason="send_error"}`:                                           10,
		`hostproxy_udp_drops_total{` + udp4 + `,reason="shutdown"}`:                                             11,
		`hostproxy_udp_drops_total{` + udp4 + `,reason="flow_failed"}`:                                          13,
		`hostproxy_udp_datagrams_total{proto="udp",listen="[::1]:5353",backend="172.17.0.3:53",direction="up"}`: 0,
	} {
		if got, ok := values[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
}

// TestLabelEscaping: an IPv6 zone may hold any byte; backslash, quote and
// newline are escaped in label values, and the log line quotes the value.
func TestLabelEscaping(t *testing.T) {
	zone := "a\"b\\c\nd e"
	listen := netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone(zone), 53)
	var s Snapshot
	s.AddUDP(listen, netip.MustParseAddrPort("10.0.0.1:53"), udp.Stats{FlowsCreated: 1})
	r := renderer()
	r.Version = `v"1\` + "\n"
	text := r.Exposition(&s)
	values, err := Parse(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	want := `hostproxy_udp_flows_total{proto="udp",listen="[fe80::1%a\"b\\c\nd e]:53",backend="10.0.0.1:53"}`
	if values[want] != 1 {
		t.Errorf("no series %s in\n%s", want, text)
	}
	if _, ok := values[`hostproxy_build_info{version="v\"1\\\n"}`]; !ok {
		t.Errorf("version not escaped:\n%s", text)
	}
	line := string(r.LogLines(&s))
	if wantLine := `listen="[fe80::1%a\"b\\c\nd e]:53" backend=10.0.0.1:53 flows=1 `; !strings.Contains(line, wantLine) || strings.Count(line, "\n") != 1 {
		t.Errorf("log line %q, want one line containing %q", line, wantLine)
	}
}

// TestParseRejects shows that Parse finds each kind of fault.
func TestParseRejects(t *testing.T) {
	good := "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\na_total{x=\"2\"} 3\nb 1\n"
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good text: %v", err)
	}
	for name, text := range map[string]string{
		"no final newline":  "a 1",
		"partial line":      "# HELP a A.\na{x=\"1",
		"no value":          "a{x=\"1\"}\n",
		"two spaces":        "a  1\n",
		"timestamp":         "a 1 1700000000000\n",
		"bad value":         "a one\n",
		"bad name":          "1a 1\n",
		"bad label name":    "a{1x=\"1\"} 1\n",
		"unquoted label":    "a{x=1} 1\n",
		"bad escape":        "a{x=\"\\t\"} 1\n",
		"unclosed label":    "a{x=\"1\" 1\n",
		"trailing comma":    "a{x=\"1\",} 1\n",
		"repeated label":    "a{x=\"1\",x=\"2\"} 1\n",
		"repeated series":   "a{x=\"1\"} 1\na{x=\"1\"} 2\n",
		"split family":      "a{x=\"1\"} 1\nb 1\na{x=\"2\"} 1\n",
		"second HELP":       "# HELP a A.\n# HELP a A.\na 1\n",
		"second TYPE":       "# TYPE a gauge\n# TYPE a gauge\na 1\n",
		"TYPE after sample": "a 1\n# TYPE a gauge\n",
		"unknown type":      "# TYPE a meter\na 1\n",
		"negative counter":  "# TYPE a_total counter\na_total -1\n",
		"blank line":        "a 1\n\nb 1\n",
	} {
		if _, err := Parse([]byte(text)); err == nil {
			t.Errorf("%s: Parse accepted %q", name, text)
		}
	}
}

// TestRenderAllocs: once the buffers have grown, rendering allocates
// nothing.
func TestRenderAllocs(t *testing.T) {
	r, s := renderer(), sample()
	r.File = "x.prom"
	if n := testing.AllocsPerRun(100, func() { r.Exposition(s) }); n != 0 {
		t.Errorf("Exposition: %v allocations per render, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { r.LogLines(s) }); n != 0 {
		t.Errorf("LogLines: %v allocations per render, want 0", n)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hostproxy.prom")
	for i := range 3 {
		data := fmt.Appendf(nil, "a %d\n", i)
		if err := WriteFile(path, data); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("after write %d: %q, %v; want %q", i, got, err, data)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the directory, want the metrics file alone: %v", len(ents), ents)
	}
}

func TestCheckPath(t *testing.T) {
	dir := t.TempDir()
	if err := CheckPath(filepath.Join(dir, "ok.prom")); err != nil {
		t.Errorf("writable directory: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("CheckPath left %v behind", ents)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, path := range []string{
		filepath.Join(dir, "missing", "x.prom"),
		filepath.Join(file, "x.prom"),
		dir,
		dir + "/",
	} {
		if err := CheckPath(path); err == nil {
			t.Errorf("CheckPath(%s) accepted it", path)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("CheckPath(%s): %v does not name the path", path, err)
		}
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		if err := CheckPath(filepath.Join(ro, "x.prom")); err == nil {
			t.Errorf("CheckPath accepted a read-only directory")
		}
	}
}

func BenchmarkExposition(b *testing.B) {
	r := renderer()
	var s Snapshot
	for i := range 100 {
		s.AddStream("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(8000+i)),
			netip.AddrPortFrom(netip.MustParseAddr("172.17.0.2"), uint16(8000+i)), proxy.StreamSnapshot{Accepted: uint64(i)})
		s.AddUDP(netip.AddrPortFrom(netip.MustParseAddr("::"), uint16(8000+i)),
			netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), uint16(8000+i)), udp.Stats{FlowsCreated: uint64(i)})
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(r.Exposition(&s))
	}
	b.SetBytes(int64(n))
}

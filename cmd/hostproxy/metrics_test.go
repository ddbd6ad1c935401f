package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/metrics"
	"github.com/hostproxy/hostproxy/internal/testenv"
)

// readMetrics reads and parses the metrics file; an error means a missing,
// partial or malformed file.
func readMetrics(path string) (map[string]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%s: %d bytes, not ending with a newline", path, len(b))
	}
	v, err := metrics.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", path, err, b)
	}
	return v, nil
}

// waitMetrics polls the metrics file until it exists and cond holds, for
// at most wait.
func waitMetrics(t *testing.T, path, what string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		v, err := readMetrics(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err == nil && cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the metrics file still does not show %s:\n%v", wait, what, v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startUDPMetrics runs a forwarder with one UDP -L mapping to a UDP echo
// server and a metrics file; it returns the process, the mapping's address,
// the file and the labels of the mapping's series.
func startUDPMetrics(t *testing.T, interval string) (*proc, netip.AddrPort, string, string) {
	t.Helper()
	backend := udpEcho(t, lo4, 0, "u:")
	path := filepath.Join(metricsDir(t), "hostproxy.prom")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s/udp", port, backend),
			"-metrics-file", path, "-metrics-interval", interval, "-drain-timeout", "100ms"}, "0\n"
	})
	addr := netip.AddrPortFrom(lo4, port)
	labels := fmt.Sprintf(`proto="udp",listen="%s",backend="%s"`, addr, backend)
	return p, addr, path, labels
}

// TestMetricsFile runs a UDP mapping with a metrics file rewritten every
// 10ms: the file exists once the process is ready, shows the datagrams
// relayed, is never seen partial while it is replaced, and SIGUSR2 prints
// the counters on stderr without stopping the process.
func TestMetricsFile(t *testing.T) {
	t.Parallel()
	p, addr, path, labels := startUDPMetrics(t, "10ms")
	v := waitMetrics(t, path, "the mapping", func(v map[string]float64) bool {
		_, ok := v[`hostproxy_udp_flows_total{`+labels+`}`]
		return ok
	})
	buildInfo := 0 // the version label is the build's, whatever it is
	for k, n := range v {
		if strings.HasPrefix(k, `hostproxy_build_info{version="`) && strings.HasSuffix(k, `",file="hostproxy.prom"}`) && n == 1 {
			buildInfo++
		}
	}
	if v[`hostproxy_udp_flows_total{`+labels+`}`] != 0 || buildInfo != 1 {
		t.Errorf("first metrics file: %v", v)
	}

	const clients = 3
	for range clients {
		checkUDP(t, addr, "u:") // a new socket each: a flow each
	}
	up, down := `hostproxy_udp_datagrams_total{`+labels+`,direction="up"}`, `hostproxy_udp_datagrams_total{`+labels+`,direction="down"}`
	v = waitMetrics(t, path, fmt.Sprintf("%d datagrams each way", clients), func(v map[string]float64) bool {
		return v[up] >= clients && v[down] >= clients
	})
	if got := v[`hostproxy_udp_flows_total{`+labels+`}`]; got < clients {
		t.Errorf("%v flows created, want at least %d", got, clients)
	}
	if got := v[`hostproxy_bytes_total{`+labels+`,direction="down"}`]; got < v[down]*float64(len("u:")) {
		t.Errorf("%v bytes down for %v datagrams", got, v[down])
	}

	// Read the file again and again (every millisecond, leaving the CPU to
	// the writer) while it is replaced every 10ms: every read is a whole
	// file. Distinct inodes show that replacements happened during the
	// reads (and so that the test could fail).
	inodes := map[uint64]bool{}
	deadline := time.Now().Add(wait)
	reads := 0
	for ; len(inodes) < 10 || reads < 200; reads++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d reads saw %d versions of the file in %v, want 10", reads, len(inodes), wait)
		}
		time.Sleep(time.Millisecond)
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		inodes[st.Ino] = true
		var b bytes.Buffer
		_, err = b.ReadFrom(f)
		f.Close()
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		if b.Len() == 0 || b.Bytes()[b.Len()-1] != '\n' {
			t.Fatalf("read %d: %d bytes, not ending with a newline:\n%s", reads, b.Len(), b.Bytes())
		}
		if _, err := metrics.Parse(b.Bytes()); err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
	}
	t.Logf("%d reads, %d versions of the file", reads, len(inodes))

	// SIGUSR2: one line for the mapping on stderr, at the default level.
	p.signalCaught(t, syscall.SIGUSR2)
	want := fmt.Sprintf("hostproxy stats proto=udp listen=%s backend=", addr)
	deadline = time.Now().Add(wait)
	for !strings.Contains(p.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q on stderr after SIGUSR2:\n%s", want, p.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], fmt.Sprintf(" flows=%d ", clients)) || !strings.Contains(lines[0], " datagrams_up=") {
		t.Errorf("stderr after SIGUSR2: %q, want one stats line with flows=%d", lines, clients)
	}
	select {
	case <-p.exited:
		t.Fatalf("hostproxy exited after SIGUSR2: %v", p.err)
	default:
	}
	checkUDP(t, addr, "u:") // still relaying
	p.stop(t, syscall.SIGTERM)
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("the directory holds %v, want the metrics file alone", ents)
	}
}

// TestMetricsFileAtExit: with an interval longer than the test, the file
// written at start shows nothing, and the one written at exit, after the
// drain, shows the datagrams relayed.
func TestMetricsFileAtExit(t *testing.T) {
	t.Parallel()
	p, addr, path, labels := startUDPMetrics(t, "1h")
	up := `hostproxy_udp_datagrams_total{` + labels + `,direction="up"}`
	v := waitMetrics(t, path, "the first write", func(map[string]float64) bool { return true })
	if got, ok := v[up]; !ok || got != 0 {
		t.Fatalf("first file: %s = %v (present %v), want 0", up, got, ok)
	}
	const n = 4
	for range n {
		checkUDP(t, addr, "u:")
	}
	p.stop(t, syscall.SIGTERM)
	v, err := readMetrics(path)
	if err != nil {
		t.Fatal(err)
	}
	if v[up] < n {
		t.Errorf("file at exit: %s = %v, want at least %d", up, v[up], n)
	}
	if got := v[`hostproxy_udp_active_flows{`+labels+`}`]; got != 0 {
		t.Errorf("file at exit: %v active flows, want 0 (closed by the drain)", got)
	}
	p.quiet(t)
}

// TestMetricsBadInput: a metrics file that cannot be written and a bad
// interval stop the start with one line, exit 1.
func TestMetricsBadInput(t *testing.T) {
	t.Parallel()
	dir := metricsDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The file is checked once the mapping is bound: a free port, so that
	// the test runs without root.
	fw := func(more ...string) []string {
		return append([]string{"-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:2/udp", freePort(t, lo4))}, more...)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"missing directory", fw("-metrics-file", filepath.Join(dir, "missing", "m.prom")), "no such file or directory"},
		{"directory is a file", fw("-metrics-file", filepath.Join(file, "m.prom")), "is not a directory"},
		{"file is a directory", fw("-metrics-file", dir), "is a directory"},
		{"unwritable directory", fw("-metrics-file", "/proc/m.prom"), "not writable"},
		{"zero interval", fw("-metrics-file", filepath.Join(dir, "m.prom"), "-metrics-interval", "0s"), "positive duration"},
		{"negative interval", fw("-metrics-file", filepath.Join(dir, "m.prom"), "-metrics-interval", "-1s"), "positive duration"},
		{"bad interval", fw("-metrics-file", filepath.Join(dir, "m.prom"), "-metrics-interval", "often"), "metrics-interval"},
		{"interval without file", fw("-metrics-interval", "1s"), "needs -metrics-file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, spawn{noStatus: true}, tt.args...)
			if code := p.exitCode(t, wait); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			stderr := p.stderr.String()
			if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q, want one line with %q", stderr, tt.want)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the failed starts left %v in the directory", ents)
	}
}

// TestMetricsUsage: -h names both flags.
func TestMetricsUsage(t *testing.T) {
	t.Parallel()
	p := start(t, spawn{noStatus: true}, "-h")
	if code := p.exitCode(t, wait); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	for _, want := range []string{"-metrics-file", "-metrics-interval"} {
		if !strings.Contains(p.stdout.String(), want) {
			t.Errorf("usage lacks %s", want)
		}
	}
}

// nodeExporter runs node_exporter with only the textfile collector reading
// dir, on a free loopback port, and returns its /metrics URL and its log.
func nodeExporter(t *testing.T, dir string) (string, *testenv.Buffer) {
	t.Helper()
	bin, err := exec.LookPath("prometheus-node-exporter") // Debian's name
	if err != nil {
		bin = testenv.RequireCommand(t, "node_exporter")
	}
	for attempt := 1; ; attempt++ {
		addr := netip.AddrPortFrom(lo4, freePort(t, lo4))
		var log testenv.Buffer
		cmd := exec.Command(bin, "--web.listen-address="+addr.String(), "--collector.disable-defaults",
			"--collector.textfile", "--collector.textfile.directory="+dir)
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-exited })
		url := "http://" + addr.String() + "/metrics"
		deadline := time.Now().Add(wait)
		for {
			select {
			case <-exited:
				if attempt < 5 && strings.Contains(log.String(), "address already in use") {
					break // another port
				}
				t.Fatalf("node_exporter exited:\n%s", &log)
			default:
				if resp, err := http.Get(url); err == nil {
					resp.Body.Close()
					return url, &log
				}
				if time.Now().After(deadline) {
					t.Fatalf("node_exporter not answering on %s after %v:\n%s", url, wait, &log)
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			break
		}
	}
}

// TestMetricsNodeExporter: node_exporter's textfile collector reads the
// files of two hostproxy processes in one directory as they are: no scrape
// error, no series collected twice, the counters under their labels.
func TestMetricsNodeExporter(t *testing.T) {
	t.Parallel()
	dir := metricsDir(t)
	var addrs [2]netip.AddrPort
	for i := range addrs {
		backend := udpEcho(t, lo4, 0, "u:")
		var port uint16
		startOnFreePorts(t, spawn{}, func() ([]string, string) {
			port = freePort(t, lo4)
			return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s/udp", port, backend),
				"-metrics-file", filepath.Join(dir, fmt.Sprintf("hostproxy-%d.prom", i)), "-metrics-interval", "50ms"}, "0\n"
		})
		addrs[i] = netip.AddrPortFrom(lo4, port)
	}
	checkUDP(t, addrs[1], "u:")
	url, log := nodeExporter(t, dir)
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		text := string(body)
		done := strings.Contains(text, "node_textfile_scrape_error 0") &&
			strings.Count(text, "\nhostproxy_build_info{") == 2 &&
			regexp.MustCompile(`\nhostproxy_udp_datagrams_total\{backend="[^"]+",direction="down",listen="`+regexp.QuoteMeta(addrs[1].String())+`",proto="udp"\} [1-9]`).MatchString(text) &&
			regexp.MustCompile(`\nhostproxy_udp_active_flows\{backend="[^"]+",listen="`+regexp.QuoteMeta(addrs[0].String())+`",proto="udp"\} 0`).MatchString(text)
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node_exporter's metrics lack the hostproxy series after %v:\n%s", wait, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := log.String(); strings.Contains(s, "level=error") {
		t.Errorf("node_exporter logged errors:\n%s", s)
	}
}

// TestMetricsFileCompat: with docker-proxy's flags (one udp.Proxy, not a
// range) the file shows the mapping too, and SIGTERM, which stops at once
// in this form, still leaves the final counts.
func TestMetricsFileCompat(t *testing.T) {
	t.Parallel()
	backend := udpEcho(t, lo4, 0, "u:")
	path := filepath.Join(metricsDir(t), "compat.prom")
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-proto", "udp", "-host-ip", "127.0.0.1", "-host-port", itoa(port),
			"-container-ip", "127.0.0.1", "-container-port", itoa(backend.Port()),
			"-metrics-file", path, "-metrics-interval", "1h"}, "0\n"
	})
	addr := netip.AddrPortFrom(lo4, port)
	labels := fmt.Sprintf(`proto="udp",listen="%s",backend="%s"`, addr, backend)
	waitMetrics(t, path, "the first write", func(v map[string]float64) bool {
		_, ok := v[`hostproxy_udp_flows_total{`+labels+`}`]
		return ok
	})
	checkUDP(t, addr, "u:")
	p.stop(t, syscall.SIGTERM)
	v, err := readMetrics(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := v[`hostproxy_udp_datagrams_total{`+labels+`,direction="down"}`]; got < 1 {
		t.Errorf("file at exit: %v datagrams down, want at least 1", got)
	}
	p.quiet(t)
}

// metricsDir returns a new directory the metrics file can be written to
// after hostproxy, started as root, has switched to -user (nobody): as an
// operator would, the test makes it writable for that user.
func metricsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Command bench measures hostproxy side by side with docker-proxy, socat,
// HAProxy, nginx (stream) and no proxy at all ("direct"), on loopback.
//
//	go run ./bench                       # full run, table on stdout
//	go run ./bench -quick                # every test and peer once, about a minute
//	go run ./bench -results bench/results # also write the README table, chart and JSON
//
// The harness is its own module (its chart needs gonum.org/v1/plot, which
// the product must not require). From the repository root, go.work puts both
// modules in one workspace, so the commands above work there; without the
// workspace, run it from its directory: (cd bench && go run .).
//
// The harness runs its own backends in-process (TCP echo, sink and source,
// UDP echo) and starts each proxy under test as a subprocess from a command
// template: docker-proxy with its fd 3 status pipe, hostproxy in docker-proxy
// compatible mode with fd 3 and an fd 4 listening socket, socat, HAProxy and
// nginx with generated configs in a temp dir. Each test runs in interleaved
// rounds (direct, hostproxy, docker-proxy, ... then again), every round for
// a bounded time against a freshly started proxy, and reports per-round
// medians and ratios to direct and to docker-proxy measured in the same run.
// For every round it records the proxy's peak RSS and Pss (smaps_rollup,
// summed over the process and its children) and its CPU seconds
// (utime+stime from /proc), and for every traffic test the CPU per
// operation: the proxy's CPU over the measured interval divided by what the
// round counted there (MiB, request/responses, connections, echoed
// datagrams, flows), with its ratio to the leanest peer of the run.
//
// tcp-open-1k and tcp-open-4k open 1,000 and 4,000 connections through the
// proxy, hold them idle, and report the proxy's descriptors and Pss per
// connection (at rest with them open, minus its idle baseline). Opening
// stops at the first connection that fails within 3 s, so a proxy that runs
// out of descriptors ends the round with how many it held, marked FAILED.
// The harness holds two descriptors per connection itself (the client and
// the backend's side), well inside a 20,000-descriptor limit.
//
// Targets compare hostproxy with docker-proxy, or with the best (or
// leanest) of docker-proxy, nginx and HAProxy in the same run.
//
// Each peer gets a configuration that measures its relay rather than a
// default that would stand in its way: socat listens with backlog=4096
// (its default is 5), HAProxy runs in TCP mode with maxconn 9000, nginx with
// worker_processes auto and worker_connections 16384, and every peer
// inherits the harness's open-file limit. The load generator and the
// backends share the machine's cores with the proxy, so on a small machine
// a proxy's throughput is bounded by what the harness leaves it; the CPU
// seconds column shows what each proxy spent.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// config is the harness's settings, from flags.
type config struct {
	Duration  time.Duration `json:"duration_ns"`
	Warmup    time.Duration `json:"warmup_ns"`
	Rounds    int           `json:"rounds"`
	Parallel  int           `json:"parallel"`
	Flows     int           `json:"udp_flows"`
	RangeSize int           `json:"range_size"`
	Quick     bool          `json:"quick"`
	ProxyCPUs string        `json:"proxy_cpus,omitempty"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       config
		quick     = fs.Bool("quick", false, "every test and peer once with short rounds (under two minutes); overrides -duration, -rounds and -flows")
		peersFlag = fs.String("peers", "direct,hostproxy,docker-proxy,socat,haproxy,nginx", "comma-separated peers to measure, in table order")
		testsFlag = fs.String("tests", "", "comma-separated tests to run (default all: "+strings.Join(testNames(), ",")+")")
		hpBin     = fs.String("hostproxy", "", "hostproxy executable (default: go build ./cmd/hostproxy into a temp dir as the README installs it: CGO_ENABLED=0, and GOEXPERIMENT=nogreenteagc on Go 1.26, unless the environment sets them)")
		jsonOut   = fs.String("json", "", "write every round and the medians as JSON to `FILE`")
		mdOut     = fs.String("markdown", "", "write the table as markdown to `FILE`")
		chartOut  = fs.String("chart", "", "write the chart of ratios to docker-proxy to `FILE` (.svg or .png)")
		results   = fs.String("results", "", "write latest.json, README-table.md and chart.svg into `DIR`")
		from      = fs.String("from", "", "measure nothing: read a report written by -json from `FILE` and print, chart and write it again")
	)
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Second, "measured time of one round of a throughput test")
	fs.DurationVar(&cfg.Warmup, "warmup", 200*time.Millisecond, "unmeasured time before each round's measurement")
	fs.IntVar(&cfg.Rounds, "rounds", 5, "interleaved rounds per test and peer; medians are over rounds")
	fs.IntVar(&cfg.Parallel, "parallel", 4, "parallel clients (TCP connection rate) and sockets (UDP)")
	fs.IntVar(&cfg.Flows, "flows", 5000, "new UDP flows per round of udp-flows")
	fs.IntVar(&cfg.RangeSize, "range", 100, "ports in range-100")
	fs.StringVar(&cfg.ProxyCPUs, "proxy-cpus", "", "run the proxies on these `CPUS` (a list such as 1 or 2-3,5) and the load generator and backends on the other CPUs this process may use (Linux); by default they share every CPU")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench [flags]\n\n"+
			"Measures hostproxy against docker-proxy, socat, haproxy, nginx and no proxy on loopback.\n"+
			"Tests: %s\n\nFlags:\n", strings.Join(testNames(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		cfg.Quick = true
		cfg.Duration, cfg.Warmup, cfg.Rounds, cfg.Flows = 300*time.Millisecond, 50*time.Millisecond, 1, 500
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 || cfg.Rounds < 1 || cfg.Parallel < 1 || cfg.Flows < 1 || cfg.RangeSize < 1 {
		return errors.New("-duration, -rounds, -parallel, -flows and -range must be positive")
	}
	if cfg.ProxyCPUs != "" && *from == "" {
		proxy, load, err := splitCPUs(cfg.ProxyCPUs)
		if err != nil {
			return fmt.Errorf("-proxy-cpus %s: %w", cfg.ProxyCPUs, err)
		}
		fmt.Fprintf(stderr, "proxies on CPUs %v, the load generator and backends on CPUs %v\n", proxy, load)
	}
	if *results != "" {
		if err := os.MkdirAll(*results, 0o755); err != nil {
			return err
		}
		*jsonOut = cmp.Or(*jsonOut, filepath.Join(*results, "latest.json"))
		*mdOut = cmp.Or(*mdOut, filepath.Join(*results, "README-table.md"))
		*chartOut = cmp.Or(*chartOut, filepath.Join(*results, "chart.svg"))
	}
	sel, err := selectTests(*testsFlag)
	if err != nil {
		return err
	}

	var rep *report
	if *from != "" {
		if rep, err = readReport(*from); err != nil {
			return err
		}
		if *jsonOut == *from {
			*jsonOut = ""
		}
	} else if rep, err = measure(cfg, sel, *peersFlag, *hpBin, stderr); err != nil {
		return err
	}

	writeTable(stdout, rep)
	if *jsonOut != "" {
		if err := writeFile(*jsonOut, rep.writeJSON); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		if err := writeFile(*mdOut, func(w io.Writer) error { writeMarkdown(w, rep); return nil }); err != nil {
			return err
		}
	}
	if *chartOut != "" {
		if err := writeChart(*chartOut, rep); err != nil {
			return err
		}
	}
	return nil
}

// measure runs the selected tests on the peers that can run here.
func measure(cfg config, sel []*testDef, peerList, hpBin string, stderr io.Writer) (*report, error) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	bin, missing := hpBin, ""
	if bin == "" && slices.Contains(strings.Split(peerList, ","), "hostproxy") {
		dir, err := os.MkdirTemp("", "hostproxy-bench-bin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if bin, err = buildHostproxy(ctx, dir); err != nil {
			missing = err.Error()
		}
	}
	known := defaultPeers(bin)
	for _, p := range known {
		if p.Name == "hostproxy" {
			p.Missing = missing
		}
	}
	peers, err := selectPeers(peerList, known, stderr)
	if err != nil {
		return nil, err
	}

	return runAll(ctx, &cfg, sel, peers, stderr)
}

// readReport reads a report written with -json.
func readReport(name string) (*report, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("read report %s: %w", name, err)
	}
	return &rep, nil
}

func writeFile(name string, fn func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Close()
}

func testNames() []string {
	var n []string
	for _, t := range tests() {
		n = append(n, t.Name)
	}
	return n
}

// selectTests returns the tests named in list (all when empty).
func selectTests(list string) ([]*testDef, error) {
	all := tests()
	if list == "" {
		return all, nil
	}
	var out []*testDef
	for name := range strings.SplitSeq(list, ",") {
		i := slices.IndexFunc(all, func(t *testDef) bool { return t.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown test %q (have %s)", name, strings.Join(testNames(), ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// selectPeers returns the peers named in list that can run here, printing
// one line for each that cannot.
func selectPeers(list string, known []*peerSpec, log io.Writer) ([]*peerSpec, error) {
	var out []*peerSpec
	for name := range strings.SplitSeq(list, ",") {
		i := slices.IndexFunc(known, func(p *peerSpec) bool { return p.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown peer %q", name)
		}
		if err := checkPeer(known[i]); err != nil {
			fmt.Fprintf(log, "skip %s: %v\n", name, err)
			continue
		}
		out = append(out, known[i])
	}
	if len(out) == 0 {
		return nil, errors.New("no peer can run")
	}
	return out, nil
}

// buildHostproxy builds ./cmd/hostproxy into dir the way the README says to
// install it (testenv.ReleaseEnv), from the hostproxy module's own directory
// and with GOWORK=off, so that the workspace's other modules (this one's
// plotting dependencies) cannot change the versions the product links.
func buildHostproxy(ctx context.Context, dir string) (string, error) {
	const pkg = "github.com/hostproxy/hostproxy/cmd/hostproxy"
	src, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/hostproxy/hostproxy").Output()
	if err != nil {
		return "", fmt.Errorf("find the hostproxy module with go list -m: %w", err)
	}
	out := filepath.Join(dir, "hostproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = strings.TrimSpace(string(src))
	cmd.Env = append(testenv.ReleaseEnv(), "GOWORK=off")
	msg, err := cmd.CombinedOutput()
	if err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(msg)), "\n")
		return "", fmt.Errorf("go build %s in %s: %w: %s", pkg, cmd.Dir, err, first)
	}
	return out, nil
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeProxyEnv makes the test binary act as a docker-proxy compatible
// proxy, so the fd 3 / fd 4 path of the harness is tested without hostproxy
// or docker-proxy.
const fakeProxyEnv = "HOSTPROXY_BENCH_FAKE_PROXY"

// fakeAcceptEnv, when set to N, makes the fake proxy stop accepting after
// N connections, as a proxy out of descriptors does; with fakeExitEnv=1 it
// exits instead, as docker-proxy does.
const (
	fakeAcceptEnv = "HOSTPROXY_BENCH_FAKE_ACCEPT"
	fakeExitEnv   = "HOSTPROXY_BENCH_FAKE_EXIT"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeProxyEnv) == "1" {
		if err := fakeProxy(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeProxy is a minimal TCP proxy speaking docker-proxy's start protocol:
// fd 4 is its listener, "0\n" on fd 3 says it is ready.
func fakeProxy(args []string) error {
	fs := flag.NewFlagSet("fake", flag.ContinueOnError)
	fs.String("proto", "tcp", "")
	fs.String("host-ip", "", "")
	fs.Int("host-port", 0, "")
	ip := fs.String("container-ip", "", "")
	port := fs.Int("container-port", 0, "")
	fs.Bool("use-listen-fd", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.FileListener(os.NewFile(4, "listener"))
	if err != nil {
		return fmt.Errorf("fd 4: %w", err)
	}
	status := os.NewFile(3, "status")
	status.WriteString("0\n")
	status.Close()
	backend := net.JoinHostPort(*ip, fmt.Sprint(*port))
	limit, _ := strconv.Atoi(os.Getenv(fakeAcceptEnv))
	for n := 0; ; n++ {
		if limit > 0 && n == limit {
			if os.Getenv(fakeExitEnv) == "1" {
				return fmt.Errorf("accept: too many open files")
			}
			select {} // until killed
		}
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", backend)
			if err != nil {
				return
			}
			defer b.Close()
			go io.Copy(b, c)
			io.Copy(c, b)
		}()
	}
}

// TestStatusAndListenFD runs the harness against the fake proxy started the
// way hostproxy is: fd 3 status pipe and fd 4 listening socket.
func TestStatusAndListenFD(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the harness measures Linux processes")
	}
	t.Setenv(fakeProxyEnv, "1")
	var hp *peerSpec
	for _, p := range defaultPeers(os.Args[0]) {
		if p.Name == "hostproxy" {
			hp = p
		}
	}
	hp.Name = "fake"
	hp.Protos = []string{"tcp"}
	direct := defaultPeers("")[0]

	ts := slices.DeleteFunc(tests(), func(td *testDef) bool { return td.Name != "tcp-rr" && td.Name != "startup" })
	cfg := &config{Duration: 100 * time.Millisecond, Warmup: 10 * time.Millisecond, Rounds: 2, Parallel: 2, Flows: 10, RangeSize: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := runAll(ctx, cfg, ts, []*peerSpec{direct, hp}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rr, st := rep.Tests[0].get("fake"), rep.Tests[1].get("fake")
	if rr.Err != "" || len(rr.Rounds) != 2 || rr.Median["rr_s"] <= 0 || rr.VsDirect["rr_s"] <= 0 {
		t.Errorf("tcp-rr through the fake proxy: %+v", rr)
	}
	if rr.Median["peak_rss_mib"] <= 0 || rr.Median["peak_pss_mib"] <= 0 {
		t.Errorf("no memory measured for the fake proxy: %+v", rr.Median)
	}
	if st.Err != "" || st.Median["start_ms"] <= 0 || st.Median["idle_rss_mib"] <= 0 {
		t.Errorf("startup of the fake proxy: %+v", st)
	}
}

// TestStartFailure checks that a proxy reporting failure on fd 3 is an
// error naming the reason, and that its process is gone afterwards.
func TestStartFailure(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the harness measures Linux processes")
	}
	p := &peerSpec{Name: "failing", Bin: "/bin/sh", Status: true,
		Args: []string{"-c", "printf '1\\nport {host_port} is taken' >&3"}}
	maps := []mapping{{Proto: "tcp", Host: loopbackAny, Backend: loopbackAny}}
	_, _, err := start(context.Background(), p, maps, false)
	if err == nil {
		t.Fatal("start succeeded")
	}
	want := fmt.Sprintf("port %d is taken", maps[0].Host.Port())
	if !contains(err.Error(), want) {
		t.Errorf("error %q does not carry the reason %q", err, want)
	}

	p = &peerSpec{Name: "silent", Bin: "/bin/sh", Status: true, Args: []string{"-c", "exec 3>&-; exit 0"}}
	if _, _, err := start(context.Background(), p, maps, false); err == nil {
		t.Error("a proxy that closed fd 3 without a status started")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// fakePeer returns the hostproxy peer running the test binary as the fake
// proxy.
func fakePeer(t *testing.T) *peerSpec {
	t.Helper()
	t.Setenv(fakeProxyEnv, "1")
	for _, p := range defaultPeers(os.Args[0]) {
		if p.Name == "hostproxy" {
			p.Name = "fake"
			p.Protos = []string{"tcp"}
			return p
		}
	}
	t.Fatal("no hostproxy peer")
	return nil
}

// TestOpenConns holds connections open through the fake proxy (a Go
// relay with two sockets and, while io.Copy waits in splice, two pipes per
// connection) and checks the per-connection figures.
func TestOpenConns(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the harness measures Linux processes")
	}
	const n = 200
	td := &testDef{Name: "open", Proto: "tcp", Backend: tcpEcho, Run: openConns(n), ProxyOnly: true, Op: "conn", OpScale: 1,
		Metrics: []metricDef{{"kib_per_conn", "KiB", false}, {"fds_per_conn", "", false}, {"opened", "", true}}}
	cfg := &config{Rounds: 1, Parallel: 4}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := runAll(ctx, cfg, []*testDef{td}, []*peerSpec{defaultPeers("")[0], fakePeer(t)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := rep.Tests[0].get("direct"); d.Skip == "" {
		t.Errorf("direct was not skipped: %+v", d)
	}
	p := rep.Tests[0].get("fake")
	if p.Err != "" || len(p.Rounds) != 1 {
		t.Fatalf("fake: %+v", p)
	}
	m := p.Rounds[0].Metrics
	t.Logf("fake proxy: %v", m)
	if m["opened"] != n || p.Rounds[0].Note != "" {
		t.Errorf("opened %v of %d, note %q", m["opened"], n, p.Rounds[0].Note)
	}
	// Two sockets for every connection, two pipes for the ones whose
	// io.Copy holds one while it waits; the echo goroutine's pipes are
	// pooled, so anything from 2 to 6 is the fake proxy.
	if f := m["fds_per_conn"]; f < 1.9 || f > 6.1 {
		t.Errorf("fds per connection = %v, want 2 to 6", f)
	}
	if k := m["kib_per_conn"]; k <= 0 || k > 200 {
		t.Errorf("KiB per connection = %v", k)
	}
	if _, ok := m[cpuPerOpKey]; !ok {
		t.Errorf("no CPU per connection in %v", m)
	}
}

// TestOpenConnsStall checks that a proxy that stops accepting, or exits,
// ends the round within the per-connection timeout, with the number opened
// and the failure in the round's note.
func TestOpenConnsStall(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the harness measures Linux processes")
	}
	const n, limit = 100, 31 // the first connection is the warm-up
	for _, tc := range []struct {
		exit string
		note string
	}{
		{"0", "no echo from"},
		{"1", "too many open files"},
	} {
		p := fakePeer(t)
		t.Setenv(fakeAcceptEnv, strconv.Itoa(limit))
		t.Setenv(fakeExitEnv, tc.exit)
		td := &testDef{Name: "open", Proto: "tcp", Backend: tcpEcho, Run: openConns(n), ProxyOnly: true, Op: "conn", OpScale: 1,
			Metrics: []metricDef{{"kib_per_conn", "KiB", false}, {"opened", "", true}}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t0 := time.Now()
		rep, err := runAll(ctx, &config{Rounds: 1, Parallel: 4}, []*testDef{td}, []*peerSpec{p}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(t0); el > 4*openDialTimeout {
			t.Errorf("exit=%s: a stalled proxy held the round for %v", tc.exit, el)
		}
		r := rep.Tests[0].Peers[0]
		if len(r.Rounds) != 1 {
			t.Fatalf("exit=%s: %+v", tc.exit, r)
		}
		// A proxy that exits takes the connections whose echo is still on
		// its way (one per parallel opener) with it.
		got := int(r.Rounds[0].Metrics["opened"])
		if got > limit-1 || (tc.exit == "0" && got != limit-1) || got < limit-1-4 {
			t.Errorf("exit=%s: opened %v, want %d", tc.exit, got, limit-1)
		}
		note := r.Rounds[0].Note
		if !strings.Contains(note, fmt.Sprintf("opened %d of %d", got, n)) || !strings.Contains(note, tc.note) {
			t.Errorf("exit=%s: note %q does not say how many opened and %q", tc.exit, note, tc.note)
		}
		if rows := tableRows(rep); !strings.Contains(rows[0][alsoColumn], "FAILED") {
			t.Errorf("exit=%s: table row does not say FAILED: %q", tc.exit, rows[0])
		}
	}
}

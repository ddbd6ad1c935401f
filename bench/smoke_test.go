package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-rounds", "0"},
		{"-duration", "-1s"},
		{"-tests", "tcp-bulk-up,nope"},
		{"-peers", "direct,nope"},
		{"stray"},
		{"-no-such-flag"},
	} {
		if err := run(args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
	var help bytes.Buffer
	if err := run([]string{"-h"}, io.Discard, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	for _, want := range []string{"-quick", "-json", "tcp-bulk-up", "range-100"} {
		if !bytes.Contains(help.Bytes(), []byte(want)) {
			t.Errorf("-h does not mention %s:\n%s", want, help.String())
		}
	}
}

// smoke runs the harness for real with short rounds and returns the report
// it wrote.
func smoke(t *testing.T, args ...string) *report {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the harness measures Linux processes")
	}
	dir := t.TempDir()
	args = append([]string{"-duration", "100ms", "-warmup", "20ms", "-rounds", "1", "-flows", "50", "-range", "3", "-results", dir}, args...)
	var out, log bytes.Buffer
	if err := run(args, &out, &log); err != nil {
		t.Fatalf("run %q: %v\n%s", args, err, log.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("latest.json: %v", err)
	}
	for _, name := range []string{"README-table.md", "chart.svg"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil && len(rep.Peers) > 1 {
			t.Error(err)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), log.String())
	}
	return &rep
}

// TestSmokeDirect runs every traffic test against the backends with no
// proxy in between.
func TestSmokeDirect(t *testing.T) {
	rep := smoke(t, "-peers", "direct", "-tests", "tcp-bulk-up,tcp-bulk-down,tcp-rr,tcp-conn-rate,udp-dgrams,udp-flows")
	if len(rep.Tests) != 6 {
		t.Fatalf("%d tests in the report, want 6", len(rep.Tests))
	}
	for _, tr := range rep.Tests {
		p := tr.Peers[0]
		if p.Err != "" || len(p.Rounds) != 1 {
			t.Errorf("%s: %d rounds, error %q", tr.Name, len(p.Rounds), p.Err)
			continue
		}
		head := tr.Metrics[0].Key
		if p.Median[head] <= 0 {
			t.Errorf("%s: %s = %v, want > 0", tr.Name, head, p.Median[head])
		}
		if r := p.VsDirect[head]; r != 1 {
			t.Errorf("%s: direct vs direct = %v", tr.Name, r)
		}
	}
}

// TestSmokeSocat runs one proxy process end to end: start-up, a relay test
// with resource accounting, and several processes for range-100.
func TestSmokeSocat(t *testing.T) {
	testenv.RequireCommand(t, "socat")
	rep := smoke(t, "-peers", "direct,socat", "-tests", "tcp-rr,startup,range-100,udp-dgrams")
	byName := map[string]*testResult{}
	for _, tr := range rep.Tests {
		byName[tr.Name] = tr
	}
	so := byName["tcp-rr"].get("socat")
	if so == nil || len(so.Rounds) != 1 || so.Median["rr_s"] <= 0 || so.Median["peak_rss_mib"] <= 0 {
		t.Errorf("socat tcp-rr: %+v", so)
	}
	if so != nil && so.VsDirect["rr_s"] <= 0 {
		t.Errorf("socat has no ratio to direct: %+v", so.VsDirect)
	}
	st := byName["startup"].get("socat")
	if st == nil || st.Median["start_ms"] <= 0 || st.Median["idle_rss_mib"] <= 0 {
		t.Errorf("socat startup: %+v", st)
	}
	rg := byName["range-100"].get("socat")
	if rg == nil || rg.Median["procs"] != 3 || rg.Median["rss_mib"] <= 0 || rg.Median["idle_pss_mib"] <= 0 {
		t.Errorf("socat range: %+v", rg)
	}
	if d := byName["startup"].get("direct"); d == nil || d.Skip == "" {
		t.Errorf("direct was not skipped for startup: %+v", d)
	}
	if u := byName["udp-dgrams"].get("socat"); u == nil || u.Skip == "" {
		t.Errorf("socat was not skipped for UDP: %+v", u)
	}
}

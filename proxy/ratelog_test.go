package proxy

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/logging"
)

func TestRateLimitedAllow(t *testing.T) {
	r := RateLimited{Every: time.Second}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int64
	}{
		{0, true, 0},
		{10 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{time.Second, false, 0},
		{5 * time.Second, true, 1},
		{7 * time.Second, true, 0},
	}
	for i, s := range steps {
		ok, n := r.Allow(t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Fatalf("step %d at +%v: Allow = %v, %d; want %v, %d", i, s.at, ok, n, s.ok, s.suppressed)
		}
	}
}

func TestRateLimitedConcurrent(t *testing.T) {
	var r RateLimited // DefaultLogEvery: every call below is in one interval
	now := time.Now()
	const n = 8 * 500
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 8 {
		wg.Go(func() {
			for range 500 {
				if ok, _ := r.Allow(now); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("%d lines allowed in one interval, want 1", allowed)
	}
	ok, held := r.Allow(now.Add(DefaultLogEvery))
	if !ok || held != n-1 {
		t.Fatalf("next interval: Allow = %v, %d; want true, %d", ok, held, n-1)
	}
}

func TestRateLimitedLog(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.NewWriter(&buf, zapcore.DebugLevel, logging.FormatConsole)
	if err != nil {
		t.Fatal(err)
	}
	r := RateLimited{Every: time.Minute}
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		r.Log(log, zapcore.WarnLevel, t0.Add(time.Duration(i)*time.Second), "dial failed", logging.String("backend", "10.0.0.2:80"))
	}
	if !r.Log(log, zapcore.WarnLevel, t0.Add(time.Minute), "dial failed") {
		t.Fatal("line after the interval held back")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "suppressed") || !strings.Contains(lines[0], "backend") {
		t.Errorf("first line: %s", lines[0])
	}
	if !strings.Contains(lines[1], "suppressed") || !strings.Contains(lines[1], "4") {
		t.Errorf("second line does not count the 4 held back: %s", lines[1])
	}
}

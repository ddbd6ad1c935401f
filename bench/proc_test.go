package main

import (
	"errors"
	"os"
	"runtime"
	"testing"
)

const smapsSample = `55d4c8a6b000-7ffd0f1fe000 ---p 00000000 00:00 0                          [rollup]
Rss:                7292 kB
Pss:                3367 kB
Pss_Dirty:          1236 kB
Pss_Anon:           1180 kB
Pss_File:           2187 kB
Pss_Shmem:             0 kB
Shared_Clean:       4060 kB
Shared_Dirty:          0 kB
Private_Clean:      1996 kB
Private_Dirty:      1236 kB
Referenced:         7292 kB
Anonymous:          1180 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
`

func TestParseSmapsRollup(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Mem
		err  bool
	}{
		{"kernel", smapsSample, Mem{RSS: 7292 * 1024, PSS: 3367 * 1024}, false},
		{"minimal", "Rss: 1 kB\nPss: 2 kB\n", Mem{RSS: 1024, PSS: 2048}, false},
		{"no pss", "Rss: 1 kB\n", Mem{}, true},
		{"empty", "", Mem{}, true},
		{"bad unit", "Rss: 1 MB\nPss: 1 kB\n", Mem{}, true},
		{"bad number", "Rss: x kB\nPss: 1 kB\n", Mem{}, true},
		{"negative", "Rss: -1 kB\nPss: 1 kB\n", Mem{}, true},
		{"huge", "Rss: 99999999999999999999 kB\nPss: 1 kB\n", Mem{}, true},
	} {
		got, err := parseSmapsRollup([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if err != nil && !errors.Is(err, errFormat) {
			t.Errorf("%s: err = %v, want errFormat", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// utime 11 stime 22 cutime 33 cstime 44.
	const line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 3 0 12345 1000 200 18446744073709551615"
	for _, tc := range []struct {
		name string
		in   string
		want procStat
		err  bool
	}{
		{"odd comm", line, procStat{PPID: 1, Ticks: 110}, false},
		{"plain", "7 (sh) S 42 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0", procStat{PPID: 42, Ticks: 10}, false},
		{"no paren", "7 sh S 42", procStat{}, true},
		{"short", "7 (sh) S 42 7", procStat{}, true},
		{"bad ppid", "7 (sh) S x 7 7 0 -1 0 0 0 0 0 1 2 3 4 20", procStat{}, true},
		{"negative cutime", "7 (sh) S 1 7 7 0 -1 0 0 0 0 0 1 2 -3 4 20", procStat{}, true},
	} {
		got, err := parseStat([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func FuzzParseSmapsRollup(f *testing.F) {
	f.Add([]byte(smapsSample))
	f.Add([]byte("Rss: 1 kB\nPss: 2 kB\n"))
	f.Add([]byte("Rss:\nPss: kB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseSmapsRollup(b)
		if err != nil && m != (Mem{}) {
			t.Fatalf("error %v with non-zero result %+v", err, m)
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("7 (sh) S 42 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0"))
	f.Add([]byte("1 ()) S 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil && st != (procStat{}) {
			t.Fatalf("error %v with non-zero result %+v", err, st)
		}
	})
}

func TestTreeUsageSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process accounting reads /proc (Linux)")
	}
	m, ticks, err := treeUsage([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS == 0 || m.PSS == 0 || m.PSS > m.RSS {
		t.Errorf("own memory %+v: want 0 < Pss <= Rss", m)
	}
	_ = ticks // may be 0 for a fresh test binary
	// A pid that cannot exist contributes nothing.
	m, _, err = treeUsage([]int{1 << 30})
	if err != nil || m != (Mem{}) {
		t.Errorf("treeUsage(no such pid) = %+v, %v; want zero, nil", m, err)
	}
}

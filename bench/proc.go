package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Mem is the memory of one process or a sum over several, in bytes.
type Mem struct {
	RSS uint64 `json:"rss"`
	PSS uint64 `json:"pss"`
}

// Add returns the sum of m and o.
func (m Mem) Add(o Mem) Mem { return Mem{RSS: m.RSS + o.RSS, PSS: m.PSS + o.PSS} }

// usage is what a process tree holds at one moment.
type usage struct {
	Mem
	Ticks uint64 // CPU, as procStat.Ticks summed over the tree
	FDs   int    // open descriptors summed over the tree
	Procs int
}

// procStat is what the harness needs from /proc/PID/stat.
type procStat struct {
	PPID int
	// Ticks is utime+stime of the process (all its threads) plus
	// cutime+cstime of the children it has waited for, in clock ticks.
	Ticks uint64
}

// errFormat is wrapped by the parsers' errors.
var errFormat = errors.New("unexpected format")

// parseSmapsRollup reads the Rss and Pss lines of /proc/PID/smaps_rollup
// (values in kB) and returns them in bytes. Both lines must be present.
func parseSmapsRollup(b []byte) (Mem, error) {
	var m Mem
	var haveRSS, havePSS bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "Rss":
			dst, haveRSS = &m.RSS, true
		case "Pss":
			dst, havePSS = &m.PSS, true
		default:
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return Mem{}, fmt.Errorf("smaps_rollup line %q: %w", sc.Bytes(), errFormat)
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil || kb > 1<<50 {
			return Mem{}, fmt.Errorf("smaps_rollup line %q: %w", sc.Bytes(), errFormat)
		}
		*dst = kb * 1024
	}
	if !haveRSS || !havePSS {
		return Mem{}, fmt.Errorf("smaps_rollup without Rss and Pss: %w", errFormat)
	}
	return m, nil
}

// parseStat parses /proc/PID/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat without command name: %w", errFormat)
	}
	// After ')': state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := bytes.Fields(b[i+1:])
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat with %d fields after the name: %w", len(f), errFormat)
	}
	field := func(n int) string { return string(f[n-3]) }
	ppid, err := strconv.Atoi(field(4))
	if err != nil {
		return procStat{}, fmt.Errorf("stat ppid %q: %w", field(4), errFormat)
	}
	var ticks uint64
	for n := 14; n <= 17; n++ {
		// cutime and cstime are signed in the kernel's format; they are
		// never negative in practice, and a negative value is treated as
		// malformed.
		v, err := strconv.ParseUint(field(n), 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat field %d %q: %w", n, field(n), errFormat)
		}
		ticks += v
	}
	return procStat{PPID: ppid, Ticks: ticks}, nil
}

package main

import (
	"fmt"
	"os"
	"strconv"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; Linux fixes it at
// 100 for user space on every architecture.
const clockTicks = 100

// readStat reads /proc/PID/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// readMem reads /proc/PID/smaps_rollup.
func readMem(pid int) (Mem, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return Mem{}, err
	}
	m, err := parseSmapsRollup(b)
	if err != nil {
		return Mem{}, fmt.Errorf("/proc/%d/smaps_rollup: %w", pid, err)
	}
	return m, nil
}

// treeUsage sums memory and CPU ticks over roots and all their living
// descendants (nginx and haproxy workers, socat's per-connection children).
// Processes that vanish while being read are skipped.
func treeUsage(roots []int) (Mem, uint64, error) {
	u, err := treeRead(roots, false)
	return u.Mem, u.Ticks, err
}

// treeRead sums what treeUsage does over the tree, and counts its open
// descriptors (entries of /proc/PID/fd) when fds is set.
func treeRead(roots []int, fds bool) (usage, error) {
	children := map[int][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return usage{}, fmt.Errorf("list /proc: %w", err)
	}
	stats := map[int]procStat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		stats[pid] = st
		children[st.PPID] = append(children[st.PPID], pid)
	}
	var u usage
	seen := map[int]bool{}
	todo := append([]int(nil), roots...)
	for len(todo) > 0 {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		st, ok := stats[pid]
		if !ok {
			continue
		}
		u.Procs++
		u.Ticks += st.Ticks
		if m, err := readMem(pid); err == nil {
			u.Mem = u.Mem.Add(m)
		}
		if fds {
			if ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd"); err == nil {
				u.FDs += len(ents)
			}
		}
		todo = append(todo, children[pid]...)
	}
	return u, nil
}

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// proxyCPUs is the CPU affinity the proxies start with (-proxy-cpus); nil
// when they share every CPU with the load.
var proxyCPUs *unix.CPUSet

// splitCPUs gives the proxies the CPUs of list and this process (the load
// generator and the backends) the others it may use: every thread of the
// process moves to those, and the threads the runtime starts later inherit
// them. It fails unless both sides get at least one CPU.
func splitCPUs(list string) (proxy, load []int, err error) {
	want, err := parseCPUList(list)
	if err != nil {
		return nil, nil, err
	}
	var allowed, proxySet, loadSet unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return nil, nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	for _, c := range want {
		if !allowed.IsSet(c) {
			return nil, nil, fmt.Errorf("CPU %d is not one this process may use", c)
		}
		proxySet.Set(c)
	}
	for c := 0; c <= maxCPU; c++ {
		if allowed.IsSet(c) && !proxySet.IsSet(c) {
			loadSet.Set(c)
			load = append(load, c)
		}
	}
	if len(load) == 0 {
		return nil, nil, errors.New("no CPU would be left to the load generator")
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, nil, err
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if err := unix.SchedSetaffinity(tid, &loadSet); err != nil && err != unix.ESRCH {
			return nil, nil, fmt.Errorf("sched_setaffinity of thread %d: %w", tid, err)
		}
	}
	proxyCPUs = &proxySet
	return want, load, nil
}

// startProxy starts cmd, a proxy under test, on the CPUs of -proxy-cpus if
// set.
func startProxy(cmd *exec.Cmd) error {
	if proxyCPUs == nil {
		return cmd.Start()
	}
	return testenv.StartOnCPUs(cmd, proxyCPUs)
}

package main_test

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIdleNoWakeups: an idle hostproxy, TCP and UDP, after relaying a
// connection or datagram, sleeps: its threads are not woken (no context
// switches) while nothing arrives, as docker-proxy's are not. A relay
// thread that blocked outside the scheduler would be woken every 10ms by
// the runtime's preemption, about 240 times a second.
func TestIdleNoWakeups(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			lo := netip.MustParseAddr("127.0.0.1")
			backend := echo(t, proto, lo, 0, "backend:")
			var host netip.AddrPort
			p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
				host = netip.AddrPortFrom(lo, freePort(t, lo))
				return engineArgs(proto, host, backend), "0\n"
			})
			check(t, proto, host, "backend:")
			// Let the relay settle (the flow or connection ends, the
			// runtime's threads go to sleep), then count.
			const settle, window = time.Second, 2 * time.Second
			time.Sleep(settle)
			before := contextSwitches(t, p.cmd.Process.Pid)
			time.Sleep(window)
			after := contextSwitches(t, p.cmd.Process.Pid)
			if n := after - before; n > 10 {
				t.Errorf("idle for %v, hostproxy's threads were switched %d times, want at most 10", window, n)
			}
			p.stop(t, syscall.SIGTERM)
		})
	}
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of the process pid.
func contextSwitches(t *testing.T, pid int) int {
	t.Helper()
	sum := 0
	for _, b := range taskFiles(t, pid, "status") {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				sum += n
			}
		}
	}
	return sum
}

// taskFiles returns the contents of /proc/PID/task/TID/name for every thread
// of the process pid but those that ended while it read.
func taskFiles(t *testing.T, pid int, name string) [][]byte {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files [][]byte
	for _, task := range tasks {
		if b, err := os.ReadFile(filepath.Join(dir, task.Name(), name)); err == nil {
			files = append(files, b)
		}
	}
	return files
}

// TestStackGrownFirst: internal/stackgrow is the first package initialized
// after the runtime's own, before internal/godebug, whose init would
// otherwise make the main goroutine's first stack copy (GODEBUG=inittrace=1
// lists the inits in the order they run).
func TestStackGrownFirst(t *testing.T) {
	const grower, godebug = "github.com/hostproxy/hostproxy/internal/stackgrow", "internal/godebug"
	cmd := exec.Command(hostproxyBin(t), "-version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hostproxy -version: %v\n%s", err, out)
	}
	order := make(map[string]int)
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			if _, seen := order[f[1]]; !seen {
				order[f[1]] = len(order)
			}
		}
	}
	g, ok1 := order[grower]
	d, ok2 := order[godebug]
	if !ok1 || !ok2 || g > d {
		t.Errorf("init order %v: want %s before %s", order, grower, godebug)
	}
}

package main_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// epollWaitCalls are the system call numbers of epoll_wait and epoll_pwait,
// as /proc/PID/task/TID/syscall shows them.
var epollWaitCalls = map[string][]int{
	"amd64": {232, 281},
	"arm64": {22},
}

// TestOneCPULoop: started on one CPU, hostproxy relaying TCP gives itself
// a second P, so that its event loop owns a thread and waits in epoll_wait
// on its own epoll set (docs/design.md, "Loops"). With GOMAXPROCS=1 in its
// environment it keeps one P, and the loop parks in Go's netpoller, whose
// epoll set holds the loop's.
func TestOneCPULoop(t *testing.T) {
	calls := epollWaitCalls[runtime.GOARCH]
	testenv.Require(t, calls != nil, "no epoll_wait numbers for "+runtime.GOARCH)
	for _, tc := range []struct {
		name  string
		env   string
		owned bool
	}{
		{"default", "GOMAXPROCS=", true},
		{"GOMAXPROCS=1", "GOMAXPROCS=1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lo := netip.MustParseAddr("127.0.0.1")
			backend := echo(t, "tcp", lo, 0, "backend:")
			var host netip.AddrPort
			p := startOnFreePorts(t, spawn{env: []string{tc.env}, run: startOnOneCPU}, func() ([]string, string) {
				host = netip.AddrPortFrom(lo, freePort(t, lo))
				return engineArgs("tcp", host, backend), "0\n"
			})
			pid := p.cmd.Process.Pid
			if cpus := p.statusField(t, "Cpus_allowed_list"); strings.ContainsAny(cpus, ",-") {
				t.Fatalf("hostproxy may run on CPUs %s, want one", cpus)
			}
			// A thread's system call is readable with ptrace's access
			// (Yama's ptrace_scope=2 allows it to no user but root).
			_, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
			testenv.Require(t, err == nil, fmt.Sprintf("cannot read hostproxy's /proc/PID/syscall: %v", err))
			check(t, "tcp", host, "backend:")
			loopEp := epollHolding(t, pid, listenerInode(t, host))
			if tc.owned {
				waitFor(t, fmt.Sprintf("a thread blocked on the loop's epoll descriptor %d", loopEp), func() bool {
					return epollWaits(t, pid, calls)[loopEp]
				})
			} else {
				waitFor(t, fmt.Sprintf("a thread blocked on an epoll set that holds the loop's, %d", loopEp), func() bool {
					return anyEpollHolds(t, pid, epollWaits(t, pid, calls), loopEp)
				})
			}
			p.stop(t, syscall.SIGTERM)
		})
	}
}

// startOnOneCPU starts cmd on the first CPU this process may use.
func startOnOneCPU(cmd *exec.Cmd) error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	cpu := 0
	for !set.IsSet(cpu) {
		cpu++
	}
	set.Zero()
	set.Set(cpu)
	return testenv.StartOnCPUs(cmd, &set)
}

// listenerInode returns the inode of the IPv4 socket listening on addr,
// from /proc/net/tcp.
func listenerInode(t *testing.T, addr netip.AddrPort) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	ip := addr.Addr().As4()
	local := fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(ip[:]), addr.Port())
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == local && f[3] == "0A" {
			return f[9]
		}
	}
	t.Fatalf("no socket listening on %s in /proc/net/tcp", addr)
	return ""
}

// epollHolding returns the epoll descriptor of process pid that holds its
// socket with the given inode.
func epollHolding(t *testing.T, pid int, inode string) int {
	t.Helper()
	for _, ep := range epollFDs(t, pid) {
		for _, fd := range epollTargets(t, pid, ep) {
			if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); link == "socket:["+inode+"]" {
				return ep
			}
		}
	}
	t.Fatalf("no epoll descriptor of process %d holds socket %s", pid, inode)
	return -1
}

// epollFDs lists the epoll descriptors of process pid.
func epollFDs(t *testing.T, pid int) []int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var eps []int
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, e.Name())); link == "anon_inode:[eventpoll]" {
			fd, _ := strconv.Atoi(e.Name())
			eps = append(eps, fd)
		}
	}
	return eps
}

// epollTargets lists the descriptors registered in epoll descriptor ep of
// process pid (the "tfd" lines of its fdinfo).
func epollTargets(t *testing.T, pid, ep int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, ep))
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "tfd:" {
			fd, _ := strconv.Atoi(f[1])
			fds = append(fds, fd)
		}
	}
	return fds
}

// epollWaits returns the epoll descriptors that threads of process pid
// are blocked on in one of the system calls calls.
func epollWaits(t *testing.T, pid int, calls []int) map[int]bool {
	t.Helper()
	waits := map[int]bool{}
	for _, b := range taskFiles(t, pid, "syscall") {
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue // running
		}
		if nr, _ := strconv.Atoi(f[0]); slices.Contains(calls, nr) {
			if ep, err := strconv.ParseInt(strings.TrimPrefix(f[1], "0x"), 16, 32); err == nil {
				waits[int(ep)] = true
			}
		}
	}
	return waits
}

// anyEpollHolds reports whether one of the epoll descriptors in eps holds
// the descriptor fd of process pid.
func anyEpollHolds(t *testing.T, pid int, eps map[int]bool, fd int) bool {
	t.Helper()
	for ep := range eps {
		for _, target := range epollTargets(t, pid, ep) {
			if target == fd {
				return true
			}
		}
	}
	return false
}

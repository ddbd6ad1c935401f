package testenv

import (
	"fmt"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// StartOnCPUs starts cmd with the CPU affinity cpus. A child inherits the
// affinity of the thread that forks it, so cmd starts from a thread that
// takes cpus and ends with its goroutine: it is locked and never unlocked,
// and the runtime starts no thread from a locked one, so the affinity
// reaches no other goroutine.
func StartOnCPUs(cmd *exec.Cmd, cpus *unix.CPUSet) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.SchedSetaffinity(0, cpus); err != nil {
			errc <- fmt.Errorf("sched_setaffinity: %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

//go:build hostproxy_testtrigger && linux

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// triggerEnv makes a test binary (built with -tags hostproxy_testtrigger)
// call a system call outside the seccomp allow-list right after the drop:
// the filter must kill the process before it reports ready.
const triggerEnv = "HOSTPROXY_TEST_FORBIDDEN_SYSCALL"

func init() {
	afterDrop = func() {
		if os.Getenv(triggerEnv) != "1" {
			return
		}
		// mount(2) with no arguments: EFAULT or EPERM if it were allowed.
		_, _, e := unix.Syscall6(unix.SYS_MOUNT, 0, 0, 0, 0, 0, 0)
		os.Stderr.WriteString("hostproxy: mount(2) returned " + e.Error() + " instead of killing the process\n")
		os.Exit(3)
	}
}

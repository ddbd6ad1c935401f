//go:build linux && !hostproxy_seccomplog

package privilege

import "golang.org/x/sys/unix"

// outsideAction is what the filter does with a system call outside the
// list: kill the whole process.
const outsideAction = unix.SECCOMP_RET_KILL_PROCESS

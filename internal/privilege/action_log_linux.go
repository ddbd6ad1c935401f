//go:build linux && hostproxy_seccomplog

package privilege

import "golang.org/x/sys/unix"

// outsideAction, in a binary built with -tags hostproxy_seccomplog, lets a
// system call outside the list through and has the kernel log it (audit
// type 1326 in the kernel log, "syscall=N"): how the list is checked
// against a whole test run (docs/security.md).
const outsideAction = unix.SECCOMP_RET_LOG

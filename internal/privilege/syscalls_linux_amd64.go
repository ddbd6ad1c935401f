package privilege

import "golang.org/x/sys/unix"

// auditArch is the architecture the filter accepts.
const auditArch = unix.AUDIT_ARCH_X86_64

// archAllowed are the amd64 system calls that other architectures only
// have under another name: the runtime's epoll_wait and arch_prctl, and the
// path calls the standard library makes without *at on amd64.
var archAllowed = []uint32{
	unix.SYS_EPOLL_WAIT, unix.SYS_ARCH_PRCTL, unix.SYS_POLL, unix.SYS_ACCEPT,
	unix.SYS_OPEN, unix.SYS_RENAME, unix.SYS_UNLINK, unix.SYS_STAT, unix.SYS_LSTAT,
}

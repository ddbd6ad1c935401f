//go:build amd64 || arm64

package privilege

import "golang.org/x/sys/unix"

// allowed are the system calls, on every architecture, that the process
// makes once it is ready. docs/security.md gives the reason for each group;
// the groups follow straces of every relay and of the runtime.
var allowed = []uint32{
	// The Go runtime: memory, threads, scheduling, time, signals.
	unix.SYS_MMAP, unix.SYS_MUNMAP, unix.SYS_MPROTECT, unix.SYS_MADVISE, unix.SYS_MREMAP, unix.SYS_BRK,
	unix.SYS_FUTEX, unix.SYS_SET_ROBUST_LIST, unix.SYS_RSEQ, unix.SYS_SCHED_YIELD, unix.SYS_SCHED_GETAFFINITY,
	unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_CLOCK_GETTIME, unix.SYS_GETTIMEOFDAY,
	unix.SYS_RT_SIGRETURN, unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_SIGALTSTACK,
	unix.SYS_RESTART_SYSCALL, unix.SYS_GETPID, unix.SYS_GETTID, unix.SYS_GETRANDOM,
	unix.SYS_EXIT, unix.SYS_EXIT_GROUP,
	// Harmless questions about the process itself.
	unix.SYS_GETUID, unix.SYS_GETEUID, unix.SYS_GETGID, unix.SYS_GETEGID, unix.SYS_GETPPID, unix.SYS_UNAME,

	// The network poller and the relays' own epoll loops.
	unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2,
	unix.SYS_EVENTFD2, unix.SYS_PPOLL,
	// Descriptors: reading, writing (stderr, the journal, metrics files),
	// closing, flags, splice pipes; pread64: the runtime re-reads the cgroup
	// CPU limit (cpu.max) it keeps open.
	unix.SYS_READ, unix.SYS_WRITE, unix.SYS_PREAD64, unix.SYS_READV, unix.SYS_WRITEV, unix.SYS_CLOSE, unix.SYS_FCNTL,
	unix.SYS_PIPE2, unix.SYS_SPLICE, unix.SYS_FSTAT, unix.SYS_NEWFSTATAT, unix.SYS_STATX, unix.SYS_LSEEK,

	// Sockets: accepting clients, dialling backends, UDP flows, SCTP.
	unix.SYS_SOCKET, unix.SYS_CONNECT, unix.SYS_BIND, unix.SYS_ACCEPT4,
	unix.SYS_GETSOCKOPT, unix.SYS_SETSOCKOPT, unix.SYS_GETSOCKNAME, unix.SYS_GETPEERNAME, unix.SYS_SHUTDOWN,
	unix.SYS_SENDTO, unix.SYS_RECVFROM, unix.SYS_SENDMSG, unix.SYS_RECVMSG, unix.SYS_SENDMMSG, unix.SYS_RECVMMSG,

	// Files: the metrics file replaced atomically (create, write, sync,
	// chmod, rename; remove on failure) and reads of /proc/self (files and
	// directories: a process collector counts /proc/self/fd).
	unix.SYS_OPENAT, unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_FCHMOD, unix.SYS_FCHMODAT, unix.SYS_RENAMEAT,
	unix.SYS_RENAMEAT2, unix.SYS_UNLINKAT, unix.SYS_FTRUNCATE, unix.SYS_GETDENTS64,
	// The journal's native protocol passes an entry too big for one
	// datagram as a sealed memfd (SCM_RIGHTS over sendmsg).
	unix.SYS_MEMFD_CREATE,
}

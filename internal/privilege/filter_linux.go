package privilege

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets in struct seccomp_data: nr (int), arch (u32), instruction pointer
// (u64), args (6 x u64). An argument's low 32 bits are at its offset on a
// little-endian machine (amd64, arm64).
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
)

// cloneNamespaces are the clone flags that create namespaces; a thread of
// the relay never needs one (a new user namespace would give back
// capabilities inside it).
const cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// argRule allows a system call only when (arg0 & mask) == want, comparing
// the argument's low 32 bits, which is all the kernel reads of these.
type argRule struct {
	nr         uint32
	mask, want uint32
}

// rules returns the system calls the filter allows outright, the ones it
// allows on a condition of their first argument, and the ones it fails with
// ENOSYS instead of killing.
func rules(pid int) (allow []uint32, cond []argRule, enosys []uint32) {
	allow = make([]uint32, 0, len(allowed)+len(archAllowed))
	allow = append(allow, allowed...)
	allow = append(allow, archAllowed...)
	cond = []argRule{
		// New threads only: no new process (fork), no namespace.
		{nr: unix.SYS_CLONE, mask: cloneNamespaces | unix.CLONE_THREAD, want: unix.CLONE_THREAD},
		// Signals to this process only (the runtime re-raises a fatal
		// signal, preempts its threads).
		{nr: unix.SYS_KILL, mask: ^uint32(0), want: uint32(pid)},
		{nr: unix.SYS_TGKILL, mask: ^uint32(0), want: uint32(pid)},
	}
	// clone3 passes its flags in memory, out of the filter's reach; glibc
	// falls back to clone on ENOSYS (the Go runtime uses clone).
	enosys = []uint32{unix.SYS_CLONE3}
	return allow, cond, enosys
}

// Where a jump of the program goes: the next instruction, or one of the
// blocks at its end (toCond+i is the test of cond[i]'s argument).
const (
	toNext = iota
	toKill
	toAllow
	toBadArch
	toENOSYS
	toCond
)

// maxCond bounds the argument rules of the filter.
const maxCond = 8

// Filter returns the seccomp program Drop installs for process pid: it
// kills the process on a foreign architecture or on any system call that
// rules does not allow. The numbers are searched as a balanced binary tree
// (about 7 comparisons for any call) rather than one by one (up to 90).
//
// It is assembled in three allocations, sized to classes the rest of the
// start-up uses anyway (352 bytes, 512 and 2 KiB for today's lists), so
// that the idle process keeps no heap span for the filter alone.
func Filter(pid int) ([]unix.SockFilter, int, error) {
	if auditArch == 0 {
		return nil, 0, fmt.Errorf("seccomp filter: architecture %s is not supported (use -seccomp=false)", runtime.GOARCH)
	}
	allow, cond, enosys := rules(pid)
	if len(cond) > maxCond {
		return nil, 0, fmt.Errorf("seccomp filter: %d argument rules, at most %d", len(cond), maxCond)
	}
	// Each entry is a number and its target, nr<<8 | target; a number
	// listed twice goes to the later list (cond over enosys over allow).
	nrs := make([]uint32, 0, max(128, len(allow)+len(enosys)+len(cond)))
	for _, nr := range allow {
		nrs = append(nrs, nr<<8|toAllow)
	}
	for _, nr := range enosys {
		nrs = append(nrs, nr<<8|toENOSYS)
	}
	for i, c := range cond {
		nrs = append(nrs, c.nr<<8|uint32(toCond+i))
	}
	for _, e := range nrs {
		if e>>8 >= 1<<24 {
			return nil, 0, fmt.Errorf("seccomp filter: system call number %#x out of range", e>>8)
		}
	}
	nrs = sortTargets(nrs)

	p := program{insns: make([]unix.SockFilter, 0, max(256, 2*len(nrs)+3*len(cond)+8))}
	p.emit(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch)
	p.jumpEq(auditArch, toNext, toBadArch)
	p.emit(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr)
	if err := p.tree(nrs); err != nil {
		return nil, 0, err
	}
	var at [toCond + maxCond]int // where each target begins
	for i, c := range cond {
		at[toCond+i] = len(p.insns)
		p.emit(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg0)
		if c.mask != ^uint32(0) {
			p.emit(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, c.mask)
		}
		p.jumpEq(c.want, toAllow, toKill)
	}
	for _, r := range [...]struct {
		to  int
		ret uint32
	}{
		{toKill, outsideAction},
		{toAllow, unix.SECCOMP_RET_ALLOW},
		{toBadArch, unix.SECCOMP_RET_KILL_PROCESS},
		{toENOSYS, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
	} {
		at[r.to] = len(p.insns)
		p.emit(unix.BPF_RET|unix.BPF_K, r.ret)
	}
	if err := p.resolve(&at); err != nil {
		return nil, 0, err
	}
	return p.insns, len(allow) + len(cond), nil
}

// sortTargets sorts the entries of Filter (nr<<8 | target) by number and
// keeps, of a number listed more than once, the last target listed. It is
// an insertion sort: a hundred entries, once.
func sortTargets(e []uint32) []uint32 {
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j-1]>>8 > e[j]>>8; j-- {
			e[j-1], e[j] = e[j], e[j-1]
		}
	}
	// Equal numbers are still in the order listed.
	out := e[:0]
	for i, v := range e {
		if i+1 < len(e) && e[i+1]>>8 == v>>8 {
			continue
		}
		out = append(out, v)
	}
	return out
}

// tree emits the search of the system call number (in A) among the sorted
// entries, jumping to each one's target, or to toKill when it is none of
// them.
func (p *program) tree(nrs []uint32) error {
	if len(nrs) <= 4 {
		for _, e := range nrs {
			p.jumpEq(uint32(e>>8), int(e&0xff), toNext)
		}
		p.jump(toKill)
		return nil
	}
	mid := len(nrs) / 2
	ge := len(p.insns)
	p.emit(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, uint32(nrs[mid]>>8))
	if err := p.tree(nrs[:mid]); err != nil {
		return err
	}
	skip := len(p.insns) - ge - 1
	if skip > 255 {
		return fmt.Errorf("seccomp filter: a jump over %d instructions", skip)
	}
	p.insns[ge].Jt = uint8(skip)
	return p.tree(nrs[mid:])
}

// installFilter installs Filter on every thread of the process (TSYNC),
// which also gives every thread no_new_privs. It returns how many system
// calls the filter allows.
func installFilter() (int, error) {
	raw, n, err := Filter(os.Getpid())
	if err != nil {
		return 0, err
	}
	prog := unix.SockFprog{Len: uint16(len(raw)), Filter: &raw[0]}
	// The filter needs no_new_privs on the calling thread; TSYNC then sets
	// it on every thread along with the filter. The goroutine may move to
	// another thread between the two calls (EACCES, that thread has no
	// no_new_privs yet): then both are made again there.
	var r uintptr
	var e syscall.Errno
	for range 8 {
		if _, _, e = unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
			return 0, fmt.Errorf("drop privileges: set no_new_privs: %w", e)
		}
		r, _, e = unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
			uintptr(unsafe.Pointer(&prog)))
		if e != unix.EACCES {
			break
		}
	}
	runtime.KeepAlive(raw)
	switch {
	case e != 0:
		return 0, fmt.Errorf("install the seccomp filter: %w", e)
	case r != 0:
		return 0, fmt.Errorf("install the seccomp filter: thread %d cannot take it (it has another filter)", r)
	}
	return n, nil
}

// program is a classic BPF program under construction. Until resolve, a
// jump to one of the blocks at the end holds the block's target (toKill,
// ...) in place of its offset: in Jt and Jf of a JEQ (toNext, 0, is the
// next instruction either way) and in K of a JA. A JGE of the tree holds
// its offset already.
type program struct {
	insns []unix.SockFilter
}

func (p *program) emit(code uint16, k uint32) {
	p.insns = append(p.insns, unix.SockFilter{Code: code, K: k})
}

// jumpEq emits "if A == val goto yes else goto no".
func (p *program) jumpEq(val uint32, yes, no int) {
	p.insns = append(p.insns, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: uint8(yes), Jf: uint8(no), K: val})
}

// jump emits "goto to".
func (p *program) jump(to int) {
	p.emit(unix.BPF_JMP|unix.BPF_JA, uint32(to))
}

// resolve replaces the target of every jump to a block with its offset,
// the block beginning at at[target].
func (p *program) resolve(at *[toCond + maxCond]int) error {
	if len(p.insns) > unix.BPF_MAXINSNS {
		return fmt.Errorf("seccomp filter: %d instructions, more than %d", len(p.insns), unix.BPF_MAXINSNS)
	}
	offset := func(i, t int, limit int) (int, error) {
		if t == toNext {
			return 0, nil
		}
		d := at[t] - i - 1
		if at[t] == 0 || d < 0 || d > limit {
			return 0, fmt.Errorf("seccomp filter: a jump from %d to %d", i, at[t])
		}
		return d, nil
	}
	for i := range p.insns {
		in := &p.insns[i]
		switch in.Code {
		case unix.BPF_JMP | unix.BPF_JA:
			d, err := offset(i, int(in.K), len(p.insns))
			if err != nil {
				return err
			}
			in.K = uint32(d)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			dt, err1 := offset(i, int(in.Jt), 255)
			df, err2 := offset(i, int(in.Jf), 255)
			if err1 != nil {
				return err1
			}
			if err2 != nil {
				return err2
			}
			in.Jt, in.Jf = uint8(dt), uint8(df)
		}
	}
	return nil
}

package privilege

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/net/bpf"
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

// Filter returns the seccomp program Drop installs for process pid: it
// kills the process on a foreign architecture or on any system call that
// rules does not allow. The numbers are searched as a balanced binary tree
// (about 7 comparisons for any call) rather than one by one (up to 90).
func Filter(pid int) ([]bpf.RawInstruction, int, error) {
	if auditArch == 0 {
		return nil, 0, fmt.Errorf("seccomp filter: architecture %s is not supported (use -seccomp=false)", runtime.GOARCH)
	}
	allow, cond, enosys := rules(pid)
	targets := map[uint32]string{}
	for _, nr := range allow {
		targets[nr] = "allow"
	}
	for _, nr := range enosys {
		targets[nr] = "enosys"
	}
	for i, c := range cond {
		targets[c.nr] = fmt.Sprintf("cond%d", i)
	}
	nrs := make([]uint32, 0, len(targets))
	for nr := range targets {
		nrs = append(nrs, nr)
	}
	slices.Sort(nrs)

	var p program
	p.emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	p.jumpIf(auditArch, "", "badarch")
	p.emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
	p.tree(nrs, targets)
	for i, c := range cond {
		p.label(fmt.Sprintf("cond%d", i))
		p.emit(bpf.LoadAbsolute{Off: offArg0, Size: 4})
		if c.mask != ^uint32(0) {
			p.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: c.mask})
		}
		p.jumpIf(c.want, "allow", "kill")
	}
	p.label("kill")
	p.emit(bpf.RetConstant{Val: outsideAction})
	p.label("allow")
	p.emit(bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})
	p.label("badarch")
	p.emit(bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS})
	p.label("enosys")
	p.emit(bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)})
	raw, err := p.assemble()
	if err != nil {
		return nil, 0, fmt.Errorf("seccomp filter: %w", err)
	}
	return raw, len(allow) + len(cond), nil
}

// tree emits the search of the system call number (in A) among the sorted
// nrs, jumping to targets[nr], or to "kill" when it is none of them.
func (p *program) tree(nrs []uint32, targets map[uint32]string) {
	if len(nrs) <= 4 {
		for _, nr := range nrs {
			p.jumpIf(nr, targets[nr], "")
		}
		p.jump("kill")
		return
	}
	mid := len(nrs) / 2
	right := fmt.Sprintf("ge%d", nrs[mid])
	p.jumpGE(nrs[mid], right)
	p.tree(nrs[:mid], targets)
	p.label(right)
	p.tree(nrs[mid:], targets)
}

// installFilter installs Filter on every thread of the process (TSYNC),
// which also gives every thread no_new_privs. It returns how many system
// calls the filter allows.
func installFilter() (int, error) {
	raw, n, err := Filter(os.Getpid())
	if err != nil {
		return 0, err
	}
	prog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(unsafe.Pointer(&raw[0]))}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(raw)
	switch {
	case e != 0:
		return 0, fmt.Errorf("install the seccomp filter: %w", e)
	case r != 0:
		return 0, fmt.Errorf("install the seccomp filter: thread %d cannot take it (it has another filter)", r)
	}
	return n, nil
}

// program is a classic BPF program under construction, with forward jumps
// to labels resolved by assemble.
type program struct {
	insns  []bpf.Instruction
	jumps  map[int][2]string // instruction index: true and false targets ("" for the next one)
	gotos  []int             // instruction indexes of unconditional jumps, to gotoTo
	gotoTo []string
	labels map[string]int
}

func (p *program) emit(in bpf.Instruction) { p.insns = append(p.insns, in) }

func (p *program) label(name string) {
	if p.labels == nil {
		p.labels = map[string]int{}
	}
	p.labels[name] = len(p.insns)
}

// jumpGE emits "if A >= val goto yes".
func (p *program) jumpGE(val uint32, yes string) {
	if p.jumps == nil {
		p.jumps = map[int][2]string{}
	}
	p.jumps[len(p.insns)] = [2]string{yes, ""}
	p.emit(bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: val})
}

// jump emits "goto to".
func (p *program) jump(to string) {
	p.gotos = append(p.gotos, len(p.insns))
	p.gotoTo = append(p.gotoTo, to)
	p.emit(bpf.Jump{})
}

// jumpIf emits "if A == val goto yes else goto no".
func (p *program) jumpIf(val uint32, yes, no string) {
	if p.jumps == nil {
		p.jumps = map[int][2]string{}
	}
	p.jumps[len(p.insns)] = [2]string{yes, no}
	p.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: val})
}

func (p *program) assemble() ([]bpf.RawInstruction, error) {
	skip := func(from int, to string) (uint8, error) {
		if to == "" {
			return 0, nil
		}
		at, ok := p.labels[to]
		if !ok {
			return 0, fmt.Errorf("no label %s", to)
		}
		d := at - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("jump from %d to %s (%d) out of range", from, to, at)
		}
		return uint8(d), nil
	}
	for k, i := range p.gotos {
		at, ok := p.labels[p.gotoTo[k]]
		if !ok || at <= i {
			return nil, fmt.Errorf("bad jump from %d to %s", i, p.gotoTo[k])
		}
		p.insns[i] = bpf.Jump{Skip: uint32(at - i - 1)}
	}
	for i, t := range p.jumps {
		j := p.insns[i].(bpf.JumpIf)
		var err1, err2 error
		j.SkipTrue, err1 = skip(i, t[0])
		j.SkipFalse, err2 = skip(i, t[1])
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		p.insns[i] = j
	}
	if len(p.insns) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("%d instructions, more than %d", len(p.insns), unix.BPF_MAXINSNS)
	}
	return bpf.Assemble(p.insns)
}

package privilege

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func TestFindAccount(t *testing.T) {
	const passwd = "root:x:0:0:root:/root:/bin/bash\n" +
		"broken:x:uid:1::/:\n" +
		"nobody:x:65534:65533:nobody:/nonexistent:/usr/sbin/nologin\n"
	for _, tt := range []struct {
		name     string
		uid, gid int
		err      string
	}{
		{name: "nobody", uid: 65534, gid: 65533},
		{name: "root", uid: 0, gid: 0},
		{name: "broken", err: `user "broken": malformed /etc/passwd entry`},
		{name: "nob", err: `user "nob": not in /etc/passwd`},
	} {
		a, err := findAccount(strings.NewReader(passwd), tt.name)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %+v, %v; want an error containing %q", tt.name, a, err, tt.err)
			}
			continue
		}
		if err != nil || a.uid != tt.uid || a.gid != tt.gid {
			t.Errorf("%s: %+v, %v; want uid %d gid %d", tt.name, a, err, tt.uid, tt.gid)
		}
	}
}

func TestNumericAccount(t *testing.T) {
	for _, tt := range []struct {
		in       string
		uid, gid int
		ok       bool
	}{
		{"65534", 65534, 65534, true},
		{"1000:100", 1000, 100, true},
		{"0", 0, 0, true},
		{"4294967295", 0, 0, false}, // -1: "unchanged" to setresuid
		{"1000:", 0, 0, false},
		{"nobody", 0, 0, false},
		{"-1", 0, 0, false},
	} {
		a, ok := numericAccount(tt.in)
		if ok != tt.ok || ok && (a.uid != tt.uid || a.gid != tt.gid) {
			t.Errorf("numericAccount(%q) = %+v, %v; want %d:%d, %v", tt.in, a, ok, tt.uid, tt.gid, tt.ok)
		}
	}
}

func TestIDMapped(t *testing.T) {
	const rootless = "         0       1000          1\n         1     100000      65536\n"
	for _, tt := range []struct {
		m    string
		id   int
		want bool
	}{
		{"         0          0 4294967295\n", 65534, true}, // the initial namespace
		{rootless, 0, true},
		{rootless, 65536, true},
		{rootless, 65537, false}, // nobody's 65534 is mapped here, but not beyond the range
		{"", 0, false},
	} {
		if got := idMapped([]byte(tt.m), tt.id); got != tt.want {
			t.Errorf("idMapped(%q, %d) = %v, want %v", tt.m, tt.id, got, tt.want)
		}
	}
}

// seccompData is struct seccomp_data as the kernel's filter reads it on a
// little-endian machine, laid out for x/net/bpf's interpreter, whose loads
// are big-endian: each 32-bit word big-endian, an argument's low word
// first.
func seccompData(arch, nr uint32, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	binary.BigEndian.PutUint32(b[16:], uint32(arg0))
	binary.BigEndian.PutUint32(b[20:], uint32(arg0>>32))
	return b
}

// TestFilter runs the program in x/net/bpf's interpreter over seccomp_data
// records.
func TestFilter(t *testing.T) {
	if auditArch == 0 {
		t.Skip("no filter for this architecture")
	}
	const pid = 4242
	prog, n, err := Filter(pid)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]bpf.RawInstruction, len(prog))
	for i, in := range prog {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the program does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d instructions, %d system calls allowed", len(raw), n)
	const (
		allow = unix.SECCOMP_RET_ALLOW
		kill  = unix.SECCOMP_RET_KILL_PROCESS
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	thread := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD |
		unix.CLONE_SYSVSEM | unix.CLONE_SETTLS)
	for _, tt := range []struct {
		name string
		arch uint32
		nr   uint32
		arg0 uint64
		want uint32
	}{
		{"futex", auditArch, unix.SYS_FUTEX, 0, allow},
		{"accept4", auditArch, unix.SYS_ACCEPT4, 0, allow},
		{"recvmmsg", auditArch, unix.SYS_RECVMMSG, 0, allow},
		{"splice", auditArch, unix.SYS_SPLICE, 0, allow},
		{"futex, another architecture", auditArch ^ 1, unix.SYS_FUTEX, 0, kill},
		{"mount", auditArch, unix.SYS_MOUNT, 0, kill},
		{"ptrace", auditArch, unix.SYS_PTRACE, 0, kill},
		{"execve", auditArch, unix.SYS_EXECVE, 0, kill},
		{"setuid", auditArch, unix.SYS_SETUID, 0, kill},
		{"unshare", auditArch, unix.SYS_UNSHARE, 0, kill},
		{"prctl", auditArch, unix.SYS_PRCTL, 0, kill},
		{"clone a thread", auditArch, unix.SYS_CLONE, thread, allow},
		{"clone a thread, high bits set", auditArch, unix.SYS_CLONE, thread | 1<<40, allow},
		{"clone a process", auditArch, unix.SYS_CLONE, unix.CLONE_VM | uint64(unix.SIGCHLD), kill},
		{"clone into a user namespace", auditArch, unix.SYS_CLONE, thread | unix.CLONE_NEWUSER, kill},
		{"clone3", auditArch, unix.SYS_CLONE3, 0, nosys},
		{"kill self", auditArch, unix.SYS_KILL, pid, allow},
		{"kill another", auditArch, unix.SYS_KILL, 1, kill},
		{"tgkill self", auditArch, unix.SYS_TGKILL, pid, allow},
		{"tgkill another", auditArch, unix.SYS_TGKILL, pid + 1, kill},
		{"x32 futex", auditArch, unix.SYS_FUTEX | 0x40000000, 0, kill},
	} {
		got, err := vm.Run(seccompData(tt.arch, tt.nr, tt.arg0))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if uint32(got) != tt.want {
			t.Errorf("%s: %#x, want %#x", tt.name, got, tt.want)
		}
	}

	// Every number the tree might mis-route: each one of the list is
	// allowed, every other one kills.
	allowed, cond, enosys := rules(pid)
	want := map[uint32]uint32{}
	for _, nr := range allowed {
		want[nr] = allow
	}
	for _, nr := range enosys {
		want[nr] = nosys
	}
	for _, c := range cond {
		want[c.nr] = allow // with the argument that passes
	}
	for nr := uint32(0); nr < 1024; nr++ {
		w, ok := want[nr]
		if !ok {
			w = kill
		}
		arg := uint64(0)
		for _, c := range cond {
			if c.nr == nr {
				arg = uint64(c.want)
			}
		}
		got, err := vm.Run(seccompData(auditArch, nr, arg))
		if err != nil {
			t.Fatalf("system call %d: %v", nr, err)
		}
		if uint32(got) != w {
			t.Errorf("system call %d: %#x, want %#x", nr, got, w)
		}
	}
}

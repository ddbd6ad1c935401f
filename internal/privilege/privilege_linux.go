package privilege

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// capNetAdmin is CAP_NET_ADMIN's bit.
const capNetAdmin = 12

// capSetPCAP is CAP_SETPCAP's bit: needed to shrink the bounding set.
const capSetPCAP = 8

// Drop gives up the privileges opts does not keep, on every thread, and
// installs the seccomp filter when opts.Seccomp is set.
//
// Capabilities, the bounding set, keep-caps and no_new_privs are per-thread
// in the kernel; Drop changes them on every thread of the Go runtime with
// syscall.AllThreadsSyscall, which stops the world and signals every other
// thread, once per call. Drop makes only the calls that change something:
// it drops from the bounding set only the capabilities in it, clears the
// groups only when there are some, and leaves the capability sets alone
// when leaving uid 0 has emptied them already (the kernel also empties the
// ambient set of a thread whose inheritable or permitted set is empty).
// With the filter, no_new_privs is set on the calling thread and the
// filter's TSYNC sets it on every other. Drop locks no thread: every thread
// holds the same credentials throughout, so reading them on whichever
// thread runs the goroutine reads them all.
//
// AllThreadsSyscall is refused in a binary that links cgo; there Drop
// relies on what is process-wide anyway: glibc applies setgroups,
// setresgid and setresuid to every thread, and the kernel clears the
// permitted, effective and ambient sets of each thread as its uid leaves 0;
// the filter's TSYNC gives every thread no_new_privs and the filter. The
// bounding set then shrinks on the calling thread only (execve, the only
// call that consults it, is outside the filter). Where that would leave a
// capability on some thread (KeepNetAdmin, or root keeping uid 0), Drop
// fails in a cgo binary rather than pretend.
func Drop(opts Options) (Result, error) {
	cgo := !allThreadsWorks()
	if cgo {
		// Every per-thread step of the fallback runs on this one thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}

	res := Result{UID: os.Geteuid(), GID: os.Getegid()}
	caps, err := capGet()
	if err != nil {
		return res, err
	}
	held := caps[0].Effective|caps[0].Permitted|caps[1].Effective|caps[1].Permitted != 0
	root := os.Geteuid() == 0

	var target *account
	if root && opts.User != "" {
		a, why := lookupAccount(opts.User)
		if why != "" {
			res.Kept = why
		} else {
			target = a
		}
	}
	leavesRoot := target != nil && target.uid != 0
	if cgo && held && (opts.KeepNetAdmin || !leavesRoot) {
		what := "keeping CAP_NET_ADMIN"
		if !opts.KeepNetAdmin {
			what = "clearing the capabilities without leaving uid 0"
		}
		return res, fmt.Errorf("drop privileges: %s needs every thread, which a cgo binary cannot reach: build with CGO_ENABLED=0", what)
	}

	if opts.KeepNetAdmin && leavesRoot {
		// Without keep-caps the switch below empties the permitted set.
		if err := eachThread(cgo, unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); err != nil {
			return res, fmt.Errorf("drop privileges: set keep-caps: %w", err)
		}
	}
	// The bounding set first, while CAP_SETPCAP is still effective.
	if capHas(caps, capSetPCAP, true) {
		if res.Bounding, err = clearBoundingSet(cgo); err != nil {
			return res, err
		}
	}
	if root {
		if err := clearGroups(); err != nil {
			return res, err
		}
	}
	if target != nil {
		if err := switchUser(target); err != nil {
			return res, err
		}
		res.UID, res.GID, res.Switched = target.uid, target.gid, true
	}
	var keep uint32
	if opts.KeepNetAdmin && held && capHas(caps, capNetAdmin, false) {
		keep = 1 << capNetAdmin
	}
	// Leaving uid 0 without keep-caps has emptied the permitted and
	// effective sets; a process that holds no capability at all (a systemd
	// unit's DynamicUser, say) has nothing to clear either, and skips
	// capset, which a unit's SystemCallFilter may forbid.
	now, err := capGet()
	if err != nil {
		return res, err
	}
	if now[0].Effective != keep || now[0].Permitted != keep || now[0].Inheritable != 0 ||
		now[1].Effective|now[1].Permitted|now[1].Inheritable != 0 {
		if err := capSetAll(cgo, keep); err != nil {
			return res, err
		}
	}
	// Every thread's inheritable set is empty now, and the kernel keeps
	// the ambient set within it: there is no ambient capability left.
	if opts.KeepNetAdmin && leavesRoot {
		if err := eachThread(cgo, unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0); err != nil {
			return res, fmt.Errorf("drop privileges: clear keep-caps: %w", err)
		}
	}
	if !opts.Seccomp {
		if err := eachThread(cgo, unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
			return res, fmt.Errorf("drop privileges: set no_new_privs: %w", err)
		}
		return res, nil
	}
	n, err := installFilter()
	if err != nil {
		return res, err
	}
	res.Filter = n
	return res, nil
}

// allThreadsWorks reports whether syscall.AllThreadsSyscall is available
// (it is not in a binary that links cgo). The probe, fcntl on descriptor
// -1, fails on the calling thread, so no other thread is signalled.
func allThreadsWorks() bool {
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_FCNTL, ^uintptr(0), unix.F_GETFD, 0)
	return e != syscall.ENOTSUP
}

// eachThread makes a system call on every thread, or, in a cgo binary, on
// the calling (locked) thread only.
func eachThread(cgo bool, trap, a1, a2, a3 uintptr) error {
	var e syscall.Errno
	if cgo {
		_, _, e = syscall.RawSyscall(trap, a1, a2, a3)
	} else {
		_, _, e = syscall.AllThreadsSyscall(trap, a1, a2, a3)
	}
	if e != 0 {
		return e
	}
	return nil
}

// clearBoundingSet drops every capability of the bounding set that is in
// it (a service manager or a container runtime often leaves only a few),
// and returns how many it dropped.
func clearBoundingSet(cgo bool) (int, error) {
	last, err := capLastCap()
	if err != nil {
		return 0, err
	}
	n := 0
	for c := 0; c <= last; c++ {
		if in, _, e := syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uintptr(c), 0); e == 0 && in == 0 {
			continue
		}
		if err := eachThread(cgo, unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); err != nil {
			return n, fmt.Errorf("drop privileges: drop capability %d from the bounding set: %w", c, err)
		}
		n++
	}
	return n, nil
}

// clearGroups empties the supplementary groups of every thread (the
// syscall package applies setgroups to all of them, with or without cgo).
func clearGroups() error {
	if n, _, e := syscall.RawSyscall(unix.SYS_GETGROUPS, 0, 0, 0); e == 0 && n == 0 {
		return nil // none to clear
	}
	if !setgroupsAllowed() {
		return nil
	}
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("drop privileges: clear the supplementary groups: %w", err)
	}
	return nil
}

// switchUser switches the real, effective and saved ids to a's, on every
// thread (as clearGroups).
func switchUser(a *account) error {
	if err := syscall.Setresgid(a.gid, a.gid, a.gid); err != nil {
		return fmt.Errorf("drop privileges: switch to group %d of user %q: %w", a.gid, a.name, err)
	}
	if err := syscall.Setresuid(a.uid, a.uid, a.uid); err != nil {
		return fmt.Errorf("drop privileges: switch to user %q (uid %d): %w", a.name, a.uid, err)
	}
	return nil
}

// setgroupsAllowed reports whether setgroups may be called: a user
// namespace whose /proc/self/setgroups says "deny" refuses it (and its
// groups are fixed anyway).
func setgroupsAllowed() bool {
	var buf [16]byte
	b, err := readProc("/proc/self/setgroups", buf[:])
	return err != nil || string(bytes.TrimSpace(b)) != "deny"
}

// capData is the two 32-bit words of capability sets (capset version 3).
type capData [2]unix.CapUserData

func capGet() (capData, error) {
	var d capData
	h := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capget(&h, &d[0]); err != nil {
		return d, fmt.Errorf("drop privileges: read the capabilities: %w", err)
	}
	return d, nil
}

// capHas reports whether capability c is effective (or, with permitted,
// permitted).
func capHas(d capData, c int, effective bool) bool {
	w, bit := d[c/32], uint32(1)<<(c%32)
	if effective {
		return w.Effective&bit != 0
	}
	return w.Permitted&bit != 0
}

// capSetAll sets the permitted and effective sets of every thread to keep
// (capabilities 0-31) and empties the inheritable set.
func capSetAll(cgo bool, keep uint32) error {
	h := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	d := capData{{Effective: keep, Permitted: keep}}
	err := eachThread(cgo, unix.SYS_CAPSET, uintptr(unsafe.Pointer(&h)), uintptr(unsafe.Pointer(&d[0])), 0)
	runtime.KeepAlive(&h)
	runtime.KeepAlive(&d)
	if err != nil {
		return fmt.Errorf("drop privileges: clear the capabilities: %w", err)
	}
	return nil
}

// capLastCap is the highest capability the kernel knows.
func capLastCap() (int, error) {
	var buf [16]byte
	b, err := readProc("/proc/sys/kernel/cap_last_cap", buf[:])
	if err != nil {
		return 0, fmt.Errorf("drop privileges: %w", err)
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("drop privileges: /proc/sys/kernel/cap_last_cap holds %q", bytes.TrimSpace(b))
	}
	return n, nil
}

// account is a user of /etc/passwd.
type account struct {
	name     string
	uid, gid int
}

// lookupAccount finds name in /etc/passwd and checks that its ids are
// mapped in this user namespace. On failure it returns why the uid is kept.
func lookupAccount(name string) (*account, string) {
	a, ok := numericAccount(name)
	if !ok {
		f, err := os.Open("/etc/passwd")
		if err != nil {
			return nil, fmt.Sprintf("user %q: %v", name, err)
		}
		defer f.Close()
		if a, err = findAccount(f, name); err != nil {
			return nil, err.Error()
		}
	}
	for _, m := range []struct {
		path string
		id   int
		what string
	}{{"/proc/self/uid_map", a.uid, "uid"}, {"/proc/self/gid_map", a.gid, "gid"}} {
		var buf [512]byte
		b, err := readProc(m.path, buf[:])
		if err != nil {
			return nil, fmt.Sprintf("user %q: %v", name, err)
		}
		if !idMapped(b, m.id) {
			return nil, fmt.Sprintf("user %q: %s %d is not mapped in this user namespace", name, m.what, m.id)
		}
	}
	return a, ""
}

// numericAccount parses "UID" (the group is the same number) or "UID:GID",
// for a host without the user in /etc/passwd.
func numericAccount(s string) (*account, bool) {
	us, gs, hasGID := strings.Cut(s, ":")
	if !hasGID {
		gs = us
	}
	uid, err1 := strconv.ParseUint(us, 10, 32)
	gid, err2 := strconv.ParseUint(gs, 10, 32)
	if err1 != nil || err2 != nil || uid == 1<<32-1 || gid == 1<<32-1 { // -1 means "unchanged" to setresuid
		return nil, false
	}
	return &account{name: s, uid: int(uid), gid: int(gid)}, true
}

// findAccount parses passwd lines (name:password:uid:gid:gecos:home:shell)
// and returns name's entry.
func findAccount(r interface{ Read([]byte) (int, error) }, name string) (*account, error) {
	sc := bufio.NewScanner(r)
	// Room for a few lines to start with, in a size class the start-up
	// uses anyway; the scanner grows it for a longer line.
	sc.Buffer(make([]byte, 2048), bufio.MaxScanTokenSize)
	for sc.Scan() {
		var f [4][]byte
		rest, n := sc.Bytes(), 0
		for ; n < len(f); n++ {
			var ok bool
			if f[n], rest, ok = bytes.Cut(rest, colon); !ok {
				n++
				break
			}
		}
		if n < len(f) || string(f[0]) != name {
			continue
		}
		uid, err1 := strconv.ParseUint(string(f[2]), 10, 32)
		gid, err2 := strconv.ParseUint(string(f[3]), 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("user %q: malformed /etc/passwd entry (uid %q, gid %q)", name, f[2], f[3])
		}
		return &account{name: name, uid: int(uid), gid: int(gid)}, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("user %q: read /etc/passwd: %w", name, err)
	}
	return nil, fmt.Errorf("user %q: not in /etc/passwd", name)
}

var colon = []byte{':'}

// idMapped reports whether id falls in one of the ranges of an id map
// (lines "inside outside count", /proc/self/uid_map's format).
func idMapped(idMap []byte, id int) bool {
	for len(idMap) > 0 {
		var line []byte
		line, idMap, _ = bytes.Cut(idMap, []byte{'\n'})
		var f [3][]byte
		n := 0
		for line = bytes.TrimLeft(line, " \t"); len(line) > 0 && n <= len(f); n++ {
			i := bytes.IndexAny(line, " \t")
			if i < 0 {
				i = len(line)
			}
			if n < len(f) {
				f[n] = line[:i]
			}
			line = bytes.TrimLeft(line[i:], " \t")
		}
		if n != len(f) {
			continue
		}
		inside, err1 := strconv.ParseUint(string(f[0]), 10, 32)
		count, err2 := strconv.ParseUint(string(f[2]), 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		if uint64(id) >= inside && uint64(id)-inside < count {
			return true
		}
	}
	return false
}

// readProc reads the file at path, a small one of /proc, into buf and
// returns what it holds, without the heap allocations of os.ReadFile; a
// file that fills buf is read again with os.ReadFile.
func readProc(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	n := 0
	for n < len(buf) {
		k, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if k == 0 {
			break
		}
		n += k
	}
	unix.Close(fd)
	if n == len(buf) {
		return os.ReadFile(path)
	}
	return buf[:n], nil
}

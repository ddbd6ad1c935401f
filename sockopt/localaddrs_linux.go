package sockopt

import (
	"net"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// LocalAddrs is the set of the host's own addresses (of its network
// namespace), kept current through a netlink socket subscribed to address
// changes: a lookup makes no system call. It starts no goroutine: its owner
// waits for Fd to be readable (in an epoll set of its own) and then calls
// Update, so that a process whose goroutines wait in no Go poller keeps
// its idle threads asleep on futexes rather than in the poller's
// epoll_wait. Until Update runs after a change, a lookup gives the previous
// answer.
type LocalAddrs struct {
	addrs  atomic.Pointer[[]netip.Addr]
	fd     int // non-blocking netlink socket in RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR
	closed atomic.Bool
	buf    [512]byte // change notices are counted, not parsed: longer ones are truncated
}

// WatchLocalAddrs reads the host's addresses and subscribes to their
// changes; Close releases it.
func WatchLocalAddrs() (*LocalAddrs, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket netlink", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind netlink", err)
	}
	la := &LocalAddrs{fd: fd}
	// Subscribed first, read second: a change between the two leaves a
	// notice that makes Update read again.
	if err := la.refresh(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return la, nil
}

// Fd is the descriptor that becomes readable when the addresses change;
// the owner watches it (EPOLLIN) and calls Update.
func (la *LocalAddrs) Fd() int { return la.fd }

// Update takes the pending change notices, if any, and then reads the
// host's addresses again. It reports whether there were notices; when
// reading fails the previous set stays and the error is returned.
func (la *LocalAddrs) Update() (bool, error) {
	got := false
	for {
		_, _, err := unix.Recvfrom(la.fd, la.buf[:], unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil && err != unix.ENOBUFS { // EAGAIN: no more
			break
		}
		got = true // a notice, or some lost (ENOBUFS)
	}
	if !got {
		return false, nil
	}
	return true, la.refresh()
}

// Contains reports whether a (unmapped) is one of the host's addresses.
func (la *LocalAddrs) Contains(a netip.Addr) bool {
	for _, b := range *la.addrs.Load() {
		if a == b {
			return true
		}
	}
	return false
}

// Close releases the netlink socket (which leaves any epoll set with it).
// Later calls do nothing.
func (la *LocalAddrs) Close() error {
	if la.closed.Swap(true) {
		return nil
	}
	return os.NewSyscallError("close netlink", unix.Close(la.fd))
}

// refresh reads the host's addresses again.
func (la *LocalAddrs) refresh() error {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	addrs := make([]netip.Addr, 0, len(ifas))
	for _, ifa := range ifas {
		if n, ok := ifa.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	la.addrs.Store(&addrs)
	return nil
}

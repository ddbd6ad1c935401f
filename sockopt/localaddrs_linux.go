package sockopt

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// LocalAddrs is the set of the host's own addresses (of its network
// namespace), kept current by a netlink socket subscribed to address
// changes: a lookup makes no system call. It is refreshed from a goroutine
// after each change, so for a moment after an address is added or removed
// a lookup may give the previous answer.
type LocalAddrs struct {
	addrs atomic.Pointer[[]netip.Addr]
	nl    *os.File // netlink socket in RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR
	done  chan struct{}
}

// WatchLocalAddrs reads the host's addresses and follows their changes
// until Close.
func WatchLocalAddrs() (*LocalAddrs, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket netlink", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind netlink", err)
	}
	la := &LocalAddrs{nl: os.NewFile(uintptr(fd), "netlink address changes"), done: make(chan struct{})}
	// Subscribed first, read second: a change between the two is a
	// message that triggers another read.
	if err := la.refresh(); err != nil {
		la.nl.Close()
		return nil, err
	}
	go la.follow()
	return la, nil
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

// Close stops following changes.
func (la *LocalAddrs) Close() error {
	err := la.nl.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	<-la.done
	return err
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

// follow waits for address change notices until Close and, after each
// batch of them (or a lost one: ENOBUFS), reads the addresses again. When
// waiting fails otherwise the last set stays.
func (la *LocalAddrs) follow() {
	defer close(la.done)
	rc, err := la.nl.SyscallConn()
	if err != nil {
		return
	}
	// The notices are only counted, not read: a message longer than buf
	// is truncated, which drops the rest of it.
	buf := make([]byte, 512)
	drain := func(fd uintptr) bool {
		got := false
		for {
			_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			switch err {
			case nil, unix.ENOBUFS:
				got = true
			case unix.EINTR:
			default: // EAGAIN: the batch is over, or nothing came yet
				return got
			}
		}
	}
	for rc.Read(drain) == nil {
		la.refresh()
	}
}

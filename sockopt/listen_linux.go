package sockopt

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// dropAll is the cBPF program "return 0": accept zero bytes of every packet.
var dropAll = func() []unix.SockFilter {
	raw, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		panic("sockopt: assembling the drop-all filter: " + err.Error())
	}
	out := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		out[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	return out
}()

// Listen creates a socket of proto bound to addr (for TCP and SCTP also
// listening, with the system's maximum backlog) and returns it as an *os.File.
//
// The socket is close-on-exec and blocking: the proxies only duplicate it
// (each makes its own descriptor non-blocking, or passes MSG_DONTWAIT),
// and an *os.File of a non-blocking socket would register with Go's
// netpoller, half a KiB of memory a process never gives back, per socket of
// a range. TCP sockets get SO_REUSEADDR;
// IPv6 sockets IPV6_V6ONLY (an IPv4-mapped addr is treated as IPv4); UDP
// sockets IP_PKTINFO or IPV6_RECVPKTINFO; SCTP sockets SCTP_INITMSG asking for
// MaxSCTPStreams outbound streams. With opts.DropAll the drop-all filter is
// attached before bind().
//
// A port of 0 lets the kernel choose; Addr reports the result.
func Listen(proto Proto, addr netip.AddrPort, opts Options) (*os.File, error) {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() {
		return nil, fmt.Errorf("listen %s/%s: invalid address", addr, proto)
	}
	addr = netip.AddrPortFrom(ip, addr.Port())
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	var typ, protocol int
	switch proto {
	case TCP:
		typ, protocol = unix.SOCK_STREAM, unix.IPPROTO_TCP
	case UDP:
		typ, protocol = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	case SCTP:
		typ, protocol = unix.SOCK_STREAM, unix.IPPROTO_SCTP
	default:
		return nil, fmt.Errorf("listen %s/%s: unsupported protocol", addr, proto)
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, protocol)
	if err != nil {
		if proto == SCTP && (errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT)) {
			err = fmt.Errorf("%w: %w", ErrNoSCTP, err)
		}
		return nil, fmt.Errorf("socket %s/%s: %w", addr, proto, err)
	}
	if err := setup(fd, family, proto, addr, opts); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), proto.String()+":"+addr.String()), nil
}

func setup(fd, family int, proto Proto, addr netip.AddrPort, opts Options) error {
	setInt := func(level, opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("setsockopt %s on %s/%s: %w", name, addr, proto, err)
		}
		return nil
	}
	if opts.DropAll {
		if err := attach(fd); err != nil {
			return fmt.Errorf("setsockopt SO_ATTACH_FILTER on %s/%s: %w", addr, proto, err)
		}
	}
	if proto == TCP {
		if err := setInt(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", 1); err != nil {
			return err
		}
	}
	if family == unix.AF_INET6 {
		if err := setInt(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY", 1); err != nil {
			return err
		}
	}
	if proto == UDP {
		if family == unix.AF_INET6 {
			if err := setInt(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", 1); err != nil {
				return err
			}
		} else if err := setInt(unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO", 1); err != nil {
			return err
		}
	}
	if proto == SCTP {
		if err := setSCTPInitMsg(fd, MaxSCTPStreams); err != nil {
			return fmt.Errorf("setsockopt SCTP_INITMSG on %s/%s: %w", addr, proto, err)
		}
	}
	if err := unix.Bind(fd, sockaddr(addr)); err != nil {
		return fmt.Errorf("bind %s/%s: %w", addr, proto, err)
	}
	if proto.Stream() {
		// The kernel caps the backlog at net.core.somaxconn.
		if err := unix.Listen(fd, math.MaxInt32); err != nil {
			return fmt.Errorf("listen %s/%s: %w", addr, proto, err)
		}
	}
	return nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	// A zone we cannot resolve is left to bind() to reject as EINVAL.
	if z := ap.Addr().Zone(); z != "" {
		if ifi, err := netInterfaceIndex(z); err == nil {
			sa.ZoneId = ifi
		}
	}
	return sa
}

// sctpInitMsg is struct sctp_initmsg from <linux/sctp.h>.
type sctpInitMsg struct {
	NumOstreams    uint16
	MaxInstreams   uint16
	MaxAttempts    uint16
	MaxInitTimeout uint16
}

const (
	solSCTP        = 132 // SOL_SCTP
	sctpInitMsgOpt = 2   // SCTP_INITMSG
)

func setSCTPInitMsg(fd int, streams uint16) error {
	m := sctpInitMsg{NumOstreams: streams, MaxInstreams: streams}
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), solSCTP, sctpInitMsgOpt,
		uintptr(unsafe.Pointer(&m)), unsafe.Sizeof(m), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func attach(fd int) error {
	prog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
}

// AttachDropAll attaches the drop-all filter to f. Packets that arrive after
// it are dropped; a connection or datagram already queued is not.
func AttachDropAll(f *os.File) error {
	return control(f, "SO_ATTACH_FILTER", attach)
}

// DetachFilter removes the socket filter from f, so that packets reach it
// again. Detaching a socket that has no filter is not an error.
func DetachFilter(f *os.File) error {
	return control(f, "SO_DETACH_FILTER", func(fd int) error {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil // no filter attached
		}
		return err
	})
}

// control runs fn, which sets the socket option name, on f's descriptor.
func control(f *os.File, name string, fn func(fd int) error) error {
	return withFD(f, "setsockopt "+name, fn)
}

// withFD runs fn on f's descriptor; errors start with what and f's name. A nil
// file is os.ErrInvalid, a closed one os.ErrClosed.
func withFD(f *os.File, what string, fn func(fd int) error) error {
	if f == nil {
		return fmt.Errorf("%s on %s: %w", what, fileName(f), os.ErrInvalid)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s on %s: %w", what, f.Name(), err)
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		// Control fails only when f is closed (or being closed).
		return fmt.Errorf("%s on %s: %w (%w)", what, f.Name(), os.ErrClosed, err)
	}
	if opErr != nil {
		return fmt.Errorf("%s on %s: %w", what, f.Name(), opErr)
	}
	return nil
}

// Inspect reports what kind of socket f is: family, type, protocol, whether
// it listens, and its local address. It fails when f is not a socket.
func Inspect(f *os.File) (Info, error) {
	var info Info
	err := withFD(f, "inspect", func(fd int) error {
		var err error
		if info.Family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
			if errors.Is(err, unix.ENOTSOCK) {
				return fmt.Errorf("not a socket: %w", err)
			}
			return fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
		}
		if info.Type, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
			return fmt.Errorf("getsockopt SO_TYPE: %w", err)
		}
		if info.Protocol, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
			return fmt.Errorf("getsockopt SO_PROTOCOL: %w", err)
		}
		acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return fmt.Errorf("getsockopt SO_ACCEPTCONN: %w", err)
		}
		info.Listening = acc != 0
		if info.Local, err = localAddr(fd); err != nil {
			return fmt.Errorf("getsockname: %w", err)
		}
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	switch {
	case info.Type == unix.SOCK_STREAM && info.Protocol == unix.IPPROTO_TCP:
		info.Proto = TCP
	case info.Type == unix.SOCK_STREAM && info.Protocol == unix.IPPROTO_MPTCP:
		// Go 1.24+ listeners (net.Listen, net.ListenTCP) are Multipath TCP
		// where the kernel has it, so an engine written in Go may pass one
		// on fd 4. To its peers it is a TCP listener (plain TCP clients
		// fall back to TCP), and the TCP relay serves it as one.
		info.Proto = TCP
	case info.Type == unix.SOCK_DGRAM && info.Protocol == unix.IPPROTO_UDP:
		info.Proto = UDP
	case (info.Type == unix.SOCK_STREAM || info.Type == unix.SOCK_SEQPACKET) && info.Protocol == unix.IPPROTO_SCTP:
		info.Proto = SCTP
	}
	return info, nil
}

// localAddr is getsockname(2) for an IP socket, read into a buffer on the
// stack (unix.Getsockname allocates the address it returns, and a range of
// sockets is inspected one by one). It is invalid for other families.
func localAddr(fd int) (netip.AddrPort, error) {
	var b [unix.SizeofSockaddrAny]byte
	n := uint32(len(b))
	_, _, errno := unix.Syscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return netip.AddrPort{}, errno
	}
	ap, _, _ := ParseSockaddr(b[:min(n, uint32(len(b)))])
	return ap, nil
}

// SCTPSupported returns nil when the kernel can create SCTP sockets, and an
// error wrapping ErrNoSCTP that says why not otherwise. Tests use it to skip.
func SCTPSupported() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): %w: %w", ErrNoSCTP, err)
	}
	unix.Close(fd)
	return nil
}

package sockopt_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
	"golang.org/x/sys/unix"
)

var (
	loop4 = netip.MustParseAddr("127.0.0.1")
	loop6 = netip.MustParseAddr("::1")
)

func needIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err == nil {
		ln.Close()
	}
	testenv.Require(t, err == nil, fmt.Sprintf("needs ::1 (%v)", err))
}

// listen calls sockopt.Listen and closes the socket when t ends.
func listen(t *testing.T, proto sockopt.Proto, ap netip.AddrPort, opts sockopt.Options) *os.File {
	t.Helper()
	f, err := sockopt.Listen(proto, ap, opts)
	if err != nil {
		t.Fatalf("Listen %s/%s: %v", ap, proto, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func getInt(t *testing.T, f *os.File, level, opt int, name string) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var opErr error
	if err := rc.Control(func(fd uintptr) { v, opErr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if opErr != nil {
		t.Fatalf("getsockopt %s on %s: %v", name, f.Name(), opErr)
	}
	return v
}

// TestListenOptions checks every option Listen promises, per protocol and
// family, by asking the kernel.
func TestListenOptions(t *testing.T) {
	needIPv6(t)
	tests := []struct {
		proto sockopt.Proto
		addr  string
	}{
		{sockopt.TCP, "127.0.0.1"},
		{sockopt.TCP, "::1"},
		{sockopt.TCP, "::ffff:127.0.0.1"}, // an IPv4-mapped address is IPv4
		{sockopt.UDP, "127.0.0.1"},
		{sockopt.UDP, "::1"},
		{sockopt.UDP, "0.0.0.0"},
		{sockopt.UDP, "::"},
	}
	for _, tt := range tests {
		t.Run(tt.proto.String()+"/"+tt.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.addr)
			f := listen(t, tt.proto, netip.AddrPortFrom(ip, 0), sockopt.Options{})
			info, err := sockopt.Inspect(f)
			if err != nil {
				t.Fatal(err)
			}
			v6 := ip.Unmap().Is6()
			family, typ, protocol := unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP
			if v6 {
				family = unix.AF_INET6
			}
			if tt.proto == sockopt.UDP {
				typ, protocol = unix.SOCK_DGRAM, unix.IPPROTO_UDP
			}
			if info.Family != family || info.Type != typ || info.Protocol != protocol || info.Proto != tt.proto {
				t.Errorf("Inspect: %+v, want family %d type %d protocol %d", info, family, typ, protocol)
			}
			if info.Local.Addr() != ip.Unmap() || info.Local.Port() == 0 {
				t.Errorf("bound to %s, want %s and a port the kernel chose", info.Local, ip.Unmap())
			}
			if info.Listening != tt.proto.Stream() {
				t.Errorf("listening = %v, want %v", info.Listening, tt.proto.Stream())
			}
			if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
				t.Errorf("F_GETFD = %#x, %v; want FD_CLOEXEC", fl, err)
			}
			if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
				t.Errorf("F_GETFL = %#x, %v; want a blocking socket", fl, err)
			}
			reuse := getInt(t, f, unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR")
			if (reuse != 0) != (tt.proto == sockopt.TCP) {
				t.Errorf("SO_REUSEADDR = %d, want it on TCP only", reuse)
			}
			if v6 {
				if v := getInt(t, f, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY"); v != 1 {
					t.Errorf("IPV6_V6ONLY = %d, want 1", v)
				}
			}
			if tt.proto == sockopt.UDP {
				level, opt, name := unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"
				if v6 {
					level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"
				}
				if v := getInt(t, f, level, opt, name); v != 1 {
					t.Errorf("%s = %d, want 1", name, v)
				}
			}
		})
	}
}

// TestListenV6Only: with IPV6_V6ONLY, [::]:p and 0.0.0.0:p are two sockets.
func TestListenV6Only(t *testing.T) {
	needIPv6(t)
	for _, proto := range []sockopt.Proto{sockopt.TCP, sockopt.UDP} {
		f := listen(t, proto, netip.MustParseAddrPort("[::]:0"), sockopt.Options{})
		info, err := sockopt.Inspect(f)
		if err != nil {
			t.Fatal(err)
		}
		ap := netip.AddrPortFrom(netip.IPv4Unspecified(), info.Local.Port())
		f4, err := sockopt.Listen(proto, ap, sockopt.Options{})
		if err != nil {
			t.Fatalf("%s: Listen %s next to [::]:%d: %v (IPV6_V6ONLY not set?)", proto, ap, ap.Port(), err)
		}
		f4.Close()
	}
}

// TestListenErrors: each error names the address and protocol and wraps the
// cause.
func TestListenErrors(t *testing.T) {
	held := listen(t, sockopt.TCP, netip.AddrPortFrom(loop4, 0), sockopt.Options{})
	info, err := sockopt.Inspect(held)
	if err != nil {
		t.Fatal(err)
	}
	heldUDP := listen(t, sockopt.UDP, netip.AddrPortFrom(loop4, 0), sockopt.Options{})
	infoUDP, err := sockopt.Inspect(heldUDP)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		proto sockopt.Proto
		addr  netip.AddrPort
		is    error    // errors.Is target, or nil
		words []string // the message must contain each
	}{
		{"tcp port in use", sockopt.TCP, info.Local, unix.EADDRINUSE, []string{info.Local.String(), "tcp", "bind"}},
		{"udp port in use", sockopt.UDP, infoUDP.Local, unix.EADDRINUSE, []string{infoUDP.Local.String(), "udp", "bind"}},
		{"invalid address", sockopt.TCP, netip.AddrPort{}, nil, []string{"invalid address", "tcp"}},
		{"unknown protocol", sockopt.Proto(9), netip.AddrPortFrom(loop4, 0), nil, []string{"127.0.0.1:0", "proto(9)"}},
		{"non-local address", sockopt.UDP, netip.MustParseAddrPort("192.0.2.1:0"), unix.EADDRNOTAVAIL, []string{"192.0.2.1:0", "udp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.proto == sockopt.TCP && tt.addr.IsValid() {
				testenv.RequireNetAdmin(t) // the drop-all filter on a TCP socket
			}
			f, err := sockopt.Listen(tt.proto, tt.addr, sockopt.Options{DropAll: true})
			if err == nil {
				f.Close()
				t.Fatalf("Listen %s/%s succeeded", tt.addr, tt.proto)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Listen %s/%s: %v, want %v", tt.addr, tt.proto, err, tt.is)
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestListenSCTPWithoutKernelSupport: where the kernel has no SCTP, Listen
// says so with ErrNoSCTP.
func TestListenSCTPWithoutKernelSupport(t *testing.T) {
	if sockopt.SCTPSupported() == nil {
		t.Skip("this kernel has SCTP; sctp_linux_test.go covers it")
	}
	f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(loop4, 0), sockopt.Options{})
	if err == nil {
		f.Close()
		t.Fatal("Listen sctp succeeded although SCTPSupported failed")
	}
	if !errors.Is(err, sockopt.ErrNoSCTP) || !strings.Contains(err.Error(), "127.0.0.1:0") {
		t.Fatalf("Listen sctp: %v, want ErrNoSCTP naming 127.0.0.1:0", err)
	}
}

// TestInspectNotASocket: Inspect rejects what is not a socket with an error
// that names the file, and does not panic on a nil or closed file.
func TestInspectNotASocket(t *testing.T) {
	regular, err := os.CreateTemp(t.TempDir(), "regular")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { regular.Close() })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	closed := listen(t, sockopt.UDP, netip.AddrPortFrom(loop4, 0), sockopt.Options{})
	closed.Close()

	tests := []struct {
		name string
		f    *os.File
		is   error
	}{
		{"regular file", regular, unix.ENOTSOCK},
		{"pipe", r, unix.ENOTSOCK},
		{"closed socket", closed, os.ErrClosed},
		{"nil file", nil, os.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := sockopt.Inspect(tt.f)
			if !errors.Is(err, tt.is) {
				t.Fatalf("Inspect: %+v, %v; want an error wrapping %v", info, err, tt.is)
			}
			if tt.f != nil && !strings.Contains(err.Error(), tt.f.Name()) {
				t.Errorf("error %q does not name %s", err, tt.f.Name())
			}
			if tt.is == unix.ENOTSOCK && !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("error %q does not say it is not a socket", err)
			}
		})
	}
	for _, f := range []*os.File{regular, nil} {
		if err := sockopt.AttachDropAll(f); err == nil {
			t.Errorf("AttachDropAll(%v) succeeded", f)
		}
		if err := sockopt.DetachFilter(f); err == nil {
			t.Errorf("DetachFilter(%v) succeeded", f)
		}
	}
}

// TestListenBacklog: stream sockets listen with the system's maximum backlog
// (net.core.somaxconn), which ss reports as the Send-Q of a listener.
func TestListenBacklog(t *testing.T) {
	ss := testenv.RequireCommand(t, "ss")
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Skipf("cannot read net.core.somaxconn: %v", err)
	}
	want := strings.TrimSpace(string(b))
	f := listen(t, sockopt.TCP, netip.AddrPortFrom(loop4, 0), sockopt.Options{})
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ss, "-Hltn", fmt.Sprintf("sport = :%d", info.Local.Port())).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	// LISTEN 0 4096 127.0.0.1:33491 0.0.0.0:*
	fields := strings.Fields(string(out))
	if len(fields) < 4 || fields[3] != info.Local.String() {
		t.Fatalf("ss printed %q, want one listener on %s", out, info.Local)
	}
	if fields[2] != want {
		t.Errorf("backlog of %s is %s, want net.core.somaxconn = %s", info.Local, fields[2], want)
	}
}

// TestInspectMPTCP: a listening Multipath TCP socket, what Go 1.24+'s
// net.Listen makes where the kernel has MPTCP, is inspected as TCP.
func TestInspectMPTCP(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
	testenv.Require(t, err == nil, fmt.Sprintf("needs Multipath TCP (net.mptcp.enabled): %v", err))
	f := os.NewFile(uintptr(fd), "mptcp")
	t.Cleanup(func() { f.Close() })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: loop4.As4()}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	if info.Proto != sockopt.TCP || !info.Listening || info.Protocol != unix.IPPROTO_MPTCP || info.Local.Addr() != loop4 {
		t.Fatalf("Inspect = %+v, want a listening TCP socket (protocol MPTCP) on %s", info, loop4)
	}
}

package tcp

import (
	"bytes"
	"net/netip"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// rawBackend is a blocking TCP server on 127.0.0.1 made of raw system
// calls, so that it allocates nothing per connection: it accepts one
// connection at a time, reads a PROXY header of version pp (if any) and one
// byte, answers with one byte and closes.
func rawBackend(b *testing.B, pp proxyproto.Version) netip.AddrPort {
	b.Helper()
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(lfd, 128); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [256]byte
		for {
			fd, _, errno := syscall.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
			if errno == unix.EINTR || errno == unix.ECONNABORTED {
				continue
			}
			if errno != 0 {
				return // the listener was shut down
			}
			got, need := 0, -1
			for got != need {
				n, _, errno := syscall.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[got])), uintptr(len(buf)-got))
				if errno != 0 || n == 0 {
					break
				}
				got += int(n)
				if need < 0 {
					need = wantLen(buf[:got], pp)
				}
			}
			syscall.Syscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&buf[0])), 1)
			syscall.Syscall(unix.SYS_CLOSE, fd, 0, 0)
		}
	}()
	b.Cleanup(func() {
		unix.Shutdown(lfd, unix.SHUT_RDWR) // wakes the accept
		<-done
		unix.Close(lfd)
	})
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
}

// wantLen returns how many bytes a connection carrying b so far sends in
// all (the header of version pp and one byte), or -1 when b does not yet
// hold the whole header.
func wantLen(b []byte, pp proxyproto.Version) int {
	switch pp {
	case proxyproto.V1:
		if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
			return i + 3
		}
		return -1
	case proxyproto.V2:
		if len(b) < 16 {
			return -1
		}
		return 16 + int(b[14])<<8 | int(b[15]) + 1
	}
	return 1
}

// BenchmarkConnectRaw is BenchmarkConnect with a client and a backend made
// of raw system calls, which allocate nothing: allocs/op is then the
// proxy's own per-connection allocations, with and without a PROXY header
// (0 for all: the header is formatted into the loop's buffer).
func BenchmarkConnectRaw(b *testing.B) {
	for _, via := range []string{"direct", "proxy", "proxy-v1", "proxy-v2"} {
		b.Run(via, func(b *testing.B) {
			pp := map[string]proxyproto.Version{"proxy-v1": proxyproto.V1, "proxy-v2": proxyproto.V2}[via]
			dst := rawBackend(b, pp)
			if via != "direct" {
				_, dst = startProxy(b, Config{Backend: dst, ProxyProtocol: pp})
			}
			sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.Addr().As4()}
			sa.Port = dst.Port()>>8 | dst.Port()<<8 // network byte order
			var one [1]byte
			b.ReportAllocs()
			for b.Loop() {
				fd, _, errno := syscall.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if errno != 0 {
					b.Fatal(errno)
				}
				if _, _, errno := syscall.Syscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4); errno != 0 {
					b.Fatalf("connect %s: %v", dst, errno)
				}
				syscall.Syscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&one[0])), 1)
				if n, _, errno := syscall.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&one[0])), 1); n != 1 {
					b.Fatalf("read from %s: %d bytes, %v", dst, n, errno)
				}
				syscall.Syscall(unix.SYS_CLOSE, fd, 0, 0)
			}
		})
	}
}

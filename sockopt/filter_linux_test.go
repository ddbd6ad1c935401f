package sockopt_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// quiet is how long a test waits to see that nothing happens: the deadline
// of a dial or a read that must not succeed.
const quiet = 300 * time.Millisecond

// patience bounds a dial or read that must succeed.
const patience = 10 * time.Second

// TestFilterTCP: with the filter attached before bind, a connect to the
// listening socket does not complete; after DetachFilter a connect does, and
// the same socket accepts it (and only it).
func TestFilterTCP(t *testing.T) {
	testenv.RequireNetAdmin(t)
	needIPv6(t)
	for _, ip := range []netip.Addr{loop4, loop6} {
		t.Run(ip.String(), func(t *testing.T) {
			f := listen(t, sockopt.TCP, netip.AddrPortFrom(ip, 0), sockopt.Options{DropAll: true})
			info, err := sockopt.Inspect(f)
			if err != nil {
				t.Fatal(err)
			}
			if !info.Listening {
				t.Fatalf("%s does not listen", info)
			}
			addr := info.Local.String()
			if c, err := net.DialTimeout("tcp", addr, quiet); err == nil {
				c.Close()
				t.Fatalf("connect to %s completed with the drop-all filter attached", addr)
			} else if !isTimeout(err) {
				t.Fatalf("connect to %s: %v, want a timeout", addr, err)
			}

			if err := sockopt.DetachFilter(f); err != nil {
				t.Fatal(err)
			}
			c, err := net.DialTimeout("tcp", addr, patience)
			if err != nil {
				t.Fatalf("connect to %s after DetachFilter: %v", addr, err)
			}
			defer c.Close()
			ln, err := net.FileListener(f)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(patience))
			s, err := ln.Accept()
			if err != nil {
				t.Fatalf("accept on %s after DetachFilter: %v", addr, err)
			}
			defer s.Close()
			if s.RemoteAddr().String() != c.LocalAddr().String() {
				t.Fatalf("accepted %s, want the connection from %s: the filtered SYN was queued", s.RemoteAddr(), c.LocalAddr())
			}
		})
	}
}

// TestFilterUDP: with the filter attached before bind a datagram is not
// received; after DetachFilter the next one is, on the same socket, and the
// first was never queued.
func TestFilterUDP(t *testing.T) {
	needIPv6(t)
	for _, ip := range []netip.Addr{loop4, loop6} {
		t.Run(ip.String(), func(t *testing.T) {
			f := listen(t, sockopt.UDP, netip.AddrPortFrom(ip, 0), sockopt.Options{DropAll: true})
			checkUDPFilter(t, f)
		})
	}
}

// TestAttachDropAllLater: the filter can also be attached to a live socket,
// and detaching twice is not an error.
func TestAttachDropAllLater(t *testing.T) {
	f := listen(t, sockopt.UDP, netip.AddrPortFrom(loop4, 0), sockopt.Options{})
	if err := sockopt.DetachFilter(f); err != nil {
		t.Fatalf("DetachFilter without a filter: %v", err)
	}
	if err := sockopt.AttachDropAll(f); err != nil {
		t.Fatal(err)
	}
	checkUDPFilter(t, f)
	if err := sockopt.DetachFilter(f); err != nil {
		t.Fatalf("second DetachFilter: %v", err)
	}
}

// checkUDPFilter sends to f while its filter is attached, detaches it and
// sends again.
func checkUDPFilter(t *testing.T, f *os.File) {
	t.Helper()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.FilePacketConn(f) // a dup: same socket, same filter
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(info.Local))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	if _, err := client.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	pc.SetReadDeadline(time.Now().Add(quiet))
	if n, _, err := pc.ReadFrom(buf); err == nil {
		t.Fatalf("%s received %q with the drop-all filter attached", info.Local, buf[:n])
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on %s: %v, want a timeout", info.Local, err)
	}

	if err := sockopt.DetachFilter(f); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(patience))
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read on %s after DetachFilter: %v", info.Local, err)
	}
	if string(buf[:n]) != "after" || from.String() != client.LocalAddr().String() {
		t.Fatalf("received %q from %s, want %q from %s", buf[:n], from, "after", client.LocalAddr())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

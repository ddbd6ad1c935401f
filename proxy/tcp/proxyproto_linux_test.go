package tcp

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// TestProxyProtocolShortWrite: a header the backend socket takes only in
// part goes on, whole and first, before the client's bytes, which the
// client had already sent before the connect completed.
func TestProxyProtocolShortWrite(t *testing.T) {
	for _, k := range []int{0, 1, 20} { // bytes the first write takes (0: EAGAIN)
		t.Run(fmt.Sprintf("first write %d bytes", k), func(t *testing.T) { shortHeaderWrite(t, k) })
	}
}

func shortHeaderWrite(t *testing.T, k int) {
	orig := writeHeader
	writeHeader = func(fd int32, b []byte) (int, unix.Errno) {
		if k == 0 {
			return 0, unix.EAGAIN
		}
		return rawRW(unix.SYS_WRITE, fd, b[:k])
	}
	t.Cleanup(func() { writeHeader = orig })

	backendAddr, conns := newHandOver(t)
	_, addr := startProxy(t, Config{Backend: backendAddr, ProxyProtocol: proxyproto.V1})
	c := dial(t, addr)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	b := accepted(t, conns)
	if k == 0 {
		// A real EAGAIN is followed by an EPOLLOUT edge once the send
		// buffer drains; the fake one is not. Any later event of the
		// backend socket reports EPOLLOUT too: the backend sends "x"
		// (which may come with the connect's completion, before the fake
		// EAGAIN), then, once the client has it, "y".
		var one [1]byte
		for _, s := range []string{"x", "y"} {
			if _, err := b.Write([]byte(s)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, one[:]); err != nil || string(one[:]) != s {
				t.Fatalf("client read %q, %v; want %q", one[:], err, s)
			}
		}
	}
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	want := append(proxyproto.AppendV1(nil, addrPort(c.LocalAddr()), addr), "hello"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("first write of %d bytes: backend read %q, want %q", k, got, want)
	}
}

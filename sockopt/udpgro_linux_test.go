package sockopt_test

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// With UDP_GRO on, a run sent with UDP_SEGMENT over loopback arrives as one
// buffer with its segment size; without it, as separate datagrams.
func TestUDPGRO(t *testing.T) {
	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	f, err := dst.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	testenv.Require(t, sockopt.UDPGSOSupported(f), "needs UDP GSO (Linux 4.18+)")
	err = sockopt.EnableUDPGRO(f)
	testenv.Require(t, err == nil, fmt.Sprintf("needs UDP GRO (Linux 5.0+): %v", err))
	src, err := net.DialUDP("udp4", nil, dst.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	payload := bytes.Repeat([]byte("0123456789"), 25) // 250 bytes: 100+100+50
	if _, _, err := src.WriteMsgUDP(payload, sockopt.AppendUDPSegment(nil, 100), nil); err != nil {
		t.Fatalf("GSO send: %v", err)
	}
	buf, oob := make([]byte, 1000), make([]byte, 128)
	dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := dst.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	seg, ok := sockopt.ParseUDPGRO(oob[:oobn])
	if n != len(payload) || !bytes.Equal(buf[:n], payload) || !ok || seg != 100 {
		t.Errorf("read %d bytes with segment size %d (%v), want %d bytes with 100", n, seg, ok, len(payload))
	}
	if err := sockopt.EnableUDPGRO(nil); err == nil {
		t.Error("EnableUDPGRO(nil) succeeded")
	}
}

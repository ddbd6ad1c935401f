package sockopt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func groData(size int32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(size))
	return b
}

func TestParseUDPGRO(t *testing.T) {
	gro := cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, groData(1200), -1)
	v4 := cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(1, "127.0.0.2", "127.0.0.2"), -1)
	for _, tc := range []struct {
		name string
		oob  []byte
		want int
		ok   bool
	}{
		{"none", nil, 0, false},
		{"alone", gro, 1200, true},
		{"before pktinfo", cat(gro, v4), 1200, true},
		{"after pktinfo", cat(v4, gro), 1200, true},
		{"pktinfo only", v4, 0, false},
		{"cut header", gro[:cmsgHdrLen-1], 0, false},
		{"cut data", cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, []byte{1, 2}, -1), 0, false},
		{"length past the end", cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, groData(1200), 200), 0, false},
		{"length below the header", cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, groData(1200), 3), 0, false},
		{"zero size", cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, groData(0), -1), 0, false},
		{"negative size", cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, groData(-5), -1), 0, false},
		{"other level", cmsg(unix.IPPROTO_IP, unix.UDP_GRO, groData(1200), -1), 0, false},
		{"UDP_SEGMENT", cmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, groData(1200), -1), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseUDPGRO(tc.oob)
			if got != tc.want || ok != tc.ok {
				t.Errorf("ParseUDPGRO = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

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
	// testenv imports this package: its rule (skip, or fail under
	// HOSTPROXY_STRICT=1) is spelled out here.
	require := func(ok bool, reason string) {
		if ok {
			return
		}
		if os.Getenv("HOSTPROXY_STRICT") == "1" {
			t.Fatalf("%s (HOSTPROXY_STRICT=1: required)", reason)
		}
		t.Skip(reason)
	}
	require(UDPGSOSupported(f), "needs UDP GSO (Linux 4.18+)")
	err = EnableUDPGRO(f)
	require(err == nil, fmt.Sprintf("needs UDP GRO (Linux 5.0+): %v", err))
	src, err := net.DialUDP("udp4", nil, dst.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	payload := bytes.Repeat([]byte("0123456789"), 25) // 250 bytes: 100+100+50
	if _, _, err := src.WriteMsgUDP(payload, AppendUDPSegment(nil, 100), nil); err != nil {
		t.Fatalf("GSO send: %v", err)
	}
	buf, oob := make([]byte, 1000), make([]byte, 128)
	dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := dst.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	seg, ok := ParseUDPGRO(oob[:oobn])
	if n != len(payload) || !bytes.Equal(buf[:n], payload) || !ok || seg != 100 {
		t.Errorf("read %d bytes with segment size %d (%v), want %d bytes with 100", n, seg, ok, len(payload))
	}
	if err := EnableUDPGRO(nil); err == nil {
		t.Error("EnableUDPGRO(nil) succeeded")
	}
}

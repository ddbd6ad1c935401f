package sockopt

import (
	"encoding/binary"
	"testing"

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

package sockopt

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message as the kernel lays it out; dataLen
// overrides the length field's view of the data when not negative.
func cmsg(level, typ int, data []byte, lenField int) []byte {
	hdr := cmsgAlignUp(cmsgHdrLen)
	b := make([]byte, hdr+cmsgAlignUp(len(data)))
	l := hdr + len(data)
	if lenField >= 0 {
		l = lenField
	}
	if cmsgLenSize == 8 {
		binary.NativeEndian.PutUint64(b, uint64(l))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(l))
	}
	binary.NativeEndian.PutUint32(b[cmsgLenSize:], uint32(level))
	binary.NativeEndian.PutUint32(b[cmsgLenSize+4:], uint32(typ))
	copy(b[hdr:], data)
	return b
}

func inPktinfo(ifindex uint32, specDst, dst string) []byte {
	b := make([]byte, sizeofInPktinfo)
	binary.NativeEndian.PutUint32(b, ifindex)
	s, d := netip.MustParseAddr(specDst).As4(), netip.MustParseAddr(dst).As4()
	copy(b[4:], s[:])
	copy(b[8:], d[:])
	return b
}

func in6Pktinfo(addr string, ifindex uint32) []byte {
	b := make([]byte, sizeofIn6Pktinfo)
	a := netip.MustParseAddr(addr).As16()
	copy(b, a[:])
	binary.NativeEndian.PutUint32(b[16:], ifindex)
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParsePktinfo(t *testing.T) {
	v4 := cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(1, "127.0.0.2", "127.0.0.2"), -1)
	v6 := cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6Pktinfo("2001:db8::7", 3), -1)
	tos := cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0x10}, -1)
	for _, tc := range []struct {
		name       string
		oob        []byte
		ok         bool
		dst, local string
		ifindex    uint32
	}{
		{"ipv4", v4, true, "127.0.0.2", "127.0.0.2", 1},
		{"ipv4 broadcast", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(2, "192.0.2.1", "192.0.2.255"), -1),
			true, "192.0.2.255", "192.0.2.1", 2},
		{"ipv6", v6, true, "2001:db8::7", "2001:db8::7", 3},
		{"ipv4-mapped", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6Pktinfo("::ffff:127.0.0.3", 1), -1),
			true, "::ffff:127.0.0.3", "::ffff:127.0.0.3", 1},
		{"after another message", cat(tos, v4), true, "127.0.0.2", "127.0.0.2", 1},
		{"first of two", cat(v6, tos), true, "2001:db8::7", "2001:db8::7", 3},
		{"empty", nil, false, "", "", 0},
		{"only another message", tos, false, "", "", 0},
		{"header cut", v4[:cmsgHdrLen-1], false, "", "", 0},
		{"data cut (MSG_CTRUNC)", v4[:len(v4)-8], false, "", "", 0},
		{"length below header", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(1, "127.0.0.2", "127.0.0.2"), 3), false, "", "", 0},
		{"length past buffer", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(1, "127.0.0.2", "127.0.0.2"), 1000), false, "", "", 0},
		{"data too short", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, []byte{1, 2, 3, 4}, -1), false, "", "", 0},
		{"ipv6 data too short", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, make([]byte, 16), -1), false, "", "", 0},
		{"wrong level", cmsg(unix.SOL_SOCKET, unix.IP_PKTINFO, inPktinfo(1, "127.0.0.2", "127.0.0.2"), -1), false, "", "", 0},
		{"garbage after a message", cat(tos, []byte{1, 2, 3}), false, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pi, ok := ParsePktinfo(tc.oob)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tc.ok, pi)
			}
			if !ok {
				if pi != (Pktinfo{}) {
					t.Errorf("not ok but returned %+v", pi)
				}
				return
			}
			want := Pktinfo{Dst: netip.MustParseAddr(tc.dst), Local: netip.MustParseAddr(tc.local), Ifindex: tc.ifindex}
			if pi != want {
				t.Errorf("got %+v, want %+v", pi, want)
			}
		})
	}
}

func TestAppendPktinfo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v6      bool
		src     string
		ifindex uint32
		want    []byte // nil: nothing appended
	}{
		{"ipv4", false, "127.0.0.2", 0, cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(0, "127.0.0.2", "0.0.0.0"), -1)},
		{"ipv4-mapped on ipv4 socket", false, "::ffff:10.0.0.1", 0, cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(0, "10.0.0.1", "0.0.0.0"), -1)},
		{"ipv6", true, "fe80::1", 4, cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6Pktinfo("fe80::1", 4), -1)},
		{"ipv4 on ipv6 socket", true, "127.0.0.3", 0, cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6Pktinfo("::ffff:127.0.0.3", 0), -1)},
		{"ipv6 on ipv4 socket", false, "2001:db8::1", 0, nil},
		{"invalid", true, "", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var src netip.Addr
			if tc.src != "" {
				src = netip.MustParseAddr(tc.src)
			}
			prefix := []byte("keep")
			got := AppendPktinfo(prefix, tc.v6, src, tc.ifindex)
			if !bytes.Equal(got, append([]byte("keep"), tc.want...)) {
				t.Errorf("got % x\nwant % x", got, tc.want)
			}
			if len(got) > len(prefix)+PktinfoSpace {
				t.Errorf("appended %d bytes, more than PktinfoSpace %d", len(got)-len(prefix), PktinfoSpace)
			}
			if tc.want != nil {
				if _, ok := ParsePktinfo(got[len(prefix):]); !ok {
					t.Error("ParsePktinfo rejects what AppendPktinfo built")
				}
			}
		})
	}
}

func TestAppendPktinfoNoAlloc(t *testing.T) {
	var buf [PktinfoSpace]byte
	src := netip.MustParseAddr("127.0.0.2")
	if n := testing.AllocsPerRun(100, func() { AppendPktinfo(buf[:0], true, src, 0) }); n != 0 {
		t.Errorf("AppendPktinfo into a big enough buffer allocates %v times", n)
	}
}

func FuzzParsePktinfo(f *testing.F) {
	f.Add(cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(1, "127.0.0.2", "127.0.0.2"), -1))
	f.Add(cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6Pktinfo("::1", 1), -1))
	f.Add(cat(cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0}, -1), cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, inPktinfo(1, "10.0.0.1", "10.0.0.1"), 7)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		pi, ok := ParsePktinfo(oob)
		if ok != pi.Dst.IsValid() || ok != pi.Local.IsValid() {
			t.Fatalf("ok = %v but %+v", ok, pi)
		}
		if ok {
			// What was parsed can be sent back and parsed again.
			v6 := pi.Dst.Is6()
			out := AppendPktinfo(nil, v6, pi.Local, pi.Ifindex)
			back, ok := ParsePktinfo(out)
			if !ok || back.Local != pi.Local {
				t.Fatalf("round trip of %+v: %+v, %v", pi, back, ok)
			}
		}
	})
}

// The kernel's own control message parses: a datagram sent to 127.0.0.2 on
// a 0.0.0.0 socket reports 127.0.0.2.
func TestEnablePktinfoKernel(t *testing.T) {
	f, err := Listen(UDP, netip.MustParseAddrPort("0.0.0.0:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := EnablePktinfo(f); err != nil {
		t.Fatalf("EnablePktinfo: %v", err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn := pc.(*net.UDPConn)
	port := conn.LocalAddr().(*net.UDPAddr).Port
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf, oob := make([]byte, 16), make([]byte, 128)
	_, oobn, _, _, err := conn.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	pi, ok := ParsePktinfo(oob[:oobn])
	if !ok || pi.Dst != netip.MustParseAddr("127.0.0.2") || pi.Local != pi.Dst || pi.Ifindex == 0 {
		t.Errorf("PKTINFO of a datagram to 127.0.0.2: %+v ok=%v", pi, ok)
	}
}

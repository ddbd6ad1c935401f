package proxyproto

import (
	"bytes"
	"net/netip"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestV1 checks lines byte for byte against section 2.1: its example, the
// longest lines it names, and the fall-backs to UNKNOWN.
func TestV1(t *testing.T) {
	for _, tt := range []struct {
		name     string
		src, dst netip.AddrPort
		want     string
	}{
		{"specification example", ap("192.168.0.1:56324"), ap("192.168.0.11:443"), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"},
		{"longest TCP4", ap("255.255.255.255:65535"), ap("255.255.255.255:65535"), "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"},
		{"no heading zeroes", ap("10.0.0.1:1"), ap("10.0.0.2:0"), "PROXY TCP4 10.0.0.1 10.0.0.2 1 0\r\n"},
		{"IPv4-mapped is TCP4", ap("[::ffff:192.0.2.1]:4000"), ap("[::ffff:192.0.2.2]:80"), "PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\n"},
		{"one mapped, one IPv4", ap("[::ffff:192.0.2.1]:4000"), ap("192.0.2.2:80"), "PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\n"},
		{"TCP6", ap("[2001:db8::1]:50000"), ap("[2001:db8::2]:443"), "PROXY TCP6 2001:db8::1 2001:db8::2 50000 443\r\n"},
		{"longest TCP6", ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
			"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"},
		{"zone dropped", ap("[fe80::1%lo]:1000"), ap("[fe80::2%lo]:22"), "PROXY TCP6 fe80::1 fe80::2 1000 22\r\n"},
		{"mixed families", ap("192.0.2.1:4000"), ap("[2001:db8::2]:80"), "PROXY UNKNOWN\r\n"},
		{"invalid source", netip.AddrPort{}, ap("192.0.2.2:80"), "PROXY UNKNOWN\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendV1(nil, tt.src, tt.dst)
			if string(got) != tt.want {
				t.Fatalf("AppendV1 = %q, want %q", got, tt.want)
			}
			if len(got) > MaxV1Len {
				t.Fatalf("%d bytes, more than %d", len(got), MaxV1Len)
			}
			if got := Append([]byte("x"), V1, tt.src, tt.dst); string(got) != "x"+tt.want {
				t.Fatalf("Append(V1) after a prefix = %q", got)
			}
		})
	}
}

// TestV2 checks headers byte for byte against the layout of section 2.2.
func TestV2(t *testing.T) {
	sig := []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tt := range []struct {
		name     string
		tr       Transport
		src, dst netip.AddrPort
		want     []byte
	}{
		{"TCP over IPv4", Stream, ap("192.168.0.1:56324"), ap("192.168.0.11:443"), cat(sig,
			[]byte{0x21, 0x11, 0x00, 0x0C},
			[]byte{192, 168, 0, 1}, []byte{192, 168, 0, 11},
			[]byte{0xDC, 0x04}, []byte{0x01, 0xBB})},
		{"UDP over IPv4, mapped", Datagram, ap("[::ffff:10.1.2.3]:53"), ap("[::ffff:10.9.8.7]:5353"), cat(sig,
			[]byte{0x21, 0x12, 0x00, 0x0C},
			[]byte{10, 1, 2, 3}, []byte{10, 9, 8, 7},
			[]byte{0x00, 0x35}, []byte{0x14, 0xE9})},
		{"TCP over IPv6", Stream, ap("[2001:db8::1]:1"), ap("[2001:db8::ff]:65535"), cat(sig,
			[]byte{0x21, 0x21, 0x00, 0x24},
			[]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
			[]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff},
			[]byte{0x00, 0x01}, []byte{0xFF, 0xFF})},
		{"UDP over IPv6", Datagram, ap("[::1]:4000"), ap("[::1]:53"), cat(sig,
			[]byte{0x21, 0x22, 0x00, 0x24},
			[]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
			[]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
			[]byte{0x0F, 0xA0}, []byte{0x00, 0x35})},
		{"mixed families: UNSPEC", Stream, ap("192.0.2.1:4000"), ap("[2001:db8::2]:80"), cat(sig, []byte{0x21, 0x00, 0x00, 0x00})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendV2(nil, tt.tr, tt.src, tt.dst)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("AppendV2 =\n% x\nwant\n% x", got, tt.want)
			}
			// The length field counts what follows the 16 fixed bytes.
			if n := int(got[14])<<8 | int(got[15]); n != len(got)-16 {
				t.Fatalf("length field %d, %d bytes follow", n, len(got)-16)
			}
			if string(got[:12]) != Signature {
				t.Fatalf("signature % x", got[:12])
			}
		})
	}
	if got := Append(nil, V2, ap("1.2.3.4:5"), ap("6.7.8.9:10")); len(got) != V2Len4 || got[13] != 0x11 {
		t.Fatalf("Append(V2) = % x, want a TCP over IPv4 header of %d bytes", got, V2Len4)
	}
	if got := Append(nil, None, ap("1.2.3.4:5"), ap("6.7.8.9:10")); len(got) != 0 {
		t.Fatalf("Append(None) = % x, want nothing", got)
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]Version{"": None, "v1": V1, "v2": V2} {
		if v, err := ParseVersion(in); err != nil || v != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", in, v, err, want)
		}
	}
	for _, in := range []string{"1", "V1", "v3", "v2 ", "none"} {
		if _, err := ParseVersion(in); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", in)
		}
	}
}

// TestNoAllocation: with room in the buffer, no version allocates.
func TestNoAllocation(t *testing.T) {
	buf := make([]byte, 0, MaxLen)
	src6, dst6 := ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), ap("[2001:db8::2]:443")
	src4, dst4 := ap("[::ffff:192.0.2.1]:4000"), ap("192.0.2.2:80")
	n := testing.AllocsPerRun(100, func() {
		buf = AppendV1(buf[:0], src6, dst6)
		buf = AppendV1(buf[:0], src4, dst4)
		buf = AppendV2(buf[:0], Stream, src6, dst6)
		buf = AppendV2(buf[:0], Datagram, src4, dst4)
	})
	if n != 0 {
		t.Fatalf("%v allocations per run, want 0", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	buf := make([]byte, 0, MaxLen)
	src, dst := ap("[2001:db8::1]:50000"), ap("[2001:db8::2]:443")
	for _, v := range []Version{V1, V2} {
		b.Run(v.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf = Append(buf[:0], v, src, dst)
			}
		})
	}
}

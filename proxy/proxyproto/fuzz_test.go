package proxyproto

import (
	"bytes"
	"net/netip"
	"strconv"
	"testing"
)

// FuzzAppend: for any pair of addresses, the v1 line is at most MaxV1Len
// bytes, one line ending in CRLF that parses back to the addresses given;
// the v2 header is at most MaxV2Len bytes with a length field that matches
// and the addresses in their place.
func FuzzAppend(f *testing.F) {
	f.Add([]byte{192, 168, 0, 1}, uint16(56324), []byte{192, 168, 0, 11}, uint16(443))
	f.Add(bytes.Repeat([]byte{0xff}, 16), uint16(65535), bytes.Repeat([]byte{0xff}, 16), uint16(0))
	f.Add(append(make([]byte, 10), 0xff, 0xff, 1, 2, 3, 4), uint16(1), []byte{5, 6, 7, 8}, uint16(2))
	f.Fuzz(func(t *testing.T, s []byte, sp uint16, d []byte, dp uint16) {
		sa, _ := netip.AddrFromSlice(s)
		da, _ := netip.AddrFromSlice(d)
		src, dst := netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp)
		fam, su, du := family(src, dst)

		line := AppendV1(nil, src, dst)
		if len(line) > MaxV1Len || !bytes.HasSuffix(line, []byte("\r\n")) || bytes.Count(line, []byte("\n")) != 1 {
			t.Fatalf("bad line %q", line)
		}
		fields := bytes.Fields(line)
		if fam == 0 {
			if string(line) != "PROXY UNKNOWN\r\n" {
				t.Fatalf("line %q for %v -> %v", line, src, dst)
			}
		} else {
			if len(fields) != 6 {
				t.Fatalf("line %q has %d fields", line, len(fields))
			}
			gs, err1 := netip.ParseAddr(string(fields[2]))
			gd, err2 := netip.ParseAddr(string(fields[3]))
			if err1 != nil || err2 != nil || gs != su || gd != du {
				t.Fatalf("line %q: addresses do not parse back to %v %v", line, su, du)
			}
			if string(fields[4]) != strconv.Itoa(int(sp)) || string(fields[5]) != strconv.Itoa(int(dp)) {
				t.Fatalf("line %q: ports", line)
			}
		}

		h := AppendV2(nil, Datagram, src, dst)
		if len(h) > MaxV2Len || string(h[:12]) != Signature || h[12] != 0x21 {
			t.Fatalf("bad header % x", h)
		}
		if n := int(h[14])<<8 | int(h[15]); n != len(h)-16 {
			t.Fatalf("length field %d, %d bytes follow", n, len(h)-16)
		}
		alen := map[int]int{0: 0, 4: 4, 6: 16}[fam]
		if len(h) != 16+2*alen+min(alen, 4)/4*4 {
			t.Fatalf("header % x: %d bytes for family %d", h, len(h), fam)
		}
		if alen > 0 {
			gs, _ := netip.AddrFromSlice(h[16 : 16+alen])
			gd, _ := netip.AddrFromSlice(h[16+alen : 16+2*alen])
			p := h[16+2*alen:]
			if gs != su || gd != du || uint16(p[0])<<8|uint16(p[1]) != sp || uint16(p[2])<<8|uint16(p[3]) != dp {
				t.Fatalf("header % x does not hold %v -> %v", h, src, dst)
			}
		}
	})
}

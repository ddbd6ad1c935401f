// Package proxyproto writes the connection headers of the PROXY protocol
// (HAProxy's specification, doc/proxy-protocol.txt): version 1, one line of
// text, and version 2, a binary block. A relay sends one before the first
// byte of a TCP connection to its backend, or (version 2 only) at the start
// of every UDP datagram, so that the backend learns the client's address and
// the address the client connected to.
//
// The functions append to a caller's buffer and allocate nothing when it has
// room for MaxLen bytes.
package proxyproto

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Version is a header format; the zero value means no header.
type Version uint8

const (
	None Version = 0
	V1   Version = 1 // text: "PROXY TCP4 src dst sport dport\r\n"
	V2   Version = 2 // binary: signature, version and command, family, addresses
)

// ParseVersion parses "v1" or "v2" (the -proxy-protocol flag's values);
// "" is None.
func ParseVersion(s string) (Version, error) {
	switch s {
	case "":
		return None, nil
	case "v1":
		return V1, nil
	case "v2":
		return V2, nil
	}
	return None, fmt.Errorf("unknown PROXY protocol version %q (want v1 or v2)", s)
}

func (v Version) String() string {
	switch v {
	case None:
		return "none"
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "v" + strconv.Itoa(int(v))
}

// Transport is the socket type a version 2 header announces.
type Transport uint8

const (
	Stream   Transport = 1 // SOCK_STREAM: TCP
	Datagram Transport = 2 // SOCK_DGRAM: UDP
)

// Lengths of headers, in bytes.
const (
	MaxV1Len = 107     // the longest line the specification allows, CRLF included
	V2Len4   = 16 + 12 // a version 2 header for IPv4: fixed part, addresses and ports
	V2Len6   = 16 + 36 // the same for IPv6
	MaxV2Len = V2Len6  // the longest version 2 header written here (no TLVs)
	MaxLen   = MaxV1Len
)

// Signature is the 12 bytes that begin a version 2 header.
const Signature = "\r\n\r\n\x00\r\nQUIT\n"

// Version 2 protocol bytes: the version and command byte (version 2, PROXY)
// and the family and transport byte for each family.
const (
	v2ProxyCmd  = 0x21
	famUnspec   = 0x00
	famInet     = 0x10
	famInet6    = 0x20
	v2FixedPart = 16
)

// family says how src and dst are announced: both IPv4 (IPv4-mapped IPv6
// addresses count as IPv4), both IPv6, or neither (0: an invalid address,
// or the two of different families), and returns them unmapped and without
// zones.
func family(src, dst netip.AddrPort) (fam int, s, d netip.Addr) {
	s, d = src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
	switch {
	case !s.IsValid() || !d.IsValid():
		return 0, s, d
	case s.Is4() && d.Is4():
		return 4, s, d
	case s.Is6() && d.Is6():
		return 6, s, d
	}
	return 0, s, d
}

// Append appends the header of version v for a TCP connection from src to
// dst; None appends nothing.
func Append(b []byte, v Version, src, dst netip.AddrPort) []byte {
	switch v {
	case V1:
		return AppendV1(b, src, dst)
	case V2:
		return AppendV2(b, Stream, src, dst)
	}
	return b
}

// AppendV1 appends the version 1 line for a TCP connection from src to dst:
// "PROXY TCP4 " (both addresses IPv4 or IPv4-mapped) or "PROXY TCP6 ", the
// source and destination addresses, the source and destination ports, CRLF.
// When an address is invalid or the two differ in family it appends the
// short form "PROXY UNKNOWN\r\n", which the receiver takes as "use the
// connection's own addresses".
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	fam, s, d := family(src, dst)
	switch fam {
	case 4:
		b = append(b, "PROXY TCP4 "...)
	case 6:
		b = append(b, "PROXY TCP6 "...)
	default:
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	b = s.AppendTo(b)
	b = append(b, ' ')
	b = d.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, '\r', '\n')
}

// AppendV2 appends the version 2 header, command PROXY, for a connection
// (Stream) or datagram (Datagram) from src to dst: AF_INET with 12 bytes of
// addresses and ports when both are IPv4 or IPv4-mapped, AF_INET6 with 36
// when both are IPv6, in network byte order. When an address is invalid or
// the two differ in family it announces AF_UNSPEC with no address block,
// which the receiver takes as "use the connection's own addresses".
func AppendV2(b []byte, t Transport, src, dst netip.AddrPort) []byte {
	fam, s, d := family(src, dst)
	b = append(b, Signature...)
	b = append(b, v2ProxyCmd)
	switch fam {
	case 4:
		b = append(b, famInet|byte(t), 0, 12)
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	case 6:
		b = append(b, famInet6|byte(t), 0, 36)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	default:
		return append(b, famUnspec, 0, 0)
	}
	return append(b, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()))
}

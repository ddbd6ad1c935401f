// Package sockopt owns every raw socket option hostproxy sets: the drop-all
// cBPF filter (attached before bind, detached once NAT is in place),
// IP_PKTINFO / IPV6_RECVPKTINFO, IPV6_V6ONLY, SO_REUSEADDR and SCTP_INITMSG,
// and creating a bound (for stream protocols, listening) socket as an
// *os.File.
//
// Linux is the target; on other systems every function returns
// ErrUnsupported.
package sockopt

import (
	"errors"
	"fmt"
	"strings"
)

// Proto is a transport protocol hostproxy relays.
type Proto uint8

// The protocols.
const (
	TCP Proto = iota + 1
	UDP
	SCTP
)

// ParseProto parses "tcp", "udp" or "sctp" (case-insensitive).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "sctp":
		return SCTP, nil
	}
	return 0, fmt.Errorf("unsupported protocol %q (want tcp, udp or sctp)", s)
}

// String returns "tcp", "udp", "sctp" or "proto(N)".
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Stream reports whether p is connection-oriented (sockets listen).
func (p Proto) Stream() bool { return p == TCP || p == SCTP }

// Options are the choices a caller makes when creating a socket.
type Options struct {
	// DropAll attaches a cBPF program that drops every packet before the
	// socket is bound, so that no SYN is answered and no datagram is queued
	// until DetachFilter is called.
	DropAll bool
}

// ErrUnsupported is returned on platforms other than Linux.
var ErrUnsupported = errors.New("not supported on this platform")

// ErrNoSCTP is wrapped by errors from creating an SCTP socket on a kernel
// without SCTP support.
var ErrNoSCTP = errors.New("kernel has no SCTP support")

// MaxSCTPStreams is the number of outbound streams SCTP sockets ask for in
// SCTP_INITMSG: the protocol's maximum.
const MaxSCTPStreams = 65535

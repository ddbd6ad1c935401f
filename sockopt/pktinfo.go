package sockopt

import "net/netip"

// Pktinfo is what the kernel says, in an IP_PKTINFO or IPV6_PKTINFO control
// message, about where a received datagram was going.
type Pktinfo struct {
	// Dst is the destination address in the datagram's IP header: the
	// address the client wrote to (for IPv4 possibly a broadcast address).
	Dst netip.Addr
	// Local is the local address a reply should come from: for IPv4 the
	// kernel's ipi_spec_dst (the interface address when Dst is a broadcast),
	// for IPv6 the same as Dst.
	Local netip.Addr
	// Ifindex is the interface the datagram arrived on.
	Ifindex uint32
}

package sockopt

import (
	"errors"
	"net/netip"
)

// ErrNoNetAdmin is wrapped by CheckTransparent's error when the process may
// not set IP_TRANSPARENT: it lacks CAP_NET_ADMIN (and CAP_NET_RAW, which
// the kernel accepts too).
var ErrNoNetAdmin = errors.New("IP_TRANSPARENT needs CAP_NET_ADMIN (or CAP_NET_RAW), which this process does not have")

// Source says where a transparent backend connection or flow leaves from
// (ClientSource).
type Source uint8

const (
	// SourceClient: the client's own address, bound with IP_TRANSPARENT.
	SourceClient Source = iota
	// SourceLocal: the client is one of the host's own addresses
	// (loopback or another local address); the host's normal source is
	// kept, and no rule is needed for the replies.
	SourceLocal
	// SourceOtherFamily: the client's family is not the backend's (an
	// IPv6 client of an IPv4 backend, or the reverse); the host's normal
	// source is kept.
	SourceOtherFamily
)

// IsLocal reports whether a is one of the host's own addresses: loopback,
// or an address local says the host has (local may be nil). An
// IPv4-mapped address is looked up as IPv4.
func IsLocal(a netip.Addr, local *LocalAddrs) bool {
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	return local != nil && local.Contains(a)
}

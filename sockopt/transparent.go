package sockopt

import (
	"errors"
	"net/netip"
)

// ErrNoNetAdmin is wrapped by CheckTransparent's and LearnBackend's error
// when the process may not set IP_TRANSPARENT: it lacks CAP_NET_ADMIN (and
// CAP_NET_RAW, which the kernel accepts too).
var ErrNoNetAdmin = errors.New("IP_TRANSPARENT needs CAP_NET_ADMIN (or CAP_NET_RAW), which this process does not have")

// Source says where a transparent backend connection or UDP flow leaves
// from (TransparentBackend.Source).
type Source uint8

const (
	// SourceClient: the client's own address, bound with IP_TRANSPARENT
	// (BindTransparent).
	SourceClient Source = iota
	// SourceHost: the host's normal source is kept, and no rule is needed
	// for the replies; see TransparentBackend.Source for which clients.
	SourceHost
	// SourceOtherFamily: the client's family is not the backend's (an
	// IPv6 client of an IPv4 backend, or the reverse); the host's normal
	// source is kept. The relay says so once in its log.
	SourceOtherFamily
)

// TransparentBackend is what a transparent relay learns about a backend
// address once, at start (LearnBackend), to decide each client's source.
type TransparentBackend struct {
	// V6: the backend, hence the socket toward it, is IPv6.
	V6 bool
	// Local: the backend is one of the host's own addresses. The host's
	// replies to a client's address are routed out toward the client,
	// never through the prerouting rules that would bring them back to
	// the relay's socket, so such a backend cannot see its clients: every
	// client keeps the host's source (the relay logs it once at start).
	Local bool
	// Link is the prefix of the host's address toward the backend, as
	// configured on its interface: the backend's own link when it is
	// directly attached (a bridge or veth of containers), else its
	// gateway's. A client on that link keeps the host's source: the
	// backend (or its gateway) would answer it directly, from an address
	// the client never wrote to. The zero Prefix contains nothing.
	Link netip.Prefix
}

// Source decides where the backend connection or flow of client (any
// form: IPv4-mapped is looked at as IPv4) leaves from. dst is the host
// address the client wrote to, when known (the invalid Addr otherwise).
// The host's normal source (SourceHost) is kept for a client on loopback
// or unspecified, an IPv6 link-local one (bound, it would tie the socket
// to the client's link), the address it wrote to (a host process writing
// to a host address, unbound, leaves from that address), a client on the
// backend's Link, and every client of a Local backend. A client of the
// other family than the backend gets SourceOtherFamily; any other client
// SourceClient. The host's other addresses are told by BindTransparent,
// which finds the client's port held. It makes no system call.
func (b *TransparentBackend) Source(client, dst netip.Addr) Source {
	a := client.Unmap()
	switch {
	case b.Local, a.IsLoopback(), a.IsUnspecified(), a.Is6() && a.IsLinkLocalUnicast(),
		a == dst.Unmap(), b.Link.Contains(a):
		return SourceHost
	case a.Is6() != b.V6:
		return SourceOtherFamily
	}
	return SourceClient
}

// Bound says how BindTransparent bound a socket.
type Bound uint8

const (
	// BoundClientPort: to the client's address and port.
	BoundClientPort Bound = iota
	// BoundOtherPort: to the client's address with a port the kernel
	// picked, the client's being in use here (another connection or flow
	// of the client, toward this or another backend).
	BoundOtherPort
	// BoundHostClient: the client is one of the host's own addresses, whose
	// port its own socket holds. The socket is bound to that address,
	// without IP_TRANSPARENT, and is of no further use: the caller opens
	// another, which keeps the host's normal source.
	BoundHostClient
)

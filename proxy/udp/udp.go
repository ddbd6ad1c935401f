// Package udp relays datagrams from a host UDP socket to one backend.
//
// Every client is a flow, keyed by its address and the local address it wrote
// to. A flow owns a socket connected to the backend, so the backend's replies
// are told apart by the socket they arrive on, and each reply leaves the host
// socket with the local address the client wrote to as its source
// (IP_PKTINFO / IPV6_PKTINFO), so that a socket bound to 0.0.0.0 or :: on a
// host with several addresses answers from the right one. When the kernel
// gives no usable PKTINFO the kernel picks the source.
//
// One goroutine serves everything: it waits on an epoll set holding the host
// socket and every flow socket (for a Range, every host socket of the range
// and all their flows, each socket keeping its own flows, bound and
// counters), reads with recvmmsg into a fixed set of
// 64 KiB buffers (32 per direction) and writes with sendmmsg, coalescing runs
// of same-size datagrams for one destination with UDP GSO (UDP_SEGMENT)
// where the kernel has it; HOSTPROXY_UDP_GSO=0 turns GSO off. The host
// socket and the flow sockets have UDP GRO (UDP_GRO) on where the kernel has
// it, so a run a client or the backend sent with GSO arrives as one buffer,
// which is split into its datagrams and goes on as GSO runs again;
// HOSTPROXY_UDP_GRO=0 turns GRO off, and without it the kernel splits such
// runs on arrival. The steady state allocates nothing per datagram, and an
// idle flow costs its socket and about 330 bytes of heap
// (BenchmarkIdleFlow).
//
// With Config.Transparent each flow's socket leaves from the client's own
// address, so the backend sees the client: it gets IP_TRANSPARENT (or
// IPV6_TRANSPARENT) and is bound to the client's address and port before it
// connects, one setsockopt and one bind more per new flow and nothing per
// datagram; replies leave the host socket as above. The backend's replies
// are addressed to the client, and reach the flow socket only with the host
// rules of docs/client-address.md; without them the host drops them. Which
// clients keep the host's normal source instead, and the bind when the
// client's port is taken, are the contract TCP shares, in sockopt
// (TransparentBackend.Source, BindTransparent, LearnBackend); the relay
// gives it the address each datagram was written to, says once per host
// socket that a client of the other family keeps the host's source, and
// says in the log at start when the backend is one of the host's own
// addresses. New fails when the process may not make a socket transparent
// (it needs CAP_NET_ADMIN or CAP_NET_RAW).
//
// Flows expire after IdleTimeout without a datagram in either direction (a
// client that keeps sending keeps its flow, whether the backend answers or
// not). At most MaxFlows exist; a new client beyond that evicts the least
// recently used flow. A datagram the kernel had to truncate is counted and
// dropped, never forwarded cut; an ICMP error from the backend
// (ECONNREFUSED) never ends a flow, and the send that reports it is retried.
package udp

import (
	"net/netip"
	"time"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// Defaults for the zero Config fields.
const (
	// DefaultIdleTimeout is docker-proxy's UDP flow timeout.
	DefaultIdleTimeout = 90 * time.Second
	// DefaultMaxFlows bounds the flow table, and so the sockets (one file
	// descriptor and a few hundred bytes of heap each) a flood of new
	// sources can make the relay hold.
	DefaultMaxFlows = 4096
)

// MaxDatagram is the largest payload relayed: the largest a UDP datagram
// without IPv6 jumbograms can carry. Buffers are this big, so a datagram is
// never cut.
const MaxDatagram = 65535

// Config configures a Proxy. The zero value of each field picks its default.
type Config struct {
	// Backend receives the datagrams. An IPv4-mapped IPv6 address is
	// treated as IPv4; the host socket's family does not need to match.
	Backend netip.AddrPort
	// IdleTimeout closes a flow that has relayed nothing in either
	// direction for this long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxFlows bounds the number of flows; 0 means DefaultMaxFlows. When a
	// new client arrives with the table full, the least recently used flow
	// is closed to make room.
	MaxFlows int
	// Transparent makes each flow's socket leave from the client's own
	// address, and its port where free (IP_TRANSPARENT /
	// IPV6_TRANSPARENT), so that the backend sees the client; see the
	// package comment. New fails when the process may not set the option
	// (it needs CAP_NET_ADMIN or CAP_NET_RAW).
	Transparent bool
	// Logger receives warnings and errors; nil discards them.
	Logger *logging.Logger

	// ProxyProtocol proxyproto.V2 starts every datagram to the backend
	// with a PROXY protocol v2 header (DGRAM): source the client's address
	// and port, destination the address the client wrote to (from
	// PKTINFO, so the real one on a wildcard socket) and the host socket's
	// port. Replies pass unchanged. V1 has no UDP form: New fails.
	ProxyProtocol proxyproto.Version
}

func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return c.IdleTimeout
}

func (c Config) maxFlows() int {
	if c.MaxFlows <= 0 {
		return DefaultMaxFlows
	}
	return c.MaxFlows
}

// Stats are the relay's counters since New. Datagram counts are of payloads
// handed to the kernel, in each direction.
//
// A datagram received and not sent on is counted once, in exactly one of
// Truncated, Dropped, Rejected and FlowsFailed. A new client's datagram
// whose flow could not be opened counts in FlowsFailed only: each failed
// open is asked for by one received datagram (a run coalesced by UDP GRO
// counts as one), which is dropped. Refused counts datagrams that were sent
// (they are in ToBackend) and bounced.
type Stats struct {
	Flows          int    // open now
	FlowsCreated   uint64 // opened since New
	FlowsExpired   uint64 // closed after IdleTimeout
	FlowsEvicted   uint64 // closed to make room for a new client (MaxFlows)
	FlowsFailed    uint64 // could not be opened (socket or connect failed); the datagram that asked is dropped
	ToBackend      uint64 // datagrams sent to the backend
	ToClient       uint64 // datagrams sent back to clients
	BytesToBackend uint64
	BytesToClient  uint64
	Truncated      uint64 // datagrams dropped because the kernel cut them (MSG_TRUNC)
	Refused        uint64 // ICMP errors (ECONNREFUSED) reported by backend sockets
	Dropped        uint64 // datagrams dropped for another reason (bad source address, send error, closed flow)
	Rejected       uint64 // datagrams from new clients dropped during Shutdown
}

var _ proxy.Proxy = (*Proxy)(nil)

// add adds o's counters to s.
func (s *Stats) add(o Stats) {
	s.Flows += o.Flows
	s.FlowsCreated += o.FlowsCreated
	s.FlowsExpired += o.FlowsExpired
	s.FlowsEvicted += o.FlowsEvicted
	s.FlowsFailed += o.FlowsFailed
	s.ToBackend += o.ToBackend
	s.ToClient += o.ToClient
	s.BytesToBackend += o.BytesToBackend
	s.BytesToClient += o.BytesToClient
	s.Truncated += o.Truncated
	s.Refused += o.Refused
	s.Dropped += o.Dropped
	s.Rejected += o.Rejected
}

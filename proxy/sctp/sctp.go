// Package sctp relays SCTP associations from a listening host socket to one
// backend, as docker-proxy does: one backend association per client
// association (one-to-one, SOCK_STREAM style sockets), every message relayed
// with its stream id, payload protocol identifier (PPID) and unordered flag,
// in both directions.
//
// Both the listening socket and the backend sockets ask for the protocol's
// maximum number of streams (SCTP_INITMSG); a message on a stream the other
// side did not grant ends the association pair. A graceful SHUTDOWN from one
// side is passed on as a SHUTDOWN to the other; an ABORT or error as an
// ABORT. An IPv6 listener may relay to an IPv4 backend and the reverse.
//
// Messages are read into 64 KiB buffers. Linux 6.1 has no SCTP_EXPLICIT_EOR,
// so a message larger than that reaches the other side as several messages
// with the same stream id and PPID.
//
// A Range serves many listening sockets, each relayed to its own backend,
// with one accept goroutine (an epoll set of the sockets); mappings can be
// added and removed while it serves. A Proxy is a Range of one socket. Both
// count per mapping (proxy.StreamCounters): associations accepted and open,
// bytes each way, failed dials and accepts, and associations that ended
// with an ABORT. Accept and dial errors are handled by their
// proxy.ErrorClass; a backend dial that finds no free local port
// (EADDRNOTAVAIL) makes the accept loop back off and is logged once with
// the remedy.
//
// The package also offers the small message-oriented client and listener
// (Dial, Listen, Conn) that the relay is built on; tests use them too. SCTP is
// supported on Linux only; elsewhere every constructor returns an error
// wrapping sockopt.ErrUnsupported.
package sctp

import (
	"net/netip"
	"os"
	"time"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
)

// Config configures a Proxy. The zero value of every field but Backend is
// usable.
type Config struct {
	// Backend is the address every association is relayed to.
	Backend netip.AddrPort
	// DialTimeout bounds setting up the backend association; 0 means 5s.
	DialTimeout time.Duration
	// Logger receives the proxy's events; nil discards them.
	Logger *logging.Logger
}

// DefaultDialTimeout is the dial timeout of a Config whose DialTimeout is 0.
const DefaultDialTimeout = 5 * time.Second

func (c Config) dialTimeout() time.Duration {
	if c.DialTimeout <= 0 {
		return DefaultDialTimeout
	}
	return c.DialTimeout
}

// BufferSize is the size of the buffer each direction of a relayed
// association reads messages into.
const BufferSize = 64 << 10

// Mapping is one listening socket of a Range and the backend its
// associations are relayed to.
type Mapping struct {
	File    *os.File // a listening one-to-one SCTP socket; NewRange and Add duplicate it
	Backend netip.AddrPort
}

// Info is the SCTP information a message carries besides its bytes.
type Info struct {
	Stream    uint16 // stream id
	PPID      uint32 // payload protocol identifier, exactly as on the wire
	Unordered bool   // delivered without regard to stream order
}

// Addr is an SCTP endpoint address; it implements net.Addr.
type Addr struct {
	AddrPort netip.AddrPort
}

// Network returns "sctp".
func (a *Addr) Network() string { return "sctp" }

// String returns the address as host:port.
func (a *Addr) String() string {
	if a == nil {
		return "<nil>"
	}
	return a.AddrPort.String()
}

var (
	_ proxy.Proxy = (*Proxy)(nil)
	_ proxy.Proxy = (*Range)(nil)
)

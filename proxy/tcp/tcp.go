// Package tcp relays TCP connections from listening host sockets to
// backend addresses.
//
// On Linux a Proxy runs a few event loops (one per P, at most), each one
// goroutine and one epoll set: one until two connections are open at once,
// then the others. The loops accept on the listening sockets
// without blocking, connect to the backend without blocking, and move the
// bytes with splice(2) through pipes taken from a loop-owned pool only while
// bytes are in flight. An open connection that carries nothing holds its two
// sockets and a record of about a hundred bytes: no goroutine, no pipe.
// Elsewhere each connection is relayed by two goroutines copying between
// *net.TCPConn.
//
// The relay keeps TCP's meaning intact:
//
//   - Half-close: EOF read from one side becomes a FIN (shutdown(SHUT_WR))
//     on the other; the pair is closed when both directions have ended.
//   - Reset: an error on either side (ECONNRESET, EPIPE, a keepalive timeout)
//     resets the other side too (SO_LINGER 0), so that a peer never mistakes a
//     broken stream for a complete one.
//   - A backend that refuses, is unreachable or does not answer within
//     Config.DialTimeout gets the client reset at once.
//   - Accept errors are handled by their proxy.ClassifyAccept class: one
//     that lost only the pending connection is skipped, a shortage such as
//     EMFILE backs off (proxy.Backoff, 5ms to 1s) and retries, and only a
//     listening socket that is unusable ends Serve. A backend connect that
//     finds no free source port (EADDRNOTAVAIL) or no descriptor resets the
//     client and backs off accepting in the same way (proxy.ClassifyDial).
//   - Failures that repeat are logged through proxy.RateLimited: a warning
//     at once, then at most one per interval with the number held back (the
//     rest at Debug). No free source port is logged with its remedy
//     (proxy.AddrExhaustedHint) at most once a minute.
//   - Keepalive is on for both connections and TCP_NODELAY stays on.
//
// One Proxy may serve a range of listening sockets, each relayed to its own
// backend (NewRange); a mapping then costs its socket and a few hundred
// bytes, not a goroutine. Mappings can be added and removed while the
// Proxy serves (Add, Remove).
package tcp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// DefaultDialTimeout is the backend dial timeout used when
// Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// noPortLogEvery is how often at most a dial that found no free source port
// is logged, with its remedy, above Debug.
const noPortLogEvery = time.Minute

// keepAlive is applied to both connections of a relay: a dead peer is found
// after about 2.5 minutes of silence (Go's default probe schedule).
var keepAlive = net.KeepAliveConfig{
	Enable:   true,
	Idle:     15 * time.Second,
	Interval: 15 * time.Second,
	Count:    9,
}

// Config says where and how to relay.
type Config struct {
	// Backend is the address every accepted connection is relayed to. An
	// IPv4-mapped IPv6 address is dialed as IPv4.
	Backend netip.AddrPort
	// DialTimeout bounds the connect to Backend; zero or less means
	// DefaultDialTimeout (5s).
	DialTimeout time.Duration
	// Logger receives failures (Warn) and per-connection events (Debug);
	// nil discards everything.
	Logger *logging.Logger

	// ProxyProtocol, when not proxyproto.None, sends every backend a PROXY
	// protocol header of that version as soon as the connect completes,
	// before any byte of the client's (and whether or not the client
	// speaks first): source the client's address and port, destination
	// the address and port the client connected to (the accepted socket's
	// own, so the real local address on a wildcard listener).
	// IPv4-mapped addresses are announced as IPv4.
	ProxyProtocol proxyproto.Version
	// Transparent connects to the backend from the client's own address,
	// and its port where free (else another port of that address), with
	// IP_TRANSPARENT / IPV6_TRANSPARENT, so that the backend sees the
	// client. Which clients keep the host's normal source instead (the
	// host's own, the backend's link, every client of a backend on the
	// host, the other family: the last two logged once) is the contract
	// UDP shares, in sockopt (TransparentBackend.Source, BindTransparent).
	// It needs CAP_NET_ADMIN (New fails without it)
	// and the host rules of docs/client-address.md for the replies; it is
	// supported on Linux only (elsewhere New and NewRange fail, and Serve
	// of a NewListener proxy).
	Transparent bool
}

// transparentUnsupported is the error of New and NewRange for
// Config.Transparent where the platform has no IP_TRANSPARENT.
const transparentUnsupported = "tcp proxy: -transparent (IP_TRANSPARENT) is not supported on this platform"

// Mapping is one socket of a range proxy (NewRange) and the backend its
// connections are relayed to.
type Mapping struct {
	File    *os.File // a listening TCP socket; NewRange and Add duplicate it
	Backend netip.AddrPort
}

var (
	_ proxy.Proxy       = (*Proxy)(nil)
	_ proxy.StreamStats = (*Proxy)(nil)
)

func checkBackend(ap netip.AddrPort) error {
	if !ap.Addr().IsValid() || ap.Port() == 0 {
		return fmt.Errorf("tcp proxy: invalid backend address %s (want IP:port with a port in 1-65535)", ap)
	}
	return nil
}

// dialFailureLog returns the rate limit and the message of a failed dial of
// class: the port's limit, or for want of a source port the proxy's.
func (p *Proxy) dialFailureLog(pt *port, class proxy.ErrorClass) (*proxy.RateLimited, string) {
	switch class {
	case proxy.AddrExhausted:
		return &p.noPortLog, "no free source port toward the backend; client reset, accepting backs off"
	case proxy.Retry:
		return pt.dialLog, "backend dial failed; client reset, accepting backs off"
	}
	return pt.dialLog, "backend dial failed; client reset"
}

// logDialFailure writes the line of a failed dial of class for an answer of
// its rate limit's Allow (ok, held): a warning naming the client (its field),
// the listener, the backend and the error, with the remedy for want of a
// source port; at Debug when the line was held back.
func (p *Proxy) logDialFailure(pt *port, class proxy.ErrorClass, msg string, ok bool, held int64, client zapcore.Field, err error, took time.Duration) {
	fields := make([]zapcore.Field, 0, 5)
	fields = append(fields, client, logging.Err(err), logging.Duration("after", took))
	if class == proxy.AddrExhausted {
		fields = append(fields, logging.String("remedy", proxy.AddrExhaustedHint("tcp")))
	}
	proxy.Emit(p.logFor(pt), zapcore.WarnLevel, ok, held, msg, fields...)
}

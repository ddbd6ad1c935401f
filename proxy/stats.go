package proxy

import (
	"net/netip"
	"sync/atomic"
)

// StreamCounters count the work of one stream mapping: a TCP or SCTP host
// socket and the backend its connections go to. Every field is updated with
// a single atomic operation, so counting takes no lock and allocates nothing,
// and the counters can be read at any time from any goroutine.
type StreamCounters struct {
	Accepted     atomic.Uint64 // connections accepted on the host socket
	Active       atomic.Int64  // connections open now (accepted, not yet closed)
	BytesUp      atomic.Uint64 // bytes relayed from clients to the backend
	BytesDown    atomic.Uint64 // bytes relayed from the backend to clients
	DialErrors   atomic.Uint64 // backend connects that failed or timed out
	AcceptErrors atomic.Uint64 // accept calls that failed (EMFILE, ENOBUFS, ...)
	Resets       atomic.Uint64 // connections that ended with a reset on either side
}

// StreamSnapshot is a copy of StreamCounters taken at one moment.
type StreamSnapshot struct {
	Accepted, BytesUp, BytesDown, DialErrors, AcceptErrors, Resets uint64
	Active                                                         int64
}

// Snapshot returns the current values. Each is read atomically; together
// they are not one consistent cut, which counters do not need.
func (c *StreamCounters) Snapshot() StreamSnapshot {
	return StreamSnapshot{
		Accepted:     c.Accepted.Load(),
		Active:       c.Active.Load(),
		BytesUp:      c.BytesUp.Load(),
		BytesDown:    c.BytesDown.Load(),
		DialErrors:   c.DialErrors.Load(),
		AcceptErrors: c.AcceptErrors.Load(),
		Resets:       c.Resets.Load(),
	}
}

// StreamStats is implemented by the stream relays (proxy/tcp, proxy/sctp):
// EachMapping calls fn once per host socket with its listening address, its
// backend and its counters, in the order the sockets were given. It is safe
// to call at any time, also after Close.
type StreamStats interface {
	EachMapping(fn func(listen, backend netip.AddrPort, c *StreamCounters))
}

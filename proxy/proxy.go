// Package proxy defines what every hostproxy protocol relay (proxy/tcp,
// proxy/udp, proxy/sctp) provides, and the small helpers they share. It holds
// nothing protocol-specific.
package proxy

import (
	"context"
	"errors"
	"time"
)

// Proxy relays traffic from a host socket to one backend.
//
// Serve may be called once. It serves until ctx is done, Close is called or
// Shutdown completes, and then returns nil; it returns a non-nil error only
// when serving failed for another reason. It never exits the process.
//
// Close stops serving at once: the host socket, every relayed connection or
// flow and every backend socket are closed, and Serve returns. Close is safe to
// call more than once and from any goroutine.
//
// Shutdown stops accepting new connections (TCP, SCTP) or new flows (UDP) at
// once, lets the open ones finish until ctx is done, then closes whatever is
// left as Close does. It returns ctx.Err() when it had to cut connections
// short, nil otherwise.
type Proxy interface {
	Serve(ctx context.Context) error
	Close() error
	Shutdown(ctx context.Context) error
}

// ErrClosed is returned by methods of a proxy that was already closed, other
// than Close itself.
var ErrClosed = errors.New("proxy closed")

// Backoff is the delay schedule of an accept loop after an error such as
// EMFILE: it starts at Min and doubles up to Max. The zero value uses 5ms and
// 1s. It is not safe for concurrent use; each loop owns one.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the delay to wait before the next attempt and doubles it.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 5 * time.Millisecond
	}
	if hi <= 0 {
		hi = time.Second
	}
	switch {
	case b.cur < lo:
		b.cur = lo
	case b.cur*2 > hi:
		b.cur = hi
	default:
		b.cur *= 2
	}
	return b.cur
}

// Reset starts the schedule again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for the next delay or until done is closed; it reports whether
// the full delay elapsed.
func (b *Backoff) Sleep(done <-chan struct{}) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

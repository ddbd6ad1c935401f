// Package proxy defines what every hostproxy protocol relay (proxy/tcp,
// proxy/udp, proxy/sctp) provides: the lifecycle of Proxy, stated once, and
// the per-mapping counters of the stream relays. It also holds what the
// relays share: the accept back-off (Backoff), one classification of accept
// and dial errors (ErrorClass), and one rate-limited logger for messages
// about failures that keep happening (RateLimited). It holds nothing
// protocol-specific.
package proxy

import (
	"context"
	"errors"
	"time"
)

// Proxy relays traffic from host sockets to their backends. This comment is
// the one statement of the lifecycle every relay (proxy/tcp, proxy/udp,
// proxy/sctp) keeps; internal/proxytest.Contract tests each against it.
//
// Serve serves until ctx is done, Close is called or Shutdown completes, and
// then returns nil; it returns a non-nil error only when serving failed for
// another reason (the host socket became unusable). It never exits the
// process. Serve may be called once: a second call while serving returns an
// error at once and leaves the first serving, and Serve on a proxy already
// closed returns proxy.ErrClosed.
//
// Close stops serving at once: the host sockets, every relayed connection or
// flow and every backend socket are closed, and Serve returns. Close is safe
// to call more than once and from any goroutine; it always returns nil once
// the proxy is closed. Close before Serve releases the sockets.
//
// Shutdown stops taking new connections (TCP, SCTP) or new flows (UDP) at
// once, lets the open ones go on until they end by themselves (a UDP flow
// ends when it has been idle for its timeout), then closes everything as
// Close does and returns nil. When ctx is done first it closes what is left
// as Close does and returns ctx.Err(). With nothing open it returns at once.
// Serve returns nil once Shutdown has completed.
//
// After Close, or after Shutdown has returned, the proxy is closed for good:
// Close returns nil, and Shutdown and Serve return an error wrapping
// proxy.ErrClosed.
type Proxy interface {
	Serve(ctx context.Context) error
	Close() error
	Shutdown(ctx context.Context) error
}

// ErrClosed is returned (wrapped) by Serve and Shutdown of a proxy that was
// already closed; Close itself returns nil.
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
func (b *Backoff) Sleep(done <-chan struct{}) bool { return Sleep(b.Next(), done) }

// Sleep waits for d or until done is closed; it reports whether the full
// delay elapsed. A d of zero or less returns true at once.
func Sleep(d time.Duration, done <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

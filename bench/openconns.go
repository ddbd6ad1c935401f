package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the open-connections test, so that a proxy that stops
// accepting (out of descriptors) fails the round instead of hanging it.
const (
	openDialTimeout = 3 * time.Second // per connection: connect, then the echo
	openSettleEvery = 50 * time.Millisecond
	openSettleMax   = 3 * time.Second
	openSettleSame  = 3 // equal descriptor counts in a row that mean "at rest"
)

// openConns returns the Run of a test that opens n connections through the
// proxy, each checked by a 1-byte echo so that the proxy holds both sides,
// and keeps them open and idle while it measures the proxy's process tree:
// descriptors (entries of /proc/PID/fd) and Pss, at rest with the n
// connections open minus at rest before the first, divided by the number
// opened. Before the baseline one connection goes through the proxy and is
// closed, so that what a proxy sets up on its first connection is not
// counted per connection.
//
// Opening stops at the first connection that fails (a proxy out of
// descriptors stops accepting or resets); the round then reports how many
// opened, with the failure as its note. The CPU per operation is the
// proxy's CPU while the connections were opened, per connection opened.
func openConns(n int) func(ctx context.Context, r *round) (map[string]float64, error) {
	return func(ctx context.Context, r *round) (map[string]float64, error) {
		if r.pids == nil {
			return nil, errors.New("no proxy process to measure")
		}
		if err := connOnce(r.target); err != nil {
			return nil, fmt.Errorf("first connection: %w", err)
		}
		base, err := atRest(ctx, r.pids)
		if err != nil {
			return nil, err
		}

		var (
			mu      sync.Mutex
			conns   = make([]net.Conn, 0, n)
			next    atomic.Int64
			stop    atomic.Bool
			failure error
		)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		ticks0, ok0 := r.proxyTicks()
		t0 := time.Now()
		var wg sync.WaitGroup
		for range min(r.cfg.Parallel, n) {
			wg.Go(func() {
				for !stop.Load() && ctx.Err() == nil {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					c, err := openIdle(ctx, r.target)
					mu.Lock()
					if err != nil {
						if failure == nil {
							failure = fmt.Errorf("connection %d: %w", i, err)
						}
						stop.Store(true)
					} else {
						conns = append(conns, c)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		openTime := time.Since(t0)
		if ticks1, ok1 := r.proxyTicks(); ok0 && ok1 {
			r.opTicks, r.opTimed = ticks1-min(ticks1, ticks0), true
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		opened := len(conns)
		if opened == 0 {
			return nil, failure
		}
		if failure != nil {
			r.note = fmt.Sprintf("opened %d of %d: %v", opened, n, failure)
		}
		if r.inst != nil {
			// A proxy that exits when it runs out of descriptors
			// (docker-proxy) leaves nothing to measure at rest, and its
			// CPU is lost with it.
			if how := waitExit(r.inst, failure != nil); how != "" {
				r.note = fmt.Sprintf("opened %d of %d, then %s", opened, n, how)
				return map[string]float64{"opened": float64(opened), "open_s": openTime.Seconds()}, nil
			}
		}
		r.ops = float64(opened)
		rest, err := atRest(ctx, r.pids)
		if err != nil {
			return nil, err
		}
		perConn := func(at, before uint64) float64 {
			return (float64(at) - float64(before)) / float64(opened)
		}
		return map[string]float64{
			"kib_per_conn": perConn(rest.PSS, base.PSS) / 1024,
			"fds_per_conn": perConn(uint64(rest.FDs), uint64(base.FDs)),
			"opened":       float64(opened),
			"pss_mib":      mib(rest.PSS),
			"open_s":       openTime.Seconds(),
		}, nil
	}
}

// openIdle opens one connection to addr and checks it with a 1-byte echo.
func openIdle(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: openDialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.SetDeadline(time.Now().Add(openDialTimeout))
	b := [1]byte{'o'}
	if _, err := c.Write(b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("write to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("no echo from %s within %v", addr, openDialTimeout)
		}
		return nil, fmt.Errorf("echo from %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// atRest samples the process tree until its descriptor count has stayed
// the same for openSettleSame samples in a row (connections the proxy is
// still setting up or tearing down change it), or for openSettleMax, and
// returns the last sample.
func atRest(ctx context.Context, pids []int) (usage, error) {
	deadline := time.Now().Add(openSettleMax)
	var last usage
	same := 0
	for {
		u, err := treeRead(pids, true)
		if err != nil {
			return usage{}, err
		}
		if u.Procs == 0 {
			return usage{}, fmt.Errorf("proxy processes %v are gone", pids)
		}
		if u.FDs == last.FDs {
			same++
		} else {
			same = 1
		}
		last = u
		if same >= openSettleSame || time.Now().After(deadline) {
			return last, nil
		}
		t := time.NewTimer(openSettleEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return usage{}, ctx.Err()
		case <-t.C:
		}
	}
}

// waitExit returns how the instance's process ended if it has, or "". After
// a failed connection it gives the processes half a second to finish
// exiting, since the failure may be the process going away.
func waitExit(in *instance, failed bool) string {
	if !failed {
		return in.exited()
	}
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	for _, pr := range in.procs {
		select {
		case <-pr.done:
			return in.exited()
		case <-t.C:
			return in.exited()
		}
	}
	return ""
}

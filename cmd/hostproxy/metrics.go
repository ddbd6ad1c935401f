package main

import (
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/hostproxy/hostproxy/internal/metrics"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/udp"
)

// startTime is when the process started, hostproxy_start_time_seconds.
var startTime = time.Now()

// udpMappings is what the UDP relays (udp.Proxy, udp.Range) report per host
// socket; the stream relays report proxy.StreamStats.
type udpMappings interface {
	EachMapping(fn func(listen, backend netip.AddrPort, s udp.Stats))
}

// collector reads the counters of every mapping of a server and renders
// them. It keeps its buffers from one use to the next and is used by one
// goroutine at a time; the relays' counters are atomic, so collecting takes
// no lock the relays take.
type collector struct {
	s     *server
	snap  metrics.Snapshot
	r     metrics.Renderer
	proto string // of the proxy being read, for addStream

	// The callbacks are made once, so that collecting allocates nothing.
	addStream func(listen, backend netip.AddrPort, c *proxy.StreamCounters)
	addUDP    func(listen, backend netip.AddrPort, st udp.Stats)
}

func newCollector(s *server) *collector {
	c := &collector{s: s, r: metrics.Renderer{Version: buildVersion(), Start: startTime}}
	c.addStream = func(listen, backend netip.AddrPort, sc *proxy.StreamCounters) {
		c.snap.AddStream(c.proto, listen, backend, sc.Snapshot())
	}
	c.addUDP = func(listen, backend netip.AddrPort, st udp.Stats) {
		c.snap.AddUDP(listen, backend, st)
	}
	return c
}

// collect reads every proxy's mappings into c.snap. A proxy that reports
// neither proxy.StreamStats nor UDP mappings is left out.
func (c *collector) collect() *metrics.Snapshot {
	c.snap.Reset()
	for i, p := range c.s.proxies {
		switch p := p.(type) {
		case proxy.StreamStats:
			c.proto = c.s.protos[i].String()
			p.EachMapping(c.addStream)
		case udpMappings:
			p.EachMapping(c.addUDP)
		}
	}
	return &c.snap
}

// metricsWriter replaces the -metrics-file every -metrics-interval from its
// own goroutine, and once more when stopped.
type metricsWriter struct {
	path   string
	c      *collector
	log    *logging.Logger
	failed bool // the last write failed (logged once until one succeeds)
	quit   chan struct{}
	done   chan struct{}
}

// checkMetricsFile fails when -metrics-file is set and cannot be written.
func checkMetricsFile(cfg *config) error {
	if cfg.MetricsFile == "" {
		return nil
	}
	return metrics.CheckPath(cfg.MetricsFile)
}

// startMetrics starts the goroutine that writes the metrics file at once and
// then every interval. The first write is not awaited: its fsync would delay
// the readiness an engine waits for. Without -metrics-file it does nothing
// and returns nil.
func startMetrics(s *server, cfg *config) *metricsWriter {
	if cfg.MetricsFile == "" {
		return nil
	}
	c := newCollector(s)
	c.r.File = filepath.Base(cfg.MetricsFile)
	w := &metricsWriter{path: cfg.MetricsFile, c: c, log: s.log,
		quit: make(chan struct{}), done: make(chan struct{})}
	go w.loop(cfg.MetricsInterval)
	return w
}

func (w *metricsWriter) loop(interval time.Duration) {
	defer close(w.done)
	w.write()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.write()
		case <-w.quit:
			return
		}
	}
}

// write renders the counters and replaces the file. A failure is logged
// when it starts and when it ends, not at every interval.
func (w *metricsWriter) write() {
	err := metrics.WriteFile(w.path, w.c.r.Exposition(w.c.collect()))
	switch {
	case err != nil && !w.failed:
		w.log.Warn("writing the metrics file failed; retrying every interval", logging.Err(err))
	case err == nil && w.failed:
		w.log.Info("writing the metrics file works again", logging.String("file", w.path))
	}
	w.failed = err != nil
}

// stop ends the goroutine and writes the file a last time, with the
// counters as the relays left them. A nil writer does nothing.
func (w *metricsWriter) stop() {
	if w == nil {
		return
	}
	close(w.quit)
	<-w.done
	w.write()
}

// notifyStats routes the stats signal (SIGUSR2) to sigs.
func notifyStats(sigs chan<- os.Signal) {
	if statsSignal != nil {
		signal.Notify(sigs, statsSignal)
	}
}

// statsRequested reports whether sig is the stats signal and, if so,
// writes one line per mapping to s.stderr in one write, whatever the log
// level.
func (s *server) statsRequested(sig os.Signal) bool {
	if statsSignal == nil || sig != statsSignal {
		return false
	}
	if s.stats == nil {
		s.stats = newCollector(s)
	}
	c := s.stats
	out := c.r.LogLines(c.collect())
	if len(out) > 0 && s.stderr != nil {
		s.stderr.Write(out)
	}
	return true
}

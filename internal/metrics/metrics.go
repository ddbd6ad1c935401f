// Package metrics renders the relays' counters: in the Prometheus text
// exposition format (version 0.0.4, what node_exporter's textfile collector
// reads), and as one line of key=value pairs per mapping.
//
// The caller fills a Snapshot with the counters of every mapping and asks a
// Renderer for the text. A Renderer keeps its buffers: once they have grown
// to the size of the output, rendering allocates nothing.
package metrics

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/udp"
)

// Stream is one stream mapping (a TCP or SCTP host socket) and its counters.
type Stream struct {
	Proto           string // "tcp" or "sctp"
	Listen, Backend netip.AddrPort
	Counters        proxy.StreamSnapshot
}

// UDP is one UDP host socket and its counters.
type UDP struct {
	Listen, Backend netip.AddrPort
	Stats           udp.Stats
}

// Snapshot holds the counters of every mapping of a process, stream
// mappings and UDP mappings each in the order they were added. Reset empties
// it and keeps its room.
type Snapshot struct {
	Streams []Stream
	UDP     []UDP
}

// Reset empties s, keeping the room of its slices.
func (s *Snapshot) Reset() {
	s.Streams = s.Streams[:0]
	s.UDP = s.UDP[:0]
}

// AddStream appends a stream mapping.
func (s *Snapshot) AddStream(proto string, listen, backend netip.AddrPort, c proxy.StreamSnapshot) {
	s.Streams = append(s.Streams, Stream{Proto: proto, Listen: listen, Backend: backend, Counters: c})
}

// AddUDP appends a UDP mapping.
func (s *Snapshot) AddUDP(listen, backend netip.AddrPort, st udp.Stats) {
	s.UDP = append(s.UDP, UDP{Listen: listen, Backend: backend, Stats: st})
}

// Renderer turns a Snapshot into text. Its zero value works; a Renderer is
// not safe for concurrent use.
type Renderer struct {
	// Version is the value of hostproxy_build_info's version label.
	Version string
	// Start is the process's start, hostproxy_start_time_seconds.
	Start time.Time
	// File, when set, is a label file="<File>" on the process-level
	// series (build info, start time), so that the files of several
	// processes collected from one directory do not repeat a series.
	File string

	buf     []byte
	labels  []byte // the label set of every mapping, streams first
	offs    []int  // mapping i's labels are labels[offs[i]:offs[i+1]]
	scratch []byte
}

// The metric families, in the order they are written.
const (
	famBuildInfo    = "hostproxy_build_info"
	famStartTime    = "hostproxy_start_time_seconds"
	famConnections  = "hostproxy_connections_total"
	famActive       = "hostproxy_active_connections"
	famBytes        = "hostproxy_bytes_total"
	famDialErrors   = "hostproxy_dial_errors_total"
	famAcceptErrors = "hostproxy_accept_errors_total"
	famResets       = "hostproxy_resets_total"
	famFlows        = "hostproxy_udp_flows_total"
	famActiveFlows  = "hostproxy_udp_active_flows"
	famEvictions    = "hostproxy_udp_flow_evictions_total"
	famExpired      = "hostproxy_udp_flows_expired_total"
	famDatagrams    = "hostproxy_udp_datagrams_total"
	famDrops        = "hostproxy_udp_drops_total"
)

// Exposition returns the Prometheus text of s: a HELP and a TYPE line per
// metric family, then one sample per mapping (labels proto, listen,
// backend), without timestamps. A family with no mapping to report is left
// out. The result is valid until the next call of Exposition or LogLines.
func (r *Renderer) Exposition(s *Snapshot) []byte {
	r.prepareLabels(s)
	b := r.buf[:0]

	b = family(b, famBuildInfo, "The hostproxy build; the value is 1.", "gauge")
	b = append(b, famBuildInfo...)
	b = append(b, `{version="`...)
	b = appendEscaped(b, r.Version)
	b = append(b, '"')
	if r.File != "" {
		b = append(b, ',')
		b = r.appendFileLabel(b)
	}
	b = append(b, "} 1\n"...)

	b = family(b, famStartTime, "When the process started, in seconds since the Unix epoch.", "gauge")
	b = append(b, famStartTime...)
	if r.File != "" {
		b = append(b, '{')
		b = r.appendFileLabel(b)
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = strconv.AppendFloat(b, float64(r.Start.UnixMilli())/1e3, 'f', -1, 64)
	b = append(b, '\n')

	if n := len(s.Streams); n > 0 {
		b = family(b, famConnections, "Connections accepted on the host socket (SCTP: associations).", "counter")
		for i := range s.Streams {
			b = r.uint(b, famConnections, i, "", s.Streams[i].Counters.Accepted)
		}
		b = family(b, famActive, "Connections open now.", "gauge")
		for i := range s.Streams {
			b = r.series(b, famActive, i, "")
			b = strconv.AppendInt(b, s.Streams[i].Counters.Active, 10)
			b = append(b, '\n')
		}
	}
	if len(s.Streams)+len(s.UDP) > 0 {
		b = family(b, famBytes, "Payload bytes relayed: up from clients to the backend, down from the backend to clients.", "counter")
		for i := range s.Streams {
			c := &s.Streams[i].Counters
			b = r.uint(b, famBytes, i, `direction="up"`, c.BytesUp)
			b = r.uint(b, famBytes, i, `direction="down"`, c.BytesDown)
		}
		for j := range s.UDP {
			st, i := &s.UDP[j].Stats, len(s.Streams)+j
			b = r.uint(b, famBytes, i, `direction="up"`, st.BytesToBackend)
			b = r.uint(b, famBytes, i, `direction="down"`, st.BytesToClient)
		}
	}
	if len(s.Streams) > 0 {
		b = family(b, famDialErrors, "Connections to the backend that failed or timed out.", "counter")
		for i := range s.Streams {
			b = r.uint(b, famDialErrors, i, "", s.Streams[i].Counters.DialErrors)
		}
		b = family(b, famAcceptErrors, "Accepts on the host socket that failed (EMFILE, ENOBUFS, ...).", "counter")
		for i := range s.Streams {
			b = r.uint(b, famAcceptErrors, i, "", s.Streams[i].Counters.AcceptErrors)
		}
		b = family(b, famResets, "Connections that ended with a reset on either side.", "counter")
		for i := range s.Streams {
			b = r.uint(b, famResets, i, "", s.Streams[i].Counters.Resets)
		}
	}

	if len(s.UDP) > 0 {
		base := len(s.Streams)
		b = family(b, famFlows, "UDP flows (one per client address and local address) created.", "counter")
		for j := range s.UDP {
			b = r.uint(b, famFlows, base+j, "", s.UDP[j].Stats.FlowsCreated)
		}
		b = family(b, famActiveFlows, "UDP flows open now.", "gauge")
		for j := range s.UDP {
			b = r.series(b, famActiveFlows, base+j, "")
			b = strconv.AppendInt(b, int64(s.UDP[j].Stats.Flows), 10)
			b = append(b, '\n')
		}
		b = family(b, famEvictions, "UDP flows closed to make room for a new client (-udp-max-flows).", "counter")
		for j := range s.UDP {
			b = r.uint(b, famEvictions, base+j, "", s.UDP[j].Stats.FlowsEvicted)
		}
		b = family(b, famExpired, "UDP flows closed after -udp-timeout without a datagram.", "counter")
		for j := range s.UDP {
			b = r.uint(b, famExpired, base+j, "", s.UDP[j].Stats.FlowsExpired)
		}
		b = family(b, famDatagrams, "UDP datagrams relayed: up from clients to the backend, down from the backend to clients.", "counter")
		for j := range s.UDP {
			st := &s.UDP[j].Stats
			b = r.uint(b, famDatagrams, base+j, `direction="up"`, st.ToBackend)
			b = r.uint(b, famDatagrams, base+j, `direction="down"`, st.ToClient)
		}
		b = family(b, famDrops, "UDP datagrams dropped or refused, by reason (see docs/metrics.md).", "counter")
		for j := range s.UDP {
			st := &s.UDP[j].Stats
			b = r.uint(b, famDrops, base+j, `reason="truncated"`, st.Truncated)
			b = r.uint(b, famDrops, base+j, `reason="refused"`, st.Refused)
			b = r.uint(b, famDrops, base+j, `reason="send_error"`, st.Dropped)
			b = r.uint(b, famDrops, base+j, `reason="shutdown"`, st.Rejected)
			b = r.uint(b, famDrops, base+j, `reason="flow_failed"`, st.FlowsFailed)
		}
	}
	r.buf = b
	return b
}

// family writes the HELP and TYPE lines of a metric family.
//
// It and series and uint are not inlined: Exposition calls them forty
// times, and inlined they made it 16 KB of code that every process maps.
//
//go:noinline
func family(b []byte, name, help, typ string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, help...)
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// appendFileLabel writes `file="<File>"`.
func (r *Renderer) appendFileLabel(b []byte) []byte {
	b = append(b, `file="`...)
	b = appendEscaped(b, r.File)
	return append(b, '"')
}

// series writes the name and labels of mapping i's sample, and the space
// before its value; extra is one more label pair, or "".
//
//go:noinline
func (r *Renderer) series(b []byte, name string, i int, extra string) []byte {
	b = append(b, name...)
	b = append(b, '{')
	b = append(b, r.labels[r.offs[i]:r.offs[i+1]]...)
	if extra != "" {
		b = append(b, ',')
		b = append(b, extra...)
	}
	return append(b, "} "...)
}

// uint writes one sample line of mapping i with value v.
//
//go:noinline
func (r *Renderer) uint(b []byte, name string, i int, extra string, v uint64) []byte {
	b = r.series(b, name, i, extra)
	b = strconv.AppendUint(b, v, 10)
	return append(b, '\n')
}

// prepareLabels writes the label set of every mapping once, for all the
// families to copy.
func (r *Renderer) prepareLabels(s *Snapshot) {
	r.labels, r.offs = r.labels[:0], append(r.offs[:0], 0)
	for i := range s.Streams {
		m := &s.Streams[i]
		r.mappingLabels(m.Proto, m.Listen, m.Backend)
	}
	for i := range s.UDP {
		m := &s.UDP[i]
		r.mappingLabels("udp", m.Listen, m.Backend)
	}
}

func (r *Renderer) mappingLabels(proto string, listen, backend netip.AddrPort) {
	b := append(r.labels, `proto="`...)
	b = appendEscaped(b, proto)
	b = append(b, `",listen="`...)
	r.scratch = listen.AppendTo(r.scratch[:0])
	b = appendEscaped(b, r.scratch)
	b = append(b, `",backend="`...)
	r.scratch = backend.AppendTo(r.scratch[:0])
	b = appendEscaped(b, r.scratch)
	b = append(b, '"')
	r.labels = b
	r.offs = append(r.offs, len(b))
}

// appendEscaped appends s as the inside of a quoted label value: backslash,
// double quote and newline escaped.
func appendEscaped[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

package metrics

import (
	"net/netip"
	"strconv"
)

// LogLines returns the counters of s as one line per mapping, stream
// mappings first, each of the form
//
//	hostproxy stats proto=tcp listen=127.0.0.1:8080 backend=172.17.0.2:80 connections=3 active=1 ...
//
// with the same counters as Exposition under shorter keys. The result is
// valid until the next call of LogLines or Exposition.
func (r *Renderer) LogLines(s *Snapshot) []byte {
	b := r.buf[:0]
	for i := range s.Streams {
		m := &s.Streams[i]
		c := &m.Counters
		b = r.logHead(b, m.Proto, m.Listen, m.Backend)
		b = logUint(b, "connections", c.Accepted)
		b = append(b, " active="...)
		b = strconv.AppendInt(b, c.Active, 10)
		b = logUint(b, "bytes_up", c.BytesUp)
		b = logUint(b, "bytes_down", c.BytesDown)
		b = logUint(b, "dial_errors", c.DialErrors)
		b = logUint(b, "accept_errors", c.AcceptErrors)
		b = logUint(b, "resets", c.Resets)
		b = append(b, '\n')
	}
	for i := range s.UDP {
		m := &s.UDP[i]
		st := &m.Stats
		b = r.logHead(b, "udp", m.Listen, m.Backend)
		b = logUint(b, "flows", st.FlowsCreated)
		b = append(b, " active_flows="...)
		b = strconv.AppendInt(b, int64(st.Flows), 10)
		b = logUint(b, "flows_expired", st.FlowsExpired)
		b = logUint(b, "flow_evictions", st.FlowsEvicted)
		b = logUint(b, "datagrams_up", st.ToBackend)
		b = logUint(b, "datagrams_down", st.ToClient)
		b = logUint(b, "bytes_up", st.BytesToBackend)
		b = logUint(b, "bytes_down", st.BytesToClient)
		b = logUint(b, "drops_truncated", st.Truncated)
		b = logUint(b, "drops_refused", st.Refused)
		b = logUint(b, "drops_send_error", st.Dropped)
		b = logUint(b, "drops_shutdown", st.Rejected)
		b = logUint(b, "drops_flow_failed", st.FlowsFailed)
		b = append(b, '\n')
	}
	r.buf = b
	return b
}

func (r *Renderer) logHead(b []byte, proto string, listen, backend netip.AddrPort) []byte {
	b = append(b, "hostproxy stats proto="...)
	b = appendLogValue(b, proto)
	b = append(b, " listen="...)
	r.scratch = listen.AppendTo(r.scratch[:0])
	b = appendLogValue(b, r.scratch)
	b = append(b, " backend="...)
	r.scratch = backend.AppendTo(r.scratch[:0])
	return appendLogValue(b, r.scratch)
}

func logUint(b []byte, key string, v uint64) []byte {
	b = append(b, ' ')
	b = append(b, key...)
	b = append(b, '=')
	return strconv.AppendUint(b, v, 10)
}

// appendLogValue appends v as is, or quoted (Go syntax) when it is empty or
// holds a space, '=', '"' or a byte outside printable ASCII (an IPv6 zone
// may).
func appendLogValue[T string | []byte](b []byte, v T) []byte {
	plain := len(v) > 0
	for i := 0; i < len(v) && plain; i++ {
		c := v[i]
		plain = c > ' ' && c < 0x7f && c != '=' && c != '"'
	}
	if plain {
		return append(b, v...)
	}
	return strconv.AppendQuote(b, string(v))
}

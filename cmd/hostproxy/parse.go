package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/sockopt"
)

// This file holds the pure parsers of the command line: ports, port ranges and
// -L forwarding specs. None of them touches the network.

// parsePort parses a decimal port in 1-65535. Signs, spaces and other bases
// are rejected.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q is not a number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return 0, fmt.Errorf("port %q out of range 1-65535", s)
	}
	return uint16(n), nil
}

// parsePortRange parses "N" or "A-B" with 1 <= A <= B <= 65535 into an
// alloc.Range ({N, N} for one port). Unlike alloc.ParseRange it rejects
// "0": only -host-port 0 means the ephemeral range, and parseEngine takes
// that case before parsing. Its errors are the command line's one-liners.
func parsePortRange(s string) (alloc.Range, error) {
	first, last, isRange := strings.Cut(s, "-")
	if !isRange {
		p, err := parsePort(s)
		if err != nil {
			return alloc.Range{}, err
		}
		return alloc.Range{First: p, Last: p}, nil
	}
	if first == "" {
		// "-1" is a negative number to a reader, not a range missing its
		// start: say so.
		return alloc.Range{}, fmt.Errorf("port %q out of range 1-65535", s)
	}
	a, err := parsePort(first)
	if err != nil {
		return alloc.Range{}, fmt.Errorf("port range %q: %w", s, err)
	}
	b, err := parsePort(last)
	if err != nil {
		return alloc.Range{}, fmt.Errorf("port range %q: %w", s, err)
	}
	if a > b {
		return alloc.Range{}, fmt.Errorf("port range %q is reversed (%d > %d)", s, a, b)
	}
	return alloc.Range{First: a, Last: b}, nil
}

// parseAddr parses an IP address literal, with or without brackets; an
// IPv4-mapped IPv6 address becomes IPv4. Zones are rejected: the proxies bind
// and dial by address alone.
func parseAddr(s string) (netip.Addr, error) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("IP address %q: zones are not supported", s)
	}
	return a.Unmap(), nil
}

// forward is one parsed -L spec:
//
//	[BIND:]PORT[-END]:TARGET:TPORT[-TEND][/tcp|/udp|/sctp]
type forward struct {
	Proto  sockopt.Proto
	Bind   netip.Addr  // invalid: loopback (127.0.0.1 and ::1)
	Ports  alloc.Range // listening ports
	Target string      // IP literal (without brackets) or host name
	TPorts alloc.Range // target ports, same length as Ports
}

// String formats f back in -L syntax, with every part explicit but Bind.
func (f forward) String() string {
	var b strings.Builder
	if f.Bind.IsValid() {
		b.WriteString(bracket(f.Bind.String()))
		b.WriteByte(':')
	}
	fmt.Fprintf(&b, "%s:%s:%s/%s", f.Ports, bracket(f.Target), f.TPorts, f.Proto)
	return b.String()
}

func bracket(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// parseForward parses one -L spec. BIND, when given, must be an IP literal
// (IPv6 in brackets) or "localhost" (the default loopback pair); TARGET is an
// IP literal or a host name, resolved later. The port ranges must have the
// same length: listening port First+i forwards to target port First+i.
func parseForward(s string) (forward, error) {
	fail := func(format string, args ...any) (forward, error) {
		return forward{}, fmt.Errorf("-L %q: %s", s, fmt.Sprintf(format, args...))
	}
	fw := forward{Proto: sockopt.TCP}
	spec := s
	if i := strings.LastIndexByte(spec, '/'); i >= 0 {
		p, err := sockopt.ParseProto(spec[i+1:])
		if err != nil {
			return fail("%v", err)
		}
		fw.Proto, spec = p, spec[:i]
	}
	fields, err := splitHostList(spec)
	if err != nil {
		return fail("%v", err)
	}
	switch len(fields) {
	case 3:
	case 4:
		bind := fields[0]
		fields = fields[1:]
		switch {
		case bind == "":
			return fail("empty bind address (use 0.0.0.0 or [::] to listen on every address)")
		case strings.EqualFold(bind, "localhost"):
		default:
			a, err := parseAddr(bind)
			if err != nil {
				return fail("bind address: %v", err)
			}
			fw.Bind = a
		}
	default:
		return fail("want [BIND:]PORT:HOST:PORT[/tcp|/udp|/sctp], got %d colon-separated fields", len(fields))
	}
	if fw.Ports, err = parsePortRange(fields[0]); err != nil {
		return fail("listening %v", err)
	}
	if fw.Target, err = parseTarget(fields[1]); err != nil {
		return fail("%v", err)
	}
	if fw.TPorts, err = parsePortRange(fields[2]); err != nil {
		return fail("target %v", err)
	}
	if fw.Ports.Len() != fw.TPorts.Len() {
		return fail("listening ports %s and target ports %s differ in length (%d and %d)",
			fw.Ports, fw.TPorts, fw.Ports.Len(), fw.TPorts.Len())
	}
	return fw, nil
}

// splitHostList splits s at the colons that are not inside brackets. Every
// bracketed part must be a whole field.
func splitHostList(s string) ([]string, error) {
	var fields []string
	for {
		var field string
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return nil, errors.New("unclosed '['")
			}
			field, s = s[:end+1], s[end+1:]
			if s != "" && s[0] != ':' {
				return nil, fmt.Errorf("unexpected %q after %q", s, field)
			}
		} else {
			end := strings.IndexByte(s, ':')
			if end < 0 {
				end = len(s)
			}
			field, s = s[:end], s[end:]
			if strings.ContainsAny(field, "[]") {
				return nil, fmt.Errorf("misplaced bracket in %q", field)
			}
		}
		fields = append(fields, field)
		if s == "" {
			return fields, nil
		}
		s = s[1:] // the colon
	}
}

// parseTarget validates a target host: a bracketed IPv6 literal, an IPv4
// literal or a host name (letters, digits, '-', '.', '_').
func parseTarget(s string) (string, error) {
	if strings.HasPrefix(s, "[") {
		a, err := parseAddr(s)
		if err != nil || !a.Is6() {
			return "", fmt.Errorf("target %q is not an IPv6 address", s)
		}
		return a.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("target %q: zones are not supported", s)
		}
		return a.Unmap().String(), nil
	}
	if s == "" || len(s) > 253 {
		return "", fmt.Errorf("target host %q is not a host name or IP address", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
		if !ok {
			return "", fmt.Errorf("target host %q is not a host name or IP address", s)
		}
	}
	return s, nil
}

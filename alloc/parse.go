package alloc

import (
	"fmt"
	"strconv"
	"strings"
)

// Range is an inclusive range of ports. The zero Range stands for the
// ephemeral range; First == Last is exactly one port.
type Range struct{ First, Last uint16 }

// IsZero reports whether r is the zero Range (the ephemeral range).
func (r Range) IsZero() bool { return r == Range{} }

// Len is the number of ports in r, 0 if r is reversed.
func (r Range) Len() int {
	if r.First > r.Last {
		return 0
	}
	return int(r.Last) - int(r.First) + 1
}

// Contains reports whether p is in r.
func (r Range) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

// String returns "N" for one port and "A-B" otherwise.
func (r Range) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// validate checks a range requested by a caller: the zero Range, or ports
// 1-65535 in order.
func (r Range) validate() error {
	if r.IsZero() {
		return nil
	}
	if r.First == 0 || r.First > r.Last {
		return fmt.Errorf("%w %d-%d (want 1-65535, first <= last)", ErrInvalidRange, r.First, r.Last)
	}
	return nil
}

// ParseRange parses a port ("8080") or a range of ports ("8000-8100"), as
// given on a command line. "0" is the zero Range, the ephemeral range;
// otherwise both ends are in 1-65535 and the first is not above the last.
// Errors wrap ErrInvalidRange.
func ParseRange(s string) (Range, error) {
	a, b, isRange := strings.Cut(s, "-")
	first, err := parsePort(a)
	if err != nil {
		return Range{}, fmt.Errorf("%w %q: %w", ErrInvalidRange, s, err)
	}
	if !isRange {
		return Range{first, first}, nil
	}
	last, err := parsePort(b)
	if err != nil {
		return Range{}, fmt.Errorf("%w %q: %w", ErrInvalidRange, s, err)
	}
	r := Range{first, last}
	if first == 0 || first > last {
		return Range{}, fmt.Errorf("%w %q: want 1-65535, first <= last", ErrInvalidRange, s)
	}
	return r, nil
}

// ParsePortRange parses the content of /proc/sys/net/ipv4/ip_local_port_range:
// two ports separated by white space ("32768\t60999\n"). Errors wrap
// ErrInvalidRange.
func ParsePortRange(s string) (Range, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Range{}, fmt.Errorf("%w %q: want two ports", ErrInvalidRange, s)
	}
	first, err := parsePort(f[0])
	if err != nil {
		return Range{}, fmt.Errorf("%w %q: %w", ErrInvalidRange, s, err)
	}
	last, err := parsePort(f[1])
	if err != nil {
		return Range{}, fmt.Errorf("%w %q: %w", ErrInvalidRange, s, err)
	}
	if first == 0 || first > last {
		return Range{}, fmt.Errorf("%w %q: want 1-65535, first <= last", ErrInvalidRange, s)
	}
	return Range{first, last}, nil
}

// ParseReservedPorts parses the content of
// /proc/sys/net/ipv4/ip_local_reserved_ports: a comma-separated list of
// ports and ranges ("1000,2000-2100,8080"), possibly empty, with white space
// around items and a trailing newline allowed. Port 0 is accepted, as the
// kernel accepts it. Errors wrap ErrInvalidRange.
func ParseReservedPorts(s string) ([]Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []Range
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		a, b, isRange := strings.Cut(item, "-")
		first, err := parsePort(strings.TrimSpace(a))
		if err != nil {
			return nil, fmt.Errorf("%w in reserved ports %q: item %q: %w", ErrInvalidRange, s, item, err)
		}
		last := first
		if isRange {
			if last, err = parsePort(strings.TrimSpace(b)); err != nil {
				return nil, fmt.Errorf("%w in reserved ports %q: item %q: %w", ErrInvalidRange, s, item, err)
			}
			if first > last {
				return nil, fmt.Errorf("%w in reserved ports %q: item %q is reversed", ErrInvalidRange, s, item)
			}
		}
		out = append(out, Range{first, last})
	}
	return out, nil
}

// parsePort parses a decimal port, 0-65535, digits only.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("missing port")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q is not in 0-65535", s)
	}
	return uint16(n), nil
}

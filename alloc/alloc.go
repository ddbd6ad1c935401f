// Package alloc allocates host ports the way container engines expect, and
// binds sockets on them.
//
// # Reservations
//
// An Allocator keeps, in memory, which (address, protocol, port) triples are
// taken. Addresses of the two families are independent; an IPv4-mapped IPv6
// address counts as IPv4. The unspecified address of a family overlaps every
// address of that family: a port reserved on 0.0.0.0 is taken on 127.0.0.1
// and every other IPv4 address, and a port reserved on any IPv4 address is
// taken on 0.0.0.0 (the same holds for :: and IPv6). A Request for several
// addresses gets one port that is free on all of them.
//
// A Request's Range says which ports will do:
//   - the zero Range: any port of the ephemeral range, skipping the ports the
//     kernel reserves;
//   - First == Last: exactly that port, or an AlreadyAllocatedError;
//   - otherwise any port of First-Last, reserved or not by the kernel.
//
// A range request starts looking just after the port last handed out for the
// same protocol and range, and wraps around to First, so a port just released
// is not handed out again at once. When no port is free the error wraps
// ErrAllPortsAllocated. Finding a port costs one pass over the range's
// bitmaps, 64 ports a step, whatever the fill level.
//
// # Ephemeral range
//
// Unless Config says otherwise, the ephemeral range is read from
// /proc/sys/net/ipv4/ip_local_port_range (the kernel applies it to IPv6 too)
// and the reserved ports from /proc/sys/net/ipv4/ip_local_reserved_ports.
// When the first file cannot be read (no /proc, another OS) the range is the
// Linux default, 32768-60999; when the second cannot be read no port is
// reserved. Content that cannot be parsed is an error from New.
//
// # Binding sockets
//
// Bind reserves a port and binds a socket on it on every requested address
// (sockopt.Listen, with the drop-all filter when asked). When the OS says a
// port is in use (EADDRINUSE: another process holds it), Bind closes what it
// opened and tries the next free port, at most 10 ports in all; it does not
// retry an explicit port. Every failure leaves no socket open and no
// reservation behind. BindEach binds every port of a range, all or nothing.
//
// An Allocator is safe for concurrent use. There is no package-level state.
package alloc

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hostproxy/hostproxy/sockopt"
)

// DefaultEphemeral is the ephemeral range used when
// /proc/sys/net/ipv4/ip_local_port_range cannot be read: the Linux default.
var DefaultEphemeral = Range{First: 32768, Last: 60999}

var (
	// ErrAllPortsAllocated is wrapped by the error returned when no port of
	// the requested range is free on every requested address.
	ErrAllPortsAllocated = errors.New("all ports are allocated")
	// ErrInvalidRange is wrapped by errors about a malformed range.
	ErrInvalidRange = errors.New("invalid port range")
	// ErrNoAddrs is returned for a Request without addresses.
	ErrNoAddrs = errors.New("no address requested")
	// ErrInvalidAddr is wrapped by errors about an invalid address, or two
	// addresses of one request that overlap (equal, or one of them the
	// unspecified address of the other's family).
	ErrInvalidAddr = errors.New("invalid address")
	// ErrUnknownProto is wrapped by errors about a protocol other than
	// sockopt.TCP, UDP or SCTP.
	ErrUnknownProto = errors.New("unknown protocol")
)

// AlreadyAllocatedError is returned when an explicit port is already
// reserved on one of the requested addresses (or on an address overlapping
// it). Use errors.As with a *AlreadyAllocatedError.
type AlreadyAllocatedError struct {
	Addr  netip.Addr // the requested address on which Port is taken
	Proto sockopt.Proto
	Port  uint16
}

func (e AlreadyAllocatedError) Error() string {
	return fmt.Sprintf("port %d/%s is already allocated on %s", e.Port, e.Proto, e.Addr)
}

// Config configures an Allocator. The zero Config reads the kernel's settings.
type Config struct {
	// Ephemeral is the range used for requests with a zero Range. Zero means
	// the kernel's ip_local_port_range (see the package doc for the fallback).
	Ephemeral Range
	// Reserved are ports skipped in the ephemeral range (an explicit request
	// still gets them). Nil means the kernel's ip_local_reserved_ports; an
	// empty non-nil slice means none.
	Reserved []Range
	// ProcDir is where the kernel's settings are read from, "/proc" when
	// empty. Tests point it at a directory of their own.
	ProcDir string
}

// Request asks for one port, common to every address of Addrs.
type Request struct {
	Proto sockopt.Proto
	Addrs []netip.Addr // at least one
	Range Range        // zero: ephemeral range; First == Last: that port; else any port in it
}

// An Allocator hands out ports. Create one with New.
type Allocator struct {
	ephemeral Range
	reserved  bitmap // ports the kernel reserves; skipped in the ephemeral range

	mu sync.Mutex
	// fams holds the reservations per protocol and family (IPv4, IPv6):
	// reservations in different families or protocols never conflict.
	fams   [sockopt.SCTP + 1][2]*family
	cursor map[cursorKey]uint16 // last port handed out per protocol and range
	spare  []*bitmap            // empty bitmaps kept for reuse, at most maxSpare
	n      int                  // (address, protocol, port) reservations held
}

// maxSpare bounds the empty per-address bitmaps (8 KiB each) kept so that an
// address that comes and goes does not allocate each time.
const maxSpare = 8

type cursorKey struct {
	proto sockopt.Proto
	r     Range
}

// family holds the reservations of one famKey.
type family struct {
	byAddr map[netip.Addr]*bitmap // ports reserved per address (including the unspecified one)
	any    bitmap                 // ports reserved on at least one address
	count  []uint32               // per port, how many addresses hold it; allocated on first use
}

// New returns an Allocator for cfg.
func New(cfg Config) (*Allocator, error) {
	proc := cfg.ProcDir
	if proc == "" {
		proc = "/proc"
	}
	a := &Allocator{
		ephemeral: cfg.Ephemeral,
		cursor:    make(map[cursorKey]uint16),
	}
	if a.ephemeral.IsZero() {
		name := filepath.Join(proc, "sys/net/ipv4/ip_local_port_range")
		if b, err := os.ReadFile(name); err != nil {
			a.ephemeral = DefaultEphemeral
		} else if a.ephemeral, err = ParsePortRange(string(b)); err != nil {
			return nil, fmt.Errorf("ephemeral range from %s: %w", name, err)
		}
	} else if err := a.ephemeral.validate(); err != nil {
		return nil, fmt.Errorf("ephemeral range: %w", err)
	}
	reserved := cfg.Reserved
	if reserved == nil {
		name := filepath.Join(proc, "sys/net/ipv4/ip_local_reserved_ports")
		if b, err := os.ReadFile(name); err == nil {
			if reserved, err = ParseReservedPorts(string(b)); err != nil {
				return nil, fmt.Errorf("reserved ports from %s: %w", name, err)
			}
		}
	}
	for _, r := range reserved {
		if r.First > r.Last {
			return nil, fmt.Errorf("reserved ports: %w %d-%d (first > last)", ErrInvalidRange, r.First, r.Last)
		}
		for p := int(r.First); p <= int(r.Last); p++ {
			a.reserved.set(uint16(p))
		}
	}
	return a, nil
}

// Ephemeral returns the range used for requests with a zero Range.
func (a *Allocator) Ephemeral() Range { return a.ephemeral }

// Allocated returns the number of (address, protocol, port) reservations
// held: a request for two addresses that got a port counts twice.
func (a *Allocator) Allocated() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// Reserve reserves one port for req in memory and returns it. It opens no
// socket; undo it with Release.
func (a *Allocator) Reserve(req Request) (uint16, error) {
	if err := check(req); err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reserveLocked(req)
}

// Release releases port on every address of addrs for proto. Releasing a
// port that is not reserved does nothing.
func (a *Allocator) Release(proto sockopt.Proto, addrs []netip.Addr, port uint16) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ip := range addrs {
		a.releaseLocked(proto, normalize(ip), port)
	}
}

// check validates req without looking at reservations.
func check(req Request) error {
	switch req.Proto {
	case sockopt.TCP, sockopt.UDP, sockopt.SCTP:
	default:
		return fmt.Errorf("%w %s (want tcp, udp or sctp)", ErrUnknownProto, req.Proto)
	}
	if len(req.Addrs) == 0 {
		return fmt.Errorf("%s port %s: %w", req.Proto, req.Range, ErrNoAddrs)
	}
	if err := req.Range.validate(); err != nil {
		return err
	}
	for i, ip := range req.Addrs {
		if !ip.IsValid() {
			return fmt.Errorf("%w: address %d of the request is the zero netip.Addr", ErrInvalidAddr, i)
		}
		for _, other := range req.Addrs[:i] {
			if overlap(normalize(ip), normalize(other)) {
				return fmt.Errorf("%w: %s and %s of one request overlap", ErrInvalidAddr, other, ip)
			}
		}
	}
	return nil
}

// normalize unmaps IPv4-mapped addresses and drops the zone of the
// unspecified address, so that equal sockets have equal keys.
func normalize(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.WithZone("").IsUnspecified() {
		return ip.WithZone("")
	}
	return ip
}

func wildcard(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// overlap reports whether a port taken on x is taken on y (x and y normalized).
func overlap(x, y netip.Addr) bool {
	return x.Is4() == y.Is4() && (x == y || x.IsUnspecified() || y.IsUnspecified())
}

// famOf returns the reservations of ip's family for a checked proto, or nil.
func (a *Allocator) famOf(proto sockopt.Proto, ip netip.Addr) *family {
	return a.fams[proto][famIndex(ip)]
}

func famIndex(ip netip.Addr) int {
	if ip.Is4() {
		return 0
	}
	return 1
}

// blockers appends the bitmaps whose ports are taken for ip.
func (a *Allocator) blockers(dst []*bitmap, proto sockopt.Proto, ip netip.Addr) []*bitmap {
	f := a.famOf(proto, ip)
	if f == nil {
		return dst
	}
	if ip.IsUnspecified() {
		return append(dst, &f.any)
	}
	return append(dst, f.byAddr[ip], f.byAddr[wildcard(ip)])
}

// takenOn reports whether port is taken for ip.
func (a *Allocator) takenOn(proto sockopt.Proto, ip netip.Addr, port uint16) bool {
	var buf [2]*bitmap
	for _, b := range a.blockers(buf[:0], proto, ip) {
		if b != nil && b.has(port) {
			return true
		}
	}
	return false
}

// reserveLocked reserves a port for a checked req.
func (a *Allocator) reserveLocked(req Request) (uint16, error) {
	r := req.Range
	if !r.IsZero() && r.First == r.Last {
		for _, ip := range req.Addrs {
			if a.takenOn(req.Proto, normalize(ip), r.First) {
				return 0, AlreadyAllocatedError{Addr: ip, Proto: req.Proto, Port: r.First}
			}
		}
		a.markLocked(req.Proto, req.Addrs, r.First)
		return r.First, nil
	}

	var buf [8]*bitmap
	sets := buf[:0]
	if r.IsZero() {
		r = a.ephemeral
		sets = append(sets, &a.reserved)
	}
	for _, ip := range req.Addrs {
		sets = a.blockers(sets, req.Proto, normalize(ip))
	}
	key := cursorKey{req.Proto, r}
	start := r.First
	if last, ok := a.cursor[key]; ok && last < r.Last {
		start = last + 1
	}
	port, ok := firstFree(sets, start, r.Last)
	if !ok && start > r.First {
		port, ok = firstFree(sets, r.First, start-1)
	}
	if !ok {
		return 0, fmt.Errorf("%s port in %s on %s: %w", req.Proto, r, addrList(req.Addrs), ErrAllPortsAllocated)
	}
	a.cursor[key] = port
	a.markLocked(req.Proto, req.Addrs, port)
	return port, nil
}

func (a *Allocator) markLocked(proto sockopt.Proto, addrs []netip.Addr, port uint16) {
	for _, ip := range addrs {
		ip = normalize(ip)
		f := a.famOf(proto, ip)
		if f == nil {
			f = &family{byAddr: make(map[netip.Addr]*bitmap), count: make([]uint32, 1<<16)}
			a.fams[proto][famIndex(ip)] = f
		}
		b := f.byAddr[ip]
		if b == nil {
			if n := len(a.spare); n > 0 {
				b, a.spare = a.spare[n-1], a.spare[:n-1]
			} else {
				b = new(bitmap)
			}
			f.byAddr[ip] = b
		}
		if b.set(port) {
			f.count[port]++
			f.any.set(port)
			a.n++
		}
	}
}

func (a *Allocator) releaseLocked(proto sockopt.Proto, ip netip.Addr, port uint16) {
	f := a.famOf(proto, ip)
	if f == nil {
		return
	}
	b := f.byAddr[ip]
	if b == nil || !b.clear(port) {
		return
	}
	if b.n == 0 { // every bit is clear: reusable as is
		delete(f.byAddr, ip)
		if len(a.spare) < maxSpare {
			a.spare = append(a.spare, b)
		}
	}
	if f.count[port]--; f.count[port] == 0 {
		f.any.clear(port)
	}
	a.n--
}

// addrList formats addresses for error messages: "127.0.0.1,::1".
func addrList(addrs []netip.Addr) string {
	var sb strings.Builder
	for i, ip := range addrs {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(ip.String())
	}
	return sb.String()
}

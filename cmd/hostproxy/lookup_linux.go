package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The -L target names are looked up once, at start, by this small stub
// resolver rather than net's: /etc/hosts first, then the name servers of
// /etc/resolv.conf (search list, ndots, timeout and attempts honoured;
// UDP, and TCP when the answer is truncated). net's resolver, reachable
// from one call, was 290 KB of the binary, and every idle hostproxy keeps
// nearly all of its text mapped.

// Paths of the files lookupHost reads; tests point them elsewhere.
var (
	hostsPath      = "/etc/hosts"
	resolvConfPath = "/etc/resolv.conf"
)

// DNS record types and the class lookupHost asks for.
const (
	dnsTypeA    = 1
	dnsTypeAAAA = 28
	dnsClassIN  = 1
)

// errNoSuchHost is a name that none of the sources knows.
var errNoSuchHost = errors.New("no such host")

// lookupHost returns the addresses of name, the IPv4 ones first: those in
// /etc/hosts if it lists the name, else the first name of the search list
// that a name server answers with an address.
func lookupHost(ctx context.Context, name string) ([]netip.Addr, error) {
	name = strings.ToLower(name)
	if addrs := hostsLookup(hostsPath, strings.TrimSuffix(name, ".")); len(addrs) > 0 {
		return addrs, nil
	}
	return readResolvConf(resolvConfPath).lookup(ctx, name)
}

// hostsLookup returns the addresses /etc/hosts (at path) gives name, IPv4
// ones first, in the file's order.
func hostsLookup(path, name string) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var v4, v6 []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil {
			continue
		}
		for _, n := range fields[1:] {
			if strings.EqualFold(strings.TrimSuffix(n, "."), name) {
				if a = a.Unmap(); a.Is4() {
					v4 = append(v4, a)
				} else {
					v6 = append(v6, a)
				}
				break
			}
		}
	}
	return append(v4, v6...)
}

// dnsConfig is what lookupHost takes from /etc/resolv.conf.
type dnsConfig struct {
	servers  []netip.AddrPort
	search   []string // domains, each ending in "."
	ndots    int
	timeout  time.Duration // per query and server
	attempts int           // rounds over the servers
}

// readResolvConf parses the resolv.conf at path; a missing file, or one
// without servers, means the local ones (as in glibc and Go).
func readResolvConf(path string) *dnsConfig {
	c := &dnsConfig{ndots: 1, timeout: 5 * time.Second, attempts: 2}
	hasSearch := false
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			line, _, _ = strings.Cut(line, ";")
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			switch fields[0] {
			case "nameserver":
				if a, err := netip.ParseAddr(fields[1]); err == nil && len(c.servers) < 3 {
					c.servers = append(c.servers, netip.AddrPortFrom(a.Unmap(), 53))
				}
			case "domain":
				c.search, hasSearch = []string{absolute(fields[1])}, true
			case "search":
				c.search, hasSearch = c.search[:0], true
				for _, d := range fields[1:] {
					if d != "." {
						c.search = append(c.search, absolute(d))
					}
				}
			case "options":
				for _, o := range fields[1:] {
					k, v, _ := strings.Cut(o, ":")
					n, err := strconv.Atoi(v)
					switch {
					case err != nil:
					case k == "ndots":
						c.ndots = min(max(n, 0), 15)
					case k == "timeout":
						c.timeout = time.Duration(min(max(n, 1), 30)) * time.Second
					case k == "attempts":
						c.attempts = min(max(n, 1), 5)
					}
				}
			}
		}
		f.Close()
	}
	if len(c.servers) == 0 {
		c.servers = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")}
	}
	if !hasSearch {
		if h, err := os.Hostname(); err == nil {
			if _, d, ok := strings.Cut(h, "."); ok && d != "" {
				c.search = []string{absolute(d)}
			}
		}
	}
	return c
}

func absolute(name string) string {
	if strings.HasSuffix(name, ".") {
		return strings.ToLower(name)
	}
	return strings.ToLower(name) + "."
}

// names is the list of names to ask for name: as it is first when it has
// ndots dots or more, else after the search domains; an absolute name
// (ending in ".") alone.
func (c *dnsConfig) names(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var list []string
	asIs := strings.Count(name, ".") >= c.ndots
	if asIs {
		list = append(list, name+".")
	}
	for _, d := range c.search {
		list = append(list, name+"."+d)
	}
	if !asIs {
		list = append(list, name+".")
	}
	return list
}

// lookup asks the servers for the A, then the AAAA records of each name of
// the search list in turn and returns the addresses of the first that has
// some.
func (c *dnsConfig) lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	if len(name) > 253 || name == "" || name == "." {
		return nil, fmt.Errorf("lookup %q: invalid name", name)
	}
	var lastErr error = errNoSuchHost
	for _, fqdn := range c.names(name) {
		var addrs []netip.Addr
		for _, qtype := range []uint16{dnsTypeA, dnsTypeAAAA} {
			found, err := c.query(ctx, fqdn, qtype)
			if err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				lastErr = err
			}
			addrs = append(addrs, found...)
			if errors.Is(err, errNoSuchHost) {
				break // NXDOMAIN: the name has no record of any type
			}
		}
		if len(addrs) > 0 {
			return addrs, nil
		}
	}
	return nil, lastErr
}

// query asks the servers, in turn and for c.attempts rounds, for the
// records of type qtype of fqdn. A server that answers with the name
// unknown (NXDOMAIN) or without such records settles it.
func (c *dnsConfig) query(ctx context.Context, fqdn string, qtype uint16) ([]netip.Addr, error) {
	q, err := dnsQuery(uint16(rand.Uint32()), fqdn, qtype)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range c.attempts {
		for _, srv := range c.servers {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			resp, err := exchange(ctx, srv, q, c.timeout, false)
			if err == nil && len(resp) > 2 && resp[2]&0x02 != 0 { // truncated: again over TCP
				resp, err = exchange(ctx, srv, q, c.timeout, true)
			}
			if err != nil {
				lastErr = fmt.Errorf("lookup %s on %s: %w", strings.TrimSuffix(fqdn, "."), srv, err)
				continue
			}
			addrs, err := dnsAnswer(resp, q, qtype)
			if err != nil && !errors.Is(err, errNoSuchHost) {
				lastErr = fmt.Errorf("lookup %s on %s: %w", strings.TrimSuffix(fqdn, "."), srv, err)
				continue // SERVFAIL, REFUSED, a garbled answer: the next server
			}
			return addrs, err
		}
	}
	return nil, lastErr
}

// dnsQuery is a query for the qtype records of fqdn, recursion desired.
func dnsQuery(id uint16, fqdn string, qtype uint16) ([]byte, error) {
	q := make([]byte, 12, 12+len(fqdn)+6)
	binary.BigEndian.PutUint16(q[0:], id)
	q[2] = 0x01                          // RD
	binary.BigEndian.PutUint16(q[4:], 1) // QDCOUNT
	for _, label := range strings.Split(strings.TrimSuffix(fqdn, "."), ".") {
		if len(label) == 0 || len(label) > 63 {
			return nil, fmt.Errorf("lookup %q: invalid name", strings.TrimSuffix(fqdn, "."))
		}
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	q = append(q, 0)
	q = binary.BigEndian.AppendUint16(q, qtype)
	return binary.BigEndian.AppendUint16(q, dnsClassIN), nil
}

// dnsAnswer returns the addresses of type qtype in resp, the answer to
// query q; errNoSuchHost when the name does not exist.
func dnsAnswer(resp, q []byte, qtype uint16) ([]netip.Addr, error) {
	if len(resp) < 12 || resp[0] != q[0] || resp[1] != q[1] || resp[2]&0x80 == 0 {
		return nil, errors.New("not an answer to the query")
	}
	switch rcode := resp[3] & 0x0f; rcode {
	case 0:
	case 3:
		return nil, errNoSuchHost
	default:
		return nil, fmt.Errorf("server failure (rcode %d)", rcode)
	}
	// The question must be the one asked: its bytes as sent.
	question := q[12:]
	qd, an := binary.BigEndian.Uint16(resp[4:]), binary.BigEndian.Uint16(resp[6:])
	if qd != 1 || len(resp) < 12+len(question) || !bytes.EqualFold(resp[12:12+len(question)], question) {
		return nil, errors.New("an answer to another question")
	}
	off := 12 + len(question)
	var addrs []netip.Addr
	for range an {
		var ok bool
		if off, ok = skipName(resp, off); !ok || off+10 > len(resp) {
			return nil, errors.New("malformed answer")
		}
		typ, class := binary.BigEndian.Uint16(resp[off:]), binary.BigEndian.Uint16(resp[off+2:])
		n := int(binary.BigEndian.Uint16(resp[off+8:]))
		off += 10
		if off+n > len(resp) {
			return nil, errors.New("malformed answer")
		}
		rdata := resp[off : off+n]
		off += n
		if class != dnsClassIN || typ != qtype {
			continue // the CNAMEs that lead to the records
		}
		if a, ok := netip.AddrFromSlice(rdata); ok && (typ == dnsTypeA) == (n == 4) {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs, nil
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(msg []byte, off int) (int, bool) {
	for off < len(msg) {
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xc0 == 0xc0: // a pointer ends the name
			return off + 2, off+2 <= len(msg)
		case l&0xc0 != 0:
			return 0, false
		}
		off += 1 + l
	}
	return 0, false
}

// exchange sends q to srv and returns its answer, over UDP (or TCP), within
// timeout and ctx's deadline. Its errors are the system calls' own; query
// names the server.
func exchange(ctx context.Context, srv netip.AddrPort, q []byte, timeout time.Duration, stream bool) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	family, typ := unix.AF_INET, unix.SOCK_DGRAM
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(srv.Port()), Addr: srv.Addr().As4()}
	if srv.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(srv.Port()), Addr: srv.Addr().As16()}
	}
	if stream {
		typ = unix.SOCK_STREAM
		q = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err = unix.Connect(fd, sa); err == unix.EINPROGRESS {
		// A TCP connect completes, or fails (SO_ERROR), once writable.
		if err = await(fd, unix.POLLOUT, deadline); err == nil {
			var e int
			if e, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 {
				err = unix.Errno(e)
			}
		}
	}
	if err == nil {
		_, err = unix.Write(fd, q)
	}
	buf := make([]byte, 2+65535)
	for n := 0; err == nil; {
		if err = await(fd, unix.POLLIN, deadline); err != nil {
			break
		}
		k, rerr := unix.Read(fd, buf[n:])
		switch {
		case rerr == unix.EAGAIN || rerr == unix.EINTR:
		case rerr != nil:
			err = rerr
		case !stream:
			return buf[:k], nil
		case k == 0:
			err = errors.New("connection closed before the whole answer")
		default:
			if n += k; n >= 2 && n >= 2+int(binary.BigEndian.Uint16(buf)) {
				return buf[2 : 2+int(binary.BigEndian.Uint16(buf))], nil
			}
		}
	}
	return nil, err
}

// errTimeout is a name server that did not answer in time.
var errTimeout = errors.New("timed out")

// await waits until fd has events or the deadline passes.
func await(fd int, events int16, deadline time.Time) error {
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return errTimeout
		}
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(pfd[:], int(min(wait.Milliseconds()+1, 1<<30)))
		if err != nil && err != unix.EINTR {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

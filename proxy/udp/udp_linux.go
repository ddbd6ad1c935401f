//go:build linux

package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/sockopt"
)

const (
	// batchSize is the number of datagrams one recvmmsg or sendmmsg moves.
	// Each slot owns a MaxDatagram buffer; pages the kernel never writes
	// are never touched, so small datagrams keep the resident cost low.
	batchSize = 32
	// oobSize is the room for the control messages of one received
	// datagram: PKTINFO, plus whatever else an engine enabled on its socket.
	oobSize = 128
	// hostRcvBuf is the receive buffer the host socket is raised to (the
	// kernel caps it at net.core.rmem_max), to ride out bursts.
	hostRcvBuf = 4 << 20
	// flowRcvBuf is the receive buffer of a flow socket (capped by
	// net.core.rmem_max), for a backend's bursts of replies.
	flowRcvBuf = 1 << 20

	// UDP GSO: consecutive datagrams of one size for one destination go in
	// one sendmsg with UDP_SEGMENT. Only datagrams up to gsoMaxSegment
	// bytes are coalesced, so that a segment fits any path MTU of 1500 or
	// more; the kernel takes at most 64 segments (UDP_MAX_SEGMENTS).
	gsoMaxSegment  = 1400
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000
	// ctlSize is the room for a sent datagram's control messages.
	ctlSize = sockopt.PktinfoSpace + sockopt.UDPSegmentSpace
	// gsoEnv set to 0 turns UDP GSO off.
	gsoEnv = "HOSTPROXY_UDP_GSO"
	// groEnv set to 0 turns UDP GRO off.
	groEnv = "HOSTPROXY_UDP_GRO"
	// sendMax is the number of datagrams one send call takes at most: a
	// batch of coalesced (UDP GRO) buffers is split into datagrams and sent
	// in runs of this many.
	sendMax = 4 * gsoMaxSegments
)

// epoll tokens (EpollEvent.Fd): the host socket, then flow slots.
const (
	tokHost  = 0
	tokFlow0 = 1
)

const sizeofName = unix.SizeofSockaddrInet6 // room for either family's sockaddr

// flowKey identifies a flow: who wrote, and to which local address.
type flowKey struct {
	client netip.AddrPort // without zone
	scope  uint32         // the client's IPv6 scope id
	local  netip.Addr     // invalid when the kernel gave no PKTINFO
}

// flow is one client's relay state. It is owned by the serving goroutine.
type flow struct {
	key        flowKey
	fd         int   // connected to the backend; -1 once closed
	slot       int32 // index in Proxy.slots and epoll token - tokFlow0
	last       int64 // time of the last datagram either way, ns since Proxy.start
	prev, next *flow // LRU list, most recent first

	// name and oob are the reply's msg_name and msg_control, computed once.
	namelen uint32
	ooblen  uint32
	name    [sizeofName]byte
	oob     [sockopt.PktinfoSpace]byte
}

// batch is a set of mmsghdrs with their buffers, reused for every call.
type batch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names [][sizeofName]byte
	oobs  [][oobSize]byte
	flows []*flow
	segs  []int // UDP GRO segment size of each buffer; 0: one datagram
}

// newBatch makes a batch of n slots, each with a buffer of size bytes;
// withAddr gives each slot room for the sender's address, withCtl room for
// control messages.
func newBatch(n, size int, withAddr, withCtl bool) batch {
	b := batch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		flows: make([]*flow, n),
		segs:  make([]int, n),
	}
	slab := make([]byte, n*size)
	if withAddr {
		b.names = make([][sizeofName]byte, n)
	}
	if withCtl {
		b.oobs = make([][oobSize]byte, n)
	}
	for i := range b.hdrs {
		b.iovs[i].Base = &slab[i*size]
		b.iovs[i].SetLen(size)
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		if withAddr {
			h.Name = &b.names[i][0]
			h.Namelen = sizeofName
		}
		if withCtl {
			h.Control = &b.oobs[i][0]
			h.SetControllen(oobSize)
		}
	}
	return b
}

// segments reports how a received buffer of size bytes with UDP GRO
// segment size seg (0: none) splits into datagrams: each of step bytes but
// the last. A buffer that is not coalesced is one datagram (step == size,
// which may be 0).
func segments(size, seg int) (step int) {
	if seg <= 0 || seg >= size {
		return size
	}
	return seg
}

// Proxy is a UDP relay of one host socket. Create it with New; NewRange serves
// many, each a Proxy of one Range.
type Proxy struct {
	log      *logging.Logger
	timeout  int64 // ns
	maxFlows int
	backend  netip.AddrPort
	bfamily  int
	bsa      unix.Sockaddr
	laddr    *net.UDPAddr
	v6       bool // the host socket is AF_INET6

	hostFD int   // a dup of the caller's socket
	l      *loop // the goroutine and epoll set serving it
	idx    int32 // its index in l.members

	st counters

	// Everything below is owned by the serving goroutine.
	flows      map[flowKey]*flow
	slots      []*flow
	free       []int32
	head, tail *flow
	armed      bool
	*work           // the loop's, while it handles this proxy's events
	rn         int  // slots of rep filled, waiting for flushReplies
	gso        bool // UDP_SEGMENT works; turned off for good on EIO
	gro        bool // UDP_GRO is on on the host socket
	flowGRO    bool // UDP_GRO is turned on on new flow sockets

	// One limiter per kind of failure: at most a line per
	// proxy.DefaultLogEvery each.
	evictLog, truncLog, sendLog, flowLog, readLog proxy.RateLimited
}

type counters struct {
	flows                                              atomic.Int64
	created, expired, evicted, failed                  atomic.Uint64
	toBackend, toClient, bytesToBackend, bytesToClient atomic.Uint64
	truncated, refused, dropped, rejected              atomic.Uint64
	coalesced                                          atomic.Uint64 // UDP GRO buffers received
}

// New returns a relay that serves the bound UDP socket f and sends to
// cfg.Backend. It turns on PKTINFO on f (an engine may hand over a socket
// without it), raises its receive buffer, and duplicates it: the caller may
// close f once New returns.
func New(f *os.File, cfg Config) (*Proxy, error) {
	p, err := newMember(f, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := newLoop([]*Proxy{p}); err != nil {
		p.release()
		return nil, fmt.Errorf("udp proxy on %s: %w", p.laddr, err)
	}
	return p, nil
}

// newMember is New without the loop: the checks, the socket options and the
// duplicate of f.
func newMember(f *os.File, cfg Config) (*Proxy, error) {
	if f == nil {
		return nil, errors.New("udp proxy: nil host socket")
	}
	backend := netip.AddrPortFrom(cfg.Backend.Addr().Unmap(), cfg.Backend.Port())
	if !backend.Addr().IsValid() || backend.Port() == 0 || backend.Addr().IsUnspecified() {
		return nil, fmt.Errorf("udp proxy on %s: invalid backend address %s", f.Name(), cfg.Backend)
	}
	info, err := sockopt.Inspect(f)
	if err != nil {
		return nil, fmt.Errorf("udp proxy: %w", err)
	}
	if info.Proto != sockopt.UDP {
		return nil, fmt.Errorf("udp proxy: %s is a %s, not a UDP socket", f.Name(), info)
	}
	if err := sockopt.EnablePktinfo(f); err != nil {
		return nil, fmt.Errorf("udp proxy on %s: %w", info.Local, err)
	}
	p := &Proxy{
		log:      cfg.Logger.With(logging.AddrPort("listen", info.Local), logging.AddrPort("backend", backend)),
		timeout:  int64(cfg.idleTimeout()),
		maxFlows: cfg.maxFlows(),
		backend:  backend,
		bfamily:  unix.AF_INET,
		v6:       info.Family == unix.AF_INET6,
		laddr:    net.UDPAddrFromAddrPort(info.Local),
		hostFD:   -1,
		gso:      os.Getenv(gsoEnv) != "0" && sockopt.UDPGSOSupported(f),
	}
	if backend.Addr().Is4() {
		p.bsa = &unix.SockaddrInet4{Port: int(backend.Port()), Addr: backend.Addr().As4()}
	} else {
		p.bfamily = unix.AF_INET6
		p.bsa = &unix.SockaddrInet6{Port: int(backend.Port()), Addr: backend.Addr().As16()}
	}
	if err := p.open(f); err != nil {
		p.release()
		return nil, fmt.Errorf("udp proxy on %s: %w", info.Local, err)
	}
	return p, nil
}

// open duplicates the host socket and sets its options.
func (p *Proxy) open(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		p.hostFD, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return err
	}
	if dupErr != nil {
		p.hostFD = -1
		return fmt.Errorf("dup: %w", dupErr)
	}
	if n, err := unix.GetsockoptInt(p.hostFD, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && n < hostRcvBuf {
		_ = unix.SetsockoptInt(p.hostFD, unix.SOL_SOCKET, unix.SO_RCVBUF, hostRcvBuf) // best effort
	}
	// UDP GRO where the kernel has it (5.0+): a client's run of datagrams
	// sent with GSO arrives as one buffer, to be split here, and goes on
	// as one GSO send. Without it the kernel splits the run on arrival.
	if os.Getenv(groEnv) != "0" && sockopt.EnableUDPGROFD(p.hostFD) == nil {
		p.gro, p.flowGRO = true, true
	}
	return nil
}

// release closes what New and Serve opened. Only the serving goroutine, or
// Close when Serve never ran, calls it.
func (p *Proxy) release() {
	for _, f := range p.slots {
		if f != nil {
			unix.Close(f.fd)
			f.fd = -1
		}
	}
	p.flows, p.slots, p.free, p.head, p.tail = nil, nil, nil, nil, nil
	p.st.flows.Store(0)
	if p.hostFD >= 0 {
		unix.Close(p.hostFD)
		p.hostFD = -1
	}
}

// Addr returns the host socket's address.
func (p *Proxy) Addr() net.Addr { return p.laddr }

// Serve relays until ctx is done, Close is called or Shutdown completes;
// see proxy.Proxy.
func (p *Proxy) Serve(ctx context.Context) error { return p.l.serve(ctx) }

// Close stops at once: the host socket and every flow socket are closed and
// Serve returns. It is safe to call more than once, from any goroutine.
func (p *Proxy) Close() error { return p.l.close() }

// Shutdown stops creating flows at once (datagrams from new clients are
// dropped and counted as Rejected), keeps relaying for the existing flows
// until each goes idle, and closes everything when none is left or ctx is
// done, whichever comes first. It returns ctx.Err() in the second case, and
// proxy.ErrClosed when the proxy was already closed.
func (p *Proxy) Shutdown(ctx context.Context) error { return p.l.shutdown(ctx) }

// now is the time of flows, in ns since the loop began.
func (p *Proxy) now() int64 { return p.l.now() }

// at converts now, a time of flows, to wall-clock time.
func (p *Proxy) at(now int64) time.Time { return p.l.start.Add(time.Duration(now)) }

// Stats returns the relay's counters. It is safe to call at any time.
func (p *Proxy) Stats() Stats {
	return Stats{
		Flows:          int(p.st.flows.Load()),
		FlowsCreated:   p.st.created.Load(),
		FlowsExpired:   p.st.expired.Load(),
		FlowsEvicted:   p.st.evicted.Load(),
		FlowsFailed:    p.st.failed.Load(),
		ToBackend:      p.st.toBackend.Load(),
		ToClient:       p.st.toClient.Load(),
		BytesToBackend: p.st.bytesToBackend.Load(),
		BytesToClient:  p.st.bytesToClient.Load(),
		Truncated:      p.st.truncated.Load(),
		Refused:        p.st.refused.Load(),
		Dropped:        p.st.dropped.Load(),
		Rejected:       p.st.rejected.Load(),
	}
}

// scratch holds what a send builds: the datagrams to send (fwd, fwdFlows),
// their sizes, the plan grouping them, and one mmsghdr, iovec run and
// control buffer per group.
type scratch struct {
	fwd      []unix.Iovec
	fwdFlows []*flow
	sizes    []int
	groups   []group
	hdrs     []unix.Mmsghdr
	iovs     []unix.Iovec
	ctls     [][ctlSize]byte
}

func newScratch() scratch {
	return scratch{
		fwd:      make([]unix.Iovec, sendMax),
		fwdFlows: make([]*flow, sendMax),
		sizes:    make([]int, sendMax),
		groups:   make([]group, 0, sendMax),
		hdrs:     make([]unix.Mmsghdr, sendMax),
		iovs:     make([]unix.Iovec, sendMax),
		ctls:     make([][ctlSize]byte, sendMax),
	}
}

func mmsg(trap uintptr, fd int, hdrs []unix.Mmsghdr) (int, unix.Errno) {
	r, _, e := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// fromClients reads datagrams from the host socket and sends each to its
// flow's backend socket.
func (p *Proxy) fromClients(now int64) {
	b := &p.in
	for round := 0; round < 4; round++ {
		for i := range b.hdrs {
			h := &b.hdrs[i].Hdr
			h.Namelen = sizeofName
			h.SetControllen(oobSize)
			h.Flags = 0
		}
		n, errno := mmsg(unix.SYS_RECVMMSG, p.hostFD, b.hdrs)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return
		default:
			if ok, skipped := p.readLog.Allow(p.at(now)); ok {
				p.log.Warn("udp read from clients failed", logging.Err(errno), logging.Int64("suppressed", skipped))
			}
			return
		}
		p.route(n, now)
		if n < len(b.hdrs) {
			return
		}
	}
}

// route finds or creates the flow of each of the n datagrams in p.in, then
// sends them flow by flow, keeping each flow's order.
func (p *Proxy) route(n int, now int64) {
	b := &p.in
	draining := p.l.draining.Load()
	for i := range b.flows[:n] {
		b.flows[i] = nil
		h := &b.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			p.truncated("client", now)
			continue
		}
		client, scope, ok := sockopt.ParseSockaddr(b.names[i][:min(h.Hdr.Namelen, sizeofName)])
		if !ok {
			p.st.dropped.Add(1)
			continue
		}
		oob := b.oobs[i][:min(int(h.Hdr.Controllen), oobSize)]
		pi, _ := sockopt.ParsePktinfo(oob)
		b.segs[i] = 0
		if seg, ok := sockopt.ParseUDPGRO(oob); ok {
			b.segs[i] = seg
			p.st.coalesced.Add(1)
		}
		key := flowKey{client: client, scope: scope, local: pi.Dst}
		f := p.flows[key]
		if f == nil {
			if draining {
				p.st.rejected.Add(1)
				continue
			}
			if f = p.newFlow(key, pi, now); f == nil {
				p.st.dropped.Add(1)
				continue
			}
		}
		p.touch(f, now)
		b.flows[i] = f
	}
	for i := range b.flows[:n] {
		f := b.flows[i]
		if f == nil {
			continue
		}
		m := 0
		for j := i; j < n; j++ {
			if b.flows[j] != f {
				continue
			}
			b.flows[j] = nil
			size := int(b.hdrs[j].Len)
			step := segments(size, b.segs[j])
			for off := 0; ; off += step {
				if m == len(p.fwd) {
					p.toBackend(f, p.fwd[:m], now)
					m = 0
				}
				p.fwd[m].Base = (*byte)(unsafe.Add(unsafe.Pointer(b.iovs[j].Base), off))
				p.fwd[m].SetLen(min(step, size-off))
				m++
				if off+step >= size {
					break
				}
			}
		}
		p.toBackend(f, p.fwd[:m], now)
	}
}

// toBackend sends the datagrams dgrams on f's backend socket.
func (p *Proxy) toBackend(f *flow, dgrams []unix.Iovec, now int64) {
	if f.fd < 0 { // evicted by a new flow of this same batch
		p.st.dropped.Add(uint64(len(dgrams)))
		return
	}
	flows := p.fwdFlows[:len(dgrams)]
	for i := range flows {
		flows[i] = f
	}
	p.send(f.fd, dgrams, flows, false, p.gso, now)
}

// send writes the datagrams dgrams to fd with sendmmsg, coalescing runs for
// one flow with UDP GSO when gso is set. Replies (reply set) go from the host
// socket to each flow's client, with the flow's PKTINFO; otherwise fd is a
// flow's connected backend socket.
//
// Errors are handled per send: ECONNREFUSED on a backend socket reports an
// ICMP error for an earlier datagram, so the send is retried; a refused GSO
// send is split into single datagrams (and GSO turned off for good on EIO);
// an EINVAL on a reply with PKTINFO drops that flow's source address; any
// other error drops the datagrams of that send, counted and logged.
func (p *Proxy) send(fd int, dgrams []unix.Iovec, flows []*flow, reply, gso bool, now int64) {
	sizes := p.sizes[:len(dgrams)]
	for i := range dgrams {
		sizes[i] = int(dgrams[i].Len)
	}
	groups := planGroups(p.groups, sizes, flows, gso)
	copy(p.iovs, dgrams)
	for k, g := range groups {
		h := &p.hdrs[k].Hdr
		h.Iov = &p.iovs[g.first]
		h.SetIovlen(g.count)
		f := flows[g.first]
		ctl := p.ctls[k][:0]
		h.Name, h.Namelen = nil, 0
		if reply {
			h.Name, h.Namelen = &f.name[0], f.namelen
			ctl = append(ctl, f.oob[:f.ooblen]...)
		}
		if g.count > 1 {
			ctl = sockopt.AppendUDPSegment(ctl, uint16(g.seg))
		}
		h.Control = nil
		if len(ctl) > 0 {
			h.Control = &p.ctls[k][0]
		}
		h.SetControllen(len(ctl))
	}
	hdrs := p.hdrs[:len(groups)]
	retries := 0
	for k := 0; k < len(hdrs); {
		n, errno := mmsg(unix.SYS_SENDMMSG, fd, hdrs[k:])
		if errno == 0 && n > 0 {
			var count, bytes uint64
			for _, g := range groups[k : k+n] {
				count += uint64(g.count)
				for _, s := range sizes[g.first : g.first+g.count] {
					bytes += uint64(s)
				}
			}
			if reply {
				p.st.toClient.Add(count)
				p.st.bytesToClient.Add(bytes)
			} else {
				p.st.toBackend.Add(count)
				p.st.bytesToBackend.Add(bytes)
			}
			k, retries = k+n, 0
			continue
		}
		g := groups[k]
		f := flows[g.first]
		switch {
		case errno == unix.EINTR:
			continue
		case !reply && errno == unix.ECONNREFUSED && retries < 2:
			p.st.refused.Add(1)
			retries++
			continue
		case g.count > 1 && sockopt.IsGSOError(errno):
			if errno == unix.EIO && p.gso {
				p.gso = false
				p.log.Warn("udp GSO refused by the kernel; sending datagrams one by one", logging.Err(errno))
			}
			p.send(fd, dgrams[g.first:], flows[g.first:], reply, false, now)
			return
		case reply && errno == unix.EINVAL && f.ooblen > 0:
			// The local address the client wrote to cannot be a source
			// (say, a broadcast address): let the kernel choose from now on.
			p.log.Warn("udp reply source not usable; the kernel picks it for this flow",
				logging.AddrPort("client", f.key.client), logging.Stringer("local", f.key.local))
			f.ooblen = 0
			p.send(fd, dgrams[g.first:], flows[g.first:], reply, gso, now)
			return
		}
		p.st.dropped.Add(uint64(g.count))
		if ok, skipped := p.sendLog.Allow(p.at(now)); ok {
			to := "backend"
			if reply {
				to = "client"
			}
			p.log.Warn("udp send to "+to+" failed; datagram dropped", logging.AddrPort("client", f.key.client),
				logging.Err(errno), logging.Int64("suppressed", skipped))
		}
		k, retries = k+1, 0
	}
}

// fromBackend reads the replies waiting on a flow's socket into p.rep.
func (p *Proxy) fromBackend(slot int32, now int64) {
	if slot < 0 || int(slot) >= len(p.slots) {
		return
	}
	f := p.slots[slot]
	if f == nil {
		return
	}
	for round := 0; round < 4; round++ {
		if p.rn == batchSize {
			p.flushReplies()
		}
		free := p.rep.hdrs[p.rn:]
		for k := range free {
			free[k].Hdr.SetControllen(oobSize)
		}
		n, errno := mmsg(unix.SYS_RECVMMSG, f.fd, free)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return
		case unix.ECONNREFUSED:
			// An ICMP error for an earlier datagram; the flow stays.
			p.st.refused.Add(1)
			continue
		default:
			if ok, skipped := p.readLog.Allow(p.at(now)); ok {
				p.log.Warn("udp read from backend failed", logging.AddrPort("client", f.key.client),
					logging.Err(errno), logging.Int64("suppressed", skipped))
			}
			return
		}
		p.touch(f, now)
		w := p.rn
		for k := p.rn; k < p.rn+n; k++ {
			size := p.rep.hdrs[k].Len
			if p.rep.hdrs[k].Hdr.Flags&unix.MSG_TRUNC != 0 {
				p.rep.hdrs[k].Hdr.Flags = 0
				p.truncated("backend", now)
				continue
			}
			// A flow socket with UDP_GRO on may hand over a coalesced run.
			seg, ok := sockopt.ParseUDPGRO(p.rep.oobs[k][:min(int(p.rep.hdrs[k].Hdr.Controllen), oobSize)])
			if ok {
				p.st.coalesced.Add(1)
			}
			if k != w {
				p.rep.iovs[k], p.rep.iovs[w] = p.rep.iovs[w], p.rep.iovs[k]
			}
			p.rep.iovs[w].SetLen(int(size))
			p.rep.flows[w] = f
			p.rep.segs[w] = seg
			w++
		}
		p.rn = w
		if n < len(free) {
			return
		}
	}
}

// flushReplies sends the replies gathered in p.rep from the host socket,
// splitting coalesced buffers into datagrams, then readies p.rep for reading
// again.
func (p *Proxy) flushReplies() {
	if p.rn == 0 {
		return
	}
	now := p.now()
	m := 0
	for k := range p.rep.iovs[:p.rn] {
		size := int(p.rep.iovs[k].Len)
		step := segments(size, p.rep.segs[k])
		for off := 0; ; off += step {
			if m == len(p.fwd) {
				p.send(p.hostFD, p.fwd[:m], p.fwdFlows[:m], true, p.gso, now)
				m = 0
			}
			p.fwd[m].Base = (*byte)(unsafe.Add(unsafe.Pointer(p.rep.iovs[k].Base), off))
			p.fwd[m].SetLen(min(step, size-off))
			p.fwdFlows[m] = p.rep.flows[k]
			m++
			if off+step >= size {
				break
			}
		}
	}
	p.send(p.hostFD, p.fwd[:m], p.fwdFlows[:m], true, p.gso, now)
	for k := range p.rep.iovs[:p.rn] {
		p.rep.iovs[k].SetLen(MaxDatagram)
		p.rep.flows[k] = nil
	}
	p.rn = 0
}

func (p *Proxy) truncated(from string, now int64) {
	p.st.truncated.Add(1)
	if ok, skipped := p.truncLog.Allow(p.at(now)); ok {
		p.log.Warn("udp datagram truncated by the kernel; dropped", logging.String("from", from),
			logging.Int64("suppressed", skipped))
	}
}

// newFlow opens a flow for key, evicting the least recently used one when
// the table is full. It returns nil when the backend socket cannot be made.
func (p *Proxy) newFlow(key flowKey, pi sockopt.Pktinfo, now int64) *flow {
	if len(p.flows) >= p.maxFlows && p.tail != nil {
		victim := p.tail
		p.closeFlow(victim)
		p.st.evicted.Add(1)
		if ok, skipped := p.evictLog.Allow(p.at(now)); ok {
			p.log.Warn("udp flow table full; evicted the least recently used flow",
				logging.Int("max_flows", p.maxFlows), logging.AddrPort("evicted", victim.key.client),
				logging.Duration("idle", time.Duration(now-victim.last)), logging.Int64("suppressed", skipped))
		}
	}
	fd, err := p.dialBackend()
	if err != nil {
		p.st.failed.Add(1)
		if ok, skipped := p.flowLog.Allow(p.at(now)); ok {
			p.log.Error("udp flow not opened", logging.AddrPort("client", key.client), logging.Err(err),
				logging.Int64("suppressed", skipped))
		}
		return nil
	}
	var slot int32
	if n := len(p.free); n > 0 {
		slot, p.free = p.free[n-1], p.free[:n-1]
	} else {
		slot = int32(len(p.slots))
		p.slots = append(p.slots, nil)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot + tokFlow0, Pad: p.idx}
	if err := unix.EpollCtl(p.l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		p.free = append(p.free, slot)
		p.st.failed.Add(1)
		if ok, skipped := p.flowLog.Allow(p.at(now)); ok {
			p.log.Error("udp flow not opened", logging.AddrPort("client", key.client),
				logging.Err(fmt.Errorf("epoll_ctl: %w", err)), logging.Int64("suppressed", skipped))
		}
		return nil
	}
	f := &flow{key: key, fd: fd, slot: slot, last: now}
	f.namelen = sockopt.PutSockaddr(f.name[:], p.v6, key.client, key.scope)
	if src := pi.Local; src.IsValid() && !src.IsUnspecified() && !src.IsMulticast() {
		var ifindex uint32
		if src.Is6() && !src.Is4In6() && src.IsLinkLocalUnicast() {
			ifindex = pi.Ifindex
		}
		f.ooblen = uint32(len(sockopt.AppendPktinfo(f.oob[:0], p.v6, src, ifindex)))
	}
	p.slots[slot] = f
	p.flows[key] = f
	p.pushFront(f)
	p.st.flows.Add(1)
	p.st.created.Add(1)
	if !p.armed {
		p.arm()
	}
	return f
}

// dialBackend opens a non-blocking UDP socket connected to the backend.
func (p *Proxy) dialBackend() (int, error) {
	fd, err := unix.Socket(p.bfamily, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket for %s/udp: %w", p.backend, err)
	}
	if err := unix.Connect(fd, p.bsa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s/udp: %w", p.backend, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, flowRcvBuf) // best effort
	if p.flowGRO && sockopt.EnableUDPGROFD(fd) != nil {
		p.flowGRO = false // the backend's GSO runs get split by the kernel
	}
	return fd, nil
}

// closeFlow forgets f and closes its socket (which leaves the epoll set).
func (p *Proxy) closeFlow(f *flow) {
	delete(p.flows, f.key)
	p.unlink(f)
	p.slots[f.slot] = nil
	p.free = append(p.free, f.slot)
	unix.Close(f.fd)
	f.fd = -1
	p.st.flows.Add(-1)
}

// expire closes the flows idle for the timeout and arms the deadline for the
// next one.
func (p *Proxy) expire(now int64) {
	for p.tail != nil && now-p.tail.last >= p.timeout {
		p.closeFlow(p.tail)
		p.st.expired.Add(1)
	}
	p.arm()
}

// arm makes the loop wake up by the time the least recently used flow would
// expire (loop.armAt keeps the earliest of its members'). A deadline that
// fires early only causes an extra expiry pass.
func (p *Proxy) arm() {
	if p.tail != nil {
		p.l.armAt(p.l.start.Add(time.Duration(p.tail.last + p.timeout)))
	}
	p.armed = p.tail != nil
}

func (p *Proxy) touch(f *flow, now int64) {
	f.last = now
	if p.head != f {
		p.unlink(f)
		p.pushFront(f)
	}
}

func (p *Proxy) pushFront(f *flow) {
	f.prev, f.next = nil, p.head
	if p.head != nil {
		p.head.prev = f
	}
	p.head = f
	if p.tail == nil {
		p.tail = f
	}
}

func (p *Proxy) unlink(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else if p.head == f {
		p.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else if p.tail == f {
		p.tail = f.prev
	}
	f.prev, f.next = nil, nil
}

//go:build linux

package udp

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
	"github.com/hostproxy/hostproxy/sockopt"
)

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

	// pp is the PROXY protocol v2 header every datagram to the backend
	// starts with, computed once; nil without Config.ProxyProtocol (a
	// pointer keeps the record in its size class when there is none).
	pp *ppHeader
}

// ppHeader is a flow's PROXY protocol header: b[:n].
type ppHeader struct {
	n uint8
	b [proxyproto.MaxV2Len]byte
}

func (h *ppHeader) bytes() []byte {
	if h == nil {
		return nil
	}
	return h.b[:h.n]
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
	fd, err := p.dialBackend(key, pi)
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
	// A reply leaves from the address the client wrote to. A host socket
	// bound to one address sends from that address anyway, so only a
	// wildcard socket's replies carry it, as PKTINFO.
	if src := pi.Local; p.laddr.IP.IsUnspecified() && src.IsValid() && !src.IsUnspecified() && !src.IsMulticast() {
		var ifindex uint32
		if src.Is6() && !src.Is4In6() && src.IsLinkLocalUnicast() {
			ifindex = pi.Ifindex
		}
		f.ooblen = uint32(len(sockopt.AppendPktinfo(f.oob[:0], p.v6, src, ifindex)))
	}
	if p.pp {
		// The destination is the address the client wrote to; without
		// PKTINFO, the host socket's own if it is not a wildcard (else the
		// header says AF_UNSPEC).
		dst := key.local
		if !dst.IsValid() && !p.laddr.IP.IsUnspecified() {
			dst = p.laddr.AddrPort().Addr()
		}
		f.pp = new(ppHeader)
		f.pp.n = uint8(len(proxyproto.AppendV2(f.pp.b[:0], proxyproto.Datagram,
			key.client, netip.AddrPortFrom(dst, uint16(p.laddr.Port)))))
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

// dialBackend opens a non-blocking UDP socket connected to the backend, for
// the flow of key; when the proxy is transparent it is first bound to the
// client's address (bindSource).
func (p *Proxy) dialBackend(key flowKey, pi sockopt.Pktinfo) (int, error) {
	fd, err := p.flowSocket()
	if err != nil {
		return -1, err
	}
	if p.transparent {
		if fd, err = p.bindSource(fd, key, pi); err != nil {
			return -1, err
		}
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

// flowSocket opens a non-blocking UDP socket of the backend's family.
func (p *Proxy) flowSocket() (int, error) {
	fd, err := unix.Socket(p.bfamily, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket for %s/udp: %w", p.backend, err)
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

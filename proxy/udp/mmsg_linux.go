//go:build linux

package udp

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

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
				continue // counted in FlowsFailed
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

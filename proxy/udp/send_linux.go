//go:build linux

package udp

import (
	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

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
		iovs:     make([]unix.Iovec, 2*sendMax), // a PROXY header and a payload each
		ctls:     make([][ctlSize]byte, sendMax),
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
// flow's connected backend socket, and with Config.ProxyProtocol each
// datagram is sent as two iovecs, the flow's PROXY header and the payload.
// A GSO run then carries the header before every payload and its segment
// size counts the header, so the kernel cuts it into datagrams that each
// start with it (the header is the same for every datagram of a flow).
//
// Errors are handled per send: ECONNREFUSED on a backend socket reports an
// ICMP error for an earlier datagram, so the send is retried; a refused GSO
// send is split into single datagrams (and GSO turned off for good on EIO);
// an EINVAL on a reply with PKTINFO drops that flow's source address; any
// other error drops the datagrams of that send, counted and logged.
func (p *Proxy) send(fd int, dgrams []unix.Iovec, flows []*flow, reply, gso bool, now int64) {
	var pp []byte // the PROXY header of the backend sends' one flow
	if !reply {
		pp = flows[0].pp.bytes()
	}
	sizes := p.sizes[:len(dgrams)]
	for i := range dgrams {
		sizes[i] = len(pp) + int(dgrams[i].Len)
	}
	groups := planGroups(p.groups, sizes, flows, gso)
	if pp == nil {
		copy(p.iovs, dgrams)
	}
	j := 0 // next free iovec, with headers
	for k, g := range groups {
		h := &p.hdrs[k].Hdr
		if pp == nil {
			h.Iov = &p.iovs[g.first]
			h.SetIovlen(g.count)
		} else {
			h.Iov = &p.iovs[j]
			for _, d := range dgrams[g.first : g.first+g.count] {
				p.iovs[j].Base = &pp[0]
				p.iovs[j].SetLen(len(pp))
				p.iovs[j+1] = d
				j += 2
			}
			h.SetIovlen(2 * g.count)
		}
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
					bytes += uint64(s - len(pp)) // the payloads relayed
				}
				if g.count > 1 {
					p.st.gsoSends.Add(1)
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

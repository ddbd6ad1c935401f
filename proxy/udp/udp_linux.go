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

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/proxy"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
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
	pp         bool // every datagram to the backend starts with a PROXY v2 header (flow.pp)
	// transparent: flow sockets leave from the client's address
	// (Config.Transparent), as tb decides (bindSource); familyLogged: the
	// fallback for a client of the other family than the backend was
	// logged; src: the sockaddr a new flow's socket binds.
	transparent, familyLogged bool
	tb                        sockopt.TransparentBackend
	src                       [unix.SizeofSockaddrInet6]byte

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
	gsoSends                                           atomic.Uint64 // sends of more than one datagram (UDP GSO)
}

// New returns a relay that serves the bound UDP socket f and sends to
// cfg.Backend. It turns on PKTINFO on f (an engine may hand over a socket
// without it), raises its receive buffer, and duplicates it: the caller may
// close f once New returns.
func New(f *os.File, cfg Config) (*Proxy, error) {
	p, err := newMember(f, cfg, nil)
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
// duplicate of f. known, when not nil, keeps what -transparent learns about
// each backend address, for the other members of a range.
func newMember(f *os.File, cfg Config, known map[netip.Addr]sockopt.TransparentBackend) (*Proxy, error) {
	if f == nil {
		return nil, errors.New("udp proxy: nil host socket")
	}
	switch cfg.ProxyProtocol {
	case proxyproto.None, proxyproto.V2:
	default:
		return nil, fmt.Errorf("udp proxy on %s: PROXY protocol %s has no UDP form (want v2)", f.Name(), cfg.ProxyProtocol)
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
		pp:       cfg.ProxyProtocol == proxyproto.V2,
		gso:      os.Getenv(gsoEnv) != "0" && sockopt.UDPGSOSupported(f),
	}
	if backend.Addr().Is4() {
		p.bsa = &unix.SockaddrInet4{Port: int(backend.Port()), Addr: backend.Addr().As4()}
	} else {
		p.bfamily = unix.AF_INET6
		p.bsa = &unix.SockaddrInet6{Port: int(backend.Port()), Addr: backend.Addr().As16()}
	}
	if cfg.Transparent {
		tb, ok := known[backend.Addr()]
		if !ok {
			if tb, err = sockopt.LearnBackend(backend, 0); err != nil {
				return nil, fmt.Errorf("udp proxy on %s: -transparent: %w", info.Local, err)
			}
			if known != nil {
				known[backend.Addr()] = tb
			}
		}
		if tb.Local {
			p.log.Warn("udp -transparent: the backend is one of the host's own addresses, " +
				"which would send its replies to the clients themselves; its flows leave from the host's address")
		}
		p.transparent, p.tb = !tb.Local, tb
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

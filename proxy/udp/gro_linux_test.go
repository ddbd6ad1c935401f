package udp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// gsoRun builds count datagrams of seg bytes, the last one last bytes
// long, each marked with tag and its index, and their concatenation.
func gsoRun(tag string, count, seg, last int) (dgrams [][]byte, joined []byte) {
	for i := range count {
		n := seg
		if i == count-1 {
			n = last
		}
		d := fmt.Appendf(nil, "%s %03d ", tag, i)
		for len(d) < n {
			d = append(d, byte('a'+(i+len(d))%26))
		}
		dgrams = append(dgrams, d[:n])
		joined = append(joined, d[:n]...)
	}
	return dgrams, joined
}

// writeGSO sends joined from c to to with one sendmsg cut by the kernel
// into datagrams of seg bytes (UDP_SEGMENT).
func writeGSO(t testing.TB, c *net.UDPConn, joined []byte, seg int, to netip.AddrPort) {
	t.Helper()
	oob := sockopt.AppendUDPSegment(nil, uint16(seg))
	var err error
	if to.IsValid() {
		_, _, err = c.WriteMsgUDPAddrPort(joined, oob, to)
	} else {
		_, _, err = c.WriteMsgUDP(joined, oob, nil)
	}
	if err != nil {
		t.Fatalf("GSO send of %d bytes in %d-byte segments to %s: %v", len(joined), seg, to, err)
	}
}

// recordingEcho is a UDP backend on addr that records every datagram it
// receives (when record is set), one recvfrom each, and echoes it; with
// strip it answers with only what follows the datagram's PROXY v2 header.
type recordingEcho struct {
	c      *net.UDPConn
	record bool
	mu     sync.Mutex
	in     [][]byte
}

func newRecordingEcho(t testing.TB, addr string, record, strip bool) *recordingEcho {
	t.Helper()
	r := &recordingEcho{c: listenUDP(t, addr), record: record}
	r.c.SetReadBuffer(1 << 20)
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { r.c.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, MaxDatagram)
		for {
			n, from, err := r.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r.record {
				r.mu.Lock()
				r.in = append(r.in, bytes.Clone(buf[:n]))
				r.mu.Unlock()
			}
			reply := buf[:n]
			if strip {
				if n < 16 {
					continue
				}
				h := 16 + int(buf[14])<<8 | int(buf[15])
				if h > n {
					continue
				}
				reply = buf[h:n]
			}
			r.c.WriteToUDPAddrPort(reply, from)
		}
	}()
	return r
}

func (r *recordingEcho) addr() netip.AddrPort { return r.c.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *recordingEcho) received() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.in...)
}

// A client sending runs of datagrams with UDP GSO: the host socket (with
// UDP GRO, where the kernel has it) receives each run as one buffer; every
// datagram still reaches the backend intact and on its own, in order, and
// every reply comes back on its own, from the address the client wrote to.
func TestGROFromClient(t *testing.T) {
	testenv.Require(t, gsoLoadSupported(), "needs UDP GSO and GRO (Linux 5.0+)")
	for _, gro := range []bool{true, false} {
		t.Run(fmt.Sprintf("gro=%v", gro), func(t *testing.T) {
			if !gro {
				t.Setenv(groEnv, "0")
			}
			backend := newRecordingEcho(t, "127.0.0.1:0", true, false)
			p := start(t, hostSocket(t, "0.0.0.0:0"), Config{Backend: backend.c.LocalAddr().(*net.UDPAddr).AddrPort()})
			if p.gro != gro {
				t.Fatalf("UDP GRO on the host socket: %v, want %v", p.gro, gro)
			}
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), hostPort(p).Port())
			client := listenUDP(t, "127.0.0.1:0")
			client.SetReadBuffer(1 << 20)
			var want [][]byte
			for round, shape := range []struct{ count, seg, last int }{
				{1, 100, 100},    // a run of one
				{20, 300, 123},   // a short last datagram
				{46, 1400, 1400}, // close to the 64 KiB a send takes
				{10, 1472, 1472}, // segments too big to coalesce again
				{60, 16, 16},     // many small ones, five runs at once below
			} {
				runs := 1
				if shape.seg == 16 {
					runs = 5 // 300 datagrams: more than one send's worth
				}
				var sent [][]byte
				for r := range runs {
					dgrams, joined := gsoRun(fmt.Sprintf("r%d.%d", round, r), shape.count, shape.seg, shape.last)
					writeGSO(t, client, joined, shape.seg, to)
					sent = append(sent, dgrams...)
				}
				want = append(want, sent...)
				buf := make([]byte, MaxDatagram)
				client.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i, d := range sent {
					n, from, err := client.ReadFromUDPAddrPort(buf)
					if err != nil {
						t.Fatalf("round %d: reply %d of %d: %v (stats %+v)", round, i, len(sent), err, p.Stats())
					}
					if from != to {
						t.Errorf("round %d: reply %d came from %s, want %s", round, i, from, to)
					}
					if !bytes.Equal(buf[:n], d) {
						t.Fatalf("round %d: reply %d is %d bytes %.20q, want %d bytes %.20q", round, i, n, buf[:n], len(d), d)
					}
				}
			}
			got := backend.received()
			if len(got) != len(want) {
				t.Fatalf("backend received %d datagrams, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("backend datagram %d is %d bytes %.20q, want %d bytes %.20q", i, len(got[i]), got[i], len(want[i]), want[i])
				}
			}
			s := p.Stats()
			if s.ToBackend != uint64(len(want)) || s.ToClient != uint64(len(want)) || s.Truncated != 0 || s.Dropped != 0 {
				t.Errorf("stats after %d datagrams each way: %+v", len(want), s)
			}
			if c := p.st.coalesced.Load(); gro && c == 0 {
				t.Error("the host socket never received a coalesced run")
			} else if !gro && c != 0 {
				t.Errorf("%d coalesced runs received with UDP GRO off", c)
			}
		})
	}
}

// A backend answering with UDP GSO runs: each flow socket (with UDP GRO)
// receives a run as one buffer, and the client gets every datagram on its
// own, intact and in order.
func TestGROFromBackend(t *testing.T) {
	testenv.Require(t, gsoLoadSupported(), "needs UDP GSO and GRO (Linux 5.0+)")
	// The backend answers "burst N" with N datagrams of 200 bytes (the
	// last 77) in one GSO send.
	bc := listenUDP(t, "127.0.0.1:0")
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { bc.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, 100)
		for {
			n, from, err := bc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var count int
			fmt.Sscanf(string(buf[:n]), "burst %d", &count)
			_, joined := gsoRun(fmt.Sprintf("burst%d", count), count, 200, 77)
			bc.WriteMsgUDPAddrPort(joined, sockopt.AppendUDPSegment(nil, 200), from)
		}
	}()
	p := start(t, hostSocket(t, "127.0.0.1:0"), Config{Backend: bc.LocalAddr().(*net.UDPAddr).AddrPort()})
	c := dial(t, hostPort(p))
	c.SetReadBuffer(1 << 20)
	buf := make([]byte, MaxDatagram)
	for _, count := range []int{1, 2, 40, 64} {
		if _, err := c.Write(fmt.Appendf(nil, "burst %d", count)); err != nil {
			t.Fatal(err)
		}
		want, _ := gsoRun(fmt.Sprintf("burst%d", count), count, 200, 77)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i, d := range want {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("burst of %d: reply %d: %v (stats %+v)", count, i, err, p.Stats())
			}
			if !bytes.Equal(buf[:n], d) {
				t.Fatalf("burst of %d: reply %d is %d bytes %.20q, want %d bytes %.20q", count, i, n, buf[:n], len(d), d)
			}
		}
	}
	if s := p.Stats(); s.ToClient != 1+2+40+64 || s.Dropped != 0 || s.Truncated != 0 {
		t.Errorf("stats: %+v", s)
	}
	if p.flowGRO && p.st.coalesced.Load() == 0 {
		t.Error("no flow socket received a coalesced run")
	}
}

// flushReplies splits coalesced buffers into datagrams and sends more of
// them than one send takes, in order.
func TestFlushRepliesSplits(t *testing.T) {
	client := listenUDP(t, "127.0.0.1:0")
	client.SetReadBuffer(1 << 20)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	for _, gso := range []bool{true, false} {
		p := &Proxy{work: &work{scratch: newScratch(), rep: newBatch(batchSize, MaxDatagram, false, true)}, hostFD: fd, gso: gso, l: &loop{start: time.Now()}}
		f := &flow{}
		f.namelen = sockopt.PutSockaddr(f.name[:], false, client.LocalAddr().(*net.UDPAddr).AddrPort(), 0)
		var want [][]byte
		// Five coalesced buffers of 60 datagrams, one plain datagram and an
		// empty one: 302 datagrams, more than sendMax.
		for k := range 7 {
			var dgrams [][]byte
			var joined []byte
			seg := 0
			switch k {
			case 5:
				dgrams, joined = gsoRun("plain", 1, 500, 500)
			case 6:
				dgrams, joined = [][]byte{{}}, nil
			default:
				seg = 20
				dgrams, joined = gsoRun(fmt.Sprintf("gso=%v buf%d", gso, k), 60, 20, 9)
			}
			copy(unsafe2slice(p.rep.iovs[k].Base, len(joined)), joined)
			p.rep.iovs[k].SetLen(len(joined))
			p.rep.segs[k] = seg
			p.rep.flows[k] = f
			want = append(want, dgrams...)
		}
		p.rn = 7
		p.flushReplies()
		if p.rn != 0 {
			t.Fatalf("rn = %d after flushReplies", p.rn)
		}
		buf := make([]byte, 1000)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i, d := range want {
			n, err := client.Read(buf)
			if err != nil {
				t.Fatalf("gso=%v: datagram %d of %d: %v (stats %+v)", gso, i, len(want), err, p.Stats())
			}
			if !bytes.Equal(buf[:n], d) {
				t.Fatalf("gso=%v: datagram %d is %.20q, want %.20q", gso, i, buf[:n], d)
			}
		}
		if s := p.Stats(); s.ToClient != uint64(len(want)) || s.Dropped != 0 {
			t.Errorf("gso=%v: stats %+v", gso, s)
		}
	}
}

func TestSegments(t *testing.T) {
	for _, tc := range []struct{ size, seg, want int }{
		{0, 0, 0}, {0, 100, 0}, {100, 0, 100}, {100, 100, 100}, {100, 200, 100},
		{100, 30, 30}, {100, -1, 100},
	} {
		if got := segments(tc.size, tc.seg); got != tc.want {
			t.Errorf("segments(%d, %d) = %d, want %d", tc.size, tc.seg, got, tc.want)
		}
	}
}

func unsafe2slice(p *byte, n int) []byte { return unsafe.Slice(p, n) }

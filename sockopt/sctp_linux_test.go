package sockopt_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy/sctp"
	"github.com/hostproxy/hostproxy/sockopt"
	"golang.org/x/sys/unix"
)

// cmsg builds one control message with raw data, as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := unix.Cmsghdr{Level: level, Type: typ}
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestSCTPSndRcvRoundTrip(t *testing.T) {
	tos := cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0x10})
	for _, tc := range []struct {
		name   string
		prefix []byte
		info   sockopt.SCTPSndRcvInfo
	}{
		{"zero", nil, sockopt.SCTPSndRcvInfo{}},
		{"stream and PPID", nil, sockopt.SCTPSndRcvInfo{Stream: 7, PPID: 0xdeadbeef}},
		{"every field", nil, sockopt.SCTPSndRcvInfo{
			Stream: 65535, SSN: 12, Flags: sockopt.SCTPUnordered, PPID: 1, Context: 2,
			TimeToLive: 3, TSN: 4, CumTSN: 5, AssocID: -6,
		}},
		{"after another control message", tos, sockopt.SCTPSndRcvInfo{Stream: 3, PPID: 46}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oob := sockopt.AppendSCTPSndRcv(append([]byte(nil), tc.prefix...), tc.info)
			if want := len(tc.prefix) + sockopt.SCTPSndRcvSpace; len(oob) != want {
				t.Fatalf("appended %d bytes, want %d", len(oob), want)
			}
			got, ok, err := sockopt.ParseSCTPSndRcv(oob)
			if err != nil || !ok {
				t.Fatalf("ParseSCTPSndRcv: ok=%v err=%v", ok, err)
			}
			if got != tc.info {
				t.Fatalf("got %+v, want %+v", got, tc.info)
			}
		})
	}
}

func TestParseSCTPSndRcvMalformed(t *testing.T) {
	good := sockopt.AppendSCTPSndRcv(nil, sockopt.SCTPSndRcvInfo{Stream: 1})
	withLen := func(b []byte, n uint64) []byte {
		b = append([]byte(nil), b...)
		binary.NativeEndian.PutUint64(b, n)
		return b
	}
	hdr := unix.CmsgLen(0)
	for _, tc := range []struct {
		name    string
		oob     []byte
		wantOK  bool
		wantErr bool
	}{
		{"empty", nil, false, false},
		{"other message only", cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{1}), false, false},
		{"truncated header", good[:hdr-1], false, true},
		{"length below header", withLen(good, uint64(hdr-1)), false, true},
		{"length beyond buffer", withLen(good, uint64(len(good)+1)), false, true},
		{"short SCTP_SNDRCV data", withLen(good, uint64(hdr+8)), false, true},
		{"truncated data", good[:hdr+16], false, true},
		{"good", good, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ok, err := sockopt.ParseSCTPSndRcv(tc.oob)
			if ok != tc.wantOK || (err != nil) != tc.wantErr {
				t.Fatalf("ParseSCTPSndRcv: ok=%v err=%v, want ok=%v err=%v", ok, err, tc.wantOK, tc.wantErr)
			}
		})
	}
}

func FuzzParseSCTPSndRcv(f *testing.F) {
	f.Add(sockopt.AppendSCTPSndRcv(nil, sockopt.SCTPSndRcvInfo{Stream: 9, PPID: 3}))
	f.Add(append(cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{1}), sockopt.AppendSCTPSndRcv(nil, sockopt.SCTPSndRcvInfo{})...))
	f.Add([]byte{})
	f.Add(make([]byte, 17))
	f.Fuzz(func(t *testing.T, oob []byte) {
		info, ok, err := sockopt.ParseSCTPSndRcv(oob)
		if err != nil && ok {
			t.Fatalf("ok with error %v", err)
		}
		if !ok {
			return
		}
		again, ok, err := sockopt.ParseSCTPSndRcv(sockopt.AppendSCTPSndRcv(nil, info))
		if err != nil || !ok || again != info {
			t.Fatalf("round trip of %+v: %+v ok=%v err=%v", info, again, ok, err)
		}
	})
}

// assocChange builds an SCTP_ASSOC_CHANGE notification.
func assocChange(state, cause, out, in uint16, id int32) []byte {
	b := make([]byte, 20)
	ne := binary.NativeEndian
	ne.PutUint16(b[0:], 0x8001)
	ne.PutUint32(b[4:], 20)
	ne.PutUint16(b[8:], state)
	ne.PutUint16(b[10:], cause)
	ne.PutUint16(b[12:], out)
	ne.PutUint16(b[14:], in)
	ne.PutUint32(b[16:], uint32(id))
	return b
}

func TestParseSCTPAssocChange(t *testing.T) {
	other := assocChange(0, 0, 0, 0, 0)
	binary.NativeEndian.PutUint16(other, 0x8002) // SCTP_PEER_ADDR_CHANGE
	for _, tc := range []struct {
		name string
		b    []byte
		want sockopt.SCTPAssocChange
		err  bool
	}{
		{"comm up", assocChange(sockopt.SCTPCommUp, 0, 10, 65535, 3), sockopt.SCTPAssocChange{State: sockopt.SCTPCommUp, OutStreams: 10, InStreams: 65535, AssocID: 3}, false},
		{"shutdown complete", assocChange(sockopt.SCTPShutdownComp, 0, 1, 1, 1), sockopt.SCTPAssocChange{State: sockopt.SCTPShutdownComp, OutStreams: 1, InStreams: 1, AssocID: 1}, false},
		{"cannot start", assocChange(sockopt.SCTPCantStartAssoc, 1, 0, 0, -1), sockopt.SCTPAssocChange{State: sockopt.SCTPCantStartAssoc, Error: 1, AssocID: -1}, false},
		{"empty", nil, sockopt.SCTPAssocChange{}, true},
		{"short", assocChange(0, 0, 0, 0, 0)[:12], sockopt.SCTPAssocChange{}, true},
		{"other notification", other, sockopt.SCTPAssocChange{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sockopt.ParseSCTPAssocChange(tc.b)
			if tc.err {
				if !errors.Is(err, sockopt.ErrSCTPNotification) {
					t.Fatalf("err = %v, want ErrSCTPNotification", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseSCTPAssocChange(f *testing.F) {
	f.Add(assocChange(sockopt.SCTPCommUp, 0, 1, 1, 1))
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := sockopt.ParseSCTPAssocChange(b); err != nil && !errors.Is(err, sockopt.ErrSCTPNotification) {
			t.Fatalf("error %v does not wrap ErrSCTPNotification", err)
		}
	})
}

// sctpDialWithin reports whether an association with addr comes up within d.
func sctpDialWithin(t *testing.T, addr netip.AddrPort, d time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := sctp.Dial(ctx, addr)
	if err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dial %s: %v, want success or a timeout", addr, err)
		}
		return false
	}
	c.Close()
	return true
}

// TestSCTPListenDropAll checks that an SCTP listener created with the
// drop-all filter answers no INIT until the filter is detached, and that a
// filter attached later silences it again.
func TestSCTPListenDropAll(t *testing.T) {
	testenv.RequireSCTP(t)
	for _, ip := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		t.Run(ip.String(), func(t *testing.T) {
			f, err := sockopt.Listen(sockopt.SCTP, netip.AddrPortFrom(ip, 0), sockopt.Options{DropAll: true})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			info, err := sockopt.Inspect(f)
			if err != nil {
				t.Fatal(err)
			}
			if info.Proto != sockopt.SCTP || !info.Listening || info.Local.Addr() != ip || info.Local.Port() == 0 {
				t.Fatalf("Inspect: %+v, want a listening SCTP socket on %s", info, ip)
			}
			const silent = 500 * time.Millisecond
			if sctpDialWithin(t, info.Local, silent) {
				t.Fatal("the filtered listener answered INIT")
			}
			if err := sockopt.DetachFilter(f); err != nil {
				t.Fatal(err)
			}
			if !sctpDialWithin(t, info.Local, 20*time.Second) {
				t.Fatal("no association after DetachFilter")
			}
			if err := sockopt.AttachDropAll(f); err != nil {
				t.Fatal(err)
			}
			if sctpDialWithin(t, info.Local, silent) {
				t.Fatal("the listener answered INIT after AttachDropAll")
			}
			if err := sockopt.DetachFilter(f); err != nil {
				t.Fatal(err)
			}
			if err := sockopt.DetachFilter(f); err != nil {
				t.Fatalf("detaching twice: %v", err)
			}
		})
	}
}

// TestSCTPListenErrors checks the SCTP paths that fail.
func TestSCTPListenErrors(t *testing.T) {
	testenv.RequireSCTP(t)
	f, err := sockopt.Listen(sockopt.SCTP, netip.MustParseAddrPort("127.0.0.1:0"), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := sockopt.Listen(sockopt.SCTP, info.Local, sockopt.Options{}); err == nil {
		g.Close()
		t.Fatalf("a second SCTP listener bound %s", info.Local)
	} else if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second bind: %v, want EADDRINUSE", err)
	}
	if err := sockopt.SetSCTPInitMsg(f, sockopt.MaxSCTPStreams); err != nil {
		t.Fatal(err)
	}
	if err := sockopt.SubscribeSCTPEvents(f, sockopt.SCTPEvents{DataIO: true}); err != nil {
		t.Fatal(err)
	}
	tcp, err := sockopt.Listen(sockopt.TCP, netip.MustParseAddrPort("127.0.0.1:0"), sockopt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if err := sockopt.SubscribeSCTPEvents(tcp, sockopt.SCTPEvents{DataIO: true}); err == nil {
		t.Fatal("SCTP_EVENTS accepted on a TCP socket")
	}
}

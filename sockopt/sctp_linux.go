package sockopt

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Constants of <linux/sctp.h> that x/sys/unix does not define.
const (
	sctpEventsOpt    = 11     // SCTP_EVENTS
	sctpSndRcv       = 1      // SCTP_SNDRCV cmsg type
	sctpSndRcvLen    = 32     // sizeof(struct sctp_sndrcvinfo)
	sctpAssocChange  = 0x8001 // SCTP_ASSOC_CHANGE notification type
	sctpAssocChgLen  = 20     // sizeof(struct sctp_assoc_change) without sac_info
	sctpNotifyHdrLen = 8      // sn_type, sn_flags, sn_length
)

// SCTPSndRcvSpace is the number of control-message bytes one SCTP_SNDRCV
// message occupies: the size of the oob buffer recvmsg needs, and what
// AppendSCTPSndRcv appends.
var SCTPSndRcvSpace = unix.CmsgSpace(sctpSndRcvLen)

// SetSCTPInitMsg sets SCTP_INITMSG on f so that associations it starts or
// accepts afterwards ask for streams outbound and inbound streams.
func SetSCTPInitMsg(f *os.File, streams uint16) error {
	return control(f, "SCTP_INITMSG", func(fd int) error { return setSCTPInitMsg(fd, streams) })
}

// SubscribeSCTPEvents sets SCTP_EVENTS on f: the notifications and ancillary
// data ev selects are turned on, the others hostproxy knows of are turned off.
func SubscribeSCTPEvents(f *os.File, ev SCTPEvents) error {
	var sub [2]byte // sctp_data_io_event, sctp_association_event
	if ev.DataIO {
		sub[0] = 1
	}
	if ev.Association {
		sub[1] = 1
	}
	return control(f, "SCTP_EVENTS", func(fd int) error {
		_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), solSCTP, sctpEventsOpt,
			uintptr(unsafe.Pointer(&sub[0])), uintptr(len(sub)), 0)
		if errno != 0 {
			return errno
		}
		return nil
	})
}

// AppendSCTPSndRcv appends to b one SCTP_SNDRCV control message holding info,
// SCTPSndRcvSpace bytes, and returns the extended slice. It allocates only
// when b lacks the capacity.
func AppendSCTPSndRcv(b []byte, info SCTPSndRcvInfo) []byte {
	start := len(b)
	b = append(b, make([]byte, SCTPSndRcvSpace)...)
	c := b[start:]
	h := unix.Cmsghdr{Level: solSCTP, Type: sctpSndRcv}
	h.SetLen(unix.CmsgLen(sctpSndRcvLen))
	copy(c, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h)))
	putSndRcv(c[unix.CmsgLen(0):], info)
	return b
}

func putSndRcv(d []byte, info SCTPSndRcvInfo) {
	ne := binary.NativeEndian
	ne.PutUint16(d[0:], info.Stream)
	ne.PutUint16(d[2:], info.SSN)
	ne.PutUint16(d[4:], info.Flags)
	ne.PutUint16(d[6:], 0) // padding
	ne.PutUint32(d[8:], info.PPID)
	ne.PutUint32(d[12:], info.Context)
	ne.PutUint32(d[16:], info.TimeToLive)
	ne.PutUint32(d[20:], info.TSN)
	ne.PutUint32(d[24:], info.CumTSN)
	ne.PutUint32(d[28:], uint32(info.AssocID))
}

// ParseSCTPSndRcv finds the SCTP_SNDRCV control message in oob, the control
// bytes recvmsg returned, and decodes it. ok is false when there is none; err
// is non-nil when oob is malformed. It does not allocate.
func ParseSCTPSndRcv(oob []byte) (info SCTPSndRcvInfo, ok bool, err error) {
	hdrLen := unix.CmsgLen(0)
	for len(oob) > 0 {
		if len(oob) < hdrLen {
			return info, false, fmt.Errorf("control message header truncated: %d bytes left", len(oob))
		}
		h := cmsgHeader(oob)
		n := int(h.Len)
		if uint64(h.Len) < uint64(hdrLen) || uint64(h.Len) > uint64(len(oob)) {
			return info, false, fmt.Errorf("control message length %d invalid with %d bytes left", h.Len, len(oob))
		}
		if h.Level == solSCTP && h.Type == sctpSndRcv {
			d := oob[hdrLen:n]
			if len(d) < sctpSndRcvLen {
				return info, false, fmt.Errorf("SCTP_SNDRCV data truncated: %d bytes, want %d", len(d), sctpSndRcvLen)
			}
			ne := binary.NativeEndian
			info = SCTPSndRcvInfo{
				Stream:     ne.Uint16(d[0:]),
				SSN:        ne.Uint16(d[2:]),
				Flags:      ne.Uint16(d[4:]),
				PPID:       ne.Uint32(d[8:]),
				Context:    ne.Uint32(d[12:]),
				TimeToLive: ne.Uint32(d[16:]),
				TSN:        ne.Uint32(d[20:]),
				CumTSN:     ne.Uint32(d[24:]),
				AssocID:    int32(ne.Uint32(d[28:])),
			}
			return info, true, nil
		}
		next := unix.CmsgSpace(n - hdrLen)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return info, false, nil
}

// cmsgHeader decodes the cmsghdr at the start of b, which must hold at least
// CmsgLen(0) bytes, without relying on b's alignment.
func cmsgHeader(b []byte) unix.Cmsghdr {
	var h unix.Cmsghdr
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h)), b)
	return h
}

// ParseSCTPAssocChange decodes an SCTP notification (a message recvmsg
// returned with MSG_NOTIFICATION set) that must be SCTP_ASSOC_CHANGE. The
// error wraps ErrSCTPNotification when b is short or of another type.
func ParseSCTPAssocChange(b []byte) (SCTPAssocChange, error) {
	var c SCTPAssocChange
	if len(b) < sctpNotifyHdrLen {
		return c, fmt.Errorf("%w: %d bytes", ErrSCTPNotification, len(b))
	}
	ne := binary.NativeEndian
	if typ := ne.Uint16(b[0:]); typ != sctpAssocChange {
		return c, fmt.Errorf("%w: type %#x, want SCTP_ASSOC_CHANGE", ErrSCTPNotification, typ)
	}
	if len(b) < sctpAssocChgLen {
		return c, fmt.Errorf("%w: SCTP_ASSOC_CHANGE of %d bytes, want %d", ErrSCTPNotification, len(b), sctpAssocChgLen)
	}
	c = SCTPAssocChange{
		State:      ne.Uint16(b[8:]),
		Error:      ne.Uint16(b[10:]),
		OutStreams: ne.Uint16(b[12:]),
		InStreams:  ne.Uint16(b[14:]),
		AssocID:    int32(ne.Uint32(b[16:])),
	}
	return c, nil
}

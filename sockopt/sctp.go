package sockopt

import "errors"

// SCTPSndRcvInfo is struct sctp_sndrcvinfo from <linux/sctp.h>: the SCTP_SNDRCV
// ancillary data that recvmsg returns with each message once the data I/O
// event is subscribed (SubscribeSCTPEvents), and that sendmsg accepts to
// choose how a message is sent.
//
// PPID is opaque to the kernel and carried exactly as the peer sent it (by
// convention in network byte order); a relay copies it unchanged.
type SCTPSndRcvInfo struct {
	Stream     uint16 // stream id
	SSN        uint16 // stream sequence number (received messages only)
	Flags      uint16 // SCTPUnordered, ...
	PPID       uint32 // payload protocol identifier
	Context    uint32
	TimeToLive uint32 // milliseconds, sending only; 0 means forever
	TSN        uint32 // received messages only
	CumTSN     uint32 // received messages only
	AssocID    int32
}

// SCTPUnordered is the sinfo_flags bit of a message delivered (or to be sent)
// without regard to stream order.
const SCTPUnordered = 1

// SCTPEvents selects the SCTP notifications and ancillary data a socket
// receives (struct sctp_event_subscribe; only the fields hostproxy uses).
type SCTPEvents struct {
	// DataIO makes recvmsg return SCTP_SNDRCV information with every message.
	DataIO bool
	// Association queues an SCTP_ASSOC_CHANGE notification when an
	// association comes up or fails; a non-blocking connect learns its
	// outcome from it.
	Association bool
}

// SCTPAssocChange is the part of struct sctp_assoc_change (an
// SCTP_ASSOC_CHANGE notification) that callers act on.
type SCTPAssocChange struct {
	State      uint16 // SCTPCommUp, SCTPCantStartAssoc, ...
	Error      uint16 // the cause code, when the state is a failure
	OutStreams uint16 // outbound streams negotiated
	InStreams  uint16 // inbound streams negotiated
	AssocID    int32
}

// The states of an SCTP_ASSOC_CHANGE notification (enum sctp_sac_state).
const (
	SCTPCommUp         = 0
	SCTPCommLost       = 1
	SCTPRestart        = 2
	SCTPShutdownComp   = 3
	SCTPCantStartAssoc = 4
)

// ErrSCTPNotification is wrapped by errors from parsing a malformed or
// unexpected SCTP notification.
var ErrSCTPNotification = errors.New("malformed SCTP notification")

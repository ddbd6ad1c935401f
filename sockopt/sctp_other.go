//go:build !linux

package sockopt

import (
	"fmt"
	"os"
)

// SCTPSndRcvSpace is 0 on this platform.
var SCTPSndRcvSpace = 0

// SetSCTPInitMsg is not supported on this platform.
func SetSCTPInitMsg(f *os.File, streams uint16) error {
	return fmt.Errorf("SCTP_INITMSG on %s: %w", f.Name(), ErrUnsupported)
}

// SubscribeSCTPEvents is not supported on this platform.
func SubscribeSCTPEvents(f *os.File, ev SCTPEvents) error {
	return fmt.Errorf("SCTP_EVENTS on %s: %w", f.Name(), ErrUnsupported)
}

// AppendSCTPSndRcv returns b unchanged on this platform.
func AppendSCTPSndRcv(b []byte, info SCTPSndRcvInfo) []byte { return b }

// ParseSCTPSndRcv is not supported on this platform.
func ParseSCTPSndRcv(oob []byte) (SCTPSndRcvInfo, bool, error) {
	return SCTPSndRcvInfo{}, false, fmt.Errorf("parse SCTP_SNDRCV: %w", ErrUnsupported)
}

// ParseSCTPAssocChange is not supported on this platform.
func ParseSCTPAssocChange(b []byte) (SCTPAssocChange, error) {
	return SCTPAssocChange{}, fmt.Errorf("parse SCTP_ASSOC_CHANGE: %w", ErrUnsupported)
}

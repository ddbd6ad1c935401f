package sockopt

import (
	"fmt"
	"net/netip"
	"os"
)

// Info describes an existing socket (see Inspect).
type Info struct {
	Family    int            // AF_INET, AF_INET6, ...
	Type      int            // SOCK_STREAM, SOCK_DGRAM, ...
	Protocol  int            // IPPROTO_TCP, ...
	Proto     Proto          // TCP, UDP or SCTP; 0 for anything else
	Listening bool           // SO_ACCEPTCONN
	Local     netip.AddrPort // getsockname; invalid for non-IP families
}

// String describes the socket for error messages, e.g. "tcp socket on 0.0.0.0:80".
func (i Info) String() string {
	kind := i.Proto.String()
	if i.Proto == 0 {
		kind = fmt.Sprintf("family %d type %d protocol %d", i.Family, i.Type, i.Protocol)
	}
	if i.Local.IsValid() {
		return fmt.Sprintf("%s socket on %s", kind, i.Local)
	}
	return kind + " socket"
}

// fileName is f's name for error messages; f may be nil.
func fileName(f *os.File) string {
	if f == nil {
		return "<nil file>"
	}
	return f.Name()
}

package tcp

import (
	"fmt"
	"os"

	"github.com/hostproxy/hostproxy/sockopt"
)

// inspectListener fails unless f is a listening TCP socket, and returns
// what it found. Go would take a listening SCTP socket for TCP (both are
// SOCK_STREAM), so the protocol is checked here.
func inspectListener(f *os.File) (sockopt.Info, error) {
	info, err := sockopt.Inspect(f)
	if err != nil {
		return info, fmt.Errorf("tcp proxy on %s: %w", f.Name(), err)
	}
	if info.Proto != sockopt.TCP || !info.Listening {
		return info, fmt.Errorf("tcp proxy on %s: want a listening tcp socket, got a %s (listening: %t)", f.Name(), info, info.Listening)
	}
	return info, nil
}

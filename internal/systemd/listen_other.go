//go:build !unix

package systemd

import "os"

// The socket activation variables, and the first inherited descriptor.
const (
	ListenPIDEnv     = "LISTEN_PID"
	ListenFDsEnv     = "LISTEN_FDS"
	ListenFDNamesEnv = "LISTEN_FDNAMES"
	ListenFDsStart   = 3
)

// ListenFiles returns nothing: there is no socket activation here.
func ListenFiles() ([]*os.File, error) { return nil, nil }

//go:build !linux

package tcp

import (
	"net"
	"os"
)

// checkListener checks nothing on this platform: sockopt.Inspect is
// Linux-only. net.FileListener still rejects a socket that is not a stream.
func checkListener(f *os.File) error { return nil }

// stopListening does nothing on this platform; closing the proxy's
// descriptor stops accepting once the caller has closed its own.
func stopListening(ln *net.TCPListener) {}

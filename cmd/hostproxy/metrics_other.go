//go:build !unix

package main

import "os"

// statsSignal is nil: there is no SIGUSR2 on this platform.
var statsSignal os.Signal

//go:build unix

package main

import (
	"os"
	"syscall"
)

// statsSignal asks for the counters on stderr.
var statsSignal = os.Signal(syscall.SIGUSR2)

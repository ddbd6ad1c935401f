//go:build !unix

package main

import "os"

type fdState struct{ Open, Pipe bool }

// probeFD reports every descriptor closed: there is no fd 3/fd 4 protocol on
// this platform.
func probeFD(fd int) fdState { return fdState{} }

func closeOnExec(fd int) {}

var (
	stopSignals = []os.Signal{os.Interrupt}
	natSignal   os.Signal // none: -await-nat fails with sockopt.ErrUnsupported anyway
	hupSignal   os.Signal // none
)

func ignoreSignals() {}

func noIPv6(err error) bool { return false }

func notSocket(err error) bool { return false }

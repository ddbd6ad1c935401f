//go:build amd64 || arm64

package main

// entry, linked as the process's entry point (go build
// -ldflags=-E=main.entry, as the README installs hostproxy and
// testenv.ReleaseEnv builds it), clears the capability bounding set before
// the Go runtime starts: on the only thread there is, it drops
// capabilities 0 to 63, ignoring the errors (EPERM without CAP_SETPCAP,
// EINVAL past the last capability), then jumps to the runtime's own entry
// (_rt0_GOARCH_linux) with the stack and registers the runtime reads as
// the kernel left them. Every thread the runtime then creates inherits the
// empty set.
//
// The bounding set is per thread, and the kernel drops one capability per
// prctl call: once the runtime runs, clearing it means a stop of the world
// and a signal to every thread for each of the 41 capabilities
// (syscall.AllThreadsSyscall), which is what privilege.Drop does when the
// set is not empty yet, as in a build without the flag. Drop then finds
// nothing left to drop and makes none of those rounds.
func entry()

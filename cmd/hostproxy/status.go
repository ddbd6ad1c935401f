package main

import (
	"os"
	"strings"
)

// statusFD is the descriptor of the engine's status pipe.
const statusFD = 3

// status is the engine's status pipe on fd 3: hostproxy writes exactly one
// message to it, "0\n" (plus the allocated port in allocation mode) or
// "1\n<reason>", and closes it. A status without a pipe discards everything,
// so that hostproxy run by hand needs no fd 3.
type status struct {
	f *os.File
}

// newStatus returns the status pipe on fd 3 if use is true.
func newStatus(use bool) *status {
	if !use {
		return &status{}
	}
	return &status{f: os.NewFile(statusFD, "status pipe (fd 3)")}
}

// ready writes "0\n" followed by extra (which ends in "\n" when non-empty)
// and closes the pipe.
func (s *status) ready(extra string) { s.send("0\n" + extra) }

// fail writes "1\n" and reason on one line, like docker-proxy (no newline
// at the end), and closes the pipe.
func (s *status) fail(reason string) { s.send("1\n" + oneLine(reason)) }

// send writes msg in one write(2), so that a reader sees it whole, and closes
// the pipe. Later calls do nothing. A pipe whose reader is gone yields EPIPE
// (SIGPIPE is ignored), which changes nothing for hostproxy.
func (s *status) send(msg string) {
	if s.f == nil {
		return
	}
	s.f.WriteString(msg)
	s.f.Close()
	s.f = nil
}

// oneLine flattens s to a single line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "unknown error"
	}
	return strings.Join(strings.Fields(s), " ")
}

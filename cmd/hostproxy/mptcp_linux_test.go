package main_test

import (
	"context"
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// TestCompatListenFDMPTCP: an engine written in Go 1.24+ that creates its
// socket with net.Listen passes a Multipath TCP listener where the kernel
// has MPTCP; with -proto tcp it is served as the TCP listener it is to its
// peers.
func TestCompatListenFDMPTCP(t *testing.T) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	info, err := sockopt.Inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Require(t, info.Protocol == unix.IPPROTO_MPTCP, "needs Multipath TCP (net.mptcp.enabled): Go made a "+info.String())
	backend := tcpEcho(t, lo4, 0, "backend:")
	p := start(t, spawn{extra: []*os.File{f}}, append(engineArgs("tcp", info.Local, backend), "-use-listen-fd")...)
	p.ready(t, "0\n")
	check(t, "tcp", info.Local, "backend:")
	p.stop(t, syscall.SIGTERM)
	p.quiet(t)
}

package main_test

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/proxy/sctp"
)

// TestSCTPForwarderGroup: several -L mappings of SCTP are served together
// (one sctp.Range) and each relays to its backend.
func TestSCTPForwarderGroup(t *testing.T) {
	testenv.RequireSCTP(t)
	backend := sctpEcho(t)
	ports := []uint16{sctpFreePort(t), sctpFreePort(t), sctpFreePort(t)}
	var args []string
	for _, p := range ports {
		args = append(args, "-L", fmt.Sprintf("127.0.0.1:%d:%s/sctp", p, backend))
	}
	p := start(t, spawn{}, args...)
	// No fd 3 protocol: wait until the last mapping listens (all are
	// served by then: the sockets are bound before serving starts).
	last := netip.AddrPortFrom(sctpLoopback, ports[len(ports)-1])
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := sctp.Dial(ctx, last)
		cancel()
		if err == nil {
			c.Close()
			break
		}
		if i == 20 {
			t.Fatalf("the forwarder did not listen on %s within 20 attempts: %v", last, err)
		}
		select {
		case <-p.exited:
			t.Fatalf("hostproxy exited: %v; stderr: %s", p.err, p.stderr)
		case <-time.After(100 * time.Millisecond): // refused: not listening yet
		}
	}
	for _, port := range ports {
		sctpCheckEcho(t, netip.AddrPortFrom(sctpLoopback, port))
	}
	p.stop(t, syscall.SIGTERM)
}

package tcp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

func init() { childModes["mute"] = muteChild }

// muteBackendEnv gives the mute child the backend to relay to.
const muteBackendEnv = "HOSTPROXY_TCP_TEST_MUTE_BACKEND"

// TestStalledSourceMuted relays a bulk transfer toward a backend that reads
// slower than the client writes, through a proxy alone in a child process
// traced by strace. While the bytes read from the client wait for the
// backend, the client's socket is out of the loop's EPOLLIN (loop.mute):
// the segments that keep arriving from the client wake nothing. Measured
// here, for 256 MiB: without it, 127-356 wake-ups for nothing in 605-713
// splice calls; with it, one per mute and unmute (21-44), and 0-3 more.
func TestStalledSourceMuted(t *testing.T) {
	strace := testenv.RequireCommand(t, "strace")
	testenv.Require(t, runtime.GOMAXPROCS(0) > 1, "the loop owns its thread only with GOMAXPROCS > 1")
	const size = 256 << 20
	be, got := sink(t)
	out := t.TempDir() + "/strace.out"
	lines, stop := startChild(t, strace, []string{"-f", "-qq", "-e", "trace=splice,epoll_pwait,epoll_ctl", "-o", out, os.Args[0], "-test.run=^$"},
		childEnv+"=mute", muteBackendEnv+"="+be.String())
	addr, err := netip.ParseAddrPort(nextLine(t, lines, "listening "))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	c.SetDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 256<<10)
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("client write: %v", err)
		}
	}
	c.CloseWrite()
	select {
	case n := <-got:
		if n != size {
			t.Fatalf("backend read %d bytes, want %d", n, size)
		}
	case <-time.After(waitFor):
		t.Fatal("the backend did not read to the end in time")
	}
	stop() // strace writes its last lines when the child exits

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Per thread, in order: a wait followed by another wait on the same
	// thread did nothing. Only the threads that splice are the loop's.
	calls := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		// strace pads the thread id to a width: "123  call(" as well as
		// "12345 call(".
		tid, call, ok := strings.Cut(strings.TrimSpace(l), " ")
		call = strings.TrimSpace(call)
		if !ok || strings.Contains(call, "resumed>") {
			continue
		}
		calls[tid] = append(calls[tid], call)
	}
	var splices, waits, idle, mods int
	for _, cs := range calls {
		if !slices.ContainsFunc(cs, func(c string) bool { return strings.HasPrefix(c, "splice(") }) {
			continue
		}
		for i, c := range cs {
			switch {
			case strings.HasPrefix(c, "splice("):
				splices++
			case strings.HasPrefix(c, "epoll_pwait("):
				waits++
				if i+1 < len(cs) && strings.HasPrefix(cs[i+1], "epoll_pwait(") {
					idle++
				}
			case strings.Contains(c, "EPOLL_CTL_MOD"):
				mods++
			}
		}
	}
	t.Logf("%d MiB relayed: %d splice calls; the loop waited %d times, %d of them for nothing; %d EPOLL_CTL_MOD", size>>20, splices, waits, idle, mods)
	// A changed registration is reported once, without a wait (the
	// client's socket stays writable): one idle wake-up per mute and
	// unmute is the price. Beyond that, at most one in 20 splice calls.
	if excess := idle - mods/2; splices == 0 || excess*20 > splices {
		t.Errorf("the loop woke %d times for nothing in %d splice calls (%d changes of a registration): it wakes for segments it cannot relay", idle, splices, mods)
	}
}

// muteChild serves a proxy toward the backend named in muteBackendEnv,
// prints "listening ADDR", and runs until its stdin closes.
func muteChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "mute child:", err); return 1 }
	be, err := netip.ParseAddrPort(os.Getenv(muteBackendEnv))
	if err != nil {
		return fail(err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fail(err)
	}
	p := NewListener(ln, Config{Backend: be})
	res := make(chan error, 1)
	go func() { res <- p.Serve(context.Background()) }()
	fmt.Println("listening", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	p.Close()
	if err := <-res; err != nil {
		return fail(err)
	}
	return 0
}

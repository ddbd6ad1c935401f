//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// The -transparent topology, inside namespaces the test creates, with no
// DNAT anywhere: only hostproxy carries the client's traffic.
//
//	client 10.78.1.2 fd78:1::2 ── 10.78.1.1 fd78:1::1 host 10.78.2.1 fd78:2::1 ─┬─ 10.78.2.2 fd78:2::2 container
//	                                                         (bridge tp-br)     └─ 10.78.2.3 fd78:2::3 neighbour (tpAddNeighbour)
//
// The host forwards (as a container host does), and the container routes
// through it, so that a reply to the client's address comes back to the
// host, where the rules deliver it to hostproxy's socket. The host's
// address toward the container is on a bridge, as docker0, which another
// container, the neighbour, may join.
var (
	tpClient     = netip.MustParseAddr("10.78.1.2")
	tpHostOut    = netip.MustParseAddr("10.78.1.1")
	tpHostIn     = netip.MustParseAddr("10.78.2.1")
	tpContainer  = netip.MustParseAddr("10.78.2.2")
	tpClient6    = netip.MustParseAddr("fd78:1::2")
	tpHostOut6   = netip.MustParseAddr("fd78:1::1")
	tpHostIn6    = netip.MustParseAddr("fd78:2::1")
	tpContainer6 = netip.MustParseAddr("fd78:2::2")
	tpNeighbour  = netip.MustParseAddr("10.78.2.3")
	tpNeighbour6 = netip.MustParseAddr("fd78:2::3")
)

const tpEchoPort = 8080 // the container's TCP echo port

// tpTopology builds the three namespaces and returns them.
func tpTopology(t *testing.T) (client, host, container netns) {
	t.Helper()
	client, host, container = newNetns(t, "tpcl"), newNetns(t, "tphost"), newNetns(t, "tpctr")
	command(t, nil, "ip", "link", "add", "tp-c", "netns", client.name, "type", "veth", "peer", "name", "tp-h0", "netns", host.name)
	command(t, nil, "ip", "link", "add", "tp-k", "netns", container.name, "type", "veth", "peer", "name", "tp-h1", "netns", host.name)
	host.exec(t, nil, "ip", "link", "add", "tp-br", "type", "bridge")
	host.exec(t, nil, "ip", "link", "set", "tp-h1", "master", "tp-br")
	host.exec(t, nil, "ip", "link", "set", "tp-h1", "up")
	for _, l := range []struct {
		ns        netns
		dev       string
		addr      netip.Addr
		addr6     netip.Addr
		via, via6 netip.Addr // default routes; invalid: none
	}{
		{client, "tp-c", tpClient, tpClient6, tpHostOut, tpHostOut6},
		{host, "tp-h0", tpHostOut, tpHostOut6, netip.Addr{}, netip.Addr{}},
		{host, "tp-br", tpHostIn, tpHostIn6, netip.Addr{}, netip.Addr{}},
		{container, "tp-k", tpContainer, tpContainer6, tpHostIn, tpHostIn6},
	} {
		command(t, nil, "ip", "-n", l.ns.name, "addr", "add", l.addr.String()+"/24", "dev", l.dev)
		command(t, nil, "ip", "-n", l.ns.name, "addr", "add", l.addr6.String()+"/64", "dev", l.dev, "nodad")
		command(t, nil, "ip", "-n", l.ns.name, "link", "set", l.dev, "up")
		if l.via.IsValid() {
			command(t, nil, "ip", "-n", l.ns.name, "route", "add", "default", "via", l.via.String())
			command(t, nil, "ip", "-n", l.ns.name, "-6", "route", "add", "default", "via", l.via6.String())
		}
	}
	host.exec(t, nil, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	// A backend connection from the client's (not local) IPv6 address
	// makes the host solicit the container's link address from its
	// link-local address, which sends nothing while that address is
	// tentative (duplicate address detection, a second or two after the
	// link comes up): wait for it to be usable, as on a host whose links
	// have been up for a while.
	for _, ns := range []netns{client, host, container} {
		waitFor(t, 10*time.Second, "IPv6 addresses in "+ns.name+" to leave the tentative state", func() bool {
			return strings.TrimSpace(ns.exec(t, nil, "ip", "-6", "addr", "show", "tentative")) == ""
		})
	}
	return client, host, container
}

// tpAddNeighbour adds to tpTopology's bridge another container, the
// neighbour, and returns its namespace.
func tpAddNeighbour(t *testing.T, host netns) netns {
	t.Helper()
	nb := newNetns(t, "tpnb")
	command(t, nil, "ip", "link", "add", "tp-n", "netns", nb.name, "type", "veth", "peer", "name", "tp-h2", "netns", host.name)
	host.exec(t, nil, "ip", "link", "set", "tp-h2", "master", "tp-br")
	host.exec(t, nil, "ip", "link", "set", "tp-h2", "up")
	nb.exec(t, nil, "ip", "addr", "add", tpNeighbour.String()+"/24", "dev", "tp-n")
	nb.exec(t, nil, "ip", "addr", "add", tpNeighbour6.String()+"/64", "dev", "tp-n", "nodad")
	nb.exec(t, nil, "ip", "link", "set", "tp-n", "up")
	nb.exec(t, nil, "ip", "route", "add", "default", "via", tpHostIn.String())
	nb.exec(t, nil, "ip", "-6", "route", "add", "default", "via", tpHostIn6.String())
	waitFor(t, 10*time.Second, "IPv6 addresses in "+nb.name+" to leave the tentative state", func() bool {
		return strings.TrimSpace(nb.exec(t, nil, "ip", "-6", "addr", "show", "tentative")) == ""
	})
	return nb
}

// tpRules installs the host rules of docs/client-address.md in host and
// returns a function that removes them.
func tpRules(t *testing.T, host netns) (remove func()) {
	t.Helper()
	table := fmt.Sprintf("hp_tproxy_%d", os.Getpid())
	ruleset := fmt.Sprintf(`table inet %s {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto { tcp, udp } socket transparent 1 meta mark set 0x1
	}
}
`, table)
	host.exec(t, strings.NewReader(ruleset), "nft", "-f", "-")
	host.exec(t, nil, "ip", "rule", "add", "fwmark", "0x1", "lookup", "100")
	host.exec(t, nil, "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	host.exec(t, nil, "ip", "-6", "rule", "add", "fwmark", "0x1", "lookup", "100")
	host.exec(t, nil, "ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")
	return func() {
		host.exec(t, nil, "nft", "delete", "table", "inet", table)
		host.exec(t, nil, "ip", "rule", "del", "fwmark", "0x1", "lookup", "100")
		host.exec(t, nil, "ip", "-6", "rule", "del", "fwmark", "0x1", "lookup", "100")
		host.exec(t, nil, "ip", "route", "flush", "table", "100")
		host.exec(t, nil, "ip", "-6", "route", "flush", "table", "100")
	}
}

// tpProxy is a hostproxy started in a namespace, its stderr kept.
type tpProxy struct {
	cmd    *exec.Cmd
	stderr testenv.Buffer
	status string // what it wrote on fd 3
	exited chan struct{}
}

// spawnTransparent starts hostproxy with args in ns and waits for its
// status on fd 3, which must start with "0\n". fd4, when not nil, is
// passed as fd 4.
func spawnTransparent(t *testing.T, ns netns, bin string, fd4 *os.File, args ...string) *tpProxy {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := &tpProxy{exited: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.name, bin}, args...)...)
	p.cmd.ExtraFiles = []*os.File{w} // fd 3
	if fd4 != nil {
		p.cmd.ExtraFiles = append(p.cmd.ExtraFiles, fd4)
	}
	p.cmd.Stderr = &p.stderr
	err = p.cmd.Start()
	w.Close()
	if err != nil {
		t.Fatalf("start hostproxy: %v", err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := io.ReadAll(r)
	p.status = string(status)
	if err != nil || !strings.HasPrefix(p.status, "0\n") {
		t.Fatalf("hostproxy %s: fd 3 %q (%v), want \"0\\n...\"; stderr: %s", strings.Join(args, " "), status, err, p.stderr.String())
	}
	return p
}

func (p *tpProxy) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("hostproxy (pid %d) still running 10s after SIGTERM", p.cmd.Process.Pid)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("hostproxy exited with %v after SIGTERM, want 0; stderr: %s", p.cmd.ProcessState, p.stderr.String())
	}
}

// udpClientsAtOnce sends a datagram to addr from n UDP sockets of ns at
// once and expects the container to have seen each socket's own address
// and port.
func udpClientsAtOnce(t *testing.T, ns netns, addr netip.AddrPort, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		c, err := ns.dialUDP(addr)
		if err != nil {
			t.Fatalf("udp client %d: %v", i, err)
		}
		defer c.Close()
		wg.Go(func() {
			local := c.LocalAddr().(*net.UDPAddr).AddrPort()
			peer, err := roundTripUDP(c, fmt.Sprintf("udp client %d", i))
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("udp client %d (%s) to %s: %w", i, local, addr, err)
			case peer != local:
				errs[i] = fmt.Errorf("udp client %d to %s: container saw %s, want the client's own %s", i, addr, peer, local)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}

// clientsAtOnce opens n connections from ns to addr, all of them open
// before any is read, and requires the container to see each one's own
// local address and port.
func clientsAtOnce(t *testing.T, ns netns, addr netip.AddrPort, n int) {
	t.Helper()
	conns := make([]*net.TCPConn, 0, n)
	for i := range n {
		c, err := ns.dialTCP(addr, 5*time.Second)
		if err != nil {
			t.Fatalf("client %d: dial %s: %v", i, addr, err)
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range conns {
		wg.Go(func() {
			local := c.LocalAddr().(*net.TCPAddr).AddrPort()
			local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
			peer, err := roundTripTCP(c, fmt.Sprintf("client %d\n", i))
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("client %d (%s) to %s: %w", i, local, addr, err)
			case peer != local:
				errs[i] = fmt.Errorf("client %d to %s: container saw %s, want the client's own %s", i, addr, peer, local)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}

// TestTransparentTCP: with -transparent and the host rules, in every form,
// several clients at once reach the container, which sees each client's own
// address and port (IPv4, IPv6, and IPv4 clients of a dual-stack socket,
// IPv4-mapped there); a client whose port is taken on the
// host keeps its address with another port; the host itself still gets
// through with its normal source, also from an address added after start;
// so do the container's neighbour on its bridge and every client of a
// backend on the host (logged once); an IPv6 client of an IPv4 backend
// falls back to the host's source, logged once. UDP through the binary,
// allocated and -L, sees each client too, and the host itself keeps its
// source. Without the rules the
// documented failure happens: the backend's SYN-ACK is not delivered to
// hostproxy, the dial times out and the client is reset.
func TestTransparentTCP(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	testenv.RequireCommand(t, "nft")
	testenv.RequireCommand(t, "sysctl")
	hostproxy := hostproxyBin(t)
	echoserver := echoserverBin(t)

	client, host, container := tpTopology(t)
	neighbour := tpAddNeighbour(t, host)
	startEcho(t, container, echoserver, "-tcp", strconv.Itoa(tpEchoPort), "-udp", "53")
	const hostEchoPort = 8081 // an echo server on the host itself
	startEcho(t, host, echoserver, "-ip", tpHostIn.String(), "-tcp", strconv.Itoa(hostEchoPort), "-udp", "5301")
	removeRules := tpRules(t, host)

	const dialTimeout = "1s"
	var viaL netip.AddrPort // the -L mapping, used again without the rules
	t.Run("compat", func(t *testing.T) {
		front := netip.AddrPortFrom(tpHostOut, 8000)
		p := spawnTransparent(t, host, hostproxy, nil, "-proto", "tcp", "-host-ip", front.Addr().String(), "-host-port", "8000",
			"-container-ip", tpContainer.String(), "-container-port", strconv.Itoa(tpEchoPort), "-transparent")
		clientsAtOnce(t, client, front, 8)
		p.stop(t)
	})
	t.Run("compat -use-listen-fd dual-stack", func(t *testing.T) {
		// An engine's dual-stack socket on [::]: IPv4 clients are accepted
		// IPv4-mapped and must reach an IPv4 container as themselves.
		var ln net.Listener
		if err := host.do(func() (err error) { ln, err = net.Listen("tcp", "[::]:8050"); return err }); err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p := spawnTransparent(t, host, hostproxy, f, "-proto", "tcp", "-host-ip", "::", "-host-port", "8050",
			"-container-ip", tpContainer.String(), "-container-port", strconv.Itoa(tpEchoPort), "-use-listen-fd", "-transparent")
		clientsAtOnce(t, client, netip.AddrPortFrom(tpHostOut, 8050), 4)
		p.stop(t)
	})
	t.Run("allocation", func(t *testing.T) {
		p := spawnTransparent(t, host, hostproxy, nil, "-proto", "tcp", "-host-ip", tpHostOut.String(), "-host-port", "8100-8199",
			"-container-ip", tpContainer.String(), "-container-port", strconv.Itoa(tpEchoPort), "-transparent")
		port, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(p.status, "0\n")), 10, 16)
		if err != nil {
			t.Fatalf("fd 3 %q: no port", p.status)
		}
		clientsAtOnce(t, client, netip.AddrPortFrom(tpHostOut, uint16(port)), 8)
		p.stop(t)
	})
	t.Run("udp allocation and -L", func(t *testing.T) {
		backend := netip.AddrPortFrom(tpContainer, 53)
		alloc := spawnTransparent(t, host, hostproxy, nil, "-proto", "udp", "-host-ip", tpHostOut.String(), "-host-port", "8400-8499",
			"-container-ip", backend.Addr().String(), "-container-port", "53", "-transparent")
		port, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(alloc.status, "0\n")), 10, 16)
		if err != nil {
			t.Fatalf("fd 3 %q: no port", alloc.status)
		}
		front := netip.AddrPortFrom(tpHostOut, 8300)
		// -drain-timeout 0: a UDP forwarder with open flows would otherwise
		// drain for the whole default 10 s (docs/protocol.md).
		fwd := spawnTransparent(t, host, hostproxy, nil, "-transparent", "-drain-timeout", "0",
			"-L", fmt.Sprintf("%s:%s/udp", front, backend))
		udpClientsAtOnce(t, client, netip.AddrPortFrom(tpHostOut, uint16(port)), 4)
		udpClientsAtOnce(t, client, front, 4)
		checkUDP(t, host, front, tpHostIn, "udp from the host itself")
		alloc.stop(t)
		fwd.stop(t)
	})
	t.Run("-L", func(t *testing.T) {
		v4 := netip.AddrPortFrom(tpHostOut, 8200)
		v6 := netip.AddrPortFrom(tpHostOut6, 8200)
		mixed := netip.AddrPortFrom(tpHostOut6, 8201) // IPv6 clients, IPv4 container
		onHost := netip.AddrPortFrom(tpHostOut, 8202) // a backend on the host
		v4b := netip.AddrPortFrom(tpHostOut, 8203)    // v4's backend again
		backend4 := netip.AddrPortFrom(tpContainer, tpEchoPort)
		backend6 := netip.AddrPortFrom(tpContainer6, tpEchoPort)
		p := spawnTransparent(t, host, hostproxy, nil, "-transparent", "-dial-timeout", dialTimeout,
			"-L", fmt.Sprintf("%s:%s", v4, backend4),
			"-L", fmt.Sprintf("%s:%s", v6, backend6),
			"-L", fmt.Sprintf("%s:%s", mixed, backend4),
			"-L", fmt.Sprintf("%s:%s", onHost, netip.AddrPortFrom(tpHostIn, hostEchoPort)),
			"-L", fmt.Sprintf("%s:%s", v4b, backend4))
		viaL = v4

		clientsAtOnce(t, client, v4, 8)
		clientsAtOnce(t, client, v6, 8)

		// The host itself keeps its normal source: the address of its
		// link to the container.
		for _, tc := range []struct {
			front netip.AddrPort
			want  netip.Addr
		}{{v4, tpHostIn}, {v6, tpHostIn6}} {
			checkSource(t, host, tc.front, tc.want, "the host")
		}

		// An address added to the host after start is the host's too: a
		// connection from it keeps the normal source (the client's socket
		// holds its port, and the probe after EADDRINUSE, under the
		// seccomp filter, finds the address local).
		added := netip.MustParseAddr("10.78.3.1")
		host.exec(t, nil, "ip", "addr", "add", added.String()+"/32", "dev", "lo")
		var last netip.AddrPort
		waitFor(t, 5*time.Second, "a connection from the host's new address "+added.String()+" to keep the normal source", func() bool {
			c := dialFrom(t, host, net.TCPAddr{IP: added.AsSlice()}, v4, false)
			var err error
			if last, err = roundTripTCP(c, "from a new host address\n"); err != nil {
				t.Fatalf("host to %s from %s: %v", v4, added, err)
			}
			return last.Addr() == tpHostIn
		})

		// A client port bound on the host: the backend connection keeps
		// the client's address, with another port.
		var busy net.Listener
		if err := host.do(func() (err error) { busy, err = net.Listen("tcp4", ":0"); return err }); err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		busyPort := busy.Addr().(*net.TCPAddr).Port
		c := dialFrom(t, client, net.TCPAddr{IP: tpClient.AsSlice(), Port: busyPort}, v4, false)
		if peer, err := roundTripTCP(c, "port taken\n"); err != nil {
			t.Errorf("client from port %d: %v", busyPort, err)
		} else if peer.Addr() != tpClient || peer.Port() == uint16(busyPort) {
			t.Errorf("client from %s:%d whose port is bound on the host: container saw %s, want %s with another port", tpClient, busyPort, peer, tpClient)
		}

		// A client port used again while the host holds the TIME_WAIT of
		// its last backend connection (hostproxy sent the first FIN) is
		// kept; and while a connection from it to the same backend is
		// open, the next one leaves from another port of its address.
		const again = 31001 // below the ephemeral range: no other client has it
		if peer, err := roundTripTCP(dialFrom(t, client, net.TCPAddr{Port: again}, v4, true), "first\n"); err != nil || peer != netip.AddrPortFrom(tpClient, again) {
			t.Fatalf("client from port %d: container saw %s (%v), want the client's own", again, peer, err)
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("the host's TIME_WAIT from %s:%d", tpClient, again), func() bool {
			return strings.TrimSpace(host.exec(t, nil, "ss", "-Htn", "state", "time-wait", "src", fmt.Sprintf("%s:%d", tpClient, again))) != ""
		})
		open := dialFrom(t, client, net.TCPAddr{Port: again}, v4b, true)
		if peer, err := peerLine(open); err != nil || peer != netip.AddrPortFrom(tpClient, again) {
			t.Errorf("client from port %d again, through another mapping: container saw %s (%v), want the client's own port", again, peer, err)
		}
		if peer, err := roundTripTCP(dialFrom(t, client, net.TCPAddr{Port: again}, v4, true), "while open\n"); err != nil {
			t.Errorf("client from port %d while a connection from it is open: %v", again, err)
		} else if peer.Addr() != tpClient || peer.Port() == again {
			t.Errorf("client from port %d while a connection from it is open: container saw %s, want %s with another port", again, peer, tpClient)
		}
		open.Close()

		// The container's neighbour on its bridge keeps the host's
		// source: from the client's address the container would answer it
		// directly, over the bridge, from an address it never wrote to.
		for _, tc := range []struct {
			front netip.AddrPort
			want  netip.Addr
		}{{v4, tpHostIn}, {v6, tpHostIn6}} {
			checkSource(t, neighbour, tc.front, tc.want, "the neighbour")
		}

		// A backend on the host sees the host's source for every client:
		// its replies to the client's address would be routed out, not
		// brought back to hostproxy. Said once, at start.
		for range 2 {
			checkSource(t, client, onHost, tpHostIn, "a client of a backend on the host")
		}
		if n := strings.Count(p.stderr.String(), "one of the host's own addresses"); n != 1 {
			t.Errorf("the backend on the host was logged %d times, want once; stderr:\n%s", n, p.stderr.String())
		}

		// IPv6 clients of an IPv4 container: the host's source, one log
		// line for all of them.
		for range 2 {
			checkSource(t, client, mixed, tpHostIn, "an IPv6 client of an IPv4 backend")
		}
		if n := strings.Count(p.stderr.String(), "another address family"); n != 1 {
			t.Errorf("the family fallback was logged %d times, want once; stderr:\n%s", n, p.stderr.String())
		}

		// Without the rules: the SYN-ACK from the container, addressed to
		// the client, is forwarded to the client instead of delivered to
		// hostproxy; the dial times out and the client, already accepted,
		// is reset after -dial-timeout.
		removeRules()
		c, err := client.dialTCP(viaL, 5*time.Second)
		if err != nil {
			t.Fatalf("client dial %s without the rules: %v (the accept does not need them)", viaL, err)
		}
		begin := time.Now()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 64))
		took := time.Since(begin)
		c.Close()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client without the rules: read %d bytes, %v after %v; want a reset after the dial timeout", n, err, took)
		} else {
			t.Logf("without the rules: %v after %v (-dial-timeout %s)", err, took.Round(time.Millisecond), dialTimeout)
		}
		p.stop(t)
	})
}

// dialFrom is dialTCPFrom that fails t when the connection cannot be made.
func dialFrom(t *testing.T, ns netns, local net.TCPAddr, addr netip.AddrPort, reuse bool) *net.TCPConn {
	t.Helper()
	c, err := dialTCPFrom(ns, local, addr, reuse)
	if err != nil {
		t.Fatalf("dial %s from %s in %s: %v", addr, &local, ns.name, err)
	}
	return c
}

// checkSource makes a round trip from ns (who, for messages) to front and
// requires the backend to have seen the address want, the host's source.
func checkSource(t *testing.T, ns netns, front netip.AddrPort, want netip.Addr, who string) {
	t.Helper()
	c, err := ns.dialTCP(front, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", who, front, err)
	}
	if peer, err := roundTripTCP(c, "from "+who+"\n"); err != nil {
		t.Errorf("%s to %s: %v", who, front, err)
	} else if peer.Addr() != want {
		t.Errorf("%s to %s: backend saw %s, want the host's source %s", who, front, peer, want)
	}
}

// peerLine reads the echo server's first line from c, the address it saw,
// and leaves c open.
func peerLine(c *net.TCPConn) (netip.AddrPort, error) {
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return netip.AddrPort{}, err
	}
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return netip.AddrPort{}, fmt.Errorf("read from %s: %w (got %q)", c.RemoteAddr(), err, line)
		}
		if b[0] == '\n' {
			return netip.ParseAddrPort(string(line))
		}
		line = append(line, b[0])
	}
}

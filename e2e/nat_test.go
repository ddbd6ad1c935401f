//go:build linux

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// The NAT topology, inside namespaces the test creates:
//
//	client 10.77.1.2 ── 10.77.1.1 host 10.77.2.1 ── 10.77.2.2 container
//
// The host forwards between its two links; the client and the container
// route through it.
var (
	natClient    = netip.MustParseAddr("10.77.1.2")
	natHostOut   = netip.MustParseAddr("10.77.1.1") // the published address
	natHostIn    = netip.MustParseAddr("10.77.2.1") // the host's side of the bridge
	natContainer = netip.MustParseAddr("10.77.2.2")
)

const (
	natFirst, natLast = 20000, 20099 // -host-port
	natTCPPort        = 8080         // container ports
	natUDPPort        = 53
)

// TestAllocationNAT plays an engine that lets hostproxy allocate: hostproxy
// binds a port of a range with -await-nat and reports it on fd 3, its
// sockets stay silent, the engine installs DNAT and sends SIGUSR1; then the
// client reaches the container by DNAT (the container sees the client's
// address) while a connection made on the host itself goes through
// hostproxy (the container sees the host's address).
func TestAllocationNAT(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	testenv.RequireCommand(t, "nft")
	testenv.RequireCommand(t, "sysctl")
	hostproxy := hostproxyBin(t)
	echoserver := echoserverBin(t)

	client, host, container := newNetns(t, "client"), newNetns(t, "host"), newNetns(t, "ctr")
	command(t, nil, "ip", "link", "add", "hp-c", "netns", client.name, "type", "veth", "peer", "name", "hp-h0", "netns", host.name)
	command(t, nil, "ip", "link", "add", "hp-k", "netns", container.name, "type", "veth", "peer", "name", "hp-h1", "netns", host.name)
	for _, l := range []struct {
		ns   netns
		dev  string
		addr netip.Addr
		via  netip.Addr // default route; invalid: none
	}{
		{client, "hp-c", natClient, natHostOut},
		{host, "hp-h0", natHostOut, netip.Addr{}},
		{host, "hp-h1", natHostIn, netip.Addr{}},
		{container, "hp-k", natContainer, natHostIn},
	} {
		command(t, nil, "ip", "-n", l.ns.name, "addr", "add", l.addr.String()+"/24", "dev", l.dev)
		command(t, nil, "ip", "-n", l.ns.name, "link", "set", l.dev, "up")
		if l.via.IsValid() {
			command(t, nil, "ip", "-n", l.ns.name, "route", "add", "default", "via", l.via.String())
		}
	}
	host.exec(t, nil, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	startEcho(t, container, echoserver, "-ip", natContainer.String(),
		"-tcp", strconv.Itoa(natTCPPort), "-udp", strconv.Itoa(natUDPPort))

	// 1. hostproxy allocates a port of the range on the published address.
	tcpProxy := spawnAwaitNAT(t, host, hostproxy, "tcp", natTCPPort)
	udpProxy := spawnAwaitNAT(t, host, hostproxy, "udp", natUDPPort)
	tcpAddr := netip.AddrPortFrom(natHostOut, tcpProxy.port)
	udpAddr := netip.AddrPortFrom(natHostOut, udpProxy.port)
	t.Logf("hostproxy allocated %s/tcp and %s/udp", tcpAddr, udpAddr)

	// 2. Silent until NAT is in place: the SYN is dropped (a timeout, not a
	// refusal) and the datagram gets no answer (not even ICMP).
	if c, err := client.dialTCP(tcpAddr, 1500*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("client connected to %s before SIGUSR1", tcpAddr)
	} else if !isTimeout(err) {
		t.Errorf("client dial %s before SIGUSR1: %v, want a timeout (SYN dropped)", tcpAddr, err)
	}
	if err := expectSilence(client, udpAddr); err != nil {
		t.Errorf("before SIGUSR1: %v", err)
	}

	// 3. DNAT for traffic arriving at the host, then SIGUSR1.
	ruleset := fmt.Sprintf(`table ip hpe2e {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s tcp dport %[2]d dnat to %[3]s:%[4]d
		ip daddr %[1]s udp dport %[5]d dnat to %[3]s:%[6]d
	}
}
`, natHostOut, tcpProxy.port, natContainer, natTCPPort, udpProxy.port, natUDPPort)
	host.exec(t, strings.NewReader(ruleset), "nft", "-f", "-")
	t.Cleanup(func() { tryCommand(nil, "ip", "netns", "exec", host.name, "nft", "delete", "table", "ip", "hpe2e") })
	tcpProxy.signal(t, syscall.SIGUSR1)
	udpProxy.signal(t, syscall.SIGUSR1)

	// 4a. From the host itself (no DNAT on locally generated traffic) the
	// connection goes through hostproxy: the container sees the host.
	var peer netip.AddrPort
	waitFor(t, 10*time.Second, "hostproxy to answer on "+tcpAddr.String()+" after SIGUSR1", func() bool {
		c, err := host.dialTCP(tcpAddr, 500*time.Millisecond)
		if err != nil {
			return false
		}
		peer, err = roundTripTCP(c, "via hostproxy\n")
		if err != nil {
			t.Fatalf("tcp from the host through hostproxy %s: %v", tcpAddr, err)
		}
		return true
	})
	if peer.Addr() != natHostIn {
		t.Errorf("tcp from the host to %s: container saw %s, want %s (relayed by hostproxy)", tcpAddr, peer, natHostIn)
	}
	checkUDP(t, host, udpAddr, natHostIn, "udp from the host through hostproxy")

	// 4b. From the client, DNAT takes the packets straight to the container,
	// which sees the client's own address.
	c, err := client.dialTCP(tcpAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("client dial %s after DNAT: %v", tcpAddr, err)
	}
	if peer, err = roundTripTCP(c, "via DNAT\n"); err != nil {
		t.Errorf("tcp from the client by DNAT %s: %v", tcpAddr, err)
	} else if peer.Addr() != natClient {
		t.Errorf("tcp from the client to %s: container saw %s, want the client %s (DNAT)", tcpAddr, peer, natClient)
	}
	checkUDP(t, client, udpAddr, natClient, "udp from the client by DNAT")

	// 5. Stop: exit 0, and the ports are free again.
	tcpProxy.stop(t)
	udpProxy.stop(t)
	if err := errors.Join(host.bindable("tcp", tcpAddr), host.bindable("udp", udpAddr)); err != nil {
		t.Errorf("ports still in use after hostproxy exited: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// expectSilence sends a datagram from ns to addr and expects neither an
// answer nor an ICMP error (which a connected socket reports as a refusal).
func expectSilence(ns netns, addr netip.AddrPort) error {
	c, err := ns.dialUDP(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("anyone?")); err != nil {
		return fmt.Errorf("send to %s: %w", addr, err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	switch {
	case err == nil:
		return fmt.Errorf("datagram to %s answered: %q", addr, buf[:n])
	case !isTimeout(err):
		return fmt.Errorf("datagram to %s: %w, want no answer at all", addr, err)
	}
	return nil
}

// checkUDP round-trips a datagram from ns to addr and expects the container
// to have seen source.
func checkUDP(t *testing.T, ns netns, addr netip.AddrPort, source netip.Addr, what string) {
	t.Helper()
	c, err := ns.dialUDP(addr)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer c.Close()
	peer, err := roundTripUDP(c, what)
	if err != nil {
		t.Errorf("%s %s: %v", what, addr, err)
	} else if peer.Addr() != source {
		t.Errorf("%s %s: container saw %s, want %s", what, addr, peer, source)
	}
}

// startEcho runs the echo server in ns and waits until it has bound.
func startEcho(t *testing.T, ns netns, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, bin}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start echo server in %s: %v", ns.name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("said %q", line)
		}
		ready <- err
		io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("echo server in %s: %v", ns.name, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("echo server in %s not ready after 10s", ns.name)
	}
}

// natProxy is a hostproxy in allocation mode.
type natProxy struct {
	cmd    *exec.Cmd
	port   uint16
	exited chan struct{}
}

// spawnAwaitNAT starts hostproxy -await-nat in ns, as an engine would, and
// reads the allocated port from fd 3.
func spawnAwaitNAT(t *testing.T, ns netns, bin, proto string, containerPort uint16) *natProxy {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("ip", "netns", "exec", ns.name, bin,
		"-proto", proto,
		"-host-ip", natHostOut.String(),
		"-host-port", fmt.Sprintf("%d-%d", natFirst, natLast),
		"-container-ip", natContainer.String(),
		"-container-port", strconv.Itoa(int(containerPort)),
		"-await-nat")
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatalf("start hostproxy: %v", err)
	}
	p := &natProxy{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("hostproxy -proto %s: reading fd 3: %v (got %q)", proto, err, status)
	}
	s, ok := strings.CutPrefix(string(status), "0\n")
	port, perr := strconv.ParseUint(strings.TrimSuffix(s, "\n"), 10, 16)
	if !ok || !strings.HasSuffix(s, "\n") || perr != nil {
		t.Fatalf("hostproxy -proto %s wrote %q on fd 3, want \"0\\n<port>\\n\"", proto, status)
	}
	if port < natFirst || port > natLast {
		t.Fatalf("hostproxy -proto %s allocated port %d, outside %d-%d", proto, port, natFirst, natLast)
	}
	p.port = uint16(port)
	return p
}

func (p *natProxy) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to hostproxy (pid %d): %v", sig, p.cmd.Process.Pid, err)
	}
}

// stop sends SIGTERM and expects a prompt exit with status 0.
func (p *natProxy) stop(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("hostproxy (pid %d) still running 10s after SIGTERM", p.cmd.Process.Pid)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("hostproxy exited with %v after SIGTERM, want 0", p.cmd.ProcessState)
	}
}

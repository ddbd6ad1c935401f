//go:build linux

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// The topology of TestDockerdWrapper: a client namespace linked to the
// engine's namespace, where dockerd runs with --iptables=false, so that no
// DNAT exists and every byte from the client goes through the userland
// proxy.
//
//	client 10.81.1.2, 10.81.1.3 ── 10.81.1.1 engine (docker0 10.213.0.1) ── container
var (
	wrapClients = []netip.Addr{netip.MustParseAddr("10.81.1.2"), netip.MustParseAddr("10.81.1.3")}
	wrapEngine  = netip.MustParseAddr("10.81.1.1")
)

const (
	wrapTCPPort = 18180 // → 8080/tcp
	wrapUDPPort = 18153 // → 53/udp
)

// TestDockerdWrapper: a real dockerd 20.10 whose --userland-proxy-path is
// the one-line wrapper docs/client-address.md gives (exec hostproxy
// -transparent "$@"). Two clients in another namespace reach a published
// TCP and UDP port at once, and the container sees each client's own
// address; a connection made on the engine's host itself still works and
// keeps the host's source.
func TestDockerdWrapper(t *testing.T) {
	if os.Getenv("HOSTPROXY_E2E_SKIP_DOCKERD") == "1" {
		t.Skip("HOSTPROXY_E2E_SKIP_DOCKERD=1")
	}
	testenv.RequireRoot(t)
	for _, c := range []string{"dockerd", "containerd", "docker", "nsenter", "ip", "nft"} {
		testenv.RequireCommand(t, c)
	}
	image := filepath.Join(t.TempDir(), "rootfs.tar")
	writeRootfs(t, image, echoserverBin(t))

	// The wrapper, as an engine with fixed flags is given it.
	wrapper := filepath.Join(t.TempDir(), "hostproxy-transparent")
	script := fmt.Sprintf("#!/bin/sh\nexec %s -transparent \"$@\"\n", hostproxyBin(t))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	e := startEngine(t, wrapper, "--iptables=false")
	client := newNetns(t, "wrapcl")
	command(t, nil, "ip", "link", "add", "hp-wc", "netns", client.name, "type", "veth", "peer", "name", "hp-we", "netns", e.ns.name)
	for _, a := range wrapClients {
		command(t, nil, "ip", "-n", client.name, "addr", "add", a.String()+"/24", "dev", "hp-wc")
	}
	command(t, nil, "ip", "-n", client.name, "link", "set", "hp-wc", "up")
	command(t, nil, "ip", "-n", client.name, "route", "add", "default", "via", wrapEngine.String())
	command(t, nil, "ip", "-n", e.ns.name, "addr", "add", wrapEngine.String()+"/24", "dev", "hp-we")
	command(t, nil, "ip", "-n", e.ns.name, "link", "set", "hp-we", "up")
	tpRules(t, e.ns) // gone with the engine's namespace

	e.docker(t, "import", image, "hpe2e-echo:latest")
	id := e.docker(t, "run", "-d",
		"-p", fmt.Sprintf("%d:8080", wrapTCPPort),
		"-p", fmt.Sprintf("%d:53/udp", wrapUDPPort),
		"hpe2e-echo:latest", "/echoserver", "-tcp", "8080")
	t.Cleanup(func() { e.tryDocker("rm", "-f", id) })

	tcp := netip.AddrPortFrom(wrapEngine, wrapTCPPort)
	udp := netip.AddrPortFrom(wrapEngine, wrapUDPPort)
	// dockerd reports the container running before its proxy has bound and
	// before the echo server listens (the proxy then accepts and resets):
	// wait until a round trip through the published port works.
	waitFor(t, 20*time.Second, "a round trip through the published port "+tcp.String(), func() bool {
		c, err := client.dialTCP(tcp, 500*time.Millisecond)
		if err != nil {
			return false
		}
		_, err = roundTripTCP(c, "ready?\n")
		return err == nil
	})

	// Both clients at once, TCP and UDP each.
	var wg sync.WaitGroup
	for _, src := range wrapClients {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := dialTCPFrom(client, *net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), tcp, false)
			if err != nil {
				t.Errorf("tcp from %s to %s: %v", src, tcp, err)
				return
			}
			local := netip.MustParseAddrPort(c.LocalAddr().String())
			peer, err := roundTripTCP(c, "transparent tcp from "+src.String()+"\n")
			switch {
			case err != nil:
				t.Errorf("tcp from %s through %s: %v", src, tcp, err)
			case peer != local:
				t.Errorf("tcp from %s through %s: container saw %s, want the client %s", src, tcp, peer, local)
			}
		}()
		go func() {
			defer wg.Done()
			c, err := dialUDPFrom(client, src, udp)
			if err != nil {
				t.Errorf("udp from %s to %s: %v", src, udp, err)
				return
			}
			defer c.Close()
			local := netip.MustParseAddrPort(c.LocalAddr().String())
			peer, err := roundTripUDP(c, "transparent udp from "+src.String())
			switch {
			case err != nil:
				t.Errorf("udp from %s through %s: %v", src, udp, err)
			case peer != local:
				t.Errorf("udp from %s through %s: container saw %s, want the client %s", src, udp, peer, local)
			}
		}()
	}
	wg.Wait()

	// From the engine's host itself: the host's normal source, the bridge.
	lo := netip.MustParseAddr("127.0.0.1")
	bridge := netip.MustParseAddr(dockerBridge)
	c, err := e.ns.dialTCP(netip.AddrPortFrom(lo, wrapTCPPort), 5*time.Second)
	if err != nil {
		t.Fatalf("tcp from the engine's host: %v", err)
	}
	if peer, err := roundTripTCP(c, "from the host\n"); err != nil {
		t.Errorf("tcp from the engine's host: %v", err)
	} else if peer.Addr() != bridge {
		t.Errorf("tcp from the engine's host: container saw %s, want the bridge %s", peer, bridge)
	}
	checkUDP(t, e.ns, netip.AddrPortFrom(lo, wrapUDPPort), bridge, "udp from the engine's host")

	e.docker(t, "rm", "-f", id)
	waitFor(t, 20*time.Second, "every hostproxy process to exit after docker rm -f", func() bool {
		return len(procsOf(e.ns, hostproxyBin(t))) == 0
	})
}

// dialTCPFrom connects inside n from local to addr; with reuse, with
// SO_REUSEADDR, so that a port may be used again at once, toward another
// address or over the client's own TIME_WAIT.
func dialTCPFrom(n netns, local net.TCPAddr, addr netip.AddrPort, reuse bool) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &local}
	if reuse {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	var c *net.TCPConn
	err := n.do(func() error {
		nc, err := d.Dial("tcp", addr.String())
		if err == nil {
			c = nc.(*net.TCPConn)
		}
		return err
	})
	return c, err
}

// dialUDPFrom creates a UDP socket bound to src inside n, connected to addr.
func dialUDPFrom(n netns, src netip.Addr, addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.do(func() (err error) {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

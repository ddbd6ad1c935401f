// Command echoserver is the backend of the end-to-end suites: a static
// program that runs alone in a container image or in a network namespace.
//
// Every TCP connection first receives one line, the peer address the server
// sees ("203.0.113.7:41234\n"), then an echo of everything it sends until it
// half-closes. Every UDP datagram is answered with the peer address, a
// newline, and the datagram itself. Reporting the peer lets a test tell
// traffic relayed by the userland proxy (source: the host) from traffic
// forwarded by NAT (source: the client).
//
//	echoserver [-tcp 8080,9000-9099] [-udp 53] [-ip ADDR]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

func main() {
	tcpPorts := flag.String("tcp", "8080,9000-9099", "TCP ports to echo on: a comma-separated list of ports and first-last ranges")
	udpPorts := flag.String("udp", "53", "UDP ports to echo on, same syntax")
	ip := flag.String("ip", "", "address to listen on (empty: every address)")
	flag.Parse()
	if flag.NArg() != 0 {
		fail(fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}
	if *ip != "" {
		if _, err := netip.ParseAddr(*ip); err != nil {
			fail(fmt.Errorf("-ip: %w", err))
		}
	}
	tcp, err := parsePorts(*tcpPorts)
	if err != nil {
		fail(fmt.Errorf("-tcp: %w", err))
	}
	udp, err := parsePorts(*udpPorts)
	if err != nil {
		fail(fmt.Errorf("-udp: %w", err))
	}
	for _, port := range tcp {
		addr := net.JoinHostPort(*ip, strconv.Itoa(int(port)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fail(fmt.Errorf("listen %s/tcp: %w", addr, err))
		}
		go serveTCP(ln)
	}
	for _, port := range udp {
		addr := net.JoinHostPort(*ip, strconv.Itoa(int(port)))
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			fail(fmt.Errorf("listen %s/udp: %w", addr, err))
		}
		go serveUDP(c)
	}
	// Tell whoever waits for us that every socket is bound.
	fmt.Println("ready")
	select {}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "echoserver:", err)
	os.Exit(2)
}

// parsePorts parses "8080,9000-9099" into the ports it names.
func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	if s == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ",") {
		first, last, isRange := strings.Cut(part, "-")
		lo, err := strconv.ParseUint(first, 10, 16)
		if err != nil || lo == 0 {
			return nil, fmt.Errorf("bad port %q", first)
		}
		hi := lo
		if isRange {
			if hi, err = strconv.ParseUint(last, 10, 16); err != nil || hi < lo {
				return nil, fmt.Errorf("bad range %q", part)
			}
		}
		for p := lo; p <= hi; p++ {
			ports = append(ports, uint16(p))
		}
	}
	return ports, nil
}

func serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Printf("accept on %s: %v", ln.Addr(), err)
			return
		}
		go echoTCP(c)
	}
}

func echoTCP(c net.Conn) {
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", c.RemoteAddr()); err != nil {
		return
	}
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func serveUDP(c net.PacketConn) {
	buf := make([]byte, 64<<10)
	out := make([]byte, 0, 64<<10+64)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			log.Printf("read on %s: %v", c.LocalAddr(), err)
			return
		}
		out = append(append(append(out[:0], peer.String()...), '\n'), buf[:n]...)
		if _, err := c.WriteTo(out, peer); err != nil {
			log.Printf("reply to %s from %s: %v", peer, c.LocalAddr(), err)
		}
	}
}

package main_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy/proxyproto"
)

// TestProxyProtocolUDP: with -proxy-protocol v2, a UDP -L mapping on a
// wildcard address starts every datagram to the backend with a v2 DGRAM
// header naming the client and the host address it wrote to, and the reply
// reaches the client unchanged.
func TestProxyProtocolUDP(t *testing.T) {
	t.Parallel()
	backend, err := net.ListenUDP("udp", &net.UDPAddr{IP: lo4.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	got := make(chan []byte, 4)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := backend.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			got <- bytes.Clone(buf[:n])
			if n >= 16 {
				if h := 16 + int(buf[14])<<8 | int(buf[15]); h <= n {
					backend.WriteToUDPAddrPort(buf[h:n], from)
				}
			}
		}
	}()
	var port uint16
	p := startOnFreePorts(t, spawn{}, func() ([]string, string) {
		port = freePort(t, lo4)
		return []string{"-proxy-protocol", "v2", "-L", fmt.Sprintf("0.0.0.0:%d:%s/udp", port, backend.LocalAddr()),
			"-drain-timeout", "1s"}, "0\n" // an open UDP flow drains until the timeout
	})
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.6"), port)
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 5)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.WriteToUDPAddrPort([]byte("hello"), to); err != nil {
		t.Fatal(err)
	}
	want := append(proxyproto.AppendV2(nil, proxyproto.Datagram, client.LocalAddr().(*net.UDPAddr).AddrPort(), to), "hello"...)
	select {
	case d := <-got:
		if !bytes.Equal(d, want) {
			t.Fatalf("backend got\n% x\nwant\n% x", d, want)
		}
	case <-time.After(wait):
		t.Fatal("no datagram reached the backend")
	}
	client.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64)
	n, from, err := client.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" || from != to {
		t.Fatalf("reply %q from %s, %v; want \"hello\" from %s", buf[:n], from, err, to)
	}
	p.stop(t, syscall.SIGTERM)
}

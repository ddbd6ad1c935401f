package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
)

// backendKind names the loopback servers the harness runs in-process; every
// proxy under test forwards to one of them.
type backendKind int

const (
	tcpEcho   backendKind = iota // echoes every byte until EOF, then closes
	tcpSink                      // reads and discards until EOF
	tcpSource                    // writes until the peer goes away
	udpEcho                      // answers every datagram with itself
	numBackends
)

func (k backendKind) String() string {
	return [...]string{"tcp-echo", "tcp-sink", "tcp-source", "udp-echo"}[k]
}

// backends is the set of running loopback servers.
type backends struct {
	addr [numBackends]netip.AddrPort

	closers []io.Closer
	wg      sync.WaitGroup
}

// bulkChunk is the buffer size of the bulk backends and clients.
const bulkChunk = 128 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, bulkChunk); return &b }}

// startBackends starts all backends on 127.0.0.1 with kernel-chosen ports.
func startBackends() (*backends, error) {
	b := &backends{}
	for k := tcpEcho; k <= tcpSource; k++ {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("backend %s: listen 127.0.0.1:0/tcp: %w", k, err)
		}
		b.addr[k] = ln.Addr().(*net.TCPAddr).AddrPort()
		b.closers = append(b.closers, ln)
		b.wg.Go(func() { serveTCP(ln, k) })
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("backend %s: listen 127.0.0.1:0/udp: %w", udpEcho, err)
	}
	// A deep receive buffer so that the backend is not what drops
	// datagrams.
	_ = pc.SetReadBuffer(4 << 20)
	_ = pc.SetWriteBuffer(4 << 20)
	b.addr[udpEcho] = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	b.closers = append(b.closers, pc)
	for range 2 {
		b.wg.Go(func() { serveUDPEcho(pc) })
	}
	return b, nil
}

// Close stops every backend and waits for the accept and read loops.
// Connections already accepted end when their peers close them.
func (b *backends) Close() error {
	for _, c := range b.closers {
		c.Close()
	}
	b.wg.Wait()
	return nil
}

func serveTCP(ln *net.TCPListener, k backendKind) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // EMFILE and friends: the benchmark reports the errors it sees
		}
		switch k {
		case tcpEcho:
			go echoTCP(c)
		case tcpSink:
			go sinkTCP(c)
		case tcpSource:
			go sourceTCP(c)
		}
	}
}

func echoTCP(c *net.TCPConn) {
	defer c.Close()
	c.SetNoDelay(true)
	var buf [4096]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func sinkTCP(c *net.TCPConn) {
	defer c.Close()
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	for {
		if _, err := c.Read(*bp); err != nil {
			return
		}
	}
}

func sourceTCP(c *net.TCPConn) {
	defer c.Close()
	go func() {
		// Notice the peer going away even while writes block.
		var b [1]byte
		c.Read(b[:])
		c.Close()
	}()
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	for {
		if _, err := c.Write(*bp); err != nil {
			return
		}
	}
}

func serveUDPEcho(pc *net.UDPConn) {
	var buf [65536]byte
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pc.WriteToUDPAddrPort(buf[:n], from)
	}
}

package tcp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"

	"github.com/hostproxy/hostproxy/proxy/tcp"
)

// Example relays connections on a port of 127.0.0.1 to a backend, here an
// echo server, from a plain Go program.
func Example() {
	// The backend: it echoes one connection.
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer be.Close()
	go func() {
		c, err := be.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	// The relay: a listening socket and where its connections go.
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	p := tcp.NewListener(ln, tcp.Config{Backend: be.Addr().(*net.TCPAddr).AddrPort()})
	served := make(chan error, 1)
	go func() { served <- p.Serve(context.Background()) }()

	// A client of the relay.
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprint(c, "hello through the relay")
	c.(*net.TCPConn).CloseWrite() // the backend sees the end, and echoes it
	reply, err := io.ReadAll(c)
	if err != nil {
		log.Fatal(err)
	}
	c.Close()
	fmt.Println(string(reply))

	// Close resets whatever is still open; Serve then returns nil.
	if err := p.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("serve:", <-served)
	// Output:
	// hello through the relay
	// serve: <nil>
}

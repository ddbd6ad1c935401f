// Command bare is the smallest Go program that does what an idle hostproxy
// does in docker-proxy's form: listen, handle SIGINT/SIGTERM, write "0\n" to
// fd 3, accept. hack/idle-floor.sh measures its idle memory beside
// hostproxy's and docker-proxy's; it is the floor of a Go 1.26 binary.
package main

import (
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	os.NewFile(3, "status").Write([]byte("0\n"))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	<-sigs
}

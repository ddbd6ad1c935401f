// Command logging is hack/idlefloor/bare plus hostproxy's logging (zapcore
// with logging's encoder), logging a failed accept as hostproxy
// does. Its idle memory is the floor of a Go 1.26 binary that logs through
// zapcore: everything hostproxy adds beyond it is its own code.
package main

import (
	"net"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/logging"
)

func main() {
	log, err := logging.NewStderr(zapcore.WarnLevel, logging.FormatConsole)
	if err != nil {
		os.Exit(1)
	}
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
				log.Error("accept failed", logging.Err(err))
				return
			}
			c.Close()
		}
	}()
	<-sigs
}

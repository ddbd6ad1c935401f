package proxytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// ConnClient is a Client over a net.Conn whose far end echoes: a TCP
// connection, or a connected UDP socket (one datagram per message).
type ConnClient struct{ net.Conn }

// RoundTrip writes msg and reads it back, within ctx's deadline.
func (c ConnClient) RoundTrip(ctx context.Context, msg []byte) error {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(WaitFor)
	}
	c.SetDeadline(d)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// DialConn dials network ("tcp", "udp") addr and completes a round trip
// through it before ctx is done: a Harness's Dial for a proxy whose
// backend echoes.
func DialConn(ctx context.Context, network, addr string) (Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := ConnClient{nc}
	if err := c.RoundTrip(ctx, []byte("hello "+nc.LocalAddr().String())); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestClassifyAccept(t *testing.T) {
	tests := []struct {
		err  error
		want ErrorClass
	}{
		{net.ErrClosed, Fatal},
		{fmt.Errorf("accept sctp 127.0.0.1:80: %w", net.ErrClosed), Fatal},
		{os.NewSyscallError("accept4", syscall.EBADF), Fatal},
		{syscall.EINVAL, Fatal},
		{syscall.ENOTSOCK, Fatal},
		{syscall.EFAULT, Fatal},
		{os.NewSyscallError("accept4", syscall.EMFILE), Retry},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, Retry},
		{syscall.ENOBUFS, Retry},
		{syscall.ENOMEM, Retry},
		{syscall.ECONNABORTED, PerConnection},
		{fmt.Errorf("wrapped: %w", syscall.EPERM), PerConnection},
		{syscall.ECONNRESET, PerConnection},
		{syscall.EAGAIN, PerConnection},
		{syscall.EPROTO, PerConnection},
		{syscall.ENETUNREACH, PerConnection},
		{syscall.EHOSTUNREACH, PerConnection},
		{syscall.ETIMEDOUT, PerConnection},
		{syscall.EXDEV, Retry},               // unknown errno: back off, never end
		{errors.New("something odd"), Retry}, // no errno: likewise
		// A message that reads like a fatal error is still judged by errno.
		{fmt.Errorf("bad file descriptor: %w", syscall.EMFILE), Retry},
		{errors.New("use of closed network connection"), Retry},
	}
	for _, tt := range tests {
		if got := ClassifyAccept(tt.err); got != tt.want {
			t.Errorf("ClassifyAccept(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestClassifyDial(t *testing.T) {
	tests := []struct {
		err  error
		want ErrorClass
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, AddrExhausted},
		{fmt.Errorf("dial 10.0.0.2:80/sctp: %w", syscall.EADDRNOTAVAIL), AddrExhausted},
		{os.NewSyscallError("socket", syscall.EMFILE), Retry},
		{syscall.ENFILE, Retry},
		{syscall.ENOBUFS, Retry},
		{syscall.ENOMEM, Retry},
		{syscall.ECONNREFUSED, PerConnection},
		{syscall.EHOSTUNREACH, PerConnection},
		{syscall.ETIMEDOUT, PerConnection},
		{syscall.EBADF, PerConnection}, // never Fatal for a dial
		{context.DeadlineExceeded, PerConnection},
		{fmt.Errorf("waiting for the association: %w", context.Canceled), PerConnection},
		{errors.New("cannot assign requested address"), PerConnection}, // text is not an errno
	}
	for _, tt := range tests {
		if got := ClassifyDial(tt.err); got != tt.want {
			t.Errorf("ClassifyDial(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestAddrExhaustedHint(t *testing.T) {
	if got := AddrExhaustedHint("tcp"); got != "set net.ipv4.tcp_tw_reuse=1 or widen net.ipv4.ip_local_port_range" {
		t.Errorf("tcp hint: %q", got)
	}
	if got := AddrExhaustedHint("sctp"); got != "widen net.ipv4.ip_local_port_range (net.ipv4.tcp_tw_reuse does not apply to sctp)" {
		t.Errorf("sctp hint: %q", got)
	}
}

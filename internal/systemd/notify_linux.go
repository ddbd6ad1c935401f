//go:build linux

package systemd

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// NotifyEnv is the variable naming the service manager's notification
// socket: a path, or an abstract socket name starting with "@".
const NotifyEnv = "NOTIFY_SOCKET"

// Notifier sends state changes to the service manager. A nil *Notifier
// sends nothing, so callers need not check whether one was set up.
type Notifier struct {
	fd   int
	addr *unix.SockaddrUnix
	to   unix.Sockaddr // addr, or nil once the socket is connected to it
}

// NewNotifier reads and unsets $NOTIFY_SOCKET. It returns nil and no error
// when the variable is unset or empty (no service manager is listening), and
// an error naming the address when it cannot be used (a vsock address, for
// instance, which hostproxy does not support).
func NewNotifier() (*Notifier, error) {
	addr, set := os.LookupEnv(NotifyEnv)
	os.Unsetenv(NotifyEnv)
	if !set || addr == "" {
		return nil, nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return nil, fmt.Errorf("%s=%q: only a path or an abstract \"@name\" is supported", NotifyEnv, addr)
	}
	if len(addr) > len(unix.RawSockaddrUnix{}.Path)-1 {
		return nil, fmt.Errorf("%s=%q: address too long for a unix socket", NotifyEnv, addr)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: socket: %w", NotifyEnv, addr, err)
	}
	// x/sys/unix turns a leading "@" into the abstract namespace's NUL.
	n := &Notifier{fd: fd, addr: &unix.SockaddrUnix{Name: addr}}
	n.to = n.addr
	// Connected now, the socket keeps the right to send after hostproxy
	// drops its privileges: the path's permissions are checked at connect
	// (and at every sendto to an address), not at a send on a connected
	// socket. When connect fails the notifications are sent to the address.
	if unix.Connect(fd, n.addr) == nil {
		n.to = nil
	}
	return n, nil
}

// Notify sends state, one or more newline-separated assignments such as
// "READY=1" or "STOPPING=1\nSTATUS=draining", as one datagram. It does not
// block: a service manager that does not read its socket makes it fail with
// EAGAIN.
func (n *Notifier) Notify(state string) error {
	if n == nil {
		return nil
	}
	if err := unix.Sendto(n.fd, []byte(state), unix.MSG_DONTWAIT, n.to); err != nil {
		return fmt.Errorf("sd_notify %q to %s: %w", state, n.addr.Name, err)
	}
	return nil
}

// Close releases the socket. Later Notify calls fail.
func (n *Notifier) Close() error {
	if n == nil || n.fd < 0 {
		return nil
	}
	err := unix.Close(n.fd)
	n.fd = -1
	return err
}

//go:build !linux

package systemd

// NotifyEnv is the variable naming the service manager's notification socket.
const NotifyEnv = "NOTIFY_SOCKET"

// Notifier sends nothing on this platform.
type Notifier struct{}

// NewNotifier returns nil: there is no service manager protocol here.
func NewNotifier() (*Notifier, error) { return nil, nil }

// Notify does nothing.
func (n *Notifier) Notify(state string) error { return nil }

// Close does nothing.
func (n *Notifier) Close() error { return nil }

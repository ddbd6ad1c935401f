package systemd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestNotify sends to a path and to an abstract socket the test listens on,
// and checks that NOTIFY_SOCKET is gone once read.
func TestNotify(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", "@hostproxy-notify-test-" + strconv.Itoa(os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: tc.addr, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			t.Setenv(NotifyEnv, tc.addr)
			n, err := NewNotifier()
			if err != nil || n == nil {
				t.Fatalf("NewNotifier() = %v, %v", n, err)
			}
			defer n.Close()
			if v, set := os.LookupEnv(NotifyEnv); set {
				t.Errorf("%s still set (%q) after NewNotifier", NotifyEnv, v)
			}
			for _, msg := range []string{"READY=1", "STOPPING=1\nSTATUS=draining"} {
				if err := n.Notify(msg); err != nil {
					t.Fatal(err)
				}
				ln.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 512)
				k, err := ln.Read(buf)
				if err != nil {
					t.Fatalf("reading the notification: %v", err)
				}
				if string(buf[:k]) != msg {
					t.Errorf("got %q, want %q", buf[:k], msg)
				}
			}
		})
	}
}

func TestNotifierUnsetOrBad(t *testing.T) {
	t.Setenv(NotifyEnv, "")
	if n, err := NewNotifier(); n != nil || err != nil {
		t.Errorf("empty %s: NewNotifier() = %v, %v; want nil, nil", NotifyEnv, n, err)
	}
	var nilN *Notifier
	if err := nilN.Notify("READY=1"); err != nil {
		t.Errorf("a nil Notifier must send nothing: %v", err)
	}
	t.Setenv(NotifyEnv, "vsock:2:1234")
	if _, err := NewNotifier(); err == nil {
		t.Error("a vsock address was accepted")
	}
	// A socket nobody listens on: Notify reports it, naming the address.
	t.Setenv(NotifyEnv, filepath.Join(t.TempDir(), "absent"))
	n, err := NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Notify("READY=1"); err == nil {
		t.Error("Notify to a missing socket succeeded")
	}
}

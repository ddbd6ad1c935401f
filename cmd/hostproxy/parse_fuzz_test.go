package main

import (
	"strings"
	"testing"
)

// FuzzParseArgs: any command line (arguments separated by NUL) parses to a
// valid configuration or fails with one line, never a panic.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-proto tcp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 8080",
		"-proto udp -host-ip :: -host-port 80 -container-ip 10.0.0.2 -container-port 53 -use-listen-fd",
		"-host-ip 127.0.0.1 -host-port 0 -container-ip 10.0.0.2 -container-port 80",
		"-host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 80 -await-nat",
		"-host-ip 127.0.0.1 -host-ip ::1 -host-port 80 -container-ip 10.0.0.2 -container-port 80",
		"-host-ip 127.0.0.1 -host-port 80-90 -container-ip 10.0.0.2 -container-port 180-190",
		"-L 8080:127.0.0.1:80 -L [::1]:53:[::1]:5353/udp -drain-timeout 0 -user daemon -seccomp=false",
		"-L 1:h:2 -proto tcp", "-h", "-version", "--", "-log-level debug -log-format json",
		"-udp-max-flows 0", "-dial-timeout -1s",
	} {
		f.Add(strings.ReplaceAll(s, " ", "\x00"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\x00")
		}
		c, err := parseArgs(args)
		if err != nil {
			// The flag package quotes nothing: an argument with a newline
			// makes a multi-line error, which startFailed flattens.
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("%q: empty error", args)
			}
			return
		}
		if c.Help || c.Version {
			return
		}
		if c.DialTimeout <= 0 || c.UDPTimeout <= 0 || c.DrainTimeout < 0 || c.UDPMaxFlows < 1 {
			t.Fatalf("%q: invalid settings accepted: %+v", args, c)
		}
		switch c.Mode {
		case modeForwarder:
			if len(c.Forwards) == 0 {
				t.Fatalf("%q: forwarder without -L", args)
			}
		case modeCompat, modeAllocate:
			if len(c.HostIPs) == 0 || !c.ContainerIP.IsValid() || c.ContainerPort.First == 0 ||
				c.HostPorts.First > c.HostPorts.Last || c.ContainerPort.First > c.ContainerPort.Last {
				t.Fatalf("%q: invalid engine mapping accepted: %+v", args, c)
			}
			if c.Mode == modeCompat && (len(c.HostIPs) != 1 || c.HostPorts.First != c.HostPorts.Last || c.HostPorts.First == 0) {
				t.Fatalf("%q: compat mode with %v ports %v", args, c.HostIPs, c.HostPorts)
			}
		default:
			t.Fatalf("%q: no mode: %+v", args, c)
		}
	})
}

// FuzzParseAddr: an accepted address has no zone and is never IPv4-mapped.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "[::1]", "::ffff:10.0.0.1", "fe80::1%eth0", "[", "[]", "1.2.3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAddr(s)
		if err != nil {
			if strings.ContainsRune(err.Error(), '\n') {
				t.Fatalf("%q: multi-line error %q", s, err)
			}
			return
		}
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("%q: accepted as %v", s, a)
		}
		back, err := parseAddr(a.String())
		if err != nil || back != a {
			t.Fatalf("%q: %v does not parse back: %v, %v", s, a, back, err)
		}
	})
}

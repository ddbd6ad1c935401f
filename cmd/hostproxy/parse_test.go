package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/proxy/proxyproto"
	"github.com/hostproxy/hostproxy/sockopt"
)

func TestParsePortRange(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    alloc.Range
		wantErr string // substring; "" means success
	}{
		{"80", alloc.Range{First: 80, Last: 80}, ""},
		{"1", alloc.Range{First: 1, Last: 1}, ""},
		{"65535", alloc.Range{First: 65535, Last: 65535}, ""},
		{"080", alloc.Range{First: 80, Last: 80}, ""},
		{"8000-8100", alloc.Range{First: 8000, Last: 8100}, ""},
		{"5-5", alloc.Range{First: 5, Last: 5}, ""},
		{"", alloc.Range{}, "empty"},
		{"0", alloc.Range{}, "out of range"},
		{"65536", alloc.Range{}, "out of range"},
		{"99999999999999999999", alloc.Range{}, "out of range"},
		{"-1", alloc.Range{}, "out of range"},
		{"+80", alloc.Range{}, "not a number"},
		{"abc", alloc.Range{}, "not a number"},
		{" 80", alloc.Range{}, "not a number"},
		{"0x50", alloc.Range{}, "not a number"},
		{"10-5", alloc.Range{}, "reversed"},
		{"0-10", alloc.Range{}, "out of range"},
		{"10-", alloc.Range{}, "empty"},
		{"1-2-3", alloc.Range{}, "not a number"},
		{"1-65536", alloc.Range{}, "out of range"},
	} {
		got, err := parsePortRange(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("parsePortRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parsePortRange(%q) error %v; want one containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"80", "1-65535", "10-5", "-1", "0", "65536", "a-b", "1--2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parsePortRange(s)
		if err != nil {
			if r != (alloc.Range{}) {
				t.Fatalf("%q: error %v with a non-zero range %v", s, err, r)
			}
			if strings.ContainsRune(err.Error(), '\n') {
				t.Fatalf("%q: multi-line error %q", s, err)
			}
			return
		}
		if r.First == 0 || r.First > r.Last || r.Len() < 1 {
			t.Fatalf("%q: invalid range %v accepted", s, r)
		}
		// What parses formats back to something that parses the same.
		back, err := parsePortRange(r.String())
		if err != nil || back != r {
			t.Fatalf("%q: %v round-trips to %v, %v", s, r, back, err)
		}
	})
}

var (
	v4lo = netip.MustParseAddr("127.0.0.1")
	v6lo = netip.MustParseAddr("::1")
)

func TestParseForward(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    forward
		wantErr string
	}{
		{"8080:127.0.0.1:80", forward{sockopt.TCP, netip.Addr{}, alloc.Range{First: 8080, Last: 8080}, "127.0.0.1", alloc.Range{First: 80, Last: 80}}, ""},
		{"127.0.0.1:8080:10.0.0.2:80/tcp", forward{sockopt.TCP, v4lo, alloc.Range{First: 8080, Last: 8080}, "10.0.0.2", alloc.Range{First: 80, Last: 80}}, ""},
		{"[::1]:8080:[fd00::2]:80", forward{sockopt.TCP, v6lo, alloc.Range{First: 8080, Last: 8080}, "fd00::2", alloc.Range{First: 80, Last: 80}}, ""},
		{"[::]:53:[fd00::53]:53/udp", forward{sockopt.UDP, netip.IPv6Unspecified(), alloc.Range{First: 53, Last: 53}, "fd00::53", alloc.Range{First: 53, Last: 53}}, ""},
		{"0.0.0.0:9000-9009:db.internal:5000-5009/UDP", forward{sockopt.UDP, netip.IPv4Unspecified(), alloc.Range{First: 9000, Last: 9009}, "db.internal", alloc.Range{First: 5000, Last: 5009}}, ""},
		{"localhost:38412:localhost:38412/sctp", forward{sockopt.SCTP, netip.Addr{}, alloc.Range{First: 38412, Last: 38412}, "localhost", alloc.Range{First: 38412, Last: 38412}}, ""},
		{"[::ffff:127.0.0.1]:80:127.0.0.1:81", forward{sockopt.TCP, v4lo, alloc.Range{First: 80, Last: 80}, "127.0.0.1", alloc.Range{First: 81, Last: 81}}, ""},
		{"", forward{}, "fields"},
		{"garbage", forward{}, "fields"},
		{"8080", forward{}, "fields"},
		{"8080:host", forward{}, "fields"},
		{"a:b:c:d:e", forward{}, "fields"},
		{"8080:127.0.0.1:80/icmp", forward{}, "unsupported protocol"},
		{"8080:127.0.0.1:80/", forward{}, "unsupported protocol"},
		{"0:127.0.0.1:80", forward{}, "out of range"},
		{"8080:127.0.0.1:0", forward{}, "out of range"},
		{"8080:127.0.0.1:", forward{}, "empty port"},
		{"8080::80", forward{}, "target host"},
		{":8080:127.0.0.1:80", forward{}, "empty bind"},
		{"1.2.3:8080:127.0.0.1:80", forward{}, "not an IP address"},
		{"[::1:8080:127.0.0.1:80", forward{}, "unclosed"},
		{"[::1]x:8080:127.0.0.1:80", forward{}, "unexpected"},
		{"8080:[10.0.0.1]:80", forward{}, "not an IPv6"},
		{"8080:fd00::2:80", forward{}, "fields"},
		{"8080:bad host:80", forward{}, "target host"},
		{"8000-8010:127.0.0.1:80", forward{}, "differ in length"},
		{"8010-8000:127.0.0.1:80", forward{}, "reversed"},
		{"[fe80::1%eth0]:80:127.0.0.1:80", forward{}, "zones"},
	} {
		got, err := parseForward(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("parseForward(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parseForward(%q) error %v; want one containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{
		"8080:127.0.0.1:80", "[::1]:8080:[fd00::2]:80/udp", "0.0.0.0:1-3:h:4-6/sctp",
		"[:]:1:2:3", "[[::1]]:1:h:1", "::::", "/udp", "a:1:[::1]:2/tcp/udp",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := parseForward(s)
		if err != nil {
			if strings.ContainsRune(err.Error(), '\n') {
				t.Fatalf("%q: multi-line error %q", s, err)
			}
			return
		}
		if fw.Proto == 0 || fw.Ports.First == 0 || fw.TPorts.First == 0 || fw.Target == "" ||
			fw.Ports.Len() != fw.TPorts.Len() {
			t.Fatalf("%q: invalid spec accepted: %+v", s, fw)
		}
		back, err := parseForward(fw.String())
		if err != nil || back != fw {
			t.Fatalf("%q: %+v formats as %q, which parses to %+v, %v", s, fw, fw.String(), back, err)
		}
	})
}

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		args string
		mode mode
	}{
		{"-proto tcp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 8080", modeCompat},
		{"-proto udp -host-ip :: -host-port 80 -container-ip 10.0.0.2 -container-port 53 -use-listen-fd", modeCompat},
		{"-host-ip 127.0.0.1 -host-port 0 -container-ip 10.0.0.2 -container-port 80", modeAllocate},
		{"-host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 80 -await-nat", modeAllocate},
		{"-host-ip 127.0.0.1 -host-ip ::1 -host-port 80 -container-ip 10.0.0.2 -container-port 80", modeAllocate},
		{"-host-ip 127.0.0.1 -host-port 80-90 -container-ip 10.0.0.2 -container-port 80", modeAllocate},
		{"-host-ip 127.0.0.1 -host-port 80-90 -container-ip 10.0.0.2 -container-port 180-190", modeAllocate},
		{"-L 8080:127.0.0.1:80 -L [::1]:53:[::1]:5353/udp", modeForwarder},
	} {
		c, err := parseArgs(strings.Fields(tt.args))
		if err != nil || c.Mode != tt.mode {
			t.Errorf("parseArgs(%s): %v, %v; want %v", tt.args, c, err, tt.mode)
			continue
		}
		switch c.Mode {
		case modeForwarder:
			if c.DrainTimeout != defaultForwarderDrain {
				t.Errorf("%s: drain %v, want %v", tt.args, c.DrainTimeout, defaultForwarderDrain)
			}
		default:
			if c.DrainTimeout != 0 {
				t.Errorf("%s: drain %v, want 0", tt.args, c.DrainTimeout)
			}
		}
	}
	c, err := parseArgs(strings.Fields("-host-ip 127.0.0.1 -host-port 80-82 -container-ip 10.0.0.2 -container-port 180-182"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Backend(81), netip.MustParseAddrPort("10.0.0.2:181"); got != want {
		t.Errorf("Backend(81) = %v, want %v", got, want)
	}
}

// TestParseProxyProtocol: -proxy-protocol is accepted in every form where
// its protocols allow it, and sets the version.
func TestParseProxyProtocol(t *testing.T) {
	for _, tt := range []struct {
		args string
		want proxyproto.Version
	}{
		{"-proto tcp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 8080", proxyproto.None},
		{"-proxy-protocol v1 -proto tcp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 8080", proxyproto.V1},
		{"-proxy-protocol v2 -proto udp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 53", proxyproto.V2},
		{"-proxy-protocol v1 -host-ip 127.0.0.1 -host-port 0 -container-ip 10.0.0.2 -container-port 80", proxyproto.V1},
		{"-proxy-protocol v2 -L 8080:127.0.0.1:80 -L [::1]:53:[::1]:5353/udp", proxyproto.V2},
		{"-proxy-protocol v1 -L 8080:127.0.0.1:80", proxyproto.V1},
	} {
		c, err := parseArgs(strings.Fields(tt.args))
		if err != nil || c.ProxyProtocol != tt.want {
			t.Errorf("parseArgs(%s): %+v, %v; want ProxyProtocol %v", tt.args, c, err, tt.want)
		}
	}
}

// TestParseTransparent: -transparent in every form sets Transparent; with
// SCTP, as -proto or an -L suffix, it is an error naming both.
func TestParseTransparent(t *testing.T) {
	for _, args := range []string{
		"-proto tcp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 8080 -transparent",
		"-proto udp -host-ip 127.0.0.1 -host-port 0 -container-ip 10.0.0.2 -container-port 53 -transparent",
		"-transparent -L 8080:127.0.0.1:80 -L 53:127.0.0.1:53/udp",
	} {
		c, err := parseArgs(strings.Fields(args))
		if err != nil || !c.Transparent {
			t.Errorf("parseArgs(%s): %v, %v; want Transparent", args, c, err)
		}
	}
	c, err := parseArgs(strings.Fields("-L 8080:127.0.0.1:80"))
	if err != nil || c.Transparent {
		t.Errorf("without -transparent: %v, %v; want Transparent false", c, err)
	}
	for _, args := range []string{
		"-proto sctp -host-ip 127.0.0.1 -host-port 80 -container-ip 10.0.0.2 -container-port 80 -transparent",
		"-transparent -L 8080:127.0.0.1:80 -L 9090:127.0.0.1:90/sctp",
	} {
		_, err := parseArgs(strings.Fields(args))
		if err == nil || !strings.Contains(err.Error(), "-transparent") || !strings.Contains(err.Error(), "sctp") {
			t.Errorf("parseArgs(%s): %v, want an error naming -transparent and sctp", args, err)
		}
	}
}

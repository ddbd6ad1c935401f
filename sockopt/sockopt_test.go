package sockopt_test

import (
	"net/netip"
	"testing"

	"github.com/hostproxy/hostproxy/sockopt"
)

func TestParseProto(t *testing.T) {
	tests := []struct {
		in   string
		want sockopt.Proto
		ok   bool
	}{
		{"tcp", sockopt.TCP, true},
		{"udp", sockopt.UDP, true},
		{"sctp", sockopt.SCTP, true},
		{"TCP", sockopt.TCP, true},
		{"Udp", sockopt.UDP, true},
		{"", 0, false},
		{"tcp6", 0, false},
		{"icmp", 0, false},
		{" tcp", 0, false},
	}
	for _, tt := range tests {
		got, err := sockopt.ParseProto(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseProto(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestProtoString(t *testing.T) {
	tests := []struct {
		p      sockopt.Proto
		s      string
		stream bool
	}{
		{sockopt.TCP, "tcp", true},
		{sockopt.UDP, "udp", false},
		{sockopt.SCTP, "sctp", true},
		{0, "proto(0)", false},
		{42, "proto(42)", false},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.s {
			t.Errorf("Proto(%d).String() = %q, want %q", uint8(tt.p), got, tt.s)
		}
		if got := tt.p.Stream(); got != tt.stream {
			t.Errorf("%s.Stream() = %v, want %v", tt.p, got, tt.stream)
		}
		if tt.p >= sockopt.TCP && tt.p <= sockopt.SCTP {
			if back, err := sockopt.ParseProto(tt.s); err != nil || back != tt.p {
				t.Errorf("ParseProto(%q) = %v, %v; want %v", tt.s, back, err, tt.p)
			}
		}
	}
}

func TestInfoString(t *testing.T) {
	tests := []struct {
		info sockopt.Info
		want string
	}{
		{sockopt.Info{Proto: sockopt.TCP, Local: netip.MustParseAddrPort("0.0.0.0:80")}, "tcp socket on 0.0.0.0:80"},
		{sockopt.Info{Proto: sockopt.UDP, Local: netip.MustParseAddrPort("[::1]:53")}, "udp socket on [::1]:53"},
		{sockopt.Info{Family: 1, Type: 1}, "family 1 type 1 protocol 0 socket"},
	}
	for _, tt := range tests {
		if got := tt.info.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.info, got, tt.want)
		}
	}
}

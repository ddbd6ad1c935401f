package main

import (
	"slices"
	"testing"
)

func TestParsePorts(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    []uint16
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "53", want: []uint16{53}},
		{in: "8080,9000-9002", want: []uint16{8080, 9000, 9001, 9002}},
		{in: "65535-65535", want: []uint16{65535}},
		{in: "0", wantErr: true},
		{in: "65536", wantErr: true},
		{in: "9002-9000", wantErr: true},
		{in: "80,", wantErr: true},
		{in: "a-b", wantErr: true},
		{in: "1-2-3", wantErr: true},
	} {
		got, err := parsePorts(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parsePorts(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"53", "8080,9000-9099", "1-65535", "0", "9-1", ",", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := parsePorts(s)
		if err != nil {
			return
		}
		for _, p := range ports {
			if p == 0 {
				t.Fatalf("parsePorts(%q) returned port 0", s)
			}
		}
	})
}

package alloc_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hostproxy/hostproxy/alloc"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in   string
		want alloc.Range
		ok   bool
	}{
		{"8080", alloc.Range{First: 8080, Last: 8080}, true},
		{"0", alloc.Range{}, true},
		{"1", alloc.Range{First: 1, Last: 1}, true},
		{"65535", alloc.Range{First: 65535, Last: 65535}, true},
		{"8000-8100", alloc.Range{First: 8000, Last: 8100}, true},
		{"8000-8000", alloc.Range{First: 8000, Last: 8000}, true},
		{"1-65535", alloc.Range{First: 1, Last: 65535}, true},
		{"", alloc.Range{}, false},
		{"-", alloc.Range{}, false},
		{"8000-", alloc.Range{}, false},
		{"-8000", alloc.Range{}, false},
		{"8100-8000", alloc.Range{}, false},
		{"0-10", alloc.Range{}, false},
		{"65536", alloc.Range{}, false},
		{"1-65536", alloc.Range{}, false},
		{"99999999999999999999", alloc.Range{}, false},
		{"+80", alloc.Range{}, false},
		{" 80", alloc.Range{}, false},
		{"80 ", alloc.Range{}, false},
		{"0x50", alloc.Range{}, false},
		{"1-2-3", alloc.Range{}, false},
		{"80,81", alloc.Range{}, false},
	}
	for _, tt := range tests {
		got, err := alloc.ParseRange(tt.in)
		if !tt.ok {
			if !errors.Is(err, alloc.ErrInvalidRange) {
				t.Errorf("ParseRange(%q) = %v, %v; want an error wrapping ErrInvalidRange", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in   string
		want alloc.Range
		ok   bool
	}{
		{"32768\t60999\n", alloc.Range{First: 32768, Last: 60999}, true},
		{"1024 65535", alloc.Range{First: 1024, Last: 65535}, true},
		{"  1024 \t 1024 \n", alloc.Range{First: 1024, Last: 1024}, true},
		{"", alloc.Range{}, false},
		{"\n", alloc.Range{}, false},
		{"32768\n", alloc.Range{}, false},
		{"32768 60999 1\n", alloc.Range{}, false},
		{"60999 32768\n", alloc.Range{}, false},
		{"0 100\n", alloc.Range{}, false},
		{"1 65536\n", alloc.Range{}, false},
		{"a b\n", alloc.Range{}, false},
		{"32768-60999\n", alloc.Range{}, false},
		{"-1 5\n", alloc.Range{}, false},
	}
	for _, tt := range tests {
		got, err := alloc.ParsePortRange(tt.in)
		if !tt.ok {
			if !errors.Is(err, alloc.ErrInvalidRange) {
				t.Errorf("ParsePortRange(%q) = %v, %v; want an error wrapping ErrInvalidRange", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseReservedPorts(t *testing.T) {
	r := func(a, b uint16) alloc.Range { return alloc.Range{First: a, Last: b} }
	tests := []struct {
		in   string
		want []alloc.Range
		ok   bool
	}{
		{"", nil, true},
		{"\n", nil, true},
		{"  \n", nil, true},
		{"8080\n", []alloc.Range{r(8080, 8080)}, true},
		{"1000,2000-2100,8080\n", []alloc.Range{r(1000, 1000), r(2000, 2100), r(8080, 8080)}, true},
		{"1000, 2000 - 2100 ,\t8080", []alloc.Range{r(1000, 1000), r(2000, 2100), r(8080, 8080)}, true},
		{"0,65535", []alloc.Range{r(0, 0), r(65535, 65535)}, true},
		{"0-65535", []alloc.Range{r(0, 65535)}, true},
		{"5-5", []alloc.Range{r(5, 5)}, true},
		{",", nil, false},
		{"1000,", nil, false},
		{",1000", nil, false},
		{"1000,,2000", nil, false},
		{"2100-2000", nil, false},
		{"65536", nil, false},
		{"1-65536", nil, false},
		{"1-2-3", nil, false},
		{"-5", nil, false},
		{"5-", nil, false},
		{"abc", nil, false},
		{"1000;2000", nil, false},
		{"1000\n2000", nil, false},
		{"+5", nil, false},
	}
	for _, tt := range tests {
		got, err := alloc.ParseReservedPorts(tt.in)
		if !tt.ok {
			if !errors.Is(err, alloc.ErrInvalidRange) {
				t.Errorf("ParseReservedPorts(%q) = %v, %v; want an error wrapping ErrInvalidRange", tt.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseReservedPorts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestRangeMethods(t *testing.T) {
	tests := []struct {
		r    alloc.Range
		str  string
		n    int
		zero bool
	}{
		{alloc.Range{}, "0", 1, true},
		{alloc.Range{First: 80, Last: 80}, "80", 1, false},
		{alloc.Range{First: 8000, Last: 8100}, "8000-8100", 101, false},
		{alloc.Range{First: 1, Last: 65535}, "1-65535", 65535, false},
		{alloc.Range{First: 9, Last: 8}, "9-8", 0, false},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.str {
			t.Errorf("%#v.String() = %q, want %q", tt.r, got, tt.str)
		}
		if got := tt.r.Len(); got != tt.n {
			t.Errorf("%#v.Len() = %d, want %d", tt.r, got, tt.n)
		}
		if got := tt.r.IsZero(); got != tt.zero {
			t.Errorf("%#v.IsZero() = %v, want %v", tt.r, got, tt.zero)
		}
	}
	if r := (alloc.Range{First: 10, Last: 20}); !r.Contains(10) || !r.Contains(20) || r.Contains(9) || r.Contains(21) {
		t.Errorf("Contains is wrong at the ends of %s", r)
	}
}

// checkRange is what every successfully parsed range must satisfy.
func checkRange(t *testing.T, in string, r alloc.Range, allowZeroPort bool) {
	t.Helper()
	if r.First > r.Last {
		t.Fatalf("%q parsed to reversed range %#v", in, r)
	}
	if !allowZeroPort && r.First == 0 && !r.IsZero() {
		t.Fatalf("%q parsed to range %#v from port 0", in, r)
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"8080", "0", "8000-8100", "8100-8000", "0-1", "65536", "-", "1-2-3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := alloc.ParseRange(s)
		if err != nil {
			if !errors.Is(err, alloc.ErrInvalidRange) {
				t.Fatalf("ParseRange(%q): %v does not wrap ErrInvalidRange", s, err)
			}
			return
		}
		checkRange(t, s, r, false)
		// String is the canonical form and parses back to r.
		back, err := alloc.ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRange(%q) = %v; ParseRange(%q) = %v, %v", s, r, r.String(), back, err)
		}
	})
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"32768\t60999\n", "1024 65535", "60999 32768", "0 1", "1", "", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := alloc.ParsePortRange(s)
		if err != nil {
			if !errors.Is(err, alloc.ErrInvalidRange) {
				t.Fatalf("ParsePortRange(%q): %v does not wrap ErrInvalidRange", s, err)
			}
			return
		}
		if r.First == 0 || r.First > r.Last {
			t.Fatalf("ParsePortRange(%q) = %#v", s, r)
		}
		text := strconv.Itoa(int(r.First)) + "\t" + strconv.Itoa(int(r.Last)) + "\n"
		if back, err := alloc.ParsePortRange(text); err != nil || back != r {
			t.Fatalf("ParsePortRange(%q) = %v; ParsePortRange(%q) = %v, %v", s, r, text, back, err)
		}
	})
}

func FuzzParseReservedPorts(f *testing.F) {
	for _, s := range []string{"", "\n", "8080\n", "1000,2000-2100,8080\n", "1000, 2000 - 2100", "1,,2", "2-1", "65536", "0-65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := alloc.ParseReservedPorts(s)
		if err != nil {
			if !errors.Is(err, alloc.ErrInvalidRange) {
				t.Fatalf("ParseReservedPorts(%q): %v does not wrap ErrInvalidRange", s, err)
			}
			return
		}
		items := make([]string, len(rs))
		for i, r := range rs {
			checkRange(t, s, r, true)
			items[i] = strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
		}
		// The kernel's own output form parses back to the same list.
		text := strings.Join(items, ",") + "\n"
		back, err := alloc.ParseReservedPorts(text)
		if err != nil || !slices.Equal(back, rs) {
			t.Fatalf("ParseReservedPorts(%q) = %v; ParseReservedPorts(%q) = %v, %v", s, rs, text, back, err)
		}
		// A list that parses is usable as Config.Reserved.
		if _, err := alloc.New(alloc.Config{Ephemeral: alloc.Range{First: 1, Last: 2}, Reserved: rs}); err != nil {
			t.Fatalf("New with reserved %v: %v", rs, err)
		}
	})
}

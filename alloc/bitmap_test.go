package alloc

import "testing"

func TestFirstFree(t *testing.T) {
	full := new(bitmap)
	for p := range 1 << 16 {
		full.set(uint16(p))
	}
	except := func(ports ...uint16) *bitmap {
		b := new(bitmap)
		*b = *full
		for _, p := range ports {
			b.clear(p)
		}
		return b
	}
	tests := []struct {
		name   string
		sets   []*bitmap
		lo, hi uint16
		want   uint16
		ok     bool
	}{
		{"no sets", nil, 10, 20, 10, true},
		{"nil set", []*bitmap{nil}, 0, 0, 0, true},
		{"reversed", nil, 20, 10, 0, false},
		{"full", []*bitmap{full}, 0, 65535, 0, false},
		{"last port", []*bitmap{except(65535)}, 0, 65535, 65535, true},
		{"port 0", []*bitmap{except(0)}, 0, 65535, 0, true},
		{"word edge 63", []*bitmap{except(63)}, 1, 100, 63, true},
		{"word edge 64", []*bitmap{except(64)}, 1, 100, 64, true},
		{"below lo ignored", []*bitmap{except(5)}, 6, 100, 0, false},
		{"above hi ignored", []*bitmap{except(101)}, 6, 100, 0, false},
		{"lo equals hi", []*bitmap{except(77)}, 77, 77, 77, true},
		{"union of sets", []*bitmap{except(300, 400), except(400, 500)}, 0, 65535, 400, true},
		{"lowest wins", []*bitmap{except(1000, 70, 65000)}, 0, 65535, 70, true},
	}
	for _, tt := range tests {
		got, ok := firstFree(tt.sets, tt.lo, tt.hi)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: firstFree(%d, %d) = %d, %v; want %d, %v", tt.name, tt.lo, tt.hi, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBitmapCount(t *testing.T) {
	var b bitmap
	if !b.set(5) || b.set(5) || b.n != 1 || !b.has(5) {
		t.Fatalf("set twice: n = %d", b.n)
	}
	if !b.clear(5) || b.clear(5) || b.n != 0 || b.has(5) {
		t.Fatalf("clear twice: n = %d", b.n)
	}
}

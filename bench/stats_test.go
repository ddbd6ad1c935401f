package main

import (
	"math"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, nan},
		{[]float64{nan}, nan},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, nan, 1, 3}, 3},
		{[]float64{-1, -1, 7}, -1},
	} {
		in := append([]float64(nil), tc.in...)
		got := median(in)
		if !(got == tc.want || math.IsNaN(got) && math.IsNaN(tc.want)) {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if !(in[i] == tc.in[i] || math.IsNaN(in[i]) && math.IsNaN(tc.in[i])) {
				t.Errorf("median(%v) modified its input to %v", tc.in, in)
				break
			}
		}
	}
}

func TestPercentile(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i))
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{7}, 99, 7},
		{[]time.Duration{1, 2}, 50, 1},
		{[]time.Duration{1, 2, 3}, 50, 2},
		{hundred, 50, 50},
		{hundred, 99, 99},
		{hundred, 100, 100},
		{hundred, 0.001, 1},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tc.in), tc.p, got, tc.want)
		}
	}
}

func TestRatioAndAdvantage(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		v, base float64
		higher  bool
		ratio   float64
		adv     float64
	}{
		{2, 1, true, 2, 2},
		{2, 1, false, 2, 0.5},
		{1, 4, false, 0.25, 4},
		{1, 0, true, nan, nan},
		{nan, 1, true, nan, nan},
		{1, nan, false, nan, nan},
		{0, 5, false, 0, math.Inf(1)},
	} {
		r := ratio(tc.v, tc.base)
		if !(r == tc.ratio || math.IsNaN(r) && math.IsNaN(tc.ratio)) {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.v, tc.base, r, tc.ratio)
		}
		a := advantage(r, tc.higher)
		if !(a == tc.adv || math.IsNaN(a) && math.IsNaN(tc.adv)) {
			t.Errorf("advantage(%v, %v) = %v, want %v", r, tc.higher, a, tc.adv)
		}
	}
}

func TestFormatNum(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{math.NaN(), "-"},
		{math.Inf(1), "inf"},
		{0, "0"},
		{0.012345, "0.0123"},
		{0.5, "0.5"},
		{1.234, "1.23"},
		{12.34, "12.3"},
		{123.4, "123"},
		{100, "100"},
		{3, "3"},
		{9999, "9999"},
		{12345, "12.3k"},
		{123456, "123k"},
		{1234567, "1.23M"},
		{-12.34, "-12.3"},
	} {
		if got := formatNum(tc.in); got != tc.want {
			t.Errorf("formatNum(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := formatRatio(1.5, true); got != "1.50x" {
		t.Errorf("formatRatio(1.5) = %q", got)
	}
	if got := formatRatio(1.5, false); got != "-" {
		t.Errorf("formatRatio(missing) = %q", got)
	}
}

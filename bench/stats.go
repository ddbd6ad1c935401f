package main

import (
	"math"
	"slices"
	"time"
)

// median returns the median of xs, the mean of the two middle values when
// len(xs) is even, and NaN for an empty slice. NaN inputs are ignored. xs is
// not modified.
func median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method, or 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// ratio returns v/base, or NaN when either is missing (NaN) or base is 0.
func ratio(v, base float64) float64 {
	if math.IsNaN(v) || math.IsNaN(base) || base == 0 {
		return math.NaN()
	}
	return v / base
}

// advantage turns a ratio into "how many times better": the ratio itself
// when higher is better, its inverse when lower is better. NaN stays NaN.
func advantage(r float64, higherBetter bool) float64 {
	if math.IsNaN(r) || higherBetter {
		return r
	}
	if r == 0 {
		return math.Inf(1)
	}
	return 1 / r
}

package alloc

import "math/bits"

// bitmap is a set of ports: bit p of the 65536 is set when port p is in it.
type bitmap struct {
	w [1 << 16 / 64]uint64
	n int // number of bits set
}

func (b *bitmap) has(p uint16) bool { return b.w[p>>6]&(1<<(p&63)) != 0 }

// set adds p and reports whether it was absent.
func (b *bitmap) set(p uint16) bool {
	m := uint64(1) << (p & 63)
	if b.w[p>>6]&m != 0 {
		return false
	}
	b.w[p>>6] |= m
	b.n++
	return true
}

// clear removes p and reports whether it was present.
func (b *bitmap) clear(p uint16) bool {
	m := uint64(1) << (p & 63)
	if b.w[p>>6]&m == 0 {
		return false
	}
	b.w[p>>6] &^= m
	b.n--
	return true
}

// firstFree returns the lowest port in [lo, hi] that is in none of sets,
// looking at 64 ports per step. Nil entries in sets are empty sets.
func firstFree(sets []*bitmap, lo, hi uint16) (uint16, bool) {
	if lo > hi {
		return 0, false
	}
	for w := int(lo >> 6); w <= int(hi>>6); w++ {
		var used uint64
		for _, s := range sets {
			if s != nil {
				used |= s.w[w]
			}
		}
		free := ^used
		if w == int(lo>>6) {
			free &= ^uint64(0) << (lo & 63) // drop ports below lo
		}
		if w == int(hi>>6) {
			free &= ^uint64(0) >> (63 - hi&63) // drop ports above hi
		}
		if free != 0 {
			return uint16(w<<6 + bits.TrailingZeros64(free)), true
		}
	}
	return 0, false
}

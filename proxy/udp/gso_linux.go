package udp

// group is a run of datagrams sent by one sendmsg: count datagrams from
// index first, all of size seg but the last, which may be shorter.
type group struct{ first, count, seg int }

// planGroups splits datagrams of the given sizes, each going to the
// destination of flows[i], into sends. Without gso each datagram is a send
// of its own; with it, consecutive datagrams of one flow and one size (the
// last of a run may be shorter) share a send, within the kernel's limits.
func planGroups(dst []group, sizes []int, flows []*flow, gso bool) []group {
	dst = dst[:0]
	for i := 0; i < len(sizes); {
		g := group{first: i, count: 1, seg: sizes[i]}
		if gso && g.seg > 0 && g.seg <= gsoMaxSegment {
			total := g.seg
			for j := i + 1; j < len(sizes) && g.count < gsoMaxSegments; j++ {
				s := sizes[j]
				if flows[j] != flows[i] || s == 0 || s > g.seg || total+s > gsoMaxBytes {
					break
				}
				g.count++
				total += s
				if s < g.seg {
					break // only the last segment may be short
				}
			}
		}
		dst = append(dst, g)
		i += g.count
	}
	return dst
}

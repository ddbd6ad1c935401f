package alloc_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/sockopt"
)

// BenchmarkAllocate reserves and releases one port of the ephemeral range
// (the Linux default, 28232 ports) with 0%, 50% and 99% of it already
// allocated at random positions, on one address and on three.
func BenchmarkAllocate(b *testing.B) {
	for _, ips := range [][]netip.Addr{
		addrs("127.0.0.1"),
		addrs("127.0.0.1", "127.0.0.2", "::1"),
	} {
		for _, pct := range []int{0, 50, 99} {
			b.Run(fmt.Sprintf("addrs=%d/fill=%d%%", len(ips), pct), func(b *testing.B) {
				a := newAllocator(b, alloc.DefaultEphemeral)
				eph := a.Ephemeral()
				ports := make([]uint16, 0, eph.Len())
				for p := int(eph.First); p <= int(eph.Last); p++ {
					ports = append(ports, uint16(p))
				}
				rng := rand.New(rand.NewPCG(1, uint64(pct)))
				rng.Shuffle(len(ports), func(i, j int) { ports[i], ports[j] = ports[j], ports[i] })
				for _, p := range ports[:len(ports)*pct/100] {
					// The held ports are spread over the addresses, and
					// the wildcard holds some, as on a busy host.
					ip := ips[int(p)%len(ips)]
					if p%7 == 0 {
						ip = netip.IPv4Unspecified()
					}
					if _, err := a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: []netip.Addr{ip}, Range: alloc.Range{First: p, Last: p}}); err != nil {
						b.Fatal(err)
					}
				}
				req := alloc.Request{Proto: sockopt.TCP, Addrs: ips}
				b.ReportAllocs()
				for b.Loop() {
					p, err := a.Reserve(req)
					if err != nil {
						b.Fatal(err)
					}
					a.Release(sockopt.TCP, ips, p)
				}
			})
		}
	}
}

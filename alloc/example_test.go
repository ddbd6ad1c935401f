package alloc_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/sockopt"
)

func ExampleAllocator_Reserve() {
	a, err := alloc.New(alloc.Config{
		Ephemeral: alloc.Range{First: 40000, Last: 40009},
		Reserved:  []alloc.Range{{First: 40000, Last: 40000}},
	})
	if err != nil {
		panic(err)
	}
	both := []netip.Addr{netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::")}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}

	// Port 0: the ephemeral range, skipping the reserved 40000.
	p, _ := a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: both})
	fmt.Println("ephemeral:", p)

	// 0.0.0.0 holds the port for every IPv4 address.
	_, err = a.Reserve(alloc.Request{Proto: sockopt.TCP, Addrs: lo, Range: alloc.Range{First: p, Last: p}})
	var already alloc.AlreadyAllocatedError
	fmt.Println(errors.As(err, &already), err)

	// A range starts after the port last handed out in it.
	r, _ := alloc.ParseRange("8000-8002")
	for range 4 {
		p, err := a.Reserve(alloc.Request{Proto: sockopt.UDP, Addrs: lo, Range: r})
		fmt.Println(p, err)
	}
	// Output:
	// ephemeral: 40001
	// true port 40001/tcp is already allocated on 127.0.0.1
	// 8000 <nil>
	// 8001 <nil>
	// 8002 <nil>
	// 0 udp port in 8000-8002 on 127.0.0.1: all ports are allocated
}

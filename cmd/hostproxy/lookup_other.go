//go:build !linux

package main

import (
	"context"
	"net"
	"net/netip"
)

// lookupHost returns the addresses of name from net's resolver.
func lookupHost(ctx context.Context, name string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
}

// Package e2e holds the end-to-end suites of hostproxy; it has no code of its
// own outside its tests.
//
// TestDockerd starts a real dockerd (Debian's docker.io, 20.10) inside a
// network namespace of its own, once with docker-proxy and once with
// hostproxy as --userland-proxy-path, publishes ports of a container built
// from a static echo server (internal/echoserver), relays TCP and UDP
// through them and compares the cost of the two proxies.
//
// TestAllocationNAT plays an engine that lets hostproxy allocate: three
// network namespaces (client, host, container) joined by veth pairs,
// hostproxy started with -await-nat, nftables DNAT rules, SIGUSR1.
//
// Both need root, iproute2 and nftables (and docker.io for TestDockerd); they
// skip without them, or fail under HOSTPROXY_STRICT=1. Set
// HOSTPROXY_E2E_SKIP_DOCKERD=1 to skip the slower dockerd suite locally.
package e2e

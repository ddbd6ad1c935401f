package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/hostproxy/hostproxy/alloc"
	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

// startAllocate binds through the allocator: one port on every -host-ip, or
// every port of the range with -container-port C-D. It returns the text that
// follows "0\n" on fd 3.
func startAllocate(cfg *config, log *logging.Logger) (*server, string, error) {
	a, err := alloc.New(alloc.Config{})
	if err != nil {
		return nil, "", fmt.Errorf("port allocator: %w", err)
	}
	req := alloc.Request{
		Proto: cfg.Proto,
		Addrs: cfg.HostIPs,
		Range: cfg.HostPorts,
	}
	opts := sockopt.Options{DropAll: cfg.AwaitNAT}
	var bindings []*alloc.Binding
	if cfg.ContainerPort.First == cfg.ContainerPort.Last {
		b, err := a.Bind(req, opts)
		if err != nil {
			return nil, "", fmt.Errorf("allocate a %s port on %s: %w", cfg.Proto, addrList(cfg.HostIPs), err)
		}
		bindings = []*alloc.Binding{b}
	} else {
		if bindings, err = a.BindEach(req, opts); err != nil {
			return nil, "", fmt.Errorf("bind %s ports %s on %s: %w", cfg.Proto, cfg.HostPorts, addrList(cfg.HostIPs), err)
		}
	}
	s := &server{cfg: cfg, log: log}
	fail := func(err error) (*server, string, error) {
		for _, b := range bindings {
			b.Close()
		}
		s.closeAll()
		return nil, "", err
	}
	g := newGroup(cfg.Proto, len(bindings)*len(cfg.HostIPs))
	for _, b := range bindings {
		for i, f := range b.Files {
			g.add(f, netip.AddrPortFrom(cfg.HostIPs[i], b.Port), cfg.Backend(b.Port))
		}
	}
	if err := s.addGroup(g); err != nil {
		return fail(err)
	}
	if cfg.AwaitNAT {
		s.filtered = bindings
	} else {
		for _, b := range bindings {
			b.Close() // the proxies hold their own descriptors
		}
	}
	if len(bindings) == 1 {
		return s, fmt.Sprintf("%d\n", bindings[0].Port), nil
	}
	return s, fmt.Sprintf("%d-%d\n", bindings[0].Port, bindings[len(bindings)-1].Port), nil
}

func addrList(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

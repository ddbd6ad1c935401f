package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

// resolveTimeout bounds resolving the -L target host names at start.
const resolveTimeout = 10 * time.Second

// loopbacks are where a -L mapping without BIND listens, as with ssh.
var loopbacks = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}

// startForwarder binds every -L mapping. It fails whole: one mapping that
// cannot start closes the others. The sockets of all the mappings of one
// protocol are served together, as one range (see addGroup): 100 -L flags
// cost what one -L of 100 ports does, one proxy per protocol.
func startForwarder(cfg *config, log *logging.Logger, sm *serviceManager) (*server, error) {
	s := &server{cfg: cfg, log: log}
	var groups []group // one per protocol, in the order of the first -L of each
	defer func() {
		for _, g := range groups {
			for _, f := range g.files {
				f.Close() // the proxies have their own descriptors
			}
		}
	}()
	for _, fw := range cfg.Forwards {
		i := slices.IndexFunc(groups, func(g group) bool { return g.proto == fw.Proto })
		if i < 0 {
			groups = append(groups, newGroup(fw.Proto, forwardSockets(cfg.Forwards, fw.Proto)))
			i = len(groups) - 1
		}
		if err := listenForward(fw, &groups[i], sm); err != nil {
			s.closeAll()
			return nil, err
		}
	}
	for _, g := range groups {
		if err := s.addGroup(g); err != nil {
			s.closeAll()
			return nil, fmt.Errorf("-L %s: %w", g.proto, err)
		}
	}
	return s, nil
}

// forwardSockets is an upper bound of the sockets the -L mappings of proto
// listen on.
func forwardSockets(fws []forward, proto sockopt.Proto) int {
	n := 0
	for _, fw := range fws {
		if fw.Proto == proto {
			if fw.Bind.IsValid() {
				n += fw.Ports.Len()
			} else {
				n += fw.Ports.Len() * len(loopbacks)
			}
		}
	}
	return n
}

// listenForward binds the sockets of fw (or takes those systemd passed) and
// adds them to g.
func listenForward(fw forward, g *group, sm *serviceManager) error {
	target, err := resolve(fw.Target)
	if err != nil {
		return fmt.Errorf("-L %s: %w", fw, err)
	}
	binds, implicit := []netip.Addr{fw.Bind}, false
	if !fw.Bind.IsValid() {
		binds, implicit = loopbacks, true
	}
	for i := 0; i < fw.Ports.Len(); i++ {
		backend := netip.AddrPortFrom(target, fw.TPorts.First+uint16(i))
		listened := 0
		for _, b := range binds {
			host := netip.AddrPortFrom(b, fw.Ports.First+uint16(i))
			f, err := sm.listen(fw.Proto, host)
			if err != nil {
				if implicit && b.Is6() && noIPv6(err) {
					continue // a host without ::1 serves 127.0.0.1 only
				}
				return fmt.Errorf("-L %s: %w", fw, err)
			}
			listened++
			g.add(f, host, backend)
		}
		if listened == 0 {
			return fmt.Errorf("-L %s: no address to listen on", fw)
		}
	}
	return nil
}

// resolve returns host's address: the literal itself, or the first IPv4
// address of a name (else its first IPv6 address), looked up once.
func resolve(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := lookupHost(ctx, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: no address", host)
	}
	return addrs[0], nil
}

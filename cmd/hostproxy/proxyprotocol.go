package main

import (
	"errors"
	"fmt"

	"github.com/hostproxy/hostproxy/proxy/proxyproto"
	"github.com/hostproxy/hostproxy/sockopt"
)

// setProxyProtocol validates -proxy-protocol (given says it was on the
// command line) against the protocols of the mappings. It applies to every
// mapping of the process: TCP takes v1 or v2, UDP v2 only (v1 has no UDP
// form), and SCTP none (the specification has no SCTP form).
func (c *config) setProxyProtocol(s string, given bool) error {
	if !given {
		return nil
	}
	if s == "" {
		return errors.New("-proxy-protocol: empty version (want v1 or v2)")
	}
	v, err := proxyproto.ParseVersion(s)
	if err != nil {
		return fmt.Errorf("-proxy-protocol: %w", err)
	}
	check := func(p sockopt.Proto, what string) error {
		switch {
		case p == sockopt.SCTP:
			return fmt.Errorf("-proxy-protocol %s: no PROXY header for SCTP (%s)", v, what)
		case p == sockopt.UDP && v != proxyproto.V2:
			return fmt.Errorf("-proxy-protocol %s: UDP takes v2 only (%s)", v, what)
		}
		return nil
	}
	if c.Mode == modeForwarder {
		for _, fw := range c.Forwards {
			if err := check(fw.Proto, "-L "+fw.String()); err != nil {
				return err
			}
		}
	} else if err := check(c.Proto, "-proto "+c.Proto.String()); err != nil {
		return err
	}
	c.ProxyProtocol = v
	return nil
}

package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/hostproxy/hostproxy/logging"
	"github.com/hostproxy/hostproxy/sockopt"
)

// startCompat is docker-proxy's form: one mapping on the engine's socket
// (fd 4) or on a socket hostproxy binds without a filter.
func startCompat(cfg *config, log *logging.Logger, fd4 fdState) (*server, error) {
	s := &server{cfg: cfg, log: log}
	host := netip.AddrPortFrom(cfg.HostIPs[0], cfg.HostPorts.First)
	var f *os.File
	if cfg.UseListenFD {
		var err error
		if f, err = listenFile(cfg, fd4); err != nil {
			return nil, err
		}
	} else {
		var err error
		if f, err = sockopt.Listen(cfg.Proto, host, sockopt.Options{}); err != nil {
			return nil, err
		}
	}
	defer f.Close()
	if err := s.add(f, cfg.Proto, host, cfg.Backend(host.Port())); err != nil {
		return nil, err
	}
	return s, nil
}

// listenFile returns fd 4 after checking that it is a socket of -proto, of
// -host-ip's address family, and listening for TCP and SCTP.
func listenFile(cfg *config, fd4 fdState) (*os.File, error) {
	if !fd4.Open {
		return nil, errors.New("-use-listen-fd: fd 4 is not open (the engine passes the host socket there)")
	}
	f := os.NewFile(listenFD, "fd 4")
	info, err := sockopt.Inspect(f)
	if err != nil {
		f.Close()
		if notSocket(err) {
			return nil, fmt.Errorf("-use-listen-fd: fd 4 is not a socket: %w", err)
		}
		return nil, fmt.Errorf("-use-listen-fd: fd 4: %w", err)
	}
	fail := func(format string, args ...any) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("-use-listen-fd: "+format, args...)
	}
	if info.Proto != cfg.Proto {
		return fail("fd 4 (%s) does not match -proto %s", info, cfg.Proto)
	}
	if cfg.Proto.Stream() && !info.Listening {
		return fail("fd 4 (%s) is not listening", info)
	}
	want, got := family(cfg.HostIPs[0]), family(info.Local.Addr())
	if want != got {
		return fail("fd 4 is an %s socket (%s) but -host-ip %s is %s", got, info, cfg.HostIPs[0], want)
	}
	return f, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

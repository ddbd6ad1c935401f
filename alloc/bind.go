package alloc

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/hostproxy/hostproxy/sockopt"
)

// MaxAttempts is how many ports Bind tries when the OS says they are in use.
const MaxAttempts = 10

// A Binding is a reserved port with a socket bound to it on every requested
// address.
type Binding struct {
	Proto sockopt.Proto
	Port  uint16
	Files []*os.File   // one per requested address, same order
	Addrs []netip.Addr // the requested addresses, same order as Files

	a    *Allocator
	once sync.Once
}

// Close closes the files and releases the port. Files the caller already
// closed are skipped. It is safe to call more than once; later calls do
// nothing and return nil.
func (b *Binding) Close() error {
	var err error
	b.once.Do(func() {
		var errs []error
		for _, f := range b.Files {
			if cerr := f.Close(); cerr != nil && !errors.Is(cerr, os.ErrClosed) {
				errs = append(errs, fmt.Errorf("close %s: %w", f.Name(), cerr))
			}
		}
		if b.a != nil {
			b.a.Release(b.Proto, b.Addrs, b.Port)
		}
		err = errors.Join(errs...)
	})
	return err
}

// Bind reserves a port for req and binds a socket of req.Proto on it on every
// address of req.Addrs with sockopt.Listen and opts (stream sockets listen).
//
// When the OS reports a port in use (EADDRINUSE, held by a socket this
// Allocator does not know of), Bind closes what it opened, releases the port
// and tries another one of the range, at most MaxAttempts ports in all; the
// error after the last attempt wraps syscall.EADDRINUSE. An explicit port
// (Range.First == Last) is tried once: its error is an AlreadyAllocatedError
// when this Allocator holds it, and wraps the OS error otherwise. A range with
// no free port left fails with an error wrapping ErrAllPortsAllocated. On
// every failure no socket stays open and no port stays reserved.
func (a *Allocator) Bind(req Request, opts sockopt.Options) (*Binding, error) {
	if err := check(req); err != nil {
		return nil, err
	}
	explicit := !req.Range.IsZero() && req.Range.First == req.Range.Last

	// Ports the OS refused stay reserved until Bind returns, so that the
	// next attempts skip them.
	var refused []uint16
	defer func() {
		for _, p := range refused {
			a.Release(req.Proto, req.Addrs, p)
		}
	}()
	var lastErr error
	for range MaxAttempts {
		port, err := a.Reserve(req)
		if err != nil {
			if lastErr != nil {
				return nil, fmt.Errorf("%w (last port tried: %w)", err, lastErr)
			}
			return nil, err
		}
		files, err := listenAll(req.Proto, req.Addrs, port, opts)
		if err == nil {
			return &Binding{Proto: req.Proto, Port: port, Files: files, Addrs: slices.Clone(req.Addrs), a: a}, nil
		}
		if explicit || !errors.Is(err, syscall.EADDRINUSE) {
			a.Release(req.Proto, req.Addrs, port)
			return nil, err
		}
		refused = append(refused, port)
		lastErr = err
	}
	return nil, fmt.Errorf("%s port in %s on %s: %d ports in use by other sockets, giving up: %w",
		req.Proto, a.rangeOf(req), addrList(req.Addrs), MaxAttempts, lastErr)
}

// BindEach binds every port of req.Range (which must not be zero) as Bind
// does for one explicit port, and returns one Binding per port in order. It
// is all or nothing: on failure every socket it opened is closed and every
// port released.
func (a *Allocator) BindEach(req Request, opts sockopt.Options) ([]*Binding, error) {
	if err := check(req); err != nil {
		return nil, err
	}
	if req.Range.IsZero() {
		return nil, fmt.Errorf("%w: BindEach needs an explicit range, not the ephemeral one", ErrInvalidRange)
	}
	r := req.Range

	// Reserve the whole range first, atomically.
	a.mu.Lock()
	for p := int(r.First); p <= int(r.Last); p++ {
		one := req
		one.Range = Range{uint16(p), uint16(p)}
		if _, err := a.reserveLocked(one); err != nil {
			for q := int(r.First); q < p; q++ {
				for _, ip := range req.Addrs {
					a.releaseLocked(req.Proto, normalize(ip), uint16(q))
				}
			}
			a.mu.Unlock()
			return nil, err
		}
	}
	a.mu.Unlock()

	out := make([]*Binding, 0, r.Len())
	addrs := slices.Clone(req.Addrs)
	for p := int(r.First); p <= int(r.Last); p++ {
		files, err := listenAll(req.Proto, addrs, uint16(p), opts)
		if err != nil {
			for _, b := range out {
				b.Close()
			}
			for q := p; q <= int(r.Last); q++ {
				a.Release(req.Proto, addrs, uint16(q))
			}
			return nil, fmt.Errorf("bind each port of %s/%s: %w", r, req.Proto, err)
		}
		out = append(out, &Binding{Proto: req.Proto, Port: uint16(p), Files: files, Addrs: addrs, a: a})
	}
	return out, nil
}

func (a *Allocator) rangeOf(req Request) Range {
	if req.Range.IsZero() {
		return a.ephemeral
	}
	return req.Range
}

// listenAll binds port on every address, or none.
func listenAll(proto sockopt.Proto, addrs []netip.Addr, port uint16, opts sockopt.Options) ([]*os.File, error) {
	files := make([]*os.File, 0, len(addrs))
	for _, ip := range addrs {
		f, err := sockopt.Listen(proto, netip.AddrPortFrom(ip, port), opts)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

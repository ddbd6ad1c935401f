package tcp

import (
	"context"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"

	"github.com/hostproxy/hostproxy/internal/proxytest"
	"github.com/hostproxy/hostproxy/proxy"
)

// TestContract runs the lifecycle contract of proxy.Proxy on a proxy of one
// socket (New) and on a range of two (NewRange), each relayed to an echo
// backend.
func TestContract(t *testing.T) {
	t.Run("New", func(t *testing.T) {
		proxytest.Contract(t, proxytest.Harness{New: func(t *testing.T) proxytest.Instance {
			_, be := newBackend(t, echo)
			files, addrs := listenFiles(t, 1)
			p, err := New(files[0], Config{Backend: be})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			addr := addrs[0].String()
			return proxytest.Instance{Proxy: p, Dial: func(ctx context.Context) (proxytest.Client, error) {
				return proxytest.DialConn(ctx, "tcp", addr)
			}}
		}})
	})
	t.Run("NewRange", func(t *testing.T) {
		proxytest.Contract(t, proxytest.Harness{New: func(t *testing.T) proxytest.Instance {
			_, be1 := newBackend(t, echo)
			_, be2 := newBackend(t, echo)
			files, addrs := listenFiles(t, 2)
			p, err := NewRange([]Mapping{{files[0], be1}, {files[1], be2}}, Config{})
			if err != nil {
				t.Fatalf("NewRange: %v", err)
			}
			var n atomic.Int64
			return proxytest.Instance{Proxy: p, Dial: func(ctx context.Context) (proxytest.Client, error) {
				return proxytest.DialConn(ctx, "tcp", addrs[n.Add(1)%2].String()) // alternate between the sockets
			}}
		}})
	})
}

// TestMappings runs the contract of Add and Remove (proxytest.Mappings) on a
// proxy made by New, which Add turns into a range.
func TestMappings(t *testing.T) {
	proxytest.Mappings(t, proxytest.MappingsHarness{
		New: func(t *testing.T) (proxytest.Mapper, netip.AddrPort) {
			_, be := newBackend(t, echo)
			files, addrs := listenFiles(t, 1)
			p, err := New(files[0], Config{Backend: be})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return p, addrs[0]
		},
		Socket: func(t *testing.T) (*os.File, netip.AddrPort) {
			files, addrs := listenFiles(t, 1)
			return files[0], addrs[0]
		},
		Add: func(t *testing.T, p proxytest.Mapper, f *os.File) error {
			_, be := newBackend(t, echo)
			return p.(*Proxy).Add(Mapping{File: f, Backend: be})
		},
		Dial: func(ctx context.Context, addr netip.AddrPort) (proxytest.Client, error) {
			return proxytest.DialConn(ctx, "tcp", addr.String())
		},
		Listed: func(p proxytest.Mapper) []netip.AddrPort {
			var l []netip.AddrPort
			p.(*Proxy).EachMapping(func(listen, _ netip.AddrPort, _ *proxy.StreamCounters) { l = append(l, listen) })
			return l
		},
		Stream: true,
	})
}

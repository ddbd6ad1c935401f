package udp

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/proxytest"
	"github.com/hostproxy/hostproxy/sockopt"
)

// contractIdle is the flows' idle timeout in the contract tests: how long a
// client's flow outlives its last datagram, which Shutdown waits for.
const contractIdle = time.Second

func TestContract(t *testing.T) {
	proxytest.Contract(t, proxytest.Harness{
		Linger: contractIdle,
		New: func(t *testing.T) proxytest.Instance {
			p, err := New(hostSocket(t, "127.0.0.1:0"), Config{
				Backend:     echoBackend(t, "127.0.0.1:0"),
				IdleTimeout: contractIdle,
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			addr := p.Addr().String()
			return proxytest.Instance{Proxy: p, Dial: func(ctx context.Context) (proxytest.Client, error) {
				return proxytest.DialConn(ctx, "udp", addr)
			}}
		},
	})
}

func TestRangeContract(t *testing.T) {
	proxytest.Contract(t, proxytest.Harness{
		Linger: contractIdle,
		New: func(t *testing.T) proxytest.Instance {
			ms := []Mapping{
				{File: hostSocket(t, "127.0.0.1:0"), Backend: echoBackend(t, "127.0.0.1:0")},
				{File: hostSocket(t, "127.0.0.1:0"), Backend: echoBackend(t, "127.0.0.1:0")},
			}
			r, err := NewRange(ms, Config{IdleTimeout: contractIdle})
			if err != nil {
				t.Fatalf("NewRange: %v", err)
			}
			addrs := []string{r.l.members[0].laddr.String(), r.l.members[1].laddr.String()}
			var n int
			return proxytest.Instance{Proxy: r, Dial: func(ctx context.Context) (proxytest.Client, error) {
				n++ // alternate between the range's sockets
				return proxytest.DialConn(ctx, "udp", addrs[n%2])
			}}
		},
	})
}

// TestMappings runs the contract of Add and Remove (proxytest.Mappings) on
// a Range.
func TestMappings(t *testing.T) {
	socket := func(t *testing.T) (*os.File, netip.AddrPort) {
		f := hostSocket(t, "127.0.0.1:0")
		info, err := sockopt.Inspect(f)
		if err != nil {
			t.Fatal(err)
		}
		return f, info.Local
	}
	proxytest.Mappings(t, proxytest.MappingsHarness{
		New: func(t *testing.T) (proxytest.Mapper, netip.AddrPort) {
			f, addr := socket(t)
			r, err := NewRange([]Mapping{{File: f, Backend: echoBackend(t, "127.0.0.1:0")}}, Config{})
			if err != nil {
				t.Fatalf("NewRange: %v", err)
			}
			return r, addr
		},
		Socket: socket,
		Add: func(t *testing.T, p proxytest.Mapper, f *os.File) error {
			return p.(*Range).Add(Mapping{File: f, Backend: echoBackend(t, "127.0.0.1:0")})
		},
		Dial: func(ctx context.Context, addr netip.AddrPort) (proxytest.Client, error) {
			return proxytest.DialConn(ctx, "udp", addr.String())
		},
		Listed: func(p proxytest.Mapper) []netip.AddrPort {
			var l []netip.AddrPort
			p.(*Range).EachMapping(func(listen, _ netip.AddrPort, _ Stats) { l = append(l, listen) })
			return l
		},
	})
}

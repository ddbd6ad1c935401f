package tcp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/proxy"
)

// TestSmallWritesBackpressure sends small paced writes toward a backend that
// does not read until the client has written more than its socket buffers,
// so that writes through the loop's buffer are cut short and the rest waits
// in a pipe; then the backend reads everything. The bytes arrive in order
// and counted, whichever path (buffer, pipe, splice) each took.
func TestSmallWritesBackpressure(t *testing.T) {
	const (
		size  = 64 << 20 // the most that is sent before the backend reads
		chunk = 3000
	)
	be, conns := newHandOver(t)
	p, addr := startProxy(t, Config{Backend: be})
	c := dial(t, addr)
	sent := sha256.New()
	var written int64
	stalled := make(chan struct{}) // closed when a client write blocked
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		src := rand.NewChaCha8([32]byte{7, 8, 9})
		buf := make([]byte, chunk)
		blocked := false
		for written < size && !blocked {
			src.Read(buf)
			sent.Write(buf)
			// A write that does not finish in a second has met the
			// backpressure of every buffer on the way.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := c.Write(buf)
			written += int64(n)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				blocked = true
				close(stalled)
				c.SetWriteDeadline(time.Now().Add(60 * time.Second))
				n, err = c.Write(buf[n:])
				written += int64(n)
			}
			if err != nil {
				errc <- err
				return
			}
			// Paced, so that the proxy reads most messages one by one
			// (through its buffer) rather than in bulk.
			time.Sleep(10 * time.Microsecond)
		}
		if !blocked {
			errc <- fmt.Errorf("%d bytes written and no write blocked with the backend not reading", written)
			return
		}
		errc <- c.CloseWrite()
	}()
	b := accepted(t, conns)
	b.SetDeadline(time.Now().Add(60 * time.Second))
	select {
	case <-stalled:
	case err := <-errc:
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, b)
	if err != nil {
		t.Fatalf("backend read after %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client write: %v", err)
	}
	if n != written || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("backend read %d bytes (same SHA-256: %v), want the %d sent", n, bytes.Equal(got.Sum(nil), sent.Sum(nil)), written)
	}
	var st proxy.StreamSnapshot
	p.EachMapping(func(_, _ netip.AddrPort, c *proxy.StreamCounters) { st = c.Snapshot() })
	if st.BytesUp != uint64(written) {
		t.Errorf("counted %d bytes up, want %d", st.BytesUp, written)
	}
}

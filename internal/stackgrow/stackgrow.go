// Package stackgrow grows the main goroutine's stack before the standard
// library's packages are initialized.
//
// A goroutine's stack starts at 2 KiB and is copied to one twice the size
// (or more) when a call needs more room; the copy reads the metadata
// (.gopclntab) of every frame on the stack, and the kernel maps the 64 KiB
// of the binary around each read, which then stays resident. Left alone,
// the main goroutine's first copy happens inside internal/godebug's init,
// whose metadata fall in a window that nothing else reads or not depending
// on the layout of the whole binary (docs/performance.md). Go initializes
// packages in import path order among those whose imports are done, so
// this package, which imports nothing, is initialized before every
// package of the standard library but the runtime: its init grows the
// stack once, to 16 KiB, while only the runtime's frames are below it. The
// set-up never needs more, so no other copy happens before hostproxy is
// idle.
package stackgrow

func init() { grow(0) }

// grow has a frame of 8 KiB, so calling it makes the runtime copy the
// stack to one with room for it: 16 KiB.
//
//go:noinline
func grow(i int) byte {
	var b [8 << 10]byte
	b[i%len(b)] = 1
	return b[(i+1)%len(b)]
}

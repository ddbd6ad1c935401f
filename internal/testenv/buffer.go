package testenv

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that a test can read (String) while another
// goroutine writes to it: a process's stderr copied by os/exec, or a proxy's
// log.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

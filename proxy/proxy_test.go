package proxy

import (
	"testing"
	"time"
)

func TestBackoffGrowsAndCaps(t *testing.T) {
	var b Backoff
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("step %d: got %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 5*time.Millisecond {
		t.Fatalf("after Reset: got %v, want 5ms", got)
	}
}

func TestBackoffSleepInterrupted(t *testing.T) {
	b := Backoff{Min: time.Hour, Max: time.Hour}
	done := make(chan struct{})
	close(done)
	if b.Sleep(done) {
		t.Fatal("Sleep reported a full delay although done was closed")
	}
}

package logging

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

func TestWithFieldsAndLevels(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewWriter(&buf, zapcore.WarnLevel, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	a := l.With(String("proto", "tcp"))
	b := a.With(String("listen", "127.0.0.1:80"))
	c := a.With(String("listen", "[::1]:80")) // must not see b's fields
	a.Info("dropped: below the level")
	b.Warn("first", Err(errors.New("boom")), Int("n", 3))
	c.Error("second")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{`"msg":"first"`, `"proto":"tcp"`, `"listen":"127.0.0.1:80"`, `"error":"boom"`, `"n":3`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line %q lacks %s", lines[0], want)
		}
	}
	if !strings.Contains(lines[1], `"listen":"[::1]:80"`) || strings.Contains(lines[1], "127.0.0.1") {
		t.Errorf("second line has the wrong fields: %s", lines[1])
	}
}

func TestNilAndNopDiscard(t *testing.T) {
	var l *Logger
	l.Error("nothing", String("k", "v"))
	if l.With(String("k", "v")) != nil || l.Enabled(zapcore.ErrorLevel) {
		t.Fatal("a nil Logger must stay nil and disabled")
	}
	Nop().With(String("k", "v")).Error("nothing")
}

func TestParseLevelAndFormat(t *testing.T) {
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel accepted an unknown level")
	}
	if lv, err := ParseLevel("debug"); err != nil || lv != zapcore.DebugLevel {
		t.Errorf("ParseLevel(debug) = %v, %v", lv, err)
	}
	if _, err := NewWriter(&bytes.Buffer{}, zapcore.InfoLevel, "xml"); err == nil {
		t.Error("NewWriter accepted an unknown format")
	}
}

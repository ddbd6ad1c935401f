// Package logging is hostproxy's levelled, structured logger: a thin layer over
// go.uber.org/zap/zapcore.
//
// It exists because importing go.uber.org/zap itself links net/http and crypto
// (zap's HTTP level handler), which adds about 2.8 MB to the binary and 1.3 MB
// of RSS to every idle proxy process. Engines spawn one process per port
// mapping, so hostproxy logs through zapcore alone and keeps net/http out of
// `go list -deps ./cmd/hostproxy`.
//
// The zero value and a nil *Logger are both valid and discard everything, so
// library code can take an optional logger without checking it.
package logging

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap/zapcore"
)

// Logger writes structured entries to a zapcore.Core.
type Logger struct {
	core zapcore.Core
	// fields are added to every entry. They are kept as they are and encoded
	// only when an entry is written, instead of through core.With, which
	// clones the encoder with a buffer of its own: hostproxy logs rarely (on
	// failures) but holds a logger per mapping, and a range of 100 mappings
	// should not pay 100 encoders.
	fields []zapcore.Field
}

// New returns a Logger writing to core. A nil core discards everything.
// The Logger calls core.Enabled and then core.Write, never core.Check, so a
// core that filters in Check (a sampler, a tee of cores at different levels)
// does not filter here.
func New(core zapcore.Core) *Logger { return &Logger{core: core} }

// Nop returns a Logger that discards everything.
func Nop() *Logger { return &Logger{} }

// Format selects the encoding of log lines.
type Format string

// The supported formats.
const (
	FormatConsole Format = "console"
	FormatJSON    Format = "json"
)

// NewWriter returns a Logger that writes entries at level and above to w,
// encoded as format ("console" or "json").
func NewWriter(w io.Writer, level zapcore.Level, format Format) (*Logger, error) {
	var enc zapcore.Encoder
	switch format {
	case FormatConsole, "":
		enc = newLineEncoder(true)
	case FormatJSON:
		enc = newLineEncoder(false)
	default:
		return nil, fmt.Errorf("unknown log format %q (want console or json)", format)
	}
	return New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)), nil
}

// NewStderr is NewWriter on os.Stderr.
func NewStderr(level zapcore.Level, format Format) (*Logger, error) {
	return NewWriter(os.Stderr, level, format)
}

// ParseLevel parses "debug", "info", "warn" or "error".
func ParseLevel(s string) (zapcore.Level, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// With returns a Logger that adds fields to every entry.
func (l *Logger) With(fields ...zapcore.Field) *Logger {
	if l == nil || l.core == nil || len(fields) == 0 {
		return l
	}
	all := make([]zapcore.Field, 0, len(l.fields)+len(fields))
	all = append(append(all, l.fields...), fields...)
	return &Logger{core: l.core, fields: all}
}

// Enabled reports whether entries at level would be written.
func (l *Logger) Enabled(level zapcore.Level) bool {
	return l != nil && l.core != nil && l.core.Enabled(level)
}

// Debug logs at debug level.
func (l *Logger) Debug(msg string, fields ...zapcore.Field) { l.log(zapcore.DebugLevel, msg, fields) }

// Info logs at info level.
func (l *Logger) Info(msg string, fields ...zapcore.Field) { l.log(zapcore.InfoLevel, msg, fields) }

// Warn logs at warn level.
func (l *Logger) Warn(msg string, fields ...zapcore.Field) { l.log(zapcore.WarnLevel, msg, fields) }

// Error logs at error level.
func (l *Logger) Error(msg string, fields ...zapcore.Field) { l.log(zapcore.ErrorLevel, msg, fields) }

// Sync flushes buffered entries.
func (l *Logger) Sync() error {
	if l == nil || l.core == nil {
		return nil
	}
	return l.core.Sync()
}

func (l *Logger) log(level zapcore.Level, msg string, fields []zapcore.Field) {
	if !l.Enabled(level) {
		return
	}
	if len(l.fields) > 0 {
		fields = append(l.fields[:len(l.fields):len(l.fields)], fields...)
	}
	// The core is written to directly, not through Check and a
	// zapcore.CheckedEntry, whose Write links go.uber.org/multierr and its
	// own error reporting: 15 KB of binary, nearly all of it resident in
	// every process. NewWriter's core checks only the level, done above.
	_ = l.core.Write(zapcore.Entry{Level: level, Time: time.Now(), Message: msg}, fields)
}

// String is a string field.
func String(key, val string) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringType, String: val}
}

// Stringer is a field whose value is v.String(), computed only when written.
func Stringer(key string, v fmt.Stringer) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringerType, Interface: v}
}

// Int is an integer field.
func Int(key string, v int) zapcore.Field { return Int64(key, int64(v)) }

// Int64 is an integer field.
func Int64(key string, v int64) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.Int64Type, Integer: v}
}

// Uint64 is an unsigned integer field.
func Uint64(key string, v uint64) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.Uint64Type, Integer: int64(v)}
}

// Duration is a duration field.
func Duration(key string, d time.Duration) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.DurationType, Integer: int64(d)}
}

// Err is the field "error" holding err; a nil err is skipped.
func Err(err error) zapcore.Field {
	if err == nil {
		return zapcore.Field{Type: zapcore.SkipType}
	}
	return zapcore.Field{Key: "error", Type: zapcore.ErrorType, Interface: err}
}

// Addr is a field holding a network address (nil-safe).
func Addr(key string, a net.Addr) zapcore.Field {
	if a == nil {
		return String(key, "")
	}
	return Stringer(key, a)
}

// AddrPort is a field holding an address and port.
func AddrPort(key string, ap netip.AddrPort) zapcore.Field { return Stringer(key, ap) }

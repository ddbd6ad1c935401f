package logging

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// lineEncoder is the zapcore.Encoder behind both formats. zapcore's own JSON
// and console encoders are not used because they link encoding/json (for
// reflected fields, which hostproxy never logs): about 220 KB of binary, and
// on Linux nearly all of a binary's text is resident, in every process an
// engine spawns. The output is the same as theirs:
//
//	json:    {"level":"warn","ts":"2026-11-29T05:14:58.123Z","msg":"m","k":"v"}
//	console: 2026-11-29T05:14:58.123Z<TAB>warn<TAB>m<TAB>{"k":"v"}
//
// Fields (zapcore.Field.AddTo calls the Add methods) are appended to buf as
// JSON object members; nesting opens and closes objects and arrays in buf.
type lineEncoder struct {
	console bool
	buf     *buffer.Buffer
	// open counts the objects opened by OpenNamespace, closed at the end.
	open int
	// more is set when the next member or element needs a separator before
	// it: after a value, not after a key or an opening brace.
	more bool
}

var bufferPool = buffer.NewPool()

func newLineEncoder(console bool) *lineEncoder {
	return &lineEncoder{console: console, buf: bufferPool.Get()}
}

// Clone returns a copy holding the fields added so far (zapcore.Core.With).
func (e *lineEncoder) Clone() zapcore.Encoder {
	c := newLineEncoder(e.console)
	c.buf.Write(e.buf.Bytes())
	c.open, c.more = e.open, e.more
	return c
}

// EncodeEntry writes one line: the entry, the fields of Clone's source, and
// fields.
func (e *lineEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	f := e.Clone().(*lineEncoder)
	for i := range fields {
		fields[i].AddTo(f)
	}
	f.closeNamespaces()

	line := bufferPool.Get()
	if e.console {
		line.AppendString(ent.Time.Format(timeLayout))
		line.AppendByte('\t')
		line.AppendString(ent.Level.String())
		if ent.LoggerName != "" {
			line.AppendByte('\t')
			line.AppendString(ent.LoggerName)
		}
		line.AppendByte('\t')
		line.AppendString(ent.Message)
		if f.buf.Len() > 0 {
			line.AppendString("\t{")
			line.Write(f.buf.Bytes())
			line.AppendByte('}')
		}
	} else {
		line.AppendString(`{"level":"`)
		line.AppendString(ent.Level.String())
		line.AppendString(`","ts":"`)
		line.AppendString(ent.Time.Format(timeLayout))
		line.AppendByte('"')
		if ent.LoggerName != "" {
			line.AppendString(`,"logger":`)
			appendQuoted(line, ent.LoggerName)
		}
		line.AppendString(`,"msg":`)
		appendQuoted(line, ent.Message)
		if f.buf.Len() > 0 {
			line.AppendByte(',')
			line.Write(f.buf.Bytes())
		}
		line.AppendByte('}')
	}
	line.AppendString(zapcore.DefaultLineEnding)
	f.buf.Free()
	return line, nil
}

// timeLayout is zapcore.ISO8601TimeEncoder's layout.
const timeLayout = "2006-01-02T15:04:05.000Z0700"

func (e *lineEncoder) closeNamespaces() {
	for ; e.open > 0; e.open-- {
		e.buf.AppendByte('}')
	}
	e.more = true
}

// key starts a member: a separator unless first in its object, then
// "key": (zapcore's console encoder puts a space after the colon and the
// comma).
func (e *lineEncoder) key(k string) {
	e.separate()
	appendQuoted(e.buf, k)
	e.buf.AppendByte(':')
	if e.console {
		e.buf.AppendByte(' ')
	}
	e.more = false
}

// separate writes the separator before a member or element, unless it comes
// first in its object or array, and marks that a value follows.
func (e *lineEncoder) separate() {
	if e.more {
		e.buf.AppendByte(',')
		if e.console {
			e.buf.AppendByte(' ')
		}
	}
	e.more = true
}

// opened notes an opening brace or bracket just written.
func (e *lineEncoder) opened() { e.more = false }

// zapcore.ObjectEncoder.

func (e *lineEncoder) AddArray(k string, v zapcore.ArrayMarshaler) error {
	e.key(k)
	return e.AppendArray(v)
}

func (e *lineEncoder) AddObject(k string, v zapcore.ObjectMarshaler) error {
	e.key(k)
	return e.AppendObject(v)
}

func (e *lineEncoder) AddBinary(k string, v []byte) {
	e.AddString(k, base64.StdEncoding.EncodeToString(v))
}
func (e *lineEncoder) AddByteString(k string, v []byte) { e.key(k); e.AppendByteString(v) }
func (e *lineEncoder) AddBool(k string, v bool)         { e.key(k); e.AppendBool(v) }
func (e *lineEncoder) AddComplex128(k string, v complex128) {
	e.key(k)
	e.AppendComplex128(v)
}
func (e *lineEncoder) AddComplex64(k string, v complex64)    { e.AddComplex128(k, complex128(v)) }
func (e *lineEncoder) AddDuration(k string, v time.Duration) { e.key(k); e.AppendDuration(v) }
func (e *lineEncoder) AddFloat64(k string, v float64)        { e.key(k); e.AppendFloat64(v) }
func (e *lineEncoder) AddFloat32(k string, v float32)        { e.key(k); e.AppendFloat32(v) }
func (e *lineEncoder) AddInt(k string, v int)                { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt64(k string, v int64)            { e.key(k); e.AppendInt64(v) }
func (e *lineEncoder) AddInt32(k string, v int32)            { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt16(k string, v int16)            { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddInt8(k string, v int8)              { e.AddInt64(k, int64(v)) }
func (e *lineEncoder) AddString(k, v string)                 { e.key(k); e.AppendString(v) }
func (e *lineEncoder) AddTime(k string, v time.Time)         { e.key(k); e.AppendTime(v) }
func (e *lineEncoder) AddUint(k string, v uint)              { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint64(k string, v uint64)          { e.key(k); e.AppendUint64(v) }
func (e *lineEncoder) AddUint32(k string, v uint32)          { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint16(k string, v uint16)          { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUint8(k string, v uint8)            { e.AddUint64(k, uint64(v)) }
func (e *lineEncoder) AddUintptr(k string, v uintptr)        { e.AddUint64(k, uint64(v)) }

func (e *lineEncoder) AddReflected(k string, v any) error {
	e.key(k)
	return e.AppendReflected(v)
}

func (e *lineEncoder) OpenNamespace(k string) {
	e.key(k)
	e.buf.AppendByte('{')
	e.opened()
	e.open++
}

// zapcore.ArrayEncoder.

func (e *lineEncoder) AppendArray(v zapcore.ArrayMarshaler) error {
	e.separate()
	e.buf.AppendByte('[')
	e.opened()
	err := v.MarshalLogArray(e)
	e.buf.AppendByte(']')
	e.more = true
	return err
}

func (e *lineEncoder) AppendObject(v zapcore.ObjectMarshaler) error {
	e.separate()
	e.buf.AppendByte('{')
	e.opened()
	// Namespaces opened inside v end with it.
	outer := e.open
	e.open = 0
	err := v.MarshalLogObject(e)
	e.closeNamespaces()
	e.open = outer
	e.buf.AppendByte('}')
	e.more = true
	return err
}

func (e *lineEncoder) AppendBool(v bool) { e.separate(); e.buf.AppendBool(v) }
func (e *lineEncoder) AppendByteString(v []byte) {
	e.separate()
	appendQuoted(e.buf, string(v))
}
func (e *lineEncoder) AppendComplex128(v complex128) {
	e.separate()
	e.buf.AppendByte('"')
	e.buf.AppendString(strconv.FormatComplex(v, 'g', -1, 128))
	e.buf.AppendByte('"')
}
func (e *lineEncoder) AppendComplex64(v complex64) { e.AppendComplex128(complex128(v)) }
func (e *lineEncoder) AppendDuration(v time.Duration) {
	e.AppendString(v.String())
}
func (e *lineEncoder) AppendFloat64(v float64) { e.appendFloat(v, 64) }
func (e *lineEncoder) AppendFloat32(v float32) { e.appendFloat(float64(v), 32) }
func (e *lineEncoder) AppendInt(v int)         { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendInt64(v int64)     { e.separate(); e.buf.AppendInt(v) }
func (e *lineEncoder) AppendInt32(v int32)     { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendInt16(v int16)     { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendInt8(v int8)       { e.AppendInt64(int64(v)) }
func (e *lineEncoder) AppendString(v string)   { e.separate(); appendQuoted(e.buf, v) }
func (e *lineEncoder) AppendTime(v time.Time)  { e.AppendString(v.Format(timeLayout)) }
func (e *lineEncoder) AppendUint(v uint)       { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUint64(v uint64)   { e.separate(); e.buf.AppendUint(v) }
func (e *lineEncoder) AppendUint32(v uint32)   { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUint16(v uint16)   { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUint8(v uint8)     { e.AppendUint64(uint64(v)) }
func (e *lineEncoder) AppendUintptr(v uintptr) { e.AppendUint64(uint64(v)) }

// AppendReflected writes v with fmt's %+v as a string: hostproxy logs no
// reflected values, and a readable rendering beats linking encoding/json.
func (e *lineEncoder) AppendReflected(v any) error {
	e.AppendString(fmt.Sprintf("%+v", v))
	return nil
}

// appendFloat writes v as a JSON number, or as the strings "NaN", "+Inf"
// and "-Inf", which JSON has no numbers for.
func (e *lineEncoder) appendFloat(v float64, bits int) {
	e.separate()
	switch {
	case math.IsNaN(v):
		e.buf.AppendString(`"NaN"`)
	case math.IsInf(v, 1):
		e.buf.AppendString(`"+Inf"`)
	case math.IsInf(v, -1):
		e.buf.AppendString(`"-Inf"`)
	default:
		e.buf.AppendFloat(v, bits)
	}
}

// appendQuoted writes s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendQuoted(b *buffer.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.AppendByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b.AppendString(s[start:i])
			switch c {
			case '"', '\\':
				b.AppendByte('\\')
				b.AppendByte(c)
			case '\n':
				b.AppendString(`\n`)
			case '\r':
				b.AppendString(`\r`)
			case '\t':
				b.AppendString(`\t`)
			default:
				b.AppendString(`\u00`)
				b.AppendByte(hex[c>>4])
				b.AppendByte(hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.AppendString(s[start:i])
			b.AppendString(`\ufffd`)
			i++
			start = i
			continue
		}
		i += size
	}
	b.AppendString(s[start:])
	b.AppendByte('"')
}

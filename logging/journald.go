package logging

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"time"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// JournalSocket is where systemd-journald reads its native protocol.
const JournalSocket = "/run/systemd/journal/socket"

// JournalIdentifier is the SYSLOG_IDENTIFIER of hostproxy's journal entries.
const JournalIdentifier = "hostproxy"

// journalPriority is the syslog priority (PRIORITY=) of a zap level.
func journalPriority(l zapcore.Level) byte {
	switch {
	case l <= zapcore.DebugLevel:
		return '7' // debug
	case l == zapcore.InfoLevel:
		return '6' // info
	case l == zapcore.WarnLevel:
		return '4' // warning
	case l == zapcore.ErrorLevel:
		return '3' // err
	}
	return '2' // crit: DPanic, Panic, Fatal
}

// encodeJournalEntry appends the journal's native-protocol form of an entry
// to buf: PRIORITY, SYSLOG_IDENTIFIER, MESSAGE, then every field under its
// journal name (see journalName).
func encodeJournalEntry(buf *buffer.Buffer, ident string, ent zapcore.Entry, fields ...[]zapcore.Field) {
	buf.AppendString("PRIORITY=")
	buf.AppendByte(journalPriority(ent.Level))
	buf.AppendByte('\n')
	appendJournalField(buf, "SYSLOG_IDENTIFIER", ident)
	appendJournalField(buf, "MESSAGE", ent.Message)
	if ent.LoggerName != "" {
		appendJournalField(buf, "LOGGER", ent.LoggerName)
	}
	enc := journalEncoder{buf: buf}
	for _, fs := range fields {
		for i := range fs {
			fs[i].AddTo(&enc)
		}
	}
}

// appendJournalField appends one field: "NAME=value\n", or, when the value
// holds a newline, the binary form "NAME\n", the value's length as a
// little-endian uint64, the value and "\n".
func appendJournalField(buf *buffer.Buffer, name, value string) {
	buf.AppendString(name)
	if !containsNewline(value) {
		buf.AppendByte('=')
		buf.AppendString(value)
		buf.AppendByte('\n')
		return
	}
	buf.AppendByte('\n')
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(value)))
	buf.Write(n[:])
	buf.AppendString(value)
	buf.AppendByte('\n')
}

func containsNewline(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return true
		}
	}
	return false
}

// maxJournalName is the longest field name journald accepts.
const maxJournalName = 64

// journalName turns a log field's key (with the prefix of its namespaces)
// into a name journald accepts and that cannot pass for one of its own:
// letters upper-cased, anything but A-Z, 0-9 and "_" replaced by "_", at
// most 64 characters; a name that would start with "_" (journald's trusted
// fields) or a digit, or be one of the fields every entry has, gets "F_"
// before it.
func journalName(prefix, key string) string {
	var b [maxJournalName]byte
	n := 0
	for _, s := range [2]string{prefix, key} {
		for i := 0; i < len(s) && n < len(b); i++ {
			c := s[i]
			switch {
			case 'a' <= c && c <= 'z':
				c -= 'a' - 'A'
			case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			default:
				c = '_'
			}
			b[n] = c
			n++
		}
	}
	name := string(b[:n])
	switch {
	case name == "":
		return "F_"
	case name[0] == '_' || '0' <= name[0] && name[0] <= '9',
		name == "PRIORITY", name == "MESSAGE", name == "SYSLOG_IDENTIFIER", name == "LOGGER":
		name = "F_" + name
		if len(name) > maxJournalName {
			name = name[:maxJournalName]
		}
	}
	return name
}

// journalEncoder adds fields to an entry as journal fields. Scalars are
// written as text; arrays, objects and reflected values as the JSON that
// -log-format json would show. A namespace prefixes the names of the fields
// that follow it.
type journalEncoder struct {
	buf    *buffer.Buffer
	prefix string
}

func (e *journalEncoder) add(k, v string) { appendJournalField(e.buf, journalName(e.prefix, k), v) }

// addJSON adds the value that put writes to a JSON line encoder.
func (e *journalEncoder) addJSON(k string, put func(*lineEncoder) error) error {
	le := newLineEncoder(false)
	defer le.buf.Free()
	err := put(le)
	e.add(k, le.buf.String())
	return err
}

func (e *journalEncoder) AddArray(k string, v zapcore.ArrayMarshaler) error {
	return e.addJSON(k, func(le *lineEncoder) error { return le.AppendArray(v) })
}

func (e *journalEncoder) AddObject(k string, v zapcore.ObjectMarshaler) error {
	return e.addJSON(k, func(le *lineEncoder) error { return le.AppendObject(v) })
}

func (e *journalEncoder) AddReflected(k string, v any) error {
	return e.addJSON(k, func(le *lineEncoder) error { return le.AppendReflected(v) })
}

func (e *journalEncoder) OpenNamespace(k string) { e.prefix = journalName(e.prefix, k) + "_" }

func (e *journalEncoder) AddBinary(k string, v []byte) {
	e.add(k, base64.StdEncoding.EncodeToString(v))
}
func (e *journalEncoder) AddByteString(k string, v []byte) { e.add(k, string(v)) }
func (e *journalEncoder) AddBool(k string, v bool)         { e.add(k, strconv.FormatBool(v)) }
func (e *journalEncoder) AddComplex128(k string, v complex128) {
	e.add(k, strconv.FormatComplex(v, 'g', -1, 128))
}
func (e *journalEncoder) AddComplex64(k string, v complex64) {
	e.add(k, strconv.FormatComplex(complex128(v), 'g', -1, 64))
}
func (e *journalEncoder) AddDuration(k string, v time.Duration) { e.add(k, v.String()) }
func (e *journalEncoder) AddFloat64(k string, v float64) {
	e.add(k, strconv.FormatFloat(v, 'g', -1, 64))
}
func (e *journalEncoder) AddFloat32(k string, v float32) {
	e.add(k, strconv.FormatFloat(float64(v), 'g', -1, 32))
}
func (e *journalEncoder) AddInt(k string, v int)         { e.AddInt64(k, int64(v)) }
func (e *journalEncoder) AddInt64(k string, v int64)     { e.add(k, strconv.FormatInt(v, 10)) }
func (e *journalEncoder) AddInt32(k string, v int32)     { e.AddInt64(k, int64(v)) }
func (e *journalEncoder) AddInt16(k string, v int16)     { e.AddInt64(k, int64(v)) }
func (e *journalEncoder) AddInt8(k string, v int8)       { e.AddInt64(k, int64(v)) }
func (e *journalEncoder) AddString(k, v string)          { e.add(k, v) }
func (e *journalEncoder) AddTime(k string, v time.Time)  { e.add(k, v.Format(timeLayout)) }
func (e *journalEncoder) AddUint(k string, v uint)       { e.AddUint64(k, uint64(v)) }
func (e *journalEncoder) AddUint64(k string, v uint64)   { e.add(k, strconv.FormatUint(v, 10)) }
func (e *journalEncoder) AddUint32(k string, v uint32)   { e.AddUint64(k, uint64(v)) }
func (e *journalEncoder) AddUint16(k string, v uint16)   { e.AddUint64(k, uint64(v)) }
func (e *journalEncoder) AddUint8(k string, v uint8)     { e.AddUint64(k, uint64(v)) }
func (e *journalEncoder) AddUintptr(k string, v uintptr) { e.AddUint64(k, uint64(v)) }

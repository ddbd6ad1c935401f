package logging

import (
	"bytes"
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// zapConfig makes zapcore's own encoders write what lineEncoder writes, so
// that they serve as the oracle.
var zapConfig = zapcore.EncoderConfig{
	TimeKey:        "ts",
	LevelKey:       "level",
	NameKey:        "logger",
	MessageKey:     "msg",
	LineEnding:     zapcore.DefaultLineEnding,
	EncodeLevel:    zapcore.LowercaseLevelEncoder,
	EncodeTime:     zapcore.ISO8601TimeEncoder,
	EncodeDuration: zapcore.StringDurationEncoder,
	EncodeName:     zapcore.FullNameEncoder,
}

type pair struct{ a, b string }

func (p pair) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("a", p.a)
	enc.OpenNamespace("inner")
	enc.AddString("b", p.b)
	return nil
}

type ints []int

func (s ints) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, v := range s {
		enc.AppendInt(v)
	}
	return nil
}

// TestEncoderMatchesZap checks both formats byte for byte against zapcore's
// encoders, for every field type hostproxy writes and the awkward strings.
func TestEncoderMatchesZap(t *testing.T) {
	ent := zapcore.Entry{
		Level:   zapcore.WarnLevel,
		Time:    time.Date(2026, 11, 29, 5, 14, 58, 123456789, time.UTC),
		Message: "accept failed; \"backing\" off\n\tretrying",
	}
	cases := map[string][]zapcore.Field{
		"none":    nil,
		"strings": {String("proto", "tcp"), String("odd", "quote\" back\\ ctl\x01\x1f bad\xff é ✓ \u2028")},
		"numbers": {Int("n", -3), Int64("big", math.MaxInt64), Uint64("u", math.MaxUint64), Duration("d", 1500*time.Millisecond)},
		"others": {
			Err(errors.New("dial 10.0.0.1:80: connection refused")), Err(nil),
			AddrPort("listen", netip.MustParseAddrPort("[::1]:8080")), Addr("nil", nil),
			zapcore.Field{Key: "b", Type: zapcore.BoolType, Integer: 1},
			zapcore.Field{Key: "f", Type: zapcore.Float64Type, Integer: int64(math.Float64bits(2.5))},
			zapcore.Field{Key: "t", Type: zapcore.TimeType, Integer: 1, Interface: time.UTC},
		},
		"nested": {
			zapcore.Field{Key: "obj", Type: zapcore.ObjectMarshalerType, Interface: pair{"x", "y"}},
			zapcore.Field{Key: "arr", Type: zapcore.ArrayMarshalerType, Interface: ints{1, 2, 3}},
			zapcore.Field{Key: "empty", Type: zapcore.ArrayMarshalerType, Interface: ints{}},
			zapcore.Field{Key: "ns", Type: zapcore.NamespaceType},
			String("in", "ns"),
		},
	}
	for name, fields := range cases {
		for _, console := range []bool{false, true} {
			var want zapcore.Encoder
			if console {
				want = zapcore.NewConsoleEncoder(zapConfig)
			} else {
				want = zapcore.NewJSONEncoder(zapConfig)
			}
			wb, err := want.EncodeEntry(ent, fields)
			if err != nil {
				t.Fatal(err)
			}
			gb, err := newLineEncoder(console).EncodeEntry(ent, fields)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := gb.String(), wb.String(); got != want {
				t.Errorf("%s (console %t):\n got %s\nwant %s", name, console, got, want)
			}
		}
	}
}

// TestEncoderWithMatchesZap covers zapcore.Core.With, which clones the
// encoder with fields (and a namespace) already added, then writes entries
// with more fields: the clone must not share state with its source.
func TestEncoderWithMatchesZap(t *testing.T) {
	ent := zapcore.Entry{Level: zapcore.ErrorLevel, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Message: "m"}
	with := []zapcore.Field{String("proto", "udp"), {Key: "ns", Type: zapcore.NamespaceType}, Int("n", 1)}
	for _, console := range []bool{false, true} {
		var zapEnc zapcore.Encoder = zapcore.NewJSONEncoder(zapConfig)
		if console {
			zapEnc = zapcore.NewConsoleEncoder(zapConfig)
		}
		var got, want bytes.Buffer
		for _, c := range []struct {
			enc zapcore.Encoder
			out *bytes.Buffer
		}{{newLineEncoder(console), &got}, {zapEnc, &want}} {
			core := zapcore.NewCore(c.enc, zapcore.AddSync(c.out), zapcore.DebugLevel).With(with)
			if err := core.Write(ent, []zapcore.Field{String("a", "1")}); err != nil {
				t.Fatal(err)
			}
			if err := core.Write(ent, []zapcore.Field{String("b", "2")}); err != nil {
				t.Fatal(err)
			}
		}
		if got.String() != want.String() {
			t.Errorf("console %t:\n got %s\nwant %s", console, got.String(), want.String())
		}
	}
}

package proxy

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/logging"
)

// DefaultLogEvery is the interval of a RateLimited whose Every is zero.
const DefaultLogEvery = 10 * time.Second

// RateLimited logs a "this keeps failing" message of one kind: the first
// line at once, then at most one per Every, each carrying the number of lines
// held back since the previous one (field "suppressed"). The zero value logs
// at most once per DefaultLogEvery. It is safe for concurrent use; Allow
// takes no lock and allocates nothing, so a hot failure path that must not
// build its fields for nothing calls Allow first.
type RateLimited struct {
	// Every is the minimum interval between two lines; zero means
	// DefaultLogEvery.
	Every time.Duration

	next       atomic.Int64 // unix ns before which lines are held back
	suppressed atomic.Int64
}

// Allow reports whether a line may be written at now and, if so, how many
// were held back since the last line written. When it returns true the
// caller writes the line.
func (r *RateLimited) Allow(now time.Time) (ok bool, suppressed int64) {
	t := now.UnixNano()
	next := r.next.Load()
	if t < next {
		r.suppressed.Add(1)
		return false, 0
	}
	// The count is taken before the line is claimed, so that a line never
	// reports lines held back after it; a caller that loses the claim
	// gives the count back with its own.
	n := r.suppressed.Swap(0)
	if !r.next.CompareAndSwap(next, t+int64(r.every())) {
		r.suppressed.Add(n + 1)
		return false, 0
	}
	return true, n
}

func (r *RateLimited) every() time.Duration {
	if r.Every <= 0 {
		return DefaultLogEvery
	}
	return r.Every
}

// Log writes msg with fields at level through log when Allow lets it, adding
// the field "suppressed" when lines were held back. It reports whether the
// line was written.
func (r *RateLimited) Log(log *logging.Logger, level zapcore.Level, now time.Time, msg string, fields ...zapcore.Field) bool {
	ok, n := r.Allow(now)
	if ok {
		Emit(log, level, ok, n, msg, fields...)
	}
	return ok
}

// Emit writes msg with fields through log for an answer of Allow (ok,
// suppressed): at level, with the field "suppressed" when lines were held
// back, when ok; at Debug when the line was held back. A caller that builds
// costly fields calls Allow first and Emit only when ok or Debug is on.
func Emit(log *logging.Logger, level zapcore.Level, ok bool, suppressed int64, msg string, fields ...zapcore.Field) {
	if !ok {
		log.Debug(msg, fields...)
		return
	}
	if suppressed > 0 {
		fields = append(fields, logging.Int64("suppressed", suppressed))
	}
	switch level {
	case zapcore.DebugLevel:
		log.Debug(msg, fields...)
	case zapcore.InfoLevel:
		log.Info(msg, fields...)
	case zapcore.WarnLevel:
		log.Warn(msg, fields...)
	default:
		log.Error(msg, fields...)
	}
}

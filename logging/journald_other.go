//go:build !linux

package logging

import (
	"errors"
	"os"

	"go.uber.org/zap/zapcore"
)

// JournalStreamEnv is set by systemd for a service whose stdout or stderr
// is connected to the journal.
const JournalStreamEnv = "JOURNAL_STREAM"

// errNoJournal is returned where there is no systemd-journald.
var errNoJournal = errors.New("journald logging is not supported on this platform")

// NewJournalCore is not supported on this platform.
func NewJournalCore(path string, level zapcore.LevelEnabler, fallback zapcore.Core) (zapcore.Core, error) {
	return nil, errNoJournal
}

// NewJournal is not supported on this platform.
func NewJournal(path string, level zapcore.Level, fallback *Logger) (*Logger, error) {
	return nil, errNoJournal
}

// JournalAvailable reports false: there is no journal here.
func JournalAvailable(path string) bool { return false }

// StderrUnread reports false: without a journal, stderr is the only target.
func StderrUnread(f *os.File) bool { return false }

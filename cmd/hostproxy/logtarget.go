package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hostproxy/hostproxy/logging"
)

// logTarget is where log entries go (-log-target).
type logTarget string

const (
	targetStderr   logTarget = "stderr"
	targetJournald logTarget = "journald"
	// targetAuto is journald when stderr reaches nobody else (it is the
	// journal's stream, or /dev/null as dockerd leaves it) and the journal
	// socket exists; stderr otherwise.
	targetAuto        logTarget = "auto"
	defaultLogTarget            = targetAuto
	defaultLogTargetS           = string(defaultLogTarget)
)

func parseLogTarget(s string) (logTarget, error) {
	switch t := logTarget(s); t {
	case targetStderr, targetJournald, targetAuto:
		return t, nil
	}
	return "", fmt.Errorf("unknown target %q (want stderr, journald or auto)", s)
}

// journalSocketEnv overrides the journal's socket path. It exists for tests
// only: they listen on a socket of their own.
const journalSocketEnv = "HOSTPROXY_TEST_JOURNAL_SOCKET"

// newLogger returns the logger -log-target, -log-level and -log-format ask
// for. Entries the journal refuses go to stderr.
func newLogger(cfg *config, stderr io.Writer) (*logging.Logger, error) {
	toStderr, err := logging.NewWriter(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return nil, err
	}
	path := os.Getenv(journalSocketEnv)
	switch cfg.LogTarget {
	case targetStderr:
		return toStderr, nil
	case targetAuto:
		f, ok := stderr.(*os.File)
		if !ok || !logging.StderrUnread(f) || !logging.JournalAvailable(path) {
			return toStderr, nil
		}
	case targetJournald:
		if !logging.JournalAvailable(path) {
			if path == "" {
				path = logging.JournalSocket
			}
			return nil, fmt.Errorf("-log-target journald: no journal socket at %s", path)
		}
	}
	l, err := logging.NewJournal(path, cfg.LogLevel, toStderr)
	if err != nil {
		return nil, fmt.Errorf("-log-target %s: %w", cfg.LogTarget, err)
	}
	return l, nil
}

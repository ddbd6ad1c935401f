package logging

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// journalCore is a zapcore.Core that sends every entry to systemd-journald
// as one datagram of its native protocol (see encodeJournalEntry). The
// datagram is sent without blocking; an entry the journal does not take
// (its socket is gone, or its queue full) is written to the fallback core
// instead. An entry too large for a datagram (EMSGSIZE, ENOBUFS) travels as
// journald's clients send it: in a sealed memfd passed with SCM_RIGHTS.
type journalCore struct {
	zapcore.LevelEnabler
	sock     *journalSocket
	ident    string
	fields   []zapcore.Field // from With
	fallback zapcore.Core    // nil: entries the journal refuses are lost
}

// journalSocket is the unbound datagram socket the entries are sent from,
// shared by a core and its With clones for the life of the process.
type journalSocket struct {
	fd   int
	addr *unix.SockaddrUnix
	to   unix.Sockaddr // addr, or nil once the socket is connected to it
}

// NewJournalCore returns a core sending entries at level and above to the
// journal's socket at path ("": JournalSocket), with SYSLOG_IDENTIFIER
// hostproxy. Entries the journal refuses go to fallback, unless it is nil.
func NewJournalCore(path string, level zapcore.LevelEnabler, fallback zapcore.Core) (zapcore.Core, error) {
	if path == "" {
		path = JournalSocket
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("journal socket %s: socket: %w", path, err)
	}
	// Entries up to 8 MiB go in one datagram when the kernel allows; the
	// send buffer bounds the datagram size of an AF_UNIX socket.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
	sock := &journalSocket{fd: fd, addr: &unix.SockaddrUnix{Name: path}}
	sock.to = sock.addr
	// Connected now, the socket keeps the right to send after hostproxy
	// drops its privileges (a connected socket's sends are not checked
	// against the path's permissions again). When connect fails the
	// entries are sent to the address.
	if unix.Connect(fd, sock.addr) == nil {
		sock.to = nil
	}
	return &journalCore{
		LevelEnabler: level,
		sock:         sock,
		ident:        JournalIdentifier,
		fallback:     fallback,
	}, nil
}

// NewJournal returns a Logger on NewJournalCore. Entries the journal refuses
// go to fallback's core when fallback is not nil.
func NewJournal(path string, level zapcore.Level, fallback *Logger) (*Logger, error) {
	var fb zapcore.Core
	if fallback != nil {
		fb = fallback.core
	}
	core, err := NewJournalCore(path, level, fb)
	if err != nil {
		return nil, err
	}
	return New(core), nil
}

func (c *journalCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.fields = append(c.fields[:len(c.fields):len(c.fields)], fields...)
	return &clone
}

func (c *journalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *journalCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	buf := bufferPool.Get()
	defer buf.Free()
	encodeJournalEntry(buf, c.ident, ent, c.fields, fields)
	err := c.sock.send(buf.Bytes())
	if err == nil || c.fallback == nil {
		return err
	}
	if len(c.fields) > 0 {
		fields = append(c.fields[:len(c.fields):len(c.fields)], fields...)
	}
	return c.fallback.Write(ent, fields)
}

func (c *journalCore) Sync() error { return nil }

// send sends one entry: as a datagram, or in a memfd when it is too large
// for one.
func (s *journalSocket) send(entry []byte) error {
	err := unix.Sendto(s.fd, entry, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, s.to)
	if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
		err = s.sendMemfd(entry)
	}
	if err != nil {
		return fmt.Errorf("journal %s: send a %d-byte entry: %w", s.addr.Name, len(entry), err)
	}
	return nil
}

// sendMemfd writes entry to a memfd, seals it (journald accepts only a
// sealed memfd) and sends its descriptor alone in a datagram.
func (s *journalSocket) sendMemfd(entry []byte) error {
	fd, err := unix.MemfdCreate("hostproxy-journal-entry", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(fd)
	for b := entry; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err != nil {
			return fmt.Errorf("write memfd: %w", err)
		}
		b = b[n:]
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("seal memfd: %w", err)
	}
	if err := unix.Sendmsg(s.fd, nil, unix.UnixRights(fd), s.to, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("sendmsg memfd: %w", err)
	}
	return nil
}

// JournalAvailable reports whether a socket exists at path ("":
// JournalSocket).
func JournalAvailable(path string) bool {
	if path == "" {
		path = JournalSocket
	}
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK
}

// JournalStreamEnv is set by systemd for a service whose stdout or stderr
// is connected to the journal: "DEVICE:INODE" of that stream.
const JournalStreamEnv = "JOURNAL_STREAM"

// StderrUnread reports whether f (stderr) reaches no reader but the
// journal: it is the journal's stream (its device and inode are those of
// $JOURNAL_STREAM, as systemd sets for StandardError=journal), where the
// native protocol keeps priorities and fields the stream would flatten; or
// it is /dev/null (the character device 1:3), where dockerd 20.10 points
// its proxies' stderr and every line would be lost.
func StderrUnread(f *os.File) bool {
	var st unix.Stat_t
	if f == nil || unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == unix.Mkdev(1, 3) {
		return true
	}
	dev, ino, ok := strings.Cut(os.Getenv(JournalStreamEnv), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	return err1 == nil && err2 == nil && d == uint64(st.Dev) && i == st.Ino
}

package logging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// journalListener is a unixgram socket standing in for journald's.
type journalListener struct {
	path string
	c    *net.UnixConn
}

func listenJournal(t *testing.T) *journalListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &journalListener{path: path, c: c}
}

// next reads one entry, from the datagram or from the memfd it carries,
// and reports whether it came in a memfd.
func (j *journalListener) next(t *testing.T) (entry []byte, memfd bool) {
	t.Helper()
	j.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := j.c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no journal entry: %v", err)
	}
	if oobn == 0 {
		return buf[:n], false
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control message: %v (%d)", err, len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("SCM_RIGHTS: %v %v", fds, err)
	}
	f := os.NewFile(uintptr(fds[0]), "memfd")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_WRITE == 0 {
		t.Errorf("memfd not sealed against writes: seals %#x, %v", seals, err)
	}
	// The sender's offset is at the end: read from the start, as journald
	// maps the file.
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

// parseJournal decodes the native protocol into name → values, failing on
// anything malformed.
func parseJournal(t *testing.T, b []byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("field without a newline: %q", b)
		}
		line := b[:nl]
		if name, value, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(name)] = append(out[string(name)], string(value))
			b = b[nl+1:]
			continue
		}
		// Binary form: NAME\n, uint64 LE length, value, \n.
		name := string(line)
		b = b[nl+1:]
		if len(b) < 8 {
			t.Fatalf("field %s: truncated length", name)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			t.Fatalf("field %s: length %d does not fit", name, n)
		}
		out[name] = append(out[name], string(b[:n]))
		b = b[n+1:]
	}
	for name := range out {
		for _, c := range name {
			if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
				t.Errorf("invalid journal field name %q", name)
				break
			}
		}
		if name[0] == '_' || '0' <= name[0] && name[0] <= '9' {
			t.Errorf("journal field name %q starts with _ or a digit", name)
		}
	}
	return out
}

func one(t *testing.T, fields map[string][]string, name string) string {
	t.Helper()
	v := fields[name]
	if len(v) != 1 {
		t.Fatalf("field %s: %q, want exactly one value (entry: %q)", name, v, fields)
	}
	return v[0]
}

type testObject struct{}

func (testObject) MarshalLogObject(e zapcore.ObjectEncoder) error {
	e.AddString("a", "b")
	e.AddInt("n", 1)
	return nil
}

// TestJournalEntry checks the fields of entries at every level: PRIORITY,
// SYSLOG_IDENTIFIER, MESSAGE, a With field and call fields under sanitized
// names, a multi-line value in the binary form.
func TestJournalEntry(t *testing.T) {
	j := listenJournal(t)
	l, err := NewJournal(j.path, zapcore.DebugLevel, nil)
	if err != nil {
		t.Fatal(err)
	}
	ml := l.With(String("proto", "tcp"), String("listen", "127.0.0.1:80"))
	for _, tc := range []struct {
		log  func(string, ...zapcore.Field)
		prio string
	}{{ml.Debug, "7"}, {ml.Info, "6"}, {ml.Warn, "4"}, {ml.Error, "3"}} {
		tc.log("dial failed", Err(errors.New("connection refused\non two lines")), Int("port", 8080),
			String("_PID", "1"), String("2fa", "x"), String("message", "spoof"), Duration("after", 1500*time.Millisecond))
		entry, memfd := j.next(t)
		if memfd {
			t.Error("a small entry came in a memfd")
		}
		f := parseJournal(t, entry)
		for name, want := range map[string]string{
			"PRIORITY":          tc.prio,
			"SYSLOG_IDENTIFIER": "hostproxy",
			"MESSAGE":           "dial failed",
			"PROTO":             "tcp",
			"LISTEN":            "127.0.0.1:80",
			"ERROR":             "connection refused\non two lines",
			"PORT":              "8080",
			"F__PID":            "1",
			"F_2FA":             "x",
			"F_MESSAGE":         "spoof",
			"AFTER":             "1.5s",
		} {
			if got := one(t, f, name); got != want {
				t.Errorf("priority %s: %s=%q, want %q", tc.prio, name, got, want)
			}
		}
		if !bytes.Contains(entry, []byte("ERROR\n")) {
			t.Error("the multi-line value is not in the binary form")
		}
	}
	// Nested values are JSON; a namespace prefixes what follows.
	l.Warn("nested", zapcore.Field{Key: "obj", Type: zapcore.ObjectMarshalerType, Interface: testObject{}},
		zapcore.Field{Key: "ns", Type: zapcore.NamespaceType}, String("in-ns", "v"))
	entry, _ := j.next(t)
	f := parseJournal(t, entry)
	if got := one(t, f, "OBJ"); got != `{"a":"b","n":1}` {
		t.Errorf("OBJ=%q", got)
	}
	if got := one(t, f, "NS_IN_NS"); got != "v" {
		t.Errorf("NS_IN_NS=%q", got)
	}
}

// TestJournalLevelFilter: entries below the level are not sent.
func TestJournalLevelFilter(t *testing.T) {
	j := listenJournal(t)
	l, err := NewJournal(j.path, zapcore.WarnLevel, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("below")
	l.Warn("at")
	entry, _ := j.next(t)
	if got := one(t, parseJournal(t, entry), "MESSAGE"); got != "at" {
		t.Errorf("first entry %q, want the warning", got)
	}
}

// TestJournalMemfd: an entry larger than a datagram can be arrives whole in
// a sealed memfd.
func TestJournalMemfd(t *testing.T) {
	j := listenJournal(t)
	// Let the listener queue what the sender's buffer allows, so that only
	// the datagram size limit is at play.
	raw, err := j.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20) })
	l, err := NewJournal(j.path, zapcore.InfoLevel, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef", 1<<20) // 16 MiB: larger than any datagram
	l.Warn("big", String("payload", big))
	entry, memfd := j.next(t)
	if !memfd {
		t.Fatal("a 16 MiB entry did not come in a memfd")
	}
	if got := one(t, parseJournal(t, entry), "PAYLOAD"); got != big {
		t.Errorf("PAYLOAD has %d bytes, want %d", len(got), len(big))
	}
}

// TestJournalFallback: when the journal socket is gone, entries go to the
// fallback logger, fields included.
func TestJournalFallback(t *testing.T) {
	var out bytes.Buffer
	fb, err := NewWriter(&out, zapcore.InfoLevel, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewJournal(filepath.Join(t.TempDir(), "absent"), zapcore.InfoLevel, fb)
	if err != nil {
		t.Fatal(err)
	}
	l.With(String("proto", "udp")).Warn("lost?", Int("port", 53))
	for _, want := range []string{`"msg":"lost?"`, `"proto":"udp"`, `"port":53`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("fallback output %q lacks %s", out.String(), want)
		}
	}
}

// TestStderrUnread: /dev/null and the stream named by JOURNAL_STREAM count;
// a pipe or another file does not.
func TestStderrUnread(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	t.Setenv(JournalStreamEnv, "")
	if !StderrUnread(null) {
		t.Error("/dev/null not recognized")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if StderrUnread(w) {
		t.Error("a pipe taken for the journal without JOURNAL_STREAM")
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv(JournalStreamEnv, formatDevIno(uint64(st.Dev), st.Ino))
	if !StderrUnread(w) {
		t.Errorf("the stream named by %s=%s not recognized", JournalStreamEnv, os.Getenv(JournalStreamEnv))
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	defer w2.Close()
	if StderrUnread(w2) {
		t.Error("another pipe taken for the journal stream")
	}
}

func formatDevIno(dev, ino uint64) string {
	return strconv.FormatUint(dev, 10) + ":" + strconv.FormatUint(ino, 10)
}

func TestJournalAvailable(t *testing.T) {
	j := listenJournal(t)
	if !JournalAvailable(j.path) {
		t.Error("a listening unixgram socket not seen")
	}
	if JournalAvailable(filepath.Join(t.TempDir(), "absent")) {
		t.Error("a missing path seen as the journal")
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if JournalAvailable(file) {
		t.Error("a regular file seen as the journal")
	}
}

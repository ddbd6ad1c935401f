package main_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hostproxy/hostproxy/internal/testenv"
	"github.com/hostproxy/hostproxy/sockopt"
)

// TestBadInput: every malformed invocation exits 1 within a few seconds,
// writes "1\n<reason>" on fd 3 and one line on stderr, and never panics.
func TestBadInput(t *testing.T) {
	// A port in use, for the self-binding engine mode.
	busy := listenTCP4(t)
	busyPort := itoa(uint16(busy.Addr().(*net.TCPAddr).Port))

	engine := func(proto, hostIP, hostPort, cIP, cPort string, more ...string) []string {
		return append([]string{"-proto", proto, "-host-ip", hostIP, "-host-port", hostPort,
			"-container-ip", cIP, "-container-port", cPort}, more...)
	}
	ok := func(more ...string) []string { return engine("tcp", "127.0.0.1", "8080", "10.0.0.2", "80", more...) }
	without := func(flag string) []string {
		args := ok()
		for i := range args {
			if args[i] == flag {
				return append(args[:i:i], args[i+2:]...)
			}
		}
		panic(flag)
	}
	tcpListener := func(ip string) func(t *testing.T) *os.File {
		return func(t *testing.T) *os.File {
			f, err := sockopt.Listen(sockopt.TCP, netip.AddrPortFrom(netip.MustParseAddr(ip), 0), sockopt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}

	for _, tt := range []struct {
		name string
		args []string
		fd4  func(t *testing.T) *os.File
		v6   bool
	}{
		{"bad protocol", engine("icmp", "127.0.0.1", "8080", "10.0.0.2", "80"), nil, false},
		{"empty protocol", engine("", "127.0.0.1", "8080", "10.0.0.2", "80"), nil, false},
		{"host port 65536", engine("tcp", "127.0.0.1", "65536", "10.0.0.2", "80"), nil, false},
		{"host port -1", engine("tcp", "127.0.0.1", "-1", "10.0.0.2", "80"), nil, false},
		{"host port abc", engine("tcp", "127.0.0.1", "abc", "10.0.0.2", "80"), nil, false},
		{"container port 0", engine("tcp", "127.0.0.1", "8080", "10.0.0.2", "0"), nil, false},
		{"container port 65536", engine("tcp", "127.0.0.1", "8080", "10.0.0.2", "65536"), nil, false},
		{"container port -1", engine("tcp", "127.0.0.1", "8080", "10.0.0.2", "-1"), nil, false},
		{"container port abc", engine("udp", "127.0.0.1", "8080", "10.0.0.2", "abc"), nil, false},
		{"reversed host range", engine("tcp", "127.0.0.1", "9000-8000", "10.0.0.2", "80"), nil, false},
		{"reversed container range", engine("tcp", "127.0.0.1", "8000-8002", "10.0.0.2", "82-80"), nil, false},
		{"unequal ranges", engine("tcp", "127.0.0.1", "8000-8002", "10.0.0.2", "80-81"), nil, false},
		{"container range, host 0", engine("tcp", "127.0.0.1", "0", "10.0.0.2", "80-81"), nil, false},
		{"bad host IP", engine("tcp", "127.0.0.256", "8080", "10.0.0.2", "80"), nil, false},
		{"host name as host IP", engine("tcp", "localhost", "8080", "10.0.0.2", "80"), nil, false},
		{"bad container IP", engine("tcp", "127.0.0.1", "8080", "fd00::zz", "80"), nil, false},
		{"unspecified container IP", engine("tcp", "127.0.0.1", "8080", "0.0.0.0", "80"), nil, false},
		{"missing container IP", without("-container-ip"), nil, false},
		{"missing container port", without("-container-port"), nil, false},
		{"missing host IP", without("-host-ip"), nil, false},
		{"missing host port", without("-host-port"), nil, false},
		{"no arguments", nil, nil, false},
		{"stray positional argument", ok("extra"), nil, false},
		{"unknown flag", ok("-frobnicate"), nil, false},
		{"flag without value", []string{"-proto"}, nil, false},
		{"bad duration", ok("-dial-timeout", "soon"), nil, false},
		{"negative drain", ok("-drain-timeout", "-1s"), nil, false},
		{"bad log level", ok("-log-level", "loud"), nil, false},
		{"bad log format", ok("-log-format", "xml"), nil, false},
		{"zero max flows", ok("-udp-max-flows", "0"), nil, false},
		{"port in use", engine("tcp", "127.0.0.1", busyPort, "10.0.0.2", "80"), nil, false},
		{"host IP not local", engine("tcp", "192.0.2.1", "8080", "10.0.0.2", "80"), nil, false},
		{"listen fd with nothing on fd 4", ok("-use-listen-fd"), nil, false},
		{"listen fd a regular file", ok("-use-listen-fd"), func(t *testing.T) *os.File {
			f, err := os.CreateTemp(t.TempDir(), "fd4")
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, false},
		{"listen fd a UDP socket with -proto tcp", ok("-use-listen-fd"), func(t *testing.T) *os.File {
			f, err := sockopt.Listen(sockopt.UDP, netip.AddrPortFrom(lo4, 0), sockopt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, false},
		{"listen fd a TCP socket with -proto udp", engine("udp", "127.0.0.1", "8080", "10.0.0.2", "80", "-use-listen-fd"), tcpListener("127.0.0.1"), false},
		{"listen fd IPv6 with IPv4 host IP", ok("-use-listen-fd"), tcpListener("::1"), true},
		{"listen fd IPv4 with IPv6 host IP", engine("tcp", "::1", "8080", "10.0.0.2", "80", "-use-listen-fd"), tcpListener("127.0.0.1"), false},
		{"listen fd with allocation", engine("tcp", "127.0.0.1", "0", "10.0.0.2", "80", "-use-listen-fd"), tcpListener("127.0.0.1"), false},
		{"-L with engine flags", []string{"-L", "8080:127.0.0.1:80", "-proto", "udp"}, nil, false},
		{"garbage -L", []string{"-L", "garbage"}, nil, false},
		{"-L bad port", []string{"-L", "99999:127.0.0.1:80"}, nil, false},
		{"-L bad protocol", []string{"-L", "8080:127.0.0.1:80/icmp"}, nil, false},
		{"-L unresolvable host", []string{"-L", "8080:no-such-host.invalid:80"}, nil, false},
		{"-L unequal ranges", []string{"-L", "8000-8001:127.0.0.1:80"}, nil, false},
		// -proxy-protocol
		{"proxy protocol v3", ok("-proxy-protocol", "v3"), nil, false},
		{"proxy protocol empty", ok("-proxy-protocol", ""), nil, false},
		{"proxy protocol v1 with UDP", engine("udp", "127.0.0.1", "8080", "10.0.0.2", "80", "-proxy-protocol", "v1"), nil, false},
		{"proxy protocol with SCTP", engine("sctp", "127.0.0.1", "8080", "10.0.0.2", "80", "-proxy-protocol", "v2"), nil, false},
		{"proxy protocol v1 with allocation over UDP", engine("udp", "127.0.0.1", "0", "10.0.0.2", "80", "-proxy-protocol", "v1"), nil, false},
		{"proxy protocol v1 with a UDP -L", []string{"-proxy-protocol", "v1", "-L", "8080:127.0.0.1:80", "-L", "8053:127.0.0.1:53/udp"}, nil, false},
		{"proxy protocol with an SCTP -L", []string{"-proxy-protocol", "v2", "-L", "8080:127.0.0.1:80/sctp"}, nil, false},
		{"-transparent with sctp", engine("sctp", "127.0.0.1", "8080", "10.0.0.2", "80", "-transparent"), nil, false},
		{"-transparent with -L /sctp", []string{"-transparent", "-L", "8080:127.0.0.1:80/sctp"}, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.v6 {
				requireIPv6(t)
			}
			t.Parallel()
			var sp spawn
			if tt.fd4 != nil {
				sp.extra = []*os.File{tt.fd4(t)}
			}
			begin := time.Now()
			p := start(t, sp, tt.args...)
			status := p.readStatus(t)
			code := p.exitCode(t, 5*time.Second)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("took %v to fail", d)
			}
			reason, isFail := strings.CutPrefix(status, "1\n")
			if !isFail || strings.TrimSpace(reason) == "" || strings.Contains(reason, "\n") {
				t.Errorf("fd 3: %q, want \"1\\n<one-line reason>\"", status)
			}
			stderr := p.stderr.String()
			if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || len(strings.TrimSpace(stderr)) == 0 {
				t.Errorf("stderr: %q, want one line", stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
				t.Errorf("panicked: %s", stderr)
			}
			if p.stdout.String() != "" {
				t.Errorf("stdout: %q, want nothing", p.stdout)
			}
			t.Logf("%s", strings.TrimSpace(stderr))
		})
	}
}

// TestHelpAndVersion: -h prints the three forms with an example each and
// every flag, exit 0; -v and -version print one line, exit 0.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"-help"}, {"--help"}} {
		p := start(t, spawn{noStatus: true}, args...)
		if code := p.exitCode(t, wait); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		out := p.stdout.String()
		for _, want := range []string{
			"hostproxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80",
			"-await-nat", "-L 8080:127.0.0.1:80",
			"-proto", "-host-ip", "-host-port", "-container-ip", "-container-port", "-use-listen-fd",
			"-dial-timeout", "-udp-timeout", "-udp-max-flows", "-drain-timeout", "-log-level", "-log-format", "-version",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: usage lacks %q", args, want)
			}
		}
	}
	for _, args := range [][]string{{"-v"}, {"-version"}} {
		p := start(t, spawn{noStatus: true}, args...)
		if code := p.exitCode(t, wait); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		out := p.stdout.String()
		if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "hostproxy version ") {
			t.Errorf("%v: %q, want one version line", args, out)
		}
	}
}

// TestNoNetHTTP: the binary must not link net/http (zap's root package would
// pull it in, and with it megabytes per idle process).
func TestNoNetHTTP(t *testing.T) {
	gobin := testenv.RequireCommand(t, "go")
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range bytes.Fields(out) {
		switch string(pkg) {
		case "net/http", "go.uber.org/zap", "crypto/tls":
			t.Errorf("cmd/hostproxy depends on %s", pkg)
		}
	}
}

// TestNoEncodingJSON: zapcore imports encoding/json for its own encoders,
// which hostproxy does not use; the linker must drop the encoder (about
// 200 KB of binary, nearly all of it resident in every process). The
// package's init stays: imported packages are always initialised.
func TestNoEncodingJSON(t *testing.T) {
	gobin := testenv.RequireCommand(t, "go")
	out, err := exec.Command(gobin, "tool", "nm", hostproxyBin(t)).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	if i := bytes.Index(out, []byte(" encoding/json.(*encodeState)")); i >= 0 {
		end := i + bytes.IndexByte(out[i:], '\n')
		t.Errorf("the binary links encoding/json:%s", out[i:end])
	}
}

package privilege

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// childEnv makes the test binary a child that drops with the options its
// value names and prints every thread's status.
const childEnv = "HOSTPROXY_PRIVILEGE_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child runs Drop in a process of many threads (GOMAXPROCS of busy
// goroutines started first) and prints Drop's error or every thread's
// status fields.
func child(mode string) int {
	var wg, started sync.WaitGroup
	stop := make(chan struct{})
	started.Add(4)
	for range 4 {
		wg.Go(func() {
			runtime.LockOSThread() // a thread of its own
			started.Done()
			<-stop
		})
	}
	started.Wait()
	_, err := Drop(Options{User: "nobody", KeepNetAdmin: mode == "keep", Seccomp: mode != "nofilter"})
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	defer wg.Wait()
	defer close(stop) // after reading: a locked goroutine's thread ends with it
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Println("error:", err)
			return 0
		}
		for line := range strings.Lines(string(b)) {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "Uid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp":
				fmt.Printf("%s %s\n", k, strings.Join(strings.Fields(v), " "))
			}
		}
	}
	return 0
}

// staticTest builds this package's tests with CGO_ENABLED=0, as hostproxy
// ships, so that Drop reaches every thread with AllThreadsSyscall.
func staticTest(t *testing.T) string {
	t.Helper()
	gobin := testenv.RequireCommand(t, "go")
	out := filepath.Join(t.TempDir(), "privilege.test")
	cmd := exec.Command(gobin, "test", "-c", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go test -c: %v\n%s", err, b)
	}
	return out
}

// runChild runs bin as a child dropping in mode and returns its output.
// With a wrapper (setpriv and its options), the wrapper starts bin.
func runChild(t *testing.T, bin, mode string, wrapper ...string) string {
	t.Helper()
	cmd := exec.Command(bin)
	if len(wrapper) > 0 {
		cmd = exec.Command(wrapper[0], append(append(wrapper[1:], "--"), bin)...)
	}
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	return string(out)
}

// checkChild requires want of every thread the child printed (a field
// missing from want is not checked).
func checkChild(t *testing.T, out string, want map[string]string) {
	t.Helper()
	if msg, ok := strings.CutPrefix(out, "error: "); ok {
		t.Fatal(msg)
	}
	threads := 0
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		if k == "Uid" {
			threads++
		}
		if w, ok := want[k]; ok && v != w {
			t.Errorf("thread %d: %s %s, want %s", threads, k, v, w)
		}
	}
	if threads < 5 {
		t.Errorf("%d threads, want at least 5:\n%s", threads, out)
	}
}

// TestDropEveryThread: in a static binary, on every thread of a process of
// several, Drop switches to nobody and empties every capability set, the
// bounding set included; KeepNetAdmin leaves CAP_NET_ADMIN alone in the
// permitted and effective sets; no_new_privs is set with or without the
// filter.
func TestDropEveryThread(t *testing.T) {
	testenv.RequireRoot(t)
	bin := staticTest(t)
	for _, tt := range []struct {
		mode, eff, seccomp string
	}{
		{"keep", "0000000000001000", "2"},
		{"drop", "0000000000000000", "2"},
		{"nofilter", "0000000000000000", "0"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			checkChild(t, runChild(t, bin, tt.mode), map[string]string{
				"Uid": "65534 65534 65534 65534", "CapInh": "0000000000000000", "CapPrm": tt.eff, "CapEff": tt.eff,
				"CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": tt.seccomp,
			})
		})
	}
}

// TestDropInherited: started with capabilities in the inheritable and
// ambient sets, which leaving uid 0 does not empty (the inheritable one),
// and with supplementary groups, Drop still ends with every set empty on
// every thread and no group.
func TestDropInherited(t *testing.T) {
	testenv.RequireRoot(t)
	setpriv := testenv.RequireCommand(t, "setpriv")
	bin := staticTest(t)
	for _, mode := range []string{"drop", "nofilter"} {
		t.Run(mode, func(t *testing.T) {
			out := runChild(t, bin, mode, setpriv, "--groups=1,2", "--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin")
			checkChild(t, out, map[string]string{
				"Uid": "65534 65534 65534 65534", "Groups": "", "CapInh": "0000000000000000", "CapPrm": "0000000000000000",
				"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1",
			})
		})
	}
}

// TestDropCgo: this test binary links cgo (testenv imports net), where
// AllThreadsSyscall is refused. Every thread still ends as nobody with
// empty permitted, effective and ambient sets, and the filter's TSYNC
// gives every thread no_new_privs; keeping CAP_NET_ADMIN is refused.
func TestDropCgo(t *testing.T) {
	testenv.RequireRoot(t)
	if out := runChild(t, os.Args[0], "keep"); !strings.Contains(out, "CGO_ENABLED=0") {
		t.Skip("this test binary does not link cgo")
	}
	checkChild(t, runChild(t, os.Args[0], "drop"), map[string]string{
		"Uid": "65534 65534 65534 65534", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
	})
}

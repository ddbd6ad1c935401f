package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

func TestVersionFromBuildInfo(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{
			{Key: "-buildmode", Value: "exe"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: modified},
		}
	}
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "dev"},
		{"go install @version", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"module version wins over VCS", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("true")}, "v1.2.3"},
		{"pseudo-version from a checkout",
			&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260102030405-0123456789ab+dirty"}, Settings: vcs("true")},
			"v0.0.0-20260102030405-0123456789ab+dirty"},
		{"devel, clean checkout", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")}, "0123456789ab"},
		{"devel, modified checkout", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")}, "0123456789ab-modified"},
		{"empty version, VCS", &debug.BuildInfo{Settings: vcs("false")}, "0123456789ab"},
		{"short revision kept whole", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}}}, "abc123"},
		{"devel, no VCS", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "CGO_ENABLED", Value: "0"}}}, "dev"},
	} {
		if got := versionFromBuildInfo(tc.info); got != tc.want {
			t.Errorf("%s: versionFromBuildInfo = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestVersionOfBuild builds hostproxy from a fresh git repository holding
// this checkout's files (tracked and untracked, as they are on disk) and
// checks what -version prints: the commit's revision, a mark of
// uncommitted changes once a tracked file changes, and the -ldflags
// version when one is set.
func TestVersionOfBuild(t *testing.T) {
	git := testenv.RequireCommand(t, "git")
	gobin := testenv.RequireCommand(t, "go")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	// safe.directory: a checkout owned by another user is only read here.
	list := exec.Command(git, "-c", "safe.directory="+root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	list.Dir = root
	var stderr bytes.Buffer
	list.Stderr = &stderr
	files, err := list.Output()
	testenv.Require(t, err == nil, fmt.Sprintf("needs a git checkout of hostproxy: git ls-files in %s: %v: %s",
		root, err, bytes.TrimSpace(stderr.Bytes())))

	repo := t.TempDir()
	for _, name := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		b, err := os.ReadFile(filepath.Join(root, name))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = repo
		// GOWORK=off: build the product's module alone, whatever workspace
		// file the checkout has for its tools.
		cmd.Env = append(os.Environ(), "GOWORK=off")
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.Bytes())
		}
		return out.String()
	}
	gitc := []string{"-c", "user.name=hostproxy test", "-c", "user.email=test@invalid", "-c", "commit.gpgsign=false"}
	run(git, "init", "-q")
	run(git, "add", "-A")
	run(git, append(gitc, "commit", "-q", "-m", "version test")...)
	rev := strings.TrimSpace(run(git, "rev-parse", "HEAD"))[:12]

	bin := filepath.Join(t.TempDir(), "hostproxy")
	versionOf := func(buildArgs ...string) string {
		t.Helper()
		// -buildvcs=true: a machine-wide GOFLAGS=-buildvcs=false must not
		// hide the revision this test is about.
		run(gobin, append(append([]string{"build", "-buildvcs=true", "-o", bin}, buildArgs...), "./cmd/hostproxy")...)
		out := run(bin, "-version")
		t.Logf("go build %s: %s", strings.Join(buildArgs, " "), out)
		return out
	}

	if out := versionOf(); !strings.Contains(out, rev) || strings.Contains(out, "dirty") || strings.Contains(out, "modified") {
		t.Errorf("clean checkout at %s: -version printed %q, want the revision and no mark of changes", rev, out)
	}

	readme := filepath.Join(repo, "README.md")
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(readme, append(b, "\nchanged\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := versionOf(); !strings.Contains(out, rev) || !(strings.Contains(out, "+dirty") || strings.Contains(out, "-modified")) {
		t.Errorf("modified checkout at %s: -version printed %q, want the revision marked as changed", rev, out)
	}

	if out := versionOf("-ldflags", "-X main.version=v9.8.7"); !strings.HasPrefix(out, "hostproxy version v9.8.7 (") {
		t.Errorf("-ldflags -X main.version=v9.8.7: -version printed %q", out)
	}
}

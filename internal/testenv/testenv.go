// Package testenv decides whether a test that needs something beyond Go
// (root, a command such as nft or dockerd, a kernel feature) runs, skips or
// fails.
//
// Where the requirement is missing the test skips with a one-line reason, so
// `go test ./...` passes anywhere. With HOSTPROXY_STRICT=1 in the environment
// (set by .ci/run) it fails instead, so that in CI nothing is skipped by
// accident. The one exception is a kernel without SCTP: CI runs the SCTP
// tests inside a VM whose kernel has it (hack/test-sctp.sh), so on the host they
// always skip; inside that VM HOSTPROXY_STRICT makes them fail.
package testenv

import (
	"os"
	"os/exec"
	"testing"

	"github.com/hostproxy/hostproxy/sockopt"
)

// StrictEnv is the variable that turns skips into failures.
const StrictEnv = "HOSTPROXY_STRICT"

// Strict reports whether HOSTPROXY_STRICT=1.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Require skips (or, under HOSTPROXY_STRICT=1, fails) t with reason unless ok.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if Strict() {
		t.Fatalf("%s (%s=1: required)", reason, StrictEnv)
	}
	t.Skip(reason)
}

// RequireRoot requires euid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// RequireCommand requires name on PATH and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, "needs "+name+" on PATH")
	return p
}

// RequireSCTP requires a kernel that creates SCTP sockets. On the host it
// always skips when SCTP is missing (the VM runner covers it); it fails only
// when HOSTPROXY_SCTP_VM=1, which the VM's init sets.
func RequireSCTP(t testing.TB) {
	t.Helper()
	err := sockopt.SCTPSupported()
	if err == nil {
		return
	}
	if os.Getenv("HOSTPROXY_SCTP_VM") == "1" {
		t.Fatalf("SCTP required inside the test VM: %v", err)
	}
	t.Skipf("no SCTP in this kernel (%v); run hack/test-sctp.sh to test SCTP in a VM", err)
}

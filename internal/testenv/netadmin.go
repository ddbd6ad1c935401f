package testenv

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// capNetAdmin is CAP_NET_ADMIN's bit in the capability sets.
const capNetAdmin = 12

// HasNetAdmin reports whether the process holds CAP_NET_ADMIN in its
// effective set (the CapEff line of /proc/self/status); false where that
// cannot be read.
func HasNetAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		return err == nil && eff&(1<<capNetAdmin) != 0
	}
	return false
}

// RequireNetAdmin requires CAP_NET_ADMIN: on this kernel, attaching a
// socket filter (the drop-all filter of -await-nat) to a TCP socket needs
// it.
func RequireNetAdmin(t testing.TB) {
	t.Helper()
	Require(t, HasNetAdmin(), "needs CAP_NET_ADMIN (attaching a socket filter to a TCP socket)")
}

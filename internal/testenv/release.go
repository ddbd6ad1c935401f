package testenv

import (
	"os"
	"runtime"
	"strings"
)

// ReleaseEnv returns the environment for `go build ./cmd/hostproxy` as the
// README installs it, so that benchmarks and end-to-end tests measure the
// shipped build: os.Environ() plus
//
//   - CGO_ENABLED=0: static, which starts faster and idles about 1.4 MiB
//     smaller than a cgo build;
//   - GOEXPERIMENT=nogreenteagc on Go 1.26: without the Green Tea garbage
//     collector, whose code and per-span mark bits cost every idle process
//     about 160 KiB of RSS. hostproxy's heap is a few hundred KiB and
//     collects rarely, so Green Tea's gains do not apply. Go 1.27 is expected
//     to drop the opt-out, so it is not added for other versions;
//   - for linux/amd64 and linux/arm64, -ldflags=-E=main.entry in GOFLAGS:
//     the entry point that clears the capability bounding set before the
//     runtime starts (cmd/hostproxy/entry_linux.go).
//
// A setting already in the environment wins (for GOFLAGS: one that has
// -ldflags). goflags are added to GOFLAGS.
func ReleaseEnv(goflags ...string) []string {
	env := os.Environ()
	if _, set := os.LookupEnv("CGO_ENABLED"); !set {
		env = append(env, "CGO_ENABLED=0")
	}
	if _, set := os.LookupEnv("GOEXPERIMENT"); !set && strings.HasPrefix(runtime.Version(), "go1.26") {
		env = append(env, "GOEXPERIMENT=nogreenteagc")
	}
	flags := strings.Fields(os.Getenv("GOFLAGS"))
	goos, goarch := os.Getenv("GOOS"), os.Getenv("GOARCH")
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	if goos == "linux" && (goarch == "amd64" || goarch == "arm64") && !strings.Contains(os.Getenv("GOFLAGS"), "-ldflags") {
		flags = append(flags, EntryLDFlags)
	}
	flags = append(flags, goflags...)
	if len(flags) > 0 {
		env = append(env, "GOFLAGS="+strings.Join(flags, " "))
	}
	return env
}

// EntryLDFlags is the linker flag of the shipped build on linux/amd64 and
// linux/arm64 (ReleaseEnv).
const EntryLDFlags = "-ldflags=-E=main.entry"

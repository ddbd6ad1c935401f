// Command hostproxy is a userland port proxy for container hosts: a drop-in
// replacement for Docker's docker-proxy, with port allocation built in, and a
// standalone port forwarder.
//
// It runs in one of three forms, chosen by its flags:
//
//	hostproxy -proto tcp -host-ip IP -host-port N -container-ip IP -container-port N [-use-listen-fd]
//	hostproxy -proto tcp -host-ip IP [-host-ip IP...] -host-port 0|N|A-B -container-ip IP -container-port N|C-D [-await-nat]
//	hostproxy -L [BIND:]PORT[-END]:HOST:PORT[-END][/tcp|/udp|/sctp] [-L ...]
//
// The first is docker-proxy's command line and process protocol: a status
// pipe on fd 3 ("0\n" or "1\n<reason>"), the engine's listening socket on
// fd 4 with -use-listen-fd, SIGINT/SIGTERM to stop. The second lets
// hostproxy choose the port and report it on fd 3 ("0\n<port>\n"), its
// sockets silent until SIGUSR1 with -await-nat. The third forwards like
// ssh -L. Run hostproxy -h for the details.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	_ "github.com/hostproxy/hostproxy/internal/stackgrow" // initialized first: see its doc
)

// version is the version a release build sets at link time:
// -ldflags "-X main.version=v1.2.3". Read it through buildVersion, which
// falls back to the build info when it is empty.
var version string

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "hostproxy version %s (%s %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildVersion is the version of this binary: the one set with -ldflags,
// else what its build info says. It reads the build info on each call, so
// nothing is parsed in a process that never asks.
func buildVersion() string {
	if version != "" {
		return version
	}
	info, _ := debug.ReadBuildInfo()
	return versionFromBuildInfo(info)
}

// versionFromBuildInfo names the build described by info (nil when the
// binary has none):
//   - the main module's version, as `go install ...@v1.2.3` records it (and
//     as Go 1.24+ derives it from the repository's tag or commit, with
//     "+dirty" for uncommitted changes, when it stamps VCS information);
//   - otherwise the VCS revision, shortened to 12 characters, with
//     "-modified" when the working tree had uncommitted changes;
//   - otherwise "dev" (for example a build with -buildvcs=false, or from a
//     git worktree, where Go records no VCS information).
func versionFromBuildInfo(info *debug.BuildInfo) string {
	if info == nil {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "-modified"
	}
	return rev
}

const usageHead = `hostproxy: a userland port proxy for container hosts (a docker-proxy
drop-in with port allocation) and a standalone port forwarder.

Usage:

  1. docker-proxy compatible: one mapping, as an engine starts it
       hostproxy -proto tcp|udp|sctp -host-ip IP -host-port N \
                 -container-ip IP -container-port N [-use-listen-fd]
     example:
       hostproxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80
     Writes "0\n" to fd 3 once serving (or "1\n<reason>" and exits 1).
     With -use-listen-fd it serves the socket passed as fd 4 and binds nothing.

  2. Allocation: hostproxy binds and chooses the port, on one or more host IPs
       hostproxy -proto tcp|udp|sctp -host-ip IP [-host-ip IP ...] \
                 -host-port 0|N|A-B -container-ip IP -container-port N|C-D [-await-nat]
     example:
       hostproxy -proto tcp -host-ip 0.0.0.0 -host-ip :: -host-port 8000-8100 \
                 -container-ip 172.17.0.2 -container-port 80 -await-nat
     -host-port 0 is any port of the kernel's ephemeral range, A-B any free port
     in A-B, and A-B with -container-port C-D maps every port to its partner.
     Writes "0\n<port>\n" (or "0\n<first>-<last>\n") to fd 3. With -await-nat
     the sockets drop every packet until the process gets SIGUSR1.

  3. Standalone forwarder, ssh -L syntax, any number of mappings
       hostproxy -L [BIND:]PORT[-END]:HOST:PORT[-END][/tcp|/udp|/sctp] [-L ...]
     example:
       hostproxy -L 8080:127.0.0.1:80 -L 0.0.0.0:5353:[fd00::53]:53/udp
     Without BIND it listens on 127.0.0.1 and ::1 only; 0.0.0.0: or [::]:
     exposes the port. IPv6 addresses go in brackets. HOST is resolved once.

  SIGINT or SIGTERM stops hostproxy (exit 0) after letting open connections
  finish for -drain-timeout; a second signal stops it at once. Start-up
  errors exit 1 with one line on stderr.

Flags:
`

// printUsage writes the usage text and every flag with its default.
func printUsage(w io.Writer) {
	io.WriteString(w, usageHead)
	f := newFlags()
	f.set.SetOutput(w)
	f.set.PrintDefaults()
}

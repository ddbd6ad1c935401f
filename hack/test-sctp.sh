#!/usr/bin/env bash
# hack/test-sctp.sh runs every SCTP test of the repository inside the SCTP
# test VM (hack/sctp-vm), one VM boot per package, and fails if any fails.
#
#	hack/test-sctp.sh          # all SCTP tests
#	hack/test-sctp.sh -v       # verbose; other arguments go to every test
#	                           # binary as is (e.g. -test.run=Echo)
#
# On a machine whose own kernel has SCTP, plain `go test ./...` runs the same
# tests natively; this script is for kernels without it (CI, this host).
#
# Packages and the tests run from each: proxy/sctp (all), sockopt, alloc and
# cmd/hostproxy (tests whose name contains SCTP). The test binaries are
# static: with the race detector when a C toolchain can link one statically
# (HOSTPROXY_VM_RACE=auto, the default; 1 requires it, 0 turns it off),
# otherwise CGO_ENABLED=0. cmd/hostproxy's tests get a static hostproxy
# binary through HOSTPROXY_BIN. A package (or the hostproxy binary) that does
# not build is reported and skipped, except proxy/sctp and sockopt, which must
# build.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
for a in "$@"; do
	case $a in
	-v) args+=(-test.v) ;;
	*) args+=("$a") ;;
	esac
done

out=$(mktemp -d "${TMPDIR:-/tmp}/test-sctp.XXXXXX")
trap 'rm -rf "$out"' EXIT

race=${HOSTPROXY_VM_RACE:-auto}
buildflags=()
case $race in
0) ;;
1 | auto)
	if command -v "${CC:-cc}" >/dev/null 2>&1 &&
		CGO_ENABLED=1 go test -race -c -o "$out/probe.test" \
			-ldflags='-linkmode=external -extldflags=-static' ./proxy/sctp/ >"$out/probe.log" 2>&1 &&
		hack/sctp-vm --is-static "$out/probe.test"; then
		buildflags=(-race -ldflags='-linkmode=external -extldflags=-static')
		export CGO_ENABLED=1
	elif [ "$race" = 1 ]; then
		echo "test-sctp: HOSTPROXY_VM_RACE=1 but a static race binary cannot be built:" >&2
		cat "$out/probe.log" >&2
		exit 1
	fi
	;;
*)
	echo "test-sctp: HOSTPROXY_VM_RACE=$race: want auto, 0 or 1" >&2
	exit 2
	;;
esac
if [ ${#buildflags[@]} -eq 0 ]; then
	export CGO_ENABLED=0
	echo "--- test-sctp: static test binaries without the race detector"
else
	echo "--- test-sctp: static test binaries with the race detector"
fi

hack/sctp-vm --prepare

skipped=()
failed=()

# The hostproxy binary for cmd/hostproxy's tests: always static.
if CGO_ENABLED=0 go build -o "$out/hostproxy" ./cmd/hostproxy >"$out/hostproxy.log" 2>&1; then
	hostproxy=$out/hostproxy
else
	hostproxy=
	echo "--- test-sctp: SKIPPING cmd/hostproxy: the hostproxy binary does not build:" >&2
	sed 's/^/    /' "$out/hostproxy.log" >&2
	skipped+=(cmd/hostproxy)
fi

# run PKG RUN-PATTERN MUST-BUILD
run() {
	local pkg=$1 pattern=$2 must=$3 name
	name=$(echo "$pkg" | tr / _)
	if [ "$pkg" = cmd/hostproxy ] && [ -z "$hostproxy" ]; then
		return
	fi
	if ! go test "${buildflags[@]}" -c -o "$out/$name.test" "./$pkg/" >"$out/$name.log" 2>&1; then
		if [ "$must" = 1 ]; then
			echo "--- test-sctp: FAIL $pkg: the tests do not build:" >&2
			sed 's/^/    /' "$out/$name.log" >&2
			failed+=("$pkg")
		else
			echo "--- test-sctp: SKIPPING $pkg: the tests do not build:" >&2
			sed 's/^/    /' "$out/$name.log" >&2
			skipped+=("$pkg")
		fi
		return
	fi
	if [ ! -e "$out/$name.test" ]; then
		echo "--- test-sctp: $pkg has no tests"
		return
	fi
	local testargs=(-test.timeout=5m)
	[ -n "$pattern" ] && testargs+=("-test.run=$pattern")
	echo "--- test-sctp: $pkg (in the VM)"
	local start=$SECONDS
	if HOSTPROXY_BIN=$hostproxy hack/sctp-vm "$out/$name.test" "${testargs[@]}" ${args[@]+"${args[@]}"}; then
		echo "--- test-sctp: ok $pkg ($((SECONDS - start))s)"
	else
		echo "--- test-sctp: FAIL $pkg ($((SECONDS - start))s)" >&2
		failed+=("$pkg")
	fi
}

total=$SECONDS
run proxy/sctp '' 1
run sockopt SCTP 1
if [ -d alloc ]; then run alloc SCTP 0; else skipped+=(alloc); fi
if [ -d cmd/hostproxy ]; then run cmd/hostproxy SCTP 0; elif [ -n "$hostproxy" ]; then skipped+=(cmd/hostproxy); fi

echo "--- test-sctp: $((SECONDS - total))s in all (builds and VM runs)"
if [ ${#skipped[@]} -gt 0 ]; then
	echo "--- test-sctp: SKIPPED (do not build yet): ${skipped[*]}" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "--- test-sctp: FAILED: ${failed[*]}" >&2
	exit 1
fi

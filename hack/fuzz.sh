#!/bin/sh
# Runs every Fuzz target of the product's packages (everything but the
# benchmark and the e2e tooling) for FUZZTIME each (default 3s), one after
# the other: 15 targets, each about 2 s of build and start-up on top of its
# fuzzing time, about 80 s on 2 CPUs. A crasher fails
# the script; go test writes it under the package's testdata/fuzz, from where
# it joins the seed corpus once committed.
#
#   hack/fuzz.sh            # every target
#   FUZZTIME=1m hack/fuzz.sh
set -eu
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-3s}
start=$(date +%s)
n=0
for dir in $(go list -f '{{.Dir}}' ./... | grep -v -e /bench -e /e2e); do
	pkg=./${dir#"$PWD"/}
	[ "$dir" = "$PWD" ] && pkg=.
	# The Fuzz targets of the package's test files (all of them build on
	# Linux, where this runs).
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$dir"/*_test.go 2>/dev/null); do
		echo "== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 2 "$pkg" >"${TMPDIR:-/tmp}/fuzz.$$.log" 2>&1 || {
			cat "${TMPDIR:-/tmp}/fuzz.$$.log"
			rm -f "${TMPDIR:-/tmp}/fuzz.$$.log"
			echo "hack/fuzz.sh: $target in $pkg failed (dir $dir)" >&2
			exit 1
		}
		n=$((n + 1))
	done
done
rm -f "${TMPDIR:-/tmp}/fuzz.$$.log"
echo "hack/fuzz.sh: $n targets, $(($(date +%s) - start)) s"

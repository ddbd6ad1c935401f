#!/bin/sh
# Runs every Fuzz target of the product's packages (everything but the
# benchmark and the e2e tooling) for FUZZTIME each (default 3s), one after
# the other: 14 targets, each about 2 s of build and start-up on top of its
# fuzzing time, about 80 s on 2 CPUs. A crasher fails
# the script; go test writes it under the package's testdata/fuzz, from where
# it joins the seed corpus once committed. A target that fails with Go's
# fuzzing-coordinator deadline race and no input written runs again.
#
#   hack/fuzz.sh            # every target
#   FUZZTIME=1m hack/fuzz.sh
set -eu
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-3s}
log=${TMPDIR:-/tmp}/fuzz.$$.log
start=$(date +%s)
n=0
for dir in $(go list -f '{{.Dir}}' ./... | grep -v -e /bench -e /e2e); do
	pkg=./${dir#"$PWD"/}
	[ "$dir" = "$PWD" ] && pkg=.
	# The Fuzz targets of the package's test files (all of them build on
	# Linux, where this runs).
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$dir"/*_test.go 2>/dev/null); do
		echo "== $pkg $target ($fuzztime)"
		attempt=1
		until go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 2 "$pkg" >"$log" 2>&1; do
			# Go before 1.27 can fail a target that found nothing with
			# "context deadline exceeded" as -fuzztime ends (a race in its
			# fuzzing coordinator, go.dev/issue/75804). A real failure
			# writes its input first ("Failing input written to"); only
			# the bare deadline is run again, twice at most.
			if [ $attempt -lt 3 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log"; then
				echo "   the fuzzing coordinator's deadline race (go.dev/issue/75804), nothing found: again"
				attempt=$((attempt + 1))
				continue
			fi
			cat "$log"
			rm -f "$log"
			echo "hack/fuzz.sh: $target in $pkg failed (dir $dir)" >&2
			exit 1
		done
		n=$((n + 1))
	done
done
rm -f "$log"
echo "hack/fuzz.sh: $n targets, $(($(date +%s) - start)) s"

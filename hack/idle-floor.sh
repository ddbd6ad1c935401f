#!/bin/bash
# idle-floor.sh [SPAWNS] [ROUNDS]: idle memory of hostproxy beside the floor
# of what it is built from and beside docker-proxy, measured in one run.
#
# Each binary is started SPAWNS times (default 9) in docker-proxy's form on
# a loopback port, with fd 3 a pipe; 0.3 s later /proc/PID/smaps_rollup is
# read and the process stopped. Rounds (default 3) interleave the binaries.
# Printed per binary and round: the median RSS, its Anonymous part and Pss,
# in KiB. The programs:
#   bare       hack/idlefloor/bare: listen, signals, fd 3, accept
#   logging    hack/idlefloor/logging: bare plus hostproxy's zapcore logging
#   hostproxy  ./cmd/hostproxy as the README installs it
#   docker-proxy  /usr/sbin/docker-proxy (Debian's docker.io), if present
# All Go programs are built alike (testenv.ReleaseEnv: CGO_ENABLED=0 and,
# on Go 1.26, GOEXPERIMENT=nogreenteagc).
set -euo pipefail
spawns=${1:-9}
rounds=${2:-3}
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

export CGO_ENABLED=${CGO_ENABLED:-0}
if [[ -z ${GOEXPERIMENT+x} && $(go env GOVERSION) == go1.26* ]]; then
	export GOEXPERIMENT=nogreenteagc
fi
go build -o "$dir/bare" ./hack/idlefloor/bare
go build -o "$dir/logging" ./hack/idlefloor/logging
go build -o "$dir/hostproxy" ./cmd/hostproxy

port=$((21000 + RANDOM % 8000))
# measure NAME ARGV...: one spawn, prints "rss anon pss".
measure() {
	local pid
	"$@" 3> >(cat >/dev/null) >/dev/null 2>&1 &
	pid=$!
	sleep 0.3
	if [[ -r /proc/$pid/smaps_rollup ]]; then
		awk '/^Rss:/{r=$2} /^Pss:/{p=$2} /^Anonymous:/{a=$2} END{print r, a, p}' /proc/$pid/smaps_rollup
	fi
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
# median NAME ARGV... (ARGV may contain @PORT): SPAWNS spawns, the median line.
median() {
	local name=$1 i args
	shift
	for ((i = 0; i < spawns; i++)); do
		port=$((port + 1 > 29000 ? 21000 : port + 1))
		args=("${@//@PORT/$port}")
		measure "${args[@]}"
	done | sort -n | awk -v name="$name" '{r[NR]=$1; a[NR]=$2; p[NR]=$3}
		END {m = int((NR + 1) / 2); if (NR) printf "%-13s rss %5d  anon %5d  pss %5d KiB (of %d)\n", name, r[m], a[m], p[m], NR}'
}

compat=(-proto tcp -host-ip 127.0.0.1 -host-port @PORT -container-ip 127.0.0.1 -container-port 9)
for ((round = 1; round <= rounds; round++)); do
	echo "round $round"
	median bare "$dir/bare" 127.0.0.1:@PORT
	median logging "$dir/logging" 127.0.0.1:@PORT
	median hostproxy "$dir/hostproxy" "${compat[@]}"
	if [[ -x /usr/sbin/docker-proxy ]]; then
		median docker-proxy /usr/sbin/docker-proxy "${compat[@]}"
	fi
done

#!/bin/bash
# Where the machine's CPU goes during a round of the bench's tcp-conn-rate
# test, per peer: the load (the bench process: its clients and its echo
# server), the proxy (every process the bench started for the peer), the
# rest, and idle, over 3 s in the middle of a 6 s round. It shows whether
# the connection rate is bound by CPU or by the latency of each connection.
#
# Usage, from the repository root:
#   bash hack/conn-rate-split.sh [-parallel N] [-runs K] PEER...
# e.g. bash hack/conn-rate-split.sh -runs 3 hostproxy nginx
# PEER is a name the bench knows (hostproxy, nginx, haproxy, docker-proxy,
# direct); the peers take turns, K times.
set -eu

parallel=4
runs=1
while [ $# -gt 0 ]; do
	case $1 in
	-parallel) parallel=$2; shift 2 ;;
	-runs) runs=$2; shift 2 ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { echo "usage: $0 [-parallel N] [-runs K] PEER..." >&2; exit 1; }
[ -r /proc/stat ] || { echo "$0: needs Linux's /proc" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd bench && go build -o "$tmp/bench" .)
CGO_ENABLED=0 GOEXPERIMENT=nogreenteagc go build -ldflags=-E=main.entry -o "$tmp/hostproxy" ./cmd/hostproxy

hz=$(getconf CLK_TCK)
# cpu PID: user+system ticks of a process, 0 once it is gone.
cpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# descendants PID: every process below PID.
descendants() {
	local c
	for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}
sum() { local t=0 p; for p in "$@"; do t=$((t + $(cpu "$p"))); done; echo $t; }
# machine: busy and total ticks over every CPU.
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

printf '%-12s %10s %6s %8s %8s %8s %8s\n' peer conn/s busy load proxy rest idle
for _ in $(seq "$runs"); do
	for peer in "$@"; do
		"$tmp/bench" -hostproxy "$tmp/hostproxy" -peers "$peer" -tests tcp-conn-rate \
			-rounds 1 -duration 6s -parallel "$parallel" >"$tmp/out" 2>&1 &
		bp=$!
		# The round starts once the peer's process is up (direct has
		# none); its warm-up is 0.2 s, and the sample begins 1.5 s later.
		if [ "$peer" != direct ]; then
			for _ in $(seq 200); do
				[ -n "$(descendants $bp)" ] && break
				sleep 0.05
			done
		fi
		sleep 1.5
		procs=$(descendants $bp)
		read -r b1 t1 < <(machine)
		l1=$(cpu $bp)
		p1=$(sum $procs)
		sleep 3
		read -r b2 t2 < <(machine)
		l2=$(cpu $bp)
		p2=$(sum $procs)
		wait $bp || { cat "$tmp/out" >&2; exit 1; }
		rate=$(awk -v p="$peer" '$1 == "tcp-conn-rate" && $2 == p {print $3}' "$tmp/out")
		total=$((t2 - t1)) busy=$((b2 - b1)) load=$((l2 - l1)) prx=$((p2 - p1))
		# CPUs in use on average over the sample, of all the machine's.
		awk -v peer="$peer" -v rate="$rate" -v t="$total" -v b="$busy" -v l="$load" -v p="$prx" -v hz="$hz" '
			BEGIN { s = 3 * hz
				printf "%-12s %10s %5.0f%% %8.2f %8.2f %8.2f %8.2f\n", peer, rate, 100 * b / t, l / s, p / s, (b - l - p) / s, (t - b) / s }'
	done
done
echo "load, proxy, rest (the kernel's own threads and every other process), idle: CPUs on average over the 3 s sample;"
echo "the counters are read a few ms apart, so rest can come out slightly below zero"

#!/bin/bash
# transparent-cost.sh [CONNS]: what -transparent adds per TCP connection,
# measured beside plain mode in one run.
#
# Three namespaces (client 10.79.1.2, host 10.79.1.1 / 10.79.2.1,
# container 10.79.2.2; veth, no DNAT) with the host rules of
# docs/client-address.md. hostproxy -L 10.79.1.1:8000:10.79.2.2:8080
# relays to the echo server of e2e/internal/echoserver (which writes the
# peer it sees first); the client opens CONNS (default 2000) connections one
# after another, each reading that line and closing.
#
# For each mode (plain, -transparent), printed:
#   - the system calls hostproxy made (strace -c -f) for those connections,
#     per connection, for the calls that differ or matter;
#   - without strace, the wall time of CONNS sequential connections, five
#     rounds interleaved, what the container saw on the last one, and the
#     median per mode.
# Needs root, ip, nft, strace.
set -euo pipefail
conns=${1:-2000}
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
tag=hptc$$
table=hp_tproxy_$$
cleanup() {
	for ns in cl host ctr; do
		ip netns pids "$tag-$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
		ip netns del "$tag-$ns" 2>/dev/null || true
	done
	rm -rf "$dir"
}
trap cleanup EXIT

export CGO_ENABLED=${CGO_ENABLED:-0}
if [[ -z ${GOEXPERIMENT+x} && $(go env GOVERSION) == go1.26* ]]; then
	export GOEXPERIMENT=nogreenteagc
fi
go build -o "$dir/hostproxy" ./cmd/hostproxy
go build -o "$dir/echoserver" ./e2e/internal/echoserver

for ns in cl host ctr; do
	ip netns add "$tag-$ns"
	ip -n "$tag-$ns" link set lo up
done
ip link add tc-c netns "$tag-cl" type veth peer name tc-h0 netns "$tag-host"
ip link add tc-k netns "$tag-ctr" type veth peer name tc-h1 netns "$tag-host"
ip -n "$tag-cl" addr add 10.79.1.2/24 dev tc-c
ip -n "$tag-host" addr add 10.79.1.1/24 dev tc-h0
ip -n "$tag-host" addr add 10.79.2.1/24 dev tc-h1
ip -n "$tag-ctr" addr add 10.79.2.2/24 dev tc-k
for l in "cl tc-c" "host tc-h0" "host tc-h1" "ctr tc-k"; do
	set -- $l
	ip -n "$tag-$1" link set "$2" up
done
ip -n "$tag-cl" route add default via 10.79.1.1
ip -n "$tag-ctr" route add default via 10.79.2.1
ip netns exec "$tag-host" sysctl -qw net.ipv4.ip_forward=1
# Tens of thousands of connections leave as many TIME_WAIT sockets on the
# client and on the host (hostproxy closes the backend side first); with
# the default port range, connect's search for a free port then takes
# seconds in either mode. A wide range and tw_reuse keep that out of the
# figures.
for ns in cl host; do
	ip netns exec "$tag-$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
done
ip netns exec "$tag-host" nft -f - <<NFT
table inet $table {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto { tcp, udp } socket transparent 1 meta mark set 0x1
	}
}
NFT
ip -n "$tag-host" rule add fwmark 0x1 lookup 100
ip -n "$tag-host" route add local 0.0.0.0/0 dev lo table 100

ip netns exec "$tag-ctr" "$dir/echoserver" -ip 10.79.2.2 -tcp 8080 -udp 5353 >/dev/null &

# connect N: N sequential connections from the client, each reading the
# line the container writes first; prints the last line.
connect() {
	ip netns exec "$tag-cl" bash -c '
		for ((i = 0; i < '"$1"'; i++)); do
			exec 3<>/dev/tcp/10.79.1.1/8000 || exit 1
			read -r line <&3
			exec 3<&-
		done
		echo "$line"'
}

# start [WRAPPER...] -- FLAGS: hostproxy in the host namespace, ready.
start() {
	local wrap=()
	while [[ $1 != -- ]]; do wrap+=("$1"); shift; done
	shift
	ip netns exec "$tag-host" "${wrap[@]}" "$dir/hostproxy" -L 10.79.1.1:8000:10.79.2.2:8080 -drain-timeout 0s -log-level info "$@" 2>>"$dir/stderr" &
	pid=$!
	for ((i = 0; i < 100; i++)); do
		[[ -n $(ip netns exec "$tag-host" ss -Htln src 10.79.1.1:8000) ]] && return
		sleep 0.05 # polling for the listening socket
	done
	echo "hostproxy did not start" >&2
	exit 1
}
# stop ends hostproxy with SIGTERM (under strace, the tracer's child) and
# waits for the wrapper too.
stop() {
	local target
	target=$(pgrep -P "$pid" || echo "$pid")
	kill -TERM "$target" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

echo "== system calls per connection (strace -c -f, $conns sequential connections)"
for mode in plain transparent; do
	flags=()
	[[ $mode == transparent ]] && flags=(-transparent)
	start strace -f -c -o "$dir/$mode.strace" -- "${flags[@]}"
	connect "$conns" >/dev/null
	stop
	# strace -c may have been signalled together with hostproxy: wait for its file.
	for ((i = 0; i < 100; i++)); do grep -q total "$dir/$mode.strace" 2>/dev/null && break; sleep 0.05; done
	echo "-- $mode"
	awk -v n="$conns" '$NF ~ /^(socket|bind|setsockopt|connect|accept4|getsockopt|getsockname|getpeername|close|epoll_ctl|splice|read|write|shutdown)$/ {
		calls = ($4 ~ /^[0-9]+$/) ? $4 : $3; printf "   %-12s %8d  %.2f per connection\n", $NF, calls, calls / n }' "$dir/$mode.strace"
	awk '$NF == "total" { print "   total calls", ($4 ~ /^[0-9]+$/) ? $4 : $3 }' "$dir/$mode.strace"
done

rounds=5
declare -A times
echo "== wall time of $conns sequential connections (no strace), $rounds rounds interleaved"
for ((round = 1; round <= rounds; round++)); do
	for mode in plain transparent; do
		flags=()
		[[ $mode == transparent ]] && flags=(-transparent)
		start -- "${flags[@]}"
		begin=$(date +%s%N)
		seen=$(connect "$conns")
		end=$(date +%s%N)
		stop
		ms=$(((end - begin) / 1000000))
		times[$mode]+="$ms "
		echo "   round $round $mode: ${ms} ms, $((conns * 1000 / (ms > 0 ? ms : 1))) conn/s; the container saw $seen"
	done
done
for mode in plain transparent; do
	median=$(tr ' ' '\n' <<<"${times[$mode]}" | grep . | sort -n | sed -n "$(((rounds + 1) / 2))p")
	echo "   median $mode: ${median} ms, $((conns * 1000 / (median > 0 ? median : 1))) conn/s"
done
if [[ -s $dir/stderr ]]; then
	echo "== hostproxy's log (info and above)"
	sort "$dir/stderr" | uniq -c | sort -rn | head -20
fi

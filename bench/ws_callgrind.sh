#!/bin/sh
# ws_callgrind.sh - instructions the broker executes per QoS 0 message, TCP and WebSocket,
# counted by callgrind (repeatable, unlike wall-clock rates on a shared machine).
#
# usage: bench/ws_callgrind.sh [MIDGE_BIN] [SIZE]
#   MIDGE_BIN  default build-h5/midge (build it -O2: RelWithDebInfo)
#   SIZE       payload bytes, default 32
#
# For each direction (publisher-subscriber: tcp-tcp, ws-tcp, tcp-ws, ws-ws) the broker runs
# twice under callgrind with bench/ws_callgrind.py as the load, once with N1 and once with
# N2 messages; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one message with start-up,
# connection set-up and shutdown cancelled out. Prints one line per direction and the
# throughput ratios WebSocket/TCP (instructions of TCP->TCP over those of the direction).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build-h5/midge}
size=${2:-32}
N1=${N1:-2000}
N2=${N2:-12000}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/midge.conf" <<EOF
listener 0 127.0.0.1
listener 0 127.0.0.1
protocol websockets
allow_anonymous true
sys_interval 0
EOF

# Ir of one broker run carrying $2 messages in direction $1.
run() {
    out="$tmp/cg.$1.$2"
    log="$tmp/log.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" -c "$tmp/midge.conf" -v \
        >"$log" 2>&1 &
    vg=$!
    i=0
    while [ "$(grep -c 'listening on' "$log" || true)" -lt 2 ]; do
        i=$((i + 1))
        [ $i -lt 300 ] || { echo "broker did not start: $(cat "$log")" >&2; exit 1; }
        sleep 0.1
    done
    tcp=$(grep 'listening on' "$log" | grep '(mqtt)' | sed 's/.*:\([0-9]*\) (.*/\1/')
    ws=$(grep 'listening on' "$log" | grep '(websockets)' | sed 's/.*:\([0-9]*\) (.*/\1/')
    "$py" "$here/ws_callgrind.py" "$1" "$tcp" "$ws" "$2" "$size"
    kill -TERM $vg
    wait $vg || true
    grep '^totals:' "$out" | awk '{print $2}'
}

printf '%-8s %14s\n' direction 'Ir/message'
tcp_tcp=
for dir in tcp-tcp ws-tcp tcp-ws ws-ws; do
    a=$(run "$dir" "$N1")
    b=$(run "$dir" "$N2")
    per=$(( (b - a) / (N2 - N1) ))
    [ -n "$tcp_tcp" ] || tcp_tcp=$per
    ratio=$(awk -v t="$tcp_tcp" -v p="$per" 'BEGIN { printf "%.0f%%", 100 * t / p }')
    printf '%-8s %14d   throughput vs tcp-tcp: %s\n' "$dir" "$per" "$ratio"
done

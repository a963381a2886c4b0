#!/usr/bin/env bash
# insn.sh - instructions midge executes per delivered message in scenario A (16 publishers,
# 16 subscribers, 16 topics, QoS 0, 64-byte payloads, saturated; docs/benchmarks.md), for a
# build of any architecture, counted under qemu-user by bench/cross/qemu_insn.c (valgrind
# cannot run ARM code here). Instruction counts, not times: repeatable on a shared machine.
#
# usage: bench/cross/insn.sh ARCH MIDGE_BIN [BENCH_BIN]
#   ARCH       x86_64 (qemu-x86_64, or callgrind with TOOL=callgrind), arm64 (qemu-aarch64)
#              or armhf (qemu-arm)
#   BENCH_BIN  the load generator, native (default build/bench/midge-bench)
#   D1, D2     the two run lengths in seconds (default 1 and 3)
#
# The broker runs twice, once for D1 and once for D2 seconds of load (plus 0.5 s warm-up);
# each run's total instructions I and deliveries M (midge's own count in its last log line)
# give (I2 - I1) / (M2 - M1): the cost of one message, start-up, connection set-up and
# shutdown cancelled out. Prints one line: ARCH insns_per_msg N (M1 M2 I1 I2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=${1:?usage: insn.sh ARCH MIDGE_BIN [BENCH_BIN]}
bin=${2:?usage: insn.sh ARCH MIDGE_BIN [BENCH_BIN]}
bench=${3:-$here/../../build/bench/midge-bench}
D1=${D1:-1}
D2=${D2:-3}
TOOL=${TOOL:-qemu}
case $arch in
x86_64) qemu=qemu-x86_64 ;;
arm64) qemu=qemu-aarch64 ;;
armhf) qemu=qemu-arm ;;
*) echo "insn.sh: unknown ARCH $arch" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -std=c11 -O2 -shared -fPIC -o "$tmp/qemu_insn.so" "$here/qemu_insn.c"
# Scenario A's broker configuration (bench/compare.sh), on a free loopback port.
cat >"$tmp/midge.conf" <<EOF
listener 0 127.0.0.1
allow_anonymous true
max_inflight_messages 20
max_queued_messages 1000
persistence false
connection_messages false
sys_interval 0
log_dest stderr
log_type error
log_type warning
log_type notice
EOF

# run SECONDS: prints "INSTRUCTIONS DELIVERIES" for one broker run under load.
run() {
    local log="$tmp/log.$1" count="$tmp/insns.$1" pid port i=0
    if [[ $TOOL == callgrind ]]; then
        valgrind --tool=callgrind --callgrind-out-file="$count" "$bin" -c "$tmp/midge.conf" \
            >"$log" 2>&1 &
    else
        "$qemu" -plugin "$tmp/qemu_insn.so,out=$count" "$bin" -c "$tmp/midge.conf" >"$log" 2>&1 &
    fi
    pid=$!
    until port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) (mqtt).*/\1/p' "$log") &&
        [[ -n $port ]]; do
        i=$((i + 1))
        ((i < 300)) || { echo "broker did not start: $(cat "$log")" >&2; kill "$pid"; exit 1; }
        sleep 0.1
    done
    "$bench" pubsub --port "$port" --duration "$1" --warmup 0.5 --size 64 --publishers 16 \
        --subscribers 16 --topics 16 --qos 0 >"$tmp/bench.$1" 2>&1 ||
        { cat "$tmp/bench.$1" >&2; kill "$pid"; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || { echo "broker exited with $?: $(tail -5 "$log")" >&2; exit 1; }
    local sent
    sent=$(sed -n 's/.*midge stopped (\([0-9]*\) messages received, \([0-9]*\) sent).*/\2/p' "$log")
    if [[ $TOOL == callgrind ]]; then
        echo "$(awk '/^totals:/ {print $2}' "$count") $sent"
    else
        echo "$(awk '{print $2}' "$count") $sent"
    fi
}

read -r i1 m1 < <(run "$D1")
read -r i2 m2 < <(run "$D2")
awk -v a="$arch" -v t="$TOOL" -v i1="$i1" -v i2="$i2" -v m1="$m1" -v m2="$m2" 'BEGIN {
    printf "%s (%s) insns_per_msg %.0f (deliveries %d, %d; instructions %.0f, %.0f)\n",
        a, t, (i2 - i1) / (m2 - m1), m1, m2, i1, i2 }'

#!/usr/bin/env bash
# conns.sh - memory per idle connection (scenario F of docs/benchmarks.md: each connection
# CONNECTs and SUBSCRIBEs to its own topic, then idles) for a build of any architecture,
# the broker running under qemu-user (or natively with ARCH=native). The figure is the
# broker process's RSS growth over COUNT connections, as midge-bench conns reports it; under
# qemu-user the guest's memory is mapped into that process one to one, and the emulator's
# own memory does not grow with connections (it grows with translated code, which the
# warm-up connections below have already translated).
#
# usage: bench/cross/conns.sh ARCH MIDGE_BIN [BENCH_BIN]      ARCH: native, arm64 or armhf
#   COUNT  connections (default 10000; RLIMIT_NOFILE must allow them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=${1:?usage: conns.sh ARCH MIDGE_BIN [BENCH_BIN]}
bin=${2:?usage: conns.sh ARCH MIDGE_BIN [BENCH_BIN]}
bench=${3:-$here/../../build/bench/midge-bench}
COUNT=${COUNT:-10000}
case $arch in
native) run=() ;;
arm64) run=(qemu-aarch64) ;;
armhf) run=(qemu-arm) ;;
*) echo "conns.sh: unknown ARCH $arch" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cat >"$tmp/midge.conf" <<CONF
listener 0 127.0.0.1
allow_anonymous true
persistence false
connection_messages false
sys_interval 0
log_dest stderr
log_type error
log_type warning
log_type notice
CONF
ulimit -n "$(ulimit -Hn)"
"${run[@]}" "$bin" -c "$tmp/midge.conf" >"$tmp/log" 2>&1 &
pid=$!
i=0
until port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) (mqtt).*/\1/p' "$tmp/log") &&
    [[ -n $port ]]; do
    i=$((i + 1))
    ((i < 300)) || { echo "broker did not start: $(cat "$tmp/log")" >&2; exit 1; }
    sleep 0.1
done
# Warm-up: the code paths of a connection's life are translated (qemu) and the allocator's
# arenas exist before the measured run.
"$bench" conns --port "$port" --count 200 --rate 2000 --hold 1 --keepalive 600 >/dev/null
"$bench" conns --port "$port" --count "$COUNT" --rate 2000 --hold 2 --keepalive 600 \
    --broker-pid "$pid" | grep -E 'RESULT|KiB'

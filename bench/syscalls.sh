#!/bin/bash
# syscalls.sh - system calls a broker makes per delivered message, midge and Mosquitto
# side by side (issue 7: "Mosquitto spends most of its time in system calls here").
#
# usage: bench/syscalls.sh [--build-dir DIR] [ROUNDS]
#   DIR     the cmake build directory with midge and bench/midge-bench (default build)
#   ROUNDS  runs per broker and scenario, alternating (default 3); the median is printed
#
# Each run starts the broker on a free loopback port (CPU 0, midge-bench on CPU 1, the
# compare.sh configuration), lets midge-bench warm up for 1.5 s, then counts the broker's
# system-call entries for 2 s with `perf stat -e raw_syscalls:sys_enter` (a tracepoint
# counter: it does not slow the broker the way strace does) and divides by the messages
# the subscribers received per second times 2. Needs perf and root (or a permissive
# kernel.perf_event_paranoid).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build
if [[ ${1:-} == --build-dir ]]; then
    build=$(cd "$2" && pwd)
    shift 2
fi
rounds=${1:-3}
midge=$build/midge
bench=$build/bench/midge-bench
mosquitto=/usr/sbin/mosquitto
for bin in "$midge" "$bench" "$mosquitto"; do
    [[ -x $bin ]] || { echo "syscalls.sh: $bin not found (build midge and midge-bench first)" >&2; exit 1; }
done
command -v perf >/dev/null || { echo "syscalls.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

declare -A SCENARIO=(
    [A]="--publishers 16 --subscribers 16 --topics 16 --qos 0 --window 100"
    [B]="--publishers 16 --subscribers 16 --topics 16 --qos 1 --window 100 --pub-inflight 20"
    [D]="--publishers 1 --subscribers 100 --topics 1 --qos 0 --window 100"
    [R0]="--publishers 16 --subscribers 16 --topics 16 --qos 0 --rate 8000"
)
ORDER=(A B D R0)

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One run: prints system calls per delivered message.
one() { # one BROKER_BIN SCENARIO
    local port pid bp rate calls
    port=$(free_port)
    cat >"$work/broker.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
max_inflight_messages 20
max_queued_messages 1000
persistence false
log_dest stderr
log_type error
EOF
    taskset -c 0 "$1" -c "$work/broker.conf" >"$work/broker.log" 2>&1 &
    pid=$!
    sleep 0.3
    # shellcheck disable=SC2086 # the scenario is a word list on purpose
    taskset -c 1 "$bench" pubsub --duration 4 --warmup 0.5 --size 64 ${SCENARIO[$2]} \
        --port "$port" --broker-pid "$pid" >"$work/bench.out" 2>&1 &
    bp=$!
    sleep 1.5
    perf stat -e raw_syscalls:sys_enter -p "$pid" -x, -o "$work/stat" -- sleep 2
    wait "$bp" || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rate=$(grep -o 'msgs_per_s=[0-9.]*' "$work/bench.out" | tail -1 | cut -d= -f2)
    calls=$(grep sys_enter "$work/stat" | cut -d, -f1)
    [[ -n $rate && -n $calls ]] || { echo "syscalls.sh: run failed: $(tail -3 "$work/bench.out")" >&2; exit 1; }
    awk -v c="$calls" -v r="$rate" 'BEGIN { printf "%.3f\n", c / 2 / r }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-8s %10s %14s %10s\n' scenario "Mosquitto" midge "ratio"
for sc in "${ORDER[@]}"; do
    : >"$work/m" && : >"$work/q"
    for ((i = 0; i < rounds; i++)); do
        one "$midge" "$sc" >>"$work/m"
        one "$mosquitto" "$sc" >>"$work/q"
    done
    m=$(median <"$work/m")
    q=$(median <"$work/q")
    printf '%-8s %10s %14s %10s\n' "$sc" "$q" "$m" "$(awk -v m="$m" -v q="$q" 'BEGIN { printf "%.4f", m / q }')"
done
echo "(system calls per delivered message, median of $rounds; commands: midge-bench pubsub --duration 4 --warmup 0.5 --size 64 plus the SCENARIO line in bench/syscalls.sh)"

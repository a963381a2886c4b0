#!/usr/bin/env bash
# bench/compare.sh - midge against Mosquitto 2.0, scenario by scenario (issue 7).
#
# Starts a fresh broker for every run (so RSS figures start from the same
# point), alternates the two brokers run after run (A B, then B A, ...) so that
# drift on a shared machine hits both alike, and writes docs/benchmarks.md with
# a PNG chart. Broker CPU per delivered message is the headline figure: msg/s
# swings with the neighbours' load, CPU time per message much less.
#
# Usage: bench/compare.sh            full run: 3 rounds of 5 s runs, under 10 minutes
#        QUICK=1 bench/compare.sh    1 round of 1 s runs, about a minute
# Environment:
#   ROUNDS=N        rounds (3; QUICK: 1)
#   DURATION=S      measured seconds per run (5; QUICK: 1)
#   WARMUP=S        warm-up seconds per run (1; QUICK: 0.5)
#   CONNS=K         idle connections in scenario F (10000; QUICK: 2000)
#   SCENARIOS="A B" a subset of: A B C D E R0 R1 F
#   PIN=0           do not pin the broker and midge-bench to separate CPUs
#   MIDGE_BIN, MOSQUITTO_BIN, BENCH_BIN, BUILD_DIR  binaries and the cmake build directory
#   OUT=path.md     report (docs/benchmarks.md); the chart goes beside it as <name>.png
#   KEEP=1          keep the work directory (configs, logs, raw results)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-1}; WARMUP=${WARMUP:-0.5}; CONNS=${CONNS:-2000}
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}; CONNS=${CONNS:-10000}
fi
SCENARIOS=${SCENARIOS:-"A B C D E R0 R1 F"}
PIN=${PIN:-1}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
CONN_RATE=${CONN_RATE:-5000}

log() { printf '[compare] %s\n' "$*" >&2; }
fail() { printf '[compare] error: %s\n' "$*" >&2; exit 1; }

# ---- binaries ----
[[ -x $MOSQUITTO_BIN ]] || fail "$MOSQUITTO_BIN not found (apt-get install -y mosquitto)"
if [[ -z ${MIDGE_BIN:-} || -z ${BENCH_BIN:-} ]]; then
    # Configure again: a build tree made before bench/ existed has no midge-bench target.
    if [[ ! -x $BUILD_DIR/midge || ! -x $BUILD_DIR/bench/midge-bench ]]; then
        log "building midge and midge-bench in $BUILD_DIR"
        cmake -S "$ROOT" -B "$BUILD_DIR" >/dev/null
    fi
    if [[ -z ${MIDGE_BIN:-} && ! -x $BUILD_DIR/midge ]]; then
        cmake --build "$BUILD_DIR" -j2 --target midge >&2
    fi
    cmake --build "$BUILD_DIR" -j2 --target midge-bench >&2
fi
MIDGE_BIN=${MIDGE_BIN:-$BUILD_DIR/midge}
BENCH_BIN=${BENCH_BIN:-$BUILD_DIR/bench/midge-bench}
[[ -x $MIDGE_BIN ]] || fail "no midge binary at $MIDGE_BIN"
[[ -x $BENCH_BIN ]] || fail "no midge-bench binary at $BENCH_BIN"
command -v python3 >/dev/null || fail "python3 is needed to write the report"
if ! command -v gnuplot >/dev/null; then
    log "gnuplot missing: installing gnuplot-nox"
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        { apt-get install -y -qq gnuplot-nox ||
            { apt-get update -qq && apt-get install -y -qq gnuplot-nox; }; } >/dev/null 2>&1 ||
            log "could not install gnuplot: the report will have no chart"
    fi
fi

# ---- CPU placement: the broker gets one core, the generator the other ----
NPROC=$(nproc)
BROKER_CPU=""; BENCH_CPU=""
PINNING=""
if [[ $PIN == 1 && $NPROC -ge 2 ]] && command -v taskset >/dev/null; then
    BROKER_CPU=0; BENCH_CPU=1
    PINNING="broker on CPU $BROKER_CPU, midge-bench on CPU $BENCH_CPU (taskset)"
fi
pin() { # pin CPU CMD...: run CMD on CPU when pinning is on
    local cpu=$1; shift
    if [[ -n $cpu ]]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi
}

WORK=$(mktemp -d /tmp/midge-compare.XXXXXX)
BROKER_PID=""
cleanup() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/logs"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Both brokers read the same mosquitto.conf-style file. midge warns that it ignores
# set_tcp_nodelay: it always sets TCP_NODELAY.
write_conf() { # write_conf PORT FILE
    cat >"$2" <<EOF
listener $1 127.0.0.1
allow_anonymous true
max_inflight_messages 20
max_queued_messages 1000
set_tcp_nodelay true
persistence false
connection_messages false
log_dest stderr
log_type error
log_type warning
EOF
}

start_broker() { # start_broker NAME TAG: sets PORT and BROKER_PID
    local name=$1 tag=$2 bin
    PORT=$(free_port)
    write_conf "$PORT" "$WORK/$tag.conf"
    if [[ $name == midge ]]; then bin=$MIDGE_BIN; else bin=$MOSQUITTO_BIN; fi
    (pin "$BROKER_CPU" "$bin" -c "$WORK/$tag.conf") >"$WORK/logs/$tag.broker.log" 2>&1 &
    BROKER_PID=$!
    local i
    for i in $(seq 100); do
        if ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q LISTEN; then return 0; fi
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$WORK/logs/$tag.broker.log" >&2
    fail "$name did not start listening on port $PORT"
}

stop_broker() { # stop_broker: returns 1 if the broker had died during the run
    local alive=0
    kill -0 "$BROKER_PID" 2>/dev/null && alive=1
    kill "$BROKER_PID" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    [[ $alive == 1 ]]
}

# ---- scenarios: id|title|midge-bench arguments (PORT and PID are filled in per run) ----
PS="pubsub --duration $DURATION --warmup $WARMUP --size 64"
PAIRS="--publishers 16 --subscribers 16 --topics 16"
declare -A TITLE ARGS
TITLE[A]="16 pairs, QoS 0, saturated";       ARGS[A]="$PS $PAIRS --qos 0"
TITLE[B]="16 pairs, QoS 1, saturated";       ARGS[B]="$PS $PAIRS --qos 1"
TITLE[C]="16 pairs, QoS 2, saturated";       ARGS[C]="$PS $PAIRS --qos 2"
TITLE[D]="fan-out 1 -> 100, QoS 0, saturated"
ARGS[D]="$PS --publishers 1 --subscribers 100 --topics 1 --qos 0"
TITLE[E]="fan-in 100 -> 1, QoS 0, saturated"
ARGS[E]="$PS --publishers 100 --subscribers 1 --topics 1 --qos 0"
TITLE[R0]="16 pairs at 8,000 msg/s, QoS 0";  ARGS[R0]="$PS $PAIRS --qos 0 --rate 8000"
TITLE[R1]="16 pairs at 8,000 msg/s, QoS 1";  ARGS[R1]="$PS $PAIRS --qos 1 --rate 8000"
TITLE[F]="$CONNS idle connections, one subscription each"
ARGS[F]="conns --count $CONNS --rate $CONN_RATE --hold 2 --keepalive 600"

FD_LIMIT=$(ulimit -Hn)
if [[ $FD_LIMIT != unlimited && $((CONNS + 64)) -gt $FD_LIMIT ]]; then
    log "the fd hard limit is $FD_LIMIT: F uses $((FD_LIMIT - 64)) connections instead of $CONNS"
    CONNS=$((FD_LIMIT - 64))
    TITLE[F]="$CONNS idle connections, one subscription each (fd limit $FD_LIMIT)"
    ARGS[F]="conns --count $CONNS --rate $CONN_RATE --hold 2 --keepalive 600"
fi
# The brokers inherit this shell's limits: let them hold F's connections too.
ulimit -n "$FD_LIMIT" 2>/dev/null || true

RESULTS=$WORK/results.tsv
: >"$RESULTS"
START=$(date +%s)
log "rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s scenarios: $SCENARIOS"
log "placement: ${PINNING:-not pinned}"
for round in $(seq "$ROUNDS"); do
    for sc in $SCENARIOS; do
        [[ -n ${ARGS[$sc]:-} ]] || fail "unknown scenario $sc"
        # A B in odd rounds, B A in even ones: neither broker always runs first.
        if ((round % 2)); then order="midge mosquitto"; else order="mosquitto midge"; fi
        for broker in $order; do
            tag="$sc.$broker.$round"
            start_broker "$broker" "$tag"
            # shellcheck disable=SC2086 # ARGS holds words on purpose
            set +e
            (pin "$BENCH_CPU" "$BENCH_BIN" ${ARGS[$sc]} --port "$PORT" --broker-pid "$BROKER_PID") \
                >"$WORK/logs/$tag.out" 2>"$WORK/logs/$tag.err"
            rc=$?
            set -e
            alive=yes
            stop_broker || alive=no
            line=$(grep '^RESULT ' "$WORK/logs/$tag.out" | tail -1 || true)
            [[ -n $line ]] || line="RESULT status=error"
            [[ $alive == yes ]] || line="$line broker_died=1"
            printf '%s\t%s\t%s\t%s\t%s\n' "$sc" "$broker" "$round" "$rc" "$line" >>"$RESULTS"
            keys='broker_cpu_us_per_msg|msgs_per_s|kib_per_conn|lost|held|status'
            summary=$(grep -Eo "($keys)=[^ ]*" <<<"$line" | tr '\n' ' ')
            log "round $round $sc $broker: rc=$rc $summary"
            if [[ $rc != 0 ]]; then
                sed 's/^/    /' "$WORK/logs/$tag.err" >&2
            fi
            if [[ $alive == no ]]; then
                log "BROKER DIED during $tag; its log:"; tail -20 "$WORK/logs/$tag.broker.log" >&2
            fi
        done
    done
done
ELAPSED=$(( $(date +%s) - START ))

# ---- report ----
mkdir -p "$(dirname "$OUT")"
COMMANDS=$WORK/commands.txt
{
    for sc in $SCENARIOS; do
        printf '%s\t%s\tmidge-bench %s --port PORT --broker-pid PID\n' \
            "$sc" "${TITLE[$sc]}" "${ARGS[$sc]}"
    done
} >"$COMMANDS"
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | grep -v '^??' || true) ]]; then
    GIT_REV="$GIT_REV (with uncommitted changes)"
fi
export RESULTS COMMANDS OUT ROUNDS DURATION WARMUP QUICK ELAPSED GIT_REV NPROC FD_LIMIT
export MIDGE_VERSION=$("$MIDGE_BIN" --version 2>&1 | head -1)
export MOSQUITTO_VERSION=$("$MOSQUITTO_BIN" -h 2>&1 | head -1)
export PINNING
QUICK_PREFIX=""; [[ $QUICK == 1 ]] && QUICK_PREFIX="QUICK=1 "
export COMPARE_CMD="${QUICK_PREFIX}ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP \
CONNS=$CONNS bench/compare.sh"
python3 "$ROOT/bench/report.py"
log "wrote $OUT (and ${OUT%.md}.png) in ${ELAPSED}s of runs"

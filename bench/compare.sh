#!/usr/bin/env bash
# bench/compare.sh - midge against Mosquitto 2.0, scenario by scenario (issue 7).
#
# Starts a fresh broker for every run (so RSS figures start from the same
# point), alternates the two brokers run after run (A B, then B A, ...) so that
# drift on a shared machine hits both alike, and writes docs/benchmarks.md with
# a PNG chart. Broker CPU per delivered message is the headline figure: msg/s
# swings with the neighbours' load, CPU time per message much less.
#
# Usage: bench/compare.sh [--quick | --full] [--build-dir DIR] [--ab OLD_MIDGE]
#   (default)  3 rounds; 3 s runs for A-F, 2 s for the scaling series: about 15 minutes
#              from a fresh checkout, build included
#   --quick    1 round of 1 s runs with smaller scaling points: about 2 minutes, to
#              check the tooling (the same as QUICK=1)
#   --full     3 rounds of 5 s runs everywhere, plus the extra scaling points
#              (10,000 topics, 100,000 topics under one wildcard per group): ~15 minutes
#   --build-dir DIR  the cmake build directory (the same as BUILD_DIR=DIR)
#   --ab OLD_MIDGE   A/B instead of midge vs Mosquitto: the midge binary OLD_MIDGE (say, a
#              build of the commit before a change) against this midge, alternating run by
#              run, on the MQTT 3.1.1 rows (SCENARIOS default "A W B C D E R0 R1 F", ROUNDS
#              5); writes only the page's A/B section (new/old per round, median
#              [min..max], within 5 % or not) and keeps the rest. AB_REV=TEXT names OLD_MIDGE
# Environment:
#   ROUNDS=N        rounds (3; QUICK: 1)
#   DURATION=S      measured seconds per run of A-F and W (3; QUICK: 1; FULL: 5)
#   WARMUP=S        warm-up seconds per run (0.5; FULL: 1)
#   SCALE_DURATION=S, SCALE_WARMUP=S  the same for the scaling series (2 and 0.5;
#                   QUICK: 1 and 0.5; FULL: 5 and 1)
#   CONNS=K         idle connections in scenario F (10000; QUICK: 2000)
#   SCENARIOS="A B" a subset of: A A5 A5a W B C D E SH R0 R1 BR0 BR1 F F5 TF TH THE THR TH12
#                   THR12 TA TW TS S10 S100 S1k S10k T10 T1k T10k T100k T100kw (W is scenario
#                   A over WebSocket; A5 scenario A with MQTT 5 clients, A5a with a topic alias
#                   per publisher too; SH a shared-subscription fan-in, MQTT 5; BR0/BR1:
#                   publishers on one broker, subscribers on a second one it bridges to, QoS
#                   0/1, the CPU of both brokers per message; F5 scenario F with MQTT 5; TF to
#                   TS the TLS rows: TF idle TLS connections, TH/THE full handshakes with
#                   RSA/ECDSA certificates, THR resumed ones, TH12/THR12 full and resumed
#                   ones with TLS 1.2 clients, TA and TW scenario A over TLS and wss, TS a
#                   reconnect storm; S<n> n subscribers on one topic; T<n> n topics, T100kw
#                   with wildcard filters). With --ab the TLS rows run only when named here,
#                   each on its summary figure
#   PIN=0           do not pin the broker and midge-bench to separate CPUs
#   MIDGE_BIN, MOSQUITTO_BIN, BENCH_BIN, BUILD_DIR  binaries and the cmake build directory
#   MIDGE_REV=TEXT  what the page says midge was built from (default: the checkout's commit)
#   OUT=path.md     report (docs/benchmarks.md); the chart goes beside it as <name>.png
#   KEEP=1          keep the work directory (configs, logs, raw results)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}
FULL=${FULL:-0}
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --full) FULL=1 ;;
        --build-dir) [[ $# -ge 2 ]] || { echo "--build-dir needs a directory" >&2; exit 2; }
            BUILD_DIR=$2; shift ;;
        --build-dir=*) BUILD_DIR=${1#--build-dir=} ;;
        --ab) [[ $# -ge 2 ]] || { echo "--ab needs the old midge binary" >&2; exit 2; }
            AB_BIN=$2; shift ;;
        --ab=*) AB_BIN=${1#--ab=} ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $QUICK == 1 && $FULL == 1 ]] && { echo "--quick and --full exclude each other" >&2; exit 2; }
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
# Scaling points: subscribers on one topic, and distinct topics.
S_POINTS="S10 S100 S1k S10k"
T_POINTS="T10 T1k T100k"
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-1}; WARMUP=${WARMUP:-0.5}; CONNS=${CONNS:-2000}
    SCALE_DURATION=${SCALE_DURATION:-1}; SCALE_WARMUP=${SCALE_WARMUP:-0.5}
elif [[ $FULL == 1 ]]; then
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}; CONNS=${CONNS:-10000}
    SCALE_DURATION=${SCALE_DURATION:-5}; SCALE_WARMUP=${SCALE_WARMUP:-1}
    T_POINTS="T10 T1k T10k T100k T100kw"
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-0.5}; CONNS=${CONNS:-10000}
    SCALE_DURATION=${SCALE_DURATION:-2}; SCALE_WARMUP=${SCALE_WARMUP:-0.5}
fi
AB_BIN=${AB_BIN:-}
if [[ -n $AB_BIN ]]; then
    # A/B: the MQTT 3.1.1 rows, old and new midge alternating; more rounds, as the effect
    # looked for (5 %) is smaller than the run-to-run noise of a shared machine.
    [[ -x $AB_BIN ]] || { echo "--ab $AB_BIN: not an executable" >&2; exit 2; }
    AB_BIN=$(cd "$(dirname "$AB_BIN")" && pwd)/$(basename "$AB_BIN")
    ROUNDS=${ROUNDS:-5}
    SCENARIOS=${SCENARIOS:-"A W B C D E R0 R1 F"}
    OTHER=before
else
    OTHER=mosquitto
fi
SCENARIOS=${SCENARIOS:-"A A5 A5a W B C D E SH R0 R1 BR0 BR1 F F5 TF TH THE THR TH12 THR12 TA TW TS $S_POINTS $T_POINTS"}
PIN=${PIN:-1}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
CONN_RATE=${CONN_RATE:-5000}
if [[ $QUICK == 1 ]]; then HANDSHAKES=${HANDSHAKES:-500}; STORM=${STORM:-1000}; fi
HANDSHAKES=${HANDSHAKES:-2000}       # TH, THE, THR, TH12, THR12: handshakes per run
STORM=${STORM:-5000}                 # TS: clients connecting at once
STORM_DURATION=${STORM_DURATION:-12} # TS: the fixed-rate run the storm happens during

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
    # Always (a no-op when it is current): a binary left from an older checkout would be
    # measured under this commit's name.
    if [[ -z ${MIDGE_BIN:-} ]]; then
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
BROKER_PID2=""
cleanup() {
    local pid
    for pid in $BROKER_PID $BROKER_PID2; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
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
# set_tcp_nodelay: it always sets TCP_NODELAY. PROTOCOL=websockets gives a WebSocket listener;
# EXTRA is appended (a scenario's own settings, the same for both brokers); QUEUE (in the
# environment) replaces max_queued_messages.
write_conf() { # write_conf PORT FILE [PROTOCOL [EXTRA]]: mqtt, websockets, tls-rsa, tls-ec, wss-rsa
    local proto="" tls=""
    case ${3:-mqtt} in
        websockets|wss-*) proto=$'\nprotocol websockets' ;;
    esac
    case ${3:-mqtt} in
        *-rsa|*-ec) tls=$'\n'"certfile $CERTS/${3#*-}.crt"$'\n'"keyfile $CERTS/${3#*-}.key" ;;
    esac
    cat >"$2" <<EOF
listener $1 127.0.0.1$proto$tls
allow_anonymous true
max_inflight_messages 20
max_queued_messages ${QUEUE:-1000}
set_tcp_nodelay true
persistence false
connection_messages false
log_dest stderr
log_type error
log_type warning
EOF
    if [[ -n ${4:-} ]]; then printf '%s\n' "$4" >>"$2"; fi
}

# TLS scenarios (issue 17): a CA, and an RSA-2048 and an ECDSA P-256 server certificate
# for 127.0.0.1, readable by Mosquitto's unprivileged user.
CERTS=$WORK/certs
make_certs() {
    local d=$CERTS k
    mkdir -p "$d"
    chmod 755 "$WORK" "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.crt" -days 30 -subj "/CN=bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
        >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' \
        >"$d/srv.ext"
    openssl req -newkey rsa:2048 -nodes -keyout "$d/rsa.key" -out "$d/rsa.csr" \
        -subj "/CN=localhost" >/dev/null 2>&1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/ec.key" \
        -out "$d/ec.csr" -subj "/CN=localhost" >/dev/null 2>&1
    for k in rsa ec; do
        openssl x509 -req -in "$d/$k.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
            -CAcreateserial -days 30 -out "$d/$k.crt" -extfile "$d/srv.ext" >/dev/null 2>&1
    done
    chmod 644 "$d"/*.key
    [[ -s $d/rsa.crt && -s $d/ec.crt ]] || fail "could not make the TLS test certificates"
}

start_broker() { # start_broker NAME TAG [PROTOCOL [EXTRA]]: sets PORT and BROKER_PID
    local name=$1 tag=$2 bin
    PORT=$(free_port)
    write_conf "$PORT" "$WORK/$tag.conf" "${3:-mqtt}" "${4:-}"
    case $name in
        midge) bin=$MIDGE_BIN ;;
        before) bin=$AB_BIN ;;
        *) bin=$MOSQUITTO_BIN ;;
    esac
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

# Debian's Mosquitto 2.0 is built without libwebsockets: its websockets listener then
# fails to open ("Unable to start any listening sockets"). Probe once; W runs against
# Mosquitto only if it works.
mosquitto_has_websockets() {
    local port conf=$WORK/ws-probe.conf pid i ok=1
    port=$(free_port)
    write_conf "$port" "$conf" websockets
    "$MOSQUITTO_BIN" -c "$conf" >"$WORK/logs/ws-probe.log" 2>&1 &
    pid=$!
    for i in $(seq 40); do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q LISTEN; then ok=0; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return $ok
}

# A bridged pair (BR0, BR1): broker B first, then broker A with a bridge to B forwarding
# every topic at QOS. Both read the same lines; the queues are large enough that neither
# broker drops what the bridge carries during a saturated run (Mosquitto did at 1,000).
# Sets PORT/BROKER_PID (A, the publishers') and PORT2/BROKER_PID2 (B, the subscribers').
start_bridged_pair() { # start_bridged_pair NAME TAG QOS
    local name=$1 tag=$2 qos=$3 bin i
    case $name in
        midge) bin=$MIDGE_BIN ;;
        before) bin=$AB_BIN ;;
        *) bin=$MOSQUITTO_BIN ;;
    esac
    PORT2=$(free_port)
    QUEUE=100000 write_conf "$PORT2" "$WORK/$tag.b.conf" mqtt
    (pin "$BROKER_CPU" "$bin" -c "$WORK/$tag.b.conf") >"$WORK/logs/$tag.b.broker.log" 2>&1 &
    BROKER_PID2=$!
    PORT=$(free_port)
    QUEUE=100000 write_conf "$PORT" "$WORK/$tag.conf" mqtt
    printf 'connection bench\naddress 127.0.0.1:%s\ntopic # out %s\n' "$PORT2" "$qos" \
        >>"$WORK/$tag.conf"
    for i in $(seq 100); do
        if ss -Hltn "sport = :$PORT2" 2>/dev/null | grep -q LISTEN; then break; fi
        sleep 0.05
    done
    (pin "$BROKER_CPU" "$bin" -c "$WORK/$tag.conf") >"$WORK/logs/$tag.broker.log" 2>&1 &
    BROKER_PID=$!
    for i in $(seq 100); do
        # The bridge's connection from A to B's port is up.
        if ss -Htn state established "dport = :$PORT2" 2>/dev/null | grep -q .; then
            sleep 0.2
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$WORK/logs/$tag.broker.log" >&2
    fail "$name: the bridge from port $PORT to $PORT2 did not come up"
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
declare -A TITLE ARGS PROTO EXTRA
TITLE[A]="16 pairs, QoS 0, saturated";       ARGS[A]="$PS $PAIRS --qos 0"
# MQTT 5 (issue 13): scenario A with MQTT 5 clients (empty property blocks), then with each
# publisher naming its topic once and sending its topic alias after that.
TITLE[A5]="scenario A with MQTT 5";          ARGS[A5]="$PS $PAIRS --qos 0 --mqtt5"
TITLE[A5a]="scenario A with MQTT 5 and a topic alias per publisher"
ARGS[A5a]="$PS $PAIRS --qos 0 --mqtt5 --topic-alias"
# W: scenario A over MQTT over WebSocket (listener with protocol websockets).
TITLE[W]="scenario A over WebSocket";         ARGS[W]="$PS $PAIRS --qos 0 --ws /mqtt"
PROTO[W]=websockets
TITLE[B]="16 pairs, QoS 1, saturated";       ARGS[B]="$PS $PAIRS --qos 1"
TITLE[C]="16 pairs, QoS 2, saturated";       ARGS[C]="$PS $PAIRS --qos 2"
TITLE[D]="fan-out 1 -> 100, QoS 0, saturated"
ARGS[D]="$PS --publishers 1 --subscribers 100 --topics 1 --qos 0"
TITLE[E]="fan-in 100 -> 1, QoS 0, saturated"
ARGS[E]="$PS --publishers 100 --subscribers 1 --topics 1 --qos 0"
# SH: 16 publishers -> one shared subscription of 4 MQTT 5 subscribers, QoS 1: each message
# goes to one member. Both brokers get max_queued_messages 100000: Mosquitto 2.0.11 counts
# QoS 1 messages of a fan-in that were delivered and acknowledged against its queue limit,
# and with 1000 it starts dropping after some 30,000 messages (see the page).
TITLE[SH]="shared subscription, 16 publishers -> 4 members, QoS 1, MQTT 5"
ARGS[SH]="$PS --publishers 16 --subscribers 4 --topics 1 --qos 1 --mqtt5 --shared bench"
EXTRA[SH]="max_queued_messages 100000"
TITLE[R0]="16 pairs at 8,000 msg/s, QoS 0";  ARGS[R0]="$PS $PAIRS --qos 0 --rate 8000"
TITLE[R1]="16 pairs at 8,000 msg/s, QoS 1";  ARGS[R1]="$PS $PAIRS --qos 1 --rate 8000"
# BR0/BR1: 4 publishers on broker A, 4 subscribers on broker B, A bridges every topic to B;
# the figure is the CPU of both brokers per delivered message.
declare -A BRIDGE
BRIDGED="--publishers 4 --subscribers 4 --topics 4 --window 50"
TITLE[BR0]="bridge A -> B, 4 pairs, QoS 0, saturated"; ARGS[BR0]="$PS $BRIDGED --qos 0"
BRIDGE[BR0]=0
TITLE[BR1]="bridge A -> B, 4 pairs, QoS 1, saturated"; ARGS[BR1]="$PS $BRIDGED --qos 1"
BRIDGE[BR1]=1
TITLE[F]="$CONNS idle connections, one subscription each"
ARGS[F]="conns --count $CONNS --rate $CONN_RATE --hold 2 --keepalive 600"
TITLE[F5]="$CONNS idle MQTT 5 connections, one subscription each"
ARGS[F5]="${ARGS[F]} --mqtt5"

# Scaling series, QoS 0, saturated, shorter runs (CPU per message settles within a second).
# S<n>: one publisher, n subscribers on its one topic. The window keeps about 20,000
# deliveries in flight at most (100 messages per subscriber up to 200 subscribers, then
# 20,000 / n), so that the slower broker drains the backlog within the grace time.
# T<n>: 10 publishers and 10 subscribers; publisher i owns the n/10 topics PREFIX/i/k
# (k = i, i+10, ...) and publishes on them in turn; subscriber i holds one exact
# subscription per topic of publisher i (sent 100 per SUBSCRIBE); T100kw: one wildcard
# filter PREFIX/i/+ per subscriber instead.
# TLS (issue 17): the same file with certfile/keyfile on the listener; midge-bench checks
# the broker's certificate against the test CA (CAFILE is replaced when a run starts).
TLSC="--tls --cafile CAFILE"
TITLE[TF]="$CONNS idle TLS connections (RSA-2048), one subscription each"
ARGS[TF]="conns $TLSC --count $CONNS --rate 1000 --hold 2 --keepalive 600 --timeout 60"
PROTO[TF]=tls-rsa
TITLE[TH]="$HANDSHAKES full TLS handshakes, RSA-2048 certificate"
ARGS[TH]="conns $TLSC --count $HANDSHAKES --rate 1000 --hold 0 --keepalive 600"
PROTO[TH]=tls-rsa
TITLE[THE]="$HANDSHAKES full TLS handshakes, ECDSA P-256 certificate"
ARGS[THE]="conns $TLSC --count $HANDSHAKES --rate 1000 --hold 0 --keepalive 600"
PROTO[THE]=tls-ec
TITLE[THR]="$HANDSHAKES resumed TLS handshakes (session tickets), RSA-2048"
ARGS[THR]="conns $TLSC --resume --count $HANDSHAKES --rate 1000 --hold 0 --keepalive 600"
PROTO[THR]=tls-rsa
# TH12/THR12: TH and THR with TLS 1.2 clients, as many devices (mbedTLS on ESP32) still are.
# A TLS 1.3 resumption still does a key exchange and the key schedule; a TLS 1.2 one is an
# abbreviated handshake without a key exchange, so the two resume at different costs.
TLS12="--tls-version tlsv1.2"
TITLE[TH12]="$HANDSHAKES full TLS 1.2 handshakes, RSA-2048 certificate"
ARGS[TH12]="conns $TLSC $TLS12 --count $HANDSHAKES --rate 1000 --hold 0 --keepalive 600"
PROTO[TH12]=tls-rsa
TITLE[THR12]="$HANDSHAKES resumed TLS 1.2 handshakes (session tickets), RSA-2048"
ARGS[THR12]="conns $TLSC $TLS12 --resume --count $HANDSHAKES --rate 1000 --hold 0 --keepalive 600"
PROTO[THR12]=tls-rsa
TITLE[TA]="scenario A over TLS (RSA-2048)"
ARGS[TA]="$PS $PAIRS --qos 0 $TLSC"
PROTO[TA]=tls-rsa
TITLE[TW]="scenario A over WebSocket over TLS (wss)"
ARGS[TW]="$PS $PAIRS --qos 0 $TLSC --ws /mqtt"
PROTO[TW]=wss-rsa
TITLE[TS]="$STORM TLS clients connecting at once while 4 pairs exchange 2,000 msg/s over TLS"
ARGS[TS]="pubsub --duration $STORM_DURATION --warmup 1 --size 64 --publishers 4 --subscribers 4 --topics 4 --qos 0 --rate 2000 $TLSC"
PROTO[TS]=tls-rsa
# TS's storm, started 1.5 s into the run above, at a lower priority on the same CPU so
# that the fixed-rate clients are not held up by their own generator.
STORM_ARGS="conns $TLSC --count $STORM --rate 10000000 --max-pending $STORM --hold 0.5 --keepalive 600 --timeout 30 --prefix storm"

SPS="pubsub --duration $SCALE_DURATION --warmup $SCALE_WARMUP --size 64 --qos 0 --grace 10"
scale_s() { # scale_s ID SUBSCRIBERS LABEL
    local w=$((20000 / $2)); ((w > 100)) && w=100; ((w < 1)) && w=1
    TITLE[$1]="fan-out 1 -> $3 subscribers on one topic, window $w"
    ARGS[$1]="$SPS --publishers 1 --subscribers $2 --topics 1 --window $w"
}
scale_t() { # scale_t ID TOPICS LABEL [--wildcard]
    TITLE[$1]="$3 topics, 10 publishers in turn over them -> 10 subscribers${4:+, wildcard filters}"
    ARGS[$1]="$SPS --publishers 10 --subscribers 10 --topics $2 --spread${4:+ $4}"
}
if [[ $QUICK == 1 ]]; then
    # Smaller points: the tooling is what a quick run checks.
    scale_s S10 10 10; scale_s S100 100 100; scale_s S1k 1000 "1,000"; scale_s S10k 2000 "2,000"
    scale_t T10 10 10; scale_t T1k 1000 "1,000"; scale_t T10k 10000 "10,000"
    scale_t T100k 20000 "20,000"; scale_t T100kw 20000 "20,000" --wildcard
else
    scale_s S10 10 10; scale_s S100 100 100; scale_s S1k 1000 "1,000"; scale_s S10k 10000 "10,000"
    scale_t T10 10 10; scale_t T1k 1000 "1,000"; scale_t T10k 10000 "10,000"
    scale_t T100k 100000 "100,000"; scale_t T100kw 100000 "100,000" --wildcard
fi

FD_LIMIT=$(ulimit -Hn)
if [[ $FD_LIMIT != unlimited && $((CONNS + 64)) -gt $FD_LIMIT ]]; then
    log "the fd hard limit is $FD_LIMIT: F uses $((FD_LIMIT - 64)) connections instead of $CONNS"
    CONNS=$((FD_LIMIT - 64))
    TITLE[F]="$CONNS idle connections, one subscription each (fd limit $FD_LIMIT)"
    ARGS[F]="conns --count $CONNS --rate $CONN_RATE --hold 2 --keepalive 600"
    TITLE[TF]="$CONNS idle TLS connections (RSA-2048), one subscription each (fd limit $FD_LIMIT)"
    ARGS[TF]="conns $TLSC --count $CONNS --rate 1000 --hold 2 --keepalive 600 --timeout 60"
    TITLE[F5]="$CONNS idle MQTT 5 connections, one subscription each (fd limit $FD_LIMIT)"
    ARGS[F5]="${ARGS[F]} --mqtt5"
fi
# The brokers inherit this shell's limits: let them hold F's connections too.
ulimit -n "$FD_LIMIT" 2>/dev/null || true

MOSQUITTO_WS=no
if [[ -z $AB_BIN && ( " $SCENARIOS " == *" W "* || " $SCENARIOS " == *" TW "* ) ]]; then
    if mosquitto_has_websockets; then MOSQUITTO_WS=yes; else
        log "$MOSQUITTO_BIN has no WebSocket support: W runs against midge only"
    fi
fi

if [[ " $SCENARIOS " == *" T"[AFHSW]* ]]; then
    command -v openssl >/dev/null || fail "openssl is needed for the TLS scenarios"
    make_certs
fi
RESULTS=$WORK/results.tsv
: >"$RESULTS"
START=$(date +%s)
# The machine may be shared: the page says how busy it was.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
log "rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s scenarios: $SCENARIOS"
[[ -z $AB_BIN ]] || log "A/B: $AB_BIN (before) against $MIDGE_BIN"
log "placement: ${PINNING:-not pinned}"
for round in $(seq "$ROUNDS"); do
    for sc in $SCENARIOS; do
        [[ -n ${ARGS[$sc]:-} ]] || fail "unknown scenario $sc"
        # A B in odd rounds, B A in even ones: neither broker always runs first.
        if ((round % 2)); then order="midge $OTHER"; else order="$OTHER midge"; fi
        for broker in $order; do
            tag="$sc.$broker.$round"
            if [[ ${PROTO[$sc]:-mqtt} == @(websockets|wss-*) && $broker == mosquitto &&
                  $MOSQUITTO_WS != yes ]]; then
                printf '%s\t%s\t%s\t0\tRESULT status=unsupported\n' "$sc" "$broker" "$round" \
                    >>"$RESULTS"
                continue
            fi
            extra=""
            if [[ -n ${BRIDGE[$sc]:-} ]]; then
                start_bridged_pair "$broker" "$tag" "${BRIDGE[$sc]}"
                extra="--sub-port $PORT2 --broker-pid2 $BROKER_PID2"
            else
                start_broker "$broker" "$tag" "${PROTO[$sc]:-mqtt}" "${EXTRA[$sc]:-}"
            fi
            # shellcheck disable=SC2086 # ARGS and extra hold words on purpose
            args=${ARGS[$sc]//CAFILE/$CERTS/ca.crt}
            set +e
            if [[ $sc == TS ]]; then
                # The storm starts while the fixed-rate clients run; its own figures are
                # added to theirs as storm_*.
                (pin "$BENCH_CPU" "$BENCH_BIN" $args --port "$PORT" --broker-pid "$BROKER_PID") \
                    >"$WORK/logs/$tag.out" 2>"$WORK/logs/$tag.err" &
                ps_pid=$!
                sleep 1.5
                (pin "$BENCH_CPU" nice -n 10 "$BENCH_BIN" ${STORM_ARGS//CAFILE/$CERTS/ca.crt} \
                    --port "$PORT") >"$WORK/logs/$tag.storm" 2>>"$WORK/logs/$tag.err"
                wait "$ps_pid"
                rc=$?
            else
                (pin "$BENCH_CPU" "$BENCH_BIN" $args --port "$PORT" --broker-pid "$BROKER_PID" \
                    $extra) >"$WORK/logs/$tag.out" 2>"$WORK/logs/$tag.err"
                rc=$?
            fi
            set -e
            alive=yes
            stop_broker || alive=no
            if [[ -n ${BRIDGE[$sc]:-} ]]; then
                BROKER_PID=$BROKER_PID2
                stop_broker || alive=no
            fi
            line=$(grep '^RESULT ' "$WORK/logs/$tag.out" | tail -1 || true)
            [[ -n $line ]] || line="RESULT status=error"
            if [[ $sc == TS ]]; then
                storm=$(grep '^RESULT ' "$WORK/logs/$tag.storm" | tail -1 || true)
                line="$line $(grep -Eo '(held|failed|hs_secs|hs_p50_us|hs_p99_us)=[^ ]*' \
                    <<<"$storm" | sed 's/^/storm_/' | tr '\n' ' ')"
            fi
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
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# ---- report ----
mkdir -p "$(dirname "$OUT")"
COMMANDS=$WORK/commands.txt
{
    for sc in $SCENARIOS; do
        if [[ -n ${BRIDGE[$sc]:-} ]]; then
            printf '%s\t%s\tmidge-bench %s --port PORT_A --broker-pid PID_A --sub-port PORT_B --broker-pid2 PID_B   # A adds: connection bench, address 127.0.0.1:PORT_B, topic # out %s; both max_queued_messages 100000\n' \
                "$sc" "${TITLE[$sc]}" "${ARGS[$sc]}" "${BRIDGE[$sc]}"
            continue
        fi
        storm=""
        [[ $sc == TS ]] && storm=" & sleep 1.5; nice -n 10 midge-bench ${STORM_ARGS//CAFILE/ca.crt} --port PORT"
        printf '%s\t%s\tmidge-bench %s --port PORT --broker-pid PID%s%s\n' \
            "$sc" "${TITLE[$sc]}" "${ARGS[$sc]//CAFILE/ca.crt}" "$storm" \
            "${EXTRA[$sc]:+   # the configuration of both brokers adds: ${EXTRA[$sc]}}"
    done
} >"$COMMANDS"
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | grep -v '^??' || true) ]]; then
    GIT_REV="$GIT_REV (with uncommitted changes)"
fi
GIT_REV=${MIDGE_REV:-$GIT_REV}
export RESULTS COMMANDS OUT ROUNDS DURATION WARMUP QUICK FULL ELAPSED GIT_REV NPROC FD_LIMIT
export SCALE_DURATION SCALE_WARMUP MOSQUITTO_WS LOAD_START LOAD_END
export MIDGE_VERSION=$("$MIDGE_BIN" --version 2>&1 | head -1)
export MOSQUITTO_VERSION=$("$MOSQUITTO_BIN" -h 2>&1 | head -1)
export PINNING
MODE_FLAG=""; [[ $QUICK == 1 ]] && MODE_FLAG=" --quick"; [[ $FULL == 1 ]] && MODE_FLAG=" --full"
export COMPARE_CMD="bench/compare.sh$MODE_FLAG"
export COMPARE_CMD_EXPANDED="ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP \
SCALE_DURATION=$SCALE_DURATION SCALE_WARMUP=$SCALE_WARMUP CONNS=$CONNS \
SCENARIOS=\"$SCENARIOS\" bench/compare.sh"
if [[ -n $AB_BIN ]]; then
    # The old binary's commit, when it was built inside a git checkout.
    AB_REV=${AB_REV:-$(git -C "$(dirname "$AB_BIN")" rev-parse --short HEAD 2>/dev/null ||
        echo unknown)}
    export AB=1 AB_REV AB_VERSION=$("$AB_BIN" --version 2>&1 | head -1)
    COMPARE_CMD_EXPANDED="${COMPARE_CMD_EXPANDED% bench/compare.sh} bench/compare.sh --ab OLD/midge"
    export COMPARE_CMD="$COMPARE_CMD --ab OLD/midge"
fi
# report.py exits 1, after writing the page, when a run's counts show lost (QoS 1/2),
# duplicated, misrouted, corrupt or foreign messages: the comparison then fails.
report_status=0
python3 "$ROOT/bench/report.py" || report_status=$?
if [[ -n $AB_BIN ]]; then log "wrote the A/B section of $OUT in ${ELAPSED}s of runs"; else
    log "wrote $OUT (and ${OUT%.md}.png) in ${ELAPSED}s of runs"; fi
if [[ $report_status != 0 ]]; then
    fail "integrity problems in the runs (listed above and in the page's summary)"
fi

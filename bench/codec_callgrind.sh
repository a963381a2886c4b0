#!/bin/sh
# codec_callgrind.sh - instructions per codec_decode of one PUBLISH (topic of 16 bytes,
# payload of 32), counted by callgrind: the decode path's cost, repeatable on a busy machine.
#
# usage: bench/codec_callgrind.sh [TREE]   (TREE: a midge source tree, default this one)
# Builds bench/codec_cg.c with the tree's codec at -O2 (as RelWithDebInfo), runs it under
# callgrind with collection only inside codec_decode, N1 and N2 times; (Ir(N2) - Ir(N1)) /
# (N2 - N1) is the cost of one decode. Prints MQTT 3.1.1 QoS 0 and 1, and MQTT 5 QoS 0/1
# without properties and QoS 0 with two.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tree=${1:-$here/..}
N1=${N1:-10000}
N2=${N2:-110000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -O2 -g -DNDEBUG -D_GNU_SOURCE -std=c11 -I"$tree/include" "$here/codec_cg.c" \
    "$tree"/src/codec/*.c "$tree/src/base/err.c" -o "$tmp/codec_cg"
ir() {
    valgrind --tool=callgrind --toggle-collect=codec_decode --callgrind-out-file="$tmp/cg" \
        "$tmp/codec_cg" "$1" "$2" "$3" >/dev/null 2>&1
    awk '/^summary:/ {print $2}' "$tmp/cg"
}
for case in "4 0 MQTT 3.1.1 QoS 0" "4 1 MQTT 3.1.1 QoS 1" "5 0 MQTT 5 QoS 0" \
    "5 1 MQTT 5 QoS 1" "6 0 MQTT 5 QoS 0, 2 properties"; do
    set -- $case
    d=$1 q=$2
    shift 2
    a=$(ir "$N1" "$q" "$d")
    b=$(ir "$N2" "$q" "$d")
    echo "$*: $(((b - a) / (N2 - N1))) instructions per decode"
done

#!/usr/bin/env python3
"""bench/report.py - turns bench/compare.sh's raw results into docs/benchmarks.md.

Reads the environment compare.sh exports (RESULTS, COMMANDS, OUT, ...), writes
the Markdown page and a PNG chart beside it via gnuplot. Medians with
[min..max] everywhere: with three rounds on a shared machine the spread is as
much a result as the median. With AB=1 (compare.sh --ab) the runs are an old
midge ("before") against this one, and only the page's A/B section is written.
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from report_tls import tls_section

ENV = os.environ
OUT = ENV["OUT"]
PNG = os.path.splitext(OUT)[0] + ".png"

# Issue 7: midge/Mosquitto ratio to reach, on the headline figure of each scenario
# (W: midge over WebSocket against midge's own TCP figure, scenario A of the same round).
TARGETS = {
    "A": 0.05, "B": 0.07, "C": 0.06, "D": 0.04, "E": 0.07, "R0": 0.8, "R1": 0.8, "F": 0.5,
    "W": 1.25, "BR0": 0.1, "BR1": 0.1,
}
# Issue 7's reference figures (broker CPU us/msg, or KiB/connection for F).
REFERENCE = {
    "A": "~25 / ~1.3", "B": "~44 / ~3.0", "C": "~98 / ~5.4", "D": "~17 / ~0.54",
    "E": "~21 / ~1.5", "R0": "~20 / ~20", "R1": "~36 / ~31", "F": "~1.0 / ~4.8",
    "W": "(Mosquitto's WebSocket path is much slower)",
    "BR0": "(issue 14: both brokers' CPU)", "BR1": "(issue 14: both brokers' CPU)",
}


# Issue 17 (TLS): scenario -> (figure key, label, decimals, denominator, target ratio, target
# text). The denominator is Mosquitto in the same scenario, or (scenario, broker) of the same
# round; TA and TW have a second target against Mosquitto, TS an absolute one.
TLS_ROWS = {
    "TF": ("kib_per_conn", "KiB per connection", 3, None, 0.5, "≤ 0.5 ×"),
    "TH": ("broker_cpu_us_per_conn", "CPU µs per handshake", 1, None, 0.9, "≤ 0.9 ×"),
    "THE": ("broker_cpu_us_per_conn", "CPU µs per handshake", 1, None, 0.9, "≤ 0.9 ×"),
    "THR": ("broker_cpu_us_per_conn", "CPU µs per handshake", 1, ("TH", "midge"), 0.3,
            "≤ 0.3 × midge's full handshake (TH)"),
    # TH12/THR12: the same with TLS 1.2 clients; THR12 against TH12, the full handshake of
    # the same version, as THR against TH.
    "TH12": ("broker_cpu_us_per_conn", "CPU µs per handshake", 1, None, 0.9, "≤ 0.9 ×"),
    "THR12": ("broker_cpu_us_per_conn", "CPU µs per handshake", 1, ("TH12", "midge"), 0.3,
              "≤ 0.3 × midge's full TLS 1.2 handshake (TH12)"),
    "TA": ("broker_cpu_us_per_msg", "CPU µs/msg", 3, ("A", "midge"), 1.3,
           "≤ 1.3 × midge's TCP figure (A), and ≤ 0.1 × Mosquitto over TLS"),
    "TW": ("broker_cpu_us_per_msg", "CPU µs/msg", 3, ("W", "midge"), 1.3,
           "≤ 1.3 × midge's WebSocket figure (W)"),
    "TS": ("storm_hs_secs", "s until all connected; connected clients' p99", 2, None, None,
           "connected clients' p99 < 1 ms"),
}
TLS_CONNS = ("TF", "TH", "THE", "THR", "TH12", "THR12")


def tls_summary_row(w, runs, sc, title):
    """One TLS row of the summary table (issue 17)."""
    key, label, dec, den, target, ttext = TLS_ROWS[sc]
    cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
    if all(r["kv"].get("status") == "unsupported" for r in runs
           if r["sc"] == sc and r["broker"] == "mosquitto"):
        cells[0] = "unsupported (no WebSocket)"
    rtext, rmed = ratio_spread(runs, sc, key)
    met = "–"
    if den:
        dtext, dmed = ratio_spread(runs, sc, key, den=den)
        rtext = f"{dtext} × midge {den[0]}" + (f"; {rtext} × Mosquitto" if rmed else "")
        if dmed is not None:
            ok = dmed <= target and (sc != "TA" or (rmed is not None and rmed <= 0.1))
            met = "yes" if ok else "**no**"
    elif sc == "TS":
        p99 = [spread(values(runs, sc, b, "p99_us"), 0)[0] for b in BROKERS]
        cells = [f"{c}; p99 {p} µs" for c, p in zip(cells, p99)]
        mids = [v for v in values(runs, sc, "midge", "p99_us") if v is not None]
        if mids:
            met = "yes" if statistics.median(mids) < 1000 else "**no**"
    elif rmed is not None:
        met = "yes" if rmed <= target else "**no**"
    w(f"| {sc}: {title} | {label} | {cells[0]} | {cells[1]} | {rtext} | {ttext} | {met} | |")


def is_scale(sc):
    return sc[:1] in ("S", "T") and sc[1:2].isdigit()


def is_conns(sc):
    """Scenario F and its MQTT 5 twin F5: idle connections, memory per connection."""
    return sc in ("F", "F5")


# The reference broker, then midge. compare.sh --ab (AB=1): the old midge instead of
# Mosquitto; every ratio is then new/old.
AB = ENV.get("AB") == "1"
BROKERS = ("before", "midge") if AB else ("mosquitto", "midge")
# The page's A/B section, written by compare.sh --ab between these markers and kept by the
# other runs.
AB_BEGIN, AB_END = "<!-- compare.sh --ab: begin -->", "<!-- compare.sh --ab: end -->"
PERSIST_BEGIN, PERSIST_END = "<!-- persistence.py: begin -->", "<!-- persistence.py: end -->"
# Issue 13: MQTT 5 must not slow 3.1.1 down by more than this, row by row.
AB_LIMIT = 1.05
# Issue 13: memory per idle 3.1.1 connection (scenario F), KiB, at most.
F_LIMIT_KIB = 0.40
PUBSUB_METRICS = [
    # key, label, decimals
    ("broker_cpu_us_per_msg", "broker CPU µs per delivered message", 3),
    ("msgs_per_s", "delivered msg/s", 0),
    ("p50_us", "latency p50, µs", 0),
    ("p99_us", "latency p99, µs", 0),
    ("p999_us", "latency p99.9, µs", 0),
    ("broker_cpu_pct", "broker CPU, % of a core", 0),
    ("broker_hwm_kib", "broker peak RSS, KiB", 0),
    ("bench_cpu_pct", "midge-bench CPU, % of a core", 0),
]
CONNS_METRICS = [
    ("kib_per_conn", "broker RSS per connection, KiB", 3),
    ("held", "connections held", 0),
    ("conn_per_s", "handshakes per second", 0),
    ("hs_p99_us", "handshake p99, µs", 0),
    ("broker_cpu_us_per_conn", "broker CPU µs per handshake", 1),
    ("broker_rss_kib", "broker RSS with all connections, KiB", 0),
]


def parse_results(path):
    runs = []
    with open(path) as f:
        for line in f:
            sc, broker, rnd, rc, result = line.rstrip("\n").split("\t", 4)
            kv = {}
            for word in result.split()[1:]:
                if "=" in word:
                    k, v = word.split("=", 1)
                    kv[k] = v
            runs.append({"sc": sc, "broker": broker, "round": int(rnd), "rc": int(rc), "kv": kv})
    return runs


def num(run, key):
    v = run["kv"].get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, decimals):
    if v is None:
        return "–"
    if decimals == 0:
        return f"{v:,.0f}"
    return f"{v:,.{decimals}f}"


def spread(values, decimals):
    values = [v for v in values if v is not None]
    if not values:
        return "–", None
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, decimals), med
    return f"{fmt(med, decimals)} [{fmt(min(values), decimals)}..{fmt(max(values), decimals)}]", med


def round_ratios(runs, sc, key, num_broker="midge", den=None):
    """The per-round ratios behind ratio_spread: num_broker in sc over den=(scenario,
    broker), or over BROKERS[0] in sc, for every round where both have the figure."""
    den = den or (sc, BROKERS[0])
    by_round = {}
    for r in runs:
        if r["sc"] == sc and r["broker"] == num_broker:
            by_round.setdefault(r["round"], {})["num"] = num(r, key)
        if r["sc"] == den[0] and r["broker"] == den[1]:
            by_round.setdefault(r["round"], {})["den"] = num(r, key)
    return [p["num"] / p["den"] for _, p in sorted(by_round.items())
            if p.get("num") is not None and p.get("den")]


def ratio_spread(runs, sc, key, den=None):
    """midge/Mosquitto (A/B: new/old) per round (the two ran back to back), as median
    [min..max]. With den=(scenario, broker): midge in sc over that broker in that scenario,
    same round."""
    ratios = round_ratios(runs, sc, key, den=den)
    if not ratios:
        return "–", None
    med = statistics.median(ratios)
    dec = 3 if med < 0.1 else 2
    if len(ratios) == 1:
        return fmt(med, dec), med
    return f"{fmt(med, dec)} [{fmt(min(ratios), dec)}..{fmt(max(ratios), dec)}]", med


def values(runs, sc, broker, key):
    return [num(r, key) for r in runs if r["sc"] == sc and r["broker"] == broker]


# midge-bench's exit status when a run finished but its counts show a broken delivery
# guarantee (bench/bench.h EXIT_INTEGRITY); the RESULT line then says status=integrity.
EXIT_INTEGRITY = 6
# What the subscribers count on every pubsub run (bench/pubsub.c on_message): messages
# lost, received twice, routed to a subscriber whose filter does not match ("unexpected"
# on the RESULT line), received with the wrong size, topic or contents, and received
# without this run's tag (each run has a fresh broker, so none is another client's).
INTEGRITY_COUNTS = ("lost", "dup", "unexpected", "corrupt", "foreign")


def is_pubsub(run):
    return run["kv"].get("mode") == "pubsub" or (not is_conns(run["sc"]) and
                                                  "mode" not in run["kv"])


def counts(run):
    """The run's integrity counts as a dict, or None when its RESULT line lacks any of
    them (a run that failed before counting: nothing may be claimed about it)."""
    out = {}
    for k in INTEGRITY_COUNTS:
        v = num(run, k)
        if v is None:
            return None
        out[k] = v
    return out


def integrity_problems(r):
    """What the run's counts and exit status say is wrong with its deliveries, beyond
    what the configuration allows (QoS 0 loss). Empty for a clean run, and for a run
    without counts (problems() notes those: a failed run, not a broken delivery)."""
    kv = r["kv"]
    if kv.get("status") == "unsupported" or not is_pubsub(r):
        return []
    out = []
    c = counts(r)
    if c is not None:
        qos = num(r, "qos") or 0
        if qos and (c["lost"] or c["dup"]):
            out.append(f"**QoS {qos:.0f} guarantee broken**: lost {c['lost']:.0f}, "
                       f"duplicated {c['dup']:.0f}")
        elif c["dup"]:
            out.append(f"**QoS 0 messages duplicated**: {c['dup']:.0f}")
        for k, what in (("unexpected", "misrouted"), ("corrupt", "corrupt"),
                        ("foreign", "foreign")):
            if c[k]:
                out.append(f"**{c[k]:.0f} {what} message(s)**")
    if (r["rc"] == EXIT_INTEGRITY or kv.get("status") == "integrity") and not out:
        out.append(f"**midge-bench reported an integrity failure** (exit {r['rc']}, "
                   f"status={kv.get('status')})")
    return out


def problems(runs, sc):
    notes = []
    for r in runs:
        if r["sc"] != sc:
            continue
        kv = r["kv"]
        who = f"{r['broker']} round {r['round']}"
        if kv.get("status") == "unsupported":
            continue
        if kv.get("broker_died") == "1":
            notes.append(f"**{who}: the broker died during the run**")
        if kv.get("status") == "error" or r["rc"] not in (0, EXIT_INTEGRITY):
            notes.append(f"{who}: the run failed (midge-bench exit {r['rc']})")
        for p in integrity_problems(r):
            notes.append(f"{who}: {p}")
        c = counts(r) if is_pubsub(r) else None
        if is_pubsub(r) and c is None:
            notes.append(f"{who}: no message counts: nothing is known of its deliveries")
        if c and c["lost"] and not num(r, "qos"):
            notes.append(f"{who}: QoS 0 loss: lost {c['lost']:.0f}")
        if kv.get("status") == "partial":
            notes.append(f"{who}: held only {kv.get('held')} of {kv.get('count')} connections")
    return notes


def delivery_summary(runs):
    """One sentence on what the subscribers counted over every pubsub run, from the
    counts themselves: the claim that nothing was lost or duplicated is made only when
    every run reported its counts and all of them are zero."""
    pubsub = [r for r in runs if is_pubsub(r) and r["kv"].get("status") != "unsupported"]
    if not pubsub:
        return ""
    uncounted = [r for r in pubsub if counts(r) is None]
    total = {k: sum((counts(r) or {}).get(k, 0) for r in pubsub) for k in INTEGRITY_COUNTS}
    told = (f"over the {len(pubsub) - len(uncounted)} pubsub runs that reported their counts, "
            f"the subscribers counted {total['lost']:,.0f} lost, {total['dup']:,.0f} "
            f"duplicated, {total['unexpected']:,.0f} misrouted, {total['corrupt']:,.0f} "
            f"corrupt and {total['foreign']:,.0f} foreign messages")
    if uncounted:
        return (f"{len(uncounted)} of {len(pubsub)} pubsub runs reported no message counts; "
                f"{told}.")
    if not any(total.values()):
        return f"No message was lost, duplicated, misrouted or corrupted: {told}."
    return told[0].upper() + told[1:] + "."


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    distro = ""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return model, mem, distro


def chart(runs, scenarios):
    """Three panels: CPU per message, saturated throughput, memory per connection."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return False
    work = os.path.dirname(ENV["RESULTS"])

    def datafile(name, scs, key):
        path = os.path.join(work, name)
        with open(path, "w") as f:
            for sc in scs:
                row = [sc]
                for b in BROKERS:
                    vs = [v for v in values(runs, sc, b, key) if v is not None]
                    if vs:
                        row += [statistics.median(vs), min(vs), max(vs)]
                    else:
                        row += ["NaN"] * 3
                f.write(" ".join(str(x) for x in row) + "\n")
        return path

    def seriesfile(name, scs, xkey):
        """x, then median/min/max of CPU per message for each broker, sorted by x."""
        rows = []
        for sc in scs:
            xs = [num(r, xkey) for r in runs if r["sc"] == sc and num(r, xkey) is not None]
            if not xs:
                continue
            row = [xs[0]]
            for b in BROKERS:
                vs = [v for v in values(runs, sc, b, "broker_cpu_us_per_msg") if v is not None]
                row += [statistics.median(vs), min(vs), max(vs)] if vs else ["NaN"] * 3
            rows.append(row)
        rows.sort()
        path = os.path.join(work, name)
        with open(path, "w") as f:
            for row in rows:
                f.write(" ".join(str(x) for x in row) + "\n")
        return path if rows else None

    main_sc = [s for s in scenarios if not is_scale(s) and s != "W" and s not in TLS_ROWS]
    cpu_sc = [s for s in main_sc if not is_conns(s)]
    sat_sc = [s for s in main_sc if s in ("A", "A5", "A5a", "B", "C", "D", "E", "SH")]
    panels = []
    if cpu_sc:
        panels.append(("bars", datafile("cpu.dat", cpu_sc, "broker_cpu_us_per_msg"),
                       "broker CPU per delivered message (µs, log)", True))
    if sat_sc:
        panels.append(("bars", datafile("rate.dat", sat_sc, "msgs_per_s"),
                       "delivered msg/s at saturation (log)", True))
    mem_sc = [s for s in scenarios if is_conns(s)]
    if mem_sc:
        panels.append(("bars", datafile("mem.dat", mem_sc, "kib_per_conn"),
                       "broker RSS per idle connection (KiB)", False))
    s_path = seriesfile("subs.dat", [s for s in scenarios if s.startswith("S") and is_scale(s)],
                        "subs")
    if s_path:
        panels.append(("series", s_path, "CPU µs/msg vs subscribers on one topic (log-log)",
                       "subscribers"))
    t_path = seriesfile("topics.dat", [s for s in scenarios if s.startswith("T") and is_scale(s)
                                       and not s.endswith("w")], "topics")
    if t_path:
        panels.append(("series", t_path, "CPU µs/msg vs distinct topics, exact filters (log-log)",
                       "topics"))
    if "W" in scenarios and "A" in scenarios:
        path = os.path.join(work, "ws.dat")
        with open(path, "w") as f:
            for label, sc, b in (("midge TCP", "A", "midge"), ("midge WS", "W", "midge"),
                                 ("mosq. TCP", "A", "mosquitto"), ("mosq. WS", "W", "mosquitto")):
                vs = [v for v in values(runs, sc, b, "broker_cpu_us_per_msg") if v is not None]
                if vs:
                    f.write(f'"{label}" {statistics.median(vs)} {min(vs)} {max(vs)}\n')
        panels.append(("ws", path, "WebSocket vs TCP, scenario A: CPU µs/msg (log)", True))
    if not panels:
        return False
    cols = 3 if len(panels) > 3 else len(panels)
    rows = (len(panels) + cols - 1) // cols
    script = [
        f"set terminal pngcairo size {480 * cols},{430 * rows + 30} font 'sans,10'",
        f"set output '{PNG}'",
        f"set multiplot layout {rows},{cols} title 'midge vs Mosquitto "
        f"(median, bars show min..max over {ENV['ROUNDS']} round(s))'",
        "set style fill solid 0.8 border -1",
        "set key top right",
        "set grid ytics",
        "set xtics nomirror",
    ]
    for kind, path, title, extra in panels:
        script.append(f"set title '{title}'")
        if kind == "series":
            script += [
                "unset style", "set style fill solid 0.8 border -1",
                "set logscale xy", "set xrange [*:*]", "set yrange [*:*]",
                "set format x '%g'", "set format y '%g'", f"set xlabel '{extra}'",
                "set key top left",
                f"plot '{path}' using 1:2:3:4 with yerrorlines title 'mosquitto' "
                "lc rgb '#8a8a8a' pt 7 lw 2, "
                f"'' using 1:5:6:7 with yerrorlines title 'midge' lc rgb '#2b7bba' pt 7 lw 2",
                "unset logscale x", "unset xlabel", "set format x", "set key top right",
            ]
            continue
        script += ["set style data histograms", "set style histogram errorbars gap 1 lw 1",
                   "set xrange [*:*]"]
        if extra:
            script += ["set logscale y", "set yrange [*:*]", "set format y '%g'"]
        else:
            script += ["unset logscale y", "set yrange [0:*]"]
        if kind == "ws":
            script.append(f"plot '{path}' using 2:3:4:xtic(1) notitle lc rgb '#2b7bba'")
        else:
            script.append(
                f"plot '{path}' using 2:3:4:xtic(1) title 'mosquitto' lc rgb '#8a8a8a', "
                f"'' using 5:6:7 title 'midge' lc rgb '#2b7bba'")
    script.append("unset multiplot")
    gp = os.path.join(work, "chart.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    res = subprocess.run([gnuplot, gp], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write("[report] gnuplot failed:\n" + res.stderr)
        return False
    return True


# bench/syscalls.sh --build-dir build 3, at the commit the CPU section describes.
SYSCALL_ROWS = [
    "| A: 16 pairs, QoS 0, saturated | 8.03 | 0.021 | 0.003 |",
    "| B: 16 pairs, QoS 1, saturated | 15.73 | 0.203 | 0.013 |",
    "| D: fan-out 1 -> 100, QoS 0, saturated | 4.87 | 0.010 | 0.002 |",
    "| R0: 16 pairs at 8,000 msg/s, QoS 0 | 10.68 | 2.58 | 0.24 |",
]

# Measured when each change was made (the commit messages and session notes carry them).
CHANGE_ROWS = [
    "| Read up to 64 KiB and decode every packet in it; one write per connection per loop "
    "turn; a PUBLISH encoded once per outgoing QoS and shared by reference | the system-call "
    "counts above: 0.022 per message in A against Mosquitto's 7.7 | `bench/syscalls.sh` |",
    "| Output buffers pooled up to 64 KiB (before, a fan-out regrew and freed one per "
    "subscriber every turn: `realloc`, `mmap` and copies were 15 % of the CPU) | D: 0.61-0.74 "
    "→ 0.13 µs per message; D ratio 0.052 → 0.005 | the D command, A/B alternating |",
    "| WebSocket data frames unmasked in place, 8 bytes at a time, instead of through "
    "libwslay's byte loop | WebSocket → TCP: 2,472 → 1,906 instructions per message "
    "(TCP → TCP: 1,673) | `bench/ws_callgrind.sh` |",
    "| A 25 µs bound on how long a loop turn's output may wait | no change in quiet A/B runs; "
    "reverted | R0 command, A/B alternating |",
    "| Client sockets in midge's own epoll set instead of a `uv_tcp_t` each | F: 0.93 → 0.61 "
    "KiB per connection; A: 0.22-0.23 µs per message before and after; R0: 14.3-14.7 → "
    "14.4-15.2 µs per message (noise), 2.6 → 3.7 system calls per message (a second "
    "`epoll_wait` per wake-up) | `midge-bench conns`; A and R0 commands, 3 alternating "
    "runs each; `bench/syscalls.sh` |",
    "| Session QoS state allocated on first use, client id inline, subscriptions as trie-leaf "
    "handles | F: 0.93 → 0.73 KiB alone; T100k: 0.44 → 0.34 µs per message, peak RSS 20.6 "
    "→ 14.5 MB; B: 1.020 → 1.008 µs per message | `midge-bench conns`; T100k and B "
    "commands |",
    "| proto's connection state inside the client struct, nothing kept twice | F: 0.36 KiB per "
    "connection with the two changes above | `midge-bench conns` |",
    "| One blocking `epoll_wait` per wake-up: libuv's backend fd sits in midge's epoll set and "
    "libuv runs a non-blocking turn when it is ready or a timer is due (`uv_backend_fd`, "
    "`uv_backend_timeout`), instead of a `uv_poll_t` on the set and a second wait | R0: 3.70 "
    "→ 2.61 system calls per message, 17.2-18.2 → 15.7-17.8 µs of CPU per message; A "
    "unchanged | `bench/syscalls.sh`; R0 and A commands, 3 alternating runs each |",
    "| The hash's last 1-7 bytes read with one or two loads instead of a variable-length "
    "`memcpy` into a zeroed word (a byte loop whose stores the next 8-byte load could not "
    "forward from) | A: hashing topic levels 9.4 % → 3.9 % of the broker's CPU samples | "
    "`perf record -F 2999 -p PID` during the A command, before and after |",
    "| What MQTT 5 had added per message, trimmed: topic names checked for U+0000 and bad "
    "UTF-8 a word at a time, No Local counted in the subscription tree (no per-subscriber "
    "test when no subscriber asked for it), the decoded PUBLISH used in place unless a topic "
    "alias rewrites it, the acknowledgement encoding and the no-ACL permission check inline | "
    "instructions per message, QoS 0 / WebSocket / QoS 1 / QoS 2 / fan-out per delivery: "
    "1,857 / 2,238 / 2,960 / 4,071 / 637 → 1,691 / 2,082 / 2,729 / 3,852 / 606 | "
    "`bench/callgrind_ab.py OLD NEW`, b94cc66 → 15022ed |",
    "| A packet's pieces handed to the output in one call (one inline room check for plain "
    "TCP; one staging pass for WebSocket, `outputv`), after TLS's record layer had made each "
    "piece a call of its own | the same five: 1,746 / 2,243 / 2,835 / 3,973 / 660 → 1,617 / "
    "2,098 / 2,594 / 3,670 / 532 | `bench/callgrind_ab.py OLD NEW`, 8692f8c → ab4924a |",
    "| WebSocket output without a packet tracker: since a packet's pieces come in one call, "
    "every call ends at a packet end, and the byte-by-byte walk of each piece's header that "
    "found those ends is gone | WebSocket QoS 0: 2,110 → 1,980 instructions per message "
    "(TCP's 1,629: W/A 1.30 → 1.22) | `bench/callgrind_ab.py OLD NEW`, 0d05991 → db8111c |",
]


def cpu_section(w):
    """Where the CPU goes and what each change bought, measured by hand with the commands
    given (a profile does not fit compare.sh's time budget)."""
    w("## CPU: where it goes, and what each change bought")
    w("")
    w("System calls per delivered message, median of 3 alternating runs "
      "(`bench/syscalls.sh`: `perf stat -e raw_syscalls:sys_enter` on the broker for 2 s of "
      "a `midge-bench pubsub` run, divided by the messages delivered in that time). "
      "Mosquitto reads each packet with several `read` calls and writes each packet with "
      "its own `write`; midge reads up to 64 KiB and decodes every packet in it, and "
      "writes each connection's output once per loop turn, so under load one system call "
      "carries dozens of messages. At a fixed rate every message travels alone and the "
      "counts converge:")
    w("")
    w("| scenario | Mosquitto | midge | midge/Mosquitto |")
    w("| --- | --- | --- | --- |")
    for row in SYSCALL_ROWS:
        w(row)
    w("")
    w("Where midge's CPU goes in scenario A (`perf record -F 2999 -g -p PID` for 4 s of the "
      "A command, broker on CPU 0): 40 % in the kernel (socket sends and receives, and the "
      "hypervisor's interrupt enabling at 10 %), 39 % in midge, 20 % in libc. The largest "
      "share of midge's own is matching topics against the subscription tree, about 22 %: "
      "hashing each level for the children lookup (10 %, 4 % since the last change below), finding level ends (`memchr`, "
      "5 %), comparing keys (2.5 %) and the walk itself. Decoding is 5 %, copying output "
      "4.5 %. A topic-to-subscribers cache invalidated by subscription changes would take "
      "most of the matching share; the targets did not need it.")
    w("")
    w("What each change bought, measured against the commit before it when it was made, on this machine (the first row is the design midge started with, so its figure is the comparison with Mosquitto):")
    w("")
    w("| change | what it bought | measured with |")
    w("| --- | --- | --- |")
    for row in CHANGE_ROWS:
        w(row)
    w("")


def memory_section(w):
    """Where one idle connection's memory goes (scenario F), from a malloc census and the
    struct sizes tests/unit/test_footprint.c pins; the F row of the table above is the
    measurement."""
    w("## Memory per idle connection (F): where it goes")
    w("")
    w("One idle connection with one subscription, glibc chunks (size + 8, rounded to 16); "
      "`tests/unit/test_footprint.c` pins the struct sizes and the pure layers' heap per "
      "connection (165 bytes: session, leaf, table shares):")
    w("")
    w("| what | bytes |")
    w("| --- | --- |")
    w("| `struct mq_client`: midge's socket state with proto's `struct mq_conn` (96) inside, "
      "184 bytes, + the peer name, here 16 (`127.0.0.1:54321`); no libuv handle, the socket "
      "sits in midge's own epoll set (`src/net/poller.c`) | 208 |")
    w("| `struct mq_session` (56) with its client id and its one subscription's leaf handle "
      "inline: 69 bytes for a 13-byte id | 80 |")
    w("| subscription-tree leaf with its one subscriber inline | 48 |")
    w("| shares of the sessions table and the tree's children map | ≈ 13 each |")
    w("| total | ≈ 360; the F row above is the measurement |")
    w("")
    w("What it took from 1.50 KiB: idle connections keep no output buffer (a pool, trimmed "
      "each tick), subscription bookkeeping sized for one filter, one peer string, trie "
      "leaves with one subscriber inline, 8-byte hash slots (value pointer only), and "
      "transport layers allocated only for TLS/WebSocket connections (1.50 → 0.93 KiB). "
      "Then, from 0.93 KiB (each step measured alone with `midge-bench conns --count 10000 "
      "--rate 2000 --hold 2 --keepalive 600` against the scenario F configuration):")
    w("")
    w("- **The per-connection libuv stream** (248 bytes): client sockets sit in one epoll "
      "set of midge's own, watched by a single `uv_poll_t`, so timers, signals, the store's "
      "`uv_async` and the thread pool stay libuv's. `struct mq_client` went from 440 bytes "
      "(chunk 448) to 97 plus its peer name: 0.93 → 0.61 KiB alone. The kernel's epoll "
      "entry per socket is not in the broker's RSS, with libuv or without.")
    w("- **The session** (192 → 80): its window, queue, drop counters, inbound QoS 2 ids "
      "and store numbering moved into a block allocated on a session's first QoS 1/2 or "
      "queued message (`struct mq_session_flow`, kept from then on, so QoS 1/2 traffic pays "
      "no allocation per message); the client id inside the session's own allocation "
      "(−32); and subscriptions kept as handles of their trie leaves, which already hold "
      "the filter and the granted QoS (one inline, more in a pointer set), instead of an "
      "array plus a copy of each filter (−64). With 100,000 subscriptions (T100k) that also "
      "saves the filter copies. 0.93 → 0.73 KiB alone.")
    w("- **`mq_conn` inside `mq_client`** (128 + 128 → 208): one allocation instead of "
      "two, and nothing kept twice: the sink names the `mq_conn` and the network layer "
      "finds its client from it (no `io` or `conn` pointer), the listener is proto's, and "
      "one timestamp serves `connect_timeout`, then keepalive. All three: 0.36 KiB.")
    w("")
    w("What an idle connection still pays is what it needs: the socket, its place in the "
      "client and dirty lists, the transport layers' pointer, proto's session, will, "
      "keepalive and backpressure state, the listener whose ACL applies (also offline), "
      "the user name for ACL checks, the last-seen time for expiry, and its subscription's "
      "leaf.")
    w("")


def latency_section(w):
    """Why the fixed-rate latency ratios mostly measure the VM's wake-up, not the broker
    (measured by hand with the commands the text gives)."""
    w('## Fixed-rate latency (R0, R1): what the p50 and p99 measure here')
    w('')
    w("At a fixed rate the broker is mostly idle, and on this VM a halted vCPU takes on the order of 100-200 µs to wake: one pair at 500 msg/s shows a p50 of about 180 µs for both brokers. The more CPU a broker burns per message, the less its CPU halts between messages, so at 16 pairs x 500 msg/s Mosquitto (about 25 % of a core) sees a p50 of about 52 µs and midge (about 14 %) about 105 µs. With CPU 0 kept awake by a `nice -n 19` busy loop the two are level or midge ahead (p50 89 µs midge, 96 µs Mosquitto; p99 176 and 186 µs; again on commit 8b2ce15 with midge's single wait, three alternating pairs: p50 86-98 against 94-108 µs, p99 180-266 against 211-270 µs, midge lower in every pair; without the busy loop in the same session: p50 102-112 against 49-63 µs, p99 178-225 against 158-270 µs). Commands, broker on CPU 0, midge-bench on CPU 1: `midge-bench pubsub --duration 3 --warmup 0.5 --size 64 --publishers N --subscribers N --topics N --qos 0 --rate R --port PORT --broker-pid PID` for N, R = 1, 500 and 16, 8000, with and without `taskset -c 0 nice -n 19 sh -c 'while :; do :; done'`. So R0's p99 ratio reflects wake-up latency more than work per message, and it moves from run to run with how often CPU 0 happens to halt: over the compare.sh runs of this machine its median has been 1.0-1.16 (before midge's own epoll set, commit b4d1672), 0.89 (after it, commit c8f1992: midge happened to use 22 % of a core, p50 57 µs) and 1.23 (commit 0986ba6: midge used 13 %, p50 102 µs, while in that run's noisy third round it used 23 % and had a p50 of 49 µs), while midge's work per message at this rate did not grow (broker on CPU 0, three alternating runs of the R0 command each: 14.3-14.7 µs of CPU per message before the epoll set, 14.4-15.2 after; 15.7-17.8 after the single wait, against 17.2-18.2 before it). So the p99 target of R0 is met or not depending on how idle the VM lets a lightly loaded broker's CPU get; the only lever a broker has is to burn CPU polling, which the CPU target forbids (the gap between messages is 125 µs; the CPU budget left under 0.8 × Mosquitto is about 10 µs per message). A 25 µs bound on how long a loop turn's output may wait was tried and made no difference.")
    w('')


def scaling_section(w, runs, scenarios, commands):
    """How CPU per delivered message grows with subscribers per topic and with topics."""
    cmds = {sc: cmd for sc, _, cmd in commands}
    s_sc = [s for s in scenarios if is_scale(s) and s.startswith("S")]
    t_sc = [s for s in scenarios if is_scale(s) and s.startswith("T")]
    if not s_sc and not t_sc:
        return

    def first(sc, key):
        vs = [num(r, key) for r in runs if r["sc"] == sc and num(r, key) is not None]
        return vs[0] if vs else None

    def growth(sc, base):
        """midge's median here over midge's median at the series' first point."""
        a = [v for v in values(runs, sc, "midge", "broker_cpu_us_per_msg") if v is not None]
        b = [v for v in values(runs, base, "midge", "broker_cpu_us_per_msg") if v is not None]
        if not a or not b:
            return "–"
        return f"{statistics.median(a) / statistics.median(b):.2f} ×"

    def table(scs, xkey, xlabel, extra):
        scs = sorted(scs, key=lambda sc: (first(sc, xkey) or 0, sc))
        base = scs[0]
        w(f"| {xlabel} | {extra[1]} | Mosquitto CPU µs/msg | midge CPU µs/msg | "
          f"midge/Mosquitto | midge, × its first point | Mosquitto msg/s | midge msg/s | "
          f"Mosquitto / midge peak RSS, KiB |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for sc in scs:
            cpu = [spread(values(runs, sc, b, "broker_cpu_us_per_msg"), 3)[0] for b in BROKERS]
            rate = [spread(values(runs, sc, b, "msgs_per_s"), 0)[0] for b in BROKERS]
            rss = []
            for b in BROKERS:
                vs = [v for v in values(runs, sc, b, "broker_hwm_kib") if v is not None]
                rss.append(fmt(statistics.median(vs), 0) if vs else "–")
            x = first(sc, xkey)
            label = f"{fmt(x, 0)}" + (" (wildcard)" if sc.endswith("w") else "")
            w(f"| {label} ({sc}) | {extra[0](sc)} | {cpu[0]} | {cpu[1]} | "
              f"{ratio_spread(runs, sc, 'broker_cpu_us_per_msg')[0]} | {growth(sc, base)} | "
              f"{rate[0]} | {rate[1]} | {rss[0]} / {rss[1]} |")
        w("")
        w("```sh")
        for sc in scs:
            w(f"# {sc}")
            w(cmds[sc])
        w("```")
        w("")

    w("## Scaling")
    w("")
    w("Broker CPU per delivered message as the fan-out and the topic tree grow, QoS 0, "
      "64-byte payload, saturated, both brokers in the same run (alternating as above), "
      f"{ENV['SCALE_WARMUP']} s warm-up + {ENV['SCALE_DURATION']} s measured. Every "
      "subscriber is its own MQTT connection (no multiplexing). Each row's ratio is per "
      "round, as above; \"× its first point\" divides midge's median by its median at the "
      "smallest point of the series.")
    w("")
    if s_sc:
        w("### Subscribers on one topic")
        w("")
        w("One publisher, S subscribers on its topic. The window (messages the publisher may "
          "have in flight until every subscriber has them) keeps at most about 20,000 "
          "deliveries in flight: 100 messages per subscriber up to 200 subscribers, then "
          "20,000 / S. So the large points also measure fan-out with little batching per "
          "subscriber connection, which is what a topic with thousands of subscribers sees; "
          "without the bound, Mosquitto's backlog at 10,000 subscribers takes longer to drain "
          "than a run lasts.")
        w("")
        w("Read the 10,000-subscriber point with that in mind: at window 2 each subscriber "
          "connection has one or two messages to send per loop turn, so the broker pays about "
          "one `write()` per delivery, where the smaller points share one `write()` among many "
          "messages. Its growth is the batching lost, not the subscription lookup or the "
          "fan-out loop; `midge-bench pubsub --publishers 1 --subscribers 10000 --topics 1 "
          "--window 20` against midge alone shows the fan-out with batching (Mosquitto cannot "
          "drain that backlog within a run).")
        w("")
        table(s_sc, "subs", "subscribers", (lambda sc: fmt(first(sc, "window"), 0), "window"))
    if t_sc:
        w("### Distinct topics")
        w("")
        w("10 publishers and 10 subscribers. Publisher i owns the topics `PREFIX/i/k` for "
          "k = i, i+10, i+20, ... below T and publishes on them in turn, one message per topic, "
          "like a fleet of devices reporting under their own topics; subscriber i holds one "
          "exact subscription per topic of publisher i (100 filters per SUBSCRIBE), so the "
          "broker holds T topics and T subscriptions, and every message matches exactly one. "
          "The wildcard row (`--full`) has one filter `PREFIX/i/+` per subscriber instead. "
          "Window 100 per publisher, as in scenario A.")
        w("")
        table(t_sc, "topics", "topics", (lambda sc: fmt(first(sc, "filters"), 0),
                                          "subscriptions"))


def mqtt5_section(w, runs, scenarios, commands):
    """The MQTT 5 rows (issue 13) beside the 3.1.1 ones they vary, for each broker: what MQTT
    5 costs a broker is its own ratio to its 3.1.1 figure of the same round."""
    cmds = {sc: cmd for sc, _, cmd in commands}
    base = {"A5": "A", "A5a": "A", "F5": "F"}
    rows = [sc for sc in ("A5", "A5a", "SH", "F5") if sc in scenarios]
    w("## MQTT 5 clients (issue 13)")
    w("")
    w("The same traffic from MQTT 5.0 clients. **A5**: scenario A's 16 pairs with MQTT 5 "
      "CONNECT, SUBSCRIBE and PUBLISH packets (empty property blocks; acknowledgements in their "
      "2-byte forms). **A5a**: A5 with each publisher setting topic alias 1 for its topic on "
      "its first message and sending an empty topic with the alias after that; the broker "
      "resolves the alias before matching and forwards the topic name, never the alias. "
      "**SH**: 16 publishers on one topic and 4 subscribers in one shared subscription "
      "(`$share/bench/<topic>`), QoS 1: each message goes to one member; the subscribers' "
      "counts are kept per publisher over the whole group, so \"lost\" is a message no member "
      "got and \"duplicated\" one that any member got twice. **F5**: scenario F's idle "
      "connections with MQTT 5. \"× its 3.1.1 row\" divides a broker's figure by its own "
      "figure in A (F for F5) of the same round.")
    w("")
    w("| scenario | figure | Mosquitto | midge | midge/Mosquitto | Mosquitto, × its 3.1.1 row "
      "| midge, × its 3.1.1 row |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    for sc in rows:
        if is_conns(sc):
            key, label, dec = "kib_per_conn", "KiB per connection", 3
        else:
            key, label, dec = "broker_cpu_us_per_msg", "CPU µs/msg", 3
        cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
        own = []
        for b in BROKERS:
            rs = (round_ratios(runs, sc, key, num_broker=b, den=(base[sc], b))
                  if base.get(sc) in scenarios else [])
            if not rs:
                own.append("–")
            elif len(rs) == 1:
                own.append(f"{rs[0]:.2f}")
            else:
                own.append(f"{statistics.median(rs):.2f} [{min(rs):.2f}..{max(rs):.2f}]")
        w(f"| {sc} | {label} | {cells[0]} | {cells[1]} | {ratio_spread(runs, sc, key)[0]} | "
          f"{own[0]} | {own[1]} |")
    w("")
    w("```sh")
    for sc in rows:
        w(f"# {sc}")
        w(cmds[sc])
    w("```")
    w("")
    if "SH" in scenarios:
        w("SH's brokers both run with `max_queued_messages 100000` (the other rows: 1000). "
          "Mosquitto 2.0.11 counts the QoS 1 messages of a fan-in against its queue limit "
          "after they were delivered and acknowledged. With 1000, 16 publishers → 1 plain "
          "subscriber at QoS 1 with at most 25 messages in flight per publisher (400 in all: "
          "`midge-bench pubsub --duration 3 --warmup 0.3 --size 64 --publishers 16 "
          "--subscribers 1 --topics 1 --qos 1 --window 25`) made it log \"Outgoing messages "
          "are being dropped\" and lose 375 messages, while its own log (`log_type all`) shows "
          "every one of the 28,225 PUBLISHes it sent to the subscriber acknowledged; the 15 "
          "publishers whose messages it dropped then waited for them to the end of the run. "
          "It happens with any window (window 5 to SH's 4 members lost 60 in one run of "
          "three) and not with `max_queued_messages 100000` (SH and the 16 → 1 command, 8 s "
          "runs: 0 lost); Mosquitto 2.0.13 lists \"various fixes around inflight quota "
          "management\". midge loses no message with either setting.")
        w("")


def ab_verdict(ratios):
    """Whether a row stayed within AB_LIMIT: its median ratio decides; the rounds say how
    sure that is."""
    if not ratios:
        return "–"
    med = statistics.median(ratios)
    if med <= AB_LIMIT:
        return "yes"
    if min(ratios) > AB_LIMIT:
        return "**no**: slower in every round"
    return "**no** (median; not in every round)"


def ab_main(runs, commands):
    """compare.sh --ab: the old midge ("before") against this one on the 3.1.1 rows. Writes
    the A/B section between its markers in OUT, keeping the rest of the page."""
    titles = {sc: t for sc, t, _ in commands}
    scenarios = [sc for sc, _, _ in commands]
    out = []
    w = out.append
    w(AB_BEGIN)
    w(f"## A/B: midge {ENV['GIT_REV']} against {ENV.get('AB_REV', 'the old build')}")
    w("")
    w(f"Written by `bench/compare.sh --ab` on {time.strftime('%Y-%m-%d %H:%M %Z')} (issue 13: "
      "MQTT 5 must not slow MQTT 3.1.1 down; every 3.1.1 row within 5 % of its figure before, "
      f"memory per idle 3.1.1 connection at most {F_LIMIT_KIB:.2f} KiB). The old midge "
      f"({ENV.get('AB_VERSION', '')}, commit {ENV.get('AB_REV', '?')}) and this one "
      f"({ENV['MIDGE_VERSION']}, commit {ENV['GIT_REV']}) ran the rows' commands alternately, "
      "run by run (the new one first in odd rounds), each on a fresh broker with the "
      f"page's broker configuration; {ENV['ROUNDS']} rounds of {ENV['WARMUP']} s warm-up + "
      f"{ENV['DURATION']} s measured; {ENV.get('PINNING') or 'not pinned'}; {ENV['ELAPSED']} s "
      "of runs. The ratio is new/old per round, then median [min..max]; a row is within 5 % "
      f"when its median ratio is at most {AB_LIMIT}. Broker CPU per delivered message (F: RSS "
      "per connection) is the figure: throughput moves with the other tenants of the machine.")
    w("")
    w(f"Load average (1, 5, 15 min) when the runs began: {ENV.get('LOAD_START', '?')}; when "
      f"they ended: {ENV.get('LOAD_END', '?')}, on {ENV['NPROC']} CPUs.")
    w("")
    w("```sh")
    w(ENV["COMPARE_CMD_EXPANDED"])
    w("```")
    w("")
    w("| row | figure | before | after | after/before | within 5 % | msg/s after/before |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    for sc in scenarios:
        if sc in TLS_ROWS:
            # A TLS row (issue 17, only when SCENARIOS names it): its summary figure, new/old
            # like the others (TS: seconds until the storm's clients were all connected).
            key, label, dec = TLS_ROWS[sc][:3]
            if sc == "TS":
                label = "storm: s until all connected"
        elif is_conns(sc):
            key, label, dec = "kib_per_conn", "KiB per connection", 3
        else:
            key, label, dec = "broker_cpu_us_per_msg", "CPU µs/msg", 3
        cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
        ratios = round_ratios(runs, sc, key)
        verdict = ab_verdict(ratios)
        if is_conns(sc):
            after = [v for v in values(runs, sc, "midge", key) if v is not None]
            if after:
                ok = statistics.median(after) <= F_LIMIT_KIB
                verdict += f"; ≤ {F_LIMIT_KIB:.2f} KiB: " + ("yes" if ok else "**no**")
        rate = ("–" if is_conns(sc) or sc in TLS_CONNS
                else ratio_spread(runs, sc, "msgs_per_s")[0])
        w(f"| {sc}: {titles[sc]} | {label} | {cells[0]} | {cells[1]} | "
          f"{ratio_spread(runs, sc, key)[0]} | {verdict} | {rate} |")
    w("")
    notes = [n for sc in scenarios for n in problems(runs, sc)]
    w("Problems seen: " + "; ".join(notes) + "." if notes else "No run failed and no broker died.")
    summary = delivery_summary(runs)
    if summary:
        w("")
        w(summary)
    for block in AB_NOTES:
        w("")
        w(block)
    w("")
    w(AB_END)
    section = "\n".join(out)
    try:
        with open(OUT) as f:
            page = f.read()
    except FileNotFoundError:
        page = ""
    if AB_BEGIN in page and AB_END in page:
        page = (page[:page.index(AB_BEGIN)] + section +
                page[page.index(AB_END) + len(AB_END):])
    elif PERSIST_BEGIN in page:
        at = page.index(PERSIST_BEGIN)
        page = page[:at] + section + "\n\n" + page[at:]
    else:
        page = page + ("\n" if page and not page.endswith("\n") else "") + section + "\n"
    with open(OUT, "w") as f:
        f.write(page)
    return fail_on_integrity(runs)


# What the A/B runs cannot say by themselves, measured by hand with the commands given:
# printed under the A/B table, each block a paragraph or a table. They name the commits
# they compare; measure again when those change.
AB_NOTES = [
    "**Instructions per message** (`bench/callgrind_ab.py` with the builds below, 64-byte "
    "payload, N1 = 2,000 and N2 = 12,000 messages; each figure is what one more delivered "
    "message costs, in user space): CPU time moves by ±20 % from run to run on this shared "
    "machine, more than the 5 % looked for; instruction counts do not move (the same build "
    "measured twice differs by under 1 %, QoS 1 by up to 2 %). The kernel's share is "
    "unchanged: over the same load (20,000 messages) 911bbc2 made 660 system calls at QoS 0 "
    "and 6,031 at QoS 1, v5 655 and 6,016.",
    "| path (rows) | 911bbc2, before issues 12 and 13 | 93f69e9, issue 12 | e1a027e, v5 "
    "| b94cc66, v5 complete | db8111c, now | now / 911bbc2 |\n"
    "| --- | --- | --- | --- | --- | --- | --- |\n"
    "| QoS 0, 1 → 1 (A, E) | 1,664 | 1,686 | 1,854 | 1,857 | 1,629 | 0.979 |\n"
    "| QoS 0 over WebSocket (W) | 2,062 | 2,083 | 2,235 | 2,238 | 1,980 | 0.960 |\n"
    "| QoS 1 (B, R1) | 2,568-2,613 | 2,663 | 2,961 | 2,960 | 2,598 | 1.011 |\n"
    "| QoS 2 (C) | 3,654-3,672 | 3,701 | 4,080 | 4,071 | 3,704 | 1.014 |\n"
    "| QoS 0, 1 → 10, per delivery (D) | 561 | 573 | 632 | 637 | 544 | 0.969 |",
    "Issue 12 (911bbc2 → 93f69e9) added 1-2 %; MQTT 5 (93f69e9 → e1a027e) 8-11 %, mostly "
    "in making the message (`proto_msg_new` looking for properties to forward), "
    "`handle_publish` (a copy of the decoded PUBLISH; Maximum QoS, Retain Available and "
    "Topic Alias checks), `broker_publish` and `sub_tree_match` (subscription identifiers, "
    "Retain As Published and No Local per subscriber) and, at QoS 1, Receive Maximum. What "
    "took it back (b94cc66 → 15022ed): topic names checked for U+0000 and bad UTF-8 a word "
    "at a time; No Local counted in the subscription tree, so a delivery tests it only when "
    "some subscriber asked for it; the decoded PUBLISH used in place unless a topic alias "
    "rewrites it; the acknowledgement encoding and the permission check of a listener "
    "without ACL inline. Tried and reverted, both worse: hoisting per-subscriber tests out "
    "of `broker_publish`'s loop, and passing the message copy by value. Since then, TLS's "
    "record layer (issue 17) made each piece of a packet a call of its own down to the "
    "socket, +3 % at QoS 0, +8 % over WebSocket, +9 % per fan-out delivery; handing a "
    "packet's pieces down in one call (ab4924a) took that back and more. A bridge's stored "
    "QoS 0 (issue 14) costs 12 instructions per QoS 0 delivery; WebSocket output without a "
    "packet tracker (db8111c: every output call now ends at a packet end) saves 130.",
    "**What that predicts for CPU time**: the instructions are user space, and the share of "
    "the broker's CPU time spent in user space (utime / (utime + stime) in /proc over one "
    "3.5 s run of each command) is 54-68 % in A, 70 % in W, 37-38 % in B, 28 % in C, 47 % in "
    "D, 80 % in E and 7-10 % in R0 and R1 (at 8,000 msg/s the kernel's wake-ups dominate). "
    "At the same instructions per cycle, now against 911bbc2 is -1 to -3 % of CPU per "
    "message in A, W, D and E, +0.4 % in B and C, and under ±0.2 % in R0 and R1: "
    "every row within 5 %. (At b94cc66 the same estimate was +6-9 % in A, W, D and E.) The "
    "CPU-time runs above can neither confirm nor refute it: their spreads are wider.",
    "**F, 1.09 of 911bbc2's memory per idle connection** (0.387 against 0.356 KiB, within"
    " issue 13's limit of 0.40 KiB): not MQTT 5 but the admin API (issue 15), which keeps"
    " 24 bytes of figures per connection in `mq_conn` (when it connected, PUBLISH packets"
    " and bytes in and out). That moves an idle client with its peer name from glibc's "
    "208-byte chunk to its 240-byte one (`tests/unit/test_footprint.c` pins the sizes). "
    "Later, `mq_conn`'s two timestamps (last packet, output over its limit since) became "
    "32 bits of milliseconds, read only as wrap-safe differences: the client is back in "
    "the 224-byte chunk, F 0.386 -> 0.371 KiB and TF 3.09 -> 3.04 KiB per connection "
    "(`ROUNDS=1 SCENARIOS=\"F TF\" bench/compare.sh --ab OLD`, 10a15e8 as OLD).",
    "**Before the trimming, two runs of the command**, 7 rounds each (b94cc66's and "
    "e1a027e's builds against 911bbc2): their medians disagreed by more than the 5 % looked "
    "for, A 0.95 and 1.13, W 1.07 and 1.00, B 0.97 and 1.06, C 1.09 and 0.97, D 0.96 and "
    "0.95, E 1.07 and 0.90, R0 1.05 and 1.10, R1 1.04 and 0.95 (F 1.00 and 1.00). On this "
    "machine, CPU time cannot tell a 5 % change from none.",
]


def main():
    runs = parse_results(ENV["RESULTS"])
    commands = []
    with open(ENV["COMMANDS"]) as f:
        for line in f:
            sc, title, cmd = line.rstrip("\n").split("\t", 2)
            commands.append((sc, title, cmd))
    if AB:
        return ab_main(runs, commands)
    scenarios = [sc for sc, _, _ in commands]
    titles = {sc: t for sc, t, _ in commands}
    have_chart = chart(runs, scenarios)
    model, mem, distro = machine()

    out = []
    w = out.append
    w("# Benchmarks: midge vs Mosquitto")
    w("")
    w("Written by `bench/compare.sh` (issue 7); do not edit by hand, run it again. "
      "Each figure is the median over the rounds, with [min..max]; the ratio is "
      "midge/Mosquitto, computed per round (the two brokers ran back to back) and "
      "then summarised the same way. Lower is better for CPU, latency and memory.")
    if ENV.get("QUICK") == "1":
        w("")
        w("> **QUICK run**: one short round, for checking the tooling, not for conclusions.")
    if ENV.get("MOSQUITTO_WS") != "yes" and "W" in scenarios:
        w("")
        w("Mosquitto has no WebSocket figure: Debian's `mosquitto` 2.0.11 is built without "
          "libwebsockets, and a `protocol websockets` listener fails to open (\"Unable to start "
          "any listening sockets\"). The WebSocket row compares midge with its own TCP figure, "
          "as issue 7 asks.")
    w("")
    w("## Machine and method")
    w("")
    w(f"- CPU: {model}, {ENV['NPROC']} logical CPUs (`nproc`); memory {mem}")
    w(f"- Kernel: {platform.release()}; {distro}")
    w(f"- Brokers: {ENV['MIDGE_VERSION']} (commit {ENV['GIT_REV']}) and "
      f"{ENV['MOSQUITTO_VERSION']} (`/usr/sbin/mosquitto`, Debian)")
    w(f"- Placement: {ENV.get('PINNING') or 'not pinned'}")
    w(f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {ENV['ROUNDS']} round(s), "
      f"{ENV['WARMUP']} s warm-up + {ENV['DURATION']} s measured per run "
      f"({ENV['SCALE_WARMUP']} s + {ENV['SCALE_DURATION']} s for the scaling series); "
      f"{ENV['ELAPSED']} s for all runs; file-descriptor hard limit {ENV['FD_LIMIT']}; load "
      f"average {ENV.get('LOAD_START', '?')} when the runs began, {ENV.get('LOAD_END', '?')} "
      "when they ended")
    w("- Each run starts a fresh broker on a free loopback port with the same configuration "
      "file (below), runs one `midge-bench` command against it, and stops it. The order "
      "alternates: midge first in odd rounds, Mosquitto first in even ones.")
    w("- Broker CPU is the sum of its threads' run time (`/proc/PID/task/*/schedstat`) over the "
      "measured window, divided by the messages the subscribers received in that window. "
      "Peak RSS is `VmHWM`. Latency is from the publisher's send (in the payload) to the "
      "subscriber's read, for messages sent in the window.")
    w("- Saturated runs keep at most 100 messages per publisher in flight end to end "
      "(`--window`), and at QoS 1/2 at most 20 unacknowledged PUBLISH flows per publisher "
      "(`--pub-inflight`, libmosquitto's default): Mosquitto acknowledges and then silently "
      "drops QoS 2 messages beyond its `max_inflight_messages`.")
    w("")
    w("Reproduce with (it builds midge and midge-bench if needed; `--quick` for a one-round "
      "check of the tooling, `--full` for 5 s runs and extra scaling points):")
    w("")
    w("```sh")
    w(ENV["COMPARE_CMD"])
    w("# the same, spelled out:")
    w(ENV["COMPARE_CMD_EXPANDED"])
    w("```")
    w("")
    w("Broker configuration (both brokers; midge ignores `set_tcp_nodelay` with a warning "
      "and always sets TCP_NODELAY):")
    w("")
    w("```")
    w("listener PORT 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 20\n"
      "max_queued_messages 1000\nset_tcp_nodelay true\npersistence false\n"
      "connection_messages false\nlog_dest stderr\nlog_type error\nlog_type warning")
    w("```")
    if "SH" in scenarios:
        w("")
        w("Scenario SH adds `max_queued_messages 100000` to it, for both brokers (see "
          "[MQTT 5 clients](#mqtt-5-clients-issue-13)).")
    if "W" in scenarios:
        w("")
        w("Scenario W uses the same file with `protocol websockets` after the `listener` line, "
          "and `midge-bench --ws /mqtt`: an HTTP/1.1 upgrade with subprotocol `mqtt`, then "
          "each MQTT packet in its own masked binary frame, as MQTT.js sends them.")
    w("")
    w("## Summary")
    w("")
    if have_chart:
        w(f"![midge vs Mosquitto: CPU per message, throughput, memory per connection]"
          f"({os.path.basename(PNG)})")
        w("")
    w("| scenario | figure | Mosquitto | midge | midge/Mosquitto | target | met | issue 7 "
      "reference, Mosquitto / FlashMQ |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sc in [s for s in scenarios if not is_scale(s)]:
        if sc in TLS_ROWS:
            tls_summary_row(w, runs, sc, titles[sc])
            continue
        if is_conns(sc):
            key, label, dec = "kib_per_conn", "KiB per connection", 3
        else:
            key, label, dec = "broker_cpu_us_per_msg", "CPU µs/msg", 3
        cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
        if sc == "W":
            if ENV.get("MOSQUITTO_WS") != "yes":
                cells[0] = "no WebSocket support"
            rtext, rmed = ratio_spread(runs, sc, key, den=("A", "midge"))
            ttext = "≤ 1.25 × midge's TCP figure (A)"
            met = "–" if rmed is None else ("yes" if rmed <= TARGETS["W"] else "**no**")
            w(f"| {sc}: {titles[sc]} | {label} | {cells[0]} | {cells[1]} | "
              f"{rtext} × midge TCP (A) | {ttext} | {met} | {REFERENCE['W']} |")
            continue
        rtext, rmed = ratio_spread(runs, sc, key)
        target = TARGETS.get(sc)
        met = "–"
        if rmed is not None and target is not None:
            ok = rmed <= target
            if sc in ("R0", "R1"):
                _, p99r = ratio_spread(runs, sc, "p99_us")
                ok = ok and p99r is not None and p99r <= 1.0
            met = "yes" if ok else "**no**"
        ttext = "–" if target is None else (
            f"≤ {target} ×" + (" (and p99 ≤ 1 ×)" if sc in ("R0", "R1") else ""))
        w(f"| {sc}: {titles[sc]} | {label} | {cells[0]} | {cells[1]} | {rtext} | {ttext} | "
          f"{met} | {REFERENCE.get(sc, '')} |")
    w("")
    all_notes = [n for sc in scenarios for n in problems(runs, sc)]
    if all_notes:
        w("Problems seen: " + "; ".join(all_notes) + ".")
    else:
        w("No run failed and no broker died.")
    summary = delivery_summary(runs)
    if summary:
        w("")
        w(summary)
    w("")
    if any(sc in scenarios for sc in ("A5", "A5a", "SH", "F5")):
        mqtt5_section(w, runs, scenarios, commands)
    if "F" in scenarios:
        memory_section(w)
    if any(sc in TLS_ROWS for sc in scenarios):
        tls_section(w)
    if "R0" in scenarios or "R1" in scenarios:
        latency_section(w)
    cpu_section(w)
    scaling_section(w, runs, scenarios, commands)
    w("## Scenarios")
    for sc, title, cmd in commands:
        w("")
        w(f"### {sc}: {title}")
        w("")
        w("```sh")
        w(cmd)
        w("```")
        w("")
        metrics = CONNS_METRICS if is_conns(sc) or sc in TLS_CONNS else PUBSUB_METRICS
        if sc == "TS":
            metrics = PUBSUB_METRICS[:5] + [("max_us", "latency max, µs", 0)] + [
                ("storm_hs_secs", "storm: seconds until all connected", 2),
                ("storm_held", "storm: connections held", 0),
                ("storm_failed", "storm: connections failed", 0),
                ("storm_hs_p99_us", "storm: handshake p99, µs", 0)]
        w("| figure | Mosquitto | midge | midge/Mosquitto |")
        w("| --- | --- | --- | --- |")
        for key, label, dec in metrics:
            cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
            w(f"| {label} | {cells[0]} | {cells[1]} | {ratio_spread(runs, sc, key)[0]} |")
        if sc == "W":
            for key, label, dec in PUBSUB_METRICS[:5]:
                w(f"| midge WebSocket / midge TCP (scenario A, same round): {label} | | | "
                  f"{ratio_spread(runs, 'W', key, den=('A', 'midge'))[0]} |")
        if not is_conns(sc) and sc not in TLS_CONNS:
            cells = []
            for b in BROKERS:
                mine = [r for r in runs if r["sc"] == sc and r["broker"] == b
                        and r["kv"].get("status") != "unsupported"]
                counted = [r for r in mine if counts(r) is not None]
                cell = " / ".join(f"{sum(num(r, k) or 0 for r in counted):.0f}"
                                  for k in ("lost", "dup", "reorder", "unexpected", "corrupt",
                                            "foreign")) if counted else "–"
                if len(counted) < len(mine):
                    cell += f" ({len(mine) - len(counted)} run(s) without counts)"
                cells.append(cell)
            w(f"| lost / duplicated / reordered / misrouted / corrupt / foreign, all rounds | "
              f"{cells[0]} | {cells[1]} | |")
        notes = problems(runs, sc)
        if notes:
            w("")
            for n in notes:
                w(f"- {n}")
    w("")
    text = "\n".join(out)
    # The persistence section is written by bench/persistence.py (issue 6), the A/B section
    # by compare.sh --ab, each between its markers; a run of this script keeps them.
    try:
        with open(OUT) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    kept = []
    for begin, end in ((AB_BEGIN, AB_END), (PERSIST_BEGIN, PERSIST_END)):
        if begin in old and end in old:
            kept.append((old.index(begin), old[old.index(begin):old.index(end) + len(end)]))
    for _, block in sorted(kept):
        text += "\n" + block + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    return fail_on_integrity(runs)


def fail_on_integrity(runs):
    """A broken delivery fails compare.sh (after the page is written, which says so)."""
    broken = [f"{r['sc']} {r['broker']} round {r['round']}: {p}"
              for r in runs for p in integrity_problems(r)]
    if broken:
        sys.stderr.write("[report] integrity problems (see the page's summary):\n  " +
                         "\n  ".join(p.replace("**", "") for p in broken) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

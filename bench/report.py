#!/usr/bin/env python3
"""bench/report.py - turns bench/compare.sh's raw results into docs/benchmarks.md.

Reads the environment compare.sh exports (RESULTS, COMMANDS, OUT, ...), writes
the Markdown page and a PNG chart beside it via gnuplot. Medians with
[min..max] everywhere: with three rounds on a shared machine the spread is as
much a result as the median.
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ENV = os.environ
OUT = ENV["OUT"]
PNG = os.path.splitext(OUT)[0] + ".png"

# Issue 7: midge/Mosquitto ratio to reach, on the headline figure of each scenario.
TARGETS = {
    "A": 0.05, "B": 0.07, "C": 0.06, "D": 0.04, "E": 0.07, "R0": 0.8, "R1": 0.8, "F": 0.5,
}
# Issue 7's reference figures (broker CPU us/msg, or KiB/connection for F).
REFERENCE = {
    "A": "~25 / ~1.3", "B": "~44 / ~3.0", "C": "~98 / ~5.4", "D": "~17 / ~0.54",
    "E": "~21 / ~1.5", "R0": "~20 / ~20", "R1": "~36 / ~31", "F": "~1.0 / ~4.8",
}
BROKERS = ("mosquitto", "midge")
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


def ratio_spread(runs, sc, key):
    """midge/Mosquitto per round (the two ran back to back), as median [min..max]."""
    by_round = {}
    for r in runs:
        if r["sc"] == sc:
            by_round.setdefault(r["round"], {})[r["broker"]] = num(r, key)
    ratios = []
    for pair in by_round.values():
        a, b = pair.get("midge"), pair.get("mosquitto")
        if a is not None and b:
            ratios.append(a / b)
    if not ratios:
        return "–", None
    med = statistics.median(ratios)
    dec = 3 if med < 0.1 else 2
    if len(ratios) == 1:
        return fmt(med, dec), med
    return f"{fmt(med, dec)} [{fmt(min(ratios), dec)}..{fmt(max(ratios), dec)}]", med


def values(runs, sc, broker, key):
    return [num(r, key) for r in runs if r["sc"] == sc and r["broker"] == broker]


def problems(runs, sc):
    notes = []
    for r in runs:
        if r["sc"] != sc:
            continue
        kv = r["kv"]
        who = f"{r['broker']} round {r['round']}"
        if kv.get("broker_died") == "1":
            notes.append(f"**{who}: the broker died during the run**")
        if kv.get("status") == "error" or r["rc"] not in (0, 6):
            notes.append(f"{who}: the run failed (midge-bench exit {r['rc']})")
        lost, dup = num(r, "lost") or 0, num(r, "dup") or 0
        qos = num(r, "qos") or 0
        if lost or dup:
            kind = "**QoS %d guarantee broken**" % qos if qos else "QoS 0 loss"
            notes.append(f"{who}: {kind}: lost {lost:.0f}, duplicated {dup:.0f}")
        if kv.get("status") == "partial":
            notes.append(f"{who}: held only {kv.get('held')} of {kv.get('count')} connections")
    return notes


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

    cpu_sc = [s for s in scenarios if s != "F"]
    sat_sc = [s for s in scenarios if s in ("A", "B", "C", "D", "E")]
    panels = []
    if cpu_sc:
        panels.append((datafile("cpu.dat", cpu_sc, "broker_cpu_us_per_msg"),
                       "broker CPU per delivered message (µs, log)", True))
    if sat_sc:
        panels.append((datafile("rate.dat", sat_sc, "msgs_per_s"),
                       "delivered msg/s at saturation (log)", True))
    if "F" in scenarios:
        panels.append((datafile("mem.dat", ["F"], "kib_per_conn"),
                       "broker RSS per idle connection (KiB)", False))
    if not panels:
        return False
    width = 480 * len(panels)
    script = [
        f"set terminal pngcairo size {width},460 font 'sans,10'",
        f"set output '{PNG}'",
        f"set multiplot layout 1,{len(panels)} title 'midge vs Mosquitto "
        f"(median, bars show min..max over {ENV['ROUNDS']} round(s))'",
        "set style data histograms",
        "set style histogram errorbars gap 1 lw 1",
        "set style fill solid 0.8 border -1",
        "set key top right",
        "set grid ytics",
        "set xtics nomirror",
    ]
    for path, title, log in panels:
        script.append(f"set title '{title}'")
        if log:
            script += ["set logscale y", "set yrange [*:*]", "set format y '%g'"]
        else:
            script += ["unset logscale y", "set yrange [0:*]"]
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


def main():
    runs = parse_results(ENV["RESULTS"])
    commands = []
    with open(ENV["COMMANDS"]) as f:
        for line in f:
            sc, title, cmd = line.rstrip("\n").split("\t", 2)
            commands.append((sc, title, cmd))
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
    w("")
    w("## Machine and method")
    w("")
    w(f"- CPU: {model}, {ENV['NPROC']} logical CPUs (`nproc`); memory {mem}")
    w(f"- Kernel: {platform.release()}; {distro}")
    w(f"- Brokers: {ENV['MIDGE_VERSION']} (commit {ENV['GIT_REV']}) and "
      f"{ENV['MOSQUITTO_VERSION']} (`/usr/sbin/mosquitto`, Debian)")
    w(f"- Placement: {ENV.get('PINNING') or 'not pinned'}")
    w(f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {ENV['ROUNDS']} round(s), "
      f"{ENV['WARMUP']} s warm-up + {ENV['DURATION']} s measured per run; "
      f"{ENV['ELAPSED']} s for all runs; file-descriptor hard limit {ENV['FD_LIMIT']}")
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
    w("Reproduce with:")
    w("")
    w("```sh")
    w(ENV["COMPARE_CMD"])
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
    for sc in scenarios:
        if sc == "F":
            key, label, dec = "kib_per_conn", "KiB per connection", 3
        else:
            key, label, dec = "broker_cpu_us_per_msg", "CPU µs/msg", 3
        cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
        rtext, rmed = ratio_spread(runs, sc, key)
        target = TARGETS.get(sc)
        met = "–"
        if rmed is not None and target is not None:
            ok = rmed <= target
            if sc in ("R0", "R1"):
                _, p99r = ratio_spread(runs, sc, "p99_us")
                ok = ok and p99r is not None and p99r <= 1.0
            met = "yes" if ok else "**no**"
        ttext = f"≤ {target} ×" + (" (and p99 ≤ 1 ×)" if sc in ("R0", "R1") else "")
        w(f"| {sc}: {titles[sc]} | {label} | {cells[0]} | {cells[1]} | {rtext} | {ttext} | "
          f"{met} | {REFERENCE.get(sc, '')} |")
    w("")
    all_notes = [n for sc in scenarios for n in problems(runs, sc)]
    if all_notes:
        w("Problems seen: " + "; ".join(all_notes) + ".")
    else:
        w("No run failed, no broker died, and no message was lost or duplicated.")
    w("")
    w("## Scenarios")
    for sc, title, cmd in commands:
        w("")
        w(f"### {sc}: {title}")
        w("")
        w("```sh")
        w(cmd)
        w("```")
        w("")
        metrics = CONNS_METRICS if sc == "F" else PUBSUB_METRICS
        w("| figure | Mosquitto | midge | midge/Mosquitto |")
        w("| --- | --- | --- | --- |")
        for key, label, dec in metrics:
            cells = [spread(values(runs, sc, b, key), dec)[0] for b in BROKERS]
            w(f"| {label} | {cells[0]} | {cells[1]} | {ratio_spread(runs, sc, key)[0]} |")
        if sc != "F":
            cells = []
            for b in BROKERS:
                mine = [r for r in runs if r["sc"] == sc and r["broker"] == b]
                cells.append(" / ".join(f"{sum(num(r, k) or 0 for r in mine):.0f}"
                                        for k in ("lost", "dup", "reorder")))
            w(f"| lost / duplicated / reordered, all rounds | {cells[0]} | {cells[1]} | |")
        notes = problems(runs, sc)
        if notes:
            w("")
            for n in notes:
                w(f"- {n}")
    w("")
    with open(OUT, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()

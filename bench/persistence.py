#!/usr/bin/python3
"""bench/persistence.py - what durable state costs (issue 6), midge against Mosquitto 2.0.

1. QoS 1 throughput from one publisher to one persistent subscriber (clean session 0,
   online), and from 16 such pairs, 64-byte payloads, through midge-bench (each publisher
   keeps 20 QoS 1 messages in flight, libmosquitto's default): midge with persistence_durability ack,
   midge with relaxed, and Mosquitto with persistence true (which saves on shutdown and
   every autosave_interval only). Rounds alternate the three; medians with [min..max].
2. Restart time: a database with 100,000 retained messages and one persistent session with
   1,000,000 queued QoS 1 messages (written with sqlite3 into a database midge created),
   then midge is started on it: time until it listens, its RSS then, and the time until the
   session's first queued message reaches the reconnecting client.

Usage: bench/persistence.py [--build-dir DIR] [--rounds N] [--duration S] [--quick] [--out MD]
Prints a Markdown section and, last, a RESULT line; with --out (e.g. docs/benchmarks.md) it
also puts the section into that page between its persistence markers (bench/compare.sh keeps
them when it rewrites the page).
"""
import argparse
import os
import re
import shutil
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(proc, port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("broker did not listen")


def start(kind, workdir, port, extra=()):
    os.makedirs(workdir, exist_ok=True)
    conf = os.path.join(workdir, "broker.conf")
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence true",
             f"persistence_location {workdir}/", "max_queued_messages 0",
             "max_inflight_messages 20", "log_type error", "log_type warning"]
    if kind.startswith("midge"):
        lines += ["connection_messages false", "sys_interval 0",
                  f"persistence_durability {kind.split('-')[1]}"]
        argv = [ARGS.midge, "-c", conf]
    else:
        lines += ["sys_interval 0", "autosave_interval 1800"]
        argv = [MOSQUITTO, "-c", conf]
    with open(conf, "w") as f:
        f.write("\n".join(list(lines) + list(extra)) + "\n")
    log = open(os.path.join(workdir, "broker.log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    wait_listening(proc, port)
    return proc


def stop(proc):
    proc.terminate()
    proc.wait(timeout=60)


def throughput(kind, port, workdir, pairs):
    proc = start(kind, workdir, port)
    n = str(pairs)
    try:
        out = subprocess.run(
            [ARGS.bench, "pubsub", "--port", str(port), "--publishers", n, "--subscribers", n,
             "--topics", n, "--qos", "1", "--size", "64", "--duration", str(ARGS.duration),
             "--warmup", "1", "--sub-clean", "0", "--broker-pid", str(proc.pid)],
            capture_output=True, text=True, timeout=ARGS.duration + 60)
    finally:
        stop(proc)
    m = re.search(r"^RESULT (.*)$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"midge-bench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    kv = dict(item.split("=", 1) for item in m.group(1).split())
    # The subscribers' counts (bench/README.md), not a default: a missing one is no proof.
    bad = {k: kv.get(k, "missing") for k in ("lost", "dup", "unexpected", "corrupt", "foreign")
           if kv.get(k) != "0"}
    if out.returncode != 0 or bad:
        raise RuntimeError(f"{kind}: midge-bench exit {out.returncode}, delivery counts "
                           f"{bad}:\n{out.stdout}\n{out.stderr}")
    return float(kv["msgs_per_s"]), float(kv.get("broker_cpu_us_per_msg", "nan")), \
        int(kv["lost"]), out.stdout


# -- restart -----------------------------------------------------------------------------

def build_state(workdir, port, retained, queued):
    """midge creates the database; the rows go in with sqlite3 (as midge would write them)."""
    proc = start("midge-ack", workdir, port)
    stop(proc)
    db = sqlite3.connect(os.path.join(workdir, "midge.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now_ms = int(time.time() * 1000)
    payload = b"x" * 64
    db.executemany("INSERT INTO retained(topic, qos, payload) VALUES (?, 1, ?)",
                   ((f"sensors/{i // 1000}/{i % 1000}/state", payload) for i in range(retained)))
    db.execute("INSERT INTO session(id, client_id, last_seen_ms) VALUES (1, 'backlog', ?)",
               (now_ms,))
    db.execute("INSERT INTO sub(session_id, filter, qos) VALUES (1, 'queue/#', 1)")
    db.executemany(
        "INSERT INTO out_msg(session_id, seq, qos, retain, packet_id, state, topic, payload) "
        "VALUES (1, ?, 1, 0, 0, 0, 'queue/a', ?)",
        ((seq, payload) for seq in range(1, queued + 1)))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return os.path.getsize(os.path.join(workdir, "midge.db"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def first_message_ms(port):
    """Reconnect as the backlog's client (clean session 0) and time the first PUBLISH."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    cid = b"backlog"
    body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0, 0, 0]) + struct.pack("!H", len(cid)) + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            raise RuntimeError("closed")
        buf += data
        # CONNACK is 4 bytes; then the first PUBLISH (type 3).
        if len(buf) > 4 and buf[4] >> 4 == 3:
            ms = (time.monotonic() - t0) * 1000
            s.close()
            return ms


def restart(workdir, port):
    t0 = time.monotonic()
    proc = start("midge-ack", workdir, port)
    listen_ms = (time.monotonic() - t0) * 1000
    rss = rss_kib(proc.pid)
    try:
        first_ms = first_message_ms(port)
    finally:
        stop(proc)
    return listen_ms, rss, first_ms


def put_section(path, section, queued):
    begin, end = "<!-- persistence.py: begin -->", "<!-- persistence.py: end -->"
    cmd = "bench/persistence.py --out docs/benchmarks.md" + (" --quick" if ARGS.quick else "")
    block = "\n".join([
        begin,
        "## Persistence (issue 6)",
        "",
        f"Written by `{cmd}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{ARGS.rounds} round(s) of {ARGS.duration:g} s runs (the three brokers alternate, "
        "medians with [min..max]); `bench/compare.sh` keeps this section. Every broker runs "
        "with `persistence true` in a fresh directory, `max_inflight_messages 20`, "
        "`max_queued_messages 0`; midge-bench's subscribers connect with clean session 0 "
        "(`--sub-clean 0`), so midge stores every message for them and, under `ack`, sends "
        "the PUBACK and the PUBLISH only once it is fsynced. Mosquitto keeps its state in "
        "memory and writes it at shutdown and every `autosave_interval`, so its figures are "
        "what no durability costs. See docs/persistence.md for what each setting guarantees.",
        "",
        section,
        "",
        "Under `ack` a publisher that keeps 20 messages in flight gets at most 20 per fsync "
        "(this disk takes a few ms per fsync), so one pair is bounded by the disk's flush "
        "latency; with 16 pairs the batches of a loop turn share one fsync (group commit). "
        "`relaxed` costs no fsync on the message path.",
        end,
    ])
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def fmt(vals, digits=0):
    med = statistics.median(vals)
    return f"{med:,.{digits}f} [{min(vals):,.{digits}f}..{max(vals):,.{digits}f}]"


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--quick", action="store_true", help="1 round, 2 s, 100k queued")
    ap.add_argument("--out", help="Markdown page to put the section into")
    ARGS = ap.parse_args()
    if ARGS.quick:
        ARGS.rounds, ARGS.duration = 1, 2
    ARGS.midge = os.path.join(ARGS.build_dir, "midge")
    ARGS.bench = os.path.join(ARGS.build_dir, "bench", "midge-bench")
    work = tempfile.mkdtemp(prefix="midge-persist-bench-")
    kinds = ["midge-ack", "midge-relaxed", "mosquitto"]
    shapes = [1, 16]  # 1 publisher -> 1 subscriber; 16 such pairs (group commit across clients)
    res = {(k, p): {"rate": [], "cpu": []} for k in kinds for p in shapes}
    try:
        for r in range(ARGS.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for pairs in shapes:
                for k in order:
                    d = os.path.join(work, f"{k}-{pairs}-{r}")
                    rate, cpu, lost, _ = throughput(k, free_port(), d, pairs)
                    if lost:
                        raise RuntimeError(f"{k}: {lost} QoS 1 messages lost")
                    res[(k, pairs)]["rate"].append(rate)
                    res[(k, pairs)]["cpu"].append(cpu)
                    shutil.rmtree(d, ignore_errors=True)
                    print(f"round {r + 1}: {k} x{pairs}: {rate:,.0f} msg/s, {cpu:.2f} us CPU/msg",
                          file=sys.stderr)
        queued = 100_000 if ARGS.quick else 1_000_000
        d = os.path.join(work, "restart")
        size = build_state(d, free_port(), 100_000, queued)
        restarts = [restart(d, free_port()) for _ in range(ARGS.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = []
    emit = lines.append
    emit("| broker, QoS 1 to persistent subscribers (clean session 0), 64 B | pairs | "
          "delivered msg/s | broker CPU µs/msg |")
    emit("| --- | --- | --- | --- |")
    names = {"midge-ack": "midge, `persistence_durability ack` (fsync before PUBACK)",
             "midge-relaxed": "midge, `persistence_durability relaxed`",
             "mosquitto": "Mosquitto 2.0, `persistence true` (saved at shutdown / autosave)"}
    for pairs in shapes:
        for k in kinds:
            v = res[(k, pairs)]
            emit(f"| {names[k]} | {pairs} | {fmt(v['rate'])} | {fmt(v['cpu'], 2)} |")
    emit("")
    emit(f"Restart with 100,000 retained messages and {queued:,} queued QoS 1 messages "
          f"({size / 1e6:.0f} MB database), {ARGS.rounds} starts:")
    emit("")
    emit("| figure | median [min..max] |")
    emit("| --- | --- |")
    emit(f"| start until listening (open, quick_check, load) | "
          f"{fmt([x[0] for x in restarts])} ms |")
    emit(f"| RSS once listening | {fmt([x[1] / 1024 for x in restarts], 1)} MiB |")
    emit(f"| reconnect until the first queued message arrives | "
          f"{fmt([x[2] for x in restarts], 1)} ms |")
    section = "\n".join(lines)
    print(section)
    if ARGS.out:
        put_section(ARGS.out, section, queued)
    print("RESULT " + " ".join(
        [f"{k}_x{p}_rate={statistics.median(res[(k, p)]['rate']):.0f}"
         for k in kinds for p in shapes] +
        [f"restart_ms={statistics.median([x[0] for x in restarts]):.0f}",
         f"restart_rss_kib={statistics.median([x[1] for x in restarts]):.0f}"]))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""callgrind_ab.py - instructions two midge builds execute per message, path by path, and the
functions that make the difference: an A/B that the other tenants of a shared machine cannot
blur (CPU time per message moves by 20 % from run to run there; instruction counts do not).

usage: bench/callgrind_ab.py OLD_MIDGE NEW_MIDGE [NEWER_MIDGE ...]
Environment: CASES (default "q0 ws tls wss q1 q2 fanout": the paths of scenarios A, W, TA,
TW, B and R1, C, D); N1, N2 (2000, 12000) messages per run; SIZE (64) payload bytes; TOP (8) functions listed
per case and pair of builds. More than two builds (in order, say before, between, after):
each is compared with the first, and its functions with the build before it.

For each case and binary the broker runs twice under callgrind with bench/ws_callgrind.py as
the load (the same packets, in the same batches, every time), once with N1 and once with N2
messages; (Ir(N2) - Ir(N1)) / (N2 - N1) is what one message costs with start-up, set-up and
shutdown cancelled out. The same difference per function (callgrind_annotate, exclusive
counts) shows where two builds part. Needs valgrind.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "ws_callgrind.py")
# case: (ws_callgrind.py mode, QoS, subscribers, batch, what it stands for)
CASES = {
    "q0": ("tcp-tcp", 0, 1, 100, "A: QoS 0, one publisher -> one subscriber"),
    "ws": ("ws-ws", 0, 1, 100, "W: scenario A's path over WebSocket"),
    "tls": ("tls-tls", 0, 1, 100, "TA: scenario A's path over TLS (1.3, AES-128-GCM)"),
    "wss": ("wss-wss", 0, 1, 100, "TW: scenario A's path over WebSocket over TLS"),
    "q1": ("tcp-tcp", 1, 1, 20, "B, R1: QoS 1"),
    "q2": ("tcp-tcp", 2, 1, 20, "C: QoS 2"),
    "fanout": ("tcp-tcp", 0, 10, 100, "D: QoS 0, fan-out to 10 (per delivery)"),
}
N1 = int(os.environ.get("N1", "2000"))
N2 = int(os.environ.get("N2", "12000"))
SIZE = int(os.environ.get("SIZE", "64"))
TOP = int(os.environ.get("TOP", "8"))
CONF = """listener 0 127.0.0.1
listener 0 127.0.0.1
protocol websockets
listener 0 127.0.0.1
certfile {work}/srv.crt
keyfile {work}/srv.key
listener 0 127.0.0.1
protocol websockets
certfile {work}/srv.crt
keyfile {work}/srv.key
allow_anonymous true
max_inflight_messages 20
sys_interval 0
"""


def run(binary, label, case, count, work):
    """One broker run under callgrind carrying count messages: its callgrind output file."""
    mode, qos, subs, batch, _ = CASES[case]
    tag = f"{label}.{case}.{count}"
    out = os.path.join(work, f"cg.{tag}")
    log = os.path.join(work, f"log.{tag}")
    conf = os.path.join(work, "midge.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(work=work))
    with open(log, "w") as lf:
        vg = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               binary, "-c", conf, "-v"], stdout=lf, stderr=subprocess.STDOUT)
    ports = {}
    for _ in range(600):
        with open(log) as f:
            for m in re.finditer(r"listening on \S*:(\d+) \(((mqtt|websockets)( over tls)?)\)",
                                 f.read()):
                ports[m.group(2)] = m.group(1)
        if len(ports) == 4:
            break
        if vg.poll() is not None:
            break
        time.sleep(0.1)
    if len(ports) != 4:
        vg.kill()
        sys.exit(f"callgrind_ab: {binary} did not start:\n" + open(log).read())
    subprocess.run([sys.executable, LOAD, mode, ports["mqtt"], ports["websockets"], str(count),
                    str(SIZE), str(batch), str(qos), str(subs)], check=True,
                   env=dict(os.environ, TLS_PORT=ports["mqtt over tls"],
                            WSS_PORT=ports["websockets over tls"]))
    vg.terminate()
    vg.wait()
    return out


def functions(cg):
    """Exclusive instruction counts per function (file:function, directories dropped)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100",
                           "--auto=no", cg], capture_output=True, text=True, check=True).stdout
    total, fns, listing = None, {}, False
    for line in text.splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        if line.rstrip().endswith("file:function"):
            listing = True  # the per-function list follows, up to the next blank line
            continue
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(.*\S)\s*$", line)
        if not listing or line.startswith("-"):
            continue
        if not m:
            if fns:
                break
            continue
        what = re.sub(r"\s+\[.*\]$", "", m.group(2))  # the object file
        fn = what.rsplit("/", 1)[-1]
        fns[fn] = fns.get(fn, 0) + int(m.group(1).replace(",", ""))
    return total, fns


def per_message(binary, label, case, work):
    """Instructions per message, in all and per function, for one binary on one path."""
    t1, f1 = functions(run(binary, label, case, N1, work))
    t2, f2 = functions(run(binary, label, case, N2, work))
    per = (N2 - N1) * CASES[case][2]  # deliveries
    return (t2 - t1) / per, {k: (f2.get(k, 0) - f1.get(k, 0)) / per for k in set(f1) | set(f2)}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = [os.path.abspath(p) for p in sys.argv[1:]]
    cases = os.environ.get("CASES", " ".join(CASES)).split()
    work = tempfile.mkdtemp(prefix="callgrind-ab.")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", f"{work}/srv.key",
                    "-out", f"{work}/srv.crt"], check=True, capture_output=True)
    print(f"instructions per delivered message, {SIZE}-byte payload, N1={N1} N2={N2}")
    for k, b in enumerate(bins):
        print(f"build {k}: {b}")
    print()
    summary = []
    for case in cases:
        res = [per_message(b, f"b{k}", case, work) for k, b in enumerate(bins)]
        totals = [t for t, _ in res]
        summary.append((case, totals))
        print(f"{case} ({CASES[case][4]}): " + ", ".join(
            f"build {k} {t:,.0f}" + (f" ({t / totals[0]:.3f} x build 0)" if k else "")
            for k, t in enumerate(totals)))
        for k in range(1, len(bins)):
            o_fns, n_fns = res[k - 1][1], res[k][1]
            print(f"  build {k - 1} -> {k}: {totals[k] - totals[k - 1]:+,.0f} per message")
            diff = sorted(set(o_fns) | set(n_fns),
                          key=lambda f: -abs(n_fns.get(f, 0) - o_fns.get(f, 0)))
            for f in diff[:TOP]:
                o, n = o_fns.get(f, 0), n_fns.get(f, 0)
                print(f"    {n - o:+8.1f}  {o:8.1f} -> {n:8.1f}  {f}")
        print()
    print("case    " + "".join(f"  build {k:<4}" for k in range(len(bins))) + "  last/first")
    for case, totals in summary:
        print(f"{case:8}" + "".join(f"{t:12,.0f}" for t in totals) +
              f"  {totals[-1] / totals[0]:10.3f}")
    print(f"(callgrind outputs in {work})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""admin_pause.py - how long the admin API's listings hold midge's loop (issue 15).

Starts midge (MIDGE_BIN or build/midge) with the admin API on, connects CLIENTS MQTT clients
(idle, one subscription each) and stores RETAINED retained messages, then measures the
loop's pauses as a client sees them: a separate process sends PINGREQ and waits for
PINGRESP in a tight loop, and the longest round trip is the longest the loop was busy
with something else. First for QUIET seconds with nothing else going on, then while
another process pages through every client and every retained message (limit=1000, the
largest page) as fast as it can, several times over. Prints both distributions, the
broker's own time per request (from its "admin ... (N ms)" log lines), and exits 0.

    python3 bench/admin_pause.py --clients 10000 --retained 100000

Loopback only; every loop is bounded in count and time.
"""
import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def passwd_line(user, password):
    salt = os.urandom(12)
    d = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(d).decode()}"


def enc_str(s):
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def varint(n):
    out = bytearray()
    while True:
        d, n = n % 128, n // 128
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(t, flags, body):
    return bytes([t << 4 | flags]) + varint(len(body)) + body


def connect_pkt(cid, keepalive=600):
    body = enc_str("MQTT") + bytes([4, 0x02]) + keepalive.to_bytes(2, "big") + enc_str(cid)
    return packet(1, 0, body)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        c = s.recv(n - len(out))
        if not c:
            raise ConnectionError("closed")
        out += c
    return out


def pinger(port, seconds, q, stop=None):
    """PINGREQ/PINGRESP round trips for `seconds` (or until stop is set); puts the list of
    RTTs (ms) on q."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_pkt("pinger"))
    assert recv_exact(s, 4) == b"\x20\x02\x00\x00"
    rtts = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        s.sendall(b"\xc0\x00")
        assert recv_exact(s, 2) == b"\xd0\x00"
        rtts.append((time.perf_counter() - t0) * 1000)
    s.close()
    q.put(rtts)


def lister(port, rounds, q):
    """Page through every client and every retained message `rounds` times."""
    auth = "Basic " + base64.b64encode(b"admin:admin-pw").decode()
    pages = 0
    t0 = time.monotonic()
    for _ in range(rounds):
        for route in ("/api/v1/clients", "/api/v1/retained", "/api/v1/subscriptions"):
            cursor = None
            while True:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                path = f"{route}?limit=1000" + (f"&cursor={cursor}" if cursor else "")
                c.request("GET", path, headers={"Authorization": auth})
                r = c.getresponse()
                j = json.loads(r.read())
                c.close()
                assert r.status == 200, j
                pages += 1
                if not j["meta"]["hasnext"]:
                    break
                cursor = j["meta"]["cursor"]
    q.put((pages, time.monotonic() - t0))


def summary(name, rtts):
    rtts = sorted(rtts)
    pct = lambda p: rtts[min(len(rtts) - 1, int(len(rtts) * p))]
    return (f"{name}: {len(rtts)} round trips, median {statistics.median(rtts):.3f} ms, "
            f"p99 {pct(0.99):.3f} ms, p99.9 {pct(0.999):.3f} ms, max {rtts[-1]:.3f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--retained", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quiet", type=float, default=5.0)
    ap.add_argument("--bin", default=os.environ.get("MIDGE_BIN", os.path.join(ROOT, "build", "midge")))
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="midge-pause-")
    with open(os.path.join(d, "passwd"), "w") as f:
        f.write(passwd_line("admin", "admin-pw") + "\n")
    conf = os.path.join(d, "midge.conf")
    with open(conf, "w") as f:
        f.write("listener 0 127.0.0.1\nprotocol websockets\nlistener 0 127.0.0.1\n"
                "allow_anonymous true\nsys_interval 0\nconnection_messages false\n"
                f"max_connections -1\npassword_file {d}/passwd\nadmin_user admin\n")
    log = open(os.path.join(d, "log"), "w+")
    proc = subprocess.Popen([a.bin, "-c", conf, "-v"], stdout=log, stderr=subprocess.STDOUT)
    try:
        ports = {}
        deadline = time.monotonic() + 10
        while len(ports) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            with open(log.name) as f:
                for m in re.finditer(r"listening on 127\.0\.0\.1:(\d+) \((\w+)\)", f.read()):
                    ports[m.group(2)] = int(m.group(1))
        ws, tcp = ports["websockets"], ports["mqtt"]
        t0 = time.monotonic()
        socks = []
        for i in range(a.clients):
            s = socket.create_connection(("127.0.0.1", tcp))
            s.sendall(connect_pkt(f"board-{i:06d}") +
                      packet(8, 2, b"\x00\x01" + enc_str(f"class/board-{i:06d}/cmd") + b"\x01"))
            socks.append(s)
        for s in socks:
            recv_exact(s, 4 + 5)  # CONNACK, SUBACK
        pub = socket.create_connection(("127.0.0.1", tcp))
        pub.sendall(connect_pkt("filler"))
        recv_exact(pub, 4)
        batch = bytearray()
        for i in range(a.retained):
            batch += packet(3, 1, enc_str(f"site/room-{i % 100:03d}/sensor-{i:06d}") + b"21.5")
            if len(batch) > 1 << 16:
                pub.sendall(batch)
                batch.clear()
        pub.sendall(bytes(batch) + b"\xc0\x00")
        recv_exact(pub, 2)  # PINGRESP: every retained message before it is stored
        print(f"set-up: {a.clients} clients, {a.retained} retained messages in "
              f"{time.monotonic() - t0:.1f} s", flush=True)

        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=pinger, args=(tcp, a.quiet, q))
        p.start()
        quiet = q.get()
        p.join()
        print(summary("idle loop       ", quiet), flush=True)

        mark = os.path.getsize(log.name)
        ql = ctx.Queue()
        stop = ctx.Event()
        p = ctx.Process(target=pinger, args=(tcp, 3600, q, stop))
        p.start()
        time.sleep(0.2)
        lp = ctx.Process(target=lister, args=(ws, a.rounds, ql))
        lp.start()
        pages, took = ql.get()
        lp.join()
        stop.set()
        busy = q.get()
        p.join()
        print(summary("during listings ", busy), flush=True)
        print(f"listings: {pages} pages of up to 1000 in {took:.1f} s", flush=True)
        with open(log.name) as f:
            f.seek(mark)
            times = [float(m.group(2)) for m in
                     re.finditer(r"GET (/api/v1/\w+)\?limit=1000\S* -> 200 \((\d+\.\d) ms\)", f.read())]
        if times:
            print(f"broker time per page: median {statistics.median(times):.1f} ms, "
                  f"max {max(times):.1f} ms over {len(times)} pages", flush=True)
        for s in socks:
            s.close()
        pub.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())

"""test_admin_load.py - the admin API under load does not hold up MQTT.

1,000 MQTT clients stay connected (one subscription each) while 8 threads send API
requests as fast as the broker answers (client pages, retained pages, details, /broker,
publishes). A separate process measures MQTT latency as PINGREQ -> PINGRESP round trips,
first without API load, then with it. The bounds are generous and stated: the loop is
never held long, because every listing is a bounded page (docs/admin.md, "Large
brokers"); the broker's own time per request, from its log, is the direct figure.
"""
import concurrent.futures
import json
import re
import statistics
import subprocess
import sys
import threading
import time

import midge_harness as h
from admin_harness import AdminBroker, api, many_clients

pytestmark = h.midge_only

PINGER = r"""
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
body = b"\x00\x04MQTT\x04\x02\x02\x58\x00\x06pinger"
s.sendall(b"\x10" + bytes([len(body)]) + body)
def exact(n):
    out = b""
    while len(out) < n:
        c = s.recv(n - len(out))
        if not c:
            raise SystemExit("closed")
        out += c
    return out
assert exact(4) == b"\x20\x02\x00\x00"
rtts = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.perf_counter()
    s.sendall(b"\xc0\x00")
    assert exact(2) == b"\xd0\x00"
    rtts.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.001)
print(json.dumps(rtts))
"""


def ping_stats(port, seconds):
    r = subprocess.run([sys.executable, "-c", PINGER, str(port), str(seconds)],
                       capture_output=True, text=True, timeout=seconds + h.scaled(30))
    assert r.returncode == 0, r.stderr
    rtts = sorted(json.loads(r.stdout))
    return {"n": len(rtts), "median": statistics.median(rtts),
            "p99": rtts[int(len(rtts) * 0.99)], "max": rtts[-1]}


def test_load_api_requests_with_1000_mqtt_clients():
    b = AdminBroker(conf=["sys_interval 0", "connection_messages false"])
    socks = []
    try:
        socks = many_clients(b.tcp, [f"dev-{i:04d}" for i in range(1000)])
        pub = h.client(b.tcp, "filler", username="bob", password="builder")
        for i in range(2000):
            pub.publish(f"site/r{i % 20}/s{i}", b"21.5", retain=True)
        pub.ping()
        idle = ping_stats(b.tcp, 3)

        stop = threading.Event()
        statuses = []
        # The page's requests (pages of 100, details) and midge-ctl's.
        paths = ["/api/v1/clients?limit=100", "/api/v1/retained?limit=100",
                 "/api/v1/clients/dev-0500", "/api/v1/broker",
                 "/api/v1/subscriptions?filter=site/r1/s1", "/api/v1/clients?limit=500&connected=1"]

        def hammer(k):
            i = k
            while not stop.is_set():
                if i % 7 == 0:
                    r = api(b.port, "POST", "/api/v1/publish",
                            body={"topic": f"load/{i}", "payload": "x"})
                else:
                    r = api(b.port, "GET", paths[i % len(paths)], timeout=h.scaled(30))
                statuses.append(r.status)
                i += 8
        mark = b.mark()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(hammer, k) for k in range(8)]
            time.sleep(0.3)
            busy = ping_stats(b.tcp, 3)
            stop.set()
            for f in futs:
                f.result()
        assert len(statuses) > 100 and set(statuses) == {200}, set(statuses)
        took = [float(m.group(1)) for m in
                re.finditer(r"-> 200 \((\d+\.\d) ms\)", "\n".join(b.lines[mark:]))]
        print(f"\nMQTT PING round trips without API load: {idle}\n"
              f"with {len(statuses)} API requests from 8 threads: {busy}\n"
              f"broker time per API request: median {statistics.median(took):.1f} ms, "
              f"max {max(took):.1f} ms")
        # Every ping was answered, and the typical one waits at most for a few requests
        # ahead of it in the loop (stated bound: 25 ms more, x3 under sanitizers, while the
        # loop answers hundreds of requests a second on a shared 2-core machine).
        assert busy["n"] > 50
        assert busy["median"] <= idle["median"] + h.scaled(25), (idle, busy)
        # No request holds the loop long (pages of at most 500 here; the 2-core test
        # machine shares its CPUs with the 16 client threads, so the bound is loose).
        assert max(took) <= h.scaled(500), max(took)
        # The largest page there is, alone: all 1,000 clients.
        mark = b.mark()
        assert len(api(b.port, "GET", "/api/v1/clients?limit=1000").data) == 1000
        m = b.wait_log(r"GET /api/v1/clients\?limit=1000 -> 200 \((\d+\.\d) ms\)", since=mark)
        print(f"one page of 1,000 clients: {m.group(1)} ms of the loop")
        assert float(m.group(1)) <= h.scaled(250)
        for s in socks[:10]:
            s.sendall(b"\xc0\x00")
            assert s.recv(2) == b"\xd0\x00"
        pub.close()
    finally:
        for s in socks:
            s.close()
        b.stop()

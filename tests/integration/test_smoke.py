"""test_smoke.py - the broker end to end in a few tests, for builds of other architectures.

scripts/test runs this file against the arm64 and armhf builds under qemu-user (MIDGE_BIN is
then a wrapper that starts the emulated binary), with the machine's own x86-64 clients:
mosquitto_pub/mosquitto_sub, Python paho-mqtt (over TCP and WebSocket) and the raw client of
midge_harness. Natively it runs with the other integration tests. Each test counts what
arrived, payload by payload, and the broker's own totals from its last log line.
"""
import re
import urllib.request

import paho.mqtt.client as mqtt

import midge_harness as h
from midge_harness import SubProc, client, run_pub

pytestmark = h.midge_only

STOPPED_RE = r"midge stopped \((\d+) messages received, (\d+) sent\)"


def stop_counts(br):
    """Stop the broker (exit 0 required) and return its (received, sent) totals."""
    br.stop()
    m = re.search(STOPPED_RE, br.log())
    assert m, f"no final line with the totals; log:\n{br.log()}"
    return int(m.group(1)), int(m.group(2))


def test_smoke_qos_0_1_2(start_broker):
    """Ten messages at each QoS from mosquitto_pub (one connection per QoS, -l reads them
    from stdin) reach a QoS 2 mosquitto_sub complete, in order, unchanged."""
    br = start_broker()
    sub = SubProc(br.port, "-t", "smoke/#", "-q", "2", "-v", "-C", "30")
    for qos in (0, 1, 2):
        lines = "".join(f"q{qos}-m{i}\n" for i in range(10)).encode()
        cmd = [h.MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(br.port), "-t", f"smoke/q{qos}",
               "-q", str(qos), "-l"]
        r = h.subprocess.run(cmd, input=lines, capture_output=True, timeout=h.scaled(20))
        assert r.returncode == 0, r.stderr
    assert sub.finish(h.scaled(20)) == 0
    assert sub.messages == [f"smoke/q{q} q{q}-m{i}" for q in (0, 1, 2) for i in range(10)]
    assert stop_counts(br) == (30, 30)


def test_smoke_retained(start_broker):
    """Retained messages reach a later subscriber flagged as retained; a newer one replaces
    the older, an empty one deletes it."""
    br = start_broker()
    run_pub(br.port, "-t", "smoke/led", "-m", "ON", "-r", "-q", "1")
    run_pub(br.port, "-t", "smoke/led", "-m", "OFF", "-r", "-q", "1")
    run_pub(br.port, "-t", "smoke/temp", "-m", "21.5", "-r")
    run_pub(br.port, "-t", "smoke/gone", "-m", "x", "-r")
    run_pub(br.port, "-t", "smoke/gone", "-n", "-r")
    sub = SubProc(br.port, "-t", "smoke/#", "-F", "%r %t %p", "-C", "2")
    assert sub.finish(h.scaled(10)) == 0
    assert sorted(sub.messages) == ["1 smoke/led OFF", "1 smoke/temp 21.5"]
    # Received: the five PUBLISHes; sent: the two retained copies.
    assert stop_counts(br) == (5, 2)


def test_smoke_will(start_broker):
    """A client that vanishes without DISCONNECT has its will published (paho subscriber);
    one that says DISCONNECT does not."""
    br = start_broker()
    watch = h.PahoClient(br.port, "smoke-watch")
    assert watch.subscribe("smoke/will/#", 1) == (1,)
    polite = client(br, "smoke-polite", will=("smoke/will/polite", b"gone", 1, False))
    polite.disconnect()
    br.wait_log(r"client smoke-polite disconnected: DISCONNECT received$")
    dies = client(br, "smoke-dies", will=("smoke/will/dies", b"gone", 1, False))
    dies.close()
    m = watch.get()
    assert (m.topic, m.payload, m.qos) == ("smoke/will/dies", b"gone", 1)
    watch.expect_nothing()
    watch.close()
    assert stop_counts(br) == (0, 1)


def test_smoke_websocket_page_and_mqtt(start_broker):
    """The WebSocket listener serves the browser page and /healthz over HTTP, and carries
    MQTT: paho over WebSocket publishes, mosquitto_sub on TCP receives."""
    br = start_broker(["listener 0 127.0.0.1", "protocol websockets"])
    ws = int(br.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(websockets\)").group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{ws}/", timeout=h.scaled(10)) as r:
        page = r.read()
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/html")
    assert b"<html" in page.lower() and len(page) > 1000
    with urllib.request.urlopen(f"http://127.0.0.1:{ws}/healthz", timeout=h.scaled(10)) as r:
        assert (r.status, r.read().strip()) == (200, b"ok")

    sub = SubProc(br.port, "-t", "smoke/ws", "-q", "1", "-C", "5")
    c = mqtt.Client(client_id="smoke-ws", transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.connect("127.0.0.1", ws, 60)
    c.loop_start()
    try:
        for i in range(5):
            info = c.publish("smoke/ws", f"w{i}", qos=1)
            info.wait_for_publish(h.TIMEOUT)
            assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()
    assert sub.finish(h.scaled(10)) == 0
    assert sub.messages == [f"w{i}" for i in range(5)]
    assert stop_counts(br) == (5, 5)


def test_smoke_persistence_restart(start_broker, tmp_path):
    """persistence true: a retained message and five QoS 1 messages queued for an offline
    persistent session are there after a restart, in order, exactly once."""
    conf = ["persistence true", f"persistence_location {tmp_path}/"]
    br = start_broker(conf)
    sub = client(br, "smoke-led", clean=False)
    assert sub.subscribe([("smoke/p/#", 1)]) == [1]
    sub.disconnect()
    br.wait_log(r"client smoke-led disconnected: DISCONNECT received$")
    for i in range(5):
        run_pub(br.port, "-t", "smoke/p/set", "-m", f"p{i}", "-q", "1")
    run_pub(br.port, "-t", "smoke/p/state", "-m", "ON", "-q", "1", "-r")
    assert stop_counts(br) == (6, 0)

    br2 = start_broker(conf)
    br2.wait_log(r"restored 1 retained messages, 1 persistent sessions with 1 subscriptions, "
                 r"6 queued")
    sub = client(br2, "smoke-led", clean=False, expect_sp=True)
    got = [(m.topic, m.payload) for m in sub.collect(6)]
    assert got == [("smoke/p/set", f"p{i}".encode()) for i in range(5)] + \
        [("smoke/p/state", b"ON")]
    sub.expect_no_packet()
    sub.disconnect()
    br2.wait_log(r"client smoke-led disconnected: DISCONNECT received$")
    late = SubProc(br2.port, "-t", "smoke/p/state", "-F", "%r %p", "-C", "1")
    assert late.finish(h.scaled(10)) == 0
    assert late.messages == ["1 ON"]
    assert stop_counts(br2) == (0, 7)

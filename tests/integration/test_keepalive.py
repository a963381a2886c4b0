"""keepalive_*: PINGREQ/PINGRESP and the keep-alive timer through the real binary
(MQTT 3.1.1 sections 3.1.2.10, 3.12, 3.13)."""
import time

from midge_harness import (MqttConn, client, connect_pkt, pingreq_pkt, publish_pkt, scaled)


def test_keepalive_pingreq_pingresp_exact(broker):
    """[MQTT-3.12.4-1] each PINGREQ (C0 00) gets a PINGRESP (D0 00)."""
    c = client(broker, "pinger")
    for _ in range(3):
        c.send(pingreq_pkt())
        c.expect_bytes(b"\xd0\x00")
    c.send(pingreq_pkt() * 4)
    for _ in range(4):
        c.expect_bytes(b"\xd0\x00")
    c.expect_no_packet()


def test_keepalive_zero_never_times_out(broker):
    """[MQTT-3.1.2-24] keep alive 0 turns the mechanism off: after ~2 s of silence the
    connection is still open and answers PINGREQ."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("esp32-ab12", keepalive=0))
    c.expect_bytes(b"\x20\x02\x00\x00")
    c.expect_no_packet(2.0)
    c.send(pingreq_pkt())
    c.expect_bytes(b"\xd0\x00")
    broker.assert_no_log(r"keepalive \d+ s exceeded")


# broker_tick runs every TICK_MS = 250 ms (src/server.c) and closes a connection whose
# last packet is at least 1.5 x keepalive old (src/proto/proto.c), so the close comes
# 1.5 to 1.75 s after the last packet for keepalive 1, plus the loop's latency.
TICK = 0.25


def test_keepalive_timeout_closes_and_publishes_will(broker):
    """[MQTT-3.1.2-24] [MQTT-3.1.2-8] keep alive 1 s and silence: the server closes the
    connection 1.5 s after the CONNECT, never before (measured from before the CONNECT
    was sent, which is no later than when the server read it) and within a tick of
    broker_tick after it (measured from the CONNACK, which is no earlier), publishes the
    will and logs the reason."""
    w = client(broker, "watch")
    w.subscribe([("will/#", 1)])
    c = MqttConn(broker.port)
    sent = time.monotonic()
    c.send(connect_pkt("esp32-ab12", keepalive=1, will=("will/esp", b"lost", 1, False)))
    c.expect_bytes(b"\x20\x02\x00\x00")
    acked = time.monotonic()
    c.expect_closed(timeout=scaled(4))
    closed = time.monotonic()
    # 2 ms: the loop's clock counts whole milliseconds and may be the kernel's coarse
    # monotonic clock (libuv uses it when its resolution is 1 ms), up to 1 ms behind.
    assert closed - sent >= 1.5 - 0.002, \
        f"closed {closed - sent:.3f} s after the CONNECT, before 1.5 x the keep-alive"
    assert closed - acked <= 1.5 + TICK + scaled(0.25), \
        f"closed only {closed - acked:.3f} s after the CONNACK"
    m = w.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("will/esp", b"lost", 1)
    broker.wait_log(r"client esp32-ab12 disconnected: keepalive 1 s exceeded$")


def test_keepalive_pings_keep_connection_alive(broker):
    """[MQTT-3.1.2-24] with keep alive 1 s, a PINGREQ every 0.5 s keeps the connection open
    well past 1.5 s."""
    c = client(broker, "alive", keepalive=1)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        c.expect_no_packet(0.5)
        c.send(pingreq_pkt())
        c.expect_bytes(b"\xd0\x00")
    assert c.is_open()


def test_keepalive_any_packet_resets_timer(broker):
    """[MQTT-3.1.2-24] any control packet (here QoS 0 PUBLISH) counts as activity."""
    c = client(broker, "busy", keepalive=1)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        c.expect_no_packet(0.5)
        c.send(publish_pkt("busy/t", b"."))
    c.send(pingreq_pkt())
    c.expect_bytes(b"\xd0\x00")


def test_keepalive_timeout_before_connect_not_applied_to_others(broker):
    """[MQTT-3.1.2-24] one client timing out does not affect another client's connection."""
    other = client(broker, "other", keepalive=0)
    c = client(broker, "short", keepalive=1)
    c.expect_closed(timeout=scaled(4))
    other.send(pingreq_pkt())
    other.expect_bytes(b"\xd0\x00")

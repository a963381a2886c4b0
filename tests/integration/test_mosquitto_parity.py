"""test_mosquitto_parity.py - the corrections of issue 12, through the real binary: what an
independent broker test suite (which Mosquitto 2.0 passes in full) and a real Mosquitto
bridge expect of a drop-in for Mosquitto.

Spec points (MQTT 3.1 client ids and CONNACK flags, the will and message_size_limit,
bridges connecting with the bridge bit) and the places where the specification allows two
behaviours and midge now does what Mosquitto does (CONNACK 5 for wrong credentials, a wrong
acknowledgement type closes, acknowledgement before the routed copy, the will on takeover,
wills at shutdown). Each test here failed before the change it covers.
"""
import struct
import threading

import pytest

import midge_harness as h
from midge_harness import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, MqttConn, client,
                           connect_pkt, enc_str, packet, puback_pkt, pubcomp_pkt, publish_pkt,
                           pubrec_pkt, pubrel_pkt)


def v31_connect(client_id, clean=True, keepalive=60):
    return connect_pkt(client_id, clean=clean, keepalive=keepalive, proto_name="MQIsdp",
                       proto_level=3)


# ---- 1. MQTT 3.1 client identifiers ----------------------------------------------------------

@pytest.mark.parametrize("client_id", ["", "abcdefghijklmnopqrstuvwx"], ids=["empty", "24 chars"])
def test_v31_client_id_refused(broker, client_id):
    """MQTT 3.1 allows client ids of 1 to 23 characters and assigns none: an empty id, or
    one of 24, gets CONNACK 2 and the connection is closed (3.1.1 assigns one instead)."""
    c = MqttConn(broker.port)
    c.send(v31_connect(client_id))
    c.expect_bytes(b"\x20\x02\x00\x02")
    c.expect_closed()
    broker.wait_log(r"refused: (zero-length client id \(MQTT 3\.1 requires 1 to 23 characters\)|"
                    r"client id longer than 23 characters).*\(CONNACK 2\)$")


def test_v31_client_id_missing(broker):
    """An MQTT 3.1 CONNECT whose body ends before the client id field gets CONNACK 2 too."""
    c = MqttConn(broker.port)
    body = enc_str("MQIsdp") + bytes([3, 0x02]) + struct.pack("!H", 60)
    c.send(packet(h.CONNECT, 0, body))
    c.expect_bytes(b"\x20\x02\x00\x02")
    c.expect_closed()
    broker.wait_log(r"refused: MQTT 3\.1 CONNECT without a client id \(CONNACK 2\)$")


def test_v31_client_id_limits_accepted(broker):
    """23 characters (counted as characters: two of these are two bytes in UTF-8) are fine
    in 3.1; 3.1.1 still assigns an id to an empty one and accepts long ones."""
    c = MqttConn(broker.port)
    c.send(v31_connect("\u00e9\u00e9abcdefghijklmnopqrstu"))
    c.expect_bytes(b"\x20\x02\x00\x00")
    c.ping()
    client(broker, "")  # 3.1.1, clean session 1: assigned
    client(broker, "x" * 200)


def test_v31_with_mosquitto_clients(broker):
    """mosquitto_sub -V mqttv31 connects with an explicit id and receives a message."""
    sub = h.SubProc(broker.port, "-V", "mqttv31", "-i", "sub31", "-t", "v31/#", "-v")
    try:
        h.run_pub(broker.port, "-V", "mqttv31", "-i", "pub31", "-t", "v31/t", "-m", "hello")
        assert sub.wait_messages(1) == ["v31/t hello"]
    finally:
        sub.stop()
    broker.wait_log(r"client sub31 connected from .* \(MQTT 3\.1, ")


# ---- 2. CONNACK byte 1 for MQTT 3.1 ------------------------------------------------------------

def test_v31_resumed_session_connack_flags_zero(broker):
    """The session-present flag does not exist in MQTT 3.1: a resumed 3.1 session gets
    20 02 00 00 — and it does resume (its queued message arrives)."""
    c = MqttConn(broker.port)
    c.send(v31_connect("keep31", clean=False))
    c.expect_bytes(b"\x20\x02\x00\x00")
    c.subscribe([("k31", 1)])
    c.disconnect()
    client(broker, "pub").publish("k31", b"while-away", qos=1)
    c = MqttConn(broker.port)
    c.send(v31_connect("keep31", clean=False))
    c.expect_bytes(b"\x20\x02\x00\x00")
    m = c.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("k31", b"while-away", 1)
    broker.wait_log(r"client keep31 connected from .*session resumed")
    # 3.1.1 still reports it.
    d = MqttConn(broker.port)
    d.send(connect_pkt("keep311", clean=False))
    d.expect_bytes(b"\x20\x02\x00\x00")
    d.disconnect()
    d = MqttConn(broker.port)
    d.send(connect_pkt("keep311", clean=False))
    d.expect_bytes(b"\x20\x02\x01\x00")


# ---- 3. message_size_limit applies to the will -------------------------------------------------

def test_will_over_message_size_limit_refused(start_broker):
    """A CONNECT whose will payload exceeds message_size_limit is refused with CONNACK 5
    and a log line with the reason (as Mosquitto does); one at the limit is accepted."""
    br = start_broker(["message_size_limit 10"])
    watch = client(br, "watch")
    watch.subscribe([("will/#", 0)])
    c = MqttConn(br.port)
    c.send(connect_pkt("bigwill", will=("will/big", b"x" * 11, 0, False)))
    c.expect_bytes(b"\x20\x02\x00\x05")
    c.expect_closed()
    br.wait_log(r"client bigwill refused: will payload of 11 bytes exceeds message_size_limit 10 "
                r"\(CONNACK 5\)$")
    ok = client(br, "okwill", will=("will/ok", b"x" * 10, 0, False))
    ok.close()
    m = watch.recv_publish()
    assert (m.topic, m.payload) == ("will/ok", b"x" * 10)
    watch.expect_no_packet()


# ---- 4. bridges connecting to midge --------------------------------------------------------------

def test_bridge_bit_accepted_and_no_local(broker):
    """A CONNECT with the bridge bit (0x84, 0x83) is the same protocol; the log marks the
    connection as a bridge, and what the bridge publishes is never sent back to it."""
    br = MqttConn(broker.port)
    br.send(connect_pkt("remote.bridge", clean=False, proto_level=0x84))
    br.expect_bytes(b"\x20\x02\x00\x00")
    broker.wait_log(r"client remote\.bridge connected from .* \(MQTT 3\.1\.1 bridge, ")
    br.subscribe([("sync/#", 1)])
    local = client(broker, "local")
    local.subscribe([("sync/#", 1)])
    br.publish("sync/in", b"from-remote", qos=1)
    m = local.recv_publish()
    assert (m.topic, m.payload) == ("sync/in", b"from-remote")
    local.publish("sync/out", b"from-local", qos=1)
    m = br.recv_publish()
    assert (m.topic, m.payload) == ("sync/out", b"from-local")
    assert local.recv_publish().payload == b"from-local"  # an ordinary client gets its own
    h.expect_quiet([br, local])

    v31 = MqttConn(broker.port)
    v31.send(connect_pkt("old.bridge", proto_name="MQIsdp", proto_level=0x83))
    v31.expect_bytes(b"\x20\x02\x00\x00")
    broker.wait_log(r"client old\.bridge connected from .* \(MQTT 3\.1 bridge, ")


@pytest.fixture
def mosquitto_bridge(broker):
    """A real Mosquitto 2.0 with a `connection` to midge (try_private true, its default):
    out/# goes to midge, in/# comes from midge, both/# both ways."""
    mosq = h.Mosquitto([
        "connection midge",
        f"address 127.0.0.1:{broker.port}",
        "remote_clientid mosq.bridge",
        "cleansession true",
        "notifications false",
        "topic out/# out 1",
        "topic in/# in 1",
        "topic both/# both 1",
    ])
    try:
        broker.wait_log(r"client mosq\.bridge connected from .* \(MQTT 3\.1\.1 bridge, ")
        # Its subscriptions on midge are in place once both filters are logged.
        broker.wait_log(r"client mosq\.bridge subscribed to both/# \(QoS 1\)")
        broker.wait_log(r"client mosq\.bridge subscribed to in/# \(QoS 1\)")
        yield mosq
    finally:
        mosq.stop()


def test_mosquitto_bridge_both_directions(broker, mosquitto_bridge):
    """A real Mosquitto bridge connects to midge (it was refused with "unsupported protocol
    level 132" before) and messages flow both ways; a `both` topic published on either
    side arrives exactly once on each side (no loop)."""
    mosq = mosquitto_bridge
    on_mosq = h.SubProc(mosq.port, "-t", "#", "-v", "-q", "1")
    on_midge = h.SubProc(broker.port, "-t", "#", "-v", "-q", "1")
    try:
        h.run_pub(mosq.port, "-t", "out/a", "-m", "m->midge", "-q", "1")
        h.run_pub(broker.port, "-t", "in/b", "-m", "midge->m", "-q", "1")
        h.run_pub(mosq.port, "-t", "both/c", "-m", "from-mosq", "-q", "1")
        h.run_pub(broker.port, "-t", "both/d", "-m", "from-midge", "-q", "1")
        on_midge.wait_messages(4)
        on_mosq.wait_messages(4)
        h.expect_quiet([])  # give a loop time to show itself
        assert sorted(on_midge.messages) == ["both/c from-mosq", "both/d from-midge",
                                             "in/b midge->m", "out/a m->midge"]
        assert sorted(on_mosq.messages) == ["both/c from-mosq", "both/d from-midge",
                                            "in/b midge->m", "out/a m->midge"]
    finally:
        on_mosq.stop()
        on_midge.stop()


# ---- 6. an acknowledgement of the wrong type ------------------------------------------------------

@pytest.mark.parametrize("qos,ack", [(1, PUBREC), (1, PUBCOMP), (2, PUBACK), (2, PUBCOMP)],
                         ids=["PUBREC at QoS 1", "PUBCOMP at QoS 1", "PUBACK at QoS 2",
                              "PUBCOMP before PUBREC"])
def test_wrong_ack_type_closes(broker, qos, ack):
    """[MQTT-4.8.0-1] an acknowledgement that does not fit its packet id's flow is a protocol
    violation: the connection is closed with a log line. An acknowledgement for an id that
    is not in flight at all stays ignored."""
    sub = client(broker, "wrongack")
    sub.subscribe([("wa", qos)])
    raw = {PUBACK: puback_pkt, PUBREC: pubrec_pkt, PUBCOMP: pubcomp_pkt}[ack]
    sub.send(raw(4242))  # not in flight: ignored
    sub.ping()
    client(broker, "pub").publish("wa", b"x", qos=qos)
    m = sub.recv_publish(ack=False)
    sub.send(raw(m.pid))
    sub.expect_closed()
    name = h.TYPE_NAMES[ack]
    broker.wait_log(rf"client wrongack disconnected: protocol error: {name} for packet id "
                    rf"{m.pid}, which is in flight at QoS {qos}")


def test_pubrec_repeated_is_not_a_violation(broker):
    """A repeated PUBREC (a retransmission) is answered with PUBREL again; PUBACK for the
    same id, now awaiting PUBCOMP, closes."""
    sub = client(broker, "rec2")
    sub.subscribe([("r2", 2)])
    client(broker, "pub").publish("r2", b"x", qos=2)
    m = sub.recv_publish(ack=False)
    for _ in range(2):
        sub.send(pubrec_pkt(m.pid))
        sub.expect_bytes(pubrel_pkt(m.pid))
    sub.send(puback_pkt(m.pid))
    sub.expect_closed()
    broker.wait_log(rf"client rec2 disconnected: protocol error: PUBACK for packet id {m.pid}, "
                    r"which is in flight at QoS 2 awaiting PUBCOMP")


# ---- 7. acknowledge before routing ----------------------------------------------------------------

@pytest.mark.parametrize("qos", [1, 2])
def test_ack_before_own_copy(broker, qos):
    """A client subscribed to what it publishes receives its PUBACK/PUBREC before the routed
    copy of its message (Mosquitto's order), for several messages in one write."""
    c = client(broker, "selfsub")
    c.subscribe([("self/#", qos)])
    c.send(publish_pkt("self/1", b"one", qos=qos, pid=11) + publish_pkt("self/2", b"two", qos=qos,
                                                                        pid=12))
    want_ack = PUBACK if qos == 1 else PUBREC
    got = []
    while len(got) < 4:
        p = c.recv()
        got.append(p)
    kinds = [(p.type, struct.unpack("!H", p.body[:2])[0] if p.type != PUBLISH else
              h.parse_publish(p).payload) for p in got]
    assert kinds[0] == (want_ack, 11), kinds
    assert kinds.index((PUBLISH, b"one")) > 0, kinds
    assert kinds.index((want_ack, 12)) < kinds.index((PUBLISH, b"two")), kinds


def test_ack_before_own_copy_with_paho(broker):
    """The same with paho-mqtt: on_publish (the PUBACK) fires before on_message (the copy)."""
    p = h.PahoClient(broker.port, "paho-self")
    events, cond = [], threading.Condition()

    def note(what):
        with cond:
            events.append(what)
            cond.notify_all()

    p.c.on_publish = lambda c, u, mid: note("PUBACK")
    p.c.on_message = lambda c, u, m: note(f"PUBLISH {m.topic}")
    try:
        p.subscribe("pself/#", qos=1)
        p.c.publish("pself/x", b"mine", qos=1)
        with cond:
            assert cond.wait_for(lambda: len(events) >= 2, h.TIMEOUT), events
        assert events == ["PUBACK", "PUBLISH pself/x"]
    finally:
        p.close()


# ---- 8. the will on takeover -------------------------------------------------------------------------

@pytest.mark.parametrize("old_clean,new_clean,will", [(False, False, False), (True, False, True),
                                                      (False, True, True), (True, True, True)])
def test_will_on_takeover_rules(broker, old_clean, new_clean, will):
    """MQTT 3.1.1, as Mosquitto: on takeover the old connection's will is published when the
    old or the new connection uses clean session 1 (its session ends there); when both use
    0 the session continues and no will is sent."""
    watch = client(broker, "watch")
    watch.subscribe([("will/tk", 0)])
    old = client(broker, "tk", clean=old_clean, will=("will/tk", b"gone", 0, False))
    new = MqttConn(broker.port)
    new.send(connect_pkt("tk", clean=new_clean))
    new.expect_bytes(bytes([0x20, 2, 0 if old_clean or new_clean else 1, 0]))
    old.expect_closed()
    broker.wait_log(rf"client tk taken over by 127\.0\.0\.1:{new.local_port}")
    if will:
        m = watch.recv_publish()
        assert (m.topic, m.payload) == ("will/tk", b"gone")
    watch.expect_no_packet()


# ---- 9. wills at shutdown ------------------------------------------------------------------------------

def test_wills_published_at_shutdown_across_restart(start_broker, tmp_path):
    """On SIGTERM the connected clients' wills are published before the final commit: the
    retained "offline" status is there after a restart, and a persistent subscriber that was
    away finds the will queued."""
    conf = ["persistence true", f"persistence_location {tmp_path}/"]
    br = start_broker(conf)
    away = client(br, "dashboard", clean=False)
    away.subscribe([("status/#", 1)])
    away.disconnect()
    boards = [client(br, "esp32-1", will=("status/esp32-1", b"offline", 1, True)),
              client(br, "esp32-2", will=("status/esp32-2", b"lost", 1, False))]
    for b in boards:
        b.ping()  # connected when the signal comes
    assert br.stop() == 0
    br.wait_log(r"client esp32-1 disconnected: broker shutting down")

    br2 = start_broker(conf)
    back = client(br2, "dashboard", clean=False, expect_sp=True)
    got = sorted((m.topic, m.payload, m.qos) for m in back.collect(2))
    assert got == [("status/esp32-1", b"offline", 1), ("status/esp32-2", b"lost", 1)]
    back.expect_no_packet()
    fresh = client(br2, "fresh")
    fresh.subscribe([("status/#", 1)])
    m = fresh.recv_publish()
    assert (m.topic, m.payload, m.retain) == ("status/esp32-1", b"offline", True)
    fresh.expect_no_packet()

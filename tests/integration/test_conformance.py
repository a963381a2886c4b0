"""conformance_*: MQTT 3.1.1 server-side normative statements that no other integration test
checks directly (docs/conformance.md maps every statement to its tests).

Each test starts its own broker through the conftest fixtures and synchronises on packets,
log lines or process exit, never on fixed sleeps.
"""
import pytest

import midge_harness as h
from midge_harness import (PUBACK, PUBLISH, SUBACK, UNSUBACK, MqttConn, client,
                           connect_pkt, disconnect_pkt, enc_str, packet, parse_publish,
                           pubcomp_pkt, publish_pkt, pubrec_pkt, pubrel_pkt, subscribe_pkt,
                           unsubscribe_pkt)

CONNACK_OK = b"\x20\x02\x00\x00"


def _drain(conn, t=h.QUIET):
    """Read packets until none arrives for t seconds (the connection must stay open);
    acknowledge QoS 1 PUBLISHes so nothing stays in flight. Returns the packets."""
    got = []
    while True:
        try:
            p = conn.read_packet(t)
        except h.Closed:
            raise AssertionError(f"connection closed by server (received {got!r})")
        if p is None:
            return got
        if p.type == PUBLISH:
            m = parse_publish(p)
            if m.qos == 1:
                conn.send(h.puback_pkt(m.pid))
        got.append(p)


# -- CONNECT payload ----------------------------------------------------------------------

def test_conformance_client_id_alphanumerics_1_to_23_accepted(broker):
    """[MQTT-3.1.3-5] client ids of 1 and 23 bytes drawn from 0-9, a-z and A-Z are accepted
    with CONNACK 0 (the existing test only uses lower-case letters)."""
    for cid in ("7", "Z", "q", "0123456789ABCDEFGHIJKLm", "abcXYZ0123456789defGHIj"):
        assert len(cid) in (1, 23)
        c = MqttConn(broker.port)
        c.send(connect_pkt(cid, clean=True))
        c.expect_bytes(CONNACK_OK)
        c.ping()
        c.disconnect()


def test_conformance_connect_all_fields_in_order(broker):
    """[MQTT-3.1.3-1] [MQTT-3.1.2-9] a CONNECT carrying every optional field (client id, will
    topic, will message, user name, password, in that order) is accepted, and the fields are
    read from their places: the will later goes out with exactly that topic and message."""
    w = client(broker, "watch")
    w.subscribe([("ord/#", 1)])
    c = MqttConn(broker.port)
    c.send(connect_pkt("allfields", will=("ord/will", b"\x00will-msg\xff", 1, False),
                       username="user", password=b"\x00pw\xff"))
    c.expect_bytes(CONNACK_OK)
    c.ping()
    c.close()
    m = w.recv_publish()
    assert (m.topic, m.payload, m.qos, m.retain) == ("ord/will", b"\x00will-msg\xff", 1, False)


def test_conformance_will_flag_without_will_fields_closes(broker):
    """[MQTT-3.1.2-9] [MQTT-3.1.4-1] Will Flag 1 requires a Will Topic and a Will Message in the
    payload: without them (or with the topic only) the CONNECT is malformed and the
    connection is closed without CONNACK."""
    # Will flag + clean session, payload holds the client id only.
    c = MqttConn(broker.port)
    c.send(connect_pkt("nowill", flags=0x06))
    c.expect_closed()
    # Will topic present, will message missing.
    good = connect_pkt("halfwill", flags=0x06)
    body = good[2:] + enc_str("w/t")
    c = MqttConn(broker.port)
    c.send(packet(1, 0, body))
    c.expect_closed()
    client(broker, "still-serving").ping()


def test_conformance_will_fields_without_will_flag_closes(broker):
    """[MQTT-3.1.2-11] Will Flag 0 means no Will Topic or Will Message in the payload: a
    CONNECT that carries them anyway has bytes left over and is closed without CONNACK."""
    good = connect_pkt("stray-will")
    body = good[2:] + enc_str("w/t") + enc_str(b"msg")
    c = MqttConn(broker.port)
    c.send(packet(1, 0, body))
    c.expect_closed()


# -- CONNACK ------------------------------------------------------------------------------

def test_conformance_refused_connack_session_present_0_with_stored_session(start_broker):
    """[MQTT-3.2.2-4] [MQTT-3.2.2-5] a refused CONNECT gets Session Present 0 even when a
    session for that client id is stored: refused for protocol level 6 and for its keepalive
    (above max_keepalive), both then closed; the stored session is still there afterwards."""
    br = start_broker(["max_keepalive 60"])
    a = client(br, "kept", clean=False, keepalive=30, expect_sp=0)
    assert a.subscribe([("kept/t", 1)]) == [1]
    mark = br.mark()
    a.disconnect()
    br.wait_log(r"client kept disconnected: DISCONNECT received", since=mark)

    c = MqttConn(br.port)
    c.send(connect_pkt("kept", clean=False, keepalive=30, proto_level=6))
    c.expect_bytes(b"\x20\x02\x00\x01")
    c.expect_closed()

    if not h.REFERENCE:  # max_keepalive refusal of 3.1.1 clients: Mosquitto >= 2.0.x, midge
        c = MqttConn(br.port)
        c.send(connect_pkt("kept", clean=False, keepalive=120))
        c.expect_bytes(b"\x20\x02\x00\x02")
        c.expect_closed()

    back = client(br, "kept", clean=False, keepalive=30, expect_sp=1)
    back.ping()


# -- PUBLISH ------------------------------------------------------------------------------

@pytest.mark.skipif(bool(h.REFERENCE), reason="Mosquitto tolerates DUP 1 on QoS 0; 4.8.0-1 "
                    "requires the close")
def test_conformance_qos0_publish_with_dup_closes(broker):
    """[MQTT-3.3.1-2] [MQTT-4.8.0-1] a QoS 0 PUBLISH must have DUP 0: one with DUP 1 (first
    byte 0x38) is a protocol violation, the connection is closed and nothing is
    delivered."""
    w = client(broker, "watch")
    w.subscribe([("dup0/#", 0)])
    c = client(broker, "dup0")
    c.send(packet(PUBLISH, 0x08, enc_str("dup0/t") + b"x"))
    c.expect_closed()
    w.expect_no_packet()


def test_conformance_qos0_retained_replaces_qos1_retained(broker):
    """[MQTT-3.3.1-7] a retained QoS 0 PUBLISH replaces the retained message (here a QoS 1
    one) on its topic: a new QoS 1 subscriber gets only the QoS 0 message, at QoS 0, with
    RETAIN 1."""
    pub = client(broker, "p")
    pub.publish("rq0/t", b"old-q1", qos=1, retain=True)
    pub.publish("rq0/t", b"new-q0", qos=0, retain=True)
    pub.ping()  # the QoS 0 PUBLISH has been processed
    sub = client(broker, "s")
    assert sub.subscribe([("rq0/t", 1)]) == [1]
    sub.expect_bytes(publish_pkt("rq0/t", b"new-q0", qos=0, retain=True))
    sub.expect_no_packet()


# -- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------------------

def test_conformance_resubscribe_no_gap_in_flow(broker):
    """[MQTT-3.8.4-3] replacing a subscription does not interrupt the flow of publications:
    PUBLISH a, SUBSCRIBE (same filter, new QoS), PUBLISH b in one write - a arrives once at
    the old QoS, b once at the new QoS, and the retained message matching the filter is
    re-sent once with RETAIN 1."""
    pub = client(broker, "p")
    pub.publish("gap/r", b"R", qos=1, retain=True)
    c = client(broker, "gapless")
    assert c.subscribe([("gap/+", 1)]) == [1]
    first = c.recv_publish()
    assert (first.topic, first.payload, first.retain) == ("gap/r", b"R", True)
    c.send(publish_pkt("gap/t", b"a", qos=1, pid=10)
           + subscribe_pkt(11, [("gap/+", 0)])
           + publish_pkt("gap/t", b"b", qos=1, pid=12))
    got = _drain(c)
    subacks = [p for p in got if p.type == SUBACK]
    assert [p.raw() for p in subacks] == [packet(SUBACK, 0, b"\x00\x0b\x00")], got
    pubacks = sorted(p.raw() for p in got if p.type == PUBACK)
    assert pubacks == sorted([h.puback_pkt(10), h.puback_pkt(12)]), got
    pubs = [parse_publish(p) for p in got if p.type == PUBLISH]
    live = [(m.payload, m.qos, m.retain) for m in pubs if m.topic == "gap/t"]
    assert live == [(b"a", 1, False), (b"b", 0, False)], pubs
    again = [(m.payload, m.qos, m.retain) for m in pubs if m.topic == "gap/r"]
    assert again == [(b"R", 0, True)], pubs


def test_conformance_unsubscribe_completes_inflight_qos2(broker):
    """[MQTT-3.10.4-3] a QoS 2 delivery already started when the client unsubscribes is
    still completed: after the UNSUBACK our PUBREC is answered with PUBREL (same id) and the
    PUBCOMP ends it; nothing further is sent."""
    sub = client(broker, "u2")
    sub.subscribe([("u2/t", 2)])
    pub = client(broker, "u2pub")
    pub.publish("u2/t", b"x", qos=2)
    m = sub.recv_publish(ack=False)
    assert m.qos == 2
    sub.send(unsubscribe_pkt(77, ["u2/t"]))
    sub.expect_bytes(packet(UNSUBACK, 0, b"\x00\x4d"))
    sub.send(pubrec_pkt(m.pid))
    sub.expect_bytes(pubrel_pkt(m.pid))
    sub.send(pubcomp_pkt(m.pid))
    pub.publish("u2/t", b"after", qos=2)
    sub.expect_no_packet()


# -- DISCONNECT ---------------------------------------------------------------------------

def test_conformance_disconnect_closes_and_ignores_later_data(broker):
    """[MQTT-3.14.4-1] [MQTT-3.14.4-2] [MQTT-3.14.4-3] the server's side of DISCONNECT: it
    closes the connection itself without answering, and anything the client wrongly sends
    after DISCONNECT (here a retained PUBLISH in the same write) is not processed - neither
    delivered nor retained - and the will is not published."""
    w = client(broker, "watch")
    w.subscribe([("after/#", 0)])
    c = client(broker, "leaver", will=("after/will", b"w", 0, False))
    c.send(disconnect_pkt() + publish_pkt("after/t", b"late", retain=True))
    assert c.expect_closed() == []
    broker.wait_log(r"client leaver disconnected: DISCONNECT received")
    w.expect_no_packet()
    late = client(broker, "late")
    late.subscribe([("after/#", 0)])
    late.expect_no_packet()


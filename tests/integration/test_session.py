"""session_*: clean session, session present, takeover, offline queueing and redelivery
through the real binary (MQTT 3.1.1 sections 3.1.2.4, 3.1.4, 3.2.2.2, 4.1, 4.4)."""
from midge_harness import (PUBLISH, PUBREL, MqttConn, client, connect_pkt, parse_publish,
                           puback_pkt, pubcomp_pkt, publish_pkt, pubrec_pkt, pubrel_pkt)


def _gone(broker, cid, conn):
    """Close conn without DISCONNECT and wait until the broker has noticed."""
    conn.close()
    broker.wait_log(rf"client {cid} disconnected")


def _leave(broker, cid, conn):
    conn.disconnect()
    broker.wait_log(rf"client {cid} disconnected: DISCONNECT received")


def test_session_present_exact(broker):
    """[MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-3.1.2-4] [MQTT-3.1.4-3] session
    present is 0 for
    clean session 1, 0 for a new clean-session-0 client, 1 when its session exists."""
    a = client(broker, "sp", clean=True, expect_sp=0)
    _leave(broker, "sp", a)
    b = client(broker, "sp", clean=False, expect_sp=0)
    _leave(broker, "sp", b)
    c = client(broker, "sp", clean=False, expect_sp=1)
    _leave(broker, "sp", c)


def test_session_clean1_discards_existing_session(broker):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.1.4-3] a clean-session-1 connect discards the
    stored session:
    session present 0, and a later clean-session-0 connect finds no session and no
    subscription."""
    a = client(broker, "cs", clean=False, expect_sp=0)
    a.subscribe([("cs/t", 1)])
    _leave(broker, "cs", a)
    b = client(broker, "cs", clean=True, expect_sp=0)
    _leave(broker, "cs", b)
    c = client(broker, "cs", clean=False, expect_sp=0)
    pub = client(broker, "pub")
    pub.publish("cs/t", b"x", qos=1)
    c.expect_no_packet()


def test_session_clean1_state_discarded_on_disconnect(broker):
    """[MQTT-3.1.2-6] a clean-session-1 session ends with its connection: its subscriptions
    do not survive, nothing is queued for it."""
    a = client(broker, "eph", clean=True)
    a.subscribe([("eph/t", 1)])
    _leave(broker, "eph", a)
    pub = client(broker, "pub")
    pub.publish("eph/t", b"lost", qos=1)
    b = client(broker, "eph", clean=False, expect_sp=0)
    b.expect_no_packet()


def test_session_subscriptions_kept_and_offline_queue_in_order(broker):
    """[MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-4.6.0-6] [MQTT-4.1.0-1] while a clean-session-0
    client is offline its QoS 1 and 2 messages are queued; on reconnect they arrive in
    order without re-subscribing, and live delivery continues."""
    a = client(broker, "off", clean=False)
    a.subscribe([("off/1", 1), ("off/2", 2)])
    _leave(broker, "off", a)
    pub = client(broker, "pub")
    for i in range(10):
        pub.publish("off/1", f"a{i}".encode(), qos=1)
    for i in range(5):
        pub.publish("off/2", f"b{i}".encode(), qos=2)
    b = client(broker, "off", clean=False, expect_sp=1)
    msgs = b.collect(15)
    ones = [m.payload for m in msgs if m.topic == "off/1"]
    twos = [m.payload for m in msgs if m.topic == "off/2"]
    assert ones == [f"a{i}".encode() for i in range(10)]
    assert twos == [f"b{i}".encode() for i in range(5)]
    assert all(m.qos == (1 if m.topic == "off/1" else 2) for m in msgs)
    b.expect_no_packet()
    pub.publish("off/1", b"live", qos=1)
    assert b.recv_publish().payload == b"live"


def test_session_unacked_resent_with_dup_in_order(broker):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-1] [MQTT-2.3.1-3] QoS 1 messages sent but
    not acknowledged are resent on reconnect (clean session 0) with DUP 1, their original
    packet ids, in the original order, before newer queued messages."""
    a = client(broker, "dupr", clean=False)
    a.subscribe([("dr/t", 1)])
    pub = client(broker, "pub")
    for i in range(3):
        pub.publish("dr/t", str(i).encode(), qos=1)
    first = a.collect(3, ack=False)
    _gone(broker, "dupr", a)
    pub.publish("dr/t", b"3", qos=1)
    b = client(broker, "dupr", clean=False, expect_sp=1)
    again = b.collect(4, ack=False)
    assert [m.payload for m in again] == [b"0", b"1", b"2", b"3"]
    for old, new in zip(first, again[:3]):
        assert new.dup and new.pid == old.pid and new.qos == 1
    assert not again[3].dup
    for m in again:
        b.send(puback_pkt(m.pid))
    b.expect_no_packet()


def test_session_qos2_pubrel_resent_after_reconnect(broker):
    """[MQTT-4.4.0-1] [MQTT-4.3.3-1] the server as QoS 2 sender: after our PUBREC and a
    reconnect it resends the PUBREL (same id), not the PUBLISH."""
    a = client(broker, "rel", clean=False)
    a.subscribe([("rel/t", 2)])
    pub = client(broker, "pub")
    pub.publish("rel/t", b"q2", qos=2)
    m = a.recv_publish(ack=False)
    a.send(pubrec_pkt(m.pid))
    a.expect_bytes(pubrel_pkt(m.pid))
    _gone(broker, "rel", a)
    b = client(broker, "rel", clean=False, expect_sp=1)
    b.expect_bytes(pubrel_pkt(m.pid))
    b.send(pubcomp_pkt(m.pid))
    b.expect_no_packet()


def test_session_qos2_unacked_publish_resent_with_dup(broker):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] a QoS 2 PUBLISH never PUBREC'd is resent on reconnect
    with DUP 1 and the same id; the flow then completes."""
    a = client(broker, "q2d", clean=False)
    a.subscribe([("q2d/t", 2)])
    pub = client(broker, "pub")
    pub.publish("q2d/t", b"z", qos=2)
    m = a.recv_publish(ack=False)
    _gone(broker, "q2d", a)
    b = client(broker, "q2d", clean=False, expect_sp=1)
    p = b.expect(PUBLISH)
    m2 = parse_publish(p)
    assert (m2.payload, m2.pid, m2.dup, m2.qos) == (b"z", m.pid, True, 2)
    b.send(pubrec_pkt(m.pid))
    b.expect(PUBREL)
    b.send(pubcomp_pkt(m.pid))
    b.expect_no_packet()


def test_session_qos2_inbound_state_survives_reconnect(broker):
    """[MQTT-4.3.3-2] [MQTT-4.4.0-1] a publisher's QoS 2 message PUBREC'd but not yet
    released keeps its exactly-once state across a clean-session-0 reconnect: the resent
    PUBLISH (DUP 1) is not delivered again, and PUBREL gets PUBCOMP."""
    sub = client(broker, "sub")
    sub.subscribe([("eo/t", 0)])
    a = client(broker, "eo", clean=False)
    a.send(publish_pkt("eo/t", b"once", qos=2, pid=9))
    a.expect_bytes(pubrec_pkt(9))
    _gone(broker, "eo", a)
    b = client(broker, "eo", clean=False, expect_sp=1)
    b.send(publish_pkt("eo/t", b"once", qos=2, pid=9, dup=True))
    b.expect_bytes(pubrec_pkt(9))
    b.send(pubrel_pkt(9))
    b.expect_bytes(pubcomp_pkt(9))
    assert sub.recv_publish().payload == b"once"
    sub.expect_no_packet()


def test_session_takeover_closes_old_keeps_session(broker):
    """[MQTT-3.1.4-2] [MQTT-3.1.2-4] [MQTT-3.2.2-2] [MQTT-3.1.3-2] a second connection with
    the same id (clean session 0) closes the first, gets session present 1 and inherits
    its subscriptions."""
    a = client(broker, "tk", clean=False, expect_sp=0)
    a.subscribe([("tk/t", 1)])
    b = MqttConn(broker.port)
    b.send(connect_pkt("tk", clean=False))
    b.expect_bytes(b"\x20\x02\x01\x00")
    a.expect_closed()
    broker.wait_log(rf"client tk\b.*\btaken over by 127\.0\.0\.1:{b.local_port}\b")
    pub = client(broker, "pub")
    pub.publish("tk/t", b"to-new", qos=1)
    m = b.recv_publish()
    assert (m.topic, m.payload) == ("tk/t", b"to-new")


def test_session_takeover_clean1(broker):
    """[MQTT-3.1.4-2] [MQTT-3.2.2-1] takeover with clean session 1: old connection closed,
    CONNACK 20 02 00 00, old subscriptions gone."""
    a = client(broker, "tk1", clean=False)
    a.subscribe([("tk1/t", 1)])
    b = MqttConn(broker.port)
    b.send(connect_pkt("tk1", clean=True))
    b.expect_bytes(b"\x20\x02\x00\x00")
    a.expect_closed()
    pub = client(broker, "pub")
    pub.publish("tk1/t", b"x", qos=1)
    b.expect_no_packet()


def test_session_takeover_of_takeover(broker):
    """[MQTT-3.1.4-2] three connections in a row with one id: each new one closes the
    previous; the last stays connected."""
    a = client(broker, "chain")
    b = client(broker, "chain")
    a.expect_closed()
    c = client(broker, "chain")
    b.expect_closed()
    c.ping()


def test_session_unsubscribe_persists(broker):
    """[MQTT-3.10.4-2] [MQTT-3.1.2-4] an UNSUBSCRIBE is part of the persistent session: after
    reconnect nothing is queued for the removed filter."""
    a = client(broker, "us", clean=False)
    a.subscribe([("us/a", 1), ("us/b", 1)])
    a.unsubscribe(["us/a"])
    _leave(broker, "us", a)
    pub = client(broker, "pub")
    pub.publish("us/a", b"a", qos=1)
    pub.publish("us/b", b"b", qos=1)
    b = client(broker, "us", clean=False, expect_sp=1)
    m = b.recv_publish()
    assert m.topic == "us/b"
    b.expect_no_packet()


def test_session_qos0_live_only(broker):
    """[MQTT-3.1.2-5] [MQTT-4.1.0-2] QoS 0 subscriptions of an online persistent client
    still work; QoS 1
    messages for a QoS 0 subscription are downgraded while online."""
    a = client(broker, "q0", clean=False)
    a.subscribe([("q0/t", 0)])
    pub = client(broker, "pub")
    pub.publish("q0/t", b"x", qos=1)
    m = a.recv_publish()
    assert (m.payload, m.qos) == (b"x", 0)

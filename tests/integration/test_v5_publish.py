"""v5_publish_*: MQTT 5 PUBLISH and its acknowledgements through the real binary (issue 13).

What a publisher sets travels unchanged and in order to MQTT 5 subscribers (Payload Format
Indicator, Content Type, Response Topic, Correlation Data, User Properties) and not to
3.1.1 ones; the Message Expiry Interval is decremented by the time a message waited and a
message whose interval ran out is not delivered; the reason codes of PUBACK/PUBREC (0x10 no
matching subscribers, 0x87 not authorized, 0x97 quota exceeded, 0x99 payload format
invalid) and PUBCOMP 0x92; QoS 1/2 flows both ways; topic aliases the client sends (paho
can) and the ones the broker sends with max_topic_alias_broker; retained messages.

Synchronisation: a QoS 1 PUBLISH is routed before its PUBACK goes out, and each client's
output keeps its order, so a PINGREQ sent by a subscriber after the publisher's PUBACK is
answered after every message routed to it. Where the test is about time passing (message
expiry), it waits for the interval itself; everything else waits on packets.
"""
import time

import midge_harness as h
from midge_harness import (P_CONTENT_TYPE, P_CORRELATION_DATA, P_MESSAGE_EXPIRY,
                           P_PAYLOAD_FORMAT, P_REASON_STRING, P_REQUEST_PROBLEM_INFO,
                           P_RESPONSE_TOPIC, P_SESSION_EXPIRY, P_TOPIC_ALIAS,
                           P_TOPIC_ALIAS_MAXIMUM, P_USER, PUBACK, PUBCOMP, PUBLISH, PUBREC,
                           PUBREL, Paho5, ack5_pkt, client5, parse_ack5, parse_publish5,
                           publish5_pkt)


def acl_broker(start_broker, tmp_path, lines, extra=()):
    acl = tmp_path / "acl"
    acl.write_text("\n".join(lines) + "\n")
    return start_broker(conf=[f"acl_file {acl}"] + list(extra))


# -- forwarded properties -----------------------------------------------------------------

FORWARDED = [
    (P_PAYLOAD_FORMAT, 1),
    (P_USER, ("first", "1")),
    (P_CONTENT_TYPE, "text/plain; charset=utf-8"),
    (P_RESPONSE_TOPIC, "fwd/reply"),
    (P_CORRELATION_DATA, b"\x00\x01\xfe\xff"),
    (P_USER, ("second", "\ufeffbom kept")),
    (P_USER, ("first", "again")),
]


def test_v5_publish_properties_forwarded_unchanged_in_order(broker):
    """[MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
    [MQTT-3.3.2-20] Payload Format Indicator, Content Type, Response Topic, Correlation Data
    and User Properties (a repeated name too) reach an MQTT 5 subscriber unchanged and in the
    publisher's order, at QoS 0 and 1; [MQTT-1.5.4-3] a U+FEFF (EF BB BF) in a value is kept.
    A 3.1.1 subscriber of the same topic gets the message byte for byte without them."""
    s5 = client5(broker, "s5")
    s5.subscribe([("fwd/#", 1)])
    s3 = h.client(broker, "s3")
    s3.subscribe([("fwd/#", 1)])
    pub = client5(broker, "pub")
    for qos in (0, 1):
        pub.publish("fwd/t", b"hello", qos=qos, props=FORWARDED)
        m = s5.recv_publish()
        assert (m.topic, m.payload, m.qos) == ("fwd/t", b"hello", qos)
        assert m.props.items == FORWARDED
        m3 = s3.recv_publish()
        assert (m3.topic, m3.payload, m3.qos) == ("fwd/t", b"hello", qos)
    pub.ping()
    s3.expect_no_packet()


def test_v5_publish_request_response_with_paho(broker):
    """[MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-18] request/response between two
    paho-mqtt MQTTv5 clients: the requester's Response Topic and Correlation Data reach the
    responder, whose reply (published to that Response Topic with the same Correlation
    Data) reaches the requester; User Properties keep their order."""
    responder = Paho5(broker.port, "responder")
    requester = Paho5(broker.port, "requester")
    try:
        assert responder.subscribe("svc/echo", 1) == [1]
        assert requester.subscribe("svc/replies/requester", 1) == [1]
        req = Paho5.properties("PUBLISH", ResponseTopic="svc/replies/requester",
                               CorrelationData=b"\x07req-1",
                               UserProperty=[("z", "1"), ("a", "2"), ("z", "3")])
        requester.publish("svc/echo", b"ping", qos=1, props=req)
        got = responder.get()
        assert got.properties.ResponseTopic == "svc/replies/requester"
        assert got.properties.CorrelationData == b"\x07req-1"
        assert got.properties.UserProperty == [("z", "1"), ("a", "2"), ("z", "3")]
        reply = Paho5.properties("PUBLISH", CorrelationData=got.properties.CorrelationData)
        responder.publish(got.properties.ResponseTopic, b"pong", qos=1, props=reply)
        back = requester.get()
        assert (back.topic, back.payload) == ("svc/replies/requester", b"pong")
        assert back.properties.CorrelationData == b"\x07req-1"
    finally:
        responder.close()
        requester.close()


# -- message expiry -----------------------------------------------------------------------

def test_v5_publish_message_expiry_live_forwarded(broker):
    """[MQTT-3.3.2-6] a message forwarded at once carries the Message Expiry Interval the
    publisher set (less than a second waited: still 30); one without it gets none."""
    sub = client5(broker, "sub")
    sub.subscribe([("exp/#", 0)])
    pub = client5(broker, "pub")
    pub.publish("exp/t", b"a", props=[(P_MESSAGE_EXPIRY, 30)])
    assert sub.recv_publish().props.get(P_MESSAGE_EXPIRY) in (29, 30)
    pub.publish("exp/t", b"b")
    assert P_MESSAGE_EXPIRY not in sub.recv_publish().props


def test_v5_publish_queued_message_expiry_decremented_and_expired(broker):
    """[MQTT-3.3.2-5] [MQTT-3.3.2-6] while a persistent subscriber is away, a queued message
    whose Message Expiry Interval (1 s) runs out is deleted, never delivered; one with 10 s
    arrives with the interval reduced by the time it waited (at least 2 s); one without
    expiry arrives without the property. The same for retained messages: an expired one
    is not sent to a new subscriber, a live one is sent with its remaining interval."""
    exp = [(P_SESSION_EXPIRY, 300)]
    sub = client5(broker, "away", clean=False, props=exp)
    sub.subscribe([("qexp/#", 1)])
    sub.disconnect()
    pub = client5(broker, "pub")
    pub.publish("qexp/short", b"short", qos=1, props=[(P_MESSAGE_EXPIRY, 1)])
    pub.publish("qexp/long", b"long", qos=1, props=[(P_MESSAGE_EXPIRY, 10)])
    pub.publish("qexp/none", b"none", qos=1)
    pub.publish("rexp/short", b"rs", qos=1, retain=True, props=[(P_MESSAGE_EXPIRY, 1)])
    pub.publish("rexp/long", b"rl", qos=1, retain=True, props=[(P_MESSAGE_EXPIRY, 60)])
    time.sleep(2.2)  # the time the messages wait is what this test is about
    back = client5(broker, "away", clean=False, props=exp, expect_sp=True)
    got = back.collect(2)
    assert [(m.topic, m.payload) for m in got] == [("qexp/long", b"long"), ("qexp/none", b"none")]
    assert 1 <= got[0].props.get(P_MESSAGE_EXPIRY) <= 8
    assert P_MESSAGE_EXPIRY not in got[1].props
    back.ping()
    back.expect_no_packet()
    late = client5(broker, "late")
    late.subscribe([("rexp/#", 1)])
    m = late.recv_publish()
    assert (m.topic, m.payload, m.retain) == ("rexp/long", b"rl", True)
    assert 1 <= m.props.get(P_MESSAGE_EXPIRY) <= 58
    late.expect_no_packet()


def test_v5_publish_qos2_inbound_completes_after_expiry(broker):
    """[MQTT-4.3.3-13] the QoS 2 acknowledgements of an incoming message run to completion
    even when its Message Expiry Interval (1 s) has passed before the PUBREL."""
    pub = client5(broker, "pub")
    pub.send(publish5_pkt("q2exp/t", b"x", qos=2, pid=9, props=[(P_MESSAGE_EXPIRY, 1)]))
    rec = parse_ack5(pub.expect(PUBREC))
    assert rec.pid == 9
    time.sleep(1.5)  # past the message's expiry
    pub.send(ack5_pkt(PUBREL, 9))
    comp = parse_ack5(pub.expect(PUBCOMP))
    assert (comp.pid, comp.reason) == (9, 0)


# -- acknowledgements and their reason codes ----------------------------------------------

def test_v5_publish_ack_reason_codes_exact(broker):
    """[MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-2.2.1-5] PUBACK and PUBREC carry the PUBLISH's
    packet id and a reason code of their table, in the shortest form: 0x10 No matching
    subscribers when nobody subscribes (40 03 id 10, 50 03 id 10), success without reason
    code when somebody does (40 02 id, 50 02 id); PUBCOMP the same id (70 02 id)."""
    pub = client5(broker, "pub")
    pub.send(publish5_pkt("ack/none", b"x", qos=1, pid=0x0102))
    pub.expect_bytes(b"\x40\x03\x01\x02\x10")
    pub.send(publish5_pkt("ack/none", b"x", qos=2, pid=0x0103))
    pub.expect_bytes(b"\x50\x03\x01\x03\x10")
    pub.send(ack5_pkt(PUBREL, 0x0103))
    pub.expect_bytes(b"\x70\x02\x01\x03")
    sub = client5(broker, "sub")
    sub.subscribe([("ack/some", 2)])
    pub.send(publish5_pkt("ack/some", b"x", qos=1, pid=0x0104))
    pub.expect_bytes(b"\x40\x02\x01\x04")
    pub.send(publish5_pkt("ack/some", b"y", qos=2, pid=0x0105))
    pub.expect_bytes(b"\x50\x02\x01\x05")
    pub.send(ack5_pkt(PUBREL, 0x0105))
    pub.expect_bytes(b"\x70\x02\x01\x05")
    assert [m.payload for m in sub.collect(2)] == [b"x", b"y"]


def test_v5_publish_not_authorized_0x87(start_broker, tmp_path):
    """[MQTT-3.4.2-1] [MQTT-3.5.2-1] a PUBLISH the acl_file does not let the client write is
    answered PUBACK 0x87 (QoS 1) or PUBREC 0x87 (QoS 2, which ends the exchange: a PUBREL
    for it gets PUBCOMP 0x92), with a Reason String, and not delivered. [MQTT-3.1.2-29]
    with Request Problem Information 0 the same PUBACK carries no Reason String (nor any
    User Property)."""
    br = acl_broker(start_broker, tmp_path, ["topic readwrite open/#", "topic read closed/#"])
    watch = client5(br, "watch")
    assert watch.subscribe([("closed/#", 1)]) == [1]
    pub = client5(br, "pub")
    ack = pub.publish("closed/t", b"x", qos=1, expect_reason=0x87)
    assert P_REASON_STRING in ack.props
    rec = pub.publish("closed/t", b"x", qos=2, expect_reason=0x87)
    assert P_REASON_STRING in rec.props
    pub.send(ack5_pkt(PUBREL, rec.pid))
    comp = parse_ack5(pub.expect(PUBCOMP))
    assert (comp.pid, comp.reason) == (rec.pid, 0x92)
    quiet = client5(br, "quiet", props=[(P_REQUEST_PROBLEM_INFO, 0)])
    ack = quiet.publish("closed/t", b"x", qos=1, expect_reason=0x87)
    assert ack.props.items == []
    pub.publish("open/t", b"ok", qos=1, expect_reason=0x10)
    watch.ping()
    watch.expect_no_packet()


def test_v5_publish_payload_format_invalid_0x99(broker):
    """[MQTT-3.3.2-4] a PUBLISH saying its payload is UTF-8 (Payload Format Indicator 1)
    whose payload is not is refused: PUBACK 0x99 (QoS 1), PUBREC 0x99 (QoS 2), nothing
    for QoS 0, and not forwarded; valid UTF-8 with 1, and any bytes with 0, are forwarded
    with their indicator. [MQTT-4.3.3-9] after PUBREC 0x99 the same packet id starts a new
    message."""
    sub = client5(broker, "sub")
    sub.subscribe([("pfi/#", 2)])
    pub = client5(broker, "pub")
    bad = [(P_PAYLOAD_FORMAT, 1)]
    pub.publish("pfi/t", b"\xff\xfe", props=bad)
    pub.publish("pfi/t", b"\xc0\xaf", qos=1, props=bad, expect_reason=0x99)
    pub.publish("pfi/t", b"\xed\xa0\x80", qos=2, pid=21, props=bad, expect_reason=0x99)
    pub.publish("pfi/t", "caf\u00e9".encode(), qos=2, pid=21, props=bad, expect_reason=0)
    pub.publish("pfi/t", b"\xff\x00", qos=1, props=[(P_PAYLOAD_FORMAT, 0)], expect_reason=0)
    got = sub.collect(2)
    assert [(m.payload, m.props.get(P_PAYLOAD_FORMAT)) for m in got] == \
        [("caf\u00e9".encode(), 1), (b"\xff\x00", 0)]
    sub.ping()
    sub.expect_no_packet()


def test_v5_publish_over_message_size_limit_0x97(start_broker):
    """[MQTT-3.4.2-1] a PUBLISH over message_size_limit is acknowledged with a reason code of
    the PUBACK table (0x97 Quota exceeded) and not delivered."""
    br = start_broker(["message_size_limit 10"])
    sub = client5(br, "sub")
    sub.subscribe([("big/#", 1)])
    pub = client5(br, "pub")
    pub.publish("big/t", b"x" * 11, qos=1, expect_reason=0x97)
    pub.publish("big/t", b"x" * 10, qos=1, expect_reason=0)
    assert sub.recv_publish().payload == b"x" * 10
    sub.ping()
    sub.expect_no_packet()


def test_v5_publish_qos_over_max_qos_disconnect_0x9b(start_broker):
    """[MQTT-3.2.2-11] (client obligation) with max_qos 1 announced in CONNACK, a QoS 2
    PUBLISH is answered with DISCONNECT 0x9B QoS not supported; it is not delivered."""
    br = start_broker(["max_qos 1"])
    sub = client5(br, "sub")
    sub.subscribe([("mq/#", 1)])
    pub = client5(br, "pub")
    pub.send(publish5_pkt("mq/t", b"x", qos=2, pid=1))
    pub.expect_disconnect(0x9B)
    sub.expect_no_packet()


def test_v5_publish_retained_without_retain_available_0x9a(start_broker):
    """[MQTT-3.2.2-14] (client obligation) with Retain Available 0 in CONNACK a retained
    PUBLISH is answered with DISCONNECT 0x9A Retain not supported, and nothing is stored."""
    br = start_broker(["retain_available false"])
    pub = client5(br, "pub")
    pub.send(publish5_pkt("nr/t", b"x", retain=True))
    pub.expect_disconnect(0x9A)
    late = client5(br, "late")
    late.subscribe([("nr/#", 0)])
    late.expect_no_packet()


# -- QoS flows ----------------------------------------------------------------------------

def test_v5_publish_qos0_exact_bytes(broker):
    """[MQTT-2.2.1-2] [MQTT-2.2.2-1] [MQTT-4.3.1-1] [MQTT-3.3.1-2] a QoS 0 message reaches an
    MQTT 5 subscriber as 30 LL topic, no packet id, a property length of 0, the payload."""
    sub = client5(broker, "sub")
    sub.subscribe([("q0/t", 0)])
    client5(broker, "pub").publish("q0/t", b"hi")
    sub.expect_bytes(b"\x30\x09\x00\x04q0/t\x00hi")


def test_v5_publish_qos1_and_qos2_outbound_flows(broker):
    """[MQTT-4.3.2-1] [MQTT-4.3.2-2] [MQTT-4.3.2-3] [MQTT-4.3.3-1] [MQTT-4.3.3-2]
    [MQTT-4.3.3-3] [MQTT-4.3.3-4] [MQTT-4.3.3-5] [MQTT-2.2.1-4] [MQTT-2.2.1-5] QoS 1 and 2
    messages go out with DUP 0 and distinct non-zero packet ids and stay unacknowledged
    (nothing resent on the same connection) until PUBACK / PUBREC; a PUBREC gets a PUBREL
    with the same id and reason 0x00 (62 02 id), which stays until PUBCOMP."""
    sub = client5(broker, "sub")
    sub.subscribe([("flow/#", 2)])
    pub = client5(broker, "pub")
    pub.publish("flow/1", b"one", qos=1)
    pub.publish("flow/2", b"two", qos=2)
    a = sub.recv_publish(ack=False)
    b2 = sub.recv_publish(ack=False)
    assert (a.qos, a.dup, b2.qos, b2.dup) == (1, False, 2, False)
    assert a.pid and b2.pid and a.pid != b2.pid
    sub.expect_no_packet()  # unacknowledged, but not resent while connected
    sub.send(ack5_pkt(PUBREC, b2.pid))
    sub.expect_bytes(bytes([0x62, 2, b2.pid >> 8, b2.pid & 0xFF]))
    sub.expect_no_packet()
    sub.send(ack5_pkt(PUBCOMP, b2.pid) + ack5_pkt(PUBACK, a.pid))
    pub.publish("flow/3", b"three", qos=1)
    c = sub.recv_publish()
    assert c.payload == b"three" and c.pid != 0


def test_v5_publish_qos_inbound_receiver_rules(broker):
    """[MQTT-4.3.2-4] [MQTT-4.3.2-5] [MQTT-4.3.3-8] [MQTT-4.3.3-10] [MQTT-4.3.3-11]
    [MQTT-4.3.3-12] [MQTT-3.3.4-1] the server as receiver: PUBACK with the PUBLISH's id, and
    the same id afterwards is a new message (DUP or not); PUBREC with the id, a resent
    PUBLISH before PUBREL gets PUBREC again and is not delivered twice, PUBREL gets PUBCOMP
    with the id, and the id is then free for a new message; QoS 0 gets no answer."""
    sub = client5(broker, "sub")
    sub.subscribe([("rx/#", 2)])
    pub = client5(broker, "pub")
    pub.send(publish5_pkt("rx/t", b"q1a", qos=1, pid=5))
    assert parse_ack5(pub.expect(PUBACK)).pid == 5
    pub.send(publish5_pkt("rx/t", b"q1b", qos=1, pid=5, dup=True))
    assert parse_ack5(pub.expect(PUBACK)).pid == 5
    pub.send(publish5_pkt("rx/t", b"q2", qos=2, pid=6))
    assert parse_ack5(pub.expect(PUBREC)).pid == 6
    pub.send(publish5_pkt("rx/t", b"q2", qos=2, pid=6, dup=True))
    assert parse_ack5(pub.expect(PUBREC)).pid == 6
    pub.send(ack5_pkt(PUBREL, 6))
    assert parse_ack5(pub.expect(PUBCOMP)).pid == 6
    pub.send(publish5_pkt("rx/t", b"q2new", qos=2, pid=6))
    assert parse_ack5(pub.expect(PUBREC)).pid == 6
    pub.send(ack5_pkt(PUBREL, 6))
    pub.expect(PUBCOMP)
    pub.send(publish5_pkt("rx/t", b"q0"))
    pub.ping()  # nothing answered the QoS 0 PUBLISH before this PINGRESP
    got = [m.payload for m in sub.collect(5)]
    assert got == [b"q1a", b"q1b", b"q2", b"q2new", b"q0"]
    sub.expect_no_packet()


def test_v5_publish_dup_not_propagated(broker):
    """[MQTT-3.3.1-3] [MQTT-3.3.1-1] an incoming PUBLISH with DUP 1 is forwarded with DUP 0:
    DUP says whether the broker's own packet is a retransmission."""
    sub = client5(broker, "sub")
    sub.subscribe([("dup/#", 1)])
    client5(broker, "pub").publish("dup/t", b"x", qos=1, dup=True)
    m = sub.recv_publish()
    assert (m.qos, m.dup) == (1, False)


def test_v5_publish_order_per_publisher(broker):
    """[MQTT-4.6.0-5] [MQTT-4.6.0-6] every topic is ordered: 30 QoS 1 and 30 QoS 0 messages
    from one publisher reach an MQTT 5 subscriber in the order they were published."""
    sub = client5(broker, "sub")
    sub.subscribe([("ord/q1", 1), ("ord/q0", 0)])
    pub = client5(broker, "pub")
    for i in range(30):
        pub.publish("ord/q1", str(i).encode(), qos=1, wait=False)
        pub.publish("ord/q0", str(i).encode())
    got = sub.collect(60)
    for topic in ("ord/q1", "ord/q0"):
        assert [int(m.payload) for m in got if m.topic == topic] == list(range(30))


def test_v5_publish_delivered_to_every_matching_session(broker):
    """[MQTT-4.5.0-1] [MQTT-3.3.2-3] a message is added to the session of every client with a
    matching subscription, connected (MQTT 5 and 3.1.1) or not (a persistent MQTT 5 session,
    which gets it on return); the topic each receives matches its filter; a '+' or '#'
    filter never matches a topic starting with '$' ([MQTT-4.7.2-1])."""
    away = client5(broker, "away", clean=False, props=[(P_SESSION_EXPIRY, 300)])
    away.subscribe([("all/+/x", 1)])
    away.disconnect()
    a = client5(broker, "a")
    a.subscribe([("all/#", 1), ("#", 1)])
    b3 = h.client(broker, "b3")
    b3.subscribe([("+/b/x", 1)])
    pub = client5(broker, "pub")
    pub.publish("all/b/x", b"m", qos=1, expect_reason=0)
    pub.publish("$dollar/b/x", b"hidden", qos=1, expect_reason=0x10)
    m = a.recv_publish()
    assert (m.topic, m.payload) == ("all/b/x", b"m")
    assert b3.recv_publish().topic == "all/b/x"
    back = client5(broker, "away", clean=False, props=[(P_SESSION_EXPIRY, 300)],
                   expect_sp=True)
    assert back.recv_publish().topic == "all/b/x"
    a.ping()
    a.expect_no_packet()


# -- retained messages --------------------------------------------------------------------

def test_v5_publish_retained_store_replace_delete(broker):
    """[MQTT-3.3.1-5] a RETAIN 1 PUBLISH replaces the topic's retained message (its
    properties with it); [MQTT-3.3.1-8] a RETAIN 0 one leaves it alone; [MQTT-3.3.1-6] a
    retained empty payload is forwarded as usual and deletes it; [MQTT-3.3.1-7] the empty
    message is not stored."""
    pub = client5(broker, "pub")
    pub.publish("ret/t", b"one", qos=1, retain=True)
    pub.publish("ret/t", b"two", qos=1, retain=True, props=[(P_USER, ("v", "2"))])
    pub.publish("ret/t", b"live", qos=1)
    s = client5(broker, "s1")
    s.subscribe([("ret/t", 1)])
    m = s.recv_publish()
    assert (m.payload, m.retain, m.props.user) == (b"two", True, [("v", "2")])
    pub.publish("ret/t", b"", qos=1, retain=True)
    m = s.recv_publish()
    assert (m.payload, m.retain) == (b"", False)
    s2 = client5(broker, "s2")
    s2.subscribe([("ret/#", 1)])
    s2.expect_no_packet()


# -- topic aliases ------------------------------------------------------------------------

def test_v5_publish_topic_alias_from_paho(broker):
    """[MQTT-3.3.2-12] the server accepts the topic aliases a client sends, from 1 to the
    Topic Alias Maximum of its CONNACK (10): paho-mqtt sets alias 1 with a topic, reuses
    it with an empty topic, then maps alias 10 and remaps alias 1; subscribers get the full
    topic each time and no Topic Alias (aliases are per connection)."""
    sub = client5(broker, "sub")
    sub.subscribe([("alias/#", 0)])
    p = Paho5(broker.port, "paho-alias")
    try:
        assert p.connack_props.TopicAliasMaximum == 10
        for topic, alias in (("alias/a/long/topic", 1), ("", 1), ("alias/ten", 10), ("", 10),
                             ("alias/remapped", 1), ("", 1)):
            p.publish(topic, b"x", qos=1, props=Paho5.properties("PUBLISH", TopicAlias=alias))
        got = sub.collect(6)
        assert [m.topic for m in got] == ["alias/a/long/topic", "alias/a/long/topic",
                                          "alias/ten", "alias/ten", "alias/remapped",
                                          "alias/remapped"]
        assert all(P_TOPIC_ALIAS not in m.props for m in got)
    finally:
        p.close()


def test_v5_publish_topic_alias_not_kept_across_connections(broker):
    """[MQTT-3.3.2-7] topic alias mappings belong to one network connection: after a
    reconnect (same client id, session kept), a PUBLISH with an empty topic and the alias
    set on the old connection is a Protocol Error (DISCONNECT 0x82)."""
    exp = [(P_SESSION_EXPIRY, 60)]
    c = client5(broker, "al", clean=False, props=exp)
    c.publish("keep/alias", b"1", qos=1, props=[(P_TOPIC_ALIAS, 2)])
    c.publish("", b"2", qos=1, props=[(P_TOPIC_ALIAS, 2)])
    c.disconnect()
    c = client5(broker, "al", clean=False, props=exp, expect_sp=True)
    c.send(publish5_pkt("", b"3", qos=1, pid=3, props=[(P_TOPIC_ALIAS, 2)]))
    c.expect_disconnect(0x82)


def test_v5_publish_outbound_topic_aliases(start_broker):
    """[MQTT-3.3.2-11] [MQTT-3.1.2-26] with max_topic_alias_broker 2 the server uses topic
    aliases towards a client that allows 5: the first message on a topic carries it with
    alias 1, the next ones an empty topic and alias 1, a second topic alias 2, a third
    topic none (no alias above 2, never 0, [MQTT-3.3.2-8]); a client that allows 1 gets
    only alias 1; [MQTT-3.1.2-27] a client that sets no Topic Alias Maximum gets none; a new
    connection starts without aliases ([MQTT-3.3.2-7])."""
    br = start_broker(["max_topic_alias_broker 2"])
    five = client5(br, "five", props=[(P_TOPIC_ALIAS_MAXIMUM, 5)])
    one = client5(br, "one", props=[(P_TOPIC_ALIAS_MAXIMUM, 1)])
    none = client5(br, "none")
    for c in (five, one, none):
        c.subscribe([("ta/#", 0)])
    pub = client5(br, "pub")
    topics = ["ta/1", "ta/1", "ta/2", "ta/3", "ta/2", "ta/1"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    seen = [(m.topic, m.props.get(P_TOPIC_ALIAS), m.payload) for m in five.collect(6)]
    assert seen == [("ta/1", 1, b"ta/1"), ("", 1, b"ta/1"), ("ta/2", 2, b"ta/2"),
                    ("ta/3", None, b"ta/3"), ("", 2, b"ta/2"), ("", 1, b"ta/1")]
    seen = [(m.topic, m.props.get(P_TOPIC_ALIAS)) for m in one.collect(6)]
    assert seen == [("ta/1", 1), ("", 1), ("ta/2", None), ("ta/3", None), ("ta/2", None),
                    ("", 1)]
    assert [(m.topic, P_TOPIC_ALIAS in m.props) for m in none.collect(6)] == \
        [(t, False) for t in topics]
    five.disconnect()
    again = client5(br, "five", props=[(P_TOPIC_ALIAS_MAXIMUM, 5)])
    again.subscribe([("ta/#", 0)])
    pub.publish("ta/1", b"x", qos=1)
    m = again.recv_publish()
    assert (m.topic, m.props.get(P_TOPIC_ALIAS)) == ("ta/1", 1)


def test_v5_publish_no_aliases_to_mosquitto_sub(start_broker):
    """[MQTT-3.1.2-27] mosquitto_sub -V mqttv5 sets no Topic Alias Maximum, so even with
    max_topic_alias_broker set it is sent every topic in full (libmosquitto 2.0.11 cannot
    read an empty topic with an alias: telling such a client nothing is what keeps it
    working)."""
    br = start_broker(["max_topic_alias_broker 4"])
    sub = h.SubProc(br.port, "-V", "mqttv5", "-t", "msa/#", "-q", "1", "-F", "%t %p")
    try:
        pub = client5(br, "pub")
        for i in range(3):
            pub.publish("msa/topic", f"m{i}".encode(), qos=1)
        assert sub.wait_messages(3) == ["msa/topic m0", "msa/topic m1", "msa/topic m2"]
    finally:
        sub.stop()


def test_v5_publish_ack_order_and_puback_only_sent(broker):
    """[MQTT-4.6.0-6] acknowledgements go out in the order of the packets they answer: a burst
    of QoS 1 PUBLISHes (ids 1..20 in one write) gets PUBACKs 1..20, a burst of QoS 2 ones
    (ids 21..30) PUBRECs 21..30, and their PUBRELs in one write PUBCOMPs in that order;
    nothing else is sent to the publisher, which subscribes to nothing."""
    pub = client5(broker, "pub")
    pub.send(b"".join(publish5_pkt("burst/t", b"x", qos=1, pid=i) for i in range(1, 21)))
    assert [parse_ack5(pub.expect(PUBACK)).pid for _ in range(20)] == list(range(1, 21))
    pub.send(b"".join(publish5_pkt("burst/t", b"y", qos=2, pid=i) for i in range(21, 31)))
    assert [parse_ack5(pub.expect(PUBREC)).pid for _ in range(10)] == list(range(21, 31))
    pub.send(b"".join(ack5_pkt(PUBREL, i) for i in range(21, 31)))
    assert [parse_ack5(pub.expect(PUBCOMP)).pid for _ in range(10)] == list(range(21, 31))
    pub.expect_no_packet()


def test_v5_publish_pubrels_follow_pubrec_order(broker):
    """[MQTT-4.3.3-4] the server as QoS 2 sender answers PUBRECs in the order they arrive: three
    QoS 2 messages PUBREC'd in reverse order in one write get their PUBRELs in that reverse
    order, each with its message's packet id."""
    sub = client5(broker, "sub")
    sub.subscribe([("rel/#", 2)])
    pub = client5(broker, "pub")
    for i in range(3):
        pub.publish("rel/t", str(i).encode(), qos=2)
    ms = [sub.recv_publish(ack=False) for _ in range(3)]
    order = [m.pid for m in reversed(ms)]
    sub.send(b"".join(ack5_pkt(PUBREC, pid) for pid in order))
    assert [parse_ack5(sub.expect(PUBREL)).pid for _ in range(3)] == order
    sub.send(b"".join(ack5_pkt(PUBCOMP, pid) for pid in order))
    sub.ping()
    sub.expect_no_packet()


def test_v5_publish_no_local_publisher_holds_own(broker):
    """[MQTT-4.5.0-1] a publisher subscribed to its own topic (without No Local) gets its
    message back,
    after its own PUBACK (the publisher's copy waits for the acknowledgement)."""
    c = client5(broker, "self")
    c.subscribe([("own/#", 1)])
    c.send(publish5_pkt("own/t", b"mine", qos=1, pid=3))
    first = c.recv()
    assert first.type == PUBACK and parse_ack5(first).pid == 3
    p = c.recv()
    assert p.type == PUBLISH and parse_publish5(p).payload == b"mine"



def test_v5_publish_client_acks_with_properties_accepted(broker):
    """[MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.7.2-1] acknowledgements a client sends with a
    reason code and properties (Reason String, User Properties) are read like the short
    forms: the QoS 1 and QoS 2 exchanges end and the next messages come (Receive Maximum 1
    proves each slot was freed)."""
    sub = client5(broker, "sub", props=[(h.P_RECEIVE_MAXIMUM, 1)])
    sub.subscribe([("ackp/#", 2)])
    pub = client5(broker, "pub")
    for q in (1, 2, 1):
        pub.publish("ackp/t", str(q).encode(), qos=q)
    extra = [(P_REASON_STRING, "fine"), (P_USER, ("k", "v"))]
    m = sub.recv_publish(ack=False)
    sub.send(ack5_pkt(PUBACK, m.pid, 0x00, extra))
    m = sub.recv_publish(ack=False)
    assert m.qos == 2
    sub.send(ack5_pkt(PUBREC, m.pid, 0x00, extra))
    assert parse_ack5(sub.expect(PUBREL)).pid == m.pid
    sub.send(ack5_pkt(PUBCOMP, m.pid, 0x00, extra))
    assert sub.recv_publish().payload == b"1"


def test_v5_publish_topic_alias_refused_when_maximum_is_0(start_broker):
    """[MQTT-3.2.2-18] (client obligation) with max_topic_alias 0 the CONNACK carries no Topic
    Alias Maximum (0: aliases forbidden) and a PUBLISH with Topic Alias 1 is DISCONNECT 0x94
    Topic Alias invalid."""
    br = start_broker(["max_topic_alias 0"])
    c = client5(br, "noalias")
    assert P_TOPIC_ALIAS_MAXIMUM not in c.connack.props
    c.send(publish5_pkt("na/t", b"x", props=[(P_TOPIC_ALIAS, 1)]))
    c.expect_disconnect(0x94)


def test_v5_publish_message_expiry_zero_delivered_to_connected_subscriber(broker):
    """[MQTT-3.3.2-5] deletes a copy only when "the Message Expiry Interval has passed and the
    Server has not managed to start onward delivery to a matching subscriber". A message
    published with Message Expiry Interval 0 to a connected subscriber can start its onward
    delivery at once: it is delivered (Mosquitto 2.0 delivers it, without the property);
    the PUBACK says 0x00 success, so dropping it loses it silently. A subscriber that is
    away does not get it."""
    away = client5(broker, "away", clean=False, props=[(P_SESSION_EXPIRY, 300)])
    away.subscribe([("ez/#", 1)])
    away.disconnect()
    sub = client5(broker, "sub")
    sub.subscribe([("ez/#", 1)])
    pub = client5(broker, "pub")
    pub.publish("ez/t", b"now", qos=1, props=[(P_MESSAGE_EXPIRY, 0)], expect_reason=0)
    m = sub.recv_publish()
    assert (m.topic, m.payload) == ("ez/t", b"now")
    assert m.props.get(P_MESSAGE_EXPIRY, 0) == 0
    back = client5(broker, "away", clean=False, props=[(P_SESSION_EXPIRY, 300)],
                   expect_sp=True)
    back.ping()
    back.expect_no_packet()


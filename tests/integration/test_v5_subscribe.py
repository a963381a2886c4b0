"""v5_subscribe_*: MQTT 5 SUBSCRIBE and UNSUBSCRIBE through the real binary (issue 13).

SUBACK reason codes (granted QoS, max_qos, 0x87 from an acl_file, 0x8F for a filter
deeper than max_topic_levels), Subscription Identifiers (raw client, paho-mqtt and
mosquitto_sub -D subscribe subscription-identifier with -F %S), the subscription options
No Local, Retain As Published and Retain Handling 0/1/2, a repeated SUBSCRIBE replacing
the subscription, UNSUBACK reason codes (0x00, 0x11) and what an UNSUBSCRIBE stops and
does not stop.

Synchronisation: a QoS 1 PUBLISH is routed before its PUBACK goes out and a client's
output keeps its order, so once a publisher's PUBACK is in, a subscriber's PINGRESP comes
after every message routed to it (ping() then expect_no_packet() proves nothing came).
"""
import midge_harness as h
from midge_harness import (P_SUBSCRIPTION_ID, PUBACK, PUBLISH, PUBREC, PUBREL, SUBACK,
                           UNSUBACK, Paho5, ack5_pkt, client5, parse_ack5, parse_publish5,
                           parse_suback5, publish5_pkt, sub_opts, subscribe5_pkt,
                           unsubscribe5_pkt)


def drain(conn, t=h.QUIET):
    """Packets until none arrives for t seconds (QoS 1 PUBLISHes acknowledged)."""
    got = []
    while True:
        p = conn.read_packet(t)
        if p is None:
            return got
        if p.type == PUBLISH:
            m = parse_publish5(p)
            if m.qos == 1:
                conn.send(ack5_pkt(PUBACK, m.pid))
        got.append(p)


# -- SUBACK -------------------------------------------------------------------------------

def test_v5_subscribe_suback_codes_in_order(broker):
    """[MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.8.4-7]
    [MQTT-3.9.3-1] [MQTT-3.9.3-2] [MQTT-2.2.1-6] one SUBSCRIBE with three filters gets one
    SUBACK with its packet id, an empty property block and one reason code per filter, in
    order: the granted QoS 2, 0, 1 (90 06 id 00 02 00 01)."""
    c = client5(broker, "codes")
    c.send(subscribe5_pkt(0x1234, [("c/two", 2), ("c/zero", 0), ("c/one", 1)]))
    c.expect_bytes(b"\x90\x06\x12\x34\x00\x02\x00\x01")
    client5(broker, "pub").publish("c/two", b"x", qos=2)
    m = c.recv_publish()
    assert (m.topic, m.qos) == ("c/two", 2)


def test_v5_subscribe_max_qos_grants_lower(start_broker):
    """[MQTT-3.2.2-10] with max_qos 1 a SUBSCRIBE asking for QoS 2 is accepted and granted
    QoS 1 (not refused); [MQTT-3.8.4-8] a QoS 1 message then arrives at QoS 1."""
    br = start_broker(["max_qos 1"])
    c = client5(br, "mq")
    assert c.subscribe([("mq/a", 2), ("mq/b", 1), ("mq/c", 0)]) == [1, 1, 0]
    client5(br, "pub").publish("mq/a", b"x", qos=1)
    assert c.recv_publish().qos == 1


def test_v5_subscribe_qos_downgraded_to_grant(broker):
    """[MQTT-3.8.4-8] a message goes out at the lower of its QoS and the granted QoS: QoS 2
    to a QoS 1 subscription arrives at QoS 1, QoS 0 stays 0; [MQTT-3.3.4-2] overlapping
    subscriptions of one client give one copy at the highest granted QoS."""
    c = client5(broker, "down")
    c.subscribe([("dn/t", 1)])
    d = client5(broker, "overlap")
    d.subscribe([("ov/#", 0), ("ov/+", 2), ("ov/t", 1)])
    pub = client5(broker, "pub")
    pub.publish("dn/t", b"two", qos=2)
    pub.publish("dn/t", b"zero", qos=0)
    pub.publish("ov/t", b"o", qos=2)
    assert [(m.payload, m.qos) for m in c.collect(2)] == [(b"two", 1), (b"zero", 0)]
    m = d.recv_publish()
    assert (m.payload, m.qos) == (b"o", 2)
    d.ping()
    d.expect_no_packet()


def test_v5_subscribe_acl_denied_0x87(start_broker, tmp_path):
    """[MQTT-3.8.4-7] [MQTT-3.9.3-2] a filter the acl_file does not let the client read gets
    0x87 Not authorized while the others of the same SUBSCRIBE are granted ('#' too: it can
    deliver what the client may read, docs/acl.md); paho-mqtt sees the same codes."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite pub/#\n")
    br = start_broker([f"acl_file {acl}"])
    c = client5(br, "denied")
    assert c.subscribe([("secret/#", 1), ("pub/x", 1), ("#", 0)]) == [0x87, 1, 0]
    p = Paho5(br.port, "paho-denied")
    try:
        assert p.subscribe("secret/t", 1) == [0x87]
        assert p.subscribe("pub/t", 2) == [2]
    finally:
        p.close()


def test_v5_subscribe_filter_too_deep_0x8f(start_broker):
    """[MQTT-3.8.4-7] a filter deeper than max_topic_levels gets 0x8F Topic Filter invalid,
    the others are granted."""
    br = start_broker(["max_topic_levels 3"])
    c = client5(br, "deep")
    assert c.subscribe([("a/b/c/d", 0), ("a/b/c", 1)]) == [0x8F, 1]


# -- Subscription Identifiers -------------------------------------------------------------

def test_v5_subscribe_subscription_identifiers(broker):
    """[MQTT-3.3.4-3] [MQTT-3.3.4-4] a message matching two subscriptions of a client goes out
    once, carrying both Subscription Identifiers (7 and 268,435,455, the largest); one
    matching only the first carries 7; the retained message sent on subscribe carries the
    new subscription's identifier; a subscription replaced without an identifier loses it;
    a 3.1.1 subscriber of the same topics gets the messages without properties."""
    pub = client5(broker, "pub")
    pub.publish("si/r", b"ret", qos=1, retain=True)
    c = client5(broker, "ids")
    assert c.subscribe([("si/#", 1)], props=[(P_SUBSCRIPTION_ID, 7)]) == [1]
    m = c.recv_publish()
    assert (m.topic, m.retain, m.props.all(P_SUBSCRIPTION_ID)) == ("si/r", True, [7])
    c.subscribe([("si/+", 0)], props=[(P_SUBSCRIPTION_ID, 268435455)])
    m = c.recv_publish()
    assert (m.topic, m.props.all(P_SUBSCRIPTION_ID)) == ("si/r", [268435455])
    v3 = h.client(broker, "v3")
    v3.subscribe([("si/#", 1)])
    v3.recv_publish()  # the retained one
    pub.publish("si/both", b"b", qos=1)
    m = c.recv_publish()
    assert (m.topic, m.qos) == ("si/both", 1)
    assert sorted(m.props.all(P_SUBSCRIPTION_ID)) == [7, 268435455]
    pub.publish("si/only/hash", b"h", qos=1)
    m = c.recv_publish()
    assert m.props.all(P_SUBSCRIPTION_ID) == [7]
    c.subscribe([("si/#", 1)])  # replaced, now without an identifier
    c.recv_publish()  # the retained si/r again (Retain Handling 0)
    pub.publish("si/only/hash", b"h2", qos=1)
    m = c.recv_publish()
    assert (m.payload, m.props.all(P_SUBSCRIPTION_ID)) == (b"h2", [])
    assert [(x.topic, x.payload) for x in v3.collect(3)] == \
        [("si/both", b"b"), ("si/only/hash", b"h"), ("si/only/hash", b"h2")]


def test_v5_subscribe_subscription_identifier_paho_and_mosquitto_sub(broker):
    """[MQTT-3.3.4-3] the Subscription Identifier set with paho-mqtt (SubscriptionIdentifier
    property) and with mosquitto_sub -D subscribe subscription-identifier 42 is on the
    messages each receives (paho's message properties, mosquitto_sub's -F %S)."""
    p = Paho5(broker.port, "paho-ids")
    sub = h.SubProc(broker.port, "-V", "mqttv5", "-t", "sip/#", "-q", "1",
                    "-D", "subscribe", "subscription-identifier", "42", "-F", "%S %t %p")
    try:
        props = Paho5.properties("SUBSCRIBE", SubscriptionIdentifier=5)
        assert p.subscribe("sip/+", 1, props=props) == [1]
        client5(broker, "pub").publish("sip/t", b"hello", qos=1)
        assert p.get().properties.SubscriptionIdentifier == [5]
        assert sub.wait_messages(1) == ["42 sip/t hello"]
    finally:
        sub.stop()
        p.close()


# -- subscription options -----------------------------------------------------------------

def test_v5_subscribe_no_local(broker):
    """[MQTT-3.8.3-3] with No Local a client's own messages are not sent back to it (only
    its PUBACK arrives), while messages of other clients are; a second, overlapping
    subscription of the same client without No Local still gets its own message. paho-mqtt
    (noLocal) sees the same."""
    c = client5(broker, "nl")
    assert c.subscribe([("nl/#", sub_opts(1, no_local=True))]) == [1]
    c.publish("nl/x", b"mine", qos=1)
    c.ping()
    c.expect_no_packet()
    client5(broker, "other").publish("nl/x", b"theirs", qos=1)
    assert c.recv_publish().payload == b"theirs"
    c.subscribe([("nl/only", 1)])
    c.send(publish5_pkt("nl/only", b"mine again", qos=1, pid=40))
    got = drain(c)
    assert [p.type for p in got] == [PUBACK, PUBLISH]
    assert parse_publish5(got[1]).payload == b"mine again"
    p = Paho5(broker.port, "paho-nl")
    try:
        p.subscribe("pnl/t", 1, no_local=True)
        p.publish("pnl/t", b"mine", qos=1)
        client5(broker, "x").publish("pnl/t", b"theirs", qos=1)
        assert p.get().payload == b"theirs"
        p.expect_nothing()
    finally:
        p.close()


def test_v5_subscribe_retain_as_published(broker):
    """[MQTT-3.3.1-12] [MQTT-3.3.1-13] a retained PUBLISH forwarded live keeps RETAIN 1 to a
    subscription with Retain As Published and gets RETAIN 0 on one without; a non-retained
    one is RETAIN 0 to both."""
    rap = client5(broker, "rap")
    rap.subscribe([("rap/#", sub_opts(1, retain_as_published=True))])
    plain = client5(broker, "plain")
    plain.subscribe([("rap/#", sub_opts(1))])
    pub = client5(broker, "pub")
    pub.publish("rap/t", b"r", qos=1, retain=True)
    pub.publish("rap/t", b"n", qos=1)
    assert [(m.payload, m.retain) for m in rap.collect(2)] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.collect(2)] == [(b"r", False), (b"n", False)]


def test_v5_subscribe_retain_handling(broker):
    """[MQTT-3.3.1-9] Retain Handling 0 sends the matching retained messages on every
    SUBSCRIBE (again on a repeated one, [MQTT-3.8.4-4]); [MQTT-3.3.1-10] 1 sends them only
    when the subscription is new; [MQTT-3.3.1-11] 2 never sends them. Retained messages
    sent on subscribe have RETAIN 1."""
    client5(broker, "pub").publish("rh/a", b"kept", qos=1, retain=True)
    c = client5(broker, "rh")
    for rh, new, expect in ((0, True, True), (0, False, True), (1, False, False),
                            (2, False, False)):
        c.subscribe([("rh/#", sub_opts(1, retain_handling=rh))])
        got = drain(c)
        if expect:
            ms = [parse_publish5(p) for p in got]
            assert [(m.topic, m.payload, m.retain) for m in ms] == [("rh/a", b"kept", True)]
        else:
            assert got == [], (rh, got)
    d = client5(broker, "rh1")
    d.subscribe([("rh/+", sub_opts(1, retain_handling=1))])
    assert [parse_publish5(p).payload for p in drain(d)] == [b"kept"]
    e = client5(broker, "rh2")
    e.subscribe([("rh/+", sub_opts(1, retain_handling=2))])
    assert drain(e) == []


def test_v5_subscribe_retain_handling_paho(broker):
    """[MQTT-3.3.1-10] [MQTT-3.3.1-11] Retain Handling through paho-mqtt's
    SubscribeOptions: 2 gets no retained message, 1 gets it once, not on the repeat."""
    client5(broker, "pub").publish("prh/a", b"kept", qos=1, retain=True)
    p = Paho5(broker.port, "paho-rh")
    try:
        p.subscribe("prh/#", 1, retain_handling=2)
        p.expect_nothing()
        p.subscribe("prh/+", 1, retain_handling=1)
        assert p.get().payload == b"kept"
        p.subscribe("prh/+", 1, retain_handling=1)
        p.expect_nothing()
    finally:
        p.close()


def test_v5_subscribe_repeat_replaces_without_gap(broker):
    """[MQTT-3.8.4-3] [MQTT-3.8.4-4] a SUBSCRIBE with a filter the session already holds
    replaces that subscription (new QoS, one copy per message) and does not interrupt the
    flow: PUBLISH a, SUBSCRIBE (same filter, QoS 0), PUBLISH b in one write - a at the old
    QoS, b at the new one, and the retained message re-sent once."""
    pub = client5(broker, "pub")
    pub.publish("gap/r", b"R", qos=1, retain=True)
    c = client5(broker, "gapless")
    assert c.subscribe([("gap/+", 1)]) == [1]
    assert c.recv_publish().payload == b"R"
    c.send(publish5_pkt("gap/t", b"a", qos=1, pid=10) + subscribe5_pkt(11, [("gap/+", 0)])
           + publish5_pkt("gap/t", b"b", qos=1, pid=12))
    got = drain(c)
    assert [parse_suback5(p).codes for p in got if p.type == SUBACK] == [[0]]
    assert sorted(parse_ack5(p).pid for p in got if p.type == PUBACK) == [10, 12]
    pubs = [parse_publish5(p) for p in got if p.type == PUBLISH]
    assert [(m.payload, m.qos) for m in pubs if m.topic == "gap/t"] == [(b"a", 1), (b"b", 0)]
    assert [(m.payload, m.retain) for m in pubs if m.topic == "gap/r"] == [(b"R", True)]


# -- UNSUBSCRIBE --------------------------------------------------------------------------

def test_v5_unsubscribe_reason_codes_in_order(broker):
    """[MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-3.10.4-6] [MQTT-3.11.3-1] [MQTT-3.11.3-2]
    [MQTT-2.2.1-6] one UNSUBSCRIBE with three filters gets one UNSUBACK with its packet id,
    an empty property block and one reason code per filter in order: 0x00 for a
    subscription removed, 0x11 No subscription existed otherwise (b0 06 id 00 00 11 00)."""
    c = client5(broker, "un")
    c.subscribe([("un/a", 1), ("un/b", 0)])
    c.send(unsubscribe5_pkt(0x0A0B, ["un/a", "un/none", "un/b"]))
    c.expect_bytes(b"\xb0\x06\x0a\x0b\x00\x00\x11\x00")
    c.send(unsubscribe5_pkt(0x0A0C, ["un/a"]))
    c.expect_bytes(b"\xb0\x04\x0a\x0c\x00\x11")
    p = Paho5(broker.port, "paho-un")
    try:
        p.subscribe("pun/t", 1)
        assert p.unsubscribe("pun/t") == [0]
        assert p.unsubscribe("pun/t") == [0x11]
    finally:
        p.close()


def test_v5_unsubscribe_exact_filter_and_stops_delivery(broker):
    """[MQTT-3.10.4-1] UNSUBSCRIBE compares filters character by character: u/a does not
    remove u/+ (0x11), which keeps delivering; [MQTT-3.10.4-2] once u/+ is removed no new
    message is sent for it."""
    c = client5(broker, "ux")
    c.subscribe([("u/+", 1)])
    assert c.unsubscribe(["u/a"]) == [0x11]
    pub = client5(broker, "pub")
    pub.publish("u/a", b"1", qos=1)
    assert c.recv_publish().payload == b"1"
    assert c.unsubscribe(["u/+"]) == [0]
    pub.publish("u/a", b"2", qos=1, expect_reason=0x10)
    c.ping()
    c.expect_no_packet()


def test_v5_unsubscribe_completes_inflight(broker):
    """[MQTT-3.10.4-3] QoS 1 and QoS 2 deliveries already started when the client
    unsubscribes are completed: after the UNSUBACK the PUBACK is taken and the PUBREC is
    answered with PUBREL (same id); nothing new is sent."""
    c = client5(broker, "inflight")
    c.subscribe([("if/1", 1), ("if/2", 2)])
    pub = client5(broker, "pub")
    pub.publish("if/1", b"one", qos=1)
    pub.publish("if/2", b"two", qos=2)
    m1 = c.recv_publish(ack=False)
    m2 = c.recv_publish(ack=False)
    c.send(unsubscribe5_pkt(3, ["if/1", "if/2"]))
    assert parse_suback5(c.expect(UNSUBACK)).codes == [0, 0]
    c.send(ack5_pkt(PUBACK, m1.pid) + ack5_pkt(PUBREC, m2.pid))
    rel = parse_ack5(c.expect(PUBREL))
    assert (rel.pid, rel.reason) == (m2.pid, 0)
    c.send(ack5_pkt(h.PUBCOMP, m2.pid))
    pub.publish("if/1", b"after", qos=1, expect_reason=0x10)
    c.ping()
    c.expect_no_packet()


def test_v5_subscribe_matching_does_not_normalise(broker):
    """[MQTT-4.7.3-4] topics and filters match as they are: a filter with U+00E9 (one code
    point) does not match the same word spelled e + U+0301, and each gets its own."""
    c = client5(broker, "norm")
    c.subscribe([("n/caf\u00e9", 0)])
    d = client5(broker, "decomposed")
    d.subscribe([("n/cafe\u0301", 0)])
    pub = client5(broker, "pub")
    pub.publish("n/cafe\u0301", b"decomposed", qos=1)
    pub.publish("n/caf\u00e9", b"composed", qos=1)
    assert [m.payload for m in c.collect(1)] == [b"composed"]
    assert [m.payload for m in d.collect(1)] == [b"decomposed"]
    c.ping()
    c.expect_no_packet()


def test_v5_subscribe_longest_topic(broker):
    """[MQTT-4.7.3-3] a topic name and filter of 65,535 bytes (the most the 16-bit length
    allows) are accepted and matched."""
    topic = "L/" + "x" * 65533
    c = client5(broker, "long")
    assert c.subscribe([(topic, 1)]) == [1]
    client5(broker, "pub").publish(topic, b"y", qos=1, expect_reason=0)
    m = c.recv_publish()
    assert (len(m.topic), m.payload) == (65535, b"y")



def test_v5_subscribe_all_subscription_identifiers_of_many_overlaps(broker):
    """[MQTT-3.3.4-4] when one copy of a message goes out for several matching subscriptions
    it carries the Subscription Identifiers of all of them: twelve overlapping filters
    matching a/b/c, subscribed with identifiers 1 to 12, give one PUBLISH with the twelve
    identifiers."""
    filters = ["a/b/c", "a/b/+", "a/+/c", "+/b/c", "a/+/+", "+/b/+", "+/+/c", "+/+/+", "a/#",
               "a/b/#", "#", "+/#"]
    c = client5(broker, "many")
    for i, flt in enumerate(filters, 1):
        assert c.subscribe([(flt, 1)], props=[(P_SUBSCRIPTION_ID, i)]) == [1]
    client5(broker, "pub").publish("a/b/c", b"x", qos=1, expect_reason=0)
    m = c.recv_publish()
    assert sorted(m.props.all(P_SUBSCRIPTION_ID)) == list(range(1, 13))
    c.ping()
    c.expect_no_packet()


def test_v5_subscribe_many_filters_in_one_packet(broker):
    """[MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.10.4-6] 100 filters in one SUBSCRIBE get one SUBACK
    with 100 codes, and 100 in one UNSUBSCRIBE one UNSUBACK with 100 codes (more than the
    broker's 64-entry fast path)."""
    c = client5(broker, "hundred")
    filters = [f"h/{i}" for i in range(100)]
    assert c.subscribe([(f, i % 3) for i, f in enumerate(filters)]) == [i % 3 for i in range(100)]
    client5(broker, "pub").publish("h/99", b"x", qos=1, expect_reason=0)
    assert c.recv_publish().topic == "h/99"
    assert c.unsubscribe(filters + ["h/none"]) == [0] * 100 + [0x11]

"""subpub_*: SUBSCRIBE / UNSUBSCRIBE / PUBLISH routing through the real binary
(MQTT 3.1.1 sections 3.3, 3.8-3.11, 4.7)."""
import os
import time

from midge_harness import (SUBACK, UNSUBACK, MqttConn, QUIET, TIMEOUT, client, connect_pkt,
                           expect_quiet, packet, puback_pkt, publish_pkt, scaled, subscribe_pkt,
                           unsubscribe_pkt)


def _gather(conn, expected, timeout=TIMEOUT, quiet=True):
    """Receive PUBLISHes until the multiset of (topic, payload) in expected has arrived,
    then (if quiet) prove nothing else follows for QUIET seconds."""
    want = sorted(expected)
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < len(want):
        left = deadline - time.monotonic()
        assert left > 0, f"got {sorted(got)}, want {want}"
        m = conn.recv_publish(left)
        got.append((m.topic, m.payload))
        assert len(got) <= len(want) and all(got.count(g) <= want.count(g) for g in got), \
            f"unexpected delivery {got[-1]}: got {sorted(got)}, want {want}"
    if quiet:
        conn.expect_no_packet()
    assert sorted(got) == want


def test_subpub_qos0_roundtrip_exact_bytes(broker):
    """[MQTT-3.3.2-3] [MQTT-2.3.1-5] [MQTT-3.3.1-2] [MQTT-4.3.1-1] [MQTT-3.3.1-9]
    [MQTT-7.1.1-1] [MQTT-4.1.0-2] a QoS 0 message over TCP is forwarded byte-exact:
    30 LEN topic payload, no packet id, DUP 0, RETAIN 0."""
    sub = client(broker, "sub")
    assert sub.subscribe([("a/b", 0)]) == [0]
    pub = client(broker, "pub")
    pub.publish("a/b", b"hello")
    sub.expect_bytes(publish_pkt("a/b", b"hello"))


def test_subpub_suback_codes_in_order(broker):
    """[MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-4] [MQTT-3.8.4-5] [MQTT-3.9.3-1]
    [MQTT-3.9.3-2] [MQTT-2.3.1-7] one SUBSCRIBE with three filters gets one SUBACK with
    the same packet id and one code per filter, in order: 90 05 12 34 02 00 01."""
    c = client(broker, "codes")
    c.send(subscribe_pkt(0x1234, [("q/2", 2), ("q/0", 0), ("q/1", 1)]))
    c.expect_bytes(packet(SUBACK, 0, b"\x12\x34\x02\x00\x01"))
    c.expect_no_packet()


def test_subpub_subscribe_nothing_unrequested(broker):
    """[MQTT-3.8.4-1] after a SUBSCRIBE matching no retained message only the SUBACK
    arrives - the server never sends a packet the client did not ask for."""
    c = client(broker, "quiet")
    c.send(subscribe_pkt(1, [("nothing/here/#", 1), ("+/x", 2)]))
    c.expect_bytes(packet(SUBACK, 0, b"\x00\x01\x01\x02"))
    c.expect_no_packet()


def test_subpub_wildcard_matching_table(broker):
    """[MQTT-3.3.2-3] [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.5.0-1] topic matching per
    section 4.7 (the spec's own examples): each subscriber gets exactly its matches."""
    table = {
        "sport/tennis/player1/#": ["sport/tennis/player1", "sport/tennis/player1/ranking",
                                   "sport/tennis/player1/score/wimbledon"],
        "sport/#": ["sport", "sport/", "sport/tennis/player1", "sport/tennis/player1/ranking",
                    "sport/tennis/player1/score/wimbledon", "sport/tennis/player2"],
        "sport/tennis/+": ["sport/tennis/player1", "sport/tennis/player2"],
        "sport/+": ["sport/"],
        "+/+": ["/finance", "sport/"],
        "/+": ["/finance"],
        "+": ["sport"],
        "#": ["sport", "sport/", "sport/tennis/player1", "sport/tennis/player1/ranking",
              "sport/tennis/player1/score/wimbledon", "sport/tennis/player2", "/finance",
              "a//b"],
        "a/+/b": ["a//b"],
        "sport/tennis/player1": ["sport/tennis/player1"],
    }
    topics = ["sport", "sport/", "sport/tennis/player1", "sport/tennis/player1/ranking",
              "sport/tennis/player1/score/wimbledon", "sport/tennis/player2", "/finance", "a//b"]
    subs = {}
    for i, flt in enumerate(table):
        c = client(broker, f"m{i}")
        assert c.subscribe([(flt, 0)]) == [0]
        subs[flt] = c
    pub = client(broker, "pubber")
    for t in topics:
        pub.publish(t, t.encode())
    for flt, c in subs.items():
        _gather(c, [(t, t.encode()) for t in table[flt]], quiet=False)
    expect_quiet(subs.values())


def test_subpub_dollar_topics_not_matched_by_leading_wildcards(broker):
    """[MQTT-4.7.2-1] a client may publish to "$foo/bar"; "#", "+/bar" and "+/#" must not
    match it, while "$foo/#", "$foo/+" and "$foo/bar" do."""
    names = ["#", "+/bar", "+/#", "$foo/#", "$foo/+", "$foo/bar", "+/+"]
    subs = {}
    for i, flt in enumerate(names):
        c = client(broker, f"d{i}")
        assert c.subscribe([(flt, 0)]) == [0]
        subs[flt] = c
    pub = client(broker, "dollarpub")
    pub.publish("$foo/bar", b"D")
    pub.publish("foo/bar", b"N")
    for flt in ("$foo/#", "$foo/+", "$foo/bar"):
        _gather(subs[flt], [("$foo/bar", b"D")], quiet=False)
    for flt in ("#", "+/bar", "+/#", "+/+"):
        _gather(subs[flt], [("foo/bar", b"N")], quiet=False)
    expect_quiet(subs.values())


def test_subpub_overlapping_one_copy_highest_qos(broker):
    """[MQTT-3.3.5-1] a client whose subscriptions "ov/+" (QoS 0), "ov/#" (QoS 2) and
    "ov/x" (QoS 1) all match gets ONE copy, at the maximum granted QoS (2)."""
    sub = client(broker, "overlap")
    assert sub.subscribe([("ov/+", 0), ("ov/#", 2), ("ov/x", 1)]) == [0, 2, 1]
    pub = client(broker, "ovpub")
    pub.publish("ov/x", b"once", qos=2)
    m = sub.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("ov/x", b"once", 2)
    sub.expect_no_packet()


def test_subpub_overlapping_separate_subscribes(broker):
    """[MQTT-3.3.5-1] [MQTT-3.8.4-6] overlap built from separate SUBSCRIBE packets; a QoS 1
    publish arrives once at QoS 1 (min of publish QoS and the highest grant)."""
    sub = client(broker, "overlap2")
    assert sub.subscribe([("ol/#", 2)]) == [2]
    assert sub.subscribe([("ol/+/c", 0)]) == [0]
    assert sub.subscribe([("+/b/c", 1)]) == [1]
    pub = client(broker, "olpub")
    pub.publish("ol/b/c", b"one", qos=1)
    m = sub.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("ol/b/c", b"one", 1)
    sub.expect_no_packet()


def test_subpub_qos_downgrade_to_granted(broker):
    """[MQTT-3.8.4-6] [MQTT-2.3.1-5] a QoS 2 publish to a QoS 0 subscription is delivered
    at QoS 0 without a packet id; a QoS 0 publish to a QoS 2 subscription stays QoS 0."""
    s0 = client(broker, "s0")
    s0.subscribe([("dg/t", 0)])
    s2 = client(broker, "s2")
    s2.subscribe([("dg/t", 2)])
    pub = client(broker, "dgpub")
    pub.publish("dg/t", b"hi", qos=2)
    s0.expect_bytes(publish_pkt("dg/t", b"hi", qos=0))
    m = s2.recv_publish()
    assert m.qos == 2 and m.payload == b"hi"
    pub.publish("dg/t", b"lo", qos=0)
    s2.expect_bytes(publish_pkt("dg/t", b"lo", qos=0))


def test_subpub_resubscribe_replaces_qos(broker):
    """[MQTT-3.8.4-3] subscribing again to an identical filter replaces the subscription:
    "rs/t" at QoS 2 then QoS 0 -> a QoS 2 publish arrives once, at QoS 0."""
    sub = client(broker, "resub")
    assert sub.subscribe([("rs/t", 2)]) == [2]
    assert sub.subscribe([("rs/t", 0)]) == [0]
    pub = client(broker, "rspub")
    pub.publish("rs/t", b"x", qos=2)
    sub.expect_bytes(publish_pkt("rs/t", b"x", qos=0))
    sub.expect_no_packet()


def test_subpub_publisher_receives_own_message(broker):
    """[MQTT-4.5.0-1] MQTT 3.1.1 has no "no local": a client subscribed to its own topic
    gets its own publish."""
    c = client(broker, "self")
    c.subscribe([("me/t", 1)])
    c.publish("me/t", b"echo", qos=1)
    m = c.recv_publish()
    assert (m.topic, m.payload) == ("me/t", b"echo")


def test_subpub_unsubscribe_stops_delivery(broker):
    """[MQTT-3.10.4-2] [MQTT-3.10.4-4] [MQTT-2.3.1-7] UNSUBSCRIBE gets B0 02 <same id>,
    and no further messages are sent for that filter."""
    sub = client(broker, "unsub")
    sub.subscribe([("u/t", 1)])
    pub = client(broker, "upub")
    pub.publish("u/t", b"1")
    assert sub.recv_publish().payload == b"1"
    sub.send(unsubscribe_pkt(0x0A0B, ["u/t"]))
    sub.expect_bytes(packet(UNSUBACK, 0, b"\x0a\x0b"))
    pub.publish("u/t", b"2", qos=1)
    sub.expect_no_packet()


def test_subpub_unsubscribe_unknown_still_acked(broker):
    """[MQTT-3.10.4-5] UNSUBACK is sent even when nothing was subscribed."""
    c = client(broker, "unk")
    c.send(unsubscribe_pkt(42, ["never/subscribed"]))
    c.expect_bytes(packet(UNSUBACK, 0, b"\x00\x2a"))
    c.expect_no_packet()


def test_subpub_unsubscribe_multi_one_unsuback(broker):
    """[MQTT-3.10.4-6] [MQTT-3.10.3-1] UNSUBSCRIBE with several filters: one UNSUBACK, and
    all of them are removed while others stay."""
    sub = client(broker, "multiun")
    sub.subscribe([("m/1", 0), ("m/2", 0), ("m/3", 0)])
    sub.send(unsubscribe_pkt(9, ["m/1", "m/2"]))
    sub.expect_bytes(packet(UNSUBACK, 0, b"\x00\x09"))
    sub.expect_no_packet(0.2)
    pub = client(broker, "mpub")
    for t in ("m/1", "m/2", "m/3"):
        pub.publish(t, t.encode())
    _gather(sub, [("m/3", b"m/3")])


def test_subpub_unsubscribe_compares_filters_exactly(broker):
    """[MQTT-3.10.4-1] unsubscribing "ux/b" does not remove the subscription "ux/+" (filters
    are compared character by character, not matched)."""
    sub = client(broker, "exact")
    sub.subscribe([("ux/+", 0)])
    sub.unsubscribe(["ux/b"])
    pub = client(broker, "expub")
    pub.publish("ux/b", b"still")
    assert sub.recv_publish().payload == b"still"


def test_subpub_unsubscribe_completes_inflight_qos1(start_broker):
    """[MQTT-3.10.4-3] a QoS 1 delivery already in flight when the client unsubscribes is
    still completed. With max_inflight_messages 1 the in-flight message holds the window
    after the UNSUBACK: a message on the client's other subscription waits behind it, and
    the client's PUBACK for the first one (its real packet id, not an unknown one, which
    would be ignored) is what lets the second one out."""
    br = start_broker(["max_inflight_messages 1"])
    sub = client(br, "infl")
    assert sub.subscribe([("if/t", 1), ("if/u", 1)]) == [1, 1]
    pub = client(br, "ifpub")
    pub.publish("if/t", b"x", qos=1)
    m = sub.recv_publish(ack=False)
    assert (m.topic, m.payload, m.qos) == ("if/t", b"x", 1)
    sub.unsubscribe(["if/t"])
    pub.publish("if/u", b"y", qos=1)
    sub.expect_no_packet()  # the window is still full: the first delivery is in flight
    sub.send(puback_pkt(m.pid))
    n = sub.recv_publish()
    assert (n.topic, n.payload, n.qos, n.dup) == ("if/u", b"y", 1, False)
    pub.publish("if/t", b"after", qos=1)
    sub.ping()
    sub.expect_no_packet()


def test_subpub_dup_not_propagated(broker):
    """[MQTT-3.3.1-3] a PUBLISH received with DUP 1 is forwarded with DUP 0 (the server's
    own first transmission)."""
    sub = client(broker, "dupsub")
    sub.subscribe([("dup/t", 1)])
    pub = client(broker, "duppub")
    pub.publish("dup/t", b"d", qos=1, dup=True, pid=5)
    m = sub.recv_publish()
    assert m.qos == 1 and m.dup is False


def test_subpub_bom_in_topic_kept_verbatim(broker):
    """[MQTT-1.5.3-3] [MQTT-4.7.3-4] U+FEFF (EF BB BF) at the start of a topic is kept: a
    subscriber to exactly that topic gets it with the bytes intact; "bom/t" (no BOM) does
    not match it."""
    bom_topic = "\ufeffbom/t"
    sub = client(broker, "bom")
    sub.subscribe([(bom_topic, 0)])
    plain = client(broker, "plain")
    plain.subscribe([("bom/t", 0)])
    pub = client(broker, "bompub")
    pub.publish(bom_topic, b"b")
    sub.expect_bytes(publish_pkt(b"\xef\xbb\xbfbom/t", b"b"))
    plain.expect_no_packet()


def test_subpub_utf8_topic_no_normalization(broker):
    """[MQTT-4.7.3-4] "caf\u00e9" (precomposed) and "cafe\u0301" (combining) are different
    topics: no normalization when matching."""
    a = client(broker, "nfc")
    a.subscribe([("caf\u00e9", 0)])
    pub = client(broker, "nfpub")
    pub.publish("cafe\u0301", b"decomposed")
    pub.publish("caf\u00e9", b"precomposed")
    _gather(a, [("caf\u00e9", b"precomposed")])


def test_subpub_large_payload_intact(broker):
    """[MQTT-3.3.2-3] a 1 MB payload is delivered byte-for-byte intact at QoS 1."""
    payload = os.urandom(1024 * 1024)
    sub = client(broker, "bigsub")
    sub.subscribe([("big/t", 1)])
    pub = client(broker, "bigpub")
    pub.publish("big/t", payload, qos=1)
    m = sub.recv_publish(timeout=scaled(20))
    assert m.payload == payload


def test_subpub_empty_payload(broker):
    """[MQTT-3.3.2-3] a zero-length payload is a valid message and is delivered."""
    sub = client(broker, "emp")
    sub.subscribe([("e/t", 0)])
    pub = client(broker, "emppub")
    pub.publish("e/t", b"")
    sub.expect_bytes(publish_pkt("e/t", b""))


def test_subpub_fanout_many_subscribers(broker):
    """[MQTT-4.5.0-1] every client with a matching subscription gets the message."""
    subs = [client(broker, f"fan{i}") for i in range(25)]
    for i, s in enumerate(subs):
        s.subscribe([("fan/+" if i % 2 else "fan/#", 1)])
    pub = client(broker, "fanpub")
    pub.publish("fan/out", b"all", qos=1)
    for s in subs:
        m = s.recv_publish()
        assert (m.topic, m.payload, m.qos) == ("fan/out", b"all", 1)


def test_subpub_order_preserved_qos0(broker):
    """[MQTT-4.6.0-6] [MQTT-4.6.0-5] topics are ordered by default: QoS 0 messages from one
    publisher on one topic arrive in order."""
    sub = client(broker, "ord0")
    sub.subscribe([("o/t", 0)])
    pub = client(broker, "ord0pub")
    data = b"".join(publish_pkt("o/t", str(i).encode()) for i in range(200))
    pub.send(data)
    got = [m.payload for m in sub.collect(200)]
    assert got == [str(i).encode() for i in range(200)]


def test_subpub_max_length_topic(broker):
    """[MQTT-4.7.3-3] a topic name of 65,535 bytes (the maximum) is accepted, matched
    exactly and delivered intact."""
    topic = "t/" + "x" * (65535 - 2)
    sub = client(broker, "longsub")
    assert sub.subscribe([(topic, 1)]) == [1]
    pub = client(broker, "longpub")
    pub.publish(topic, b"long", qos=1)
    m = sub.recv_publish()
    assert (m.topic, m.payload) == (topic, b"long")


def test_subpub_pipelined_packets_in_one_segment(broker):
    """[MQTT-3.8.4-1] [MQTT-3.10.4-4] SUBSCRIBE, PUBLISH and UNSUBSCRIBE in one TCP write are
    all processed in order."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("pl") + subscribe_pkt(1, [("pl/t", 0)]) + publish_pkt("pl/t", b"a")
           + unsubscribe_pkt(2, ["pl/t"]) + publish_pkt("pl/t", b"b"))
    c.expect_bytes(b"\x20\x02\x00\x00")
    c.expect_bytes(packet(SUBACK, 0, b"\x00\x01\x00"))
    c.expect_bytes(publish_pkt("pl/t", b"a"))
    c.expect_bytes(packet(UNSUBACK, 0, b"\x00\x02"))
    c.expect_no_packet(QUIET)

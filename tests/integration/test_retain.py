"""retain_*: retained messages through the real binary (MQTT 3.1.1 section 3.3.1.3)."""
from midge_harness import (PUBACK, SUBACK, client, expect_quiet, packet, puback_pkt,
                           publish_pkt, scaled, subscribe_pkt)


def test_retain_stored_and_sent_on_subscribe(broker):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] a retained message is stored and a new
    subscriber gets it with RETAIN 1 (31 ...), byte-exact for QoS 0."""
    pub = client(broker, "p")
    pub.publish("r/t", b"kept", retain=True)
    pub.ping()
    sub = client(broker, "s")
    assert sub.subscribe([("r/t", 0)]) == [0]
    sub.expect_bytes(publish_pkt("r/t", b"kept", retain=True))
    sub.expect_no_packet()


def test_retain_replaced(broker):
    """[MQTT-3.3.1-7] a new retained publish on the topic replaces the old one."""
    pub = client(broker, "p")
    pub.publish("r/rep", b"old", retain=True, qos=1)
    pub.publish("r/rep", b"new", retain=True, qos=1)
    sub = client(broker, "s")
    sub.subscribe([("r/rep", 0)])
    m = sub.recv_publish()
    assert (m.payload, m.retain) == (b"new", True)
    sub.expect_no_packet()


def test_retain_deleted_by_empty_payload(broker):
    """[MQTT-3.3.1-10] [MQTT-3.3.1-11] an empty retained publish is delivered normally to
    current subscribers (RETAIN 0) and removes the retained message: a new subscriber gets
    nothing."""
    pub = client(broker, "p")
    pub.publish("r/del", b"x", retain=True, qos=1)
    live = client(broker, "live")
    live.subscribe([("r/del", 0)])
    assert live.recv_publish().payload == b"x"
    pub.publish("r/del", b"", retain=True, qos=1)
    live.expect_bytes(publish_pkt("r/del", b""))
    late = client(broker, "late")
    late.send(subscribe_pkt(1, [("r/del", 0)]))
    late.expect_bytes(packet(SUBACK, 0, b"\x00\x01\x00"))
    late.expect_no_packet()


def test_retain_empty_payload_never_stored(broker):
    """[MQTT-3.3.1-11] an empty retained publish on a topic with nothing retained stores
    nothing."""
    pub = client(broker, "p")
    pub.publish("r/none", b"", retain=True, qos=1)
    sub = client(broker, "s")
    sub.subscribe([("r/#", 0)])
    sub.expect_no_packet()


def test_retain_zero_flag_does_not_touch_store(broker):
    """[MQTT-3.3.1-12] a RETAIN 0 publish neither replaces nor removes the retained message."""
    pub = client(broker, "p")
    pub.publish("r/keep", b"A", retain=True, qos=1)
    pub.publish("r/keep", b"B", qos=1)
    pub.publish("r/keep", b"", qos=1)
    sub = client(broker, "s")
    sub.subscribe([("r/keep", 0)])
    m = sub.recv_publish()
    assert (m.payload, m.retain) == (b"A", True)


def test_retain_live_forward_clears_flag(broker):
    """[MQTT-3.3.1-9] a retained publish forwarded to an existing subscription carries
    RETAIN 0."""
    sub = client(broker, "s")
    sub.subscribe([("r/live", 1)])
    pub = client(broker, "p")
    pub.publish("r/live", b"now", retain=True, qos=1)
    m = sub.recv_publish()
    assert (m.payload, m.retain) == (b"now", False)


def test_retain_resent_on_resubscribe(broker):
    """[MQTT-3.8.4-3] [MQTT-3.3.1-8] subscribing again to the same filter re-sends the
    retained message with RETAIN 1."""
    pub = client(broker, "p")
    pub.publish("r/again", b"R", retain=True, qos=1)
    sub = client(broker, "s")
    sub.subscribe([("r/again", 1)])
    m1 = sub.recv_publish()
    sub.subscribe([("r/again", 1)])
    m2 = sub.recv_publish()
    assert (m1.payload, m1.retain, m2.payload, m2.retain) == (b"R", True, b"R", True)
    sub.expect_no_packet()


def test_retain_qos_is_min_of_message_and_grant(broker):
    """[MQTT-3.8.4-6] [MQTT-3.3.1-5] a retained message is sent at min(stored QoS, granted
    QoS): QoS 2 message to a QoS 1 grant -> 1; QoS 0 message to QoS 2 -> 0; QoS 1 to
    QoS 2 -> 1."""
    pub = client(broker, "p")
    pub.publish("rq/two", b"2", retain=True, qos=2)
    pub.publish("rq/zero", b"0", retain=True, qos=0)
    pub.publish("rq/one", b"1", retain=True, qos=1)
    pub.ping()
    a = client(broker, "a")
    a.subscribe([("rq/two", 1)])
    m = a.recv_publish()
    assert (m.payload, m.qos, m.retain) == (b"2", 1, True)
    bb = client(broker, "b")
    bb.subscribe([("rq/zero", 2)])
    m = bb.recv_publish()
    assert (m.payload, m.qos, m.retain) == (b"0", 0, True)
    c = client(broker, "c")
    c.subscribe([("rq/one", 2)])
    m = c.recv_publish()
    assert (m.payload, m.qos, m.retain) == (b"1", 1, True)


def test_retain_wildcard_subscription_gets_all_but_dollar(broker):
    """[MQTT-3.3.1-6] [MQTT-4.7.2-1] "#" gets every retained message except those on
    "$"-topics; "$x/#" gets those."""
    pub = client(broker, "p")
    for t in ("w/1", "w/2/deep", "other", "$x/hidden"):
        pub.publish(t, t.encode(), retain=True, qos=1)
    sub = client(broker, "s")
    sub.subscribe([("#", 0)])
    got = sorted(m.topic for m in sub.collect(3))
    assert got == ["other", "w/1", "w/2/deep"]
    dollar = client(broker, "d")
    dollar.subscribe([("$x/#", 0)])
    assert dollar.recv_publish().topic == "$x/hidden"
    expect_quiet([sub, dollar])


def test_retain_survives_publisher_session(broker):
    """[MQTT-3.1.2-7] retained messages are not session state: they outlive the clean
    session of the client that published them."""
    pub = client(broker, "p", clean=True)
    pub.publish("r/surv", b"still", retain=True, qos=1)
    pub.disconnect()
    broker.wait_log(r"client p disconnected")
    sub = client(broker, "s")
    sub.subscribe([("r/surv", 0)])
    assert sub.recv_publish().payload == b"still"


def test_retain_3000_through_small_window(start_broker):
    """[MQTT-3.3.1-6] a "#" subscriber at QoS 1 with max_inflight_messages 2 receives ALL
    3,000 retained QoS 1 messages (acking each) - flow control, never a silent cap."""
    n = 3000
    br = start_broker(["max_inflight_messages 2"])
    pub = client(br, "p")
    pub.send(b"".join(publish_pkt(f"many/{i}", str(i).encode(), qos=1, retain=True,
                                  pid=i + 1) for i in range(n)))
    for i in range(n):
        p = pub.expect(PUBACK, timeout=scaled(10))
        assert p.raw() == puback_pkt(i + 1)
    sub = client(br, "s")
    assert sub.subscribe([("#", 1)]) == [1]
    seen = set()
    for m in sub.collect(n, timeout=scaled(60)):
        assert m.retain and m.qos == 1
        seen.add(m.topic)
    assert seen == {f"many/{i}" for i in range(n)}
    sub.expect_no_packet()


def test_retain_sent_per_filter_for_overlapping_filters_in_one_subscribe(broker):
    """[MQTT-3.3.1-6] [MQTT-3.8.4-4] a SUBSCRIBE with several filters is handled like a
    sequence of SUBSCRIBEs, and each new subscription gets the retained messages it
    matches: two filters matching one retained message give exactly two copies (one per
    filter, as two SUBSCRIBEs would), each with RETAIN 1 and its own packet id, and
    nothing more. (A live message matching both filters arrives once:
    test_subpub.py::test_subpub_overlapping_one_copy_highest_qos.)"""
    pub = client(broker, "p")
    pub.publish("ro/t", b"v", retain=True, qos=1)
    sub = client(broker, "s")
    sub.subscribe([("ro/t", 1), ("ro/+", 1)])
    got = sub.collect(2)
    assert [(m.topic, m.payload, m.qos, m.retain, m.dup) for m in got] == \
        [("ro/t", b"v", 1, True, False)] * 2, got
    assert got[0].pid != got[1].pid, got
    sub.expect_no_packet()

"""v5_shared_*: shared subscriptions ($share/{ShareName}/{filter}, 4.8.2 of MQTT 5.0) through
the real binary (issue 13).

Written ahead of the implementation: a broker that does not serve shared subscriptions
refuses them (SUBACK 0x9E Shared Subscriptions not supported to MQTT 5 clients, 0x80 to
3.1.1 ones) and most of these tests fail at their first SUBSCRIBE (so on the v5tests branch);
they all pass against v5 since 08586da. What they expect:

- a SUBSCRIBE to $share/g/f is granted like any other (MQTT 5 and 3.1.1 clients alike);
- each message matching the group's filter goes to exactly one connected member, in turn
  (round robin), at the QoS granted to that member ([MQTT-4.8.2-3]); another group and a
  non-shared subscription on the same topics each get their own copy;
- a QoS 1 message in flight to a member whose session ends goes to another member; a QoS 2
  one is finished with the same member when it comes back ([MQTT-4.8.2-4]) and never given
  to another ([MQTT-4.8.2-5]); one the member refuses (PUBACK 0x80) is dropped
  ([MQTT-4.8.2-6]);
- no retained messages are sent when a shared subscription is made (3.3.1.3 sends them for
  non-shared subscriptions only);
- No Local on a shared subscription is a Protocol Error ([MQTT-3.8.3-4]); share names must
  be non-empty and free of '/', '+', '#' and be followed by a filter ([MQTT-4.8.2-1],
  [MQTT-4.8.2-2]).

Synchronisation as elsewhere: after a publisher's PUBACK every copy is routed, and a
member's PINGRESP comes after every message routed to it (barrier()).
"""
import collections
import time

import midge_harness as h
from midge_harness import (PINGRESP, PUBACK, PUBLISH, P_SUBSCRIPTION_ID, SUBACK, DISCONNECT,
                           MqttConn5, Paho5, ack5_pkt, client5, parse_disconnect5,
                           parse_publish5, parse_suback5, pingreq_pkt, sub_opts,
                           subscribe5_pkt)

EXP = [(h.P_SESSION_EXPIRY, 300)]


def barrier(conn, ack=True):
    """PINGREQ; return the PUBLISHes (Publish5, or 3.1.1 Publish) that arrive before the
    PINGRESP, acknowledging QoS 1 ones when ack."""
    conn.send(pingreq_pkt())
    got = []
    while True:
        p = conn.recv()
        if p.type == PINGRESP:
            return got
        assert p.type == PUBLISH, f"unexpected {p!r}"
        m = parse_publish5(p) if isinstance(conn, MqttConn5) else h.parse_publish(p)
        if ack and m.qos == 1:
            conn.send(ack5_pkt(PUBACK, m.pid) if isinstance(conn, MqttConn5)
                      else h.puback_pkt(m.pid))
        got.append(m)


def members(br, n, flt="$share/g/sh/#", qos=1, prefix="m"):
    out = []
    for i in range(n):
        c = client5(br, f"{prefix}{i}")
        assert c.subscribe([(flt, qos)]) == [qos], "shared subscription not granted"
        out.append(c)
    return out


def test_v5_shared_subscribe_granted(broker):
    """[MQTT-4.8.2-1] [MQTT-4.8.2-2] a well-formed shared subscription ($share/g/sh/#) is
    granted with the requested QoS to an MQTT 5 client (SUBACK 0x01, not 0x9E) and to a 3.1.1
    client (0x01, not 0x80); unsubscribing it gives UNSUBACK 0x00."""
    c5 = client5(broker, "five")
    assert c5.subscribe([("$share/g/sh/#", 1), ("plain/#", 0)]) == [1, 0]
    c3 = h.client(broker, "three")
    assert c3.subscribe([("$share/g/sh/#", 2)]) == [2]
    assert c5.unsubscribe(["$share/g/sh/#"]) == [0]


def test_v5_shared_round_robin(broker):
    """[MQTT-4.8.2-3] each message on a shared subscription goes to exactly one member of the
    group, in turn: 10 messages to two members give 5 each, alternating; a non-shared
    subscriber of the same topic gets all 10, and a second group gets all 10 spread over
    its own member."""
    a, b = members(broker, 2)
    other_group = client5(broker, "g2")
    assert other_group.subscribe([("$share/g2/sh/#", 1)]) == [1]
    plain = client5(broker, "plain")
    plain.subscribe([("sh/#", 1)])
    pub = client5(broker, "pub")
    seen = []
    for i in range(10):
        pub.publish("sh/t", str(i).encode(), qos=1, expect_reason=0)
        got = [(name, m.payload) for name, c in (("a", a), ("b", b)) for m in barrier(c)]
        assert len(got) == 1, f"message {i} reached {got}"
        seen.append(got[0][0])
    assert seen.count("a") == 5 and seen.count("b") == 5
    assert all(x != y for x, y in zip(seen, seen[1:])), f"not round robin: {seen}"
    assert [m.payload for m in barrier(plain)] == [str(i).encode() for i in range(10)]
    assert [m.payload for m in barrier(other_group)] == [str(i).encode() for i in range(10)]


def test_v5_shared_mixed_versions(broker):
    """[MQTT-4.8.2-3] shared subscription members of both protocol versions: a 3.1.1 member, a
    raw MQTT 5
    member and a paho-mqtt MQTTv5 member of one group share 9 messages, 3 each, each
    delivered once."""
    c3 = h.client(broker, "three")
    assert c3.subscribe([("$share/mix/mx/t", 1)]) == [1]
    c5 = client5(broker, "five")
    assert c5.subscribe([("$share/mix/mx/t", 1)]) == [1]
    p5 = Paho5(broker.port, "paho")
    try:
        assert p5.subscribe("$share/mix/mx/t", 1) == [1]
        pub = client5(broker, "pub")
        for i in range(9):
            pub.publish("mx/t", str(i).encode(), qos=1)
        got3 = [m.payload for m in barrier(c3)]
        got5 = [m.payload for m in barrier(c5)]
        gotp = []
        while len(got3) + len(got5) + len(gotp) < 9:
            gotp.append(p5.get().payload)
        p5.expect_nothing()
        assert sorted(got3 + got5 + gotp) == sorted(str(i).encode() for i in range(9))
        assert (len(got3), len(got5), len(gotp)) == (3, 3, 3)
    finally:
        p5.close()


def test_v5_shared_respects_each_members_granted_qos(broker):
    """[MQTT-4.8.2-3] a message goes to the chosen member at the QoS granted to that member's
    subscription: QoS 1 messages arrive at QoS 0 at the member granted 0 and at QoS 1 at the
    member granted 1."""
    low = client5(broker, "low")
    assert low.subscribe([("$share/q/qs/t", 0)]) == [0]
    high = client5(broker, "high")
    assert high.subscribe([("$share/q/qs/t", 1)]) == [1]
    pub = client5(broker, "pub")
    for i in range(4):
        pub.publish("qs/t", str(i).encode(), qos=1)
    lows, highs = barrier(low), barrier(high)
    assert len(lows) + len(highs) == 4 and lows and highs
    assert {m.qos for m in lows} == {0} and {m.qos for m in highs} == {1}


def test_v5_shared_no_retained_on_subscribe(broker):
    """No numbered statement; 3.3.1.3: "When a new Non-shared Subscription is made, the last retained message, if any,
    on each matching topic name is sent to the Client"; nothing says so of shared ones, and
    this test takes the reading that a shared subscription gets none on subscribe (a live
    retained message is still delivered to one member). Ambiguous: Mosquitto 2.0.11 does
    send them; the lead decides, and this test follows."""
    pub = client5(broker, "pub")
    pub.publish("rs/t", b"stale", qos=1, retain=True)
    m = client5(broker, "m")
    assert m.subscribe([("$share/r/rs/#", 1)]) == [1]
    assert barrier(m) == []
    pub.publish("rs/t", b"fresh", qos=1, retain=True)
    assert [x.payload for x in barrier(m)] == [b"fresh"]


def test_v5_shared_subscription_identifier(broker):
    """[MQTT-3.3.4-3] the Subscription Identifier of a shared subscription travels with the
    messages it delivers."""
    m = client5(broker, "sid")
    assert m.subscribe([("$share/i/si/t", 1)], props=[(P_SUBSCRIPTION_ID, 77)]) == [1]
    client5(broker, "pub").publish("si/t", b"x", qos=1)
    (got,) = barrier(m)
    assert got.props.all(P_SUBSCRIPTION_ID) == [77]


def test_v5_shared_unsubscribe_leaves_group(broker):
    """[MQTT-3.10.4-2] a member that unsubscribes gets nothing more; the remaining member gets
    every message."""
    a, b = members(broker, 2, flt="$share/u/us/t")
    assert a.unsubscribe(["$share/u/us/t"]) == [0]
    pub = client5(broker, "pub")
    for i in range(4):
        pub.publish("us/t", str(i).encode(), qos=1)
    assert barrier(a) == []
    assert [m.payload for m in barrier(b)] == [str(i).encode() for i in range(4)]


def test_v5_shared_member_leaving_does_not_lose_inflight_qos1(broker):
    """No numbered statement (a SHOULD of 4.8.2): a QoS 1 message in flight to a member whose connection breaks before it
    acknowledged, and whose session then ends (Session Expiry 0), is sent to another member
    of the group ("the Server SHOULD send the Application Message to another Client"): it
    is not lost."""
    a = client5(broker, "leaver")
    assert a.subscribe([("$share/l/lv/t", 1)]) == [1]
    pub = client5(broker, "pub")
    pub.publish("lv/t", b"in-flight", qos=1)
    m = a.recv_publish(ack=False)
    assert m.payload == b"in-flight"
    b = client5(broker, "stayer")
    assert b.subscribe([("$share/l/lv/t", 1)]) == [1]
    mark = broker.mark()
    a.close()
    broker.wait_log(r"client leaver disconnected", since=mark)
    got = b.recv_publish()
    assert got.payload == b"in-flight"


def test_v5_shared_persistent_member_resumes_qos2(broker):
    """[MQTT-4.8.2-4] a QoS 2 delivery to a member cut off by its connection breaking is
    completed with that same member when it reconnects (its session kept: Session Expiry
    300): the PUBLISH is resent to it with DUP 1, and the other member never gets it
    ([MQTT-4.8.2-5] while the session lives)."""
    a = client5(broker, "qa", clean=False, props=EXP)
    assert a.subscribe([("$share/q2/q2/t", 2)]) == [2]
    pub = client5(broker, "pub")
    pub.publish("q2/t", b"for-a", qos=2)  # a is the only member yet
    first = a.recv_publish(ack=False)
    b = client5(broker, "qb")
    assert b.subscribe([("$share/q2/q2/t", 2)]) == [2]
    mark = broker.mark()
    a.close()
    broker.wait_log(r"client qa disconnected", since=mark)
    assert barrier(b) == []
    back = client5(broker, "qa", clean=False, props=EXP, expect_sp=True)
    again = back.recv_publish()
    assert (again.payload, again.pid, again.dup) == (b"for-a", first.pid, True)
    assert barrier(b) == []


def test_v5_shared_qos2_not_given_to_another_when_session_ends(broker):
    """[MQTT-4.8.2-5] when the session of a member with an unfinished QoS 2 delivery ends
    (Session Expiry 1 s) before it reconnects, the message is not sent to another member."""
    a = client5(broker, "short", clean=False, props=[(h.P_SESSION_EXPIRY, 1)])
    assert a.subscribe([("$share/se/se/t", 2)]) == [2]
    pub = client5(broker, "pub")
    pub.publish("se/t", b"only-a", qos=2)
    assert a.recv_publish(ack=False).payload == b"only-a"
    b = client5(broker, "other")
    assert b.subscribe([("$share/se/se/t", 2)]) == [2]
    mark = broker.mark()
    a.close()
    broker.wait_log(r"client short expired", since=mark, timeout=h.scaled(6))
    assert barrier(b) == []


def test_v5_shared_refused_message_not_redelivered(broker):
    """[MQTT-4.8.2-6] a member answering PUBACK 0x80 makes the server discard the message: it
    is not sent to another member."""
    a = client5(broker, "refuser", props=[(h.P_RECEIVE_MAXIMUM, 1)])
    assert a.subscribe([("$share/rf/rf/t", 1)]) == [1]
    pub = client5(broker, "pub")
    pub.publish("rf/t", b"refused", qos=1)
    m = a.recv_publish(ack=False)
    b = client5(broker, "b")
    assert b.subscribe([("$share/rf/rf/t", 1)]) == [1]
    a.send(ack5_pkt(PUBACK, m.pid, 0x80))
    assert barrier(a) == []
    assert barrier(b) == []


def test_v5_shared_no_local_is_protocol_error(broker):
    """[MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82,
    whether shared subscriptions are served or not."""
    c = client5(broker, "nl")
    c.send(subscribe5_pkt(1, [("$share/g/nl/t", sub_opts(1, no_local=True))]))
    c.expect_disconnect(0x82)


def test_v5_shared_invalid_share_names_not_granted(broker):
    """[MQTT-4.8.2-1] [MQTT-4.8.2-2] a ShareName must be at least one character, contain no
    '/', '+' or '#', and be followed by '/' and a filter. Such filters are never granted: the
    server answers a SUBACK failure code (0x80 or above) or DISCONNECT 0x81/0x82 (the
    standard names no reason code; either keeps the rule)."""
    for flt in ("$share//t", "$share/a+b/t", "$share/a#/t", "$share/g", "$share/g/"):
        c = client5(broker, "bad")
        c.send(subscribe5_pkt(1, [(flt, 1)]))
        p = c.recv()
        if p.type == SUBACK:
            assert parse_suback5(p).codes[0] >= 0x80, flt
        else:
            assert p.type == DISCONNECT and parse_disconnect5(p).reason in (0x81, 0x82), flt


def test_v5_shared_mosquitto_sub_group(broker):
    """[MQTT-4.8.2-3] two mosquitto_sub -V mqttv5 processes in one group ($share/ms/ms/t) share
    10 QoS 1
    messages: each printed once across both, both getting some."""
    subs = [h.SubProc(broker.port, "-V", "mqttv5", "-t", "$share/ms/ms/t", "-q", "1")
            for _ in range(2)]
    try:
        pub = client5(broker, "pub")
        for i in range(10):
            pub.publish("ms/t", str(i).encode(), qos=1)
        deadline = time.monotonic() + h.TIMEOUT
        while sum(len(s.messages) for s in subs) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the two outputs until the deadline
        counts = collections.Counter(m for s in subs for m in s.messages)
        assert counts == collections.Counter(str(i) for i in range(10))
        assert all(s.messages for s in subs), "one member got every message"
    finally:
        for s in subs:
            s.stop()

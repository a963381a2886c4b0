"""qos_*: QoS 1 and 2 flows in both directions, packet ids, in-flight window and queue
through the real binary (MQTT 3.1.1 sections 2.3.1, 3.3.4, 4.3, 4.6)."""
from midge_harness import (PUBLISH, QUIET, client, expect_quiet, parse_publish, puback_pkt,
                           pubcomp_pkt, publish_pkt, pubrec_pkt, pubrel_pkt, scaled)


def test_qos1_inbound_puback_exact(broker):
    """[MQTT-3.3.4-1] [MQTT-2.3.1-6] [MQTT-4.3.2-2] a QoS 1 PUBLISH with id 0x1234 is
    answered by exactly 40 02 12 34 and the message is delivered."""
    sub = client(broker, "s")
    sub.subscribe([("q1/t", 1)])
    pub = client(broker, "p")
    pub.send(publish_pkt("q1/t", b"m", qos=1, pid=0x1234))
    pub.expect_bytes(puback_pkt(0x1234))
    m = sub.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("q1/t", b"m", 1)


def test_qos2_inbound_flow_exact(broker):
    """[MQTT-3.3.4-1] [MQTT-2.3.1-6] [MQTT-4.3.3-2] a QoS 2 PUBLISH id 0xBEEF gets
    50 02 BE EF; PUBREL 62 02 BE EF gets 70 02 BE EF; delivered exactly once."""
    sub = client(broker, "s")
    sub.subscribe([("q2/t", 2)])
    pub = client(broker, "p")
    pub.send(publish_pkt("q2/t", b"m", qos=2, pid=0xBEEF))
    pub.expect_bytes(pubrec_pkt(0xBEEF))
    pub.send(pubrel_pkt(0xBEEF))
    pub.expect_bytes(pubcomp_pkt(0xBEEF))
    m = sub.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("q2/t", b"m", 2)
    sub.expect_no_packet()


def test_qos2_inbound_resent_publish_not_delivered_twice(broker):
    """[MQTT-4.3.3-2] a QoS 2 PUBLISH re-sent (DUP 1, same id) before PUBREL is
    acknowledged with PUBREC again but delivered only once; after PUBCOMP the same id
    starts a new message."""
    sub0 = client(broker, "s0")
    sub0.subscribe([("x2/t", 0)])
    sub2 = client(broker, "s2")
    sub2.subscribe([("x2/t", 2)])
    pub = client(broker, "p")
    pub.send(publish_pkt("x2/t", b"first", qos=2, pid=7))
    pub.expect_bytes(pubrec_pkt(7))
    pub.send(publish_pkt("x2/t", b"first", qos=2, pid=7, dup=True))
    pub.expect_bytes(pubrec_pkt(7))
    pub.send(pubrel_pkt(7))
    pub.expect_bytes(pubcomp_pkt(7))
    assert sub0.recv_publish().payload == b"first"
    assert sub2.recv_publish().payload == b"first"
    expect_quiet([sub0, sub2, pub])
    pub.send(publish_pkt("x2/t", b"second", qos=2, pid=7))
    pub.expect_bytes(pubrec_pkt(7))
    pub.send(pubrel_pkt(7))
    pub.expect_bytes(pubcomp_pkt(7))
    assert sub0.recv_publish().payload == b"second"
    assert sub2.recv_publish().payload == b"second"


def test_qos2_pubrel_unknown_id_gets_pubcomp(broker):
    """[MQTT-4.3.3-2] the receiver answers every PUBREL with a PUBCOMP carrying the same
    id, even when it holds no state for it (e.g. a PUBREL resent after a lost PUBCOMP)."""
    c = client(broker, "rel")
    c.send(pubrel_pkt(0x0101))
    c.expect_bytes(pubcomp_pkt(0x0101))
    c.ping()


def test_qos1_inbound_reused_id_is_new_message(broker):
    """[MQTT-4.3.2-2] after PUBACK, a new PUBLISH with the same id is a new publication and
    is delivered again."""
    sub = client(broker, "s")
    sub.subscribe([("r1/t", 0)])
    pub = client(broker, "p")
    for payload in (b"a", b"b"):
        pub.send(publish_pkt("r1/t", payload, qos=1, pid=3))
        pub.expect_bytes(puback_pkt(3))
    assert [m.payload for m in sub.collect(2)] == [b"a", b"b"]


def test_qos1_outbound_flow(broker):
    """[MQTT-4.3.2-1] [MQTT-2.3.1-1] [MQTT-3.3.1-3] the server sends a QoS 1 PUBLISH with a
    non-zero id and DUP 0, and after our PUBACK sends nothing more."""
    sub = client(broker, "s")
    sub.subscribe([("o1/t", 1)])
    pub = client(broker, "p")
    pub.publish("o1/t", b"x", qos=1)
    p = sub.expect(PUBLISH)
    m = parse_publish(p)
    assert m.qos == 1 and m.pid and not m.dup and not m.retain
    assert p.raw() == publish_pkt("o1/t", b"x", qos=1, pid=m.pid)
    sub.send(puback_pkt(m.pid))
    sub.expect_no_packet()


def test_qos2_outbound_flow_exact(broker):
    """[MQTT-4.3.3-1] [MQTT-2.3.1-6] server as QoS 2 sender: PUBLISH (id P, DUP 0), our
    PUBREC P -> PUBREL 62 02 P; our PUBCOMP -> nothing more; the PUBLISH is never resent
    after the PUBREL."""
    sub = client(broker, "s")
    sub.subscribe([("o2/t", 2)])
    pub = client(broker, "p")
    pub.publish("o2/t", b"y", qos=2)
    p = sub.expect(PUBLISH)
    m = parse_publish(p)
    assert m.qos == 2 and m.pid and not m.dup
    assert p.raw() == publish_pkt("o2/t", b"y", qos=2, pid=m.pid)
    sub.send(pubrec_pkt(m.pid))
    sub.expect_bytes(pubrel_pkt(m.pid))
    sub.expect_no_packet(0.2)
    sub.send(pubcomp_pkt(m.pid))
    sub.expect_no_packet()


def test_qos_outbound_packet_ids_distinct(broker):
    """[MQTT-2.3.1-1] [MQTT-2.3.1-4] unacknowledged QoS 1 and QoS 2 PUBLISHes to one client
    carry distinct non-zero packet ids."""
    sub = client(broker, "s")
    sub.subscribe([("ids/1", 1), ("ids/2", 2)])
    pub = client(broker, "p")
    for i in range(8):
        pub.publish("ids/1" if i % 2 else "ids/2", str(i).encode(), qos=2)
    msgs = sub.collect(8, ack=False)
    pids = [m.pid for m in msgs]
    assert all(pids) and len(set(pids)) == 8, pids


def test_qos_inflight_window_respected(start_broker):
    """[MQTT-4.6.0-6] [MQTT-4.3.2-1] with max_inflight_messages 3 a non-acking QoS 1
    subscriber gets exactly 3 messages; each PUBACK releases exactly one more; all 10
    arrive in order."""
    br = start_broker(["max_inflight_messages 3"])
    sub = client(br, "win")
    sub.subscribe([("w/t", 1)])
    pub = client(br, "p")
    for i in range(10):
        pub.publish("w/t", str(i).encode(), qos=1)
    first = sub.collect(3, ack=False)
    sub.expect_no_packet()
    got = list(first)
    sub.send(puback_pkt(first[0].pid))
    got += sub.collect(1, ack=False)
    sub.expect_no_packet(0.3)
    for m in got[1:]:
        sub.send(puback_pkt(m.pid))
    while len(got) < 10:
        m = sub.recv_publish(ack=True)
        got.append(m)
    assert [m.payload for m in got] == [str(i).encode() for i in range(10)]
    assert not any(m.dup for m in got)


def test_qos_queue_overflow_drops_and_logs(start_broker):
    """[MQTT-3.3.4-1] with max_inflight_messages 2 and max_queued_messages 5, 30 QoS 1
    messages to a stalled subscriber: the publisher still gets every PUBACK; the
    subscriber gets exactly the first 2 + 5, in order. The window takes messages 0 and 1,
    the queue (which counts only what waits behind the window: session_deliver,
    queue_full; docs/configuration.md) takes 2-6, and 7-29 are dropped; the first drop is
    logged, the next ones within 10 s are only counted."""
    br = start_broker(["max_inflight_messages 2", "max_queued_messages 5"])
    sub = client(br, "slow")
    sub.subscribe([("qf/t", 1)])
    pub = client(br, "p")
    for i in range(30):
        pub.publish("qf/t", str(i).encode(), qos=1)  # each routed before its PUBACK
    got = sub.collect(2, ack=False)
    sub.expect_no_packet(0.2)
    for m in got:
        sub.send(puback_pkt(m.pid))
    while True:
        try:
            m = sub.recv_publish(timeout=QUIET, ack=True)
        except AssertionError:
            break
        got.append(m)
    nums = [int(m.payload) for m in got]
    assert nums == list(range(2 + 5)), nums
    br.wait_log(r"client slow: queue full \(5 messages, 5 bytes\), dropped message on qf/t "
                r"\(1 dropped so far\)$")
    br.assert_no_log(r"client slow: queue full .*\((?!1 )\d+ dropped so far\)")


def test_qos1_order_preserved(broker):
    """[MQTT-4.6.0-6] 200 QoS 1 messages from one publisher arrive in order."""
    sub = client(broker, "s")
    sub.subscribe([("ord/1", 1)])
    pub = client(broker, "p")
    pub.send(b"".join(publish_pkt("ord/1", str(i).encode(), qos=1, pid=i + 1) for i in range(200)))
    got = sub.collect(200, timeout=scaled(20))
    assert [m.payload for m in got] == [str(i).encode() for i in range(200)]
    for i in range(200):
        pub.expect_bytes(puback_pkt(i + 1))


def test_qos2_order_preserved(broker):
    """[MQTT-4.6.0-6] [MQTT-4.3.3-1] 50 QoS 2 messages arrive in order, each handshake
    completing."""
    sub = client(broker, "s")
    sub.subscribe([("ord/2", 2)])
    pub = client(broker, "p")
    for i in range(50):
        pub.publish("ord/2", str(i).encode(), qos=2)
    got = sub.collect(50, timeout=scaled(20))
    assert [m.payload for m in got] == [str(i).encode() for i in range(50)]


def test_qos_pubacks_in_publish_order(broker):
    """[MQTT-4.6.0-2] PUBACKs are sent in the order the QoS 1 PUBLISHes arrived."""
    c = client(broker, "pa")
    pids = [50, 40, 30, 20, 10]
    c.send(b"".join(publish_pkt("pa/t", b"x", qos=1, pid=p) for p in pids))
    for p in pids:
        c.expect_bytes(puback_pkt(p))


def test_qos_pubrecs_in_publish_order(broker):
    """[MQTT-4.6.0-3] PUBRECs are sent in the order the QoS 2 PUBLISHes arrived."""
    c = client(broker, "pr")
    pids = [9, 3, 7, 1]
    c.send(b"".join(publish_pkt("pr/t", b"x", qos=2, pid=p) for p in pids))
    for p in pids:
        c.expect_bytes(pubrec_pkt(p))
    c.send(b"".join(pubrel_pkt(p) for p in pids))
    for p in pids:
        c.expect_bytes(pubcomp_pkt(p))


def test_qos_pubrels_in_pubrec_order(broker):
    """[MQTT-4.6.0-4] as QoS 2 sender the server sends PUBRELs in the order our PUBRECs
    arrived."""
    sub = client(broker, "s")
    sub.subscribe([("rl/t", 2)])
    pub = client(broker, "p")
    for i in range(3):
        pub.publish("rl/t", str(i).encode(), qos=2)
    msgs = sub.collect(3, ack=False)
    order = [msgs[2].pid, msgs[0].pid, msgs[1].pid]
    sub.send(b"".join(pubrec_pkt(p) for p in order))
    for p in order:
        sub.expect_bytes(pubrel_pkt(p))
    sub.send(b"".join(pubcomp_pkt(p) for p in order))
    sub.expect_no_packet()


def test_qos2_to_qos1_subscriber(broker):
    """[MQTT-3.8.4-6] a QoS 2 publish reaches a QoS 1 subscription as QoS 1 (PUBACK flow)."""
    sub = client(broker, "s")
    sub.subscribe([("d1/t", 1)])
    pub = client(broker, "p")
    pub.publish("d1/t", b"z", qos=2)
    m = sub.recv_publish(ack=False)
    assert m.qos == 1
    sub.send(puback_pkt(m.pid))
    sub.expect_no_packet()


def test_qos_both_directions_interleaved(broker):
    """[MQTT-4.3.2-1] [MQTT-4.3.3-1] [MQTT-4.3.3-2] one client publishes QoS 2 while receiving
    QoS 1 and 2 deliveries of its own messages; all acks match their ids."""
    c = client(broker, "both")
    c.subscribe([("bd/1", 1), ("bd/2", 2)])
    c.publish("bd/1", b"one", qos=1)
    c.publish("bd/2", b"two", qos=2)
    got = sorted((m.topic, m.payload, m.qos) for m in c.collect(2))
    assert got == [("bd/1", b"one", 1), ("bd/2", b"two", 2)]
    c.expect_no_packet()

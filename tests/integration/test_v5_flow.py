"""v5_flow_*: MQTT 5 flow control and packet size limits through the real binary (issue 13).

Receive Maximum both ways (the client's one bounds what the server has in flight to it;
the server's one, max_inflight_messages, bounds the client: one more is DISCONNECT 0x93),
Maximum Packet Size both ways (the client's: larger messages are not sent and count as
delivered, optional Reason Strings are left out; the server's max_packet_size: a larger
packet is DISCONNECT 0x95).

Proving that something is held back uses a quiet window (expect_no_packet); everything
else waits on packets.
"""
import subprocess

import midge_harness as h
from midge_harness import (P_MAXIMUM_PACKET_SIZE, P_REASON_STRING, P_RECEIVE_MAXIMUM, PINGRESP,
                           PUBACK, PUBCOMP, PUBREC, PUBREL, SUBACK, MqttConn5, Paho5,
                           ack5_pkt, client5, connect5_pkt, parse_ack5, parse_publish5,
                           pingreq_pkt, publish5_pkt, subscribe5_pkt)


# -- Receive Maximum ----------------------------------------------------------------------

def test_v5_flow_receive_maximum_outbound(broker):
    """[MQTT-3.3.4-9] [MQTT-4.9.0-1] [MQTT-4.9.0-2] a client with Receive Maximum 2 has at most
    two QoS 1 PUBLISHes outstanding: of six, two arrive, the third only after a PUBACK, and
    so on, all in order; [MQTT-3.3.4-10] [MQTT-4.9.0-3] while its quota is used up other
    packets are not held back (PINGRESP, SUBACK)."""
    sub = client5(broker, "rm2", props=[(P_RECEIVE_MAXIMUM, 2)])
    sub.subscribe([("rm/#", 1)])
    pub = client5(broker, "pub")
    for i in range(6):
        pub.publish("rm/t", str(i).encode(), qos=1)
    first = [sub.recv_publish(ack=False) for _ in range(2)]
    assert [m.payload for m in first] == [b"0", b"1"]
    sub.expect_no_packet()
    sub.send(pingreq_pkt() + subscribe5_pkt(9, [("other/#", 0)]))
    assert [sub.recv().type for _ in range(2)] == [PINGRESP, SUBACK]
    sub.expect_no_packet()
    got = [m.payload for m in first]
    inflight = [m.pid for m in first]
    while len(got) < 6:
        sub.send(ack5_pkt(PUBACK, inflight.pop(0)))
        m = sub.recv_publish(ack=False)
        got.append(m.payload)
        inflight.append(m.pid)
        assert len(inflight) == 2
        sub.expect_no_packet(0.1 if len(got) < 6 else h.QUIET)
    assert got == [str(i).encode() for i in range(6)]


def test_v5_flow_receive_maximum_qos2_counts_until_pubcomp(broker):
    """[MQTT-3.3.4-9] a QoS 2 message counts against Receive Maximum 1 until its PUBCOMP: the
    next one is not sent after the PUBREC/PUBREL, only after the PUBCOMP."""
    sub = client5(broker, "rm1", props=[(P_RECEIVE_MAXIMUM, 1)])
    sub.subscribe([("rq/#", 2)])
    pub = client5(broker, "pub")
    pub.publish("rq/t", b"a", qos=2)
    pub.publish("rq/t", b"b", qos=2)
    a = sub.recv_publish(ack=False)
    sub.send(ack5_pkt(PUBREC, a.pid))
    assert parse_ack5(sub.expect(PUBREL)).pid == a.pid
    sub.expect_no_packet()
    sub.send(ack5_pkt(PUBCOMP, a.pid))
    assert sub.recv_publish().payload == b"b"


def test_v5_flow_receive_maximum_capped_by_max_inflight(start_broker):
    """[MQTT-3.3.4-9] the server's own window (max_inflight_messages 3) still applies to a
    client that allows more (Receive Maximum 10)."""
    br = start_broker(["max_inflight_messages 3"])
    sub = client5(br, "rm10", props=[(P_RECEIVE_MAXIMUM, 10)])
    sub.subscribe([("cap/#", 1)])
    pub = client5(br, "pub")
    for i in range(5):
        pub.publish("cap/t", str(i).encode(), qos=1)
    assert len([sub.recv_publish(ack=False) for _ in range(3)]) == 3
    sub.expect_no_packet()


def test_v5_flow_receive_maximum_inbound_exceeded_0x93(start_broker):
    """[MQTT-3.3.4-7] (client obligation) the server announces Receive Maximum 3
    (max_inflight_messages 3); a client with three QoS 2 PUBLISHes unfinished (PUBREC'd, no
    PUBREL) may resend one of them (not a new one), but a fourth QoS 1 PUBLISH is DISCONNECT
    0x93 Receive Maximum exceeded. After a PUBCOMP there is room again."""
    br = start_broker(["max_inflight_messages 3"])
    c = client5(br, "greedy")
    assert c.connack.props.get(P_RECEIVE_MAXIMUM) == 3
    for pid in (1, 2, 3):
        c.send(publish5_pkt("in/t", b"x", qos=2, pid=pid))
        assert parse_ack5(c.expect(PUBREC)).pid == pid
    c.send(publish5_pkt("in/t", b"x", qos=2, pid=2, dup=True))
    assert parse_ack5(c.expect(PUBREC)).pid == 2
    c.send(ack5_pkt(PUBREL, 1))
    assert parse_ack5(c.expect(PUBCOMP)).pid == 1
    c.send(publish5_pkt("in/t", b"x", qos=1, pid=4))
    assert parse_ack5(c.expect(PUBACK)).pid == 4
    c.send(publish5_pkt("in/t", b"x", qos=2, pid=5))
    assert parse_ack5(c.expect(PUBREC)).pid == 5
    c.send(publish5_pkt("in/t", b"x", qos=1, pid=6))
    c.expect_disconnect(0x93)


# -- Maximum Packet Size: the client's ------------------------------------------------------

def test_v5_flow_client_maximum_packet_size(broker):
    """[MQTT-3.1.2-24] [MQTT-3.1.2-25] a client with Maximum Packet Size 64 is never sent a
    larger packet: a 100-byte message at QoS 0 and at QoS 1 is not sent, and the server goes
    on as if it had been delivered (the QoS 1 one takes no place in the Receive Maximum 1
    window: the small QoS 1 message after it arrives without any PUBACK); messages that fit
    arrive."""
    sub = client5(broker, "small", props=[(P_MAXIMUM_PACKET_SIZE, 64),
                                          (P_RECEIVE_MAXIMUM, 1)])
    sub.subscribe([("mps/#", 1)])
    pub = client5(broker, "pub")
    mark = broker.mark()
    pub.publish("mps/t", b"B" * 100)
    pub.publish("mps/t", b"b" * 100, qos=1, expect_reason=0)
    pub.publish("mps/t", b"fits", qos=1)
    m = sub.recv()
    assert len(m.raw()) <= 64
    assert parse_publish5(m).payload == b"fits"
    sub.expect_no_packet()
    broker.wait_log(r"client small: message on mps/t \(100 bytes\) not sent: over the client's "
                    r"Maximum Packet Size of 64", since=mark)


def test_v5_flow_client_maximum_packet_size_boundary(broker):
    """[MQTT-3.1.2-24] [MQTT-3.1.2-25] a PUBLISH of exactly the client's Maximum Packet Size
    (100 bytes on the wire) is sent, at QoS 0 and at QoS 1; one byte more is not."""
    sub = client5(broker, "edge", props=[(P_MAXIMUM_PACKET_SIZE, 100)])
    sub.subscribe([("mpe/t", 1)])
    pub = client5(broker, "pub")
    # QoS 0: 1 + 1 + (2 + 5 + 1 + payload) bytes; QoS 1: 2 more for the packet id.
    pub.publish("mpe/t", b"0" * 90, qos=0)
    pub.publish("mpe/t", b"0" * 91, qos=0)
    pub.publish("mpe/t", b"1" * 89, qos=1)
    pub.publish("mpe/t", b"1" * 88, qos=1)
    got = []
    while (p := sub.read_packet(h.QUIET)) is not None:
        m = parse_publish5(p)
        got.append((len(p.raw()), m.qos, len(m.payload)))
        if m.qos:
            sub.send(ack5_pkt(PUBACK, m.pid))
    assert got == [(100, 0, 90), (100, 1, 88)], \
        "expected the two PUBLISHes of exactly 100 bytes (QoS 0 and QoS 1)"


def test_v5_flow_client_maximum_packet_size_paho(broker):
    """[MQTT-3.1.2-24] paho-mqtt's MQTTv5 client announcing MaximumPacketSize 128 gets the
    small message, not the large one."""
    props = Paho5.properties("CONNECT", MaximumPacketSize=128)
    p = Paho5(broker.port, "paho-mps", props=props)
    try:
        p.subscribe("pmps/#", 1)
        pub = client5(broker, "pub")
        pub.publish("pmps/big", b"x" * 200, qos=1)
        pub.publish("pmps/small", b"y" * 20, qos=1)
        m = p.get()
        assert (m.topic, m.payload) == ("pmps/small", b"y" * 20)
        p.expect_nothing()
    finally:
        p.close()


def test_v5_flow_reason_strings_left_out_over_client_limit(start_broker, tmp_path):
    """[MQTT-3.4.2-2] [MQTT-3.5.2-2] a PUBACK or PUBREC with a Reason String that would exceed
    the client's Maximum Packet Size goes out without it (reason code kept); with room for
    it the string is there. [MQTT-3.14.2-3] the same for DISCONNECT (takeover 0x8E) and
    [MQTT-3.2.2-19] for a refusing CONNACK (0x85)."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite ok/#\n")
    br = start_broker([f"acl_file {acl}", "clientid_prefixes c-"])
    roomy = client5(br, "c-roomy", props=[(P_MAXIMUM_PACKET_SIZE, 1000)])
    tight = client5(br, "c-tight", props=[(P_MAXIMUM_PACKET_SIZE, 20)])
    assert P_REASON_STRING in roomy.publish("no/t", b"x", qos=1, expect_reason=0x87).props
    ack = tight.publish("no/t", b"x", qos=1, expect_reason=0x87)
    assert ack.props.items == []
    rec = tight.publish("no/t", b"x", qos=2, expect_reason=0x87)
    assert rec.props.items == []
    client5(br, "c-tight")
    d = tight.expect_disconnect(0x8E)
    assert d.props.items == []
    refused = MqttConn5(br.port)
    refused.send(connect5_pkt("other", props=[(P_MAXIMUM_PACKET_SIZE, 20)]))
    assert refused.expect_refused(0x85).props.items == []
    refused = MqttConn5(br.port)
    refused.send(connect5_pkt("other", props=[(P_MAXIMUM_PACKET_SIZE, 1000)]))
    assert P_REASON_STRING in refused.expect_refused(0x85).props


# -- Maximum Packet Size: the server's -------------------------------------------------------

def test_v5_flow_server_maximum_packet_size_0x95(start_broker):
    """[MQTT-3.2.2-15] (client obligation) the server announces max_packet_size 100 as Maximum
    Packet Size; a PUBLISH of 100 bytes is taken, one of 101 is DISCONNECT 0x95 Packet too
    large and not delivered."""
    br = start_broker(["max_packet_size 100"])
    sub = client5(br, "sub")
    sub.subscribe([("sps/#", 0)])
    c = client5(br, "big")
    assert c.connack.props.get(P_MAXIMUM_PACKET_SIZE) == 100
    ok = publish5_pkt("sps/t", b"x" * 88, qos=1, pid=1)
    assert len(ok) == 100
    c.send(ok)
    assert parse_ack5(c.expect(PUBACK)).pid == 1
    assert sub.recv_publish().payload == b"x" * 88
    c.send(publish5_pkt("sps/t", b"x" * 89, qos=1, pid=2))
    c.expect_disconnect(0x95)
    sub.expect_no_packet()


def test_v5_flow_mosquitto_pub_honours_server_maximum_packet_size(start_broker):
    """[MQTT-3.2.2-15] the CONNACK's Maximum Packet Size is what a real client goes by:
    mosquitto_pub -V mqttv5 does not send a message over it (libmosquitto drops it; the
    command still exits 0) and sends one under it."""
    br = start_broker(["max_packet_size 100"])
    sub = client5(br, "sub")
    sub.subscribe([("mpub/#", 0)])
    cmd = [h.MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(br.port), "-V", "mqttv5",
           "-t", "mpub/t", "-q", "1", "-m"]
    subprocess.run(cmd + ["x" * 200], capture_output=True, timeout=h.TIMEOUT)
    h.run_pub(br.port, "-V", "mqttv5", "-t", "mpub/t", "-q", "1", "-m", "small")
    assert sub.recv_publish().payload == b"small"
    sub.expect_no_packet()

"""connect_*: CONNECT / CONNACK handling through the real binary (MQTT 3.1.1 section 3.1, 3.2)."""
import re
import time

from midge_harness import (SUBACK, MqttConn, QUIET, client, connect_pkt, packet, pingreq_pkt,
                           publish_pkt, subscribe_pkt)

CONNACK_OK = bytes([0x20, 0x02, 0x00, 0x00])


def _closed_log(broker, conn, reason):
    """The pre-CONNECT close line names the peer address and the error sentence."""
    broker.wait_log(rf"connection from 127\.0\.0\.1:{conn.local_port} closed: .*{re.escape(reason)}")


def test_connect_accepted_connack_bytes(broker):
    """[MQTT-3.1.4-4] [MQTT-3.2.0-1] [MQTT-3.2.2-1] [MQTT-3.1.3-5] a valid CONNECT with
    clean session 1 gets exactly 20 02 00 00, the first packet the server sends."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("abcdefghijklmnopqrstuvw", clean=True))  # 23 alphanumerics
    c.expect_bytes(CONNACK_OK)
    c.expect_no_packet()
    broker.wait_log(rf"client abcdefghijklmnopqrstuvw connected from 127\.0\.0\.1:{c.local_port}\b")
    c.disconnect()
    broker.wait_log(r"client abcdefghijklmnopqrstuvw disconnected: DISCONNECT received")


def test_connect_connack_first_even_when_pipelined(broker):
    """[MQTT-3.2.0-1] [MQTT-3.8.4-1] CONNECT, SUBSCRIBE and PINGREQ sent in one write: the
    CONNACK comes first, then the SUBACK and PINGRESP."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("pipe") + subscribe_pkt(7, [("x/y", 1)]) + pingreq_pkt())
    c.expect_bytes(CONNACK_OK)
    c.expect_bytes(packet(SUBACK, 0, b"\x00\x07\x01"))
    c.expect_bytes(b"\xd0\x00")


def test_connect_byte_at_a_time(broker):
    """[MQTT-3.1.4-4] a CONNECT that arrives one byte per segment is still accepted."""
    c = MqttConn(broker.port)
    for byte in connect_pkt("slow", keepalive=30):
        c.send(bytes([byte]))
        time.sleep(0.002)
    c.expect_bytes(CONNACK_OK)


def test_connect_first_packet_must_be_connect(broker):
    """[MQTT-3.1.0-1] [MQTT-4.8.0-1] a PINGREQ before CONNECT: closed, no packet sent back."""
    c = MqttConn(broker.port)
    c.send(pingreq_pkt())
    c.expect_closed()
    _closed_log(broker, c, "first packet is not CONNECT")


def test_connect_first_packet_publish_not_delivered(broker):
    """[MQTT-3.1.0-1] a PUBLISH before CONNECT closes the connection and is not delivered."""
    sub = client(broker, "watcher")
    sub.subscribe([("#", 0)])
    c = MqttConn(broker.port)
    c.send(publish_pkt("early/bird", b"x"))
    c.expect_closed()
    sub.expect_no_packet()


def test_connect_second_connect_closes(broker):
    """[MQTT-3.1.0-2] a second CONNECT on one connection is a protocol violation: closed."""
    c = client(broker, "twice")
    c.send(connect_pkt("twice"))
    c.expect_closed()
    broker.wait_log(r"client twice disconnected: protocol error: second CONNECT on one connection")


def test_connect_mqtt31_mqisdp_accepted(broker):
    """[MQTT-3.1.4-4] protocol name "MQIsdp" level 3 (MQTT 3.1) is accepted with CONNACK 0
    and the client can publish and subscribe."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("old31", proto_name="MQIsdp", proto_level=3))
    c.expect_bytes(CONNACK_OK)
    assert c.subscribe([("v31/t", 1)]) == [1]
    c.publish("v31/t", b"hello", qos=1)
    m = c.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("v31/t", b"hello", 1)


def _unsupported_level(broker, level):
    c = MqttConn(broker.port)
    c.send(connect_pkt("lvl%d" % level, proto_level=level))
    c.expect_bytes(bytes([0x20, 0x02, 0x00, 0x01]))
    c.expect_closed()


def test_connect_level6_refused_0x01(broker):
    """[MQTT-3.1.2-2] [MQTT-3.2.2-4] [MQTT-3.2.2-5] protocol level 6 with name MQTT (no such
    version: 5 is served since MQTT 5 support): CONNACK 20 02 00 01 (session present 0),
    then the server closes."""
    _unsupported_level(broker, 6)


def test_connect_level2_refused_0x01(broker):
    """[MQTT-3.1.2-2] [MQTT-3.2.2-4] [MQTT-3.2.2-5] protocol level 2: CONNACK 0x01 then close."""
    _unsupported_level(broker, 2)


def test_connect_bad_protocol_name_closes(broker):
    """[MQTT-3.1.2-1] [MQTT-3.1.4-1] an unknown protocol name ("MQTX"): closed without CONNACK."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("badname", proto_name="MQTX"))
    c.expect_closed()


def test_connect_lowercase_protocol_name_closes(broker):
    """[MQTT-3.1.2-1] [MQTT-3.1.4-1] "mqtt" is not "MQTT" (the name is case-sensitive)."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("lower", proto_name="mqtt"))
    c.expect_closed()


def test_connect_reserved_flag_closes(broker):
    """[MQTT-3.1.2-3] [MQTT-3.1.4-1] CONNECT flags bit 0 set: closed without CONNACK."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("resv", reserved=True))
    c.expect_closed()
    _closed_log(broker, c, "CONNECT reserved flag is set")


def test_connect_fixed_header_flags_close(broker):
    """[MQTT-2.2.2-1] [MQTT-2.2.2-2] a CONNECT with fixed-header flags 0001: closed, no CONNACK."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("hdr", header_flags=1))
    c.expect_closed()


def test_connect_empty_client_id_clean1_accepted(broker):
    """[MQTT-3.1.3-6] [MQTT-3.2.2-1] zero-length client id with clean session 1 is accepted
    with a server-assigned id; two such clients get distinct ids (neither takes the other
    over) and both work."""
    a = MqttConn(broker.port)
    a.send(connect_pkt("", clean=True))
    a.expect_bytes(CONNACK_OK)
    bb = MqttConn(broker.port)
    bb.send(connect_pkt("", clean=True))
    bb.expect_bytes(CONNACK_OK)
    assert a.subscribe([("anon/t", 0)]) == [0]
    assert bb.subscribe([("anon/t", 0)]) == [0]
    bb.publish("anon/t", b"1")
    assert a.recv_publish().payload == b"1"
    assert bb.recv_publish().payload == b"1"
    a.ping()


def test_connect_empty_client_id_clean0_rejected(broker):
    """[MQTT-3.1.3-8] [MQTT-3.2.2-4] [MQTT-3.2.2-5] zero-length client id with clean session 0:
    CONNACK 20 02 00 02 (identifier rejected), then close."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("", clean=False))
    c.expect_bytes(bytes([0x20, 0x02, 0x00, 0x02]))
    c.expect_closed()


def test_connect_zero_length_id_disallowed_by_config(start_broker):
    """[MQTT-3.1.3-9] with allow_zero_length_clientid false an empty id is refused with
    CONNACK 0x02 and the connection closed; a named client is still accepted."""
    br = start_broker(["allow_zero_length_clientid false"])
    c = MqttConn(br.port)
    c.send(connect_pkt("", clean=True))
    c.expect_bytes(bytes([0x20, 0x02, 0x00, 0x02]))
    c.expect_closed()
    client(br, "named")


def test_connect_username_empty_password_accepted(broker):
    """[MQTT-3.1.2-19] [MQTT-3.1.2-21] [MQTT-3.1.3-1] user name with an empty password
    (both flags set) is a valid CONNECT: CONNACK 0 with anonymous access allowed."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("withuser", username="someone", password=b""))
    c.expect_bytes(CONNACK_OK)
    c.ping()


def test_connect_username_only_accepted(broker):
    """[MQTT-3.1.2-19] [MQTT-3.1.2-20] user name flag without password flag: CONNACK 0."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("useronly", username="u"))
    c.expect_bytes(CONNACK_OK)


def test_connect_password_without_username_closes(broker):
    """[MQTT-3.1.2-22] [MQTT-3.1.4-1] password flag set, user name flag clear: closed, no
    CONNACK."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("pwonly", password=b"secret"))
    c.expect_closed()
    _closed_log(broker, c, "password flag set without user name flag")


def test_connect_will_qos_without_will_flag_closes(broker):
    """[MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.4-1] will QoS 1 with will flag 0: closed."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("wq", will_flags=(1, False)))
    c.expect_closed()


def test_connect_will_retain_without_will_flag_closes(broker):
    """[MQTT-3.1.2-11] [MQTT-3.1.2-15] [MQTT-3.1.4-1] will retain 1 with will flag 0: closed."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("wr", will_flags=(0, True)))
    c.expect_closed()


def test_connect_will_qos3_closes(broker):
    """[MQTT-3.1.2-14] [MQTT-3.1.4-1] will flag with will QoS 3: closed without CONNACK."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("w3", will=("w/t", b"x", 3, False)))
    c.expect_closed()


def test_connect_client_id_invalid_utf8_closes(broker):
    """[MQTT-3.1.3-4] [MQTT-1.5.3-1] [MQTT-3.1.4-1] a client id that is not valid UTF-8:
    closed without CONNACK."""
    c = MqttConn(broker.port)
    c.send(connect_pkt(b"bad\xff\xfeid"))
    c.expect_closed()


def test_connect_will_topic_invalid_utf8_closes(broker):
    """[MQTT-3.1.3-10] [MQTT-1.5.3-1] [MQTT-3.1.4-1] a will topic that is not valid UTF-8:
    closed."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("wt", will=(b"a/\xc3", b"x", 0, False)))
    c.expect_closed()


def test_connect_will_topic_wildcard_closes(broker):
    """[MQTT-4.7.1-1] [MQTT-3.1.4-1] a will topic is a topic name: "a/#" is invalid, closed."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("ww", will=("a/#", b"x", 0, False)))
    c.expect_closed()


def test_connect_username_invalid_utf8_closes(broker):
    """[MQTT-3.1.3-11] [MQTT-1.5.3-1] [MQTT-3.1.4-1] a user name that is not valid UTF-8: closed."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("un", username=b"\xed\xa0\x80"))
    c.expect_closed()


def test_connect_truncated_payload_closes(broker):
    """[MQTT-3.1.3-3] [MQTT-3.1.4-1] CONNECT whose remaining length ends before the client
    id field: closed without CONNACK."""
    body = b"\x00\x04MQTT\x04\x02\x00\x3c"  # no client id at all
    c = MqttConn(broker.port)
    c.send(packet(1, 0, body))
    c.expect_closed()


def test_connect_user_name_bytes_without_flag_closes(broker):
    """[MQTT-3.1.2-18] [MQTT-3.1.4-1] User Name Flag 0 means no user name field: a CONNECT
    carrying one anyway has bytes left over and is closed without CONNACK."""
    good = connect_pkt("nouser")
    body = good[2:] + b"\x00\x04user"
    c = MqttConn(broker.port)
    c.send(packet(1, 0, body))
    c.expect_closed()


def test_connect_password_bytes_without_flag_closes(broker):
    """[MQTT-3.1.2-20] [MQTT-3.1.4-1] Password Flag 0 means no password field: a CONNECT with
    a user name and a trailing password field but no password flag is closed."""
    good = connect_pkt("nopass", username="u")
    body = good[2:] + b"\x00\x02pw"
    c = MqttConn(broker.port)
    c.send(packet(1, 0, body))
    c.expect_closed()


def test_connect_anonymous_refused_when_not_allowed(start_broker):
    """[MQTT-3.2.2-4] [MQTT-3.2.2-5] a config with a listener and no allow_anonymous refuses
    anonymous clients: CONNACK 20 02 00 05 then close (Mosquitto 2.0 rule)."""
    br = start_broker(anonymous=False)
    c = MqttConn(br.port)
    c.send(connect_pkt("anon"))
    c.expect_bytes(bytes([0x20, 0x02, 0x00, 0x05]))
    c.expect_closed()


def test_connect_data_after_refused_connect_ignored(start_broker):
    """[MQTT-3.1.4-5] data sent after a rejected CONNECT (in the same write) is ignored: a
    retained PUBLISH pipelined behind a level-2 CONNECT is never stored or delivered."""
    br = start_broker()
    sub = client(br, "obs")
    sub.subscribe([("ignored/#", 0)])
    c = MqttConn(br.port)
    c.send(connect_pkt("rej", proto_level=2) + publish_pkt("ignored/t", b"x", retain=True))
    c.expect_bytes(bytes([0x20, 0x02, 0x00, 0x01]))
    c.expect_closed()
    sub.expect_no_packet()
    late = client(br, "late")
    late.subscribe([("ignored/#", 0)])
    late.expect_no_packet()


def test_connect_logged_with_client_port(broker):
    """Connection and socket-close log lines name the client id and its address."""
    c = client(broker, "logme")
    broker.wait_log(rf"client logme connected from 127\.0\.0\.1:{c.local_port}\b")
    c.close()
    broker.wait_log(r"client logme disconnected: connection closed by peer")


def test_connect_keepalive_zero_accepted(broker):
    """[MQTT-3.1.4-4] keep alive 0 (umqtt.simple's default) is accepted with CONNACK 0."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("ka0", keepalive=0))
    c.expect_bytes(CONNACK_OK)
    c.expect_no_packet(QUIET)


def test_connect_connack_not_sent_twice(broker):
    """[MQTT-3.2.0-1] exactly one CONNACK per connection, nothing unrequested after it."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("once"))
    c.expect_bytes(CONNACK_OK)
    c.expect_no_packet()
    c.send(pingreq_pkt())
    c.expect_bytes(b"\xd0\x00")

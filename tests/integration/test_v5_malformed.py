"""v5_malformed_*: malformed packets and protocol errors on MQTT 5 connections (issue 13).

Byte-exact cases through the raw MqttConn5: bad property identifiers, properties a packet
may not carry (Malformed Packet, 0x81) against duplicated properties and forbidden values
(Protocol Error, 0x82), property lengths running past the packet, variable byte integers
not in their shortest form, topic aliases 0 / over the maximum / unknown, subscription
options with reserved bits or Retain Handling 3, No Local on a shared subscription, bad
UTF-8 in properties, wrong fixed-header flags, AUTH without an agreed method.

In CONNECT the answer is a CONNACK with the reason code, then the close ([MQTT-3.1.4-1]);
after a successful CONNACK it is a DISCONNECT with the reason code, then the close
([MQTT-4.13.1-1]). Every case then checks that the broker still serves other clients and
that only the offender was closed.
"""
import struct

import pytest

import midge_harness as h
from midge_harness import (AUTH, CONNACK, DISCONNECT, P_AUTH_DATA, P_AUTH_METHOD,
                           P_CONTENT_TYPE, P_MAXIMUM_PACKET_SIZE, P_MESSAGE_EXPIRY,
                           P_RECEIVE_MAXIMUM, P_REQUEST_PROBLEM_INFO, P_SESSION_EXPIRY,
                           P_SUBSCRIPTION_ID, P_TOPIC_ALIAS, P_USER, P_WILL_DELAY, PINGREQ,
                           PUBACK, PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, MqttConn5, ack5_pkt,
                           auth_pkt, client5, connect5_pkt, disconnect5_pkt, enc_len, enc_prop,
                           enc_str, packet, publish5_pkt, subscribe5_pkt, unsubscribe5_pkt)


def pub_raw(props_section, topic="m/t", qos=0, pid=1, payload=b"x", flags=None):
    """A PUBLISH whose property section (length included) is given as bytes."""
    body = enc_str(topic) + (struct.pack("!H", pid) if qos else b"") + props_section + payload
    return packet(PUBLISH, (qos << 1) if flags is None else flags, body)


def block(*props):
    """A property section (length + block) from (identifier, value) pairs."""
    blk = b"".join(enc_prop(i, v) for i, v in props)
    return enc_len(len(blk)) + blk


def utf8_prop(pid, raw):
    """A string property with raw (possibly invalid) UTF-8 bytes."""
    return bytes([pid]) + enc_str(raw)


def user_raw(name, value):
    return bytes([P_USER]) + enc_str(name) + enc_str(value)


def sec(raw_block):
    return enc_len(len(raw_block)) + raw_block


# (case id, bytes sent after a successful CONNECT, DISCONNECT reason code)
AFTER_CONNECT = [
    # 2.2.2.2: an identifier MQTT 5 does not define, or one the packet may not carry.
    ("unknown_property_id", pub_raw(sec(b"\x7f\x00")), 0x81),
    ("property_id_zero", pub_raw(sec(b"\x00\x01")), 0x81),
    ("session_expiry_in_publish", pub_raw(block((P_SESSION_EXPIRY, 5))), 0x81),
    ("content_type_in_subscribe",
     packet(SUBSCRIBE, 2, b"\x00\x01" + block((P_CONTENT_TYPE, "x")) + enc_str("a") + b"\x00"),
     0x81),
    ("subscription_id_in_unsubscribe",
     packet(UNSUBSCRIBE, 2, b"\x00\x01" + block((P_SUBSCRIPTION_ID, 1)) + enc_str("a")), 0x81),
    ("reason_string_in_publish", pub_raw(sec(b"\x1f" + enc_str("why"))), 0x81),
    # Repeated where only User Property (and a server's Subscription Identifier) may be.
    ("duplicate_content_type",
     pub_raw(block((P_CONTENT_TYPE, "a"), (P_CONTENT_TYPE, "b"))), 0x82),
    ("duplicate_message_expiry",
     pub_raw(block((P_MESSAGE_EXPIRY, 1), (P_MESSAGE_EXPIRY, 2))), 0x82),
    ("duplicate_subscription_id_in_subscribe",
     subscribe5_pkt(1, [("a", 0)], [(P_SUBSCRIPTION_ID, 1), (P_SUBSCRIPTION_ID, 2)]), 0x82),
    # Lengths and variable byte integers.
    ("property_length_past_packet", pub_raw(b"\x0a\x01\x01", payload=b""), 0x81),
    ("property_value_past_block", pub_raw(sec(b"\x02\x00\x00")), 0x81),
    ("nonminimal_remaining_length", b"\xc0\x80\x00", 0x81),
    ("nonminimal_property_length", pub_raw(b"\x80\x00"), 0x81),
    ("nonminimal_subscription_id",
     packet(SUBSCRIBE, 2, b"\x00\x01" + sec(b"\x0b\x85\x00") + enc_str("a") + b"\x00"), 0x81),
    ("remaining_length_five_bytes", b"\x30\xff\xff\xff\xff\x01", 0x81),
    ("trailing_after_puback_properties", packet(PUBACK, 0, b"\x00\x01\x00\x00\xff"), 0x81),
    # Values the standard forbids.
    ("subscription_id_zero", subscribe5_pkt(1, [("a", 0)], [(P_SUBSCRIPTION_ID, 0)]), 0x82),
    ("payload_format_2", pub_raw(block((0x01, 2))), 0x82),
    ("topic_alias_zero", pub_raw(block((P_TOPIC_ALIAS, 0))), 0x94),
    ("topic_alias_over_maximum", pub_raw(block((P_TOPIC_ALIAS, 11))), 0x94),
    ("topic_alias_unknown", pub_raw(block((P_TOPIC_ALIAS, 3)), topic=""), 0x82),
    ("empty_topic_without_alias", pub_raw(block(), topic=""), 0x82),
    ("response_topic_wildcard", pub_raw(block((0x08, "reply/#"))), 0x82),
    ("response_topic_empty", pub_raw(block((0x08, ""))), 0x82),
    # UTF-8 in properties (1.5.4, 1.5.7).
    ("response_topic_invalid_utf8", pub_raw(sec(utf8_prop(0x08, b"r\xff"))), 0x81),
    ("content_type_invalid_utf8", pub_raw(sec(utf8_prop(P_CONTENT_TYPE, b"\xc0\xaf"))), 0x81),
    ("content_type_surrogate", pub_raw(sec(utf8_prop(P_CONTENT_TYPE, b"\xed\xa0\x80"))), 0x81),
    ("content_type_nul", pub_raw(sec(utf8_prop(P_CONTENT_TYPE, b"a\x00b"))), 0x81),
    ("user_property_name_invalid_utf8", pub_raw(sec(user_raw(b"\xff", b"v"))), 0x81),
    ("user_property_value_invalid_utf8", pub_raw(sec(user_raw(b"k", b"\xf8\x88\x80\x80\x80"))),
     0x81),
    ("user_property_value_nul", pub_raw(sec(user_raw(b"k", b"\x00"))), 0x81),
    ("user_property_truncated_pair", pub_raw(sec(b"\x26" + enc_str("k"))), 0x81),
    # Subscription options (3.8.3.1).
    ("subscribe_reserved_option_bits", subscribe5_pkt(1, [("a", 0xC1)]), 0x81),
    ("subscribe_retain_handling_3", subscribe5_pkt(1, [("a", 0x30)]), 0x82),
    ("subscribe_maximum_qos_3", subscribe5_pkt(1, [("a", 0x03)]), 0x82),
    ("subscribe_no_local_on_shared", subscribe5_pkt(1, [("$share/g/a", 0x04)]), 0x82),
    ("subscribe_no_filters", subscribe5_pkt(1, []), 0x82),
    ("unsubscribe_no_filters", unsubscribe5_pkt(1, []), 0x82),
    ("subscribe_filter_invalid_utf8", subscribe5_pkt(1, [(b"a\xff", 0)]), 0x81),
    ("unsubscribe_filter_invalid_utf8", unsubscribe5_pkt(1, [b"\xc3"]), 0x81),
    ("subscribe_hash_not_last", subscribe5_pkt(1, [("a/#/b", 0)]), 0x81),
    ("subscribe_plus_not_alone", subscribe5_pkt(1, [("a/b+", 0)]), 0x81),
    ("subscribe_empty_filter", subscribe5_pkt(1, [("", 0)]), 0x81),
    ("subscribe_packet_id_zero", subscribe5_pkt(0, [("a", 0)]), 0x82),
    # Fixed-header flags (2.1.3) and PUBLISH header rules.
    ("subscribe_flags_0", subscribe5_pkt(1, [("a", 0)], flags=0), 0x81),
    ("unsubscribe_flags_0", unsubscribe5_pkt(1, ["a"], flags=0), 0x81),
    ("pubrel_flags_0", packet(PUBREL, 0, b"\x00\x01"), 0x81),
    ("pingreq_flags_1", packet(PINGREQ, 1, b""), 0x81),
    ("disconnect_flags_1", disconnect5_pkt(flags=1), 0x81),
    ("auth_flags_1", packet(AUTH, 1, b"\x18" + block((P_AUTH_METHOD, "x"))), 0x81),
    ("publish_qos3", pub_raw(block(), flags=0x06), 0x81),
    ("publish_qos0_dup", pub_raw(block(), flags=0x08), 0x81),
    ("publish_topic_wildcard", publish5_pkt("a/+", b"x"), 0x81),
    ("publish_topic_nul", publish5_pkt(b"a\x00b", b"x"), 0x81),
    ("publish_topic_invalid_utf8", publish5_pkt(b"a\xc3(", b"x"), 0x81),
    ("publish_packet_id_zero", publish5_pkt("a", b"x", qos=1, pid=0), 0x82),
    # Reason codes a client's packet may not carry, and packets a client may not send.
    ("puback_reason_not_in_table", ack5_pkt(PUBACK, 1, 0x05), 0x82),
    ("disconnect_reason_not_in_table", disconnect5_pkt(0x05), 0x82),
    ("auth_reason_not_in_table", auth_pkt(0x05, [(P_AUTH_METHOD, "x")]), 0x82),
    ("auth_without_method", auth_pkt(0x18, []), 0x82),
    ("auth_not_agreed", auth_pkt(0x19, [(P_AUTH_METHOD, "SCRAM-SHA-1")]), 0x82),
    ("client_sends_connack", packet(CONNACK, 0, b"\x00\x00\x00"), 0x82),
    ("reserved_type_0", packet(0, 0, b""), 0x81),
]


@pytest.mark.parametrize("data,reason", [c[1:] for c in AFTER_CONNECT],
                         ids=[c[0] for c in AFTER_CONNECT])
def test_v5_malformed_after_connect(broker, data, reason):
    """[MQTT-4.13.1-1] [MQTT-3.14.2-1] [MQTT-2.2.2-1] a malformed packet or protocol error on
    an MQTT 5 connection is answered with DISCONNECT and the reason code of its kind (0x81
    Malformed Packet: bad identifiers, properties the packet may not carry, lengths and
    variable byte integers ([MQTT-1.5.5-1]), UTF-8 ([MQTT-1.5.4-1] [MQTT-1.5.4-2]
    [MQTT-1.5.7-1] [MQTT-3.3.2-13] [MQTT-3.3.2-19]), reserved option bits ([MQTT-3.8.3-5])
    and fixed-header flags ([MQTT-2.1.3-1] [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
    [MQTT-3.14.1-1] [MQTT-3.15.1-1]), QoS 3 ([MQTT-3.3.1-4]), topic rules ([MQTT-3.3.2-2]
    [MQTT-4.7.0-1] [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.3-1] [MQTT-4.7.3-2]
    [MQTT-3.8.3-1] [MQTT-3.10.3-1]); 0x82 Protocol Error: duplicated properties, forbidden
    values ([MQTT-3.3.2-14]), Retain Handling 3, No Local on a shared subscription
    ([MQTT-3.8.3-4]), empty SUBSCRIBE/UNSUBSCRIBE ([MQTT-3.8.3-2] [MQTT-3.10.3-2]), reason
    codes outside the packet's table, AUTH without an agreed method; 0x94 Topic Alias
    invalid), then the close. Only the offender is closed; its will is published."""
    w = client5(broker, "watch")
    w.subscribe([("bad/will", 0)])
    c = client5(broker, "offender", will=("bad/will", b"gone", 0, False))
    c.send(data)
    d = c.expect_disconnect(reason)
    assert d.reason == reason
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("bad/will", b"gone")
    w.ping()


# (case id, CONNECT bytes, CONNACK reason code)
def _connect(**kw):
    return connect5_pkt("bad-connect", **kw)


def _connect_body_hack(good, old, new):
    """good with old replaced by new in its body, the remaining length fixed up."""
    body = good[2:].replace(old, new, 1)
    assert body != good[2:]
    return packet(1, 0, body)


CONNECTS = [
    ("wrong_property_topic_alias", _connect(props=[(P_TOPIC_ALIAS, 1)]), 0x81),
    ("unknown_property", _connect(props=b"\x7f\x00"), 0x81),
    ("duplicate_session_expiry",
     _connect(props=[(P_SESSION_EXPIRY, 1), (P_SESSION_EXPIRY, 2)]), 0x82),
    ("receive_maximum_zero", _connect(props=[(P_RECEIVE_MAXIMUM, 0)]), 0x82),
    ("maximum_packet_size_zero", _connect(props=[(P_MAXIMUM_PACKET_SIZE, 0)]), 0x82),
    ("request_problem_info_2", _connect(props=[(P_REQUEST_PROBLEM_INFO, 2)]), 0x82),
    ("auth_data_without_method", _connect(props=[(P_AUTH_DATA, b"x")]), 0x82),
    ("user_property_invalid_utf8", _connect(props=user_raw(b"k", b"\xff")), 0x81),
    ("will_property_session_expiry",
     _connect(will=("w", b"x", 0, False), will_props=[(P_SESSION_EXPIRY, 1)]), 0x81),
    ("will_property_duplicate_delay",
     _connect(will=("w", b"x", 0, False), will_props=[(P_WILL_DELAY, 1), (P_WILL_DELAY, 2)]),
     0x82),
    ("property_length_past_packet",
     _connect_body_hack(_connect(props=[(P_SESSION_EXPIRY, 1)]), b"\x05\x11", b"\x7f\x11"),
     0x81),
    ("nonminimal_property_length",
     _connect_body_hack(_connect(), b"\x00\x00\x0bbad-connect",
                        b"\x80\x00\x00\x0bbad-connect"),
     0x81),
    ("reserved_flag", _connect(flags=0x03), 0x81),
    ("will_qos3", _connect(flags=0x1E, will=("w", b"x", 0, False)), 0x81),
    ("will_qos_without_will_flag", _connect(will_flags=(1, False)), 0x81),
    ("will_retain_without_will_flag", _connect(will_flags=(0, True)), 0x81),
    ("will_flag_without_will_fields", _connect(flags=0x06), 0x81),
    ("will_topic_invalid_utf8", _connect(will=(b"w\xff", b"x", 0, False)), 0x81),
    ("will_topic_wildcard", _connect(will=("w/#", b"x", 0, False)), 0x81),
    ("user_name_flag_without_field", _connect(flags=0x82), 0x81),
    ("password_flag_without_field", _connect(flags=0x42), 0x81),
    ("user_name_invalid_utf8", _connect(username=b"u\xff"), 0x81),
    ("client_id_invalid_utf8", connect5_pkt(b"id\xc3"), 0x81),
]
_extra_user = connect5_pkt("bad-connect")
CONNECTS += [
    ("user_name_without_flag", packet(1, 0, _extra_user[2:] + enc_str("user")), 0x81),
    ("client_id_missing", packet(1, 0, _extra_user[2:2 + 10] + b"\x00"), 0x81),
]


@pytest.mark.parametrize("data,reason", [c[1:] for c in CONNECTS], ids=[c[0] for c in CONNECTS])
def test_v5_malformed_connect_answered_with_connack(broker, data, reason):
    """[MQTT-3.1.4-1] [MQTT-4.13.1-1] [MQTT-3.2.2-7] [MQTT-3.2.2-6] a malformed MQTT 5 CONNECT,
    or one breaking a rule of 3.1 (reserved flag [MQTT-3.1.2-3], will flags
    [MQTT-3.1.2-9] [MQTT-3.1.2-11] [MQTT-3.1.2-12] [MQTT-3.1.2-13], user name and password
    flags against the payload [MQTT-3.1.2-16] [MQTT-3.1.2-17] [MQTT-3.1.2-19], client id
    [MQTT-3.1.3-3] [MQTT-3.1.3-4], will topic [MQTT-3.1.3-11], user name [MQTT-3.1.3-12],
    properties: identifiers and placement 0x81, duplicates and values 0x82), is answered with
    CONNACK carrying the reason code (Session Present 0), never a DISCONNECT
    ([MQTT-3.14.0-1]), then the close."""
    c = MqttConn5(broker.port)
    c.send(data)
    ack = c.expect_refused(reason)
    assert ack.session_present is False
    client5(broker, "still-serving").ping()


def test_v5_malformed_connect_nonminimal_remaining_length(broker):
    """[MQTT-1.5.5-1] an MQTT 5 CONNECT whose remaining length is not in its shortest form
    (two bytes for a value under 128) is refused: CONNACK 0x81, or the close without one."""
    good = connect5_pkt("nm")
    assert good[1] < 128
    c = MqttConn5(broker.port)
    c.send(bytes([good[0], good[1] | 0x80, 0x00]) + good[2:])
    got = c.expect_closed(allow=(CONNACK,))
    for p in got:
        assert h.parse_connack5(p).reason == 0x81


def test_v5_malformed_client_publish_with_subscription_id_not_forwarded(broker):
    """[MQTT-3.3.4-6] (client obligation) a client's PUBLISH must not carry a Subscription
    Identifier. The standard names no reaction; midge, like Mosquitto 2.0, takes the message
    and does not forward the identifier: the subscriber sees only its own."""
    sub = client5(broker, "sub")
    sub.subscribe([("sid/#", 1)], props=[(P_SUBSCRIPTION_ID, 9)])
    pub = client5(broker, "pub")
    pub.send(pub_raw(block((P_SUBSCRIPTION_ID, 3)), topic="sid/t", qos=1, pid=4))
    assert h.parse_ack5(pub.expect(PUBACK)).pid == 4
    m = sub.recv_publish()
    assert (m.topic, m.props.all(P_SUBSCRIPTION_ID)) == ("sid/t", [9])


def test_v5_malformed_only_offender_closed(broker):
    """[MQTT-4.13.1-1] after a Malformed Packet the server closes that one connection: a
    subscriber on the same topic keeps receiving, and the broker serves a new client."""
    sub = client5(broker, "sub")
    sub.subscribe([("only/#", 1)])
    bad = client5(broker, "bad")
    bad.send(pub_raw(sec(b"\x7f\x00"), topic="only/t"))
    bad.expect_disconnect(0x81)
    client5(broker, "good").publish("only/t", b"fine", qos=1)
    assert sub.recv_publish().payload == b"fine"
    sub.expect_no_packet()


def test_v5_malformed_disconnect_after_error_ends_processing(broker):
    """[MQTT-4.13.2-1] once the server has sent DISCONNECT 0x82 it processes nothing more from
    that connection: a retained PUBLISH in the same write after the bad packet is neither
    delivered nor stored."""
    c = client5(broker, "late")
    c.send(subscribe5_pkt(1, [("x", 0x30)]) + publish5_pkt("late/t", b"x", retain=True))
    c.expect_disconnect(0x82)
    s = client5(broker, "s")
    s.subscribe([("late/#", 0)])
    s.expect_no_packet()


def test_v5_malformed_server_disconnect_uses_table(broker):
    """[MQTT-3.14.2-1] [MQTT-2.2.2-1] the DISCONNECT the server sends carries a reason code of
    the DISCONNECT table and a property block (a Reason String) whose length matches it,
    byte for byte as parse_disconnect5 reads it."""
    c = client5(broker, "tbl")
    c.send(packet(DISCONNECT, 1, b""))
    p = c.recv()
    assert p.type == DISCONNECT and p.body[0] == 0x81
    d = h.parse_disconnect5(p)
    assert d.props.get(0x1F)


def test_v5_malformed_auth_as_first_packet(broker):
    """[MQTT-3.1.0-1] [MQTT-3.14.0-1] an AUTH before any CONNECT is a protocol violation: the
    connection is closed without CONNACK or DISCONNECT."""
    c = MqttConn5(broker.port)
    c.send(auth_pkt(0x18, [(P_AUTH_METHOD, "SCRAM-SHA-1")]))
    assert c.expect_closed() == []

"""malformed_*: every malformed-packet rule closes only the offending connection, with no
reply, a precise log line and the will published (MQTT 3.1.1 sections 1.5.3, 2.2.2, 2.3.1,
3.3-3.14, 4.7, 4.8)."""
import re

from midge_harness import (MqttConn, client, connect_pkt, enc_len, enc_str, packet,
                           pingreq_pkt, publish_pkt, pubrel_pkt, subscribe_pkt,
                           unsubscribe_pkt)


def _closes(broker, data, reason=None, cid="bad"):
    """Connect as cid (with a will), send data, and check: connection closed without any
    packet, will published to a watcher, broker log names the reason, broker still serves."""
    w = client(broker, "watch")
    w.subscribe([("will/#", 0)])
    c = client(broker, cid, will=(f"will/{cid}", b"dead", 0, False))
    c.send(data)
    c.expect_closed()
    m = w.recv_publish()
    assert (m.topic, m.payload) == (f"will/{cid}", b"dead")
    if reason is not None:
        broker.wait_log(rf"client {cid} disconnected: protocol error: {re.escape(reason)}")
    w.ping()


def _sub_closes(broker, topics, reason=None):
    _closes(broker, subscribe_pkt(1, topics), reason)


# -- PUBLISH topic names ----------------------------------------------------------------

def test_malformed_publish_topic_plus_wildcard(broker):
    """[MQTT-3.3.2-2] [MQTT-4.7.1-1] [MQTT-4.8.0-1] PUBLISH to "a/+/c": closed."""
    _closes(broker, publish_pkt("a/+/c", b"x"), "wildcard character in topic name")


def test_malformed_publish_topic_hash_wildcard(broker):
    """[MQTT-3.3.2-2] [MQTT-4.7.1-1] PUBLISH to "a/#": closed."""
    _closes(broker, publish_pkt("a/#", b"x", qos=1, pid=1), "wildcard character in topic name")


def test_malformed_publish_topic_invalid_utf8(broker):
    """[MQTT-1.5.3-1] [MQTT-3.3.2-1] a topic with byte FF (never valid UTF-8): closed."""
    _closes(broker, publish_pkt(b"a/\xff", b"x"), "string is not valid UTF-8")


def test_malformed_publish_topic_overlong_utf8(broker):
    """[MQTT-1.5.3-1] an overlong encoding (C0 AF for "/") is not valid UTF-8: closed."""
    _closes(broker, publish_pkt(b"a\xc0\xafb", b"x"), "string is not valid UTF-8")


def test_malformed_publish_topic_truncated_utf8(broker):
    """[MQTT-1.5.3-1] a multi-byte sequence cut short (E2 82 then end): closed."""
    _closes(broker, publish_pkt(b"a/\xe2\x82", b"x"), "string is not valid UTF-8")


def test_malformed_publish_topic_nul(broker):
    """[MQTT-1.5.3-2] [MQTT-4.7.3-2] a topic containing U+0000: closed."""
    _closes(broker, publish_pkt(b"a\x00b", b"x"), "string contains U+0000")


def test_malformed_publish_topic_surrogate(broker):
    """[MQTT-1.5.3-1] a topic containing the surrogate U+D800 (ED A0 80): closed."""
    _closes(broker, publish_pkt(b"a/\xed\xa0\x80", b"x"),
            "string contains a UTF-16 surrogate code point")


def test_malformed_publish_empty_topic(broker):
    """[MQTT-4.7.3-1] a zero-length topic name: closed."""
    _closes(broker, publish_pkt(b"", b"x"), "zero-length topic")


def test_malformed_publish_qos3(broker):
    """[MQTT-3.3.1-4] PUBLISH with both QoS bits set: closed."""
    _closes(broker, packet(3, 0x06, enc_str("q/3") + b"\x00\x01x"), "QoS 3 is reserved")


def test_malformed_publish_packet_id_zero(broker):
    """[MQTT-2.3.1-1] a QoS 1 PUBLISH with packet id 0: closed."""
    _closes(broker, publish_pkt("p/0", b"x", qos=1, pid=0), "packet identifier 0")


def test_malformed_publish_qos2_packet_id_zero(broker):
    """[MQTT-2.3.1-1] a QoS 2 PUBLISH with packet id 0: closed."""
    _closes(broker, publish_pkt("p/0", b"x", qos=2, pid=0), "packet identifier 0")


def test_malformed_publish_truncated_topic(broker):
    """[MQTT-3.3.2-1] a topic length that runs past the remaining length: closed."""
    _closes(broker, packet(3, 0, b"\x00\x10abc"), "packet shorter than its fields")


def test_malformed_publish_qos1_without_packet_id(broker):
    """[MQTT-2.3.1-1] a QoS 1 PUBLISH that ends right after its topic (no packet id): closed."""
    _closes(broker, packet(3, 0x02, enc_str("a/b")))


# -- fixed-header flags -----------------------------------------------------------------

def test_malformed_subscribe_flags_zero(broker):
    """[MQTT-3.8.1-1] [MQTT-2.2.2-1] [MQTT-2.2.2-2] SUBSCRIBE with flags 0000: closed."""
    _closes(broker, subscribe_pkt(1, [("a", 0)], flags=0),
            "reserved fixed-header flags have wrong values")


def test_malformed_unsubscribe_flags_zero(broker):
    """[MQTT-3.10.1-1] [MQTT-2.2.2-2] UNSUBSCRIBE with flags 0000: closed."""
    _closes(broker, unsubscribe_pkt(1, ["a"], flags=0),
            "reserved fixed-header flags have wrong values")


def test_malformed_pubrel_flags_zero(broker):
    """[MQTT-3.6.1-1] [MQTT-2.2.2-2] PUBREL with flags 0000: closed."""
    _closes(broker, pubrel_pkt(1, flags=0), "reserved fixed-header flags have wrong values")


def test_malformed_pingreq_flags(broker):
    """[MQTT-2.2.2-1] [MQTT-2.2.2-2] PINGREQ with flags 0001: closed, no PINGRESP."""
    _closes(broker, pingreq_pkt(flags=1), "reserved fixed-header flags have wrong values")


def test_malformed_puback_flags(broker):
    """[MQTT-2.2.2-1] [MQTT-2.2.2-2] PUBACK with flags 0010: closed."""
    _closes(broker, packet(4, 2, b"\x00\x01"), "reserved fixed-header flags have wrong values")


def test_malformed_disconnect_flags(broker):
    """[MQTT-3.14.1-1] [MQTT-2.2.2-2] DISCONNECT with flags 0001 is not a DISCONNECT: the
    connection is closed as a protocol error and the will IS published."""
    _closes(broker, packet(14, 1, b""), "reserved fixed-header flags have wrong values")


# -- SUBSCRIBE / UNSUBSCRIBE payloads -----------------------------------------------------

def test_malformed_subscribe_empty(broker):
    """[MQTT-3.8.3-3] SUBSCRIBE with a packet id and no filter: closed, no SUBACK."""
    _closes(broker, packet(8, 2, b"\x00\x01"), "SUBSCRIBE/UNSUBSCRIBE with no topic filter")


def test_malformed_unsubscribe_empty(broker):
    """[MQTT-3.10.3-2] UNSUBSCRIBE with no filter: closed, no UNSUBACK."""
    _closes(broker, packet(10, 2, b"\x00\x01"), "SUBSCRIBE/UNSUBSCRIBE with no topic filter")


def test_malformed_subscribe_packet_id_zero(broker):
    """[MQTT-2.3.1-1] SUBSCRIBE with packet id 0: closed."""
    _closes(broker, subscribe_pkt(0, [("a", 0)]), "packet identifier 0")


def test_malformed_unsubscribe_packet_id_zero(broker):
    """[MQTT-2.3.1-1] UNSUBSCRIBE with packet id 0: closed."""
    _closes(broker, unsubscribe_pkt(0, ["a"]), "packet identifier 0")


def test_malformed_subscribe_qos3(broker):
    """[MQTT-3.8.3-4] requested QoS 3: closed."""
    _sub_closes(broker, [("a", 3)])


def test_malformed_subscribe_reserved_bits(broker):
    """[MQTT-3.8.3-4] requested-QoS byte with reserved bits set (0x04): closed."""
    _sub_closes(broker, [("a", 0x04)], "reserved bits of requested QoS are set")


def test_malformed_subscribe_reserved_bits_second_filter(broker):
    """[MQTT-3.8.3-4] reserved bits in the second filter's QoS byte (0x81): closed."""
    _sub_closes(broker, [("a", 0), ("b", 0x81)], "reserved bits of requested QoS are set")


def test_malformed_subscribe_missing_qos_byte(broker):
    """[MQTT-3.8.3-1] a filter not followed by its requested-QoS byte: closed."""
    _closes(broker, packet(8, 2, b"\x00\x01" + enc_str("a/b")))


def test_malformed_subscribe_hash_not_last(broker):
    """[MQTT-4.7.1-2] filter "a/#/b": closed."""
    _sub_closes(broker, [("a/#/b", 0)], "wildcard not alone in its level or '#' not last")


def test_malformed_subscribe_hash_not_alone(broker):
    """[MQTT-4.7.1-2] filter "a/b#": closed."""
    _sub_closes(broker, [("a/b#", 0)], "wildcard not alone in its level or '#' not last")


def test_malformed_subscribe_plus_not_alone(broker):
    """[MQTT-4.7.1-3] filter "a+": closed."""
    _sub_closes(broker, [("a+", 0)], "wildcard not alone in its level or '#' not last")


def test_malformed_subscribe_plus_prefix(broker):
    """[MQTT-4.7.1-3] filter "a/+b/c": closed."""
    _sub_closes(broker, [("a/+b/c", 1)], "wildcard not alone in its level or '#' not last")


def test_malformed_subscribe_empty_filter(broker):
    """[MQTT-4.7.3-1] a zero-length topic filter: closed."""
    _sub_closes(broker, [("", 0)])


def test_malformed_subscribe_filter_invalid_utf8(broker):
    """[MQTT-3.8.3-1] [MQTT-1.5.3-1] a topic filter that is not valid UTF-8: closed."""
    _sub_closes(broker, [(b"a/\xfe", 0)], "string is not valid UTF-8")


def test_malformed_subscribe_filter_nul(broker):
    """[MQTT-4.7.3-2] [MQTT-1.5.3-2] a topic filter containing U+0000: closed."""
    _sub_closes(broker, [(b"a/\x00", 0)], "string contains U+0000")


def test_malformed_unsubscribe_filter_invalid_utf8(broker):
    """[MQTT-3.10.3-1] [MQTT-1.5.3-1] an UNSUBSCRIBE filter that is not valid UTF-8: closed."""
    _closes(broker, unsubscribe_pkt(1, [b"\xed\xbf\xbf"]))


# -- packet types and framing -------------------------------------------------------------

def test_malformed_reserved_type_0(broker):
    """[MQTT-2.2.2-2] [MQTT-4.8.0-1] packet type 0 (reserved): closed."""
    _closes(broker, b"\x00\x00", "reserved packet type 0 or 15")


def test_malformed_reserved_type_15(broker):
    """[MQTT-4.8.0-1] packet type 15 (reserved): closed."""
    _closes(broker, b"\xf0\x00", "reserved packet type 0 or 15")


def test_malformed_client_sends_connack(broker):
    """[MQTT-4.8.0-1] a client may not send CONNACK: closed."""
    _closes(broker, b"\x20\x02\x00\x00", "packet type a client must not send")


def test_malformed_client_sends_suback(broker):
    """[MQTT-4.8.0-1] a client may not send SUBACK: closed."""
    _closes(broker, b"\x90\x03\x00\x01\x00", "packet type a client must not send")


def test_malformed_client_sends_unsuback(broker):
    """[MQTT-4.8.0-1] a client may not send UNSUBACK: closed."""
    _closes(broker, b"\xb0\x02\x00\x01", "packet type a client must not send")


def test_malformed_client_sends_pingresp(broker):
    """[MQTT-4.8.0-1] a client may not send PINGRESP: closed."""
    _closes(broker, b"\xd0\x00", "packet type a client must not send")


def test_malformed_remaining_length_five_bytes(broker):
    """[MQTT-4.8.0-1] a remaining length using a fifth byte: closed."""
    _closes(broker, b"\x30\xff\xff\xff\xff\x01", "remaining length uses more than 4 bytes")


def test_malformed_puback_trailing_bytes(broker):
    """[MQTT-4.8.0-1] PUBACK with remaining length 3 (must be 2): closed."""
    _closes(broker, b"\x40\x03\x00\x01\x00")


def test_malformed_pingreq_with_body(broker):
    """[MQTT-4.8.0-1] PINGREQ with remaining length 1 (must be 0): closed, no PINGRESP."""
    _closes(broker, b"\xc0\x01\x00")


def test_malformed_http_request_before_connect(broker):
    """[MQTT-3.1.0-1] an HTTP request on the MQTT port ("GET ..." = packet type 4): closed,
    nothing sent back."""
    c = MqttConn(broker.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    c.expect_closed()


def test_malformed_only_offender_closed(broker):
    """[MQTT-4.8.0-1] a protocol violation closes only that connection: another client
    keeps publishing and receiving."""
    good = client(broker, "good")
    good.subscribe([("ok/t", 1)])
    for data in (b"\x00\x00", publish_pkt("x/#", b""), packet(8, 0, b"\x00\x01\x00\x01a\x00")):
        bad = client(broker, "evil")
        bad.send(data)
        bad.expect_closed()
    good.publish("ok/t", b"fine", qos=1)
    assert good.recv_publish().payload == b"fine"


# -- size limits ---------------------------------------------------------------------------

def test_malformed_max_packet_size_exceeded(start_broker):
    """[MQTT-4.8.0-1] with max_packet_size 1000 a 2,000-byte PUBLISH closes the connection
    (logged); a 500-byte one is delivered."""
    br = start_broker(["max_packet_size 1000"])
    w = client(br, "w")
    w.subscribe([("big/#", 0)])
    c = client(br, "big")
    c.publish("big/ok", b"s" * 500)
    assert w.recv_publish().payload == b"s" * 500
    c.send(publish_pkt("big/no", b"L" * 2000))
    c.expect_closed()
    br.wait_log(r"client big disconnected: .*packet larger than the configured maximum")
    w.expect_no_packet()


def test_malformed_max_packet_size_checked_on_header(start_broker):
    """[MQTT-4.8.0-1] a fixed header announcing 10 MB beyond max_packet_size closes the
    connection without the body ever being sent (memory stays bounded)."""
    br = start_broker(["max_packet_size 1000"])
    c = client(br, "hdr")
    c.send(b"\x30" + enc_len(10 * 1024 * 1024) + enc_str("a/b"))
    c.expect_closed()


def test_malformed_connect_too_large(start_broker):
    """[MQTT-3.1.4-1] a CONNECT bigger than max_packet_size: closed without CONNACK."""
    br = start_broker(["max_packet_size 200"])
    c = MqttConn(br.port)
    c.send(connect_pkt("x", will=("w/t", b"p" * 500, 0, False)))
    c.expect_closed()

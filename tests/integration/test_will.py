"""will_*: last will and testament through the real binary (MQTT 3.1.1 sections 3.1.2.5-7,
3.14.4)."""
from midge_harness import (MqttConn, client, connect_pkt, disconnect_pkt, publish_pkt)


def _watcher(broker, flt="will/#", qos=2, cid="watch"):
    w = client(broker, cid)
    w.subscribe([(flt, qos)])
    return w


def test_will_on_socket_close(broker):
    """[MQTT-3.1.2-8] [MQTT-3.1.2-9] [MQTT-3.1.2-16] closing the socket without DISCONNECT
    publishes the will with its topic, payload and QoS, not retained."""
    w = _watcher(broker)
    c = client(broker, "dies", will=("will/dies", b"gone", 1, False))
    c.close()
    m = w.recv_publish()
    assert (m.topic, m.payload, m.qos, m.retain) == ("will/dies", b"gone", 1, False)
    broker.wait_log(r"client dies disconnected: connection closed by peer")
    late = _watcher(broker, cid="late")
    late.expect_no_packet()


def test_will_not_after_disconnect(broker):
    """[MQTT-3.14.4-3] [MQTT-3.1.2-10] after DISCONNECT the will is discarded, never
    published."""
    w = _watcher(broker)
    c = client(broker, "polite", will=("will/polite", b"gone", 0, False))
    c.send(disconnect_pkt())
    c.close()
    broker.wait_log(r"client polite disconnected: DISCONNECT received")
    w.expect_no_packet()


def test_will_on_protocol_error(broker):
    """[MQTT-3.1.2-8] [MQTT-4.8.0-1] a protocol violation (PUBLISH with QoS 3) closes the
    connection and publishes the will."""
    w = _watcher(broker)
    c = client(broker, "bad", will=("will/bad", b"err", 0, False))
    c.send(bytes([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]))
    c.expect_closed()
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("will/bad", b"err")
    broker.wait_log(r"client bad disconnected: protocol error: QoS 3 is reserved")


def test_will_on_takeover(broker):
    """[MQTT-3.1.4-2] [MQTT-3.1.2-8] a second connection with the same client id closes the
    first, whose will is published."""
    w = _watcher(broker)
    first = client(broker, "dup", will=("will/dup", b"old", 1, False))
    second = MqttConn(broker.port)
    second.send(connect_pkt("dup"))
    second.expect_bytes(b"\x20\x02\x00\x00")
    first.expect_closed()
    m = w.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("will/dup", b"old", 1)
    broker.wait_log(rf"client dup\b.*\btaken over by 127\.0\.0\.1:{second.local_port}\b")
    second.ping()


def test_will_retained(broker):
    """[MQTT-3.1.2-17] [MQTT-3.3.1-8] [MQTT-3.3.1-9] a will with Will Retain 1 is published
    as a retained message: a later subscriber gets it with RETAIN 1 (the live subscriber
    with RETAIN 0)."""
    w = _watcher(broker)
    c = client(broker, "ret", will=("will/ret", b"offline", 1, True))
    c.close()
    m = w.recv_publish()
    assert (m.payload, m.retain) == (b"offline", False)
    late = client(broker, "late")
    late.subscribe([("will/ret", 1)])
    m = late.recv_publish()
    assert (m.payload, m.qos, m.retain) == (b"offline", 1, True)


def test_will_not_retained_leaves_no_retained(broker):
    """[MQTT-3.1.2-16] a will with Will Retain 0 does not become a retained message."""
    c = client(broker, "nr", will=("will/nr", b"x", 0, False))
    c.close()
    broker.wait_log(r"client nr disconnected")
    w = _watcher(broker, qos=0)
    w.ping()
    w.expect_no_packet()


def test_will_qos2_delivery(broker):
    """[MQTT-3.1.2-9] [MQTT-3.8.4-6] a QoS 2 will reaches a QoS 2 subscriber at QoS 2 and a
    QoS 0 subscriber at QoS 0."""
    w2 = _watcher(broker, qos=2, cid="w2")
    w0 = _watcher(broker, qos=0, cid="w0")
    c = client(broker, "q2", will=("will/q2", b"two", 2, False))
    c.close()
    m2 = w2.recv_publish()
    m0 = w0.recv_publish()
    assert (m2.qos, m2.payload, m0.qos, m0.payload) == (2, b"two", 0, b"two")


def test_no_will_flag_nothing_published(broker):
    """[MQTT-3.1.2-12] without the Will Flag nothing is published when the connection drops."""
    w = _watcher(broker, flt="#")
    c = client(broker, "nowill")
    c.close()
    broker.wait_log(r"client nowill disconnected")
    w.expect_no_packet()


def test_will_published_once(broker):
    """[MQTT-3.1.2-10] the will is dropped once published: a takeover publishes the first
    connection's will, and the new connection (no will) leaves with nothing more."""
    w = _watcher(broker)
    first = client(broker, "one", will=("will/one", b"w", 0, False))
    second = client(broker, "one")
    first.expect_closed()
    assert w.recv_publish().payload == b"w"
    second.close()
    broker.wait_log(r"client one disconnected")
    w.expect_no_packet()


def test_will_empty_payload(broker):
    """[MQTT-3.1.2-9] a will message may be zero bytes long; it is published as such."""
    w = _watcher(broker, qos=0)
    c = client(broker, "empty", will=("will/empty", b"", 0, False))
    c.close()
    w.expect_bytes(publish_pkt("will/empty", b""))

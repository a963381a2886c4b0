"""v5_interop_*: MQTT 5 with real clients, and MQTT 3.1.1 and 5.0 clients together (issue 13).

mosquitto_pub / mosquitto_sub -V mqttv5 with properties (-D publish user-property,
content-type, response-topic, correlation-data, payload-format-indicator,
message-expiry-interval; -D connect session-expiry-interval; --retain-as-published) and
their -F output; paho-mqtt MQTTv311 and MQTTv5 clients on the same topics; raw 3.1.1 and
5.0 clients both ways at QoS 0, 1 and 2, where the 3.1.1 side gets byte-exact 3.1.1
packets without properties.

Each test starts its own broker; mosquitto_sub is started in debug mode and the test waits
for its "Subscribed" line before publishing.
"""
import midge_harness as h
from midge_harness import (P_CONTENT_TYPE, P_CORRELATION_DATA, P_MESSAGE_EXPIRY,
                           P_PAYLOAD_FORMAT, P_RESPONSE_TOPIC, P_SESSION_EXPIRY, P_USER, MqttConn5,
                           Paho5, client5, publish_pkt)

PROPS = [(P_PAYLOAD_FORMAT, 1), (P_CONTENT_TYPE, "text/plain"), (P_RESPONSE_TOPIC, "mx/reply"),
         (P_CORRELATION_DATA, b"cd-1"), (P_USER, ("k1", "v1")), (P_USER, ("k2", "v2"))]


def test_v5_interop_mosquitto_properties_end_to_end(broker):
    """[MQTT-3.3.2-4] [MQTT-3.3.2-6] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17]
    [MQTT-3.3.2-18] [MQTT-3.3.2-20] mosquitto_pub -V mqttv5 with -D publish user-property (two),
    content-type, response-topic, correlation-data, payload-format-indicator and
    message-expiry-interval: mosquitto_sub -V mqttv5 prints each of them with -F (%P %C %R
    %D %F %E), the User Properties in order; a raw MQTT 5 subscriber sees the same."""
    raw = client5(broker, "raw")
    raw.subscribe([("mx/#", 1)])
    sub = h.SubProc(broker.port, "-V", "mqttv5", "-t", "mx/#", "-q", "1",
                    "-F", "%t|%p|%P|%C|%R|%D|%F|%E")
    try:
        h.run_pub(broker.port, "-V", "mqttv5", "-t", "mx/t", "-m", "hello", "-q", "1",
                  "-D", "publish", "user-property", "k1", "v1",
                  "-D", "publish", "user-property", "k2", "v2",
                  "-D", "publish", "content-type", "text/plain",
                  "-D", "publish", "response-topic", "mx/reply",
                  "-D", "publish", "correlation-data", "cd-1",
                  "-D", "publish", "payload-format-indicator", "1",
                  "-D", "publish", "message-expiry-interval", "60")
        (line,) = sub.wait_messages(1)
        topic, payload, user, ctype, rtopic, cdata, pfi, expiry = line.split("|")
        assert (topic, payload, ctype, rtopic, cdata, pfi) == \
            ("mx/t", "hello", "text/plain", "mx/reply", "cd-1", "1")
        assert user.split() == ["k1:v1", "k2:v2"]
        assert int(expiry) in (59, 60)
    finally:
        sub.stop()
    m = raw.recv_publish()
    assert m.props.user == [("k1", "v1"), ("k2", "v2")]
    assert (m.props.get(P_CONTENT_TYPE), m.props.get(P_RESPONSE_TOPIC),
            m.props.get(P_CORRELATION_DATA), m.props.get(P_PAYLOAD_FORMAT)) == \
        ("text/plain", "mx/reply", b"cd-1", 1)
    assert m.props.get(P_MESSAGE_EXPIRY) in (59, 60)


def test_v5_interop_mosquitto_sub_v311_gets_v5_messages(broker):
    """[MQTT-4.5.0-1] a message published with properties by mosquitto_pub -V mqttv5 reaches
    mosquitto_sub -V mqttv311 as a plain 3.1.1 message (payload intact, no properties to
    print)."""
    sub = h.SubProc(broker.port, "-V", "mqttv311", "-t", "m3/#", "-q", "2", "-v")
    try:
        h.run_pub(broker.port, "-V", "mqttv5", "-t", "m3/t", "-m", "from five", "-q", "2",
                  "-D", "publish", "user-property", "k", "v")
        assert sub.wait_messages(1) == ["m3/t from five"]
    finally:
        sub.stop()


def test_v5_interop_mosquitto_connect_session_expiry(broker):
    """[MQTT-3.1.2-23] mosquitto_sub -V mqttv5 -D connect session-expiry-interval 60 (Clean
    Start 1) leaves a session behind when it exits: a raw MQTT 5 client resuming that client
    id (Clean Start 0) gets Session Present 1 and the message published meanwhile."""
    sub = h.SubProc(broker.port, "-V", "mqttv5", "-i", "msx", "-t", "msx/t", "-q", "1",
                    "-D", "connect", "session-expiry-interval", "60")
    mark = broker.mark()
    sub.stop()
    broker.wait_log(r"client msx disconnected", since=mark)
    client5(broker, "pub").publish("msx/t", b"kept", qos=1, expect_reason=0)
    back = client5(broker, "msx", clean=False, props=[(P_SESSION_EXPIRY, 60)], expect_sp=True)
    m = back.recv_publish()
    assert (m.topic, m.payload) == ("msx/t", b"kept")


def test_v5_interop_mosquitto_sub_retain_as_published(broker):
    """[MQTT-3.3.1-13] mosquitto_sub -V mqttv5 --retain-as-published prints RETAIN 1 (%r) for
    a retained message forwarded live; without it, 0 ([MQTT-3.3.1-12])."""
    rap = h.SubProc(broker.port, "-V", "mqttv5", "-t", "mrap/#", "--retain-as-published",
                    "-F", "%r %p")
    plain = h.SubProc(broker.port, "-V", "mqttv5", "-t", "mrap/#", "-F", "%r %p")
    try:
        h.run_pub(broker.port, "-V", "mqttv5", "-t", "mrap/t", "-m", "live", "-r")
        assert rap.wait_messages(1) == ["1 live"]
        assert plain.wait_messages(1) == ["0 live"]
    finally:
        rap.stop()
        plain.stop()
    h.run_pub(broker.port, "-t", "mrap/t", "-r", "-n")


def test_v5_interop_raw_v311_and_v5_both_ways(broker):
    """[MQTT-2.2.2-1] [MQTT-4.5.0-1] 3.1.1 and 5.0 clients on the same topics, QoS 0, 1 and 2
    both ways: what the MQTT 5
    client publishes (with properties) reaches the 3.1.1 subscriber as the exact 3.1.1
    PUBLISH with no properties; what the 3.1.1 client publishes reaches the MQTT 5 subscriber
    with an empty property block ([MQTT-2.2.2-1]); retained messages too."""
    v3 = h.client(broker, "three")
    v3.subscribe([("from5/#", 2)])
    v5 = client5(broker, "five")
    v5.subscribe([("from3/#", 2)])
    for qos in (0, 1, 2):
        v5.publish(f"from5/q{qos}", b"five", qos=qos, props=PROPS)
        p = v3.recv()
        m = h.parse_publish(p)
        assert p.raw() == publish_pkt(f"from5/q{qos}", b"five", qos=qos, pid=m.pid)
        if qos == 1:
            v3.send(h.puback_pkt(m.pid))
        elif qos == 2:
            v3.send(h.pubrec_pkt(m.pid))
            v3.expect_bytes(h.pubrel_pkt(m.pid))
            v3.send(h.pubcomp_pkt(m.pid))
        v3.publish(f"from3/q{qos}", b"three", qos=qos)
        n = v5.recv_publish()
        assert (n.topic, n.payload, n.qos, n.props.items) == (f"from3/q{qos}", b"three", qos, [])
    v5.publish("from5/ret", b"r5", qos=1, retain=True, props=PROPS)
    v3.recv_publish()
    late3 = h.client(broker, "late3")
    late3.subscribe([("from5/ret", 1)])
    p = late3.recv()
    m = h.parse_publish(p)
    assert p.raw() == publish_pkt("from5/ret", b"r5", qos=1, retain=True, pid=m.pid)
    late5 = client5(broker, "late5")
    late5.subscribe([("from5/ret", 1)])
    n = late5.recv_publish()
    assert (n.payload, n.retain, n.props.items) == (b"r5", True, PROPS)


def test_v5_interop_wills_across_versions(broker):
    """[MQTT-3.1.2-7] [MQTT-3.1.3-10] a 5.0 client's will (with properties) reaches a 3.1.1
    subscriber without them (and a 5.0 one with them); a 3.1.1
    client's will reaches a 5.0 subscriber with an empty property block."""
    w3 = h.client(broker, "w3")
    w3.subscribe([("xw/#", 1)])
    w5 = client5(broker, "w5")
    w5.subscribe([("xw/#", 1)])
    c5 = client5(broker, "dies5", will=("xw/five", b"gone5", 1, False),
                 will_props=[(P_USER, ("k", "v"))])
    c5.close()
    assert h.parse_publish(w3.recv()).payload == b"gone5"
    m = w5.recv_publish()
    assert (m.payload, m.props.user) == (b"gone5", [("k", "v")])
    c3 = h.client(broker, "dies3", will=("xw/three", b"gone3", 1, False))
    c3.close()
    m = w5.recv_publish()
    assert (m.payload, m.props.items) == (b"gone3", [])
    w3.recv_publish()


def test_v5_interop_paho_v311_and_v5(broker):
    """[MQTT-4.5.0-1] [MQTT-3.8.4-8] paho-mqtt's MQTTv311 and MQTTv5 clients exchange messages
    at QoS 0, 1 and 2 both
    ways; the v5 side's User Properties do not disturb the 3.1.1 side."""
    p3 = h.PahoClient(broker.port, "paho3")
    p5 = Paho5(broker.port, "paho5")
    try:
        assert p3.subscribe("px/to3", 2) == (2,)
        assert p5.subscribe("px/to5", 2) == [2]
        for qos in (0, 1, 2):
            p5.publish("px/to3", f"5-{qos}".encode(), qos,
                       props=Paho5.properties("PUBLISH", UserProperty=[("q", str(qos))]))
            m = p3.get()
            assert (m.payload, m.qos) == (f"5-{qos}".encode(), qos)
            p3.publish("px/to5", f"3-{qos}".encode(), qos)
            m = p5.get()
            assert (m.payload, m.qos) == (f"3-{qos}".encode(), qos)
    finally:
        p3.close()
        p5.close()


def test_v5_interop_many_paho_v5_publishers(broker):
    """[MQTT-4.6.0-5] ten paho-mqtt MQTTv5 publishers, 20 QoS 1 messages each, reach one raw
    MQTT 5 subscriber complete and, per publisher, in order."""
    sub = client5(broker, "sink")
    sub.subscribe([("many/#", 1)])
    pubs = [Paho5(broker.port, f"p{i}") for i in range(10)]
    try:
        for j in range(20):
            for i, p in enumerate(pubs):
                p.c.publish(f"many/{i}", str(j).encode(), 1)
        got = sub.collect(200, timeout=h.scaled(20))
        for i in range(10):
            assert [int(m.payload) for m in got if m.topic == f"many/{i}"] == list(range(20))
    finally:
        for p in pubs:
            p.close()


@h.midge_only
def test_v5_interop_mqtt5_over_websocket(start_broker):
    """[MQTT-6.0.0-1] [MQTT-6.0.0-2] [MQTT-6.0.0-4] MQTT 5 over a `protocol websockets`
    listener: the 'mqtt' subprotocol is chosen, a CONNECT split across three binary frames and
    a SUBSCRIBE and a PUBLISH (with User Properties) in one frame are read, and the broker's
    packets (CONNACK with properties, SUBACK, PUBACK, the PUBLISH with its properties) come
    back in binary frames only."""
    from test_ws_raw import WsConn

    class WsConn5(WsConn, MqttConn5):
        pass

    br = start_broker(["protocol websockets"])
    c = WsConn5(br.port)
    assert c.protocol == "mqtt"
    pkt = h.connect5_pkt("ws5", props=[(P_SESSION_EXPIRY, 0)])
    c.send(pkt[:2])
    c.send(pkt[2:9])
    c.send(pkt[9:])
    ack = h.parse_connack5(c.expect(h.CONNACK))
    assert ack.reason == 0 and h.P_RECEIVE_MAXIMUM in ack.props
    c.send(h.subscribe5_pkt(1, [("ws5/#", 1)])
           + h.publish5_pkt("ws5/t", b"over ws", qos=1, pid=2, props=[(P_USER, ("k", "v"))]))
    assert h.parse_suback5(c.expect(h.SUBACK)).codes == [1]
    assert h.parse_ack5(c.expect(h.PUBACK)).pid == 2
    m = c.recv_publish()
    assert (m.topic, m.payload, m.props.user) == ("ws5/t", b"over ws", [("k", "v")])
    c.disconnect()

"""test_limits.py - configuration options that bound what a client may do.

connect_timeout, max_keepalive, clientid_prefixes, max_packet_size, message_size_limit,
max_queued_messages, allow_zero_length_clientid, retain_available, upgrade_outgoing_qos,
queue_qos0_messages. Semantics follow mosquitto.conf(5) (Mosquitto 2.0) and
docs/configuration.md; each test starts its own broker with the option under test.
"""
import select
import time


import midge_harness as h
from midge_harness import CONNACK, PUBLISH

CONNACK_ID_REJECTED = h.packet(CONNACK, 0, b"\x00\x02")


def wait_closed(conn, timeout):
    """Block until the server closes conn (no packet may arrive first); return when."""
    got = conn.expect_closed(timeout)
    assert got == [], f"packets before close: {got!r}"
    return time.monotonic()


def refused(port, client_id, **kw):
    """CONNECT must be answered by exactly CONNACK 0x02 (identifier rejected), then close."""
    c = h.MqttConn(port)
    c.send(h.connect_pkt(client_id, **kw))
    c.expect_bytes(CONNACK_ID_REJECTED)
    wait_closed(c, h.TIMEOUT)
    return c


def offline_subscriber(br, client_id, topic, qos):
    """Create a persistent session subscribed to topic, then leave (DISCONNECT)."""
    mark = br.mark()
    s = h.client(br, client_id, clean=False)
    assert s.subscribe([(topic, qos)]) == [qos]
    s.disconnect()
    br.wait_log(rf"client {client_id} disconnected: DISCONNECT received", since=mark)


# --------------------------------------------------------------------------------------
# connect_timeout
# --------------------------------------------------------------------------------------

@h.midge_only
def test_connect_timeout_closes_silent_socket_not_a_connected_client(start_broker):
    """connect_timeout 2: a socket that sends nothing is closed after 2 s (tick 250 ms, so
    well before 4 s); a client that sent CONNECT in time is not affected, even later."""
    br = start_broker(conf=["connect_timeout 2"])
    t0 = time.monotonic()
    silent = h.MqttConn(br.port)
    good = h.client(br, "in-time")
    closed_at = wait_closed(silent, h.scaled(6))
    elapsed = closed_at - t0
    assert 1.95 <= elapsed <= h.scaled(4.0), f"silent socket closed after {elapsed:.2f} s"
    br.wait_log(rf"^\S+ \S+ notice: connection from 127\.0\.0\.1:{silent.local_port} closed: "
                rf"no CONNECT within 2 s$")
    # Two more ticks later the connected client is still there and served.
    good.expect_no_packet(h.QUIET)
    good.ping()
    br.assert_no_log(r"client in-time disconnected")
    good.disconnect()


@h.midge_only
def test_connect_timeout_counts_from_accept_not_from_last_byte(start_broker):
    """A socket trickling a CONNECT one byte every half second (slowloris) is closed at
    connect_timeout all the same: bytes that do not complete CONNECT do not extend it."""
    br = start_broker(conf=["connect_timeout 2"])
    connect = h.connect_pkt("slow-client", keepalive=60)
    t0 = time.monotonic()
    c = h.MqttConn(br.port)
    sent = 0
    closed = False
    while not closed:
        assert sent < len(connect), "the whole CONNECT went out before the broker closed"
        try:
            c.send(connect[sent:sent + 1])
        except OSError:
            break  # closed between two bytes
        sent += 1
        # Pace the next byte by waiting for the server: a close ends the loop.
        r, _, _ = select.select([c.sock], [], [], 0.5)
        if r:
            # A close with our last byte still unread in the broker's socket is a reset
            # (RST) rather than a FIN: both are the broker closing, neither sends data.
            try:
                assert c.sock.recv(64) == b"", "server sent data to a half-sent CONNECT"
            except ConnectionResetError:
                pass
            closed = True
    elapsed = time.monotonic() - t0
    assert 1.95 <= elapsed <= h.scaled(4.0), f"trickling socket closed after {elapsed:.2f} s"
    assert 3 <= sent < len(connect), f"{sent} bytes sent"
    br.wait_log(rf"connection from 127\.0\.0\.1:{c.local_port} closed: no CONNECT within 2 s$")


# --------------------------------------------------------------------------------------
# max_keepalive
# --------------------------------------------------------------------------------------

def test_max_keepalive_refuses_longer_keepalive(start_broker):
    """max_keepalive 60: keepalive 61 (and 65535) -> CONNACK 2 and close; the log says
    why. docs/configuration.md: Mosquitto's rule for 3.1.1 clients."""
    br = start_broker(conf=["max_keepalive 60"])
    for ka in (61, 65535):
        c = refused(br.port, f"ka-{ka}", keepalive=ka)
        br.wait_log(rf"connection from 127\.0\.0\.1:{c.local_port} closed: client ka-{ka} "
                    rf"refused: keepalive {ka} s exceeds max_keepalive 60 s \(CONNACK 2\)$")
    br.assert_no_log(r"client ka-6\d+ connected")


def test_max_keepalive_accepts_limit_and_zero(start_broker):
    """max_keepalive 60: keepalive 60 is accepted, and keepalive 0 (umqtt.simple's
    default, "no keepalive") is always accepted."""
    br = start_broker(conf=["max_keepalive 60"])
    at_limit = h.client(br, "ka-60", keepalive=60)
    zero = h.client(br, "ka-0", keepalive=0)
    br.wait_log(r"client ka-60 connected from .*keepalive 60 s\)")
    br.wait_log(r"client ka-0 connected from .*keepalive 0 s\)")
    at_limit.ping()
    zero.ping()
    at_limit.disconnect()
    zero.disconnect()


# --------------------------------------------------------------------------------------
# clientid_prefixes
# --------------------------------------------------------------------------------------

def test_clientid_prefixes(start_broker):
    """clientid_prefixes esp32-: "esp32-ab12" connects, "laptop" (and "esp32" without the
    dash, and "ESP32-x": case-sensitive) get CONNACK 2 and are closed."""
    br = start_broker(conf=["clientid_prefixes esp32-"])
    ok = h.client(br, "esp32-ab12")
    ok.ping()
    for cid in ("laptop", "esp32", "ESP32-ab12", "x-esp32-ab12"):
        c = refused(br.port, cid)
        br.wait_log(rf"connection from 127\.0\.0\.1:{c.local_port} closed: client {cid} "
                    rf"refused: client id does not start with one of clientid_prefixes "
                    rf"\(CONNACK 2\)$")
    ok.disconnect()


def test_clientid_prefixes_accumulate(start_broker):
    """docs/configuration.md: each clientid_prefixes line adds one prefix."""
    br = start_broker(conf=["clientid_prefixes esp32-", "clientid_prefixes sensor-"])
    h.client(br, "esp32-1").disconnect()
    h.client(br, "sensor-7").disconnect()
    refused(br.port, "laptop")


def test_clientid_prefixes_apply_to_generated_ids(start_broker):
    """A zero-length client id must not bypass clientid_prefixes: the broker would assign
    it an "auto-..." id, which does not start with the prefix, so it is refused (Mosquitto
    2.0 checks the assigned id and refuses it). Otherwise the restriction to esp32-
    devices is void: any client gets in by sending an empty id."""
    br = start_broker(conf=["clientid_prefixes esp32-"])
    c = h.MqttConn(br.port)
    c.send(h.connect_pkt("", clean=True))
    p = c.expect(CONNACK, flags=0)
    assert p.body[0] == 0 and p.body[1] != 0, (
        f"empty client id accepted despite clientid_prefixes (CONNACK {p.body.hex()})")
    wait_closed(c, h.TIMEOUT)


# --------------------------------------------------------------------------------------
# max_packet_size
# --------------------------------------------------------------------------------------

def test_max_packet_size_boundary(start_broker):
    """max_packet_size 1000 counts the whole packet: a 1000-byte PUBLISH is delivered,
    a 1001-byte one disconnects its sender (mosquitto.conf(5))."""
    br = start_broker(conf=["max_packet_size 1000"])
    sub = h.client(br, "mp-sub")
    sub.subscribe([("mp", 0)])
    pub = h.client(br, "mp-pub")
    # 1 (type) + 2 (remaining length 997) + 2 + len("mp") + 993 = 1000 bytes.
    fits = h.publish_pkt("mp", b"a" * 993)
    assert len(fits) == 1000
    pub.send(fits)
    m = sub.recv_publish()
    assert (m.topic, m.payload) == ("mp", b"a" * 993)
    too_big = h.publish_pkt("mp", b"b" * 994)
    assert len(too_big) == 1001
    mark = br.mark()
    pub.send(too_big)
    wait_closed(pub, h.TIMEOUT)
    br.wait_log(r"client mp-pub disconnected: protocol error: packet larger than the "
                r"configured maximum \(PUBLISH\)$", since=mark)
    sub.expect_no_packet()
    sub.disconnect()


def test_max_packet_size_refuses_on_the_fixed_header(start_broker):
    """A PUBLISH whose fixed header announces 5000 bytes is refused as soon as the header
    is in: the broker closes without waiting for (or buffering) the body."""
    br = start_broker(conf=["max_packet_size 1000"])
    pub = h.client(br, "mp-hdr", keepalive=0)
    mark = br.mark()
    pub.send(bytes([PUBLISH << 4]) + h.enc_len(5000))
    wait_closed(pub, h.scaled(2.0))
    br.wait_log(r"client mp-hdr disconnected: protocol error: packet larger than the "
                r"configured maximum \(PUBLISH\)$", since=mark)
    # The same before CONNECT: a CONNECT header announcing 5000 bytes.
    c = h.MqttConn(br.port)
    c.send(bytes([h.CONNECT << 4]) + h.enc_len(5000) + b"\x00\x04MQTT")
    wait_closed(c, h.scaled(2.0))
    br.wait_log(rf"connection from 127\.0\.0\.1:{c.local_port} closed: protocol error: packet "
                rf"larger than the configured maximum \(CONNECT\)$")


# --------------------------------------------------------------------------------------
# message_size_limit
# --------------------------------------------------------------------------------------

def test_message_size_limit(start_broker):
    """message_size_limit 100 (payload bytes): larger messages complete their QoS flow
    (PUBACK / PUBREC-PUBREL-PUBCOMP) but are not forwarded, nor retained; 50 and exactly
    100 bytes are delivered (mosquitto.conf(5))."""
    br = start_broker(conf=["message_size_limit 100"])
    sub = h.client(br, "ms-sub")
    sub.subscribe([("ms/#", 1)])
    pub = h.client(br, "ms-pub")
    pub.publish("ms/big", b"x" * 200, qos=1)          # PUBACK checked byte-exact
    pub.publish("ms/big2", b"y" * 101, qos=2)         # PUBREC, PUBREL, PUBCOMP checked
    pub.publish("ms/retained", b"z" * 200, qos=1, retain=True)
    pub.publish("ms/small", b"s" * 50, qos=1)
    pub.publish("ms/edge", b"e" * 100, qos=1)
    got = [(m.topic, m.payload, m.qos) for m in sub.collect(2)]
    assert got == [("ms/small", b"s" * 50, 1), ("ms/edge", b"e" * 100, 1)]
    sub.expect_no_packet()
    br.wait_log(r"client ms-pub: message on ms/big of 200 bytes exceeds message_size_limit, "
                r"dropped")
    br.wait_log(r"client ms-pub: message on ms/big2 of 101 bytes exceeds message_size_limit")
    # The oversized retained message was not stored.
    late = h.client(br, "ms-late")
    late.subscribe([("ms/retained", 1)])
    late.expect_no_packet()
    for c in (sub, pub, late):
        c.disconnect()


# --------------------------------------------------------------------------------------
# max_queued_messages
# --------------------------------------------------------------------------------------

def test_max_queued_messages_keeps_the_first(start_broker):
    """max_queued_messages 5, persistent subscriber offline: of 10 QoS 1 messages the
    first 5 are queued and delivered in order on reconnect, the rest dropped (Mosquitto
    2.0 does the same); the log says the queue was full, once."""
    br = start_broker(conf=["max_queued_messages 5"])
    offline_subscriber(br, "mq-sub", "mq/t", 1)
    pub = h.client(br, "mq-pub")
    for i in range(10):
        pub.publish("mq/t", f"m{i}".encode(), qos=1)
    pub.disconnect()
    br.wait_log(r"warning: client mq-sub: queue full \(5 messages, \d+ bytes\), dropped "
                r"message on mq/t \(1 dropped so far\)$")
    back = h.client(br, "mq-sub", clean=False, expect_sp=True)
    got = [(m.payload, m.qos) for m in back.collect(5)]
    assert got == [(f"m{i}".encode(), 1) for i in range(5)]
    back.expect_no_packet()
    assert len([ln for ln in br.log().splitlines() if "queue full" in ln]) == 1
    back.disconnect()


# --------------------------------------------------------------------------------------
# allow_zero_length_clientid
# --------------------------------------------------------------------------------------

def test_allow_zero_length_clientid_false(start_broker):
    """allow_zero_length_clientid false: an empty id is refused with CONNACK 2 (as
    Mosquitto does) even with clean session 1; named clients still connect."""
    br = start_broker(conf=["allow_zero_length_clientid false"])
    c = refused(br.port, "", clean=True)
    br.wait_log(rf"connection from 127\.0\.0\.1:{c.local_port} closed: client \(empty\) "
                rf"refused: zero-length client id not allowed \(allow_zero_length_clientid "
                rf"false\) \(CONNACK 2\)$")
    h.client(br, "named").disconnect()


def test_allow_zero_length_clientid_default_true(start_broker):
    """Contrast: by default an empty id with clean session 1 gets a generated id."""
    br = start_broker()
    h.client(br, "").disconnect()
    br.wait_log(r"client auto-\S+ connected from 127\.0\.0\.1")


# --------------------------------------------------------------------------------------
# retain_available
# --------------------------------------------------------------------------------------

def test_retain_available_false_stores_nothing(start_broker):
    """retain_available false: a retained publish is not stored, a later subscriber
    receives nothing; ordinary publishes work."""
    br = start_broker(conf=["retain_available false"])
    pub = h.client(br, "ra-pub")
    pub.send(h.publish_pkt("ra/t", b"keep me", qos=1, retain=True, pid=1))
    try:
        pub.read_packet(h.QUIET)  # PUBACK or close: both are answers, neither is checked here
    except h.Closed:
        pass
    late = h.client(br, "ra-late")
    assert late.subscribe([("ra/#", 1)]) == [1]
    late.expect_no_packet()
    other = h.client(br, "ra-pub2")
    other.publish("ra/t", b"plain", qos=1)
    m = late.recv_publish()
    assert (m.topic, m.payload, m.qos, m.retain) == ("ra/t", b"plain", 1, False)
    late.disconnect()
    other.disconnect()


def test_retain_available_false_disconnects_retained_publisher(start_broker):
    """mosquitto.conf(5): "If set to false, then retained messages are not supported.
    Clients that send a message with the retain bit will be disconnected." Mosquitto 2.0
    closes the connection without PUBACK and forwards nothing to current subscribers."""
    br = start_broker(conf=["retain_available false"])
    sub = h.client(br, "ra-sub")
    sub.subscribe([("ra/#", 1)])
    pub = h.client(br, "ra-retainer")
    pub.send(h.publish_pkt("ra/t", b"keep me", qos=1, retain=True, pid=1))
    got = pub.expect_closed(h.TIMEOUT)
    assert got == [], f"retained publish answered with {got!r} instead of a disconnect"
    sub.expect_no_packet()
    br.wait_log(r"client ra-retainer disconnected: .*retain")
    sub.disconnect()


# --------------------------------------------------------------------------------------
# upgrade_outgoing_qos
# --------------------------------------------------------------------------------------

def test_upgrade_outgoing_qos(start_broker):
    """upgrade_outgoing_qos true: a subscriber gets its subscription's QoS whatever the
    published QoS (never more than granted: a QoS 0 subscription stays at 0)."""
    br = start_broker(conf=["upgrade_outgoing_qos true"])
    s2 = h.client(br, "up-2")
    s2.subscribe([("up/t", 2)])
    s1 = h.client(br, "up-1")
    s1.subscribe([("up/t", 1)])
    s0 = h.client(br, "up-0")
    s0.subscribe([("up/t", 0)])
    pub = h.client(br, "up-pub")
    pub.publish("up/t", b"q0", qos=0)
    pub.publish("up/t", b"q2", qos=2)
    # recv_publish completes the QoS 2 flow byte-exactly (PUBREC -> PUBREL -> PUBCOMP).
    assert [(m.payload, m.qos) for m in s2.collect(2)] == [(b"q0", 2), (b"q2", 2)]
    assert [(m.payload, m.qos) for m in s1.collect(2)] == [(b"q0", 1), (b"q2", 1)]
    assert [(m.payload, m.qos) for m in s0.collect(2)] == [(b"q0", 0), (b"q2", 0)]
    h.expect_quiet([s0, s1, s2])
    for c in (s0, s1, s2, pub):
        c.disconnect()


def test_upgrade_outgoing_qos_default_false(start_broker):
    """Contrast: by default the delivered QoS is min(published, granted) [MQTT-3.8.4-6]."""
    br = start_broker()
    s2 = h.client(br, "nu-2")
    s2.subscribe([("nu/t", 2)])
    pub = h.client(br, "nu-pub")
    pub.publish("nu/t", b"q0", qos=0)
    pub.publish("nu/t", b"q1", qos=1)
    assert [(m.payload, m.qos) for m in s2.collect(2)] == [(b"q0", 0), (b"q1", 1)]
    s2.disconnect()
    pub.disconnect()


# --------------------------------------------------------------------------------------
# queue_qos0_messages
# --------------------------------------------------------------------------------------

def test_queue_qos0_messages_true(start_broker):
    """queue_qos0_messages true: QoS 0 messages for an offline persistent subscriber are
    queued and delivered on return, in order, at QoS 0."""
    br = start_broker(conf=["queue_qos0_messages true"])
    offline_subscriber(br, "q0-sub", "q0/t", 1)
    pub = h.client(br, "q0-pub")
    for i in range(3):
        pub.publish("q0/t", f"z{i}".encode(), qos=0)
    pub.publish("q0/t", b"one", qos=1)
    pub.disconnect()
    back = h.client(br, "q0-sub", clean=False, expect_sp=True)
    got = [(m.payload, m.qos) for m in back.collect(4)]
    assert got == [(b"z0", 0), (b"z1", 0), (b"z2", 0), (b"one", 1)]
    back.expect_no_packet()
    back.disconnect()


def test_queue_qos0_messages_count_against_max_queued(start_broker):
    """mosquitto.conf(5): queued QoS 0 messages "are included in the limit imposed by
    max_queued_messages"."""
    br = start_broker(conf=["queue_qos0_messages true", "max_queued_messages 2"])
    offline_subscriber(br, "q0l-sub", "q0l/t", 1)
    pub = h.client(br, "q0l-pub")
    for i in range(4):
        pub.publish("q0l/t", f"z{i}".encode(), qos=0)
    pub.ping()  # the four PUBLISHes were processed
    pub.disconnect()
    back = h.client(br, "q0l-sub", clean=False, expect_sp=True)
    assert [(m.payload, m.qos) for m in back.collect(2)] == [(b"z0", 0), (b"z1", 0)]
    back.expect_no_packet()
    back.disconnect()


def test_queue_qos0_messages_default_false(start_broker):
    """Contrast: by default QoS 0 messages for an offline subscriber are dropped (MQTT
    3.1.1 section 3.1.2.4 stores only QoS 1 and 2), QoS 1 ones are kept."""
    br = start_broker()
    offline_subscriber(br, "nq-sub", "nq/t", 1)
    pub = h.client(br, "nq-pub")
    pub.publish("nq/t", b"zero", qos=0)
    pub.publish("nq/t", b"one", qos=1)
    pub.disconnect()
    back = h.client(br, "nq-sub", clean=False, expect_sp=True)
    assert [(m.payload, m.qos) for m in back.collect(1)] == [(b"one", 1)]
    back.expect_no_packet()
    back.disconnect()

"""v5_connect_*: MQTT 5 CONNECT and CONNACK through the real binary (issue 13).

CONNACK properties (Receive Maximum, Topic Alias Maximum, Maximum QoS, Retain Available,
Maximum Packet Size, Server Keep Alive, Assigned Client Identifier, Response Information)
with the default configuration and with max_inflight_messages, max_topic_alias, max_qos,
retain_available, max_packet_size, max_keepalive and response_information set; the
refusals with their MQTT 5 reason codes (client id 0x85, wrong password and anonymous
access 0x87, authentication method 0x8C, will QoS 0x9B, retained will 0x9A); what may
follow a refusal; the server's DISCONNECTs (takeover 0x8E, shutdown 0x8B, keepalive 0x8D).
Raw MqttConn5 for byte-level checks, paho-mqtt's MQTTv5 client for the same through a
real client library.

Each test starts its own broker and synchronises on packets, log lines or process exit;
a timer (keep alive) is waited for with a deadline, never a fixed sleep.
"""
import subprocess
import time

import pytest

import midge_harness as h
from midge_harness import (CONNACK, P_ASSIGNED_CLIENT_ID, P_AUTH_METHOD, P_MAXIMUM_PACKET_SIZE,
                           P_MAXIMUM_QOS, P_REASON_STRING, P_RECEIVE_MAXIMUM,
                           P_REQUEST_PROBLEM_INFO, P_REQUEST_RESPONSE_INFO, P_RESPONSE_INFO,
                           P_RETAIN_AVAILABLE, P_SERVER_KEEP_ALIVE, P_SESSION_EXPIRY,
                           P_TOPIC_ALIAS_MAXIMUM, P_USER, PINGRESP, SUBACK, MqttConn5, Paho5,
                           client5, connect5_pkt, parse_connack5, parse_suback5, pingreq_pkt,
                           publish5_pkt, subscribe5_pkt)

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


# -- CONNACK ------------------------------------------------------------------------------

def test_v5_connect_connack_default_properties_exact(broker):
    """[MQTT-3.1.4-5] [MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.2.0-1] an accepted Clean Start 1
    CONNECT gets CONNACK 0x00 with Session Present 0, byte for byte: the limits that differ
    from the standard's defaults (Receive Maximum 20 = max_inflight_messages, Topic Alias
    Maximum 10 = max_topic_alias) and nothing else. [MQTT-4.12.0-6] no Authentication
    Method in it, no AUTH before it."""
    c = MqttConn5(broker.port)
    c.send(connect5_pkt("dflt", keepalive=60))
    c.expect_bytes(b"\x20\x09\x00\x00\x06\x21\x00\x14\x22\x00\x0a")
    c.ping()


def test_v5_connect_connack_reflects_configuration(start_broker):
    """[MQTT-3.2.2-9] the configured limits are announced in CONNACK: max_qos 1 (Maximum QoS
    1), retain_available false (Retain Available 0), max_packet_size (Maximum Packet Size),
    max_inflight_messages (Receive Maximum), max_topic_alias (Topic Alias Maximum) and
    max_keepalive (Server Keep Alive, also to a client asking for keep alive 0).
    [MQTT-3.1.2-28] Response Information only to a client that asked for it with Request
    Response Information 1; [MQTT-3.2.2-22] a keep alive within max_keepalive gets no Server
    Keep Alive."""
    br = start_broker(["max_qos 1", "retain_available false", "max_packet_size 1000",
                       "max_inflight_messages 7", "max_topic_alias 5", "max_keepalive 30",
                       "response_information replies/"])
    asked = client5(br, "asked", keepalive=60, props=[(P_REQUEST_RESPONSE_INFO, 1)])
    p = asked.connack.props
    assert p.get(P_MAXIMUM_QOS) == 1
    assert p.get(P_RETAIN_AVAILABLE) == 0
    assert p.get(P_MAXIMUM_PACKET_SIZE) == 1000
    assert p.get(P_RECEIVE_MAXIMUM) == 7
    assert p.get(P_TOPIC_ALIAS_MAXIMUM) == 5
    assert p.get(P_SERVER_KEEP_ALIVE) == 30
    assert p.get(P_RESPONSE_INFO) == "replies/"

    zero = client5(br, "zero", keepalive=0, props=[(P_REQUEST_RESPONSE_INFO, 0)])
    assert zero.connack.props.get(P_SERVER_KEEP_ALIVE) == 30
    assert P_RESPONSE_INFO not in zero.connack.props

    within = client5(br, "within", keepalive=20)
    assert P_SERVER_KEEP_ALIVE not in within.connack.props
    assert P_RESPONSE_INFO not in within.connack.props
    for c in (asked, zero, within):
        c.ping()


def test_v5_connect_connack_with_paho(start_broker):
    """[MQTT-3.2.2-9] [MQTT-3.1.2-28] the same CONNACK properties as paho-mqtt's MQTTv5
    client reads them."""
    br = start_broker(["max_qos 1", "max_keepalive 30", "response_information rr/"])
    props = Paho5.properties("CONNECT", RequestResponseInformation=1,
                             SessionExpiryInterval=0)
    c = Paho5(br.port, "paho-ack", keepalive=45, props=props)
    try:
        ack = c.connack_props
        assert ack.MaximumQoS == 1
        assert ack.ServerKeepAlive == 30
        assert ack.ResponseInformation == "rr/"
        assert ack.ReceiveMaximum == 20
        assert c.session_present is False
    finally:
        c.close()


# -- client identifiers -------------------------------------------------------------------

def test_v5_connect_assigned_client_id_unique_and_resumable(broker):
    """[MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16] an empty client id is given a unique
    one, returned as Assigned Client Identifier (two clients get two ids), also with Clean
    Start 0; the session is stored under it: reconnecting with that id resumes it
    (Session Present 1, the subscription still delivers)."""
    a = client5(broker, "", clean=False, props=[(P_SESSION_EXPIRY, 60)])
    b = client5(broker, "")
    ida = a.connack.props.get(P_ASSIGNED_CLIENT_ID)
    idb = b.connack.props.get(P_ASSIGNED_CLIENT_ID)
    assert ida and idb and ida != idb
    assert a.subscribe([("assigned/t", 1)]) == [1]
    a.disconnect()
    broker.wait_log(rf"client {ida} disconnected: DISCONNECT received")
    back = client5(broker, ida, clean=False, props=[(P_SESSION_EXPIRY, 60)], expect_sp=True)
    assert P_ASSIGNED_CLIENT_ID not in back.connack.props
    client5(broker, "pub").publish("assigned/t", b"x", qos=1, expect_reason=0)
    m = back.recv_publish()
    assert (m.topic, m.payload) == ("assigned/t", b"x")


def test_v5_connect_assigned_client_id_paho(broker):
    """[MQTT-3.1.3-7] paho-mqtt's MQTTv5 client with an empty client id reads its
    Assigned Client Identifier from CONNACK."""
    c = Paho5(broker.port, "")
    try:
        assert c.connack_props.AssignedClientIdentifier
    finally:
        c.close()


def test_v5_connect_client_id_alphanumerics_accepted(broker):
    """[MQTT-3.1.3-5] client ids of 1 and 23 bytes of 0-9, a-z, A-Z are accepted."""
    for cid in ("Q", "0123456789ABCDEFGHIJKLm"):
        c = client5(broker, cid)
        assert P_ASSIGNED_CLIENT_ID not in c.connack.props
        c.ping()
        c.disconnect()


@pytest.mark.parametrize("conf,cid", [
    (["allow_zero_length_clientid false"], ""),
    (["clientid_prefixes dev-"], "other"),
], ids=["empty_not_allowed", "prefix"])
def test_v5_connect_client_id_refused_0x85(start_broker, conf, cid):
    """[MQTT-3.1.3-8] [MQTT-3.2.2-7] [MQTT-3.2.2-6] a client id the server will not accept
    (empty with allow_zero_length_clientid false; not one of clientid_prefixes) gets
    CONNACK 0x85 Client Identifier not valid, Session Present 0, then the close."""
    br = start_broker(conf)
    c = MqttConn5(br.port)
    c.send(connect5_pkt(cid, clean=False, props=[(P_SESSION_EXPIRY, 60)]))
    ack = c.expect_refused(0x85)
    assert ack.session_present is False


def test_v5_connect_refused_session_present_0_with_stored_session(broker):
    """[MQTT-3.2.2-6] a refused CONNECT gets Session Present 0 even though a session for its
    client id is stored (refused here for its Authentication Method); the session is still
    there afterwards (Session Present 1)."""
    exp = [(P_SESSION_EXPIRY, 300)]
    c = client5(broker, "stored", clean=False, props=exp)
    c.subscribe([("stored/t", 1)])
    mark = broker.mark()
    c.disconnect()
    broker.wait_log(r"client stored disconnected", since=mark)
    r = MqttConn5(broker.port)
    r.send(connect5_pkt("stored", clean=False, props=exp + [(P_AUTH_METHOD, "X")]))
    assert r.expect_refused(0x8C).session_present is False
    client5(broker, "stored", clean=False, props=exp, expect_sp=True)


# -- authentication -----------------------------------------------------------------------

@h.needs(MOSQUITTO_PASSWD, reason="Debian package mosquitto")
def test_v5_connect_wrong_password_0x87(start_broker, tmp_path):
    """[MQTT-3.1.4-2] [MQTT-3.2.2-7] a wrong password (password_file made by
    mosquitto_passwd) and an unknown user get CONNACK 0x87 Not authorized (what Mosquitto
    2.0 answers; 0x86 would also be allowed), with a Reason String, then the close; the
    right password is accepted (paho-mqtt MQTTv5 both ways)."""
    pw = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), "alice", "s3cret"], check=True,
                   capture_output=True)
    br = start_broker(["password_file " + str(pw)], anonymous=False)
    for user, password in (("alice", "wrong"), ("mallory", "s3cret")):
        c = MqttConn5(br.port)
        c.send(connect5_pkt("pwd", username=user, password=password))
        ack = c.expect_refused(0x87)
        assert P_REASON_STRING in ack.props
    ok = client5(br, "pwd", username="alice", password="s3cret")
    ok.ping()
    bad = Paho5(br.port, "paho-pwd", username="alice", password="nope", expect_rc=0x87)
    bad.c.loop_stop()
    good = Paho5(br.port, "paho-pwd", username="alice", password="s3cret")
    good.close()


def test_v5_connect_anonymous_refused_0x87(start_broker):
    """[MQTT-3.1.4-2] [MQTT-3.2.2-7] without allow_anonymous a client without a user name
    gets CONNACK 0x87 and the close; [MQTT-3.1.2-29] with Request Problem Information 0
    the refusal carries no Reason String (one is sent by default)."""
    br = start_broker([], anonymous=False)
    c = MqttConn5(br.port)
    c.send(connect5_pkt("anon"))
    assert P_REASON_STRING in c.expect_refused(0x87).props
    c = MqttConn5(br.port)
    c.send(connect5_pkt("anon", props=[(P_REQUEST_PROBLEM_INFO, 0)]))
    assert c.expect_refused(0x87).props.items == []


def test_v5_connect_authentication_method_refused_0x8c(broker):
    """[MQTT-4.12.0-1] [MQTT-4.12.0-4] an Authentication Method the server does not support
    (it supports none) is refused with CONNACK 0x8C Bad authentication method and the close;
    no AUTH is sent ([MQTT-4.12.0-6] for the accepted connection without a method: no AUTH
    and no Authentication Method in its CONNACK). paho-mqtt sees the same code."""
    c = MqttConn5(broker.port)
    c.send(connect5_pkt("scram", props=[(P_AUTH_METHOD, "SCRAM-SHA-1")]))
    ack = c.expect_refused(0x8C)
    assert P_AUTH_METHOD not in ack.props
    plain = client5(broker, "plain")
    assert P_AUTH_METHOD not in plain.connack.props
    plain.ping()
    props = Paho5.properties("CONNECT", AuthenticationMethod="SCRAM-SHA-256")
    p = Paho5(broker.port, "paho-scram", props=props, expect_rc=0x8C)
    p.c.loop_stop()


# -- the will against the server's limits -------------------------------------------------

def test_v5_connect_will_qos_over_max_qos_0x9b(start_broker):
    """[MQTT-3.2.2-12] with max_qos 1 a will of QoS 2 is refused with CONNACK 0x9B QoS not
    supported and the close; a will of QoS 1 is accepted. [MQTT-3.2.2-10] the same client
    may still ask for QoS 2 in SUBSCRIBE (granted 1)."""
    br = start_broker(["max_qos 1"])
    c = MqttConn5(br.port)
    c.send(connect5_pkt("w2", will=("w/t", b"x", 2, False)))
    c.expect_refused(0x9B)
    ok = client5(br, "w1", will=("w/t", b"x", 1, False))
    assert ok.subscribe([("w/#", 2)]) == [1]


def test_v5_connect_retained_will_without_retain_available_0x9a(start_broker):
    """[MQTT-3.2.2-13] with retain_available false a will with Will Retain 1 is refused with
    CONNACK 0x9A Retain not supported and the close; a non-retained will is accepted."""
    br = start_broker(["retain_available false"])
    c = MqttConn5(br.port)
    c.send(connect5_pkt("wr", will=("w/t", b"x", 0, True)))
    c.expect_refused(0x9A)
    client5(br, "wr", will=("w/t", b"x", 0, False)).ping()


# -- around CONNACK -----------------------------------------------------------------------

def test_v5_connect_refused_connect_ignores_following_packets(start_broker):
    """[MQTT-3.1.4-6] after a refused CONNECT nothing else the client sent is processed: a
    retained PUBLISH and a SUBSCRIBE in the same write as the refused CONNECT are neither
    answered nor stored. [MQTT-3.2.0-2] [MQTT-4.13.2-1] one CONNACK, then the close."""
    br = start_broker(["clientid_prefixes ok-"])
    c = MqttConn5(br.port)
    c.send(connect5_pkt("refused") + publish5_pkt("ign/t", b"late", retain=True)
           + subscribe5_pkt(1, [("ign/#", 0)]))
    c.expect_refused(0x85)
    ok = client5(br, "ok-1")
    ok.subscribe([("ign/#", 0)])
    ok.expect_no_packet()


def test_v5_connect_connack_first_then_pipelined_packets(broker):
    """[MQTT-3.2.0-1] [MQTT-3.2.0-2] CONNECT, SUBSCRIBE and PINGREQ in one write: the CONNACK
    comes first, exactly once, then the SUBACK and the PINGRESP."""
    c = MqttConn5(broker.port)
    c.send(connect5_pkt("pipe") + subscribe5_pkt(7, [("pipe/#", 1)]) + pingreq_pkt())
    ack = parse_connack5(c.expect(CONNACK))
    assert ack.reason == 0
    sub = parse_suback5(c.expect(SUBACK))
    assert (sub.pid, sub.codes) == (7, [1])
    c.expect(PINGRESP)
    c.expect_no_packet()


def test_v5_connect_second_connect_disconnect_0x82(broker):
    """[MQTT-3.1.0-2] a second CONNECT on a connection is a Protocol Error: DISCONNECT 0x82
    (never a second CONNACK, [MQTT-3.2.0-2]) and the close; its will is published."""
    w = client5(broker, "watch")
    w.subscribe([("twice/#", 0)])
    c = client5(broker, "twice", will=("twice/will", b"gone", 0, False))
    c.send(connect5_pkt("twice"))
    c.expect_disconnect(0x82)
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("twice/will", b"gone")


def test_v5_connect_first_packet_not_connect_closed_silently(broker):
    """[MQTT-3.1.0-1] a PUBLISH before CONNECT closes the connection; [MQTT-3.14.0-1] no
    DISCONNECT is sent (no CONNACK went out) and the message is not delivered."""
    w = client5(broker, "watch")
    w.subscribe([("first/#", 0)])
    c = MqttConn5(broker.port)
    c.send(publish5_pkt("first/t", b"x"))
    assert c.expect_closed() == []
    w.expect_no_packet()


def test_v5_connect_malformed_connect_answered_by_connack(broker):
    """[MQTT-3.1.4-1] [MQTT-3.14.0-1] [MQTT-4.13.1-1] a malformed MQTT 5 CONNECT (reserved
    flag set, [MQTT-3.1.2-3]) is answered with CONNACK 0x81 Malformed Packet, never a
    DISCONNECT, then the close."""
    c = MqttConn5(broker.port)
    c.send(connect5_pkt("resv", flags=0x03))
    c.expect_refused(0x81)


def test_v5_connect_unsupported_protocol_version(broker):
    """[MQTT-3.1.2-2] protocol name MQTT with version 6 is refused with a CONNACK (the 3.1.1
    form 20 02 00 01, as Mosquitto: the client's version is not known to speak MQTT 5) and
    the close. [MQTT-3.1.2-1] a CONNECT whose protocol name is not "MQTT" at level 5 is not
    carried on: closed."""
    c = MqttConn5(broker.port)
    c.send(connect5_pkt("v6", proto_level=6))
    c.expect_bytes(b"\x20\x02\x00\x01")
    c.expect_closed()
    c = MqttConn5(broker.port)
    c.send(connect5_pkt("name", proto_name="MQTX"))
    got = c.expect_closed(allow=(CONNACK,))
    for p in got:
        assert parse_connack5(p).reason == 0x84
    client5(broker, "still").ping()


# -- the server's DISCONNECT --------------------------------------------------------------

def test_v5_connect_takeover_disconnect_0x8e(broker):
    """[MQTT-3.1.4-3] a second connection with the same client id takes over: the old one
    gets DISCONNECT 0x8E Session taken over (with a Reason String) and is closed; the new one
    is served. paho-mqtt's MQTTv5 client reports the same code."""
    old = client5(broker, "tk")
    new = client5(broker, "tk")
    d = old.expect_disconnect(0x8E)
    assert P_REASON_STRING in d.props
    new.ping()
    p_old = Paho5(broker.port, "tk-paho")
    p_new = Paho5(broker.port, "tk-paho")
    try:
        rc, _ = p_old.wait_disconnect()
        assert rc == 0x8E
    finally:
        p_new.close()
        p_old.c.loop_stop()


def test_v5_connect_shutdown_disconnect_0x8b(start_broker):
    """[MQTT-3.14.2-1] on SIGTERM every MQTT 5 client is told DISCONNECT 0x8B Server shutting
    down before its connection closes; a 3.1.1 client on the same broker just sees the
    close (it has no DISCONNECT from the server)."""
    br = start_broker()
    c5 = client5(br, "five")
    c3 = h.client(br, "three")
    br.stop()
    c5.expect_disconnect(0x8B)
    assert c3.expect_closed() == []


def test_v5_connect_keepalive_timeout_disconnect_0x8d(start_broker):
    """[MQTT-3.1.2-22] [MQTT-3.2.2-22] a client that asked for keep alive 1 (no Server Keep
    Alive: the server applies 1) and then sends nothing is disconnected after 1.5 s with
    DISCONNECT 0x8D Keep alive timeout, not before 1 s; its will is published."""
    br = start_broker()
    w = client5(br, "watch")
    w.subscribe([("ka/#", 0)])
    c = client5(br, "ka", keepalive=1, will=("ka/will", b"timeout", 0, False))
    assert P_SERVER_KEEP_ALIVE not in c.connack.props
    start = time.monotonic()
    c.expect_disconnect(0x8D, timeout=h.scaled(6))
    assert time.monotonic() - start >= 1.0
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("ka/will", b"timeout")


def test_v5_connect_pings_keep_connection_alive(broker):
    """[MQTT-3.1.2-22] [MQTT-3.1.2-20] (the client's side: a packet within every keep alive
    period) a client with keep alive 1 that sends PINGREQ every half second stays connected
    for 3 s, each PINGREQ answered ([MQTT-3.12.4-1])."""
    c = client5(broker, "pinger", keepalive=1)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        c.ping()
        time.sleep(0.5)  # the client's own pace, well inside its keep alive
    c.ping()


def test_v5_connect_server_keep_alive_enforced(start_broker):
    """[MQTT-3.1.2-22] with max_keepalive 1 a client asking for 60 is told Server Keep Alive
    1 (the client must use it, [MQTT-3.2.2-21]) and is held to it: DISCONNECT 0x8D once 1.5
    s pass without a packet."""
    br = start_broker(["max_keepalive 1"])
    c = client5(br, "ska", keepalive=60)
    assert c.connack.props.get(P_SERVER_KEEP_ALIVE) == 1
    c.expect_disconnect(0x8D, timeout=h.scaled(6))


def test_v5_connect_all_payload_fields_in_order(broker):
    """[MQTT-3.1.3-1] [MQTT-3.1.2-9] [MQTT-3.1.2-17] [MQTT-3.1.2-19] [MQTT-3.1.3-12] a CONNECT
    with every payload field (client id, Will Properties, will topic, will payload, user
    name, password) is accepted and each is read from its place: the will later goes out
    with its topic, payload and User Property."""
    w = client5(broker, "watch")
    w.subscribe([("ord/#", 1)])
    c = MqttConn5(broker.port)
    c.connect("all", will=("ord/will", b"\x00w\xff", 1, False),
              will_props=[(P_USER, ("who", "all"))], username="user", password=b"\x00pw")
    c.close()
    m = w.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("ord/will", b"\x00w\xff", 1)
    assert m.props.user == [("who", "all")]


def test_v5_connect_password_without_user_name_accepted(broker):
    """[MQTT-3.1.2-18] [MQTT-3.1.2-19] MQTT 5 allows a password without a user name
    (3.1.2.9): with anonymous access allowed such a CONNECT is accepted."""
    c = MqttConn5(broker.port)
    c.connect("pwonly", password=b"secret")
    c.ping()


def test_v5_connect_session_present_and_clean_start(broker):
    """[MQTT-3.2.2-2] [MQTT-3.2.2-3] Clean Start 1 gets Session Present 0 even when a session
    is stored (and discards it, [MQTT-3.1.2-4]); Clean Start 0 gets 1 when the server holds
    a session for the client id ([MQTT-3.1.2-5]) and 0 when it does not ([MQTT-3.1.2-6])."""
    exp = [(P_SESSION_EXPIRY, 300)]
    for clean, sp in ((False, False), (False, True), (True, False)):
        mark = broker.mark()
        c = client5(broker, "sp", clean=clean, props=exp, expect_sp=sp)
        c.disconnect()
        broker.wait_log(r"client sp disconnected: DISCONNECT received", since=mark)
    client5(broker, "sp", clean=False, props=exp, expect_sp=True)


def test_v5_connect_user_properties_accepted(broker):
    """[MQTT-1.5.7-1] User Properties in CONNECT (a repeated name too) are accepted."""
    c = client5(broker, "up", props=[(P_USER, ("a", "1")), (P_USER, ("a", "2")),
                                     (P_USER, ("\u00e9", ""))])
    c.ping()


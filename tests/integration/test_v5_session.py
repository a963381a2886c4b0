"""v5_session_* and v5_will_*: MQTT 5 sessions and wills through the real binary (issue 13).

Session Expiry Interval across reconnects (raw client and paho-mqtt), a session ending with
its connection (interval 0), a session removed once its interval runs out, DISCONNECT
changing the interval (and the Protocol Error of setting one after CONNECT set 0);
unacknowledged messages resent on reconnect, refused ones (reason 0x80+) never; the will:
its properties forwarded, retained or not, DISCONNECT 0x00 discarding it and 0x04
publishing it, the Will Delay Interval (published when it runs out or the session ends,
cancelled by a reconnect), takeover.

Waiting: where the test is about an interval (session expiry, will delay) it waits for the
broker's log line or the packet with a deadline, and proves that something does NOT happen
with a quiet window no longer than the interval itself.
"""
import subprocess
import time

import midge_harness as h
from midge_harness import (P_CONTENT_TYPE, P_CORRELATION_DATA, P_MESSAGE_EXPIRY,
                           P_PAYLOAD_FORMAT, P_RESPONSE_TOPIC, P_SESSION_EXPIRY, P_USER,
                           P_WILL_DELAY, PUBLISH, PUBREL, MqttConn5, Paho5, ack5_pkt, client5,
                           disconnect5_pkt, parse_ack5, parse_publish5)

EXP = [(P_SESSION_EXPIRY, 300)]


def watcher(br, filt):
    w = client5(br, "watch-" + filt.strip("#/").replace("/", "-"))
    w.subscribe([(filt, 1)])
    return w


def wait_gone(br, cid, since):
    """Wait until the broker has handled cid's connection closing."""
    br.wait_log(rf"client {cid} disconnected", since=since)


# -- Session Expiry Interval ---------------------------------------------------------------

def test_v5_session_expiry_keeps_subscriptions_and_queue(broker):
    """[MQTT-3.1.2-23] [MQTT-3.1.2-5] [MQTT-4.1.0-1] [MQTT-3.1.3-2] with a Session Expiry
    Interval the session outlives the connection: reconnecting with Clean Start 0 and the same
    client id gives Session Present 1, the subscriptions still hold, and the QoS 1 and 2
    messages published while the client was away arrive in order ([MQTT-4.5.0-1])."""
    c = client5(broker, "keeper", clean=False, props=EXP, expect_sp=False)
    assert c.subscribe([("keep/1", 1), ("keep/2", 2)]) == [1, 2]
    mark = broker.mark()
    c.disconnect()
    wait_gone(broker, "keeper", mark)
    pub = client5(broker, "pub")
    pub.publish("keep/1", b"a", qos=1, expect_reason=0)
    pub.publish("keep/2", b"b", qos=2, expect_reason=0)
    pub.publish("keep/1", b"c", qos=1, expect_reason=0)
    back = client5(broker, "keeper", clean=False, props=EXP, expect_sp=True)
    assert [(m.payload, m.qos) for m in back.collect(3)] == [(b"a", 1), (b"b", 2), (b"c", 1)]
    pub.publish("keep/1", b"live", qos=1)
    assert back.recv_publish().payload == b"live"


def test_v5_session_expiry_zero_ends_with_connection(broker):
    """[MQTT-3.1.2-23] [MQTT-3.1.2-6] without a Session Expiry Interval (0) the session ends
    with the connection: Clean Start 0 afterwards finds none (Session Present 0) and no
    subscription or message was kept. [MQTT-3.1.2-4] Clean Start 1 discards a stored
    session."""
    c = client5(broker, "brief", clean=False)
    c.subscribe([("brief/t", 1)])
    mark = broker.mark()
    c.disconnect()
    wait_gone(broker, "brief", mark)
    client5(broker, "pub").publish("brief/t", b"lost", qos=1, expect_reason=0x10)
    back = client5(broker, "brief", clean=False, props=EXP, expect_sp=False)
    back.ping()
    back.expect_no_packet()
    back.subscribe([("brief/t", 1)])
    mark = broker.mark()
    back.disconnect()
    wait_gone(broker, "brief", mark)
    fresh = client5(broker, "brief", clean=True, props=EXP, expect_sp=False)
    client5(broker, "pub2").publish("brief/t", b"x", qos=1, expect_reason=0x10)
    fresh.ping()
    fresh.expect_no_packet()


def test_v5_session_removed_when_interval_runs_out(broker):
    """[MQTT-4.1.0-2] once a closed connection's Session Expiry Interval (1 s) has elapsed the
    server deletes the session (logged), and a reconnect finds none."""
    c = client5(broker, "shortlived", clean=False, props=[(P_SESSION_EXPIRY, 1)])
    c.subscribe([("sl/t", 1)])
    mark = broker.mark()
    c.disconnect()
    if h.REFERENCE:
        time.sleep(2.5)
    broker.wait_log(r"client shortlived expired: away for more than 1 s \(its Session Expiry "
                    r"Interval\)", since=mark, timeout=h.scaled(6))
    client5(broker, "shortlived", clean=False, props=EXP, expect_sp=False)


def test_v5_session_disconnect_changes_expiry(broker):
    """[MQTT-3.1.2-23] the Session Expiry Interval given in DISCONNECT replaces the one of
    CONNECT: 300 set to 0 ends the session now (Session Present 0 afterwards), 0 from a
    session that had 5 at CONNECT set to 300 keeps it."""
    c = client5(broker, "dx", clean=False, props=EXP)
    c.subscribe([("dx/t", 1)])
    mark = broker.mark()
    c.disconnect(0, [(P_SESSION_EXPIRY, 0)])
    wait_gone(broker, "dx", mark)
    c = client5(broker, "dx", clean=False, props=[(P_SESSION_EXPIRY, 5)], expect_sp=False)
    mark = broker.mark()
    c.disconnect(0, [(P_SESSION_EXPIRY, 300)])
    wait_gone(broker, "dx", mark)
    client5(broker, "dx", clean=False, props=EXP, expect_sp=True)


def test_v5_session_disconnect_expiry_after_zero_is_protocol_error(broker):
    """[MQTT-3.14.2-2] [MQTT-3.14.2-1] a DISCONNECT setting a Session Expiry Interval when
    CONNECT set 0 is a Protocol Error: the server answers DISCONNECT 0x82, which carries no
    Session Expiry Interval of its own, closes the connection and, as for any abnormal end,
    publishes the will."""
    w = watcher(broker, "dz/#")
    c = client5(broker, "dz", will=("dz/will", b"gone", 1, False))
    c.send(disconnect5_pkt(0, [(P_SESSION_EXPIRY, 60)]))
    d = c.expect_disconnect(0x82)
    assert P_SESSION_EXPIRY not in d.props
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("dz/will", b"gone")


def test_v5_session_paho_and_mosquitto_pub(broker):
    """[MQTT-3.1.2-23] [MQTT-3.1.2-5] paho-mqtt's MQTTv5 client with clean_start False and
    SessionExpiryInterval 60 finds its session again (session present) with the QoS 1 message
    mosquitto_pub -V mqttv5 published while it was away."""
    props = Paho5.properties("CONNECT", SessionExpiryInterval=60)
    p = Paho5(broker.port, "paho-sess", clean_start=False, props=props)
    assert p.session_present is False
    assert p.subscribe("psess/t", 1) == [1]
    mark = broker.mark()
    p.close()
    wait_gone(broker, "paho-sess", mark)
    h.run_pub(broker.port, "-V", "mqttv5", "-t", "psess/t", "-m", "while-away", "-q", "1")
    p = Paho5(broker.port, "paho-sess", clean_start=False, props=props)
    try:
        assert p.session_present is True
        m = p.get()
        assert (m.topic, m.payload, m.qos) == ("psess/t", b"while-away", 1)
    finally:
        p.close()


def test_v5_session_mosquitto_sub_session_expiry(broker):
    """[MQTT-3.1.2-23] mosquitto_sub -V mqttv5 -c -x 60 (Clean Start 0, Session Expiry Interval
    60; with -c, -D connect session-expiry-interval is refused as a duplicate) keeps its
    session: a QoS 1 message published while it was away is printed when it comes back."""
    args = ["-V", "mqttv5", "-c", "-x", "60", "-i", "msub-sess", "-q", "1", "-t", "msess/t"]
    first = h.SubProc(broker.port, *args)
    mark = broker.mark()
    first.stop()
    wait_gone(broker, "msub-sess", mark)
    h.run_pub(broker.port, "-V", "mqttv5", "-t", "msess/t", "-m", "queued", "-q", "1")
    # The queued message may come before the SUBACK: read mosquitto_sub's output at exit.
    r = subprocess.run([h.MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), *args,
                        "-C", "1"], capture_output=True, timeout=h.TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"queued\n"), r


# -- retransmission ------------------------------------------------------------------------

def test_v5_session_unacked_resent_with_dup(broker):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.2-3] [MQTT-4.3.3-3] unacknowledged QoS 1 and 2
    PUBLISHes are resent on reconnect (Clean Start 0, session present) with DUP 1, their
    original packet ids and in their original order; [MQTT-4.3.3-5] [MQTT-4.3.3-6] a QoS 2
    message already PUBREC'd is resumed with its PUBREL, never the PUBLISH again."""
    c = client5(broker, "resend", clean=False, props=EXP)
    c.subscribe([("rs/#", 2)])
    pub = client5(broker, "pub")
    for i, q in enumerate((1, 2, 2)):
        pub.publish(f"rs/{i}", str(i).encode(), qos=q)
    first = [c.recv_publish(ack=False) for _ in range(3)]
    assert [m.dup for m in first] == [False] * 3
    c.send(ack5_pkt(h.PUBREC, first[2].pid))
    rel = parse_ack5(c.expect(PUBREL))
    assert rel.pid == first[2].pid
    c.close()
    back = MqttConn5(broker.port)
    back.connect("resend", clean=False, props=EXP, expect_sp=True)
    again = [back.recv() for _ in range(3)]
    pubs = [parse_publish5(p) for p in again if p.type == PUBLISH]
    rels = [parse_ack5(p) for p in again if p.type == PUBREL]
    assert [(m.pid, m.payload, m.dup, m.qos) for m in pubs] == \
        [(first[0].pid, b"0", True, 1), (first[1].pid, b"1", True, 2)]
    assert [r.pid for r in rels] == [first[2].pid]
    back.send(ack5_pkt(h.PUBACK, pubs[0].pid) + ack5_pkt(h.PUBREC, pubs[1].pid)
              + ack5_pkt(h.PUBCOMP, rels[0].pid))
    assert parse_ack5(back.expect(PUBREL)).pid == pubs[1].pid
    back.send(ack5_pkt(h.PUBCOMP, pubs[1].pid))
    back.ping()
    back.expect_no_packet()


def test_v5_session_refused_acks_never_resent(broker):
    """[MQTT-4.4.0-2] a PUBLISH answered with PUBACK 0x80 or PUBREC 0x80 counts as
    acknowledged: no PUBREL follows the PUBREC, and neither is resent after a reconnect."""
    c = client5(broker, "refuser", clean=False, props=EXP)
    c.subscribe([("rf/#", 2)])
    pub = client5(broker, "pub")
    pub.publish("rf/1", b"one", qos=1)
    pub.publish("rf/2", b"two", qos=2)
    a = c.recv_publish(ack=False)
    b2 = c.recv_publish(ack=False)
    c.send(ack5_pkt(h.PUBACK, a.pid, 0x80) + ack5_pkt(h.PUBREC, b2.pid, 0x80))
    c.ping()  # no PUBREL before the PINGRESP
    mark = broker.mark()
    c.disconnect()
    wait_gone(broker, "refuser", mark)
    back = client5(broker, "refuser", clean=False, props=EXP, expect_sp=True)
    back.ping()
    back.expect_no_packet()


def test_v5_session_expiry_not_applied_once_sent(broker):
    """[MQTT-4.3.3-7] once a QoS 2 PUBLISH has been sent, its Message Expiry Interval no
    longer applies: a message with 1 s, sent but not acknowledged, is resent (DUP 1) after a
    reconnect 2 s later."""
    c = client5(broker, "late-ack", clean=False, props=EXP)
    c.subscribe([("la/t", 2)])
    client5(broker, "pub").publish("la/t", b"x", qos=2, props=[(P_MESSAGE_EXPIRY, 1)])
    m = c.recv_publish(ack=False)
    mark = broker.mark()
    c.close()
    wait_gone(broker, "late-ack", mark)
    time.sleep(2.0)  # past the message's expiry
    back = client5(broker, "late-ack", clean=False, props=EXP, expect_sp=True)
    again = back.recv_publish()
    assert (again.pid, again.payload, again.dup) == (m.pid, b"x", True)


# -- the will ------------------------------------------------------------------------------

WILL_PROPS = [(P_PAYLOAD_FORMAT, 1), (P_USER, ("z", "last")), (P_CONTENT_TYPE, "text/plain"),
              (P_RESPONSE_TOPIC, "wp/reply"), (P_CORRELATION_DATA, b"\x01\x02"),
              (P_USER, ("a", "first"))]


def test_v5_will_properties_forwarded(broker):
    """[MQTT-3.1.2-7] [MQTT-3.1.3-10] [MQTT-3.1.2-14] the will of a connection that ends
    without DISCONNECT is published with its Will Properties that travel with a message
    (Payload Format Indicator, User Properties in their order, Content Type, Response Topic,
    Correlation Data), without its Will Delay Interval, at its QoS and not retained."""
    w = watcher(broker, "wp/#")
    c = client5(broker, "wp", will=("wp/status", b"offline", 1, False),
                will_props=WILL_PROPS + [(P_WILL_DELAY, 0)])
    c.close()
    m = w.recv_publish()
    assert (m.topic, m.payload, m.qos, m.retain) == ("wp/status", b"offline", 1, False)
    assert m.props.items == WILL_PROPS
    late = client5(broker, "late")
    late.subscribe([("wp/#", 1)])
    late.expect_no_packet()


def test_v5_will_retained(broker):
    """[MQTT-3.1.2-15] [MQTT-3.1.2-12] a will with Will Retain 1 and Will QoS 2 is published
    as a retained message: a later subscriber gets it with RETAIN 1 at QoS 2."""
    c = client5(broker, "wr", will=("wr/status", b"offline", 2, True))
    mark = broker.mark()
    c.close()
    wait_gone(broker, "wr", mark)
    late = client5(broker, "late")
    late.subscribe([("wr/#", 2)])
    m = late.recv_publish()
    assert (m.topic, m.payload, m.retain, m.qos) == ("wr/status", b"offline", True, 2)


def test_v5_will_disconnect_reason_codes(broker):
    """[MQTT-3.14.4-3] [MQTT-3.1.2-10] DISCONNECT 0x00 discards the will; DISCONNECT 0x04
    Disconnect with Will Message publishes it (raw client and paho-mqtt); the server does not
    answer either DISCONNECT."""
    w = watcher(broker, "wd/#")
    a = client5(broker, "normal", will=("wd/normal", b"x", 0, False))
    a.send(disconnect5_pkt(0x00))
    assert a.expect_closed() == []
    b = client5(broker, "withwill", will=("wd/withwill", b"y", 0, False))
    b.send(disconnect5_pkt(0x04))
    assert b.expect_closed() == []
    p = Paho5(broker.port, "paho-will", will=("wd/paho", b"z", 1, False))
    p.close(reason=0x04)
    got = sorted((m.topic, m.payload) for m in w.collect(2))
    assert got == [("wd/paho", b"z"), ("wd/withwill", b"y")]
    w.ping()
    w.expect_no_packet()


def test_v5_will_published_once(broker):
    """[MQTT-3.1.2-10] a published will is removed: the session it belonged to comes back
    (Clean Start 0) without a will, ends again, and nothing more is published."""
    w = watcher(broker, "once/#")
    c = client5(broker, "once", clean=False, props=EXP, will=("once/w", b"1", 1, False))
    mark = broker.mark()
    c.close()
    wait_gone(broker, "once", mark)
    assert w.recv_publish().payload == b"1"
    back = client5(broker, "once", clean=False, props=EXP, expect_sp=True)
    back.close()
    w.ping()
    w.expect_no_packet()


def test_v5_will_delay_published_after_delay(broker):
    """[MQTT-3.1.2-8] a will with a Will Delay Interval of 2 s (session expiry 300) is
    published when the delay has run out after the connection closed: not in the first
    second, then within the deadline, at least 2 s after the close."""
    w = watcher(broker, "delay/#")
    c = client5(broker, "delayed", clean=False, props=EXP,
                will=("delay/w", b"late", 1, False), will_props=[(P_WILL_DELAY, 2)])
    mark = broker.mark()
    c.close()
    wait_gone(broker, "delayed", mark)
    start = time.monotonic()
    h.expect_quiet([w], 1.0)
    m = w.recv_publish(timeout=h.scaled(6))
    assert time.monotonic() - start >= 1.8
    assert (m.topic, m.payload) == ("delay/w", b"late")
    assert P_WILL_DELAY not in m.props


def test_v5_will_delay_cancelled_by_reconnect(broker):
    """[MQTT-3.1.3-9] [MQTT-3.1.2-8] a client that reconnects before its Will Delay Interval
    (2 s) has passed cancels the will: nothing is published during and after the delay,
    and the new connection's clean DISCONNECT publishes nothing either."""
    w = watcher(broker, "cancel/#")
    c = client5(broker, "cancel", clean=False, props=EXP,
                will=("cancel/w", b"x", 1, False), will_props=[(P_WILL_DELAY, 2)])
    mark = broker.mark()
    c.close()
    wait_gone(broker, "cancel", mark)
    back = client5(broker, "cancel", clean=False, props=EXP, expect_sp=True)
    h.expect_quiet([w, back], 3.0)  # past the 2 s the delay would have taken
    back.disconnect()
    w.ping()
    w.expect_no_packet()


def test_v5_will_published_when_session_ends_first(broker):
    """[MQTT-3.1.2-8] a will waiting for a Will Delay Interval (60 s) longer than its
    session's expiry (1 s) is published when the session ends."""
    w = watcher(broker, "se/#")
    c = client5(broker, "se", clean=False, props=[(P_SESSION_EXPIRY, 1)],
                will=("se/w", b"ended", 1, False), will_props=[(P_WILL_DELAY, 60)])
    c.close()
    m = w.recv_publish(timeout=h.scaled(6))
    assert (m.topic, m.payload) == ("se/w", b"ended")


def test_v5_will_delay_with_session_ending_at_close(broker):
    """[MQTT-3.1.2-8] a will with a Will Delay Interval whose session ends with the
    connection (Session Expiry Interval 0) is published at the close."""
    w = watcher(broker, "now/#")
    c = client5(broker, "now", will=("now/w", b"at once", 0, False),
                will_props=[(P_WILL_DELAY, 60)])
    c.close()
    assert w.recv_publish(timeout=h.scaled(3)).payload == b"at once"


def test_v5_will_paho(broker):
    """[MQTT-3.1.3-10] [MQTT-3.1.2-7] paho-mqtt's will_set with properties (Content Type,
    User Properties): when the client dies the will reaches a paho MQTTv5 subscriber with
    them."""
    w = Paho5(broker.port, "paho-watch")
    wprops = Paho5.properties("WILLMESSAGE", ContentType="application/json",
                              UserProperty=[("b", "2"), ("a", "1")])
    dying = Paho5(broker.port, "paho-dying", will=("pw/status", b'{"up":false}', 1, False,
                                                    wprops))
    try:
        assert w.subscribe("pw/#", 1) == [1]
        dying.kill()
        m = w.get()
        assert (m.topic, m.payload) == ("pw/status", b'{"up":false}')
        assert m.properties.ContentType == "application/json"
        assert m.properties.UserProperty == [("b", "2"), ("a", "1")]
    finally:
        w.close()


def test_v5_will_on_takeover_only_when_session_ends(broker):
    """[MQTT-3.1.4-3] [MQTT-3.1.2-8] a takeover sends the old connection DISCONNECT 0x8E;
    its will is published when its session ends there (the old connection had Session
    Expiry Interval 0), not when the session continues on the new connection (as Mosquitto
    2.0 does)."""
    w = watcher(broker, "tw/#")
    old = client5(broker, "tw-keep", clean=False, props=EXP, will=("tw/keep", b"k", 0, False))
    client5(broker, "tw-keep", clean=False, props=EXP, expect_sp=True)
    old.expect_disconnect(0x8E)
    old2 = client5(broker, "tw-end", will=("tw/end", b"e", 0, False))
    client5(broker, "tw-end", clean=False, props=EXP, expect_sp=False)
    old2.expect_disconnect(0x8E)
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("tw/end", b"e")
    w.ping()
    w.expect_no_packet()


def test_v5_will_delayed_published_at_shutdown(start_broker, tmp_path):
    """No numbered statement (what happens to wills at shutdown is left open); midge's choice,
    as for 3.1.1: wills still waiting for their Will Delay
    Interval are published before the broker exits, so a retained "offline" status is
    there after a restart (persistence true)."""
    conf = ["persistence true", f"persistence_location {tmp_path}/"]
    br = start_broker(conf)
    c = client5(br, "board", clean=False, props=EXP, will=("sd/board", b"offline", 1, True),
                will_props=[(P_WILL_DELAY, 600)])
    mark = br.mark()
    c.close()
    wait_gone(br, "board", mark)
    assert br.stop() == 0
    br2 = start_broker(conf)
    fresh = client5(br2, "fresh")
    fresh.subscribe([("sd/#", 1)])
    m = fresh.recv_publish()
    assert (m.topic, m.payload, m.retain) == ("sd/board", b"offline", True)


def test_v5_will_message_expiry_counts_from_publication(broker):
    """[MQTT-3.1.2-8] [MQTT-3.3.2-6] a will's Message Expiry Interval is "the lifetime of the
    Will Message in seconds and is sent as the Publication Expiry Interval when the Server
    publishes the Will Message" (3.1.3.2.4): a will with 2 s, whose client stayed connected
    for 3 s, is still published when the connection drops, with (about) 2 s left."""
    w = watcher(broker, "wexp/#")
    c = client5(broker, "wexp", will=("wexp/status", b"offline", 1, False),
                will_props=[(P_MESSAGE_EXPIRY, 2)])
    time.sleep(3.0)  # connected longer than the will's lifetime
    c.ping()
    c.close()
    m = w.recv_publish()
    assert (m.topic, m.payload) == ("wexp/status", b"offline")
    assert m.props.get(P_MESSAGE_EXPIRY) in (1, 2)


def test_v5_session_queued_messages_keep_subscription_ids(broker):
    """[MQTT-3.3.4-3] a message queued for a persistent session while its client is away
    carries the Subscription Identifier of the subscription it matched when it is finally
    sent, and so does one resent after a reconnect."""
    c = client5(broker, "sidq", clean=False, props=EXP)
    c.subscribe([("sidq/#", 1)], props=[(h.P_SUBSCRIPTION_ID, 5)])
    pub = client5(broker, "pub")
    pub.publish("sidq/a", b"in-flight", qos=1)
    first = c.recv_publish(ack=False)
    assert first.props.all(h.P_SUBSCRIPTION_ID) == [5]
    mark = broker.mark()
    c.close()
    wait_gone(broker, "sidq", mark)
    pub.publish("sidq/b", b"queued", qos=1)
    back = client5(broker, "sidq", clean=False, props=EXP, expect_sp=True)
    got = back.collect(2)
    assert [(m.payload, m.dup, m.props.all(h.P_SUBSCRIPTION_ID)) for m in got] == \
        [(b"in-flight", True, [5]), (b"queued", False, [5])]


def test_v5_will_delay_applies_after_disconnect_with_will(broker):
    """[MQTT-3.1.2-8] [MQTT-3.14.4-3] DISCONNECT 0x04 (Disconnect with Will Message) keeps the
    will and its Will Delay Interval (1 s): nothing in the first half second, then the
    will."""
    w = watcher(broker, "d4/#")
    c = client5(broker, "d4", clean=False, props=EXP, will=("d4/w", b"later", 0, False),
                will_props=[(P_WILL_DELAY, 1)])
    c.send(disconnect5_pkt(0x04))
    assert c.expect_closed() == []
    h.expect_quiet([w], 0.5)
    assert w.recv_publish(timeout=h.scaled(5)).payload == b"later"


def test_v5_session_restart_keeps_mqtt5_state(start_broker, tmp_path):
    """[MQTT-3.1.2-23] [MQTT-3.3.4-3] [MQTT-3.3.2-17] [MQTT-3.3.2-6] with persistence true a
    persistent MQTT 5 session survives a restart whole: its Session Expiry Interval, its
    subscription's Subscription Identifier (on live messages afterwards), and the queued
    message with its User Property, its Subscription Identifier and its remaining Message
    Expiry Interval."""
    conf = ["persistence true", f"persistence_location {tmp_path}/"]
    br = start_broker(conf)
    c = client5(br, "pers", clean=False, props=EXP)
    c.subscribe([("pr/#", 1)], props=[(h.P_SUBSCRIPTION_ID, 4)])
    mark = br.mark()
    c.disconnect()
    wait_gone(br, "pers", mark)
    client5(br, "pub").publish("pr/t", b"queued", qos=1,
                               props=[(P_USER, ("k", "v")), (P_MESSAGE_EXPIRY, 100)])
    assert br.stop() == 0
    br2 = start_broker(conf)
    back = client5(br2, "pers", clean=False, props=EXP, expect_sp=True)
    m = back.recv_publish()
    assert (m.payload, m.props.user, m.props.all(h.P_SUBSCRIPTION_ID)) == \
        (b"queued", [("k", "v")], [4])
    assert 1 <= m.props.get(P_MESSAGE_EXPIRY, 0) <= 100
    client5(br2, "pub").publish("pr/t", b"live", qos=1)
    m = back.recv_publish()
    assert (m.payload, m.props.all(h.P_SUBSCRIPTION_ID)) == (b"live", [4])

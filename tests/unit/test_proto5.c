/* test_proto5.c - whole MQTT 5 conversations through the protocol layer (src/proto/) over
 * the fake sink of proto_fixture.h: the rules MQTT 5 adds, each checked through proto alone
 * (CONNECT/CONNACK properties, session expiry, will delay, DISCONNECT both ways, topic
 * aliases, flow control, packet size, expiry, forwarded properties, subscription options
 * and identifiers, reason codes), and MQTT 5 and 3.1.1 clients on the same topics.
 */
#include "proto_fixture.h"

#include "midge/sys.h"

/* The CONNACK of an accepted MQTT 5 client tells it the limits: Receive Maximum
 * (max_inflight_messages), Topic Alias Maximum, and nothing at its default value
 * ([MQTT-3.2.2-9] and 3.2.2.3). */
static void test_v5_connack_properties(void **state)
{
    (void)state;
    struct mq_packet ack;
    connect5("v5", true, 0, false, &ack);
    assert_true(codec_props_has(&ack.props, MQ_PROP_RECEIVE_MAXIMUM));
    assert_int_equal(ack.props.receive_maximum, 20);
    assert_int_equal(ack.props.topic_alias_maximum, 10);
    assert_false(codec_props_has(&ack.props, MQ_PROP_MAXIMUM_QOS));
    assert_false(codec_props_has(&ack.props, MQ_PROP_RETAIN_AVAILABLE));
    assert_false(codec_props_has(&ack.props, MQ_PROP_SERVER_KEEP_ALIVE));
    assert_false(codec_props_has(&ack.props, MQ_PROP_ASSIGNED_CLIENT_ID));
    assert_false(codec_props_has(&ack.props, MQ_PROP_RESPONSE_INFO));
    assert_int_equal(E.b->stats.clients_by_version[2], 1);

    /* Configured limits appear: max_qos, retain_available, max_packet_size, max_keepalive
     * (Server Keep Alive, also for a client asking for none), and Response Information
     * only when asked for ([MQTT-3.1.2-28]). */
    E.cfg.max_qos = 1;
    E.cfg.retain_available = false;
    E.cfg.max_packet_size = 4096;
    E.cfg.max_keepalive = 60;
    E.cfg.max_inflight_messages = 0; /* unlimited: Receive Maximum left at its 65535 */
    char info[] = "replies/";
    E.cfg.response_information = info;
    struct props pp;
    props_init(&pp);
    codec_prop_put_u8(&pp.w, MQ_PROP_REQUEST_RESPONSE_INFO, 1);
    struct fake_io *io = io_open();
    struct mq_packet p = connect5_pkt("lim", true, 0, NULL, &pp, NULL);
    send_packet(io, &p);
    ack = expect_type(io, MQ_CONNACK);
    E.cfg.response_information = NULL; /* not owned by the config: config_free must not free it */
    assert_int_equal(ack.u.connack.return_code, 0);
    assert_int_equal(ack.props.maximum_qos, 1);
    assert_true(codec_props_has(&ack.props, MQ_PROP_RETAIN_AVAILABLE));
    assert_int_equal(ack.props.retain_available, 0);
    assert_int_equal(ack.props.maximum_packet_size, 4096);
    assert_int_equal(ack.props.server_keep_alive, 60);
    assert_false(codec_props_has(&ack.props, MQ_PROP_RECEIVE_MAXIMUM));
    assert_true(codec_props_has(&ack.props, MQ_PROP_RESPONSE_INFO));
    assert_int_equal(ack.props.response_info.len, 8);
    assert_int_equal(io->conn->keepalive, 60);
}

/* An empty client id is assigned one, returned in CONNACK, whatever Clean Start says
 * ([MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.2.2-16]). */
static void test_v5_assigned_client_id(void **state)
{
    (void)state;
    struct mq_packet ack;
    struct fake_io *io = connect5("", false, 100, false, &ack);
    assert_true(codec_props_has(&ack.props, MQ_PROP_ASSIGNED_CLIENT_ID));
    const struct mq_session *s = session_of(io);
    assert_int_equal(ack.props.assigned_client_id.len, s->client_id_len);
    assert_memory_equal(ack.props.assigned_client_id.ptr, s->client_id, s->client_id_len);
    assert_int_equal(session_expiry(s), 100);
}

/* Refusals carry MQTT 5 reason codes: an authentication method (none configured: 0x8C, as
 * Mosquitto without a plugin), anonymous access refused (0x87); with Request Problem
 * Information 0 there is no Reason String. */
static void test_v5_connect_refusals(void **state)
{
    (void)state;
    struct props pp;
    props_init(&pp);
    codec_prop_put_bytes(&pp.w, MQ_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    struct fake_io *io = io_open();
    struct mq_packet p = connect5_pkt("auth", true, 0, NULL, &pp, NULL);
    send_packet(io, &p);
    struct mq_packet ack = expect_type(io, MQ_CONNACK);
    assert_int_equal(ack.u.connack.return_code, MQ_RC_BAD_AUTHENTICATION_METHOD);
    assert_true(codec_props_has(&ack.props, MQ_PROP_REASON_STRING));
    expect_nothing(io);
    expect_close_requested(io);

    E.listener.allow_anonymous = false;
    props_init(&pp);
    codec_prop_put_u8(&pp.w, MQ_PROP_REQUEST_PROBLEM_INFO, 0);
    io = io_open();
    p = connect5_pkt("anon", true, 0, NULL, &pp, NULL);
    send_packet(io, &p);
    ack = expect_type(io, MQ_CONNACK);
    assert_int_equal(ack.u.connack.return_code, MQ_RC_NOT_AUTHORIZED);
    assert_false(codec_props_has(&ack.props, MQ_PROP_REASON_STRING));
    expect_close_requested(io);
    assert_int_equal(imap_count(&E.b->sessions), 0);
}

/* A session with an expiry interval outlives its connection exactly that long
 * ([MQTT-3.1.2-23], [MQTT-4.1.0-2]); Clean Start 0 resumes it with session present. */
static void test_v5_session_expiry(void **state)
{
    (void)state;
    struct fake_io *io = connect5("exp", false, 10, false, NULL);
    assert_int_equal(subscribe5(io, 1, "e/#", 1, 0), 1);
    send_packet(io, &(struct mq_packet){.type = MQ_DISCONNECT, .version = 5});
    io_gone(io, "closed");
    E.b->now_ms = T0 + 9999;
    broker_tick(E.b);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "e/1", "kept", 1, false, 1, NULL);
    expect_ack5(pub, MQ_PUBACK, 1, MQ_RC_SUCCESS);
    io = connect5("exp", false, 10, true, NULL);
    send_ack(io, MQ_PUBACK, expect_publish(io, "e/1", "kept", 1, false, false));
    send_packet(io, &(struct mq_packet){.type = MQ_DISCONNECT, .version = 5});
    io_gone(io, "closed");
    E.b->now_ms = T0 + 9999 + 10000;
    broker_tick(E.b);
    assert_null(imap_get(&E.b->sessions, "exp", 3, test_session_key));
    /* Expiry 0 (the default): the session ends with the connection. */
    io = connect5("zero", false, 0, false, NULL);
    io_gone(io, "peer closed");
    assert_null(imap_get(&E.b->sessions, "zero", 4, test_session_key));
}

/* DISCONNECT may change the Session Expiry Interval, but not from 0 (a protocol error:
 * DISCONNECT 0x82 from the server, and the will published); the server never puts one
 * in its own DISCONNECT ([MQTT-3.14.2-2]). */
static void test_v5_disconnect_session_expiry(void **state)
{
    (void)state;
    struct fake_io *io = connect5("d1", false, 5, false, NULL);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_SESSION_EXPIRY, 0);
    struct mq_packet d = {.type = MQ_DISCONNECT, .version = 5};
    d.props.raw = pp.buf;
    d.props.raw_len = (uint32_t)pp.w.len;
    send_packet(io, &d);
    expect_close_requested(io);
    io_gone(io, "closed");
    assert_null(imap_get(&E.b->sessions, "d1", 2, test_session_key)); /* now ends at once */

    struct fake_io *watch = connect5("watch", true, 0, false, NULL);
    subscribe5(watch, 1, "w/#", 0, 0);
    struct will w = {"w/d2", "gone", 0, false};
    io = io_open();
    struct mq_packet c = connect5_pkt("d2", true, 0, &w, NULL, NULL);
    send_packet(io, &c);
    expect_type(io, MQ_CONNACK);
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_SESSION_EXPIRY, 60);
    d.props.raw = pp.buf;
    d.props.raw_len = (uint32_t)pp.w.len;
    send_packet(io, &d);
    struct mq_packet dis = expect_type(io, MQ_DISCONNECT);
    assert_int_equal(dis.u.disconnect.reason, MQ_RC_PROTOCOL_ERROR);
    assert_false(codec_props_has(&dis.props, MQ_PROP_SESSION_EXPIRY));
    expect_close_requested(io);
    expect_publish(watch, "w/d2", "gone", 0, false, false);
}

/* DISCONNECT 0x04 publishes the will; 0x00 discards it ([MQTT-3.14.4-3]). */
static void test_v5_disconnect_with_will(void **state)
{
    (void)state;
    struct fake_io *watch = connect5("watch", true, 0, false, NULL);
    subscribe5(watch, 1, "w/#", 0, 0);
    struct will w = {"w/x", "bye", 0, false};
    for (int i = 0; i < 2; i++) {
        struct fake_io *io = io_open();
        struct mq_packet c = connect5_pkt(i ? "normal" : "withwill", true, 0, &w, NULL, NULL);
        send_packet(io, &c);
        expect_type(io, MQ_CONNACK);
        struct mq_packet d = {.type = MQ_DISCONNECT, .version = 5};
        d.u.disconnect.reason = i ? MQ_RC_NORMAL_DISCONNECTION : MQ_RC_DISCONNECT_WITH_WILL;
        send_packet(io, &d);
        expect_close_requested(io);
        expect_nothing(io); /* the server does not answer a client's DISCONNECT */
    }
    expect_publish(watch, "w/x", "bye", 0, false, false);
    expect_nothing(watch);
}

/* A will with a Will Delay Interval waits: published when the delay runs out, or when
 * the session ends first; not at all when the client comes back within it
 * ([MQTT-3.1.2-8], [MQTT-3.1.3-9]). Its properties travel with it ([MQTT-3.1.3-10]). */
static void test_v5_will_delay(void **state)
{
    (void)state;
    struct fake_io *watch = connect5("watch", true, 0, false, NULL);
    subscribe5(watch, 1, "w/#", 0, 0);
    struct will w = {"w/late", "offline", 0, false};
    struct props wp, cp;
    props_init(&wp);
    codec_prop_put_u32(&wp.w, MQ_PROP_WILL_DELAY, 5);
    codec_prop_put_pair(&wp.w, "k", 1, "v", 1);
    props_init(&cp);
    codec_prop_put_u32(&cp.w, MQ_PROP_SESSION_EXPIRY, 60);

    /* Delay runs out. */
    struct fake_io *io = io_open();
    struct mq_packet c = connect5_pkt("late", false, 0, &w, &cp, &wp);
    send_packet(io, &c);
    expect_type(io, MQ_CONNACK);
    io_gone(io, "peer closed");
    E.b->now_ms = T0 + 4999;
    broker_tick(E.b);
    expect_nothing(watch);
    E.b->now_ms = T0 + 5000;
    broker_tick(E.b);
    struct mq_packet p = expect_type(watch, MQ_PUBLISH);
    assert_int_equal(p.props.user_count, 1);
    assert_false(codec_props_has(&p.props, MQ_PROP_WILL_DELAY));

    /* Back within the delay: no will, session resumed. */
    io = io_open();
    send_packet(io, &c);
    struct mq_packet ack = expect_type(io, MQ_CONNACK);
    assert_true(ack.u.connack.session_present);
    io_gone(io, "peer closed");
    E.b->now_ms += 1000;
    broker_tick(E.b);
    io = connect5("late", false, 60, true, NULL);
    E.b->now_ms += 10000;
    broker_tick(E.b);
    expect_nothing(watch);

    /* The session ends before the delay: the will goes out then. */
    struct props short_exp;
    props_init(&short_exp);
    codec_prop_put_u32(&short_exp.w, MQ_PROP_SESSION_EXPIRY, 2);
    struct props long_delay;
    props_init(&long_delay);
    codec_prop_put_u32(&long_delay.w, MQ_PROP_WILL_DELAY, 100);
    struct fake_io *io2 = io_open();
    c = connect5_pkt("short", true, 0, &w, &short_exp, &long_delay);
    send_packet(io2, &c);
    expect_type(io2, MQ_CONNACK);
    io_gone(io2, "peer closed");
    E.b->now_ms += 2000;
    broker_tick(E.b);
    expect_type(watch, MQ_PUBLISH);
    assert_null(imap_get(&E.b->sessions, "short", 5, test_session_key));
}

/* Takeover sends the old connection DISCONNECT 0x8E ([MQTT-3.1.4-3]); shutdown sends 0x8B;
 * a keepalive timeout 0x8D. */
static void test_v5_server_disconnects(void **state)
{
    (void)state;
    struct fake_io *old = connect5("tk", false, 30, false, NULL);
    struct fake_io *new = connect5("tk", false, 30, true, NULL);
    expect_disconnect(old, MQ_RC_SESSION_TAKEN_OVER);
    io_gone(old, "closed by broker");

    struct props pp;
    props_init(&pp);
    struct fake_io *ka = io_open();
    struct mq_packet c = connect5_pkt("ka", true, 10, NULL, &pp, NULL);
    send_packet(ka, &c);
    expect_type(ka, MQ_CONNACK);
    E.b->now_ms = T0 + 15000;
    broker_tick(E.b);
    expect_disconnect(ka, MQ_RC_KEEP_ALIVE_TIMEOUT);

    broker_close_all(E.b);
    expect_disconnect(new, MQ_RC_SERVER_SHUTTING_DOWN);
}

/* Inbound topic aliases: a PUBLISH sets one with its topic, later ones use it with an
 * empty topic ([MQTT-3.3.2-12]); an alias over the maximum is DISCONNECT 0x94, an unknown
 * one 0x82. Aliases are never forwarded. */
static void test_v5_topic_alias_in(void **state)
{
    (void)state;
    struct fake_io *sub = connect5("sub", true, 0, false, NULL);
    subscribe5(sub, 1, "a/#", 0, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u16(&pp.w, MQ_PROP_TOPIC_ALIAS, 3);
    send_publish5(pub, "a/long/topic", "1", 0, false, 0, &pp);
    send_publish5(pub, "", "2", 0, false, 0, &pp);
    for (int i = 1; i <= 2; i++) {
        struct mq_packet p = expect_type(sub, MQ_PUBLISH);
        assert_int_equal(p.u.publish.topic.len, 12);
        assert_false(codec_props_has(&p.props, MQ_PROP_TOPIC_ALIAS));
    }
    props_init(&pp);
    codec_prop_put_u16(&pp.w, MQ_PROP_TOPIC_ALIAS, 11);
    send_publish5(pub, "a/b", "x", 0, false, 0, &pp);
    expect_disconnect(pub, MQ_RC_TOPIC_ALIAS_INVALID);

    struct fake_io *pub2 = connect5("pub2", true, 0, false, NULL);
    props_init(&pp);
    codec_prop_put_u16(&pp.w, MQ_PROP_TOPIC_ALIAS, 4);
    send_publish5(pub2, "", "x", 0, false, 0, &pp);
    expect_disconnect(pub2, MQ_RC_PROTOCOL_ERROR);
    expect_nothing(sub);
}

/* A client may have at most max_inflight_messages QoS 1/2 PUBLISHes unanswered (the
 * Receive Maximum it was told); one more is DISCONNECT 0x93. A QoS 2 exchange counts
 * until PUBCOMP. */
static void test_v5_receive_maximum_in(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 2;
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "q", "1", 2, false, 1, NULL);
    expect_ack5(pub, MQ_PUBREC, 1, MQ_RC_NO_MATCHING_SUBSCRIBERS);
    send_publish5(pub, "q", "2", 2, false, 2, NULL);
    expect_ack5(pub, MQ_PUBREC, 2, MQ_RC_NO_MATCHING_SUBSCRIBERS);
    send_publish5(pub, "q", "2", 2, false, 2, NULL); /* a retransmission: not a third */
    expect_ack5(pub, MQ_PUBREC, 2, 0);
    send_ack(pub, MQ_PUBREL, 1);
    expect_ack5(pub, MQ_PUBCOMP, 1, 0);
    send_publish5(pub, "q", "3", 1, false, 3, NULL); /* room again */
    expect_ack5(pub, MQ_PUBACK, 3, MQ_RC_NO_MATCHING_SUBSCRIBERS);
    send_publish5(pub, "q", "4", 2, false, 4, NULL);
    expect_ack5(pub, MQ_PUBREC, 4, MQ_RC_NO_MATCHING_SUBSCRIBERS);
    send_publish5(pub, "q", "5", 1, false, 5, NULL);
    expect_disconnect(pub, MQ_RC_RECEIVE_MAXIMUM_EXCEEDED);
}

/* The server sends no more QoS 1/2 messages than the client's Receive Maximum
 * ([MQTT-3.3.4-9]); QoS 0 and other packets are not held back ([MQTT-3.3.4-10]). */
static void test_v5_receive_maximum_out(void **state)
{
    (void)state;
    struct props pp;
    props_init(&pp);
    codec_prop_put_u16(&pp.w, MQ_PROP_RECEIVE_MAXIMUM, 1);
    struct fake_io *sub = io_open();
    struct mq_packet c = connect5_pkt("slow", true, 0, NULL, &pp, NULL);
    send_packet(sub, &c);
    expect_type(sub, MQ_CONNACK);
    subscribe5(sub, 1, "r/#", 1, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "r/1", "a", 1, false, 1, NULL);
    send_publish5(pub, "r/2", "b", 1, false, 2, NULL);
    send_publish5(pub, "r/3", "c", 0, false, 0, NULL);
    uint16_t id = expect_publish(sub, "r/1", "a", 1, false, false);
    expect_nothing(sub); /* b waits for the window; c, behind it, keeps its order */
    send_ack(sub, MQ_PUBACK, id);
    send_ack(sub, MQ_PUBACK, expect_publish(sub, "r/2", "b", 1, false, false));
    expect_publish(sub, "r/3", "c", 0, false, false);
    send_packet(sub, &(struct mq_packet){.type = MQ_PINGREQ, .version = 5});
    expect_type(sub, MQ_PINGRESP);
}

/* A message larger than the client's Maximum Packet Size is not sent, and the server goes
 * on as if it had been delivered: a QoS 1 one takes no window slot ([MQTT-3.1.2-24],
 * [MQTT-3.1.2-25]). */
static void test_v5_maximum_packet_size_out(void **state)
{
    (void)state;
    struct props pp;
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_MAXIMUM_PACKET_SIZE, 40);
    struct fake_io *sub = io_open();
    struct mq_packet c = connect5_pkt("small", true, 0, NULL, &pp, NULL);
    send_packet(sub, &c);
    expect_type(sub, MQ_CONNACK);
    subscribe5(sub, 1, "m/#", 1, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "m/big", "0123456789012345678901234567890123456789", 1, false, 1, NULL);
    send_publish5(pub, "m/ok", "fits", 1, false, 2, NULL);
    send_publish5(pub, "m/big0", "0123456789012345678901234567890123456789", 0, false, 0, NULL);
    struct mq_packet p = expect_type(sub, MQ_PUBLISH);
    assert_int_equal(p.u.publish.payload_len, 4);
    expect_nothing(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 1);
    assert_int_equal(E.b->stats.pub_dropped_too_large, 2);
}

/* Message Expiry Interval: forwarded reduced by the time the message waited
 * ([MQTT-3.3.2-6]); a queued copy whose expiry passed is deleted, not sent
 * ([MQTT-3.3.2-5]); also for retained messages. */
static void test_v5_message_expiry(void **state)
{
    (void)state;
    struct fake_io *sub = connect5("sub", false, 3600, false, NULL);
    subscribe5(sub, 1, "x/#", 1, 0);
    send_packet(sub, &(struct mq_packet){.type = MQ_DISCONNECT, .version = 5});
    io_gone(sub, "closed");
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_MESSAGE_EXPIRY, 10);
    send_publish5(pub, "x/short", "s", 1, true, 1, &pp);
    expect_ack5(pub, MQ_PUBACK, 1, 0);
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_MESSAGE_EXPIRY, 100);
    send_publish5(pub, "x/long", "l", 1, false, 2, &pp);
    expect_ack5(pub, MQ_PUBACK, 2, 0);
    E.b->now_ms = T0 + 30500;
    sub = connect5("sub", false, 3600, true, NULL);
    struct mq_packet p = expect_type(sub, MQ_PUBLISH);
    assert_int_equal(p.u.publish.payload_len, 1);
    assert_int_equal(p.u.publish.payload[0], 'l');
    assert_int_equal(p.props.message_expiry, 70); /* 100 - 30.5, rounded up */
    send_ack(sub, MQ_PUBACK, p.u.publish.packet_id);
    expect_nothing(sub);
    assert_int_equal(E.b->stats.msgs_expired, 1);
    /* The retained x/short expired too: a new subscriber does not get it. */
    struct fake_io *late = connect5("late", true, 0, false, NULL);
    subscribe5(late, 1, "x/#", 1, 0);
    expect_nothing(late);
}

/* What a publisher sets is forwarded unchanged and in order to MQTT 5 subscribers: Payload
 * Format Indicator, Content Type, Response Topic, Correlation Data, User Properties
 * ([MQTT-3.3.2-4], -15, -16, -17, -18, -20); a 3.1.1 subscriber of the same topic gets
 * the message without them. */
static void test_v5_properties_forwarded(void **state)
{
    (void)state;
    struct fake_io *v5 = connect5("v5sub", true, 0, false, NULL);
    subscribe5(v5, 1, "p/#", 0, 0);
    struct fake_io *v3 = connect_client("v3sub", true, false);
    subscribe(v3, 1, "p/#", 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u8(&pp.w, MQ_PROP_PAYLOAD_FORMAT, 1);
    codec_prop_put_pair(&pp.w, "first", 5, "1", 1);
    codec_prop_put_bytes(&pp.w, MQ_PROP_CONTENT_TYPE, "text/plain", 10);
    codec_prop_put_bytes(&pp.w, MQ_PROP_RESPONSE_TOPIC, "p/reply", 7);
    codec_prop_put_bytes(&pp.w, MQ_PROP_CORRELATION_DATA, "\x01\x02", 2);
    codec_prop_put_pair(&pp.w, "second", 6, "2", 1);
    codec_prop_put_pair(&pp.w, "first", 5, "again", 5);
    send_publish5(pub, "p/x", "hello", 0, false, 0, &pp);
    struct mq_packet p = expect_type(v5, MQ_PUBLISH);
    assert_int_equal(p.props.raw_len, pp.w.len); /* the very bytes, in the same order */
    assert_memory_equal(p.props.raw, pp.buf, pp.w.len);
    expect_publish(v3, "p/x", "hello", 0, false, false);
}

/* Reason codes of PUBACK/PUBREC: 0x10 without subscribers, 0x99 for a payload that is not
 * UTF-8 while the Payload Format Indicator says it is (not forwarded). A PUBREL for an id
 * not held gets PUBCOMP 0x92. */
static void test_v5_publish_reason_codes(void **state)
{
    (void)state;
    struct fake_io *sub = connect5("sub", true, 0, false, NULL);
    subscribe5(sub, 1, "r/ok", 0, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "r/none", "x", 1, false, 1, NULL);
    expect_ack5(pub, MQ_PUBACK, 1, MQ_RC_NO_MATCHING_SUBSCRIBERS);
    send_publish5(pub, "r/ok", "x", 1, false, 2, NULL);
    expect_ack5(pub, MQ_PUBACK, 2, MQ_RC_SUCCESS);
    expect_type(sub, MQ_PUBLISH);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u8(&pp.w, MQ_PROP_PAYLOAD_FORMAT, 1);
    send_publish5(pub, "r/ok", "\xff\xfe", 2, false, 3, &pp);
    expect_ack5(pub, MQ_PUBREC, 3, MQ_RC_PAYLOAD_FORMAT_INVALID);
    expect_nothing(sub);
    /* That exchange is over: a PUBREL for it is for an unknown id. */
    send_ack(pub, MQ_PUBREL, 3);
    expect_ack5(pub, MQ_PUBCOMP, 3, MQ_RC_PACKET_ID_NOT_FOUND);
}

/* Subscription options: No Local ([MQTT-3.8.3-3]), Retain As Published
 * ([MQTT-3.3.1-12], [MQTT-3.3.1-13]), Retain Handling 0/1/2 ([MQTT-3.3.1-9..11]). */
static void test_v5_subscription_options(void **state)
{
    (void)state;
    struct fake_io *c = connect5("opts", true, 0, false, NULL);
    assert_int_equal(subscribe5(c, 1, "nl/#", 1 | MQ_SUB_NO_LOCAL, 0), 1);
    send_publish5(c, "nl/x", "mine", 0, false, 0, NULL);
    expect_nothing(c);
    struct fake_io *other = connect5("other", true, 0, false, NULL);
    send_publish5(other, "nl/x", "theirs", 0, false, 0, NULL);
    expect_publish(c, "nl/x", "theirs", 0, false, false);

    send_publish5(other, "rt/a", "kept", 0, true, 0, NULL);
    /* RH 2: no retained on subscribe; RAP: live ones keep their retain flag. */
    assert_int_equal(subscribe5(c, 2, "rt/#", 0 | (2 << 4) | MQ_SUB_RETAIN_AS_PUBLISHED, 0), 0);
    expect_nothing(c);
    send_publish5(other, "rt/b", "live", 0, true, 0, NULL);
    expect_publish(c, "rt/b", "live", 0, true, false);
    /* RH 1: retained only for a new subscription. */
    struct fake_io *d = connect5("rh1", true, 0, false, NULL);
    subscribe5(d, 1, "rt/a", 0 | (1 << 4), 0);
    expect_publish(d, "rt/a", "kept", 0, true, false);
    subscribe5(d, 2, "rt/a", 0 | (1 << 4), 0);
    expect_nothing(d);
    /* RH 0: sent again on a repeated subscription; without RAP live retain is cleared. */
    subscribe5(d, 3, "rt/a", 0, 0);
    expect_publish(d, "rt/a", "kept", 0, true, false);
    send_publish5(other, "rt/a", "new", 0, true, 0, NULL);
    expect_publish(d, "rt/a", "new", 0, false, false);
}

/* Subscription Identifiers: carried by every message the subscription matches, all of
 * them when several subscriptions match the one copy ([MQTT-3.3.4-3], [MQTT-3.3.4-4]),
 * and by retained messages sent on subscribe. Replaced with the subscription. */
static void test_v5_subscription_identifiers(void **state)
{
    (void)state;
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "s/a", "ret", 0, true, 0, NULL);
    struct fake_io *c = connect5("ids", true, 0, false, NULL);
    subscribe5(c, 1, "s/#", 1, 7);
    struct mq_packet p = expect_type(c, MQ_PUBLISH);
    uint32_t ids[4];
    assert_int_equal(publish_sub_ids(&p, ids, 4), 1);
    assert_int_equal(ids[0], 7);
    subscribe5(c, 2, "s/+", 0, 268435455);
    expect_type(c, MQ_PUBLISH); /* the retained one again, for the new filter */
    send_publish5(pub, "s/b", "live", 1, false, 1, NULL);
    p = expect_type(c, MQ_PUBLISH);
    assert_int_equal(p.u.publish.qos, 1);
    assert_int_equal(publish_sub_ids(&p, ids, 4), 2);
    assert_true((ids[0] == 7 && ids[1] == 268435455) || (ids[1] == 7 && ids[0] == 268435455));
    send_ack(c, MQ_PUBACK, p.u.publish.packet_id);
    subscribe5(c, 3, "s/#", 1, 0);  /* replaced: no identifier any more */
    p = expect_type(c, MQ_PUBLISH); /* the retained s/a for the renewed s/#: no identifier */
    assert_int_equal(publish_sub_ids(&p, ids, 4), 0);
    send_publish5(pub, "s/b", "again", 0, false, 0, NULL);
    p = expect_type(c, MQ_PUBLISH);
    assert_int_equal(publish_sub_ids(&p, ids, 4), 1);
    assert_int_equal(ids[0], 268435455);
    /* A 3.1.1 client subscribed to the same topic gets no identifiers. */
    struct fake_io *v3 = connect_client("v3", true, false);
    subscribe(v3, 1, "s/b", 0);
    send_publish5(pub, "s/b", "x", 0, false, 0, NULL);
    expect_publish(v3, "s/b", "x", 0, false, false);
}

/* SUBACK and UNSUBACK reason codes: a QoS above max_qos is granted at max_qos
 * ([MQTT-3.2.2-10]);
 * UNSUBACK says 0x11 for a filter that was not subscribed ([MQTT-3.11.3-1]). */
static void test_v5_suback_unsuback_codes(void **state)
{
    (void)state;
    E.cfg.max_qos = 1;
    struct fake_io *c = connect5("codes", true, 0, false, NULL);
    assert_int_equal(subscribe5(c, 1, "a", 2, 0), 1);
    uint8_t buf[128];
    const char *filters[] = {"a", "nope"};
    size_t n = topic_list_pkt(MQ_UNSUBSCRIBE, 9, 2, filters, NULL, buf, sizeof buf);
    /* An MQTT 5 UNSUBSCRIBE has a property length after the packet id. */
    uint8_t v5buf[160];
    memcpy(v5buf, buf, 4);
    v5buf[1] = (uint8_t)(buf[1] + 1);
    v5buf[4] = 0;
    memcpy(v5buf + 5, buf + 4, n - 4);
    feed(c, v5buf, n + 1);
    struct mq_packet p = expect_type(c, MQ_UNSUBACK);
    assert_int_equal(p.u.suback.count, 2);
    assert_int_equal(p.u.suback.codes[0], MQ_RC_SUCCESS);
    assert_int_equal(p.u.suback.codes[1], MQ_RC_NO_SUBSCRIPTION_EXISTED);
}

/* An MQTT 5 subscriber that refuses a QoS 2 message with PUBREC 0x80+ ends the exchange:
 * no PUBREL, never retransmitted ([MQTT-4.4.0-2]); the window slot is free again. */
static void test_v5_pubrec_error_ends_flow(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 1;
    struct fake_io *c = connect5("rec", true, 0, false, NULL);
    subscribe5(c, 1, "q2", 2, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    for (uint16_t id = 1; id <= 2; id++) { /* the publisher's own Receive Maximum is 1 too */
        send_publish5(pub, "q2", id == 1 ? "1" : "2", 2, false, id, NULL);
        expect_ack5(pub, MQ_PUBREC, id, 0);
        send_ack(pub, MQ_PUBREL, id);
        expect_ack5(pub, MQ_PUBCOMP, id, 0);
    }
    struct mq_packet p = expect_type(c, MQ_PUBLISH);
    expect_nothing(c);
    struct mq_packet rec = {.type = MQ_PUBREC, .version = 5};
    rec.u.ack.packet_id = p.u.publish.packet_id;
    rec.u.ack.reason = MQ_RC_QUOTA_EXCEEDED;
    send_packet(c, &rec);
    p = expect_type(c, MQ_PUBLISH); /* the next one, not a PUBREL */
    assert_int_equal(p.u.publish.payload[0], '2');
    assert_int_equal(session_inflight_count(session_of(c)), 1);
}

/* AUTH without an agreed authentication method is a protocol error: DISCONNECT 0x82. */
static void test_v5_auth_packet(void **state)
{
    (void)state;
    struct fake_io *c = connect5("auth", true, 0, false, NULL);
    struct mq_packet a = {.type = MQ_AUTH, .version = 5};
    a.u.auth.reason = MQ_RC_CONTINUE_AUTHENTICATION;
    struct props pp;
    props_init(&pp);
    codec_prop_put_bytes(&pp.w, MQ_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    a.props.raw = pp.buf;
    a.props.raw_len = (uint32_t)pp.w.len;
    send_packet(c, &a);
    expect_disconnect(c, MQ_RC_PROTOCOL_ERROR);
}

/* A malformed packet on an MQTT 5 connection gets DISCONNECT 0x81 before the close
 * ([MQTT-4.13.1-1]); a second CONNECT 0x82 ([MQTT-3.1.0-2]). */
static void test_v5_malformed_disconnects(void **state)
{
    (void)state;
    struct fake_io *c = connect5("bad", true, 0, false, NULL);
    /* A property length of 5 with only 2 bytes of properties left. */
    static const uint8_t bad_props[] = {0x30, 6, 0, 1, 't', 5, 0x01, 0x01};
    feed(c, bad_props, sizeof bad_props);
    struct mq_packet p = expect_type(c, MQ_DISCONNECT);
    assert_int_equal(p.u.disconnect.reason, MQ_RC_MALFORMED_PACKET);
    expect_close_requested(c);

    c = connect5("twice", true, 0, false, NULL);
    struct mq_packet again = connect5_pkt("twice", true, 0, NULL, NULL, NULL);
    send_packet(c, &again);
    expect_disconnect(c, MQ_RC_PROTOCOL_ERROR);
}

/* A 3.1.1 and a 5.0 client on the same topics, QoS 0/1/2 both ways. */
static void test_v5_and_v311_together(void **state)
{
    (void)state;
    struct fake_io *v5 = connect5("five", true, 0, false, NULL);
    subscribe5(v5, 1, "mix/from3", 2, 0);
    struct fake_io *v3 = connect_client("three", true, false);
    subscribe(v3, 1, "mix/from5", 2);
    publish(v3, "mix/from3", "a", 2, false, 1);
    struct mq_packet p = expect_type(v5, MQ_PUBLISH);
    assert_int_equal(p.u.publish.qos, 2);
    send_ack(v5, MQ_PUBREC, p.u.publish.packet_id);
    expect_ack5(v5, MQ_PUBREL, p.u.publish.packet_id, 0);
    send_ack(v5, MQ_PUBCOMP, p.u.publish.packet_id);
    send_publish5(v5, "mix/from5", "b", 1, false, 5, NULL);
    expect_ack5(v5, MQ_PUBACK, 5, 0);
    send_ack(v3, MQ_PUBACK, expect_publish(v3, "mix/from5", "b", 1, false, false));
    expect_nothing(v3);
    expect_nothing(v5);
    /* $SYS and /metrics count clients by protocol version. */
    char text[16384];
    sys_format_metrics(E.b, NULL, text, sizeof text);
    assert_non_null(strstr(text, "midge_clients_connected_by_protocol{protocol=\"5.0\"} 1\n"));
    assert_non_null(strstr(text, "midge_clients_connected_by_protocol{protocol=\"3.1.1\"} 1\n"));
    assert_non_null(strstr(text, "midge_clients_connected_by_protocol{protocol=\"3.1\"} 0\n"));
    io_gone(v5, "peer closed");
    assert_int_equal(E.b->stats.clients_by_version[2], 0);
    assert_int_equal(E.b->stats.clients_by_version[1], 1);
}

/* Shared subscriptions: one member of the group gets each message, in turn among the
 * connected members, at the QoS granted to it ([MQTT-4.8.2-3]); 3.1.1 and 5.0 members
 * alike; no retained messages on subscribe; other groups and plain subscribers get their
 * own copy. */
static void test_shared_round_robin(void **state)
{
    (void)state;
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "job/old", "retained", 0, true, 0, NULL);
    struct fake_io *a = connect5("a", true, 0, false, NULL);
    assert_int_equal(subscribe5(a, 1, "$share/workers/job/+", 1, 0), 1);
    struct fake_io *b = connect_client("b", true, false);
    subscribe(b, 1, "$share/workers/job/#", 0); /* another group: its own copy */
    struct fake_io *c = connect_client("c", true, false);
    subscribe(c, 1, "$share/workers/job/+", 2);
    expect_nothing(a);
    expect_nothing(c);
    char payload[8];
    int got_a = 0, got_c = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(payload, sizeof payload, "m%d", i);
        send_publish5(pub, "job/x", payload, 1, false, (uint16_t)(i + 1), NULL);
        expect_ack5(pub, MQ_PUBACK, (uint16_t)(i + 1), 0);
        expect_publish(b, "job/x", payload, 0, false, false);
        if (i % 2 == 0) {
            send_ack(a, MQ_PUBACK, expect_type(a, MQ_PUBLISH).u.publish.packet_id);
            got_a++;
            expect_nothing(c);
        } else {
            send_ack(c, MQ_PUBACK, expect_publish(c, "job/x", payload, 1, false, false));
            got_c++;
            expect_nothing(a);
        }
    }
    assert_int_equal(got_a, 2);
    assert_int_equal(got_c, 2);
    /* Unsubscribed: the other member gets everything. */
    uint8_t buf[64];
    const char *f = "$share/workers/job/+";
    feed(c, buf, topic_list_pkt(MQ_UNSUBSCRIBE, 9, 1, &f, NULL, buf, sizeof buf));
    expect_ack(c, MQ_UNSUBACK, 9);
    for (int i = 0; i < 2; i++) {
        send_publish5(pub, "job/y", "z", 0, false, 0, NULL);
        expect_type(a, MQ_PUBLISH);
        expect_type(b, MQ_PUBLISH);
    }
    expect_nothing(c);
}

/* A member whose session ends gives back its queued messages and QoS 1 in flight to the
 * group; offline persistent members queue when nobody is connected. No Local on a shared
 * subscription is a protocol error ([MQTT-3.8.3-4]). */
static void test_shared_member_leaving(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 1;
    struct fake_io *a = connect5("a", true, 0, false, NULL);
    subscribe5(a, 1, "$share/g/t", 1, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    send_publish5(pub, "t", "1", 1, false, 1, NULL);
    expect_ack5(pub, MQ_PUBACK, 1, 0);
    send_publish5(pub, "t", "2", 1, false, 2, NULL);
    expect_ack5(pub, MQ_PUBACK, 2, 0);
    expect_type(a, MQ_PUBLISH); /* "1" in flight, "2" queued behind the window */
    expect_nothing(a);
    struct fake_io *b = connect5("b", false, 600, false, NULL);
    subscribe5(b, 1, "$share/g/t", 1, 0);
    io_gone(a, "peer closed"); /* a's session ends: both go to b */
    struct mq_packet p = expect_type(b, MQ_PUBLISH);
    assert_int_equal(p.u.publish.payload[0], '2'); /* the queued one first, then the unacked */
    send_ack(b, MQ_PUBACK, p.u.publish.packet_id);
    p = expect_type(b, MQ_PUBLISH);
    assert_int_equal(p.u.publish.payload[0], '1');
    send_ack(b, MQ_PUBACK, p.u.publish.packet_id);
    /* b offline: its persistent session queues the group's messages. */
    send_packet(b, &(struct mq_packet){.type = MQ_DISCONNECT, .version = 5});
    io_gone(b, "closed");
    send_publish5(pub, "t", "3", 1, false, 3, NULL);
    expect_ack5(pub, MQ_PUBACK, 3, 0);
    b = connect5("b", false, 600, true, NULL);
    p = expect_type(b, MQ_PUBLISH);
    assert_int_equal(p.u.publish.payload[0], '3');

    struct fake_io *nl = connect5("nl", true, 0, false, NULL);
    /* Fed as raw bytes: the encoder (like the decoder) refuses No Local on $share. */
    static const uint8_t sub[] = {0x82, 16,  0,   1,   0,   0,   10,  '$', 's',
                                  'h',  'a', 'r', 'e', '/', 'g', '/', 't', 0x01 | MQ_SUB_NO_LOCAL};
    feed(nl, sub, sizeof sub);
    expect_disconnect(nl, MQ_RC_PROTOCOL_ERROR);
}

/* Outbound topic aliases, off by default ([MQTT-3.1.2-27]: none without the client's
 * Topic Alias Maximum either); with max_topic_alias_broker, up to the smaller of it and
 * the client's maximum ([MQTT-3.1.2-26]): the first message on a topic sets the alias,
 * later ones send it with an empty topic; topics beyond the table go out in full. */
static void test_v5_topic_alias_out(void **state)
{
    (void)state;
    struct props pp;
    props_init(&pp);
    codec_prop_put_u16(&pp.w, MQ_PROP_TOPIC_ALIAS_MAXIMUM, 5);
    struct fake_io *off = io_open();
    struct mq_packet c = connect5_pkt("off", true, 0, NULL, &pp, NULL);
    send_packet(off, &c);
    expect_type(off, MQ_CONNACK);
    subscribe5(off, 1, "t/#", 0, 0);
    E.cfg.max_topic_alias_broker = 2;
    struct fake_io *on = io_open();
    c = connect5_pkt("on", true, 0, NULL, &pp, NULL);
    send_packet(on, &c);
    expect_type(on, MQ_CONNACK);
    subscribe5(on, 1, "t/#", 0, 0);
    struct fake_io *pub = connect5("pub", true, 0, false, NULL);
    const char *topics[] = {"t/one", "t/two", "t/three", "t/one", "t/two", "t/three"};
    for (size_t i = 0; i < 6; i++)
        send_publish5(pub, topics[i], "x", 0, false, 0, NULL);
    for (size_t i = 0; i < 6; i++) {
        struct mq_packet p = expect_type(off, MQ_PUBLISH);
        assert_false(codec_props_has(&p.props, MQ_PROP_TOPIC_ALIAS));
        assert_int_equal(p.u.publish.topic.len, strlen(topics[i]));
    }
    static const struct {
        uint16_t alias;
        bool empty_topic;
    } want[] = {{1, false}, {2, false}, {0, false}, {1, true}, {2, true}, {0, false}};
    for (size_t i = 0; i < 6; i++) {
        struct mq_packet p = expect_type(on, MQ_PUBLISH);
        if (want[i].alias) {
            assert_true(codec_props_has(&p.props, MQ_PROP_TOPIC_ALIAS));
            assert_int_equal(p.props.topic_alias, want[i].alias);
        } else {
            assert_false(codec_props_has(&p.props, MQ_PROP_TOPIC_ALIAS));
        }
        assert_int_equal(p.u.publish.topic.len, want[i].empty_topic ? 0 : strlen(topics[i]));
    }
}

/* A will's Message Expiry Interval counts from when it is published, not from CONNECT:
 * a board connected longer than the interval still has its will delivered, with the
 * whole interval. */
static void test_v5_will_expiry_counts_from_publication(void **state)
{
    (void)state;
    struct fake_io *watch = connect5("watch", true, 0, false, NULL);
    subscribe5(watch, 1, "w/#", 1, 0);
    struct will w = {"w/exp", "offline", 1, false};
    struct props wp;
    props_init(&wp);
    codec_prop_put_u32(&wp.w, MQ_PROP_MESSAGE_EXPIRY, 10);
    struct fake_io *io = io_open();
    struct mq_packet c = connect5_pkt("exp", true, 0, &w, NULL, &wp);
    send_packet(io, &c);
    expect_type(io, MQ_CONNACK);
    E.b->now_ms = T0 + 20000;
    io_gone(io, "peer closed");
    struct mq_packet p = expect_type(watch, MQ_PUBLISH);
    assert_int_equal(p.props.message_expiry, 10);
}

int main(void)
{
    struct mq_log_options lo = log_default_options();
    lo.types = MQ_LOG_ERR | MQ_LOG_WARNING;
    if (getenv("MIDGE_TEST_LOG"))
        lo.types = MQ_LOG_ALL_TYPES;
    log_configure(&lo);

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_v5_connack_properties),
        T(test_v5_assigned_client_id),
        T(test_v5_connect_refusals),
        T(test_v5_session_expiry),
        T(test_v5_disconnect_session_expiry),
        T(test_v5_disconnect_with_will),
        T(test_v5_will_delay),
        T(test_v5_will_expiry_counts_from_publication),
        T(test_v5_server_disconnects),
        T(test_v5_topic_alias_in),
        T(test_v5_topic_alias_out),
        T(test_v5_receive_maximum_in),
        T(test_v5_receive_maximum_out),
        T(test_v5_maximum_packet_size_out),
        T(test_v5_message_expiry),
        T(test_v5_properties_forwarded),
        T(test_v5_publish_reason_codes),
        T(test_v5_subscription_options),
        T(test_v5_subscription_identifiers),
        T(test_v5_suback_unsuback_codes),
        T(test_v5_pubrec_error_ends_flow),
        T(test_v5_auth_packet),
        T(test_v5_malformed_disconnects),
        T(test_v5_and_v311_together),
        T(test_shared_round_robin),
        T(test_shared_member_leaving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

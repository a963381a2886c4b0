/* test_proto.c - whole MQTT 3.1 / 3.1.1 conversations through the protocol layer
 * (src/proto/) over the fake sink of proto_fixture.h; MQTT 5 ones are in test_proto5.c.
 */
#include "proto_fixture.h"

/* ---- CONNECT / CONNACK -------------------------------------------------------------- */

/* [MQTT-3.2.2-1]: clean session 1 → session present 0, return code 0. */
static void test_connect_clean_session(void **state)
{
    (void)state;
    struct fake_io *io = connect_client("c1", true, false);
    expect_nothing(io);
    assert_int_equal(E.b->stats.clients_connected, 1);
    assert_true(session_of(io)->clean);
    assert_int_equal(imap_count(&E.b->sessions), 1);
    io_gone(io, "peer closed");
    /* A clean session ends with its connection ([MQTT-3.1.2-6]). */
    assert_int_equal(imap_count(&E.b->sessions), 0);
    assert_int_equal(E.b->stats.clients_connected, 0);
}

/* [MQTT-3.2.2-2], [MQTT-3.2.2-3]: session present reflects a stored session exactly. */
static void test_connect_session_present(void **state)
{
    (void)state;
    struct fake_io *a = connect_client("p1", false, false); /* new, clean 0 → 0 */
    subscribe(a, 1, "sp/#", 1);
    feed(a, (const uint8_t[]){0xe0, 0x00}, 2); /* DISCONNECT */
    expect_close_requested(a);
    expect_nothing(a);
    io_gone(a, "closed");
    assert_int_equal(imap_count(&E.b->sessions), 1); /* persists offline */

    struct fake_io *b = connect_client("p1", false, true); /* returning clean 0 → 1 */
    /* The subscription survived: no new SUBSCRIBE needed. */
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "sp/x", "kept", 0, false, 0);
    expect_publish(b, "sp/x", "kept", 0, false, false);
    io_gone(b, "peer reset");

    /* clean 1 discards the stored session and reports none... */
    struct fake_io *c = connect_client("p1", true, false);
    publish(pub, "sp/x", "gone", 0, false, 0);
    expect_nothing(c);
    io_gone(c, "peer reset");
    /* ...and it is not resurrected for the next clean 0 connection. */
    struct fake_io *d = connect_client("p1", false, false);
    expect_nothing(d);
}

/* [MQTT-3.1.0-1]: the first packet must be CONNECT; otherwise close, no CONNACK. */
static void test_first_packet_not_connect(void **state)
{
    (void)state;
    struct fake_io *io = io_open();
    feed(io, (const uint8_t[]){0xc0, 0x00}, 2); /* PINGREQ */
    expect_nothing(io);
    expect_close_requested(io);
    assert_int_equal(E.b->stats.protocol_errors, 1);
    /* Input after the close request is ignored. */
    struct mq_packet p = connect_pkt("late", true, 0, NULL);
    send_packet(io, &p);
    expect_nothing(io);
    io_gone(io, "closed");

    struct fake_io *io2 = io_open();
    send_publish(io2, "a/b", "x", 0, false, 0, false);
    expect_nothing(io2);
    expect_close_requested(io2);
    assert_int_equal(imap_count(&E.b->sessions), 0);
}

/* [MQTT-3.1.0-2]: a second CONNECT is a protocol violation → close. */
static void test_second_connect_closes(void **state)
{
    (void)state;
    struct fake_io *io = connect_client("twice", true, false);
    struct mq_packet p = connect_pkt("twice", true, 0, NULL);
    send_packet(io, &p);
    expect_nothing(io);
    expect_close_requested(io);
    assert_int_equal(E.b->stats.protocol_errors, 1);
    io_gone(io, "closed");
    assert_int_equal(imap_count(&E.b->sessions), 0);
}

/* [MQTT-3.1.2-2]: unsupported protocol level → CONNACK 0x01, then close. */
static void test_connect_protocol_level_5(void **state)
{
    (void)state;
    /* A level-5 CONNECT without its property length is malformed: MQTT 5 answers that with
     * CONNACK 0x81 (and a Reason String), never a silent close ([MQTT-3.1.4-1]). */
    struct fake_io *io = io_open();
    static const uint8_t v5[] = {0x10, 13,   0x00, 0x04, 'M',  'Q',  'T', 'T',
                                 0x05, 0x02, 0x00, 0x3c, 0x00, 0x01, 'x'};
    feed(io, v5, sizeof(v5));
    struct mq_packet p;
    int n = codec_decode(io->out, io->len, &(struct mq_decode_limits){.protocol_level = 5}, &p);
    assert_true(n > 0);
    assert_int_equal(p.type, MQ_CONNACK);
    assert_int_equal(p.u.connack.return_code, MQ_RC_MALFORMED_PACKET);
    assert_false(p.u.connack.session_present);
    assert_true(codec_props_has(&p.props, MQ_PROP_REASON_STRING));
    io->rd = (size_t)n;
    expect_nothing(io);
    expect_close_requested(io);
    assert_int_equal(imap_count(&E.b->sessions), 0);

    /* A real MQTT 5 CONNECT (with Receive Maximum 20) is accepted, fed one byte at a time
     * as it may arrive; CONNACK tells the client its limits. */
    static const uint8_t v5props[] = {0x10, 17,   0x00, 0x04, 'M',  'Q',  'T',  'T',  0x05, 0x02,
                                      0x00, 0x3c, 0x03, 0x21, 0x00, 0x14, 0x00, 0x01, 'y'};
    struct fake_io *io2 = io_open();
    size_t plen = 0;
    for (size_t i = 0; i < sizeof(v5props); i++) {
        plen++;
        size_t used = proto_conn_input(io2->conn, v5props + i + 1 - plen, plen, NULL);
        plen -= used;
    }
    n = codec_decode(io2->out, io2->len, &(struct mq_decode_limits){.protocol_level = 5}, &p);
    assert_true(n > 0);
    assert_int_equal(p.u.connack.return_code, MQ_RC_SUCCESS);
    assert_true(codec_props_has(&p.props, MQ_PROP_RECEIVE_MAXIMUM));
    assert_int_equal(p.props.receive_maximum, 20);
    assert_true(codec_props_has(&p.props, MQ_PROP_TOPIC_ALIAS_MAXIMUM));
    assert_int_equal(p.props.topic_alias_maximum, 10);
    assert_false(codec_props_has(&p.props, MQ_PROP_ASSIGNED_CLIENT_ID));
    io2->rd = (size_t)n;
    expect_nothing(io2);
    expect_open(io2);
    assert_int_equal(io2->conn->protocol_level, 5);
    assert_int_equal(E.b->stats.clients_by_version[2], 1);
}

/* MQTT 3.1 ("MQIsdp", level 3) is accepted. */
static void test_connect_mqtt31(void **state)
{
    (void)state;
    struct fake_io *io = io_open();
    struct mq_packet p = connect_pkt("old", true, 0, NULL);
    p.u.connect.protocol_level = 3;
    send_packet(io, &p);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, 0x00);
    expect_open(io);
    assert_int_equal(io->conn->protocol_level, 3);
}

/* [MQTT-3.1.3-8]: zero-length id with clean session 0 → 0x02. */
static void test_connect_empty_id_clean0(void **state)
{
    (void)state;
    struct mq_packet p = connect_pkt("", false, 0, NULL);
    connect_refused(&p, 0x02);
    assert_int_equal(imap_count(&E.b->sessions), 0);
    assert_int_equal(E.b->stats.clients_connected, 0);
}

/* [MQTT-3.1.3-6]: zero-length id with clean 1 gets a unique generated id. */
static void test_connect_empty_id_assigned(void **state)
{
    (void)state;
    struct fake_io *a = connect_client("", true, false);
    struct fake_io *b = connect_client("", true, false);
    const char *ida = session_of(a)->client_id, *idb = session_of(b)->client_id;
    assert_true(strncmp(ida, "auto-", 5) == 0);
    assert_true(strncmp(idb, "auto-", 5) == 0);
    assert_string_not_equal(ida, idb);
    expect_open(a); /* the second is not a takeover of the first */
    assert_int_equal(imap_count(&E.b->sessions), 2);
}

/* allow_zero_length_clientid false → 0x02 even with clean session 1. */
static void test_connect_empty_id_not_allowed(void **state)
{
    (void)state;
    E.cfg.allow_zero_length_clientid = false;
    E.listener.allow_zero_length_clientid = false;
    struct mq_packet p = connect_pkt("", true, 0, NULL);
    connect_refused(&p, 0x02);
    assert_int_equal(imap_count(&E.b->sessions), 0);
}

/* The listener's allow_zero_length_clientid is the effective value (config.h: it differs
 * from the global one under per_listener_settings), so a listener that forbids empty ids
 * answers CONNACK 0x02 even when the global setting allows them ([MQTT-3.1.3-8]). */
static void test_connect_empty_id_listener_setting(void **state)
{
    (void)state;
    E.cfg.allow_zero_length_clientid = true;       /* global */
    E.listener.allow_zero_length_clientid = false; /* effective for this listener */
    struct fake_io *io = io_open();
    struct mq_packet p = connect_pkt("", true, 0, NULL);
    send_packet(io, &p);
    struct mq_packet ack = read_packet(io);
    assert_int_equal(ack.type, MQ_CONNACK);
    if (ack.u.connack.return_code != 0x02)
        fail_msg("listener forbids zero-length client ids, got CONNACK %u instead of 2",
                 ack.u.connack.return_code);
    expect_close_requested(io);
}

/* Likewise the listener's auto_id_prefix, not the global one, names generated ids. */
static void test_connect_auto_id_listener_prefix(void **state)
{
    (void)state;
    static char prefix[] = "lst-";
    E.listener.auto_id_prefix = prefix;
    struct fake_io *io = connect_client("", true, false);
    const char *id = session_of(io)->client_id;
    if (strncmp(id, "lst-", 4) != 0)
        fail_msg("generated id %s does not use the listener's auto_id_prefix lst-", id);
}

/* BROKER BUG (reported, not fixed here): [MQTT-3.1.3-6] the server MUST assign a unique
 * client id. Generated ids are "<prefix><start ms hex>-<counter>", which is predictable
 * and not checked against ids already in use, so a generated id can equal the id a
 * client chose itself, and the empty-id client then takes over that client's session
 * and connection. Passes once generation skips ids in the session table (or is
 * random). */
static void test_connect_auto_id_unique(void **state)
{
    (void)state;
    struct fake_io *probe = connect_client("", true, false);
    char next[96];
    const char *id = session_of(probe)->client_id;
    const char *dash = strrchr(id, '-');
    assert_non_null(dash);
    snprintf(next, sizeof(next), "%.*s%lu", (int)(dash + 1 - id), id,
             strtoul(dash + 1, NULL, 10) + 1);
    struct fake_io *chosen = connect_client(next, false, false);
    struct fake_io *anon = connect_client("", true, false);
    if (chosen->close_requests)
        fail_msg("generated id for an empty-id client took over client %s", next);
    assert_string_not_equal(session_of(anon)->client_id, next);
}

/* [MQTT-3.2.2-5]: refused (anonymous not allowed) → CONNACK 0x05 then close. */
static void test_connect_anonymous_refused(void **state)
{
    (void)state;
    E.listener.allow_anonymous = false;
    struct will w = {"will/anon", "x", 0, false};
    struct mq_packet p = connect_pkt("anon", true, 0, &w);
    struct fake_io *io = connect_refused(&p, 0x05);
    assert_int_equal(imap_count(&E.b->sessions), 0);
    io_gone(io, "closed");
    assert_int_equal(E.b->stats.clients_connected, 0);
}

/* ---- SUBSCRIBE / UNSUBSCRIBE / PINGREQ --------------------------------------------- */

/* [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-5]: one SUBACK, same packet id, one code
 * per filter in order. */
static void test_subscribe_suback(void **state)
{
    (void)state;
    struct fake_io *io = connect_client("s", true, false);
    const char *filters[] = {"a/b", "c/+", "d/#"};
    const uint8_t qos[] = {2, 0, 1};
    uint8_t buf[256];
    size_t n = topic_list_pkt(MQ_SUBSCRIBE, 0x1234, 3, filters, qos, buf, sizeof(buf));
    feed(io, buf, n);
    EXPECT_BYTES(io, 0x90, 0x05, 0x12, 0x34, 0x02, 0x00, 0x01);
    expect_nothing(io);
    assert_int_equal(session_of(io)->sub_count, 3);

    /* Same filter again replaces the QoS, still one subscription ([MQTT-3.8.4-3]). */
    subscribe(io, 0xffff, "a/b", 0);
    assert_int_equal(session_of(io)->sub_count, 3);
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "a/b", "m", 2, false, 1);
    expect_publish(io, "a/b", "m", 0, false, false);
    expect_nothing(io);
}

/* [MQTT-3.12.4-1]: PINGREQ → PINGRESP. */
static void test_pingreq(void **state)
{
    (void)state;
    struct fake_io *io = connect_client("ping", true, false);
    feed(io, (const uint8_t[]){0xc0, 0x00}, 2);
    EXPECT_BYTES(io, 0xd0, 0x00);
    expect_nothing(io);
    expect_open(io);
}

/* [MQTT-3.10.4-1], [MQTT-3.10.4-4], [MQTT-3.10.4-5]: UNSUBSCRIBE stops delivery,
 * compares filters character by character and is answered with UNSUBACK. */
static void test_unsubscribe(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("u", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "u/1", 1);
    subscribe(sub, 2, "u/2", 1);
    unsubscribe(sub, 0x0102, "u/1");
    unsubscribe(sub, 0x0103, "u/+"); /* not a subscription: UNSUBACK anyway, u/2 stays */
    unsubscribe(sub, 0x0104, "never");
    publish(pub, "u/1", "a", 1, false, 10);
    expect_nothing(sub);
    publish(pub, "u/2", "b", 0, false, 0);
    expect_publish(sub, "u/2", "b", 0, false, false);
    expect_nothing(sub);
    assert_int_equal(session_of(sub)->sub_count, 1);
}

/* ---- PUBLISH flows ------------------------------------------------------------------ */

static void test_publish_qos0(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "a/b", 2);
    send_publish(pub, "a/b", "hi", 0, false, 0, false);
    expect_nothing(pub);
    EXPECT_BYTES(sub, 0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i');
    expect_nothing(sub);
    /* Not routed to non-matching topics. */
    send_publish(pub, "a/c", "no", 0, false, 0, false);
    send_publish(pub, "a/b/c", "no", 0, false, 0, false);
    expect_nothing(sub);
    assert_int_equal(E.b->stats.pub_received, 3);
    assert_int_equal(E.b->stats.pub_sent, 1);
}

/* [MQTT-4.3.2-2]: PUBACK to the publisher; the subscriber's copy waits for its PUBACK. */
static void test_publish_qos1(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "a/b", 1);
    send_publish(pub, "a/b", "hi", 1, false, 7, false);
    EXPECT_BYTES(pub, 0x40, 0x02, 0x00, 0x07);
    expect_nothing(pub);
    EXPECT_BYTES(sub, 0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 'h', 'i');
    expect_nothing(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 1);
    assert_int_equal(session_inflight_at(session_of(sub), 0)->state, MQ_OUT_WAIT_PUBACK);

    /* An acknowledgement of an unknown id is ignored, not fatal. */
    send_ack(sub, MQ_PUBACK, 99);
    expect_open(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 1);
    send_ack(sub, MQ_PUBACK, 1);
    expect_nothing(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 0);
}

/* [MQTT-4.3.3-2], [MQTT-4.3.3-3]: PUBLISH → PUBREC → PUBREL → PUBCOMP in both directions. */
static void test_publish_qos2(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "a/b", 2);
    send_publish(pub, "a/b", "hi", 2, false, 9, false);
    EXPECT_BYTES(pub, 0x50, 0x02, 0x00, 0x09);
    expect_nothing(pub);
    assert_int_equal(session_qos2_in_count(session_of(pub)), 1);
    EXPECT_BYTES(sub, 0x34, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 'h', 'i');
    expect_nothing(sub);

    send_ack(sub, MQ_PUBREC, 1);
    EXPECT_BYTES(sub, 0x62, 0x02, 0x00, 0x01); /* PUBREL has flags 0010 [MQTT-3.6.1-1] */
    expect_nothing(sub);
    assert_int_equal(session_inflight_at(session_of(sub), 0)->state, MQ_OUT_WAIT_PUBCOMP);
    send_ack(sub, MQ_PUBCOMP, 1);
    expect_nothing(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 0);

    send_ack(pub, MQ_PUBREL, 9);
    EXPECT_BYTES(pub, 0x70, 0x02, 0x00, 0x09);
    expect_nothing(pub);
    assert_int_equal(session_qos2_in_count(session_of(pub)), 0);
    expect_nothing(sub); /* PUBREL does not deliver a second copy */
}

/* [MQTT-3.8.4-6]: delivered at min(published QoS, granted QoS). */
static void test_qos_downgrade(void **state)
{
    (void)state;
    struct fake_io *s0 = connect_client("s0", true, false);
    struct fake_io *s1 = connect_client("s1", true, false);
    struct fake_io *s2 = connect_client("s2", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(s0, 1, "d/x", 0);
    subscribe(s1, 1, "d/x", 1);
    subscribe(s2, 1, "d/x", 2);

    publish(pub, "d/x", "q2", 2, false, 1);
    expect_publish(s0, "d/x", "q2", 0, false, false);
    send_ack(s1, MQ_PUBACK, expect_publish(s1, "d/x", "q2", 1, false, false));
    complete_qos2(s2, expect_publish(s2, "d/x", "q2", 2, false, false));

    publish(pub, "d/x", "q1", 1, false, 2);
    expect_publish(s0, "d/x", "q1", 0, false, false);
    send_ack(s1, MQ_PUBACK, expect_publish(s1, "d/x", "q1", 1, false, false));
    send_ack(s2, MQ_PUBACK, expect_publish(s2, "d/x", "q1", 1, false, false));

    publish(pub, "d/x", "q0", 0, false, 0);
    expect_publish(s0, "d/x", "q0", 0, false, false);
    expect_publish(s1, "d/x", "q0", 0, false, false);
    expect_publish(s2, "d/x", "q0", 0, false, false);
    expect_nothing(s0);
    expect_nothing(s1);
    expect_nothing(s2);
}

/* [MQTT-3.3.5-1]: overlapping subscriptions → one copy at the highest granted QoS. */
static void test_overlapping_subscriptions(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "o/+", 0);
    subscribe(sub, 2, "o/#", 2);
    subscribe(sub, 3, "o/b", 1);
    subscribe(sub, 4, "#", 0);
    publish(pub, "o/b", "x", 2, false, 1);
    complete_qos2(sub, expect_publish(sub, "o/b", "x", 2, false, false));
    expect_nothing(sub);
    publish(pub, "o/c", "y", 1, false, 2);
    send_ack(sub, MQ_PUBACK, expect_publish(sub, "o/c", "y", 1, false, false));
    expect_nothing(sub);
}

/* ---- retained messages ------------------------------------------------------------- */

/* [MQTT-3.3.1-5..12]: stored, sent on subscribe with retain 1 at min(QoS), replaced,
 * deleted by an empty payload; live forwards carry retain 0. */
static void test_retained_lifecycle(void **state)
{
    (void)state;
    struct fake_io *pub = connect_client("pub", true, false);
    struct fake_io *live = connect_client("live", true, false);
    subscribe(live, 1, "r/#", 2);

    publish(pub, "r/a", "one", 1, true, 1);
    assert_int_equal(retain_count(E.b->retained), 1);
    /* [MQTT-3.3.1-9]: a live forward of a retained publish has retain 0. */
    send_ack(live, MQ_PUBACK, expect_publish(live, "r/a", "one", 1, false, false));

    struct fake_io *s1 = connect_client("s1", true, false);
    subscribe(s1, 1, "r/#", 2);
    /* [MQTT-3.3.1-6], [MQTT-3.3.1-8]: sent after SUBACK with retain 1, QoS min(1, 2). */
    send_ack(s1, MQ_PUBACK, expect_publish(s1, "r/a", "one", 1, true, false));
    expect_nothing(s1);

    /* Replaced ([MQTT-3.3.1-5]). */
    publish(pub, "r/a", "two", 0, true, 0);
    expect_publish(live, "r/a", "two", 0, false, false);
    expect_publish(s1, "r/a", "two", 0, false, false);
    assert_int_equal(retain_count(E.b->retained), 1);
    struct fake_io *s2 = connect_client("s2", true, false);
    subscribe(s2, 1, "r/+", 1);
    expect_publish(s2, "r/a", "two", 0, true, false); /* min(0, 1) */
    expect_nothing(s2);

    publish(pub, "r/a", "three", 2, true, 2);
    complete_qos2(live, expect_publish(live, "r/a", "three", 2, false, false));
    complete_qos2(s1, expect_publish(s1, "r/a", "three", 2, false, false));
    send_ack(s2, MQ_PUBACK, expect_publish(s2, "r/a", "three", 1, false, false));

    /* A non-retained publish leaves the stored message alone ([MQTT-3.3.1-7] is about
     * QoS 0 retain 1; retain 0 never touches the store). */
    publish(pub, "r/a", "live-only", 0, false, 0);
    expect_publish(live, "r/a", "live-only", 0, false, false);
    expect_publish(s1, "r/a", "live-only", 0, false, false);
    expect_publish(s2, "r/a", "live-only", 0, false, false);

    /* Re-subscribing to the same filter resends the retained message ([MQTT-3.8.4-3]). */
    subscribe(s2, 2, "r/+", 1);
    send_ack(s2, MQ_PUBACK, expect_publish(s2, "r/a", "three", 1, true, false));
    expect_nothing(s2);

    /* Empty payload: forwarded as usual, and the stored message is gone
     * ([MQTT-3.3.1-10], [MQTT-3.3.1-11]). */
    publish(pub, "r/a", "", 0, true, 0);
    expect_publish(live, "r/a", "", 0, false, false);
    assert_int_equal(retain_count(E.b->retained), 0);
    struct fake_io *s3 = connect_client("s3", true, false);
    subscribe(s3, 1, "r/#", 2);
    expect_nothing(s3);
}

/* [MQTT-4.7.2-1]: '$' topics are not matched by a leading '#' or '+', live or retained. */
static void test_dollar_topics(void **state)
{
    (void)state;
    struct fake_io *all = connect_client("all", true, false);
    struct fake_io *dollar = connect_client("dollar", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(all, 1, "#", 0);
    subscribe(all, 2, "+/info", 0);
    subscribe(dollar, 1, "$internal/#", 0);

    publish(pub, "$internal/info", "d", 0, true, 0);
    expect_nothing(all);
    expect_publish(dollar, "$internal/info", "d", 0, false, false);
    publish(pub, "x/info", "x", 0, false, 0);
    expect_publish(all, "x/info", "x", 0, false, false);
    expect_nothing(all);
    expect_nothing(dollar);

    struct fake_io *late = connect_client("late", true, false);
    subscribe(late, 1, "#", 0);
    subscribe(late, 2, "+/info", 0);
    expect_nothing(late);
    subscribe(late, 3, "$internal/+", 0);
    expect_publish(late, "$internal/info", "d", 0, true, false);
    expect_nothing(late);
}

/* [MQTT-4.7.1-2], [MQTT-4.7.1-3]: retained messages found by wildcard filters on
 * subscribe, including the parent level for '#', empty levels, and no '$' for a
 * leading wildcard ([MQTT-4.7.2-1]). */
static void test_retained_filter_matching(void **state)
{
    (void)state;
    struct fake_io *pub = connect_client("pub", true, false);
    static const char *const topics[] = {"r", "r/a", "r/a/b", "r/", "s/a", "/x", "$d/a"};
    enum { NT = sizeof(topics) / sizeof(topics[0]) };
    for (size_t i = 0; i < NT; i++)
        publish(pub, topics[i], topics[i], 0, true, 0);
    assert_int_equal(retain_count(E.b->retained), NT);

    static const struct {
        const char *filter;
        const char *want; /* indexes into topics, as characters */
    } cases[] = {
        {"r/#", "0123"}, {"+/a", "14"},     {"+", "0"},       {"/+", "5"},
        {"#", "012345"}, {"r/+", "13"},     {"r/a/#", "12"},  {"+/+/+", "2"},
        {"$d/+", "6"},   {"+/#", "012345"}, {"r/a/b/#", "2"}, {"x/#", ""},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct fake_io *sub = connect_client("sub", true, false);
        subscribe(sub, 1, cases[c].filter, 0);
        bool got[NT] = {false};
        while (sub->rd < sub->len) {
            struct mq_packet p = read_packet(sub);
            assert_int_equal(p.type, MQ_PUBLISH);
            assert_true(p.u.publish.retain);
            size_t i = 0;
            while (i < NT && (strlen(topics[i]) != p.u.publish.topic.len ||
                              memcmp(topics[i], p.u.publish.topic.ptr, p.u.publish.topic.len)))
                i++;
            assert_true(i < NT);
            if (got[i])
                fail_msg("filter %s: %s delivered twice", cases[c].filter, topics[i]);
            got[i] = true;
        }
        for (size_t i = 0; i < NT; i++) {
            bool want = strchr(cases[c].want, (int)('0' + i)) != NULL;
            if (got[i] != want)
                fail_msg("filter %s: retained %s %s", cases[c].filter, topics[i],
                         want ? "missing" : "delivered but does not match");
        }
        io_gone(sub, "done");
    }
}

/* ---- outgoing window, queue, offline sessions ------------------------------------- */

/* max_inflight_messages bounds unacknowledged QoS 1/2 PUBLISH; the rest waits in order. */
static void test_inflight_window(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 2;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "w", 1);
    publish(pub, "w", "1", 1, false, 1);
    publish(pub, "w", "2", 1, false, 2);
    publish(pub, "w", "3", 1, false, 3);
    uint16_t id1 = expect_publish(sub, "w", "1", 1, false, false);
    uint16_t id2 = expect_publish(sub, "w", "2", 1, false, false);
    expect_nothing(sub);
    assert_int_not_equal(id1, id2);
    assert_int_equal(session_queue_count(session_of(sub)), 1);

    /* QoS 0 keeps its place behind the queued QoS 1 (per-topic order). */
    publish(pub, "w", "4", 0, false, 0);
    expect_nothing(sub);

    send_ack(sub, MQ_PUBACK, id1);
    uint16_t id3 = expect_publish(sub, "w", "3", 1, false, false);
    assert_true(id3 != id2);
    expect_publish(sub, "w", "4", 0, false, false);
    expect_nothing(sub);
    send_ack(sub, MQ_PUBACK, id2);
    send_ack(sub, MQ_PUBACK, id3);
    expect_nothing(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 0);
    assert_int_equal(E.b->stats.pub_dropped, 0);
}

/* The window counts QoS 2 messages until PUBCOMP (PUBREL pending still holds the id). */
static void test_inflight_window_qos2(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 1;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "w", 2);
    publish(pub, "w", "1", 2, false, 1);
    publish(pub, "w", "2", 2, false, 2);
    uint16_t id1 = expect_publish(sub, "w", "1", 2, false, false);
    expect_nothing(sub);
    send_ack(sub, MQ_PUBREC, id1);
    expect_ack(sub, MQ_PUBREL, id1);
    expect_nothing(sub);
    send_ack(sub, MQ_PUBREC, id1); /* a repeated PUBREC gets the PUBREL again */
    expect_ack(sub, MQ_PUBREL, id1);
    send_ack(sub, MQ_PUBCOMP, id1);
    complete_qos2(sub, expect_publish(sub, "w", "2", 2, false, false));
    expect_nothing(sub);
    assert_int_equal(session_inflight_count(session_of(sub)), 0);
}

/* max_queued_messages: overflow is dropped (newest first) and counted in pub_dropped. */
static void test_queue_cap_messages(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 1;
    E.cfg.max_queued_messages = 3;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "q", 1);
    char p[8];
    for (int i = 0; i < 10; i++) {
        snprintf(p, sizeof(p), "%d", i);
        publish(pub, "q", p, 1, false, (uint16_t)(i + 1));
    }
    assert_int_equal(E.b->stats.pub_dropped, 6);
    assert_int_equal(session_dropped(session_of(sub)), 6);
    assert_int_equal(session_queue_count(session_of(sub)), 3);
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%d", i);
        uint16_t id = expect_publish(sub, "q", p, 1, false, false);
        expect_nothing(sub);
        send_ack(sub, MQ_PUBACK, id);
    }
    expect_nothing(sub);
}

/* max_queued_bytes caps the queued payload bytes. */
static void test_queue_cap_bytes(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 1;
    E.cfg.max_queued_messages = 0; /* unlimited: only the byte cap applies */
    E.cfg.max_queued_bytes = 10;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "q", 1);
    publish(pub, "q", "aaaa", 1, false, 1); /* in flight */
    publish(pub, "q", "bbbb", 1, false, 2); /* queued: 4 bytes */
    publish(pub, "q", "cccc", 1, false, 3); /* queued: 8 bytes */
    publish(pub, "q", "dddd", 1, false, 4); /* 12 > 10: dropped */
    publish(pub, "q", "ee", 1, false, 5);   /* 10: fits */
    assert_int_equal(E.b->stats.pub_dropped, 1);
    const char *want[] = {"aaaa", "bbbb", "cccc", "ee"};
    for (int i = 0; i < 4; i++)
        send_ack(sub, MQ_PUBACK, expect_publish(sub, "q", want[i], 1, false, false));
    expect_nothing(sub);
}

/* [MQTT-4.4.0-1], [MQTT-3.3.1-1], [MQTT-4.6.0-1]: a persistent session keeps messages while
 * offline; on reconnect unacknowledged PUBLISH are resent with DUP 1 and the same ids,
 * PUBREL is resent for WAIT_PUBCOMP, then the queue drains in order. */
static void test_offline_queue_and_redelivery(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", false, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "q/#", 2);

    publish(pub, "q/a", "A", 1, false, 1);
    uint16_t ida = expect_publish(sub, "q/a", "A", 1, false, false);
    publish(pub, "q/b", "B", 2, false, 2);
    uint16_t idb = expect_publish(sub, "q/b", "B", 2, false, false);
    publish(pub, "q/c", "C", 2, false, 3);
    uint16_t idc = expect_publish(sub, "q/c", "C", 2, false, false);
    send_ack(sub, MQ_PUBREC, idc);
    expect_ack(sub, MQ_PUBREL, idc);
    expect_nothing(sub);
    io_gone(sub, "connection reset"); /* no PUBACK, PUBREC or PUBCOMP */

    publish(pub, "q/d", "D", 1, false, 4);
    publish(pub, "q/e", "E", 2, false, 5);
    publish(pub, "q/f", "F", 0, false, 0); /* offline QoS 0: dropped (queue_qos0 false) */
    publish(pub, "q/g", "G", 1, true, 6);  /* retain is not set on the queued copy */

    struct fake_io *back = connect_client("sub", false, true);
    assert_int_equal(expect_publish(back, "q/a", "A", 1, false, true), ida);
    assert_int_equal(expect_publish(back, "q/b", "B", 2, false, true), idb);
    expect_ack(back, MQ_PUBREL, idc);
    uint16_t idd = expect_publish(back, "q/d", "D", 1, false, false);
    uint16_t ide = expect_publish(back, "q/e", "E", 2, false, false);
    uint16_t idg = expect_publish(back, "q/g", "G", 1, false, false);
    expect_nothing(back);
    /* New ids never collide with those still in flight ([MQTT-2.3.1-2]). */
    uint16_t ids[] = {ida, idb, idc, idd, ide, idg};
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++)
            assert_int_not_equal(ids[i], ids[j]);

    send_ack(back, MQ_PUBACK, ida);
    complete_qos2(back, idb);
    send_ack(back, MQ_PUBCOMP, idc);
    send_ack(back, MQ_PUBACK, idd);
    complete_qos2(back, ide);
    send_ack(back, MQ_PUBACK, idg);
    expect_nothing(back);
    assert_int_equal(session_inflight_count(session_of(back)), 0);
    assert_int_equal(session_queue_count(session_of(back)), 0);

    /* Reconnecting again finds nothing left to resend. */
    io_gone(back, "connection reset");
    struct fake_io *again = connect_client("sub", false, true);
    expect_nothing(again);
    publish(pub, "q/h", "H", 0, false, 0);
    expect_publish(again, "q/h", "H", 0, false, false);
}

/* queue_qos0_messages true keeps offline QoS 0 in the queue, in order with the rest. */
static void test_offline_queue_qos0(void **state)
{
    (void)state;
    E.cfg.queue_qos0_messages = true;
    struct fake_io *sub = connect_client("sub", false, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "z", 1);
    io_gone(sub, "reset");
    publish(pub, "z", "0a", 0, false, 0);
    publish(pub, "z", "1b", 1, false, 1);
    publish(pub, "z", "0c", 0, false, 0);
    struct fake_io *back = connect_client("sub", false, true);
    expect_publish(back, "z", "0a", 0, false, false);
    send_ack(back, MQ_PUBACK, expect_publish(back, "z", "1b", 1, false, false));
    expect_publish(back, "z", "0c", 0, false, false);
    expect_nothing(back);
}

/* A session's own queue_qos0 flag (a bridge's local side) queues its offline QoS 0 with
 * queue_qos0_messages false, in order with the rest, up to MQ_QUEUE_IN_MEMORY; other sessions
 * still drop theirs. */
static void test_session_queue_qos0(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("bridge", false, false);
    struct fake_io *other = connect_client("other", false, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "z", 1);
    subscribe(other, 1, "z", 1);
    struct mq_session_flow *f = session_flow(session_of(sub));
    assert_non_null(f);
    f->queue_qos0 = true;
    io_gone(sub, "reset");
    io_gone(other, "reset");
    publish(pub, "z", "0a", 0, false, 0);
    publish(pub, "z", "1b", 1, false, 1);
    publish(pub, "z", "0c", 0, false, 0);
    struct fake_io *back = connect_client("bridge", false, true);
    expect_publish(back, "z", "0a", 0, false, false);
    send_ack(back, MQ_PUBACK, expect_publish(back, "z", "1b", 1, false, false));
    expect_publish(back, "z", "0c", 0, false, false);
    expect_nothing(back);
    struct fake_io *other2 = connect_client("other", false, true);
    send_ack(other2, MQ_PUBACK, expect_publish(other2, "z", "1b", 1, false, false));
    expect_nothing(other2);

    /* Bounded: past the memory queue's size QoS 0 is dropped and counted. */
    E.cfg.max_queued_messages = 0;
    io_gone(back, "reset");
    uint64_t dropped = E.b->stats.pub_dropped;
    for (unsigned i = 0; i < MQ_QUEUE_IN_MEMORY + 5; i++)
        publish(pub, "z", "x", 0, false, 0);
    struct mq_session *s = imap_get(&E.b->sessions, "bridge", 6, test_session_key);
    assert_non_null(s);
    assert_int_equal(session_queue_count(s), MQ_QUEUE_IN_MEMORY);
    assert_int_equal(E.b->stats.pub_dropped - dropped, 5);
}

/* A connection with no_delivery (a bridge's local side set up while its remote is down)
 * resumes its session and subscribes, but is sent nothing: what the session holds, and the
 * retained messages its new subscription brings, QoS 0 included, wait for the next
 * connection, in order. */
static void test_no_delivery_connection(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("bridge", false, false);
    subscribe(sub, 1, "z", 1);
    session_flow(session_of(sub))->queue_qos0 = true;
    io_gone(sub, "remote down");
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "z", "0a", 0, false, 0);
    publish(pub, "z", "1b", 1, false, 1);
    publish(pub, "r", "0r", 0, true, 0);

    struct fake_io *prep = io_open();
    prep->conn->no_delivery = true;
    struct mq_packet p = connect_pkt("bridge", false, 0, NULL);
    send_packet(prep, &p);
    EXPECT_BYTES(prep, 0x20, 0x02, 0x01, 0x00); /* session present */
    subscribe(prep, 2, "r", 1);                 /* SUBACK, no retained message */
    publish(pub, "z", "0c", 0, false, 0);       /* routed while it is connected */
    expect_nothing(prep);
    assert_int_equal(session_queue_count(session_of(prep)), 4);
    io_gone(prep, "set up");

    struct fake_io *back = connect_client("bridge", false, true);
    expect_publish(back, "z", "0a", 0, false, false);
    send_ack(back, MQ_PUBACK, expect_publish(back, "z", "1b", 1, false, false));
    expect_publish(back, "r", "0r", 0, true, false);
    expect_publish(back, "z", "0c", 0, false, false);
    expect_nothing(back);
}

/* broker_publish_local: the broker's own message reaches subscribers and the retained store. */
static void test_publish_local(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    subscribe(sub, 1, "$SYS/broker/connection/+/state", 1);
    const char *t = "$SYS/broker/connection/b/state";
    assert_int_equal(broker_publish_local(E.b, t, strlen(t), "1", 1, 1, true), 0);
    send_ack(sub, MQ_PUBACK, expect_publish(sub, t, "1", 1, false, false));
    struct fake_io *late = connect_client("late", true, false);
    subscribe(late, 1, "$SYS/broker/connection/b/state", 0);
    expect_publish(late, t, "1", 0, true, false);
}

/* [MQTT-4.3.3-2]: an inbound QoS 2 PUBLISH resent before PUBREL is not delivered again. */
static void test_inbound_qos2_duplicate(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", false, false);
    subscribe(sub, 1, "t", 0);
    send_publish(pub, "t", "once", 2, false, 5, false);
    expect_ack(pub, MQ_PUBREC, 5);
    expect_publish(sub, "t", "once", 0, false, false);
    send_publish(pub, "t", "once", 2, false, 5, true); /* DUP resend */
    expect_ack(pub, MQ_PUBREC, 5);
    expect_nothing(sub);

    /* Also across a reconnect of the persistent publisher session. */
    io_gone(pub, "reset");
    struct fake_io *pub2 = connect_client("pub", false, true);
    send_publish(pub2, "t", "once", 2, false, 5, true);
    expect_ack(pub2, MQ_PUBREC, 5);
    expect_nothing(sub);
    send_ack(pub2, MQ_PUBREL, 5);
    expect_ack(pub2, MQ_PUBCOMP, 5);
    expect_nothing(pub2);

    /* After PUBREL the id is free: the same id is a new message. */
    send_publish(pub2, "t", "again", 2, false, 5, false);
    expect_ack(pub2, MQ_PUBREC, 5);
    expect_publish(sub, "t", "again", 0, false, false);
    /* PUBREL for an id never seen is still completed. */
    send_ack(pub2, MQ_PUBREL, 77);
    expect_ack(pub2, MQ_PUBCOMP, 77);
    expect_open(pub2);
}

/* ---- takeover, will, keepalive ------------------------------------------------------ */

/* [MQTT-3.1.4-2]: a second connection with the same id closes the first. Both use clean
 * session 0, so the session continues and the client was never away: no will, as in
 * Mosquitto (the will rules on takeover are in test_takeover_will_rules). */
static void test_takeover(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "w/#", 1);
    struct will w = {"w/dup", "gone", 1, false};
    struct fake_io *first = connect_will("dup", false, 0, &w, false);
    subscribe(first, 1, "data", 1);
    assert_int_equal(E.b->stats.clients_connected, 2);

    struct fake_io *second = connect_client("dup", false, true);
    expect_close_requested(first);
    expect_nothing(first);
    expect_nothing(watch);
    assert_int_equal(E.b->stats.clients_connected, 2);

    /* The old connection's close callback comes later and must not touch the session. */
    io_gone(first, "closed by broker");
    expect_nothing(watch);
    assert_ptr_equal(session_of(second)->conn, second->conn);
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "data", "for-second", 1, false, 1);
    send_ack(second, MQ_PUBACK, expect_publish(second, "data", "for-second", 1, false, false));
    expect_nothing(second);

    /* Takeover with clean session 1 discards the session: session present 0. */
    struct fake_io *third = connect_client("dup", true, false);
    expect_close_requested(second);
    publish(pub, "data", "nobody", 1, false, 2);
    expect_nothing(third);
    expect_nothing(second);
}

/* [MQTT-3.1.2-24]: no packet for 1.5 × keepalive → close; the will is published. */
static void test_will_on_keepalive_expiry(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "will/#", 2);
    struct will w = {"will/ka", "timeout", 2, false};
    struct fake_io *io = connect_will("ka", true, 10, &w, false);

    E.b->now_ms = T0 + 14999;
    broker_tick(E.b);
    expect_open(io);
    expect_nothing(watch);

    E.b->now_ms = T0 + 15001;
    broker_tick(E.b);
    expect_close_requested(io);
    expect_nothing(io);
    complete_qos2(watch, expect_publish(watch, "will/ka", "timeout", 2, false, false));
    expect_nothing(watch);

    /* The will goes out once: not again when the transport reports the close. */
    io_gone(io, "closed by broker");
    broker_tick(E.b);
    expect_nothing(watch);
}

/* Any packet restarts the keepalive timer. */
static void test_keepalive_reset_by_traffic(void **state)
{
    (void)state;
    struct fake_io *io = connect_will("ka", true, 2, NULL, false);
    E.b->now_ms = T0 + 2000;
    feed(io, (const uint8_t[]){0xc0, 0x00}, 2);
    EXPECT_BYTES(io, 0xd0, 0x00);
    E.b->now_ms = T0 + 2000 + 2999;
    broker_tick(E.b);
    expect_open(io);
    E.b->now_ms = T0 + 2000 + 3001;
    broker_tick(E.b);
    expect_close_requested(io);
}

/* connect_timeout counts from the connection, not from its last byte: a CONNECT sent a
 * byte at a time cannot hold a connection slot forever. */
static void test_connect_timeout_not_reset_by_partial_bytes(void **state)
{
    (void)state;
    E.cfg.connect_timeout = 10;
    struct fake_io *io = io_open();
    for (uint64_t t = 1000; t < 10000; t += 3000) {
        E.b->now_ms = T0 + t;
        /* A CONNECT's first byte, never finished: nothing consumed, kept by the io. */
        assert_int_equal(proto_conn_input(io->conn, (const uint8_t[]){0x10}, 1, NULL), 0);
        broker_tick(E.b);
        expect_open(io);
    }
    E.b->now_ms = T0 + 10000;
    broker_tick(E.b);
    expect_close_requested(io);
}

/* mq_conn keeps its timestamps in the low 32 bits of the broker's ms clock: a keepalive
 * and a connect_timeout that span the 32-bit wrap (after 49.7 days of the clock) expire
 * exactly as any other, neither at the wrap nor never. */
static void test_timers_across_the_32_bit_wrap(void **state)
{
    (void)state;
    const uint64_t wrap = 3ull << 32; /* not the first wrap: now - then in 64 bits would do there */
    E.b->now_ms = wrap - 5000;
    struct fake_io *io = connect_will("ka", true, 10, NULL, false);
    E.cfg.connect_timeout = 10;
    struct fake_io *mute = io_open();
    E.b->now_ms = wrap + 4999; /* 9.999 s on: both still open */
    broker_tick(E.b);
    expect_open(io);
    expect_open(mute);
    E.b->now_ms = wrap + 5000; /* connect_timeout (10 s) reached */
    broker_tick(E.b);
    expect_open(io);
    expect_close_requested(mute);
    E.b->now_ms = wrap + 9999; /* 14.999 s */
    broker_tick(E.b);
    expect_open(io);
    E.b->now_ms = wrap + 10001; /* 15.001 s: 1.5 x the keepalive */
    broker_tick(E.b);
    expect_close_requested(io);
}

/* [MQTT-3.1.2-10]: keepalive 0 turns the mechanism off. */
static void test_keepalive_zero_never_expires(void **state)
{
    (void)state;
    struct fake_io *io = connect_will("ka0", true, 0, NULL, false);
    for (uint64_t t = 1000; t < 100000000000ull; t *= 10) {
        E.b->now_ms = T0 + t;
        broker_tick(E.b);
    }
    expect_open(io);
    expect_nothing(io);
}

/* [MQTT-3.1.2-8]: connection lost without DISCONNECT → the will is published; a
 * retained will is stored like any retained message. */
static void test_will_on_connection_lost(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "will/#", 2);
    struct will w = {"will/w", "bye", 1, true};
    struct fake_io *io = connect_will("w", false, 60, &w, false);
    io_gone(io, "connection reset by peer");
    send_ack(watch, MQ_PUBACK, expect_publish(watch, "will/w", "bye", 1, false, false));
    expect_nothing(watch);
    struct fake_io *late = connect_client("late", true, false);
    subscribe(late, 1, "will/+", 2);
    send_ack(late, MQ_PUBACK, expect_publish(late, "will/w", "bye", 1, true, false));
    expect_nothing(late);
}

/* [MQTT-3.1.2-8]: a protocol error closes the connection and publishes the will. */
static void test_will_on_protocol_error(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "will/#", 0);
    struct will w = {"will/bad", "malformed", 0, false};
    struct fake_io *io = connect_will("bad", true, 0, &w, false);
    feed(io, (const uint8_t[]){0x36, 0x03, 0x00, 0x01, 'x'}, 5); /* PUBLISH with QoS 3 */
    expect_close_requested(io);
    expect_nothing(io);
    expect_publish(watch, "will/bad", "malformed", 0, false, false);
    assert_int_equal(E.b->stats.protocol_errors, 1);
}

/* [MQTT-3.14.4-3]: after DISCONNECT the will is discarded. */
static void test_no_will_after_disconnect(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "will/#", 0);
    struct will w = {"will/d", "never", 0, true};
    struct fake_io *io = connect_will("d", true, 0, &w, false);
    feed(io, (const uint8_t[]){0xe0, 0x00}, 2);
    expect_close_requested(io);
    expect_nothing(io);
    io_gone(io, "closed");
    expect_nothing(watch);
    assert_int_equal(retain_count(E.b->retained), 0);
}

/* A clean session's subscriptions leave the tree with it: publishing afterwards must not
 * reach freed memory (ASan) nor anyone else. */
static void test_clean_session_subscriptions_removed(void **state)
{
    (void)state;
    struct fake_io *sub = connect_client("sub", true, false);
    subscribe(sub, 1, "c/#", 1);
    subscribe(sub, 2, "c/+", 2);
    io_gone(sub, "reset");
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "c/x", "x", 1, false, 1);
    assert_int_equal(sub_tree_count(E.b->subs), 0);
    assert_int_equal(E.b->stats.pub_sent, 0);
}

/* Takeover of a clean session 1 connection by a clean 0 one: nothing was stored, so
 * session present is 0 ([MQTT-3.2.2-3]). */
static void test_takeover_of_clean_session(void **state)
{
    (void)state;
    struct fake_io *first = connect_client("c", true, false);
    subscribe(first, 1, "t", 1);
    struct fake_io *second = connect_client("c", false, false);
    expect_close_requested(first);
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "t", "x", 1, false, 1);
    expect_nothing(second); /* the old session's subscription went with it */
    expect_nothing(first);
}

/* The client reconnects after DISCONNECT but before the transport's close callback for
 * the old connection has run: the session is already detached, so this is not a
 * takeover, and the late callback must not disturb the new connection. */
static void test_reconnect_before_close_callback(void **state)
{
    (void)state;
    struct will w = {"will/x", "x", 0, false};
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "will/#", 0);
    struct fake_io *old = connect_will("re", false, 0, &w, false);
    subscribe(old, 1, "t", 1);
    feed(old, (const uint8_t[]){0xe0, 0x00}, 2);
    expect_close_requested(old);
    struct fake_io *now = connect_will("re", false, 0, &w, true);
    assert_int_equal(old->close_requests, 1);
    io_gone(old, "closed");
    expect_nothing(watch);
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "t", "y", 1, false, 1);
    send_ack(now, MQ_PUBACK, expect_publish(now, "t", "y", 1, false, false));
    expect_nothing(now);
    assert_int_equal(E.b->stats.clients_connected, 3);
}

/* Shutdown: every connection is asked to close and no will is published. */
/* Shutdown publishes every connected client's will, as Mosquitto does: a retained
 * "offline" status is right after a restart, and a persistent subscriber that is away finds
 * the wills queued. */
static void test_broker_close_all(void **state)
{
    (void)state;
    struct fake_io *later = connect_client("later", false, false);
    subscribe(later, 1, "will/#", 1);
    send_packet(later, &(struct mq_packet){.type = MQ_DISCONNECT});
    io_gone(later, "closed");
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "will/#", 0);
    struct will wa = {"will/a", "a-gone", 1, true}, wb = {"will/b", "b-gone", 1, false};
    struct fake_io *a = connect_will("a", true, 0, &wa, false);
    struct fake_io *b = connect_will("b", false, 0, &wb, false);
    struct fake_io *pre = io_open(); /* not yet connected */
    broker_close_all(E.b);
    expect_close_requested(watch);
    expect_close_requested(a);
    expect_close_requested(b);
    expect_close_requested(pre);
    /* watch is the oldest connection, closed last: it still gets both, newest client's
     * first (the broker closes its list from the newest). */
    expect_publish(watch, "will/b", "b-gone", 0, false, false);
    expect_publish(watch, "will/a", "a-gone", 0, false, false);
    expect_nothing(watch);
    io_gone(a, "closed");
    io_gone(b, "closed");
    io_gone(pre, "closed");
    io_gone(watch, "closed");
    assert_int_equal(retain_count(E.b->retained), 1); /* will/a was retained */
    assert_null(E.b->conns);
    assert_int_equal(E.b->stats.clients_connected, 0);
    /* later's and b's persistent sessions stay; later holds both wills, in order. */
    assert_int_equal(imap_count(&E.b->sessions), 2);
    struct mq_session *s = imap_get(&E.b->sessions, "later", 5, test_session_key);
    assert_non_null(s);
    assert_int_equal(session_queue_count(s), 2);
    struct fake_io *back = connect_client("later", false, true);
    send_ack(back, MQ_PUBACK, expect_publish(back, "will/b", "b-gone", 1, false, false));
    send_ack(back, MQ_PUBACK, expect_publish(back, "will/a", "a-gone", 1, false, false));
    expect_nothing(back);
}

/* ---- issue 12: MQTT 3.1 ids, CONNACK flags, will size, bridges, wrong acks, order ---- */

/* MQTT 3.1: a client id of 1 to 23 characters, no assigned ids: an empty one, a missing
 * field and a 24th character are refused with CONNACK 2; 23 (counted in characters, not
 * bytes) is fine. */
static void test_connect_31_client_id_rules(void **state)
{
    (void)state;
    struct mq_packet p = connect_pkt("", true, 0, NULL);
    p.u.connect.protocol_level = 3;
    connect_refused(&p, MQ_CONNACK_ID_REJECTED);
    p = connect_pkt("abcdefghijklmnopqrstuvwx", true, 0, NULL); /* 24 */
    p.u.connect.protocol_level = 3;
    connect_refused(&p, MQ_CONNACK_ID_REJECTED);
    /* The field missing altogether: the body ends after the keepalive. */
    struct fake_io *io = io_open();
    static const uint8_t missing[] = {0x10, 12, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0, 10};
    feed(io, missing, sizeof missing);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, MQ_CONNACK_ID_REJECTED);
    expect_close_requested(io);
    /* 23 characters, two of them two bytes long: accepted. */
    io = io_open();
    p = connect_pkt("\xc3\xa9\xc3\xa9"
                    "abcdefghijklmnopqrstu",
                    true, 0, NULL);
    p.u.connect.protocol_level = 3;
    send_packet(io, &p);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, 0x00);
    expect_open(io);
    /* 3.1.1 keeps its rules: an empty id with clean session 1 is assigned one. */
    io = io_open();
    p = connect_pkt("", true, 0, NULL);
    send_packet(io, &p);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, 0x00);
    expect_open(io);
}

/* MQTT 3.1 has no session-present flag: a resumed 3.1 session still gets 0x00 in byte 1,
 * and its session does resume. */
static void test_connect_31_no_session_present(void **state)
{
    (void)state;
    struct mq_packet p = connect_pkt("old31", false, 0, NULL);
    p.u.connect.protocol_level = 3;
    struct fake_io *io = io_open();
    send_packet(io, &p);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, 0x00);
    subscribe(io, 1, "q", 1);
    send_packet(io, &(struct mq_packet){.type = MQ_DISCONNECT});
    io_gone(io, "closed");
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "q", "kept", 1, false, 1);
    io = io_open();
    send_packet(io, &p);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, 0x00);
    expect_publish(io, "q", "kept", 1, false, false);
}

/* message_size_limit covers the will: an oversized will payload is refused with CONNACK 5
 * at CONNECT (as Mosquitto does), not published later. */
static void test_will_over_message_size_limit(void **state)
{
    (void)state;
    E.cfg.message_size_limit = 4;
    struct will big = {"w/big", "12345", 0, false}, fits = {"w/ok", "1234", 0, false};
    struct mq_packet p = connect_pkt("big", true, 0, &big);
    connect_refused(&p, MQ_CONNACK_NOT_AUTHORIZED);
    connect_will("fits", true, 0, &fits, false);
}

/* On takeover the old connection's will is published only when its session ends: the old
 * or the new connection uses clean session 1. */
static void test_takeover_will_rules(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "w/#", 0);
    static const struct {
        bool old_clean, new_clean, will;
    } cases[] = {
        {false, false, false}, {true, false, true}, {false, true, true}, {true, true, true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[16], payload[16];
        snprintf(id, sizeof id, "tk%zu", i);
        snprintf(payload, sizeof payload, "gone%zu", i);
        struct will w = {"w/tk", payload, 0, false};
        struct fake_io *old = connect_will(id, cases[i].old_clean, 0, &w, false);
        struct fake_io *io = io_open();
        struct mq_packet p = connect_pkt(id, cases[i].new_clean, 0, NULL);
        send_packet(io, &p);
        bool present = !cases[i].old_clean && !cases[i].new_clean;
        EXPECT_BYTES(io, 0x20, 0x02, present ? 1 : 0, 0x00);
        expect_close_requested(old);
        if (cases[i].will)
            expect_publish(watch, "w/tk", payload, 0, false, false);
        expect_nothing(watch);
        io_gone(old, "closed by broker");
        send_packet(io, &(struct mq_packet){.type = MQ_DISCONNECT});
        io_gone(io, "closed");
    }
}

/* An acknowledgement of the wrong type for its packet id's flow closes the connection
 * ([MQTT-4.8.0-1]); one for an id not in flight is ignored. */
static void test_wrong_ack_type_closes(void **state)
{
    (void)state;
    static const struct {
        uint8_t qos;
        enum mq_packet_type ack;
    } cases[] = {{1, MQ_PUBREC}, {1, MQ_PUBCOMP}, {2, MQ_PUBACK}, {2, MQ_PUBCOMP}};
    struct fake_io *pub = connect_client("pub", true, false);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[16];
        snprintf(id, sizeof id, "wa%zu", i);
        struct fake_io *sub = connect_client(id, true, false);
        subscribe(sub, 1, "wa", cases[i].qos);
        send_ack(sub, cases[i].ack, 999); /* not in flight: ignored */
        expect_open(sub);
        publish(pub, "wa", "x", cases[i].qos, false, (uint16_t)(i + 1));
        uint16_t pid = expect_publish(sub, "wa", "x", cases[i].qos, false, false);
        uint64_t errors = E.b->stats.protocol_errors;
        send_ack(sub, cases[i].ack, pid);
        expect_close_requested(sub);
        expect_nothing(sub);
        assert_int_equal(E.b->stats.protocol_errors, errors + 1);
        io_gone(sub, "closed by broker");
    }
    /* After PUBREC, a repeated PUBREC is a retransmission (PUBREL again), and PUBACK for
     * the id now awaiting PUBCOMP is a violation. */
    struct fake_io *sub = connect_client("wa-rec", true, false);
    subscribe(sub, 1, "wa", 2);
    publish(pub, "wa", "y", 2, false, 9);
    uint16_t pid = expect_publish(sub, "wa", "y", 2, false, false);
    send_ack(sub, MQ_PUBREC, pid);
    expect_ack(sub, MQ_PUBREL, pid);
    send_ack(sub, MQ_PUBREC, pid);
    expect_ack(sub, MQ_PUBREL, pid);
    send_ack(sub, MQ_PUBACK, pid);
    expect_close_requested(sub);
}

/* A client subscribed to what it publishes gets its PUBACK/PUBREC before the routed copy
 * (Mosquitto's order, which clients and test suites assume). */
static void test_ack_before_own_copy(void **state)
{
    (void)state;
    struct fake_io *io = connect_client("self", true, false);
    subscribe(io, 1, "me/#", 2);
    send_publish(io, "me/1", "one", 1, false, 7, false);
    expect_ack(io, MQ_PUBACK, 7);
    send_ack(io, MQ_PUBACK, expect_publish(io, "me/1", "one", 1, false, false));
    send_publish(io, "me/2", "two", 2, false, 8, false);
    expect_ack(io, MQ_PUBREC, 8);
    complete_qos2(io, expect_publish(io, "me/2", "two", 2, false, false));
    send_ack(io, MQ_PUBREL, 8);
    expect_ack(io, MQ_PUBCOMP, 8);
    send_publish(io, "me/0", "zero", 0, false, 0, false);
    expect_publish(io, "me/0", "zero", 0, false, false);
    expect_nothing(io);
    assert_int_equal(session_queue_count(session_of(io)), 0);
}

/* A bridge (the protocol level's top bit) is never sent back what it published; other
 * subscribers, and ordinary clients subscribed to their own topics, are unaffected. */
static void test_bridge_no_local(void **state)
{
    (void)state;
    struct fake_io *bridge = io_open();
    struct mq_packet p = connect_pkt("br", false, 0, NULL);
    p.u.connect.bridge = true;
    send_packet(bridge, &p);
    EXPECT_BYTES(bridge, 0x20, 0x02, 0x00, 0x00);
    assert_true(bridge->conn->bridge);
    subscribe(bridge, 1, "t/#", 1);
    struct fake_io *local = connect_client("local", true, false);
    subscribe(local, 1, "t/#", 1);
    publish(bridge, "t/in", "from-remote", 1, false, 1);
    expect_nothing(bridge);
    send_ack(local, MQ_PUBACK, expect_publish(local, "t/in", "from-remote", 1, false, false));
    /* A local message goes out over the bridge once, and back to local (its own). */
    send_publish(local, "t/out", "to-remote", 1, false, 2, false);
    expect_ack(local, MQ_PUBACK, 2);
    send_ack(local, MQ_PUBACK, expect_publish(local, "t/out", "to-remote", 1, false, false));
    send_ack(bridge, MQ_PUBACK, expect_publish(bridge, "t/out", "to-remote", 1, false, false));
    expect_nothing(bridge);
    expect_nothing(local);
}

/* upgrade_outgoing_qos: delivered at the granted QoS, not the published one. */
static void test_upgrade_outgoing_qos(void **state)
{
    (void)state;
    E.cfg.upgrade_outgoing_qos = true;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "u", 2);
    publish(pub, "u", "x", 0, false, 0);
    complete_qos2(sub, expect_publish(sub, "u", "x", 2, false, false));
    expect_nothing(sub);
}

/* message_size_limit: an oversized message is dropped, but its QoS flow completes. */
static void test_message_size_limit(void **state)
{
    (void)state;
    E.cfg.message_size_limit = 4;
    struct fake_io *sub = connect_client("sub", true, false);
    struct fake_io *pub = connect_client("pub", true, false);
    subscribe(sub, 1, "m", 2);
    publish(pub, "m", "12345", 0, false, 0);
    publish(pub, "m", "12345", 1, false, 1);
    publish(pub, "m", "12345", 2, false, 2);
    expect_nothing(sub);
    publish(pub, "m", "1234", 0, false, 0);
    expect_publish(sub, "m", "1234", 0, false, false);
    expect_open(pub);
}

/* max_packet_size: a larger packet is a protocol error that closes the connection. */
static void test_max_packet_size(void **state)
{
    (void)state;
    E.cfg.max_packet_size = 32;
    struct fake_io *sub = connect_client("sub", true, false);
    subscribe(sub, 1, "#", 0);
    struct fake_io *pub = connect_client("pub", true, false);
    send_publish(pub, "big", "0123456789012345678901234567890123456789", 0, false, 0, false);
    expect_close_requested(pub);
    expect_nothing(pub);
    expect_nothing(sub);
}

/* A SUBSCRIBE with more filters than the SUBACK fast path holds, and a SUBACK whose
 * remaining length needs two bytes. */
static void test_subscribe_many_filters(void **state)
{
    (void)state;
    enum { NF = 200 };
    struct fake_io *sub = connect_client("sub", true, false);
    static char names[NF][8];
    const char *filters[NF];
    uint8_t qos[NF];
    for (int i = 0; i < NF; i++) {
        snprintf(names[i], sizeof(names[i]), "f/%d", i);
        filters[i] = names[i];
        qos[i] = (uint8_t)(i % 3);
    }
    static uint8_t buf[4096];
    feed(sub, buf, topic_list_pkt(MQ_SUBSCRIBE, 0xabcd, NF, filters, qos, buf, sizeof(buf)));
    uint8_t want[4 + 2 + NF];
    size_t n = 0;
    want[n++] = 0x90;
    want[n++] = (uint8_t)((2 + NF) % 128) | 0x80;
    want[n++] = (uint8_t)((2 + NF) / 128);
    want[n++] = 0xab;
    want[n++] = 0xcd;
    memcpy(want + n, qos, NF);
    expect_bytes(sub, want, n + NF);
    expect_nothing(sub);
    assert_int_equal(session_of(sub)->sub_count, NF);
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "f/199", "x", 1, false, 1);
    send_ack(sub, MQ_PUBACK, expect_publish(sub, "f/199", "x", 1, false, false));
}

/* ---- framing ------------------------------------------------------------------------ */

/* Builds CONNECT + SUBSCRIBE + PUBLISH QoS 1 + PINGREQ for client id. */
static size_t conversation(const char *id, uint8_t *buf, size_t cap, size_t *connect_len)
{
    struct mq_packet p = connect_pkt(id, true, 30, NULL);
    size_t n = encode(&p, buf, cap);
    *connect_len = n;
    const char *filter = "s/#";
    uint8_t qos = 1;
    n += topic_list_pkt(MQ_SUBSCRIBE, 3, 1, &filter, &qos, buf + n, cap - n);
    p = publish_pkt("t/1", "payload", 1, false, 10, false);
    n += encode(&p, buf + n, cap - n);
    buf[n++] = 0xc0;
    buf[n++] = 0x00;
    return n;
}

static void expect_conversation_output(struct fake_io *io, struct fake_io *watch)
{
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, 0x00);
    EXPECT_BYTES(io, 0x90, 0x03, 0x00, 0x03, 0x01);
    EXPECT_BYTES(io, 0x40, 0x02, 0x00, 0x0a);
    EXPECT_BYTES(io, 0xd0, 0x00);
    expect_nothing(io);
    expect_open(io);
    expect_publish(watch, "t/1", "payload", 0, false, false);
    expect_nothing(watch);
}

/* Packets split across many reads (one byte at a time) and many packets in one read. */
static void test_split_and_coalesced_input(void **state)
{
    (void)state;
    struct fake_io *watch = connect_client("watch", true, false);
    subscribe(watch, 1, "t/#", 0);
    uint8_t buf[512];
    size_t connect_len;
    size_t total = conversation("bytewise", buf, sizeof(buf), &connect_len);

    /* One byte per read, keeping what was not consumed, as net/client.c does. */
    struct fake_io *io = io_open();
    uint8_t pending[512];
    size_t plen = 0;
    for (size_t i = 0; i < total; i++) {
        pending[plen++] = buf[i];
        size_t need = 12345;
        size_t used = proto_conn_input(io->conn, pending, plen, &need);
        assert_true(used <= plen);
        if (i + 1 < connect_len) {
            assert_int_equal(used, 0);
            assert_int_equal(io->len, 0); /* nothing answered before CONNECT is complete */
            /* need: 0 until the fixed header is complete, then the whole packet size */
            assert_int_equal(need, plen >= 2 ? connect_len : 0);
        }
        if (used == 0 && plen >= 2)
            assert_int_equal(need, codec_packet_size(pending, plen));
        if (used)
            assert_int_equal(need, 0);
        memmove(pending, pending + used, plen - used);
        plen -= used;
    }
    assert_int_equal(plen, 0);
    expect_conversation_output(io, watch);

    /* Everything in one read. */
    total = conversation("oneshot", buf, sizeof(buf), &connect_len);
    struct fake_io *io2 = io_open();
    size_t need = 1;
    assert_int_equal(proto_conn_input(io2->conn, buf, total, &need), total);
    assert_int_equal(need, 0);
    expect_conversation_output(io2, watch);

    /* Whole packets plus the start of another: only the whole ones are consumed. */
    total = conversation("partial", buf, sizeof(buf), &connect_len);
    struct fake_io *io3 = io_open();
    size_t cut = total - 3; /* PUBLISH missing its last byte, no PINGREQ */
    size_t used = proto_conn_input(io3->conn, buf, cut, &need);
    size_t publish_len = total - 2 - (used);
    assert_true(used < cut);
    assert_int_equal(need, publish_len);
    EXPECT_BYTES(io3, 0x20, 0x02, 0x00, 0x00);
    EXPECT_BYTES(io3, 0x90, 0x03, 0x00, 0x03, 0x01);
    expect_nothing(io3);
    feed(io3, buf + used, total - used);
    EXPECT_BYTES(io3, 0x40, 0x02, 0x00, 0x0a);
    EXPECT_BYTES(io3, 0xd0, 0x00);
    expect_nothing(io3);
    expect_publish(watch, "t/1", "payload", 0, false, false);
}

/* ---- retained flood through a small window ---------------------------------------- */

/* A '#' subscriber with max_inflight 2 receives all 500 retained QoS 1 messages as it
 * acknowledges them; the queue cap does not apply to retained-on-subscribe delivery. */
static void test_retained_flood_small_window(void **state)
{
    (void)state;
    enum { N = 500 };
    E.cfg.max_inflight_messages = 2;
    E.cfg.max_queued_messages = 10;
    struct fake_io *pub = connect_client("pub", true, false);
    char topic[32], payload[32];
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "r/%d", i);
        snprintf(payload, sizeof(payload), "v%d", i);
        publish(pub, topic, payload, 1, true, (uint16_t)(i + 1));
    }
    assert_int_equal(retain_count(E.b->retained), N);

    struct fake_io *sub = connect_client("sub", true, false);
    subscribe(sub, 1, "#", 1);
    static bool seen[N];
    memset(seen, 0, sizeof(seen));
    uint16_t window[2];
    int received = 0, in_window = 0;
    for (;;) {
        while (sub->rd < sub->len) {
            struct mq_packet p = read_packet(sub);
            assert_int_equal(p.type, MQ_PUBLISH);
            const struct mq_publish *pp = &p.u.publish;
            assert_int_equal(pp->qos, 1);
            assert_true(pp->retain);
            assert_false(pp->dup);
            int idx = -1;
            assert_int_equal(sscanf((const char *)pp->topic.ptr, "r/%d", &idx), 1);
            assert_true(idx >= 0 && idx < N);
            assert_false(seen[idx]);
            seen[idx] = true;
            snprintf(payload, sizeof(payload), "v%d", idx);
            assert_int_equal(pp->payload_len, strlen(payload));
            assert_memory_equal(pp->payload, payload, pp->payload_len);
            assert_true(in_window < 2); /* never more than max_inflight unacknowledged */
            window[in_window++] = pp->packet_id;
            received++;
        }
        if (in_window == 0)
            break;
        /* Acknowledge the oldest; exactly one more should follow while any remain. */
        send_ack(sub, MQ_PUBACK, window[0]);
        window[0] = window[1];
        in_window--;
    }
    assert_int_equal(received, N);
    for (int i = 0; i < N; i++)
        assert_true(seen[i]);
    assert_int_equal(E.b->stats.pub_dropped, 0);
    assert_int_equal(session_queue_count(session_of(sub)), 0);
    assert_int_equal(session_inflight_count(session_of(sub)), 0);
}

/* ---- persistence: proto over a real store in a temporary directory ------------------- */

/* The store, commit_all and restart are proto_fixture.h's (setup_store, teardown_store). */

/* SUBSCRIBE from a persistent session under durability ack: the SUBACK comes only once
 * the subscription is on disk. */
static void subscribe_durable(struct fake_io *io, uint16_t packet_id, const char *filter,
                              uint8_t qos)
{
    uint8_t buf[512];
    feed(io, buf, topic_list_pkt(MQ_SUBSCRIBE, packet_id, 1, &filter, &qos, buf, sizeof(buf)));
    expect_nothing(io);
    commit_all();
    EXPECT_BYTES(io, 0x90, 0x03, (uint8_t)(packet_id >> 8), (uint8_t)packet_id, qos);
}

static void test_persist_puback_waits_for_commit(void **state)
{
    (void)state;
    store_attach(MQ_STORE_DURABILITY_ACK);
    struct fake_io *sub = connect_client("keeper", false, false);
    subscribe_durable(sub, 3, "led/#", 1);
    io_gone(sub, "gone");

    struct fake_io *pub = connect_client("pub", true, false);
    store_hold(store, true); /* the disk is slow */
    send_publish(pub, "led/1", "ON", 1, false, 5, false);
    send_publish(pub, "other", "x", 1, false, 6, false); /* stores nothing, but queues behind */
    broker_store_flush(E.b);
    usleep(20000);
    broker_store_committed(E.b);
    expect_nothing(pub);
    assert_int_equal(E.b->deferred_count, 2);
    store_hold(store, false);
    commit_all();
    expect_ack(pub, MQ_PUBACK, 5); /* [MQTT-4.6.0-2]: in the order the PUBLISHes came */
    expect_ack(pub, MQ_PUBACK, 6);
    expect_nothing(pub);
    assert_int_equal(E.b->deferred_count, 0);

    restart(5000);
    sub = connect_client("keeper", false, true);
    expect_nothing(sub); /* the resent message waits until "sent with id N" is on disk */
    commit_all();
    uint16_t pid = expect_publish(sub, "led/1", "ON", 1, false, false);
    send_ack(sub, MQ_PUBACK, pid);
    expect_nothing(sub);
}

static void test_persist_relaxed_acks_at_once(void **state)
{
    (void)state;
    store_attach(MQ_STORE_DURABILITY_RELAXED);
    struct fake_io *sub = connect_client("keeper", false, false);
    subscribe(sub, 1, "t", 2); /* SUBACK at once */
    store_hold(store, true);
    struct fake_io *pub = connect_client("pub", true, false);
    publish(pub, "t", "v", 2, true, 9); /* PUBREC and PUBCOMP at once */
    uint16_t pid = expect_publish(sub, "t", "v", 2, false, false);
    send_ack(sub, MQ_PUBREC, pid);
    expect_ack(sub, MQ_PUBREL, pid);
    send_ack(sub, MQ_PUBCOMP, pid);
    store_hold(store, false);
    commit_all();
    restart(5000);
    /* The retained message and the session came back; the delivered message did not. */
    sub = connect_client("keeper", false, true);
    expect_nothing(sub);
    struct fake_io *late = connect_client("late", true, false);
    uint8_t buf[64];
    const char *filter = "t";
    uint8_t qos = 0;
    feed(late, buf, topic_list_pkt(MQ_SUBSCRIBE, 4, 1, &filter, &qos, buf, sizeof(buf)));
    EXPECT_BYTES(late, 0x90, 0x03, 0x00, 0x04, 0x00);
    expect_publish(late, "t", "v", 0, true, false);
}

/* A clean session stores nothing; with nothing waiting, its acknowledgements go at once. */
static void test_persist_clean_session_not_delayed(void **state)
{
    (void)state;
    store_attach(MQ_STORE_DURABILITY_ACK);
    commit_all();
    struct fake_io *sub = connect_client("c", true, false);
    subscribe(sub, 1, "t", 1);
    store_hold(store, true);
    struct fake_io *pub = connect_client("p", true, false);
    publish(pub, "t", "x", 1, false, 2);
    uint16_t pid = expect_publish(sub, "t", "x", 1, false, false);
    send_ack(sub, MQ_PUBACK, pid);
    assert_int_equal(E.b->deferred_count, 0);
    store_hold(store, false);
}

/* A connection that goes away while its acknowledgements wait: they are dropped. */
static void test_persist_deferred_dropped_on_close(void **state)
{
    (void)state;
    store_attach(MQ_STORE_DURABILITY_ACK);
    struct fake_io *sub = connect_client("keeper", false, false);
    subscribe_durable(sub, 1, "t", 2);
    store_hold(store, true);
    struct fake_io *pub = connect_client("pub", false, false);
    send_publish(pub, "t", "1", 2, false, 11, false);
    send_publish(pub, "t", "2", 1, false, 12, false);
    broker_store_flush(E.b);
    expect_nothing(sub); /* the QoS 2 PUBLISH waits for its state to be on disk too */
    io_gone(pub, "peer reset");
    assert_int_equal(E.b->deferred_count, 4);
    store_hold(store, false);
    commit_all();
    assert_int_equal(E.b->deferred_count, 0);
    uint16_t p1 = expect_publish(sub, "t", "1", 2, false, false);
    uint16_t p2 = expect_publish(sub, "t", "2", 1, false, false);
    send_ack(sub, MQ_PUBREC, p1);
    commit_all();
    expect_ack(sub, MQ_PUBREL, p1);
    send_ack(sub, MQ_PUBCOMP, p1);
    send_ack(sub, MQ_PUBACK, p2);
    commit_all();
    expect_nothing(sub);
    /* The publisher's QoS 2 reception (id 11) is durable: a resend is not delivered again. */
    pub = connect_client("pub", false, true);
    send_publish(pub, "t", "1", 2, false, 11, true);
    commit_all();
    expect_ack(pub, MQ_PUBREC, 11);
    send_ack(pub, MQ_PUBREL, 11);
    commit_all();
    expect_ack(pub, MQ_PUBCOMP, 11);
    expect_nothing(sub);
}

/* Paging: the fake server reads pages synchronously when the test says so. */
static struct {
    char id[64];
    uint16_t len;
    uint64_t after, token;
    uint32_t max;
    int requests;
    bool pending;
} page_req;

static void fake_page_read(void *ctx, const char *client_id, uint16_t len, uint64_t after_seq,
                           uint32_t max, uint64_t token)
{
    (void)ctx;
    assert_false(page_req.pending); /* one read per session at a time */
    assert_true(len < sizeof(page_req.id));
    memcpy(page_req.id, client_id, len);
    page_req.len = len;
    page_req.after = after_seq;
    page_req.max = max;
    page_req.token = token;
    page_req.pending = true;
    page_req.requests++;
}

struct page_buf {
    struct mq_paged_msg msgs[MQ_QUEUE_IN_MEMORY];
    size_t n;
};

static int page_collect(void *ctx, const struct mq_store_msg *m)
{
    struct page_buf *pb = ctx;
    assert_true(pb->n < MQ_QUEUE_IN_MEMORY);
    struct mq_msg *msg = msg_new((const uint8_t *)m->topic, m->topic_len, m->payload,
                                 m->payload_len, m->qos, m->retain);
    assert_non_null(msg);
    pb->msgs[pb->n++] =
        (struct mq_paged_msg){.seq = m->seq, .msg = msg, .qos = m->qos, .retain = m->retain};
    return 0;
}

/* Complete the outstanding page read, as the server's worker would. */
static void serve_page(void)
{
    assert_true(page_req.pending);
    page_req.pending = false;
    static struct page_buf pb;
    pb.n = 0;
    int64_t n = store_msg_page(store, page_req.id, page_req.len, page_req.after, page_req.max,
                               page_collect, &pb);
    assert_true(n >= 0);
    broker_store_paged(E.b, page_req.id, page_req.len, page_req.token, pb.msgs, pb.n, 0);
}

static void test_persist_long_queue_paged(void **state)
{
    (void)state;
    enum { N = 2600 };
    E.cfg.max_queued_messages = 0;
    E.cfg.max_inflight_messages = 10;
    memset(&page_req, 0, sizeof(page_req));
    store_attach(MQ_STORE_DURABILITY_ACK);
    E.b->page_read = fake_page_read;
    struct fake_io *sub = connect_client("long", false, false);
    subscribe_durable(sub, 1, "q", 1);
    io_gone(sub, "away");

    struct fake_io *pub = connect_client("pub", true, false);
    char payload[16];
    for (int i = 0; i < N; i++) {
        snprintf(payload, sizeof(payload), "%d", i);
        send_publish(pub, "q", payload, 1, false, (uint16_t)(i % 60000 + 1), false);
        if (i % 100 == 99)
            commit_all();
    }
    commit_all();
    struct mq_session *s = find_session("long");
    assert_non_null(s);
    assert_int_equal(session_queue_count(s), MQ_QUEUE_IN_MEMORY); /* the rest is on disk only */
    assert_int_equal(session_spilled(s), N - MQ_QUEUE_IN_MEMORY);

    sub = connect_client("long", false, true);
    int next = 0;
    while (next < N) {
        commit_all();
        if (sub->rd == sub->len) {
            assert_true(page_req.pending); /* nothing to send: a page must be on its way */
            serve_page();
            commit_all();
        }
        snprintf(payload, sizeof(payload), "%d", next);
        uint16_t pid = expect_publish(sub, "q", payload, 1, false, false);
        send_ack(sub, MQ_PUBACK, pid);
        next++;
        assert_true(session_queue_count(s) <= MQ_QUEUE_IN_MEMORY);
    }
    commit_all();
    expect_nothing(sub);
    assert_int_equal(session_spilled(s), 0);
    assert_true(page_req.requests >= 2);
    assert_false(page_req.pending);
}

/* ---- a bridge's QoS 0 in the store (session_queues_qos0) ------------------------------- */

/* What bridge.c does to its local session, after a restart too (local_prepare): its QoS 0
 * waits in line with the rest. */
static void queues_qos0(const char *id)
{
    struct mq_session *s = find_session(id);
    assert_non_null(s);
    struct mq_session_flow *f = session_flow(s);
    assert_non_null(f);
    f->queue_qos0 = true;
}

/* A bridge's local side, "bridge": persistent, subscribed to filter at QoS 1, queueing its
 * QoS 0, and offline (its remote is unreachable). */
static void bridge_offline(const char *filter)
{
    struct fake_io *io = connect_client("bridge", false, false);
    if (E.b->store_wait)
        subscribe_durable(io, 1, filter, 1);
    else
        subscribe(io, 1, filter, 1);
    queues_qos0("bridge");
    io_gone(io, "remote unreachable");
}

/* Publish payload on topic at qos (QoS 1 with packet id pid) under durability ack: the
 * PUBACK comes once the copies it queued are on disk. */
static void publish_acked(struct fake_io *pub, const char *topic, const char *payload, uint8_t qos,
                          uint16_t pid)
{
    send_publish(pub, topic, payload, qos, false, pid, false);
    commit_all();
    if (qos)
        expect_ack(pub, MQ_PUBACK, pid);
    expect_nothing(pub);
}

/* Messages (in memory and on disk) and in-flight entries a session holds. */
static uint64_t held(const char *id)
{
    struct mq_session *s = find_session(id);
    assert_non_null(s);
    return session_queue_count(s) + session_spilled(s) + session_inflight_count(s);
}

/* The QoS 0 messages queued for a bridge survive a crash in their place among the QoS 1 ones;
 * an ordinary persistent session's QoS 0 are still dropped, and a delivered QoS 0 message
 * leaves nothing in the store. */
static void test_persist_bridge_qos0_restored(void **state)
{
    (void)state;
    store_attach(MQ_STORE_DURABILITY_ACK);
    bridge_offline("b/#");
    struct fake_io *plain = connect_client("plain", false, false);
    subscribe_durable(plain, 1, "b/#", 1);
    io_gone(plain, "away");

    static const char *const payloads[] = {"0a", "1b", "0c", "0d", "1e", "0f"};
    struct fake_io *pub = connect_client("pub", true, false);
    for (uint16_t i = 0; i < 6; i++)
        publish_acked(pub, "b/x", payloads[i], (uint8_t)(payloads[i][0] - '0'), i + 1);
    assert_int_equal(held("bridge"), 6);
    assert_int_equal(held("plain"), 2);

    restart(5000);
    assert_int_equal(held("bridge"), 6);
    assert_int_equal(held("plain"), 2);
    queues_qos0("bridge");
    struct fake_io *br = connect_client("bridge", false, true);
    /* The first QoS 0 goes at once; the QoS 1 after it waits for "sent with id N" to be on
     * disk, and every QoS 0 behind it waits behind it. */
    expect_publish(br, "b/x", "0a", 0, false, false);
    expect_nothing(br);
    commit_all();
    uint16_t p1 = expect_publish(br, "b/x", "1b", 1, false, false);
    expect_publish(br, "b/x", "0c", 0, false, false);
    expect_publish(br, "b/x", "0d", 0, false, false);
    uint16_t p2 = expect_publish(br, "b/x", "1e", 1, false, false);
    expect_publish(br, "b/x", "0f", 0, false, false);
    expect_nothing(br);
    send_ack(br, MQ_PUBACK, p1);
    send_ack(br, MQ_PUBACK, p2);
    plain = connect_client("plain", false, true);
    commit_all();
    send_ack(plain, MQ_PUBACK, expect_publish(plain, "b/x", "1b", 1, false, false));
    send_ack(plain, MQ_PUBACK, expect_publish(plain, "b/x", "1e", 1, false, false));
    expect_nothing(plain);

    /* Delivered: nothing comes back after another crash. */
    restart(5000);
    assert_int_equal(held("bridge"), 0);
    assert_int_equal(held("plain"), 0);
    queues_qos0("bridge");
    br = connect_client("bridge", false, true);
    commit_all();
    expect_nothing(br);
}

/* Online, under durability ack: a bridge's QoS 0 never overtakes a QoS 1 PUBLISH that waits
 * for the store, and one sent at once is not stored; an ordinary session's QoS 0 still goes
 * at once. A QoS 0 message that waits behind the window is stored, and survives a crash. */
static void test_persist_bridge_qos0_online_order(void **state)
{
    (void)state;
    E.cfg.max_inflight_messages = 1;
    store_attach(MQ_STORE_DURABILITY_ACK);
    struct fake_io *br = connect_client("bridge", false, false);
    subscribe_durable(br, 1, "b/#", 1);
    queues_qos0("bridge");
    struct fake_io *plain = connect_client("plain", false, false);
    subscribe_durable(plain, 1, "b/#", 1);
    struct fake_io *pub = connect_client("pub", true, false);

    store_hold(store, true); /* the disk is slow */
    send_publish(pub, "b/x", "1a", 1, false, 1, false);
    send_publish(pub, "b/x", "0b", 0, false, 0, false);
    broker_store_flush(E.b);
    expect_nothing(br); /* "1a" waits for the disk, "0b" behind it */
    expect_publish(plain, "b/x", "0b", 0, false, false); /* an ordinary session: at once */
    store_hold(store, false);
    commit_all();
    expect_ack(pub, MQ_PUBACK, 1);
    expect_publish(br, "b/x", "1a", 1, false, false); /* not acknowledged before the crash */
    expect_publish(br, "b/x", "0b", 0, false, false);
    expect_nothing(br);
    send_ack(plain, MQ_PUBACK, expect_publish(plain, "b/x", "1a", 1, false, false));

    /* The window (1) is full: what follows waits in the queue, QoS 0 included, and is stored;
     * a crash before the PUBACK loses none of it. */
    publish_acked(pub, "b/x", "1c", 1, 2);
    publish_acked(pub, "b/x", "0d", 0, 0);
    expect_nothing(br);
    assert_int_equal(held("bridge"), 3);
    io_gone(plain, "away");

    restart(5000);
    assert_int_equal(held("bridge"), 3);
    queues_qos0("bridge");
    br = connect_client("bridge", false, true);
    commit_all();
    send_ack(br, MQ_PUBACK, expect_publish(br, "b/x", "1a", 1, false, true)); /* resent: DUP */
    commit_all();
    send_ack(br, MQ_PUBACK, expect_publish(br, "b/x", "1c", 1, false, false));
    expect_publish(br, "b/x", "0d", 0, false, false);
    commit_all();
    expect_nothing(br);
    assert_int_equal(held("bridge"), 0);

    /* The queue empty again, a QoS 0 message goes at once and is never stored. */
    pub = connect_client("pub", true, false);
    uint64_t changes = E.b->store_changes;
    publish_acked(pub, "b/x", "0e", 0, 0);
    expect_publish(br, "b/x", "0e", 0, false, false);
    assert_int_equal(E.b->store_changes, changes);
}

/* A bridge's long backlog of QoS 0 and QoS 1 spills to disk past the memory queue, survives a
 * crash, and is paged back in order. */
static void test_persist_bridge_qos0_paged(void **state)
{
    (void)state;
    enum { N = 2600 };
    E.cfg.max_queued_messages = 0;
    E.cfg.max_inflight_messages = 10;
    memset(&page_req, 0, sizeof(page_req));
    store_attach(MQ_STORE_DURABILITY_RELAXED);
    E.b->page_read = fake_page_read;
    bridge_offline("q");

    struct fake_io *pub = connect_client("pub", true, false);
    char payload[16];
    for (int i = 0; i < N; i++) {
        snprintf(payload, sizeof(payload), "%d", i);
        publish(pub, "q", payload, (uint8_t)(i % 2), false, (uint16_t)(i % 60000 + 1));
        if (i % 100 == 99)
            commit_all();
    }
    struct mq_session *s = find_session("bridge");
    assert_int_equal(session_queue_count(s), MQ_QUEUE_IN_MEMORY); /* the rest is on disk only */
    assert_int_equal(session_spilled(s), N - MQ_QUEUE_IN_MEMORY);

    restart(5000);
    E.b->page_read = fake_page_read;
    assert_int_equal(held("bridge"), N);
    queues_qos0("bridge");
    struct fake_io *br = connect_client("bridge", false, true);
    s = find_session("bridge");
    int next = 0;
    while (next < N) {
        commit_all();
        if (br->rd == br->len) {
            assert_true(page_req.pending); /* nothing to send: a page must be on its way */
            serve_page();
            commit_all();
        }
        snprintf(payload, sizeof(payload), "%d", next);
        uint16_t pid = expect_publish(br, "q", payload, (uint8_t)(next % 2), false, false);
        if (next % 2)
            send_ack(br, MQ_PUBACK, pid);
        next++;
    }
    commit_all();
    expect_nothing(br);
    assert_int_equal(session_spilled(s), 0);
    assert_int_equal(held("bridge"), 0);
    assert_true(page_req.requests >= 2);
    assert_false(page_req.pending);
    assert_int_equal(E.b->stats.pub_dropped, 0);
}

/* max_queued_messages holds for a bridge's stored QoS 0 as for QoS 1: the newest are dropped
 * and counted, and the oldest kept across a crash. */
static void test_persist_bridge_qos0_capped(void **state)
{
    (void)state;
    E.cfg.max_queued_messages = 5;
    store_attach(MQ_STORE_DURABILITY_RELAXED);
    bridge_offline("c");
    struct fake_io *pub = connect_client("pub", true, false);
    char payload[16];
    for (int i = 0; i < 12; i++) {
        snprintf(payload, sizeof(payload), "%d", i);
        publish(pub, "c", payload, (uint8_t)(i % 2), false, (uint16_t)(i + 1));
    }
    assert_int_equal(held("bridge"), 5);
    assert_int_equal(session_dropped(find_session("bridge")), 7);
    assert_int_equal(E.b->stats.pub_dropped, 7);

    restart(5000);
    assert_int_equal(held("bridge"), 5);
    queues_qos0("bridge");
    struct fake_io *br = connect_client("bridge", false, true);
    for (int i = 0; i < 5; i++) {
        snprintf(payload, sizeof(payload), "%d", i);
        uint16_t pid = expect_publish(br, "c", payload, (uint8_t)(i % 2), false, false);
        if (i % 2)
            send_ack(br, MQ_PUBACK, pid);
    }
    expect_nothing(br);
}

int main(void)
{
    quiet_logs();

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define TS(name) cmocka_unit_test_setup_teardown(name, setup_store, teardown_store)
    const struct CMUnitTest tests[] = {
        T(test_connect_clean_session),
        T(test_connect_session_present),
        T(test_first_packet_not_connect),
        T(test_second_connect_closes),
        T(test_connect_protocol_level_5),
        T(test_connect_mqtt31),
        T(test_connect_empty_id_clean0),
        T(test_connect_empty_id_assigned),
        T(test_connect_empty_id_not_allowed),
        T(test_connect_empty_id_listener_setting),
        T(test_connect_auto_id_listener_prefix),
        T(test_connect_auto_id_unique),
        T(test_connect_anonymous_refused),
        T(test_subscribe_suback),
        T(test_pingreq),
        T(test_unsubscribe),
        T(test_publish_qos0),
        T(test_publish_qos1),
        T(test_publish_qos2),
        T(test_qos_downgrade),
        T(test_overlapping_subscriptions),
        T(test_retained_lifecycle),
        T(test_dollar_topics),
        T(test_retained_filter_matching),
        T(test_inflight_window),
        T(test_inflight_window_qos2),
        T(test_queue_cap_messages),
        T(test_queue_cap_bytes),
        T(test_offline_queue_and_redelivery),
        T(test_offline_queue_qos0),
        T(test_session_queue_qos0),
        T(test_no_delivery_connection),
        T(test_publish_local),
        T(test_inbound_qos2_duplicate),
        T(test_takeover),
        T(test_will_on_keepalive_expiry),
        T(test_keepalive_reset_by_traffic),
        T(test_connect_timeout_not_reset_by_partial_bytes),
        T(test_timers_across_the_32_bit_wrap),
        T(test_keepalive_zero_never_expires),
        T(test_will_on_connection_lost),
        T(test_will_on_protocol_error),
        T(test_no_will_after_disconnect),
        T(test_clean_session_subscriptions_removed),
        T(test_takeover_of_clean_session),
        T(test_connect_31_client_id_rules),
        T(test_connect_31_no_session_present),
        T(test_will_over_message_size_limit),
        T(test_takeover_will_rules),
        T(test_wrong_ack_type_closes),
        T(test_ack_before_own_copy),
        T(test_bridge_no_local),
        T(test_reconnect_before_close_callback),
        T(test_broker_close_all),
        T(test_upgrade_outgoing_qos),
        T(test_message_size_limit),
        T(test_max_packet_size),
        T(test_subscribe_many_filters),
        T(test_split_and_coalesced_input),
        T(test_retained_flood_small_window),
        TS(test_persist_puback_waits_for_commit),
        TS(test_persist_relaxed_acks_at_once),
        TS(test_persist_clean_session_not_delayed),
        TS(test_persist_deferred_dropped_on_close),
        TS(test_persist_long_queue_paged),
        TS(test_persist_bridge_qos0_restored),
        TS(test_persist_bridge_qos0_online_order),
        TS(test_persist_bridge_qos0_paged),
        TS(test_persist_bridge_qos0_capped),
    };
#undef T
#undef TS
    return cmocka_run_group_tests(tests, NULL, NULL);
}

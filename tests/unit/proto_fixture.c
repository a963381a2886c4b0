/* proto_fixture.c - the fake sink and client-side helpers of proto_fixture.h. */
#include "proto_fixture.h"

/* ---- fake sink ---------------------------------------------------------------------- */

struct env E;

static char default_prefix[] = "auto-";

/* The fake io whose conn_state proto names (as client.c does with container_of). */
static struct fake_io *io_of(struct mq_conn *c)
{
    return (struct fake_io *)((char *)c - offsetof(struct fake_io, conn_state));
}

static void fake_write(struct mq_conn *c, const struct mq_iov *iov, size_t n)
{
    struct fake_io *io = io_of(c);
    io->level = c->protocol_level;
    if (io->close_requests)
        io->writes_after_close++; /* proto promises nothing is sent once closing */
    for (size_t i = 0; i < n; i++) {
        assert_true(io->len + iov[i].len <= IO_CAP);
        if (iov[i].len)
            memcpy(io->out + io->len, iov[i].base, iov[i].len);
        io->len += iov[i].len;
    }
}

/* Must not call proto_conn_closed: the real network layer does that later. */
static void fake_close(struct mq_conn *c)
{
    struct fake_io *io = io_of(c);
    io->close_requests++;
}

const struct mq_sink_ops fake_sink = {fake_write, fake_close};

int setup(void **state)
{
    (void)state;
    memset(&E, 0, sizeof(E));
    if (config_defaults(&E.cfg))
        return -1;
    E.cfg.connection_messages = false;
    E.listener.max_connections = -1;
    E.lctx.cfg = &E.listener;
    E.listener.allow_anonymous = true;
    E.listener.allow_zero_length_clientid = true;
    E.listener.auto_id_prefix = default_prefix;
    E.b = broker_new(&E.cfg, &fake_sink, T0);
    return E.b ? 0 : -1;
}

int teardown(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < E.nios; i++) {
        struct fake_io *io = &E.ios[i];
        if (io->conn)
            proto_conn_closed(io->conn, "test over");
    }
    /* The counters agree with what actually went out. */
    uint64_t bytes = 0, packets = 0;
    for (size_t i = 0; i < E.nios; i++) {
        struct fake_io *io = &E.ios[i];
        bytes += io->len;
        struct mq_packet p;
        int n;
        struct mq_decode_limits lim = {.protocol_level = io->level};
        for (size_t off = 0; off < io->len; off += (size_t)n) {
            n = codec_decode(io->out + off, io->len - off, &lim, &p);
            if (n <= 0) {
                fprintf(stderr, "io %zu: undecodable output at %zu (%d)\n", i, off, n);
                bad = 1;
                break;
            }
            packets++;
        }
    }
    if (bytes != E.b->stats.bytes_sent || packets != E.b->stats.msgs_sent) {
        fprintf(stderr, "stats: %llu bytes / %llu packets sent, counters say %llu / %llu\n",
                (unsigned long long)bytes, (unsigned long long)packets,
                (unsigned long long)E.b->stats.bytes_sent,
                (unsigned long long)E.b->stats.msgs_sent);
        bad = 1;
    }
    for (size_t i = 0; i < E.nios; i++) {
        struct fake_io *io = &E.ios[i];
        if (io->writes_after_close || io->close_requests > 1) {
            fprintf(stderr, "io %zu: %d writes after close, %d close requests\n", i,
                    io->writes_after_close, io->close_requests);
            bad = 1;
        }
        free(io->out);
    }
    if (E.b->conns) {
        fprintf(stderr, "connections left in broker->conns\n");
        bad = 1;
    }
    broker_free(E.b);
    config_free(&E.cfg);
    return bad ? -1 : 0;
}

/* ---- connection helpers ------------------------------------------------------------- */

struct fake_io *io_open(void)
{
    assert_true(E.nios < MAX_IOS);
    struct fake_io *io = &E.ios[E.nios++];
    io->out = malloc(IO_CAP);
    assert_non_null(io->out);
    io->conn = &io->conn_state;
    proto_conn_open(io->conn, E.b, &E.lctx, "127.0.0.1:50000");
    return io;
}

/* The transport reports the connection gone (after a close request, or a peer reset). */
void io_gone(struct fake_io *io, const char *reason)
{
    assert_non_null(io->conn);
    proto_conn_closed(io->conn, reason);
    io->conn = NULL;
}

struct mq_session *session_of(struct fake_io *io)
{
    assert_non_null(io->conn);
    assert_non_null(io->conn->session);
    return io->conn->session;
}

const void *test_session_key(const void *session, size_t *len)
{
    const struct mq_session *s = session;
    *len = s->client_id_len;
    return s->client_id;
}

void feed(struct fake_io *io, const uint8_t *buf, size_t len)
{
    size_t used = proto_conn_input(io->conn, buf, len, NULL);
    assert_int_equal(used, len);
}

size_t encode(const struct mq_packet *p, uint8_t *buf, size_t cap)
{
    long n = codec_encode(p, buf, cap);
    assert_true(n > 0);
    assert_true((size_t)n <= cap);
    return (size_t)n;
}

void send_packet(struct fake_io *io, const struct mq_packet *p)
{
    uint8_t buf[4096];
    feed(io, buf, encode(p, buf, sizeof(buf)));
}

struct mq_bytes str(const char *s)
{
    return (struct mq_bytes){(const uint8_t *)s, (uint16_t)strlen(s)};
}

struct mq_packet connect_pkt(const char *id, bool clean, uint16_t keepalive, const struct will *w)
{
    struct mq_packet p = {.type = MQ_CONNECT};
    struct mq_connect *c = &p.u.connect;
    c->protocol_level = 4;
    c->clean_session = clean;
    c->keepalive = keepalive;
    c->client_id = str(id);
    if (w) {
        c->will_flag = true;
        c->will_topic = str(w->topic);
        c->will_payload = str(w->payload);
        c->will_qos = w->qos;
        c->will_retain = w->retain;
    }
    return p;
}

struct mq_packet publish_pkt(const char *topic, const char *payload, uint8_t qos, bool retain,
                             uint16_t packet_id, bool dup)
{
    struct mq_packet p = {.type = MQ_PUBLISH};
    p.u.publish = (struct mq_publish){.qos = qos,
                                      .dup = dup,
                                      .retain = retain,
                                      .topic = str(topic),
                                      .packet_id = packet_id,
                                      .payload = (const uint8_t *)payload,
                                      .payload_len = (uint32_t)strlen(payload)};
    return p;
}

struct mq_packet ack_pkt(enum mq_packet_type type, uint16_t packet_id)
{
    struct mq_packet p = {.type = type};
    p.u.packet_id = packet_id;
    return p;
}

/* SUBSCRIBE (with_qos) or UNSUBSCRIBE entries, encoded into buf. */
size_t topic_list_pkt(enum mq_packet_type type, uint16_t packet_id, size_t n,
                      const char *const *filters, const uint8_t *qos, uint8_t *buf, size_t cap)
{
    uint8_t entries[4096];
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t fl = strlen(filters[i]);
        assert_true(len + fl + 3 <= sizeof(entries));
        entries[len++] = (uint8_t)(fl >> 8);
        entries[len++] = (uint8_t)fl;
        memcpy(entries + len, filters[i], fl);
        len += fl;
        if (type == MQ_SUBSCRIBE)
            entries[len++] = qos[i];
    }
    struct mq_packet p = {.type = type};
    p.u.subscribe = (struct mq_topic_list){.packet_id = packet_id,
                                           .count = (uint16_t)n,
                                           .entries = entries,
                                           .entries_len = (uint32_t)len,
                                           .with_qos = type == MQ_SUBSCRIBE};
    return encode(&p, buf, cap);
}

void send_publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                  bool retain, uint16_t packet_id, bool dup)
{
    struct mq_packet p = publish_pkt(topic, payload, qos, retain, packet_id, dup);
    send_packet(io, &p);
}

void send_ack(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id)
{
    struct mq_packet p = ack_pkt(type, packet_id);
    send_packet(io, &p);
}

/* ---- reading what the broker wrote ------------------------------------------------- */

struct mq_packet read_packet(struct fake_io *io)
{
    struct mq_packet p;
    if (io->rd >= io->len)
        fail_msg("expected a packet, the broker wrote nothing more");
    struct mq_decode_limits lim = {.protocol_level = io->level};
    int n = codec_decode(io->out + io->rd, io->len - io->rd, &lim, &p);
    if (n <= 0)
        fail_msg("broker output does not decode (%d) at offset %zu", n, io->rd);
    io->rd += (size_t)n;
    return p;
}

void expect_nothing(struct fake_io *io)
{
    if (io->rd != io->len) {
        struct mq_packet p;
        struct mq_decode_limits lim = {.protocol_level = io->level};
        int n = codec_decode(io->out + io->rd, io->len - io->rd, &lim, &p);
        fail_msg("expected no output, got %zu more bytes (%s)", io->len - io->rd,
                 n > 0 ? codec_type_name(p.type) : "undecodable");
    }
}

void expect_bytes(struct fake_io *io, const uint8_t *bytes, size_t len)
{
    if (io->len - io->rd < len)
        fail_msg("expected %zu bytes (first 0x%02x), only %zu available", len, bytes[0],
                 io->len - io->rd);
    assert_memory_equal(io->out + io->rd, bytes, len);
    io->rd += len;
}

void expect_ack(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id)
{
    uint8_t b[4] = {(uint8_t)(type << 4 | (type == MQ_PUBREL ? 2 : 0)), 2,
                    (uint8_t)(packet_id >> 8), (uint8_t)packet_id};
    expect_bytes(io, b, 4);
}

/* Next packet must be PUBLISH with these fields; returns its packet id. */
uint16_t expect_publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                        bool retain, bool dup)
{
    struct mq_packet p = read_packet(io);
    if (p.type != MQ_PUBLISH)
        fail_msg("expected PUBLISH %s, got %s", topic, codec_type_name(p.type));
    const struct mq_publish *pub = &p.u.publish;
    if (pub->topic.len != strlen(topic) || memcmp(pub->topic.ptr, topic, pub->topic.len) != 0)
        fail_msg("expected PUBLISH on %s, got %.*s", topic, (int)pub->topic.len,
                 (const char *)pub->topic.ptr);
    assert_int_equal(pub->payload_len, strlen(payload));
    if (pub->payload_len)
        assert_memory_equal(pub->payload, payload, pub->payload_len);
    if (pub->qos != qos)
        fail_msg("PUBLISH %s: expected QoS %u, got %u", topic, qos, pub->qos);
    if (pub->retain != retain)
        fail_msg("PUBLISH %s: expected retain %d, got %d", topic, retain, pub->retain);
    if (pub->dup != dup)
        fail_msg("PUBLISH %s: expected DUP %d, got %d", topic, dup, pub->dup);
    if (qos)
        assert_int_not_equal(pub->packet_id, 0);
    return pub->packet_id;
}

void expect_open(struct fake_io *io)
{
    assert_int_equal(io->close_requests, 0);
}
void expect_close_requested(struct fake_io *io)
{
    assert_int_equal(io->close_requests, 1);
}

/* ---- client-side conversations ---------------------------------------------------- */

/* Open a connection, send CONNECT and check the CONNACK is exactly 0x20 0x02 sp 0x00. */
struct fake_io *connect_will(const char *id, bool clean, uint16_t keepalive, const struct will *w,
                             bool session_present)
{
    struct fake_io *io = io_open();
    struct mq_packet p = connect_pkt(id, clean, keepalive, w);
    send_packet(io, &p);
    EXPECT_BYTES(io, 0x20, 0x02, session_present ? 1 : 0, 0x00);
    expect_open(io);
    return io;
}

struct fake_io *connect_client(const char *id, bool clean, bool session_present)
{
    return connect_will(id, clean, 0, NULL, session_present);
}

/* CONNECT that must be refused with code: CONNACK sp=0 + code, then a close request. */
struct fake_io *connect_refused(const struct mq_packet *p, uint8_t code)
{
    struct fake_io *io = io_open();
    send_packet(io, p);
    EXPECT_BYTES(io, 0x20, 0x02, 0x00, code);
    expect_nothing(io);
    expect_close_requested(io);
    return io;
}

void subscribe(struct fake_io *io, uint16_t packet_id, const char *filter, uint8_t qos)
{
    uint8_t buf[512];
    size_t n = topic_list_pkt(MQ_SUBSCRIBE, packet_id, 1, &filter, &qos, buf, sizeof(buf));
    feed(io, buf, n);
    EXPECT_BYTES(io, 0x90, 0x03, (uint8_t)(packet_id >> 8), (uint8_t)packet_id, qos);
}

void unsubscribe(struct fake_io *io, uint16_t packet_id, const char *filter)
{
    uint8_t buf[512];
    size_t n = topic_list_pkt(MQ_UNSUBSCRIBE, packet_id, 1, &filter, NULL, buf, sizeof(buf));
    feed(io, buf, n);
    EXPECT_BYTES(io, 0xb0, 0x02, (uint8_t)(packet_id >> 8), (uint8_t)packet_id);
}

/* Publish and complete the publisher's side of the QoS flow. */
void publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos, bool retain,
             uint16_t packet_id)
{
    send_publish(io, topic, payload, qos, retain, packet_id, false);
    if (qos == 1) {
        expect_ack(io, MQ_PUBACK, packet_id);
    } else if (qos == 2) {
        expect_ack(io, MQ_PUBREC, packet_id);
        send_ack(io, MQ_PUBREL, packet_id);
        expect_ack(io, MQ_PUBCOMP, packet_id);
    }
    expect_nothing(io);
}

/* Subscriber side: receive a QoS 2 PUBLISH's remaining flow after reading it. */
void complete_qos2(struct fake_io *io, uint16_t packet_id)
{
    send_ack(io, MQ_PUBREC, packet_id);
    expect_ack(io, MQ_PUBREL, packet_id);
    send_ack(io, MQ_PUBCOMP, packet_id);
}

/* ---- MQTT 5 clients ---- */

void props_init(struct props *pp)
{
    codec_prop_writer_init(&pp->w, pp->buf, sizeof pp->buf);
}

static struct mq_props raw_props(const struct props *pp)
{
    struct mq_props out = {0};
    if (pp) {
        assert_true(codec_prop_writer_ok(&pp->w));
        out.raw = pp->w.len ? pp->buf : NULL;
        out.raw_len = (uint32_t)pp->w.len;
    }
    return out;
}

struct mq_packet connect5_pkt(const char *id, bool clean, uint16_t keepalive, const struct will *w,
                              const struct props *props, const struct props *will_props)
{
    struct mq_packet p = connect_pkt(id, clean, keepalive, w);
    p.version = 5;
    p.u.connect.protocol_level = 5;
    p.props = raw_props(props);
    if (w)
        p.u.connect.will_props = raw_props(will_props);
    return p;
}

struct fake_io *connect5(const char *id, bool clean, uint32_t expiry, bool session_present,
                         struct mq_packet *connack)
{
    struct props pp;
    props_init(&pp);
    if (expiry)
        codec_prop_put_u32(&pp.w, MQ_PROP_SESSION_EXPIRY, expiry);
    struct fake_io *io = io_open();
    struct mq_packet p = connect5_pkt(id, clean, 0, NULL, &pp, NULL);
    send_packet(io, &p);
    struct mq_packet ack = expect_type(io, MQ_CONNACK);
    assert_int_equal(ack.u.connack.return_code, MQ_RC_SUCCESS);
    assert_int_equal(ack.u.connack.session_present, session_present);
    expect_open(io);
    if (connack)
        *connack = ack;
    return io;
}

struct mq_packet expect_type(struct fake_io *io, enum mq_packet_type type)
{
    struct mq_packet p = read_packet(io);
    if (p.type != type)
        fail_msg("expected %s, got %s", codec_type_name(type), codec_type_name(p.type));
    return p;
}

void expect_disconnect(struct fake_io *io, uint8_t reason)
{
    struct mq_packet p = expect_type(io, MQ_DISCONNECT);
    if (p.u.disconnect.reason != reason)
        fail_msg("expected DISCONNECT 0x%02x, got 0x%02x", reason, p.u.disconnect.reason);
    expect_nothing(io);
    expect_close_requested(io);
}

void expect_ack5(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id, uint8_t reason)
{
    struct mq_packet p = expect_type(io, type);
    assert_int_equal(p.u.ack.packet_id, packet_id);
    if (p.u.ack.reason != reason)
        fail_msg("expected %s reason 0x%02x, got 0x%02x", codec_type_name(type), reason,
                 p.u.ack.reason);
}

void send_publish5(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                   bool retain, uint16_t packet_id, const struct props *props)
{
    struct mq_packet p = publish_pkt(topic, payload, qos, retain, packet_id, false);
    p.version = 5;
    p.props = raw_props(props);
    send_packet(io, &p);
}

uint8_t subscribe5(struct fake_io *io, uint16_t packet_id, const char *filter, uint8_t options,
                   uint32_t sub_id)
{
    uint8_t entries[512];
    size_t fl = strlen(filter), len = 0;
    assert_true(fl + 3 <= sizeof entries);
    entries[len++] = (uint8_t)(fl >> 8);
    entries[len++] = (uint8_t)fl;
    memcpy(entries + len, filter, fl);
    len += fl;
    entries[len++] = options;
    struct props pp;
    props_init(&pp);
    if (sub_id)
        codec_prop_put_varint(&pp.w, MQ_PROP_SUBSCRIPTION_ID, sub_id);
    struct mq_packet p = {.type = MQ_SUBSCRIBE, .version = 5};
    p.u.subscribe = (struct mq_topic_list){.packet_id = packet_id,
                                           .count = 1,
                                           .entries = entries,
                                           .entries_len = (uint32_t)len,
                                           .with_qos = true};
    p.props = raw_props(&pp);
    send_packet(io, &p);
    struct mq_packet ack = expect_type(io, MQ_SUBACK);
    assert_int_equal(ack.u.suback.packet_id, packet_id);
    assert_int_equal(ack.u.suback.count, 1);
    return ack.u.suback.codes[0];
}

size_t publish_sub_ids(const struct mq_packet *p, uint32_t *ids, size_t cap)
{
    size_t n = 0;
    struct mq_prop_iter it = codec_prop_iter(p->props.raw, p->props.raw_len);
    struct mq_prop pr;
    while (codec_prop_next(&it, &pr) > 0)
        if (pr.id == MQ_PROP_SUBSCRIPTION_ID && n < cap)
            ids[n++] = pr.num;
    return n;
}

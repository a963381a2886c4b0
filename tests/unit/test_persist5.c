/* test_persist5.c - what MQTT 5 adds to durable state, through the protocol layer over a
 * real store in a temporary directory: a session's expiry, subscription options and
 * identifiers, queued messages with their properties, expiries and Subscription
 * Identifiers, retained properties, and wills waiting for their delay, each carried across
 * a restart (broker freed, store closed and reopened into a new broker whose clock starts
 * elsewhere) and then behaving as before it.
 *
 * The fake sink is a copy of test_proto.c's (every helper static, with the same names as
 * tests/unit/proto_fixture.h on the v5 branch, so this file can switch to that fixture by
 * deleting the copy). Time: each broker has its own clock (now_ms) and a wall offset; the
 * test keeps one wall clock running across restarts, as the server does with the real one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "midge/codec.h"
#include "midge/config.h"
#include "midge/hmap.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/proto.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/store.h"
#include "midge/sub_tree.h"

#define IO_CAP (1u << 18) /* bytes of output one fake connection can capture */
#define MAX_IOS 32
#define T0 1000000u            /* broker clock at the start of every test, in ms */
#define WALL0 1767225600000ull /* the wall clock then: 2026-01-01 00:00:00 UTC */
#define RESTART_CLOCK 50000u   /* a restarted broker's clock starts here */

/* ---- fake sink (copied from test_proto.c) ------------------------------------------ */

struct fake_io {
    struct mq_conn *conn; /* &conn_state; NULL once proto_conn_closed was called */
    struct mq_conn conn_state;
    uint8_t *out;   /* append-only, so decoded packets stay valid for the whole test */
    size_t len, rd; /* bytes written by the broker / consumed by read_packet */
    int close_requests;
    int writes_after_close;
    uint8_t level; /* the dialect of what the broker wrote (its last protocol level) */
};

struct env {
    struct mq_config cfg;
    struct mq_listener_config listener;
    struct mq_listener_ctx lctx;
    struct mq_broker *b;
    struct fake_io ios[MAX_IOS];
    size_t nios;
};
static struct env E;

static char default_prefix[] = "auto-";

static struct fake_io *io_of(struct mq_conn *c)
{
    return (struct fake_io *)((char *)c - offsetof(struct fake_io, conn_state));
}

static void fake_write(struct mq_conn *c, const struct mq_iov *iov, size_t n)
{
    struct fake_io *io = io_of(c);
    io->level = c->protocol_level;
    if (io->close_requests)
        io->writes_after_close++;
    for (size_t i = 0; i < n; i++) {
        assert_true(io->len + iov[i].len <= IO_CAP);
        if (iov[i].len)
            memcpy(io->out + io->len, iov[i].base, iov[i].len);
        io->len += iov[i].len;
    }
}

static void fake_close(struct mq_conn *c)
{
    io_of(c)->close_requests++;
}

static const struct mq_sink_ops fake_sink = {fake_write, fake_close};

static struct fake_io *io_open(void)
{
    assert_true(E.nios < MAX_IOS);
    struct fake_io *io = &E.ios[E.nios++];
    io->out = malloc(IO_CAP);
    assert_non_null(io->out);
    io->conn = &io->conn_state;
    proto_conn_open(io->conn, E.b, &E.lctx, "127.0.0.1:50000");
    return io;
}

static void io_gone(struct fake_io *io, const char *reason)
{
    assert_non_null(io->conn);
    proto_conn_closed(io->conn, reason);
    io->conn = NULL;
}

static const void *test_session_key(const void *session, size_t *len)
{
    const struct mq_session *s = session;
    *len = s->client_id_len;
    return s->client_id;
}

static struct mq_session *find_session(const char *id)
{
    return imap_get(&E.b->sessions, id, strlen(id), test_session_key);
}

static void feed(struct fake_io *io, const uint8_t *buf, size_t len)
{
    size_t used = proto_conn_input(io->conn, buf, len, NULL);
    assert_int_equal(used, len);
}

static void send_packet(struct fake_io *io, const struct mq_packet *p)
{
    uint8_t buf[4096];
    long n = codec_encode(p, buf, sizeof buf);
    assert_true(n > 0);
    feed(io, buf, (size_t)n);
}

static struct mq_bytes str(const char *s)
{
    return (struct mq_bytes){(const uint8_t *)s, (uint16_t)strlen(s)};
}

static struct mq_packet read_packet(struct fake_io *io)
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

static void expect_nothing(struct fake_io *io)
{
    if (io->rd != io->len) {
        struct mq_packet p;
        struct mq_decode_limits lim = {.protocol_level = io->level};
        int n = codec_decode(io->out + io->rd, io->len - io->rd, &lim, &p);
        fail_msg("expected no output, got %zu more bytes (%s)", io->len - io->rd,
                 n > 0 ? codec_type_name(p.type) : "undecodable");
    }
}

static struct mq_packet expect_type(struct fake_io *io, enum mq_packet_type type)
{
    struct mq_packet p = read_packet(io);
    if (p.type != type)
        fail_msg("expected %s, got %s", codec_type_name(type), codec_type_name(p.type));
    return p;
}

/* ---- MQTT 5 clients ------------------------------------------------------------------ */

struct props {
    uint8_t buf[2048];
    struct mq_prop_writer w;
};

static void props_init(struct props *pp)
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

struct will {
    const char *topic, *payload;
    uint8_t qos;
    bool retain;
};

/* An MQTT 5 CONNECT with Session Expiry Interval expiry (0: none sent) and, when w is set,
 * a will with will_props. */
static struct mq_packet connect5_pkt(const char *id, bool clean, uint32_t expiry,
                                     const struct will *w, const struct props *will_props,
                                     struct props *pp)
{
    struct mq_packet p = {.type = MQ_CONNECT, .version = 5};
    struct mq_connect *c = &p.u.connect;
    c->protocol_level = 5;
    c->clean_session = clean;
    c->client_id = str(id);
    props_init(pp);
    if (expiry)
        codec_prop_put_u32(&pp->w, MQ_PROP_SESSION_EXPIRY, expiry);
    p.props = raw_props(pp);
    if (w) {
        c->will_flag = true;
        c->will_topic = str(w->topic);
        c->will_payload = str(w->payload);
        c->will_qos = w->qos;
        c->will_retain = w->retain;
        c->will_props = raw_props(will_props);
    }
    return p;
}

/* Connect (MQTT 5) and check the CONNACK accepts with session present as given. */
static struct fake_io *connect5_will(const char *id, bool clean, uint32_t expiry,
                                     const struct will *w, const struct props *will_props,
                                     bool session_present)
{
    struct props pp;
    struct fake_io *io = io_open();
    struct mq_packet p = connect5_pkt(id, clean, expiry, w, will_props, &pp);
    send_packet(io, &p);
    struct mq_packet ack = expect_type(io, MQ_CONNACK);
    assert_int_equal(ack.u.connack.return_code, MQ_RC_SUCCESS);
    if (ack.u.connack.session_present != session_present)
        fail_msg("client %s: expected session present %d", id, session_present);
    assert_int_equal(io->close_requests, 0);
    return io;
}

static struct fake_io *connect5(const char *id, bool clean, uint32_t expiry, bool session_present)
{
    return connect5_will(id, clean, expiry, NULL, NULL, session_present);
}

static void send_publish5(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                          bool retain, uint16_t packet_id, const struct props *props)
{
    struct mq_packet p = {.type = MQ_PUBLISH, .version = 5};
    p.u.publish = (struct mq_publish){.qos = qos,
                                      .retain = retain,
                                      .topic = str(topic),
                                      .packet_id = packet_id,
                                      .payload = (const uint8_t *)payload,
                                      .payload_len = (uint32_t)strlen(payload)};
    p.props = raw_props(props);
    send_packet(io, &p);
}

static void send_ack5(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id)
{
    struct mq_packet p = {.type = type, .version = 5};
    p.u.ack.packet_id = packet_id;
    send_packet(io, &p);
}

/* ---- the store --------------------------------------------------------------------- */

static char store_dir[64];
static struct mq_store *store;

static void store_attach(uint64_t wall_ms)
{
    char path[128];
    snprintf(path, sizeof path, "%s/midge.db", store_dir);
    struct mq_store_options o = {.durability = MQ_STORE_DURABILITY_ACK};
    store = store_open(path, &o, NULL, NULL);
    assert_non_null(store);
    assert_int_equal(broker_store_attach(E.b, store, true, (int64_t)wall_ms - (int64_t)E.b->now_ms),
                     0);
}

/* The wall clock as the broker sees it. */
static uint64_t wall_now(void)
{
    return (uint64_t)((int64_t)E.b->now_ms + E.b->wall_offset_ms);
}

static int setup(void **state)
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
    if (!E.b)
        return -1;
    snprintf(store_dir, sizeof(store_dir), "/tmp/midge-test-persist5-XXXXXX");
    if (!mkdtemp(store_dir))
        return -1;
    store_attach(WALL0);
    return 0;
}

static void remove_store_files(void)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    char path[160];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/midge.db%s", store_dir, suffixes[i]);
        unlink(path);
    }
    rmdir(store_dir);
}

static int teardown(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < E.nios; i++) {
        struct fake_io *io = &E.ios[i];
        if (io->conn)
            proto_conn_closed(io->conn, "test over");
        if (io->writes_after_close || io->close_requests > 1) {
            fprintf(stderr, "io %zu: %d writes after close, %d close requests\n", i,
                    io->writes_after_close, io->close_requests);
            bad = 1;
        }
        free(io->out);
    }
    broker_store_flush(E.b);
    broker_free(E.b);
    store_close(store);
    config_free(&E.cfg);
    remove_store_files();
    return bad ? -1 : 0;
}

/* What the server does at the end of a loop turn, then waits for the disk. */
static void commit_all(void)
{
    broker_store_flush(E.b);
    for (int i = 0; i < 5000 && store_committed(store) < E.b->store_issued; i++)
        usleep(1000);
    assert_true(store_committed(store) >= E.b->store_issued);
    broker_store_committed(E.b);
}

/* Let ms pass on the broker's clock (and so on the wall clock), with a tick. */
static void advance(uint64_t ms)
{
    E.b->now_ms += ms;
    broker_tick(E.b);
    commit_all();
}

/* A crash and restart `down_ms` later: every connection gone without a word, the broker
 * freed (a SIGKILL publishes no will and writes nothing more: only what was committed
 * counts), the store reopened into a new broker whose clock starts at RESTART_CLOCK. */
static void restart(uint64_t down_ms)
{
    uint64_t wall = wall_now() + down_ms;
    commit_all();
    for (size_t i = 0; i < E.nios; i++) {
        if (E.ios[i].conn)
            proto_conn_closed(E.ios[i].conn, "restart");
        free(E.ios[i].out);
    }
    memset(E.ios, 0, sizeof(E.ios));
    E.nios = 0;
    /* What the closes changed (offline sessions, delayed wills) is committed, as the
     * server's last turn does before it stops. Then the broker goes without the store, as
     * in the server (store_stop detaches it first): freeing sessions records nothing. */
    commit_all();
    E.b->store = NULL;
    broker_free(E.b);
    store_close(store);
    E.b = broker_new(&E.cfg, &fake_sink, RESTART_CLOCK);
    assert_non_null(E.b);
    store_attach(wall);
}

/* SUBSCRIBE of one filter with options and a Subscription Identifier (0: none) from a
 * persistent session: the SUBACK waits for the commit (durability ack). */
static void subscribe5(struct fake_io *io, uint16_t packet_id, const char *filter, uint8_t options,
                       uint32_t sub_id)
{
    uint8_t entries[512];
    size_t fl = strlen(filter), len = 0;
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
    expect_nothing(io);
    commit_all();
    struct mq_packet ack = expect_type(io, MQ_SUBACK);
    assert_int_equal(ack.u.suback.packet_id, packet_id);
    assert_int_equal(ack.u.suback.count, 1);
    assert_int_equal(ack.u.suback.codes[0], MQ_SUB_QOS(options));
}

/* A QoS 1 publish from an MQTT 5 client, acknowledged once committed. */
static void publish5(struct fake_io *io, const char *topic, const char *payload, bool retain,
                     uint16_t packet_id, const struct props *props)
{
    send_publish5(io, topic, payload, 1, retain, packet_id, props);
    commit_all();
    struct mq_packet ack = expect_type(io, MQ_PUBACK);
    assert_int_equal(ack.u.ack.packet_id, packet_id);
}

/* What a received PUBLISH carried. */
struct got {
    struct mq_packet p;
    uint32_t sub_ids[8];
    size_t n_sub_ids;
    char content_type[64];
    char user[128]; /* "name=value;..." */
    uint32_t expiry;
    bool has_expiry;
    uint32_t correlation_len;
};

/* The next packet must be a PUBLISH on topic with payload; its properties are returned. */
static struct got expect_publish5(struct fake_io *io, const char *topic, const char *payload,
                                  uint8_t qos, bool retain)
{
    struct got g = {.p = expect_type(io, MQ_PUBLISH)};
    const struct mq_publish *pub = &g.p.u.publish;
    if (pub->topic.len != strlen(topic) || memcmp(pub->topic.ptr, topic, pub->topic.len))
        fail_msg("expected PUBLISH on %s, got %.*s", topic, (int)pub->topic.len,
                 (const char *)pub->topic.ptr);
    if (pub->payload_len != strlen(payload) || memcmp(pub->payload, payload, pub->payload_len))
        fail_msg("PUBLISH %s: expected payload %s, got %.*s", topic, payload, (int)pub->payload_len,
                 (const char *)pub->payload);
    assert_int_equal(pub->qos, qos);
    if (pub->retain != retain)
        fail_msg("PUBLISH %s: expected retain %d", topic, retain);
    struct mq_prop_iter it = codec_prop_iter(g.p.props.raw, g.p.props.raw_len);
    struct mq_prop pr;
    size_t used = 0;
    while (codec_prop_next(&it, &pr) > 0) {
        switch (pr.id) {
        case MQ_PROP_SUBSCRIPTION_ID:
            if (g.n_sub_ids < 8)
                g.sub_ids[g.n_sub_ids++] = pr.num;
            break;
        case MQ_PROP_CONTENT_TYPE:
            snprintf(g.content_type, sizeof g.content_type, "%.*s", (int)pr.str.len,
                     (const char *)pr.str.ptr);
            break;
        case MQ_PROP_USER:
            used += (size_t)snprintf(g.user + used, sizeof g.user - used, "%.*s=%.*s;",
                                     (int)pr.str.len, (const char *)pr.str.ptr, (int)pr.value.len,
                                     (const char *)pr.value.ptr);
            break;
        case MQ_PROP_MESSAGE_EXPIRY:
            g.has_expiry = true;
            g.expiry = pr.num;
            break;
        case MQ_PROP_CORRELATION_DATA: g.correlation_len = pr.str.len; break;
        default: break;
        }
    }
    return g;
}

/* The retained message on topic (borrowed), or NULL. */
static void found_one(void *ctx, struct mq_msg *m)
{
    *(struct mq_msg **)ctx = m;
}

static const struct mq_msg *retained(const char *topic)
{
    struct mq_msg *m = NULL;
    retain_match(E.b->retained, (const uint8_t *)topic, strlen(topic), found_one, &m);
    return m;
}

/* ---- tests ------------------------------------------------------------------------- */

/* An MQTT 5 session with a Session Expiry Interval of 120 s, subscriptions with options
 * and identifiers, and QoS 1 messages with properties queued for it survive a crash: at an
 * MQTT 5 reconnect the messages arrive in order with their properties, the remaining
 * Message Expiry Interval and the Subscription Identifier of the subscription they matched;
 * one whose expiry passed while the broker was down is dropped and counted; No Local and
 * Retain As Published still apply. */
static void test_persist5_session_restored(void **state)
{
    (void)state;
    struct fake_io *sub = connect5("v5sub", true, 120, false);
    subscribe5(sub, 1, "m/#", 1 | MQ_SUB_NO_LOCAL | MQ_SUB_RETAIN_AS_PUBLISHED,
               MQ_GRANT_SUB_ID_MAX);
    subscribe5(sub, 2, "n/+", 1, 7);
    io_gone(sub, "gone");
    commit_all();

    struct fake_io *pub = connect5("pub5", true, 0, false);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u8(&pp.w, MQ_PROP_PAYLOAD_FORMAT, 1);
    codec_prop_put_bytes(&pp.w, MQ_PROP_CONTENT_TYPE, "text/plain", 10);
    codec_prop_put_pair(&pp.w, "k", 1, "v", 1);
    codec_prop_put_pair(&pp.w, "seq", 3, "1", 1);
    codec_prop_put_u32(&pp.w, MQ_PROP_MESSAGE_EXPIRY, 3600);
    publish5(pub, "m/1", "one", false, 1, &pp);
    struct props big;
    props_init(&big);
    uint8_t corr[300];
    for (size_t i = 0; i < sizeof corr; i++)
        corr[i] = (uint8_t)i;
    codec_prop_put_bytes(&big.w, MQ_PROP_CORRELATION_DATA, corr, sizeof corr);
    publish5(pub, "n/2", "two", false, 2, &big);
    struct props brief;
    props_init(&brief);
    codec_prop_put_u32(&brief.w, MQ_PROP_MESSAGE_EXPIRY, 20);
    publish5(pub, "m/3", "short-lived", false, 3, &brief);
    publish5(pub, "m/4", "retained", true, 4, NULL);
    struct mq_session *s = find_session("v5sub");
    assert_non_null(s);
    assert_int_equal(session_queue_count(s), 4);

    restart(30000); /* 30 s down: m/3 (20 s) expired meanwhile, m/1 (3600 s) did not */
    s = find_session("v5sub");
    assert_non_null(s);
    assert_int_equal(session_expiry(s), 120);
    assert_int_equal(session_queue_count(s), 4); /* loaded, expired one included */
    assert_null(find_session("pub5"));           /* its session ended with it */

    sub = connect5("v5sub", false, 120, true);
    commit_all(); /* each PUBLISH to a persistent session waits for its "sent" state */
    struct got g = expect_publish5(sub, "m/1", "one", 1, false);
    assert_int_equal(g.n_sub_ids, 1);
    assert_int_equal(g.sub_ids[0], MQ_GRANT_SUB_ID_MAX);
    assert_string_equal(g.content_type, "text/plain");
    assert_string_equal(g.user, "k=v;seq=1;");
    assert_true(g.has_expiry);
    assert_in_range(g.expiry, 3560, 3571); /* 3600 less the 30 s down (and a few in between) */
    send_ack5(sub, MQ_PUBACK, g.p.u.publish.packet_id);
    g = expect_publish5(sub, "n/2", "two", 1, false);
    assert_int_equal(g.n_sub_ids, 1);
    assert_int_equal(g.sub_ids[0], 7);
    assert_int_equal(g.correlation_len, 300);
    assert_false(g.has_expiry);
    send_ack5(sub, MQ_PUBACK, g.p.u.publish.packet_id);
    commit_all();
    /* m/3 expired while the broker was down: never sent, counted, deleted from the store. */
    g = expect_publish5(sub, "m/4", "retained", 1, true); /* Retain As Published */
    assert_int_equal(E.b->stats.msgs_expired, 1);
    send_ack5(sub, MQ_PUBACK, g.p.u.publish.packet_id);
    commit_all();
    expect_nothing(sub);

    /* No Local survived: its own message on m/# does not come back, n/+ ones do. */
    send_publish5(sub, "m/self", "mine", 1, false, 9, NULL);
    commit_all();
    struct mq_packet ack = expect_type(sub, MQ_PUBACK);
    assert_int_equal(ack.u.ack.packet_id, 9);
    expect_nothing(sub);

    /* Everything was acknowledged: a second restart brings back the session, no message. */
    restart(1000);
    s = find_session("v5sub");
    assert_non_null(s);
    assert_int_equal(session_queue_count(s) + session_inflight_count(s), 0);
    assert_int_equal(session_expiry(s), 120);
}

/* A message in flight when the broker crashed is resent with DUP, its properties and its
 * Subscription Identifiers, under the same packet id. */
static void test_persist5_inflight_resent(void **state)
{
    (void)state;
    struct fake_io *sub = connect5("inflight", true, 600, false);
    subscribe5(sub, 1, "a/#", 1, 11);
    subscribe5(sub, 2, "a/+", 1, 12); /* overlapping: both identifiers travel */
    struct fake_io *pub = connect5("p", true, 0, false);
    struct props pp;
    props_init(&pp);
    codec_prop_put_pair(&pp.w, "trace", 5, "abc", 3);
    publish5(pub, "a/b", "payload", false, 1, &pp);
    struct got g = expect_publish5(sub, "a/b", "payload", 1, false);
    uint16_t pid = g.p.u.publish.packet_id;
    assert_int_equal(g.n_sub_ids, 2);
    /* No PUBACK: the broker crashes. */
    restart(2000);
    sub = connect5("inflight", false, 600, true);
    commit_all();
    g = expect_publish5(sub, "a/b", "payload", 1, false);
    assert_true(g.p.u.publish.dup);
    assert_int_equal(g.p.u.publish.packet_id, pid);
    assert_string_equal(g.user, "trace=abc;");
    assert_int_equal(g.n_sub_ids, 2);
    assert_true((g.sub_ids[0] == 11 && g.sub_ids[1] == 12) ||
                (g.sub_ids[0] == 12 && g.sub_ids[1] == 11));
    send_ack5(sub, MQ_PUBACK, pid);
    commit_all();
    expect_nothing(sub);
}

/* A will waiting for its Will Delay Interval when the broker crashed waits for what is left
 * of it after the restart, then goes out (to a persistent subscriber, with its
 * properties); one cancelled by the client's return stays cancelled. */
static void test_persist5_will_waits_across_restart(void **state)
{
    (void)state;
    struct fake_io *watcher = connect5("watcher", true, 3600, false);
    subscribe5(watcher, 1, "status/#", 1, 5);
    io_gone(watcher, "away");

    struct props wp;
    props_init(&wp);
    codec_prop_put_u32(&wp.w, MQ_PROP_WILL_DELAY, 30);
    codec_prop_put_pair(&wp.w, "why", 3, "lost", 4);
    codec_prop_put_bytes(&wp.w, MQ_PROP_CONTENT_TYPE, "text/plain", 10);
    struct will w = {"status/dev", "offline", 1, true};
    struct fake_io *dev = connect5_will("dev", true, 300, &w, &wp, false);
    struct will w2 = {"status/back", "offline", 1, false};
    struct fake_io *back = connect5_will("back", true, 300, &w2, &wp, false);
    io_gone(dev, "connection lost"); /* no DISCONNECT: the will waits 30 s */
    io_gone(back, "connection lost");
    commit_all();
    assert_true(find_session("dev")->will_pending);

    restart(10000); /* down 10 s: 20 s left */
    struct mq_session *s = find_session("dev");
    assert_non_null(s);
    assert_true(s->will_pending);
    assert_true(find_session("back")->will_pending);
    /* "back" returns in time: its will is cancelled, durably. */
    back = connect5("back", false, 300, true);
    assert_false(find_session("back")->will_pending);
    io_gone(back, "away again, without a will this time");
    advance(19000);
    assert_true(find_session("dev")->will_pending);
    restart(0); /* and once more, at 19 s of the 20 */
    assert_true(find_session("dev")->will_pending);
    assert_false(find_session("back")->will_pending);
    advance(500);
    assert_true(find_session("dev")->will_pending); /* never earlier than promised */
    advance(1000);
    assert_false(find_session("dev")->will_pending);
    assert_non_null(retained("status/dev"));

    watcher = connect5("watcher", false, 3600, true);
    commit_all();
    struct got g = expect_publish5(watcher, "status/dev", "offline", 1, false);
    assert_int_equal(g.n_sub_ids, 1);
    assert_int_equal(g.sub_ids[0], 5);
    assert_string_equal(g.user, "why=lost;");
    assert_string_equal(g.content_type, "text/plain");
    send_ack5(watcher, MQ_PUBACK, g.p.u.publish.packet_id);
    commit_all();
    expect_nothing(watcher); /* nothing from "back" */

    /* Published, so gone from the store: a later restart does not send it again. */
    restart(60000);
    assert_false(find_session("dev")->will_pending);
    advance(1000);
    expect_nothing(watcher);
}

/* A will whose delay ran out while the broker was down goes out at the first tick. */
static void test_persist5_will_due_during_downtime(void **state)
{
    (void)state;
    struct fake_io *watcher = connect5("watcher", true, 3600, false);
    subscribe5(watcher, 1, "status/#", 1, 0);
    io_gone(watcher, "away");
    struct props wp;
    props_init(&wp);
    codec_prop_put_u32(&wp.w, MQ_PROP_WILL_DELAY, 5);
    struct will w = {"status/dev", "offline", 1, false};
    struct fake_io *dev = connect5_will("dev", true, 300, &w, &wp, false);
    io_gone(dev, "connection lost");
    restart(60000);
    assert_true(find_session("dev")->will_pending);
    advance(0);
    assert_false(find_session("dev")->will_pending);
    watcher = connect5("watcher", false, 3600, true);
    commit_all();
    struct got g = expect_publish5(watcher, "status/dev", "offline", 1, false);
    assert_int_equal(g.n_sub_ids, 0);
}

/* The Session Expiry Interval counts across a restart from when the client left, and an
 * expired session publishes its pending will and leaves the store. */
static void test_persist5_session_expires_after_restart(void **state)
{
    (void)state;
    struct fake_io *watcher = connect5("watcher", true, 3600, false);
    subscribe5(watcher, 1, "status/#", 1, 0);
    io_gone(watcher, "away");
    struct props wp;
    props_init(&wp);
    codec_prop_put_u32(&wp.w, MQ_PROP_WILL_DELAY, 600); /* longer than the session */
    struct will w = {"status/short", "expired", 1, false};
    struct fake_io *c = connect5_will("short", true, 120, &w, &wp, false);
    subscribe5(c, 1, "x", 1, 0);
    io_gone(c, "gone");
    commit_all();

    restart(60000); /* 60 s of 120 gone while down */
    assert_non_null(find_session("short"));
    advance(59000);
    assert_non_null(find_session("short"));
    advance(2000);
    assert_null(find_session("short")); /* 121 s: expired, its will published */
    assert_true(E.b->stats.clients_expired == 1);
    restart(1000);
    assert_null(find_session("short")); /* and deleted from the store */
    watcher = connect5("watcher", false, 3600, true);
    commit_all();
    struct got g = expect_publish5(watcher, "status/short", "expired", 1, false);
    send_ack5(watcher, MQ_PUBACK, g.p.u.publish.packet_id);
    commit_all();
    expect_nothing(watcher);
}

/* A persistent session that a later connection (or its DISCONNECT) turns into one that
 * ends with its connection (Session Expiry Interval 0) must not come back after a restart. */
static void test_persist5_expiry_zero_forgets(void **state)
{
    (void)state;
    struct fake_io *c = connect5("fickle", true, 120, false);
    subscribe5(c, 1, "t", 1, 0);
    io_gone(c, "gone");
    c = connect5("fickle", false, 0, true); /* resumed, now with expiry 0 */
    io_gone(c, "gone");
    assert_null(find_session("fickle"));

    struct fake_io *d = connect5("onoff", true, 120, false);
    subscribe5(d, 1, "t", 1, 0);
    struct props pp;
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_SESSION_EXPIRY, 0);
    struct mq_packet p = {.type = MQ_DISCONNECT, .version = 5};
    p.props = raw_props(&pp);
    send_packet(d, &p);
    io_gone(d, "closed");
    assert_null(find_session("onoff"));

    restart(1000);
    assert_null(find_session("fickle"));
    assert_null(find_session("onoff"));
}

/* A retained message keeps its properties and its expiry across a restart; one that
 * expired while the broker was down is dropped at load, and from the store. */
static void test_persist5_retained(void **state)
{
    (void)state;
    struct fake_io *pub = connect5("pub", true, 0, false);
    struct props pp;
    props_init(&pp);
    codec_prop_put_pair(&pp.w, "unit", 4, "C", 1);
    codec_prop_put_u32(&pp.w, MQ_PROP_MESSAGE_EXPIRY, 100);
    publish5(pub, "temp/long", "21.5", true, 1, &pp);
    props_init(&pp);
    codec_prop_put_u32(&pp.w, MQ_PROP_MESSAGE_EXPIRY, 10);
    publish5(pub, "temp/brief", "19", true, 2, &pp);

    restart(30000);
    assert_null(retained("temp/brief"));
    const struct mq_msg *m = retained("temp/long");
    assert_non_null(m);
    assert_true(m->props_len > 0);
    struct fake_io *late = connect5("late", true, 0, false);
    uint8_t entries[] = {0, 6, 't', 'e', 'm', 'p', '/', '#', 1};
    struct mq_packet p = {.type = MQ_SUBSCRIBE, .version = 5};
    p.u.subscribe = (struct mq_topic_list){.packet_id = 3,
                                           .count = 1,
                                           .entries = entries,
                                           .entries_len = sizeof entries,
                                           .with_qos = true};
    send_packet(late, &p);
    expect_type(late, MQ_SUBACK);
    struct got g = expect_publish5(late, "temp/long", "21.5", 1, true);
    assert_string_equal(g.user, "unit=C;");
    assert_true(g.has_expiry);
    assert_in_range(g.expiry, 60, 70); /* 100 s less the 30 s down */
    send_ack5(late, MQ_PUBACK, g.p.u.publish.packet_id);
    expect_nothing(late);

    restart(1000); /* the expired one is gone from the store, not only from memory */
    assert_null(retained("temp/brief"));
    assert_non_null(retained("temp/long"));
}

int main(void)
{
    /* Keep the output readable: errors and warnings only, unless asked for more. */
    struct mq_log_options lo = log_default_options();
    lo.types = MQ_LOG_ERR | MQ_LOG_WARNING;
    if (getenv("MIDGE_TEST_LOG"))
        lo.types = MQ_LOG_ALL_TYPES;
    log_configure(&lo);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_persist5_session_restored),
        T(test_persist5_inflight_resent),
        T(test_persist5_will_waits_across_restart),
        T(test_persist5_will_due_during_downtime),
        T(test_persist5_session_expires_after_restart),
        T(test_persist5_expiry_zero_forgets),
        T(test_persist5_retained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

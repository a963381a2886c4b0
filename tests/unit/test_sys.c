/* test_sys.c - the $SYS publisher and the Prometheus text (src/proto/sys.c), driven
 * through whole MQTT conversations over a fake sink, as in test_proto.c.
 *
 * Clients are built with codec_encode and fed to proto_conn_input; the broker's output
 * is decoded with codec_decode. A monitor client subscribes to "$SYS/#" and the values
 * it receives are checked; the broker clock (now_ms) is advanced by hand, so uptime,
 * rates and load averages are exact. ASan checks that every message is released.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "midge/codec.h"
#include "midge/config.h"
#include "midge/log.h"
#include "midge/proto.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/sys.h"

#define IO_CAP (1u << 18) /* bytes of output one fake connection can capture */
#define MAX_IOS 16
#define T0 1000000u /* broker clock at the start of every test, in ms */
#define MAX_SEEN 128

/* ---- fake sink ---------------------------------------------------------------------- */

struct fake_io {
    struct mq_conn *conn; /* &conn_state; NULL once proto_conn_closed was called */
    struct mq_conn conn_state;
    uint8_t *out;   /* append-only, so decoded packets stay valid for the whole test */
    size_t len, rd; /* bytes written by the broker / consumed by the test */
    int close_requests;
};

static struct env {
    struct mq_config cfg;
    struct mq_listener_config listener;
    struct mq_listener_ctx lctx; /* what the server would hand proto: settings + security */
    struct mq_broker *b;
    struct mq_sys sys;
    struct fake_io ios[MAX_IOS];
    size_t nios;
} E;

static char default_prefix[] = "auto-";

/* The fake io whose conn_state proto names (as client.c does with container_of). */
static struct fake_io *io_of(struct mq_conn *c)
{
    return (struct fake_io *)((char *)c - offsetof(struct fake_io, conn_state));
}

static void fake_write(struct mq_conn *c, const struct mq_iov *iov, size_t n)
{
    struct fake_io *io = io_of(c);
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

static const struct mq_sink_ops fake_sink = {fake_write, fake_close};

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
    sys_init(&E.sys, E.b);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < E.nios; i++) {
        if (E.ios[i].conn)
            proto_conn_closed(E.ios[i].conn, "test over");
        free(E.ios[i].out);
    }
    broker_free(E.b);
    config_free(&E.cfg);
    return 0;
}

/* ---- client side -------------------------------------------------------------------- */

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

static void io_gone(struct fake_io *io)
{
    proto_conn_closed(io->conn, "peer closed");
    io->conn = NULL;
}

static void send_packet(struct fake_io *io, const struct mq_packet *p)
{
    uint8_t buf[1024];
    long n = codec_encode(p, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(proto_conn_input(io->conn, buf, (size_t)n, NULL), (size_t)n);
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
    int n = codec_decode(io->out + io->rd, io->len - io->rd, NULL, &p);
    if (n <= 0)
        fail_msg("broker output does not decode (%d) at offset %zu", n, io->rd);
    io->rd += (size_t)n;
    return p;
}

static void expect_nothing(struct fake_io *io)
{
    if (io->rd != io->len)
        fail_msg("expected no output, got %zu more bytes", io->len - io->rd);
}

static struct fake_io *connect_client(const char *id, bool clean)
{
    struct fake_io *io = io_open();
    struct mq_packet p = {.type = MQ_CONNECT};
    p.u.connect.protocol_level = 4;
    p.u.connect.clean_session = clean;
    p.u.connect.client_id = str(id);
    send_packet(io, &p);
    struct mq_packet ack = read_packet(io);
    assert_int_equal(ack.type, MQ_CONNACK);
    assert_int_equal(ack.u.connack.return_code, 0);
    return io;
}

static void subscribe(struct fake_io *io, const char *filter, uint8_t qos)
{
    uint8_t entries[256];
    size_t fl = strlen(filter);
    entries[0] = (uint8_t)(fl >> 8);
    entries[1] = (uint8_t)fl;
    memcpy(entries + 2, filter, fl);
    entries[2 + fl] = qos;
    struct mq_packet p = {.type = MQ_SUBSCRIBE};
    p.u.subscribe = (struct mq_topic_list){.packet_id = 1,
                                           .count = 1,
                                           .entries = entries,
                                           .entries_len = (uint32_t)(fl + 3),
                                           .with_qos = true};
    send_packet(io, &p);
    assert_int_equal(read_packet(io).type, MQ_SUBACK);
}

/* Publish (QoS 0 or 1) and consume the PUBACK. */
static void publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                    bool retain)
{
    static uint16_t next_id = 1;
    struct mq_packet p = {.type = MQ_PUBLISH};
    p.u.publish = (struct mq_publish){.qos = qos,
                                      .retain = retain,
                                      .topic = str(topic),
                                      .packet_id = qos ? next_id++ : 0,
                                      .payload = (const uint8_t *)payload,
                                      .payload_len = (uint32_t)strlen(payload)};
    send_packet(io, &p);
    if (qos)
        assert_int_equal(read_packet(io).type, MQ_PUBACK);
}

/* ---- what the monitor saw ----------------------------------------------------------- */

struct seen {
    size_t n; /* PUBLISH packets read */
    struct {
        char topic[96];
        char payload[64];
        bool retain;
        uint8_t qos;
    } items[MAX_SEEN];
};

/* Read every pending packet of io; all must be PUBLISH. */
static void drain(struct fake_io *io, struct seen *out)
{
    memset(out, 0, sizeof(*out));
    while (io->rd < io->len) {
        struct mq_packet p = read_packet(io);
        assert_int_equal(p.type, MQ_PUBLISH);
        assert_true(out->n < MAX_SEEN);
        const struct mq_publish *pub = &p.u.publish;
        assert_true(pub->topic.len < sizeof(out->items[0].topic));
        assert_true(pub->payload_len < sizeof(out->items[0].payload));
        memcpy(out->items[out->n].topic, pub->topic.ptr, pub->topic.len);
        memcpy(out->items[out->n].payload, pub->payload, pub->payload_len);
        out->items[out->n].retain = pub->retain;
        out->items[out->n].qos = pub->qos;
        out->n++;
    }
}

/* Last payload seen on $SYS/broker/<topic>, or NULL. */
static const char *val(const struct seen *s, const char *topic)
{
    char full[128];
    snprintf(full, sizeof(full), "$SYS/broker/%s", topic);
    const char *v = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].topic, full) == 0)
            v = s->items[i].payload;
    return v;
}

static void expect_val(const struct seen *s, const char *topic, const char *want)
{
    const char *v = val(s, topic);
    if (!v)
        fail_msg("no PUBLISH on $SYS/broker/%s", topic);
    if (strcmp(v, want) != 0)
        fail_msg("$SYS/broker/%s: expected \"%s\", got \"%s\"", topic, want, v);
}

static double num(const struct seen *s, const char *topic)
{
    const char *v = val(s, topic);
    if (!v)
        fail_msg("no PUBLISH on $SYS/broker/%s", topic);
    return strtod(v, NULL);
}

static void advance(uint64_t ms)
{
    E.b->now_ms += ms;
}

static struct fake_io *monitor(void)
{
    struct fake_io *mon = connect_client("monitor", true);
    subscribe(mon, "$SYS/#", 0);
    return mon;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_first_update(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    struct fake_io *all = connect_client("everything", true);
    subscribe(all, "#", 0);
    advance(10000);
    sys_update(&E.sys, E.b);

    struct seen s;
    drain(mon, &s);
    expect_val(&s, "version", "midge " MIDGE_VERSION);
    expect_val(&s, "uptime", "10 seconds");
    expect_val(&s, "clients/connected", "2");
    expect_val(&s, "clients/disconnected", "0");
    expect_val(&s, "clients/total", "2");
    expect_val(&s, "sessions/count", "2");
    expect_val(&s, "clients/maximum", "2");
    expect_val(&s, "clients/expired", "0");
    expect_val(&s, "subscriptions/count", "2");
    expect_val(&s, "retained messages/count", "0");
    expect_val(&s, "store/messages/count", "0");
    expect_val(&s, "messages/stored", "0");
    expect_val(&s, "messages/queued", "0");
    expect_val(&s, "messages/inflight", "0");
    expect_val(&s, "publish/messages/received", "0");
    expect_val(&s, "publish/messages/dropped", "0");
    /* Two CONNECTs and two SUBSCRIBEs; their two CONNACKs and two SUBACKs. */
    expect_val(&s, "messages/received", "4");
    expect_val(&s, "messages/sent", "4");
    assert_non_null(val(&s, "bytes/received"));
    assert_non_null(val(&s, "bytes/sent"));
    assert_non_null(val(&s, "publish/rate/received"));
    assert_non_null(val(&s, "publish/rate/sent"));
    const char *loads[] = {"messages/received", "messages/sent", "publish/dropped",
                           "publish/received",  "publish/sent",  "bytes/received",
                           "bytes/sent",        "sockets",       "connections"};
    const char *windows[] = {"1min", "5min", "15min"};
    for (size_t i = 0; i < 9; i++) {
        for (size_t w = 0; w < 3; w++) {
            char topic[64];
            snprintf(topic, sizeof(topic), "load/%s/%s", loads[i], windows[w]);
            assert_non_null(val(&s, topic));
        }
    }
    /* Heap figures exist where the allocator tells (glibc without ASan), both or neither. */
    if (val(&s, "heap/current"))
        assert_true(num(&s, "heap/maximum") >= num(&s, "heap/current"));
    else
        assert_null(val(&s, "heap/maximum"));
    /* Live delivery clears the retain flag ([MQTT-3.3.1-9]); $SYS is QoS 0. */
    for (size_t i = 0; i < s.n; i++) {
        assert_false(s.items[i].retain);
        assert_int_equal(s.items[i].qos, 0);
        assert_memory_equal(s.items[i].topic, "$SYS/broker/", 12);
    }
    /* '#' never matches a '$' topic ([MQTT-4.7.2-1]). */
    expect_nothing(all);
    /* Everything went to the retained store. */
    assert_int_equal(retain_count(E.b->retained), s.n);
}

static void test_only_changes_are_republished(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    struct seen s;
    advance(10000);
    sys_update(&E.sys, E.b);
    drain(mon, &s);
    expect_val(&s, "clients/connected", "1");
    /* The $SYS topics are retained messages too (as in Mosquitto): they count from the
     * next update on. */
    size_t sys_retained = retain_count(E.b->retained);

    /* Nothing happened but time passing: uptime changes; the version is static. The
     * monitor's own $SYS traffic moves the sent counters, so those come too. */
    advance(10000);
    sys_update(&E.sys, E.b);
    drain(mon, &s);
    expect_val(&s, "uptime", "20 seconds");
    assert_null(val(&s, "version"));
    assert_null(val(&s, "clients/connected"));
    assert_null(val(&s, "subscriptions/count"));
    assert_null(val(&s, "messages/received"));
    assert_non_null(val(&s, "messages/sent"));

    struct fake_io *a = connect_client("a", true);
    struct fake_io *b = connect_client("b", true);
    subscribe(b, "sensors/#", 1);
    publish(a, "sensors/t", "21.5", 1, true);
    publish(a, "sensors/h", "40", 0, false);
    read_packet(b);
    read_packet(b);
    advance(10000);
    sys_update(&E.sys, E.b);
    drain(mon, &s);
    expect_val(&s, "uptime", "30 seconds");
    expect_val(&s, "clients/connected", "3");
    expect_val(&s, "clients/total", "3");
    expect_val(&s, "clients/maximum", "3");
    expect_val(&s, "subscriptions/count", "2");
    char retained[24];
    snprintf(retained, sizeof(retained), "%zu", sys_retained + 1);
    expect_val(&s, "retained messages/count", retained);
    expect_val(&s, "publish/messages/received", "2");
    /* b's QoS 1 message is unacknowledged: in flight and held. */
    expect_val(&s, "messages/inflight", "1");
    expect_val(&s, "messages/queued", "1");
    snprintf(retained, sizeof(retained), "%zu", sys_retained + 2);
    expect_val(&s, "store/messages/count", retained); /* retained ones + b's in flight */
    /* 2 PUBLISH received in 10 s. */
    expect_val(&s, "publish/rate/received", "0.20");

    /* A client leaving shows up too; maximum stays. */
    io_gone(a);
    advance(10000);
    sys_update(&E.sys, E.b);
    drain(mon, &s);
    expect_val(&s, "clients/connected", "2");
    assert_null(val(&s, "clients/maximum"));
    expect_nothing(b);
}

static void test_retained_for_late_subscribers(void **state)
{
    (void)state;
    struct fake_io *a = connect_client("a", true);
    advance(5000);
    sys_update(&E.sys, E.b);

    /* A subscriber arriving between updates gets the retained values at once. */
    struct fake_io *late = connect_client("late", true);
    subscribe(late, "$SYS/broker/clients/connected", 0);
    struct mq_packet p = read_packet(late);
    assert_int_equal(p.type, MQ_PUBLISH);
    assert_true(p.u.publish.retain);
    assert_int_equal(p.u.publish.payload_len, 1);
    assert_memory_equal(p.u.publish.payload, "1", 1);
    expect_nothing(late);

    /* '#' does not bring them back either. */
    subscribe(a, "#", 0);
    expect_nothing(a);
    subscribe(a, "$SYS/broker/+", 0);
    struct seen s;
    drain(a, &s);
    assert_non_null(val(&s, "version"));
    assert_non_null(val(&s, "uptime"));
    for (size_t i = 0; i < s.n; i++)
        assert_true(s.items[i].retain);
}

static void test_offline_sessions_and_queue(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    struct fake_io *p = connect_client("publisher", true);
    struct fake_io *d = connect_client("durable", false);
    subscribe(d, "jobs/+", 1);
    io_gone(d);
    publish(p, "jobs/1", "x", 1, false);
    publish(p, "jobs/2", "y", 1, false);
    publish(p, "jobs/3", "z", 0, false); /* offline QoS 0 is not queued by default */
    advance(10000);
    sys_update(&E.sys, E.b);

    struct seen s;
    drain(mon, &s);
    expect_val(&s, "clients/connected", "2");
    expect_val(&s, "clients/disconnected", "1");
    expect_val(&s, "clients/total", "3");
    expect_val(&s, "messages/queued", "2");
    expect_val(&s, "messages/inflight", "0");
    expect_val(&s, "store/messages/count", "2");
    expect_val(&s, "subscriptions/count", "2");
}

static void test_dropped_counted(void **state)
{
    (void)state;
    E.cfg.max_queued_messages = 1;
    struct fake_io *mon = monitor();
    struct fake_io *p = connect_client("publisher", true);
    struct fake_io *d = connect_client("durable", false);
    subscribe(d, "jobs/+", 1);
    io_gone(d);
    for (int i = 0; i < 4; i++)
        publish(p, "jobs/1", "x", 1, false);
    advance(60000);
    sys_update(&E.sys, E.b);
    struct seen s;
    drain(mon, &s);
    expect_val(&s, "publish/messages/dropped", "3");
    /* 3 drops in one minute, averaged over one minute: 3 * (1 - e^-1) = 1.90. */
    expect_val(&s, "load/publish/dropped/1min", "1.90");
}

static void test_load_averages(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    struct fake_io *p = connect_client("publisher", true);
    struct seen s;
    /* Drop the first sample: it includes the CONNECTs and SUBSCRIBE above. */
    sys_update(&E.sys, E.b);
    drain(mon, &s);

    /* 60 PUBLISH a minute, in one-minute steps: each average climbs towards 60, the
     * one-minute one fastest. */
    double prev1 = 0, prev15 = 0;
    for (int minute = 1; minute <= 3; minute++) {
        for (int i = 0; i < 60; i++)
            publish(p, "x", "1", 0, false);
        advance(60000);
        sys_update(&E.sys, E.b);
        drain(mon, &s);
        double l1 = num(&s, "load/publish/received/1min");
        double l5 = num(&s, "load/publish/received/5min");
        double l15 = num(&s, "load/publish/received/15min");
        assert_true(l1 > prev1 && l15 > prev15);
        assert_true(l1 > l5 && l5 > l15);
        assert_true(l1 < 60.0);
        prev1 = l1;
        prev15 = l15;
        if (minute == 1) {
            expect_val(&s, "load/publish/received/1min", "37.93"); /* 60 * (1 - e^-1) */
            expect_val(&s, "publish/rate/received", "1.00");
        } else {
            assert_null(val(&s, "publish/rate/received")); /* unchanged: not sent again */
        }
    }
    assert_true(num(&s, "load/bytes/received/1min") > 0);
    assert_true(num(&s, "load/messages/received/1min") >= prev1);

    /* Idle: every average decays, the one-minute one fastest; the rate drops to 0. */
    advance(60000);
    sys_update(&E.sys, E.b);
    drain(mon, &s);
    double l1 = num(&s, "load/publish/received/1min");
    double l15 = num(&s, "load/publish/received/15min");
    assert_true(l1 < prev1 && l15 < prev15);
    assert_true(prev1 - l1 > prev15 - l15);
    expect_val(&s, "publish/rate/received", "0.00");

    /* The result does not depend on the sampling interval: six 10 s steps of an idle
     * minute decay exactly as one 60 s step. */
    struct mq_sys copy = E.sys;
    for (int i = 0; i < 6; i++) {
        advance(10000);
        sys_update(&E.sys, E.b);
    }
    double expected = copy.load[3][0] * 0.36787944117144233; /* e^-1 */
    assert_true(E.sys.load[3][0] > expected - 1e-9 && E.sys.load[3][0] < expected + 1e-9);
}

static void test_connections_and_sockets_load(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        connect_client(id, true);
    }
    E.b->stats.sockets_total = 6; /* net increments this on accept */
    advance(60000);
    sys_update(&E.sys, E.b);
    struct seen s;
    drain(mon, &s);
    /* Six CONNECTs accepted in the first minute. */
    expect_val(&s, "load/connections/1min", "3.79");
    expect_val(&s, "load/sockets/1min", "3.79");
}

static void test_same_millisecond(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    struct seen s;
    advance(1000);
    sys_update(&E.sys, E.b);
    struct mq_sys before = E.sys;
    sys_update(&E.sys, E.b); /* no time passed: no division by zero, loads unchanged */
    drain(mon, &s);
    assert_memory_equal(E.sys.load, before.load, sizeof(before.load));
    assert_true(E.sys.pub_in_rate == before.pub_in_rate);
}

static bool contains(const char *text, const char *line)
{
    return strstr(text, line) != NULL;
}

static void test_prometheus(void **state)
{
    (void)state;
    struct fake_io *a = connect_client("a", true);
    subscribe(a, "t", 0);
    publish(a, "t", "hello", 0, true);
    read_packet(a);
    advance(42000);
    sys_update(&E.sys, E.b);

    static char buf[16384];
    size_t n = sys_format_metrics(E.b, &E.sys, buf, sizeof(buf));
    assert_true(n > 0 && n < sizeof(buf));
    assert_int_equal(strlen(buf), n);
    assert_true(contains(buf, "# HELP midge_clients_connected "));
    assert_true(contains(buf, "# TYPE midge_clients_connected gauge\nmidge_clients_connected 1\n"));
    assert_true(contains(buf, "# TYPE midge_messages_received_total counter\n"));
    assert_true(contains(buf, "\nmidge_messages_received_total 3\n"));
    assert_true(contains(buf, "\nmidge_publish_received_total 1\n"));
    assert_true(contains(buf, "\nmidge_publish_sent_total 1\n"));
    assert_true(contains(buf, "\nmidge_subscriptions 1\n"));
    assert_true(contains(buf, "\nmidge_uptime_seconds 42\n"));
    assert_true(contains(buf, "\nmidge_sessions 1\n"));
    /* The $SYS tree itself is retained: 1 + what the update published. */
    char line[64];
    snprintf(line, sizeof(line), "\nmidge_retained_messages %zu\n", retain_count(E.b->retained));
    assert_true(contains(buf, line));
    assert_true(retain_count(E.b->retained) > 40);
    assert_true(contains(buf, "midge_build_info{version=\"" MIDGE_VERSION "\"} 1\n"));
    assert_true(contains(buf,
                         "# TYPE midge_load_per_minute gauge\n"
                         "midge_load_per_minute{series=\"messages/received\",window=\"1min\"} "));
    assert_true(contains(buf, "midge_load_per_minute{series=\"connections\",window=\"15min\"} "));
    assert_true(contains(buf, "\nmidge_publish_received_per_second 0.02\n"));
    /* No alias appears twice, every HELP has its TYPE, and the text ends with a newline. */
    assert_false(contains(buf, "sessions/count"));
    assert_int_equal(buf[n - 1], '\n');
    size_t helps = 0, types = 0;
    for (const char *p = buf; (p = strstr(p, "# HELP ")) != NULL; p++)
        helps++;
    for (const char *p = buf; (p = strstr(p, "# TYPE ")) != NULL; p++)
        types++;
    assert_int_equal(helps, types);

    /* Truncation reports the full length, like snprintf, and stays NUL-terminated. */
    char small[100];
    memset(small, 'x', sizeof(small));
    assert_int_equal(sys_format_metrics(E.b, &E.sys, small, sizeof(small)), n);
    assert_int_equal(small[sizeof(small) - 1], '\0');
    assert_memory_equal(small, buf, sizeof(small) - 1);
    assert_int_equal(sys_format_metrics(E.b, &E.sys, NULL, 0), n);

    /* Without the $SYS sampler: counters and gauges only. */
    n = sys_format_metrics(E.b, NULL, buf, sizeof(buf));
    assert_true(n > 0 && n < sizeof(buf));
    assert_true(contains(buf, "\nmidge_clients_connected 1\n"));
    assert_false(contains(buf, "midge_load_per_minute"));
    assert_false(contains(buf, "per_second"));
}

int main(void)
{
    /* Keep the output readable: errors and warnings only, unless asked for more. */
    struct mq_log_options lo = log_default_options();
    lo.types = getenv("MIDGE_TEST_LOG") ? MQ_LOG_ALL_TYPES : MQ_LOG_ERR | MQ_LOG_WARNING;
    log_configure(&lo);

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_first_update),
        T(test_only_changes_are_republished),
        T(test_retained_for_late_subscribers),
        T(test_offline_sessions_and_queue),
        T(test_dropped_counted),
        T(test_load_averages),
        T(test_connections_and_sockets_load),
        T(test_same_millisecond),
        T(test_prometheus),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}

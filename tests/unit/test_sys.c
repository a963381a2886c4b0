/* test_sys.c - the $SYS publisher and the Prometheus text (src/proto/sys.c), driven
 * through whole MQTT conversations over a fake sink, as in test_proto.c.
 *
 * Clients are built with codec_encode and fed to proto_conn_input; the broker's output
 * is decoded with codec_decode. A monitor client subscribes to "$SYS/#" and the values
 * it receives are checked; the broker clock (now_ms) is advanced by hand, so uptime,
 * rates and load averages are exact. ASan checks that every message is released. The fake
 * sink and the client helpers are proto_fixture.h's.
 */
#include "proto_fixture.h"

#include "midge/sys.h"

#define MAX_SEEN 128

static struct mq_sys sys_state; /* the $SYS sampler of E.b */

static int setup_sys(void **state)
{
    if (setup(state))
        return -1;
    memset(&sys_state, 0, sizeof(sys_state));
    sys_init(&sys_state, E.b);
    return 0;
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
    struct fake_io *mon = connect_client("monitor", true, false);
    subscribe(mon, 1, "$SYS/#", 0);
    return mon;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_first_update(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    struct fake_io *all = connect_client("everything", true, false);
    subscribe(all, 1, "#", 0);
    advance(10000);
    sys_update(&sys_state, E.b);

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
    sys_update(&sys_state, E.b);
    drain(mon, &s);
    expect_val(&s, "clients/connected", "1");
    /* The $SYS topics are retained messages too (as in Mosquitto): they count from the
     * next update on. */
    size_t sys_retained = retain_count(E.b->retained);

    /* Nothing happened but time passing: uptime changes; the version is static. The
     * monitor's own $SYS traffic moves the sent counters, so those come too. */
    advance(10000);
    sys_update(&sys_state, E.b);
    drain(mon, &s);
    expect_val(&s, "uptime", "20 seconds");
    assert_null(val(&s, "version"));
    assert_null(val(&s, "clients/connected"));
    assert_null(val(&s, "subscriptions/count"));
    assert_null(val(&s, "messages/received"));
    assert_non_null(val(&s, "messages/sent"));

    struct fake_io *a = connect_client("a", true, false);
    struct fake_io *b = connect_client("b", true, false);
    subscribe(b, 1, "sensors/#", 1);
    publish(a, "sensors/t", "21.5", 1, true, 1);
    publish(a, "sensors/h", "40", 0, false, 0);
    read_packet(b);
    read_packet(b);
    advance(10000);
    sys_update(&sys_state, E.b);
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
    io_gone(a, "peer closed");
    advance(10000);
    sys_update(&sys_state, E.b);
    drain(mon, &s);
    expect_val(&s, "clients/connected", "2");
    assert_null(val(&s, "clients/maximum"));
    expect_nothing(b);
}

static void test_retained_for_late_subscribers(void **state)
{
    (void)state;
    struct fake_io *a = connect_client("a", true, false);
    advance(5000);
    sys_update(&sys_state, E.b);

    /* A subscriber arriving between updates gets the retained values at once. */
    struct fake_io *late = connect_client("late", true, false);
    subscribe(late, 1, "$SYS/broker/clients/connected", 0);
    struct mq_packet p = read_packet(late);
    assert_int_equal(p.type, MQ_PUBLISH);
    assert_true(p.u.publish.retain);
    assert_int_equal(p.u.publish.payload_len, 1);
    assert_memory_equal(p.u.publish.payload, "1", 1);
    expect_nothing(late);

    /* '#' does not bring them back either. */
    subscribe(a, 1, "#", 0);
    expect_nothing(a);
    subscribe(a, 1, "$SYS/broker/+", 0);
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
    struct fake_io *p = connect_client("publisher", true, false);
    struct fake_io *d = connect_client("durable", false, false);
    subscribe(d, 1, "jobs/+", 1);
    io_gone(d, "peer closed");
    publish(p, "jobs/1", "x", 1, false, 1);
    publish(p, "jobs/2", "y", 1, false, 2);
    publish(p, "jobs/3", "z", 0, false, 0); /* offline QoS 0 is not queued by default */
    advance(10000);
    sys_update(&sys_state, E.b);

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
    struct fake_io *p = connect_client("publisher", true, false);
    struct fake_io *d = connect_client("durable", false, false);
    subscribe(d, 1, "jobs/+", 1);
    io_gone(d, "peer closed");
    for (int i = 0; i < 4; i++)
        publish(p, "jobs/1", "x", 1, false, (uint16_t)(i + 1));
    advance(60000);
    sys_update(&sys_state, E.b);
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
    struct fake_io *p = connect_client("publisher", true, false);
    struct seen s;
    /* Drop the first sample: it includes the CONNECTs and SUBSCRIBE above. */
    sys_update(&sys_state, E.b);
    drain(mon, &s);

    /* 60 PUBLISH a minute, in one-minute steps: each average climbs towards 60, the
     * one-minute one fastest. */
    double prev1 = 0, prev15 = 0;
    for (int minute = 1; minute <= 3; minute++) {
        for (int i = 0; i < 60; i++)
            publish(p, "x", "1", 0, false, 0);
        advance(60000);
        sys_update(&sys_state, E.b);
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
    sys_update(&sys_state, E.b);
    drain(mon, &s);
    double l1 = num(&s, "load/publish/received/1min");
    double l15 = num(&s, "load/publish/received/15min");
    assert_true(l1 < prev1 && l15 < prev15);
    assert_true(prev1 - l1 > prev15 - l15);
    expect_val(&s, "publish/rate/received", "0.00");

    /* The result does not depend on the sampling interval: six 10 s steps of an idle
     * minute decay exactly as one 60 s step. */
    struct mq_sys copy = sys_state;
    for (int i = 0; i < 6; i++) {
        advance(10000);
        sys_update(&sys_state, E.b);
    }
    double expected = copy.load[3][0] * 0.36787944117144233; /* e^-1 */
    assert_true(sys_state.load[3][0] > expected - 1e-9 && sys_state.load[3][0] < expected + 1e-9);
}

static void test_connections_and_sockets_load(void **state)
{
    (void)state;
    struct fake_io *mon = monitor();
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        connect_client(id, true, false);
    }
    E.b->stats.sockets_total = 6; /* net increments this on accept */
    advance(60000);
    sys_update(&sys_state, E.b);
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
    sys_update(&sys_state, E.b);
    struct mq_sys before = sys_state;
    sys_update(&sys_state, E.b); /* no time passed: no division by zero, loads unchanged */
    drain(mon, &s);
    assert_memory_equal(sys_state.load, before.load, sizeof(before.load));
    assert_true(sys_state.pub_in_rate == before.pub_in_rate);
}

static bool contains(const char *text, const char *line)
{
    return strstr(text, line) != NULL;
}

static void test_prometheus(void **state)
{
    (void)state;
    struct fake_io *a = connect_client("a", true, false);
    subscribe(a, 1, "t", 0);
    send_publish(a, "t", "hello", 0, true, 0, false);
    read_packet(a);
    advance(42000);
    sys_update(&sys_state, E.b);

    static char buf[16384];
    size_t n = sys_format_metrics(E.b, &sys_state, buf, sizeof(buf));
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
    assert_int_equal(sys_format_metrics(E.b, &sys_state, small, sizeof(small)), n);
    assert_int_equal(small[sizeof(small) - 1], '\0');
    assert_memory_equal(small, buf, sizeof(small) - 1);
    assert_int_equal(sys_format_metrics(E.b, &sys_state, NULL, 0), n);

    /* Without the $SYS sampler: counters and gauges only. */
    n = sys_format_metrics(E.b, NULL, buf, sizeof(buf));
    assert_true(n > 0 && n < sizeof(buf));
    assert_true(contains(buf, "\nmidge_clients_connected 1\n"));
    assert_false(contains(buf, "midge_load_per_minute"));
    assert_false(contains(buf, "per_second"));
}

int main(void)
{
    quiet_logs();

#define T(name) cmocka_unit_test_setup_teardown(name, setup_sys, teardown)
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

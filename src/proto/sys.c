/* sys.c - the $SYS statistics publisher and the Prometheus /metrics text.
 *
 * Owns only struct mq_sys (previous samples, load averages, last payloads); it reads the
 * broker and changes it only by publishing through broker_publish, like any client. One
 * table (SYS_VALUE_MAP) names every figure for both views, so a value added for $SYS
 * appears in /metrics too. Topic names follow Mosquitto's mosquitto(8) so dashboards
 * built for it work unchanged; midge's extensions are listed in docs/sys.md.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "midge/imap.h"
#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/sub_tree.h"
#include "midge/sys.h"
#include "proto_internal.h"

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define SYS_HEAP_KNOWN 1
#else
#define SYS_HEAP_KNOWN 0
#endif

#ifndef MIDGE_VERSION
#define MIDGE_VERSION "unknown"
#endif

#define SYS_PREFIX "$SYS/broker/"

/* Integer figures: id, $SYS topic under $SYS/broker/ (NULL: /metrics only), Prometheus
 * name (NULL: a $SYS alias of the figure before it, which /metrics already has), type, help. */
#define SYS_VALUE_MAP(XX)                                                                          \
    XX(UPTIME, "uptime", "midge_uptime_seconds", "gauge", "Seconds since the broker started.")     \
    XX(CLIENTS_CONNECTED, "clients/connected", "midge_clients_connected", "gauge",                 \
       "Clients currently connected.")                                                             \
    XX(CLIENTS_DISCONNECTED, "clients/disconnected", "midge_clients_disconnected", "gauge",        \
       "Persistent sessions (clean session 0) whose client is offline.")                           \
    XX(CLIENTS_TOTAL, "clients/total", "midge_sessions", "gauge",                                  \
       "Sessions held: connected clients plus offline persistent sessions.")                       \
    XX(SESSIONS, "sessions/count", NULL, NULL, NULL)                                               \
    XX(CLIENTS_V31, "clients/connected/mqtt31", NULL, NULL, NULL)                                  \
    XX(CLIENTS_V311, "clients/connected/mqtt311", NULL, NULL, NULL)                                \
    XX(CLIENTS_V5, "clients/connected/mqtt5", NULL, NULL, NULL)                                    \
    XX(CLIENTS_MAXIMUM, "clients/maximum", "midge_clients_maximum", "gauge",                       \
       "Most clients connected at the same time since the broker started.")                        \
    XX(CLIENTS_EXPIRED, "clients/expired", "midge_clients_expired_total", "counter",               \
       "Offline persistent sessions removed by persistent_client_expiration.")                     \
    XX(MESSAGES_RECEIVED, "messages/received", "midge_messages_received_total", "counter",         \
       "MQTT packets of any type received.")                                                       \
    XX(MESSAGES_SENT, "messages/sent", "midge_messages_sent_total", "counter",                     \
       "MQTT packets of any type sent.")                                                           \
    XX(MESSAGES_INFLIGHT, "messages/inflight", "midge_messages_inflight", "gauge",                 \
       "Outgoing QoS 1 and 2 messages awaiting acknowledgement.")                                  \
    XX(MESSAGES_QUEUED, "messages/queued", "midge_messages_queued", "gauge",                       \
       "Outgoing messages held for sessions: queued plus in flight.")                              \
    XX(STORE_COUNT, "store/messages/count", "midge_messages_stored", "gauge",                      \
       "Messages held: retained plus queued and in flight (one per session holding it).")          \
    XX(MESSAGES_STORED, "messages/stored", NULL, NULL, NULL)                                       \
    XX(PUB_RECEIVED, "publish/messages/received", "midge_publish_received_total", "counter",       \
       "PUBLISH packets received.")                                                                \
    XX(PUB_SENT, "publish/messages/sent", "midge_publish_sent_total", "counter",                   \
       "PUBLISH packets sent.")                                                                    \
    XX(PUB_DROPPED, "publish/messages/dropped", "midge_publish_dropped_total", "counter",          \
       "Messages dropped because a session queue was full (or memory ran out).")                   \
    XX(PUB_TOO_LARGE, "publish/messages/oversized", "midge_publish_oversized_total", "counter",    \
       "Messages not sent: over the MQTT 5 client's Maximum Packet Size.")                         \
    XX(MSGS_EXPIRED, "messages/expired", "midge_messages_expired_total", "counter",                \
       "Messages deleted unsent because their MQTT 5 Message Expiry Interval ran out.")            \
    XX(BYTES_RECEIVED, "bytes/received", "midge_bytes_received_total", "counter",                  \
       "Bytes of MQTT packets received.")                                                          \
    XX(BYTES_SENT, "bytes/sent", "midge_bytes_sent_total", "counter",                              \
       "Bytes of MQTT packets sent.")                                                              \
    XX(SUBSCRIPTIONS, "subscriptions/count", "midge_subscriptions", "gauge",                       \
       "Subscriptions held (one per session and filter).")                                         \
    XX(RETAINED, "retained messages/count", "midge_retained_messages", "gauge",                    \
       "Retained messages stored, the $SYS ones included.")                                        \
    XX(HEAP_CURRENT, "heap/current", "midge_heap_bytes", "gauge",                                  \
       "Heap bytes in use (glibc mallinfo2: uordblks + hblkhd).")                                  \
    XX(HEAP_MAXIMUM, "heap/maximum", "midge_heap_max_bytes", "gauge",                              \
       "Largest heap use seen by the $SYS sampler.")                                               \
    XX(CONNECTIONS, NULL, "midge_connections_total", "counter", "CONNECTs accepted.")              \
    XX(SOCKETS, NULL, "midge_sockets_opened_total", "counter", "Network connections opened.")      \
    XX(PROTOCOL_ERRORS, NULL, "midge_protocol_errors_total", "counter",                            \
       "Connections closed for a protocol error.")

enum sys_value {
#define XX(id, topic, prom, type, help) V_##id,
    SYS_VALUE_MAP(XX)
#undef XX
        V_COUNT
};

struct sys_value_desc {
    const char *topic, *prom, *type, *help;
};

static const struct sys_value_desc values[V_COUNT] = {
#define XX(id, topic, prom, type, help) [V_##id] = {topic, prom, type, help},
    SYS_VALUE_MAP(XX)
#undef XX
};

/* Load series: the name in $SYS/broker/load/<name>/<window> and the cumulative counter
 * whose rate it averages. Connections count accepted CONNECTs; Mosquitto counts every
 * CONNECT packet, refused ones included. */
struct sys_series {
    const char *name;
    size_t field; /* offsetof(struct mq_stats, ...) */
};

static const struct sys_series series[SYS_LOAD_SERIES] = {
    {"messages/received", offsetof(struct mq_stats, msgs_received)},
    {"messages/sent", offsetof(struct mq_stats, msgs_sent)},
    {"publish/dropped", offsetof(struct mq_stats, pub_dropped)},
    {"publish/received", offsetof(struct mq_stats, pub_received)},
    {"publish/sent", offsetof(struct mq_stats, pub_sent)},
    {"bytes/received", offsetof(struct mq_stats, bytes_received)},
    {"bytes/sent", offsetof(struct mq_stats, bytes_sent)},
    {"sockets", offsetof(struct mq_stats, sockets_total)},
    {"connections", offsetof(struct mq_stats, clients_total)},
};

static const struct {
    const char *name;
    double seconds;
} windows[SYS_LOAD_WINDOWS] = {{"1min", 60.0}, {"5min", 300.0}, {"15min", 900.0}};

/* Slots in mq_sys.last: the integer figures, the two rates, then the load topics. */
enum {
    SLOT_RATE_IN = V_COUNT,
    SLOT_RATE_OUT,
    SLOT_LOAD0,
    SLOT_END = SLOT_LOAD0 + SYS_LOAD_SERIES * SYS_LOAD_WINDOWS
};
_Static_assert(SLOT_END <= SYS_TOPIC_SLOTS, "raise SYS_TOPIC_SLOTS in sys.h");

/* ---- sampling ------------------------------------------------------------------------ */

static uint64_t stat_at(const struct mq_stats *st, size_t field)
{
    uint64_t v;
    memcpy(&v, (const char *)st + field, sizeof(v));
    return v;
}

/* Growth of a counter; 0 if it went backwards, so a reset never shows a huge rate. */
static uint64_t grown(uint64_t now, uint64_t before)
{
    return now > before ? now - before : 0;
}

/* e^-x for x >= 0. midge_pure links no libm, and three decay factors per sample need
 * nothing faster: halve x into [0, 0.5], sum the series, square back. */
static double exp_neg(double x)
{
    if (x > 700.0)
        return 0.0;
    int k = 0;
    while (x > 0.5) {
        x *= 0.5;
        k++;
    }
    double term = 1.0, sum = 1.0;
    for (int i = 1; i <= 14; i++) {
        term *= -x / i;
        sum += term;
    }
    while (k-- > 0)
        sum *= sum;
    return sum;
}

#if SYS_HEAP_KNOWN
bool sys_heap_in_use(uint64_t *bytes)
{
    struct mallinfo2 mi = mallinfo2();
    /* Blocks above the mmap threshold are not in uordblks; they are memory in use too. */
    *bytes = mi.uordblks + mi.hblkhd;
    /* Under ASan or a preloaded allocator glibc's arenas stay empty: zero means we do not
     * know, and publishing 0 would be a lie. */
    return *bytes != 0;
}
#else
/* No portable way to ask the allocator; the heap topics are simply not published. */
bool sys_heap_in_use(uint64_t *bytes)
{
    *bytes = 0;
    return false;
}
#endif

/* Every integer figure, read from the broker now. heap_max is the sampler's own maximum
 * (the allocator does not keep one). Returns whether the heap figures are known. */
static bool snapshot(const struct mq_broker *b, uint64_t heap_max, uint64_t v[V_COUNT])
{
    const struct mq_stats *st = &b->stats;
    uint64_t offline = 0, queued = 0, inflight = 0, held = 0;
    uint32_t pos = 0;
    struct mq_session *s;
    while ((s = imap_next(&b->sessions, &pos)) != NULL) {
        if (!s->conn)
            offline++;
        /* spilled: queued on disk (persistence) */
        queued += session_queue_count(s) + session_spilled(s);
        inflight += session_inflight_count(s);
        held += session_queue_count(s);
        /* After PUBREC only the packet id is kept: the message is no longer held. */
        for (uint32_t i = 0; i < session_inflight_count(s); i++)
            held += session_inflight_at(s, i)->msg != NULL;
    }
    uint64_t retained = retain_count(b->retained);
    uint64_t heap = 0;
    bool heap_known = sys_heap_in_use(&heap);

    memset(v, 0, sizeof(uint64_t) * V_COUNT);
    v[V_UPTIME] = grown(b->now_ms, b->start_ms) / 1000u;
    v[V_CLIENTS_CONNECTED] = st->clients_connected;
    v[V_CLIENTS_DISCONNECTED] = offline;
    v[V_CLIENTS_TOTAL] = v[V_SESSIONS] = imap_count(&b->sessions);
    v[V_CLIENTS_V31] = st->clients_by_version[0];
    v[V_CLIENTS_V311] = st->clients_by_version[1];
    v[V_CLIENTS_V5] = st->clients_by_version[2];
    v[V_CLIENTS_MAXIMUM] = st->clients_maximum;
    v[V_CLIENTS_EXPIRED] = st->clients_expired;
    v[V_MESSAGES_RECEIVED] = st->msgs_received;
    v[V_MESSAGES_SENT] = st->msgs_sent;
    v[V_MESSAGES_INFLIGHT] = inflight;
    v[V_MESSAGES_QUEUED] = queued + inflight;
    v[V_STORE_COUNT] = v[V_MESSAGES_STORED] = retained + held;
    v[V_PUB_RECEIVED] = st->pub_received;
    v[V_PUB_SENT] = st->pub_sent;
    v[V_PUB_DROPPED] = st->pub_dropped;
    v[V_PUB_TOO_LARGE] = st->pub_dropped_too_large;
    v[V_MSGS_EXPIRED] = st->msgs_expired;
    v[V_BYTES_RECEIVED] = st->bytes_received;
    v[V_BYTES_SENT] = st->bytes_sent;
    v[V_SUBSCRIPTIONS] = sub_tree_count(b->subs);
    v[V_RETAINED] = retained;
    v[V_HEAP_CURRENT] = heap;
    v[V_HEAP_MAXIMUM] = heap > heap_max ? heap : heap_max;
    v[V_CONNECTIONS] = st->clients_total;
    v[V_SOCKETS] = st->sockets_total;
    v[V_PROTOCOL_ERRORS] = st->protocol_errors;
    return heap_known;
}

/* Advance rates and load averages to now. A zero interval (two calls in one
 * millisecond) keeps the previous figures rather than dividing by zero. */
static void sample(struct mq_sys *s, const struct mq_broker *b)
{
    if (b->now_ms <= s->last_ms)
        return;
    double dt = (double)(b->now_ms - s->last_ms) / 1000.0;
    for (size_t i = 0; i < SYS_LOAD_SERIES; i++) {
        uint64_t n = grown(stat_at(&b->stats, series[i].field), stat_at(&s->prev, series[i].field));
        double per_minute = (double)n * 60.0 / dt;
        /* Mosquitto's moving average: pull the load towards this interval's rate by a
         * factor that depends on how long the interval was, so the figure is the same
         * whatever sys_interval is. */
        for (size_t w = 0; w < SYS_LOAD_WINDOWS; w++) {
            double decay = exp_neg(dt / windows[w].seconds);
            s->load[i][w] = per_minute + decay * (s->load[i][w] - per_minute);
        }
    }
    s->pub_in_rate = (double)grown(b->stats.pub_received, s->prev.pub_received) / dt;
    s->pub_out_rate = (double)grown(b->stats.pub_sent, s->prev.pub_sent) / dt;
    s->prev = b->stats;
    s->last_ms = b->now_ms;
}

/* ---- $SYS ------------------------------------------------------------------------------ */

/* Publish one retained QoS 0 value; false when out of memory (nothing was sent). */
static bool publish(struct mq_broker *b, const char *topic, const char *payload)
{
    char full[128];
    int tl = snprintf(full, sizeof(full), SYS_PREFIX "%s", topic);
    if (tl < 0 || (size_t)tl >= sizeof(full))
        return false; /* cannot happen with the topics above */
    struct mq_msg *m = msg_new((const uint8_t *)full, (uint16_t)tl, (const uint8_t *)payload,
                               (uint32_t)strlen(payload), 0, true);
    if (!m)
        return false;
    broker_publish(b, m, NULL);
    msg_unref(m);
    return true;
}

/* Publish payload on topic unless it is what the slot last carried. */
static void publish_changed(struct mq_sys *s, struct mq_broker *b, size_t slot, const char *topic,
                            const char *payload)
{
    if (strcmp(s->last[slot], payload) == 0)
        return;
    if (publish(b, topic, payload)) /* else: try again next time */
        snprintf(s->last[slot], sizeof(s->last[slot]), "%s", payload);
}

void sys_init(struct mq_sys *s, const struct mq_broker *b)
{
    memset(s, 0, sizeof(*s));
    s->prev = b->stats;
    s->last_ms = b->now_ms;
}

void sys_update(struct mq_sys *s, struct mq_broker *b)
{
    uint64_t v[V_COUNT];
    bool heap_known = snapshot(b, s->heap_max, v);
    s->heap_max = v[V_HEAP_MAXIMUM];
    sample(s, b);

    if (!s->version_sent)
        s->version_sent = publish(b, "version", "midge " MIDGE_VERSION);
    char payload[SYS_PAYLOAD_MAX];
    for (size_t i = 0; i < V_COUNT; i++) {
        if (!values[i].topic)
            continue;
        if (!heap_known && (i == V_HEAP_CURRENT || i == V_HEAP_MAXIMUM))
            continue;
        snprintf(payload, sizeof(payload), i == V_UPTIME ? "%" PRIu64 " seconds" : "%" PRIu64,
                 v[i]);
        publish_changed(s, b, i, values[i].topic, payload);
    }
    /* Two decimals, as Mosquitto prints loads: a change below 0.01 is not news. */
    snprintf(payload, sizeof(payload), "%.2f", s->pub_in_rate);
    publish_changed(s, b, SLOT_RATE_IN, "publish/rate/received", payload);
    snprintf(payload, sizeof(payload), "%.2f", s->pub_out_rate);
    publish_changed(s, b, SLOT_RATE_OUT, "publish/rate/sent", payload);
    for (size_t i = 0; i < SYS_LOAD_SERIES; i++) {
        for (size_t w = 0; w < SYS_LOAD_WINDOWS; w++) {
            char topic[64];
            snprintf(topic, sizeof(topic), "load/%s/%s", series[i].name, windows[w].name);
            snprintf(payload, sizeof(payload), "%.2f", s->load[i][w]);
            publish_changed(s, b, SLOT_LOAD0 + i * SYS_LOAD_WINDOWS + w, topic, payload);
        }
    }
}

void sys_values(const struct mq_broker *b, const struct mq_sys *s,
                void (*fn)(void *ctx, const char *name, uint64_t value), void *ctx)
{
    uint64_t v[V_COUNT];
    bool heap_known = snapshot(b, s ? s->heap_max : 0, v);
    for (size_t i = 0; i < V_COUNT; i++) {
        if (!values[i].topic)
            continue;
        if (!heap_known && (i == V_HEAP_CURRENT || i == V_HEAP_MAXIMUM))
            continue;
        fn(ctx, values[i].topic, v[i]);
    }
}

/* ---- Prometheus ---------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t cap, len; /* len counts what would have been written, past cap too */
};

static void __attribute__((format(printf, 2, 3))) put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static void put_header(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

size_t sys_format_metrics(const struct mq_broker *b, const struct mq_sys *s, char *buf, size_t cap)
{
    struct out o = {buf, cap, 0};
    if (cap)
        buf[0] = '\0';
    uint64_t v[V_COUNT];
    bool heap_known = snapshot(b, s ? s->heap_max : 0, v);

    put_header(&o, "midge_build_info", "gauge", "midge version; the value is always 1.");
    put(&o, "midge_build_info{version=\"%s\"} 1\n", MIDGE_VERSION);
    for (size_t i = 0; i < V_COUNT; i++) {
        if (!values[i].prom)
            continue;
        if (!heap_known && (i == V_HEAP_CURRENT || i == V_HEAP_MAXIMUM))
            continue;
        put_header(&o, values[i].prom, values[i].type, values[i].help);
        put(&o, "%s %" PRIu64 "\n", values[i].prom, v[i]);
    }
    put_header(&o, "midge_clients_connected_by_protocol", "gauge",
               "Clients currently connected, by MQTT protocol version.");
    static const char *const versions[3] = {"3.1", "3.1.1", "5.0"};
    for (size_t i = 0; i < 3; i++)
        put(&o, "midge_clients_connected_by_protocol{protocol=\"%s\"} %" PRIu64 "\n", versions[i],
            v[V_CLIENTS_V31 + i]);
    if (s) {
        put_header(&o, "midge_publish_received_per_second", "gauge",
                   "PUBLISH packets received per second over the last $SYS interval.");
        put(&o, "midge_publish_received_per_second %.2f\n", s->pub_in_rate);
        put_header(&o, "midge_publish_sent_per_second", "gauge",
                   "PUBLISH packets sent per second over the last $SYS interval.");
        put(&o, "midge_publish_sent_per_second %.2f\n", s->pub_out_rate);
        put_header(&o, "midge_load_per_minute", "gauge",
                   "Events per minute, exponentially averaged over 1, 5 and 15 minutes "
                   "($SYS/broker/load/...).");
        for (size_t i = 0; i < SYS_LOAD_SERIES; i++)
            for (size_t w = 0; w < SYS_LOAD_WINDOWS; w++)
                put(&o, "midge_load_per_minute{series=\"%s\",window=\"%s\"} %.2f\n", series[i].name,
                    windows[w].name, s->load[i][w]);
    }
    return o.len;
}

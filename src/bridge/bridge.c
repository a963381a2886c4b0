/* bridge.c - a bridge: an MQTT client of a remote broker inside the event loop, and on the
 * local side a session of midge's own broker like any other (docs/bridge.md).
 *
 * Owns the bridges (struct mq_bridge), their timers and their dials; never a message. Each
 * bridge has two connections, both struct mq_client of net/client.c:
 *  - remote: a socket dialled by net/dial.c, with the usual transports under it (TLS client,
 *    WebSocket client) and, on top, this file's remote layer, which speaks MQTT as a client
 *    (codec.h both ways);
 *  - local: a client without a socket whose only layer is this file's local layer. proto
 *    sees an ordinary connection (CONNECT with the bridge bit, or MQTT 5 with No Local
 *    subscriptions) and writes to it through the sink as to any client; the layer reads those
 *    packets and forwards them, and client_deliver feeds proto what comes from the remote.
 * So while the remote is unreachable the local connection is closed and its persistent
 * session queues what the bridge is to forward, with the queue caps, paging and durability
 * every session has; when the remote is back the session resumes (DUP resend, then the queue
 * in order). A local PUBLISH is acknowledged to proto only when the remote acknowledges it,
 * and a remote PUBLISH only when proto acknowledges it (after its commit under durability
 * ack): packet ids pass through unchanged in both directions, as the two dialects always
 * match (MQTT 5 on both sides, or 3.x on both).
 * Invariants: proto is only fed from a read of the remote, a timer or a reload, never from
 * inside proto's own output (that would re-enter it): what the local layer must answer at
 * once waits in `defer` for the kick timer. The remote connection is up only while the local
 * one is, and a bridge is freed only at shutdown, after every client that points at it.
 */
#include "bridge.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "midge/bridge_map.h"
#include "midge/buf.h"
#include "midge/codec.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/imap.h"
#include "midge/log.h"
#include "midge/proto.h"
#include "midge/session.h"
#include "midge/sub_tree.h"
#include "net/dial.h"
#include "net/net.h"
#include "net/tls_client.h"
#include "net/ws_client.h"

#define DIAL_TIMEOUT_MS 15000    /* per resolved address */
#define CONNACK_TIMEOUT_MS 30000 /* from the TCP connection to CONNACK (TLS included) */
#define PROBE_MIN_MS 5000        /* round_robin false: how often the main address is probed */
#define DROP_LOG_MS 10000        /* one drop line per bridge per this long */

enum bstate {
    B_IDLE,       /* not running: lazy below its threshold, once after a failure, stopped */
    B_WAIT,       /* the restart timer runs */
    B_DIALING,    /* DNS and TCP connect (net/dial.c) */
    B_CONNECTING, /* CONNECT sent, waiting for CONNACK */
    B_UP,         /* CONNACK 0; the local side is connected */
};

/* Figures published under $SYS/broker/bridge/NAME/ and in /metrics. */
enum {
    S_CONNECTED,
    S_MSGS_SENT,
    S_MSGS_RECEIVED,
    S_BYTES_SENT,
    S_BYTES_RECEIVED,
    S_QUEUED,
    S_INFLIGHT,
    S_DROPPED,
    S_RECONNECTS,
    S_COUNT
};

static const struct {
    const char *topic, *prom, *type, *help;
} figures[S_COUNT] = {
    [S_CONNECTED] = {"connected", "midge_bridge_connected", "gauge",
                     "1 while the bridge is connected to its remote broker."},
    [S_MSGS_SENT] = {"messages/sent", "midge_bridge_messages_sent_total", "counter",
                     "PUBLISH packets forwarded to the remote broker."},
    [S_MSGS_RECEIVED] = {"messages/received", "midge_bridge_messages_received_total", "counter",
                         "PUBLISH packets received from the remote broker."},
    [S_BYTES_SENT] = {"bytes/sent", "midge_bridge_bytes_sent_total", "counter",
                      "Bytes of MQTT packets sent to the remote broker."},
    [S_BYTES_RECEIVED] = {"bytes/received", "midge_bridge_bytes_received_total", "counter",
                          "Bytes of MQTT packets received from the remote broker."},
    [S_QUEUED] = {"queued", "midge_bridge_queued", "gauge",
                  "Messages waiting in the bridge's local session for the remote (on disk "
                  "included)."},
    [S_INFLIGHT] = {"inflight", "midge_bridge_inflight", "gauge",
                    "QoS 1 and 2 messages sent to the remote and not yet acknowledged."},
    [S_DROPPED] = {"dropped", "midge_bridge_dropped_total", "counter",
                   "Messages for or from the remote that were dropped (queue full, too large, "
                   "no matching topic line)."},
    [S_RECONNECTS] = {"reconnects", "midge_bridge_reconnects_total", "counter",
                      "Connection attempts after the first one."},
};

struct bytes {
    uint8_t *p;
    size_t len, cap;
};

struct mq_bridge {
    struct mq_bridges *all;
    struct mq_server *srv;
    const struct mq_bridge_config *cfg; /* borrowed: configurations live until shutdown */
    void *tls;                          /* TLS client context (owned reference), or NULL */
    uv_timer_t timer;                   /* restart, backoff */
    uv_timer_t kick;                    /* deferred input for the local side */
    enum bstate state;
    bool removed;      /* stopped for good (reload removed it, or shutdown) */
    bool end_session;  /* removed: end its local session once its connection is gone */
    bool lazy_stopped; /* a lazy bridge stopped for idleness: wait for the threshold */
    bool no_private;   /* the remote refused the bridge bit: connect as a plain client */
    bool used_private; /* this connection's CONNECT carries it */
    bool ping_out;
    bool local_connacked, local_refused;
    bool retry_same; /* the next attempt goes to the same address at once (try_private) */
    struct mq_dial *dial, *probe;
    struct mq_client *remote, *local;
    size_t addr;       /* index of the address in use or next */
    size_t tried;      /* addresses tried in this round */
    uint64_t sleep_ms; /* decorrelated jitter: the last delay */
    uint64_t rng;
    uint8_t level; /* the remote's protocol level (3, 4, 5) */
    uint8_t remote_max_qos;
    bool remote_retain;
    uint16_t remote_rx_max;
    uint16_t keepalive;
    uint32_t remote_max_packet; /* 0: none */
    uint16_t sub_pid, unsub_pid;
    uint64_t last_tx_ms, last_rx_ms, started_ms, traffic_ms, probe_ms, up_ms;
    struct bytes rin;     /* remote input: an unfinished packet */
    struct bytes lin;     /* local output: an unfinished packet */
    struct bytes defer;   /* bytes for proto, delivered by the kick timer */
    struct bytes scratch; /* building a packet for the remote */
    struct bytes lbuf;    /* building a packet for proto (which may call back into this file
                             while it reads it, and those calls use scratch) */
    uint8_t *topic;       /* MQ_BRIDGE_TOPIC_MAX bytes: a remapped topic (allocated with b) */
    /* Inbound (remote) and outbound (local) QoS 2 ids this bridge completed itself, for a
     * message it dropped: their PUBREL is answered here. 8 KiB each, allocated on first use. */
    uint8_t *done_remote, *done_local;
    uint64_t msgs_out, msgs_in, bytes_out, bytes_in, dropped, attempts;
    uint64_t drop_logged_ms;
    char peer[300];       /* the address in use, "host:port" */
    char local_name[160]; /* the local connection's name in log lines */
    char close_why[320];  /* the remote connection's close reason, when this file ends it */
    char last[S_COUNT][24];
    bool last_state_sent;
};

struct mq_bridges {
    /* The local side's "listener": anonymous, no password file, no ACL (a bridge's local
     * side is trusted, as in Mosquitto without local_username). Sessions keep a pointer to
     * it, so it lives until the server is freed. */
    struct mq_listener_config lcfg;
    struct mq_listener_ctx lctx;
    struct mq_bridge **v;
    size_t n;
    struct mq_bridge **retired; /* removed by reloads: freed at shutdown */
    size_t nretired;
    bool stopping;
};

struct mq_bridge_reload {
    const struct mq_config *ncfg;
    void **tls; /* per bridge of ncfg: a new TLS context, or NULL (none, or unchanged) */
    struct mq_bridge **keep; /* per bridge of ncfg: the running bridge it keeps, or NULL */
};

static void attempt(struct mq_bridge *b);
static void attempt_cb(uv_timer_t *t);
static void on_kick(uv_timer_t *t);
static void local_connect(struct mq_bridge *b, bool prepare);
static void remote_close(struct mq_bridge *b, const char *reason);

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t now_ms(const struct mq_bridge *b)
{
    return uv_now(&b->srv->loop);
}

static bool bytes_add(struct bytes *x, const void *p, size_t n)
{
    if (buf_reserve(&x->p, &x->cap, x->len + n, 256))
        return false;
    if (n)
        memcpy(x->p + x->len, p, n);
    x->len += n;
    return true;
}

static void bytes_free(struct bytes *x)
{
    free(x->p);
    *x = (struct bytes){0};
}

static uint64_t rnd(struct mq_bridge *b)
{
    /* xorshift64*: jitter needs spread, not secrecy. */
    uint64_t x = b->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return x * 2685821657736338717ull;
}

static void bit_set(uint8_t **map, uint16_t id, bool on)
{
    if (!*map && on && !(*map = calloc(8192, 1)))
        return;
    if (*map) {
        if (on)
            (*map)[id >> 3] |= (uint8_t)(1u << (id & 7));
        else
            (*map)[id >> 3] &= (uint8_t) ~(1u << (id & 7));
    }
}

static bool bit_get(const uint8_t *map, uint16_t id)
{
    return map && (map[id >> 3] >> (id & 7)) & 1;
}

static const struct mq_config *bcfg(const struct mq_bridge *b)
{
    return b->srv->cfg;
}

/* The remote's top layer: where this bridge's MQTT enters the connection. */
static unsigned top(const struct mq_client *cl)
{
    return (unsigned)cl->layers - 1;
}

static bool remote_open(const struct mq_bridge *b)
{
    return b->remote && !b->remote->closing && !b->remote->close_requested;
}

static bool local_open(const struct mq_bridge *b)
{
    return b->local && !b->local->closing && !b->local->close_requested && b->local->conn_open &&
           !b->local->conn.closing;
}

static void remote_send(struct mq_bridge *b, const void *p, size_t n)
{
    if (!remote_open(b) || !n)
        return;
    client_layer_down(b->remote, top(b->remote), p, n);
    b->bytes_out += n;
    b->last_tx_ms = now_ms(b);
}

/* Feed proto the local side's input now (only from outside proto). */
static void local_feed(struct mq_bridge *b, const uint8_t *p, size_t n)
{
    if (!local_open(b))
        return;
    b->srv->broker->now_ms = uv_now(&b->srv->loop);
    client_deliver(b->local, p, n);
}

/* The same from inside proto's output: held for the kick timer. */
static void local_feed_later(struct mq_bridge *b, const uint8_t *p, size_t n)
{
    if (!bytes_add(&b->defer, p, n)) {
        mq_log(MQ_LOG_ERR, "bridge %s: out of memory", b->cfg->name);
        return;
    }
    uv_timer_start(&b->kick, on_kick, 0, 0);
}

static void publish_state(struct mq_bridge *b, bool up)
{
    if (!b->cfg->notifications)
        return;
    const char *t = b->cfg->notification_topic;
    broker_publish_local(b->srv->broker, t, strlen(t), up ? "1" : "0", 1, 1, true);
}

/* Count a dropped message and log it, at most one line per DROP_LOG_MS. */
static void note_drop(struct mq_bridge *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_drop(struct mq_bridge *b, const char *fmt, ...)
{
    b->dropped++;
    uint64_t now = now_ms(b);
    if (b->drop_logged_ms && now - b->drop_logged_ms < DROP_LOG_MS)
        return;
    b->drop_logged_ms = now;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mq_log(MQ_LOG_WARNING, "bridge %s: %s (%" PRIu64 " dropped so far)", b->cfg->name, msg,
           b->dropped);
}

/* ---- packets -------------------------------------------------------------------------------- */

static struct mq_bytes mb(const char *s)
{
    return (struct mq_bytes){(const uint8_t *)s, s ? (uint16_t)strlen(s) : 0};
}

/* Encode pkt into out (replacing what it held). False when it cannot be. */
static bool encode(struct bytes *out, const struct mq_packet *pkt)
{
    long n = codec_encode(pkt, NULL, 0);
    if (n < 0)
        return false;
    if (buf_reserve(&out->p, &out->cap, (size_t)n, 256))
        return false;
    out->len = (size_t)codec_encode(pkt, out->p, out->cap);
    return true;
}

/* The local side's dialect: MQTT 5 with an MQTT 5 remote, else 3.1.1 (with the bridge bit). */
static uint8_t local_level(const struct mq_bridge *b)
{
    return b->level == 5 ? 5 : 4;
}

/* How many QoS 1/2 PUBLISH the local broker takes unacknowledged from its clients. */
static uint16_t local_window(const struct mq_bridge *b)
{
    uint32_t n = bcfg(b)->max_inflight_messages;
    return n == 0 || n > 65535 ? 65535 : (uint16_t)n;
}

static bool send_remote_connect(struct mq_bridge *b)
{
    const struct mq_bridge_config *c = b->cfg;
    struct mq_packet pkt = {.type = MQ_CONNECT, .version = b->level == 5 ? 5 : 4};
    struct mq_connect *cp = &pkt.u.connect;
    cp->protocol_level = b->level;
    b->used_private = c->try_private && !b->no_private && b->level != 5;
    cp->bridge = b->used_private;
    cp->clean_session = c->cleansession;
    cp->keepalive = c->keepalive;
    cp->client_id = mb(c->remote_clientid);
    if (c->notifications && !c->notifications_local_only) {
        /* The remote publishes "0" for us when the connection dies. */
        cp->will_flag = true;
        cp->will_qos = 1;
        cp->will_retain = true;
        cp->will_topic = mb(c->notification_topic);
        cp->will_payload = mb("0");
    }
    if (c->remote_username) {
        cp->has_username = true;
        cp->username = mb(c->remote_username);
    }
    if (c->remote_password) {
        cp->has_password = true;
        cp->password = mb(c->remote_password);
    }
    uint8_t props[64];
    if (b->level == 5) {
        struct mq_prop_writer w;
        codec_prop_writer_init(&w, props, sizeof(props));
        uint32_t expiry = c->session_expiry >= 0 ? (uint32_t)c->session_expiry
                          : c->cleansession      ? 0
                                                 : UINT32_MAX;
        if (expiry)
            codec_prop_put_u32(&w, MQ_PROP_SESSION_EXPIRY, expiry);
        /* The remote may not have more unacknowledged than the local broker takes from us. */
        uint16_t rx = local_window(b);
        if (c->receive_maximum && c->receive_maximum < rx)
            rx = c->receive_maximum;
        if (rx < 65535)
            codec_prop_put_u16(&w, MQ_PROP_RECEIVE_MAXIMUM, rx);
        if (bcfg(b)->max_packet_size)
            codec_prop_put_u32(&w, MQ_PROP_MAXIMUM_PACKET_SIZE, bcfg(b)->max_packet_size);
        pkt.props.raw = w.len ? props : NULL;
        pkt.props.raw_len = (uint32_t)w.len;
    }
    if (!encode(&b->scratch, &pkt))
        return false;
    remote_send(b, b->scratch.p, b->scratch.len);
    return true;
}

static const void *session_key(const void *session, size_t *len)
{
    const struct mq_session *s = session;
    *len = s->client_id_len;
    return s->client_id;
}

/* The bridge's local session, whether its connection is open or not; NULL when none. */
static struct mq_session *local_session(const struct mq_bridge *b)
{
    const char *id = b->cfg->local_clientid;
    return imap_get(&b->srv->broker->sessions, id, strlen(id), session_key);
}

/* A packet id for our SUBSCRIBE/UNSUBSCRIBE to the remote that the local session, whose ids
 * pass through to the remote unchanged, is not using and will not reach soon. */
static uint16_t spare_pid(struct mq_bridge *b, uint16_t avoid)
{
    struct mq_session *s = local_session(b);
    uint16_t pid = s && s->flow ? (uint16_t)(s->flow->next_packet_id + 32768u) : 32768u;
    for (int i = 0; i < 65536; i++, pid++) {
        if (!pid || pid == avoid)
            continue;
        if (!s || !session_inflight_find(s, pid))
            return pid;
    }
    return 1;
}

/* SUBSCRIBE to the `in` lines' remote filters, UNSUBSCRIBE from `out`-only ones. */
static void send_remote_subscriptions(struct mq_bridge *b)
{
    const struct mq_bridge_config *c = b->cfg;
    struct bytes e = {0};
    uint16_t count = 0;
    uint8_t local_max = (uint8_t)bcfg(b)->max_qos;
    for (size_t i = 0; i < c->topic_count; i++) {
        const struct mq_bridge_topic *t = &c->topics[i];
        if (!(t->direction & MQ_BRIDGE_IN))
            continue;
        uint16_t n = (uint16_t)strlen(t->remote);
        uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
        uint8_t opts = t->qos < local_max ? t->qos : local_max;
        /* MQTT 5: never our own messages back, retained flags as they are, retained messages
         * only for a new subscription; No Local is a protocol error on a shared one
         * ([MQTT-3.8.3-4]), which never sends a message back to its publisher anyway. */
        if (b->level == 5)
            opts |= (strncmp(t->remote, "$share/", 7) ? MQ_SUB_NO_LOCAL : 0) |
                    MQ_SUB_RETAIN_AS_PUBLISHED | (1u << 4);
        if (!bytes_add(&e, len, 2) || !bytes_add(&e, t->remote, n) || !bytes_add(&e, &opts, 1))
            goto nomem;
        count++;
    }
    b->sub_pid = b->unsub_pid = 0;
    if (count) {
        b->sub_pid = spare_pid(b, 0);
        struct mq_packet pkt = {.type = MQ_SUBSCRIBE, .version = b->level == 5 ? 5 : 4};
        pkt.u.subscribe = (struct mq_topic_list){b->sub_pid, count, e.p, (uint32_t)e.len, true};
        if (!encode(&b->scratch, &pkt))
            goto nomem;
        remote_send(b, b->scratch.p, b->scratch.len);
    }
    e.len = 0;
    count = 0;
    for (size_t i = 0; c->attempt_unsubscribe && i < c->topic_count; i++) {
        const struct mq_bridge_topic *t = &c->topics[i];
        bool also_in = false;
        for (size_t k = 0; k < c->topic_count; k++)
            also_in |=
                (c->topics[k].direction & MQ_BRIDGE_IN) && !strcmp(c->topics[k].remote, t->remote);
        if (t->direction != MQ_BRIDGE_OUT || also_in)
            continue;
        uint16_t n = (uint16_t)strlen(t->remote);
        uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
        if (!bytes_add(&e, len, 2) || !bytes_add(&e, t->remote, n))
            goto nomem;
        count++;
    }
    if (count) {
        b->unsub_pid = spare_pid(b, b->sub_pid);
        struct mq_packet pkt = {.type = MQ_UNSUBSCRIBE, .version = b->level == 5 ? 5 : 4};
        pkt.u.subscribe = (struct mq_topic_list){b->unsub_pid, count, e.p, (uint32_t)e.len, false};
        if (!encode(&b->scratch, &pkt))
            goto nomem;
        remote_send(b, b->scratch.p, b->scratch.len);
    }
    bytes_free(&e);
    return;
nomem:
    bytes_free(&e);
    remote_close(b, "out of memory building SUBSCRIBE");
}

/* A PUBLISH of `qos` with pid (0 for QoS 0) in dialect level, into out: fixed and
 * variable header, the MQTT 5 properties (props, a block from a decoded PUBLISH: Topic Alias
 * and Subscription Identifiers are left out, they are the hop's own), the payload. */
static bool build_publish(struct bytes *out, uint8_t level, uint8_t qos, bool dup, bool retain,
                          const uint8_t *topic, size_t topic_len, uint16_t pid,
                          const struct mq_props *props, const uint8_t *payload, uint32_t plen)
{
    uint8_t pbuf[512];
    uint8_t *pb = pbuf;
    size_t plen_props = 0;
    if (level == 5 && props && props->raw_len) {
        if (props->raw_len > sizeof(pbuf) && !(pb = malloc(props->raw_len)))
            return false;
        struct mq_prop_iter it = codec_prop_iter(props->raw, props->raw_len);
        struct mq_prop pr;
        while (codec_prop_next(&it, &pr) > 0) {
            if (pr.id == MQ_PROP_TOPIC_ALIAS || pr.id == MQ_PROP_SUBSCRIPTION_ID)
                continue;
            memcpy(pb + plen_props, pr.raw, pr.raw_len);
            plen_props += pr.raw_len;
        }
    }
    size_t need = MQ_PUBLISH5_HEADER_MAX(topic_len) + plen_props + plen;
    bool ok = !buf_reserve(&out->p, &out->cap, need, 256);
    size_t hn = 0;
    if (ok)
        hn = level == 5 ? codec_publish5_header(qos, dup, retain, topic, (uint16_t)topic_len, pid,
                                                (uint32_t)plen_props, plen, out->p)
                        : codec_publish_header(qos, dup, retain, topic, (uint16_t)topic_len, pid,
                                               plen, out->p);
    ok = ok && hn > 0;
    if (ok) {
        if (plen_props)
            memcpy(out->p + hn, pb, plen_props);
        if (plen)
            memcpy(out->p + hn + plen_props, payload, plen);
        out->len = hn + plen_props + plen;
    }
    if (pb != pbuf)
        free(pb);
    return ok;
}

/* The four-byte acknowledgement of MQTT 3.x (and MQTT 5's short form: success). */
static void ack_bytes4(uint8_t out[4], enum mq_packet_type type, uint16_t pid)
{
    out[0] = (uint8_t)(type << 4 | (type == MQ_PUBREL ? 2 : 0));
    out[1] = 2;
    out[2] = (uint8_t)(pid >> 8);
    out[3] = (uint8_t)pid;
}
/* ---- from the remote ------------------------------------------------------------------------ */

/* A remote PUBLISH this bridge will not deliver still completes its QoS flow with the remote
 * (as 3.1.1 has no negative acknowledgement), so the remote does not resend it forever. */
static void complete_remote(struct mq_bridge *b, const struct mq_publish *p)
{
    uint8_t ack[4];
    if (p->qos == 1) {
        ack_bytes4(ack, MQ_PUBACK, p->packet_id);
        remote_send(b, ack, 4);
    } else if (p->qos == 2) {
        bit_set(&b->done_remote, p->packet_id, true);
        ack_bytes4(ack, MQ_PUBREC, p->packet_id);
        remote_send(b, ack, 4);
    }
}

static void inbound(struct mq_bridge *b, const struct mq_packet *pkt)
{
    const struct mq_publish *p = &pkt->u.publish;
    const struct mq_config *cfg = bcfg(b);
    b->msgs_in++;
    b->traffic_ms = now_ms(b);
    if (b->level == 5 && codec_props_has(&pkt->props, MQ_PROP_TOPIC_ALIAS)) {
        remote_close(b, "the remote used a Topic Alias, which the bridge did not allow");
        return;
    }
    if (p->qos == 2 && bit_get(b->done_remote, p->packet_id)) {
        complete_remote(b, p); /* a resend of one completed here */
        return;
    }
    size_t tlen = 0;
    int line = bridge_map_in(b->cfg->topics, b->cfg->topic_count, p->topic.ptr, p->topic.len,
                             b->topic, MQ_BRIDGE_TOPIC_MAX, &tlen);
    if (line < 0) {
        note_drop(b, "message from the remote on %.*s %s, dropped", (int)p->topic.len,
                  (const char *)p->topic.ptr,
                  line == MQ_BRIDGE_MAP_NONE ? "matches no in/both topic line"
                                             : "is too long once remapped");
        complete_remote(b, p);
        return;
    }
    if (p->qos > cfg->max_qos) {
        note_drop(b, "message from the remote on %.*s has QoS %u, over max_qos %u, dropped",
                  (int)p->topic.len, (const char *)p->topic.ptr, p->qos, cfg->max_qos);
        complete_remote(b, p);
        return;
    }
    if (!local_open(b))
        return; /* not acknowledged: the remote sends it again on the next connection */
    /* The local side is an MQTT 5 client of a broker with limits: keep to them rather than
     * be disconnected for them. */
    if (b->level == 5 && p->qos && b->local->conn.ext &&
        b->local->conn.ext->inflight_in >= local_window(b)) {
        remote_close(b, "the remote sent more unacknowledged QoS 1/2 messages than the Receive "
                        "Maximum it was given");
        return;
    }
    bool retain = p->retain && cfg->retain_available;
    if (!build_publish(&b->lbuf, local_level(b), p->qos, p->dup, retain, b->topic, tlen,
                       p->packet_id, &pkt->props, p->payload, p->payload_len)) {
        note_drop(b, "out of memory forwarding a message on %.*s", (int)tlen,
                  (const char *)b->topic);
        return;
    }
    if (cfg->max_packet_size && b->lbuf.len > cfg->max_packet_size) {
        note_drop(b,
                  "message from the remote on %.*s is over max_packet_size once remapped, "
                  "dropped",
                  (int)tlen, (const char *)b->topic);
        complete_remote(b, p);
        return;
    }
    local_feed(b, b->lbuf.p, b->lbuf.len);
}

/* CONNACK 0: the remote's limits, our subscriptions, the local side. */
static void remote_up(struct mq_bridge *b, const struct mq_packet *pkt)
{
    const struct mq_props *pr = &pkt->props;
    b->remote_rx_max = 65535;
    b->remote_max_qos = 2;
    b->remote_retain = true;
    b->remote_max_packet = b->cfg->max_packet_size;
    b->keepalive = b->cfg->keepalive;
    if (b->level == 5) {
        if (codec_props_has(pr, MQ_PROP_RECEIVE_MAXIMUM))
            b->remote_rx_max = pr->receive_maximum;
        if (codec_props_has(pr, MQ_PROP_MAXIMUM_QOS))
            b->remote_max_qos = pr->maximum_qos;
        if (codec_props_has(pr, MQ_PROP_RETAIN_AVAILABLE))
            b->remote_retain = pr->retain_available;
        if (codec_props_has(pr, MQ_PROP_MAXIMUM_PACKET_SIZE) &&
            (!b->remote_max_packet || pr->maximum_packet_size < b->remote_max_packet))
            b->remote_max_packet = pr->maximum_packet_size;
        if (codec_props_has(pr, MQ_PROP_SERVER_KEEP_ALIVE))
            b->keepalive = pr->server_keep_alive;
    }
    b->state = B_UP;
    b->up_ms = now_ms(b);
    b->ping_out = false;
    b->traffic_ms = now_ms(b);
    mq_log(MQ_LOG_NOTICE, "bridge %s: connected to %s (MQTT %s%s, %s)", b->cfg->name, b->peer,
           b->level == 5   ? "5.0"
           : b->level == 3 ? "3.1"
                           : "3.1.1",
           b->used_private ? " with the bridge bit" : "",
           pkt->u.connack.session_present ? "session resumed" : "new session");
    if (b->cfg->notifications && !b->cfg->notifications_local_only) {
        /* QoS 0: a packet id of our own could collide with the local session's, which pass
         * through unchanged; the will already holds "0" at QoS 1. */
        const char *t = b->cfg->notification_topic;
        if (build_publish(&b->scratch, b->level, 0, false, true, (const uint8_t *)t, strlen(t), 0,
                          NULL, (const uint8_t *)"1", 1))
            remote_send(b, b->scratch.p, b->scratch.len);
    }
    send_remote_subscriptions(b);
    if (!remote_open(b))
        return;
    local_connect(b, false);
    if (b->state == B_UP)
        publish_state(b, true);
}

static const char *connack_words(uint8_t level, uint8_t rc)
{
    if (level == 5)
        return codec_reason_name(rc);
    static const char *const v3[] = {
        "accepted",           "unacceptable protocol version", "identifier rejected",
        "server unavailable", "bad user name or password",     "not authorized"};
    return rc < 6 ? v3[rc] : "unknown return code";
}

static void remote_refused(struct mq_bridge *b, const struct mq_packet *pkt)
{
    uint8_t rc = pkt->u.connack.return_code;
    char why[256];
    if (b->level == 5 && codec_props_has(&pkt->props, MQ_PROP_REASON_STRING))
        snprintf(why, sizeof(why), "the remote refused the connection: CONNACK 0x%02x %s (%.*s)",
                 rc, connack_words(5, rc), (int)pkt->props.reason_string.len,
                 (const char *)pkt->props.reason_string.ptr);
    else
        snprintf(why, sizeof(why), "the remote refused the connection: CONNACK %s%u %s",
                 b->level == 5 ? "0x" : "", rc, connack_words(b->level, rc));
    /* A broker that does not know the bridge bit takes 0x83/0x84 for an unknown level. */
    if (b->used_private && rc == MQ_CONNACK_BAD_PROTOCOL) {
        b->no_private = true;
        mq_log(MQ_LOG_NOTICE,
               "bridge %s: %s refused the bridge bit (try_private): connecting again as a plain "
               "client, so loop prevention relies on the topic lines",
               b->cfg->name, b->peer);
        b->tried = b->tried ? b->tried - 1 : 0; /* the same address again, at once */
    }
    remote_close(b, why);
}

static void check_suback(struct mq_bridge *b, const struct mq_packet *pkt)
{
    const struct mq_suback *sa = &pkt->u.suback;
    size_t k = 0;
    for (size_t i = 0; i < b->cfg->topic_count && k < sa->count; i++) {
        const struct mq_bridge_topic *t = &b->cfg->topics[i];
        if (!(t->direction & MQ_BRIDGE_IN))
            continue;
        uint8_t code = sa->codes[k++];
        if (code >= 0x80)
            mq_log(MQ_LOG_WARNING,
                   "bridge %s: the remote refused the subscription to %s (%s 0x%02x%s%s): "
                   "nothing will come in on it",
                   b->cfg->name, t->remote, "SUBACK", code, b->level == 5 ? " " : "",
                   b->level == 5 ? codec_reason_name(code) : "");
    }
}

static void remote_packet(struct mq_bridge *b, const struct mq_packet *pkt, const uint8_t *raw,
                          size_t n)
{
    if (b->state == B_CONNECTING && pkt->type != MQ_CONNACK) {
        char why[96];
        snprintf(why, sizeof(why), "protocol error: the remote sent %s before CONNACK",
                 codec_type_name(pkt->type));
        remote_close(b, why);
        return;
    }
    switch (pkt->type) {
    case MQ_CONNACK:
        if (b->state != B_CONNECTING) {
            remote_close(b, "protocol error: a second CONNACK from the remote");
            return;
        }
        if (pkt->u.connack.return_code)
            remote_refused(b, pkt);
        else
            remote_up(b, pkt);
        return;
    case MQ_PUBLISH: inbound(b, pkt); return;
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBCOMP:
        /* Acknowledgements of what the local session sent: its packet ids, to it. */
        if (pkt->type == MQ_PUBCOMP && bit_get(b->done_local, pkt->u.ack.packet_id)) {
            bit_set(&b->done_local, pkt->u.ack.packet_id, false);
            return;
        }
        /* MQTT 5: a refusal ends the message's flow on both sides; it is counted here. */
        if (pkt->type != MQ_PUBCOMP && pkt->u.ack.reason >= 0x80)
            note_drop(b, "the remote refused a message (%s 0x%02x %s)", codec_type_name(pkt->type),
                      pkt->u.ack.reason, codec_reason_name(pkt->u.ack.reason));
        local_feed(b, raw, n);
        return;
    case MQ_PUBREL:
        if (bit_get(b->done_remote, pkt->u.ack.packet_id)) {
            uint8_t ack[4];
            bit_set(&b->done_remote, pkt->u.ack.packet_id, false);
            ack_bytes4(ack, MQ_PUBCOMP, pkt->u.ack.packet_id);
            remote_send(b, ack, 4);
            return;
        }
        local_feed(b, raw, n);
        return;
    case MQ_SUBACK:
        if (pkt->u.suback.packet_id == b->sub_pid)
            check_suback(b, pkt);
        return;
    case MQ_UNSUBACK:
    case MQ_PINGRESP: return;
    case MQ_DISCONNECT: {
        char why[256];
        uint8_t rc = pkt->u.disconnect.reason;
        if (codec_props_has(&pkt->props, MQ_PROP_REASON_STRING))
            snprintf(why, sizeof(why), "the remote disconnected: 0x%02x %s (%.*s)", rc,
                     codec_reason_name(rc), (int)pkt->props.reason_string.len,
                     (const char *)pkt->props.reason_string.ptr);
        else
            snprintf(why, sizeof(why), "the remote disconnected: 0x%02x %s", rc,
                     codec_reason_name(rc));
        remote_close(b, why);
        return;
    }
    default: {
        char why[96];
        snprintf(why, sizeof(why), "protocol error: the remote sent %s",
                 codec_type_name(pkt->type));
        remote_close(b, why);
        return;
    }
    }
}

/* Decode every complete packet of data[0..n); keep an unfinished one in b->rin. */
static void remote_input(struct mq_bridge *b, const uint8_t *data, size_t n)
{
    struct mq_client *cl = b->remote;
    if (b->rin.len) {
        if (!bytes_add(&b->rin, data, n)) {
            remote_close(b, "out of memory for input");
            return;
        }
        data = b->rin.p;
        n = b->rin.len;
    }
    uint32_t max = bcfg(b)->max_packet_size;
    struct mq_decode_limits lim = {.max_packet_size = max ? max + 64u * 1024
                                                          : 0, /* a remapped topic may be shorter */
                                   .protocol_level = b->level};
    size_t off = 0;
    b->last_rx_ms = now_ms(b);
    b->ping_out = false;
    while (off < n && b->remote == cl && remote_open(b)) {
        struct mq_packet pkt;
        int r = codec_decode(data + off, n - off, &lim, &pkt);
        if (r == 0)
            break;
        if (r < 0) {
            char why[160];
            snprintf(why, sizeof(why), "protocol error: the remote sent a malformed packet (%s)",
                     mq_strerror(r));
            remote_close(b, why);
            break;
        }
        b->bytes_in += (size_t)r;
        remote_packet(b, &pkt, data + off, (size_t)r);
        off += (size_t)r;
    }
    if (b->remote != cl || !remote_open(b)) {
        b->rin.len = 0;
        return;
    }
    if (data == b->rin.p) {
        memmove(b->rin.p, b->rin.p + off, n - off);
        b->rin.len = n - off;
    } else if (off < n && !bytes_add(&b->rin, data + off, n - off)) {
        remote_close(b, "out of memory for input");
    }
    if (!b->rin.len && b->rin.cap > 65536)
        bytes_free(&b->rin);
}

/* ---- from the local broker ----------------------------------------------------------------- */

/* A local PUBLISH this bridge drops still completes its flow with the local session, later
 * (this runs inside proto's output). */
static void complete_local(struct mq_bridge *b, const struct mq_publish *p)
{
    uint8_t ack[4];
    if (p->qos == 1) {
        ack_bytes4(ack, MQ_PUBACK, p->packet_id);
        local_feed_later(b, ack, 4);
    } else if (p->qos == 2) {
        bit_set(&b->done_local, p->packet_id, true);
        ack_bytes4(ack, MQ_PUBREC, p->packet_id);
        local_feed_later(b, ack, 4);
    }
}

static void outbound(struct mq_bridge *b, const struct mq_packet *pkt)
{
    const struct mq_publish *p = &pkt->u.publish;
    /* Not up (the remote just went; a local side being prepared is sent nothing,
     * no_delivery): not acknowledged, so the session keeps it and sends it again when the
     * bridge is back. A QoS 0 message is lost here, as on any connection that drops. */
    if (b->state != B_UP || !remote_open(b))
        return;
    if (p->qos == 2 && bit_get(b->done_local, p->packet_id)) {
        complete_local(b, p);
        return;
    }
    size_t tlen = 0;
    int line = bridge_map_out(b->cfg->topics, b->cfg->topic_count, p->topic.ptr, p->topic.len,
                              b->topic, MQ_BRIDGE_TOPIC_MAX, &tlen);
    if (line < 0) {
        note_drop(b, "local message on %.*s %s, dropped", (int)p->topic.len,
                  (const char *)p->topic.ptr,
                  line == MQ_BRIDGE_MAP_NONE ? "matches no out/both topic line"
                                             : "is too long once remapped");
        complete_local(b, p);
        return;
    }
    if (p->qos > b->remote_max_qos) {
        note_drop(b,
                  "local message on %.*s has QoS %u, over the remote's maximum QoS %u, "
                  "dropped",
                  (int)p->topic.len, (const char *)p->topic.ptr, p->qos, b->remote_max_qos);
        complete_local(b, p);
        return;
    }
    bool retain = p->retain && b->cfg->outgoing_retain && b->remote_retain;
    if (!build_publish(&b->scratch, b->level, p->qos, p->dup, retain, b->topic, tlen, p->packet_id,
                       &pkt->props, p->payload, p->payload_len)) {
        note_drop(b,
                  "local message on %.*s cannot be forwarded (out of memory or too large), "
                  "dropped",
                  (int)p->topic.len, (const char *)p->topic.ptr);
        complete_local(b, p);
        return;
    }
    if (b->remote_max_packet && b->scratch.len > b->remote_max_packet) {
        note_drop(b,
                  "local message on %.*s is %zu bytes as a PUBLISH, over the remote's limit "
                  "of %u (bridge_max_packet_size or its Maximum Packet Size), dropped",
                  (int)p->topic.len, (const char *)p->topic.ptr, b->scratch.len,
                  b->remote_max_packet);
        complete_local(b, p);
        return;
    }
    remote_send(b, b->scratch.p, b->scratch.len);
    b->msgs_out++;
    b->traffic_ms = now_ms(b);
}

static void local_packet(struct mq_bridge *b, const struct mq_packet *pkt, const uint8_t *raw,
                         size_t n)
{
    switch (pkt->type) {
    case MQ_CONNACK:
        b->local_connacked = true;
        b->local_refused = pkt->u.connack.return_code != 0;
        if (b->local_refused)
            mq_log(MQ_LOG_ERR, "bridge %s: the local broker refused the bridge's session %s: %s",
                   b->cfg->name, b->cfg->local_clientid,
                   connack_words(local_level(b), pkt->u.connack.return_code));
        return;
    case MQ_PUBLISH: outbound(b, pkt); return;
    case MQ_PUBREL:
        if (bit_get(b->done_local, pkt->u.ack.packet_id)) {
            uint8_t ack[4];
            ack_bytes4(ack, MQ_PUBCOMP, pkt->u.ack.packet_id);
            bit_set(&b->done_local, pkt->u.ack.packet_id, false);
            local_feed_later(b, ack, 4);
            return;
        }
        /* The remote has the message. */
        /* fall through */
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBCOMP:
        /* Acknowledgements of what the remote sent: its packet ids, back to it. */
        if (b->state == B_UP)
            remote_send(b, raw, n);
        return;
    case MQ_SUBACK:
        for (unsigned i = 0; i < pkt->u.suback.count; i++)
            if (pkt->u.suback.codes[i] >= 0x80)
                mq_log(MQ_LOG_ERR,
                       "bridge %s: the local broker refused one of the bridge's subscriptions "
                       "(code 0x%02x): messages on it are not forwarded",
                       b->cfg->name, pkt->u.suback.codes[i]);
        return;
    case MQ_DISCONNECT:
        if (!b->all->stopping && pkt->u.disconnect.reason != MQ_RC_SERVER_SHUTTING_DOWN)
            mq_log(MQ_LOG_NOTICE, "bridge %s: the local broker ended the bridge's session %s: %s",
                   b->cfg->name, b->cfg->local_clientid,
                   codec_reason_name(pkt->u.disconnect.reason));
        return;
    default: return; /* UNSUBACK, PINGRESP */
    }
}

/* ---- the two layers ------------------------------------------------------------------------ */

static int layer_attach(struct mq_client *cl, unsigned level, void *ctx)
{
    cl->layer[level].state = ctx;
    return 0;
}

/* The remote connection's top layer: MQTT from the remote. */
static int remote_layer_input(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len)
{
    struct mq_bridge *b = cl->layer[level].state;
    if (b->remote == cl)
        remote_input(b, raw, len);
    return 0;
}

static int no_output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    (void)cl;
    (void)level;
    (void)data;
    (void)len;
    return 0;
}

static void remote_gone(struct mq_bridge *b, const char *reason);

static void remote_layer_detach(struct mq_client *cl, unsigned level)
{
    struct mq_bridge *b = cl->layer[level].state;
    cl->layer[level].state = NULL;
    if (b && b->remote == cl)
        remote_gone(b, cl->close_reason ? cl->close_reason : "connection closed");
}

/* The remote's socket took all that waited: the local session may send what it held back. */
static void remote_layer_drained(struct mq_client *cl, unsigned level)
{
    struct mq_bridge *b = cl->layer[level].state;
    if (b && b->remote == cl && local_open(b))
        proto_conn_drained(&b->local->conn);
}

static const struct mq_transport_ops remote_layer = {
    .name = "bridge",
    .attach = layer_attach,
    .input = remote_layer_input,
    .output = no_output,
    .detach = remote_layer_detach,
    .drained = remote_layer_drained,
};

/* The local connection's only layer: proto's output for the bridge. */
static int local_layer_output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    struct mq_bridge *b = cl->layer[level].state;
    if (!b || b->local != cl)
        return 0;
    if (b->lin.len) {
        if (!bytes_add(&b->lin, data, len)) {
            client_close(cl, "out of memory");
            return -1;
        }
        data = b->lin.p;
        len = b->lin.len;
    }
    struct mq_decode_limits lim = {.protocol_level = local_level(b)};
    size_t off = 0;
    while (off < len && b->local == cl) {
        struct mq_packet pkt;
        int r = codec_decode(data + off, len - off, &lim, &pkt);
        if (r == 0)
            break;
        if (r < 0) { /* proto's own output: cannot happen */
            mq_log(MQ_LOG_ERR, "bridge %s: undecodable packet from the local broker (%s)",
                   b->cfg->name, mq_strerror(r));
            off = len;
            break;
        }
        local_packet(b, &pkt, data + off, (size_t)r);
        off += (size_t)r;
    }
    if (data == b->lin.p) {
        memmove(b->lin.p, b->lin.p + off, len - off);
        b->lin.len = len - off;
    } else if (off < len && !bytes_add(&b->lin, data + off, len - off)) {
        client_close(cl, "out of memory");
        return -1;
    }
    return 0;
}

/* What proto sees as this connection's backlog: what the remote's socket has not taken. */
static size_t local_layer_backlog(const struct mq_client *cl, unsigned level)
{
    const struct mq_bridge *b = cl->layer[level].state;
    if (!b || !b->remote || b->remote->closing || !b->remote->out)
        return 0;
    return b->remote->out->len - b->remote->out->sent;
}

static void local_gone(struct mq_bridge *b);

static void local_layer_detach(struct mq_client *cl, unsigned level)
{
    struct mq_bridge *b = cl->layer[level].state;
    cl->layer[level].state = NULL;
    if (b && b->local == cl)
        local_gone(b);
}

static const struct mq_transport_ops local_layer = {
    .name = "bridge-local",
    .attach = layer_attach,
    .input = NULL,
    .output = local_layer_output,
    .detach = local_layer_detach,
    .backlog = local_layer_backlog,
};

/* ---- the local side ------------------------------------------------------------------------ */

enum local_mode {
    LOCAL_RUN,     /* the remote is up: forward */
    LOCAL_PREPARE, /* make the session and its subscriptions exist, then disconnect */
    LOCAL_END,     /* end the session (a bridge removed by a reload): clean start, disconnect */
};

/* One desired local subscription: an out line's local filter at its QoS. */
static uint8_t want_qos(const struct mq_bridge *b, const char *filter, bool *wanted)
{
    uint8_t q = 0;
    *wanted = false;
    for (size_t i = 0; i < b->cfg->topic_count; i++) {
        const struct mq_bridge_topic *t = &b->cfg->topics[i];
        if ((t->direction & MQ_BRIDGE_OUT) && !strcmp(t->local, filter)) {
            *wanted = true;
            if (t->qos > q)
                q = t->qos;
        }
    }
    return q;
}

/* The options byte the bridge subscribes locally with for QoS q. */
static uint8_t local_sub_opts(const struct mq_bridge *b, uint8_t q, enum local_mode mode)
{
    if (mode == LOCAL_RUN && q > b->remote_max_qos)
        q = b->remote_max_qos;
    /* MQTT 5: never its own messages back, retained flags as published, retained messages
     * only when the subscription is new (not at every reconnection). */
    return local_level(b) == 5 ? (uint8_t)(q | MQ_SUB_NO_LOCAL | MQ_SUB_RETAIN_AS_PUBLISHED | 0x10)
                               : q;
}

/* The grant the local session holds for options opts (what proto records: a 3.x bridge's
 * subscriptions are retain-as-published too). */
static uint32_t grant_of(const struct mq_bridge *b, uint8_t opts)
{
    uint8_t flags = local_level(b) == 5 ? opts & (MQ_SUB_NO_LOCAL | MQ_SUB_RETAIN_AS_PUBLISHED)
                                        : MQ_SUB_RETAIN_AS_PUBLISHED;
    return MQ_GRANT(MQ_SUB_QOS(opts), flags, 0);
}

/* UNSUBSCRIBE what the session holds and no out line wants; SUBSCRIBE what it lacks (or
 * holds with other options): a persistent session keeps its subscriptions, so a reconnection
 * does not subscribe again (and is not sent the retained messages again). Into b->lbuf. */
static bool build_local_subscriptions(struct mq_bridge *b, struct mq_session *s,
                                      enum local_mode mode)
{
    struct bytes un = {0}, sub = {0};
    uint16_t nun = 0, nsub = 0;
    bool ok = true;
    char filter[1024];
    uint32_t pos = 0;
    struct mq_sub_leaf *leaf;
    while (s && ok && (leaf = session_sub_next(s, &pos))) {
        size_t n = sub_tree_leaf_filter(leaf, filter, sizeof(filter));
        if (n >= sizeof(filter))
            continue; /* not one of ours: ours are at most 65535... but a bridge's are short */
        bool wanted;
        want_qos(b, filter, &wanted);
        if (wanted)
            continue;
        uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
        ok = bytes_add(&un, len, 2) && bytes_add(&un, filter, n);
        nun++;
    }
    for (size_t i = 0; ok && i < b->cfg->topic_count; i++) {
        const struct mq_bridge_topic *t = &b->cfg->topics[i];
        if (!(t->direction & MQ_BRIDGE_OUT))
            continue;
        bool dup = false, wanted;
        for (size_t k = 0; k < i; k++)
            dup |= (b->cfg->topics[k].direction & MQ_BRIDGE_OUT) &&
                   !strcmp(b->cfg->topics[k].local, t->local);
        if (dup)
            continue;
        uint8_t opts = local_sub_opts(b, want_qos(b, t->local, &wanted), mode);
        size_t n = strlen(t->local);
        struct mq_sub_leaf *have =
            sub_tree_find(b->srv->broker->subs, (const uint8_t *)t->local, n);
        uint32_t grant;
        if (s && have && sub_tree_leaf_grant(have, s, &grant) && grant == grant_of(b, opts))
            continue;
        uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
        ok = bytes_add(&sub, len, 2) && bytes_add(&sub, t->local, n) && bytes_add(&sub, &opts, 1);
        nsub++;
    }
    b->lbuf.len = 0;
    struct bytes one = {0};
    if (ok && nun) {
        struct mq_packet pkt = {.type = MQ_UNSUBSCRIBE, .version = local_level(b)};
        pkt.u.subscribe = (struct mq_topic_list){1, nun, un.p, (uint32_t)un.len, false};
        ok = encode(&one, &pkt) && bytes_add(&b->lbuf, one.p, one.len);
    }
    if (ok && nsub) {
        struct mq_packet pkt = {.type = MQ_SUBSCRIBE, .version = local_level(b)};
        pkt.u.subscribe = (struct mq_topic_list){2, nsub, sub.p, (uint32_t)sub.len, true};
        ok = encode(&one, &pkt) && bytes_add(&b->lbuf, one.p, one.len);
    }
    bytes_free(&one);
    bytes_free(&un);
    bytes_free(&sub);
    return ok;
}

static void local_disconnect(struct mq_bridge *b)
{
    static const uint8_t disconnect[2] = {MQ_DISCONNECT << 4, 0};
    local_feed(b, disconnect, sizeof(disconnect));
}

/* Open the local side: CONNECT with the bridge's session, then its subscriptions. */
static void local_open_session(struct mq_bridge *b, enum local_mode mode)
{
    const struct mq_bridge_config *c = b->cfg;
    if (b->local) {
        /* The previous one is still closing (its detach comes at the flush): let it go. */
        struct mq_client *old = b->local;
        b->local = NULL;
        client_request_close(old);
    }
    struct mq_client *cl =
        client_open_internal(b->srv, &b->all->lctx, b->local_name, &local_layer, b);
    if (!cl) {
        if (mode == LOCAL_RUN)
            remote_close(b, "out of memory for the bridge's local side");
        return;
    }
    b->local = cl;
    b->local_connacked = b->local_refused = false;
    b->lin.len = 0;
    /* Not to forward (the remote is not up): what the session holds, and what a new
     * subscription brings (retained messages), must stay queued in it, QoS 0 included,
     * rather than be written to a side that drops it. */
    cl->conn.no_delivery = mode != LOCAL_RUN;
    bool clean = mode == LOCAL_END || c->local_cleansession;
    struct mq_packet pkt = {.type = MQ_CONNECT, .version = local_level(b)};
    struct mq_connect *cp = &pkt.u.connect;
    cp->protocol_level = local_level(b);
    cp->bridge = local_level(b) != 5; /* MQTT 5: No Local on each subscription instead */
    cp->clean_session = clean;
    cp->client_id = mb(c->local_clientid);
    uint8_t props[32];
    if (local_level(b) == 5) {
        struct mq_prop_writer w;
        codec_prop_writer_init(&w, props, sizeof(props));
        if (!clean)
            codec_prop_put_u32(&w, MQ_PROP_SESSION_EXPIRY, UINT32_MAX);
        /* The local session sends no more unacknowledged than the remote takes. */
        if (mode == LOCAL_RUN && b->remote_rx_max < 65535)
            codec_prop_put_u16(&w, MQ_PROP_RECEIVE_MAXIMUM, b->remote_rx_max);
        pkt.props.raw = w.len ? props : NULL;
        pkt.props.raw_len = (uint32_t)w.len;
    }
    if (!encode(&b->lbuf, &pkt)) {
        client_request_close(cl);
        if (mode == LOCAL_RUN)
            remote_close(b, "cannot encode the local CONNECT");
        return;
    }
    /* proto answers at once: CONNACK, then what the session resumes (which goes to the
     * remote when it is up). */
    local_feed(b, b->lbuf.p, b->lbuf.len);
    if (b->local != cl || !b->local_connacked || b->local_refused || !local_open(b)) {
        if (b->local == cl)
            client_request_close(cl);
        if (mode == LOCAL_RUN)
            remote_close(b, "the local broker did not accept the bridge's session");
        return;
    }
    struct mq_session *s = cl->conn.session;
    if (mode == LOCAL_END) {
        local_disconnect(b);
        return;
    }
    if (!clean) {
        /* Its QoS 0 waits too while the remote is unreachable (session.h, queue_qos0). */
        struct mq_session_flow *f = session_flow(s);
        if (f)
            f->queue_qos0 = true;
    }
    if (!build_local_subscriptions(b, s, mode)) {
        client_request_close(cl);
        if (mode == LOCAL_RUN)
            remote_close(b, "out of memory subscribing the local side");
        return;
    }
    if (b->lbuf.len)
        local_feed(b, b->lbuf.p, b->lbuf.len);
    if (mode == LOCAL_PREPARE)
        local_disconnect(b);
}

static void local_connect(struct mq_bridge *b, bool prepare)
{
    local_open_session(b, prepare ? LOCAL_PREPARE : LOCAL_RUN);
}

/* At start (and after a reload changed it): the local session and its subscriptions exist
 * before the remote is ever reached, so what the bridge must forward queues from the start. */
static void local_prepare(struct mq_bridge *b)
{
    if (b->cfg->local_cleansession)
        return; /* Mosquitto's meaning: nothing is kept for the remote while it is away */
    struct mq_session *s = local_session(b);
    if (s && !s->conn) {
        bool same = true;
        uint32_t n = 0;
        for (size_t i = 0; same && i < b->cfg->topic_count; i++) {
            const struct mq_bridge_topic *t = &b->cfg->topics[i];
            if (!(t->direction & MQ_BRIDGE_OUT))
                continue;
            bool wanted;
            uint8_t opts = local_sub_opts(b, want_qos(b, t->local, &wanted), LOCAL_PREPARE);
            struct mq_sub_leaf *have =
                sub_tree_find(b->srv->broker->subs, (const uint8_t *)t->local, strlen(t->local));
            uint32_t grant;
            same = have && sub_tree_leaf_grant(have, s, &grant) &&
                   MQ_GRANT_QOS(grant) >= MQ_SUB_QOS(opts);
            n++;
        }
        if (same && n <= s->sub_count && s->sub_count <= n) {
            struct mq_session_flow *f = session_flow(s);
            if (f)
                f->queue_qos0 = true;
            return;
        }
    }
    local_connect(b, true);
}

static void local_gone(struct mq_bridge *b)
{
    b->local = NULL;
    b->lin.len = 0;
    b->defer.len = 0;
    if (b->state == B_UP && remote_open(b))
        remote_close(b, "the bridge's local session was closed (did another client connect with "
                        "its local_clientid?)");
    if (b->end_session)
        uv_timer_start(&b->kick, on_kick, 0, 0);
}

static void on_kick(uv_timer_t *t)
{
    struct mq_bridge *b = t->data;
    if (b->defer.len) {
        /* proto may answer into defer while it reads this: hand over the buffer. */
        struct bytes d = b->defer;
        b->defer = (struct bytes){0};
        local_feed(b, d.p, d.len);
        bytes_free(&d);
    }
    if (b->end_session && !b->local && !b->all->stopping) {
        b->end_session = false;
        local_open_session(b, LOCAL_END);
        mq_log(MQ_LOG_INFO, "bridge %s: removed; its local session %s ended", b->cfg->name,
               b->cfg->local_clientid);
    }
}

/* ---- the connection's life ------------------------------------------------------------------ */

static void remote_close(struct mq_bridge *b, const char *reason)
{
    if (!remote_open(b))
        return;
    snprintf(b->close_why, sizeof(b->close_why), "%s", reason);
    b->remote->close_reason = b->close_why;
    client_request_close(b->remote);
}

/* The next delay: restart_timeout's constant, or decorrelated jitter between base and cap. */
static uint64_t next_sleep(struct mq_bridge *b)
{
    const struct mq_bridge_config *c = b->cfg;
    uint64_t base = (uint64_t)c->restart_base * 1000u;
    if (!c->restart_cap)
        return base;
    uint64_t cap = (uint64_t)c->restart_cap * 1000u;
    uint64_t prev = b->sleep_ms ? b->sleep_ms : base;
    uint64_t hi = prev * 3;
    uint64_t s = base + (hi > base ? rnd(b) % (hi - base + 1) : 0);
    b->sleep_ms = s < cap ? s : cap;
    return b->sleep_ms;
}

/* After a failed attempt or a lost connection: the next address at once while this round has
 * untried ones, else (from the main address again unless round_robin) after the restart
 * delay. Returns the delay, or UINT64_MAX when the bridge does not restart. */
static uint64_t schedule_retry(struct mq_bridge *b, bool was_up)
{
    b->state = B_IDLE;
    if (b->removed || b->all->stopping)
        return UINT64_MAX;
    if (b->cfg->start_type == MQ_BRIDGE_ONCE)
        return UINT64_MAX;
    if (b->lazy_stopped)
        return UINT64_MAX;
    size_t n = b->cfg->address_count;
    /* A connection that lasted starts a new round (the next address at once); one the
     * remote ended right away counts as a failed attempt, so a remote that accepts and then
     * drops the bridge cannot make it reconnect in a tight loop. */
    if (was_up && now_ms(b) - b->up_ms >= (uint64_t)b->cfg->restart_base * 1000u) {
        b->tried = 0;
        b->sleep_ms = 0; /* the backoff starts over from the base */
    }
    uint64_t delay;
    if (b->retry_same) {
        b->retry_same = false;
        delay = 0;
    } else {
        b->tried++;
        b->addr = (b->addr + 1) % n;
        if (b->tried < n) {
            delay = 0;
        } else {
            b->tried = 0;
            if (!b->cfg->round_robin)
                b->addr = 0;
            delay = next_sleep(b);
        }
    }
    b->state = B_WAIT;
    uv_timer_start(&b->timer, attempt_cb, delay, 0);
    return delay;
}

static void retry_words(char *out, size_t size, const struct mq_bridge *b, uint64_t delay)
{
    if (delay == UINT64_MAX)
        snprintf(out, size, "%s",
                 b->removed || b->all->stopping         ? "stopped"
                 : b->cfg->start_type == MQ_BRIDGE_ONCE ? "not restarting (start_type once)"
                 : b->lazy_stopped ? "waiting for the threshold (start_type lazy)"
                                   : "stopped");
    else
        snprintf(out, size, "next attempt in %.1f s (%s)", (double)delay / 1000.0,
                 b->cfg->addresses[b->addr].host);
}

static void attempt_failed(struct mq_bridge *b, const char *why)
{
    uint64_t delay = schedule_retry(b, false);
    char next[160];
    retry_words(next, sizeof(next), b, delay);
    mq_log(MQ_LOG_NOTICE, "bridge %s: %s; %s", b->cfg->name, why, next);
}

static void remote_gone(struct mq_bridge *b, const char *reason)
{
    bool was_up = b->state == B_UP;
    bool handshake = b->state == B_CONNECTING;
    b->remote = NULL;
    b->rin.len = 0;
    if (b->local) {
        struct mq_client *l = b->local;
        if (!l->close_requested && !l->closing) {
            if (!l->close_reason)
                l->close_reason = "the bridge's remote connection ended";
            client_request_close(l);
        }
    }
    if (was_up) {
        b->srv->broker->now_ms = uv_now(&b->srv->loop);
        publish_state(b, false);
    }
    if (b->removed || b->all->stopping) {
        b->state = B_IDLE;
        if (was_up)
            mq_log(MQ_LOG_INFO, "bridge %s: disconnected from %s", b->cfg->name, b->peer);
        return;
    }
    /* A broker that does not know the bridge bit may just close the connection. */
    if (handshake && b->used_private && !b->no_private &&
        (!strcmp(reason, "connection closed by peer") ||
         !strcmp(reason, "connection reset by peer"))) {
        b->no_private = true;
        b->retry_same = true;
        mq_log(MQ_LOG_NOTICE,
               "bridge %s: %s closed the connection on a CONNECT with the bridge bit "
               "(try_private): connecting again as a plain client",
               b->cfg->name, b->peer);
    } else if (handshake && !b->used_private && b->no_private && b->cfg->try_private) {
        b->no_private = false; /* the bridge bit was not the problem: use it again next time */
    }
    uint64_t delay = schedule_retry(b, was_up);
    char next[160];
    retry_words(next, sizeof(next), b, delay);
    if (b->lazy_stopped)
        mq_log(MQ_LOG_INFO, "bridge %s: idle for idle_timeout, disconnected from %s; %s",
               b->cfg->name, b->peer, next);
    else
        mq_log(MQ_LOG_NOTICE, "bridge %s: connection to %s %s: %s; %s", b->cfg->name, b->peer,
               was_up ? "lost" : "failed", reason, next);
}

static void on_dialed(void *ctx, int fd, const char *peer, const char *why)
{
    struct mq_bridge *b = ctx;
    (void)peer;
    b->dial = NULL;
    if (fd < 0) {
        attempt_failed(b, why);
        return;
    }
    const struct mq_bridge_address *a = &b->cfg->addresses[b->addr];
    const struct mq_transport_ops *stack[3];
    void *ctxs[3];
    unsigned depth = 0;
    struct mq_tls_client_target tg = {b->tls, a->host, !b->cfg->insecure};
    /* "mqtt" is the one subprotocol MQTT 3.1.1 and 5 register for WebSocket. */
    struct mq_ws_client_target wt = {a->host, a->port, a->path, a->scheme == MQ_BRIDGE_WSS, "mqtt"};
    bool tls = a->scheme == MQ_BRIDGE_WSS || (a->scheme == MQ_BRIDGE_MQTT && b->tls);
    if (tls) {
        stack[depth] = &tls_client_transport;
        ctxs[depth++] = &tg;
    }
    if (a->scheme != MQ_BRIDGE_MQTT) {
        stack[depth] = &ws_client_transport;
        ctxs[depth++] = &wt;
    }
    stack[depth] = &remote_layer;
    ctxs[depth++] = b;
    b->level = b->cfg->protocol_version;
    b->rin.len = 0;
    struct mq_client *cl = client_open_outgoing(b->srv, fd, b->peer, stack, ctxs, depth);
    if (!cl) {
        attempt_failed(b, "the connection could not be set up (above)");
        return;
    }
    b->remote = cl;
    b->state = B_CONNECTING;
    b->started_ms = b->last_rx_ms = b->last_tx_ms = now_ms(b);
    if (!send_remote_connect(b))
        remote_close(b, "CONNECT cannot be encoded (a client id, user name or password over 65535 "
                        "bytes?)");
}

static void attempt(struct mq_bridge *b)
{
    if (b->removed || b->all->stopping || b->remote || b->dial)
        return;
    const struct mq_bridge_address *a = &b->cfg->addresses[b->addr];
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(b->peer, sizeof(b->peer), "%s%s%s%s:%u%s",
             a->scheme == MQ_BRIDGE_WS    ? "ws://"
             : a->scheme == MQ_BRIDGE_WSS ? "wss://"
                                          : "",
             v6 ? "[" : "", a->host, v6 ? "]" : "", a->port, a->path ? a->path : "");
    if (b->attempts++)
        mq_log(MQ_LOG_INFO, "bridge %s: connecting to %s", b->cfg->name, b->peer);
    else
        mq_log(MQ_LOG_NOTICE, "bridge %s: connecting to %s", b->cfg->name, b->peer);
    b->state = B_DIALING;
    b->dial = dial_start(&b->srv->loop, a->host, a->port, b->cfg->bind_address, DIAL_TIMEOUT_MS,
                         on_dialed, b);
    if (!b->dial)
        attempt_failed(b, "out of memory");
}

static void attempt_cb(uv_timer_t *t)
{
    struct mq_bridge *b = t->data;
    if (b->state == B_WAIT || b->state == B_IDLE)
        attempt(b);
}

/* Start a bridge that was just created: its state is "0" until it connects, its local
 * session is made ready, and unless it is lazy it starts connecting. */
static void begin(struct mq_bridge *b)
{
    b->srv->broker->now_ms = uv_now(&b->srv->loop);
    publish_state(b, false);
    local_prepare(b);
    if (b->cfg->start_type == MQ_BRIDGE_LAZY) {
        b->state = B_IDLE;
        b->lazy_stopped = true;
        return;
    }
    attempt(b);
}

static void begin_cb(uv_timer_t *t)
{
    begin(t->data);
}

/* Stop for good: the remote is told (state 0, DISCONNECT), connections close, dials end. */
static void stop(struct mq_bridge *b)
{
    b->removed = true;
    dial_cancel(b->dial);
    dial_cancel(b->probe);
    b->dial = b->probe = NULL;
    uv_timer_stop(&b->timer);
    bool was_up = b->state == B_UP;
    if (remote_open(b)) {
        if (was_up && b->cfg->notifications && !b->cfg->notifications_local_only &&
            build_publish(&b->scratch, b->level, 0, false, true,
                          (const uint8_t *)b->cfg->notification_topic,
                          strlen(b->cfg->notification_topic), 0, NULL, (const uint8_t *)"0", 1))
            remote_send(b, b->scratch.p, b->scratch.len);
        if (was_up) {
            static const uint8_t disconnect[2] = {MQ_DISCONNECT << 4, 0};
            remote_send(b, disconnect, sizeof(disconnect));
        }
        remote_close(b, "bridge stopped");
    }
    if (b->local && !b->local->close_requested && !b->local->closing) {
        b->local->close_reason = "bridge stopped";
        client_request_close(b->local);
    }
    if (was_up) {
        b->srv->broker->now_ms = uv_now(&b->srv->loop);
        publish_state(b, false);
    }
    b->state = B_IDLE;
}

/* Messages the local session holds for the remote: queued (in memory and on disk). */
static uint64_t queued(const struct mq_bridge *b)
{
    const struct mq_session *s = local_session(b);
    return s ? session_queue_count(s) + session_spilled(s) : 0;
}

static void on_probe(void *ctx, int fd, const char *peer, const char *why)
{
    struct mq_bridge *b = ctx;
    (void)peer;
    (void)why;
    b->probe = NULL;
    if (fd < 0)
        return;
    close(fd);
    if (b->state != B_UP || b->addr == 0 || b->cfg->round_robin)
        return;
    mq_log(MQ_LOG_NOTICE, "bridge %s: the main address %s:%u answers again: moving back to it",
           b->cfg->name, b->cfg->addresses[0].host, b->cfg->addresses[0].port);
    /* schedule_retry moves to the next address, the main one, at once. */
    b->addr = b->cfg->address_count - 1;
    remote_close(b, "moving back to the main address (round_robin false)");
}

static void tick(struct mq_bridge *b, uint64_t now)
{
    /* An offline local session is a bridge waiting for its remote, not a client that went
     * away: persistent_client_expiration must not end it (and its queue) during a long
     * outage. It counts as seen while its bridge runs. */
    struct mq_session *ls = b->local ? NULL : local_session(b);
    if (ls && !ls->conn)
        ls->last_seen_ms = b->srv->broker->now_ms;
    switch (b->state) {
    case B_CONNECTING:
        if (now - b->started_ms >= CONNACK_TIMEOUT_MS)
            remote_close(b, "no CONNACK within 30 s");
        return;
    case B_UP:
        if (b->keepalive) {
            uint64_t ka = (uint64_t)b->keepalive * 1000u;
            if (now - b->last_rx_ms >= ka + ka / 2) {
                char why[96];
                snprintf(why, sizeof(why), "keepalive: nothing received from the remote for %.1f s",
                         (double)(now - b->last_rx_ms) / 1000.0);
                remote_close(b, why);
                return;
            }
            if (!b->ping_out && now - b->last_tx_ms >= ka) {
                static const uint8_t ping[2] = {MQ_PINGREQ << 4, 0};
                remote_send(b, ping, sizeof(ping));
                b->ping_out = true;
            }
        }
        if (b->cfg->start_type == MQ_BRIDGE_LAZY &&
            now - b->traffic_ms >= (uint64_t)b->cfg->idle_timeout * 1000u && !queued(b)) {
            b->lazy_stopped = true;
            static const uint8_t disconnect[2] = {MQ_DISCONNECT << 4, 0};
            remote_send(b, disconnect, sizeof(disconnect));
            remote_close(b, "idle for idle_timeout (start_type lazy)");
            return;
        }
        if (!b->cfg->round_robin && b->addr != 0 && !b->probe) {
            uint64_t every =
                (uint64_t)(b->cfg->restart_cap ? b->cfg->restart_cap : b->cfg->restart_base) *
                1000u;
            if (every < PROBE_MIN_MS)
                every = PROBE_MIN_MS;
            if (now - b->probe_ms >= every) {
                const struct mq_bridge_address *a = &b->cfg->addresses[0];
                b->probe_ms = now;
                b->probe = dial_start(&b->srv->loop, a->host, a->port, b->cfg->bind_address,
                                      DIAL_TIMEOUT_MS, on_probe, b);
            }
        }
        return;
    case B_IDLE:
        if (b->cfg->start_type == MQ_BRIDGE_LAZY && b->lazy_stopped &&
            queued(b) >= b->cfg->threshold) {
            b->lazy_stopped = false;
            b->tried = 0;
            mq_log(MQ_LOG_INFO, "bridge %s: %" PRIu64 " messages queued (threshold %u): starting",
                   b->cfg->name, queued(b), b->cfg->threshold);
            attempt(b);
        }
        return;
    default: return;
    }
}

/* ---- the set of bridges -------------------------------------------------------------------- */

static struct mq_bridges *all_of(struct mq_server *srv)
{
    if (srv->bridges)
        return srv->bridges;
    struct mq_bridges *all = calloc(1, sizeof(*all));
    if (!all)
        return NULL;
    all->lcfg.max_connections = -1;
    all->lcfg.allow_anonymous = true;
    all->lcfg.allow_zero_length_clientid = true;
    all->lcfg.auto_id_prefix = (char *)"auto-";
    all->lctx.cfg = &all->lcfg;
    srv->bridges = all;
    return all;
}

static void bridge_free(struct mq_bridge *b)
{
    if (!b)
        return;
    if (b->tls)
        tls_client_ctx_free(b->tls);
    bytes_free(&b->rin);
    bytes_free(&b->lin);
    bytes_free(&b->defer);
    bytes_free(&b->scratch);
    bytes_free(&b->lbuf);
    free(b->topic);
    free(b->done_remote);
    free(b->done_local);
    free(b);
}

/* A bridge for c (borrowed) with tls (an owned reference, or NULL), not started. */
static struct mq_bridge *bridge_new(struct mq_bridges *all, struct mq_server *srv,
                                    const struct mq_bridge_config *c, void *tls)
{
    struct mq_bridge *b = calloc(1, sizeof(*b));
    if (!b || !(b->topic = malloc(MQ_BRIDGE_TOPIC_MAX))) {
        free(b);
        if (tls)
            tls_client_ctx_free(tls);
        mq_log(MQ_LOG_ERR, "out of memory for bridge %s", c->name);
        return NULL;
    }
    b->all = all;
    b->srv = srv;
    b->cfg = c;
    b->tls = tls;
    b->level = c->protocol_version;
    b->remote_max_qos = 2;
    b->remote_rx_max = 65535;
    b->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)b ^ 0x9e3779b97f4a7c15ull;
    snprintf(b->local_name, sizeof(b->local_name), "bridge:%s", c->name);
    uv_timer_init(&srv->loop, &b->timer);
    uv_timer_init(&srv->loop, &b->kick);
    b->timer.data = b->kick.data = b;
    return b;
}

/* The TLS context a bridge needs, or NULL when it needs none; *failed on error (logged). */
static void *tls_for(const struct mq_bridge_config *c, bool *failed)
{
    bool wss = false;
    for (size_t i = 0; i < c->address_count; i++)
        wss |= c->addresses[i].scheme == MQ_BRIDGE_WSS;
    *failed = false;
    if (!config_bridge_tls(c) && !wss)
        return NULL;
    char name[160];
    snprintf(name, sizeof(name), "bridge %s", c->name);
    struct mq_tls_client_config tc = {
        .name = name,
        .cafile = c->cafile,
        .capath = c->capath,
        .certfile = c->certfile,
        .keyfile = c->keyfile,
        .tls_version = c->tls_version,
        .alpn = c->alpn,
        .identity = c->identity,
        .psk = c->psk,
    };
    void *ctx = tls_client_ctx_new(&tc);
    *failed = !ctx;
    return ctx;
}

static bool push(struct mq_bridge ***v, size_t *n, struct mq_bridge *b)
{
    struct mq_bridge **nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return false;
    nv[(*n)++] = b;
    *v = nv;
    return true;
}

int bridges_start(struct mq_server *srv)
{
    const struct mq_config *cfg = srv->cfg;
    if (!cfg->bridge_count)
        return 0;
    struct mq_bridges *all = all_of(srv);
    if (!all) {
        mq_log(MQ_LOG_ERR, "out of memory for the bridges");
        return -1;
    }
    for (size_t i = 0; i < cfg->bridge_count; i++) {
        bool failed;
        void *tls = tls_for(&cfg->bridges[i], &failed);
        if (failed) {
            mq_log(MQ_LOG_ERR, "bridge %s cannot start (above)", cfg->bridges[i].name);
            return -1;
        }
        struct mq_bridge *b = bridge_new(all, srv, &cfg->bridges[i], tls);
        if (!b || !push(&all->v, &all->n, b)) {
            bridge_free(b);
            return -1;
        }
    }
    for (size_t i = 0; i < all->n; i++)
        begin(all->v[i]);
    return 0;
}

int bridges_reload_prepare(struct mq_server *srv, const struct mq_config *ncfg,
                           struct mq_bridge_reload **out)
{
    struct mq_bridge_reload *r = calloc(1, sizeof(*r));
    size_t n = ncfg->bridge_count;
    if (!r || (n && (!(r->tls = calloc(n, sizeof(*r->tls))) ||
                     !(r->keep = calloc(n, sizeof(*r->keep)))))) {
        mq_log(MQ_LOG_ERR, "reload: out of memory for the bridges");
        bridges_reload_abort(r);
        return -1;
    }
    r->ncfg = ncfg;
    struct mq_bridges *all = srv->bridges;
    for (size_t i = 0; i < n; i++) {
        const struct mq_bridge_config *c = &ncfg->bridges[i];
        for (size_t k = 0; all && k < all->n && !r->keep[i]; k++)
            if (!strcmp(all->v[k]->cfg->name, c->name) && config_bridge_equal(all->v[k]->cfg, c))
                r->keep[i] = all->v[k];
        if (r->keep[i])
            continue;
        bool failed;
        r->tls[i] = tls_for(c, &failed);
        if (failed) {
            mq_log(MQ_LOG_ERR, "reload: bridge %s cannot start (above)", c->name);
            bridges_reload_abort(r);
            return -1;
        }
    }
    *out = r;
    return 0;
}

void bridges_reload_abort(struct mq_bridge_reload *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->tls && i < r->ncfg->bridge_count; i++)
        if (r->tls[i])
            tls_client_ctx_free(r->tls[i]);
    free(r->tls);
    free(r->keep);
    free(r);
}

/* A bridge that is gone: its retained $SYS figures are deleted (empty retained messages). */
static void clear_figures(struct mq_bridge *b)
{
    b->srv->broker->now_ms = uv_now(&b->srv->loop);
    for (size_t k = 0; k < S_COUNT; k++) {
        char topic[256];
        int n = snprintf(topic, sizeof(topic), "$SYS/broker/bridge/%s/%s", b->cfg->name,
                         figures[k].topic);
        if (n > 0 && (size_t)n < sizeof(topic) && b->last[k][0])
            broker_publish_local(b->srv->broker, topic, (size_t)n, "", 0, 0, true);
    }
}

void bridges_reload_commit(struct mq_server *srv, struct mq_bridge_reload *r)
{
    const struct mq_config *ncfg = r->ncfg;
    struct mq_bridges *all = ncfg->bridge_count ? all_of(srv) : srv->bridges;
    if (!all && !ncfg->bridge_count) { /* no bridges before, none now */
        bridges_reload_abort(r);
        return;
    }
    if (!all) {
        mq_log(MQ_LOG_ERR, "reload: out of memory for the bridges; bridges unchanged");
        bridges_reload_abort(r);
        return;
    }
    struct mq_bridge **nv = NULL;
    size_t nn = 0;
    /* The running bridges the new configuration does not keep stop; a session the new one
     * does not take over (another name, or another local_clientid) ends. */
    for (size_t k = 0; k < all->n; k++) {
        struct mq_bridge *old = all->v[k];
        bool kept = false, session_taken = false;
        for (size_t i = 0; i < ncfg->bridge_count; i++) {
            kept |= r->keep[i] == old;
            session_taken |= !strcmp(ncfg->bridges[i].local_clientid, old->cfg->local_clientid);
        }
        if (kept)
            continue;
        mq_log(MQ_LOG_NOTICE, "reload: bridge %s %s", old->cfg->name,
               session_taken ? "changed: restarting it" : "removed: stopping it");
        stop(old);
        bool renamed = true;
        for (size_t i = 0; i < ncfg->bridge_count; i++)
            renamed &= strcmp(ncfg->bridges[i].name, old->cfg->name) != 0;
        if (renamed)
            clear_figures(old);
        if (!session_taken && !old->cfg->local_cleansession) {
            old->end_session = true;
            if (!old->local)
                uv_timer_start(&old->kick, on_kick, 0, 0);
        }
        if (!push(&all->retired, &all->nretired, old))
            mq_log(MQ_LOG_ERR, "reload: out of memory (bridge %s leaks)", old->cfg->name);
    }
    for (size_t i = 0; i < ncfg->bridge_count; i++) {
        struct mq_bridge *b = r->keep[i];
        if (!b) {
            b = bridge_new(all, srv, &ncfg->bridges[i], r->tls[i]);
            r->tls[i] = NULL;
            if (!b)
                continue;
            mq_log(MQ_LOG_NOTICE, "reload: bridge %s starting", b->cfg->name);
            /* After this turn's flush, which closes what the old one had open. */
            uv_timer_start(&b->timer, begin_cb, 0, 0);
        }
        if (!push(&nv, &nn, b)) {
            mq_log(MQ_LOG_ERR, "reload: out of memory (bridge %s)", b->cfg->name);
            stop(b);
            push(&all->retired, &all->nretired, b);
        }
    }
    free(all->v);
    all->v = nv;
    all->n = nn;
    bridges_reload_abort(r);
}

void bridges_tick(struct mq_server *srv)
{
    struct mq_bridges *all = srv->bridges;
    if (!all || all->stopping)
        return;
    uint64_t now = uv_now(&srv->loop);
    for (size_t i = 0; i < all->n; i++)
        tick(all->v[i], now);
}

static void figures_of(const struct mq_bridge *b, uint64_t v[S_COUNT])
{
    const struct mq_session *s = local_session(b);
    v[S_CONNECTED] = b->state == B_UP;
    v[S_MSGS_SENT] = b->msgs_out;
    v[S_MSGS_RECEIVED] = b->msgs_in;
    v[S_BYTES_SENT] = b->bytes_out;
    v[S_BYTES_RECEIVED] = b->bytes_in;
    v[S_QUEUED] = s ? session_queue_count(s) + session_spilled(s) : 0;
    v[S_INFLIGHT] = s ? session_inflight_count(s) : 0;
    v[S_DROPPED] = b->dropped + (s ? session_dropped(s) : 0);
    v[S_RECONNECTS] = b->attempts ? b->attempts - 1 : 0;
}

void bridges_sys(struct mq_server *srv)
{
    struct mq_bridges *all = srv->bridges;
    if (!all)
        return;
    srv->broker->now_ms = uv_now(&srv->loop);
    for (size_t i = 0; i < all->n; i++) {
        struct mq_bridge *b = all->v[i];
        uint64_t v[S_COUNT];
        figures_of(b, v);
        for (size_t k = 0; k < S_COUNT; k++) {
            char topic[256], payload[24];
            snprintf(payload, sizeof(payload), "%" PRIu64, v[k]);
            if (!strcmp(b->last[k], payload))
                continue;
            int n = snprintf(topic, sizeof(topic), "$SYS/broker/bridge/%s/%s", b->cfg->name,
                             figures[k].topic);
            if (n > 0 && (size_t)n < sizeof(topic) &&
                !broker_publish_local(srv->broker, topic, (size_t)n, payload, strlen(payload), 0,
                                      true))
                snprintf(b->last[k], sizeof(b->last[k]), "%s", payload);
        }
    }
}

size_t bridges_format_metrics(const struct mq_server *srv, char *buf, size_t cap)
{
    const struct mq_bridges *all = srv->bridges;
    size_t len = 0;
    if (!all || !all->n)
        return 0;
    for (size_t k = 0; k < S_COUNT; k++) {
        for (size_t i = 0; i <= all->n; i++) {
            char line[512];
            int n;
            if (i == 0) {
                n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", figures[k].prom,
                             figures[k].help, figures[k].prom, figures[k].type);
            } else {
                uint64_t v[S_COUNT];
                figures_of(all->v[i - 1], v);
                n = snprintf(line, sizeof(line), "%s{bridge=\"%s\"} %" PRIu64 "\n", figures[k].prom,
                             all->v[i - 1]->cfg->name, v[k]);
            }
            if (n <= 0)
                continue;
            if (len < cap)
                memcpy(buf + len, line, (size_t)n < cap - len ? (size_t)n : cap - len);
            len += (size_t)n;
        }
    }
    if (cap)
        buf[len < cap ? len : cap - 1] = '\0';
    return len;
}

void bridges_stop(struct mq_server *srv)
{
    struct mq_bridges *all = srv->bridges;
    if (!all)
        return;
    all->stopping = true;
    for (int pass = 0; pass < 2; pass++) {
        struct mq_bridge **v = pass ? all->retired : all->v;
        size_t n = pass ? all->nretired : all->n;
        for (size_t i = 0; i < n; i++) {
            struct mq_bridge *b = v[i];
            if (!b->removed || pass == 0)
                stop(b);
            uv_timer_stop(&b->kick);
            uv_close((uv_handle_t *)&b->timer, NULL);
            uv_close((uv_handle_t *)&b->kick, NULL);
        }
    }
}

void bridges_free(struct mq_server *srv)
{
    struct mq_bridges *all = srv->bridges;
    if (!all)
        return;
    for (size_t i = 0; i < all->n; i++)
        bridge_free(all->v[i]);
    for (size_t i = 0; i < all->nretired; i++)
        bridge_free(all->retired[i]);
    free(all->v);
    free(all->retired);
    free(all);
    srv->bridges = NULL;
}

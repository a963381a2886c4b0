/* proto.c - the broker object, connection lifecycle, packet dispatch and the one
 * place that maps a protocol error to its action.
 *
 * Owns struct mq_broker and struct mq_conn. A connection moves: new -> connected
 * (CONNACK 0 sent) -> closing (sink asked to close) -> given back to the io by proto_conn_closed
 * (the io owns the storage).
 * Once closing, input is ignored and nothing more is sent to it.
 */
#include "midge/proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/acl.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/sys.h"
#include "proto_internal.h"

const void *broker_session_key(const void *session, size_t *len)
{
    const struct mq_session *s = session;
    *len = s->client_id_len;
    return s->client_id;
}

struct mq_broker *broker_new(const struct mq_config *cfg, const struct mq_sink_ops *sink,
                             uint64_t now_ms)
{
    struct mq_broker *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->cfg = cfg;
    b->sink = sink;
    b->now_ms = now_ms;
    b->start_ms = now_ms;
    imap_init(&b->sessions);
    hmap_init(&b->page_wait);
    b->subs = sub_tree_new();
    b->shares = sub_tree_new();
    hmap_init(&b->share_groups);
    hmap_init(&b->share_by_id);
    b->retained = retain_new();
    if (!b->subs || !b->shares || !b->retained) {
        broker_free(b);
        return NULL;
    }
    return b;
}

void broker_free(struct mq_broker *b)
{
    if (!b)
        return;
    uint32_t pos = 0;
    struct mq_session *s;
    while ((s = imap_next(&b->sessions, &pos)))
        session_destroy(b, s);
    imap_destroy(&b->sessions);
    wills_free(b);
    hmap_destroy(&b->page_wait);
    share_free_all(b);
    sub_tree_free(b->subs);
    sub_tree_free(b->shares);
    retain_free(b->retained);
    sub_vec_free(&b->match_scratch);
    free(b->id_scratch);
    sub_vec_free(&b->share_scratch);
    persist_free(b);
    free(b);
}

void broker_set_config(struct mq_broker *b, const struct mq_config *cfg)
{
    b->cfg = cfg;
}

void proto_conn_open(struct mq_conn *c, struct mq_broker *b, struct mq_listener_ctx *listener,
                     const char *peer)
{
    *c = (struct mq_conn){0};
    c->broker = b;
    c->listener = listener;
    c->last_rx_ms = (uint32_t)b->now_ms;
    b->stats.sockets_total++;
    c->peer = peer;
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
}

bool topic_too_deep(const struct mq_broker *b, const uint8_t *topic, size_t len)
{
    uint32_t max = b->cfg ? b->cfg->max_topic_levels : 0;
    if (!max || len < max)
        return false; /* fewer bytes than levels allowed: cannot be too deep */
    uint32_t levels = 1;
    for (size_t i = 0; i < len; i++)
        if (topic[i] == '/' && ++levels > max)
            return true;
    return false;
}

bool session_acl_allows(const struct mq_session *s, const struct mq_acl *acl, const uint8_t *topic,
                        size_t len, int access)
{
    return acl_check(acl, s->username, s->client_id, topic, len, (enum mq_acl_access)access);
}

const char *conn_name(const struct mq_conn *c)
{
    return c->session ? c->session->client_id : "(not connected)";
}

/* An MQTT 5 client's send quota comes back when the PUBACK, or the PUBCOMP, or a failing
 * PUBREC of one of its PUBLISHes goes out on the wire: count it here, where every
 * acknowledgement passes, held back by the store or not ([MQTT-4.9.0-2] seen from the
 * receiving side). */
static void note_ack_sent(struct mq_conn *c, const uint8_t *bytes, size_t len)
{
    struct mq_conn_ext *x = c->ext;
    if (!x || !x->inflight_in || len < 4)
        return;
    unsigned type = bytes[0] >> 4;
    if (type == MQ_PUBACK || type == MQ_PUBCOMP ||
        (type == MQ_PUBREC && len > 4 && bytes[4] >= 0x80))
        x->inflight_in--;
}

void conn_send(struct mq_conn *c, const uint8_t *bytes, size_t len)
{
    if (c->closing)
        return;
    struct mq_iov iov = {bytes, len};
    c->broker->sink->write(c, &iov, 1);
    c->broker->stats.msgs_sent++;
    c->broker->stats.bytes_sent += len;
    c->bytes_out += len;
    if (c->ext)
        note_ack_sent(c, bytes, len);
}

struct mq_conn_ext *conn_ext(struct mq_conn *c)
{
    if (!c->ext && (c->ext = calloc(1, sizeof(*c->ext))))
        c->ext->problem_info = true;
    return c->ext;
}

static void aliases_free(struct mq_alias *a, uint16_t n)
{
    for (uint16_t i = 0; a && i < n; i++)
        free(a[i].topic);
    free(a);
}

static void conn_ext_free(struct mq_conn *c)
{
    struct mq_conn_ext *x = c->ext;
    if (!x)
        return;
    free(x->identity);
    aliases_free(x->alias_in, x->alias_max_in);
    aliases_free(x->alias_out, x->alias_out_used);
    free(x);
    c->ext = NULL;
}

static void close_logged(struct mq_conn *c, bool publish_will, const char *reason)
{
    const struct mq_config *cfg = c->broker->cfg;
    if (cfg && !cfg->connection_messages)
        ; /* connection_messages false: no connect/disconnect lines, as in Mosquitto */
    else if (c->session)
        mq_log(MQ_LOG_NOTICE, "client %s disconnected: %s", c->session->client_id, reason);
    else
        mq_log(MQ_LOG_NOTICE, "connection from %s closed: %s", c->peer, reason);
    conn_shutdown(c, publish_will);
}

void conn_close(struct mq_conn *c, bool publish_will, const char *fmt, ...)
{
    if (c->closing)
        return;
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    close_logged(c, publish_will, reason);
}

static void close_rc(struct mq_conn *c, uint8_t rc, bool publish_will, const char *fmt, va_list ap)
{
    if (c->closing)
        return;
    char why[256], line[320];
    vsnprintf(why, sizeof(why), fmt, ap);
    if (!conn_v5(c) || !c->connected) {
        close_logged(c, publish_will, why);
        return;
    }
    conn_send_disconnect(c, rc, why);
    snprintf(line, sizeof(line), "%s (DISCONNECT 0x%02x %s)", why, rc, codec_reason_name(rc));
    close_logged(c, publish_will, line);
}

void conn_close_rc(struct mq_conn *c, uint8_t reason, bool publish_will, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    close_rc(c, reason, publish_will, fmt, ap);
    va_end(ap);
}

void conn_violation(struct mq_conn *c, uint8_t reason, const char *fmt, ...)
{
    if (c->closing)
        return;
    c->broker->stats.protocol_errors++;
    va_list ap;
    va_start(ap, fmt);
    close_rc(c, reason, true, fmt, ap);
    va_end(ap);
}

void conn_shutdown(struct mq_conn *c, bool publish_will)
{
    if (c->closing)
        return;
    c->closing = true;
    struct mq_broker *b = c->broker;
    struct mq_msg *will = c->will;
    c->will = NULL;
    struct mq_session *s = c->session;
    if (will && publish_will && s &&
        !session_may(s, (const uint8_t *)will->topic, will->topic_len, MQ_ACL_WRITE)) {
        mq_log(MQ_LOG_NOTICE, "client %s: will on %s not published: acl_file denies write",
               s->client_id, will->topic);
        publish_will = false;
    }
    /* An MQTT 5 will with a Will Delay Interval waits, if its session outlives the
     * connection, for the client to come back ([MQTT-3.1.2-8]); at shutdown it goes now. */
    uint32_t delay = c->ext && conn_v5(c) ? c->ext->will_delay : 0;
    bool delayed = will && publish_will && delay && s && !s->clean && !b->shutting_down;
    /* The will is still the connection's alone: its expiry counts from when it is due. */
    if (will && publish_will && c->ext && c->ext->will_expiry)
        will->expires_ms = b->now_ms + (delayed ? (uint64_t)delay * 1000u : 0) +
                           (uint64_t)c->ext->will_expiry * 1000u;
    /* Detach before publishing the will so it is never delivered back to this
     * connection, which is going away (a clean session is freed here). */
    session_detach(c);
    if (delayed && will_delay(b, s, will, delay) == 0)
        publish_will = false;
    if (will) {
        if (publish_will)
            broker_publish(b, will, NULL);
        msg_unref(will);
    }
    b->sink->close(c);
}

void proto_conn_closed(struct mq_conn *c, const char *reason)
{
    struct mq_broker *b = c->broker;
    conn_close(c, true, "%s", reason);
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->deferred)
        conn_forget_deferred(c);
    conn_ext_free(c);
}

int proto_conn_set_identity(struct mq_conn *c, const char *id)
{
    char *copy = strdup(id);
    struct mq_conn_ext *x = copy ? conn_ext(c) : NULL;
    if (!x) {
        free(copy);
        return MQ_ERR_NOMEM;
    }
    free(x->identity);
    x->identity = copy;
    return 0;
}

/* Packets a server must never receive. */
static bool client_may_send(unsigned type)
{
    switch (type) {
    case MQ_CONNACK:
    case MQ_SUBACK:
    case MQ_UNSUBACK:
    case MQ_PINGRESP: return false;
    default: return true;
    }
}

static void protocol_error(struct mq_conn *c, int err, unsigned type)
{
    /* MQTT 5 says which: Malformed Packet, Protocol Error, Packet Too Large, ... */
    uint8_t rc = codec_error_reason(err);
    /* A reserved type has no name (15 is AUTH only on an MQTT 5 connection). */
    if (type >= MQ_CONNECT && type <= MQ_AUTH && err != MQ_ERR_BAD_TYPE)
        conn_violation(c, rc, "protocol error: %s (%s)", mq_strerror(err), codec_type_name(type));
    else
        conn_violation(c, rc, "protocol error: %s", mq_strerror(err));
}

/* Handle one decoded packet (or the CONNECT-specific decode error). */
static void dispatch(struct mq_conn *c, const struct mq_packet *p, int decode_err)
{
    if (!c->connected) {
        if (p->type != MQ_CONNECT) {
            protocol_error(c, MQ_ERR_FIRST_NOT_CONNECT, p->type); /* [MQTT-3.1.0-1] */
            return;
        }
        handle_connect(c, p, decode_err);
        return;
    }
    if (!client_may_send(p->type)) {
        protocol_error(c, MQ_ERR_UNEXPECTED_PACKET, p->type);
        return;
    }
    switch (p->type) {
    case MQ_CONNECT: protocol_error(c, MQ_ERR_SECOND_CONNECT, p->type); break; /* [MQTT-3.1.0-2] */
    case MQ_PUBLISH: handle_publish(c, &p->u.publish, &p->props); break;
    case MQ_PUBACK: handle_puback(c, p->u.ack.packet_id, p->u.ack.reason); break;
    case MQ_PUBREC: handle_pubrec(c, p->u.ack.packet_id, p->u.ack.reason); break;
    case MQ_PUBREL: handle_pubrel(c, p->u.ack.packet_id); break;
    case MQ_PUBCOMP: handle_pubcomp(c, p->u.ack.packet_id); break;
    case MQ_SUBSCRIBE: handle_subscribe(c, &p->u.subscribe, &p->props); break;
    case MQ_UNSUBSCRIBE: handle_unsubscribe(c, &p->u.subscribe); break;
    case MQ_PINGREQ: {
        static const uint8_t pingresp[2] = {MQ_PINGRESP << 4, 0};
        conn_send(c, pingresp, sizeof(pingresp)); /* [MQTT-3.12.4-1] */
        break;
    }
    case MQ_DISCONNECT: handle_disconnect(c, p->u.disconnect.reason, &p->props); break;
    case MQ_AUTH:
        /* No authentication method is configured, so none was agreed in CONNECT: an AUTH
         * is a protocol error ([MQTT-4.12.0-6] seen from the server). */
        conn_violation(c, MQ_RC_PROTOCOL_ERROR,
                       "protocol error: AUTH without an authentication method");
        break;
    default: protocol_error(c, MQ_ERR_UNEXPECTED_PACKET, p->type); break;
    }
}

size_t proto_conn_input(struct mq_conn *c, const uint8_t *buf, size_t len, size_t *need)
{
    struct mq_broker *b = c->broker;
    uint32_t configured = b->cfg ? b->cfg->max_packet_size : 0;
    size_t off = 0;
    if (need)
        *need = 0;
    while (off < len && !c->closing) {
        /* Before CONNECT only a CONNECT is acceptable, and none can be larger than its five
         * 64 KiB strings allow: an unauthenticated peer cannot make us buffer more. Decided
         * per packet: the CONNECT and a large PUBLISH may arrive in one read. */
        bool connect_cap = !c->connected && (!configured || configured > MQ_MAX_CONNECT_PACKET);
        struct mq_decode_limits limits = {.max_packet_size =
                                              connect_cap ? MQ_MAX_CONNECT_PACKET : configured,
                                          .protocol_level = c->connected ? c->protocol_level : 0};
        struct mq_packet p;
        int n = codec_decode(buf + off, len - off, &limits, &p);
        if (n == 0) {
            if (need)
                *need = codec_packet_size(buf + off, len - off);
            break;
        }
        /* A CONNECT refused with a CONNACK code (3.x: bad level, no 3.1 client id; MQTT 5:
         * any decode error) goes to handle_connect; everything else is closed here. */
        bool answerable = n < 0 && !c->connected && codec_connect_refusal(n, &p);
        if (n == MQ_ERR_TOO_LARGE && connect_cap && !answerable)
            n = MQ_ERR_CONNECT_TOO_LARGE; /* our bound, not the configured one */
        if (n < 0 && !answerable) {
            protocol_error(c, n, buf[off] >> 4);
            return len;
        }
        size_t size = n > 0 ? (size_t)n : len - off;
        if (c->connected)
            c->last_rx_ms = (uint32_t)b->now_ms;
        b->stats.msgs_received++;
        b->stats.bytes_received += size;
        c->bytes_in += size;
        dispatch(c, &p, n < 0 ? n : 0);
        off += size;
    }
    return c->closing ? len : off;
}

/* Sessions that outlived their connection are removed once they expire, with their queue:
 * an MQTT 5 session after its Session Expiry Interval ([MQTT-4.1.0-2]), one that never
 * expires (3.1.1 clean session 0, MQTT 5 0xFFFFFFFF) after persistent_client_expiration,
 * so abandoned ids cannot pile up queues forever. */
static void expire_sessions(struct mq_broker *b)
{
    int64_t never_s = b->cfg ? b->cfg->persistent_client_expiration : 0;
    uint32_t pos = 0;
    struct mq_session *s;
    while ((s = imap_next(&b->sessions, &pos))) {
        if (s->conn)
            continue;
        uint32_t expiry = session_expiry(s);
        uint64_t limit_ms;
        if (expiry == MQ_EXPIRY_NEVER) {
            if (never_s <= 0)
                continue;
            limit_ms = (uint64_t)never_s * 1000u;
        } else {
            limit_ms = (uint64_t)expiry * 1000u;
        }
        if (b->now_ms - s->last_seen_ms < limit_ms)
            continue;
        mq_log(MQ_LOG_NOTICE,
               "client %s expired: away for more than %llu s (%s); %u queued messages discarded",
               s->client_id, (unsigned long long)(limit_ms / 1000),
               expiry == MQ_EXPIRY_NEVER ? "persistent_client_expiration"
                                         : "its Session Expiry Interval",
               session_queue_count(s) + session_inflight_count(s));
        b->stats.clients_expired++;
        session_end(b, s); /* imap_next allows removing the entry just returned */
    }
}

/* memory_limit: sampled each tick; over it the broker stops taking on new work (new
 * connections, incoming messages) while it keeps delivering what it holds. */
static void check_memory(struct mq_broker *b)
{
    uint64_t limit = b->cfg ? b->cfg->memory_limit : 0, used = 0;
    bool over = limit && sys_heap_in_use(&used) && used > limit;
    if (over != b->memory_exceeded)
        mq_log(over ? MQ_LOG_WARNING : MQ_LOG_NOTICE,
               over ? "memory_limit: %llu bytes in use, over the limit of %llu: refusing new "
                      "connections and incoming messages until it falls"
                    : "memory_limit: %llu bytes in use, under the limit of %llu again: "
                      "accepting connections and messages",
               (unsigned long long)used, (unsigned long long)limit);
    b->memory_exceeded = over;
}

void broker_tick(struct mq_broker *b)
{
    check_memory(b);
    /* Sessions are scanned once a second at most: expiry is measured in hours. */
    if (b->now_ms - b->last_expiry_scan_ms >= 1000) {
        b->last_expiry_scan_ms = b->now_ms;
        expire_sessions(b);
    }
    uint64_t connect_ms = (uint64_t)(b->cfg ? b->cfg->connect_timeout : 10) * 1000u;
    wills_due(b);
    for (struct mq_conn *c = b->conns; c; c = c->next) {
        if (c->closing)
            continue;
        /* A backlog over the limit that does not shrink for 5 s is a client that has
         * stopped reading, even if it is only ever sent QoS 0 (which is dropped, so its
         * backlog never reaches twice the limit). */
        if (c->over_limit_since_ms && b->sink->backlog && b->cfg && b->cfg->client_output_limit) {
            if (b->sink->backlog(c) <= b->cfg->client_output_limit)
                c->over_limit_since_ms = 0;
            else if (ms_since(b->now_ms, c->over_limit_since_ms) >= 5000)
                c->not_reading = true;
        }
        if (c->not_reading) {
            b->stats.slow_disconnects++;
            conn_close_rc(c, MQ_RC_QUOTA_EXCEEDED, true,
                          "not reading: more than %llu bytes of output waiting",
                          (unsigned long long)(2 * (b->cfg ? b->cfg->client_output_limit : 0)));
            continue;
        }
        /* A socket that never completes CONNECT (or sends it a byte a minute) holds a
         * connection slot and memory: give it connect_timeout seconds. */
        if (!c->connected) {
            if (connect_ms && ms_since(b->now_ms, c->last_rx_ms) >= connect_ms)
                conn_close(c, false, "no CONNECT within %llu s",
                           (unsigned long long)(connect_ms / 1000));
            continue;
        }
        if (!c->keepalive)
            continue;
        /* [MQTT-3.1.2-24]: one and a half times the keepalive without a packet. */
        uint64_t limit_ms = (uint64_t)c->keepalive * 1500u;
        if (ms_since(b->now_ms, c->last_rx_ms) >= limit_ms)
            conn_close_rc(c, MQ_RC_KEEP_ALIVE_TIMEOUT, true, "keepalive %u s exceeded",
                          c->keepalive);
    }
}

void broker_close_all(struct mq_broker *b)
{
    b->shutting_down = true; /* wills go out now, delayed or not (wills_publish_all) */
    for (struct mq_conn *c = b->conns; c; c = c->next)
        conn_close_rc(c, MQ_RC_SERVER_SHUTTING_DOWN, true, "broker shutting down");
    wills_publish_all(b);
}

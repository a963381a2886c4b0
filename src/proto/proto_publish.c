/* proto_publish.c - PUBLISH and its acknowledgements in both directions, routing
 * to subscribers, and the outgoing window/queue policy.
 *
 * Invariants: a session's queue is drained in order into its in-flight window, so
 * messages reach a subscriber in the order they were routed to it; an inbound QoS 2
 * packet id is delivered once until its PUBREL ([MQTT-4.3.3-2]).
 */
#include <stdlib.h>
#include <string.h>

#include "midge/acl.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/topic.h"
#include "proto_internal.h"

static uint32_t max_inflight(const struct mq_broker *b)
{
    uint32_t n = b->cfg ? b->cfg->max_inflight_messages : 20;
    /* 0 means unlimited; packet ids bound a window to 65535 anyway. */
    return n == 0 || n > 65535 ? 65535 : n;
}

/* The session's send window: max_inflight_messages, and for an MQTT 5 client no more than
 * the Receive Maximum it asked for ([MQTT-3.3.4-9], [MQTT-4.9.0-1]). */
static bool window_open(const struct mq_broker *b, const struct mq_session *s)
{
    uint32_t max = max_inflight(b);
    const struct mq_conn *c = s->conn;
    if (c && conn_v5(c) && c->ext && c->ext->receive_max_out && c->ext->receive_max_out < max)
        max = c->ext->receive_max_out;
    return session_inflight_count(s) < max;
}

/* Count and log (at most one line per 10 s per client) a message not sent because it
 * exceeds the client's Maximum Packet Size. */
static void note_too_large(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m);

/* The properties that travel with a message to every MQTT 5 subscriber. */
static bool forwarded_prop(uint8_t id)
{
    return id == MQ_PROP_PAYLOAD_FORMAT || id == MQ_PROP_CONTENT_TYPE ||
           id == MQ_PROP_RESPONSE_TOPIC || id == MQ_PROP_CORRELATION_DATA || id == MQ_PROP_USER;
}

/* Send a QoS 1/2 message now, recording it in the window. seq: its number in the store
 * (0: not stored yet; a persistent session's message is then stored here). ids (owned,
 * may be NULL) are its Subscription Identifiers. */
static void send_inflight(struct mq_broker *b, struct mq_session *s, struct mq_msg *m, uint8_t qos,
                          bool retain, uint64_t seq, struct mq_sub_ids *ids, uint32_t share_id)
{
    uint64_t before = b->store_changes;
    uint32_t one;
    const uint32_t *list = NULL;
    size_t n_ids = ids && ids->v ? sub_ids_view(ids, &one, &list) : 0;
    /* Only an MQTT 5 client has a Maximum Packet Size. */
    if (conn_v5(s->conn) && !conn_publish_fits(s->conn, m, qos, list, n_ids)) {
        /* [MQTT-3.1.2-25]: as if delivered; it never takes a packet id. */
        note_too_large(b, s, m);
        persist_msg_done(b, s, seq);
        if (ids)
            sub_ids_free(ids);
        return;
    }
    if (!seq && (seq = persist_msg_add(b, s, m, qos, retain, list, n_ids)))
        s->flow->disk->queued_last_seq = seq; /* a stored message: disk exists */
    uint16_t pid = session_next_packet_id(s);
    struct mq_inflight *e =
        pid ? session_inflight_add(s, m, qos, retain, pid, seq, ids, share_id) : NULL;
    if (!e) {
        mq_log(MQ_LOG_ERR, "client %s: out of memory, message on %s dropped", s->client_id,
               m->topic);
        b->stats.pub_dropped++;
        persist_msg_done(b, s, seq);
        if (ids)
            sub_ids_free(ids);
        return;
    }
    persist_msg_state(b, s, e);
    n_ids = e->sub_ids.v ? sub_ids_view(&e->sub_ids, &one, &list) : 0;
    conn_publish_durable(s->conn, m, qos, retain, false, pid, list, n_ids, before);
}

/* Count a drop for s; true when it should be logged: the first one, then at most one
 * line per 10 s per client, so a flood cannot flood the log. */
static bool count_drop(struct mq_broker *b, struct mq_session *s)
{
    b->stats.pub_dropped++;
    struct mq_session_flow *f = session_flow(s);
    if (!f)
        return true; /* out of memory: not counted per client, logged */
    if (f->dropped++ && b->now_ms - f->drop_logged_ms < 10000)
        return false;
    f->drop_logged_ms = b->now_ms;
    return true;
}

/* The queue caps count the messages waiting on disk too. */
static bool queue_full(const struct mq_broker *b, const struct mq_session *s,
                       const struct mq_msg *m)
{
    const struct mq_config *cfg = b->cfg;
    uint32_t max_messages = cfg ? cfg->max_queued_messages : 1000;
    uint64_t max_bytes = cfg ? cfg->max_queued_bytes : 0;
    if (max_messages && session_queue_count(s) + session_spilled(s) >= max_messages)
        return true;
    return max_bytes &&
           session_queue_bytes(s) + session_spilled_bytes(s) + m->payload_len > max_bytes;
}

static void note_drop(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m)
{
    if (count_drop(b, s))
        mq_log(MQ_LOG_WARNING,
               "client %s: queue full (%u messages, %llu bytes), dropped message on %s "
               "(%llu dropped so far)",
               s->client_id, (unsigned)(session_queue_count(s) + session_spilled(s)),
               (unsigned long long)(session_queue_bytes(s) + session_spilled_bytes(s)), m->topic,
               (unsigned long long)session_dropped(s));
}

static void note_too_large(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m)
{
    b->stats.pub_dropped_too_large++;
    if (count_drop(b, s))
        mq_log(MQ_LOG_WARNING,
               "client %s: message on %s (%u bytes) not sent: over the client's Maximum "
               "Packet Size of %u (%llu dropped so far)",
               s->client_id, m->topic, m->payload_len,
               s->conn && s->conn->ext ? s->conn->ext->max_packet_out : 0,
               (unsigned long long)session_dropped(s));
}

/* Count a message whose Message Expiry Interval passed before it could be sent: it is
 * deleted, never delivered ([MQTT-3.3.2-5]). */
static void note_expired(struct mq_broker *b, struct mq_session *s, uint64_t seq)
{
    b->stats.msgs_expired++;
    persist_msg_done(b, s, seq);
}

/* Send a QoS 0 copy to s, online, now. A session that queues its QoS 0 in line (a bridge's)
 * sends it behind the packets to it that wait for the store (durability ack), so that it does
 * not overtake a QoS 1/2 PUBLISH routed before it; other sessions' QoS 0 never waits. */
static bool send_qos0_behind_store(struct mq_broker *b, struct mq_session *s, struct mq_msg *m,
                                   bool retain, const uint32_t *ids, size_t n_ids)
{
    struct mq_conn *c = s->conn;
    if (!session_queues_qos0(s) || (conn_v5(c) && !conn_publish_fits(c, m, 0, ids, n_ids)))
        return false;
    conn_publish_durable(c, m, 0, retain, false, 0, ids, n_ids, b->store_changes);
    return true;
}

/* Inline: every QoS 0 delivery passes here, and almost none waits. */
static inline void send_qos0(struct mq_broker *b, struct mq_session *s, struct mq_msg *m,
                             bool retain, const uint32_t *ids, size_t n_ids)
{
    if (s->conn->deferred && send_qos0_behind_store(b, s, m, retain, ids, n_ids))
        return;
    if (!conn_send_publish(s->conn, m, 0, retain, false, 0, ids, n_ids))
        note_too_large(b, s, m);
}

/* How far the client is behind in reading: 0 fine, 1 over the limit (hold QoS 0),
 * 2 over twice the limit (it is not reading: disconnect). */
static int output_pressure(const struct mq_broker *b, const struct mq_conn *c)
{
    uint64_t limit = b->cfg ? b->cfg->client_output_limit : 0;
    if (!limit || !b->sink->backlog)
        return 0;
    size_t backlog = b->sink->backlog(c);
    return backlog > 2 * limit ? 2 : backlog > limit ? 1 : 0;
}

void session_deliver(struct mq_broker *b, struct mq_session *s, struct mq_msg *m,
                     const struct mq_route *r)
{
    const struct mq_config *cfg = b->cfg;
    uint8_t qos = r->qos;
    const uint32_t *ids = r->ids;
    size_t n_ids = r->n_ids;
    bool retain = r->flags & MQ_DELIVER_RETAIN, force = r->flags & MQ_DELIVER_FORCE;
    bool hold = r->flags & MQ_DELIVER_HOLD;
    bool online = s->conn && !s->conn->closing && !s->conn->no_delivery;
    if (m->expires_ms && msg_expired(m, b->now_ms)) { /* e.g. a retained one that ran out */
        b->stats.msgs_expired++;
        return;
    }
    int pressure = online ? output_pressure(b, s->conn) : 0;
    if (pressure == 2) {
        /* Closed by broker_tick, not here: closing publishes the will and may destroy
         * sessions, which must not happen in the middle of a routing pass. */
        s->conn->not_reading = true;
        pressure = 1;
    }
    if (pressure && !s->conn->over_limit_since_ms) {
        uint32_t now = (uint32_t)b->now_ms;
        s->conn->over_limit_since_ms = now ? now : 1; /* 0 means "not over" */
    }
    /* A QoS 0 copy that waits is stored like a QoS 1/2 one (and may wait on disk) only for a
     * stored session that queues its QoS 0 in line (a bridge's): nothing else stores QoS 0.
     * Such a copy must not overtake messages that wait on disk either. */
    bool stored0 = false;
    if (qos == 0) {
        /* (Only a stored session has messages on disk: no store test on this path.) */
        bool in_line = session_queues_qos0(s);
        if (online && !hold && !pressure && session_queue_count(s) == 0 &&
            !(in_line && session_spilled(s))) {
            send_qos0(b, s, m, retain, ids, n_ids);
            return;
        }
        stored0 = in_line && persist_session_on(b, s);
        if (online && pressure && !force) {
            /* A live QoS 0 message to a client that is not keeping up is dropped (and
             * counted) rather than buffered without bound. Retained ones wait in the
             * queue: a new subscriber gets all of them, just later. */
            b->stats.pub_dropped_slow++;
            if (count_drop(b, s))
                mq_log(MQ_LOG_WARNING,
                       "client %s: not keeping up (over client_output_limit), dropped QoS 0 "
                       "message on %s (%llu dropped so far)",
                       s->client_id, m->topic, (unsigned long long)session_dropped(s));
            return;
        }
        /* Offline QoS 0 is dropped unless asked for, as in Mosquitto; online it waits
         * behind queued messages only to keep order. */
        if (!online && !(cfg && cfg->queue_qos0_messages)) {
            if (!session_queues_qos0(s))
                return;
            /* A session that asked for it (a bridge's local side) keeps it; without a store
             * only in its memory queue (a stored one keeps it as QoS 1/2, below). */
            if (!stored0 && session_queue_count(s) >= MQ_QUEUE_IN_MEMORY) {
                note_drop(b, s, m);
                return;
            }
        }
    }
    bool send_now = qos && online && !hold && session_queue_count(s) == 0 && !session_spilled(s) &&
                    window_open(b, s);
    /* Only a copy that starts its delivery now escapes an expiry that runs out now (an
     * interval of 0): one that would wait in the queue is deleted ([MQTT-3.3.2-5]). */
    if (!send_now && m->expires_ms && b->now_ms >= m->expires_ms) {
        b->stats.msgs_expired++;
        return;
    }
    struct mq_sub_ids owned = {0};
    if (n_ids && sub_ids_set(&owned, ids, n_ids)) {
        note_drop(b, s, m);
        return;
    }
    if (send_now) {
        send_inflight(b, s, m, qos, retain, 0, &owned, r->share_id);
        return;
    }
    if (!force && queue_full(b, s, m)) {
        sub_ids_free(&owned);
        note_drop(b, s, m);
        return;
    }
    /* A persistent session's long backlog waits on disk, in order behind its memory queue
     * (QoS 0 only when stored0: others keep theirs in memory). */
    if ((qos ? persist_session_on(b, s) : stored0) &&
        (session_spilled(s) || session_queue_count(s) >= MQ_QUEUE_IN_MEMORY)) {
        if (!persist_spill(b, s, m, qos, retain, ids, n_ids))
            note_drop(b, s, m);
        sub_ids_free(&owned);
        return;
    }
    uint64_t seq = persist_msg_add(b, s, m, qos, retain, ids, n_ids);
    if (session_queue_push(s, m, qos, retain, seq, &owned, r->share_id)) {
        sub_ids_free(&owned);
        persist_msg_done(b, s, seq);
        note_drop(b, s, m);
        return;
    }
    if (seq)
        s->flow->disk->queued_last_seq = seq; /* a stored message: disk exists */
}

/* Move queued messages into the window while it has room; page in spilled ones when the
 * memory queue runs low. Messages whose expiry passed while queued are deleted. */
void session_drain_queue(struct mq_broker *b, struct mq_session *s)
{
    const struct mq_queued *front;
    while (s->conn && !s->conn->closing && !s->conn->no_delivery &&
           (front = session_queue_peek(s))) {
        struct mq_queued q = *front;
        bool expired = msg_expired(q.msg, b->now_ms);
        if (!expired && q.qos > 0 && !window_open(b, s))
            break;
        if (!expired && q.qos == 0 && output_pressure(b, s->conn))
            break; /* proto_conn_drained resumes when the socket has taken more */
        session_queue_pop(s, &q);
        /* Queued while offline under possibly another user name or older rules: the
         * READ check applies to who receives it now. */
        if (expired) {
            note_expired(b, s, q.seq);
        } else if (!session_may(s, (const uint8_t *)q.msg->topic, q.msg->topic_len, MQ_ACL_READ)) {
            persist_msg_done(b, s, q.seq);
        } else if (q.qos == 0) {
            uint32_t one;
            const uint32_t *ids;
            size_t n = sub_ids_view(&q.sub_ids, &one, &ids);
            send_qos0(b, s, q.msg, q.retain, ids, n);
            /* A stored QoS 0 message is done once written: it has no acknowledgement. */
            persist_msg_done(b, s, q.seq);
        } else {
            send_inflight(b, s, q.msg, q.qos, q.retain, q.seq, &q.sub_ids, q.share_id);
        }
        sub_ids_free(&q.sub_ids);
        msg_unref(q.msg);
    }
    if (s->conn && session_spilled(s) && session_queue_count(s) < MQ_QUEUE_IN_MEMORY / 2)
        persist_page_in(b, s);
}

void proto_conn_drained(struct mq_conn *c)
{
    if (c->session && !c->closing && session_queue_count(c->session))
        session_drain_queue(c->broker, c->session);
}

void session_resume_delivery(struct mq_broker *b, struct mq_session *s)
{
    /* [MQTT-4.4.0-1]: resend unacknowledged PUBLISH (DUP set, [MQTT-3.3.1-1]) and
     * PUBREL packets, in their original order; not to a connection that only sets its
     * session up, which the next connection resumes. */
    if (s->conn->no_delivery)
        return;
    uint64_t before = b->store_changes;
    for (uint32_t i = 0; i < session_inflight_count(s); i++) {
        struct mq_inflight *e = session_inflight_at(s, i);
        /* The session may come back under another user name, or the rules changed:
         * an unacknowledged message it may no longer read is dropped, not resent. */
        if (e->msg &&
            !session_may(s, (const uint8_t *)e->msg->topic, e->msg->topic_len, MQ_ACL_READ)) {
            persist_msg_done(b, s, e->seq);
            session_inflight_remove(s, e);
            i--;
            continue;
        }
        if (e->state == MQ_OUT_WAIT_PUBCOMP) {
            conn_ack_durable(s->conn, MQ_PUBREL, e->packet_id, 0, NULL, before);
            continue;
        }
        uint32_t one;
        const uint32_t *ids;
        size_t n = sub_ids_view(&e->sub_ids, &one, &ids);
        /* The client may have come back with a smaller Maximum Packet Size. */
        if (!conn_publish_fits(s->conn, e->msg, e->qos, ids, n)) {
            note_too_large(b, s, e->msg);
            persist_msg_done(b, s, e->seq);
            session_inflight_remove(s, e);
            i--;
            continue;
        }
        conn_publish_durable(s->conn, e->msg, e->qos, e->retain, true, e->packet_id, ids, n,
                             before);
    }
    session_drain_queue(b, s);
}

struct mq_msg *proto_msg_new(const struct mq_broker *b, const uint8_t *topic, uint16_t topic_len,
                             const uint8_t *payload, uint32_t payload_len, uint8_t qos, bool retain,
                             const struct mq_props *props)
{
    uint64_t expires = 0;
    uint32_t kept = 0;
    if (props && props->raw_len) {
        if (codec_props_has(props, MQ_PROP_MESSAGE_EXPIRY))
            expires = b->now_ms + (uint64_t)props->message_expiry * 1000u;
        /* Forwarded unchanged and in order ([MQTT-3.3.2-4], -15, -16, -17, -18, -20); the
         * per-copy ones (expiry, alias, subscription ids) are written at send time. */
        struct mq_prop_iter it = codec_prop_iter(props->raw, props->raw_len);
        struct mq_prop pr;
        while (codec_prop_next(&it, &pr) > 0)
            if (forwarded_prop(pr.id))
                kept += pr.raw_len;
    }
    struct mq_msg *m =
        msg_new_props(topic, topic_len, payload, payload_len, qos, retain, kept, expires);
    if (!m || !kept)
        return m;
    uint8_t *out = msg_props(m);
    struct mq_prop_iter it = codec_prop_iter(props->raw, props->raw_len);
    struct mq_prop pr;
    while (codec_prop_next(&it, &pr) > 0)
        if (forwarded_prop(pr.id)) {
            memcpy(out, pr.raw, pr.raw_len);
            out += pr.raw_len;
        }
    return m;
}

/* The Subscription Identifiers of match i of v, its first (`first`, may be 0) and the extra
 * ones, into b->id_scratch; returns how many. On out of memory only `first` is returned, and
 * the caller then sends that one (still in its grant). */
static size_t gather_ids(struct mq_broker *b, const struct mq_sub_vec *v, size_t i, uint32_t first)
{
    size_t want = first ? 1 : 0;
    for (size_t x = 0; x < v->extra_count; x++)
        want += v->extra[x].item == i;
    if (want > b->id_scratch_cap) {
        uint32_t *grown = realloc(b->id_scratch, want * sizeof(*grown));
        if (!grown)
            return first ? 1 : 0;
        b->id_scratch = grown;
        b->id_scratch_cap = want;
    }
    size_t n = 0;
    if (first)
        b->id_scratch[n++] = first;
    for (size_t x = 0; x < v->extra_count; x++)
        if (v->extra[x].item == i)
            b->id_scratch[n++] = v->extra[x].sub_id;
    return n;
}

unsigned broker_publish(struct mq_broker *b, struct mq_msg *m, const struct mq_conn *from)
{
    const struct mq_config *cfg = b->cfg;
    if (m->retain && (!cfg || cfg->retain_available)) {
        if (retain_set_at(b->retained, m, b->now_ms))
            mq_log(MQ_LOG_ERR, "out of memory: retained message on %s not stored", m->topic);
        else
            persist_retain(b, m);
    }
    const struct mq_session *own = from ? from->session : NULL;
    struct mq_sub_vec *v = &b->match_scratch;
    /* No Local leaves out the publisher's own subscriptions that ask so ([MQTT-3.8.3-3]). */
    if (sub_tree_match(b->subs, (const uint8_t *)m->topic, m->topic_len, own, v)) {
        mq_log(MQ_LOG_ERR, "out of memory routing a message on %s", m->topic);
        return 0;
    }
    bool upgrade = cfg && cfg->upgrade_outgoing_qos;
    unsigned delivered = 0;
    for (size_t i = 0; i < v->count; i++) {
        struct mq_session *s = v->items[i].subscriber;
        uint32_t grant = v->items[i].grant;
        uint8_t granted = MQ_GRANT_QOS(grant);
        unsigned flags = 0;
        if (s == own) {
            /* Loop prevention, what the bridge bit asks for (3.1.1's no-local): a message
             * a bridge brought in must not go back out over that bridge. */
            if (from->bridge)
                continue;
            flags = MQ_DELIVER_HOLD;
        }
        /* Every delivery is a read: a broad filter only gets what the ACL allows. */
        if (!session_may(s, (const uint8_t *)m->topic, m->topic_len, MQ_ACL_READ))
            continue;
        /* [MQTT-3.8.4-6]: never above the granted QoS; downgraded to the published one. */
        uint8_t qos = upgrade ? granted : (m->qos < granted ? m->qos : granted);
        /* [MQTT-3.3.1-9] retain cleared, unless Retain As Published ([MQTT-3.3.1-12..13]). */
        if ((grant & MQ_GRANT_RETAIN_AS_PUBLISHED) && m->retain)
            flags |= MQ_DELIVER_RETAIN;
        /* Every matching subscription's identifier travels with the one copy
         * ([MQTT-3.3.4-3], [MQTT-3.3.4-4]). */
        uint32_t one = MQ_GRANT_SUB_ID(grant);
        const uint32_t *ids = &one;
        size_t n_ids = one ? 1 : 0;
        if (v->extra_count && (n_ids = gather_ids(b, v, i, one)) > 1)
            ids = b->id_scratch; /* several: they were gathered there */
        session_deliver(b, s, m, &(struct mq_route){qos, flags, ids, n_ids, 0});
        delivered++;
    }
    if (hmap_count(&b->share_groups)) /* shared subscriptions exist */
        delivered += share_route(b, m);
    return delivered;
}

int broker_publish_local(struct mq_broker *b, const char *topic, size_t topic_len,
                         const void *payload, size_t payload_len, uint8_t qos, bool retain)
{
    if (topic_len > UINT16_MAX || payload_len > MQ_MAX_REMAINING_LENGTH)
        return MQ_ERR_INVAL;
    struct mq_msg *m = msg_new((const uint8_t *)topic, (uint16_t)topic_len, payload,
                               (uint32_t)payload_len, qos, retain);
    if (!m)
        return MQ_ERR_NOMEM;
    broker_publish(b, m, NULL);
    msg_unref(m);
    return 0;
}

/* 3.1.1 has no negative acknowledgement: a message the broker will not deliver still
 * completes its QoS flow, so the client does not resend it forever (as Mosquitto does).
 * MQTT 5 tells it why: reason (an enum mq_reason) and why as Reason String. */
static void complete_without_delivery(struct mq_conn *c, const struct mq_publish *p, uint8_t reason,
                                      const char *why)
{
    struct mq_broker *b = c->broker;
    uint64_t before = b->store_changes;
    if (p->qos == 1) {
        conn_ack_durable(c, MQ_PUBACK, p->packet_id, reason, why, before);
    } else if (p->qos == 2) {
        /* An MQTT 5 PUBREC with an error ends the exchange: no PUBREL follows
         * ([MQTT-4.3.3-9]), so nothing is held. 3.x goes on to PUBREL/PUBCOMP. */
        if (!conn_v5(c) || reason < 0x80) {
            int fresh = session_qos2_in_add(c->session, p->packet_id);
            if (fresh < 0) {
                conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
                return;
            }
            if (fresh > 0)
                persist_qos2_in(b, c->session, p->packet_id, true);
        }
        conn_ack_durable(c, MQ_PUBREC, p->packet_id, reason, why, before);
    }
}

/* The topic of an MQTT 5 PUBLISH that uses a Topic Alias ([MQTT-3.3.2-12]): set the alias
 * when the topic is given, look it up when it is empty. Returns false after closing the
 * connection (an alias over the maximum, or an empty topic with an unknown alias). */
static bool resolve_alias(struct mq_conn *c, struct mq_publish *p, const struct mq_props *pr)
{
    struct mq_conn_ext *x = c->ext;
    uint16_t alias = pr->topic_alias;
    if (alias > x->alias_max_in) {
        conn_violation(c, MQ_RC_TOPIC_ALIAS_INVALID,
                       "protocol error: Topic Alias %u over the maximum of %u", alias,
                       x->alias_max_in);
        return false;
    }
    if (!x->alias_in && !(x->alias_in = calloc(x->alias_max_in, sizeof(*x->alias_in)))) {
        conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
        return false;
    }
    struct mq_alias *a = &x->alias_in[alias - 1];
    if (p->topic.len == 0) {
        if (!a->topic) {
            conn_violation(c, MQ_RC_PROTOCOL_ERROR,
                           "protocol error: PUBLISH with Topic Alias %u, which is not set", alias);
            return false;
        }
        p->topic.ptr = (const uint8_t *)a->topic;
        p->topic.len = a->len;
        return true;
    }
    char *topic = malloc((size_t)p->topic.len + 1);
    if (!topic) {
        conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
        return false;
    }
    memcpy(topic, p->topic.ptr, p->topic.len);
    topic[p->topic.len] = '\0';
    free(a->topic);
    a->topic = topic;
    a->len = p->topic.len;
    return true;
}

void handle_publish(struct mq_conn *c, const struct mq_publish *pub, const struct mq_props *pr)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    const struct mq_publish *p = pub;
    struct mq_publish aliased; /* pub with its topic alias resolved (MQTT 5) */
    bool v5 = conn_v5(c);
    b->stats.pub_received++;
    c->pub_in++;

    const struct mq_config *cfg = b->cfg;
    if (cfg && p->qos > cfg->max_qos) {
        /* MQTT 5 clients were told (Maximum QoS); 3.1.1 ones cannot be, and are
         * disconnected all the same, as Mosquitto does. */
        conn_violation(c, MQ_RC_QOS_NOT_SUPPORTED, "PUBLISH with QoS %u over max_qos %u", p->qos,
                       cfg->max_qos);
        return;
    }
    if (p->retain && cfg && !cfg->retain_available) {
        /* mosquitto.conf(5): with retain_available false, a client that sends a retained
         * message is disconnected (MQTT 5: told so with 0x9A). */
        conn_close_rc(c, MQ_RC_RETAIN_NOT_SUPPORTED, true,
                      "retained message received but retain_available is false");
        return;
    }
    if (v5 && codec_props_has(pr, MQ_PROP_TOPIC_ALIAS)) {
        aliased = *pub;
        if (!resolve_alias(c, &aliased, pr))
            return;
        p = &aliased;
    }
    if (v5 && p->qos) {
        /* The client may have at most max_inflight_messages QoS 1/2 PUBLISHes unanswered:
         * that is the Receive Maximum it was given in CONNACK. A QoS 2 retransmission
         * (its id still held) is not a new one. */
        uint32_t receive_max = max_inflight(b);
        bool retry = p->qos == 2 && session_qos2_in_has(s, p->packet_id);
        if (!retry && c->ext->inflight_in >= receive_max) {
            conn_violation(c, MQ_RC_RECEIVE_MAXIMUM_EXCEEDED,
                           "more than %u QoS 1/2 PUBLISH unacknowledged (Receive Maximum)",
                           receive_max);
            return;
        }
        if (!retry)
            c->ext->inflight_in++;
    }
    if (cfg && cfg->message_size_limit && p->payload_len > cfg->message_size_limit) {
        mq_log(MQ_LOG_WARNING,
               "client %s: message on %.*s of %u bytes exceeds message_size_limit, "
               "dropped",
               s->client_id, (int)p->topic.len, (const char *)p->topic.ptr, p->payload_len);
        complete_without_delivery(c, p, MQ_RC_QUOTA_EXCEEDED, "payload over message_size_limit");
        return;
    }
    if (v5 && codec_props_has(pr, MQ_PROP_PAYLOAD_FORMAT) && pr->payload_format == 1 &&
        topic_check_utf8(p->payload, p->payload_len)) {
        /* The publisher said UTF-8: a payload that is not is refused ([MQTT-3.3.2-4]'s
         * receiver side, reason 0x99), never forwarded as text. */
        mq_log(MQ_LOG_NOTICE,
               "client %s: PUBLISH to %.*s with Payload Format Indicator 1 but a payload "
               "that is not UTF-8, dropped",
               s->client_id, (int)p->topic.len, (const char *)p->topic.ptr);
        complete_without_delivery(c, p, MQ_RC_PAYLOAD_FORMAT_INVALID, "payload is not valid UTF-8");
        return;
    }

    /* Deleting a retained message frees memory: it is the one publish always taken. */
    bool frees_memory = p->retain && p->payload_len == 0;
    if (b->memory_exceeded && !frees_memory) {
        b->stats.memory_refusals++;
        b->stats.pub_dropped++;
        if (b->now_ms - b->memory_drop_logged_ms >= 10000) {
            b->memory_drop_logged_ms = b->now_ms;
            mq_log(MQ_LOG_WARNING,
                   "client %s: PUBLISH dropped: server over memory_limit "
                   "(%llu refused so far)",
                   s->client_id, (unsigned long long)b->stats.memory_refusals);
        }
        complete_without_delivery(c, p, MQ_RC_QUOTA_EXCEEDED, "server over memory_limit");
        return;
    }
    if (topic_too_deep(b, p->topic.ptr, p->topic.len)) {
        /* Every level costs memory in the retained and subscription trees. */
        mq_log(MQ_LOG_NOTICE,
               "client %s: PUBLISH to a topic deeper than max_topic_levels %u "
               "dropped",
               s->client_id, cfg->max_topic_levels);
        complete_without_delivery(c, p, MQ_RC_TOPIC_NAME_INVALID,
                                  "topic deeper than max_topic_levels");
        return;
    }
    if (!session_may(s, p->topic.ptr, p->topic.len, MQ_ACL_WRITE)) {
        mq_log(MQ_LOG_NOTICE, "client %s: PUBLISH to %.*s denied by acl_file, dropped",
               s->client_id, (int)p->topic.len, (const char *)p->topic.ptr);
        complete_without_delivery(c, p, MQ_RC_NOT_AUTHORIZED, "not authorized by acl_file");
        return;
    }

    uint64_t before = b->store_changes;
    if (p->qos == 2) {
        int fresh = session_qos2_in_add(s, p->packet_id);
        if (fresh < 0) {
            conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
            return;
        }
        if (!fresh) { /* a retransmission before PUBREL: acknowledge, do not deliver again */
            conn_ack_durable(c, MQ_PUBREC, p->packet_id, 0, NULL, before);
            return;
        }
        persist_qos2_in(b, s, p->packet_id, true);
    }

    /* Only an MQTT 5 PUBLISH can carry properties to forward (the 3.1.1 path stays lean). */
    struct mq_msg *m = v5 && pr->raw_len ? proto_msg_new(b, p->topic.ptr, p->topic.len, p->payload,
                                                         p->payload_len, p->qos, p->retain, pr)
                                         : msg_new_props(p->topic.ptr, p->topic.len, p->payload,
                                                         p->payload_len, p->qos, p->retain, 0, 0);
    if (!m) {
        conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
        return;
    }
    /* Routed before the acknowledgement, whose durability covers the copies it queued for
     * persistent sessions; the publisher's own copy, if it is subscribed, waits in its
     * queue until the acknowledgement is out (broker_publish). */
    unsigned delivered = broker_publish(b, m, c);
    msg_unref(m);

    /* MQTT 5 tells a publisher nobody got its message (Mosquitto does the same). */
    uint8_t reason = v5 && !delivered ? MQ_RC_NO_MATCHING_SUBSCRIBERS : MQ_RC_SUCCESS;
    if (p->qos == 1)
        conn_ack_durable(c, MQ_PUBACK, p->packet_id, reason, NULL, before); /* [MQTT-4.3.2-2] */
    else if (p->qos == 2)
        conn_ack_durable(c, MQ_PUBREC, p->packet_id, reason, NULL, before); /* [MQTT-4.3.3-2] */
    if (session_queue_count(s))
        session_drain_queue(b, s);
}

/* An acknowledgement that does not fit the flow its packet id is in (PUBACK for a QoS 2
 * message, PUBREC or PUBCOMP for a QoS 1 one, PUBCOMP before PUBREC) is a protocol
 * violation: close ([MQTT-4.8.0-1]). One for an id not in flight at all is a late
 * duplicate, e.g. after a reconnect, and is ignored by the callers. */
static void wrong_ack(struct mq_conn *c, const char *type, const struct mq_inflight *e)
{
    static const char *const flow[] = {
        [MQ_OUT_WAIT_PUBACK] = "in flight at QoS 1",
        [MQ_OUT_WAIT_PUBREC] = "in flight at QoS 2 and not yet PUBREC'd",
        [MQ_OUT_WAIT_PUBCOMP] = "in flight at QoS 2 awaiting PUBCOMP",
    };
    conn_violation(c, MQ_RC_PROTOCOL_ERROR, "protocol error: %s for packet id %u, which is %s",
                   type, e->packet_id, flow[e->state]);
}

void handle_puback(struct mq_conn *c, uint16_t packet_id, uint8_t reason)
{
    (void)reason; /* any reason code ends a QoS 1 exchange ([MQTT-4.4.0-2]) */
    struct mq_session *s = c->session;
    struct mq_inflight *e = session_inflight_find(s, packet_id);
    if (!e) {
        mq_log(MQ_LOG_DEBUG, "client %s: PUBACK for unknown packet id %u ignored", s->client_id,
               packet_id);
        return;
    }
    if (e->state != MQ_OUT_WAIT_PUBACK) {
        wrong_ack(c, "PUBACK", e);
        return;
    }
    persist_msg_done(c->broker, s, e->seq);
    session_inflight_remove(s, e);
    session_drain_queue(c->broker, s);
}

void handle_pubrec(struct mq_conn *c, uint16_t packet_id, uint8_t reason)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    uint64_t before = b->store_changes;
    struct mq_inflight *e = session_inflight_find(s, packet_id);
    if (e && e->state == MQ_OUT_WAIT_PUBACK) {
        wrong_ack(c, "PUBREC", e);
        return;
    }
    if (e && e->state == MQ_OUT_WAIT_PUBREC && reason >= 0x80) {
        /* MQTT 5: the receiver refused it; the exchange ends here, no PUBREL, and the
         * message is never retransmitted ([MQTT-4.4.0-2]). */
        persist_msg_done(b, s, e->seq);
        session_inflight_remove(s, e);
        session_drain_queue(b, s);
        return;
    }
    if (e && e->state == MQ_OUT_WAIT_PUBREC) {
        /* The message is delivered once the receiver has PUBREC'd it: release it now,
         * keeping only the packet id until PUBCOMP. */
        msg_unref(e->msg);
        e->msg = NULL;
        e->state = MQ_OUT_WAIT_PUBCOMP;
        persist_msg_state(b, s, e);
    } else if (!e) {
        mq_log(MQ_LOG_DEBUG, "client %s: PUBREC for unknown packet id %u ignored", s->client_id,
               packet_id);
        return;
    }
    /* [MQTT-4.3.3-3]. Held back while PUBCOMP-waiting is not on disk: after a crash the
     * message would be sent again to a receiver that already released it. */
    if (persist_session_on(b, s))
        conn_ack_durable(c, MQ_PUBREL, packet_id, 0, NULL, before);
    else
        conn_send_ack(c, MQ_PUBREL, packet_id);
}

void handle_pubrel(struct mq_conn *c, uint16_t packet_id)
{
    struct mq_broker *b = c->broker;
    uint64_t before = b->store_changes;
    bool held = session_qos2_in_release(c->session, packet_id);
    if (held)
        persist_qos2_in(b, c->session, packet_id, false);
    /* PUBCOMP even for an id we no longer hold: the client may be retrying after a
     * reconnect whose PUBCOMP was lost (MQTT 5 says so with 0x92). Held back until the
     * release is on disk: a forgotten release would make the client's next message with
     * this id a duplicate. */
    conn_ack_durable(c, MQ_PUBCOMP, packet_id, held ? 0 : MQ_RC_PACKET_ID_NOT_FOUND, NULL,
                     before); /* [MQTT-4.3.3-2] */
}

void handle_pubcomp(struct mq_conn *c, uint16_t packet_id)
{
    struct mq_session *s = c->session;
    struct mq_inflight *e = session_inflight_find(s, packet_id);
    if (!e) {
        mq_log(MQ_LOG_DEBUG, "client %s: PUBCOMP for unknown packet id %u ignored", s->client_id,
               packet_id);
        return;
    }
    if (e->state != MQ_OUT_WAIT_PUBCOMP) {
        wrong_ack(c, "PUBCOMP", e);
        return;
    }
    persist_msg_done(c->broker, s, e->seq);
    session_inflight_remove(s, e);
    session_drain_queue(c->broker, s);
}

/* proto_publish.c - PUBLISH and its acknowledgements in both directions, routing
 * to subscribers, and the outgoing window/queue policy.
 *
 * Invariants: a session's queue is drained in order into its in-flight window, so
 * messages reach a subscriber in the order they were routed to it; an inbound QoS 2
 * packet id is delivered once until its PUBREL ([MQTT-4.3.3-2]).
 */
#include <stdlib.h>

#include "midge/acl.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "proto_internal.h"

static uint32_t max_inflight(const struct mq_broker *b)
{
    uint32_t n = b->cfg ? b->cfg->max_inflight_messages : 20;
    /* 0 means unlimited; packet ids bound a window to 65535 anyway. */
    return n == 0 || n > 65535 ? 65535 : n;
}

static bool window_open(const struct mq_broker *b, const struct mq_session *s)
{
    return session_inflight_count(s) < max_inflight(b);
}

/* Send a QoS 1/2 message now, recording it in the window. seq: its number in the store
 * (0: not stored yet; a persistent session's message is then stored here). */
static void send_inflight(struct mq_broker *b, struct mq_session *s, struct mq_msg *m, uint8_t qos,
                          bool retain, uint64_t seq)
{
    uint64_t before = b->store_changes;
    if (!seq && (seq = persist_msg_add(b, s, m, qos, retain)))
        s->flow->disk->queued_last_seq = seq; /* a stored message: disk exists */
    uint16_t pid = session_next_packet_id(s);
    struct mq_inflight *e = pid ? session_inflight_add(s, m, qos, retain, pid, seq) : NULL;
    if (!e) {
        mq_log(MQ_LOG_ERR, "client %s: out of memory, message on %s dropped", s->client_id,
               m->topic);
        b->stats.pub_dropped++;
        persist_msg_done(b, s, seq);
        return;
    }
    persist_msg_state(b, s, e);
    conn_publish_durable(s->conn, m, qos, retain, false, pid, before);
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

void session_deliver(struct mq_broker *b, struct mq_session *s, struct mq_msg *m, uint8_t qos,
                     unsigned flags)
{
    const struct mq_config *cfg = b->cfg;
    bool retain = flags & MQ_DELIVER_RETAIN, force = flags & MQ_DELIVER_FORCE;
    bool hold = flags & MQ_DELIVER_HOLD;
    bool online = s->conn && !s->conn->closing;
    int pressure = online ? output_pressure(b, s->conn) : 0;
    if (pressure == 2) {
        /* Closed by broker_tick, not here: closing publishes the will and may destroy
         * sessions, which must not happen in the middle of a routing pass. */
        s->conn->not_reading = true;
        pressure = 1;
    }
    if (pressure && !s->conn->over_limit_since_ms)
        s->conn->over_limit_since_ms = b->now_ms ? b->now_ms : 1;
    if (qos == 0) {
        if (online && !hold && session_queue_count(s) == 0 && !pressure) {
            conn_send_publish(s->conn, m, 0, retain, false, 0);
            return;
        }
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
        if (!online && !(cfg && cfg->queue_qos0_messages))
            return;
    } else if (online && !hold && session_queue_count(s) == 0 && !session_spilled(s) &&
               window_open(b, s)) {
        send_inflight(b, s, m, qos, retain, 0);
        return;
    }
    if (!force && queue_full(b, s, m)) {
        note_drop(b, s, m);
        return;
    }
    /* A persistent session's long backlog waits on disk, in order behind its memory queue. */
    if (qos && persist_session_on(b, s) &&
        (session_spilled(s) || session_queue_count(s) >= MQ_QUEUE_IN_MEMORY)) {
        if (!persist_spill(b, s, m, qos, retain))
            note_drop(b, s, m);
        return;
    }
    uint64_t seq = persist_msg_add(b, s, m, qos, retain);
    if (session_queue_push(s, m, qos, retain, seq)) {
        persist_msg_done(b, s, seq);
        note_drop(b, s, m);
        return;
    }
    if (seq)
        s->flow->disk->queued_last_seq = seq; /* a stored message: disk exists */
}

/* Move queued messages into the window while it has room; page in spilled ones when the
 * memory queue runs low. */
void session_drain_queue(struct mq_broker *b, struct mq_session *s)
{
    const struct mq_queued *front;
    while (s->conn && !s->conn->closing && (front = session_queue_peek(s))) {
        struct mq_queued q = *front;
        if (q.qos > 0 && !window_open(b, s))
            break;
        if (q.qos == 0 && output_pressure(b, s->conn))
            break; /* proto_conn_drained resumes when the socket has taken more */
        session_queue_pop(s, &q);
        /* Queued while offline under possibly another user name or older rules: the
         * READ check applies to who receives it now. */
        if (!session_may(s, (const uint8_t *)q.msg->topic, q.msg->topic_len, MQ_ACL_READ)) {
            persist_msg_done(b, s, q.seq);
            msg_unref(q.msg);
            continue;
        }
        if (q.qos == 0)
            conn_send_publish(s->conn, q.msg, 0, q.retain, false, 0);
        else
            send_inflight(b, s, q.msg, q.qos, q.retain, q.seq);
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
     * PUBREL packets, in their original order. */
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
        if (e->state == MQ_OUT_WAIT_PUBCOMP)
            conn_ack_durable(s->conn, MQ_PUBREL, e->packet_id, before);
        else
            conn_publish_durable(s->conn, e->msg, e->qos, e->retain, true, e->packet_id, before);
    }
    session_drain_queue(b, s);
}

void broker_publish(struct mq_broker *b, struct mq_msg *m, const struct mq_conn *from)
{
    const struct mq_session *own = from ? from->session : NULL;
    const struct mq_config *cfg = b->cfg;
    if (m->retain && (!cfg || cfg->retain_available)) {
        if (retain_set(b->retained, m))
            mq_log(MQ_LOG_ERR, "out of memory: retained message on %s not stored", m->topic);
        else
            persist_retain(b, m);
    }
    struct mq_sub_vec *v = &b->match_scratch;
    if (sub_tree_match(b->subs, (const uint8_t *)m->topic, m->topic_len, NULL, v)) {
        mq_log(MQ_LOG_ERR, "out of memory routing a message on %s", m->topic);
        return;
    }
    bool upgrade = cfg && cfg->upgrade_outgoing_qos;
    for (size_t i = 0; i < v->count; i++) {
        struct mq_session *s = v->items[i].subscriber;
        uint8_t granted = MQ_GRANT_QOS(v->items[i].grant);
        /* Loop prevention, what the bridge bit asks for (3.1.1's no-local): a message a
         * bridge brought in must not go back out over that bridge. */
        if (s == own && from->bridge)
            continue;
        /* Every delivery is a read: a broad filter only gets what the ACL allows. */
        if (!session_may(s, (const uint8_t *)m->topic, m->topic_len, MQ_ACL_READ))
            continue;
        /* [MQTT-3.8.4-6]: never above the granted QoS; downgraded to the published one. */
        uint8_t qos = upgrade ? granted : (m->qos < granted ? m->qos : granted);
        /* [MQTT-3.3.1-9] retain cleared. */
        session_deliver(b, s, m, qos, s == own ? MQ_DELIVER_HOLD : 0);
    }
}

/* 3.1.1 has no negative acknowledgement: a message the broker will not deliver still
 * completes its QoS flow, so the client does not resend it forever (as Mosquitto does). */
static void complete_without_delivery(struct mq_conn *c, const struct mq_publish *p)
{
    struct mq_broker *b = c->broker;
    uint64_t before = b->store_changes;
    if (p->qos == 1) {
        conn_ack_durable(c, MQ_PUBACK, p->packet_id, before);
    } else if (p->qos == 2) {
        int fresh = session_qos2_in_add(c->session, p->packet_id);
        if (fresh < 0) {
            conn_close(c, true, "out of memory"); /* as handle_publish: never a silent drop */
            return;
        }
        if (fresh > 0)
            persist_qos2_in(b, c->session, p->packet_id, true);
        conn_ack_durable(c, MQ_PUBREC, p->packet_id, before);
    }
}

void handle_publish(struct mq_conn *c, const struct mq_publish *p)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    b->stats.pub_received++;

    const struct mq_config *cfg = b->cfg;
    if (p->retain && cfg && !cfg->retain_available) {
        /* mosquitto.conf(5): with retain_available false, a client that sends a retained
         * message is disconnected. 3.1.1 has no way to tell it otherwise. */
        conn_close(c, true, "retained message received but retain_available is false");
        return;
    }
    if (cfg && cfg->message_size_limit && p->payload_len > cfg->message_size_limit) {
        mq_log(MQ_LOG_WARNING,
               "client %s: message on %.*s of %u bytes exceeds message_size_limit, "
               "dropped",
               s->client_id, (int)p->topic.len, (const char *)p->topic.ptr, p->payload_len);
        complete_without_delivery(c, p);
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
        complete_without_delivery(c, p);
        return;
    }
    if (topic_too_deep(b, p->topic.ptr, p->topic.len)) {
        /* Every level costs memory in the retained and subscription trees. */
        mq_log(MQ_LOG_NOTICE,
               "client %s: PUBLISH to a topic deeper than max_topic_levels %u "
               "dropped",
               s->client_id, cfg->max_topic_levels);
        complete_without_delivery(c, p);
        return;
    }
    if (!session_may(s, p->topic.ptr, p->topic.len, MQ_ACL_WRITE)) {
        mq_log(MQ_LOG_NOTICE, "client %s: PUBLISH to %.*s denied by acl_file, dropped",
               s->client_id, (int)p->topic.len, (const char *)p->topic.ptr);
        complete_without_delivery(c, p);
        return;
    }

    uint64_t before = b->store_changes;
    if (p->qos == 2) {
        int fresh = session_qos2_in_add(s, p->packet_id);
        if (fresh < 0) {
            conn_close(c, true, "out of memory");
            return;
        }
        if (!fresh) { /* a retransmission before PUBREL: acknowledge, do not deliver again */
            conn_ack_durable(c, MQ_PUBREC, p->packet_id, before);
            return;
        }
        persist_qos2_in(b, s, p->packet_id, true);
    }

    struct mq_msg *m =
        msg_new(p->topic.ptr, p->topic.len, p->payload, p->payload_len, p->qos, p->retain);
    if (!m) {
        conn_close(c, true, "out of memory");
        return;
    }
    /* Routed before the acknowledgement, whose durability covers the copies it queued for
     * persistent sessions; the publisher's own copy, if it is subscribed, waits in its
     * queue until the acknowledgement is out (broker_publish). */
    broker_publish(b, m, c);
    msg_unref(m);

    if (p->qos == 1)
        conn_ack_durable(c, MQ_PUBACK, p->packet_id, before); /* [MQTT-4.3.2-2] */
    else if (p->qos == 2)
        conn_ack_durable(c, MQ_PUBREC, p->packet_id, before); /* [MQTT-4.3.3-2] */
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
    c->broker->stats.protocol_errors++;
    conn_close(c, true, "protocol error: %s for packet id %u, which is %s", type, e->packet_id,
               flow[e->state]);
}

void handle_puback(struct mq_conn *c, uint16_t packet_id)
{
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

void handle_pubrec(struct mq_conn *c, uint16_t packet_id)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    uint64_t before = b->store_changes;
    struct mq_inflight *e = session_inflight_find(s, packet_id);
    if (e && e->state == MQ_OUT_WAIT_PUBACK) {
        wrong_ack(c, "PUBREC", e);
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
        conn_ack_durable(c, MQ_PUBREL, packet_id, before);
    else
        conn_send_ack(c, MQ_PUBREL, packet_id);
}

void handle_pubrel(struct mq_conn *c, uint16_t packet_id)
{
    struct mq_broker *b = c->broker;
    uint64_t before = b->store_changes;
    if (session_qos2_in_release(c->session, packet_id))
        persist_qos2_in(b, c->session, packet_id, false);
    /* PUBCOMP even for an id we no longer hold: the client may be retrying after a
     * reconnect whose PUBCOMP was lost. Held back until the release is on disk: a
     * forgotten release would make the client's next message with this id a duplicate. */
    conn_ack_durable(c, MQ_PUBCOMP, packet_id, before); /* [MQTT-4.3.3-2] */
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

/* proto_persist.c - what proto tells the durable store, the acknowledgements that wait
 * for it, and loading the stored state back at start-up.
 *
 * What is stored (persistence true): retained messages (but not $SYS ones, which the
 * broker republishes itself), and for every persistent session (3.1.1 clean session 0,
 * MQTT 5 Session Expiry Interval > 0) the session with its expiry, its subscriptions with
 * their whole grant (options, identifier), its QoS 1/2 messages queued or in flight with
 * their packet ids, states and Subscription Identifiers, its inbound QoS 2 packet ids and
 * its will while it waits for its Will Delay Interval. Messages keep their forwarded MQTT
 * 5 properties and their expiry. A session that queues its QoS 0 in line with the rest (a
 * bridge's local side, session_queues_qos0) has its QoS 0 messages that wait stored the same
 * way, so that they survive a restart in their place; one sent at once is never stored.
 * Clean sessions, other sessions' QoS 0 messages and the wills of connected clients are never
 * stored.
 *
 * The store keeps times on the wall clock (a restart starts a new broker clock):
 * wall_now/wall_of convert on the way in, broker_time on the way back. At load, a queued
 * or in-flight message whose expiry passed while the broker was down is loaded all the
 * same: proto drops it when it would be sent, counts it and deletes it from the store,
 * exactly as for one that expires while the broker runs (and a page read from disk later
 * is handled the same way). A retained message that expired is dropped at load and
 * deleted from the store, since nothing else would ever remove it.
 *
 * Each stored outgoing message of a persistent session gets a number (seq) that orders it
 * in the store; the session's queue and window carry it so later changes (sent, PUBREC,
 * done) can name it. A stored QoS 0 message is done once it is written to its connection.
 *
 * Under persistence_durability ack, a packet that reveals state not yet on disk is held
 * back until it is: PUBACK, PUBREC and PUBCOMP to a publisher, and to a persistent session
 * its SUBACK, UNSUBACK, QoS 1/2 PUBLISH and PUBREL. Otherwise a crash could undo what a
 * client was told: a PUBACK for a message then lost, or a QoS 2 message delivered, its
 * reception forgotten, and delivered again when the publisher resends it. Held packets
 * wait in one list, in the order they were made, with the ticket of the store batch that
 * carries their change, and go out once that ticket is committed. Packets to one
 * connection keep their order ([MQTT-4.6.0-2..4]): once one waits, every later one that
 * goes through here queues behind it. QoS 0 never waits, except to a session that queues it
 * in line (a bridge's), where it must not overtake a QoS 1/2 PUBLISH that waits.
 */
#include <stdlib.h>
#include <string.h>

#include "midge/codec.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/store.h"
#include "proto_internal.h"

/* One packet held back: a PUBLISH (msg set) or bytes as they are. */
struct mq_deferred {
    struct mq_deferred *next;
    struct mq_conn *conn;      /* NULL once the connection is gone */
    uint64_t ticket;           /* 0 while its batch is still being filled */
    struct mq_msg *msg;        /* reference, for a PUBLISH */
    struct mq_sub_ids sub_ids; /* owned copy, for a PUBLISH to an MQTT 5 client */
    uint16_t packet_id;
    uint8_t qos;
    bool retain, dup;
    uint32_t len;
    uint8_t bytes[];
};

/* ---- recording changes ------------------------------------------------------------- */

bool persist_session_on(const struct mq_broker *b, const struct mq_session *s)
{
    return b->store && s && !s->clean;
}

static uint64_t wall_now(const struct mq_broker *b)
{
    return (uint64_t)((int64_t)b->now_ms + b->wall_offset_ms);
}

/* A broker-clock time as wall-clock ms. */
static uint64_t wall_of(const struct mq_broker *b, uint64_t broker_ms)
{
    int64_t t = (int64_t)broker_ms + b->wall_offset_ms;
    return t > 0 ? (uint64_t)t : 1;
}

/* A message's expiry as wall-clock ms (0 = never), so that it still holds after a
 * restart, whose broker clock starts anew. */
static uint64_t wall_expiry(const struct mq_broker *b, const struct mq_msg *m)
{
    return m->expires_ms ? wall_of(b, m->expires_ms) : 0;
}

/* A stored wall-clock expiry on this broker's clock (0 = never); one that passed before
 * the broker's clock began becomes 1, long expired. */
static uint64_t broker_time(const struct mq_broker *b, uint64_t wall_ms)
{
    if (!wall_ms)
        return 0;
    int64_t t = (int64_t)wall_ms - b->wall_offset_ms;
    return t > 0 ? (uint64_t)t : 1;
}

/* One place that counts changes and reports the rare failure (out of memory): the change
 * is then not durable, and the log says so. */
static void recorded(struct mq_broker *b, int rc, const char *what, const char *client_id)
{
    if (rc == 0) {
        b->store_changes++;
        return;
    }
    mq_log(MQ_LOG_ERR, "persistence: %s of client %s not stored: %s", what,
           client_id ? client_id : "(retained)", mq_strerror(rc));
}

void persist_session_put(struct mq_broker *b, struct mq_session *s)
{
    if (!persist_session_on(b, s))
        return;
    recorded(
        b,
        store_session_put(b->store, s->client_id, s->client_id_len, wall_now(b), session_expiry(s)),
        "session", s->client_id);
}

void persist_session_delete(struct mq_broker *b, struct mq_session *s)
{
    if (!persist_session_on(b, s))
        return;
    recorded(b, store_session_delete(b->store, s->client_id, s->client_id_len), "session removal",
             s->client_id);
}

void persist_sub(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len,
                 uint32_t grant)
{
    if (!persist_session_on(b, s))
        return;
    recorded(
        b,
        store_sub_add(b->store, s->client_id, s->client_id_len, (const char *)filter, len, grant),
        "subscription", s->client_id);
}

void persist_unsub(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len)
{
    if (!persist_session_on(b, s))
        return;
    recorded(b,
             store_sub_remove(b->store, s->client_id, s->client_id_len, (const char *)filter, len),
             "unsubscription", s->client_id);
}

uint64_t persist_msg_add(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m,
                         uint8_t qos, bool retain, const uint32_t *ids, size_t n_ids)
{
    if (!persist_session_on(b, s) || (qos == 0 && !session_queues_qos0(s)))
        return 0;
    struct mq_session_disk *d = session_disk(s);
    if (!d) {
        recorded(b, MQ_ERR_NOMEM, "queued message", s->client_id);
        return 0;
    }
    uint64_t seq = d->next_seq++;
    int rc = store_msg_add(b->store, s->client_id, s->client_id_len, seq, m, qos, retain, ids,
                           n_ids, wall_expiry(b, m));
    recorded(b, rc, "queued message", s->client_id);
    return rc ? 0 : seq;
}

void persist_msg_state(struct mq_broker *b, struct mq_session *s, const struct mq_inflight *e)
{
    if (!e->seq || !persist_session_on(b, s))
        return;
    recorded(
        b,
        store_msg_state(b->store, s->client_id, s->client_id_len, e->seq, e->packet_id, e->state),
        "message state", s->client_id);
}

void persist_msg_done(struct mq_broker *b, struct mq_session *s, uint64_t seq)
{
    if (!seq || !persist_session_on(b, s))
        return;
    recorded(b, store_msg_delete(b->store, s->client_id, s->client_id_len, seq),
             "message completion", s->client_id);
}

void persist_qos2_in(struct mq_broker *b, struct mq_session *s, uint16_t packet_id, bool held)
{
    if (!persist_session_on(b, s))
        return;
    int rc = held ? store_qos2_in_add(b->store, s->client_id, s->client_id_len, packet_id)
                  : store_qos2_in_remove(b->store, s->client_id, s->client_id_len, packet_id);
    recorded(b, rc, "QoS 2 state", s->client_id);
}

static bool is_sys_topic(const char *topic, size_t len)
{
    return len >= 5 && memcmp(topic, "$SYS/", 5) == 0;
}

bool persist_spill(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m, uint8_t qos,
                   bool retain, const uint32_t *ids, size_t n_ids)
{
    if (!persist_msg_add(b, s, m, qos, retain, ids, n_ids))
        return false;
    struct mq_session_disk *d = session_disk_peek(s); /* persist_msg_add made it */
    if (!d->spilled++)
        mq_log(MQ_LOG_INFO,
               "client %s: more than %u messages queued; the newer ones wait on disk and are "
               "read back as the queue drains",
               s->client_id, session_queue_count(s));
    d->spilled_bytes += m->payload_len;
    d->spill_ticket = b->store_issued + 1; /* the batch being filled */
    return true;
}

/* ---- paging spilled messages back in ----------------------------------------------------- */

void persist_page_in(struct mq_broker *b, struct mq_session *s)
{
    struct mq_session_disk *d = session_disk_peek(s);
    if (!b->page_read || !d || d->page_token || !d->spilled)
        return;
    if (store_committed(b->store) < d->spill_ticket) {
        /* A page sees committed rows only: come back when the newest spill is on disk. */
        hmap_put(&b->page_wait, s->client_id, s->client_id_len, s);
        return;
    }
    hmap_remove(&b->page_wait, s->client_id, s->client_id_len);
    d->page_token = ++b->page_tokens;
    b->page_read(b->page_ctx, s->client_id, s->client_id_len, d->queued_last_seq,
                 MQ_QUEUE_IN_MEMORY - session_queue_count(s), d->page_token);
}

static void unref_page(struct mq_paged_msg *msgs, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        msg_unref(msgs[i].msg);
        sub_ids_free(&msgs[i].sub_ids);
    }
}

void broker_store_paged(struct mq_broker *b, const char *client_id, uint16_t client_id_len,
                        uint64_t token, struct mq_paged_msg *msgs, size_t n, int err)
{
    struct mq_session *s = imap_get(&b->sessions, client_id, client_id_len, broker_session_key);
    struct mq_session_disk *d = s ? session_disk_peek(s) : NULL;
    if (!d || d->page_token != token) {
        unref_page(msgs, 0, n);
        return;
    }
    d->page_token = 0;
    if (err < 0) {
        /* Reported by the store; the messages stay on disk and the next drain retries. */
        unref_page(msgs, 0, n);
        return;
    }
    size_t i = 0;
    for (; i < n && msgs[i].seq > d->queued_last_seq; i++) {
        struct mq_paged_msg *p = &msgs[i];
        if (session_queue_push(s, p->msg, p->qos, p->retain, p->seq, &p->sub_ids, 0))
            break; /* out of memory: the rest stays on disk for a later page */
        d->queued_last_seq = p->seq;
        d->spilled = d->spilled ? d->spilled - 1 : 0;
        d->spilled_bytes =
            d->spilled_bytes > p->msg->payload_len ? d->spilled_bytes - p->msg->payload_len : 0;
        msg_unref(p->msg);
    }
    unref_page(msgs, i, n);
    if (s->conn && !s->conn->closing)
        session_drain_queue(b, s);
}

void persist_retain(struct mq_broker *b, const struct mq_msg *m)
{
    if (!b->store || is_sys_topic(m->topic, m->topic_len))
        return;
    recorded(b, store_retain_set(b->store, m, wall_expiry(b, m)), "retained message", NULL);
}

void persist_will_put(struct mq_broker *b, struct mq_session *s, const struct mq_msg *will,
                      uint64_t due_ms)
{
    if (!persist_session_on(b, s))
        return;
    recorded(b,
             store_will_put(b->store, s->client_id, s->client_id_len, will, wall_expiry(b, will),
                            wall_of(b, due_ms)),
             "delayed will", s->client_id);
}

void persist_will_delete(struct mq_broker *b, struct mq_session *s)
{
    if (!persist_session_on(b, s))
        return;
    recorded(b, store_will_delete(b->store, s->client_id, s->client_id_len), "will removal",
             s->client_id);
}

/* ---- output that waits for the store ---------------------------------------------------- */

/* True when a packet made now must wait: something it reveals may not be committed yet,
 * or an earlier packet to the same connection is still waiting (order). */
static bool must_wait(struct mq_conn *c, uint64_t changes_before)
{
    struct mq_broker *b = c->broker;
    if (!b->store || !b->store_wait)
        return false;
    if (c->deferred || b->store_changes != changes_before)
        return true;
    /* A retransmission changes nothing, but what the first copy changed may still be on
     * its way to the disk. */
    return store_committed(b->store) < b->store_issued;
}

static struct mq_deferred *defer(struct mq_conn *c, size_t len)
{
    struct mq_broker *b = c->broker;
    struct mq_deferred *d = malloc(sizeof(*d) + len);
    if (!d) {
        conn_close(c, true, "out of memory");
        return NULL;
    }
    *d = (struct mq_deferred){.conn = c, .len = (uint32_t)len};
    if (b->deferred_tail)
        b->deferred_tail->next = d;
    else
        b->deferred_head = d;
    b->deferred_tail = d;
    if (!b->deferred_unticketed)
        b->deferred_unticketed = d;
    b->deferred_count++;
    c->deferred++;
    return d;
}

void conn_send_durable(struct mq_conn *c, const uint8_t *bytes, size_t len, uint64_t changes_before)
{
    if (c->closing)
        return;
    if (!must_wait(c, changes_before)) {
        conn_send(c, bytes, len);
        return;
    }
    struct mq_deferred *d = defer(c, len);
    if (d)
        memcpy(d->bytes, bytes, len);
}

void conn_ack_durable(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                      uint8_t reason, const char *why, uint64_t changes_before)
{
    uint8_t pkt[MQ_ACK_MAX];
    conn_send_durable(c, pkt, ack_bytes(c, type, packet_id, reason, why, pkt, sizeof pkt),
                      changes_before);
}

void conn_publish_durable(struct mq_conn *c, struct mq_msg *m, uint8_t qos, bool retain, bool dup,
                          uint16_t packet_id, const uint32_t *ids, size_t n_ids,
                          uint64_t changes_before)
{
    if (c->closing)
        return;
    if (!must_wait(c, changes_before)) {
        conn_send_publish(c, m, qos, retain, dup, packet_id, ids, n_ids);
        return;
    }
    struct mq_deferred *d = defer(c, 0);
    if (!d)
        return;
    if (n_ids && conn_v5(c) && sub_ids_set(&d->sub_ids, ids, n_ids))
        mq_log(MQ_LOG_ERR, "client %s: out of memory, Subscription Identifiers not sent",
               conn_name(c));
    d->msg = msg_ref(m);
    d->qos = qos;
    d->retain = retain;
    d->dup = dup;
    d->packet_id = packet_id;
}

static void deferred_send(struct mq_deferred *d)
{
    if (d->msg) {
        uint32_t one;
        const uint32_t *ids;
        size_t n = sub_ids_view(&d->sub_ids, &one, &ids);
        conn_send_publish(d->conn, d->msg, d->qos, d->retain, d->dup, d->packet_id, ids, n);
    } else {
        conn_send(d->conn, d->bytes, d->len);
    }
}

static void deferred_free(struct mq_deferred *d)
{
    msg_unref(d->msg);
    sub_ids_free(&d->sub_ids);
    free(d);
}

void conn_forget_deferred(struct mq_conn *c)
{
    for (struct mq_deferred *d = c->broker->deferred_head; d && c->deferred; d = d->next)
        if (d->conn == c) {
            d->conn = NULL;
            c->deferred--;
        }
}

void broker_store_committed(struct mq_broker *b)
{
    if (!b->store)
        return;
    uint64_t committed = store_committed(b->store);
    if (b->page_wait.count) {
        uint32_t pos = 0;
        struct mq_session *s;
        while ((s = hmap_next(&b->page_wait, &pos, NULL, NULL))) {
            const struct mq_session_disk *sd = session_disk_peek(s);
            if (sd && sd->spill_ticket <= committed)
                persist_page_in(b, s); /* removes it from page_wait */
        }
    }
    struct mq_deferred *d;
    while ((d = b->deferred_head) && d->ticket && d->ticket <= committed) {
        b->deferred_head = d->next;
        if (!b->deferred_head)
            b->deferred_tail = NULL;
        b->deferred_count--;
        if (d->conn) {
            d->conn->deferred--;
            deferred_send(d);
        }
        deferred_free(d);
    }
}

void broker_store_flush(struct mq_broker *b)
{
    if (!b->store)
        return;
    uint64_t ticket = b->store_issued = store_commit_async(b->store);
    for (struct mq_deferred *d = b->deferred_unticketed; d; d = d->next)
        d->ticket = ticket;
    b->deferred_unticketed = NULL;
    if (b->deferred_head)
        broker_store_committed(b); /* an empty batch: its ticket may be committed already */
}

void persist_free(struct mq_broker *b)
{
    struct mq_deferred *d = b->deferred_head;
    while (d) {
        struct mq_deferred *next = d->next;
        deferred_free(d);
        d = next;
    }
    b->deferred_head = b->deferred_tail = b->deferred_unticketed = NULL;
    b->deferred_count = 0;
}

/* ---- loading at start-up ------------------------------------------------------------- */

struct load_ctx {
    struct mq_broker *b;
    struct mq_store *store; /* b->store is set only once the load succeeded */
    struct mq_session *s;   /* the session the store is describing */
    uint64_t retained, sessions, subs, msgs, qos2, wills, expired;
};

/* A message as stored: its properties copied, its expiry back on the broker's clock. NULL on
 * out of memory. The caller owns the reference. */
static struct mq_msg *stored_msg(const struct mq_broker *b, const char *topic, uint16_t topic_len,
                                 const uint8_t *payload, uint32_t payload_len, uint8_t qos,
                                 bool retain, const uint8_t *props, uint32_t props_len,
                                 uint64_t expires_wall_ms)
{
    struct mq_msg *m = msg_new_props((const uint8_t *)topic, topic_len, payload, payload_len, qos,
                                     retain, props_len, broker_time(b, expires_wall_ms));
    if (m && props_len)
        memcpy(msg_props(m), props, props_len);
    return m;
}

static int load_retained(void *ctx, const struct mq_store_retained *r)
{
    struct load_ctx *l = ctx;
    if (r->expires_wall_ms && r->expires_wall_ms <= wall_now(l->b)) {
        /* Expired while the broker was down: nobody will ever get it. */
        l->expired++;
        l->b->stats.msgs_expired++;
        int rc = store_retain_delete(l->store, r->topic, r->topic_len);
        if (rc)
            recorded(l->b, rc, "expired retained message removal", NULL);
        return 0;
    }
    struct mq_msg *m = stored_msg(l->b, r->topic, r->topic_len, r->payload, r->payload_len, r->qos,
                                  true, r->props, r->props_len, r->expires_wall_ms);
    if (!m || retain_set(l->b->retained, m)) {
        msg_unref(m);
        return MQ_ERR_NOMEM;
    }
    msg_unref(m);
    l->retained++;
    return 0;
}

static int load_session(void *ctx, const struct mq_store_session *ss)
{
    struct load_ctx *l = ctx;
    struct mq_broker *b = l->b;
    struct mq_session *s = session_new((const uint8_t *)ss->client_id, ss->client_id_len, false);
    if (!s || imap_put(&b->sessions, s, broker_session_key)) {
        session_free(s);
        return MQ_ERR_NOMEM;
    }
    /* Away time counts across the restart, so the Session Expiry Interval and
     * persistent_client_expiration still work. The broker clock may have started after the
     * client left (uv_now after a reboot is small): last_seen_ms is then "before zero",
     * i.e. wrapped, which is right because it is only ever used as now_ms - last_seen_ms
     * (unsigned, modulo 2^64). Clamping it to 0 would give the session the time the
     * machine was down for free. */
    uint64_t now_wall = wall_now(b);
    uint64_t away = now_wall > ss->last_seen_ms ? now_wall - ss->last_seen_ms : 0;
    s->last_seen_ms = b->now_ms - away;
    /* Its Session Expiry Interval counts from last_seen (expire_sessions). */
    struct mq_session_disk *d = session_set_expiry(s, ss->expiry) ? NULL : session_disk(s);
    if (!d)
        return MQ_ERR_NOMEM;
    d->next_seq = ss->max_seq + 1;
    /* What store_load leaves on disk is paged in as the queue drains (seq order). */
    d->spilled = ss->msg_count > ss->msgs_loaded ? ss->msg_count - ss->msgs_loaded : 0;
    l->s = s;
    l->sessions++;
    return 0;
}

static int load_sub(void *ctx, const struct mq_store_session *ss, const char *filter, uint16_t len,
                    uint32_t grant)
{
    (void)ss;
    struct load_ctx *l = ctx;
    bool existed;
    struct mq_sub_leaf *leaf =
        sub_tree_add(l->b->subs, (const uint8_t *)filter, len, l->s, grant, &existed);
    if (!leaf)
        return MQ_ERR_NOMEM;
    if (!existed && session_sub_add(l->s, leaf)) {
        sub_tree_leaf_remove(l->b->subs, leaf, l->s);
        return MQ_ERR_NOMEM;
    }
    l->subs++;
    return 0;
}

static int load_msg(void *ctx, const struct mq_store_session *ss, const struct mq_store_msg *sm)
{
    (void)ss;
    struct load_ctx *l = ctx;
    struct mq_session *s = l->s;
    struct mq_msg *m = NULL;
    struct mq_sub_ids ids = {0};
    if (sm->state != MQ_STORE_WAIT_PUBCOMP) {
        m = stored_msg(l->b, sm->topic, sm->topic_len, sm->payload, sm->payload_len, sm->qos,
                       sm->retain, sm->props, sm->props_len, sm->expires_wall_ms);
        if (!m || sub_ids_set(&ids, sm->sub_ids, sm->n_sub_ids)) {
            msg_unref(m);
            return MQ_ERR_NOMEM;
        }
    }
    int rc = 0;
    if (sm->state == MQ_STORE_QUEUED) {
        rc = session_queue_push(s, m, sm->qos, sm->retain, sm->seq, &ids, 0);
        s->flow->disk->queued_last_seq = sm->seq; /* load_session made it */
    } else {
        struct mq_inflight *e =
            session_inflight_add(s, m, sm->qos, sm->retain, sm->packet_id, sm->seq, &ids, 0);
        if (!e)
            rc = MQ_ERR_NOMEM;
        else
            e->state = sm->state; /* equal values: see enum mq_store_msg_state */
        if (e && sm->packet_id >= s->flow->next_packet_id)
            s->flow->next_packet_id = (uint16_t)(sm->packet_id == 65535 ? 1 : sm->packet_id + 1);
    }
    if (rc)
        sub_ids_free(&ids); /* still ours when the push failed */
    msg_unref(m);
    if (!rc)
        l->msgs++;
    return rc;
}

static int load_qos2_in(void *ctx, const struct mq_store_session *ss, uint16_t packet_id)
{
    (void)ss;
    struct load_ctx *l = ctx;
    if (session_qos2_in_add(l->s, packet_id) < 0)
        return MQ_ERR_NOMEM;
    l->qos2++;
    return 0;
}

/* A will that waited for its delay when the broker stopped waits for what is left of it;
 * one already due goes out at the first tick (wills_due), one whose session expired at
 * the session's end (expire_sessions → session_end). */
static int load_will(void *ctx, const struct mq_store_session *ss, const struct mq_store_will *w)
{
    (void)ss;
    struct load_ctx *l = ctx;
    struct mq_broker *b = l->b;
    struct mq_msg *m = stored_msg(b, w->topic, w->topic_len, w->payload, w->payload_len, w->qos,
                                  w->retain, w->props, w->props_len, w->expires_wall_ms);
    if (!m)
        return MQ_ERR_NOMEM;
    uint64_t due = broker_time(b, w->due_wall_ms);
    uint64_t left_ms = due > b->now_ms ? due - b->now_ms : 0;
    uint64_t delay_s = (left_ms + 999) / 1000; /* never earlier than promised */
    int rc = will_delay(b, l->s, m, delay_s > UINT32_MAX ? UINT32_MAX : (uint32_t)delay_s);
    msg_unref(m);
    if (!rc)
        l->wills++;
    return rc;
}

int broker_store_attach(struct mq_broker *b, struct mq_store *store, bool wait_for_commit,
                        int64_t wall_offset_ms)
{
    b->wall_offset_ms = wall_offset_ms;
    struct load_ctx l = {.b = b, .store = store};
    static const struct mq_store_load_cb cb = {
        .retained = load_retained,
        .session = load_session,
        .sub = load_sub,
        .msg = load_msg,
        .qos2_in = load_qos2_in,
        .will = load_will,
    };
    /* In-flight messages have the lowest seqs, so this loads all of them and the oldest
     * queued ones; the rest waits on disk. */
    uint32_t window = b->cfg ? b->cfg->max_inflight_messages : 20;
    struct mq_store_load_cb load = cb;
    load.msgs_per_session = (window && window < 65535 ? window : 65535) + MQ_QUEUE_IN_MEMORY;
    int rc = store_load(store, &load, &l);
    if (rc) {
        mq_log(MQ_LOG_ERR, "persistence: loading the stored state failed: %s", mq_strerror(rc));
        return rc;
    }
    b->store = store;
    b->store_wait = wait_for_commit;
    mq_log(MQ_LOG_NOTICE,
           "persistence: restored %llu retained messages, %llu persistent sessions with %llu "
           "subscriptions, %llu queued or in-flight messages, %llu QoS 2 receptions and %llu "
           "delayed wills",
           (unsigned long long)l.retained, (unsigned long long)l.sessions,
           (unsigned long long)l.subs, (unsigned long long)l.msgs, (unsigned long long)l.qos2,
           (unsigned long long)l.wills);
    if (l.expired)
        mq_log(MQ_LOG_INFO,
               "persistence: %llu retained messages expired while the broker was down and were "
               "removed",
               (unsigned long long)l.expired);
    return 0;
}

/* session.h - the state MQTT keeps per client id: subscriptions, outgoing
 * in-flight window, outgoing queue, packet-id allocation, inbound QoS 2 state.
 *
 * Pure bookkeeping with no I/O and no protocol decisions: proto decides what
 * to send and calls these to record it. A session outlives its connections
 * when clean session is 0. Every stored message is a counted reference.
 * Most sessions are idle connections with one subscription, so what only QoS
 * 1/2 traffic needs lives in a block allocated on first use (struct
 * mq_session_flow) and the session itself is one small allocation.
 */
#ifndef MIDGE_SESSION_H
#define MIDGE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_msg;
struct mq_conn;
struct mq_listener_ctx;
struct mq_share_group;
struct mq_sub_leaf;
struct mq_sub_set;

/* Where an outgoing QoS 1/2 message stands. */
enum mq_out_state {
    MQ_OUT_WAIT_PUBACK = 1, /* QoS 1 sent, PUBACK expected */
    MQ_OUT_WAIT_PUBREC = 2, /* QoS 2 sent, PUBREC expected */
    MQ_OUT_WAIT_PUBCOMP = 3 /* PUBREL sent, PUBCOMP expected; message released */
};

/* The Subscription Identifiers a delivery carries (MQTT 5): none (0), one inline (odd:
 * id << 1 | 1), or an owned array (even: a pointer to {count, ids...}) for the rare message
 * that matches several identified subscriptions of one client. Read with sub_ids_view. */
struct mq_sub_ids {
    uintptr_t v;
};

struct mq_inflight {
    struct mq_msg *msg;        /* reference; NULL once PUBREC arrived */
    uint64_t seq;              /* number in the durable store (0: not stored) */
    struct mq_sub_ids sub_ids; /* owned */
    uint32_t share_id;         /* its shared subscription group (0: none) */
    uint16_t packet_id;
    uint8_t qos;
    uint8_t state; /* enum mq_out_state */
    bool retain;   /* retain flag to send with (set for retained-on-subscribe) */
};

struct mq_queued {
    struct mq_msg *msg;        /* reference */
    uint64_t seq;              /* number in the durable store (0: not stored) */
    struct mq_sub_ids sub_ids; /* owned */
    uint32_t share_id;         /* its shared subscription group (0: none) */
    uint8_t qos;               /* QoS to deliver with */
    bool retain;
};

/* What a persistent session needs only when a durable store keeps it (allocated then, so
 * that sessions without one stay small). */
struct mq_session_disk {
    /* Store number of the next stored message (QoS 1/2, and QoS 0 of a session that queues
     * it, session_queues_qos0): its delivery order. */
    uint64_t next_seq;
    /* Stored messages queued on disk only, all newer than the memory queue (a long
     * backlog does not sit in memory); paged back in as the queue empties. */
    uint64_t spilled;         /* how many */
    uint64_t spilled_bytes;   /* their payload bytes (max_queued_bytes counts them) */
    uint64_t spill_ticket;    /* the store batch holding the newest one is >= this */
    uint64_t queued_last_seq; /* seq of the newest message that entered memory */
    uint64_t page_token;      /* nonzero while a page read is out: its token */
};

/* Outgoing and inbound QoS state: what a session needs once a QoS 1/2 message or a queued
 * message passes through it, allocated then (session_flow), so that an idle session that
 * only ever saw QoS 0 carries none of it. Kept until the session is freed: a client that
 * used QoS 1/2 once is likely to use it again, and freeing it on every acknowledgement
 * would cost an allocation per message. */
struct mq_session_flow {
    /* Outgoing QoS 1/2 in flight, in the order they were first sent. */
    struct mq_inflight *inflight;
    uint32_t inflight_count, inflight_cap;
    uint16_t next_packet_id;

    /* Outgoing messages waiting for window space or for the client to return (ring). */
    struct mq_queued *queue;
    uint32_t queue_head, queue_count, queue_cap;
    uint64_t queue_bytes;
    uint64_t dropped;        /* messages dropped because the queue was full or it was slow */
    uint64_t drop_logged_ms; /* when the last drop line was logged (rate limit) */

    /* Inbound QoS 2 packet ids received but not yet released by PUBREL (sorted). */
    uint16_t *qos2_in;
    uint32_t qos2_in_count, qos2_in_cap;

    /* The numbering of this session's messages in the durable store; NULL until the
     * session is stored (it is about the same QoS 1/2 messages, hence here). */
    struct mq_session_disk *disk;

    /* An MQTT 5 Session Expiry Interval other than 0 and "never" (seconds); 0 = never.
     * Kept here rather than in the session because most sessions never set one. */
    uint32_t expiry_s;

    /* Queue QoS 0 messages while offline, whatever queue_qos0_messages says (a bridge's
     * local side: what it forwards must wait while its remote is unreachable), in line with
     * its QoS 1/2 ones. A stored session keeps them exactly as those: stored, spilled to disk
     * and paged back, restored after a restart. Without a store, only up to the messages a
     * queue keeps in memory. */
    bool queue_qos0;

    /* The shared subscription groups (share.h) it is a member of: rare, hence here. */
    struct mq_share_group **shares;
    uint32_t share_count, share_cap;
};

struct mq_session {
    char *username; /* owned; from the last CONNECT, NULL when none (ACL checks) */
    struct mq_listener_ctx *listener; /* borrowed: whose ACL applies, also while offline */
    struct mq_conn *conn;             /* borrowed; NULL while offline */
    uint64_t last_seen_ms;            /* for persistent_client_expiration */

    /* The subscriptions, as the handles of their leaves in the broker's subscription tree
     * (sub_tree.h), which holds each filter and its granted QoS: the session only needs
     * to find them again when it ends. One is held inline (the common case: an idle
     * client with one filter costs no allocation here), two or more in a hash set, so a
     * client with thousands of filters is not quadratic. */
    union {
        struct mq_sub_leaf *one; /* sub_count == 1 */
        struct mq_sub_set *many; /* sub_count >= 2 */
    } subs;

    struct mq_session_flow *flow; /* NULL until the first QoS 1/2 or queued message */

    /* The small fields last, packed against the id: an idle session with a 13-byte id
     * fits a 72-byte request, glibc's 80-byte chunk (test_footprint.c). */
    uint32_t sub_count;
    uint16_t client_id_len;
    bool clean;        /* it ends with its connection (3.1.1 clean session 1, MQTT 5 expiry 0) */
    bool will_pending; /* a delayed will waits for it in broker->pending_wills */
    char client_id[];  /* NUL-terminated, in the session's own allocation: never changes */
};

/* The Session Expiry Interval of a session that outlives its connection and has none set
 * (3.1.1 clean session 0, MQTT 5 0xFFFFFFFF): persistent_client_expiration applies. */
#define MQ_EXPIRY_NEVER UINT32_MAX

/* The Session Expiry Interval in force: 0 when it ends with its connection. */
static inline uint32_t session_expiry(const struct mq_session *s)
{
    if (s->clean)
        return 0;
    return s->flow && s->flow->expiry_s ? s->flow->expiry_s : MQ_EXPIRY_NEVER;
}

/* Set the Session Expiry Interval (0, seconds, or MQ_EXPIRY_NEVER). Returns 0 or
 * MQ_ERR_NOMEM (an interval other than 0 and never needs the flow block). */
int session_set_expiry(struct mq_session *s, uint32_t expiry);

/* Subscription Identifiers: set from n ids (n may be 0; an array is allocated only for two
 * or more). Returns 0 or MQ_ERR_NOMEM (then *x holds none). */
int sub_ids_set(struct mq_sub_ids *x, const uint32_t *ids, size_t n);
/* How many ids x holds; *ids points at them (at *one when there is a single id). */
size_t sub_ids_view(const struct mq_sub_ids *x, uint32_t *one, const uint32_t **ids);
void sub_ids_free(struct mq_sub_ids *x);

/* New session for client id (copied). NULL on out of memory. Free with session_free. */
struct mq_session *session_new(const uint8_t *client_id, uint16_t len, bool clean);

/* s->flow, allocated on first use (packet ids from 1); NULL on out of memory. Functions
 * that record state call it; readers use the accessors below, which read "no flow" as
 * empty. */
struct mq_session_flow *session_flow(struct mq_session *s);

/* s->flow->disk, allocated on first use (numbering from 1) with the flow block if need
 * be; NULL on out of memory. */
struct mq_session_disk *session_disk(struct mq_session *s);

/* The persistence state, or NULL when the session has none (never stored). */
static inline struct mq_session_disk *session_disk_peek(const struct mq_session *s)
{
    return s->flow ? s->flow->disk : NULL;
}

static inline uint64_t session_spilled(const struct mq_session *s)
{
    const struct mq_session_disk *d = session_disk_peek(s);
    return d ? d->spilled : 0;
}

static inline uint64_t session_spilled_bytes(const struct mq_session *s)
{
    const struct mq_session_disk *d = session_disk_peek(s);
    return d ? d->spilled_bytes : 0;
}

/* True when s queues its QoS 0 in line with the rest (queue_qos0: a bridge's local side). */
static inline bool session_queues_qos0(const struct mq_session *s)
{
    return s->flow && s->flow->queue_qos0;
}

static inline uint32_t session_inflight_count(const struct mq_session *s)
{
    return s->flow ? s->flow->inflight_count : 0;
}

/* The i-th in-flight entry in send order; i < session_inflight_count(s). */
static inline struct mq_inflight *session_inflight_at(const struct mq_session *s, uint32_t i)
{
    return &s->flow->inflight[i];
}

static inline uint32_t session_queue_count(const struct mq_session *s)
{
    return s->flow ? s->flow->queue_count : 0;
}

/* Payload bytes of the queued messages. */
static inline uint64_t session_queue_bytes(const struct mq_session *s)
{
    return s->flow ? s->flow->queue_bytes : 0;
}

/* The oldest queued message (still queued), or NULL when the queue is empty. */
static inline const struct mq_queued *session_queue_peek(const struct mq_session *s)
{
    return session_queue_count(s) ? &s->flow->queue[s->flow->queue_head] : NULL;
}

/* Messages dropped for this session so far (queue full, or a slow reader's QoS 0). */
static inline uint64_t session_dropped(const struct mq_session *s)
{
    return s->flow ? s->flow->dropped : 0;
}

static inline uint32_t session_qos2_in_count(const struct mq_session *s)
{
    return s->flow ? s->flow->qos2_in_count : 0;
}

/* Free the session and drop every message reference it holds. Subscriptions
 * must already be removed from the subscription tree by the caller. */
void session_free(struct mq_session *s);

/* Record a subscription by its leaf in the subscription tree (borrowed: the caller keeps
 * the tree and the session in step), which the session must not hold yet. Returns 0 or
 * MQ_ERR_NOMEM. */
int session_sub_add(struct mq_session *s, struct mq_sub_leaf *leaf);

/* Forget the subscription at leaf; true when the session held it. */
bool session_sub_remove(struct mq_session *s, const struct mq_sub_leaf *leaf);

/* Iterate the subscriptions' leaves: start with *pos = 0; returns the next one or NULL at
 * the end, in no particular order. The session must not change during iteration. */
struct mq_sub_leaf *session_sub_next(const struct mq_session *s, uint32_t *pos);

/* Allocate a packet id not used by any in-flight message ([MQTT-2.3.1-4]); 0 when the
 * flow block cannot be allocated. Only valid when the window has fewer than 65535
 * entries. */
uint16_t session_next_packet_id(struct mq_session *s);

/* Append an in-flight entry (takes a new reference on msg, which may be NULL only for an
 * entry restored in state MQ_OUT_WAIT_PUBCOMP, and takes over sub_ids, which may be NULL).
 * NULL on out of memory (sub_ids is then still the caller's). */
struct mq_inflight *session_inflight_add(struct mq_session *s, struct mq_msg *msg, uint8_t qos,
                                         bool retain, uint16_t packet_id, uint64_t seq,
                                         struct mq_sub_ids *sub_ids, uint32_t share_id);

/* Find the in-flight entry with this packet id, or NULL. */
struct mq_inflight *session_inflight_find(struct mq_session *s, uint16_t packet_id);

/* Remove an in-flight entry (dropping its reference), keeping the order of the rest. */
void session_inflight_remove(struct mq_session *s, struct mq_inflight *e);

/* Append to the queue, taking a new reference and taking over sub_ids (may be NULL).
 * Returns 0, or MQ_ERR_NOMEM (sub_ids is then still the caller's). Caps are the caller's
 * policy (see session_queue_full). */
int session_queue_push(struct mq_session *s, struct mq_msg *msg, uint8_t qos, bool retain,
                       uint64_t seq, struct mq_sub_ids *sub_ids, uint32_t share_id);

/* Record that s is a member of shared subscription group g (which it must not be yet).
 * Returns 0 or MQ_ERR_NOMEM. */
int session_share_add(struct mq_session *s, struct mq_share_group *g);
/* Forget g; true when s was a member. */
bool session_share_remove(struct mq_session *s, const struct mq_share_group *g);

/* True when another message would exceed max_messages or max_bytes (0 = no limit). */
bool session_queue_full(const struct mq_session *s, uint32_t max_messages, uint64_t max_bytes,
                        uint32_t next_bytes);

/* Pop the oldest queued message into *out (the reference and the sub_ids move to the
 * caller). Returns false when the queue is empty. */
bool session_queue_pop(struct mq_session *s, struct mq_queued *out);

/* Inbound QoS 2: record packet id; returns true when it was new, false when already
 * held (a retransmission that must not be delivered again). -1 on out of memory. */
int session_qos2_in_add(struct mq_session *s, uint16_t packet_id);

/* Inbound QoS 2: true when packet id is held (received, PUBREL not yet). */
bool session_qos2_in_has(const struct mq_session *s, uint16_t packet_id);

/* Inbound QoS 2: release packet id on PUBREL; true when it was held. */
bool session_qos2_in_release(struct mq_session *s, uint16_t packet_id);

#endif

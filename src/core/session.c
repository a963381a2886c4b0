/* session.c - per-client-id MQTT state: subscriptions, in-flight window, queue,
 * packet ids and inbound QoS 2 ids.
 *
 * Owns every message reference stored in the in-flight array and the queue. Holds the
 * subscriptions only as leaf handles it never dereferences (the tree owns filters and
 * QoS). Never decides policy (window size, queue caps, what to send): proto does.
 */
#include "midge/session.h"

#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/msg.h"

/* Grow an array of elem-sized items to hold at least need items. */
static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    /* Start with what the smallest malloc chunk holds (24 bytes, at least one item):
     * a session that saw one QoS 1/2 message keeps its array, and a light client would
     * otherwise carry the slack of a 4-item array. */
    uint32_t ncap = *cap ? *cap * 2 : (elem < 24 ? (uint32_t)(24 / elem) : 1);
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(*arr, (size_t)ncap * elem);
    if (!n)
        return MQ_ERR_NOMEM;
    *arr = n;
    *cap = ncap;
    return 0;
}

struct mq_session *session_new(const uint8_t *client_id, uint16_t len, bool clean)
{
    /* One allocation with the id: it is the session's key for its whole life. */
    struct mq_session *s = calloc(1, offsetof(struct mq_session, client_id) + (size_t)len + 1);
    if (!s)
        return NULL;
    memcpy(s->client_id, client_id, len);
    s->client_id[len] = '\0';
    s->client_id_len = len;
    s->clean = clean;
    return s;
}

int session_share_add(struct mq_session *s, struct mq_share_group *g)
{
    struct mq_session_flow *f = session_flow(s);
    if (!f || grow((void **)&f->shares, &f->share_cap, f->share_count + 1, sizeof(*f->shares)))
        return MQ_ERR_NOMEM;
    f->shares[f->share_count++] = g;
    return 0;
}

bool session_share_remove(struct mq_session *s, const struct mq_share_group *g)
{
    struct mq_session_flow *f = s->flow;
    for (uint32_t i = 0; f && i < f->share_count; i++)
        if (f->shares[i] == g) {
            f->shares[i] = f->shares[--f->share_count];
            return true;
        }
    return false;
}

int session_set_expiry(struct mq_session *s, uint32_t expiry)
{
    if (expiry == 0) {
        s->clean = true;
        return 0;
    }
    if (expiry != MQ_EXPIRY_NEVER && !session_flow(s))
        return MQ_ERR_NOMEM;
    s->clean = false;
    if (s->flow)
        s->flow->expiry_s = expiry == MQ_EXPIRY_NEVER ? 0 : expiry;
    return 0;
}

int sub_ids_set(struct mq_sub_ids *x, const uint32_t *ids, size_t n)
{
    x->v = 0;
    if (n == 1) {
        x->v = (uintptr_t)ids[0] << 1 | 1;
    } else if (n > 1) {
        uint32_t *a = malloc((n + 1) * sizeof(*a));
        if (!a)
            return MQ_ERR_NOMEM;
        a[0] = (uint32_t)n;
        memcpy(a + 1, ids, n * sizeof(*a));
        x->v = (uintptr_t)a; /* malloc's alignment keeps the low bit clear */
    }
    return 0;
}

size_t sub_ids_view(const struct mq_sub_ids *x, uint32_t *one, const uint32_t **ids)
{
    if (x->v == 0)
        return 0;
    if (x->v & 1) {
        *one = (uint32_t)(x->v >> 1);
        *ids = one;
        return 1;
    }
    const uint32_t *a = (const uint32_t *)x->v;
    *ids = a + 1;
    return a[0];
}

void sub_ids_free(struct mq_sub_ids *x)
{
    if (x->v && !(x->v & 1))
        free((void *)x->v);
    x->v = 0;
}

struct mq_session_flow *session_flow(struct mq_session *s)
{
    if (!s->flow && (s->flow = calloc(1, sizeof(*s->flow))))
        s->flow->next_packet_id = 1;
    return s->flow;
}

struct mq_session_disk *session_disk(struct mq_session *s)
{
    struct mq_session_flow *f = session_flow(s);
    if (f && !f->disk && (f->disk = calloc(1, sizeof(*f->disk))))
        f->disk->next_seq = 1;
    return f ? f->disk : NULL;
}

/* Drop every message reference the flow block holds, then the block. */
static void flow_free(struct mq_session_flow *f)
{
    if (!f)
        return;
    for (uint32_t i = 0; i < f->inflight_count; i++) {
        msg_unref(f->inflight[i].msg);
        sub_ids_free(&f->inflight[i].sub_ids);
    }
    free(f->inflight);
    for (uint32_t i = 0; i < f->queue_count; i++) {
        struct mq_queued *q = &f->queue[(f->queue_head + i) % f->queue_cap];
        msg_unref(q->msg);
        sub_ids_free(&q->sub_ids);
    }
    free(f->queue);
    free(f->qos2_in);
    free(f->disk);
    free(f->shares);
    free(f);
}

/* ---- subscriptions: a set of leaf handles ---- */

/* Two or more subscriptions: open addressing with linear probing, at most half full, and
 * removal by shifting later members of a probe run back (no tombstones), so adding or
 * removing one of a client's 100,000 filters costs O(1). */
struct mq_sub_set {
    uint32_t cap;               /* power of two, >= SUB_SET_MIN */
    struct mq_sub_leaf *slot[]; /* NULL = empty */
};

#define SUB_SET_MIN 4u

/* Fibonacci hashing, as sub_tree.c does for subscriber pointers. */
static uint32_t leaf_hash(const struct mq_sub_leaf *leaf, uint32_t mask)
{
    return (uint32_t)(((uint64_t)(uintptr_t)leaf * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

static void set_insert(struct mq_sub_set *set, struct mq_sub_leaf *leaf)
{
    uint32_t mask = set->cap - 1, i = leaf_hash(leaf, mask);
    while (set->slot[i])
        i = (i + 1) & mask;
    set->slot[i] = leaf;
}

/* Empty slot i, then move back each later member of its probe run whose home is not
 * cyclically in (i, j]: a lookup never meets a gap before its leaf. */
static void set_delete_slot(struct mq_sub_set *set, uint32_t i)
{
    uint32_t mask = set->cap - 1;
    for (;;) {
        set->slot[i] = NULL;
        uint32_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (!set->slot[j])
                return;
            uint32_t home = leaf_hash(set->slot[j], mask);
            bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
            if (!stays)
                break;
        }
        set->slot[i] = set->slot[j];
        i = j;
    }
}

/* A set of cap slots holding the session's current leaves. NULL on out of memory. */
static struct mq_sub_set *set_new(uint32_t cap, const struct mq_session *s)
{
    struct mq_sub_set *set = calloc(1, sizeof(*set) + (size_t)cap * sizeof(set->slot[0]));
    if (!set)
        return NULL;
    set->cap = cap;
    uint32_t pos = 0;
    struct mq_sub_leaf *leaf;
    while ((leaf = session_sub_next(s, &pos)))
        set_insert(set, leaf);
    return set;
}

static void set_free(struct mq_session *s)
{
    if (s->sub_count >= 2)
        free(s->subs.many);
}

int session_sub_add(struct mq_session *s, struct mq_sub_leaf *leaf)
{
    if (s->sub_count == 0) {
        s->subs.one = leaf;
        s->sub_count = 1;
        return 0;
    }
    uint32_t cap = s->sub_count == 1 ? SUB_SET_MIN : s->subs.many->cap;
    if ((uint64_t)(s->sub_count + 1) * 2 > cap) /* keep it at most half full */
        cap *= 2;
    if (s->sub_count == 1 || cap != s->subs.many->cap) {
        struct mq_sub_set *set = set_new(cap, s);
        if (!set)
            return MQ_ERR_NOMEM;
        set_free(s);
        s->subs.many = set;
    }
    set_insert(s->subs.many, leaf);
    s->sub_count++;
    return 0;
}

bool session_sub_remove(struct mq_session *s, const struct mq_sub_leaf *leaf)
{
    if (s->sub_count <= 1) {
        if (s->sub_count == 0 || s->subs.one != leaf)
            return false;
        s->subs.one = NULL;
        s->sub_count = 0;
        return true;
    }
    struct mq_sub_set *set = s->subs.many;
    uint32_t mask = set->cap - 1, i = leaf_hash(leaf, mask);
    while (set->slot[i] != leaf) {
        if (!set->slot[i])
            return false;
        i = (i + 1) & mask;
    }
    set_delete_slot(set, i);
    s->sub_count--;
    if (s->sub_count == 1) {
        /* Back inline: the set would cost its allocation for one leaf. */
        uint32_t k = 0;
        while (!set->slot[k])
            k++;
        s->subs.one = set->slot[k];
        free(set);
    } else if (set->cap > SUB_SET_MIN && (uint64_t)s->sub_count * 8 <= set->cap) {
        /* Shrinking is best effort: on failure the larger set simply stays. */
        struct mq_sub_set *smaller = set_new(set->cap / 2, s);
        if (smaller) {
            free(set);
            s->subs.many = smaller;
        }
    }
    return true;
}

struct mq_sub_leaf *session_sub_next(const struct mq_session *s, uint32_t *pos)
{
    if (s->sub_count <= 1) {
        if (s->sub_count == 0 || *pos > 0)
            return NULL;
        *pos = 1;
        return s->subs.one;
    }
    const struct mq_sub_set *set = s->subs.many;
    while (*pos < set->cap) {
        struct mq_sub_leaf *leaf = set->slot[(*pos)++];
        if (leaf)
            return leaf;
    }
    return NULL;
}

void session_free(struct mq_session *s)
{
    if (!s)
        return;
    set_free(s);
    flow_free(s->flow);
    free(s->username);
    free(s);
}

uint16_t session_next_packet_id(struct mq_session *s)
{
    struct mq_session_flow *f = session_flow(s);
    if (!f)
        return 0;
    /* Ids are handed out in sequence; one is reused only after the counter wraps,
     * so the scan below almost always succeeds on its first candidate. */
    for (;;) {
        uint16_t id = f->next_packet_id;
        f->next_packet_id = (uint16_t)(id == 65535 ? 1 : id + 1);
        if (!session_inflight_find(s, id))
            return id;
    }
}

struct mq_inflight *session_inflight_add(struct mq_session *s, struct mq_msg *msg, uint8_t qos,
                                         bool retain, uint16_t packet_id, uint64_t seq,
                                         struct mq_sub_ids *sub_ids, uint32_t share_id)
{
    struct mq_session_flow *f = session_flow(s);
    if (!f ||
        grow((void **)&f->inflight, &f->inflight_cap, f->inflight_count + 1, sizeof(*f->inflight)))
        return NULL;
    struct mq_inflight *e = &f->inflight[f->inflight_count++];
    *e = (struct mq_inflight){.msg = msg ? msg_ref(msg) : NULL,
                              .seq = seq,
                              .packet_id = packet_id,
                              .qos = qos,
                              .state = qos == 1 ? MQ_OUT_WAIT_PUBACK : MQ_OUT_WAIT_PUBREC,
                              .retain = retain,
                              .share_id = share_id};
    if (sub_ids) {
        e->sub_ids = *sub_ids;
        sub_ids->v = 0;
    }
    return e;
}

struct mq_inflight *session_inflight_find(struct mq_session *s, uint16_t packet_id)
{
    struct mq_session_flow *f = s->flow;
    for (uint32_t i = 0; f && i < f->inflight_count; i++)
        if (f->inflight[i].packet_id == packet_id)
            return &f->inflight[i];
    return NULL;
}

void session_inflight_remove(struct mq_session *s, struct mq_inflight *e)
{
    struct mq_session_flow *f = s->flow; /* e is one of its entries */
    size_t idx = (size_t)(e - f->inflight);
    msg_unref(e->msg);
    sub_ids_free(&e->sub_ids);
    /* Keep send order: redelivery after reconnect must follow the original order. */
    memmove(e, e + 1, (f->inflight_count - idx - 1) * sizeof(*e));
    f->inflight_count--;
}

int session_queue_push(struct mq_session *s, struct mq_msg *msg, uint8_t qos, bool retain,
                       uint64_t seq, struct mq_sub_ids *sub_ids, uint32_t share_id)
{
    struct mq_session_flow *f = session_flow(s);
    if (!f)
        return MQ_ERR_NOMEM;
    if (f->queue_count == f->queue_cap) {
        uint32_t ncap = f->queue_cap ? f->queue_cap * 2 : 8;
        struct mq_queued *n = malloc((size_t)ncap * sizeof(*n));
        if (!n)
            return MQ_ERR_NOMEM;
        /* Unroll the ring into the new array so head starts at 0. */
        for (uint32_t i = 0; i < f->queue_count; i++)
            n[i] = f->queue[(f->queue_head + i) % f->queue_cap];
        free(f->queue);
        f->queue = n;
        f->queue_cap = ncap;
        f->queue_head = 0;
    }
    uint32_t tail = (f->queue_head + f->queue_count) % f->queue_cap;
    f->queue[tail] = (struct mq_queued){
        .msg = msg_ref(msg), .seq = seq, .qos = qos, .retain = retain, .share_id = share_id};
    if (sub_ids) {
        f->queue[tail].sub_ids = *sub_ids;
        sub_ids->v = 0;
    }
    f->queue_count++;
    f->queue_bytes += msg->payload_len;
    return 0;
}

bool session_queue_full(const struct mq_session *s, uint32_t max_messages, uint64_t max_bytes,
                        uint32_t next_bytes)
{
    if (max_messages && session_queue_count(s) >= max_messages)
        return true;
    if (max_bytes && session_queue_bytes(s) + next_bytes > max_bytes)
        return true;
    return false;
}

bool session_queue_pop(struct mq_session *s, struct mq_queued *out)
{
    struct mq_session_flow *f = s->flow;
    if (!f || !f->queue_count)
        return false;
    *out = f->queue[f->queue_head];
    f->queue_head = (f->queue_head + 1) % f->queue_cap;
    f->queue_count--;
    f->queue_bytes -= out->msg->payload_len;
    return true;
}

/* Index of the first id >= packet_id in the sorted qos2_in array. */
static uint32_t qos2_lower_bound(const struct mq_session_flow *f, uint16_t packet_id)
{
    uint32_t lo = 0, hi = f->qos2_in_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->qos2_in[mid] < packet_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int session_qos2_in_add(struct mq_session *s, uint16_t packet_id)
{
    struct mq_session_flow *f = session_flow(s);
    if (!f)
        return -1;
    uint32_t i = qos2_lower_bound(f, packet_id);
    if (i < f->qos2_in_count && f->qos2_in[i] == packet_id)
        return false;
    if (grow((void **)&f->qos2_in, &f->qos2_in_cap, f->qos2_in_count + 1, sizeof(*f->qos2_in)))
        return -1;
    memmove(&f->qos2_in[i + 1], &f->qos2_in[i], (f->qos2_in_count - i) * sizeof(*f->qos2_in));
    f->qos2_in[i] = packet_id;
    f->qos2_in_count++;
    return true;
}

bool session_qos2_in_has(const struct mq_session *s, uint16_t packet_id)
{
    const struct mq_session_flow *f = s->flow;
    if (!f)
        return false;
    uint32_t i = qos2_lower_bound(f, packet_id);
    return i < f->qos2_in_count && f->qos2_in[i] == packet_id;
}

bool session_qos2_in_release(struct mq_session *s, uint16_t packet_id)
{
    struct mq_session_flow *f = s->flow;
    if (!f)
        return false;
    uint32_t i = qos2_lower_bound(f, packet_id);
    if (i >= f->qos2_in_count || f->qos2_in[i] != packet_id)
        return false;
    memmove(&f->qos2_in[i], &f->qos2_in[i + 1], (f->qos2_in_count - i - 1) * sizeof(*f->qos2_in));
    f->qos2_in_count--;
    return true;
}

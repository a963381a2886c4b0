/* session.c - per-client-id MQTT state: subscriptions, in-flight window, queue,
 * packet ids and inbound QoS 2 ids.
 *
 * Owns every message reference stored in the in-flight array and the queue.
 * Never decides policy (window size, queue caps, what to send): proto does.
 */
#include "midge/session.h"

#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/msg.h"

/* Below this many filters a linear scan beats the hash index and costs no memory;
 * most clients subscribe to one or two (sub_tree.c uses the same threshold). */
#define SUB_INDEX_MIN 8

/* Grow an array of elem-sized items to hold at least need items. */
static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    /* Start with what the smallest malloc chunk holds (24 bytes, at least one item):
     * a session with one subscription is the common case, and each idle connection
     * would otherwise carry the slack of a 4-item array. */
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
    hmap_init(&s->sub_index);
    memcpy(s->client_id, client_id, len);
    s->client_id[len] = '\0';
    s->client_id_len = len;
    s->clean = clean;
    return s;
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
    for (uint32_t i = 0; i < f->inflight_count; i++)
        msg_unref(f->inflight[i].msg);
    free(f->inflight);
    for (uint32_t i = 0; i < f->queue_count; i++)
        msg_unref(f->queue[(f->queue_head + i) % f->queue_cap].msg);
    free(f->queue);
    free(f->qos2_in);
    free(f->disk);
    free(f);
}

void session_free(struct mq_session *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->sub_count; i++)
        free(s->subs[i].filter);
    free(s->subs);
    hmap_destroy(&s->sub_index);
    flow_free(s->flow);
    free(s->username);
    free(s);
}

/* The index exists (holds every filter) only from SUB_INDEX_MIN filters on. */
static bool sub_indexed(const struct mq_session *s)
{
    return hmap_count(&s->sub_index) > 0;
}

static struct mq_subscription *sub_find(struct mq_session *s, const uint8_t *filter, uint16_t len)
{
    if (sub_indexed(s)) {
        uintptr_t pos = (uintptr_t)hmap_get(&s->sub_index, filter, len);
        return pos ? &s->subs[pos - 1] : NULL;
    }
    for (uint32_t i = 0; i < s->sub_count; i++)
        if (s->subs[i].len == len && memcmp(s->subs[i].filter, filter, len) == 0)
            return &s->subs[i];
    return NULL;
}

/* Index the first n filters of subs. The index only saves time, so when memory runs
 * out it is dropped and lookups scan, rather than failing the subscription. */
static void sub_index_build(struct mq_session *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (hmap_put(&s->sub_index, s->subs[i].filter, s->subs[i].len,
                     (void *)(uintptr_t)(i + 1))) {
            hmap_destroy(&s->sub_index);
            hmap_init(&s->sub_index);
            return;
        }
    }
}

int session_sub_set(struct mq_session *s, const uint8_t *filter, uint16_t len, uint8_t qos)
{
    struct mq_subscription *sub = sub_find(s, filter, len);
    if (sub) {
        sub->qos = qos;
        return 0;
    }
    if (grow((void **)&s->subs, &s->sub_cap, s->sub_count + 1, sizeof(*s->subs)))
        return MQ_ERR_NOMEM;
    char *copy = malloc((size_t)len + 1);
    if (!copy)
        return MQ_ERR_NOMEM;
    memcpy(copy, filter, len);
    copy[len] = '\0';
    s->subs[s->sub_count++] = (struct mq_subscription){.filter = copy, .len = len, .qos = qos};
    if (sub_indexed(s)) {
        if (hmap_put(&s->sub_index, copy, len, (void *)(uintptr_t)s->sub_count)) {
            hmap_destroy(&s->sub_index);
            hmap_init(&s->sub_index);
        }
    } else if (s->sub_count >= SUB_INDEX_MIN) {
        sub_index_build(s, s->sub_count);
    }
    return 0;
}

bool session_sub_remove(struct mq_session *s, const uint8_t *filter, uint16_t len)
{
    struct mq_subscription *sub = sub_find(s, filter, len);
    if (!sub)
        return false;
    /* Once built, the index stays until the last filter goes (hmap_remove then frees
     * its slots): a client hovering around the threshold does not rebuild it. */
    bool indexed = sub_indexed(s);
    if (indexed)
        hmap_remove(&s->sub_index, sub->filter, sub->len);
    free(sub->filter);
    /* Order of subscriptions carries no meaning: move the last one into the hole. */
    struct mq_subscription *last = &s->subs[--s->sub_count];
    if (sub != last) {
        *sub = *last;
        if (indexed)
            hmap_put(&s->sub_index, sub->filter, sub->len,
                     (void *)(uintptr_t)(sub - s->subs + 1)); /* replaces: no allocation */
    }
    return true;
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
                                         bool retain, uint16_t packet_id, uint64_t seq)
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
                              .retain = retain};
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
    /* Keep send order: redelivery after reconnect must follow the original order. */
    memmove(e, e + 1, (f->inflight_count - idx - 1) * sizeof(*e));
    f->inflight_count--;
}

int session_queue_push(struct mq_session *s, struct mq_msg *msg, uint8_t qos, bool retain,
                       uint64_t seq)
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
    f->queue[tail] =
        (struct mq_queued){.msg = msg_ref(msg), .seq = seq, .qos = qos, .retain = retain};
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

/* proto_admin.c - the admin API's queries and commands (include/midge/proto_admin.h).
 *
 * Owns nothing: it reads sessions, the subscription trees and the retained store, and acts
 * through the paths MQTT uses (conn_close_rc, session_end, retain_set + persist_retain,
 * broker_publish). A page is the `max` smallest keys after a cursor key, picked in one pass
 * with a bounded max-heap: O(n log max) per page whatever the order of the tables, no index
 * to keep in step with every change, and the cursor stays meaningful across changes. With
 * 10,000 sessions or 100,000 retained messages a page is a few milliseconds of the loop
 * (docs/admin.md, "Large brokers").
 */
#include "midge/proto_admin.h"

#include <stdlib.h>
#include <string.h>

#include "midge/acl.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/share.h"
#include "midge/sub_tree.h"
#include "midge/topic.h"
#include "proto_internal.h"

/* ---- the smallest `max` keys after a cursor ----------------------------------------------- */

struct pick {
    const uint8_t *key; /* borrowed, or `owned` */
    size_t len;
    void *item;
    uint8_t *owned; /* a key built for the pick (subscriptions), freed with it */
    uint32_t grant;
    uint32_t share_len; /* subscriptions: the share name's length (0: not shared) */
    size_t id_len;      /* subscriptions: the client id's length within the key */
};

struct topk {
    struct pick *v; /* a max-heap by key while picking; sorted ascending by topk_sort */
    size_t n, max;
    size_t offered; /* keys after the cursor seen: more than n means another page */
};

static int keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int pick_cmp(const struct pick *a, const struct pick *b)
{
    return keycmp(a->key, a->len, b->key, b->len);
}

static int topk_init(struct topk *t, size_t max)
{
    t->n = t->offered = 0;
    t->max = max;
    t->v = max ? malloc(max * sizeof(*t->v)) : NULL;
    return max && !t->v ? MQ_ERR_NOMEM : 0;
}

static void topk_free(struct topk *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].owned);
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

static void sift_down(struct topk *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < t->n && pick_cmp(&t->v[l], &t->v[big]) > 0)
            big = l;
        if (r < t->n && pick_cmp(&t->v[r], &t->v[big]) > 0)
            big = r;
        if (big == i)
            return;
        struct pick tmp = t->v[i];
        t->v[i] = t->v[big];
        t->v[big] = tmp;
        i = big;
    }
}

/* Would a key be kept? (Asked before building an owned key.) */
static bool topk_wants(const struct topk *t, const uint8_t *key, size_t len)
{
    return t->n < t->max || keycmp(key, len, t->v[0].key, t->v[0].len) < 0;
}

/* Offer p (its key after the cursor): kept when among the max smallest so far. An owned key
 * that is not kept is freed. */
static void topk_offer(struct topk *t, struct pick p)
{
    t->offered++;
    if (t->n < t->max) {
        size_t i = t->n++;
        t->v[i] = p;
        while (i > 0) {
            size_t up = (i - 1) / 2;
            if (pick_cmp(&t->v[up], &t->v[i]) >= 0)
                break;
            struct pick tmp = t->v[i];
            t->v[i] = t->v[up];
            t->v[up] = tmp;
            i = up;
        }
        return;
    }
    if (!t->max || pick_cmp(&p, &t->v[0]) >= 0) {
        free(p.owned);
        return;
    }
    free(t->v[0].owned);
    t->v[0] = p;
    sift_down(t, 0);
}

static int pick_qsort(const void *a, const void *b)
{
    return pick_cmp(a, b);
}

static void topk_sort(struct topk *t)
{
    if (t->n > 1)
        qsort(t->v, t->n, sizeof(*t->v), pick_qsort);
}

static size_t page_max(size_t max)
{
    return max > MQ_ADMIN_PAGE_MAX ? MQ_ADMIN_PAGE_MAX : max;
}

/* ---- clients ------------------------------------------------------------------------------- */

static bool starts_with(const char *s, size_t n, const char *prefix, size_t plen)
{
    return s && n >= plen && memcmp(s, prefix, plen) == 0;
}

static bool client_passes(const struct mq_session *s, const struct mq_client_filter *f)
{
    if (!f)
        return true;
    if (f->connected >= 0 && (s->conn != NULL) != (f->connected > 0))
        return false;
    if (f->username && (!s->username || strlen(s->username) != f->username_len ||
                        memcmp(s->username, f->username, f->username_len) != 0))
        return false;
    if (f->address) {
        const char *peer = s->conn ? s->conn->peer : NULL;
        if (!peer || !starts_with(peer, strlen(peer), f->address, f->address_len))
            return false;
    }
    return !f->id_prefix ||
           starts_with(s->client_id, s->client_id_len, f->id_prefix, f->id_prefix_len);
}

int broker_clients_page(const struct mq_broker *b, const struct mq_client_filter *f,
                        const uint8_t *after, size_t after_len, size_t max,
                        const struct mq_session **out, size_t *total, bool *more)
{
    struct topk t;
    if (topk_init(&t, page_max(max)))
        return MQ_ERR_NOMEM;
    size_t all = 0;
    uint32_t pos = 0;
    struct mq_session *s;
    while ((s = imap_next(&b->sessions, &pos))) {
        if (!client_passes(s, f))
            continue;
        all++;
        const uint8_t *id = (const uint8_t *)s->client_id;
        if (after_len && keycmp(id, s->client_id_len, after, after_len) <= 0)
            continue;
        topk_offer(&t, (struct pick){.key = id, .len = s->client_id_len, .item = s});
    }
    topk_sort(&t);
    for (size_t i = 0; i < t.n; i++)
        out[i] = t.v[i].item;
    int n = (int)t.n;
    if (total)
        *total = all;
    *more = t.offered > t.n;
    topk_free(&t);
    return n;
}

const struct mq_session *broker_client_find(const struct mq_broker *b, const uint8_t *id,
                                            size_t len)
{
    if (len > UINT16_MAX)
        return NULL;
    return imap_get(&b->sessions, id, len, broker_session_key);
}

void broker_client_info(const struct mq_broker *b, const struct mq_session *s,
                        struct mq_client_info *out)
{
    memset(out, 0, sizeof(*out));
    out->client_id = s->client_id;
    out->client_id_len = s->client_id_len;
    out->username = s->username;
    out->listener = s->listener;
    out->clean = s->clean;
    out->session_expiry = session_expiry(s);
    out->subscriptions = s->sub_count + (s->flow ? s->flow->share_count : 0);
    out->inflight = session_inflight_count(s);
    for (uint32_t i = 0; i < out->inflight; i++) {
        const struct mq_inflight *e = session_inflight_at(s, i);
        if (e->msg)
            out->inflight_bytes += e->msg->payload_len;
    }
    out->queued = session_queue_count(s) + session_spilled(s);
    out->queued_bytes = session_queue_bytes(s) + session_spilled_bytes(s);
    out->dropped = session_dropped(s);
    out->will_delayed = s->will_pending;
    out->last_seen_ms = s->last_seen_ms;
    if (s->will_pending)
        for (const struct mq_pending_will *pw = b->pending_wills; pw; pw = pw->next)
            if (pw->session == s)
                out->will_topic = pw->will->topic;
    const struct mq_conn *c = s->conn;
    if (!c)
        return;
    out->connected = true;
    out->peer = c->peer;
    out->listener = c->listener;
    out->protocol_level = c->protocol_level;
    out->keepalive = c->keepalive;
    out->bridge = c->bridge;
    out->connected_ms = b->start_ms + (uint64_t)c->connected_s * 1000u;
    out->msgs_in = c->pub_in;
    out->msgs_out = c->pub_out;
    out->bytes_in = c->bytes_in;
    out->bytes_out = c->bytes_out;
    if (c->will)
        out->will_topic = c->will->topic;
}

/* ---- subscriptions ------------------------------------------------------------------------- */

bool topic_filters_overlap(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    /* A leading wildcard never matches a '$' topic ([MQTT-4.7.2-1]): a filter that starts
     * with one overlaps nothing that starts with a literal '$'. */
    bool a_wild = alen && (a[0] == '+' || a[0] == '#');
    bool b_wild = blen && (b[0] == '+' || b[0] == '#');
    if ((a_wild && blen && b[0] == '$') || (b_wild && alen && a[0] == '$'))
        return false;
    size_t i = 0, j = 0;
    for (;;) {
        size_t ie = i, je = j;
        while (ie < alen && a[ie] != '/')
            ie++;
        while (je < blen && b[je] != '/')
            je++;
        bool ahash = ie - i == 1 && a[i] == '#', bhash = je - j == 1 && b[j] == '#';
        if (ahash || bhash)
            return true; /* '#' matches this level (even empty) and all below */
        bool aplus = ie - i == 1 && a[i] == '+', bplus = je - j == 1 && b[j] == '+';
        if (!aplus && !bplus && (ie - i != je - j || memcmp(a + i, b + j, ie - i) != 0))
            return false;
        bool aend = ie >= alen, bend = je >= blen;
        if (aend || bend) {
            if (aend && bend)
                return true;
            /* One ends here: only a following "/#" still matches ("a/#" matches "a"). */
            const uint8_t *rest = aend ? b + je : a + ie;
            size_t rlen = aend ? blen - je : alen - ie;
            return rlen == 2 && rest[0] == '/' && rest[1] == '#';
        }
        i = ie + 1;
        j = je + 1;
    }
}

size_t broker_sub_key(const struct mq_sub_info *sub, uint8_t *buf, size_t cap)
{
    const struct mq_session *s = sub->session;
    size_t need = (size_t)s->client_id_len + 1 + sub->filter_len;
    if (need <= cap) {
        memcpy(buf, s->client_id, s->client_id_len);
        buf[s->client_id_len] = 0;
        memcpy(buf + s->client_id_len + 1, sub->filter, sub->filter_len);
    }
    return need;
}

struct subs_walk {
    struct topk t;
    const uint8_t *match, *after;
    size_t match_len, after_len;
    uint8_t *key; /* scratch for keys that are not kept */
    size_t key_cap;
    bool nomem;
};

/* Offer one subscription of s: filter (listed form) with the topic filter it matches by. */
static void offer_sub(struct subs_walk *w, const struct mq_session *s, const char *filter,
                      size_t flen, const char *topic_filter, size_t tflen, uint32_t grant,
                      uint32_t share_len)
{
    if (w->match_len &&
        !topic_filters_overlap((const uint8_t *)topic_filter, tflen, w->match, w->match_len))
        return;
    size_t need = (size_t)s->client_id_len + 1 + flen;
    if (need > w->key_cap) {
        uint8_t *k = realloc(w->key, need);
        if (!k) {
            w->nomem = true;
            return;
        }
        w->key = k;
        w->key_cap = need;
    }
    struct mq_sub_info si = {.session = s, .filter = filter, .filter_len = flen};
    broker_sub_key(&si, w->key, w->key_cap);
    if (w->after_len && keycmp(w->key, need, w->after, w->after_len) <= 0)
        return;
    if (!topk_wants(&w->t, w->key, need)) {
        w->t.offered++;
        return;
    }
    uint8_t *owned = malloc(need + 1);
    if (!owned) {
        w->nomem = true;
        return;
    }
    memcpy(owned, w->key, need);
    owned[need] = 0; /* the filter, at the end of the key, is NUL-terminated for fn */
    topk_offer(&w->t, (struct pick){.key = owned,
                                    .len = need,
                                    .item = (void *)s,
                                    .owned = owned,
                                    .grant = grant,
                                    .share_len = share_len,
                                    .id_len = s->client_id_len});
}

static void walk_session_subs(struct subs_walk *w, const struct mq_session *s, char **buf,
                              size_t *cap)
{
    uint32_t pos = 0;
    struct mq_sub_leaf *leaf;
    while (!w->nomem && (leaf = session_sub_next(s, &pos))) {
        size_t n = sub_tree_leaf_filter(leaf, *buf, *cap);
        if (n >= *cap) {
            char *nb = realloc(*buf, n + 1);
            if (!nb) {
                w->nomem = true;
                return;
            }
            *buf = nb;
            *cap = n + 1;
            sub_tree_leaf_filter(leaf, *buf, *cap);
        }
        uint32_t grant = 0;
        sub_tree_leaf_grant(leaf, s, &grant);
        offer_sub(w, s, *buf, n, *buf, n, grant, 0);
    }
    const struct mq_session_flow *f = s->flow;
    for (uint32_t i = 0; f && !w->nomem && i < f->share_count; i++) {
        const struct mq_share_group *g = f->shares[i];
        uint32_t grant = 0;
        for (uint32_t m = 0; m < g->count; m++)
            if (g->members[m].session == s)
                grant = g->members[m].grant;
        /* Listed as subscribed: "$share/" then the group's key "name/filter". */
        size_t n = 7 + (size_t)g->key_len;
        if (n >= *cap) {
            char *nb = realloc(*buf, n + 1);
            if (!nb) {
                w->nomem = true;
                return;
            }
            *buf = nb;
            *cap = n + 1;
        }
        memcpy(*buf, "$share/", 7);
        memcpy(*buf + 7, g->key, g->key_len);
        (*buf)[n] = 0;
        const char *tf = share_group_filter(g);
        offer_sub(w, s, *buf, n, tf, strlen(tf), grant, g->name_len);
    }
}

int broker_subs_page(const struct mq_broker *b, const uint8_t *client, size_t client_len,
                     const uint8_t *match, size_t match_len, const uint8_t *after, size_t after_len,
                     size_t max, void (*fn)(void *ctx, const struct mq_sub_info *sub), void *ctx,
                     bool *more)
{
    struct subs_walk w = {
        .match = match, .match_len = match_len, .after = after, .after_len = after_len};
    if (topk_init(&w.t, page_max(max)))
        return MQ_ERR_NOMEM;
    char *buf = NULL;
    size_t cap = 0;
    if (client_len) {
        const struct mq_session *s = broker_client_find(b, client, client_len);
        if (s)
            walk_session_subs(&w, s, &buf, &cap);
    } else {
        uint32_t pos = 0;
        struct mq_session *s;
        while (!w.nomem && (s = imap_next(&b->sessions, &pos)))
            walk_session_subs(&w, s, &buf, &cap);
    }
    free(buf);
    free(w.key);
    if (w.nomem) {
        topk_free(&w.t);
        return MQ_ERR_NOMEM;
    }
    topk_sort(&w.t);
    for (size_t i = 0; i < w.t.n; i++) {
        const struct pick *p = &w.t.v[i];
        char share[256];
        const char *filter = (const char *)p->owned + p->id_len + 1;
        if (p->share_len) {
            size_t n = p->share_len < sizeof(share) - 1 ? p->share_len : sizeof(share) - 1;
            memcpy(share, filter + 7, n);
            share[n] = 0;
        }
        struct mq_sub_info si = {.session = p->item,
                                 .filter = filter,
                                 .filter_len = p->len - p->id_len - 1,
                                 .share = p->share_len ? share : NULL,
                                 .grant = p->grant};
        fn(ctx, &si);
    }
    int n = (int)w.t.n;
    *more = w.t.offered > w.t.n;
    topk_free(&w.t);
    return n;
}

/* ---- retained messages --------------------------------------------------------------------- */

struct retained_out {
    struct mq_msg **out;
    size_t n;
};

static void take_retained(void *ctx, struct mq_msg *m)
{
    struct retained_out *o = ctx;
    o->out[o->n++] = m;
}

int broker_retained_page(const struct mq_broker *b, const uint8_t *filter, size_t filter_len,
                         const uint8_t *after, size_t after_len, size_t max, struct mq_msg **out,
                         size_t *total, bool *more)
{
    /* retain_page walks only towards the page: never the whole store (retain.h). */
    struct retained_out o = {.out = out};
    int n = retain_page(b->retained, filter, filter_len, after, after_len, page_max(max),
                        take_retained, &o, more);
    if (n < 0)
        return n;
    if (total)
        *total = filter_len == 1 && filter[0] == '#' ? retain_count_plain(b->retained) : SIZE_MAX;
    return n;
}

uint64_t broker_retained_stored_ms(const struct mq_broker *b, const struct mq_msg *m)
{
    return retain_stored_ms(b->retained, (const uint8_t *)m->topic, m->topic_len);
}

struct delete_walk {
    struct mq_msg **v;
    size_t n, max, matched;
};

static void collect_retained(void *ctx, struct mq_msg *m)
{
    struct delete_walk *w = ctx;
    w->matched++;
    if (w->n < w->max)
        w->v[w->n++] = msg_ref(m);
}

int broker_retained_delete(struct mq_broker *b, const uint8_t *filter, size_t filter_len,
                           size_t max, bool dry_run, const char *who, size_t *matched)
{
    if (max > MQ_ADMIN_DELETE_MAX)
        max = MQ_ADMIN_DELETE_MAX;
    struct delete_walk w = {.max = dry_run ? 0 : max};
    if (w.max && !(w.v = malloc(w.max * sizeof(*w.v))))
        return MQ_ERR_NOMEM;
    retain_match(b->retained, filter, filter_len, collect_retained, &w);
    *matched = w.matched;
    if (dry_run)
        return (int)(w.matched < max ? w.matched : max);
    size_t deleted = 0;
    for (size_t i = 0; i < w.n; i++) {
        struct mq_msg *m = w.v[i];
        /* What a client's empty retained PUBLISH does to the store, without the delivery. */
        struct mq_msg *empty =
            msg_new((const uint8_t *)m->topic, m->topic_len, NULL, 0, m->qos, true);
        if (empty) {
            retain_set(b->retained, empty); /* an empty payload only removes: cannot fail */
            persist_retain(b, empty);
            msg_unref(empty);
            deleted++;
        }
        msg_unref(m);
    }
    free(w.v);
    mq_log(MQ_LOG_NOTICE, "admin %s: deleted %zu retained message%s matching %.*s (%zu matched)",
           who ? who : "(unknown)", deleted, deleted == 1 ? "" : "s", (int)filter_len,
           (const char *)filter, w.matched);
    return (int)deleted;
}

/* ---- commands ------------------------------------------------------------------------------ */

enum mq_kick_result broker_kick(struct mq_broker *b, const uint8_t *id, size_t len,
                                bool discard_session, const char *who)
{
    struct mq_session *s = (struct mq_session *)broker_client_find(b, id, len);
    if (!s)
        return MQ_KICK_NOT_FOUND;
    if (!who)
        who = "(unknown)";
    if (s->conn) {
        /* Closed as for a lost connection: its will goes out ([MQTT-3.1.2-8]), an MQTT 5
         * client learns why. A clean session ends here with it. */
        conn_close_rc(s->conn, MQ_RC_ADMINISTRATIVE_ACTION, true, "disconnected by admin %s%s", who,
                      discard_session ? ", session discarded" : "");
        if (discard_session && (s = (struct mq_session *)broker_client_find(b, id, len)))
            session_end(b, s);
        return MQ_KICK_DISCONNECTED;
    }
    if (!discard_session)
        return MQ_KICK_NOT_CONNECTED;
    mq_log(MQ_LOG_NOTICE,
           "client %s: offline session removed by admin %s (%u queued messages "
           "discarded)",
           s->client_id, who, (unsigned)(session_queue_count(s) + session_inflight_count(s)));
    session_end(b, s);
    return MQ_KICK_SESSION_REMOVED;
}

bool broker_admin_may_read(const struct mq_listener_ctx *l, const char *user, const char *topic,
                           size_t topic_len)
{
    if (!l || !l->acl)
        return true;
    /* No client id: the admin is no client, so a `pattern` with %c grants it nothing. */
    return acl_check(l->acl, user, NULL, (const uint8_t *)topic, topic_len, MQ_ACL_READ);
}

int broker_admin_publish(struct mq_broker *b, const struct mq_listener_ctx *l, const char *user,
                         const uint8_t *topic, size_t topic_len, const uint8_t *payload,
                         size_t payload_len, uint8_t qos, bool retain, unsigned *delivered,
                         const char **why)
{
    const struct mq_config *cfg = b->cfg;
    *delivered = 0;
    if (topic_len == 0 || topic_len > UINT16_MAX) {
        *why = topic_len ? "topic longer than 65535 bytes" : "empty topic";
        return MQ_ERR_INVAL;
    }
    int err = topic_check_name(topic, topic_len);
    if (err) {
        *why = err == MQ_ERR_WILDCARD_IN_TOPIC ? "a topic name cannot contain + or #"
                                               : "topic is not valid UTF-8 (or contains U+0000)";
        return MQ_ERR_INVAL;
    }
    if (qos > 2) {
        *why = "qos must be 0, 1 or 2";
        return MQ_ERR_INVAL;
    }
    if (cfg && qos > cfg->max_qos) {
        *why = "qos over max_qos";
        return MQ_ERR_CONFIG;
    }
    if (retain && cfg && !cfg->retain_available) {
        *why = "retain_available is false";
        return MQ_ERR_CONFIG;
    }
    if (payload_len > UINT32_MAX - 1 ||
        (cfg && cfg->message_size_limit && payload_len > cfg->message_size_limit)) {
        *why = "payload over message_size_limit";
        return MQ_ERR_CONFIG;
    }
    if (topic_too_deep(b, topic, topic_len)) {
        *why = "topic deeper than max_topic_levels";
        return MQ_ERR_CONFIG;
    }
    if (b->memory_exceeded && !(retain && payload_len == 0)) {
        b->stats.memory_refusals++;
        *why = "server over memory_limit";
        return MQ_ERR_CONFIG;
    }
    if (l && l->acl && !acl_check(l->acl, user, NULL, topic, topic_len, MQ_ACL_WRITE)) {
        *why = "not authorized by acl_file (the admin user's write access)";
        return MQ_ERR_CONFIG;
    }
    struct mq_msg *m = proto_msg_new(b, topic, (uint16_t)topic_len, payload, (uint32_t)payload_len,
                                     qos, retain, NULL);
    if (!m) {
        *why = "out of memory";
        return MQ_ERR_NOMEM;
    }
    *delivered = broker_publish(b, m, NULL);
    msg_unref(m);
    return 0;
}

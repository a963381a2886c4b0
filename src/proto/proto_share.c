/* proto_share.c - shared subscriptions ($share/<name>/<filter>) for MQTT 5 and 3.1.1 clients,
 * as Mosquitto and EMQX allow both.
 *
 * Owns the broker's groups (b->shares, b->share_groups, b->share_by_id): a group exists
 * while it has a member. Each matching message goes to one member of each group: the next
 * connected member in turn whose ACL lets it read the topic; when none is connected, the
 * next persistent member (its session queues it, as for any offline subscriber); when there
 * is none of either, it is dropped and counted. No retained messages are sent when a shared
 * subscription is made (as in Mosquitto). A member whose session ends gives back what it
 * held from the group and had not started to deliver: its queued messages and its QoS 1
 * messages in flight go to another member; QoS 2 in flight does not ([MQTT-4.8.2-5]).
 */
#include <stdlib.h>
#include <string.h>

#include "midge/acl.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/session.h"
#include "midge/share.h"
#include "proto_internal.h"

static struct mq_share_group *group_by_key(const struct mq_broker *b, const uint8_t *key,
                                           uint16_t len)
{
    return hmap_get(&b->share_groups, key, len);
}

/* Remove an empty group from the broker and free it. */
static void group_drop(struct mq_broker *b, struct mq_share_group *g)
{
    sub_tree_leaf_remove(b->shares, g->leaf, g);
    hmap_remove(&b->share_groups, g->key, g->key_len);
    hmap_remove(&b->share_by_id, &g->id, sizeof(g->id));
    share_group_free(g);
}

int share_join(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len,
               uint32_t grant, bool *existed)
{
    bool valid;
    const uint8_t *name, *flt;
    uint16_t name_len, flt_len;
    if (!share_split(filter, len, &valid, &name, &name_len, &flt, &flt_len) || !valid)
        return MQ_ERR_INVAL;
    const uint8_t *key = name; /* "name/filter" */
    uint16_t key_len = (uint16_t)(len - 7);
    struct mq_share_group *g = group_by_key(b, key, key_len);
    bool fresh = !g;
    if (fresh) {
        if (!(g = share_group_new(++b->share_ids ? b->share_ids : ++b->share_ids, key, key_len,
                                  name_len)))
            return MQ_ERR_NOMEM;
        bool dup;
        g->leaf = sub_tree_add(b->shares, flt, flt_len, g, 0, &dup);
        if (!g->leaf || hmap_put(&b->share_groups, g->key, g->key_len, g)) {
            if (g->leaf)
                sub_tree_leaf_remove(b->shares, g->leaf, g);
            share_group_free(g);
            return MQ_ERR_NOMEM;
        }
        if (hmap_put(&b->share_by_id, &g->id, sizeof(g->id), g)) {
            hmap_remove(&b->share_groups, g->key, g->key_len);
            sub_tree_leaf_remove(b->shares, g->leaf, g);
            share_group_free(g);
            return MQ_ERR_NOMEM;
        }
    }
    if (share_member_set(g, s, grant, existed) || (!*existed && session_share_add(s, g))) {
        share_member_remove(g, s);
        if (!g->count)
            group_drop(b, g);
        return MQ_ERR_NOMEM;
    }
    return 0;
}

bool share_leave(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len)
{
    bool valid;
    const uint8_t *name, *flt;
    uint16_t name_len, flt_len;
    if (!share_split(filter, len, &valid, &name, &name_len, &flt, &flt_len) || !valid)
        return false;
    struct mq_share_group *g = group_by_key(b, name, (uint16_t)(len - 7));
    if (!g || !share_member_remove(g, s))
        return false;
    session_share_remove(s, g);
    if (!g->count)
        group_drop(b, g);
    return true;
}

/* Whose turn it is: predicates for share_pick. */
struct pick_ctx {
    const struct mq_msg *m;
    const struct mq_session * not ; /* a member leaving: never picked */
};

static bool member_reads(const struct pick_ctx *p, const struct mq_session *s)
{
    return s != p->not &&session_may(s, (const uint8_t *)p->m->topic, p->m->topic_len, MQ_ACL_READ);
}

static bool connected_member(void *ctx, const struct mq_share_member *mb)
{
    const struct mq_session *s = mb->session;
    return s->conn && !s->conn->closing && member_reads(ctx, s);
}

static bool persistent_member(void *ctx, const struct mq_share_member *mb)
{
    const struct mq_session *s = mb->session;
    return !s->clean && member_reads(ctx, s);
}

/* Give m to one member of g (not `not`), at most at qos; false when none could take it. */
static bool group_deliver(struct mq_broker *b, struct mq_share_group *g, struct mq_msg *m,
                          uint8_t max_qos, const struct mq_session * not )
{
    struct pick_ctx ctx = {m, not };
    struct mq_share_member *mb = share_pick(g, connected_member, &ctx);
    if (!mb)
        mb = share_pick(g, persistent_member, &ctx);
    if (!mb)
        return false;
    uint32_t grant = mb->grant, id = MQ_GRANT_SUB_ID(grant);
    uint8_t granted = MQ_GRANT_QOS(grant);
    /* [MQTT-4.8.2-3]: the QoS granted to the chosen member's subscription. */
    uint8_t qos = max_qos < granted ? max_qos : granted;
    unsigned flags = (grant & MQ_GRANT_RETAIN_AS_PUBLISHED) && m->retain ? MQ_DELIVER_RETAIN : 0;
    session_deliver(b, mb->session, m, &(struct mq_route){qos, flags, &id, id ? 1 : 0, g->id});
    return true;
}

unsigned share_route(struct mq_broker *b, struct mq_msg *m)
{
    struct mq_sub_vec *v = &b->share_scratch;
    if (sub_tree_match(b->shares, (const uint8_t *)m->topic, m->topic_len, NULL, v)) {
        mq_log(MQ_LOG_ERR, "out of memory routing a message on %s to shared subscriptions",
               m->topic);
        return 0;
    }
    unsigned delivered = 0;
    for (size_t i = 0; i < v->count; i++) {
        struct mq_share_group *g = v->items[i].subscriber;
        if (group_deliver(b, g, m, m->qos, NULL))
            delivered++;
        else
            b->stats.pub_dropped++; /* no member could take it */
    }
    return delivered;
}

/* Give back to the group what session s held from it and no member has started to
 * receive: its queue, and QoS 1 in flight. The entries themselves are freed with the
 * session. */
static void rehome(struct mq_broker *b, struct mq_session *s)
{
    uint32_t n = session_queue_count(s);
    struct mq_session_flow *f = s->flow;
    for (uint32_t i = 0; f && i < n; i++) {
        struct mq_queued *q = &f->queue[(f->queue_head + i) % f->queue_cap];
        struct mq_share_group *g =
            q->share_id ? hmap_get(&b->share_by_id, &q->share_id, sizeof(q->share_id)) : NULL;
        if (g)
            group_deliver(b, g, q->msg, q->qos, s);
    }
    for (uint32_t i = 0; i < session_inflight_count(s); i++) {
        struct mq_inflight *e = session_inflight_at(s, i);
        struct mq_share_group *g =
            e->share_id ? hmap_get(&b->share_by_id, &e->share_id, sizeof(e->share_id)) : NULL;
        if (g && e->qos == 1 && e->msg)
            group_deliver(b, g, e->msg, 1, s);
    }
}

void share_leave_all(struct mq_broker *b, struct mq_session *s, bool rehome_messages)
{
    struct mq_session_flow *f = s->flow;
    if (!f || !f->share_count)
        return;
    if (rehome_messages)
        rehome(b, s);
    while (f->share_count) {
        struct mq_share_group *g = f->shares[--f->share_count];
        share_member_remove(g, s);
        if (!g->count)
            group_drop(b, g);
    }
}

void share_free_all(struct mq_broker *b)
{
    uint32_t pos = 0;
    struct mq_share_group *g;
    while ((g = hmap_next(&b->share_groups, &pos, NULL, NULL))) {
        hmap_remove(&b->share_groups, g->key, g->key_len);
        share_group_free(g);
    }
    hmap_destroy(&b->share_groups);
    hmap_destroy(&b->share_by_id);
}

/* proto_subscribe.c - SUBSCRIBE and UNSUBSCRIBE: the subscription tree, the
 * session's own list of filters, SUBACK/UNSUBACK, and retained delivery.
 *
 * Retained messages for a new subscription go out after the SUBACK, through the
 * session's window and queue like any message, and are never capped: a '#'
 * subscriber gets every retained message however many there are.
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
#include "proto_internal.h"

struct retained_ctx {
    struct mq_broker *broker;
    struct mq_session *session;
    uint8_t granted;
};

static void deliver_retained(void *ctx, struct mq_msg *m)
{
    struct retained_ctx *r = ctx;
    if (!session_may(r->session, (const uint8_t *)m->topic, m->topic_len, MQ_ACL_READ))
        return; /* retained messages are deliveries too */
    uint8_t qos = m->qos < r->granted ? m->qos : r->granted;
    /* [MQTT-3.3.1-8]: retain flag set on messages sent because of a new subscription. */
    session_deliver(r->broker, r->session, m, qos, MQ_DELIVER_RETAIN | MQ_DELIVER_FORCE);
}

void handle_subscribe(struct mq_conn *c, const struct mq_topic_list *l)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    uint8_t codes_small[64];
    uint8_t *codes = l->count <= sizeof(codes_small) ? codes_small : malloc(l->count);
    if (!codes) {
        conn_close(c, true, "out of memory");
        return;
    }

    uint64_t before = b->store_changes;
    struct mq_topic_iter it = {.list = l};
    struct mq_bytes filter;
    uint8_t qos;
    for (uint16_t i = 0; codec_topic_list_next(&it, &filter, &qos); i++) {
        if (topic_too_deep(b, filter.ptr, filter.len)) {
            mq_log(MQ_LOG_NOTICE,
                   "client %s: SUBSCRIBE to a filter deeper than max_topic_levels "
                   "%u refused (SUBACK 0x80)",
                   s->client_id, b->cfg->max_topic_levels);
            codes[i] = MQ_SUBACK_FAILURE;
            continue;
        }
        if (!session_may(s, filter.ptr, filter.len, MQ_ACL_SUBSCRIBE)) {
            mq_log(MQ_LOG_NOTICE, "client %s: SUBSCRIBE to %.*s denied by acl_file (SUBACK 0x80)",
                   s->client_id, (int)filter.len, (const char *)filter.ptr);
            codes[i] = MQ_SUBACK_FAILURE;
            continue;
        }
        /* [MQTT-3.8.4-3]: an identical filter replaces the old subscription's QoS (in the
         * tree; the session already holds its leaf). */
        bool existed;
        struct mq_sub_leaf *leaf = sub_tree_add(b->subs, filter.ptr, filter.len, s, qos, &existed);
        if (!leaf || (!existed && session_sub_add(s, leaf))) {
            if (leaf)
                sub_tree_leaf_remove(b->subs, leaf, s);
            codes[i] = MQ_SUBACK_FAILURE;
            continue;
        }
        codes[i] = qos; /* we grant what was asked: the maximum QoS is 2 */
        persist_sub(b, s, filter.ptr, filter.len, qos);
        if (log_enabled(MQ_LOG_SUBSCRIBE))
            mq_log(MQ_LOG_SUBSCRIBE, "client %s subscribed to %.*s (QoS %u)", s->client_id,
                   (int)filter.len, (const char *)filter.ptr, qos);
    }

    /* [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-5]: one SUBACK, same packet id, one code
     * per filter in order. */
    uint8_t hdr[MQ_MAX_FIXED_HEADER + 2];
    size_t n = codec_fixed_header(MQ_SUBACK << 4, 2u + l->count, hdr);
    hdr[n++] = (uint8_t)(l->packet_id >> 8);
    hdr[n++] = (uint8_t)l->packet_id;
    if (persist_session_on(b, s)) {
        /* Held back until the subscriptions are on disk (durability ack). */
        uint8_t *pkt = malloc(n + l->count);
        if (!pkt) {
            conn_close(c, true, "out of memory");
        } else {
            memcpy(pkt, hdr, n);
            memcpy(pkt + n, codes, l->count);
            conn_send_durable(c, pkt, n + l->count, before);
            free(pkt);
        }
    } else if (!c->closing) {
        struct mq_iov iov[2] = {{hdr, n}, {codes, l->count}};
        b->sink->write(c, iov, 2);
        b->stats.msgs_sent++;
        b->stats.bytes_sent += n + l->count;
    }

    /* [MQTT-3.3.1-6]: retained messages matching each new (or renewed) subscription. */
    it = (struct mq_topic_iter){.list = l};
    for (uint16_t i = 0; codec_topic_list_next(&it, &filter, &qos); i++) {
        if (codes[i] == MQ_SUBACK_FAILURE)
            continue;
        struct retained_ctx r = {b, s, codes[i]};
        retain_match(b->retained, filter.ptr, filter.len, deliver_retained, &r);
    }
    if (codes != codes_small)
        free(codes);
}

void handle_unsubscribe(struct mq_conn *c, const struct mq_topic_list *l)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    uint64_t before = b->store_changes;
    struct mq_topic_iter it = {.list = l};
    struct mq_bytes filter;
    uint8_t qos;
    while (codec_topic_list_next(&it, &filter, &qos)) {
        /* [MQTT-3.10.4-1]: compared character by character, no wildcard matching. The
         * session forgets the leaf before the tree may prune it. */
        struct mq_sub_leaf *leaf = sub_tree_find(b->subs, filter.ptr, filter.len);
        if (!leaf || !session_sub_remove(s, leaf))
            continue;
        sub_tree_leaf_remove(b->subs, leaf, s);
        persist_unsub(b, s, filter.ptr, filter.len);
        if (log_enabled(MQ_LOG_UNSUBSCRIBE))
            mq_log(MQ_LOG_UNSUBSCRIBE, "client %s unsubscribed from %.*s", s->client_id,
                   (int)filter.len, (const char *)filter.ptr);
    }
    /* [MQTT-3.10.4-4], [MQTT-3.10.4-5]; held back until the removal is on disk. */
    conn_ack_durable(c, MQ_UNSUBACK, l->packet_id, before);
}

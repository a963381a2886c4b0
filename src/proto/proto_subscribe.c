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
#include "midge/share.h"
#include "proto_internal.h"

struct retained_ctx {
    struct mq_broker *broker;
    struct mq_session *session;
    uint8_t granted;
    uint32_t sub_id; /* the subscription's identifier (MQTT 5), 0 for none */
};

static void deliver_retained(void *ctx, struct mq_msg *m)
{
    struct retained_ctx *r = ctx;
    if (!session_may(r->session, (const uint8_t *)m->topic, m->topic_len, MQ_ACL_READ))
        return; /* retained messages are deliveries too */
    uint8_t qos = m->qos < r->granted ? m->qos : r->granted;
    /* [MQTT-3.3.1-8]: retain flag set on messages sent because of a new subscription. */
    session_deliver(r->broker, r->session, m,
                    &(struct mq_route){qos, MQ_DELIVER_RETAIN | MQ_DELIVER_FORCE, &r->sub_id,
                                       r->sub_id ? 1 : 0, 0});
}

/* What one entry of a SUBSCRIBE became: its reason code (the granted QoS, or a failure),
 * and whether the same filter was already held (for Retain Handling 1). */
struct sub_result {
    uint8_t code;
    bool existed;
};

/* The failure code for a filter: 0x80 in MQTT 3.x, the specific one in MQTT 5. */
static uint8_t failure(const struct mq_conn *c, uint8_t reason5)
{
    return conn_v5(c) ? reason5 : MQ_SUBACK_FAILURE;
}

void handle_subscribe(struct mq_conn *c, const struct mq_topic_list *l,
                      const struct mq_props *props)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    const struct mq_config *cfg = b->cfg;
    bool v5 = conn_v5(c);
    /* MQTT 5: one Subscription Identifier for every filter of the packet ([MQTT-3.8.4-?]:
     * it is a property of the SUBSCRIBE). */
    uint32_t sub_id =
        v5 && codec_props_has(props, MQ_PROP_SUBSCRIPTION_ID) ? props->subscription_id : 0;
    struct sub_result small[64];
    struct sub_result *res = l->count <= 64 ? small : malloc(l->count * sizeof(*res));
    uint8_t codes_small[64];
    uint8_t *codes = l->count <= sizeof(codes_small) ? codes_small : malloc(l->count);
    if (!codes || !res) {
        if (codes != codes_small)
            free(codes);
        if (res != small)
            free(res);
        conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
        return;
    }

    uint64_t before = b->store_changes;
    struct mq_topic_iter it = {.list = l};
    struct mq_bytes filter;
    uint8_t opts;
    for (uint16_t i = 0; codec_topic_list_next(&it, &filter, &opts); i++) {
        res[i].existed = false;
        bool valid;
        const uint8_t *sname, *sfilter;
        uint16_t sname_len, sfilter_len;
        bool shared =
            share_split(filter.ptr, filter.len, &valid, &sname, &sname_len, &sfilter, &sfilter_len);
        if (shared && !valid) {
            mq_log(MQ_LOG_NOTICE,
                   "client %s: SUBSCRIBE to %.*s refused: a shared subscription is "
                   "$share/<name>/<filter>, the name without '/', '+' or '#'",
                   s->client_id, (int)filter.len, (const char *)filter.ptr);
            codes[i] = failure(c, MQ_RC_TOPIC_FILTER_INVALID);
            continue;
        }
        if (shared && v5 && (opts & MQ_SUB_NO_LOCAL)) {
            /* [MQTT-3.8.3-4] */
            conn_violation(c, MQ_RC_PROTOCOL_ERROR,
                           "protocol error: No Local on the shared subscription %.*s",
                           (int)filter.len, (const char *)filter.ptr);
            goto out;
        }
        /* A shared subscription's rules apply to its topic filter, without the prefix. */
        const uint8_t *checked = shared ? sfilter : filter.ptr;
        uint16_t checked_len = shared ? sfilter_len : filter.len;
        if (topic_too_deep(b, checked, checked_len)) {
            codes[i] = failure(c, MQ_RC_TOPIC_FILTER_INVALID);
            mq_log(MQ_LOG_NOTICE,
                   "client %s: SUBSCRIBE to a filter deeper than max_topic_levels "
                   "%u refused (SUBACK 0x%02x)",
                   s->client_id, b->cfg->max_topic_levels, codes[i]);
            continue;
        }
        if (!session_may(s, checked, checked_len, MQ_ACL_SUBSCRIBE)) {
            codes[i] = failure(c, MQ_RC_NOT_AUTHORIZED);
            mq_log(MQ_LOG_NOTICE, "client %s: SUBSCRIBE to %.*s denied by acl_file (SUBACK 0x%02x)",
                   s->client_id, (int)filter.len, (const char *)filter.ptr, codes[i]);
            continue;
        }
        /* [MQTT-3.2.2-10]: a request above max_qos is granted at max_qos, not refused. */
        uint8_t qos = MQ_SUB_QOS(opts);
        if (cfg && qos > cfg->max_qos)
            qos = (uint8_t)cfg->max_qos;
        uint32_t grant = MQ_GRANT(qos, v5 ? opts : 0, sub_id);
        bool existed;
        if (shared) {
            if (share_join(b, s, filter.ptr, filter.len, grant, &existed)) {
                codes[i] = failure(c, MQ_RC_UNSPECIFIED_ERROR);
                continue;
            }
            codes[i] = qos;
            persist_sub(b, s, filter.ptr, filter.len, grant);
            if (log_enabled(MQ_LOG_SUBSCRIBE))
                mq_log(MQ_LOG_SUBSCRIBE, "client %s subscribed to %.*s (QoS %u, shared)",
                       s->client_id, (int)filter.len, (const char *)filter.ptr, qos);
            continue;
        }
        /* [MQTT-3.8.4-3]: an identical filter replaces the old subscription (in the tree;
         * the session already holds its leaf). */
        struct mq_sub_leaf *leaf =
            sub_tree_add(b->subs, filter.ptr, filter.len, s, grant, &existed);
        if (!leaf || (!existed && session_sub_add(s, leaf))) {
            if (leaf)
                sub_tree_leaf_remove(b->subs, leaf, s);
            codes[i] = failure(c, MQ_RC_UNSPECIFIED_ERROR);
            continue;
        }
        codes[i] = qos; /* [MQTT-3.8.4-7]: the granted QoS */
        res[i].existed = existed;
        persist_sub(b, s, filter.ptr, filter.len, grant);
        if (log_enabled(MQ_LOG_SUBSCRIBE))
            mq_log(MQ_LOG_SUBSCRIBE, "client %s subscribed to %.*s (QoS %u)", s->client_id,
                   (int)filter.len, (const char *)filter.ptr, qos);
    }

    /* [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-5]: one SUBACK, same packet id, one code
     * per filter in order. */
    uint8_t hdr[MQ_MAX_FIXED_HEADER + 3];
    size_t n = suback_header(c, MQ_SUBACK, l->packet_id, l->count, hdr);
    if (persist_session_on(b, s)) {
        /* Held back until the subscriptions are on disk (durability ack). */
        uint8_t *pkt = malloc(n + l->count);
        if (!pkt) {
            conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
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
        c->bytes_out += n + l->count;
    }

    /* [MQTT-3.3.1-6]: retained messages matching each new (or renewed) subscription, as
     * Retain Handling says in MQTT 5 ([MQTT-3.3.1-9..11]). */
    it = (struct mq_topic_iter){.list = l};
    for (uint16_t i = 0; codec_topic_list_next(&it, &filter, &opts); i++) {
        if (codes[i] >= 0x80)
            continue;
        uint8_t handling = v5 ? MQ_SUB_RETAIN_HANDLING(opts) : 0;
        if (handling == 2 || (handling == 1 && res[i].existed))
            continue;
        if (filter.len >= 7 && memcmp(filter.ptr, "$share/", 7) == 0)
            continue; /* none for shared subscriptions, as in Mosquitto */
        struct retained_ctx r = {b, s, codes[i], sub_id};
        retain_match(b->retained, filter.ptr, filter.len, deliver_retained, &r);
    }
out:
    if (codes != codes_small)
        free(codes);
    if (res != small)
        free(res);
}

void handle_unsubscribe(struct mq_conn *c, const struct mq_topic_list *l)
{
    struct mq_broker *b = c->broker;
    struct mq_session *s = c->session;
    uint64_t before = b->store_changes;
    bool v5 = conn_v5(c);
    uint8_t codes_small[64];
    uint8_t *codes = !v5 || l->count <= sizeof(codes_small) ? codes_small : malloc(l->count);
    if (!codes) {
        conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
        return;
    }
    struct mq_topic_iter it = {.list = l};
    struct mq_bytes filter;
    uint8_t qos;
    for (uint16_t i = 0; codec_topic_list_next(&it, &filter, &qos); i++) {
        /* [MQTT-3.10.4-1]: compared character by character, no wildcard matching. The
         * session forgets the leaf before the tree may prune it. */
        if (filter.len >= 7 && memcmp(filter.ptr, "$share/", 7) == 0) {
            bool left = share_leave(b, s, filter.ptr, filter.len);
            if (v5)
                codes[i] = left ? MQ_RC_SUCCESS : MQ_RC_NO_SUBSCRIPTION_EXISTED;
            if (left)
                persist_unsub(b, s, filter.ptr, filter.len);
            continue;
        }
        struct mq_sub_leaf *leaf = sub_tree_find(b->subs, filter.ptr, filter.len);
        if (!leaf || !session_sub_remove(s, leaf)) {
            if (v5)
                codes[i] = MQ_RC_NO_SUBSCRIPTION_EXISTED;
            continue;
        }
        if (v5)
            codes[i] = MQ_RC_SUCCESS;
        sub_tree_leaf_remove(b->subs, leaf, s);
        persist_unsub(b, s, filter.ptr, filter.len);
        if (log_enabled(MQ_LOG_UNSUBSCRIBE))
            mq_log(MQ_LOG_UNSUBSCRIBE, "client %s unsubscribed from %.*s", s->client_id,
                   (int)filter.len, (const char *)filter.ptr);
    }
    /* [MQTT-3.10.4-4], [MQTT-3.10.4-5]; held back until the removal is on disk. MQTT 5
     * adds one reason code per filter, in order ([MQTT-3.11.3-1]). */
    uint32_t ncodes = v5 ? l->count : 0;
    uint8_t hdr[MQ_MAX_FIXED_HEADER + 3];
    size_t n = suback_header(c, MQ_UNSUBACK, l->packet_id, ncodes, hdr);
    uint8_t *pkt = ncodes ? malloc(n + ncodes) : hdr;
    if (!pkt) {
        conn_close_rc(c, MQ_RC_UNSPECIFIED_ERROR, true, "out of memory");
    } else {
        if (ncodes) {
            memcpy(pkt, hdr, n);
            memcpy(pkt + n, codes, ncodes);
        }
        conn_send_durable(c, pkt, n + ncodes, before);
        if (pkt != hdr)
            free(pkt);
    }
    if (codes != codes_small)
        free(codes);
}

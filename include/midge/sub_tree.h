/* sub_tree.h - the subscription trie: topic filters -> (subscriber, granted QoS).
 *
 * Levels are nodes with hashed children plus direct '+' and '#' links; filters that
 * start with '$' live under a separate root, so a leading '+' or '#' never matches a
 * '$' topic ([MQTT-4.7.2-1]). Subscribers are opaque pointers the tree never
 * dereferences. Pure state: no I/O, no logging.
 */
#ifndef MIDGE_SUB_TREE_H
#define MIDGE_SUB_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_sub_tree;

/* The node of one filter, as a handle for whoever subscribes there: it keeps its address
 * for as long as any subscriber stays subscribed to that filter (only empty nodes are
 * pruned), so a subscriber can keep the handle instead of a copy of the filter. */
struct mq_sub_leaf;

/* What a subscription grants, packed into 32 bits so that a leaf holding one subscriber
 * stays small: the granted QoS (bits 0-1), MQTT 5's No Local (bit 2) and Retain As
 * Published (bit 3), in the places the SUBSCRIBE options byte has them, and the
 * Subscription Identifier (bits 4-31: the standard's largest, 268,435,455, is 28 bits;
 * 0 = none). An MQTT 3.1.1 subscription's grant is its QoS. */
#define MQ_GRANT_QOS(g) ((uint8_t)((g)&0x03u))
#define MQ_GRANT_NO_LOCAL 0x04u
#define MQ_GRANT_RETAIN_AS_PUBLISHED 0x08u
#define MQ_GRANT_SUB_ID(g) ((uint32_t)(g) >> 4)
#define MQ_GRANT(qos, flags, sub_id) ((uint32_t)(qos) | ((flags)&0x0Cu) | (uint32_t)(sub_id) << 4)
#define MQ_GRANT_SUB_ID_MAX 268435455u

struct mq_sub_match {
    void *subscriber;
    uint32_t grant; /* see MQ_GRANT */
};

/* A Subscription Identifier beyond the first of one merged match (sub_tree_match). */
struct mq_sub_extra_id {
    uint32_t item; /* index into items */
    uint32_t sub_id;
};

/* A reusable result vector; sub_tree_match clears it before filling. Zero-initialise it;
 * scratch is match's private working memory (walk stack, dedupe table), kept with the
 * vector so a reused vector makes matching allocation-free in steady state. */
struct mq_sub_vec {
    struct mq_sub_match *items;
    size_t count;
    size_t cap;
    /* When several subscriptions of one subscriber with Subscription Identifiers match, the
     * first identifier is in its item's grant and the others are listed here (rare: only
     * MQTT 5 clients with overlapping identified subscriptions add any). */
    struct mq_sub_extra_id *extra;
    size_t extra_count, extra_cap;
    void *scratch;
    size_t scratch_size; /* bytes */
};

/* New empty tree, or NULL on out of memory. Free with sub_tree_free. */
struct mq_sub_tree *sub_tree_new(void);
void sub_tree_free(struct mq_sub_tree *t);

/* Subscribe `subscriber` to a valid filter with grant (MQ_GRANT). When the subscriber
 * already has this exact filter its grant is replaced and *existed (optional) is true.
 * Returns the filter's leaf (borrowed, valid while the subscription lasts), or NULL on
 * out of memory with the tree unchanged. The filter bytes are copied. */
struct mq_sub_leaf *sub_tree_add(struct mq_sub_tree *t, const uint8_t *filter, size_t len,
                                 void *subscriber, uint32_t grant, bool *existed);

/* The leaf of exactly this filter (compared level by level, no wildcard matching), or NULL
 * when nobody is subscribed to it. Borrowed. */
struct mq_sub_leaf *sub_tree_find(const struct mq_sub_tree *t, const uint8_t *filter, size_t len);

/* Remove `subscriber`'s subscription at leaf; true when it was there. The leaf and the
 * ancestors this leaves empty are pruned, so leaf must not be used afterwards unless
 * another subscriber is known to hold it. */
bool sub_tree_leaf_remove(struct mq_sub_tree *t, struct mq_sub_leaf *leaf, void *subscriber);

/* Remove `subscriber`'s subscription to filter; *removed (optional) says whether it
 * existed. Empty nodes are pruned. Returns 0. */
int sub_tree_remove(struct mq_sub_tree *t, const uint8_t *filter, size_t len, void *subscriber,
                    bool *removed);

/* The filter of leaf, rebuilt from its levels: returns its length and, when that is below
 * size, writes it to buf with a terminating NUL (like snprintf). */
size_t sub_tree_leaf_filter(const struct mq_sub_leaf *leaf, char *buf, size_t size);

/* Fill out with every subscriber whose filters match the topic name, each subscriber
 * exactly once with the highest QoS among its matching filters ([MQTT-3.3.5-1]), Retain As
 * Published when any of them has it, and every Subscription Identifier of them (the first
 * in the grant, the others in out->extra). A subscription with No Local is left out when
 * its subscriber is `publisher` (may be NULL) ([MQTT-3.8.3-3]).
 * Has no side effects on the tree. Returns 0 or MQ_ERR_NOMEM. */
int sub_tree_match(const struct mq_sub_tree *t, const uint8_t *topic, size_t len,
                   const void *publisher, struct mq_sub_vec *out);

/* The grant of subscriber's subscription at leaf into *grant; false when it holds none
 * there. */
bool sub_tree_leaf_grant(const struct mq_sub_leaf *leaf, const void *subscriber, uint32_t *grant);

/* Number of (subscriber, filter) pairs in the tree. */
size_t sub_tree_count(const struct mq_sub_tree *t);

/* Number of trie nodes below the two roots (0 for an empty tree); lets tests and $SYS
 * check that removal prunes. */
size_t sub_tree_node_count(const struct mq_sub_tree *t);

/* Free a result vector's storage and scratch; it may be reused afterwards. */
void sub_vec_free(struct mq_sub_vec *v);

#endif

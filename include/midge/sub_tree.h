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

struct mq_sub_match {
    void *subscriber;
    uint8_t qos;
};

/* A reusable result vector; sub_tree_match clears it before filling. Zero-initialise it;
 * scratch is match's private working memory (walk stack, dedupe table), kept with the
 * vector so a reused vector makes matching allocation-free in steady state. */
struct mq_sub_vec {
    struct mq_sub_match *items;
    size_t count;
    size_t cap;
    void *scratch;
    size_t scratch_size; /* bytes */
};

/* New empty tree, or NULL on out of memory. Free with sub_tree_free. */
struct mq_sub_tree *sub_tree_new(void);
void sub_tree_free(struct mq_sub_tree *t);

/* Subscribe `subscriber` to a valid filter with granted qos. When the subscriber
 * already has this exact filter its QoS is replaced and *existed (optional) is true.
 * Returns the filter's leaf (borrowed, valid while the subscription lasts), or NULL on
 * out of memory with the tree unchanged. The filter bytes are copied. */
struct mq_sub_leaf *sub_tree_add(struct mq_sub_tree *t, const uint8_t *filter, size_t len,
                                 void *subscriber, uint8_t qos, bool *existed);

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
 * exactly once with the highest QoS among its matching filters ([MQTT-3.3.5-1]).
 * Has no side effects on the tree. Returns 0 or MQ_ERR_NOMEM. */
int sub_tree_match(const struct mq_sub_tree *t, const uint8_t *topic, size_t len,
                   struct mq_sub_vec *out);

/* Number of (subscriber, filter) pairs in the tree. */
size_t sub_tree_count(const struct mq_sub_tree *t);

/* Number of trie nodes below the two roots (0 for an empty tree); lets tests and $SYS
 * check that removal prunes. */
size_t sub_tree_node_count(const struct mq_sub_tree *t);

/* Free a result vector's storage and scratch; it may be reused afterwards. */
void sub_vec_free(struct mq_sub_vec *v);

#endif

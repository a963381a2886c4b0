/* retain.h - the retained-message store: one message per topic name.
 *
 * A trie by topic level so a SUBSCRIBE's filter finds its retained messages
 * without scanning every topic; '$' topics are skipped by a leading wildcard.
 * Holds one reference to each stored message.
 */
#ifndef MIDGE_RETAIN_H
#define MIDGE_RETAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_msg;
struct mq_retain;

/* New empty store, or NULL on out of memory. */
struct mq_retain *retain_new(void);

/* Free the store, dropping its references. */
void retain_free(struct mq_retain *r);

/* Store msg under msg->topic, replacing (and unreferencing) any previous one;
 * a msg with an empty payload deletes the topic's retained message instead
 * ([MQTT-3.3.1-10], [MQTT-3.3.1-11]). Takes its own reference when storing.
 * Returns 0 or MQ_ERR_NOMEM (store unchanged). */
int retain_set(struct mq_retain *r, struct mq_msg *msg);

/* retain_set, remembering now_ms (any clock; 0 = unknown) as the time msg was stored. */
int retain_set_at(struct mq_retain *r, struct mq_msg *msg, uint64_t now_ms);

/* When the retained message of topic was stored (retain_set_at's now_ms), 0 when unknown
 * or when topic has none. */
uint64_t retain_stored_ms(const struct mq_retain *r, const uint8_t *topic, size_t len);

/* Call fn(ctx, msg) for each retained message whose topic matches the valid
 * filter; msg is borrowed for the call (take a reference to keep it).
 * Order: depth-first by topic level. Never allocates, so it cannot fail; fn must
 * not call retain_set or retain_match on this store. */
void retain_match(const struct mq_retain *r, const uint8_t *filter, size_t len,
                  void (*fn)(void *ctx, struct mq_msg *msg), void *ctx);

/* A page of retained messages in topic order, for listings that must not walk the whole
 * store: fn(ctx, msg) (msg borrowed for the call) for at most max messages whose topic
 * matches the valid filter and comes after the topic `after` (after_len bytes; 0 = from the
 * first), in order; *more says whether another follows. Topic order compares level by
 * level, byte-wise within a level, a topic before its extensions ("a" < "a/b" < "a/c" <
 * "a-b"). The cost is that of the nodes on the way to those messages and of scanning the
 * children of the nodes it passes, not the store's size. fn must not change the store.
 * Returns the number of messages given to fn, or MQ_ERR_NOMEM. */
int retain_page(const struct mq_retain *r, const uint8_t *filter, size_t filter_len,
                const uint8_t *after, size_t after_len, size_t max,
                void (*fn)(void *ctx, struct mq_msg *msg), void *ctx, bool *more);

/* Number of retained messages whose topic does not start with '$': what the filter "#"
 * matches. Costs a walk of the '$' subtrees only. */
size_t retain_count_plain(const struct mq_retain *r);

/* Number of retained messages. */
size_t retain_count(const struct mq_retain *r);

/* Number of trie nodes below the root (0 when empty); lets tests check pruning. */
size_t retain_node_count(const struct mq_retain *r);

#endif

/* retain.h - the retained-message store: one message per topic name.
 *
 * A trie by topic level so a SUBSCRIBE's filter finds its retained messages
 * without scanning every topic; '$' topics are skipped by a leading wildcard.
 * Holds one reference to each stored message.
 */
#ifndef MIDGE_RETAIN_H
#define MIDGE_RETAIN_H

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

/* Number of retained messages. */
size_t retain_count(const struct mq_retain *r);

/* Number of trie nodes below the root (0 when empty); lets tests check pruning. */
size_t retain_node_count(const struct mq_retain *r);

#endif

/* share.h - shared subscriptions ($share/<name>/<filter>): the groups and their members.
 *
 * A group is one share name with one topic filter; its members are the sessions
 * subscribed to it, each with its own grant (sub_tree.h MQ_GRANT). Each message that
 * matches the filter goes to ONE member, chosen in turn (round robin) by the caller's
 * predicate. Pure bookkeeping: no I/O, no protocol decisions; members are opaque
 * pointers it never dereferences.
 */
#ifndef MIDGE_SHARE_H
#define MIDGE_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_sub_leaf;

struct mq_share_member {
    void *session; /* borrowed */
    uint32_t grant;
};

struct mq_share_group {
    uint32_t id;    /* unique for the broker's life: what a queued copy remembers */
    uint32_t count; /* members */
    uint32_t cap;
    uint32_t next;                   /* where the next round-robin turn starts */
    struct mq_share_member *members; /* count entries */
    struct mq_sub_leaf *leaf;        /* its leaf in the broker's tree of shared filters */
    uint16_t name_len;               /* the share name: key[0..name_len) */
    uint16_t key_len;                /* "name/filter", as after "$share/" in SUBSCRIBE */
    char key[];                      /* key_len bytes + NUL; the filter at name_len + 1 */
};

/* Split a shared subscription's filter "$share/<name>/<filter>": true, with the share name
 * and the topic filter (borrowed from f), when f starts with "$share/". *valid says whether
 * it is well formed ([MQTT-4.8.2-1], [MQTT-4.8.2-2]): a non-empty name without '/', '+' or
 * '#', then '/' and a valid topic filter. */
bool share_split(const uint8_t *f, size_t len, bool *valid, const uint8_t **name,
                 uint16_t *name_len, const uint8_t **filter, uint16_t *filter_len);

/* New empty group for key "name/filter" (copied); NULL on out of memory. */
struct mq_share_group *share_group_new(uint32_t id, const uint8_t *key, uint16_t key_len,
                                       uint16_t name_len);
void share_group_free(struct mq_share_group *g);

/* The topic filter of g (NUL-terminated, inside g). */
static inline const char *share_group_filter(const struct mq_share_group *g)
{
    return g->key + g->name_len + 1;
}

/* Add session with grant, or replace its grant when it is a member already (*existed).
 * Returns 0 or MQ_ERR_NOMEM. */
int share_member_set(struct mq_share_group *g, void *session, uint32_t grant, bool *existed);

/* Remove session; true when it was a member. */
bool share_member_remove(struct mq_share_group *g, const void *session);

/* The member whose turn it is among those `ok` accepts, or NULL when none does; the next
 * call starts after it. Each member is asked at most once. */
struct mq_share_member *share_pick(struct mq_share_group *g,
                                   bool (*ok)(void *ctx, const struct mq_share_member *m),
                                   void *ctx);

#endif

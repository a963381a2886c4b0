/* share.c - shared subscription groups: members, their grants, and whose turn it is.
 *
 * Owns each group's allocation (its key inline) and member array; never dereferences a
 * member. Invariants: a session is a member of a group at most once; next < count, or 0.
 * Members are kept in the order they joined, so turns go round fairly; removal keeps the
 * order (a client that leaves and rejoins goes to the end).
 */
#include "midge/share.h"

#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/topic.h"

bool share_split(const uint8_t *f, size_t len, bool *valid, const uint8_t **name,
                 uint16_t *name_len, const uint8_t **filter, uint16_t *filter_len)
{
    static const char prefix[] = "$share/";
    const size_t plen = sizeof(prefix) - 1;
    *valid = false;
    if (len < plen || memcmp(f, prefix, plen) != 0)
        return false;
    const uint8_t *n = f + plen, *end = f + len;
    const uint8_t *slash = memchr(n, '/', (size_t)(end - n));
    if (!slash || slash == n)
        return true; /* no share name, or no '/' after it */
    for (const uint8_t *p = n; p < slash; p++)
        if (*p == '+' || *p == '#')
            return true;
    const uint8_t *flt = slash + 1;
    size_t flen = (size_t)(end - flt);
    if (flen == 0 || topic_check_filter(flt, flen))
        return true;
    *name = n;
    *name_len = (uint16_t)(slash - n);
    *filter = flt;
    *filter_len = (uint16_t)flen;
    *valid = true;
    return true;
}

struct mq_share_group *share_group_new(uint32_t id, const uint8_t *key, uint16_t key_len,
                                       uint16_t name_len)
{
    struct mq_share_group *g = calloc(1, sizeof(*g) + (size_t)key_len + 1);
    if (!g)
        return NULL;
    g->id = id;
    g->key_len = key_len;
    g->name_len = name_len;
    memcpy(g->key, key, key_len);
    g->key[key_len] = '\0';
    return g;
}

void share_group_free(struct mq_share_group *g)
{
    if (g)
        free(g->members);
    free(g);
}

static uint32_t member_find(const struct mq_share_group *g, const void *session)
{
    for (uint32_t i = 0; i < g->count; i++)
        if (g->members[i].session == session)
            return i;
    return UINT32_MAX;
}

int share_member_set(struct mq_share_group *g, void *session, uint32_t grant, bool *existed)
{
    uint32_t i = member_find(g, session);
    *existed = i != UINT32_MAX;
    if (*existed) {
        g->members[i].grant = grant;
        return 0;
    }
    if (g->count == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 4;
        struct mq_share_member *m = realloc(g->members, (size_t)cap * sizeof(*m));
        if (!m)
            return MQ_ERR_NOMEM;
        g->members = m;
        g->cap = cap;
    }
    g->members[g->count++] = (struct mq_share_member){session, grant};
    return 0;
}

bool share_member_remove(struct mq_share_group *g, const void *session)
{
    uint32_t i = member_find(g, session);
    if (i == UINT32_MAX)
        return false;
    memmove(&g->members[i], &g->members[i + 1], (g->count - i - 1) * sizeof(g->members[0]));
    g->count--;
    if (g->next > i)
        g->next--;
    if (g->next >= g->count)
        g->next = 0;
    return true;
}

struct mq_share_member *share_pick(struct mq_share_group *g,
                                   bool (*ok)(void *ctx, const struct mq_share_member *m),
                                   void *ctx)
{
    for (uint32_t k = 0; k < g->count; k++) {
        uint32_t i = (g->next + k) % g->count;
        if (ok(ctx, &g->members[i])) {
            g->next = (i + 1) % g->count;
            return &g->members[i];
        }
    }
    return NULL;
}

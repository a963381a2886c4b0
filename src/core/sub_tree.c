/* sub_tree.c - the subscription trie: one node per filter level, subscribers at the last level.
 *
 * Owns its nodes, their level strings and subscriber arrays; never dereferences a subscriber.
 * Invariants: every node except the two roots has a subscriber, a child, a '+' or a '#' link
 * (empty nodes are pruned at once); a subscriber appears at most once per node; a node's
 * children map borrows its keys from the children's own level strings; filters whose first
 * level starts with '$' live under `dollar`, all others under `root`. Most nodes are leaves
 * with one subscriber (one per idle client): such a node holds its subscriber inline and
 * has no child links, which only a node with children allocates (`kids`, NULL otherwise).
 * A node never moves while it exists: its address is the leaf handle subscribers keep.
 */
#include "midge/sub_tree.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/imap.h"

/* Above this many subscribers on one node a pointer index replaces the linear scan, so 100k
 * clients subscribing to one filter cost O(n) overall rather than O(n^2). */
#define INDEX_MIN 8u
/* Up to this many matches a quadratic dedupe beats clearing a hash table. */
#define SMALL_DEDUPE 16u

struct subs {
    uint32_t count;
    uint32_t cap;
    uint32_t *index;    /* NULL, or linear-probing table of entry position + 1 (0 = empty) */
    uint32_t index_cap; /* power of two, 0 without index */
    struct mq_sub_match e[];
};

/* The links of a node that has children; a leaf has none allocated. */
struct kids {
    struct node *plus;       /* child for a '+' level */
    struct node *hash;       /* child for a '#' level */
    struct mq_imap children; /* keyed by each child's level */
};

/* How a node holds its subscribers. */
enum { SUBS_NONE, SUBS_ONE, SUBS_MANY };

struct node {
    struct node *parent; /* NULL for a root */
    struct kids *kids;   /* NULL while the node has no child */
    union {
        void *one;         /* SUBS_ONE: the subscriber */
        struct subs *many; /* SUBS_MANY: two or more */
    } sub;
    uint32_t one_grant; /* SUBS_ONE: its grant (MQ_GRANT) */
    uint16_t level_len; /* a level is part of a filter of at most 65,535 bytes */
    uint8_t subs_mode;  /* SUBS_* */
    char level[];       /* level_len bytes + NUL; the key of this node in parent->children */
};

/* The public handle of a node (sub_tree.h): the node's own address, never dereferenced
 * outside this file. */
static struct node *leaf_node(const struct mq_sub_leaf *leaf)
{
    return (struct node *)(uintptr_t)leaf;
}

static struct mq_sub_leaf *node_leaf(struct node *n)
{
    return (struct mq_sub_leaf *)(void *)n;
}

/* An idle client's leaf (a level of up to 7 bytes) must stay in a 48-byte malloc chunk:
 * a field added here costs every connection 16 bytes. */
static_assert(sizeof(struct node) <= 32, "struct node outgrew its budget");

/* A child's key in its parent's children map is its own level string. */
static const void *node_key(const void *value, size_t *len)
{
    const struct node *n = value;
    *len = n->level_len;
    return n->level;
}

struct mq_sub_tree {
    struct node *root;   /* filters not starting with '$' */
    struct node *dollar; /* filters starting with '$' */
    size_t count;        /* (subscriber, filter) pairs */
    size_t no_local;     /* of them with No Local: match looks for the publisher only if any */
    size_t nodes;        /* nodes below the roots */
};

struct frame {
    const struct node *n;
    size_t pos; /* offset of the next topic level; len + 1 once every level is consumed */
};

static const uint8_t empty_str[1];

/* Fibonacci hashing: the multiply spreads a pointer's varying middle bits into the top half. */
static uint32_t ptr_hash(const void *p, uint32_t mask)
{
    return (uint32_t)(((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

/* Offset one past the level that starts at pos (the next '/' or len). */
static size_t level_end(const uint8_t *s, size_t len, size_t pos)
{
    if (pos >= len)
        return len;
    const uint8_t *slash = memchr(s + pos, '/', len - pos);
    return slash ? (size_t)(slash - s) : len;
}

static bool is_wild(const uint8_t *level, size_t len, char c)
{
    return len == 1 && level[0] == c;
}

static struct node *root_for(const struct mq_sub_tree *t, const uint8_t *s, size_t len)
{
    return len > 0 && s[0] == '$' ? t->dollar : t->root;
}

/* ---- subscriber arrays ---- */

static uint32_t subs_find(const struct subs *s, const void *sub)
{
    if (!s)
        return UINT32_MAX;
    if (s->index) {
        uint32_t mask = s->index_cap - 1;
        for (uint32_t i = ptr_hash(sub, mask); s->index[i]; i = (i + 1) & mask)
            if (s->e[s->index[i] - 1].subscriber == sub)
                return s->index[i] - 1;
        return UINT32_MAX;
    }
    for (uint32_t i = 0; i < s->count; i++)
        if (s->e[i].subscriber == sub)
            return i;
    return UINT32_MAX;
}

static void index_insert(struct subs *s, uint32_t pos)
{
    uint32_t mask = s->index_cap - 1;
    uint32_t i = ptr_hash(s->e[pos].subscriber, mask);
    while (s->index[i])
        i = (i + 1) & mask;
    s->index[i] = pos + 1;
}

/* Index slot that holds entry position pos (which must be indexed). */
static uint32_t index_slot(const struct subs *s, uint32_t pos)
{
    uint32_t mask = s->index_cap - 1;
    uint32_t i = ptr_hash(s->e[pos].subscriber, mask);
    while (s->index[i] != pos + 1)
        i = (i + 1) & mask;
    return i;
}

/* Empty slot i by shifting later members of its probe run back (no tombstones needed). */
static void index_delete_slot(struct subs *s, uint32_t i)
{
    uint32_t mask = s->index_cap - 1;
    for (;;) {
        s->index[i] = 0;
        uint32_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (!s->index[j])
                return;
            uint32_t home = ptr_hash(s->e[s->index[j] - 1].subscriber, mask);
            /* The entry at j may fill i unless its home lies cyclically in (i, j]. */
            bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
            if (!stays)
                break;
        }
        s->index[i] = s->index[j];
        i = j;
    }
}

static int index_build(struct subs *s, uint32_t cap)
{
    uint32_t *index = calloc(cap, sizeof(*index));
    if (!index)
        return MQ_ERR_NOMEM;
    free(s->index);
    s->index = index;
    s->index_cap = cap;
    for (uint32_t i = 0; i < s->count; i++)
        index_insert(s, i);
    return 0;
}

static void subs_free(struct subs *s)
{
    if (s)
        free(s->index);
    free(s);
}

/* Position of sub among n's subscribers, or UINT32_MAX. */
static uint32_t node_sub_find(const struct node *n, const void *sub)
{
    if (n->subs_mode == SUBS_ONE)
        return n->sub.one == sub ? 0 : UINT32_MAX;
    if (n->subs_mode == SUBS_MANY)
        return subs_find(n->sub.many, sub);
    return UINT32_MAX;
}

static uint32_t node_grant_at(const struct node *n, uint32_t pos)
{
    return n->subs_mode == SUBS_ONE ? n->one_grant : n->sub.many->e[pos].grant;
}

static void node_sub_set_grant(struct node *n, uint32_t pos, uint32_t grant)
{
    if (n->subs_mode == SUBS_ONE)
        n->one_grant = grant;
    else
        n->sub.many->e[pos].grant = grant;
}

/* Append (sub, grant) to n, which must not hold sub. On error n's subscribers are
 * unchanged. */
static int subs_add(struct node *n, void *sub, uint32_t grant)
{
    if (n->subs_mode == SUBS_NONE) {
        n->sub.one = sub;
        n->one_grant = grant;
        n->subs_mode = SUBS_ONE;
        return 0;
    }
    if (n->subs_mode == SUBS_ONE) {
        struct subs *s = malloc(sizeof(*s) + 2 * sizeof(s->e[0]));
        if (!s)
            return MQ_ERR_NOMEM;
        *s = (struct subs){.count = 1, .cap = 2};
        s->e[0] = (struct mq_sub_match){n->sub.one, n->one_grant};
        n->sub.many = s;
        n->subs_mode = SUBS_MANY;
    }
    struct subs *s = n->sub.many;
    if (s->count == s->cap) {
        if (s->cap >= UINT32_MAX / 4)
            return MQ_ERR_NOMEM;
        uint32_t cap = s->cap * 2;
        struct subs *grown = realloc(s, sizeof(*s) + (size_t)cap * sizeof(s->e[0]));
        if (!grown)
            return MQ_ERR_NOMEM;
        grown->cap = cap;
        n->sub.many = s = grown;
    }
    if (s->count + 1 > INDEX_MIN && (uint64_t)(s->count + 1) * 2 > s->index_cap) {
        uint32_t cap = s->index_cap ? s->index_cap * 2 : 2 * INDEX_MIN * 2;
        int err = index_build(s, cap);
        if (err)
            return err;
    }
    s->e[s->count] = (struct mq_sub_match){sub, grant};
    if (s->index)
        index_insert(s, s->count);
    s->count++;
    return 0;
}

/* Remove the entry at pos by moving the last entry into its place. */
static void subs_remove(struct node *n, uint32_t pos)
{
    if (n->subs_mode == SUBS_ONE) {
        n->sub.one = NULL;
        n->subs_mode = SUBS_NONE;
        return;
    }
    struct subs *s = n->sub.many;
    uint32_t last = s->count - 1;
    if (s->index) {
        index_delete_slot(s, index_slot(s, pos));
        if (pos != last)
            s->index[index_slot(s, last)] = pos + 1;
    }
    s->e[pos] = s->e[last];
    s->count--;
    if (s->count == 1) {
        /* Back to the inline form: the array would cost its 48 bytes for one entry. */
        struct mq_sub_match only = s->e[0];
        subs_free(s);
        n->sub.one = only.subscriber;
        n->one_grant = only.grant;
        n->subs_mode = SUBS_ONE;
        return;
    }
    if (s->index && s->count < INDEX_MIN / 2) {
        free(s->index);
        s->index = NULL;
        s->index_cap = 0;
    }
    if (s->cap >= 8 && s->count <= s->cap / 4) {
        /* Shrinking is best effort: on failure the larger block simply stays. */
        struct subs *shrunk = realloc(s, sizeof(*s) + (size_t)(s->cap / 2) * sizeof(s->e[0]));
        if (shrunk) {
            shrunk->cap /= 2;
            n->sub.many = shrunk;
        }
    }
}

/* ---- nodes ---- */

static struct node *node_new(struct node *parent, const uint8_t *level, size_t len)
{
    struct node *n = calloc(1, sizeof(*n) + len + 1);
    if (!n)
        return NULL;
    n->parent = parent;
    n->level_len = (uint16_t)len;
    if (len > 0)
        memcpy(n->level, level, len);
    return n;
}

static bool kids_empty(const struct kids *k)
{
    return !k->plus && !k->hash && imap_count(&k->children) == 0;
}

/* Drop n's kids block once its last child is gone, so a leaf carries no child links. */
static void kids_release_if_empty(struct node *n)
{
    if (n->kids && kids_empty(n->kids)) {
        imap_destroy(&n->kids->children);
        free(n->kids);
        n->kids = NULL;
    }
}

static void node_free(struct node *n)
{
    if (n->kids) {
        imap_destroy(&n->kids->children);
        free(n->kids);
    }
    if (n->subs_mode == SUBS_MANY)
        subs_free(n->sub.many);
    free(n);
}

static bool node_empty(const struct node *n)
{
    return n->subs_mode == SUBS_NONE && (!n->kids || kids_empty(n->kids));
}

/* Remove n and then each ancestor that became empty, stopping at a root. */
static void prune(struct mq_sub_tree *t, struct node *n)
{
    while (n->parent && node_empty(n)) {
        struct node *p = n->parent;
        struct kids *k = p->kids;
        if (k->plus == n)
            k->plus = NULL;
        else if (k->hash == n)
            k->hash = NULL;
        else
            imap_remove(&k->children, n->level, n->level_len, node_key);
        kids_release_if_empty(p);
        node_free(n);
        t->nodes--;
        n = p;
    }
}

static struct node *child_find(const struct node *n, const uint8_t *level, size_t len)
{
    if (!n->kids)
        return NULL;
    if (is_wild(level, len, '+'))
        return n->kids->plus;
    if (is_wild(level, len, '#'))
        return n->kids->hash;
    return imap_get(&n->kids->children, level, len, node_key);
}

/* The child of n for level, created when missing; NULL on out of memory. */
static struct node *child_get_or_add(struct mq_sub_tree *t, struct node *n, const uint8_t *level,
                                     size_t len)
{
    struct node *c = child_find(n, level, len);
    if (c)
        return c;
    if (len > UINT16_MAX)
        return NULL;
    if (!n->kids) {
        if (!(n->kids = calloc(1, sizeof(*n->kids))))
            return NULL;
        imap_init(&n->kids->children);
    }
    if (!(c = node_new(n, level, len)))
        goto fail;
    if (is_wild(level, len, '+')) {
        n->kids->plus = c;
    } else if (is_wild(level, len, '#')) {
        n->kids->hash = c;
    } else if (imap_put(&n->kids->children, c, node_key) != 0) {
        node_free(c);
        goto fail;
    }
    t->nodes++;
    return c;
fail:
    kids_release_if_empty(n);
    return NULL;
}

/* ---- public API ---- */

struct mq_sub_tree *sub_tree_new(void)
{
    struct mq_sub_tree *t = calloc(1, sizeof(*t));
    if (!t)
        goto fail;
    t->root = node_new(NULL, NULL, 0);
    t->dollar = node_new(NULL, NULL, 0);
    if (!t->root || !t->dollar)
        goto fail;
    return t;
fail:
    if (t) {
        free(t->root);
        free(t->dollar);
    }
    free(t);
    return NULL;
}

void sub_tree_free(struct mq_sub_tree *t)
{
    if (!t)
        return;
    /* Tear down without recursion or extra memory: the parent field, no longer needed,
     * threads a work list through the nodes still to be freed. */
    t->root->parent = t->dollar;
    t->dollar->parent = NULL;
    struct node *list = t->root;
    while (list) {
        struct node *n = list;
        list = n->parent;
        struct kids *k = n->kids;
        struct node *c;
        if (k && (c = k->plus)) {
            c->parent = list;
            list = c;
        }
        if (k && (c = k->hash)) {
            c->parent = list;
            list = c;
        }
        uint32_t it = 0;
        while (k && (c = imap_next(&k->children, &it))) {
            c->parent = list;
            list = c;
        }
        node_free(n);
    }
    free(t);
}

struct mq_sub_leaf *sub_tree_add(struct mq_sub_tree *t, const uint8_t *filter, size_t len,
                                 void *subscriber, uint32_t grant, bool *existed)
{
    if (!filter)
        filter = empty_str;
    struct node *n = root_for(t, filter, len);
    for (size_t pos = 0;;) {
        size_t end = level_end(filter, len, pos);
        struct node *c = child_get_or_add(t, n, filter + pos, end - pos);
        if (!c)
            goto fail;
        n = c;
        if (end == len)
            break;
        pos = end + 1;
    }

    uint32_t pos = node_sub_find(n, subscriber);
    if (pos != UINT32_MAX) {
        t->no_local -= (node_grant_at(n, pos) & MQ_GRANT_NO_LOCAL) != 0;
        t->no_local += (grant & MQ_GRANT_NO_LOCAL) != 0;
        node_sub_set_grant(n, pos, grant);
        if (existed)
            *existed = true;
        return node_leaf(n);
    }
    if (subs_add(n, subscriber, grant))
        goto fail;
    t->count++;
    t->no_local += (grant & MQ_GRANT_NO_LOCAL) != 0;
    if (existed)
        *existed = false;
    return node_leaf(n);
fail:
    prune(t, n); /* only nodes created by this call can be empty */
    return NULL;
}

struct mq_sub_leaf *sub_tree_find(const struct mq_sub_tree *t, const uint8_t *filter, size_t len)
{
    if (!filter)
        filter = empty_str;
    struct node *n = root_for(t, filter, len);
    for (size_t pos = 0;;) {
        size_t end = level_end(filter, len, pos);
        n = child_find(n, filter + pos, end - pos);
        if (!n)
            return NULL;
        if (end == len)
            break;
        pos = end + 1;
    }
    /* A node on the way to deeper filters is no subscriber's leaf. */
    return n->subs_mode != SUBS_NONE ? node_leaf(n) : NULL;
}

bool sub_tree_leaf_remove(struct mq_sub_tree *t, struct mq_sub_leaf *leaf, void *subscriber)
{
    struct node *n = leaf_node(leaf);
    uint32_t pos = node_sub_find(n, subscriber);
    if (pos == UINT32_MAX)
        return false;
    t->no_local -= (node_grant_at(n, pos) & MQ_GRANT_NO_LOCAL) != 0;
    subs_remove(n, pos);
    t->count--;
    prune(t, n);
    return true;
}

int sub_tree_remove(struct mq_sub_tree *t, const uint8_t *filter, size_t len, void *subscriber,
                    bool *removed)
{
    struct mq_sub_leaf *leaf = sub_tree_find(t, filter, len);
    bool done = leaf && sub_tree_leaf_remove(t, leaf, subscriber);
    if (removed)
        *removed = done;
    return 0;
}

size_t sub_tree_leaf_filter(const struct mq_sub_leaf *leaf, char *buf, size_t size)
{
    /* Levels are joined by '/'; a node whose parent is a root holds the first level. */
    const struct node *n = leaf_node(leaf);
    size_t len = 0;
    for (const struct node *p = n; p->parent; p = p->parent)
        len += p->level_len + (p->parent->parent ? 1 : 0);
    if (len >= size)
        return len;
    size_t end = len;
    buf[end] = '\0';
    for (const struct node *p = n; p->parent; p = p->parent) {
        end -= p->level_len;
        memcpy(buf + end, p->level, p->level_len);
        if (p->parent->parent)
            buf[--end] = '/';
    }
    return len;
}

/* Grow scratch to at least `bytes`, keeping its contents. */
static int scratch_reserve(struct mq_sub_vec *v, size_t bytes)
{
    if (bytes <= v->scratch_size)
        return 0;
    size_t size = v->scratch_size ? v->scratch_size * 2 : 512;
    while (size < bytes)
        size *= 2;
    void *p = realloc(v->scratch, size);
    if (!p)
        return MQ_ERR_NOMEM;
    v->scratch = p;
    v->scratch_size = size;
    return 0;
}

/* Append the subscribers of n, which has some, to v, leaving out `publisher`'s
 * subscription there when it has No Local. */
static int collect(struct mq_sub_vec *v, const struct node *n, const void *publisher)
{
    struct mq_sub_match one = {n->sub.one, n->one_grant};
    const struct mq_sub_match *e = &one;
    size_t count = 1;
    if (n->subs_mode == SUBS_MANY) {
        e = n->sub.many->e;
        count = n->sub.many->count;
    }
    if (v->count + count > v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        while (cap < v->count + count)
            cap *= 2;
        struct mq_sub_match *items = realloc(v->items, cap * sizeof(*items));
        if (!items)
            return MQ_ERR_NOMEM;
        v->items = items;
        v->cap = cap;
    }
    size_t at = v->count;
    memcpy(v->items + at, e, count * sizeof(*e));
    v->count += count;
    if (publisher) {
        /* A subscriber appears once per node: at most one entry to take out. */
        uint32_t pos = node_sub_find(n, publisher);
        if (pos != UINT32_MAX && (e[pos].grant & MQ_GRANT_NO_LOCAL))
            v->items[at + pos] = v->items[--v->count];
    }
    return 0;
}

/* Note sub_id as one more Subscription Identifier of item (its first is in its grant). */
static int extra_id_add(struct mq_sub_vec *v, size_t item, uint32_t sub_id)
{
    if (v->extra_count == v->extra_cap) {
        size_t cap = v->extra_cap ? v->extra_cap * 2 : 8;
        struct mq_sub_extra_id *x = realloc(v->extra, cap * sizeof(*x));
        if (!x)
            return MQ_ERR_NOMEM;
        v->extra = x;
        v->extra_cap = cap;
    }
    v->extra[v->extra_count++] = (struct mq_sub_extra_id){(uint32_t)item, sub_id};
    return 0;
}

/* Fold match src into the earlier match of the same subscriber at position dst: the higher
 * QoS, Retain As Published from either, every Subscription Identifier kept. */
static int merge(struct mq_sub_vec *v, size_t dst, uint32_t src)
{
    uint32_t *g = &v->items[dst].grant;
    uint32_t qos = MQ_GRANT_QOS(*g) > MQ_GRANT_QOS(src) ? MQ_GRANT_QOS(*g) : MQ_GRANT_QOS(src);
    uint32_t id = MQ_GRANT_SUB_ID(*g), src_id = MQ_GRANT_SUB_ID(src);
    if (src_id && id && extra_id_add(v, dst, src_id))
        return MQ_ERR_NOMEM;
    *g = MQ_GRANT(qos, (*g | src) & MQ_GRANT_RETAIN_AS_PUBLISHED, id ? id : src_id);
    return 0;
}

/* Merge duplicate subscribers in v, keeping each one's first position (merge()). */
static int dedupe(struct mq_sub_vec *v)
{
    struct mq_sub_match *it = v->items;
    size_t n = v->count, w = 0;
    int err;

    if (n <= SMALL_DEDUPE) {
        for (size_t i = 0; i < n; i++) {
            size_t j = 0;
            while (j < w && it[j].subscriber != it[i].subscriber)
                j++;
            if (j < w) {
                if ((err = merge(v, j, it[i].grant)))
                    return err;
            } else {
                it[w++] = it[i];
            }
        }
        v->count = w;
        return 0;
    }

    if (n > UINT32_MAX / 4)
        return MQ_ERR_NOMEM;
    uint32_t cap = 32;
    while (cap < 2 * n)
        cap *= 2;
    if ((err = scratch_reserve(v, (size_t)cap * sizeof(uint32_t))))
        return err;
    uint32_t *table = v->scratch; /* position in the compacted prefix + 1; 0 = empty */
    memset(table, 0, (size_t)cap * sizeof(*table));
    for (size_t i = 0; i < n; i++) {
        uint32_t h = ptr_hash(it[i].subscriber, cap - 1);
        for (;; h = (h + 1) & (cap - 1)) {
            uint32_t at = table[h];
            if (!at) {
                table[h] = (uint32_t)w + 1;
                it[w++] = it[i];
                break;
            }
            if (it[at - 1].subscriber == it[i].subscriber) {
                if ((err = merge(v, at - 1, it[i].grant)))
                    return err;
                break;
            }
        }
    }
    v->count = w;
    return 0;
}

int sub_tree_match(const struct mq_sub_tree *t, const uint8_t *topic, size_t len,
                   const void *publisher, struct mq_sub_vec *out)
{
    out->count = 0;
    out->extra_count = 0;
    if (!topic)
        topic = empty_str;
    if (!t->no_local)
        publisher = NULL; /* nobody asked for No Local: no need to look for the publisher */

    /* Depth-first with an explicit stack: each pop pushes at most an exact and a '+' child
     * one level deeper, so the stack never exceeds levels + 1 frames. */
    int err = scratch_reserve(out, 2 * sizeof(struct frame));
    if (err)
        return err;
    struct frame *stack = out->scratch;
    size_t sp = 0, sources = 0;
    stack[sp++] = (struct frame){root_for(t, topic, len), 0};
    while (sp > 0) {
        struct frame f = stack[--sp];
        const struct kids *k = f.n->kids;
        /* '#' also matches the parent level, so it matches wherever its parent does. */
        if (k && k->hash && k->hash->subs_mode != SUBS_NONE) {
            if ((err = collect(out, k->hash, publisher)))
                goto fail;
            sources++;
        }
        if (f.pos > len) {
            if (f.n->subs_mode != SUBS_NONE) {
                if ((err = collect(out, f.n, publisher)))
                    goto fail;
                sources++;
            }
            continue;
        }
        if (!k)
            continue; /* a leaf: no deeper level can match */
        size_t end = level_end(topic, len, f.pos);
        if ((err = scratch_reserve(out, (sp + 2) * sizeof(struct frame))))
            goto fail;
        stack = out->scratch;
        const struct node *c = imap_get(&k->children, topic + f.pos, end - f.pos, node_key);
        if (c)
            stack[sp++] = (struct frame){c, end + 1};
        if (k->plus)
            stack[sp++] = (struct frame){k->plus, end + 1};
    }

    /* One node never holds a subscriber twice, so a single source needs no dedupe. */
    if (sources > 1 && (err = dedupe(out)))
        goto fail;
    return 0;
fail:
    out->count = 0;
    out->extra_count = 0;
    return err;
}

bool sub_tree_leaf_grant(const struct mq_sub_leaf *leaf, const void *subscriber, uint32_t *grant)
{
    const struct node *n = leaf_node(leaf);
    uint32_t pos = node_sub_find(n, subscriber);
    if (pos == UINT32_MAX)
        return false;
    *grant = n->subs_mode == SUBS_ONE ? n->one_grant : n->sub.many->e[pos].grant;
    return true;
}

size_t sub_tree_count(const struct mq_sub_tree *t)
{
    return t->count;
}

size_t sub_tree_node_count(const struct mq_sub_tree *t)
{
    return t->nodes;
}

void sub_vec_free(struct mq_sub_vec *v)
{
    free(v->items);
    free(v->extra);
    free(v->scratch);
    *v = (struct mq_sub_vec){0};
}

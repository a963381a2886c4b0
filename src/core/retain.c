/* retain.c - the retained-message store: a trie by topic level, at most one message per node.
 *
 * Owns its nodes and one reference to each stored message. Invariants: every node below the
 * root holds a message or a child (empty nodes are pruned at once); a node's children map
 * borrows its keys from the children's level strings; `frames` always has room for a walk
 * down the deepest branch, so retain_match never allocates and cannot fail.
 */
#include "midge/retain.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/hmap.h"
#include "midge/msg.h"

#define ALL_LEVELS SIZE_MAX /* frame position meaning "this node and its whole subtree" */

struct rnode {
    struct rnode *parent; /* NULL for the root */
    struct mq_msg *msg;   /* owned reference, or NULL */
    uint64_t stored_ms;   /* when msg was stored (retain_set_at's clock), 0 = unknown */
    struct mq_hmap children;
    uint32_t level_len;
    char level[]; /* level_len bytes + NUL; the key of this node in parent->children */
};

/* One step of retain_match's walk; the stack of frames is always a path from the root. */
struct frame {
    const struct rnode *n;
    size_t pos;       /* filter offset of n's child level; len + 1 = consumed; or ALL_LEVELS */
    size_t child_pos; /* pos given to each child while iterating */
    uint32_t it;      /* hmap_next cursor over n's children */
    bool entered;
};

struct mq_retain {
    struct rnode *root;
    size_t count;         /* stored messages */
    size_t nodes;         /* nodes below the root */
    struct frame *frames; /* retain_match's stack, sized by set */
    size_t frames_cap;    /* >= the deepest level count ever stored + 1 */
};

/* Offset one past the level that starts at pos (the next '/' or len). */
static size_t level_end(const uint8_t *s, size_t len, size_t pos)
{
    if (pos >= len)
        return len;
    const uint8_t *slash = memchr(s + pos, '/', len - pos);
    return slash ? (size_t)(slash - s) : len;
}

static struct rnode *node_new(struct rnode *parent, const uint8_t *level, size_t len)
{
    struct rnode *n = calloc(1, sizeof(*n) + len + 1);
    if (!n)
        return NULL;
    n->parent = parent;
    hmap_init(&n->children);
    n->level_len = (uint32_t)len;
    if (len > 0)
        memcpy(n->level, level, len);
    return n;
}

/* Remove n and then each ancestor that became empty, stopping at the root. */
static void prune(struct mq_retain *r, struct rnode *n)
{
    while (n->parent && !n->msg && hmap_count(&n->children) == 0) {
        struct rnode *p = n->parent;
        hmap_remove(&p->children, n->level, n->level_len);
        hmap_destroy(&n->children);
        free(n);
        r->nodes--;
        n = p;
    }
}

/* Make room for a walk of `depth` levels below the root. */
static int frames_reserve(struct mq_retain *r, size_t depth)
{
    if (depth + 1 <= r->frames_cap)
        return 0;
    size_t cap = r->frames_cap * 2;
    if (cap < depth + 1)
        cap = depth + 1;
    struct frame *f = realloc(r->frames, cap * sizeof(*f));
    if (!f)
        return MQ_ERR_NOMEM;
    r->frames = f;
    r->frames_cap = cap;
    return 0;
}

struct mq_retain *retain_new(void)
{
    struct mq_retain *r = calloc(1, sizeof(*r));
    if (!r)
        goto fail;
    r->root = node_new(NULL, NULL, 0);
    if (!r->root || frames_reserve(r, 15) != 0)
        goto fail;
    return r;
fail:
    if (r)
        free(r->root);
    free(r);
    return NULL;
}

void retain_free(struct mq_retain *r)
{
    if (!r)
        return;
    /* The parent field, no longer needed, threads a work list: no recursion, no memory. */
    struct rnode *list = r->root;
    list->parent = NULL;
    while (list) {
        struct rnode *n = list, *c;
        list = n->parent;
        uint32_t it = 0;
        while ((c = hmap_next(&n->children, &it, NULL, NULL))) {
            c->parent = list;
            list = c;
        }
        msg_unref(n->msg);
        hmap_destroy(&n->children);
        free(n);
    }
    free(r->frames);
    free(r);
}

int retain_set(struct mq_retain *r, struct mq_msg *msg)
{
    return retain_set_at(r, msg, 0);
}

/* The node of exactly this topic, or NULL. */
static const struct rnode *find_node(const struct mq_retain *r, const uint8_t *topic, size_t len)
{
    const struct rnode *n = r->root;
    for (size_t pos = 0;;) {
        size_t end = level_end(topic, len, pos);
        n = hmap_get(&n->children, topic + pos, end - pos);
        if (!n || end == len)
            return n;
        pos = end + 1;
    }
}

uint64_t retain_stored_ms(const struct mq_retain *r, const uint8_t *topic, size_t len)
{
    const struct rnode *n = len ? find_node(r, topic, len) : NULL;
    return n && n->msg ? n->stored_ms : 0;
}

int retain_set_at(struct mq_retain *r, struct mq_msg *msg, uint64_t now_ms)
{
    const uint8_t *topic = (const uint8_t *)msg->topic;
    size_t len = msg->topic_len;
    struct rnode *n = r->root;

    if (msg->payload_len == 0) {
        for (size_t pos = 0;;) {
            size_t end = level_end(topic, len, pos);
            n = hmap_get(&n->children, topic + pos, end - pos);
            if (!n)
                return 0;
            if (end == len)
                break;
            pos = end + 1;
        }
        if (n->msg) {
            msg_unref(n->msg);
            n->msg = NULL;
            r->count--;
            prune(r, n);
        }
        return 0;
    }

    size_t depth = 1;
    for (size_t i = 0; i < len; i++)
        depth += topic[i] == '/';
    if (frames_reserve(r, depth) != 0)
        return MQ_ERR_NOMEM;
    for (size_t pos = 0;;) {
        size_t end = level_end(topic, len, pos);
        struct rnode *c = hmap_get(&n->children, topic + pos, end - pos);
        if (!c) {
            c = node_new(n, topic + pos, end - pos);
            if (!c)
                goto fail;
            if (hmap_put(&n->children, c->level, c->level_len, c) != 0) {
                free(c);
                goto fail;
            }
            r->nodes++;
        }
        n = c;
        if (end == len)
            break;
        pos = end + 1;
    }
    msg_ref(msg);
    if (n->msg)
        msg_unref(n->msg);
    else
        r->count++;
    n->msg = msg;
    n->stored_ms = now_ms;
    return 0;
fail:
    prune(r, n); /* only nodes created by this call can be empty */
    return MQ_ERR_NOMEM;
}

void retain_match(const struct mq_retain *r, const uint8_t *filter, size_t len,
                  void (*fn)(void *ctx, struct mq_msg *msg), void *ctx)
{
    static const uint8_t empty[1];
    if (!filter)
        filter = empty;
    struct frame *stack = r->frames;
    size_t sp = 0;
    stack[sp++] = (struct frame){.n = r->root, .pos = 0};

    while (sp > 0) {
        struct frame *f = &stack[sp - 1];
        if (!f->entered) {
            f->entered = true;
            f->it = 0;
            if (f->pos == ALL_LEVELS) {
                if (f->n->msg)
                    fn(ctx, f->n->msg);
                f->child_pos = ALL_LEVELS;
                continue;
            }
            if (f->pos > len) {
                if (f->n->msg)
                    fn(ctx, f->n->msg);
                sp--;
                continue;
            }
            size_t end = level_end(filter, len, f->pos);
            const uint8_t *level = filter + f->pos;
            size_t level_len = end - f->pos;
            if (level_len == 1 && level[0] == '#') {
                /* '#' matches the parent level too: "a/#" yields "a". */
                if (f->n->msg)
                    fn(ctx, f->n->msg);
                f->child_pos = ALL_LEVELS;
            } else if (level_len == 1 && level[0] == '+') {
                f->child_pos = end + 1;
            } else {
                /* An exact level has one successor: replace the frame instead of pushing,
                 * which keeps the stack a path (one frame per depth at most). */
                const struct rnode *c = hmap_get(&f->n->children, level, level_len);
                if (c)
                    *f = (struct frame){.n = c, .pos = end + 1};
                else
                    sp--;
            }
            continue;
        }

        const void *key;
        size_t key_len;
        const struct rnode *c = hmap_next(&f->n->children, &f->it, &key, &key_len);
        if (!c) {
            sp--;
            continue;
        }
        /* Only the root iterates because of a first-level wildcard, which must not match
         * '$' topics ([MQTT-4.7.2-1]). */
        if (f->n == r->root && key_len > 0 && *(const char *)key == '$')
            continue;
        stack[sp++] = (struct frame){.n = c, .pos = f->child_pos};
    }
}

/* ---- pages in topic order ------------------------------------------------------------------ */

/* One node of retain_page's walk: its children are taken in level order, a batch at a time
 * (the `want` smallest not yet visited), so a page never sorts a whole store. */
struct pframe {
    const struct rnode *n;
    size_t fpos;    /* filter offset of the children's level; ALL_LEVELS inside a '#' */
    bool on_path;   /* n's path is the cursor's first levels */
    size_t cpos;    /* cursor offset of the children's level (on_path) */
    bool self_done; /* n's own message was considered */
    bool exhausted; /* every child has been batched */
    const struct rnode **batch;
    size_t bn, bi;
    size_t last_want;  /* the size asked of the previous batch: the next asks twice as much */
    const char *lower; /* next batch: children with a level above this one */
    uint32_t lower_len;
    bool has_lower;
};

static int level_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : alen < blen ? -1 : alen > blen;
}

static int node_cmp(const struct rnode *a, const struct rnode *b)
{
    return level_cmp(a->level, a->level_len, b->level, b->level_len);
}

/* Max-heap of nodes by level: the kept ones are the smallest seen. */
static void heap_offer(const struct rnode **h, size_t *n, size_t cap, const struct rnode *c)
{
    if (*n < cap) {
        size_t i = (*n)++;
        h[i] = c;
        while (i && node_cmp(h[(i - 1) / 2], h[i]) < 0) {
            const struct rnode *t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (node_cmp(c, h[0]) >= 0)
        return;
    h[0] = c;
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < *n && node_cmp(h[l], h[big]) > 0)
            big = l;
        if (r < *n && node_cmp(h[r], h[big]) > 0)
            big = r;
        if (big == i)
            break;
        const struct rnode *t = h[i];
        h[i] = h[big];
        h[big] = t;
        i = big;
    }
}

static int node_qsort(const void *a, const void *b)
{
    return node_cmp(*(const struct rnode *const *)a, *(const struct rnode *const *)b);
}

struct pwalk {
    const struct mq_retain *r;
    const uint8_t *filter, *after;
    size_t flen, alen;
    struct pframe *st;
    size_t sp, cap;
};

static int push(struct pwalk *w, const struct rnode *n, size_t fpos, bool on_path, size_t cpos)
{
    if (w->sp == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        struct pframe *st = realloc(w->st, cap * sizeof(*st));
        if (!st)
            return MQ_ERR_NOMEM;
        w->st = st;
        w->cap = cap;
    }
    w->st[w->sp++] = (struct pframe){.n = n, .fpos = fpos, .on_path = on_path, .cpos = cpos};
    return 0;
}

/* Does the node of frame f hold a message its own topic matches the filter with? */
static bool self_matches(const struct pwalk *w, const struct pframe *f)
{
    if (!f->n->msg || f->on_path)
        return false; /* on the cursor's path: at or before the cursor */
    if (f->fpos == ALL_LEVELS || f->fpos > w->flen)
        return true;
    /* "a/#" matches "a": the rest of the filter is exactly "#". */
    return w->flen - f->fpos == 1 && w->filter[f->fpos] == '#';
}

/* The next batch of f's children that can match, in level order, at most want of them
 * (more are batched later). Children at or before the cursor are left out. */
static int next_batch(struct pwalk *w, struct pframe *f, size_t want)
{
    f->bn = f->bi = 0;
    const struct rnode *n = f->n;
    size_t fpos = f->fpos;
    bool all = fpos == ALL_LEVELS, root = n == w->r->root;
    const uint8_t *lit = NULL;
    size_t lit_len = 0;
    if (!all) {
        if (fpos > w->flen) {
            f->exhausted = true;
            return 0;
        }
        size_t end = level_end(w->filter, w->flen, fpos);
        lit = w->filter + fpos;
        lit_len = end - fpos;
        if (lit_len == 1 && (lit[0] == '#' || lit[0] == '+'))
            lit = NULL; /* any child */
    }
    const char *cur = NULL;
    size_t cur_len = 0;
    if (f->on_path && f->cpos <= w->alen) {
        size_t end = level_end(w->after, w->alen, f->cpos);
        cur = (const char *)w->after + f->cpos;
        cur_len = end - f->cpos;
    }
    size_t cap = hmap_count(&n->children);
    if (cap > want)
        cap = want;
    free(f->batch);
    f->batch = cap ? malloc(cap * sizeof(*f->batch)) : NULL;
    if (cap && !f->batch)
        return MQ_ERR_NOMEM;
    size_t seen = 0;
    if (lit) {
        const struct rnode *c = hmap_get(&n->children, lit, lit_len);
        if (c && (!f->has_lower || level_cmp(c->level, c->level_len, f->lower, f->lower_len) > 0) &&
            (!cur || level_cmp(c->level, c->level_len, cur, cur_len) >= 0) && cap)
            f->batch[f->bn++] = c;
        f->exhausted = true;
    } else {
        uint32_t it = 0;
        const void *key;
        size_t klen;
        const struct rnode *c;
        while ((c = hmap_next(&n->children, &it, &key, &klen))) {
            /* A first-level wildcard never matches a '$' topic ([MQTT-4.7.2-1]). */
            if (root && !(w->flen && w->filter[0] == '$') && klen && *(const char *)key == '$')
                continue;
            if (f->has_lower && level_cmp(c->level, c->level_len, f->lower, f->lower_len) <= 0)
                continue;
            if (cur && level_cmp(c->level, c->level_len, cur, cur_len) < 0)
                continue;
            seen++;
            heap_offer(f->batch, &f->bn, cap, c);
        }
        f->exhausted = seen <= f->bn;
    }
    if (f->bn > 1)
        qsort(f->batch, f->bn, sizeof(*f->batch), node_qsort);
    if (f->bn) {
        const struct rnode *last = f->batch[f->bn - 1];
        f->lower = last->level;
        f->lower_len = last->level_len;
        f->has_lower = true;
    }
    return 0;
}

int retain_page(const struct mq_retain *r, const uint8_t *filter, size_t filter_len,
                const uint8_t *after, size_t after_len, size_t max,
                void (*fn)(void *ctx, struct mq_msg *msg), void *ctx, bool *more)
{
    struct pwalk w = {
        .r = r, .filter = filter, .flen = filter_len, .after = after, .alen = after_len};
    size_t got = 0;
    int rc = 0;
    *more = false;
    if (push(&w, r->root, 0, after_len > 0, 0))
        return MQ_ERR_NOMEM;
    while (w.sp && !*more) {
        struct pframe *f = &w.st[w.sp - 1];
        if (!f->self_done) {
            f->self_done = true;
            if (f->n != r->root && self_matches(&w, f)) {
                if (got == max) {
                    *more = true;
                    break;
                }
                fn(ctx, f->n->msg);
                got++;
            }
        }
        if (f->bi == f->bn) {
            if (f->exhausted) {
                free(f->batch);
                w.sp--;
                continue;
            }
            /* Every child's subtree holds a message, but the filter may match none of
             * them: ask for a few more than needed, doubling while little matches. */
            size_t want = max + 1 - got;
            if (want < 16)
                want = 16;
            if (want < 2 * f->last_want)
                want = 2 * f->last_want;
            f->last_want = want;
            if ((rc = next_batch(&w, f, want)))
                break;
            continue;
        }
        const struct rnode *c = f->batch[f->bi++];
        size_t fpos = f->fpos, cfpos;
        if (fpos == ALL_LEVELS)
            cfpos = ALL_LEVELS;
        else {
            size_t end = level_end(filter, filter_len, fpos);
            bool hash = end - fpos == 1 && filter[fpos] == '#';
            cfpos = hash ? ALL_LEVELS : end + 1;
        }
        bool on_path = false;
        size_t cpos = 0;
        if (f->on_path && f->cpos <= after_len) {
            size_t end = level_end(after, after_len, f->cpos);
            if (level_cmp(c->level, c->level_len, (const char *)after + f->cpos, end - f->cpos) ==
                0) {
                on_path = true;
                cpos = end + 1;
            }
        }
        if ((rc = push(&w, c, cfpos, on_path, cpos)))
            break;
    }
    while (w.sp)
        free(w.st[--w.sp].batch);
    free(w.st);
    return rc ? rc : (int)got;
}

/* Messages in n's subtree, n's own included (an explicit stack: no recursion). */
static size_t subtree_count(const struct rnode *n)
{
    size_t count = 0, sp = 0, cap = 16;
    const struct rnode **st = malloc(cap * sizeof(*st));
    if (!st)
        return 0;
    st[sp++] = n;
    while (sp) {
        const struct rnode *x = st[--sp];
        count += x->msg != NULL;
        uint32_t it = 0;
        const struct rnode *c;
        while ((c = hmap_next(&x->children, &it, NULL, NULL))) {
            if (sp == cap) {
                const struct rnode **g = realloc(st, 2 * cap * sizeof(*st));
                if (!g)
                    break;
                st = g;
                cap *= 2;
            }
            st[sp++] = c;
        }
    }
    free(st);
    return count;
}

size_t retain_count_plain(const struct mq_retain *r)
{
    size_t dollar = 0;
    uint32_t it = 0;
    const void *key;
    size_t klen;
    const struct rnode *c;
    while ((c = hmap_next(&r->root->children, &it, &key, &klen)))
        if (klen && *(const char *)key == '$')
            dollar += subtree_count(c);
    return r->count - dollar;
}

size_t retain_count(const struct mq_retain *r)
{
    return r->count;
}

size_t retain_node_count(const struct mq_retain *r)
{
    return r->nodes;
}

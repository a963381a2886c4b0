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

size_t retain_count(const struct mq_retain *r)
{
    return r->count;
}

size_t retain_node_count(const struct mq_retain *r)
{
    return r->nodes;
}

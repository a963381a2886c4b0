/* test_sub_tree.c - unit tests for the subscription trie (src/core/sub_tree.c).
 *
 * Subscribers are addresses in a static array; the tree never dereferences them. A
 * brute-force matcher written here from the spec is the reference for randomized tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "midge/sub_tree.h"

#define NSUBS 5000
static char subscribers[NSUBS];
#define SUB(i) ((void *)&subscribers[i])

static void add(struct mq_sub_tree *t, const char *filter, int sub, uint32_t grant)
{
    bool existed = true;
    assert_non_null(
        sub_tree_add(t, (const uint8_t *)filter, strlen(filter), SUB(sub), grant, &existed));
    assert_false(existed);
}

static bool del(struct mq_sub_tree *t, const char *filter, int sub)
{
    bool removed = false;
    assert_int_equal(
        sub_tree_remove(t, (const uint8_t *)filter, strlen(filter), SUB(sub), &removed), 0);
    return removed;
}

static int cmp_match(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct mq_sub_match *)a)->subscriber;
    uintptr_t y = (uintptr_t)((const struct mq_sub_match *)b)->subscriber;
    return x < y ? -1 : x > y;
}

/* Match topic and check the vector holds each subscriber once. */
static void match(const struct mq_sub_tree *t, const char *topic, struct mq_sub_vec *v)
{
    assert_int_equal(sub_tree_match(t, (const uint8_t *)topic, strlen(topic), NULL, v), 0);
    assert_true(v->count <= v->cap);
    struct mq_sub_match *copy = malloc((v->count + 1) * sizeof(*copy));
    assert_non_null(copy);
    if (v->count)
        memcpy(copy, v->items, v->count * sizeof(*copy));
    qsort(copy, v->count, sizeof(*copy), cmp_match);
    for (size_t i = 1; i < v->count; i++)
        assert_ptr_not_equal(copy[i - 1].subscriber, copy[i].subscriber);
    free(copy);
}

/* QoS with which sub appears in v, or -1. */
static int qos_in(const struct mq_sub_vec *v, int sub)
{
    for (size_t i = 0; i < v->count; i++)
        if (v->items[i].subscriber == SUB(sub))
            return v->items[i].grant;
    return -1;
}

/* QoS sub gets for topic in a tree, or -1. */
static int match_qos(const struct mq_sub_tree *t, const char *topic, int sub)
{
    struct mq_sub_vec v = {0};
    match(t, topic, &v);
    int q = qos_in(&v, sub);
    sub_vec_free(&v);
    return q;
}

/* ---- reference matcher (MQTT 3.1.1 §4.7), deliberately naive ---- */

static size_t split(const char *s, const char *levels[], size_t lens[], size_t max)
{
    size_t n = 0;
    const char *start = s;
    for (const char *p = s;; p++) {
        if (*p == '/' || *p == '\0') {
            assert_true(n < max);
            levels[n] = start;
            lens[n++] = (size_t)(p - start);
            if (*p == '\0')
                return n;
            start = p + 1;
        }
    }
}

static bool level_is(const char *l, size_t len, const char *what)
{
    return len == strlen(what) && memcmp(l, what, len) == 0;
}

static bool ref_match(const char *filter, const char *topic)
{
    const char *fl[64], *tl[64];
    size_t fn_len[64], tn_len[64];
    size_t nf = split(filter, fl, fn_len, 64), nt = split(topic, tl, tn_len, 64);
    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    size_t t = 0;
    for (size_t f = 0; f < nf; f++) {
        if (level_is(fl[f], fn_len[f], "#"))
            return true;
        if (t == nt)
            return false;
        if (!level_is(fl[f], fn_len[f], "+") &&
            (fn_len[f] != tn_len[t] || memcmp(fl[f], tl[t], fn_len[f]) != 0))
            return false;
        t++;
    }
    return t == nt;
}

/* ---- tests ---- */

static void test_empty_tree(void **state)
{
    (void)state;
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    struct mq_sub_vec v = {0};
    match(t, "a/b", &v);
    assert_int_equal(v.count, 0);
    match(t, "$SYS/x", &v);
    assert_int_equal(v.count, 0);
    assert_int_equal(sub_tree_count(t), 0);
    assert_int_equal(sub_tree_node_count(t), 0);
    assert_false(del(t, "a/b", 0));
    sub_vec_free(&v);
    sub_tree_free(t);
    sub_tree_free(NULL);
}

struct case_row {
    const char *filter, *topic;
    bool match;
};

/* MQTT 3.1.1 §4.7.1.2, §4.7.1.3, §4.7.2 and §4.7.3 examples, plus empty-level cases. */
static const struct case_row spec_rows[] = {
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/tennis/player1/#", "sport/tennis/player2", false},
    {"sport/tennis/player1/#", "sport/tennis", false},
    {"sport/#", "sport", true},
    {"sport/#", "sports", false},
    {"sport/#", "sport/", true},
    {"#", "sport", true},
    {"#", "/", true},
    {"#", "a/b/c/d", true},
    {"sport/tennis/#", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/tennis/+", "sport/tennis", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+", "finance", true},
    {"+", "", true},
    {"+/tennis/#", "sport/tennis/player1", true},
    {"+/tennis/#", "sport/tennis", true},
    {"+/tennis/#", "sport/golf", false},
    {"sport/+/player1", "sport/tennis/player1", true},
    {"sport/+/player1", "sport/tennis/player2", false},
    {"+/#", "a", true},
    {"+/#", "/", true},
    /* '$' topics: wildcards at the first level never match them. */
    {"#", "$SYS/broker/clients", false},
    {"#", "$SYS", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"+/#", "$SYS/x", false},
    {"+", "$SYS", false},
    {"$SYS/#", "$SYS/monitor/Clients", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$SYS/monitor/Clients", "$SYS/monitor/Clients", true},
    {"$SYS/+/Clients", "$SYS/monitor/Clients", true},
    {"$SYS/#", "SYS/x", false},
    {"$", "$", true},
    {"a/+", "a/$b", true},
    {"a/#", "a/$b/c", true},
    /* Case-sensitive, spaces allowed, empty levels are real levels. */
    {"ACCOUNTS", "Accounts", false},
    {"Accounts payable", "Accounts payable", true},
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"a/+/b", "a//b", true},
    {"/a", "/a", true},
    {"/a", "a", false},
    {"+/a", "/a", true},
    {"a", "a/", false},
    {"a/", "a/", true},
    {"a/+", "a/", true},
    {"/", "/", true},
    {"+/+", "/", true},
    {"/#", "/", true},
    {"/#", "a", false},
};

static void test_spec_examples(void **state)
{
    (void)state;
    size_t n = sizeof(spec_rows) / sizeof(spec_rows[0]);
    for (size_t i = 0; i < n; i++) {
        const struct case_row *c = &spec_rows[i];
        /* Guard the table itself against the reference. */
        if (ref_match(c->filter, c->topic) != c->match)
            fail_msg("reference disagrees on %s vs %s", c->filter, c->topic);
        struct mq_sub_tree *t = sub_tree_new();
        assert_non_null(t);
        add(t, c->filter, 1, 1);
        int q = match_qos(t, c->topic, 1);
        if ((q == 1) != c->match)
            fail_msg("filter %s topic %s: expected %s", c->filter, c->topic,
                     c->match ? "match" : "no match");
        sub_tree_free(t);
    }

    /* All filters in one tree, one subscriber each: no filter may leak into another. */
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) {
        bool existed;
        assert_non_null(sub_tree_add(t, (const uint8_t *)spec_rows[i].filter,
                                     strlen(spec_rows[i].filter), SUB(i), 0, &existed));
    }
    struct mq_sub_vec v = {0};
    for (size_t i = 0; i < n; i++) {
        match(t, spec_rows[i].topic, &v);
        size_t expected = 0;
        for (size_t j = 0; j < n; j++) {
            bool m = ref_match(spec_rows[j].filter, spec_rows[i].topic);
            expected += m;
            assert_int_equal(qos_in(&v, (int)j), m ? 0 : -1);
        }
        assert_int_equal(v.count, expected);
    }
    sub_vec_free(&v);
    sub_tree_free(t);
}

/* One subscriber, three overlapping filters: delivered once with the highest QoS. */
static void test_overlap_max_qos(void **state)
{
    (void)state;
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    add(t, "a/+", 0, 1);
    add(t, "a/#", 0, 2);
    add(t, "#", 0, 0);
    add(t, "a/b", 1, 0);
    add(t, "#", 1, 1);
    struct mq_sub_vec v = {0};
    match(t, "a/b", &v);
    assert_int_equal(v.count, 2);
    assert_int_equal(qos_in(&v, 0), 2);
    assert_int_equal(qos_in(&v, 1), 1);
    match(t, "a", &v); /* "a/#" and "#" */
    assert_int_equal(v.count, 2);
    assert_int_equal(qos_in(&v, 0), 2);
    match(t, "a/b/c", &v);
    assert_int_equal(qos_in(&v, 0), 2);
    assert_int_equal(qos_in(&v, 1), 1);
    match(t, "b", &v);
    assert_int_equal(v.count, 2);
    assert_int_equal(qos_in(&v, 0), 0);
    assert_true(del(t, "a/#", 0));
    match(t, "a/b", &v);
    assert_int_equal(qos_in(&v, 0), 1);
    /* Highest first, then lower ones: the max must survive merging in either order. */
    add(t, "a/b", 0, 2);
    match(t, "a/b", &v);
    assert_int_equal(qos_in(&v, 0), 2);
    assert_int_equal(v.count, 2);
    sub_vec_free(&v);
    sub_tree_free(t);
}

static void test_resubscribe_replaces_qos(void **state)
{
    (void)state;
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    add(t, "a/b", 3, 0);
    bool existed = false;
    assert_non_null(sub_tree_add(t, (const uint8_t *)"a/b", 3, SUB(3), 2, &existed));
    assert_true(existed);
    assert_int_equal(sub_tree_count(t), 1);
    assert_int_equal(match_qos(t, "a/b", 3), 2);
    /* Replace, not max: a lower QoS sticks too. */
    assert_non_null(sub_tree_add(t, (const uint8_t *)"a/b", 3, SUB(3), 1, NULL));
    assert_int_equal(match_qos(t, "a/b", 3), 1);
    assert_int_equal(sub_tree_count(t), 1);
    assert_int_equal(sub_tree_node_count(t), 2);
    sub_tree_free(t);
}

/* A node keeps its only subscriber inline and a leaf has no child links: going from one
 * subscriber to two and back, and a leaf gaining and losing a child, must lose nothing. */
static void test_one_subscriber_inline(void **state)
{
    (void)state;
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    add(t, "a", 1, 1);
    add(t, "a", 2, 2); /* second subscriber: the node moves to an array */
    assert_int_equal(match_qos(t, "a", 1), 1);
    assert_int_equal(match_qos(t, "a", 2), 2);
    assert_true(del(t, "a", 1)); /* back to one, inline */
    assert_int_equal(match_qos(t, "a", 1), -1);
    assert_int_equal(match_qos(t, "a", 2), 2);
    assert_non_null(sub_tree_add(t, (const uint8_t *)"a", 1, SUB(2), 0, NULL));
    assert_int_equal(match_qos(t, "a", 2), 0); /* QoS replaced in place */
    add(t, "a", 3, 1);
    assert_true(del(t, "a", 3));
    assert_false(del(t, "a", 3));

    /* The leaf "a" gains children ('+', '#', an exact level) and loses them again. */
    add(t, "a/b", 4, 1);
    add(t, "a/+", 5, 1);
    add(t, "a/#", 6, 2);
    assert_int_equal(match_qos(t, "a", 6), 2); /* '#' matches its parent level */
    assert_int_equal(match_qos(t, "a/b", 4), 1);
    assert_int_equal(match_qos(t, "a/b", 5), 1);
    assert_int_equal(match_qos(t, "a/b", 2), -1);
    assert_int_equal(sub_tree_node_count(t), 4);
    assert_true(del(t, "a/b", 4));
    assert_true(del(t, "a/+", 5));
    assert_true(del(t, "a/#", 6));
    assert_int_equal(sub_tree_node_count(t), 1);
    assert_int_equal(match_qos(t, "a", 2), 0);
    assert_int_equal(match_qos(t, "a/b", 2), -1);
    assert_true(del(t, "a", 2));
    assert_int_equal(sub_tree_node_count(t), 0);
    assert_int_equal(sub_tree_count(t), 0);
    sub_tree_free(t);
}

/* A leaf is the handle subscribers keep instead of their filter: the same address for
 * every subscriber of a filter while any stays, its filter rebuilt from its levels, and
 * removal through it equivalent to removal by filter. */
static void test_leaf_handles(void **state)
{
    (void)state;
    static const char *filters[] = {"a/b/c",  "a/b", "a/+/c", "a/#", "#",
                                    "$SYS/x", "+",   "//",    "/a",  ""};
    enum { NF = sizeof(filters) / sizeof(filters[0]) };
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    struct mq_sub_leaf *leaf[NF];
    char buf[16];
    for (int i = 0; i < NF; i++) {
        size_t len = strlen(filters[i]);
        bool existed = true;
        leaf[i] = sub_tree_add(t, (const uint8_t *)filters[i], len, SUB(1), 1, &existed);
        assert_non_null(leaf[i]);
        assert_false(existed);
        assert_ptr_equal(sub_tree_find(t, (const uint8_t *)filters[i], len), leaf[i]);
        assert_int_equal(sub_tree_leaf_filter(leaf[i], buf, sizeof(buf)), len);
        assert_string_equal(buf, filters[i]);
        /* Another subscriber of the same filter gets the same leaf. */
        assert_ptr_equal(sub_tree_add(t, (const uint8_t *)filters[i], len, SUB(2), 0, NULL),
                         leaf[i]);
    }
    /* Too small a buffer: the length is still told, nothing written (snprintf-like). */
    buf[0] = 'X';
    assert_int_equal(sub_tree_leaf_filter(leaf[0], buf, 5), 5);
    assert_int_equal(buf[0], 'X');

    /* Exact filters only: a node on the way, a wildcard that would match, no such filter. */
    assert_null(sub_tree_find(t, (const uint8_t *)"a", 1)); /* "a" only leads to "a/..." */
    assert_null(sub_tree_find(t, (const uint8_t *)"a/x/c", 5));
    assert_null(sub_tree_find(t, (const uint8_t *)"$SYS/+", 6));

    /* Removing one subscriber keeps the leaf for the other; the last removal prunes. */
    size_t nodes = sub_tree_node_count(t);
    for (int i = 0; i < NF; i++) {
        assert_true(sub_tree_leaf_remove(t, leaf[i], SUB(1)));
        assert_false(sub_tree_leaf_remove(t, leaf[i], SUB(1)));
        assert_ptr_equal(sub_tree_find(t, (const uint8_t *)filters[i], strlen(filters[i])),
                         leaf[i]);
    }
    assert_int_equal(sub_tree_node_count(t), nodes);
    assert_int_equal(sub_tree_count(t), NF);
    for (int i = 0; i < NF; i++)
        assert_true(sub_tree_leaf_remove(t, leaf[i], SUB(2)));
    assert_int_equal(sub_tree_count(t), 0);
    assert_int_equal(sub_tree_node_count(t), 0);
    sub_tree_free(t);
}

static void test_remove_and_prune(void **state)
{
    (void)state;
    static const char *filters[] = {"a/b/c", "a/b", "a/+/c", "a/#", "#", "$SYS/x", "+", "//"};
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    for (int i = 0; i < 8; i++)
        add(t, filters[i], 0, 0);
    add(t, "a/b/c", 1, 1);
    /* a, b, c, +, c, #, root #, $SYS, x, root +, "", "", "" */
    assert_int_equal(sub_tree_node_count(t), 13);
    assert_int_equal(sub_tree_count(t), 9);

    assert_false(del(t, "a/b/c", 2));   /* wrong subscriber */
    assert_false(del(t, "a/b/c/d", 0)); /* no such filter */
    assert_false(del(t, "a/c", 0));
    assert_false(del(t, "$SYS", 0)); /* node exists, no subscription on it */
    assert_int_equal(sub_tree_node_count(t), 13);

    assert_true(del(t, "a/b/c", 0));
    assert_false(del(t, "a/b/c", 0));
    assert_int_equal(sub_tree_node_count(t), 13); /* subscriber 1 keeps a/b/c */
    assert_int_equal(match_qos(t, "a/b/c", 1), 1);
    assert_int_equal(match_qos(t, "a/b/c", 0), 0); /* still via a/+/c, a/#, # */
    assert_true(del(t, "a/b/c", 1));
    assert_int_equal(sub_tree_node_count(t), 12);
    assert_int_equal(match_qos(t, "a/b/c", 1), -1);
    assert_true(del(t, "$SYS/x", 0));
    assert_int_equal(sub_tree_node_count(t), 10);
    assert_true(del(t, "a/+/c", 0));
    assert_int_equal(sub_tree_node_count(t), 8);
    assert_true(del(t, "//", 0));
    assert_int_equal(sub_tree_node_count(t), 5);
    assert_true(del(t, "a/b", 0));
    assert_int_equal(sub_tree_node_count(t), 4); /* a, a/#, #, + */
    assert_true(del(t, "#", 0));
    assert_true(del(t, "+", 0));
    assert_true(del(t, "a/#", 0));
    assert_int_equal(sub_tree_node_count(t), 0);
    assert_int_equal(sub_tree_count(t), 0);
    assert_int_equal(match_qos(t, "a/b", 0), -1);

    /* The tree is usable again after emptying. */
    add(t, "a/b", 0, 1);
    assert_int_equal(match_qos(t, "a/b", 0), 1);
    sub_tree_free(t); /* frees a non-empty tree: ASan checks nothing leaks */
}

/* Thousands of subscribers on overlapping filters: exercises the per-node index (add,
 * swap-remove) and the hash-set dedupe. */
static void test_many_subscribers(void **state)
{
    (void)state;
    enum { K = 3000 };
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    for (int i = 0; i < K; i++) {
        add(t, "news/#", i, (uint8_t)(i % 3));
        if (i % 2 == 0)
            add(t, "news/+", i, 1);
        if (i % 5 == 0)
            add(t, "news/today", i, 2);
    }
    assert_int_equal(sub_tree_count(t), K + K / 2 + K / 5);
    /* Re-adding is found through the index, not duplicated. */
    bool existed = false;
    assert_non_null(sub_tree_add(t, (const uint8_t *)"news/#", 6, SUB(K - 1), 2, &existed));
    assert_true(existed);
    assert_non_null(
        sub_tree_add(t, (const uint8_t *)"news/#", 6, SUB(K - 1), (K - 1) % 3, &existed));

    struct mq_sub_vec v = {0};
    match(t, "news/today", &v);
    assert_int_equal(v.count, K);
    for (int i = 0; i < K; i++) {
        int want = i % 3;
        if (i % 2 == 0 && want < 1)
            want = 1;
        if (i % 5 == 0)
            want = 2;
        assert_int_equal(qos_in(&v, i), want);
    }
    match(t, "news", &v); /* only "news/#" */
    assert_int_equal(v.count, K);

    /* Steady state: a reused vector keeps its buffers. */
    match(t, "news/today", &v);
    void *items = v.items, *scratch = v.scratch;
    size_t cap = v.cap, scratch_size = v.scratch_size;
    match(t, "news/today", &v);
    assert_ptr_equal(v.items, items);
    assert_ptr_equal(v.scratch, scratch);
    assert_int_equal(v.cap, cap);
    assert_int_equal(v.scratch_size, scratch_size);

    /* Remove "news/#" subscriptions in a scrambled order, checking as we go. */
    int *order = malloc(K * sizeof(*order));
    assert_non_null(order);
    for (int i = 0; i < K; i++)
        order[i] = i;
    unsigned seed = 12345;
    for (int i = K - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        int j = (int)((seed >> 8) % (unsigned)(i + 1));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (int r = 0; r < K; r++) {
        assert_true(del(t, "news/#", order[r]));
        assert_false(del(t, "news/#", order[r]));
        if (r % 97 == 0 || r > K - 20) {
            match(t, "news", &v);
            assert_int_equal(v.count, (size_t)(K - r - 1));
            match(t, "news/x", &v);
            for (int q = r + 1; q < K && q < r + 40; q++)
                assert_true(qos_in(&v, order[q]) >= 0);
            assert_int_equal(qos_in(&v, order[r]), order[r] % 2 == 0 ? 1 : -1);
        }
    }
    match(t, "news/today", &v);
    assert_int_equal(v.count, K / 2 + K / 5 - K / 10);
    for (int i = 0; i < K; i++) {
        if (i % 2 == 0)
            assert_true(del(t, "news/+", i));
        if (i % 5 == 0)
            assert_true(del(t, "news/today", i));
    }
    assert_int_equal(sub_tree_count(t), 0);
    assert_int_equal(sub_tree_node_count(t), 0);
    free(order);
    sub_vec_free(&v);
    sub_tree_free(t);
}

/* Many distinct topics, one subscriber each (the common shape). */
static void test_distinct_topics(void **state)
{
    (void)state;
    enum { K = 10000 };
    char buf[64];
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    for (int i = 0; i < K; i++) {
        snprintf(buf, sizeof(buf), "site/%d/dev/%d", i % 100, i);
        add(t, buf, i % NSUBS, 1);
    }
    assert_int_equal(sub_tree_count(t), K);
    assert_int_equal(sub_tree_node_count(t), 1 + 100 + 100 + K);
    struct mq_sub_vec v = {0};
    for (int i = 0; i < K; i += 37) {
        snprintf(buf, sizeof(buf), "site/%d/dev/%d", i % 100, i);
        match(t, buf, &v);
        assert_int_equal(v.count, 1);
        assert_ptr_equal(v.items[0].subscriber, SUB(i % NSUBS));
        snprintf(buf, sizeof(buf), "site/%d/dev/%d", (i + 1) % 100, i);
        match(t, buf, &v);
        assert_int_equal(v.count, 0);
    }
    for (int i = 0; i < K; i++) {
        snprintf(buf, sizeof(buf), "site/%d/dev/%d", i % 100, i);
        assert_true(del(t, buf, i % NSUBS));
    }
    assert_int_equal(sub_tree_node_count(t), 0);
    sub_vec_free(&v);
    sub_tree_free(t);
}

static void test_deep(void **state)
{
    (void)state;
    enum { D = 1000 };
    char *exact = malloc(2 * D), *plus = malloc(2 * D), *half = malloc(2 * D);
    assert_non_null(exact);
    assert_non_null(plus);
    assert_non_null(half);
    for (int i = 0; i < D; i++) {
        exact[2 * i] = 'l';
        plus[2 * i] = '+';
        exact[2 * i + 1] = plus[2 * i + 1] = i + 1 < D ? '/' : '\0';
    }
    memcpy(half, exact, D); /* first 500 levels and a trailing '/' */
    half[D] = '#';
    half[D + 1] = '\0';

    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    add(t, exact, 0, 0);
    add(t, plus, 1, 1);
    add(t, half, 2, 2);
    struct mq_sub_vec v = {0};
    match(t, exact, &v);
    assert_int_equal(v.count, 3);
    exact[2 * D - 2] = 'x'; /* last level differs */
    match(t, exact, &v);
    assert_int_equal(v.count, 2);
    assert_int_equal(qos_in(&v, 0), -1);
    exact[2 * D - 2] = 'l';

    /* A topic of 32768 empty levels. */
    size_t big = 32767;
    char *slashes = malloc(big + 1);
    assert_non_null(slashes);
    memset(slashes, '/', big);
    slashes[big] = '\0';
    add(t, "#", 3, 0);
    add(t, "+/#", 4, 1);
    match(t, slashes, &v);
    assert_int_equal(v.count, 2);
    add(t, slashes, 5, 2);
    match(t, slashes, &v);
    assert_int_equal(v.count, 3);
    assert_int_equal(qos_in(&v, 5), 2);

    assert_true(del(t, slashes, 5));
    assert_true(del(t, exact, 0));
    assert_true(del(t, plus, 1));
    assert_true(del(t, half, 2));
    assert_true(del(t, "#", 3));
    assert_true(del(t, "+/#", 4));
    assert_int_equal(sub_tree_node_count(t), 0);
    add(t, plus, 1, 1); /* leave one deep branch for sub_tree_free */
    sub_vec_free(&v);
    sub_tree_free(t);
    free(exact);
    free(plus);
    free(half);
    free(slashes);
}

/* ---- randomized comparison with the reference matcher ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void random_name(char *buf, bool filter)
{
    static const char *lv[] = {"a", "b", "", "$s", "cc"};
    int depth = 1 + (int)rnd(4);
    buf[0] = '\0';
    for (int i = 0; i < depth; i++) {
        if (i)
            strcat(buf, "/");
        uint32_t r = rnd(filter ? 7 : 5);
        if (r == 5 || r == 6)
            strcat(buf, "+");
        else
            strcat(buf, lv[r]);
    }
    if (filter && rnd(4) == 0)
        strcat(buf, "/#");
    if (filter && rnd(10) == 0)
        strcpy(buf, rnd(2) ? "#" : "+/#");
}

#define RSUBS 24
#define RMAX 600

struct ref_sub {
    char filter[40];
    int sub;
    uint8_t qos;
};

static void check_against_reference(const struct mq_sub_tree *t, const struct ref_sub *ref,
                                    size_t nref, struct mq_sub_vec *v)
{
    for (int k = 0; k < 60; k++) {
        char topic[40];
        random_name(topic, false);
        match(t, topic, v);
        int want[RSUBS];
        for (int s = 0; s < RSUBS; s++)
            want[s] = -1;
        for (size_t i = 0; i < nref; i++)
            if (ref_match(ref[i].filter, topic) && ref[i].qos > want[ref[i].sub])
                want[ref[i].sub] = ref[i].qos;
        size_t expected = 0;
        for (int s = 0; s < RSUBS; s++) {
            expected += want[s] >= 0;
            if (qos_in(v, s) != want[s])
                fail_msg("topic '%s' subscriber %d: got qos %d, want %d", topic, s, qos_in(v, s),
                         want[s]);
        }
        assert_int_equal(v->count, expected);
    }
}

static void test_random_vs_reference(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ull;
        struct mq_sub_tree *t = sub_tree_new();
        assert_non_null(t);
        struct ref_sub *ref = calloc(RMAX, sizeof(*ref));
        assert_non_null(ref);
        size_t nref = 0;
        struct mq_sub_vec v = {0};
        for (int op = 0; op < 1500; op++) {
            if (nref > 0 && rnd(3) == 0) {
                size_t i = rnd((uint32_t)nref);
                assert_true(del(t, ref[i].filter, ref[i].sub));
                ref[i] = ref[--nref];
            } else if (nref < RMAX) {
                struct ref_sub r;
                random_name(r.filter, true);
                r.sub = (int)rnd(RSUBS);
                r.qos = (uint8_t)rnd(3);
                bool existed;
                assert_non_null(sub_tree_add(t, (const uint8_t *)r.filter, strlen(r.filter),
                                             SUB(r.sub), r.qos, &existed));
                size_t i = 0;
                while (i < nref && !(ref[i].sub == r.sub && strcmp(ref[i].filter, r.filter) == 0))
                    i++;
                assert_int_equal(existed, i < nref);
                ref[i] = r;
                if (i == nref)
                    nref++;
            }
            assert_int_equal(sub_tree_count(t), nref);
            if (op % 50 == 0)
                check_against_reference(t, ref, nref, &v);
        }
        check_against_reference(t, ref, nref, &v);
        while (nref > 0) {
            assert_true(del(t, ref[nref - 1].filter, ref[nref - 1].sub));
            nref--;
        }
        assert_int_equal(sub_tree_node_count(t), 0);
        sub_vec_free(&v);
        free(ref);
        sub_tree_free(t);
    }
}

/* ---- MQTT 5: grants with options and Subscription Identifiers ---- */

/* Subscription Identifiers of sub in v (the grant's first and the extra ones), sorted. */
static size_t ids_of(const struct mq_sub_vec *v, int sub, uint32_t *ids, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < v->count; i++) {
        if (v->items[i].subscriber != SUB(sub))
            continue;
        if (MQ_GRANT_SUB_ID(v->items[i].grant) && n < cap)
            ids[n++] = MQ_GRANT_SUB_ID(v->items[i].grant);
        for (size_t x = 0; x < v->extra_count; x++)
            if (v->extra[x].item == i && n < cap)
                ids[n++] = v->extra[x].sub_id;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint32_t tmp = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = tmp;
        }
    return n;
}

/* The grant keeps QoS, No Local, Retain As Published and a 28-bit Subscription Identifier;
 * a subscriber matched through several filters gets the highest QoS, Retain As Published
 * if any has it, and every identifier ([MQTT-3.3.4-2..4]), on the inline and on the hashed
 * dedupe path. */
static void test_grant_merge_and_sub_ids(void **state)
{
    (void)state;
    struct mq_sub_tree *t = sub_tree_new();
    struct mq_sub_vec v = {0};
    assert_non_null(t);
    add(t, "a/#", 1, MQ_GRANT(0, 0, 7));
    add(t, "a/+", 1, MQ_GRANT(2, MQ_GRANT_RETAIN_AS_PUBLISHED, MQ_GRANT_SUB_ID_MAX));
    add(t, "a/b", 1, MQ_GRANT(1, 0, 0));
    add(t, "a/b", 2, MQ_GRANT(1, 0, 3));
    match(t, "a/b", &v);
    assert_int_equal(v.count, 2);
    uint32_t ids[8];
    assert_int_equal(ids_of(&v, 1, ids, 8), 2);
    assert_int_equal(ids[0], 7);
    assert_int_equal(ids[1], MQ_GRANT_SUB_ID_MAX);
    for (size_t i = 0; i < v.count; i++) {
        if (v.items[i].subscriber == SUB(1)) {
            assert_int_equal(MQ_GRANT_QOS(v.items[i].grant), 2);
            assert_true(v.items[i].grant & MQ_GRANT_RETAIN_AS_PUBLISHED);
        } else {
            assert_int_equal(MQ_GRANT_QOS(v.items[i].grant), 1);
            assert_false(v.items[i].grant & MQ_GRANT_RETAIN_AS_PUBLISHED);
            assert_int_equal(MQ_GRANT_SUB_ID(v.items[i].grant), 3);
        }
    }
    /* More than 16 matches take the hashed dedupe: 20 subscribers on "x/#" and "x/+". */
    for (int sub = 10; sub < 30; sub++) {
        add(t, "x/#", sub, MQ_GRANT(0, 0, (uint32_t)sub));
        add(t, "x/+", sub, MQ_GRANT(1, 0, (uint32_t)sub + 100));
    }
    match(t, "x/y", &v);
    assert_int_equal(v.count, 20);
    for (int sub = 10; sub < 30; sub++) {
        assert_int_equal(ids_of(&v, sub, ids, 8), 2);
        assert_int_equal(ids[0], (uint32_t)sub);
        assert_int_equal(ids[1], (uint32_t)sub + 100);
    }
    uint32_t g;
    struct mq_sub_leaf *leaf = sub_tree_find(t, (const uint8_t *)"a/+", 3);
    assert_true(sub_tree_leaf_grant(leaf, SUB(1), &g));
    assert_int_equal(g, MQ_GRANT(2, MQ_GRANT_RETAIN_AS_PUBLISHED, MQ_GRANT_SUB_ID_MAX));
    assert_false(sub_tree_leaf_grant(leaf, SUB(2), &g));
    sub_vec_free(&v);
    sub_tree_free(t);
}

/* No Local leaves out the publisher's own subscription with the option, and only that one:
 * its other matching subscriptions still deliver ([MQTT-3.8.3-3]). */
static void test_no_local(void **state)
{
    (void)state;
    struct mq_sub_tree *t = sub_tree_new();
    struct mq_sub_vec v = {0};
    assert_non_null(t);
    add(t, "n/+", 1, MQ_GRANT(1, MQ_GRANT_NO_LOCAL, 0));
    add(t, "n/x", 2, MQ_GRANT(1, MQ_GRANT_NO_LOCAL, 0));
    for (int sub = 3; sub < 25; sub++) /* many on one node: the publisher is found by index */
        add(t, "n/+", sub, MQ_GRANT(0, MQ_GRANT_NO_LOCAL, 0));
    assert_int_equal(sub_tree_match(t, (const uint8_t *)"n/x", 3, SUB(1), &v), 0);
    assert_int_equal(qos_in(&v, 1), -1);
    assert_int_equal(v.count, 23);
    assert_int_equal(sub_tree_match(t, (const uint8_t *)"n/x", 3, SUB(7), &v), 0);
    assert_int_equal(qos_in(&v, 7), -1);
    assert_int_equal(v.count, 23);
    /* A second, local-allowed subscription of the publisher still matches. */
    add(t, "n/#", 1, MQ_GRANT(0, 0, 0));
    assert_int_equal(sub_tree_match(t, (const uint8_t *)"n/x", 3, SUB(1), &v), 0);
    assert_int_equal(qos_in(&v, 1), 0);
    assert_int_equal(sub_tree_match(t, (const uint8_t *)"n/x", 3, NULL, &v), 0);
    assert_int_equal(MQ_GRANT_QOS((uint32_t)qos_in(&v, 1)), 1);
    sub_vec_free(&v);
    sub_tree_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leaf_handles),
        cmocka_unit_test(test_empty_tree),
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_overlap_max_qos),
        cmocka_unit_test(test_resubscribe_replaces_qos),
        cmocka_unit_test(test_remove_and_prune),
        cmocka_unit_test(test_many_subscribers),
        cmocka_unit_test(test_distinct_topics),
        cmocka_unit_test(test_deep),
        cmocka_unit_test(test_random_vs_reference),
        cmocka_unit_test(test_one_subscriber_inline),
        cmocka_unit_test(test_grant_merge_and_sub_ids),
        cmocka_unit_test(test_no_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

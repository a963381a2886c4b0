/* test_retain.c - unit tests for the retained-message store (src/core/retain.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "midge/msg.h"
#include "midge/retain.h"
#include "midge/topic.h"

static struct mq_msg *mk(const char *topic, const char *payload)
{
    struct mq_msg *m = msg_new((const uint8_t *)topic, (uint16_t)strlen(topic),
                               (const uint8_t *)payload, (uint32_t)strlen(payload), 1, true);
    assert_non_null(m);
    return m;
}

/* Store (or, with an empty payload, delete) and drop our own reference. */
static void set(struct mq_retain *r, const char *topic, const char *payload)
{
    struct mq_msg *m = mk(topic, payload);
    assert_int_equal(retain_set(r, m), 0);
    msg_unref(m);
}

struct seen {
    struct mq_msg **msgs;
    size_t n, cap;
};

static void on_msg(void *ctx, struct mq_msg *m)
{
    struct seen *s = ctx;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->msgs = realloc(s->msgs, s->cap * sizeof(*s->msgs));
        assert_non_null(s->msgs);
    }
    s->msgs[s->n++] = m;
}

static void run(const struct mq_retain *r, const char *filter, struct seen *s)
{
    s->n = 0;
    retain_match(r, (const uint8_t *)filter, strlen(filter), on_msg, s);
}

static bool seen_topic(const struct seen *s, const char *topic)
{
    size_t hits = 0;
    for (size_t i = 0; i < s->n; i++)
        hits += strcmp(s->msgs[i]->topic, topic) == 0;
    assert_true(hits <= 1); /* never delivered twice */
    return hits == 1;
}

static size_t pos_of(const struct seen *s, const char *topic)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->msgs[i]->topic, topic) == 0)
            return i;
    fail_msg("%s not delivered", topic);
    return 0;
}

/* Reference matcher (MQTT 3.1.1 §4.7), deliberately naive. */
static bool ref_match(const char *f, const char *t)
{
    if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    for (;;) {
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (fl == 1 && f[0] == '#')
            return true;
        if (!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0))
            return false;
        f += fl;
        t += tl;
        if (*f == '\0' && *t == '\0')
            return true;
        if (*f == '\0')
            return false;
        if (*t == '\0') /* topic exhausted: only a trailing "/#" still matches */
            return strcmp(f, "/#") == 0;
        f++;
        t++;
    }
}

static void test_empty_store(void **state)
{
    (void)state;
    struct mq_retain *r = retain_new();
    assert_non_null(r);
    struct seen s = {0};
    run(r, "#", &s);
    assert_int_equal(s.n, 0);
    run(r, "a/b", &s);
    run(r, "+/+", &s);
    run(r, "$SYS/#", &s);
    assert_int_equal(s.n, 0);
    set(r, "a/b", ""); /* deleting nothing is fine */
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_node_count(r), 0);
    free(s.msgs);
    retain_free(r);
    retain_free(NULL);
}

static void test_replace_and_refcount(void **state)
{
    (void)state;
    struct mq_retain *r = retain_new();
    assert_non_null(r);
    struct mq_msg *m1 = mk("a/b", "one"), *m2 = mk("a/b", "two");
    assert_int_equal(retain_set(r, m1), 0);
    assert_int_equal(m1->refcount, 2);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_set(r, m2), 0);
    assert_int_equal(m1->refcount, 1); /* replaced: the store dropped its reference */
    assert_int_equal(m2->refcount, 2);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_set(r, m2), 0); /* same message again: no extra reference */
    assert_int_equal(m2->refcount, 2);

    struct seen s = {0};
    run(r, "a/b", &s);
    assert_int_equal(s.n, 1);
    assert_ptr_equal(s.msgs[0], m2);
    retain_free(r);
    assert_int_equal(m2->refcount, 1);
    msg_unref(m1);
    msg_unref(m2);
    free(s.msgs);
}

static void test_delete_and_prune(void **state)
{
    (void)state;
    struct mq_retain *r = retain_new();
    assert_non_null(r);
    set(r, "a/b/c", "1");
    set(r, "a", "2");
    set(r, "a/x", "3");
    assert_int_equal(retain_node_count(r), 4);
    assert_int_equal(retain_count(r), 3);

    set(r, "a/b", ""); /* node exists but holds nothing */
    set(r, "a/b/c/d", "");
    set(r, "q", "");
    assert_int_equal(retain_count(r), 3);
    assert_int_equal(retain_node_count(r), 4);

    struct mq_msg *del = mk("a/b/c", "");
    assert_int_equal(retain_set(r, del), 0);
    assert_int_equal(del->refcount, 1); /* a delete keeps no reference */
    msg_unref(del);
    assert_int_equal(retain_count(r), 2);
    assert_int_equal(retain_node_count(r), 2); /* b and c pruned, a holds a message */

    struct seen s = {0};
    run(r, "a/b/c", &s);
    assert_int_equal(s.n, 0);
    run(r, "#", &s);
    assert_int_equal(s.n, 2);

    set(r, "a", "");
    assert_int_equal(retain_node_count(r), 2); /* a still has child x */
    run(r, "a", &s);
    assert_int_equal(s.n, 0);
    set(r, "a/x", "");
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_node_count(r), 0);

    set(r, "a/x", "back");
    run(r, "a/x", &s);
    assert_int_equal(s.n, 1);
    assert_memory_equal(s.msgs[0]->payload, "back", 4);
    free(s.msgs);
    retain_free(r);
}

static const char *stored[] = {
    "a",
    "a/b",
    "a/b/c",
    "a/c",
    "b",
    "/a",
    "a/",
    "a//b",
    "A",
    "/",
    "$SYS",
    "$SYS/x",
    "$SYS/x/y",
    "$other/y",
    "x/$SYS",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "sport",
};
#define NSTORED (sizeof(stored) / sizeof(stored[0]))

static const char *filters[] = {
    "#",
    "+",
    "+/+",
    "+/#",
    "a",
    "a/#",
    "a/+",
    "a/+/c",
    "a//b",
    "/+",
    "/#",
    "+/a",
    "$SYS",
    "$SYS/#",
    "$SYS/+",
    "+/x",
    "$other/+",
    "x/+",
    "x/#",
    "sport/tennis/player1/#",
    "sport/#",
    "sport/+",
    "sport/tennis/+",
    "+/tennis/#",
    "/",
    "a/b/c/#",
    "nothing/#",
    "A/#",
    "$+",
};

static void test_match_semantics(void **state)
{
    (void)state;
    struct mq_retain *r = retain_new();
    assert_non_null(r);
    for (size_t i = 0; i < NSTORED; i++)
        set(r, stored[i], stored[i]);
    assert_int_equal(retain_count(r), NSTORED);
    struct seen s = {0};

    run(r, "a/#", &s); /* '#' yields the parent "a" too */
    assert_int_equal(s.n, 6);
    assert_true(seen_topic(&s, "a") && seen_topic(&s, "a/b") && seen_topic(&s, "a/b/c"));
    assert_true(seen_topic(&s, "a/c") && seen_topic(&s, "a/") && seen_topic(&s, "a//b"));
    run(r, "#", &s);
    assert_int_equal(s.n, NSTORED - 4);
    assert_false(seen_topic(&s, "$SYS") || seen_topic(&s, "$SYS/x"));
    assert_true(seen_topic(&s, "x/$SYS"));
    /* Depth first: a parent before its descendants. */
    assert_true(pos_of(&s, "a") < pos_of(&s, "a/b"));
    assert_true(pos_of(&s, "a/b") < pos_of(&s, "a/b/c"));
    run(r, "+", &s);
    assert_int_equal(s.n, 4);
    assert_true(seen_topic(&s, "a") && seen_topic(&s, "b") && seen_topic(&s, "A"));
    assert_true(seen_topic(&s, "sport"));
    run(r, "+/x", &s);
    assert_int_equal(s.n, 0);
    run(r, "$SYS/#", &s);
    assert_int_equal(s.n, 3);
    run(r, "$SYS/+", &s);
    assert_int_equal(s.n, 1);
    assert_true(seen_topic(&s, "$SYS/x"));
    run(r, "a/+", &s);
    assert_int_equal(s.n, 3);
    assert_true(seen_topic(&s, "a/b") && seen_topic(&s, "a/c") && seen_topic(&s, "a/"));
    run(r, "a", &s);
    assert_int_equal(s.n, 1);
    assert_ptr_not_equal(s.msgs[0], NULL);
    assert_string_equal(s.msgs[0]->topic, "a");

    /* Every filter against the reference. */
    for (size_t f = 0; f < sizeof(filters) / sizeof(filters[0]); f++) {
        run(r, filters[f], &s);
        size_t expected = 0;
        for (size_t i = 0; i < NSTORED; i++) {
            bool want = ref_match(filters[f], stored[i]);
            expected += want;
            if (seen_topic(&s, stored[i]) != want)
                fail_msg("filter '%s' topic '%s': want %d", filters[f], stored[i], want);
        }
        assert_int_equal(s.n, expected);
    }
    free(s.msgs);
    retain_free(r);
}

static void test_many(void **state)
{
    (void)state;
    enum { K = 100000 };
    char buf[64];
    struct mq_retain *r = retain_new();
    assert_non_null(r);
    for (int i = 0; i < K; i++) {
        snprintf(buf, sizeof(buf), "dev/%d/temp", i);
        set(r, buf, "21.5");
    }
    set(r, "dev/7/humidity", "40");
    assert_int_equal(retain_count(r), K + 1);
    assert_int_equal(retain_node_count(r), 1 + K + K + 1);
    struct seen s = {0};
    run(r, "#", &s);
    assert_int_equal(s.n, K + 1);
    run(r, "dev/+/temp", &s);
    assert_int_equal(s.n, K);
    run(r, "dev/7/+", &s);
    assert_int_equal(s.n, 2);
    run(r, "dev/99999/temp", &s);
    assert_int_equal(s.n, 1);
    run(r, "dev/100000/temp", &s);
    assert_int_equal(s.n, 0);
    for (int i = 0; i < K; i += 2) {
        snprintf(buf, sizeof(buf), "dev/%d/temp", i);
        set(r, buf, "");
    }
    run(r, "dev/+/temp", &s);
    assert_int_equal(s.n, K / 2);
    for (int i = 1; i < K; i += 2) {
        snprintf(buf, sizeof(buf), "dev/%d/temp", i);
        set(r, buf, "");
    }
    set(r, "dev/7/humidity", "");
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_node_count(r), 0);
    free(s.msgs);
    retain_free(r);
}

static void test_deep(void **state)
{
    (void)state;
    enum { D = 1000 };
    char *topic = malloc(2 * D), *plus = malloc(2 * D), *hash = malloc(2 * D + 2);
    assert_non_null(topic);
    assert_non_null(plus);
    assert_non_null(hash);
    for (int i = 0; i < D; i++) {
        topic[2 * i] = (char)('a' + i % 26);
        plus[2 * i] = '+';
        topic[2 * i + 1] = plus[2 * i + 1] = i + 1 < D ? '/' : '\0';
    }
    memcpy(hash, topic, D); /* 500 levels, then "#" */
    hash[D] = '#';
    hash[D + 1] = '\0';

    struct mq_retain *r = retain_new();
    assert_non_null(r);
    set(r, topic, "deep");
    /* A shallower sibling and a 32768-level topic of empty levels. */
    set(r, "a/b", "x");
    size_t big = 32767;
    char *slashes = malloc(big + 1);
    assert_non_null(slashes);
    memset(slashes, '/', big);
    slashes[big] = '\0';
    set(r, slashes, "slashes");

    struct seen s = {0};
    run(r, topic, &s);
    assert_int_equal(s.n, 1);
    run(r, plus, &s);
    assert_int_equal(s.n, 1);
    run(r, hash, &s);
    assert_int_equal(s.n, 1);
    run(r, "#", &s);
    assert_int_equal(s.n, 3);
    run(r, "a/#", &s);
    assert_int_equal(s.n, 2);
    run(r, "/#", &s);
    assert_int_equal(s.n, 1);
    run(r, slashes, &s);
    assert_int_equal(s.n, 1);
    assert_memory_equal(s.msgs[0]->payload, "slashes", 7);

    set(r, topic, "");
    set(r, "a/b", "");
    assert_int_equal(retain_node_count(r), big + 1);
    set(r, slashes, "");
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_node_count(r), 0);
    set(r, slashes, "kept for retain_free"); /* free a deep tree without recursion */
    free(s.msgs);
    retain_free(r);
    free(topic);
    free(plus);
    free(hash);
    free(slashes);
}

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
        uint32_t x = rnd(filter ? 7 : 5);
        strcat(buf, x >= 5 ? "+" : lv[x]);
    }
    if (filter && rnd(4) == 0)
        strcat(buf, "/#");
    if (filter && rnd(10) == 0)
        strcpy(buf, rnd(2) ? "#" : "+/#");
}

static void test_random_vs_reference(void **state)
{
    (void)state;
    enum { MAXT = 400 };
    for (uint64_t seed = 1; seed <= 6; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ull;
        struct mq_retain *r = retain_new();
        assert_non_null(r);
        static char topics[MAXT][40];
        static bool live[MAXT];
        size_t nt = 0;
        memset(live, 0, sizeof(live));
        struct seen s = {0};
        for (int op = 0; op < 1200; op++) {
            char t[40];
            random_name(t, false);
            size_t i = 0;
            while (i < nt && strcmp(topics[i], t) != 0)
                i++;
            if (i == nt && nt < MAXT)
                strcpy(topics[nt++], t);
            bool store = rnd(3) != 0;
            set(r, t, store ? "p" : "");
            if (i < nt)
                live[i] = store;

            if (op % 40 == 0) {
                size_t nlive = 0;
                for (size_t k = 0; k < nt; k++)
                    nlive += live[k];
                assert_int_equal(retain_count(r), nlive);
                for (int q = 0; q < 40; q++) {
                    char f[48];
                    random_name(f, true);
                    run(r, f, &s);
                    size_t expected = 0;
                    for (size_t k = 0; k < nt; k++) {
                        bool want = live[k] && ref_match(f, topics[k]);
                        expected += want;
                        if (seen_topic(&s, topics[k]) != want)
                            fail_msg("filter '%s' topic '%s': want %d", f, topics[k], want);
                    }
                    assert_int_equal(s.n, expected);
                }
            }
        }
        for (size_t k = 0; k < nt; k++)
            set(r, topics[k], "");
        assert_int_equal(retain_count(r), 0);
        assert_int_equal(retain_node_count(r), 0);
        free(s.msgs);
        retain_free(r);
    }
}

/* ---- retain_page: level order, cursors, filters ------------------------------------------- */

struct page_out {
    char topics[64][64];
    size_t n;
};

static void page_collect(void *ctx, struct mq_msg *m)
{
    struct page_out *o = ctx;
    assert_true(o->n < 64);
    snprintf(o->topics[o->n++], 64, "%s", m->topic);
}

/* Level order: level by level, byte-wise within one, a topic before its extensions. */
static int level_order(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    for (;;) {
        size_t xl = strcspn(x, "/"), yl = strcspn(y, "/");
        size_t n = xl < yl ? xl : yl;
        int c = memcmp(x, y, n);
        if (c)
            return c;
        if (xl != yl)
            return xl < yl ? -1 : 1;
        if (!x[xl] || !y[yl])
            return !x[xl] && !y[yl] ? 0 : !x[xl] ? -1 : 1;
        x += xl + 1;
        y += yl + 1;
    }
}

static void test_page_order_cursor_filters(void **state)
{
    (void)state;
    static const char *const topics[] = {
        "a",    "a/b",   "a/b/c", "a/c", "a-b", "a//x", "b",  "b/a",  "$SYS/x",
        "$SYS", "z/y/x", "a/b/d", "m",   "m/",  "m//",  "ab", "a/bb", "a/b/c/d",
    };
    const size_t nt = sizeof(topics) / sizeof(topics[0]);
    struct mq_retain *r = retain_new();
    assert_non_null(r);
    for (size_t i = 0; i < nt; i++) {
        struct mq_msg *m = mk(topics[i], "x");
        assert_int_equal(retain_set(r, m), 0);
        msg_unref(m);
    }
    static const char *const page_filters[] = {"#", "a/#",   "a/+",   "+/+",    "a/b/#", "$SYS/#",
                                               "+", "m/+/+", "a/b/c", "nope/#", "+/b/#", "#/x"};
    for (size_t fi = 0; fi < sizeof(page_filters) / sizeof(page_filters[0]); fi++) {
        const char *f = page_filters[fi];
        if (topic_check_filter((const uint8_t *)f, strlen(f)))
            continue;
        /* The reference: every match, sorted in level order. */
        const char *want[64];
        size_t nw = 0;
        for (size_t i = 0; i < nt; i++)
            if (topic_matches((const uint8_t *)f, strlen(f), (const uint8_t *)topics[i],
                              strlen(topics[i])))
                want[nw++] = topics[i];
        qsort(want, nw, sizeof(*want), level_order);
        for (size_t page = 1; page <= 4; page++) {
            /* Walk it in pages of `page`, each from the last topic of the one before. */
            size_t got = 0;
            char after[64] = "";
            bool more = true;
            while (more) {
                struct page_out o = {0};
                int n = retain_page(r, (const uint8_t *)f, strlen(f), (const uint8_t *)after,
                                    strlen(after), page, page_collect, &o, &more);
                assert_true(n >= 0 && (size_t)n == o.n && o.n <= page);
                for (size_t i = 0; i < o.n; i++, got++) {
                    assert_true(got < nw);
                    assert_string_equal(o.topics[i], want[got]);
                }
                if (!o.n)
                    break;
                snprintf(after, sizeof(after), "%s", o.topics[o.n - 1]);
                assert_true(more == (got < nw));
            }
            assert_int_equal(got, nw);
        }
    }
    /* A cursor that names no stored topic still places the page. */
    struct page_out o = {0};
    bool more;
    assert_int_equal(retain_page(r, (const uint8_t *)"#", 1, (const uint8_t *)"a/b/cc", 6, 3,
                                 page_collect, &o, &more),
                     3);
    assert_string_equal(o.topics[0], "a/b/d");
    assert_string_equal(o.topics[1], "a/bb");
    assert_string_equal(o.topics[2], "a/c");
    assert_true(more);
    assert_int_equal(retain_count_plain(r), nt - 2);
    retain_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_order_cursor_filters),
        cmocka_unit_test(test_empty_store),
        cmocka_unit_test(test_replace_and_refcount),
        cmocka_unit_test(test_delete_and_prune),
        cmocka_unit_test(test_match_semantics),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_deep),
        cmocka_unit_test(test_random_vs_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

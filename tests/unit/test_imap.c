/* test_imap.c - unit tests for the map of values that carry their own key (src/base/imap.c).
 *
 * Values are items holding their key; a plain array of flags is the reference.
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

#include "midge/imap.h"

#define N 20000

struct item {
    size_t len;
    char key[16];
};

static struct item *items;

static const void *item_key(const void *value, size_t *len)
{
    const struct item *it = value;
    *len = it->len;
    return it->key;
}

static int setup_items(void **state)
{
    (void)state;
    items = calloc(N, sizeof(*items));
    if (!items)
        return -1;
    for (int i = 0; i < N; i++)
        items[i].len = (size_t)snprintf(items[i].key, sizeof(items[i].key), "c%d", i);
    return 0;
}

static int teardown_items(void **state)
{
    (void)state;
    free(items);
    return 0;
}

static void *get(const struct mq_imap *m, int i)
{
    return imap_get(m, items[i].key, items[i].len, item_key);
}

static void check_load(const struct mq_imap *m)
{
    assert_true(m->used >= m->count);
    if (m->cap) {
        assert_int_equal(m->cap & (m->cap - 1), 0);
        assert_true((uint64_t)m->used * 10 <= (uint64_t)m->cap * 7);
    } else {
        assert_null(m->slots);
    }
}

static void test_empty(void **state)
{
    (void)state;
    struct mq_imap m;
    imap_init(&m);
    assert_null(get(&m, 0));
    assert_null(imap_remove(&m, "x", 1, item_key));
    uint32_t pos = 0;
    assert_null(imap_next(&m, &pos));
    assert_int_equal(imap_count(&m), 0);
    imap_destroy(&m);
}

static void test_put_get_replace(void **state)
{
    (void)state;
    struct mq_imap m;
    imap_init(&m);
    assert_int_equal(imap_put(&m, &items[1], item_key), 0);
    assert_ptr_equal(get(&m, 1), &items[1]);
    assert_null(get(&m, 2));
    assert_null(imap_get(&m, "c", 1, item_key)); /* a prefix is another key */
    /* An equal key replaces: the map holds the new value. */
    struct item twin = items[1];
    assert_int_equal(imap_put(&m, &twin, item_key), 0);
    assert_int_equal(imap_count(&m), 1);
    assert_ptr_equal(get(&m, 1), &twin);
    /* A zero-length key is a key like any other. */
    struct item empty = {0};
    assert_int_equal(imap_put(&m, &empty, item_key), 0);
    assert_ptr_equal(imap_get(&m, "", 0, item_key), &empty);
    assert_ptr_equal(imap_remove(&m, "", 0, item_key), &empty);
    assert_ptr_equal(imap_remove(&m, items[1].key, items[1].len, item_key), &twin);
    assert_int_equal(imap_count(&m), 0);
    assert_null(m.slots); /* emptied: no memory held */
    imap_destroy(&m);
}

/* Grow to N, remove in a scattered order, re-add, iterate: against a flag array. */
static void test_grow_remove_iterate(void **state)
{
    (void)state;
    struct mq_imap m;
    imap_init(&m);
    static bool in[N];
    memset(in, 0, sizeof(in));
    for (int i = 0; i < N; i++) {
        assert_int_equal(imap_put(&m, &items[i], item_key), 0);
        in[i] = true;
    }
    check_load(&m);
    assert_int_equal(imap_count(&m), N);
    for (int i = 0; i < N; i += 3) {
        assert_ptr_equal(imap_remove(&m, items[i].key, items[i].len, item_key), &items[i]);
        in[i] = false;
    }
    for (int i = 0; i < N; i += 6) {
        assert_int_equal(imap_put(&m, &items[i], item_key), 0); /* reuses tombstones */
        in[i] = true;
    }
    check_load(&m);
    uint32_t want = 0;
    for (int i = 0; i < N; i++) {
        want += in[i];
        assert_ptr_equal(get(&m, i), in[i] ? &items[i] : NULL);
    }
    assert_int_equal(imap_count(&m), want);

    /* Iterate, removing each value as it is returned. */
    uint32_t pos = 0, seen = 0;
    struct item *it;
    while ((it = imap_next(&m, &pos))) {
        int i = (int)(it - items);
        assert_true(in[i]);
        in[i] = false;
        seen++;
        assert_ptr_equal(imap_remove(&m, it->key, it->len, item_key), it);
    }
    assert_int_equal(seen, want);
    assert_int_equal(imap_count(&m), 0);
    check_load(&m);
    imap_destroy(&m);
}

/* Many inserts and removes at a steady size must not drift into endless rehashing or a
 * full table: every probe has to keep ending at an empty slot. */
static void test_churn(void **state)
{
    (void)state;
    struct mq_imap m;
    imap_init(&m);
    for (int i = 0; i < 64; i++)
        assert_int_equal(imap_put(&m, &items[i], item_key), 0);
    for (int i = 64; i < N; i++) {
        assert_int_equal(imap_put(&m, &items[i], item_key), 0);
        assert_ptr_equal(imap_remove(&m, items[i - 64].key, items[i - 64].len, item_key),
                         &items[i - 64]);
        check_load(&m);
        assert_true(m.cap <= 256);
    }
    assert_int_equal(imap_count(&m), 64);
    for (int i = N - 64; i < N; i++)
        assert_ptr_equal(get(&m, i), &items[i]);
    imap_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_grow_remove_iterate),
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, setup_items, teardown_items);
}

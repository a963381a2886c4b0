/* test_hmap.c - unit tests for the open-addressing hash map (src/base/hmap.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "midge/err.h"
#include "midge/hmap.h"

#define N 20000

static char (*keys)[16];

static int setup_keys(void **state)
{
    (void)state;
    keys = calloc(N, sizeof(*keys));
    if (!keys)
        return -1;
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "topic/%d", i);
    return 0;
}

static int teardown_keys(void **state)
{
    (void)state;
    free(keys);
    return 0;
}

static void *val(int i)
{
    return (void *)(uintptr_t)(i + 1);
}

static void put_key(struct mq_hmap *m, int i)
{
    assert_int_equal(hmap_put(m, keys[i], strlen(keys[i]), val(i)), 0);
}

static void *get_key(const struct mq_hmap *m, int i)
{
    return hmap_get(m, keys[i], strlen(keys[i]));
}

static void check_load(const struct mq_hmap *m)
{
    assert_true(m->used >= m->count);
    if (m->cap) {
        assert_int_equal(m->cap & (m->cap - 1), 0);
        assert_true((uint64_t)m->used * 10 <= (uint64_t)m->cap * 7);
    }
}

static void test_empty(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    uint32_t pos = 0;
    assert_null(hmap_get(&m, "a", 1));
    assert_null(hmap_remove(&m, "a", 1));
    assert_null(hmap_next(&m, &pos, NULL, NULL));
    assert_int_equal(hmap_count(&m), 0);
    assert_null(m.slots);
    hmap_destroy(&m);
}

static void test_put_get_replace(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    char k1[] = "level", k2[] = "level";
    int a, b;
    assert_int_equal(hmap_put(&m, k1, 5, &a), 0);
    assert_ptr_equal(hmap_get(&m, "level", 5), &a);
    assert_null(hmap_get(&m, "leve", 4));
    assert_null(hmap_get(&m, "levelx", 6));
    /* Replace stores the new key pointer so the old key may be freed. */
    assert_int_equal(hmap_put(&m, k2, 5, &b), 0);
    assert_int_equal(hmap_count(&m), 1);
    assert_ptr_equal(hmap_get(&m, "level", 5), &b);
    uint32_t pos = 0;
    const void *key = NULL;
    size_t len = 0;
    assert_ptr_equal(hmap_next(&m, &pos, &key, &len), &b);
    assert_ptr_equal(key, k2);
    assert_int_equal(len, 5);
    assert_null(hmap_next(&m, &pos, &key, &len));
    hmap_destroy(&m);
}

/* Empty keys (the empty topic level), prefixes and embedded NULs are distinct keys. */
static void test_odd_keys(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    int v[6];
    static const char bin1[] = {'a', 0, 'b'}, bin2[] = {'a', 0, 'c'};
    assert_int_equal(hmap_put(&m, "", 0, &v[0]), 0);
    assert_int_equal(hmap_put(&m, "a", 1, &v[1]), 0);
    assert_int_equal(hmap_put(&m, "ab", 2, &v[2]), 0);
    assert_int_equal(hmap_put(&m, bin1, 3, &v[3]), 0);
    assert_int_equal(hmap_put(&m, bin2, 3, &v[4]), 0);
    assert_int_equal(hmap_put(&m, "abcdefghijklmnopq", 17, &v[5]), 0);
    assert_int_equal(hmap_count(&m), 6);
    assert_ptr_equal(hmap_get(&m, "", 0), &v[0]);
    assert_ptr_equal(hmap_get(&m, NULL, 0), &v[0]);
    assert_ptr_equal(hmap_get(&m, "a", 1), &v[1]);
    assert_ptr_equal(hmap_get(&m, "ab", 2), &v[2]);
    assert_ptr_equal(hmap_get(&m, bin1, 3), &v[3]);
    assert_ptr_equal(hmap_get(&m, bin2, 3), &v[4]);
    assert_ptr_equal(hmap_get(&m, "abcdefghijklmnopq", 17), &v[5]);
    assert_null(hmap_get(&m, "abcdefghijklmnopr", 17));
    assert_null(hmap_get(&m, "abcdefghijklmnop", 16));
    assert_ptr_equal(hmap_remove(&m, "", 0), &v[0]);
    assert_null(hmap_get(&m, "", 0));
    assert_ptr_equal(hmap_get(&m, "a", 1), &v[1]);
    hmap_destroy(&m);
}

static void test_grow(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    for (int i = 0; i < N; i++) {
        put_key(&m, i);
        check_load(&m);
    }
    assert_int_equal(hmap_count(&m), N);
    assert_true(m.cap >= N);
    assert_true(m.cap <= 4 * N);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(get_key(&m, i), val(i));
    assert_null(hmap_get(&m, "topic/-1", 8));
    hmap_destroy(&m);
    assert_null(m.slots);
    assert_int_equal(m.cap, 0);
}

static void test_remove(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    for (int i = 0; i < N; i++)
        put_key(&m, i);
    for (int i = 0; i < N; i += 2)
        assert_ptr_equal(hmap_remove(&m, keys[i], strlen(keys[i])), val(i));
    assert_int_equal(hmap_count(&m), N / 2);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(get_key(&m, i), i % 2 ? val(i) : NULL);
    assert_null(hmap_remove(&m, keys[0], strlen(keys[0])));
    for (int i = 1; i < N; i += 2)
        assert_ptr_equal(hmap_remove(&m, keys[i], strlen(keys[i])), val(i));
    /* The emptied map gives its memory back. */
    assert_int_equal(hmap_count(&m), 0);
    assert_null(m.slots);
    assert_int_equal(m.cap, 0);
    put_key(&m, 7);
    assert_ptr_equal(get_key(&m, 7), val(7));
    hmap_destroy(&m);
}

/* Deleted slots are reused, and a steady churn of distinct keys never grows the table. */
static void test_tombstone_reuse(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    for (int i = 0; i < 64; i++)
        put_key(&m, i);
    uint32_t cap = m.cap, used = m.used;
    for (int round = 0; round < 2000; round++) {
        int i = round % 64;
        assert_ptr_equal(hmap_remove(&m, keys[i], strlen(keys[i])), val(i));
        assert_null(get_key(&m, i));
        put_key(&m, i); /* lands in the slot it just left */
        assert_int_equal(m.cap, cap);
        assert_int_equal(m.used, used);
        check_load(&m);
    }
    /* Sliding window of 64 live keys over 20000 distinct ones: tombstones must be recycled
     * (by reuse or rehash), not accumulate into growth. */
    for (int i = 64; i < N; i++) {
        put_key(&m, i);
        assert_ptr_equal(hmap_remove(&m, keys[i - 64], strlen(keys[i - 64])), val(i - 64));
        check_load(&m);
        assert_true(m.cap <= 256);
    }
    assert_int_equal(hmap_count(&m), 64);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(get_key(&m, i), i >= N - 64 ? val(i) : NULL);
    hmap_destroy(&m);
}

static void test_iterate(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    enum { K = 5000 };
    for (int i = 0; i < K; i++)
        put_key(&m, i);
    for (int i = 0; i < K; i += 3)
        hmap_remove(&m, keys[i], strlen(keys[i]));
    unsigned char *seen = calloc(K, 1);
    assert_non_null(seen);
    uint32_t pos = 0, n = 0;
    const void *key;
    size_t len;
    void *v;
    while ((v = hmap_next(&m, &pos, &key, &len))) {
        int i = (int)((uintptr_t)v - 1);
        assert_true(i >= 0 && i < K && i % 3 != 0);
        assert_ptr_equal(key, keys[i]);
        assert_int_equal(len, strlen(keys[i]));
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        n++;
    }
    assert_int_equal(n, hmap_count(&m));
    free(seen);
    hmap_destroy(&m);
}

/* Removing the entry just returned is allowed and every entry is still visited once. */
static void test_iterate_remove(void **state)
{
    (void)state;
    struct mq_hmap m;
    hmap_init(&m);
    enum { K = 3000 };
    for (int i = 0; i < K; i++)
        put_key(&m, i);
    unsigned char *seen = calloc(K, 1);
    assert_non_null(seen);
    uint32_t pos = 0, n = 0;
    const void *key;
    size_t len;
    void *v;
    while ((v = hmap_next(&m, &pos, &key, &len))) {
        int i = (int)((uintptr_t)v - 1);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        n++;
        if (i % 2 == 0 || i > K / 2)
            assert_ptr_equal(hmap_remove(&m, key, len), v);
    }
    assert_int_equal(n, K);
    for (int i = 0; i < K; i++)
        assert_ptr_equal(get_key(&m, i), (i % 2 == 0 || i > K / 2) ? NULL : val(i));
    /* Removing everything while iterating frees the table mid-walk; the walk just ends. */
    pos = 0;
    n = 0;
    while ((v = hmap_next(&m, &pos, &key, &len))) {
        assert_ptr_equal(hmap_remove(&m, key, len), v);
        n++;
    }
    assert_int_equal(n, (K / 2 + 1) / 2);
    assert_int_equal(hmap_count(&m), 0);
    assert_null(m.slots);
    free(seen);
    hmap_destroy(&m);
}

static void test_put_invalid(void **state)
{
    (void)state;
#if SIZE_MAX > UINT32_MAX
    struct mq_hmap m;
    hmap_init(&m);
    assert_int_equal(hmap_put(&m, "x", (size_t)UINT32_MAX + 1, &m), MQ_ERR_INVAL);
    assert_int_equal(hmap_count(&m), 0);
    assert_null(hmap_get(&m, "x", (size_t)UINT32_MAX + 1));
    hmap_destroy(&m);
#else
    skip(); /* a 32-bit size_t cannot express a key longer than the map's uint32_t lengths */
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),       cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_odd_keys),    cmocka_unit_test(test_grow),
        cmocka_unit_test(test_remove),      cmocka_unit_test(test_tombstone_reuse),
        cmocka_unit_test(test_iterate),     cmocka_unit_test(test_iterate_remove),
        cmocka_unit_test(test_put_invalid),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}

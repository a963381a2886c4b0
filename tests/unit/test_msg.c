/* test_msg.c - unit tests for refcounted application messages (src/core/msg.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "midge/msg.h"

static void test_new_copies(void **state)
{
    (void)state;
    uint8_t topic[] = "a/b", payload[] = {1, 0, 2, 3};
    struct mq_msg *m = msg_new(topic, 3, payload, sizeof(payload), 1, true);
    assert_non_null(m);
    /* The message owns copies: changing the caller's buffers must not show through. */
    topic[0] = 'z';
    payload[0] = 9;
    assert_int_equal(m->refcount, 1);
    assert_int_equal(m->topic_len, 3);
    assert_string_equal(m->topic, "a/b");
    assert_int_equal(m->payload_len, 4);
    assert_memory_equal(m->payload, ((uint8_t[]){1, 0, 2, 3}), 4);
    assert_int_equal(m->qos, 1);
    assert_true(m->retain);
    /* Payload lives in the same allocation, right after the topic's NUL. */
    assert_ptr_equal(m->payload, (uint8_t *)m->topic + 4);
    msg_unref(m);
}

static void test_empty_payload(void **state)
{
    (void)state;
    struct mq_msg *m = msg_new((const uint8_t *)"t", 1, NULL, 0, 0, false);
    assert_non_null(m);
    assert_int_equal(m->payload_len, 0);
    assert_string_equal(m->topic, "t");
    assert_ptr_equal(m->payload, (uint8_t *)m->topic + 2);
    assert_int_equal(m->qos, 0);
    assert_false(m->retain);
    msg_unref(m);
}

static void test_refcount(void **state)
{
    (void)state;
    struct mq_msg *m = msg_new((const uint8_t *)"x/y", 3, (const uint8_t *)"hello", 5, 2, false);
    assert_non_null(m);
    assert_ptr_equal(msg_ref(m), m);
    assert_ptr_equal(msg_ref(m), m);
    assert_int_equal(m->refcount, 3);
    msg_unref(m);
    msg_unref(m);
    assert_int_equal(m->refcount, 1);
    assert_memory_equal(m->payload, "hello", 5);
    msg_unref(m); /* last reference: ASan reports a leak if this does not free */
    msg_unref(NULL);
}

static void test_large(void **state)
{
    (void)state;
    enum { TL = 65535, PL = 1 << 20 };
    static uint8_t topic[TL], payload[PL];
    memset(topic, 'q', TL);
    for (size_t i = 0; i < PL; i++)
        payload[i] = (uint8_t)i;
    struct mq_msg *m = msg_new(topic, TL, payload, PL, 0, false);
    assert_non_null(m);
    assert_int_equal(strlen(m->topic), TL);
    assert_memory_equal(m->payload, payload, PL);
    msg_unref(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_copies),
        cmocka_unit_test(test_empty_payload),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_session.c - unit tests for per-client-id session bookkeeping (src/core/session.c).
 *
 * Pure module: no broker, no stubs. Messages are real msg_new() references so ASan
 * catches a reference the session forgets to drop (leak) or drops twice (use after free).
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

#include "midge/msg.h"
#include "midge/session.h"

static struct mq_session *new_session(const char *id, bool clean)
{
    struct mq_session *s = session_new((const uint8_t *)id, (uint16_t)strlen(id), clean);
    assert_non_null(s);
    return s;
}

static struct mq_msg *new_msg(const char *topic, const char *payload, uint8_t qos)
{
    struct mq_msg *m = msg_new((const uint8_t *)topic, (uint16_t)strlen(topic),
                               (const uint8_t *)payload, (uint32_t)strlen(payload), qos, false);
    assert_non_null(m);
    return m;
}

static void test_new(void **state)
{
    (void)state;
    char id[] = "client-1";
    struct mq_session *s = session_new((const uint8_t *)id, 8, false);
    assert_non_null(s);
    id[0] = 'X'; /* the session holds its own NUL-terminated copy */
    assert_string_equal(s->client_id, "client-1");
    assert_int_equal(s->client_id_len, 8);
    assert_false(s->clean);
    assert_null(s->conn);
    assert_int_equal(s->sub_count, 0);
    assert_int_equal(session_inflight_count(s), 0);
    assert_int_equal(session_queue_count(s), 0);
    assert_int_equal(session_qos2_in_count(s), 0);
    assert_null(s->flow); /* no QoS state until a QoS 1/2 or queued message needs it */
    assert_null(session_disk_peek(s));
    assert_int_equal(session_spilled(s), 0);
    session_free(s);

    /* A client id is bytes with a length, not a C string. */
    s = session_new((const uint8_t *)"abcdef", 3, true);
    assert_non_null(s);
    assert_string_equal(s->client_id, "abc");
    assert_true(s->clean);
    session_free(s);
    session_free(NULL);
}

/* The QoS state block appears on first use; every reader takes "none" as empty. */
static void test_flow_lazy(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", true);
    struct mq_queued q;
    assert_null(session_inflight_find(s, 1));
    assert_false(session_queue_pop(s, &q));
    assert_null(session_queue_peek(s));
    assert_false(session_qos2_in_release(s, 1));
    assert_false(session_queue_full(s, 1, 1, 0));
    assert_int_equal(session_dropped(s), 0);
    assert_null(s->flow); /* reading allocated nothing */

    assert_int_equal(session_qos2_in_add(s, 7), 1);
    assert_non_null(s->flow);
    assert_int_equal(session_next_packet_id(s), 1); /* numbering starts with the block */
    session_free(s);

    /* Persistence state hangs off the same block. */
    s = new_session("d", false);
    struct mq_session_disk *d = session_disk(s);
    assert_non_null(d);
    assert_ptr_equal(session_disk_peek(s), d);
    assert_int_equal(d->next_seq, 1);
    assert_int_equal(session_queue_count(s), 0);
    session_free(s);
}

static void test_packet_id_sequence(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", true);
    assert_int_equal(session_next_packet_id(s), 1);
    assert_int_equal(session_next_packet_id(s), 2);
    assert_int_equal(session_next_packet_id(s), 3);
    session_free(s);
}

/* [MQTT-2.3.1-2]: an id in use by an unacknowledged message is never handed out again. */
static void test_packet_id_skips_inflight(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", true);
    struct mq_msg *m = new_msg("t", "p", 1);
    assert_non_null(session_inflight_add(s, m, 1, false, 2, 0, NULL, 0));
    assert_non_null(session_inflight_add(s, m, 2, false, 3, 0, NULL, 0));
    assert_non_null(session_inflight_add(s, m, 1, false, 5, 0, NULL, 0));
    assert_int_equal(session_next_packet_id(s), 1);
    assert_int_equal(session_next_packet_id(s), 4);
    assert_int_equal(session_next_packet_id(s), 6);
    /* Once released, an id may be used again when the counter comes round. */
    session_inflight_remove(s, session_inflight_find(s, 3));
    session_flow(s)->next_packet_id = 2;
    assert_int_equal(session_next_packet_id(s), 3);
    session_free(s);
    assert_int_equal(m->refcount, 1);
    msg_unref(m);
}

/* [MQTT-2.3.1-1]: packet id 0 is not valid; the counter wraps 65535 -> 1. */
static void test_packet_id_wraps_never_zero(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", true);
    struct mq_msg *m = new_msg("t", "p", 1);
    session_flow(s)->next_packet_id = 65534;
    assert_int_equal(session_next_packet_id(s), 65534);
    assert_int_equal(session_next_packet_id(s), 65535);
    assert_int_equal(session_next_packet_id(s), 1);

    /* Wrap while ids at both ends are in flight. */
    assert_non_null(session_inflight_add(s, m, 1, false, 65535, 0, NULL, 0));
    assert_non_null(session_inflight_add(s, m, 1, false, 1, 0, NULL, 0));
    assert_non_null(session_inflight_add(s, m, 1, false, 2, 0, NULL, 0));
    session_flow(s)->next_packet_id = 65535;
    assert_int_equal(session_next_packet_id(s), 3);

    /* A full cycle of allocations never yields 0 and never an id in flight. */
    session_flow(s)->next_packet_id = 65000;
    for (int i = 0; i < 70000; i++) {
        uint16_t id = session_next_packet_id(s);
        assert_int_not_equal(id, 0);
        assert_true(id != 65535 && id != 1 && id != 2);
    }
    session_free(s);
    assert_int_equal(m->refcount, 1);
    msg_unref(m);
}

static void test_inflight_order_and_refs(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", false);
    struct mq_msg *m[5];
    for (int i = 0; i < 5; i++) {
        char p[8];
        snprintf(p, sizeof(p), "%d", i);
        m[i] = new_msg("t", p, 2);
        struct mq_inflight *e =
            session_inflight_add(s, m[i], i % 2 ? 1 : 2, i == 3, (uint16_t)(10 + i), 0, NULL, 0);
        assert_non_null(e);
        assert_ptr_equal(e->msg, m[i]);
        assert_int_equal(e->state, i % 2 ? MQ_OUT_WAIT_PUBACK : MQ_OUT_WAIT_PUBREC);
        assert_int_equal(m[i]->refcount, 2);
    }
    assert_int_equal(session_inflight_count(s), 5);
    assert_null(session_inflight_find(s, 9));
    assert_true(session_inflight_find(s, 13)->retain);
    assert_false(session_inflight_find(s, 12)->retain);

    /* Removing from the middle keeps the original send order of the rest. */
    session_inflight_remove(s, session_inflight_find(s, 12));
    assert_int_equal(m[2]->refcount, 1);
    session_inflight_remove(s, session_inflight_find(s, 10));
    assert_int_equal(session_inflight_count(s), 3);
    assert_int_equal(session_inflight_at(s, 0)->packet_id, 11);
    assert_int_equal(session_inflight_at(s, 1)->packet_id, 13);
    assert_int_equal(session_inflight_at(s, 2)->packet_id, 14);
    assert_ptr_equal(session_inflight_at(s, 2)->msg, m[4]);

    /* An entry whose message was already released (QoS 2 after PUBREC) is removable. */
    struct mq_inflight *e = session_inflight_find(s, 14);
    msg_unref(e->msg);
    e->msg = NULL;
    e->state = MQ_OUT_WAIT_PUBCOMP;
    session_inflight_remove(s, e);
    assert_int_equal(session_inflight_count(s), 2);

    session_free(s); /* drops the references of 11 and 13 */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(m[i]->refcount, 1);
        msg_unref(m[i]);
    }
}

static void push(struct mq_session *s, struct mq_msg **msgs, int i)
{
    assert_int_equal(session_queue_push(s, msgs[i], (uint8_t)(i % 3), i % 2 == 0, 0, NULL, 0), 0);
}

static void pop_expect(struct mq_session *s, struct mq_msg **msgs, int i)
{
    struct mq_queued q;
    assert_true(session_queue_pop(s, &q));
    assert_ptr_equal(q.msg, msgs[i]);
    assert_int_equal(q.qos, i % 3);
    assert_int_equal(q.retain, i % 2 == 0);
    msg_unref(q.msg); /* the reference moved to us */
}

/* The ring grows while wrapped round and keeps FIFO order throughout. */
static void test_queue_ring_growth_wraparound(void **state)
{
    (void)state;
    enum { N = 200 };
    struct mq_msg *msgs[N];
    for (int i = 0; i < N; i++) {
        char p[16];
        snprintf(p, sizeof(p), "payload-%d", i);
        msgs[i] = new_msg("q", p, 1);
    }
    struct mq_session *s = new_session("c", false);
    struct mq_queued q;
    assert_false(session_queue_pop(s, &q));

    int head = 0, tail = 0;
    uint64_t bytes = 0;
    /* Push 6, pop 5, so head sits in the middle of the first ring; then push enough to
     * wrap and to force several growths with head != 0. */
    for (; tail < 6; tail++) {
        push(s, msgs, tail);
        bytes += msgs[tail]->payload_len;
    }
    for (; head < 5; head++) {
        pop_expect(s, msgs, head);
        bytes -= msgs[head]->payload_len;
    }
    assert_int_equal(session_queue_bytes(s), bytes);
    while (tail < N) {
        /* push three, pop one: the queue keeps growing while the head moves */
        for (int k = 0; k < 3 && tail < N; k++, tail++) {
            push(s, msgs, tail);
            bytes += msgs[tail]->payload_len;
            assert_int_equal(msgs[tail]->refcount, 2);
        }
        pop_expect(s, msgs, head);
        bytes -= msgs[head]->payload_len;
        head++;
        assert_int_equal(session_queue_count(s), (uint32_t)(tail - head));
        assert_int_equal(session_queue_bytes(s), bytes);
        assert_true(s->flow->queue_cap >= session_queue_count(s));
    }
    while (head < N)
        pop_expect(s, msgs, head++);
    assert_false(session_queue_pop(s, &q));
    assert_int_equal(session_queue_count(s), 0);
    assert_int_equal(session_queue_bytes(s), 0);

    /* Fill again and free with messages still queued: session_free drops them. */
    for (int i = 0; i < 20; i++)
        push(s, msgs, i);
    session_free(s);
    for (int i = 0; i < N; i++) {
        assert_int_equal(msgs[i]->refcount, 1);
        msg_unref(msgs[i]);
    }
}

static void test_queue_full(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", false);
    struct mq_msg *m = new_msg("t", "12345", 1); /* 5 payload bytes */

    /* 0 means no limit. */
    assert_false(session_queue_full(s, 0, 0, 1000000));
    assert_false(session_queue_full(s, 3, 0, 5));

    for (int i = 0; i < 3; i++)
        assert_int_equal(session_queue_push(s, m, 1, false, 0, NULL, 0), 0);
    assert_int_equal(session_queue_bytes(s), 15);

    /* Message cap. */
    assert_true(session_queue_full(s, 3, 0, 5));
    assert_true(session_queue_full(s, 2, 0, 5));
    assert_false(session_queue_full(s, 4, 0, 5));
    assert_false(session_queue_full(s, 0, 0, 5));

    /* Byte cap: the next message's payload counts; reaching the cap exactly is allowed. */
    assert_false(session_queue_full(s, 0, 20, 5));
    assert_true(session_queue_full(s, 0, 20, 6));
    assert_true(session_queue_full(s, 0, 15, 1));
    assert_false(session_queue_full(s, 0, 15, 0));
    /* Either cap alone is enough. */
    assert_true(session_queue_full(s, 3, 1000, 1));
    assert_true(session_queue_full(s, 100, 16, 2));

    struct mq_queued q;
    assert_true(session_queue_pop(s, &q));
    msg_unref(q.msg);
    assert_int_equal(session_queue_bytes(s), 10);
    assert_false(session_queue_full(s, 3, 15, 5));

    session_free(s);
    assert_int_equal(m->refcount, 1);
    msg_unref(m);
}

static void test_qos2_in(void **state)
{
    (void)state;
    struct mq_session *s = new_session("c", false);
    assert_false(session_qos2_in_release(s, 5));
    assert_int_equal(session_qos2_in_add(s, 5), 1);
    assert_int_equal(session_qos2_in_add(s, 3), 1);
    /* A retransmission before PUBREL is recognised ([MQTT-4.3.3-2]). */
    assert_int_equal(session_qos2_in_add(s, 5), 0);
    assert_int_equal(session_qos2_in_add(s, 3), 0);
    assert_int_equal(session_qos2_in_count(s), 2);
    assert_int_equal(s->flow->qos2_in[0], 3);
    assert_int_equal(s->flow->qos2_in[1], 5);

    assert_true(session_qos2_in_release(s, 5));
    assert_false(session_qos2_in_release(s, 5));
    assert_int_equal(session_qos2_in_count(s), 1);
    /* After PUBREL the same id is a new message. */
    assert_int_equal(session_qos2_in_add(s, 5), 1);

    /* Many ids in scrambled order stay sorted and each is found exactly once. */
    for (uint32_t i = 0; i < 1000; i++) {
        uint16_t id = (uint16_t)(1 + (i * 7919u) % 65535u);
        int fresh = session_qos2_in_add(s, id);
        assert_int_equal(fresh, id == 3 || id == 5 ? 0 : 1);
    }
    for (uint32_t i = 1; i < session_qos2_in_count(s); i++)
        assert_true(s->flow->qos2_in[i - 1] < s->flow->qos2_in[i]);
    assert_true(session_qos2_in_add(s, 65535) >= 0);
    assert_int_equal(s->flow->qos2_in[session_qos2_in_count(s) - 1], 65535);
    uint32_t n = session_qos2_in_count(s);
    for (uint32_t i = 0; i < 1000; i++) {
        uint16_t id = (uint16_t)(1 + (i * 7919u) % 65535u);
        assert_true(session_qos2_in_release(s, id));
    }
    assert_int_equal(session_qos2_in_count(s), n - 1000);
    session_free(s);
}

/* The session holds subscriptions as leaf handles it never dereferences: any distinct
 * addresses stand in for leaves here. */
static char leaves[4096];
#define LEAF(i) ((struct mq_sub_leaf *)(void *)&leaves[i])

/* The leaves iteration yields, as a bitmap over leaves[]; each exactly once. */
static uint32_t iterate(const struct mq_session *s, uint8_t *seen, size_t n)
{
    memset(seen, 0, n);
    uint32_t pos = 0, count = 0;
    struct mq_sub_leaf *leaf;
    while ((leaf = session_sub_next(s, &pos))) {
        size_t i = (size_t)((char *)(void *)leaf - leaves);
        assert_true(i < n);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        count++;
    }
    assert_null(session_sub_next(s, &pos)); /* stays at the end */
    return count;
}

static void test_sub_inline_then_set(void **state)
{
    (void)state;
    uint8_t seen[8];
    struct mq_session *s = new_session("c", false);
    assert_int_equal(iterate(s, seen, sizeof(seen)), 0);
    assert_false(session_sub_remove(s, LEAF(0)));

    /* One subscription: held inline (the idle-connection case allocates nothing). */
    assert_int_equal(session_sub_add(s, LEAF(0)), 0);
    assert_int_equal(s->sub_count, 1);
    assert_ptr_equal(s->subs.one, LEAF(0));
    assert_false(session_sub_remove(s, LEAF(1)));
    assert_int_equal(iterate(s, seen, sizeof(seen)), 1);
    assert_true(seen[0]);

    /* Two: a set; back to one: inline again; then none. */
    assert_int_equal(session_sub_add(s, LEAF(1)), 0);
    assert_int_equal(s->sub_count, 2);
    assert_int_equal(iterate(s, seen, sizeof(seen)), 2);
    assert_true(seen[0] && seen[1]);
    assert_true(session_sub_remove(s, LEAF(0)));
    assert_false(session_sub_remove(s, LEAF(0)));
    assert_int_equal(s->sub_count, 1);
    assert_ptr_equal(s->subs.one, LEAF(1));
    assert_true(session_sub_remove(s, LEAF(1)));
    assert_int_equal(s->sub_count, 0);
    assert_int_equal(iterate(s, seen, sizeof(seen)), 0);

    /* Freed with several still held (ASan: the set is released). */
    for (int i = 0; i < 5; i++)
        assert_int_equal(session_sub_add(s, LEAF(i)), 0);
    session_free(s);
}

/* Random adds and removes across every size the set passes through (inline, growth,
 * shrinking, back inline) must agree with a plain model throughout; then many more
 * leaves than that, removed in an order unrelated to their insertion. */
static void test_sub_set_vs_model(void **state)
{
    (void)state;
    enum { NAMES = 40, MANY = 4096 };
    static uint8_t model[MANY], seen[MANY];
    memset(model, 0, sizeof(model));
    struct mq_session *s = new_session("c", false);
    uint32_t rng = 12345;
    for (int op = 0; op < 20000; op++) {
        rng = rng * 1103515245u + 12345u;
        int i = (int)((rng >> 16) % NAMES);
        /* Phases: mostly adding, then mostly removing, so the count sweeps 0..NAMES. */
        bool removing = (op / 500) % 2 ? (rng >> 8) % 4 != 0 : (rng >> 8) % 4 == 0;
        if (removing) {
            assert_int_equal(session_sub_remove(s, LEAF(i)), model[i]);
            model[i] = 0;
        } else if (!model[i]) {
            assert_int_equal(session_sub_add(s, LEAF(i)), 0);
            model[i] = 1;
        }
        uint32_t want = 0;
        for (int k = 0; k < NAMES; k++)
            want += model[k];
        assert_int_equal(s->sub_count, want);
        assert_int_equal(iterate(s, seen, NAMES), want);
        assert_memory_equal(seen, model, NAMES);
    }

    for (int i = 0; i < MANY; i++)
        if (!model[i]) {
            assert_int_equal(session_sub_add(s, LEAF(i)), 0);
            model[i] = 1;
        }
    assert_int_equal(s->sub_count, MANY);
    assert_int_equal(iterate(s, seen, MANY), MANY);
    for (uint32_t k = 0; k < MANY; k++) {
        uint32_t i = (k * 2654435761u) % MANY; /* a permutation: MANY is a power of two */
        assert_true(session_sub_remove(s, LEAF(i)));
        model[i] = 0;
        if (k % 512 == 0) {
            assert_int_equal(iterate(s, seen, MANY), MANY - k - 1);
            assert_memory_equal(seen, model, MANY);
        }
    }
    assert_int_equal(s->sub_count, 0);
    session_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_flow_lazy),
        cmocka_unit_test(test_packet_id_sequence),
        cmocka_unit_test(test_packet_id_skips_inflight),
        cmocka_unit_test(test_packet_id_wraps_never_zero),
        cmocka_unit_test(test_inflight_order_and_refs),
        cmocka_unit_test(test_queue_ring_growth_wraparound),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_qos2_in),
        cmocka_unit_test(test_sub_inline_then_set),
        cmocka_unit_test(test_sub_set_vs_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

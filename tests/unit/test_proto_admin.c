/* test_proto_admin.c - src/proto/proto_admin.c over the fake sink (proto_fixture.h): client
 * pages in id order across changes, one client's figures, kick (will published, DISCONNECT
 * 0x98 to MQTT 5, session discarded), retained pages and deletion, publish with a client's
 * checks, subscriptions matching a topic. */
#include "midge/proto_admin.h"
#include "proto_fixture.h"

static int page_ids(const struct mq_client_filter *f, const char *after, size_t max, char out[][32],
                    bool *more)
{
    const struct mq_session *page[16];
    size_t total;
    int n = broker_clients_page(E.b, f, (const uint8_t *)after, after ? strlen(after) : 0, max,
                                page, &total, more);
    assert_true(n >= 0);
    for (int i = 0; i < n; i++) {
        struct mq_client_info ci;
        broker_client_info(E.b, page[i], &ci);
        snprintf(out[i], 32, "%.*s", ci.client_id_len, ci.client_id);
    }
    return n;
}

static void test_clients_pages(void **state)
{
    (void)state;
    struct fake_io *c[5];
    static const char *const ids[5] = {"d", "b", "e", "a", "c"};
    for (int i = 0; i < 5; i++)
        c[i] = connect_client(ids[i], i != 0, false);
    char out[16][32];
    bool more;
    assert_int_equal(page_ids(NULL, NULL, 2, out, &more), 2);
    assert_string_equal(out[0], "a");
    assert_string_equal(out[1], "b");
    assert_true(more);
    /* "b" goes, "bb" comes: the cursor "b" still places the next page. */
    io_gone(c[1], "test");
    struct fake_io *bb = connect_client("bb", true, false);
    assert_int_equal(page_ids(NULL, "b", 2, out, &more), 2);
    assert_string_equal(out[0], "bb");
    assert_string_equal(out[1], "c");
    assert_true(more);
    assert_int_equal(page_ids(NULL, "c", 2, out, &more), 2);
    assert_false(more);
    /* "d" is persistent: offline once its connection is gone. */
    io_gone(c[0], "test");
    struct mq_client_filter off = {.connected = 0};
    assert_int_equal(page_ids(&off, NULL, 10, out, &more), 1);
    assert_string_equal(out[0], "d");
    struct mq_client_filter pre = {.connected = -1, .id_prefix = "b", .id_prefix_len = 1};
    assert_int_equal(page_ids(&pre, NULL, 10, out, &more), 1);
    assert_string_equal(out[0], "bb");
    (void)bb;
    (void)c;
}

static void test_client_info_and_kick(void **state)
{
    (void)state;
    struct fake_io *w = connect_client("watch", true, false);
    subscribe(w, 1, "status/#", 1);
    struct will will = {"status/b1", "gone", 1, false};
    struct fake_io *b1 = connect_will("b1", true, 30, &will, false);
    subscribe(b1, 2, "cmd/b1", 1);
    publish(b1, "data/b1", "21.5", 1, false, 7);
    const struct mq_session *s = broker_client_find(E.b, (const uint8_t *)"b1", 2);
    assert_non_null(s);
    struct mq_client_info ci;
    broker_client_info(E.b, s, &ci);
    assert_true(ci.connected);
    assert_int_equal(ci.keepalive, 30);
    assert_int_equal(ci.protocol_level, 4);
    assert_int_equal(ci.msgs_in, 1);
    assert_int_equal(ci.subscriptions, 1);
    assert_string_equal(ci.will_topic, "status/b1");
    assert_true(ci.bytes_in > 0 && ci.bytes_out > 0);
    assert_int_equal(broker_kick(E.b, (const uint8_t *)"b1", 2, false, "tester"),
                     MQ_KICK_DISCONNECTED);
    expect_close_requested(b1);
    expect_publish(w, "status/b1", "gone", 1, false, false);
    io_gone(b1, "kicked");
    assert_null(broker_client_find(E.b, (const uint8_t *)"b1", 2)); /* a clean session */
    assert_int_equal(broker_kick(E.b, (const uint8_t *)"b1", 2, false, "tester"),
                     MQ_KICK_NOT_FOUND);
    /* MQTT 5: told why. A persistent session stays unless discarded. */
    struct fake_io *v5 = connect5("v5", false, 3600, false, NULL);
    assert_int_equal(broker_kick(E.b, (const uint8_t *)"v5", 2, false, "tester"),
                     MQ_KICK_DISCONNECTED);
    expect_disconnect(v5, MQ_RC_ADMINISTRATIVE_ACTION);
    io_gone(v5, "kicked");
    assert_int_equal(broker_kick(E.b, (const uint8_t *)"v5", 2, false, "tester"),
                     MQ_KICK_NOT_CONNECTED);
    assert_int_equal(broker_kick(E.b, (const uint8_t *)"v5", 2, true, "tester"),
                     MQ_KICK_SESSION_REMOVED);
    assert_null(broker_client_find(E.b, (const uint8_t *)"v5", 2));
}

static void collect_msg(void *ctx, const struct mq_sub_info *si)
{
    int *n = ctx;
    (*n)++;
    assert_true(si->filter_len > 0);
}

static void test_retained_publish_subs(void **state)
{
    (void)state;
    struct fake_io *s = connect_client("sub", true, false);
    subscribe(s, 1, "x/+/z", 1);
    unsigned delivered;
    const char *why;
    for (int i = 0; i < 12; i++) {
        char t[16];
        snprintf(t, sizeof(t), "x/%02d/z", i);
        assert_int_equal(broker_admin_publish(E.b, NULL, "admin", (const uint8_t *)t, strlen(t),
                                              (const uint8_t *)"v", 1, 0, true, &delivered, &why),
                         0);
        assert_int_equal(delivered, 1);
        expect_publish(s, t, "v", 0, false, false);
    }
    assert_int_equal(broker_admin_publish(E.b, NULL, "admin", (const uint8_t *)"x/#", 3,
                                          (const uint8_t *)"v", 1, 0, false, &delivered, &why),
                     MQ_ERR_INVAL);
    E.cfg.message_size_limit = 2;
    assert_int_equal(broker_admin_publish(E.b, NULL, "admin", (const uint8_t *)"x/y", 3,
                                          (const uint8_t *)"vvv", 3, 0, false, &delivered, &why),
                     MQ_ERR_CONFIG);
    assert_string_equal(why, "payload over message_size_limit");
    struct mq_msg *page[16];
    size_t total;
    bool more;
    int n = broker_retained_page(E.b, (const uint8_t *)"#", 1, NULL, 0, 5, page, &total, &more);
    assert_int_equal(n, 5);
    assert_int_equal(total, 12);
    assert_true(more);
    assert_string_equal(page[0]->topic, "x/00/z");
    n = broker_retained_page(E.b, (const uint8_t *)"x/+/z", 5, (const uint8_t *)"x/09/z", 6, 5,
                             page, &total, &more);
    assert_int_equal(n, 2);
    assert_false(more);
    assert_int_equal(total, SIZE_MAX); /* a filter's count is not walked for */
    size_t matched;
    assert_int_equal(
        broker_retained_delete(E.b, (const uint8_t *)"x/#", 3, 100, true, "t", &matched), 12);
    assert_int_equal(matched, 12);
    assert_int_equal(retain_count(E.b->retained), 12);
    assert_int_equal(
        broker_retained_delete(E.b, (const uint8_t *)"x/#", 3, 5, false, "t", &matched), 5);
    assert_int_equal(retain_count(E.b->retained), 7);
    expect_nothing(s); /* deletions send subscribers nothing */
    int subs = 0;
    assert_int_equal(broker_subs_page(E.b, NULL, 0, (const uint8_t *)"x/a/z", 5, NULL, 0, 10,
                                      collect_msg, &subs, &more),
                     1);
    assert_int_equal(subs, 1);
    subs = 0;
    assert_int_equal(broker_subs_page(E.b, NULL, 0, (const uint8_t *)"y/#", 3, NULL, 0, 10,
                                      collect_msg, &subs, &more),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clients_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_info_and_kick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_publish_subs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

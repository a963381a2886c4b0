/* test_bridge_topic.c - a bridge's topic remapping (bridge_map.c), both ways, for every form of
 * `topic` line mosquitto.conf(5) documents, built by the real configuration parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "midge/bridge_map.h"
#include "midge/config.h"

/* The topic lines of one bridge, parsed from `lines` ("topic ..." lines). */
static struct mq_config *load(const char *lines)
{
    char text[4096];
    snprintf(text, sizeof text, "connection b\naddress 127.0.0.1\n%s", lines);
    struct mq_config *cfg = calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    assert_int_equal(config_parse_string(text, strlen(text), "t.conf", cfg, NULL, NULL), 0);
    assert_int_equal(cfg->bridge_count, 1);
    return cfg;
}

static void unload(struct mq_config *cfg)
{
    config_free(cfg);
    free(cfg);
}

/* Map topic one way; NULL when it does not cross. *line gets the result code. */
static const char *map(const struct mq_config *cfg, bool in, const char *topic, int *line)
{
    static uint8_t out[MQ_BRIDGE_TOPIC_MAX + 1];
    size_t n = 0;
    const struct mq_bridge_config *bc = &cfg->bridges[0];
    int rc =
        (in ? bridge_map_in : bridge_map_out)(bc->topics, bc->topic_count, (const uint8_t *)topic,
                                              strlen(topic), out, MQ_BRIDGE_TOPIC_MAX, &n);
    if (line)
        *line = rc;
    if (rc < 0)
        return NULL;
    out[n] = '\0';
    return (const char *)out;
}

static void expect(const struct mq_config *cfg, bool in, const char *topic, const char *want)
{
    int line;
    const char *got = map(cfg, in, topic, &line);
    if (!want) {
        if (got)
            print_error("%s %s: crossed as %s\n", in ? "in" : "out", topic, got);
        assert_null(got);
        assert_int_equal(line, MQ_BRIDGE_MAP_NONE);
        return;
    }
    if (!got)
        print_error("%s %s: did not cross (%d)\n", in ? "in" : "out", topic, line);
    assert_non_null(got);
    assert_string_equal(got, want);
}

/* The table of mosquitto.conf(5), row by row: "publish to L/topic on the local broker, and the
 * remote broker receives R/topic", and the reverse for in. */
static void test_table_rows(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *local, *remote; /* one topic on each side that correspond */
    } rows[] = {
        {"topic pattern both 0 L/ R/\n", "L/pattern", "R/pattern"},
        {"topic pattern both 0 L/ \"\"\n", "L/pattern", "pattern"},
        {"topic pattern both 0 \"\" R/\n", "pattern", "R/pattern"},
        {"topic pattern both 0 \"\" \"\"\n", "pattern", "pattern"},
        {"topic \"\" both 0 local remote\n", "local", "remote"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct mq_config *cfg = load(rows[i].line);
        expect(cfg, false, rows[i].local, rows[i].remote);
        expect(cfg, true, rows[i].remote, rows[i].local);
        /* The other side's topic does not cross from the wrong side unless it is the same. */
        if (strcmp(rows[i].local, rows[i].remote)) {
            expect(cfg, false, rows[i].remote, NULL);
            expect(cfg, true, rows[i].local, NULL);
        }
        expect(cfg, false, "unrelated", NULL);
        expect(cfg, true, "unrelated", NULL);
        unload(cfg);
    }
}

/* Directions: in lines never carry local messages out, out lines never bring remote ones in. */
static void test_directions(void **state)
{
    (void)state;
    struct mq_config *cfg = load("topic up/# out 1\ntopic down/# in 1\ntopic both/# both 2\n");
    expect(cfg, false, "up/a", "up/a");
    expect(cfg, true, "up/a", NULL);
    expect(cfg, true, "down/a", "down/a");
    expect(cfg, false, "down/a", NULL);
    expect(cfg, false, "both/x/y", "both/x/y");
    expect(cfg, true, "both/x/y", "both/x/y");
    unload(cfg);
    /* The default direction is out. */
    cfg = load("topic t\n");
    expect(cfg, false, "t", "t");
    expect(cfg, true, "t", NULL);
    unload(cfg);
}

/* Whole trees and wildcards with prefixes (the man page's examples). */
static void test_trees(void **state)
{
    (void)state;
    struct mq_config *cfg = load("topic # both 2 local/topic/ remote/topic/\n");
    expect(cfg, false, "local/topic/a/b", "remote/topic/a/b");
    expect(cfg, true, "remote/topic/a/b", "local/topic/a/b");
    expect(cfg, false, "other/a", NULL);
    /* "local/topic/#" matches its parent "local/topic" too: it keeps its name then, as in
     * Mosquitto (the prefix is only removed when the topic starts with it). */
    expect(cfg, false, "local/topic", "remote/topic/local/topic");
    unload(cfg);

    cfg = load("topic clients/total in 0 test/mosquitto/org/ $SYS/broker/\n");
    expect(cfg, true, "$SYS/broker/clients/total", "test/mosquitto/org/clients/total");
    expect(cfg, true, "$SYS/broker/clients/active", NULL);
    unload(cfg);

    cfg = load("topic +/feeds/# out 1 \"\" aio/\n");
    expect(cfg, false, "alice/feeds/temp", "aio/alice/feeds/temp");
    /* '+' at the start does not match '$' topics. */
    expect(cfg, false, "$SYS/feeds/x", NULL);
    unload(cfg);

    /* A prefix without a trailing slash is joined as written. */
    cfg = load("topic a in 0 pre post\n");
    expect(cfg, true, "posta", "prea");
    unload(cfg);
}

/* Mosquitto's order: a line that remaps wins over an earlier line that does not. */
static void test_remapping_lines_first(void **state)
{
    (void)state;
    struct mq_config *cfg = load("topic a/# both 0\ntopic # both 0 loc/ \"\"\n");
    expect(cfg, true, "a/b", "loc/a/b");
    expect(cfg, false, "loc/a/b", "a/b");
    expect(cfg, false, "a/b", "a/b"); /* "loc/#" does not match it: the plain line does */
    unload(cfg);
    /* Among remapping lines the first match wins, and the result says which line it was. */
    cfg = load("topic x/# in 0 one/ r/\ntopic # in 0 two/ r/\n");
    int line;
    assert_string_equal(map(cfg, true, "r/x/1", &line), "one/x/1");
    assert_int_equal(line, 0);
    assert_string_equal(map(cfg, true, "r/y/1", &line), "two/y/1");
    assert_int_equal(line, 1);
    unload(cfg);
}

/* An in line with a $share/NAME/ remote side: the bridge takes its share of a shared
 * subscription at the remote, whose messages carry their topic without the group. */
static void test_shared_remote(void **state)
{
    (void)state;
    struct mq_config *cfg = load("topic jobs/# in 1 \"\" $share/workers/\n");
    assert_string_equal(cfg->bridges[0].topics[0].remote, "$share/workers/jobs/#");
    expect(cfg, true, "jobs/42", "jobs/42");
    expect(cfg, true, "other/42", NULL);
    unload(cfg);
    cfg = load("topic # in 1 site/ $share/g/cloud/\n");
    expect(cfg, true, "cloud/a", "site/a");
    unload(cfg);
}

static void test_limits(void **state)
{
    (void)state;
    /* A result over the caller's room (or 65,535 bytes) is refused, not cut. */
    struct mq_config *cfg = load("topic # both 0 local/ remote/\n");
    const struct mq_bridge_config *bc = &cfg->bridges[0];
    uint8_t out[16];
    size_t n = 0;
    assert_int_equal(bridge_map_out(bc->topics, bc->topic_count,
                                    (const uint8_t *)"local/abcdefghijk", 17, out, sizeof out, &n),
                     MQ_BRIDGE_MAP_TOO_LONG);
    assert_int_equal(bridge_map_out(bc->topics, bc->topic_count, (const uint8_t *)"local/abc", 9,
                                    out, sizeof out, &n),
                     0);
    assert_int_equal(n, 10);
    assert_memory_equal(out, "remote/abc", 10);
    char *big = malloc(65535);
    assert_non_null(big);
    memcpy(big, "local/", 6);
    memset(big + 6, 'x', 65535 - 6);
    static uint8_t room[MQ_BRIDGE_TOPIC_MAX];
    assert_int_equal(bridge_map_out(bc->topics, bc->topic_count, (const uint8_t *)big, 65535, room,
                                    sizeof room, &n),
                     MQ_BRIDGE_MAP_TOO_LONG);
    free(big);
    unload(cfg);
    /* A topic that would lose every byte does not cross. */
    cfg = load("topic # out 0 a/ \"\"\n");
    expect(cfg, false, "a/", NULL);
    expect(cfg, false, "a/b", "b");
    unload(cfg);
    /* No lines: nothing crosses. */
    assert_int_equal(bridge_map_in(NULL, 0, (const uint8_t *)"a", 1, out, sizeof out, &n),
                     MQ_BRIDGE_MAP_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_rows),    cmocka_unit_test(test_directions),
        cmocka_unit_test(test_trees),         cmocka_unit_test(test_remapping_lines_first),
        cmocka_unit_test(test_shared_remote), cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_topic.c - unit tests for src/codec/topic.c: UTF-8 rules, topic names, filters, matching.
 *
 * Owns no production code. Expected values come from MQTT 3.1.1 §1.5.3 and §4.7 (the spec's own
 * examples are quoted as such) and from Unicode Table 3-7 for well-formed UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/topic.h"

/* Compare return values, naming the errors on failure so it says which rule fired. */
#define assert_err(got, want) check_err((got), (want), __FILE__, __LINE__)

static void check_err(int got, int want, const char *file, int line)
{
    if (got == want)
        return;
    print_error("got %d (%s), want %d (%s)\n", got, mq_err_name(got), want, mq_err_name(want));
    _fail(file, line);
}

static int utf8(const char *s, size_t n)
{
    return topic_check_utf8((const uint8_t *)s, n);
}

static int check_name(const char *s)
{
    return topic_check_name((const uint8_t *)s, strlen(s));
}

static int check_filter(const char *s)
{
    return topic_check_filter((const uint8_t *)s, strlen(s));
}

static bool matches(const char *filter, const char *name)
{
    /* The matcher trusts its inputs, so every case here must be valid to mean anything. */
    assert_err(check_filter(filter), 0);
    assert_err(check_name(name), 0);
    return topic_matches((const uint8_t *)filter, strlen(filter), (const uint8_t *)name,
                         strlen(name));
}

/* Encode a code point the standard way (no validation: surrogates are encoded too). */
static size_t encode_cp(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static void test_utf8_valid_samples(void **state)
{
    (void)state;
    assert_err(utf8("", 0), 0);
    assert_err(utf8("plain ascii/topic", 17), 0);
    assert_err(utf8("\x7F", 1), 0);
    assert_err(utf8("\xC2\x80", 2), 0);         /* U+0080, smallest 2-byte */
    assert_err(utf8("\xDF\xBF", 2), 0);         /* U+07FF */
    assert_err(utf8("\xE0\xA0\x80", 3), 0);     /* U+0800, smallest 3-byte */
    assert_err(utf8("\xED\x9F\xBF", 3), 0);     /* U+D7FF, just below the surrogates */
    assert_err(utf8("\xEE\x80\x80", 3), 0);     /* U+E000, just above them */
    assert_err(utf8("\xEF\xBB\xBF", 3), 0);     /* U+FEFF must not be skipped or stripped */
    assert_err(utf8("\xEF\xBF\xBF", 3), 0);     /* U+FFFF */
    assert_err(utf8("\xF0\x90\x80\x80", 4), 0); /* U+10000 */
    assert_err(utf8("\xF4\x8F\xBF\xBF", 4), 0); /* U+10FFFF, the last code point */
    assert_err(utf8("caf\xC3\xA9/\xE6\x97\xA5\xE6\x9C\xAC/\xF0\x9F\x98\x80", 17), 0);
    /* The spec's own example (§1.5.3.1): "A" + U+2A6D4. */
    assert_err(utf8("A\xF0\xAA\x9B\x94", 5), 0);
}

static void test_utf8_null(void **state)
{
    (void)state;
    assert_err(utf8("\0", 1), MQ_ERR_UTF8_NULL);
    assert_err(utf8("a\0b", 3), MQ_ERR_UTF8_NULL);
    assert_err(utf8("\xC3\xA9\0", 3), MQ_ERR_UTF8_NULL); /* after a multi-byte character */
    assert_err(utf8("\xC0\x80", 2), MQ_ERR_BAD_UTF8);    /* overlong NUL is not a NUL, it is bad */
}

static void test_utf8_overlong(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "\xC0\xAF",         "\xC1\xBF",         "\xE0\x80\x80",     "\xE0\x9F\xBF",
        "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF", "\xF0\x80\x80\xAF",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_err(utf8(cases[i], strlen(cases[i])), MQ_ERR_BAD_UTF8);
}

static void test_utf8_surrogates(void **state)
{
    (void)state;
    assert_err(utf8("\xED\xA0\x80", 3), MQ_ERR_UTF8_SURROGATE); /* U+D800 */
    assert_err(utf8("\xED\xAF\xBF", 3), MQ_ERR_UTF8_SURROGATE); /* U+DBFF */
    assert_err(utf8("\xED\xB0\x80", 3), MQ_ERR_UTF8_SURROGATE); /* U+DC00 */
    assert_err(utf8("\xED\xBF\xBF", 3), MQ_ERR_UTF8_SURROGATE); /* U+DFFF */
    /* A CESU-8 pair (U+1F600 as two surrogates) is still surrogates, not an emoji. */
    assert_err(utf8("\xED\xA0\xBD\xED\xB8\x80", 6), MQ_ERR_UTF8_SURROGATE);
}

static void test_utf8_bad(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "\x80",
        "\xBF",
        "a\x80", /* stray continuation bytes */
        "\xC3",
        "\xE2\x82",
        "\xF0\x9F\x98", /* truncated at the end */
        "\xC3\x41",
        "\xE2\x28\xA1",
        "\xF0\x9F\x98\x41", /* continuation replaced by 'A' */
        "\xF4\x90\x80\x80", /* U+110000 */
        "\xF5\x80\x80\x80",
        "\xF7\xBF\xBF\xBF", /* leads that can only exceed U+10FFFF */
        "\xF8\x88\x80\x80\x80",
        "\xFC\x84\x80\x80\x80\x80",
        "\xFE",
        "\xFF",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_err(utf8(cases[i], strlen(cases[i])), MQ_ERR_BAD_UTF8);
    /* Length is honoured: a valid sequence cut by len is truncated. */
    assert_err(utf8("\xE2\x82\xAC", 2), MQ_ERR_BAD_UTF8);
}

/* Every Unicode scalar value is accepted, every surrogate rejected, alone and behind enough
 * ASCII to go through the 8-byte fast path first. */
static void test_utf8_every_code_point(void **state)
{
    (void)state;
    uint8_t buf[16];
    memcpy(buf, "abcdefghi", 9);
    for (uint32_t cp = 1; cp <= 0x10FFFF; cp++) {
        size_t n = encode_cp(cp, buf + 9);
        int want = cp >= 0xD800 && cp <= 0xDFFF ? MQ_ERR_UTF8_SURROGATE : 0;
        int got = topic_check_utf8(buf + 9, n);
        if (got != want)
            fail_msg("U+%04X alone: %s", (unsigned)cp, mq_err_name(got));
        got = topic_check_utf8(buf, 9 + n);
        if (got != want)
            fail_msg("U+%04X after ASCII: %s", (unsigned)cp, mq_err_name(got));
    }
}

/* All two-byte inputs against Unicode Table 3-7, written independently of the decoder. */
static void test_utf8_all_two_byte_inputs(void **state)
{
    (void)state;
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            uint8_t s[2] = {(uint8_t)a, (uint8_t)b};
            bool ascii = a >= 0x01 && a <= 0x7F && b >= 0x01 && b <= 0x7F;
            bool pair = a >= 0xC2 && a <= 0xDF && b >= 0x80 && b <= 0xBF;
            bool ok = topic_check_utf8(s, 2) == 0;
            if (ok != (ascii || pair))
                fail_msg("%02X %02X: got %s", a, b, mq_err_name(topic_check_utf8(s, 2)));
        }
    }
}

/* All three-byte inputs with a three-byte lead, against Table 3-7. */
static void test_utf8_all_three_byte_sequences(void **state)
{
    (void)state;
    for (unsigned a = 0xE0; a <= 0xEF; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (unsigned c = 0; c < 256; c++) {
                uint8_t s[3] = {(uint8_t)a, (uint8_t)b, (uint8_t)c};
                unsigned lo = a == 0xE0 ? 0xA0 : 0x80, hi = a == 0xED ? 0x9F : 0xBF;
                bool cont = c >= 0x80 && c <= 0xBF;
                int want = MQ_ERR_BAD_UTF8;
                if (cont && b >= lo && b <= hi)
                    want = 0;
                else if (cont && a == 0xED && b >= 0xA0 && b <= 0xBF)
                    want = MQ_ERR_UTF8_SURROGATE;
                int got = topic_check_utf8(s, 3);
                if (got != want)
                    fail_msg("%02X %02X %02X: got %s want %s", a, b, c, mq_err_name(got),
                             mq_err_name(want));
            }
        }
    }
}

/* Put one interesting byte sequence at every offset of a long ASCII string, so the boundary
 * between the 8-byte fast path and the per-character path is crossed everywhere. */
static void test_utf8_fast_path_boundaries(void **state)
{
    (void)state;
    static const struct {
        const char *seq;
        size_t len;
        int want;
    } cases[] = {
        {"\0", 1, MQ_ERR_UTF8_NULL},  {"\xC3\xA9", 2, 0},
        {"\xF0\x9F\x98\x80", 4, 0},   {"\xFF", 1, MQ_ERR_BAD_UTF8},
        {"\x80", 1, MQ_ERR_BAD_UTF8}, {"\xED\xA0\x80", 3, MQ_ERR_UTF8_SURROGATE},
    };
    uint8_t buf[64];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t at = 0; at + cases[c].len <= sizeof buf; at++) {
            memset(buf, 'x', sizeof buf);
            memcpy(buf + at, cases[c].seq, cases[c].len);
            int got = topic_check_utf8(buf, sizeof buf);
            if (got != cases[c].want)
                fail_msg("case %zu at %zu: %s", c, at, mq_err_name(got));
        }
    }
}

static void test_check_name(void **state)
{
    (void)state;
    static const char *const valid[] = {
        "a",
        "a/b",
        "/finance",
        "finance/",
        "/",
        "//",
        "a//b",
        " ",
        "Accounts payable",
        "$SYS/broker/uptime",
        "sport/tennis/player1",
        "caf\xC3\xA9",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
        assert_err(check_name(valid[i]), 0);

    assert_err(check_name(""), MQ_ERR_EMPTY_TOPIC);
    static const char *const wild[] = {"+", "#", "a/+", "a/#", "a+", "sport/tennis/#", "+/x"};
    for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++)
        assert_err(check_name(wild[i]), MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(check_name("a/\xC0\xAF"), MQ_ERR_BAD_UTF8);
    assert_err(check_name("a/\xED\xA0\x80"), MQ_ERR_UTF8_SURROGATE);
    assert_err(topic_check_name((const uint8_t *)"a\0b", 3), MQ_ERR_UTF8_NULL);
    /* Only len counts: the '+' beyond it is not part of the name. */
    assert_err(topic_check_name((const uint8_t *)"ab+", 2), 0);
}

/* topic_check_name's word-at-a-time path against the exact checks it stands in for: every
 * length up to 3 words, every position, each kind of byte that must leave the fast path. The
 * name sits at the very end of its own allocation, so ASan sees any read past it. */
static void test_check_name_fast_path(void **state)
{
    (void)state;
    static const struct {
        const char *seq;
        size_t len;
    } odd[] = {{"+", 1},    {"#", 1},        {"\0", 1},           {"\x80", 1},
               {"\xFF", 1}, {"\xC3\xA9", 2}, {"\xED\xA0\x80", 3}, {"\x7F", 1},
               {"\x2A", 1}, {"\x24", 1}};
    for (size_t len = 1; len <= 24; len++) {
        for (size_t k = 0; k < sizeof odd / sizeof odd[0]; k++) {
            for (size_t at = 0; at + odd[k].len <= len; at++) {
                uint8_t *name = malloc(len);
                assert_non_null(name);
                memset(name, 'a', len);
                memcpy(name + at, odd[k].seq, odd[k].len);
                int want = topic_check_utf8(name, len);
                if (!want && (memchr(name, '+', len) || memchr(name, '#', len)))
                    want = MQ_ERR_WILDCARD_IN_TOPIC;
                int got = topic_check_name(name, len);
                free(name);
                if (got != want)
                    fail_msg("length %zu, byte kind %zu at %zu: %s, want %s", len, k, at,
                             mq_err_name(got), mq_err_name(want));
            }
        }
    }
}

static void test_check_filter_valid(void **state)
{
    (void)state;
    static const char *const valid[] = {
        "#",
        "+",
        "+/+",
        "/",
        "a//b",
        "sport/+/player1",
        "$SYS/#",
        "sport/tennis/player1/#",
        "sport/#",
        "+/tennis/#",
        "sport/+",
        "/+",
        "+/",
        "a/+/b/#",
        "+/+/+",
        "//#",
        "a/b/c",
        "Accounts payable/+",
        "$SYS/monitor/+",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        if (check_filter(valid[i]) != 0)
            fail_msg("\"%s\" rejected: %s", valid[i], mq_err_name(check_filter(valid[i])));
    }
}

static void test_check_filter_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a#",    "a/#/b", "a+", "+a/b", "sport+", "sport/tennis#", "sport/tennis/#/ranking",
        "##",    "++",    "#/", "#/a",  "a/b+",   "a/+b/c",        "+#",
        "a/#/#",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (check_filter(bad[i]) != MQ_ERR_BAD_FILTER)
            fail_msg("\"%s\": %s", bad[i], mq_err_name(check_filter(bad[i])));
    }
    assert_err(check_filter(""), MQ_ERR_EMPTY_TOPIC);
    assert_err(check_filter("a/\xC1\xBF"), MQ_ERR_BAD_UTF8);
    assert_err(check_filter("\xED\xBF\xBF/#"), MQ_ERR_UTF8_SURROGATE);
    assert_err(topic_check_filter((const uint8_t *)"#\0", 2), MQ_ERR_UTF8_NULL);
    /* A '#' that is last only because len cuts the string short is last. */
    assert_err(topic_check_filter((const uint8_t *)"a/#/b", 3), 0);
}

/* MQTT 3.1.1 §4.7.1.2: the multi-level wildcard. */
static void test_match_spec_multi_level(void **state)
{
    (void)state;
    assert_true(matches("sport/tennis/player1/#", "sport/tennis/player1"));
    assert_true(matches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
    assert_true(matches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
    assert_true(matches("sport/#", "sport"));
    assert_true(matches("#", "sport/tennis/player1"));
    assert_true(matches("#", "/"));
    assert_false(matches("sport/tennis/player1/#", "sport/tennis/player2"));
    assert_false(matches("sport/tennis/player1/#", "sport/tennis"));
    assert_false(matches("sport/#", "sports"));
}

/* MQTT 3.1.1 §4.7.1.3: the single-level wildcard. */
static void test_match_spec_single_level(void **state)
{
    (void)state;
    assert_true(matches("sport/tennis/+", "sport/tennis/player1"));
    assert_true(matches("sport/tennis/+", "sport/tennis/player2"));
    assert_false(matches("sport/tennis/+", "sport/tennis/player1/ranking"));
    assert_false(matches("sport/+", "sport"));
    assert_true(matches("sport/+", "sport/"));
    assert_true(matches("+/+", "/finance"));
    assert_true(matches("/+", "/finance"));
    assert_false(matches("+", "/finance"));
    assert_true(matches("+/tennis/#", "sport/tennis/player1"));
    assert_true(matches("+/tennis/#", "sport/tennis"));
    assert_false(matches("+/tennis/#", "sport/golf"));
}

/* MQTT 3.1.1 §4.7.2: topics beginning with '$'. */
static void test_match_spec_dollar(void **state)
{
    (void)state;
    assert_false(matches("#", "$SYS/monitor/Clients"));
    assert_false(matches("#", "$SYS"));
    assert_false(matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert_false(matches("+", "$SYS"));
    assert_false(matches("+/#", "$SYS/x"));
    assert_true(matches("$SYS/#", "$SYS/monitor/Clients"));
    assert_true(matches("$SYS/#", "$SYS/x"));
    assert_true(matches("$SYS/#", "$SYS"));
    assert_true(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert_true(matches("$SYS", "$SYS"));
    /* Only the first character counts: '$' later in a name is an ordinary character. */
    assert_true(matches("#", "a/$SYS"));
    assert_true(matches("+/$x", "a/$x"));
    assert_true(matches("+", "a$"));
}

/* MQTT 3.1.1 §4.7.3: levels, empty levels, case and spaces are all significant. */
static void test_match_spec_semantics(void **state)
{
    (void)state;
    assert_false(matches("ACCOUNTS", "Accounts"));
    assert_true(matches("Accounts payable", "Accounts payable"));
    assert_false(matches("/finance", "finance"));
    assert_false(matches("finance", "/finance"));
    assert_true(matches("a//b", "a//b"));
    assert_false(matches("a/b", "a//b"));
    assert_true(matches("a/+/b", "a//b"));
    assert_true(matches("+/+/+", "a//b"));
    assert_false(matches("+/+", "a//b"));
    assert_true(matches("+", "a"));
    assert_true(matches("/", "/"));
    assert_true(matches("+/+", "/"));
    assert_false(matches("+", "/"));
    assert_true(matches("finance/", "finance/"));
    assert_false(matches("finance/", "finance"));
    assert_false(matches("finance", "finance/"));
    assert_true(matches("a/#", "a/"));
    assert_true(matches("a/b/c", "a/b/c"));
    assert_false(matches("a/b/c", "a/b/cd"));
    assert_false(matches("a/b/cd", "a/b/c"));
    assert_false(matches("a/b", "a/b/c"));
    assert_true(matches("//#", "//"));
    assert_true(matches("//#", "/"));
    assert_false(matches("//#", "a/b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_valid_samples),
        cmocka_unit_test(test_utf8_null),
        cmocka_unit_test(test_utf8_overlong),
        cmocka_unit_test(test_utf8_surrogates),
        cmocka_unit_test(test_utf8_bad),
        cmocka_unit_test(test_utf8_every_code_point),
        cmocka_unit_test(test_utf8_all_two_byte_inputs),
        cmocka_unit_test(test_utf8_all_three_byte_sequences),
        cmocka_unit_test(test_utf8_fast_path_boundaries),
        cmocka_unit_test(test_check_name),
        cmocka_unit_test(test_check_name_fast_path),
        cmocka_unit_test(test_check_filter_valid),
        cmocka_unit_test(test_check_filter_invalid),
        cmocka_unit_test(test_match_spec_multi_level),
        cmocka_unit_test(test_match_spec_single_level),
        cmocka_unit_test(test_match_spec_dollar),
        cmocka_unit_test(test_match_spec_semantics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

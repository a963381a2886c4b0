/* test_acl.c - unit tests for src/core/acl.c: the Mosquitto acl_file format and its checks.
 *
 * Owns no production code. Expected behaviour comes from Mosquitto 2.0's src/security_default.c
 * (aclfile__parse, mosquitto_acl_check_default) and issue 4; where midge decides something
 * Mosquitto leaves open (SUBSCRIBE filters), the rule tested is the one in docs/acl.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "midge/acl.h"
#include "midge/topic.h"

/* ---- helpers ---- */

struct log {
    char text[16384];
    size_t len;
    int errors, warnings;
};

static void record(void *ctx, bool is_error, const char *line)
{
    struct log *l = ctx;
    if (is_error)
        l->errors++;
    else
        l->warnings++;
    int n =
        snprintf(l->text + l->len, sizeof l->text - l->len, "%s %s\n", is_error ? "E" : "W", line);
    if (n > 0 && (size_t)n < sizeof l->text - l->len)
        l->len += (size_t)n;
}

static struct mq_acl *parse(const char *text, struct log *l)
{
    memset(l, 0, sizeof *l);
    return acl_parse(text, strlen(text), "acl.conf", record, l);
}

/* Parse text that must load with no diagnostics. */
static struct mq_acl *parse_ok(const char *text)
{
    struct log l;
    struct mq_acl *acl = parse(text, &l);
    if (!acl || l.errors || l.warnings)
        print_error("unexpected diagnostics:\n%s", l.text);
    assert_non_null(acl);
    assert_int_equal(l.errors, 0);
    assert_int_equal(l.warnings, 0);
    return acl;
}

/* Parse text that must fail with exactly this one error line. */
static void parse_fails(const char *text, const char *want)
{
    struct log l;
    struct mq_acl *acl = parse(text, &l);
    if (acl || l.errors != 1 || !strstr(l.text, want))
        print_error("want error containing \"%s\", got:\n%s", want, l.text);
    assert_null(acl);
    assert_int_equal(l.errors, 1);
    assert_non_null(strstr(l.text, want));
}

static bool chk(const struct mq_acl *acl, const char *user, const char *cid, const char *topic,
                enum mq_acl_access access)
{
    return acl_check(acl, user, cid, (const uint8_t *)topic, strlen(topic), access);
}

#define R MQ_ACL_READ
#define W MQ_ACL_WRITE
#define S MQ_ACL_SUBSCRIBE

/* ---- issue 4's example ---- */

static void test_course_example(void **state)
{
    (void)state;
    struct log l;
    struct mq_acl *acl = parse("# course broker\n"
                               "pattern readwrite %u/feeds/#\n"
                               "pattern write channels/+/publish/#\n",
                               &l);
    assert_non_null(acl);
    /* Mosquitto warns about a pattern without %u/%c, and so do we. */
    assert_int_equal(l.errors, 0);
    assert_int_equal(l.warnings, 1);
    assert_non_null(strstr(l.text, "W acl.conf:3: pattern \"channels/+/publish/#\" contains "
                                   "neither %u nor %c: it applies to every client"));
    const char *u = "hueyanchen2014", *c = "esp32-1";
    assert_true(chk(acl, u, c, "hueyanchen2014/feeds/lights", R));
    assert_true(chk(acl, u, c, "hueyanchen2014/feeds/lights", W));
    assert_true(chk(acl, u, c, "hueyanchen2014/feeds/lights", S));
    assert_true(chk(acl, u, c, "hueyanchen2014/feeds/#", S));
    assert_true(chk(acl, u, c, "hueyanchen2014/feeds", W)); /* '#' matches the parent */
    assert_false(chk(acl, u, c, "bob/feeds/lights", R));
    assert_false(chk(acl, u, c, "bob/feeds/lights", W));
    assert_false(chk(acl, u, c, "bob/feeds/lights", S));
    /* A wildcard filter that can reach the user's own feeds is accepted; what it delivers
     * is checked message by message with READ. */
    assert_true(chk(acl, u, c, "+/feeds/lights", S));
    assert_false(chk(acl, u, c, "bob/feeds/+", S));
    assert_false(chk(acl, u, c, "hueyanchen2014/other", W));

    assert_true(chk(acl, u, c, "channels/123/publish/KEY", W));
    assert_true(chk(acl, "bob", "x", "channels/123/publish/KEY", W));
    assert_true(chk(acl, NULL, "x", "channels/123/publish/KEY", W)); /* no %u: anyone */
    assert_false(chk(acl, u, c, "channels/123/publish/KEY", R));
    assert_false(chk(acl, u, c, "channels/123/publish/KEY", S));
    assert_false(chk(acl, u, c, "channels/123/publish/#", S));
    assert_false(chk(acl, u, c, "channels/123/subscribe/KEY", W));

    /* A client without a user name gets no %u pattern. */
    assert_false(chk(acl, NULL, c, "hueyanchen2014/feeds/lights", R));
    assert_int_equal(acl_user_count(acl), 0);
    assert_int_equal(acl_entry_count(acl), 2);
    acl_free(acl);
}

/* ---- line syntax ---- */

static void test_access_words(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("user u\n"
                                  "topic dflt/#\n"
                                  "topic read r/#\n"
                                  "topic write w/#\n"
                                  "topic readwrite rw/#\n"
                                  "topic deny rw/secret\n");
    assert_true(chk(acl, "u", "c", "dflt/x", R));
    assert_true(chk(acl, "u", "c", "dflt/x", W));
    assert_true(chk(acl, "u", "c", "r/x", R));
    assert_false(chk(acl, "u", "c", "r/x", W));
    assert_false(chk(acl, "u", "c", "w/x", R));
    assert_true(chk(acl, "u", "c", "w/x", W));
    assert_true(chk(acl, "u", "c", "rw/x", R));
    assert_true(chk(acl, "u", "c", "rw/x", W));
    assert_false(chk(acl, "u", "c", "rw/secret", R));
    assert_false(chk(acl, "u", "c", "rw/secret", W));
    assert_false(chk(acl, "u", "c", "other", R));
    assert_int_equal(acl_user_count(acl), 1);
    assert_int_equal(acl_entry_count(acl), 5);
    /* Access values outside the enum are refused. */
    assert_false(acl_check(acl, "u", "c", (const uint8_t *)"rw/x", 4, (enum mq_acl_access)3));
    assert_false(acl_check(acl, "u", "c", (const uint8_t *)"rw/x", 0, R));
    acl_free(acl);
}

static void test_whitespace_comments_crlf(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("\r\n"
                                  "# a comment\n"
                                  "   # an indented comment\n"
                                  "\t\n"
                                  "   \t  \n"
                                  "  user   alice  \r\n"
                                  "\ttopic   read    a/b   \r\n"
                                  "topic    write    w w/x y  \t\r\n"
                                  "user John Smith\n"
                                  "topic read js/#"); /* no final newline */
    assert_true(chk(acl, "alice", "c", "a/b", R));
    assert_false(chk(acl, "alice", "c", "a/b", W));
    /* The filter is the rest of the line, spaces inside kept, blanks around trimmed. */
    assert_true(chk(acl, "alice", "c", "w w/x y", W));
    assert_false(chk(acl, "alice", "c", "w w/x y ", W));
    /* A user name is the rest of the line too. */
    assert_true(chk(acl, "John Smith", "c", "js/1", R));
    assert_false(chk(acl, "John", "c", "js/1", R));
    assert_int_equal(acl_user_count(acl), 2);
    acl_free(acl);
}

static void test_empty_file_refuses_everything(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("");
    assert_false(chk(acl, NULL, "c", "a", R));
    assert_false(chk(acl, "u", "c", "a", W));
    assert_false(chk(acl, "u", "c", "#", S));
    acl_free(acl);
    acl = parse_ok("# nothing but comments\n\n");
    assert_false(chk(acl, NULL, "c", "a", R));
    acl_free(acl);
}

static void test_errors(void **state)
{
    (void)state;
    parse_fails("topic a\nusr bob\n", "acl.conf:2: unknown keyword \"usr\"");
    parse_fails("Topic a\n", "acl.conf:1: unknown keyword \"Topic\"");
    parse_fails("topic\tread a\n", "acl.conf:1: unknown keyword \"topic\\x09read\"");
    parse_fails("\n\ntopic reed a/b\n", "acl.conf:3: invalid access \"reed\" (expected read, "
                                        "write, readwrite or deny)");
    parse_fails("topic a b\n", "acl.conf:1: invalid access \"a\"");
    parse_fails("topic\n", "acl.conf:1: topic line has no topic filter");
    parse_fails("pattern   \r\n", "acl.conf:1: pattern line has no topic filter");
    parse_fails("user\n", "acl.conf:1: user line has no user name");
    parse_fails("user   \t \n", "acl.conf:1: user line has no user name");
    parse_fails("topic read a/#/b\n", "acl.conf:1: invalid topic filter \"a/#/b\": wildcard not "
                                      "alone in its level or '#' not last");
    parse_fails("pattern read %u+\n", "acl.conf:1: invalid topic filter \"%u+\"");
    parse_fails("topic read sport+\n", "invalid topic filter \"sport+\"");
    parse_fails("topic read a/\xC3(\n", "invalid topic filter \"a/\\xC3(\": string is not valid "
                                        "UTF-8");
    {
        static const char nul[] = "topic read a\0b\n";
        struct log l = {0};
        assert_null(acl_parse(nul, sizeof nul - 1, "acl.conf", record, &l));
        assert_non_null(strstr(l.text, "acl.conf:1: line contains a NUL byte"));
    }
    {
        size_t n = 65536 + 20;
        char *big = malloc(n + 1);
        assert_non_null(big);
        memcpy(big, "topic read ", 11);
        memset(big + 11, 'a', n - 11);
        big[n] = '\0';
        parse_fails(big, "acl.conf:1: topic filter \"aaaa");
        memcpy(big, "user       ", 11);
        parse_fails(big, "is longer than 65535 bytes");
        free(big);
    }
}

static void test_every_error_reported_and_no_acl(void **state)
{
    (void)state;
    struct log l;
    struct mq_acl *acl = parse("topic ok/#\n"
                               "bogus\n"
                               "topic nope a\n"
                               "user\n"
                               "pattern read +x\n",
                               &l);
    assert_null(acl);
    assert_int_equal(l.errors, 4);
    assert_non_null(strstr(l.text, "acl.conf:2:"));
    assert_non_null(strstr(l.text, "acl.conf:3:"));
    assert_non_null(strstr(l.text, "acl.conf:4:"));
    assert_non_null(strstr(l.text, "acl.conf:5:"));

    /* Without a callback the result is the same. */
    assert_null(acl_parse("bogus\n", 6, NULL, NULL, NULL));

    /* A flood of bad lines is reported up to a limit. */
    char *flood = malloc(1000 * 6 + 1);
    assert_non_null(flood);
    for (int i = 0; i < 1000; i++)
        memcpy(flood + i * 6, "bogus\n", 6);
    flood[6000] = '\0';
    acl = parse(flood, &l);
    assert_null(acl);
    assert_int_equal(l.errors, 50);
    assert_non_null(strstr(l.text, "W acl.conf: more errors or warnings not shown"));
    free(flood);
}

static void test_warnings(void **state)
{
    (void)state;
    struct log l;
    /* Mosquitto reads a lone access word as the filter, with readwrite access. */
    struct mq_acl *acl = parse("topic read\n", &l);
    assert_non_null(acl);
    assert_int_equal(l.errors, 0);
    assert_int_equal(l.warnings, 1);
    assert_non_null(strstr(l.text, "W acl.conf:1: topic line has only \"read\""));
    assert_true(chk(acl, NULL, "c", "read", W));
    acl_free(acl);

    /* Mosquitto warns about a pattern without %u or %c: it applies to every client. */
    acl = parse("pattern read public/#\n", &l);
    assert_non_null(acl);
    assert_int_equal(l.warnings, 1);
    assert_non_null(strstr(l.text, "W acl.conf:1: pattern \"public/#\" contains neither %u nor "
                                   "%c"));
    assert_true(chk(acl, "anyone", "c", "public/x", R));
    assert_true(chk(acl, NULL, "c", "public/x", R));
    acl_free(acl);

    /* Words are split on spaces only, as in Mosquitto, so a tab stays in the filter. */
    acl = parse("topic read\tx\n", &l);
    assert_non_null(acl);
    assert_int_equal(l.warnings, 1);
    assert_non_null(strstr(l.text, "contains a tab"));
    assert_true(chk(acl, NULL, "c", "read\tx", W));
    assert_false(chk(acl, NULL, "c", "x", R));
    acl_free(acl);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_acl_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "user bob\ntopic read bob/#\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    struct log l = {0};
    struct mq_acl *acl = acl_load(path, record, &l);
    assert_non_null(acl);
    assert_true(chk(acl, "bob", "c", "bob/x", R));
    acl_free(acl);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("user bob\ntopic rd bob/#\n", f);
    fclose(f);
    memset(&l, 0, sizeof l);
    assert_null(acl_load(path, record, &l));
    char want[128];
    snprintf(want, sizeof want, "%s:2: invalid access \"rd\"", path);
    assert_non_null(strstr(l.text, want));
    unlink(path);

    memset(&l, 0, sizeof l);
    assert_null(acl_load(path, record, &l));
    snprintf(want, sizeof want, "%s: cannot open ACL file: No such file or directory", path);
    assert_non_null(strstr(l.text, want));
}

/* A failed reload returns NULL and leaves the previous ACL untouched and usable. */
static void test_bad_reload_keeps_old(void **state)
{
    (void)state;
    struct mq_acl *old = parse_ok("topic read a/#\n");
    struct log l;
    struct mq_acl *next = parse("topic read a/#\ntopic read b/#+\n", &l);
    struct mq_acl *live = next ? next : old;
    assert_null(next);
    assert_ptr_equal(live, old);
    assert_true(chk(live, NULL, "c", "a/x", R));
    acl_free(old);
}

/* ---- sections ---- */

static void test_anonymous_section(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("topic read public/#\n"
                                  "topic write anon/in\n"
                                  "user alice\n"
                                  "topic readwrite alice/#\n"
                                  "user bob\n");
    /* Lines before the first `user` apply to clients without a user name, and only to them. */
    assert_true(chk(acl, NULL, "c", "public/news", R));
    assert_true(chk(acl, NULL, "c", "anon/in", W));
    assert_false(chk(acl, NULL, "c", "alice/x", R));
    assert_false(chk(acl, "alice", "c", "public/news", R));
    assert_true(chk(acl, "alice", "c", "alice/x", W));
    /* bob's section is empty; carol has none: both get nothing (there are no patterns). */
    assert_false(chk(acl, "bob", "c", "public/news", R));
    assert_false(chk(acl, "carol", "c", "public/news", R));
    /* An empty user name is a user name, not anonymous. */
    assert_false(chk(acl, "", "c", "public/news", R));
    assert_int_equal(acl_user_count(acl), 2);
    acl_free(acl);
}

static void test_repeated_user_section_merges(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("user a\ntopic read x\nuser b\ntopic read y\n"
                                  "user a\ntopic read z\n");
    assert_true(chk(acl, "a", "c", "x", R));
    assert_true(chk(acl, "a", "c", "z", R));
    assert_false(chk(acl, "a", "c", "y", R));
    assert_int_equal(acl_user_count(acl), 2);
    assert_int_equal(acl_entry_count(acl), 3);
    acl_free(acl);
}

/* ---- deny ---- */

static void test_deny_precedence(void **state)
{
    (void)state;
    /* A deny refuses whatever the line order inside a section. */
    struct mq_acl *acl = parse_ok("topic readwrite #\n"
                                  "topic deny secret/#\n"
                                  "user u\n"
                                  "topic deny a/b\n"
                                  "topic readwrite a/#\n"
                                  "topic deny a/+/c\n");
    assert_true(chk(acl, NULL, "c", "open", R));
    assert_false(chk(acl, NULL, "c", "secret/x", R));
    assert_false(chk(acl, NULL, "c", "secret", W));
    assert_true(chk(acl, "u", "c", "a/x", R));
    assert_false(chk(acl, "u", "c", "a/b", R));
    assert_false(chk(acl, "u", "c", "a/b", W));
    assert_false(chk(acl, "u", "c", "a/z/c", W));
    assert_false(chk(acl, "u", "c", "a/b/c", W));
    assert_true(chk(acl, "u", "c", "a/b/d", W));
    acl_free(acl);

    /* Pattern denies beat pattern grants. */
    acl = parse_ok("pattern readwrite %u/#\npattern deny %u/private/#\n");
    assert_true(chk(acl, "u", "c", "u/x", W));
    assert_false(chk(acl, "u", "c", "u/private/x", R));
    acl_free(acl);

    /* Mosquitto 2.0 checks the user's own section completely before the patterns: a grant
     * there wins over a pattern deny, and a deny there wins over a pattern grant. */
    acl = parse_ok("pattern deny %u/locked\n"
                   "pattern read %c/#\n"
                   "user u\n"
                   "topic read u/#\n"
                   "topic deny dev1/off\n");
    assert_true(chk(acl, "u", "dev1", "u/locked", R));
    assert_false(chk(acl, "v", "dev1", "v/locked", R));
    assert_true(chk(acl, "v", "dev1", "dev1/off", R));
    assert_false(chk(acl, "u", "dev1", "dev1/off", R));
    assert_true(chk(acl, "u", "dev1", "dev1/on", R));
    acl_free(acl);
}

/* ---- patterns ---- */

static void test_pattern_substitution(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("pattern read devices/%c/in\n"
                                  "pattern write devices/%c/out/#\n"
                                  "pattern readwrite shared/%u/%c\n"
                                  "pattern read dev_%c/x\n"
                                  "pattern read pct/%%u\n");
    assert_true(chk(acl, NULL, "esp1", "devices/esp1/in", R));
    assert_false(chk(acl, NULL, "esp1", "devices/esp2/in", R));
    assert_true(chk(acl, "u", "esp1", "devices/esp1/out/a/b", W));
    assert_false(chk(acl, "u", "esp1", "devices/esp1/out/a/b", R));
    assert_true(chk(acl, "u", "esp1", "shared/u/esp1", W));
    assert_false(chk(acl, "u", "esp1", "shared/u/esp2", W));
    assert_false(chk(acl, NULL, "esp1", "shared//esp1", W));
    /* Substitution is textual, inside a level too, as in Mosquitto 2.0. */
    assert_true(chk(acl, NULL, "7", "dev_7/x", R));
    assert_false(chk(acl, NULL, "7", "dev_8/x", R));
    assert_true(chk(acl, "bob", "c", "pct/%bob", R));
    acl_free(acl);

    /* Only %u and %c are special; other '%' sequences are text (and the pattern warns). */
    struct log l;
    acl = parse("pattern read lit/%x\n", &l);
    assert_non_null(acl);
    assert_int_equal(l.warnings, 1);
    assert_true(chk(acl, "bob", "c", "lit/%x", R));
    acl_free(acl);
}

static void test_pattern_prefix_names(void **state)
{
    (void)state;
    /* A name must equal the whole substituted text: "bobby" is not "bob" with extra bytes. */
    struct mq_acl *acl = parse_ok("pattern readwrite %u/feeds/#\n");
    assert_false(chk(acl, "bobby", "c", "bob/feeds/x", R));
    assert_false(chk(acl, "bob", "c", "bobby/feeds/x", R));
    assert_false(chk(acl, "b", "c", "bob/feeds/x", R));
    assert_true(chk(acl, "bob", "c", "bob/feeds/x", R));
    /* An empty user name substitutes as empty text, as in Mosquitto 2.0. */
    assert_true(chk(acl, "", "c", "/feeds/x", R));
    assert_false(chk(acl, "", "c", "feeds/x", R));
    acl_free(acl);
}

static void test_pattern_hostile_names(void **state)
{
    (void)state;
    struct log l;
    struct mq_acl *acl = parse("pattern readwrite %u/feeds/#\n"
                               "pattern read public/#\n"
                               "user a/#\n"
                               "topic read own/#\n",
                               &l);
    assert_non_null(acl);
    assert_int_equal(l.warnings, 1);
    /* "a/#" would turn %u/feeds/# into a/#/feeds/#; Mosquitto refuses every pattern instead. */
    assert_false(chk(acl, "a/#", "c", "a/x", R));
    assert_false(chk(acl, "a/#", "c", "a/#/feeds/x", R));
    assert_false(chk(acl, "a/#", "c", "public/x", R));
    /* ... but the user's own section still applies (it is checked first). */
    assert_true(chk(acl, "a/#", "c", "own/x", R));
    assert_false(chk(acl, "+", "c", "x/feeds/y", R));
    assert_false(chk(acl, "x+", "c", "x+/feeds/y", R));
    assert_false(chk(acl, "#", "c", "public/x", R));
    /* The client id is checked the same way, even for patterns that do not use %c. */
    assert_false(chk(acl, "bob", "dev/#", "bob/feeds/x", R));
    assert_false(chk(acl, "bob", "+", "public/x", R));
    assert_false(chk(acl, "bob", NULL, "public/x", R));
    assert_true(chk(acl, "bob", "dev-1", "bob/feeds/x", R));
    /* '/' is not refused: the name is substituted as text and spans levels. */
    assert_true(chk(acl, "x/y", "c", "x/y/feeds/z", R));
    assert_false(chk(acl, "x/y", "c", "x/feeds/z", R));
    assert_true(chk(acl, "x/y", "c", "x/y/feeds", S));
    acl_free(acl);

    /* Without patterns, names are never substituted and nothing is refused for them. */
    acl = parse_ok("user a+b\ntopic read t\n");
    assert_true(chk(acl, "a+b", "c#", "t", R));
    acl_free(acl);
}

/* ---- '$' topics ---- */

static void test_dollar_topics(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("user u\ntopic readwrite #\ntopic read +/broker/#\n"
                                  "user admin\ntopic read $SYS/#\n"
                                  "user mon\ntopic read $SYS/broker/+\ntopic deny #\n");
    assert_true(chk(acl, "u", "c", "a/b", R));
    assert_false(chk(acl, "u", "c", "$SYS/broker/uptime", R));
    assert_false(chk(acl, "u", "c", "$SYS/broker/uptime", S));
    assert_false(chk(acl, "u", "c", "$SYS/#", S));
    assert_false(chk(acl, "u", "c", "$anything", W));
    assert_true(chk(acl, "admin", "c", "$SYS/broker/uptime", R));
    assert_true(chk(acl, "admin", "c", "$SYS/#", S));
    assert_false(chk(acl, "admin", "c", "#", S));
    assert_false(chk(acl, "admin", "c", "+/broker/uptime", S));
    /* `topic deny #` does not reach '$' topics either. */
    assert_true(chk(acl, "mon", "c", "$SYS/broker/uptime", R));
    assert_false(chk(acl, "mon", "c", "x", R));
    acl_free(acl);

    acl = parse_ok("pattern read %u/#\n");
    /* A user name starting with '$' substitutes into a '$' filter (Mosquitto does the same). */
    assert_true(chk(acl, "$SYS", "c", "$SYS/x", R));
    assert_false(chk(acl, "u", "c", "$SYS/x", R));
    acl_free(acl);
}

/* ---- SUBSCRIBE ---- */

static void test_subscribe_filters(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("user u\n"
                                  "topic read sensors/#\n"
                                  "topic readwrite #\n"
                                  "topic deny test/nosubscribe\n"
                                  "topic deny hidden/+\n"
                                  "user r\n"
                                  "topic read sensors/#\n"
                                  "topic read one/+/x\n"
                                  "topic write out/#\n");
    /* Issue 4: a denied filter gets SUBACK 0x80. */
    assert_false(chk(acl, "u", "c", "test/nosubscribe", S));
    assert_true(chk(acl, "u", "c", "test/other", S));
    /* A deny refuses a filter only when it covers all of it; the rest is filtered at delivery. */
    assert_true(chk(acl, "u", "c", "test/#", S));
    assert_true(chk(acl, "u", "c", "test/+", S));
    assert_false(chk(acl, "u", "c", "test/nosubscribe", R));
    assert_false(chk(acl, "u", "c", "hidden/+", S));
    assert_false(chk(acl, "u", "c", "hidden/a", S));
    assert_true(chk(acl, "u", "c", "hidden/#", S)); /* "hidden" itself is readable */
    assert_true(chk(acl, "u", "c", "#", S));

    /* Grants: a filter is allowed when it can match a topic the client may read. */
    assert_true(chk(acl, "r", "c", "sensors/+/temp", S));
    assert_true(chk(acl, "r", "c", "sensors/#", S));
    assert_true(chk(acl, "r", "c", "sensors", S));
    assert_true(chk(acl, "r", "c", "sensors/a/b/c", S));
    assert_true(chk(acl, "r", "c", "+/kitchen", S));
    assert_true(chk(acl, "r", "c", "#", S));
    assert_true(chk(acl, "r", "c", "+/+/x", S));
    assert_true(chk(acl, "r", "c", "one/#", S));
    assert_true(chk(acl, "r", "c", "one/a/+", S));
    assert_false(chk(acl, "r", "c", "one/a/y", S));
    assert_false(chk(acl, "r", "c", "one/a", S));
    assert_false(chk(acl, "r", "c", "one/a/x/y", S));
    assert_false(chk(acl, "r", "c", "other/#", S));
    assert_false(chk(acl, "r", "c", "out/#", S)); /* write-only */
    assert_false(chk(acl, "r", "c", "out/x", S));
    assert_false(chk(acl, "r", "c", "sensor", S));
    acl_free(acl);

    /* Patterns take part the same way. */
    acl = parse_ok("pattern read %u/in/#\npattern deny %u/in/secret\n");
    assert_true(chk(acl, "bob", "c", "bob/in/+", S));
    assert_true(chk(acl, "bob", "c", "+/in/x", S));
    assert_false(chk(acl, "bob", "c", "bob/in/secret", S));
    assert_false(chk(acl, "bob", "c", "alice/in/#", S));
    assert_false(chk(acl, NULL, "c", "bob/in/x", S));
    acl_free(acl);
}

/* Subscribing to a topic name is the same question as reading it. */
static void test_subscribe_name_equals_read(void **state)
{
    (void)state;
    struct mq_acl *acl = parse_ok("topic read a/+/c\ntopic deny a/b/c\ntopic read x/#\n"
                                  "pattern read %c/#\n");
    const char *names[] = {"a/b/c", "a/z/c", "a/b", "x", "x/y", "dev/q", "q", "$x/a"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        assert_int_equal(chk(acl, NULL, "dev", names[i], S), chk(acl, NULL, "dev", names[i], R));
    acl_free(acl);
}

/* ---- matcher against brute force ---- */

/* Small filters over {a, b, +, #} and every topic over {a, b, ab, c, ""} ('c' stands for any
 * other level, "$a" for '$' levels) up to one level deeper than the deepest filter: enough to
 * decide "covers" and "overlaps" exactly. */
#define MAX_TOPICS 1600
static char universe[MAX_TOPICS][16];
static size_t nuniverse;

static void build_universe(void)
{
    static const char *lv[] = {"a", "b", "c", "", "ab", "$a"};
    nuniverse = 0;
    size_t start = 0;
    for (int depth = 1; depth <= 4; depth++) {
        size_t end = nuniverse;
        for (size_t k = 0; k < 6; k++) {
            if (depth == 1) {
                strcpy(universe[nuniverse++], lv[k]);
                continue;
            }
            for (size_t p = start; p < end; p++) {
                char tmp[sizeof universe[0]];
                memcpy(tmp, universe[p], sizeof tmp);
                size_t tl = strlen(tmp), ll = strlen(lv[k]);
                assert_true(tl + 1 + ll < sizeof universe[0]);
                memcpy(universe[nuniverse], tmp, tl);
                universe[nuniverse][tl] = '/';
                memcpy(universe[nuniverse] + tl + 1, lv[k], ll + 1);
                nuniverse++;
            }
        }
        start = end;
    }
}

static bool matches(const char *filter, const char *name)
{
    if (!*name)
        return false; /* "" is no topic name */
    return topic_matches((const uint8_t *)filter, strlen(filter), (const uint8_t *)name,
                         strlen(name));
}

static void random_filter(char *out, size_t cap, unsigned *seed)
{
    static const char *lv[] = {"a", "b", "+", "#", "", "$a"};
    do { /* "" alone is not a filter */
        int depth = 1 + rand_r(seed) % 3;
        out[0] = '\0';
        for (int d = 0; d < depth; d++) {
            const char *l = lv[rand_r(seed) % 6];
            if (!strcmp(l, "$a") && d > 0)
                l = "a";
            if (!strcmp(l, "#") && d != depth - 1)
                l = "+";
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", d ? "/" : "", l);
        }
    } while (out[0] == '\0');
}

#ifndef BRUTE_ITERS
#define BRUTE_ITERS 3000
#endif

static void test_subscribe_against_brute_force(void **state)
{
    (void)state;
    build_universe();
    unsigned seed = 12345;
    for (int iter = 0; iter < BRUTE_ITERS; iter++) {
        char e[32], f[32], text[128];
        random_filter(e, sizeof e, &seed);
        random_filter(f, sizeof f, &seed);
        bool deny = rand_r(&seed) % 2;
        snprintf(text, sizeof text, "topic %s %s\n", deny ? "deny" : "read", e);
        struct mq_acl *acl = parse_ok(text);
        bool covers = true, overlaps = false;
        for (size_t i = 0; i < nuniverse; i++) {
            if (!matches(f, universe[i]))
                continue;
            bool m = matches(e, universe[i]);
            covers &= m;
            overlaps |= m;
        }
        bool want;
        if (deny) {
            /* One deny entry alone refuses everything; add a grant to see what the deny does. */
            acl_free(acl);
            snprintf(text, sizeof text, "topic deny %s\ntopic read #\ntopic read $a/#\n", e);
            acl = parse_ok(text);
            bool any = false;
            for (size_t i = 0; i < nuniverse; i++)
                any |= matches(f, universe[i]);
            want = any && !covers;
        } else {
            want = overlaps;
        }
        bool got = chk(acl, NULL, "c", f, S);
        if (got != want)
            print_error("entry %s \"%s\", SUBSCRIBE \"%s\": got %d want %d\n",
                        deny ? "deny" : "read", e, f, got, want);
        assert_int_equal(got, want);
        /* READ on names agrees with plain MQTT matching. */
        for (size_t i = 0; i < nuniverse && !deny; i++) {
            if (!*universe[i])
                continue;
            assert_int_equal(chk(acl, NULL, "c", universe[i], R), matches(e, universe[i]));
        }
        acl_free(acl);
    }
}

/* True when filter f has at most 3 levels, each one the universe is built from (or a
 * wildcard): then the universe holds a witness for any overlap with it. */
static bool known(const char *f)
{
    static const char *ok[] = {"a", "b", "c", "", "ab", "$a", "+", "#"};
    for (int depth = 1; depth <= 3; depth++) {
        size_t n = strcspn(f, "/");
        bool found = false;
        for (size_t k = 0; k < sizeof ok / sizeof *ok; k++)
            found |= strlen(ok[k]) == n && !strncmp(ok[k], f, n);
        if (!found)
            return false;
        if (!f[n])
            return true;
        f += n + 1;
    }
    return false;
}

/* Patterns agree with Mosquitto 2.0's method: substitute into a string, then match. */
static void test_pattern_against_substitution(void **state)
{
    (void)state;
    static const char *names[] = {"a", "b", "ab", "", "a/b", "$a"};
    static const char *pats[] = {"%u",     "%u/#",   "%c/+",    "+/%u",    "%u%c",
                                 "x%u/%c", "%u/%u",  "a/%c/#",  "%c",      "%u/b/#",
                                 "#",      "%%u/%c", "$a/%u/+", "%u/%c/%u"};
    static const char *filters[] = {"#",     "+",   "a/#", "+/b",    "ab/+",   "$a/#",
                                    "+/+/#", "a/b", "/#",  "a/b/ab", "+/ab/+", "+/a/#"};
    build_universe();
    for (size_t pi = 0; pi < sizeof pats / sizeof *pats; pi++) {
        char text[64];
        snprintf(text, sizeof text, "pattern read %s\n", pats[pi]);
        struct log l;
        struct mq_acl *acl = parse(text, &l);
        assert_non_null(acl);
        for (size_t ui = 0; ui < sizeof names / sizeof *names; ui++) {
            for (size_t ci = 0; ci < sizeof names / sizeof *names; ci++) {
                char sub[128] = "";
                const char *p = pats[pi];
                while (*p) {
                    if (p[0] == '%' && (p[1] == 'u' || p[1] == 'c')) {
                        strcat(sub, p[1] == 'u' ? names[ui] : names[ci]);
                        p += 2;
                    } else {
                        strncat(sub, p++, 1);
                    }
                }
                bool valid = *sub && !topic_check_filter((const uint8_t *)sub, strlen(sub));
                for (size_t i = 0; i < nuniverse; i++) {
                    if (!*universe[i])
                        continue;
                    bool want = valid && matches(sub, universe[i]);
                    bool got = chk(acl, names[ui], names[ci], universe[i], R);
                    if (got != want)
                        print_error("pattern %s, u=\"%s\" c=\"%s\" topic %s: got %d want %d\n",
                                    pats[pi], names[ui], names[ci], universe[i], got, want);
                    assert_int_equal(got, want);
                }
                for (size_t fi = 0; fi < sizeof filters / sizeof *filters && known(sub); fi++) {
                    bool want = false;
                    for (size_t i = 0; i < nuniverse && valid; i++)
                        want |= matches(filters[fi], universe[i]) && matches(sub, universe[i]);
                    bool got = chk(acl, names[ui], names[ci], filters[fi], S);
                    if (got != want)
                        print_error("pattern %s, u=\"%s\" c=\"%s\" SUBSCRIBE %s: got %d want "
                                    "%d\n",
                                    pats[pi], names[ui], names[ci], filters[fi], got, want);
                    assert_int_equal(got, want);
                }
            }
        }
        acl_free(acl);
    }
}

/* ---- scale ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_big_file(void **state)
{
    (void)state;
    enum { USERS = 10000 };
    size_t cap = (size_t)USERS * 120 + 256, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    len += (size_t)snprintf(text + len, cap - len,
                            "pattern readwrite %%u/feeds/#\npattern write channels/+/publish/#\n");
    for (int i = 0; i < USERS; i++)
        len += (size_t)snprintf(text + len, cap - len,
                                "user user%d\ntopic read shared/%d/#\ntopic deny shared/%d/x\n"
                                "topic readwrite home/user%d/+/state\n",
                                i, i % 100, i % 100, i);

    double t0 = now();
    struct log l = {0};
    struct mq_acl *acl = acl_parse(text, len, "big.acl", record, &l);
    double t_load = now() - t0;
    assert_non_null(acl);
    assert_int_equal(acl_user_count(acl), USERS);
    assert_int_equal(acl_entry_count(acl), 2 + 3 * USERS);

    t0 = now();
    enum { CHECKS = 200000 };
    int allowed = 0;
    char user[32], topic[64];
    for (int i = 0; i < CHECKS; i++) {
        int u = (i * 7919) % USERS;
        snprintf(user, sizeof user, "user%d", u);
        switch (i % 4) {
        case 0: snprintf(topic, sizeof topic, "user%d/feeds/lights", u); break;
        case 1: snprintf(topic, sizeof topic, "home/user%d/kitchen/state", u); break;
        case 2: snprintf(topic, sizeof topic, "shared/%d/y", u % 100); break;
        default: snprintf(topic, sizeof topic, "home/user%d/kitchen/state", u + 1); break;
        }
        allowed += chk(acl, user, "dev", topic, (i & 1) ? W : R);
    }
    double t_check = now() - t0;
    /* case 0 R, 1 W, 2 R allowed; case 3 (someone else's home) refused. */
    assert_int_equal(allowed, CHECKS / 4 * 3);
    print_message("      10,000 users: load %.1f ms, %d checks %.1f ms (%.0f ns each)\n",
                  t_load * 1e3, CHECKS, t_check * 1e3, t_check * 1e9 / CHECKS);
    /* Generous bounds that still catch a linear user search (sanitizers slow all of this;
     * under qemu-user, a cross build's ctest sets MIDGE_TEST_SLOWDOWN, 10: a linear search
     * would still take minutes there). */
    const char *slow = getenv("MIDGE_TEST_SLOWDOWN");
    double bound = 2.0 * (slow && atof(slow) > 1.0 ? atof(slow) : 1.0);
    assert_true(t_load < bound);
    assert_true(t_check < bound);
    acl_free(acl);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_course_example),
        cmocka_unit_test(test_access_words),
        cmocka_unit_test(test_whitespace_comments_crlf),
        cmocka_unit_test(test_empty_file_refuses_everything),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_every_error_reported_and_no_acl),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_bad_reload_keeps_old),
        cmocka_unit_test(test_anonymous_section),
        cmocka_unit_test(test_repeated_user_section_merges),
        cmocka_unit_test(test_deny_precedence),
        cmocka_unit_test(test_pattern_substitution),
        cmocka_unit_test(test_pattern_prefix_names),
        cmocka_unit_test(test_pattern_hostile_names),
        cmocka_unit_test(test_dollar_topics),
        cmocka_unit_test(test_subscribe_filters),
        cmocka_unit_test(test_subscribe_name_equals_read),
        cmocka_unit_test(test_subscribe_against_brute_force),
        cmocka_unit_test(test_pattern_against_substitution),
        cmocka_unit_test(test_big_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

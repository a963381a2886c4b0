/* test_passwd.c - unit tests for Mosquitto password files (src/auth/passwd.c).
 *
 * Hashes come from three independent places: files the real mosquitto_passwd writes at run
 * time ($7$ and $6$), fixed lines it wrote once (so the test still means something without
 * the tool), and lines built here directly with OpenSSL (for unusual iteration counts).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "midge/err.h"
#include "midge/passwd.h"

#define MOSQUITTO_PASSWD "/usr/bin/mosquitto_passwd"
#define MAX_REPORTS 64

/* Written by mosquitto_passwd 2.0.11: "-b -c f alice 'correct horse'" and
 * "-H sha512 -b -c f bob 'battery staple'". */
#define FIXED_PBKDF2                                                                               \
    "alice:$7$101$tG4X/8rKQJGnAygs$kQWlMDkhLSy7wMYGKlcFn9wn0qr1EwByUax3BkvjKojz/keHANSxVCzJWAnb"   \
    "+ZO6obp4ep830MYE9RDCqrM93g=="
#define FIXED_SHA512                                                                               \
    "bob:$6$DNdUYUaGYaXStB4h$2ioKZ7QDPTgFCSnDt+mUdhDb/lXKN/p6bOif3U77NidFgqwPfH1EZfH0w0R4VB0d7w"   \
    "om8NNAlsKrR30Y4fjC7g=="
/* The hash part of FIXED_SHA512, for building lines with other user names. */
#define SHA512_HASH                                                                                \
    "$6$DNdUYUaGYaXStB4h$2ioKZ7QDPTgFCSnDt+mUdhDb/lXKN/p6bOif3U77NidFgqwPfH1EZfH0w0R4VB0d7wom8N"   \
    "NAlsKrR30Y4fjC7g=="

struct reports {
    size_t n, errors;
    char *line[MAX_REPORTS];
};

static void collect(void *ctx, bool is_error, const char *line)
{
    struct reports *r = ctx;
    if (r->n < MAX_REPORTS)
        r->line[r->n++] = strdup(line);
    r->errors += is_error;
}

static void reports_free(struct reports *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->line[i]);
    memset(r, 0, sizeof(*r));
}

static struct mq_passwd *parse_str(const char *text, struct reports *r)
{
    return passwd_parse(text, strlen(text), "t.pw", collect, r);
}

static enum mq_passwd_result check(const struct mq_passwd *p, const char *user, const char *pw)
{
    return passwd_check(p, (const uint8_t *)user, strlen(user), (const uint8_t *)pw,
                        pw ? strlen(pw) : 0);
}

/* A scratch directory for files, removed in teardown. */
static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/midge-test-passwd-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* mosquitto_passwd comes from a package scripts/deps installs: missing, the test is
 * skipped when run by hand and fails under ctest (MIDGE_REQUIRE_DEPS, CMakeLists.txt). */
static void need_mosquitto_passwd(void)
{
    if (access(MOSQUITTO_PASSWD, X_OK) != 0) {
        const char *req = getenv("MIDGE_REQUIRE_DEPS");
        if (req && *req && strcmp(req, "0") != 0)
            fail_msg("%s not installed (Debian package mosquitto; MIDGE_REQUIRE_DEPS: a "
                     "missing dependency fails under ctest)",
                     MOSQUITTO_PASSWD);
        print_message("%s not installed (Debian package mosquitto)\n", MOSQUITTO_PASSWD);
        skip();
    }
}

/* Builds "user:$7$<iterations>$<salt>$<hash>" with OpenSSL directly. */
static void pbkdf2_line(char *out, size_t cap, const char *user, const char *pw, int iterations)
{
    unsigned char salt[12] = "saltsaltsalt", hash[64], salt64[17], hash64[89];
    assert_int_equal(PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, sizeof(salt), iterations,
                                       EVP_sha512(), sizeof(hash), hash),
                     1);
    EVP_EncodeBlock(salt64, salt, sizeof(salt));
    EVP_EncodeBlock(hash64, hash, sizeof(hash));
    snprintf(out, cap, "%s:$7$%d$%s$%s\n", user, iterations, salt64, hash64);
}

static void test_mosquitto_pbkdf2_file(void **state)
{
    struct reports r = {0};
    char path[128];
    (void)state;

    need_mosquitto_passwd();
    snprintf(path, sizeof(path), "%s/pbkdf2.pw", tmpdir);
    run(MOSQUITTO_PASSWD " -b -c '%s' alice 'correct horse'", path);
    run(MOSQUITTO_PASSWD " -b '%s' bob 'p@ss$w0rd: with spaces'", path);
    run(MOSQUITTO_PASSWD " -b '%s' 'zoë' 'ünïcödé'", path);
    struct mq_passwd *p = passwd_load(path, collect, &r);
    assert_non_null(p);
    assert_int_equal(r.n, 0);
    assert_int_equal(passwd_count(p), 3);
    assert_int_equal(check(p, "alice", "correct horse"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "bob", "p@ss$w0rd: with spaces"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "zoë", "ünïcödé"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "alice", "correct horsE"), MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "bob", "correct horse"), MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "carol", "correct horse"), MQ_PASSWD_NO_SUCH_USER);
    passwd_free(p);
    reports_free(&r);
}

static void test_mosquitto_sha512_file(void **state)
{
    struct reports r = {0};
    char path[128];
    (void)state;

    need_mosquitto_passwd();
    snprintf(path, sizeof(path), "%s/sha512.pw", tmpdir);
    run(MOSQUITTO_PASSWD " -H sha512 -b -c '%s' bob 'battery staple'", path);
    run(MOSQUITTO_PASSWD " -H sha512 -b '%s' eve 'x'", path);
    struct mq_passwd *p = passwd_load(path, collect, &r);
    assert_non_null(p);
    assert_int_equal(r.n, 0);
    assert_int_equal(passwd_count(p), 2);
    assert_int_equal(check(p, "bob", "battery staple"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "eve", "x"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "bob", "battery stapl"), MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "eve", ""), MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "mallory", "x"), MQ_PASSWD_NO_SUCH_USER);
    passwd_free(p);
    reports_free(&r);
}

/* mosquitto_passwd -U turns a plain-text file into hashes; the result must load here. */
static void test_mosquitto_upgraded_file(void **state)
{
    struct reports r = {0};
    char path[128];
    FILE *f;
    (void)state;

    need_mosquitto_passwd();
    snprintf(path, sizeof(path), "%s/upgraded.pw", tmpdir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("u1:first\nu2:second\n", f);
    fclose(f);
    run(MOSQUITTO_PASSWD " -U '%s'", path);
    struct mq_passwd *p = passwd_load(path, collect, &r);
    assert_non_null(p);
    assert_int_equal(r.n, 0);
    assert_int_equal(check(p, "u1", "first"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "u2", "second"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "u2", "first"), MQ_PASSWD_MISMATCH);
    passwd_free(p);
    reports_free(&r);
}

static void test_fixed_lines(void **state)
{
    struct reports r = {0};
    (void)state;

    struct mq_passwd *p = parse_str(FIXED_PBKDF2 "\n" FIXED_SHA512 "\n", &r);
    assert_non_null(p);
    assert_int_equal(r.n, 0);
    assert_int_equal(passwd_count(p), 2);
    assert_int_equal(check(p, "alice", "correct horse"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "bob", "battery staple"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "alice", "battery staple"), MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "bob", "correct horse"), MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "alice", ""), MQ_PASSWD_MISMATCH);
    /* No password at all (CONNECT without the password flag) never matches. */
    assert_int_equal(check(p, "alice", NULL), MQ_PASSWD_MISMATCH);
    /* User names are exact byte strings: no prefix, case or trailing-NUL matches. */
    assert_int_equal(check(p, "alic", "correct horse"), MQ_PASSWD_NO_SUCH_USER);
    assert_int_equal(check(p, "Alice", "correct horse"), MQ_PASSWD_NO_SUCH_USER);
    assert_int_equal(check(p, "", "correct horse"), MQ_PASSWD_NO_SUCH_USER);
    assert_int_equal(
        passwd_check(p, (const uint8_t *)"alice", 6, (const uint8_t *)"correct horse", 13),
        MQ_PASSWD_NO_SUCH_USER);
    /* The password is a byte string too: a trailing NUL is a different password for $6$.
     * (Not for $7$: HMAC zero-pads short keys, so PBKDF2 cannot see trailing NULs.) */
    assert_int_equal(
        passwd_check(p, (const uint8_t *)"bob", 3, (const uint8_t *)"battery staple", 15),
        MQ_PASSWD_MISMATCH);
    assert_int_equal(
        passwd_check(p, (const uint8_t *)"bob", 3, (const uint8_t *)"battery staple\0junk", 19),
        MQ_PASSWD_MISMATCH);
    passwd_free(p);
    assert_int_equal(check(NULL, "alice", "x"), MQ_PASSWD_NO_SUCH_USER);
    assert_int_equal(passwd_count(NULL), 0);
    passwd_free(NULL);
}

/* Independent of both mosquitto and passwd.c's encoder: other iteration counts. */
static void test_openssl_built_lines(void **state)
{
    char l1[256], l2[256], text[600];
    struct reports r = {0};
    (void)state;

    pbkdf2_line(l1, sizeof(l1), "one", "uno", 1);
    pbkdf2_line(l2, sizeof(l2), "many", "muchos", 5000);
    snprintf(text, sizeof(text), "%s%s", l1, l2);
    struct mq_passwd *p = parse_str(text, &r);
    assert_int_equal(r.n, 0);
    assert_int_equal(passwd_count(p), 2);
    assert_int_equal(check(p, "one", "uno"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "many", "muchos"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "many", "uno"), MQ_PASSWD_MISMATCH);
    passwd_free(p);
}

static void test_format_tolerance(void **state)
{
    struct reports r = {0};
    (void)state;

    const char *text = "# comment: with a colon\r\n"
                       "\n"
                       "   \t\r\n"
                       "  " FIXED_PBKDF2 "  \r\n"
                       "bob\t:\t" SHA512_HASH "\r\n"
                       "carol:" SHA512_HASH; /* no final newline */
    struct mq_passwd *p = parse_str(text, &r);
    assert_non_null(p);
    assert_int_equal(r.n, 0);
    assert_int_equal(passwd_count(p), 3);
    assert_int_equal(check(p, "alice", "correct horse"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "bob", "battery staple"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "carol", "battery staple"), MQ_PASSWD_OK);
    passwd_free(p);

    p = parse_str("", &r);
    assert_non_null(p);
    assert_int_equal(passwd_count(p), 0);
    assert_int_equal(check(p, "alice", "x"), MQ_PASSWD_NO_SUCH_USER);
    passwd_free(p);
    assert_int_equal(r.n, 0);
}

static void test_malformed_lines(void **state)
{
    struct reports r = {0};
    (void)state;

    static const char text[] =
        "just-a-name\n"                                                          /* 1 */
        ":" SHA512_HASH "\n"                                                     /* 2 */
        "plain:hunter2\n"                                                        /* 3 */
        "md5:$1$abcdefgh$0123456789abcdef\n"                                     /* 4 */
        "iters:$7$1o1$tG4X/8rKQJGnAygs$AAAA\n"                                   /* 5 */
        "zero:$7$0$tG4X/8rKQJGnAygs$AAAA\n"                                      /* 6 */
        "noiters:$7$$tG4X/8rKQJGnAygs$AAAA\n"                                    /* 7 */
        "badsalt:$6$tG4X/8rKQJGnAyg!$AAAA\n"                                     /* 8 */
        "shortsalt:$6$c2FsdHNhbHQ=$AAAA\n"                                       /* 9 */
        "shorthash:$6$DNdUYUaGYaXStB4h$2ioKZ7QDPTgFCSnDt+mUdhDb\n"               /* 10 */
        "nodollar:$6$DNdUYUaGYaXStB4h\n"                                         /* 11 */
        "empty:\n"                                                               /* 12 */
        FIXED_PBKDF2 "\n"                                                        /* 13 */
        "huge:$7$10000001$tG4X/8rKQJGnAygs$AAAA\n"                               /* 14 */
        "badpad:$6$DNdUYUaGYaXStB4h$2ioKZ7QDPTgFCSnDt+mUdhDb/lXKN/p6bOif3U77Nid" /* 15 */
        "FgqwPfH1EZfH0w0R4VB0d7wom8NNAlsKrR30Y4fjC7g=A\n"
        "nul\0:" SHA512_HASH "\n" /* 16 */
        FIXED_SHA512 "\n";        /* 17 */
    const char *want[] = {
        "t.pw:1: no ':' between user name and password hash; line skipped",
        "t.pw:2: empty user name; line skipped",
        "t.pw:3: plain-text password, not a hash (convert the file with midge-passwd -U); line "
        "skipped",
        "t.pw:4: unknown password hash type (only $6$ and $7$ are supported); line skipped",
        "t.pw:5: iteration count is not a number; line skipped",
        "t.pw:6: iteration count is 0; line skipped",
        "t.pw:7: missing iteration count in $7$ hash; line skipped",
        "t.pw:8: salt is not 12 bytes of base64; line skipped",
        "t.pw:9: salt is not 12 bytes of base64; line skipped",
        "t.pw:10: hash is not 64 bytes of base64; line skipped",
        "t.pw:11: missing '$' between salt and hash; line skipped",
        "t.pw:12: no password hash after ':'; line skipped",
        "t.pw:14: iteration count above 10000000; line skipped",
        "t.pw:15: hash is not 64 bytes of base64; line skipped",
        "t.pw:16: contains a NUL byte; line skipped",
    };
    /* sizeof, not strlen: line 16 holds a NUL. */
    struct mq_passwd *p = passwd_parse(text, sizeof(text) - 1, "t.pw", collect, &r);
    assert_non_null(p);
    for (size_t i = 0; i < r.n && i < sizeof(want) / sizeof(want[0]); i++)
        assert_string_equal(r.line[i], want[i]);
    assert_int_equal(r.n, sizeof(want) / sizeof(want[0]));
    assert_int_equal(r.errors, 0);
    /* Warnings never quote a password or a hash. */
    for (size_t i = 0; i < r.n; i++) {
        assert_null(strstr(r.line[i], "hunter2"));
        assert_null(strstr(r.line[i], "tG4X"));
        assert_null(strstr(r.line[i], "DNdU"));
    }
    assert_int_equal(passwd_count(p), 2);
    assert_int_equal(check(p, "alice", "correct horse"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "bob", "battery staple"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "plain", "hunter2"), MQ_PASSWD_NO_SUCH_USER);
    assert_int_equal(check(p, "badpad", "battery staple"), MQ_PASSWD_NO_SUCH_USER);
    passwd_free(p);
    reports_free(&r);
}

static void test_duplicate_later_wins(void **state)
{
    struct reports r = {0};
    (void)state;

    const char *text = "alice:" SHA512_HASH "\n" /* password "battery staple" */
                       "bob:" SHA512_HASH "\n" FIXED_PBKDF2 "\n";
    struct mq_passwd *p = parse_str(text, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.line[0],
                        "t.pw:3: user name already defined on line 1; this later entry wins");
    assert_int_equal(passwd_count(p), 2);
    assert_int_equal(check(p, "alice", "correct horse"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "alice", "battery staple"), MQ_PASSWD_MISMATCH);
    passwd_free(p);
    reports_free(&r);
}

static void test_extra_colon(void **state)
{
    struct reports r = {0};
    (void)state;

    /* Mosquitto reads the hash only up to a second ':'; so do we, with a warning. */
    struct mq_passwd *p = parse_str(FIXED_SHA512 ":extra\n", &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.line[0], "t.pw:1: text after a second ':' ignored");
    assert_int_equal(check(p, "bob", "battery staple"), MQ_PASSWD_OK);
    passwd_free(p);
    reports_free(&r);
}

/* User names longer than an MQTT string can carry could never log in: say so. */
static void test_long_user_name(void **state)
{
    enum { MAX = 65535 };
    const size_t hash_len = sizeof(SHA512_HASH) - 1;
    char *text = malloc(2 * (MAX + 1 + 1 + hash_len + 1));
    struct reports r = {0};
    size_t n = 0;
    (void)state;

    assert_non_null(text);
    for (int k = 0; k < 2; k++) {
        size_t len = MAX + (size_t)k; /* 65535 is fine, 65536 is not */
        memset(text + n, k ? 'b' : 'a', len);
        n += len;
        text[n++] = ':';
        memcpy(text + n, SHA512_HASH, hash_len);
        n += hash_len;
        text[n++] = '\n';
    }
    struct mq_passwd *p = passwd_parse(text, n, "t.pw", collect, &r);
    assert_int_equal(passwd_count(p), 1);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.line[0], "t.pw:2: user name longer than 65535 bytes; line skipped");
    assert_int_equal(
        passwd_check(p, (const uint8_t *)text, MAX, (const uint8_t *)"battery staple", 14),
        MQ_PASSWD_OK);
    passwd_free(p);
    reports_free(&r);
    free(text);
}

static void test_iteration_cap(void **state)
{
    struct reports r = {0};
    (void)state;

    /* Parsing alone: the cap itself is accepted, the next count is not. No check is run,
     * 10 million rounds would take seconds. */
    struct mq_passwd *p = parse_str("max:$7$10000000$tG4X/8rKQJGnAygs$kQWlMDkhLSy7wMYGKlcFn9wn0"
                                    "qr1EwByUax3BkvjKojz/keHANSxVCzJWAnb+ZO6obp4ep830MYE9RDCqr"
                                    "M93g==\n"
                                    "over:$7$99999999999999999999999$tG4X/8rKQJGnAygs$kQWlMDkh"
                                    "LSy7wMYGKlcFn9wn0qr1EwByUax3BkvjKojz/keHANSxVCzJWAnb+ZO6o"
                                    "bp4ep830MYE9RDCqrM93g==\n",
                                    &r);
    assert_int_equal(passwd_count(p), 1);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.line[0], "t.pw:2: iteration count above 10000000; line skipped");
    passwd_free(p);
    reports_free(&r);
}

static void test_hash_round_trip(void **state)
{
    char h1[128], h2[128], line[300];
    struct reports r = {0};
    (void)state;

    assert_int_equal(passwd_hash("s3cret", 6, h1, sizeof(h1)), 0);
    assert_int_equal(passwd_hash("s3cret", 6, h2, sizeof(h2)), 0);
    /* "$7$101$" + 16 salt characters + "$" + 88 hash characters. */
    assert_int_equal(strlen(h1), 7 + 16 + 1 + 88);
    assert_memory_equal(h1, "$7$101$", 7);
    assert_int_equal(h1[23], '$');
    assert_string_equal(h1 + strlen(h1) - 2, "==");
    assert_string_not_equal(h1, h2); /* fresh salt each time */

    snprintf(line, sizeof(line), "u:%s\nv:%s\n", h1, h2);
    struct mq_passwd *p = parse_str(line, &r);
    assert_int_equal(r.n, 0);
    assert_int_equal(check(p, "u", "s3cret"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "v", "s3cret"), MQ_PASSWD_OK);
    assert_int_equal(check(p, "u", "s3cre"), MQ_PASSWD_MISMATCH);
    passwd_free(p);

    /* Binary passwords and the empty password hash as given. */
    assert_int_equal(passwd_hash("a\0b", 3, h1, sizeof(h1)), 0);
    assert_int_equal(passwd_hash(NULL, 0, h2, sizeof(h2)), 0);
    snprintf(line, sizeof(line), "bin:%s\nnone:%s\n", h1, h2);
    p = parse_str(line, &r);
    assert_int_equal(passwd_check(p, (const uint8_t *)"bin", 3, (const uint8_t *)"a\0b", 3),
                     MQ_PASSWD_OK);
    assert_int_equal(passwd_check(p, (const uint8_t *)"bin", 3, (const uint8_t *)"a", 1),
                     MQ_PASSWD_MISMATCH);
    assert_int_equal(check(p, "none", ""), MQ_PASSWD_OK);
    assert_int_equal(check(p, "none", NULL), MQ_PASSWD_MISMATCH);
    passwd_free(p);

    /* Too small a buffer or bad arguments: an error and an empty string, never a partial hash. */
    assert_int_equal(passwd_hash("x", 1, h1, 112), MQ_ERR_INVAL);
    assert_string_equal(h1, "");
    assert_int_equal(passwd_hash("x", 1, h1, 113), 0);
    assert_int_equal(passwd_hash(NULL, 1, h1, sizeof(h1)), MQ_ERR_INVAL);
    assert_int_equal(passwd_hash("x", 1, NULL, 0), MQ_ERR_INVAL);
    reports_free(&r);
}

static void test_load_errors(void **state)
{
    struct reports r = {0};
    char path[128];
    (void)state;

    snprintf(path, sizeof(path), "%s/missing.pw", tmpdir);
    assert_null(passwd_load(path, collect, &r));
    assert_int_equal(r.n, 1);
    assert_int_equal(r.errors, 1);
    char want[256];
    snprintf(want, sizeof(want), "%s: cannot open password file: No such file or directory", path);
    assert_string_equal(r.line[0], want);
    reports_free(&r);

    assert_null(passwd_load(tmpdir, collect, &r)); /* a directory */
    assert_int_equal(r.errors, 1);
    snprintf(want, sizeof(want), "%s: cannot read password file: Is a directory", tmpdir);
    assert_string_equal(r.line[0], want);
    reports_free(&r);

    assert_null(passwd_load(path, NULL, NULL)); /* no callback is fine */
}

/* Thousands of users, written to a file and loaded back. */
static void test_many_users(void **state)
{
    enum { N = 5000 };
    struct reports r = {0};
    char path[128], name[32];
    FILE *f;
    (void)state;

    snprintf(path, sizeof(path), "%s/many.pw", tmpdir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < N; i++)
        fprintf(f, "user%d:%s\n", i, SHA512_HASH);
    fclose(f);
    struct mq_passwd *p = passwd_load(path, collect, &r);
    assert_non_null(p);
    assert_int_equal(r.n, 0);
    assert_int_equal(passwd_count(p), N);
    for (int i = 0; i < N; i += 97) {
        snprintf(name, sizeof(name), "user%d", i);
        assert_int_equal(check(p, name, "battery staple"), MQ_PASSWD_OK);
    }
    assert_int_equal(check(p, "user5000", "battery staple"), MQ_PASSWD_NO_SUCH_USER);
    passwd_free(p);
}

/* An unknown user costs a hash of the file's typical cost, so refusals cannot be told apart
 * by time. Measurements alternate and keep the fastest of each kind, which shrugs off other
 * load on the machine; the bounds are loose: the point is "same order", not a benchmark. */
static void test_unknown_user_costs_a_hash(void **state)
{
    /* Counted in hashing work, not timed: a timing assertion would fail on a busy machine.
     * An unknown user must cost exactly what a known user with the file's typical
     * iteration count costs, so its absence cannot be told from the response time. */
    enum { ITER = 20000 };
    char line[256];
    struct reports r = {0};
    (void)state;

    pbkdf2_line(line, sizeof(line), "slow", "pw", ITER);
    struct mq_passwd *p = parse_str(line, &r);
    assert_int_equal(passwd_count(p), 1);
    uint64_t w0 = passwd_work_done();
    assert_int_equal(check(p, "slow", "wrong"), MQ_PASSWD_MISMATCH);
    uint64_t known = passwd_work_done() - w0;
    w0 = passwd_work_done();
    assert_int_equal(check(p, "nobody", "wrong"), MQ_PASSWD_NO_SUCH_USER);
    uint64_t unknown = passwd_work_done() - w0;
    assert_int_equal(known, ITER);
    assert_int_equal(unknown, ITER);
    passwd_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mosquitto_pbkdf2_file),
        cmocka_unit_test(test_mosquitto_sha512_file),
        cmocka_unit_test(test_mosquitto_upgraded_file),
        cmocka_unit_test(test_fixed_lines),
        cmocka_unit_test(test_openssl_built_lines),
        cmocka_unit_test(test_format_tolerance),
        cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_duplicate_later_wins),
        cmocka_unit_test(test_extra_colon),
        cmocka_unit_test(test_long_user_name),
        cmocka_unit_test(test_iteration_cap),
        cmocka_unit_test(test_hash_round_trip),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_many_users),
        cmocka_unit_test(test_unknown_user_costs_a_hash),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}

/* passwd.c - Mosquitto password files: parse, look up, verify, and make new hashes.
 *
 * Owns the loaded users: a hash map from user name to one decoded entry (salt, hash,
 * iterations). Reports only through the caller's callback and never puts a password or a
 * hash into a report. Invariant: a struct mq_passwd is never modified after passwd_parse
 * returns it, so checks may run concurrently; all key material is wiped before it is freed.
 */
#include "midge/passwd.h"
#include "midge/file.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "midge/err.h"
#include "midge/hmap.h"

#define SALT_LEN 12               /* what mosquitto_passwd writes and the broker demands */
#define HASH_LEN 64               /* SHA-512 output, also the PBKDF2 output length */
#define SALT_B64_LEN 16           /* 12 bytes -> 16 characters, no padding */
#define HASH_B64_LEN 88           /* 64 bytes -> 88 characters, "==" padding */
#define DEFAULT_ITERATIONS 101    /* mosquitto_passwd's PW_DEFAULT_ITERATIONS */
#define MAX_ITERATIONS 10000000u  /* far above any sane file; bounds the work per CONNECT */
#define MAX_USER_LEN 65535        /* an MQTT string cannot carry more */
#define MAX_FILE_SIZE (64u << 20) /* ~500,000 users: anything bigger is not a password file */
#define REPORT_MAX 512            /* longest diagnostic line */

enum hash_type {
    HASH_SHA512 = 6, /* "$6$": SHA-512(password || salt) */
    HASH_PBKDF2 = 7, /* "$7$": PBKDF2-HMAC-SHA512(password, salt, iterations) */
};

struct entry {
    uint8_t type; /* enum hash_type */
    uint32_t iterations;
    uint8_t salt[SALT_LEN];
    uint8_t hash[HASH_LEN];
    unsigned line;   /* where it was defined, for the duplicate warning */
    size_t user_len; /* the user name follows; it is the map key */
    char user[];
};

struct mq_passwd {
    struct mq_hmap users;
    /* Unknown users cost one hash of this kind, so a refusal takes as long whether the user
     * exists or not and user names cannot be enumerated by timing. */
    uint8_t decoy_type;
    uint32_t decoy_iterations;
};

struct parser {
    const char *name;
    mq_passwd_report_fn report;
    void *ctx;
    unsigned line;
};

static void report(const struct parser *ps, bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats "name:line: message" (or "name: message" when line is 0) and hands it on. */
static void report(const struct parser *ps, bool is_error, const char *fmt, ...)
{
    char msg[REPORT_MAX];
    char out[REPORT_MAX + 64];
    va_list ap;

    if (!ps->report)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ps->line)
        snprintf(out, sizeof(out), "%s:%u: %s", ps->name, ps->line, msg);
    else
        snprintf(out, sizeof(out), "%s: %s", ps->name, msg);
    ps->report(ps->ctx, is_error, out);
}

static bool is_blank(char c)
{
    /* isspace() in the C locale: what Mosquitto trims around the user name and hash. */
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_blank(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_blank((*s)[*n - 1]))
        (*n)--;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes standard padded base64 that must yield exactly want bytes. EVP_DecodeBlock skips
 * surrounding whitespace, decodes '=' as zero bits and counts them as output, so the text is
 * checked here first: exact length, alphabet, and only the padding that length implies. */
static bool b64_decode_exact(const char *s, size_t n, uint8_t *out, size_t want)
{
    uint8_t tmp[HASH_B64_LEN];
    size_t pad = (3 - want % 3) % 3;
    bool ok = false;

    if (n != (want + 2) / 3 * 4 || n > sizeof(tmp))
        return false;
    for (size_t i = 0; i < n; i++) {
        bool padding = i >= n - pad;
        if (padding ? s[i] != '=' : b64_value(s[i]) < 0)
            return false;
    }
    if (EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n) != (int)(n / 4 * 3))
        goto out;
    memcpy(out, tmp, want);
    ok = true;
out:
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return ok;
}

/* Decodes "$6$salt$hash" or "$7$iterations$salt$hash" into e; on failure returns a
 * message for the warning (which never quotes the hash). */
static const char *decode_hash(const char *s, size_t n, struct entry *e)
{
    const char *end = s + n, *field, *dollar;

    if (n == 0)
        return "no password hash after ':'";
    if (s[0] != '$')
        return "plain-text password, not a hash (convert the file with midge-passwd -U)";
    if (n < 3 || (s[1] != '6' && s[1] != '7') || s[2] != '$')
        return "unknown password hash type (only $6$ and $7$ are supported)";
    e->type = s[1] == '6' ? HASH_SHA512 : HASH_PBKDF2;
    field = s + 3;
    if (e->type == HASH_PBKDF2) {
        uint64_t it = 0;
        dollar = memchr(field, '$', (size_t)(end - field));
        if (!dollar || dollar == field)
            return "missing iteration count in $7$ hash";
        for (const char *c = field; c < dollar; c++) {
            if (*c < '0' || *c > '9')
                return "iteration count is not a number";
            it = it * 10 + (uint64_t)(*c - '0');
            if (it > MAX_ITERATIONS)
                return "iteration count above 10000000";
        }
        if (it == 0)
            return "iteration count is 0";
        e->iterations = (uint32_t)it;
        field = dollar + 1;
    }
    dollar = memchr(field, '$', (size_t)(end - field));
    if (!dollar)
        return "missing '$' between salt and hash";
    if (!b64_decode_exact(field, (size_t)(dollar - field), e->salt, SALT_LEN))
        return "salt is not 12 bytes of base64";
    field = dollar + 1;
    if (!b64_decode_exact(field, (size_t)(end - field), e->hash, HASH_LEN))
        return "hash is not 64 bytes of base64";
    return NULL;
}

static void entry_free(struct entry *e)
{
    if (!e)
        return;
    OPENSSL_cleanse(e, sizeof(*e) + e->user_len);
    free(e);
}

/* Parses one line (without its '\n'). Returns 0 (line used or skipped) or MQ_ERR_NOMEM. */
static int parse_line(struct parser *ps, struct mq_passwd *p, const char *s, size_t n)
{
    struct entry tmp = {0}, *e = NULL, *old;
    const char *colon, *extra, *user, *hash, *msg;
    size_t user_len, hash_len;
    int rc = 0;

    if (n && s[0] == '#')
        goto out; /* Mosquitto's comment rule: '#' in the first column */
    user = s;
    user_len = n;
    trim(&user, &user_len);
    if (user_len == 0)
        goto out;
    if (memchr(s, '\0', n)) {
        report(ps, false, "contains a NUL byte; line skipped");
        goto out;
    }
    colon = memchr(s, ':', n);
    if (!colon) {
        report(ps, false, "no ':' between user name and password hash; line skipped");
        goto out;
    }
    user = s;
    user_len = (size_t)(colon - s);
    trim(&user, &user_len);
    if (user_len == 0) {
        report(ps, false, "empty user name; line skipped");
        goto out;
    }
    if (user_len > MAX_USER_LEN) {
        report(ps, false, "user name longer than 65535 bytes; line skipped");
        goto out;
    }
    hash = colon + 1;
    hash_len = n - (size_t)(hash - s);
    extra = memchr(hash, ':', hash_len);
    if (extra) {
        /* Mosquitto reads only up to the next ':'; do the same, but say so. */
        hash_len = (size_t)(extra - hash);
        report(ps, false, "text after a second ':' ignored");
    }
    trim(&hash, &hash_len);
    msg = decode_hash(hash, hash_len, &tmp);
    if (msg) {
        report(ps, false, "%s; line skipped", msg);
        goto out;
    }

    e = malloc(sizeof(*e) + user_len + 1);
    if (!e) {
        rc = MQ_ERR_NOMEM;
        goto out;
    }
    *e = tmp;
    e->line = ps->line;
    e->user_len = user_len;
    memcpy(e->user, user, user_len);
    e->user[user_len] = '\0';
    old = hmap_get(&p->users, e->user, user_len);
    if (hmap_put(&p->users, e->user, user_len, e) != 0) {
        rc = MQ_ERR_NOMEM;
        goto out;
    }
    if (old) {
        /* Mosquitto's hash table also ends up answering with the later line. */
        report(ps, false, "user name already defined on line %u; this later entry wins", old->line);
        entry_free(old);
    }
    e = NULL;
out:
    entry_free(e);
    OPENSSL_cleanse(&tmp, sizeof(tmp));
    return rc;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Picks the decoy cost: the median $7$ iteration count (what a typical user costs), or one
 * SHA-512 when the file holds only $6$ hashes. Returns 0 or MQ_ERR_NOMEM. */
static int choose_decoy(struct mq_passwd *p)
{
    uint32_t *its = NULL, pos = 0, n = 0;
    struct entry *e;
    int rc = 0;

    p->decoy_type = HASH_PBKDF2;
    p->decoy_iterations = DEFAULT_ITERATIONS;
    if (hmap_count(&p->users) == 0)
        goto out;
    its = malloc(sizeof(*its) * hmap_count(&p->users));
    if (!its) {
        rc = MQ_ERR_NOMEM;
        goto out;
    }
    while ((e = hmap_next(&p->users, &pos, NULL, NULL)))
        if (e->type == HASH_PBKDF2)
            its[n++] = e->iterations;
    if (n == 0) {
        p->decoy_type = HASH_SHA512;
        goto out;
    }
    qsort(its, n, sizeof(*its), cmp_u32);
    p->decoy_iterations = its[n / 2];
out:
    free(its);
    return rc;
}

/* passwd_parse: see passwd.h. text is borrowed; the result is owned by the caller and
 * released with passwd_free. NULL only when out of memory (reported as an error). */
struct mq_passwd *passwd_parse(const char *text, size_t len, const char *name,
                               mq_passwd_report_fn report_fn, void *ctx)
{
    struct parser ps = {.name = name ? name : "(password text)", .report = report_fn, .ctx = ctx};
    struct mq_passwd *p = calloc(1, sizeof(*p));
    const char *s = text, *end = text + len;
    int rc = MQ_ERR_NOMEM;

    if (!p)
        goto out;
    hmap_init(&p->users);
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *eol = nl ? nl : end;
        ps.line++;
        rc = parse_line(&ps, p, s, (size_t)(eol - s));
        if (rc != 0)
            goto out;
        s = nl ? nl + 1 : end;
    }
    rc = choose_decoy(p);
out:
    if (rc != 0) {
        ps.line = 0;
        report(&ps, true, "%s", mq_strerror(rc));
        passwd_free(p);
        p = NULL;
    }
    return p;
}

/* passwd_load: see passwd.h. path is borrowed; the result is owned by the caller. Reads
 * the whole file first so a file that changes while being read is never half-parsed. */
struct mq_passwd *passwd_load(const char *path, mq_passwd_report_fn report_fn, void *ctx)
{
    struct parser ps = {.name = path, .report = report_fn, .ctx = ctx};
    char *buf = NULL, why[256];
    size_t len = 0;
    if (file_read_whole(path, MAX_FILE_SIZE, "password file", &buf, &len, why, sizeof(why))) {
        report(&ps, true, "%s", why);
        return NULL;
    }
    struct mq_passwd *p = passwd_parse(buf, len, path, report_fn, ctx);
    OPENSSL_cleanse(buf, len); /* hashes do not linger in freed memory */
    free(buf);
    return p;
}

/* passwd_free: releases p and everything it owns (NULL is ignored). */
void passwd_free(struct mq_passwd *p)
{
    struct entry *e;
    uint32_t pos = 0;

    if (!p)
        return;
    while ((e = hmap_next(&p->users, &pos, NULL, NULL)))
        entry_free(e);
    hmap_destroy(&p->users);
    free(p);
}

/* passwd_count: number of users loaded (0 for NULL). */
size_t passwd_count(const struct mq_passwd *p)
{
    return p ? hmap_count(&p->users) : 0;
}

/* Computes the digest of password for the given scheme into out[HASH_LEN]. Returns false
 * when OpenSSL fails, which callers treat as a mismatch (fail closed). */
/* Work done by digest(), for passwd_work_done(): PBKDF2 iterations (1 per SHA-512). */
static _Atomic uint64_t g_work_done;

uint64_t passwd_work_done(void)
{
    return g_work_done;
}

static bool digest(uint8_t type, uint32_t iterations, const uint8_t *salt, const uint8_t *password,
                   size_t password_len, uint8_t *out)
{
    g_work_done += type == HASH_PBKDF2 ? iterations : 1;
    static const uint8_t empty[1];
    const uint8_t *pw = password ? password : empty;
    EVP_MD_CTX *ctx = NULL;
    unsigned int out_len = 0;
    bool ok = false;

    if (password_len > INT_MAX)
        goto out;
    if (type == HASH_PBKDF2) {
        ok = PKCS5_PBKDF2_HMAC((const char *)pw, (int)password_len, salt, SALT_LEN, (int)iterations,
                               EVP_sha512(), HASH_LEN, out) == 1;
        goto out;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        goto out;
    ok = EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, pw, password_len) == 1 &&
         EVP_DigestUpdate(ctx, salt, SALT_LEN) == 1 &&
         EVP_DigestFinal_ex(ctx, out, &out_len) == 1 && out_len == HASH_LEN;
out:
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* passwd_check: see passwd.h. user and password are borrowed byte strings. A NULL password
 * means the client sent none: that never matches (as in Mosquitto) but still costs a hash;
 * a non-NULL password of length 0 is the empty password. */
enum mq_passwd_result passwd_check(const struct mq_passwd *p, const uint8_t *user, size_t user_len,
                                   const uint8_t *password, size_t password_len)
{
    static const uint8_t decoy_salt[SALT_LEN] = "midge-decoy";
    uint8_t computed[HASH_LEN];
    const struct entry *e = NULL;
    enum mq_passwd_result res = MQ_PASSWD_NO_SUCH_USER;

    if (p && user && user_len) /* empty names are never loaded */
        e = hmap_get(&p->users, user, user_len);
    if (!e) {
        if (p)
            (void)digest(p->decoy_type, p->decoy_iterations, decoy_salt, password, password_len,
                         computed);
        goto out;
    }
    res = MQ_PASSWD_MISMATCH;
    if (!digest(e->type, e->iterations, e->salt, password, password_len, computed))
        goto out;
    if (password && CRYPTO_memcmp(computed, e->hash, HASH_LEN) == 0)
        res = MQ_PASSWD_OK;
out:
    OPENSSL_cleanse(computed, sizeof(computed));
    return res;
}

/* passwd_hash: see passwd.h. password is borrowed (may be NULL only when password_len is
 * 0); out is the caller's buffer and needs room for 113 bytes with the default iterations.
 * Returns 0, MQ_ERR_INVAL (bad arguments, buffer too small) or MQ_ERR_IO (no randomness or
 * an OpenSSL failure). */
int passwd_hash(const char *password, size_t password_len, char *out, size_t cap)
{
    uint8_t salt[SALT_LEN], hash[HASH_LEN];
    char salt64[SALT_B64_LEN + 1], hash64[HASH_B64_LEN + 1];
    int rc = MQ_ERR_INVAL, n;

    if (!out || (!password && password_len) || password_len > INT_MAX)
        goto out;
    if (cap)
        out[0] = '\0';
    rc = MQ_ERR_IO;
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        goto out;
    if (!digest(HASH_PBKDF2, DEFAULT_ITERATIONS, salt, (const uint8_t *)password, password_len,
                hash))
        goto out;
    if (EVP_EncodeBlock((unsigned char *)salt64, salt, SALT_LEN) != SALT_B64_LEN ||
        EVP_EncodeBlock((unsigned char *)hash64, hash, HASH_LEN) != HASH_B64_LEN)
        goto out;
    n = snprintf(out, cap, "$7$%d$%s$%s", DEFAULT_ITERATIONS, salt64, hash64);
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            out[0] = '\0';
        rc = MQ_ERR_INVAL;
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(hash, sizeof(hash));
    OPENSSL_cleanse(hash64, sizeof(hash64));
    return rc;
}

/* fuzz_acl.c - libFuzzer target for src/core/acl.c.
 *
 * Owns only the oracle: the input is an ACL file. A load fails exactly when an error was
 * reported, and every report names the file. A loaded ACL is then asked about the words the
 * input itself contains (last word of each line as a topic or filter, `user` names as users);
 * subscribing to a topic name must give the same answer as reading it, and nothing may crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/acl.h"
#include "midge/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_acl: %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_WORDS 12

struct reports {
    int errors;
};

static void on_report(void *ctx, bool is_error, const char *line)
{
    struct reports *r = ctx;
    CHECK(strncmp(line, "fuzz:", 5) == 0);
    r->errors += is_error;
}

/* Copy s[0..n) as a C string, or NULL when it holds a NUL byte. */
static char *dup_word(const uint8_t *s, size_t n)
{
    if (memchr(s, '\0', n))
        return NULL;
    char *w = malloc(n + 1);
    CHECK(w);
    memcpy(w, s, n);
    w[n] = '\0';
    return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reports rep = {0};
    struct mq_acl *acl = acl_parse((const char *)data, size, "fuzz", on_report, &rep);
    CHECK((acl == NULL) == (rep.errors > 0));
    if (!acl)
        return 0;

    char *topics[MAX_WORDS], *users[MAX_WORDS + 1];
    size_t ntopics = 0, nusers = 0;
    users[nusers++] = NULL; /* anonymous */
    for (const uint8_t *p = data, *end = data + size; p < end && ntopics < MAX_WORDS;) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *next = nl ? nl + 1 : end;
        size_t n = (size_t)((nl ? nl : end) - p);
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' '))
            n--;
        const uint8_t *sp = n ? memrchr(p, ' ', n) : NULL;
        const uint8_t *w = sp ? sp + 1 : p;
        size_t wn = n - (size_t)(w - p);
        if (wn && (topics[ntopics] = dup_word(w, wn)))
            ntopics++;
        if (n > 5 && !memcmp(p, "user ", 5) && nusers <= MAX_WORDS &&
            (users[nusers] = dup_word(p + 5, n - 5)))
            nusers++;
        p = next;
    }

    for (size_t t = 0; t < ntopics; t++) {
        const uint8_t *tp = (const uint8_t *)topics[t];
        size_t tn = strlen(topics[t]);
        bool name = topic_check_name(tp, tn) == 0;
        bool filter = topic_check_filter(tp, tn) == 0;
        for (size_t u = 0; u < nusers; u++) {
            const char *cid = u ? users[u] : "client-1";
            if (name) {
                bool r = acl_check(acl, users[u], cid, tp, tn, MQ_ACL_READ);
                CHECK(acl_check(acl, users[u], cid, tp, tn, MQ_ACL_SUBSCRIBE) == r);
                (void)acl_check(acl, users[u], cid, tp, tn, MQ_ACL_WRITE);
            } else if (filter) {
                (void)acl_check(acl, users[u], cid, tp, tn, MQ_ACL_SUBSCRIBE);
            }
        }
    }
    for (size_t t = 0; t < ntopics; t++)
        free(topics[t]);
    for (size_t u = 1; u < nusers; u++)
        free(users[u]);
    acl_free(acl);
    return 0;
}

/* fuzz_topic.c - libFuzzer target for src/codec/topic.c.
 *
 * Owns only the oracle: the input is "filter\nname" (or one string used as both); validation
 * results must agree with each other, and topic_matches must agree with the reference matcher
 * below, which splits both strings into levels and follows MQTT 3.1.1 §4.7 literally.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_topic: %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct level {
    const uint8_t *p;
    size_t n;
};

/* Split on every '/': "a//b" is 3 levels, "/" is 2 empty levels. out holds len + 1 entries. */
static size_t split(const uint8_t *s, size_t len, struct level *out)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '/') {
            out[k++] = (struct level){s + start, i - start};
            start = i + 1;
        }
    }
    return k;
}

static bool is(struct level l, char c)
{
    return l.n == 1 && l.p[0] == c;
}

static bool ref_matches(const uint8_t *filter, size_t flen, const uint8_t *name, size_t nlen)
{
    struct level *f = malloc((flen + 1) * sizeof *f), *n = malloc((nlen + 1) * sizeof *n);
    CHECK(f && n);
    size_t nf = split(filter, flen, f), nn = split(name, nlen, n);
    bool result;
    if (nlen > 0 && name[0] == '$' && (is(f[0], '+') || is(f[0], '#'))) {
        result = false; /* §4.7.2 */
        goto out;
    }
    for (size_t i = 0; i < nf; i++) {
        if (is(f[i], '#')) {
            result = true; /* this level and everything below, including none */
            goto out;
        }
        if (i >= nn || (!is(f[i], '+') && (f[i].n != n[i].n || memcmp(f[i].p, n[i].p, f[i].n)))) {
            result = false;
            goto out;
        }
    }
    result = nf == nn;
out:
    free(f);
    free(n);
    return result;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    const uint8_t *filter = data, *name = nl ? nl + 1 : data;
    size_t flen = nl ? (size_t)(nl - data) : size, nlen = nl ? size - flen - 1 : size;

    int fr = topic_check_filter(filter, flen), nr = topic_check_name(name, nlen);
    /* Every valid name is a valid filter that matches exactly itself. */
    if (nr == 0) {
        CHECK(topic_check_filter(name, nlen) == 0);
        CHECK(topic_matches(name, nlen, name, nlen));
    }
    /* A filter without wildcards is a valid name; UTF-8 errors are the same in both checks. */
    if (fr == 0 && !memchr(filter, '+', flen) && !memchr(filter, '#', flen))
        CHECK(topic_check_name(filter, flen) == 0);
    if (fr == MQ_ERR_BAD_UTF8 || fr == MQ_ERR_UTF8_NULL || fr == MQ_ERR_UTF8_SURROGATE)
        CHECK(topic_check_utf8(filter, flen) == fr && topic_check_name(filter, flen) == fr);

    if (fr == 0 && nr == 0)
        CHECK(topic_matches(filter, flen, name, nlen) == ref_matches(filter, flen, name, nlen));
    return 0;
}

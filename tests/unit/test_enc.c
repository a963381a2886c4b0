/* test_enc.c - src/admin/enc.c: percent-decoding, query strings, base64 (RFC 4648 vectors),
 * and proto_admin.c's topic_filters_overlap, the admin API's pure helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "midge/enc.h"
#include "midge/proto_admin.h"

static long pct(const char *in, char *out, bool plus)
{
    long n = enc_pct_decode(in, strlen(in), out, plus);
    if (n >= 0)
        out[n] = 0;
    return n;
}

static void test_percent(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(pct("a%2Fb%2fc", out, false), 5);
    assert_string_equal(out, "a/b/c");
    assert_int_equal(pct("a+b", out, true), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(pct("a+b", out, false), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(pct("%E6%BA%AB", out, false), 3);
    assert_string_equal(out, "\xe6\xba\xab");
    assert_int_equal(pct("%00", out, false), 1);
    assert_int_equal(out[0], 0);
    assert_int_equal(pct("%", out, false), -1);
    assert_int_equal(pct("%4", out, false), -1);
    assert_int_equal(pct("%zz", out, false), -1);
    assert_int_equal(pct("ab%4g", out, false), -1);
    assert_int_equal(pct("", out, false), 0);
}

static void test_query(void **state)
{
    (void)state;
    const char q[] = "a=1&&b&c=x%3Dy&=z&";
    const char *p = q, *end = q + strlen(q);
    struct enc_param e;
    const char *names[] = {"a", "b", "c", ""};
    const char *values[] = {"1", NULL, "x%3Dy", "z"};
    for (int i = 0; i < 4; i++) {
        assert_true(enc_query_next(&p, end, &e));
        assert_int_equal(e.name_len, strlen(names[i]));
        assert_memory_equal(e.name, names[i], e.name_len);
        if (values[i]) {
            assert_int_equal(e.value_len, strlen(values[i]));
            assert_memory_equal(e.value, values[i], e.value_len);
        } else {
            assert_null(e.value);
        }
    }
    assert_false(enc_query_next(&p, end, &e));
}

static void test_base64(void **state)
{
    (void)state;
    /* RFC 4648 section 10. */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char enc[32];
    uint8_t dec[32];
    for (int i = 0; i < 7; i++) {
        size_t n = strlen(plain[i]);
        assert_int_equal(enc_b64_encode((const uint8_t *)plain[i], n, enc, false), strlen(std[i]));
        assert_string_equal(enc, std[i]);
        assert_int_equal(enc_b64_encode((const uint8_t *)plain[i], n, enc, true), strlen(url[i]));
        assert_string_equal(enc, url[i]);
        assert_int_equal(enc_b64_len(n, false), strlen(std[i]));
        assert_int_equal(enc_b64_len(n, true), strlen(url[i]));
        assert_int_equal(enc_b64_decode(std[i], strlen(std[i]), dec, false), (long)n);
        assert_memory_equal(dec, plain[i], n);
        assert_int_equal(enc_b64_decode(url[i], strlen(url[i]), dec, true), (long)n);
        assert_memory_equal(dec, plain[i], n);
        /* URL-safe with its padding is accepted too. */
        assert_int_equal(enc_b64_decode(std[i], strlen(std[i]), dec, true), (long)n);
    }
    assert_int_equal(enc_b64_decode("Zg", 2, dec, false), -1);       /* padding required */
    assert_int_equal(enc_b64_decode("Zh==", 4, dec, false), -1);     /* stray bits */
    assert_int_equal(enc_b64_decode("Z===", 4, dec, false), -1);     /* one char of a quad */
    assert_int_equal(enc_b64_decode("Zm9v-_==", 8, dec, false), -1); /* URL alphabet */
    assert_int_equal(enc_b64_decode("Zm+/", 4, dec, true), -1);      /* standard alphabet */
    assert_int_equal(enc_b64_decode("Zg=", 3, dec, true), -1);       /* half padding */
    assert_int_equal(enc_b64_decode("Zm=v", 4, dec, false), -1);     /* '=' inside */
    assert_int_equal(enc_b64_decode("/w==", 4, dec, false), 1);
    assert_int_equal(dec[0], 0xff);
}

static bool overlap(const char *a, const char *b)
{
    bool r = topic_filters_overlap((const uint8_t *)a, strlen(a), (const uint8_t *)b, strlen(b));
    /* Symmetric by definition. */
    assert_true(
        r == topic_filters_overlap((const uint8_t *)b, strlen(b), (const uint8_t *)a, strlen(a)));
    return r;
}

static void test_filters_overlap(void **state)
{
    (void)state;
    assert_true(overlap("a/b/c", "a/b/c"));
    assert_true(overlap("a/+/c", "a/b/c"));
    assert_true(overlap("a/#", "a/b/c"));
    assert_true(overlap("a/#", "a"));
    assert_true(overlap("#", "a/b"));
    assert_true(overlap("a/+", "+/b"));
    assert_true(overlap("a/+/#", "+/b"));
    assert_true(overlap("b/#", "b/x"));
    assert_true(overlap("+/+", "a/"));
    assert_true(overlap("$SYS/#", "$SYS/broker/uptime"));
    assert_false(overlap("a/+/c", "a/b/d"));
    assert_false(overlap("a/+", "a/b/c"));
    assert_false(overlap("a/b", "a"));
    assert_false(overlap("a", "a/b"));
    assert_false(overlap("#", "$SYS/x"));
    assert_false(overlap("+/broker", "$SYS/broker"));
    assert_false(overlap("a/b/c", "a/b/cd"));
    assert_false(overlap("b/x", "a/#"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_filters_overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

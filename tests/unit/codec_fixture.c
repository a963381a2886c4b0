/* codec_fixture.c - the checks of codec_fixture.h. */
#include "codec_fixture.h"

#include <stdlib.h>
#include <string.h>

void check_err(long got, long want, const char *file, int line)
{
    if (got == want)
        return;
    print_error("got %ld (%s), want %ld (%s)\n", got, mq_err_name((int)got), want,
                mq_err_name((int)want));
    _fail(file, line);
}

bool bytes_is(struct mq_bytes b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.ptr, s, b.len) == 0);
}

void decode_valid_at(const struct mq_decode_limits *limits, const uint8_t *wire, size_t len,
                     struct mq_packet *p)
{
    struct mq_packet untouched;
    for (size_t k = 0; k < len; k++) {
        memset(p, 0x5A, sizeof *p);
        memset(&untouched, 0x5A, sizeof untouched);
        int rc = codec_decode(wire, k, limits, p);
        if (rc != 0)
            fail_msg("prefix of %zu/%zu bytes: %d (%s)", k, len, rc, mq_err_name(rc));
        assert_memory_equal(p, &untouched, sizeof *p);
    }
    int rc = codec_decode(wire, len, limits, p);
    if (rc != (int)len)
        fail_msg("decode: %d (%s), want %zu", rc, mq_err_name(rc), len);

    uint8_t *out = malloc(len + 8);
    assert_non_null(out);
    assert_int_equal(codec_encode(p, NULL, 0), (long)len);
    memset(out, 0xEE, len + 8);
    assert_int_equal(codec_encode(p, out, len - 1), (long)len);
    for (size_t i = 0; i < len + 8; i++)
        assert_int_equal(out[i], 0xEE); /* too small: nothing written */
    assert_int_equal(codec_encode(p, out, len + 8), (long)len);
    assert_memory_equal(out, wire, len);
    assert_int_equal(out[len], 0xEE);
    free(out);
}

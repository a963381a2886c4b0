/* codec_fixture.h - what the codec unit tests (test_codec.c for MQTT 3.x, test_codec5.c for
 * MQTT 5) both check packets with: errors compared by name, golden bytes written inline, and
 * the round trip every valid packet must survive. Pure: the codec has no state to fake.
 */
#ifndef MIDGE_TEST_CODEC_FIXTURE_H
#define MIDGE_TEST_CODEC_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "midge/codec.h"
#include "midge/err.h"

/* Compare return values, naming the errors on failure so it says which rule fired. */
#define assert_err(got, want) check_err((got), (want), __FILE__, __LINE__)
void check_err(long got, long want, const char *file, int line);

/* A buffer and its length from byte values: f(BYTES(0x10, 2, ...)). */
#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* b holds exactly the characters of s. */
bool bytes_is(struct mq_bytes b, const char *s);

/* Decode a valid packet at `limits` (NULL: none) into *p and check what must hold for every
 * valid packet: the whole packet is consumed, every shorter prefix is "incomplete" without
 * touching *p, and codec_encode reproduces the exact bytes, refusing to write into a short
 * buffer. */
void decode_valid_at(const struct mq_decode_limits *limits, const uint8_t *wire, size_t len,
                     struct mq_packet *p);

#endif

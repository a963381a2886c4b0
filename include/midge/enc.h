/* enc.h - the text encodings of an HTTP request the admin API reads: percent-encoding (RFC
 * 3986), query strings (application/x-www-form-urlencoded) and base64 (RFC 4648, standard
 * and URL-safe). Pure: no allocation, no state; every function bounds its reads and writes
 * by the lengths it is given (tests/unit/test_enc.c, tests/fuzz/fuzz_admin.c).
 */
#ifndef MIDGE_ENC_H
#define MIDGE_ENC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Percent-decode src[0..n) into dst (room for n bytes; dst may be src): "%XX" is the byte
 * 0xXX (hex digits of either case), and with plus_space a '+' is a space (query strings).
 * Returns the decoded length, or -1 for a '%' not followed by two hex digits. Decoded bytes
 * may be anything, NUL included: the caller decides what it accepts. */
long enc_pct_decode(const char *src, size_t n, char *dst, bool plus_space);

/* One "name=value" of a query string: raw (still encoded) spans into the string. */
struct enc_param {
    const char *name, *value;
    size_t name_len, value_len; /* value_len 0 and value NULL for "name" without '=' */
};

/* The next parameter of the query string at *pos (advanced past it and its '&'), up to
 * end; empty ones ("a&&b") are skipped. false when none is left. */
bool enc_query_next(const char **pos, const char *end, struct enc_param *out);

/* Decode base64 src[0..n) into dst (room for n / 4 * 3 + 3 bytes). url: the URL-safe
 * alphabet ('-', '_') and padding optional; otherwise the standard one ('+', '/') with the
 * padding RFC 4648 requires. Returns the decoded length, or -1 when src is not base64 of
 * that kind (a character outside the alphabet, wrong padding, bits left over). */
long enc_b64_decode(const char *src, size_t n, uint8_t *dst, bool url);

/* Encode src[0..n) as base64 into dst (room for enc_b64_len(n, url) + 1 bytes), NUL-
 * terminated; url: the URL-safe alphabet without padding. Returns the length. */
size_t enc_b64_encode(const uint8_t *src, size_t n, char *dst, bool url);

/* The length of the base64 encoding of n bytes (without the NUL). */
static inline size_t enc_b64_len(size_t n, bool url)
{
    return url ? n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0) : (n + 2) / 3 * 4;
}

#endif

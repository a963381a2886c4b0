/* enc.c - percent-encoding, query strings and base64 for the admin API (enc.h).
 *
 * Owns nothing and allocates nothing. Strict where a guess could be exploited: a '%' must
 * be followed by two hex digits, base64 must be canonical (no stray bits, padding where the
 * alphabet requires it), so one request has one meaning.
 */
#include "midge/enc.h"

#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long enc_pct_decode(const char *src, size_t n, char *dst, bool plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int h = hexval((unsigned char)src[i + 1]), l = hexval((unsigned char)src[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            dst[o++] = (char)(h << 4 | l);
            i += 2;
        } else if (c == '+' && plus_space) {
            dst[o++] = ' ';
        } else {
            dst[o++] = (char)c;
        }
    }
    return (long)o;
}

bool enc_query_next(const char **pos, const char *end, struct enc_param *out)
{
    const char *p = *pos;
    while (p < end && *p == '&')
        p++;
    if (p >= end) {
        *pos = end;
        return false;
    }
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *stop = amp ? amp : end;
    const char *eq = memchr(p, '=', (size_t)(stop - p));
    out->name = p;
    out->name_len = (size_t)((eq ? eq : stop) - p);
    out->value = eq ? eq + 1 : NULL;
    out->value_len = eq ? (size_t)(stop - eq - 1) : 0;
    *pos = amp ? amp + 1 : end;
    return true;
}

static int b64val(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

long enc_b64_decode(const char *src, size_t n, uint8_t *dst, bool url)
{
    size_t pad = 0;
    while (pad < 2 && n > pad && src[n - 1 - pad] == '=')
        pad++;
    if (!url && (n % 4 != 0))
        return -1;
    size_t data = n - pad;
    if (url && pad && (n % 4 != 0))
        return -1; /* padded URL-safe base64 must still be whole quads */
    if (data % 4 == 1)
        return -1;
    if (pad && (data + pad) % 4 != 0)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < data; i++) {
        int v = b64val((unsigned char)src[i], url);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1; /* stray bits: not the canonical encoding */
    return (long)o;
}

size_t enc_b64_encode(const uint8_t *src, size_t n, char *dst, bool url)
{
    const char *abc = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                          : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        dst[o++] = abc[v >> 18];
        dst[o++] = abc[v >> 12 & 63];
        dst[o++] = abc[v >> 6 & 63];
        dst[o++] = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        dst[o++] = abc[v >> 18];
        dst[o++] = abc[v >> 12 & 63];
        if (!url) {
            dst[o++] = '=';
            dst[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        dst[o++] = abc[v >> 18];
        dst[o++] = abc[v >> 12 & 63];
        dst[o++] = abc[v >> 6 & 63];
        if (!url)
            dst[o++] = '=';
    }
    dst[o] = '\0';
    return o;
}

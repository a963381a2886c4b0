/* topic.c - MQTT UTF-8 string rules, topic name / filter validation and filter matching.
 *
 * Owns the byte-level rules of MQTT 3.1.1 §1.5.3 and §4.7. Pure: works on (pointer, length)
 * pairs that are never NUL-terminated, allocates nothing, keeps nothing. topic_matches trusts
 * its inputs to have passed topic_check_filter / topic_check_name; the checks never trust theirs.
 */
#include "midge/topic.h"

#include <string.h>

#include "midge/err.h"

#define HIGH_BITS 0x8080808080808080ull
#define LOW_BITS 0x0101010101010101ull

/* Advance over a run of ASCII without NUL, 8 bytes at a time: topics and client ids are
 * almost always plain ASCII, so the per-character decoder below rarely runs. */
static size_t ascii_prefix(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (len - i >= 8) {
        uint64_t w;
        memcpy(&w, s + i, sizeof w);
        /* Any byte >= 0x80, or any zero byte (classic "has zero byte" trick), ends the run. */
        if ((w & HIGH_BITS) || ((w - LOW_BITS) & ~w & HIGH_BITS))
            break;
        i += 8;
    }
    return i;
}

int topic_check_utf8(const uint8_t *s, size_t len)
{
    /* Smallest code point each sequence length may encode; anything below is overlong. */
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = ascii_prefix(s, len);

    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return MQ_ERR_UTF8_NULL;
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC0 && c <= 0xDF) {
            n = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF7) {
            n = 4;
            cp = c & 0x07;
        } else {
            return MQ_ERR_BAD_UTF8; /* stray continuation byte or 0xF8..0xFF */
        }
        if (len - i < n)
            return MQ_ERR_BAD_UTF8; /* truncated sequence */
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return MQ_ERR_BAD_UTF8;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min_cp[n] || cp > 0x10FFFF)
            return MQ_ERR_BAD_UTF8;
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return MQ_ERR_UTF8_SURROGATE;
        i += n;
        if (i < len && s[i] < 0x80)
            i += ascii_prefix(s + i, len - i);
    }
    return 0;
}

/* Nonzero when some byte of w is zero (the classic "has zero byte" test: exact as to
 * whether one is, though not as to which). */
static uint64_t has_zero_byte(uint64_t w)
{
    return (w - LOW_BITS) & ~w & HIGH_BITS;
}

/* The 1-7 bytes of a short string in one word, some repeated: enough to ask whether any
 * byte is of a kind, without reading past the end. */
static uint64_t short_word(const uint8_t *s, size_t len)
{
    if (len >= 4) {
        uint32_t head, tail; /* they overlap when len < 8 */
        memcpy(&head, s, sizeof head);
        memcpy(&tail, s + len - 4, sizeof tail);
        return (uint64_t)head | (uint64_t)tail << 32;
    }
    /* 1-3 bytes: the first, the middle and the last cover them all. */
    return (uint64_t)s[0] | (uint64_t)s[len / 2] << 8 | (uint64_t)s[len - 1] * (LOW_BITS << 16);
}

/* True when the 8 bytes of w are plain ASCII, with no NUL and no wildcard: all a topic
 * name's bytes usually are. */
static bool plain_name_word(uint64_t w)
{
    return !((w & HIGH_BITS) | has_zero_byte(w) | has_zero_byte(w ^ ('+' * LOW_BITS)) |
             has_zero_byte(w ^ ('#' * LOW_BITS)));
}

int topic_check_name(const uint8_t *s, size_t len)
{
    if (len == 0)
        return MQ_ERR_EMPTY_TOPIC;
    /* Every PUBLISH is checked here, so the common case (a short ASCII topic) takes one
     * pass of word tests; anything else falls to the exact checks below, which also pick
     * the error to report. */
    uint64_t w;
    size_t i = 0;
    for (; len - i > 8; i += 8) {
        memcpy(&w, s + i, sizeof w);
        if (!plain_name_word(w))
            goto exact;
    }
    if (len >= 8)
        memcpy(&w, s + len - 8, sizeof w); /* the last 8 bytes, overlapping the loop's */
    else
        w = short_word(s, len);
    if (plain_name_word(w))
        return 0;
exact:;
    int rc = topic_check_utf8(s, len);
    if (rc)
        return rc;
    /* '+' and '#' are ASCII, so they can never hide inside a multi-byte sequence. */
    if (memchr(s, '+', len) || memchr(s, '#', len))
        return MQ_ERR_WILDCARD_IN_TOPIC;
    return 0;
}

int topic_check_filter(const uint8_t *s, size_t len)
{
    if (len == 0)
        return MQ_ERR_EMPTY_TOPIC;
    int rc = topic_check_utf8(s, len);
    if (rc)
        return rc;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '+' && s[i] != '#')
            continue;
        bool starts_level = i == 0 || s[i - 1] == '/';
        bool ends_level = i + 1 == len || s[i + 1] == '/';
        /* '#' must also be the last character: it stands for all remaining levels. */
        if (!starts_level || !ends_level || (s[i] == '#' && i + 1 != len))
            return MQ_ERR_BAD_FILTER;
    }
    return 0;
}

/* End (index of the next '/' or len) of the level starting at `from`. */
static size_t level_end(const uint8_t *s, size_t len, size_t from)
{
    const uint8_t *slash = from < len ? memchr(s + from, '/', len - from) : NULL;
    return slash ? (size_t)(slash - s) : len;
}

bool topic_matches(const uint8_t *filter, size_t filter_len, const uint8_t *name, size_t name_len)
{
    /* [MQTT-4.7.2-1]: wildcards in the first level never match '$' topics, so a plain
     * "#" subscriber does not receive $SYS traffic. */
    if (name_len > 0 && name[0] == '$' && filter_len > 0 && (filter[0] == '+' || filter[0] == '#'))
        return false;

    /* f and n are the starts of the current levels; a start past the length means the string
     * has no level left (a trailing '/' still leaves one empty level). */
    size_t f = 0, n = 0;
    while (f <= filter_len) {
        size_t fe = level_end(filter, filter_len, f);
        if (fe - f == 1 && filter[f] == '#')
            return true; /* also matches the parent level: "a/#" matches "a" */
        if (n > name_len)
            return false;
        size_t ne = level_end(name, name_len, n);
        bool plus = fe - f == 1 && filter[f] == '+';
        if (!plus && (fe - f != ne - n || (fe > f && memcmp(filter + f, name + n, fe - f) != 0)))
            return false;
        f = fe + 1;
        n = ne + 1;
    }
    return n > name_len;
}

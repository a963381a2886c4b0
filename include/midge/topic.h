/* topic.h - UTF-8 string rules, topic names, topic filters and matching (MQTT 3.1.1 §1.5.3, §4.7).
 *
 * Pure functions over (pointer, length) pairs; nothing is allocated or retained.
 */
#ifndef MIDGE_TOPIC_H
#define MIDGE_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 0 when s[0..len) is well-formed UTF-8 as MQTT requires (no overlongs, no
 * surrogates U+D800..U+DFFF, nothing above U+10FFFF, no U+0000); otherwise
 * MQ_ERR_BAD_UTF8, MQ_ERR_UTF8_SURROGATE or MQ_ERR_UTF8_NULL. U+FEFF is kept. */
int topic_check_utf8(const uint8_t *s, size_t len);

/* 0 when s is a valid topic name for PUBLISH: non-empty, valid UTF-8, no '+' or '#'.
 * Errors: MQ_ERR_EMPTY_TOPIC, MQ_ERR_WILDCARD_IN_TOPIC, UTF-8 errors. */
int topic_check_name(const uint8_t *s, size_t len);

/* 0 when s is a valid topic filter: non-empty, valid UTF-8, '+' alone in its level,
 * '#' alone in the last level. Errors: MQ_ERR_EMPTY_TOPIC, MQ_ERR_BAD_FILTER, UTF-8 errors. */
int topic_check_filter(const uint8_t *s, size_t len);

/* True when topic name `name` matches filter `filter` (both already valid), including
 * the rule that '+' or '#' in the first level never matches a name starting with '$'. */
bool topic_matches(const uint8_t *filter, size_t filter_len, const uint8_t *name, size_t name_len);

#endif

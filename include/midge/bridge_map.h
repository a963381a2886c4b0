/* bridge_map.h - a bridge's topic remapping (mosquitto.conf(5), `topic` lines): which
 * messages cross a bridge and under what topic on the other side.
 *
 * Pure: no allocation, no I/O. The lines come from struct mq_bridge_config (config.h), whose
 * parser already built each line's full local and remote filter (prefix + pattern, or the
 * prefix alone for a "" pattern); these functions only match and rewrite.
 */
#ifndef MIDGE_BRIDGE_MAP_H
#define MIDGE_BRIDGE_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "midge/config.h"

/* The longest topic MQTT can carry: what out must be able to hold. */
#define MQ_BRIDGE_TOPIC_MAX 65535

/* Results of bridge_map_in/out other than a line index. */
enum {
    MQ_BRIDGE_MAP_NONE = -1,    /* no line of that direction matches: not this bridge's */
    MQ_BRIDGE_MAP_TOO_LONG = -2 /* the remapped topic would exceed cap (or 65,535 bytes) */
};

/* A message received from the remote on topic[0..len): the topic it gets locally.
 * Mosquitto's rule: the first `in` or `both` line that has a prefix and whose remote filter
 * matches rewrites it (its remote prefix removed when the topic starts with it, its local
 * prefix added); failing that, the first `in`/`both` line without prefixes whose filter
 * matches passes it unchanged. Returns that line's index, the local topic in out[0..*out_len)
 * (out holds cap bytes; MQ_BRIDGE_TOPIC_MAX is always enough), or MQ_BRIDGE_MAP_NONE or
 * MQ_BRIDGE_MAP_TOO_LONG. topics is borrowed. */
int bridge_map_in(const struct mq_bridge_topic *topics, size_t n, const uint8_t *topic, size_t len,
                  uint8_t *out, size_t cap, size_t *out_len);

/* The same the other way: a local message for the remote, through the `out` and `both`
 * lines (local filter matched, local prefix removed, remote prefix added). */
int bridge_map_out(const struct mq_bridge_topic *topics, size_t n, const uint8_t *topic, size_t len,
                   uint8_t *out, size_t cap, size_t *out_len);

#endif

/* bridge_map.c - a bridge's topic remapping, both ways (bridge_map.h).
 *
 * Owns nothing: the lines are the configuration's. One function serves both directions,
 * told which side a topic comes from. Mosquitto looks at the lines that remap first and
 * passes a topic unchanged only when none of them matches; midge does the same, so that a
 * configuration behaves alike on both, and additionally refuses a topic no line of the
 * direction matches (a remote session's stale subscription) instead of passing it on. A
 * remote side of the form $share/NAME/... (an in line taking its share of a shared
 * subscription) is matched without the group, which the messages do not carry.
 */
#include "midge/bridge_map.h"

#include <stdbool.h>
#include <string.h>

#include "midge/topic.h"

/* A remote filter or prefix of the form $share/NAME/REST stands for REST: a shared
 * subscription's messages carry their own topic, without the group. */
static const char *unshared(const char *s)
{
    if (!s || strncmp(s, "$share/", 7))
        return s;
    const char *slash = strchr(s + 7, '/');
    return slash ? slash + 1 : s + strlen(s);
}

static int map(const struct mq_bridge_topic *topics, size_t n, bool inbound, const uint8_t *topic,
               size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    unsigned want = inbound ? MQ_BRIDGE_IN : MQ_BRIDGE_OUT;
    if (cap > MQ_BRIDGE_TOPIC_MAX)
        cap = MQ_BRIDGE_TOPIC_MAX;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const struct mq_bridge_topic *t = &topics[i];
            if (!(t->direction & want))
                continue;
            const char *from = inbound ? unshared(t->remote_prefix) : t->local_prefix;
            const char *to = inbound ? t->local_prefix : t->remote_prefix;
            bool remaps = from || to;
            if (remaps != (pass == 0))
                continue;
            const char *filter = inbound ? unshared(t->remote) : t->local;
            if (!topic_matches((const uint8_t *)filter, strlen(filter), topic, len))
                continue;
            if (from && !*from)
                from = NULL; /* "$share/NAME/" alone: nothing to remove */
            size_t strip = from ? strlen(from) : 0;
            if (from && (strip > len || memcmp(topic, from, strip)))
                strip = 0; /* a filter like "a/+" can match without the prefix: keep it all */
            size_t add = to ? strlen(to) : 0;
            size_t total = add + (len - strip);
            if (!total)
                return MQ_BRIDGE_MAP_NONE; /* "a/" through "a/#" with the prefix "a/" */
            if (total > cap)
                return MQ_BRIDGE_MAP_TOO_LONG;
            if (add)
                memcpy(out, to, add);
            memcpy(out + add, topic + strip, len - strip);
            *out_len = total;
            return (int)i;
        }
    }
    return MQ_BRIDGE_MAP_NONE;
}

int bridge_map_in(const struct mq_bridge_topic *topics, size_t n, const uint8_t *topic, size_t len,
                  uint8_t *out, size_t cap, size_t *out_len)
{
    return map(topics, n, true, topic, len, out, cap, out_len);
}

int bridge_map_out(const struct mq_bridge_topic *topics, size_t n, const uint8_t *topic, size_t len,
                   uint8_t *out, size_t cap, size_t *out_len)
{
    return map(topics, n, false, topic, len, out, cap, out_len);
}

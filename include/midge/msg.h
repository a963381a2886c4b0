/* msg.h - an application message: immutable topic + payload, reference counted.
 *
 * One msg is created per received PUBLISH (or will, or $SYS update) and shared
 * by the retained store, every session queue and every output buffer that
 * carries it. Single-threaded: the count is not atomic. It is version-neutral:
 * what MQTT 5 adds to a message (properties forwarded to subscribers, an expiry)
 * is kept with it, and each connection encodes it for its own protocol version
 * at send time (3.x subscribers simply get no properties).
 */
#ifndef MIDGE_MSG_H
#define MIDGE_MSG_H

#include <stdbool.h>
#include <stdint.h>

struct mq_msg {
    uint32_t refcount;
    uint32_t payload_len;
    /* MQTT 5 properties forwarded unchanged to MQTT 5 subscribers, encoded as on the wire
     * (Payload Format Indicator, Content Type, Response Topic, Correlation Data and User
     * Properties, in the order received): msg_props(m), props_len bytes; 0 for 3.x. */
    uint32_t props_len;
    uint16_t topic_len;
    uint8_t qos;         /* QoS it was published with */
    bool retain;         /* retain flag it was published with */
    uint64_t expires_ms; /* broker clock (now_ms) when it expires; 0 = never */
    uint8_t *payload;    /* points into this allocation, after the topic and properties */
    char topic[];        /* topic_len bytes + NUL, then the properties, then the payload */
};

/* New message with refcount 1, copying topic and payload. NULL on out of memory.
 * The caller owns the returned reference. */
struct mq_msg *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
                       uint32_t payload_len, uint8_t qos, bool retain);

/* Like msg_new, with room for props_len bytes of properties that the caller writes at
 * msg_props(m) before it shares the message (an MQTT 5 PUBLISH or will), and an expiry. */
struct mq_msg *msg_new_props(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
                             uint32_t payload_len, uint8_t qos, bool retain, uint32_t props_len,
                             uint64_t expires_ms);

/* The forwarded properties of m (props_len bytes). */
static inline uint8_t *msg_props(const struct mq_msg *m)
{
    return (uint8_t *)m->topic + m->topic_len + 1;
}

/* True when m has an expiry and it has passed at now_ms. A message published with a
 * Message Expiry Interval of 0 is not expired in the instant it arrives: it may still start
 * its delivery to subscribers that are connected then ([MQTT-3.3.2-5]), never later. */
static inline bool msg_expired(const struct mq_msg *m, uint64_t now_ms)
{
    return m->expires_ms && now_ms > m->expires_ms;
}

/* Take another reference; returns m. */
static inline struct mq_msg *msg_ref(struct mq_msg *m)
{
    m->refcount++;
    return m;
}

/* Drop a reference; frees the message when it was the last. NULL is ignored. */
void msg_unref(struct mq_msg *m);

#endif

/* msg.h - an application message: immutable topic + payload, reference counted.
 *
 * One msg is created per received PUBLISH (or will, or $SYS update) and shared
 * by the retained store, every session queue and every output buffer that
 * carries it. Single-threaded: the count is not atomic.
 */
#ifndef MIDGE_MSG_H
#define MIDGE_MSG_H

#include <stdbool.h>
#include <stdint.h>

struct mq_msg {
    uint32_t refcount;
    uint32_t payload_len;
    uint16_t topic_len;
    uint8_t qos;      /* QoS it was published with */
    bool retain;      /* retain flag it was published with */
    uint8_t *payload; /* points into this allocation, after the topic */
    char topic[];     /* topic_len bytes + NUL, then the payload */
};

/* New message with refcount 1, copying topic and payload. NULL on out of memory.
 * The caller owns the returned reference. */
struct mq_msg *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
                       uint32_t payload_len, uint8_t qos, bool retain);

/* Take another reference; returns m. */
static inline struct mq_msg *msg_ref(struct mq_msg *m)
{
    m->refcount++;
    return m;
}

/* Drop a reference; frees the message when it was the last. NULL is ignored. */
void msg_unref(struct mq_msg *m);

#endif

/* msg.c - creation and release of refcounted application messages.
 *
 * Owns each message's single allocation: the struct, the topic with a NUL (so it can be logged
 * as a C string), its MQTT 5 properties and the payload right after them. Invariant: payload points
 * into that same allocation, so a message is freed with one free() and never outlives its last
 * reference.
 */
#include "midge/msg.h"

#include <stdlib.h>
#include <string.h>

struct mq_msg *msg_new_props(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
                             uint32_t payload_len, uint8_t qos, bool retain, uint32_t props_len,
                             uint64_t expires_ms)
{
    /* On 32-bit targets a 4 GiB payload would wrap the size computation. */
    uint64_t size = (uint64_t)sizeof(struct mq_msg) + topic_len + 1 + props_len + payload_len;
    if (size > SIZE_MAX)
        return NULL;
    struct mq_msg *m = malloc((size_t)size);
    if (!m)
        return NULL;
    m->refcount = 1;
    m->payload_len = payload_len;
    m->props_len = props_len;
    m->topic_len = topic_len;
    m->qos = qos;
    m->retain = retain;
    m->expires_ms = expires_ms;
    if (topic_len > 0)
        memcpy(m->topic, topic, topic_len);
    m->topic[topic_len] = '\0';
    m->payload = (uint8_t *)m->topic + topic_len + 1 + props_len;
    if (payload_len > 0)
        memcpy(m->payload, payload, payload_len);
    return m;
}

struct mq_msg *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
                       uint32_t payload_len, uint8_t qos, bool retain)
{
    return msg_new_props(topic, topic_len, payload, payload_len, qos, retain, 0, 0);
}

void msg_unref(struct mq_msg *m)
{
    if (m && --m->refcount == 0)
        free(m);
}

/* msg.c - creation and release of refcounted application messages.
 *
 * Owns each message's single allocation: the struct, the topic with a NUL (so it can be logged
 * as a C string) and the payload right after it. Invariant: payload points into that same
 * allocation, so a message is freed with one free() and never outlives its last reference.
 */
#include "midge/msg.h"

#include <stdlib.h>
#include <string.h>

struct mq_msg *msg_new(const uint8_t *topic, uint16_t topic_len, const uint8_t *payload,
                       uint32_t payload_len, uint8_t qos, bool retain)
{
    /* On 32-bit targets a 4 GiB payload would wrap the size computation. */
    if ((uint64_t)sizeof(struct mq_msg) + topic_len + 1 + payload_len > SIZE_MAX)
        return NULL;
    struct mq_msg *m = malloc(sizeof(*m) + (size_t)topic_len + 1 + payload_len);
    if (!m)
        return NULL;
    m->refcount = 1;
    m->payload_len = payload_len;
    m->topic_len = topic_len;
    m->qos = qos;
    m->retain = retain;
    if (topic_len > 0)
        memcpy(m->topic, topic, topic_len);
    m->topic[topic_len] = '\0';
    m->payload = (uint8_t *)m->topic + topic_len + 1;
    if (payload_len > 0)
        memcpy(m->payload, payload, payload_len);
    return m;
}

void msg_unref(struct mq_msg *m)
{
    if (m && --m->refcount == 0)
        free(m);
}

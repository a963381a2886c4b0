/*
 * wire.c - the few MQTT 3.1.1 packets midge-bench sends and reads.
 *
 * Written from the specification rather than shared with the broker, so that a
 * codec bug in midge cannot hide behind the same bug in its benchmark. Packets
 * are appended straight into a connection's output buffer: one write() then
 * carries everything a loop turn produced for that connection.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    /* Reclaim the consumed front first: output buffers drain from there. */
    buf_compact(b);
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        die(1, "out of memory (buffer of %zu bytes)", cap);
    b->data = p;
    b->cap = cap;
}

void buf_compact(struct buf *b)
{
    if (b->off == 0)
        return;
    if (b->off < b->len)
        memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

uint16_t wire_u16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t n)
{
    p = put_u16(p, (uint16_t)n);
    memcpy(p, s, n);
    return p + n;
}

/* Fixed header: type/flags byte and the variable-length "remaining length". */
static uint8_t *put_fixed(uint8_t *p, int type, int flags, size_t remaining)
{
    *p++ = (uint8_t)((type << 4) | flags);
    do {
        uint8_t byte = remaining & 0x7f;
        remaining >>= 7;
        if (remaining)
            byte |= 0x80;
        *p++ = byte;
    } while (remaining);
    return p;
}

int wire_parse(const uint8_t *p, size_t n, struct packet *pkt)
{
    if (n < 2)
        return 0;
    size_t remaining = 0;
    size_t i = 1;
    for (int shift = 0;; shift += 7) {
        if (i >= n)
            return 0;
        if (shift > 21)
            return -1; /* more than four length bytes */
        uint8_t byte = p[i++];
        remaining |= (size_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            break;
    }
    if (n - i < remaining)
        return 0;
    pkt->type = p[0] >> 4;
    pkt->flags = p[0] & 0x0f;
    pkt->body = p + i;
    pkt->body_len = remaining;
    pkt->total = i + remaining;
    return 1;
}

void wire_connect(struct buf *b, const char *client_id, uint16_t keepalive, bool clean)
{
    size_t id_len = strlen(client_id);
    size_t rem = 10 + 2 + id_len;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_CONNECT, 0, rem);
    p = put_str(p, "MQTT", 4);
    *p++ = 4;    /* protocol level: 3.1.1 */
    *p++ = clean ? 0x02 : 0x00; /* clean session or not; no will, no credentials */
    p = put_u16(p, keepalive);
    p = put_str(p, client_id, id_len);
    b->len = (size_t)(p - b->data);
}

void wire_subscribe(struct buf *b, uint16_t pid, const char *filter, int qos)
{
    size_t f_len = strlen(filter);
    size_t rem = 2 + 2 + f_len + 1;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_SUBSCRIBE, 0x2, rem); /* flags 0010 are mandatory */
    p = put_u16(p, pid);
    p = put_str(p, filter, f_len);
    *p++ = (uint8_t)qos;
    b->len = (size_t)(p - b->data);
}

void wire_subscribe_list(struct buf *b, uint16_t pid, const char *names, size_t stride,
                         const uint8_t *lens, int n, int qos)
{
    size_t rem = 2;
    for (int k = 0; k < n; k++)
        rem += 2 + lens[k] + 1u;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_SUBSCRIBE, 0x2, rem);
    p = put_u16(p, pid);
    for (int k = 0; k < n; k++) {
        p = put_str(p, names + (size_t)k * stride, lens[k]);
        *p++ = (uint8_t)qos;
    }
    b->len = (size_t)(p - b->data);
}

uint8_t *wire_publish(struct buf *b, const char *topic, size_t topic_len, int qos, uint16_t pid,
                      size_t payload_len)
{
    size_t rem = 2 + topic_len + (qos ? 2 : 0) + payload_len;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_PUBLISH, qos << 1, rem);
    p = put_str(p, topic, topic_len);
    if (qos)
        p = put_u16(p, pid);
    b->len = (size_t)(p - b->data) + payload_len;
    return p;
}

void wire_ack(struct buf *b, int type, uint16_t pid)
{
    buf_reserve(b, 4);
    uint8_t *p = b->data + b->len;
    p[0] = (uint8_t)((type << 4) | (type == PKT_PUBREL ? 0x2 : 0));
    p[1] = 2;
    put_u16(p + 2, pid);
    b->len += 4;
}

void wire_simple(struct buf *b, int type)
{
    buf_reserve(b, 2);
    b->data[b->len++] = (uint8_t)(type << 4);
    b->data[b->len++] = 0;
}

const char *wire_connack_reason(int rc)
{
    switch (rc) {
    case 0: return "accepted";
    case 1: return "unacceptable protocol version";
    case 2: return "identifier rejected";
    case 3: return "server unavailable";
    case 4: return "bad user name or password";
    case 5: return "not authorized";
    default: return "unknown return code";
    }
}

const char *wire_type_name(int type)
{
    static const char *const names[16] = {
        "reserved(0)", "CONNECT",  "CONNACK",    "PUBLISH",      "PUBACK",      "PUBREC",
        "PUBREL",      "PUBCOMP",  "SUBSCRIBE",  "SUBACK",       "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ",     "PINGRESP", "DISCONNECT", "reserved(15)",
    };
    return names[type & 15];
}

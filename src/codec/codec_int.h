/* codec_int.h - what the codec's files share and nobody else sees: the bounded read cursor,
 * the write helpers, and the checks both dialects and both directions use.
 *
 * mqtt_codec.c owns the fixed header, the dispatch by dialect and the MQTT 3.x bodies;
 * mqtt5_codec.c the MQTT 5 bodies; props.c the property blocks; reason.c reason codes.
 * Every read is bounded by the packet's remaining length (rd.end), never by the buffer.
 */
#ifndef MIDGE_CODEC_INT_H
#define MIDGE_CODEC_INT_H

#include <string.h>

#include "midge/codec.h"
#include "midge/err.h"

/* A read cursor over one packet body; running past `end` is MQ_ERR_TRUNCATED. */
struct rd {
    const uint8_t *p;
    const uint8_t *end;
};

static inline size_t rd_left(const struct rd *r)
{
    return (size_t)(r->end - r->p);
}

static inline int rd_u8(struct rd *r, uint8_t *v)
{
    if (r->p == r->end)
        return MQ_ERR_TRUNCATED;
    *v = *r->p++;
    return 0;
}

static inline int rd_u16(struct rd *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return MQ_ERR_TRUNCATED;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return 0;
}

/* A 2-byte-length-prefixed string or binary field. */
static inline int rd_bytes(struct rd *r, struct mq_bytes *b)
{
    uint16_t n;
    int rc = rd_u16(r, &n);
    if (rc)
        return rc;
    if (rd_left(r) < n)
        return MQ_ERR_TRUNCATED;
    b->ptr = r->p;
    b->len = n;
    r->p += n;
    return 0;
}

static inline int rd_packet_id(struct rd *r, uint16_t *id)
{
    int rc = rd_u16(r, id);
    if (rc)
        return rc;
    return *id ? 0 : MQ_ERR_PACKET_ID_ZERO;
}

static inline bool bytes_eq(struct mq_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && memcmp(b.ptr, s, n) == 0;
}

/* A field the encoder may read: a length with no bytes behind it is a caller bug. */
static inline bool bytes_ok(struct mq_bytes b)
{
    return b.len == 0 || b.ptr != NULL;
}

/* An empty property block: what every 3.x packet, and every MQTT 5 one before its block is
 * read, carries. The four members the decoder always writes (struct mq_props). */
static inline void props_none(struct mq_props *p)
{
    p->present = 0;
    p->raw = NULL;
    p->raw_len = 0;
    p->user_count = 0;
    p->sub_id_count = 0;
}

static inline uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static inline uint8_t *put_raw(uint8_t *p, const uint8_t *s, size_t n)
{
    if (n)
        memcpy(p, s, n);
    return p + n;
}

static inline uint8_t *put_bytes(uint8_t *p, struct mq_bytes b)
{
    return put_raw(put_u16(p, b.len), b.ptr, b.len);
}

/* Validate the raw entries of a SUBSCRIBE (with_qos) or UNSUBSCRIBE and count them, by the
 * rules of MQTT 3.x or (v5) MQTT 5. Shared by decoder and encoder so both sides agree on
 * what a valid entry list is. */
int codec_check_topic_entries(const uint8_t *entries, size_t len, bool with_qos, bool v5,
                              uint16_t *count);

/* The body of an MQTT 5 packet other than CONNECT (mqtt5_codec.c): out->type and flags are
 * set; fills the rest of *out. */
int codec5_decode_body(struct rd *r, struct mq_packet *out);

/* The part of a CONNECT after the protocol level, when name and level say MQTT 5. */
int codec5_decode_connect(struct rd *r, struct mq_packet *out);

/* Validate an MQTT 5 packet exactly as the decoder would, and give its first byte and
 * remaining length; then write its body (after the fixed header) at p. */
int codec5_measure(const struct mq_packet *pkt, uint8_t *first, uint64_t *remaining);
uint8_t *codec5_write(const struct mq_packet *pkt, uint8_t *p);

/* The protocol name and level a CONNECT goes out with in dialect `version` (3, 4 or 5). */
void codec_connect_protocol(const struct mq_connect *c, unsigned version, struct mq_bytes *name,
                            uint8_t *level);

#endif

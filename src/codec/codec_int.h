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
#include "midge/topic.h"

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

/* A property length and its block, validated for packet type `where` (2.2.2.1). */
static inline int rd_props(struct rd *r, unsigned where, struct mq_props *props)
{
    /* Most packets carry no properties: a length of 0 is one byte, and nothing to check. */
    if (r->p < r->end && *r->p == 0) {
        r->p++;
        props_none(props);
        return 0;
    }
    uint32_t n;
    int rc = codec_varint_read(r->p, rd_left(r), true, &n);
    if (rc <= 0)
        return rc ? rc : MQ_ERR_TRUNCATED;
    r->p += rc;
    if (rd_left(r) < n)
        return MQ_ERR_TRUNCATED;
    const uint8_t *block = r->p;
    r->p += n;
    return codec_props_parse(where, block, n, props);
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

/* A property block with its length. */
static inline uint8_t *put_props(uint8_t *p, const struct mq_props *props)
{
    p += codec_varint_write(props->raw_len, p);
    return put_raw(p, props->raw, props->raw_len);
}

/* Validate the raw entries of a SUBSCRIBE (with_qos) or UNSUBSCRIBE and count them, by the
 * rules of MQTT 3.x or (v5) MQTT 5. Shared by decoder and encoder so both sides agree on
 * what a valid entry list is. */
int codec_check_topic_entries(const uint8_t *entries, size_t len, bool with_qos, bool v5,
                              uint16_t *count);

/* MQ_ERR_INVAL unless the encoder may write this SUBSCRIBE (with_qos) or UNSUBSCRIBE list in
 * packet `type`: the kind of list matches the type, there is a packet id, and the entries are
 * valid in the dialect (v5) and as many as it says. */
static inline int check_topic_list(const struct mq_topic_list *tl, unsigned type, bool v5)
{
    uint16_t count = 0;
    if (tl->with_qos != (type == MQ_SUBSCRIBE) || tl->packet_id == 0 ||
        (tl->entries_len && !tl->entries) ||
        codec_check_topic_entries(tl->entries, tl->entries_len, tl->with_qos, v5, &count) ||
        count != tl->count)
        return MQ_ERR_INVAL;
    return 0;
}

/* MQ_ERR_INVAL unless the encoder may write this PUBLISH as far as both dialects agree: all
 * but the topic name, which MQTT 5 may leave empty for a Topic Alias. */
static inline int check_publish(const struct mq_publish *pub)
{
    if (pub->qos > 2 || (pub->dup && pub->qos == 0) || (pub->qos && pub->packet_id == 0) ||
        !bytes_ok(pub->topic) || (pub->payload_len && !pub->payload))
        return MQ_ERR_INVAL;
    return 0;
}

/* The first byte of a PUBLISH. */
static inline uint8_t publish_first_byte(bool dup, uint8_t qos, bool retain)
{
    return (uint8_t)(MQ_PUBLISH << 4 | (dup ? 0x08 : 0) | qos << 1 | (retain ? 1 : 0));
}

/* The body of an MQTT 5 packet other than CONNECT (mqtt5_codec.c): out->type and flags are
 * set; fills the rest of *out. */
int codec5_decode_body(struct rd *r, struct mq_packet *out);

/* The part of a CONNECT after the protocol level, when name and level say MQTT 5. */
int codec5_decode_connect(struct rd *r, struct mq_packet *out);

/* Validate an MQTT 5 packet exactly as the decoder would, and give its first byte and
 * remaining length; then write its body (after the fixed header) at p. */
int codec5_measure(const struct mq_packet *pkt, uint8_t *first, uint64_t *remaining);
uint8_t *codec5_write(const struct mq_packet *pkt, uint8_t *p);

/* ---- CONNECT, in both dialects -------------------------------------------------------------
 * The fields and rules MQTT 3.x and MQTT 5 share; each dialect adds its own around them
 * (MQTT 3.x: a password needs a user name, 3.1's client id; MQTT 5: the property blocks).
 * Static inline, so that each dialect's caller gets its own inlined copy: out of line (one
 * copy in mqtt_codec.c) they cost the MQTT 3.1.1 CONNECT 6% more instructions to decode and
 * 10% more to encode (GCC 12, -O2). */

/* The protocol name and level a CONNECT goes out with in dialect `version` (3, 4 or 5). */
void codec_connect_protocol(const struct mq_connect *c, unsigned version, struct mq_bytes *name,
                            uint8_t *level);

/* Read the Connect Flags into c, with the rules both dialects give them. */
static inline int codec_connect_flags(struct rd *r, struct mq_connect *c)
{
    uint8_t f;
    int rc = rd_u8(r, &f);
    if (rc)
        return rc;
    c->clean_session = f & 0x02;
    c->will_flag = f & 0x04;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = f & 0x20;
    c->has_password = f & 0x40;
    c->has_username = f & 0x80;
    if (f & 0x01)
        return MQ_ERR_CONNECT_RESERVED; /* [MQTT-3.1.2-3] */
    if (!c->will_flag && (c->will_qos || c->will_retain))
        return MQ_ERR_WILL_FLAGS; /* [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15] */
    if (c->will_qos == 3)
        return MQ_ERR_QOS3; /* [MQTT-3.1.2-14]; MQTT 5 3.1.2.6: a Malformed Packet */
    return 0;
}

/* Read the payload into c: client id, the will (MQTT 5: its property block into will_props
 * first; NULL in MQTT 3.x), user name and password; nothing may follow. */
static inline int codec_connect_payload(struct rd *r, struct mq_connect *c,
                                        struct mq_props *will_props)
{
    int rc;
    if ((rc = rd_bytes(r, &c->client_id)) ||
        (rc = topic_check_utf8(c->client_id.ptr, c->client_id.len)))
        return rc;
    if (c->will_flag) {
        if ((will_props && (rc = rd_props(r, MQ_PROPS_WILL, will_props))) ||
            (rc = rd_bytes(r, &c->will_topic)) ||
            (rc = topic_check_name(c->will_topic.ptr, c->will_topic.len)) ||
            (rc = rd_bytes(r, &c->will_payload)))
            return rc;
    }
    if (c->has_username) {
        if ((rc = rd_bytes(r, &c->username)) ||
            (rc = topic_check_utf8(c->username.ptr, c->username.len)))
            return rc;
    }
    if (c->has_password && (rc = rd_bytes(r, &c->password)))
        return rc;
    return rd_left(r) ? MQ_ERR_TRAILING : 0;
}

/* Check c as both dialects must before encoding it, and give the size of the fields they
 * share: all but MQTT 5's property blocks, protocol name `name` included. */
static inline int codec_connect_measure(const struct mq_connect *c, struct mq_bytes name,
                                        uint64_t *size)
{
    if (c->will_qos > 2 || (!c->will_flag && (c->will_qos || c->will_retain)))
        return MQ_ERR_INVAL;
    if (!bytes_ok(c->client_id) || topic_check_utf8(c->client_id.ptr, c->client_id.len))
        return MQ_ERR_INVAL;
    uint64_t n = 2u + name.len + 1 + 1 + 2 + 2 + c->client_id.len;
    if (c->will_flag) {
        if (!bytes_ok(c->will_topic) || !bytes_ok(c->will_payload) ||
            topic_check_name(c->will_topic.ptr, c->will_topic.len))
            return MQ_ERR_INVAL;
        n += 2u + c->will_topic.len + 2u + c->will_payload.len;
    }
    if (c->has_username) {
        if (!bytes_ok(c->username) || topic_check_utf8(c->username.ptr, c->username.len))
            return MQ_ERR_INVAL;
        n += 2u + c->username.len;
    }
    if (c->has_password) {
        if (!bytes_ok(c->password))
            return MQ_ERR_INVAL;
        n += 2u + c->password.len;
    }
    *size = n;
    return 0;
}

/* Write the protocol name and level (with the bridge bit), the flags and the keep alive. */
static inline uint8_t *codec_connect_write_header(const struct mq_connect *c, struct mq_bytes name,
                                                  uint8_t level, uint8_t *p)
{
    p = put_bytes(p, name);
    *p++ = (uint8_t)(level | (c->bridge ? 0x80 : 0));
    *p++ = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
                     (c->will_retain ? 0x20 : 0) | c->will_qos << 3 | (c->will_flag ? 0x04 : 0) |
                     (c->clean_session ? 0x02 : 0));
    return put_u16(p, c->keepalive);
}

/* Write the payload measured by codec_connect_measure; MQTT 5: will_props before the will
 * topic (NULL in MQTT 3.x). */
static inline uint8_t *codec_connect_write_payload(const struct mq_connect *c,
                                                   const struct mq_props *will_props, uint8_t *p)
{
    p = put_bytes(p, c->client_id);
    if (c->will_flag) {
        if (will_props)
            p = put_props(p, will_props);
        p = put_bytes(p, c->will_topic);
        p = put_bytes(p, c->will_payload);
    }
    if (c->has_username)
        p = put_bytes(p, c->username);
    if (c->has_password)
        p = put_bytes(p, c->password);
    return p;
}

#endif

/* mqtt5_codec.c - the bodies of MQTT 5 packets (3.1-3.15 of the MQTT 5.0 standard):
 * decode, validation for encode, encode, and the MQTT 5 send-path header helpers.
 *
 * Owns the per-packet rules of MQTT 5 that one packet shows in isolation: where the property
 * block sits, which reason codes a packet may carry, the short forms of the acknowledgements,
 * DISCONNECT and AUTH, the empty topic of an aliased PUBLISH. The fixed header, the dialect
 * choice and the MQTT 3.x bodies are mqtt_codec.c's; what a property may be is props.c's.
 * Decoding and encoding validate through the same helpers, so they agree on every rule.
 */
#include <string.h>

#include "codec_int.h"
#include "midge/codec.h"
#include "midge/err.h"
#include "midge/topic.h"

/* ---------------------------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------------------------- */

/* A property length and its block, validated for packet type `where` (2.2.2.1). */
static int rd_props(struct rd *r, unsigned where, struct mq_props *props)
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

static int end_of_packet(const struct rd *r)
{
    return rd_left(r) ? MQ_ERR_TRAILING : 0;
}

int codec5_decode_connect(struct rd *r, struct mq_packet *out)
{
    struct mq_connect *c = &out->u.connect; /* cleared by the caller */
    uint8_t f;
    int rc = rd_u8(r, &f);
    if (rc)
        return rc;
    c->clean_session = f & 0x02;
    c->will_flag = f & 0x04;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = f & 0x20;
    c->has_password = f & 0x40; /* 3.1.2.9: a password without a user name is allowed */
    c->has_username = f & 0x80;
    if (f & 0x01)
        return MQ_ERR_CONNECT_RESERVED; /* [MQTT-3.1.2-3] */
    if (!c->will_flag && (c->will_qos || c->will_retain))
        return MQ_ERR_WILL_FLAGS; /* [MQTT-3.1.2-11], [MQTT-3.1.2-13] */
    if (c->will_qos == 3)
        return MQ_ERR_QOS3; /* 3.1.2.6: a Malformed Packet */
    if ((rc = rd_u16(r, &c->keepalive)) || (rc = rd_props(r, MQ_CONNECT, &out->props)))
        return rc;
    /* [MQTT-3.1.3-1]: client id, will properties, will topic, will payload, user name,
     * password, in that order. */
    if ((rc = rd_bytes(r, &c->client_id)) ||
        (rc = topic_check_utf8(c->client_id.ptr, c->client_id.len)))
        return rc;
    if (c->will_flag) {
        if ((rc = rd_props(r, MQ_PROPS_WILL, &c->will_props)) ||
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
    return end_of_packet(r);
}

static int decode_connack(struct rd *r, struct mq_packet *out)
{
    struct mq_connack *c = &out->u.connack;
    uint8_t ack = 0, code = 0;
    int rc = rd_u8(r, &ack);
    if (rc || (rc = rd_u8(r, &code)))
        return rc;
    c->session_present = ack & 0x01;
    c->return_code = code;
    if (ack & 0xFE)
        return MQ_ERR_MALFORMED; /* [MQTT-3.2.2-1] */
    if (!codec_reason_allowed(MQ_CONNACK, code))
        return MQ_ERR_BAD_REASON_CODE; /* [MQTT-3.2.2-8] */
    if (code && c->session_present)
        return MQ_ERR_MALFORMED; /* [MQTT-3.2.2-6] */
    if ((rc = rd_props(r, MQ_CONNACK, &out->props)))
        return rc;
    return end_of_packet(r);
}

static int decode_publish(struct rd *r, struct mq_packet *out)
{
    struct mq_publish *p = &out->u.publish;
    p->qos = (out->flags >> 1) & 3;
    p->dup = out->flags & 0x08;
    p->retain = out->flags & 0x01;
    p->packet_id = 0;
    int rc = rd_bytes(r, &p->topic);
    if (rc || (p->topic.len && (rc = topic_check_name(p->topic.ptr, p->topic.len))))
        return rc;
    if (p->qos && (rc = rd_packet_id(r, &p->packet_id)))
        return rc;
    if ((rc = rd_props(r, MQ_PUBLISH, &out->props)))
        return rc;
    /* 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no
     * Topic Alias." */
    if (p->topic.len == 0 && !codec_props_has(&out->props, MQ_PROP_TOPIC_ALIAS))
        return MQ_ERR_EMPTY_TOPIC_NO_ALIAS;
    p->payload = r->p;
    p->payload_len = (uint32_t)rd_left(r);
    return 0;
}

/* The reason code and properties that end PUBACK, PUBREC, PUBREL, PUBCOMP and DISCONNECT:
 * both may be left off, and then the properties alone (3.4.2.1, 3.14.2.1). */
static int rd_reason_tail(struct rd *r, struct mq_packet *out, uint8_t *reason)
{
    *reason = 0;
    if (rd_left(r) == 0) {
        out->omitted = MQ_OMIT_REASON_AND_PROPERTIES;
        return 0;
    }
    *reason = *r->p++;
    if (!codec_reason_allowed(out->type, *reason))
        return MQ_ERR_BAD_REASON_CODE;
    if (rd_left(r) == 0) {
        out->omitted = MQ_OMIT_PROPERTIES;
        return 0;
    }
    int rc = rd_props(r, out->type, &out->props);
    return rc ? rc : end_of_packet(r);
}

static int decode_ack(struct rd *r, struct mq_packet *out)
{
    out->u.ack.reason = 0;
    int rc = rd_packet_id(r, &out->u.ack.packet_id);
    return rc ? rc : rd_reason_tail(r, out, &out->u.ack.reason);
}

static int decode_topic_list(struct rd *r, struct mq_packet *out)
{
    struct mq_topic_list *l = &out->u.subscribe;
    l->with_qos = out->type == MQ_SUBSCRIBE;
    l->count = 0;
    l->entries = NULL;
    l->entries_len = 0;
    int rc = rd_packet_id(r, &l->packet_id);
    if (rc || (rc = rd_props(r, out->type, &out->props)))
        return rc;
    l->entries = r->p;
    l->entries_len = (uint32_t)rd_left(r);
    return codec_check_topic_entries(l->entries, l->entries_len, l->with_qos, true, &l->count);
}

/* One reason code per filter, each from the packet's table ([MQTT-3.9.3-2], [MQTT-3.11.3-2]). */
static int check_codes(unsigned type, const uint8_t *codes, size_t n)
{
    if (n == 0)
        return MQ_ERR_TRUNCATED; /* a SUBSCRIBE or UNSUBSCRIBE has at least one filter */
    if (n > UINT16_MAX)
        return MQ_ERR_TOO_MANY_FILTERS;
    for (size_t i = 0; i < n; i++)
        if (!codec_reason_allowed(type, codes[i]))
            return MQ_ERR_BAD_REASON_CODE;
    return 0;
}

static int decode_suback(struct rd *r, struct mq_packet *out)
{
    struct mq_suback *s = &out->u.suback;
    s->count = 0;
    s->codes = NULL;
    int rc = rd_packet_id(r, &s->packet_id);
    if (rc || (rc = rd_props(r, out->type, &out->props)))
        return rc;
    size_t n = rd_left(r);
    if ((rc = check_codes(out->type, r->p, n)))
        return rc;
    s->codes = r->p;
    s->count = (uint16_t)n;
    return 0;
}

static int decode_auth(struct rd *r, struct mq_packet *out)
{
    out->u.auth.reason = 0;
    /* 3.15.2.1: only the whole variable header may be left off (reason 0x00, no properties). */
    if (rd_left(r) == 0) {
        out->omitted = MQ_OMIT_REASON_AND_PROPERTIES;
        return 0;
    }
    out->u.auth.reason = *r->p++;
    if (!codec_reason_allowed(MQ_AUTH, out->u.auth.reason))
        return MQ_ERR_BAD_REASON_CODE; /* [MQTT-3.15.2-1] */
    int rc = rd_props(r, MQ_AUTH, &out->props);
    if (rc)
        return rc;
    /* 3.15.2.2.2: "It is a Protocol Error to omit the Authentication Method". */
    if (!codec_props_has(&out->props, MQ_PROP_AUTH_METHOD))
        return MQ_ERR_AUTH_METHOD;
    return end_of_packet(r);
}

int codec5_decode_body(struct rd *r, struct mq_packet *out)
{
    switch (out->type) {
    case MQ_CONNACK: return decode_connack(r, out);
    case MQ_PUBLISH: return decode_publish(r, out);
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP: return decode_ack(r, out);
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE: return decode_topic_list(r, out);
    case MQ_SUBACK:
    case MQ_UNSUBACK: return decode_suback(r, out);
    case MQ_PINGREQ:
    case MQ_PINGRESP: return 0; /* remaining length 0, checked from the fixed header */
    case MQ_DISCONNECT: return rd_reason_tail(r, out, &out->u.disconnect.reason);
    case MQ_AUTH: return decode_auth(r, out);
    case MQ_CONNECT: break;
    }
    return MQ_ERR_BAD_TYPE; /* unreachable: CONNECT is read apart, type 0 was rejected */
}

/* ---------------------------------------------------------------------------------------------
 * Encoding: the same rules, on the caller's struct
 * ------------------------------------------------------------------------------------------- */

/* The property block of a packet (or will): valid for `where`, as the decoder would find it.
 * *size is what it takes on the wire, its length included. */
static int measure_props(unsigned where, const struct mq_props *props, struct mq_props *parsed,
                         uint64_t *size)
{
    if (props->raw_len && !props->raw)
        return MQ_ERR_INVAL;
    unsigned n = codec_varint_size(props->raw_len);
    if (n == 0 || codec_props_parse(where, props->raw, props->raw_len, parsed))
        return MQ_ERR_INVAL;
    *size = n + (uint64_t)props->raw_len;
    return 0;
}

static uint8_t *put_props(uint8_t *p, const struct mq_props *props)
{
    p += codec_varint_write(props->raw_len, p);
    return put_raw(p, props->raw, props->raw_len);
}

static int measure_connect(const struct mq_packet *pkt, uint64_t props_size, uint64_t *remaining)
{
    const struct mq_connect *c = &pkt->u.connect;
    struct mq_bytes name;
    uint8_t level;
    codec_connect_protocol(c, 5, &name, &level);
    if (!bytes_ok(name) || !bytes_eq(name, "MQTT") || level != 5)
        return MQ_ERR_INVAL;
    if (c->will_qos > 2 || (!c->will_flag && (c->will_qos || c->will_retain)))
        return MQ_ERR_INVAL;
    if (!bytes_ok(c->client_id) || topic_check_utf8(c->client_id.ptr, c->client_id.len))
        return MQ_ERR_INVAL;
    uint64_t n = 2u + name.len + 1 + 1 + 2 + props_size + 2 + c->client_id.len;
    if (c->will_flag) {
        struct mq_props parsed;
        uint64_t will_size;
        if (measure_props(MQ_PROPS_WILL, &c->will_props, &parsed, &will_size) ||
            !bytes_ok(c->will_topic) || !bytes_ok(c->will_payload) ||
            topic_check_name(c->will_topic.ptr, c->will_topic.len))
            return MQ_ERR_INVAL;
        n += will_size + 2u + c->will_topic.len + 2u + c->will_payload.len;
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
    *remaining = n;
    return 0;
}

static uint8_t *write_connect(const struct mq_packet *pkt, uint8_t *p)
{
    const struct mq_connect *c = &pkt->u.connect;
    struct mq_bytes name;
    uint8_t level;
    codec_connect_protocol(c, 5, &name, &level);
    p = put_bytes(p, name);
    *p++ = (uint8_t)(level | (c->bridge ? 0x80 : 0));
    *p++ = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
                     (c->will_retain ? 0x20 : 0) | c->will_qos << 3 | (c->will_flag ? 0x04 : 0) |
                     (c->clean_session ? 0x02 : 0));
    p = put_u16(p, c->keepalive);
    p = put_props(p, &pkt->props);
    p = put_bytes(p, c->client_id);
    if (c->will_flag) {
        p = put_props(p, &c->will_props);
        p = put_bytes(p, c->will_topic);
        p = put_bytes(p, c->will_payload);
    }
    if (c->has_username)
        p = put_bytes(p, c->username);
    if (c->has_password)
        p = put_bytes(p, c->password);
    return p;
}

/* The size of the reason code and properties that end PUBACK..PUBCOMP and DISCONNECT
 * (AUTH: `short_reason` false, no reason-only form), as pkt->omitted asks. */
static int measure_reason_tail(const struct mq_packet *pkt, uint8_t reason, bool short_reason,
                               uint64_t props_size, uint64_t *size)
{
    if (!codec_reason_allowed(pkt->type, reason))
        return MQ_ERR_INVAL;
    switch (pkt->omitted) {
    case MQ_OMIT_NONE: *size = 1 + props_size; return 0;
    case MQ_OMIT_PROPERTIES:
        if (!short_reason || pkt->props.raw_len)
            return MQ_ERR_INVAL;
        *size = 1;
        return 0;
    case MQ_OMIT_REASON_AND_PROPERTIES:
        if (reason || pkt->props.raw_len)
            return MQ_ERR_INVAL;
        *size = 0;
        return 0;
    default: return MQ_ERR_INVAL;
    }
}

static uint8_t *write_reason_tail(const struct mq_packet *pkt, uint8_t reason, uint8_t *p)
{
    if (pkt->omitted == MQ_OMIT_REASON_AND_PROPERTIES)
        return p;
    *p++ = reason;
    return pkt->omitted == MQ_OMIT_PROPERTIES ? p : put_props(p, &pkt->props);
}

int codec5_measure(const struct mq_packet *pkt, uint8_t *first, uint64_t *remaining)
{
    const struct mq_publish *pub = &pkt->u.publish;
    const struct mq_topic_list *tl = &pkt->u.subscribe;
    const struct mq_suback *sa = &pkt->u.suback;
    struct mq_props parsed;
    uint64_t props_size = 0, tail = 0;
    uint16_t count = 0;
    int rc;

    if (pkt->type < MQ_CONNECT || pkt->type > MQ_AUTH)
        return MQ_ERR_INVAL;
    if (pkt->type == MQ_PINGREQ || pkt->type == MQ_PINGRESP) {
        if (pkt->props.raw_len || pkt->omitted)
            return MQ_ERR_INVAL; /* no property block to put them in */
    } else if ((rc = measure_props(pkt->type, &pkt->props, &parsed, &props_size))) {
        return rc;
    }
    switch (pkt->type) {
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
    case MQ_DISCONNECT:
    case MQ_AUTH: break;
    default:
        if (pkt->omitted)
            return MQ_ERR_INVAL;
    }

    *first = (uint8_t)(pkt->type << 4);
    switch (pkt->type) {
    case MQ_CONNECT: return measure_connect(pkt, props_size, remaining);
    case MQ_CONNACK:
        if (!codec_reason_allowed(MQ_CONNACK, pkt->u.connack.return_code) ||
            (pkt->u.connack.return_code && pkt->u.connack.session_present))
            return MQ_ERR_INVAL;
        *remaining = 2 + props_size;
        return 0;
    case MQ_PUBLISH:
        if (pub->qos > 2 || (pub->dup && pub->qos == 0) || (pub->qos && pub->packet_id == 0) ||
            !bytes_ok(pub->topic) || (pub->payload_len && !pub->payload))
            return MQ_ERR_INVAL;
        if (pub->topic.len ? topic_check_name(pub->topic.ptr, pub->topic.len) != 0
                           : !codec_props_has(&parsed, MQ_PROP_TOPIC_ALIAS))
            return MQ_ERR_INVAL;
        *first |= (uint8_t)((pub->dup ? 0x08 : 0) | pub->qos << 1 | (pub->retain ? 1 : 0));
        *remaining =
            2u + (uint64_t)pub->topic.len + (pub->qos ? 2u : 0u) + props_size + pub->payload_len;
        return 0;
    case MQ_PUBREL:
        *first |= 0x02;
        /* fall through */
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBCOMP:
        if (pkt->u.ack.packet_id == 0 ||
            measure_reason_tail(pkt, pkt->u.ack.reason, true, props_size, &tail))
            return MQ_ERR_INVAL;
        *remaining = 2 + tail;
        return 0;
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        *first |= 0x02;
        if (tl->with_qos != (pkt->type == MQ_SUBSCRIBE) || tl->packet_id == 0 ||
            (tl->entries_len && !tl->entries) ||
            codec_check_topic_entries(tl->entries, tl->entries_len, tl->with_qos, true, &count) ||
            count != tl->count)
            return MQ_ERR_INVAL;
        *remaining = 2u + props_size + tl->entries_len;
        return 0;
    case MQ_SUBACK:
    case MQ_UNSUBACK:
        if (sa->packet_id == 0 || !sa->codes || check_codes(pkt->type, sa->codes, sa->count))
            return MQ_ERR_INVAL;
        *remaining = 2u + props_size + sa->count;
        return 0;
    case MQ_PINGREQ:
    case MQ_PINGRESP: *remaining = 0; return 0;
    case MQ_DISCONNECT:
        if (measure_reason_tail(pkt, pkt->u.disconnect.reason, true, props_size, remaining))
            return MQ_ERR_INVAL;
        return 0;
    case MQ_AUTH:
        if (measure_reason_tail(pkt, pkt->u.auth.reason, false, props_size, remaining) ||
            (pkt->omitted == MQ_OMIT_NONE && !codec_props_has(&parsed, MQ_PROP_AUTH_METHOD)))
            return MQ_ERR_INVAL;
        return 0;
    }
    return MQ_ERR_INVAL;
}

uint8_t *codec5_write(const struct mq_packet *pkt, uint8_t *p)
{
    switch (pkt->type) {
    case MQ_CONNECT: return write_connect(pkt, p);
    case MQ_CONNACK:
        *p++ = pkt->u.connack.session_present ? 1 : 0;
        *p++ = pkt->u.connack.return_code;
        return put_props(p, &pkt->props);
    case MQ_PUBLISH:
        p = put_bytes(p, pkt->u.publish.topic);
        if (pkt->u.publish.qos)
            p = put_u16(p, pkt->u.publish.packet_id);
        p = put_props(p, &pkt->props);
        return put_raw(p, pkt->u.publish.payload, pkt->u.publish.payload_len);
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
        p = put_u16(p, pkt->u.ack.packet_id);
        return write_reason_tail(pkt, pkt->u.ack.reason, p);
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        p = put_u16(p, pkt->u.subscribe.packet_id);
        p = put_props(p, &pkt->props);
        return put_raw(p, pkt->u.subscribe.entries, pkt->u.subscribe.entries_len);
    case MQ_SUBACK:
    case MQ_UNSUBACK:
        p = put_u16(p, pkt->u.suback.packet_id);
        p = put_props(p, &pkt->props);
        return put_raw(p, pkt->u.suback.codes, pkt->u.suback.count);
    case MQ_PINGREQ:
    case MQ_PINGRESP: return p;
    case MQ_DISCONNECT: return write_reason_tail(pkt, pkt->u.disconnect.reason, p);
    case MQ_AUTH: return write_reason_tail(pkt, pkt->u.auth.reason, p);
    }
    return p;
}

/* ---------------------------------------------------------------------------------------------
 * Send-path helpers
 * ------------------------------------------------------------------------------------------- */

size_t codec_publish5_header(uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                             uint16_t topic_len, uint16_t packet_id, uint32_t props_len,
                             uint32_t payload_len, uint8_t *out)
{
    if (qos > 2 || (dup && qos == 0) || props_len > MQ_MAX_REMAINING_LENGTH)
        return 0;
    uint64_t remaining = 2u + (uint64_t)topic_len + (qos ? 2u : 0u) + codec_varint_size(props_len) +
                         props_len + payload_len;
    if (remaining > MQ_MAX_REMAINING_LENGTH)
        return 0;
    uint8_t first = (uint8_t)(MQ_PUBLISH << 4 | (dup ? 0x08 : 0) | qos << 1 | (retain ? 1 : 0));
    uint8_t *p = out + codec_fixed_header(first, (uint32_t)remaining, out);
    p = put_raw(put_u16(p, topic_len), topic, topic_len);
    if (qos)
        p = put_u16(p, packet_id);
    p += codec_varint_write(props_len, p);
    return (size_t)(p - out);
}

size_t codec_ack5_header(enum mq_packet_type type, uint16_t packet_id, uint8_t reason,
                         uint32_t props_len, uint8_t *out)
{
    bool has_id = false;
    switch (type) {
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP: has_id = true; break;
    case MQ_DISCONNECT:
    case MQ_AUTH: break;
    default: return 0;
    }
    if (props_len > MQ_MAX_REMAINING_LENGTH - 8)
        return 0;
    /* The shortest form: nothing after the packet id for success without properties; the
     * reason alone when there are no properties (AUTH has no such form, 3.15.2.1). */
    bool with_reason = reason || props_len;
    bool with_props = props_len || (with_reason && type == MQ_AUTH);
    uint32_t remaining = (has_id ? 2u : 0u) + (with_reason ? 1u : 0u) +
                         (with_props ? codec_varint_size(props_len) + props_len : 0u);
    uint8_t first = (uint8_t)(type << 4 | (type == MQ_PUBREL ? 0x02 : 0));
    uint8_t *p = out + codec_fixed_header(first, remaining, out);
    if (has_id)
        p = put_u16(p, packet_id);
    if (with_reason)
        *p++ = reason;
    if (with_props)
        p += codec_varint_write(props_len, p);
    return (size_t)(p - out);
}

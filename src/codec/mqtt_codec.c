/* mqtt_codec.c - MQTT 3.1 / 3.1.1 wire format: decode and encode all 14 packet types.
 *
 * Owns every validity rule that can be checked on one packet in isolation; session rules
 * belong to proto. Pure: no allocation, no I/O, no state. Decoded packets borrow the caller's
 * buffer, and every body read is bounded by the packet's remaining length, never by the buffer.
 * Invariant: codec_encode accepts exactly what codec_decode can produce, and re-encodes it
 * byte for byte (the remaining length is always written in its shortest form).
 */
#include "midge/codec.h"

#include <string.h>

#include "midge/err.h"
#include "midge/topic.h"

/* ---------------------------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------------------------- */

/* A read cursor over one packet body; running past `end` is MQ_ERR_TRUNCATED. */
struct rd {
    const uint8_t *p;
    const uint8_t *end;
};

static size_t rd_left(const struct rd *r)
{
    return (size_t)(r->end - r->p);
}

static int rd_u8(struct rd *r, uint8_t *v)
{
    if (r->p == r->end)
        return MQ_ERR_TRUNCATED;
    *v = *r->p++;
    return 0;
}

static int rd_u16(struct rd *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return MQ_ERR_TRUNCATED;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return 0;
}

/* A 2-byte-length-prefixed string or binary field. */
static int rd_bytes(struct rd *r, struct mq_bytes *b)
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

static int rd_packet_id(struct rd *r, uint16_t *id)
{
    int rc = rd_u16(r, id);
    if (rc)
        return rc;
    return *id ? 0 : MQ_ERR_PACKET_ID_ZERO;
}

static bool bytes_eq(struct mq_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && memcmp(b.ptr, s, n) == 0;
}

/* Rules that depend on the first byte alone, so they fire before the length arrives
 * ([MQTT-2.2.2-1], [MQTT-2.2.2-2], [MQTT-3.3.1-2], [MQTT-3.3.1-4]). */
static int check_first_byte(uint8_t b)
{
    unsigned type = b >> 4, flags = b & 0x0F;
    if (type == 0 || type == 15)
        return MQ_ERR_BAD_TYPE;
    if (type == MQ_PUBLISH) {
        unsigned qos = (flags >> 1) & 3;
        if (qos == 3)
            return MQ_ERR_QOS3;
        if (qos == 0 && (flags & 0x08))
            return MQ_ERR_BAD_FLAGS;
        return 0;
    }
    unsigned want = (type == MQ_PUBREL || type == MQ_SUBSCRIBE || type == MQ_UNSUBSCRIBE) ? 2 : 0;
    return flags == want ? 0 : MQ_ERR_BAD_FLAGS;
}

/* Fixed-size packets are judged on their remaining length alone, as soon as it is known. */
static int check_fixed_size(unsigned type, uint32_t remaining)
{
    switch (type) {
    case MQ_CONNACK:
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
    case MQ_UNSUBACK: return remaining == 2 ? 0 : MQ_ERR_MALFORMED;
    case MQ_PINGREQ:
    case MQ_PINGRESP:
    case MQ_DISCONNECT: return remaining == 0 ? 0 : MQ_ERR_MALFORMED;
    default: return 0;
    }
}

/* Everything after the protocol level. Fields are stored before they are judged so that a
 * CONNECT with an unsupported level still yields as much as could be read. */
static int decode_connect_rest(struct rd *r, struct mq_connect *c)
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
        return MQ_ERR_QOS3; /* [MQTT-3.1.2-14] */
    if (c->has_password && !c->has_username)
        return MQ_ERR_PASSWORD_WITHOUT_USER; /* [MQTT-3.1.2-22] */
    if ((rc = rd_u16(r, &c->keepalive)))
        return rc;
    /* MQTT 3.1 has no empty client id; a body that ends before the field is answered with
     * CONNACK 2 like an empty one, so it gets its own code (see codec.h). */
    if (c->protocol_level == 3 && rd_left(r) == 0)
        return MQ_ERR_NO_CLIENT_ID;
    if ((rc = rd_bytes(r, &c->client_id)) ||
        (rc = topic_check_utf8(c->client_id.ptr, c->client_id.len)))
        return rc;
    if (c->will_flag) {
        if ((rc = rd_bytes(r, &c->will_topic)) ||
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

static int decode_connect(struct rd *r, struct mq_connect *c)
{
    int rc = rd_bytes(r, &c->protocol_name);
    if (rc)
        return rc;
    uint8_t want;
    if (bytes_eq(c->protocol_name, "MQTT"))
        want = 4;
    else if (bytes_eq(c->protocol_name, "MQIsdp"))
        want = 3;
    else
        return MQ_ERR_BAD_PROTOCOL_NAME;
    if ((rc = rd_u8(r, &c->protocol_level)))
        return rc;
    /* The top bit is the bridge flag (Mosquitto's try_private): the level is the rest. */
    c->bridge = c->protocol_level & 0x80;
    c->protocol_level &= 0x7F;
    rc = decode_connect_rest(r, c);
    /* [MQTT-3.1.2-2]: an unsupported level wins over whatever follows, because the server must
     * answer it with CONNACK 0x01 (a newer client's body may not parse as 3.1.1 at all). */
    if (c->protocol_level != want)
        return MQ_ERR_BAD_PROTOCOL_LEVEL;
    return rc;
}

static int decode_connack(struct rd *r, struct mq_connack *c)
{
    uint8_t ack = r->p[0], code = r->p[1]; /* length is checked to be 2 */
    c->session_present = ack & 0x01;
    c->return_code = code;
    if (ack & 0xFE)
        return MQ_ERR_MALFORMED; /* [MQTT-3.2.2-1] reserved acknowledge flags */
    if (code > MQ_CONNACK_NOT_AUTHORIZED)
        return MQ_ERR_BAD_RETURN_CODE;
    if (code && c->session_present)
        return MQ_ERR_MALFORMED; /* [MQTT-3.2.2-4] */
    return 0;
}

static int decode_publish(struct rd *r, uint8_t flags, struct mq_publish *p)
{
    p->qos = (flags >> 1) & 3;
    p->dup = flags & 0x08;
    p->retain = flags & 0x01;
    int rc = rd_bytes(r, &p->topic);
    if (rc || (rc = topic_check_name(p->topic.ptr, p->topic.len)))
        return rc;
    if (p->qos && (rc = rd_packet_id(r, &p->packet_id)))
        return rc;
    p->payload = r->p;
    p->payload_len = (uint32_t)rd_left(r);
    return 0;
}

/* Validate the raw entries of a SUBSCRIBE (with_qos) or UNSUBSCRIBE and count them. Shared
 * with the encoder so both sides agree on what a valid entry list is. */
static int check_topic_entries(const uint8_t *entries, size_t len, bool with_qos, uint16_t *count)
{
    if (len == 0)
        return MQ_ERR_EMPTY_SUBSCRIBE; /* [MQTT-3.8.3-3], [MQTT-3.10.3-2] */
    struct rd r = {entries, entries + len};
    uint32_t n = 0;
    while (rd_left(&r)) {
        struct mq_bytes filter;
        int rc = rd_bytes(&r, &filter);
        if (rc || (rc = topic_check_filter(filter.ptr, filter.len)))
            return rc;
        if (with_qos) {
            uint8_t qos;
            if ((rc = rd_u8(&r, &qos)))
                return rc;
            if (qos & 0xFC)
                return MQ_ERR_SUBSCRIBE_RESERVED; /* [MQTT-3.8.3-4] */
            if (qos == 3)
                return MQ_ERR_QOS3;
        }
        if (++n > UINT16_MAX)
            return MQ_ERR_TOO_MANY_FILTERS; /* the count and its SUBACK must stay countable */
    }
    *count = (uint16_t)n;
    return 0;
}

static int decode_topic_list(struct rd *r, bool with_qos, struct mq_topic_list *l)
{
    l->with_qos = with_qos;
    int rc = rd_packet_id(r, &l->packet_id);
    if (rc)
        return rc;
    l->entries = r->p;
    l->entries_len = (uint32_t)rd_left(r);
    return check_topic_entries(l->entries, l->entries_len, with_qos, &l->count);
}

static bool suback_code_ok(uint8_t code)
{
    return code <= 2 || code == MQ_SUBACK_FAILURE;
}

static int decode_suback(struct rd *r, struct mq_suback *s)
{
    int rc = rd_packet_id(r, &s->packet_id);
    if (rc)
        return rc;
    size_t n = rd_left(r);
    if (n == 0)
        return MQ_ERR_TRUNCATED; /* one code per filter, and a SUBSCRIBE has at least one */
    if (n > UINT16_MAX)
        return MQ_ERR_TOO_MANY_FILTERS;
    s->codes = r->p;
    s->count = (uint16_t)n;
    for (size_t i = 0; i < n; i++)
        if (!suback_code_ok(s->codes[i]))
            return MQ_ERR_BAD_RETURN_CODE;
    return 0;
}

static int decode_body(struct rd *r, struct mq_packet *out)
{
    switch (out->type) {
    case MQ_CONNECT: return decode_connect(r, &out->u.connect);
    case MQ_CONNACK: return decode_connack(r, &out->u.connack);
    case MQ_PUBLISH: return decode_publish(r, out->flags, &out->u.publish);
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
    case MQ_UNSUBACK: return rd_packet_id(r, &out->u.packet_id);
    case MQ_SUBSCRIBE: return decode_topic_list(r, true, &out->u.subscribe);
    case MQ_UNSUBSCRIBE: return decode_topic_list(r, false, &out->u.subscribe);
    case MQ_SUBACK: return decode_suback(r, &out->u.suback);
    case MQ_PINGREQ:
    case MQ_PINGRESP:
    case MQ_DISCONNECT: return 0;
    case MQ_AUTH: break;
    }
    return MQ_ERR_BAD_TYPE; /* unreachable: check_first_byte rejected 0 and 15 */
}

/* Parse the fixed header: 1 with *header (its size) and *remaining set, 0 while incomplete,
 * or a negative error from the first byte or the length bytes. */
static int parse_fixed_header(const uint8_t *buf, size_t len, size_t *header, uint32_t *remaining)
{
    if (len == 0)
        return 0;
    int rc = check_first_byte(buf[0]);
    if (rc)
        return rc;
    uint32_t value = 0;
    size_t i = 1;
    for (;;) {
        if (i >= len)
            return 0;
        uint8_t b = buf[i];
        value |= (uint32_t)(b & 0x7F) << (7 * (i - 1));
        i++;
        if (!(b & 0x80))
            break;
        /* A 4th length byte that still continues can never be valid: say so now rather than
         * waiting for a 5th byte a hostile peer may never send. */
        if (i == MQ_MAX_FIXED_HEADER)
            return MQ_ERR_BAD_REMAINING_LENGTH;
    }
    *header = i;
    *remaining = value;
    return 1;
}

int codec_decode(const uint8_t *buf, size_t len, const struct mq_decode_limits *limits,
                 struct mq_packet *out)
{
    size_t header = 0;
    uint32_t remaining = 0;
    int rc = parse_fixed_header(buf, len, &header, &remaining);
    if (rc <= 0)
        return rc;

    unsigned type = buf[0] >> 4;
    if ((rc = check_fixed_size(type, remaining)))
        return rc;
    size_t total = header + (size_t)remaining;
    if (limits && limits->max_packet_size && total > limits->max_packet_size)
        return MQ_ERR_TOO_LARGE;
    if (len < total)
        return 0;

    memset(out, 0, sizeof *out);
    out->type = (enum mq_packet_type)type;
    out->flags = buf[0] & 0x0F;
    struct rd r = {buf + header, buf + total};
    rc = decode_body(&r, out);
    return rc ? rc : (int)total;
}

size_t codec_packet_size(const uint8_t *buf, size_t len)
{
    size_t header = 0;
    uint32_t remaining = 0;
    if (parse_fixed_header(buf, len, &header, &remaining) <= 0)
        return 0;
    return header + (size_t)remaining;
}

bool codec_topic_list_next(struct mq_topic_iter *it, struct mq_bytes *filter, uint8_t *qos)
{
    const struct mq_topic_list *l = it->list;
    if (!l || it->offset >= l->entries_len || l->entries_len - it->offset < 2)
        return false;
    const uint8_t *e = l->entries + it->offset;
    uint16_t n = (uint16_t)(e[0] << 8 | e[1]);
    uint32_t size = 2u + n + (l->with_qos ? 1u : 0u);
    /* Lists from codec_decode are valid; this guards hand-built ones. */
    if (l->entries_len - it->offset < size)
        return false;
    filter->ptr = e + 2;
    filter->len = n;
    if (qos)
        *qos = l->with_qos ? e[2 + n] : 0;
    it->offset += size;
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------------------------- */

unsigned codec_varint_size(uint32_t n)
{
    if (n < 128u)
        return 1;
    if (n < 16384u)
        return 2;
    if (n < 2097152u)
        return 3;
    return n <= MQ_MAX_REMAINING_LENGTH ? 4 : 0;
}

unsigned codec_fixed_header(uint8_t first_byte, uint32_t remaining, uint8_t *out)
{
    if (remaining > MQ_MAX_REMAINING_LENGTH)
        return 0;
    unsigned i = 0;
    out[i++] = first_byte;
    do {
        uint8_t b = remaining & 0x7F;
        remaining >>= 7;
        out[i++] = remaining ? (uint8_t)(b | 0x80) : b;
    } while (remaining);
    return i;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_raw(uint8_t *p, const uint8_t *s, size_t n)
{
    if (n)
        memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_bytes(uint8_t *p, struct mq_bytes b)
{
    return put_raw(put_u16(p, b.len), b.ptr, b.len);
}

size_t codec_publish_header(uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                            uint16_t topic_len, uint16_t packet_id, uint32_t payload_len,
                            uint8_t *out)
{
    if (qos > 2 || (dup && qos == 0))
        return 0;
    uint64_t remaining = 2u + (uint64_t)topic_len + (qos ? 2u : 0u) + payload_len;
    if (remaining > MQ_MAX_REMAINING_LENGTH)
        return 0;
    uint8_t first = (uint8_t)(MQ_PUBLISH << 4 | (dup ? 0x08 : 0) | qos << 1 | (retain ? 1 : 0));
    uint8_t *p = out + codec_fixed_header(first, (uint32_t)remaining, out);
    p = put_raw(put_u16(p, topic_len), topic, topic_len);
    if (qos)
        p = put_u16(p, packet_id);
    return (size_t)(p - out);
}

/* A field the encoder may read: a length with no bytes behind it is a caller bug. */
static bool bytes_ok(struct mq_bytes b)
{
    return b.len == 0 || b.ptr != NULL;
}

/* The protocol name and level a CONNECT goes out with: an empty name picks the one that
 * matches the level (3 → "MQIsdp"; 0 or 4 → "MQTT" level 4). */
static void connect_protocol(const struct mq_connect *c, struct mq_bytes *name, uint8_t *level)
{
    *name = c->protocol_name;
    *level = c->protocol_level;
    if (name->len == 0) {
        if (*level == 0)
            *level = 4;
        name->ptr = (const uint8_t *)(*level == 3 ? "MQIsdp" : "MQTT");
        name->len = *level == 3 ? 6 : 4;
    }
}

/* Validate a CONNECT exactly as the decoder would and compute its remaining length. */
static int measure_connect(const struct mq_connect *c, uint64_t *remaining)
{
    struct mq_bytes name;
    uint8_t level;
    connect_protocol(c, &name, &level);
    if (!bytes_ok(name) ||
        !(bytes_eq(name, "MQTT") ? level == 4 : bytes_eq(name, "MQIsdp") && level == 3))
        return MQ_ERR_INVAL;
    if (c->will_qos > 2 || (!c->will_flag && (c->will_qos || c->will_retain)) ||
        (c->has_password && !c->has_username))
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
    *remaining = n;
    return 0;
}

static uint8_t *write_connect(const struct mq_connect *c, uint8_t *p)
{
    struct mq_bytes name;
    uint8_t level;
    connect_protocol(c, &name, &level);
    p = put_bytes(p, name);
    *p++ = (uint8_t)(level | (c->bridge ? 0x80 : 0));
    *p++ = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
                     (c->will_retain ? 0x20 : 0) | c->will_qos << 3 | (c->will_flag ? 0x04 : 0) |
                     (c->clean_session ? 0x02 : 0));
    p = put_u16(p, c->keepalive);
    p = put_bytes(p, c->client_id);
    if (c->will_flag) {
        p = put_bytes(p, c->will_topic);
        p = put_bytes(p, c->will_payload);
    }
    if (c->has_username)
        p = put_bytes(p, c->username);
    if (c->has_password)
        p = put_bytes(p, c->password);
    return p;
}

/* First byte and remaining length of pkt, after checking it is a packet the decoder accepts.
 * The flags nibble comes from the type (and PUBLISH fields), never from pkt->flags. */
static int measure(const struct mq_packet *pkt, uint8_t *first, uint64_t *remaining)
{
    const struct mq_publish *pub = &pkt->u.publish;
    const struct mq_topic_list *tl = &pkt->u.subscribe;
    const struct mq_suback *sa = &pkt->u.suback;
    uint16_t count = 0;

    *first = (uint8_t)(pkt->type << 4);
    switch (pkt->type) {
    case MQ_CONNECT: return measure_connect(&pkt->u.connect, remaining);
    case MQ_CONNACK:
        if (pkt->u.connack.return_code > MQ_CONNACK_NOT_AUTHORIZED ||
            (pkt->u.connack.return_code && pkt->u.connack.session_present))
            return MQ_ERR_INVAL;
        *remaining = 2;
        return 0;
    case MQ_PUBLISH:
        if (pub->qos > 2 || (pub->dup && pub->qos == 0) || (pub->qos && pub->packet_id == 0) ||
            !bytes_ok(pub->topic) || topic_check_name(pub->topic.ptr, pub->topic.len) ||
            (pub->payload_len && !pub->payload))
            return MQ_ERR_INVAL;
        *first |= (uint8_t)((pub->dup ? 0x08 : 0) | pub->qos << 1 | (pub->retain ? 1 : 0));
        *remaining = 2u + (uint64_t)pub->topic.len + (pub->qos ? 2u : 0u) + pub->payload_len;
        return 0;
    case MQ_PUBREL:
        *first |= 0x02;
        /* fall through */
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBCOMP:
    case MQ_UNSUBACK:
        if (pkt->u.packet_id == 0)
            return MQ_ERR_INVAL;
        *remaining = 2;
        return 0;
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        *first |= 0x02;
        if (tl->with_qos != (pkt->type == MQ_SUBSCRIBE) || tl->packet_id == 0 ||
            (tl->entries_len && !tl->entries) ||
            check_topic_entries(tl->entries, tl->entries_len, tl->with_qos, &count) ||
            count != tl->count)
            return MQ_ERR_INVAL;
        *remaining = 2u + (uint64_t)tl->entries_len;
        return 0;
    case MQ_SUBACK:
        if (sa->packet_id == 0 || sa->count == 0 || !sa->codes)
            return MQ_ERR_INVAL;
        for (unsigned i = 0; i < sa->count; i++)
            if (!suback_code_ok(sa->codes[i]))
                return MQ_ERR_INVAL;
        *remaining = 2u + sa->count;
        return 0;
    case MQ_PINGREQ:
    case MQ_PINGRESP:
    case MQ_DISCONNECT: *remaining = 0; return 0;
    case MQ_AUTH: break;
    }
    return MQ_ERR_INVAL;
}

long codec_encode(const struct mq_packet *pkt, uint8_t *out, size_t cap)
{
    uint8_t first;
    uint64_t remaining;
    int rc = measure(pkt, &first, &remaining);
    if (rc)
        return rc;
    if (remaining > MQ_MAX_REMAINING_LENGTH)
        return MQ_ERR_INVAL;
    size_t total = 1 + codec_varint_size((uint32_t)remaining) + (size_t)remaining;
    if (total > cap)
        return (long)total;

    uint8_t *p = out + codec_fixed_header(first, (uint32_t)remaining, out);
    switch (pkt->type) {
    case MQ_CONNECT: p = write_connect(&pkt->u.connect, p); break;
    case MQ_CONNACK:
        *p++ = pkt->u.connack.session_present ? 1 : 0;
        *p++ = pkt->u.connack.return_code;
        break;
    case MQ_PUBLISH:
        p = put_bytes(p, pkt->u.publish.topic);
        if (pkt->u.publish.qos)
            p = put_u16(p, pkt->u.publish.packet_id);
        p = put_raw(p, pkt->u.publish.payload, pkt->u.publish.payload_len);
        break;
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
    case MQ_UNSUBACK: p = put_u16(p, pkt->u.packet_id); break;
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        p = put_u16(p, pkt->u.subscribe.packet_id);
        p = put_raw(p, pkt->u.subscribe.entries, pkt->u.subscribe.entries_len);
        break;
    case MQ_SUBACK:
        p = put_u16(p, pkt->u.suback.packet_id);
        p = put_raw(p, pkt->u.suback.codes, pkt->u.suback.count);
        break;
    case MQ_PINGREQ:
    case MQ_PINGRESP:
    case MQ_DISCONNECT:
    case MQ_AUTH: break;
    }
    return (long)(p - out);
}

uint8_t codec_connect_refusal(int err, const struct mq_packet *p)
{
    (void)p;
    if (err == MQ_ERR_BAD_PROTOCOL_LEVEL)
        return MQ_CONNACK_BAD_PROTOCOL;
    return err == MQ_ERR_NO_CLIENT_ID ? MQ_CONNACK_ID_REJECTED : 0;
}

unsigned codec_varint_write(uint32_t n, uint8_t *out)
{
    (void)n, (void)out;
    return 0;
}

int codec_varint_read(const uint8_t *buf, size_t len, bool minimal, uint32_t *n)
{
    (void)buf, (void)len, (void)minimal, (void)n;
    return MQ_ERR_BAD_VARINT;
}

size_t codec_publish5_header(uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                             uint16_t topic_len, uint16_t packet_id, uint32_t props_len,
                             uint32_t payload_len, uint8_t *out)
{
    (void)qos, (void)dup, (void)retain, (void)topic, (void)topic_len, (void)packet_id,
        (void)props_len, (void)payload_len, (void)out;
    return 0;
}

size_t codec_ack5_header(enum mq_packet_type type, uint16_t packet_id, uint8_t reason,
                         uint32_t props_len, uint8_t *out)
{
    (void)type, (void)packet_id, (void)reason, (void)props_len, (void)out;
    return 0;
}

const char *codec_type_name(unsigned type)
{
    static const char *const names[16] = {
        [MQ_CONNECT] = "CONNECT",         [MQ_CONNACK] = "CONNACK",       [MQ_PUBLISH] = "PUBLISH",
        [MQ_PUBACK] = "PUBACK",           [MQ_PUBREC] = "PUBREC",         [MQ_PUBREL] = "PUBREL",
        [MQ_PUBCOMP] = "PUBCOMP",         [MQ_SUBSCRIBE] = "SUBSCRIBE",   [MQ_SUBACK] = "SUBACK",
        [MQ_UNSUBSCRIBE] = "UNSUBSCRIBE", [MQ_UNSUBACK] = "UNSUBACK",     [MQ_PINGREQ] = "PINGREQ",
        [MQ_PINGRESP] = "PINGRESP",       [MQ_DISCONNECT] = "DISCONNECT",
    };
    return type < 16 && names[type] ? names[type] : "RESERVED";
}

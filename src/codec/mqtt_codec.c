/* mqtt_codec.c - the fixed header, the choice of dialect, and the MQTT 3.1 / 3.1.1 bodies.
 *
 * Owns every validity rule of MQTT 3.x that can be checked on one packet in isolation, the
 * CONNECT (which says its own dialect) and the send-path header helpers; the MQTT 5 bodies
 * are in mqtt5_codec.c. Pure: no allocation, no I/O, no state. Decoded packets borrow the
 * caller's buffer, and every body read is bounded by the packet's remaining length.
 * Invariant: codec_encode accepts exactly what codec_decode can produce, and re-encodes it
 * byte for byte (the remaining length is always written in its shortest form).
 * The 3.x decode path is the broker's hottest code: it differs from the MQTT 5 one by a
 * single branch on the connection's level, and never clears more than it must.
 */
#include "midge/codec.h"

#include <stddef.h>
#include <string.h>

#include "codec_int.h"
#include "midge/err.h"
#include "midge/topic.h"

/* ---------------------------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------------------------- */

/* u.packet_id names the packet id of u.ack and u.suback, which older callers use. */
_Static_assert(offsetof(struct mq_ack, packet_id) == 0 &&
                   offsetof(struct mq_suback, packet_id) == 0,
               "u.packet_id must alias u.ack.packet_id and u.suback.packet_id");

/* Rules that depend on the first byte alone, so they fire before the length arrives
 * ([MQTT-2.2.2-1], [MQTT-2.2.2-2], [MQTT-3.3.1-2], [MQTT-3.3.1-4]; MQTT 5: [MQTT-2.1.3-1],
 * [MQTT-3.15.1-1]). AUTH (15) exists only in MQTT 5. */
static int check_first_byte(uint8_t b, bool v5)
{
    unsigned type = b >> 4, flags = b & 0x0F;
    if (type == 0 || (type == 15 && !v5))
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

/* Fixed-size packets of MQTT 3.x are judged on their remaining length alone, as soon as it is
 * known. (In MQTT 5 only PINGREQ and PINGRESP have a fixed size.) */
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

/* A CONNECT, whatever the connection's level: the protocol name and level decide how the
 * rest is read ("MQTT" 5 is MQTT 5). out->version says which dialect was read. Cleared
 * first, being rare, so that every field that could not be read is empty. minimal_header:
 * the remaining length was in its shortest form, which only MQTT 5 requires. */
static int decode_connect(struct rd *r, bool minimal_header, struct mq_packet *out)
{
    struct mq_connect *c = &out->u.connect;
    memset(c, 0, sizeof *c);
    out->version = 4;
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
    out->version = want;
    if ((rc = rd_u8(r, &c->protocol_level)))
        return rc;
    /* The top bit is the bridge flag (Mosquitto's try_private): the level is the rest. */
    c->bridge = c->protocol_level & 0x80;
    c->protocol_level &= 0x7F;
    if (want == 4 && c->protocol_level == 5) {
        out->version = 5;
        return minimal_header ? codec5_decode_connect(r, out) : MQ_ERR_BAD_VARINT;
    }
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
    p->packet_id = 0;
    int rc = rd_bytes(r, &p->topic);
    if (rc || (rc = topic_check_name(p->topic.ptr, p->topic.len)))
        return rc;
    if (p->qos && (rc = rd_packet_id(r, &p->packet_id)))
        return rc;
    p->payload = r->p;
    p->payload_len = (uint32_t)rd_left(r);
    return 0;
}

/* A shared subscription's filter ($share/{ShareName}/{filter}, 4.8.2). */
static bool is_shared(struct mq_bytes f)
{
    return f.len >= 7 && memcmp(f.ptr, "$share/", 7) == 0;
}

/* The options byte of an MQTT 5 SUBSCRIBE entry (3.8.3.1). */
static int check_options5(uint8_t opts, struct mq_bytes filter)
{
    if (opts & 0xC0)
        return MQ_ERR_SUBSCRIBE_RESERVED; /* [MQTT-3.8.3-5]: Malformed */
    if (MQ_SUB_QOS(opts) == 3)
        return MQ_ERR_SUBSCRIBE_QOS3; /* "a Protocol Error if the Maximum QoS field has the value 3"
                                       */
    if (MQ_SUB_RETAIN_HANDLING(opts) == 3)
        return MQ_ERR_RETAIN_HANDLING; /* "a Protocol Error to send a Retain Handling value of 3" */
    if ((opts & MQ_SUB_NO_LOCAL) && is_shared(filter))
        return MQ_ERR_NO_LOCAL_SHARED; /* [MQTT-3.8.3-4] */
    return 0;
}

int codec_check_topic_entries(const uint8_t *entries, size_t len, bool with_qos, bool v5,
                              uint16_t *count)
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
            if (v5) {
                if ((rc = check_options5(qos, filter)))
                    return rc;
            } else if (qos & 0xFC) {
                return MQ_ERR_SUBSCRIBE_RESERVED; /* [MQTT-3.8.3-4] */
            } else if (qos == 3) {
                return MQ_ERR_QOS3;
            }
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
    l->count = 0;
    return codec_check_topic_entries(l->entries, l->entries_len, with_qos, false, &l->count);
}

static bool suback_code_ok(uint8_t code)
{
    return code <= 2 || code == MQ_SUBACK_FAILURE;
}

static int decode_suback(struct rd *r, struct mq_suback *s)
{
    s->count = 0;
    s->codes = NULL;
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

/* The body of an MQTT 3.x packet other than CONNECT. */
static int decode_body(struct rd *r, struct mq_packet *out)
{
    switch (out->type) {
    case MQ_CONNACK: return decode_connack(r, &out->u.connack);
    case MQ_PUBLISH: return decode_publish(r, out->flags, &out->u.publish);
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP: out->u.ack.reason = 0; return rd_packet_id(r, &out->u.ack.packet_id);
    case MQ_UNSUBACK:
        out->u.suback.count = 0; /* MQTT 3.x: no return codes */
        out->u.suback.codes = NULL;
        return rd_packet_id(r, &out->u.suback.packet_id);
    case MQ_SUBSCRIBE: return decode_topic_list(r, true, &out->u.subscribe);
    case MQ_UNSUBSCRIBE: return decode_topic_list(r, false, &out->u.subscribe);
    case MQ_SUBACK: return decode_suback(r, &out->u.suback);
    case MQ_DISCONNECT: out->u.disconnect.reason = 0; return 0;
    case MQ_PINGREQ:
    case MQ_PINGRESP: return 0;
    case MQ_CONNECT:
    case MQ_AUTH: break;
    }
    return MQ_ERR_BAD_TYPE; /* unreachable: CONNECT is read apart, 0 and 15 were rejected */
}

/* Parse the fixed header: 1 with *header (its size) and *remaining set, 0 while incomplete,
 * or a negative error from the first byte or the length bytes. Inlined, so that each caller
 * gets the copy for its dialect: called out of line it cost the MQTT 3.x decode 10%. */
static inline __attribute__((always_inline)) int
parse_fixed_header(const uint8_t *buf, size_t len, bool v5, size_t *header, uint32_t *remaining)
{
    if (len == 0)
        return 0;
    int rc = check_first_byte(buf[0], v5);
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

/* MQ_ERR_TOO_LARGE, said before the body is read; for a CONNECT whose protocol name and level
 * are already in buf and say MQTT 5, with them in *out, so that proto can answer CONNACK
 * 0x95 (codec_connect_refusal). */
static int too_large(const uint8_t *buf, size_t len, size_t header, struct mq_packet *out)
{
    static const uint8_t v5_start[] = {0, 4, 'M', 'Q', 'T', 'T'};
    out->version = 0;
    if (buf[0] >> 4 != MQ_CONNECT || len - header < sizeof v5_start + 1 ||
        memcmp(buf + header, v5_start, sizeof v5_start) != 0 ||
        (buf[header + sizeof v5_start] & 0x7F) != 5)
        return MQ_ERR_TOO_LARGE;
    out->type = MQ_CONNECT;
    out->flags = buf[0] & 0x0F;
    out->version = 5;
    out->omitted = 0;
    props_none(&out->props);
    struct mq_connect *c = &out->u.connect;
    memset(c, 0, sizeof *c);
    c->protocol_name = (struct mq_bytes){buf + header + 2, 4};
    c->protocol_level = 5;
    c->bridge = buf[header + sizeof v5_start] & 0x80;
    return MQ_ERR_TOO_LARGE;
}

/* The error return of codec_decode before out->type is known: version 0 keeps it from
 * looking like an MQTT 5 CONNECT (codec_connect_refusal). */
static int early_error(struct mq_packet *out, int rc)
{
    out->version = 0;
    return rc;
}

/* The fields every decoded packet sets, before its body is read. No memset of the packet:
 * each body decoder writes every field of its own member, so the cost per message does not
 * grow with the largest member (a CONNECT and its will properties). */
static void start_packet(struct mq_packet *out, uint8_t first_byte)
{
    out->type = (enum mq_packet_type)(first_byte >> 4);
    out->flags = first_byte & 0x0F;
    out->omitted = 0;
    props_none(&out->props);
}

/* codec_decode on an MQTT 5 connection. Kept apart from the MQTT 3.x path, which is the
 * broker's hottest code and pays a single branch for MQTT 5's existence. */
static __attribute__((noinline)) int decode_v5(const uint8_t *buf, size_t len,
                                               const struct mq_decode_limits *limits,
                                               struct mq_packet *out)
{
    size_t header = 0;
    uint32_t remaining = 0;
    int rc = parse_fixed_header(buf, len, true, &header, &remaining);
    if (rc <= 0)
        return rc ? early_error(out, rc) : 0;
    unsigned type = buf[0] >> 4;
    if ((type == MQ_PINGREQ || type == MQ_PINGRESP) && remaining)
        return early_error(out, MQ_ERR_MALFORMED);
    /* [MQTT-1.5.5-1]: MQTT 5 wants the shortest form (MQTT 3.1.1 does not say so). A CONNECT
     * checks it itself, to be answered as one. */
    if (type != MQ_CONNECT && header - 1 > codec_varint_size(remaining))
        return early_error(out, MQ_ERR_BAD_VARINT);
    size_t total = header + (size_t)remaining;
    if (limits->max_packet_size && total > limits->max_packet_size)
        return too_large(buf, len, header, out);
    if (len < total)
        return 0;
    start_packet(out, buf[0]);
    struct rd r = {buf + header, buf + total};
    if (type == MQ_CONNECT) {
        rc = decode_connect(&r, header - 1 == codec_varint_size(remaining), out);
    } else {
        out->version = 5;
        rc = codec5_decode_body(&r, out);
    }
    return rc ? rc : (int)total;
}

int codec_decode(const uint8_t *buf, size_t len, const struct mq_decode_limits *limits,
                 struct mq_packet *out)
{
    if (limits && limits->protocol_level == 5)
        return decode_v5(buf, len, limits, out);
    size_t header = 0;
    uint32_t remaining = 0;
    int rc = parse_fixed_header(buf, len, false, &header, &remaining);
    if (rc <= 0)
        return rc ? early_error(out, rc) : 0;

    unsigned type = buf[0] >> 4;
    if ((rc = check_fixed_size(type, remaining)))
        return early_error(out, rc);
    size_t total = header + (size_t)remaining;
    if (limits && limits->max_packet_size && total > limits->max_packet_size)
        return too_large(buf, len, header, out);
    if (len < total)
        return 0;

    start_packet(out, buf[0]);
    struct rd r = {buf + header, buf + total};
    if (type == MQ_CONNECT) {
        rc = decode_connect(&r, header - 1 == codec_varint_size(remaining), out);
    } else {
        out->version = limits && limits->protocol_level == 3 ? 3 : 4;
        rc = decode_body(&r, out);
    }
    return rc ? rc : (int)total;
}

uint8_t codec_connect_refusal(int err, const struct mq_packet *p)
{
    if (err >= 0)
        return 0;
    if (p && p->type == MQ_CONNECT && p->version == 5)
        return codec_error_reason(err);
    if (err == MQ_ERR_BAD_PROTOCOL_LEVEL)
        return MQ_CONNACK_BAD_PROTOCOL; /* [MQTT-3.1.2-2] */
    return err == MQ_ERR_NO_CLIENT_ID ? MQ_CONNACK_ID_REJECTED : 0;
}

size_t codec_packet_size(const uint8_t *buf, size_t len)
{
    size_t header = 0;
    uint32_t remaining = 0;
    /* AUTH exists only in MQTT 5, where codec_decode has judged its type already. */
    bool auth = len && buf[0] >> 4 == MQ_AUTH;
    if (parse_fixed_header(buf, len, auth, &header, &remaining) <= 0)
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

unsigned codec_varint_write(uint32_t n, uint8_t *out)
{
    if (n > MQ_MAX_REMAINING_LENGTH)
        return 0;
    unsigned i = 0;
    do {
        uint8_t b = n & 0x7F;
        n >>= 7;
        out[i++] = n ? (uint8_t)(b | 0x80) : b;
    } while (n);
    return i;
}

int codec_varint_read(const uint8_t *buf, size_t len, bool minimal, uint32_t *n)
{
    uint32_t value = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= len)
            return 0;
        value |= (uint32_t)(buf[i] & 0x7F) << (7 * i);
        if (!(buf[i] & 0x80)) {
            /* A last byte of 0 after the first adds nothing: a shorter form existed. */
            if (minimal && i > 0 && buf[i] == 0)
                return MQ_ERR_BAD_VARINT;
            *n = value;
            return (int)i + 1;
        }
    }
    return MQ_ERR_BAD_VARINT;
}

unsigned codec_fixed_header(uint8_t first_byte, uint32_t remaining, uint8_t *out)
{
    if (remaining > MQ_MAX_REMAINING_LENGTH)
        return 0;
    out[0] = first_byte;
    return 1 + codec_varint_write(remaining, out + 1);
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

void codec_connect_protocol(const struct mq_connect *c, unsigned version, struct mq_bytes *name,
                            uint8_t *level)
{
    *name = c->protocol_name;
    *level = c->protocol_level;
    if (*level == 0)
        *level = version == 5 ? 5 : 4;
    if (name->len == 0) {
        name->ptr = (const uint8_t *)(*level == 3 ? "MQIsdp" : "MQTT");
        name->len = *level == 3 ? 6 : 4;
    }
}

/* Validate an MQTT 3.x CONNECT exactly as the decoder would and compute its remaining length. */
static int measure_connect(const struct mq_connect *c, uint64_t *remaining)
{
    struct mq_bytes name;
    uint8_t level;
    codec_connect_protocol(c, 4, &name, &level);
    if (!bytes_ok(name) ||
        !(bytes_eq(name, "MQTT") ? level == 4 : bytes_eq(name, "MQIsdp") && level == 3))
        return MQ_ERR_INVAL;
    if (c->will_qos > 2 || (!c->will_flag && (c->will_qos || c->will_retain)) ||
        (c->has_password && !c->has_username) || c->will_props.raw_len)
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
    codec_connect_protocol(c, 4, &name, &level);
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

/* First byte and remaining length of an MQTT 3.x pkt, after checking it is a packet the
 * decoder accepts. The flags nibble comes from the type (and PUBLISH fields), never from
 * pkt->flags. An MQTT 5 field set (properties, omitted) cannot come from a 3.x decode. */
static int measure(const struct mq_packet *pkt, uint8_t *first, uint64_t *remaining)
{
    const struct mq_publish *pub = &pkt->u.publish;
    const struct mq_topic_list *tl = &pkt->u.subscribe;
    const struct mq_suback *sa = &pkt->u.suback;
    uint16_t count = 0;

    if (pkt->props.raw_len || pkt->omitted)
        return MQ_ERR_INVAL;
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
    case MQ_UNSUBACK: /* u.packet_id is u.ack.packet_id and u.suback.packet_id */
        if (pkt->u.packet_id == 0)
            return MQ_ERR_INVAL;
        *remaining = 2;
        return 0;
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        *first |= 0x02;
        if (tl->with_qos != (pkt->type == MQ_SUBSCRIBE) || tl->packet_id == 0 ||
            (tl->entries_len && !tl->entries) ||
            codec_check_topic_entries(tl->entries, tl->entries_len, tl->with_qos, false, &count) ||
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

/* The body of an MQTT 3.x packet measured by measure(). */
static uint8_t *write_body(const struct mq_packet *pkt, uint8_t *p)
{
    switch (pkt->type) {
    case MQ_CONNECT: return write_connect(&pkt->u.connect, p);
    case MQ_CONNACK:
        *p++ = pkt->u.connack.session_present ? 1 : 0;
        *p++ = pkt->u.connack.return_code;
        return p;
    case MQ_PUBLISH:
        p = put_bytes(p, pkt->u.publish.topic);
        if (pkt->u.publish.qos)
            p = put_u16(p, pkt->u.publish.packet_id);
        return put_raw(p, pkt->u.publish.payload, pkt->u.publish.payload_len);
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
    case MQ_UNSUBACK: return put_u16(p, pkt->u.packet_id);
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        p = put_u16(p, pkt->u.subscribe.packet_id);
        return put_raw(p, pkt->u.subscribe.entries, pkt->u.subscribe.entries_len);
    case MQ_SUBACK:
        p = put_u16(p, pkt->u.suback.packet_id);
        return put_raw(p, pkt->u.suback.codes, pkt->u.suback.count);
    case MQ_PINGREQ:
    case MQ_PINGRESP:
    case MQ_DISCONNECT:
    case MQ_AUTH: return p;
    }
    return p;
}

long codec_encode(const struct mq_packet *pkt, uint8_t *out, size_t cap)
{
    unsigned version = pkt->version ? pkt->version : 4;
    if (version < 3 || version > 5)
        return MQ_ERR_INVAL;
    uint8_t first;
    uint64_t remaining;
    int rc =
        version == 5 ? codec5_measure(pkt, &first, &remaining) : measure(pkt, &first, &remaining);
    if (rc)
        return rc;
    if (remaining > MQ_MAX_REMAINING_LENGTH)
        return MQ_ERR_INVAL;
    size_t total = 1 + codec_varint_size((uint32_t)remaining) + (size_t)remaining;
    if (total > cap)
        return (long)total;

    uint8_t *p = out + codec_fixed_header(first, (uint32_t)remaining, out);
    p = version == 5 ? codec5_write(pkt, p) : write_body(pkt, p);
    return (long)(p - out);
}

const char *codec_type_name(unsigned type)
{
    static const char *const names[16] = {
        [MQ_CONNECT] = "CONNECT",         [MQ_CONNACK] = "CONNACK",       [MQ_PUBLISH] = "PUBLISH",
        [MQ_PUBACK] = "PUBACK",           [MQ_PUBREC] = "PUBREC",         [MQ_PUBREL] = "PUBREL",
        [MQ_PUBCOMP] = "PUBCOMP",         [MQ_SUBSCRIBE] = "SUBSCRIBE",   [MQ_SUBACK] = "SUBACK",
        [MQ_UNSUBSCRIBE] = "UNSUBSCRIBE", [MQ_UNSUBACK] = "UNSUBACK",     [MQ_PINGREQ] = "PINGREQ",
        [MQ_PINGRESP] = "PINGRESP",       [MQ_DISCONNECT] = "DISCONNECT", [MQ_AUTH] = "AUTH",
    };
    return type < 16 && names[type] ? names[type] : "RESERVED";
}

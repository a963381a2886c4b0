/* props.c - MQTT 5 properties (2.2.2): the identifier table, the block iterator, the
 * per-packet validator and the allocation-free writer.
 *
 * Owns which property may appear where, how often, and with which values; the packet
 * decoder in mqtt_codec.c only finds the blocks and hands them here. Pure: works on
 * borrowed blocks, allocates nothing, keeps nothing. Everything is table-driven by the
 * identifier (all identifiers of MQTT 5 are below 0x2B, so one uint64_t bit each), so a
 * property's type, name and placements are written down exactly once.
 */
#include <string.h>

#include "midge/codec.h"
#include "midge/err.h"
#include "midge/topic.h"

#define PROP_ID_LIMIT 0x2B /* one past the largest identifier MQTT 5 defines */

static const struct {
    uint8_t type; /* enum mq_prop_type */
    const char *name;
} prop_table[PROP_ID_LIMIT] = {
    [MQ_PROP_PAYLOAD_FORMAT] = {MQ_PROPT_BYTE, "Payload Format Indicator"},
    [MQ_PROP_MESSAGE_EXPIRY] = {MQ_PROPT_U32, "Message Expiry Interval"},
    [MQ_PROP_CONTENT_TYPE] = {MQ_PROPT_UTF8, "Content Type"},
    [MQ_PROP_RESPONSE_TOPIC] = {MQ_PROPT_UTF8, "Response Topic"},
    [MQ_PROP_CORRELATION_DATA] = {MQ_PROPT_BINARY, "Correlation Data"},
    [MQ_PROP_SUBSCRIPTION_ID] = {MQ_PROPT_VARINT, "Subscription Identifier"},
    [MQ_PROP_SESSION_EXPIRY] = {MQ_PROPT_U32, "Session Expiry Interval"},
    [MQ_PROP_ASSIGNED_CLIENT_ID] = {MQ_PROPT_UTF8, "Assigned Client Identifier"},
    [MQ_PROP_SERVER_KEEP_ALIVE] = {MQ_PROPT_U16, "Server Keep Alive"},
    [MQ_PROP_AUTH_METHOD] = {MQ_PROPT_UTF8, "Authentication Method"},
    [MQ_PROP_AUTH_DATA] = {MQ_PROPT_BINARY, "Authentication Data"},
    [MQ_PROP_REQUEST_PROBLEM_INFO] = {MQ_PROPT_BYTE, "Request Problem Information"},
    [MQ_PROP_WILL_DELAY] = {MQ_PROPT_U32, "Will Delay Interval"},
    [MQ_PROP_REQUEST_RESPONSE_INFO] = {MQ_PROPT_BYTE, "Request Response Information"},
    [MQ_PROP_RESPONSE_INFO] = {MQ_PROPT_UTF8, "Response Information"},
    [MQ_PROP_SERVER_REFERENCE] = {MQ_PROPT_UTF8, "Server Reference"},
    [MQ_PROP_REASON_STRING] = {MQ_PROPT_UTF8, "Reason String"},
    [MQ_PROP_RECEIVE_MAXIMUM] = {MQ_PROPT_U16, "Receive Maximum"},
    [MQ_PROP_TOPIC_ALIAS_MAXIMUM] = {MQ_PROPT_U16, "Topic Alias Maximum"},
    [MQ_PROP_TOPIC_ALIAS] = {MQ_PROPT_U16, "Topic Alias"},
    [MQ_PROP_MAXIMUM_QOS] = {MQ_PROPT_BYTE, "Maximum QoS"},
    [MQ_PROP_RETAIN_AVAILABLE] = {MQ_PROPT_BYTE, "Retain Available"},
    [MQ_PROP_USER] = {MQ_PROPT_PAIR, "User Property"},
    [MQ_PROP_MAXIMUM_PACKET_SIZE] = {MQ_PROPT_U32, "Maximum Packet Size"},
    [MQ_PROP_WILDCARD_SUB_AVAILABLE] = {MQ_PROPT_BYTE, "Wildcard Subscription Available"},
    [MQ_PROP_SUB_ID_AVAILABLE] = {MQ_PROPT_BYTE, "Subscription Identifier Available"},
    [MQ_PROP_SHARED_SUB_AVAILABLE] = {MQ_PROPT_BYTE, "Shared Subscription Available"},
};

#define B(name) MQ_PROP_BIT(MQ_PROP_##name)
#define ACK_PROPS (B(REASON_STRING) | B(USER))
#define MESSAGE_PROPS                                                                              \
    (B(PAYLOAD_FORMAT) | B(MESSAGE_EXPIRY) | B(CONTENT_TYPE) | B(RESPONSE_TOPIC) |                 \
     B(CORRELATION_DATA) | B(USER))

/* The "Used in" column of the table in 2.2.2.2, by packet type (MQ_PROPS_WILL is 0, a
 * type no packet has). PINGREQ and PINGRESP carry no property block at all. */
static const uint64_t allowed[16] = {
    [MQ_PROPS_WILL] = MESSAGE_PROPS | B(WILL_DELAY),
    [MQ_CONNECT] = B(SESSION_EXPIRY) | B(AUTH_METHOD) | B(AUTH_DATA) | B(REQUEST_PROBLEM_INFO) |
                   B(REQUEST_RESPONSE_INFO) | B(RECEIVE_MAXIMUM) | B(TOPIC_ALIAS_MAXIMUM) |
                   B(USER) | B(MAXIMUM_PACKET_SIZE),
    [MQ_CONNACK] = B(SESSION_EXPIRY) | B(ASSIGNED_CLIENT_ID) | B(SERVER_KEEP_ALIVE) |
                   B(AUTH_METHOD) | B(AUTH_DATA) | B(RESPONSE_INFO) | B(SERVER_REFERENCE) |
                   B(REASON_STRING) | B(RECEIVE_MAXIMUM) | B(TOPIC_ALIAS_MAXIMUM) | B(MAXIMUM_QOS) |
                   B(RETAIN_AVAILABLE) | B(USER) | B(MAXIMUM_PACKET_SIZE) |
                   B(WILDCARD_SUB_AVAILABLE) | B(SUB_ID_AVAILABLE) | B(SHARED_SUB_AVAILABLE),
    [MQ_PUBLISH] = MESSAGE_PROPS | B(SUBSCRIPTION_ID) | B(TOPIC_ALIAS),
    [MQ_PUBACK] = ACK_PROPS,
    [MQ_PUBREC] = ACK_PROPS,
    [MQ_PUBREL] = ACK_PROPS,
    [MQ_PUBCOMP] = ACK_PROPS,
    [MQ_SUBSCRIBE] = B(SUBSCRIPTION_ID) | B(USER),
    [MQ_SUBACK] = ACK_PROPS,
    [MQ_UNSUBSCRIBE] = B(USER),
    [MQ_UNSUBACK] = ACK_PROPS,
    [MQ_DISCONNECT] = B(SESSION_EXPIRY) | B(SERVER_REFERENCE) | ACK_PROPS,
    [MQ_AUTH] = B(AUTH_METHOD) | B(AUTH_DATA) | ACK_PROPS,
};

/* Properties whose value is a byte that must be 0 or 1 ("It is a Protocol Error to ...
 * have a value other than 0 or 1"): 3.1.2.11.6-7, 3.2.2.3.4-5, 3.2.2.3.11-13; and the
 * Payload Format Indicator, whose only defined values are 0 and 1 (3.3.2.3.2). */
#define BOOLEAN_PROPS                                                                              \
    (B(PAYLOAD_FORMAT) | B(REQUEST_PROBLEM_INFO) | B(REQUEST_RESPONSE_INFO) | B(MAXIMUM_QOS) |     \
     B(RETAIN_AVAILABLE) | B(WILDCARD_SUB_AVAILABLE) | B(SUB_ID_AVAILABLE) |                       \
     B(SHARED_SUB_AVAILABLE))

enum mq_prop_type codec_prop_type(unsigned id)
{
    return id < PROP_ID_LIMIT ? (enum mq_prop_type)prop_table[id].type : MQ_PROPT_NONE;
}

const char *codec_prop_name(unsigned id)
{
    return id < PROP_ID_LIMIT && prop_table[id].name ? prop_table[id].name : "unknown property";
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* A 2-byte-length-prefixed field at p[0..left): its total size, or 0 when it runs past. */
static size_t read_field(const uint8_t *p, size_t left, struct mq_bytes *b)
{
    if (left < 2)
        return 0;
    uint16_t n = get_u16(p);
    if (left - 2 < n)
        return 0;
    b->ptr = p + 2;
    b->len = n;
    return 2u + n;
}

int codec_prop_next(struct mq_prop_iter *it, struct mq_prop *out)
{
    if (it->p >= it->end)
        return 0;
    const uint8_t *p = it->p;
    size_t left = (size_t)(it->end - p);
    /* The identifier is a variable byte integer, but every one MQTT 5 defines fits in one
     * byte: a byte with the top bit set starts an identifier nobody defines (2.2.2.2). */
    uint8_t id = p[0];
    enum mq_prop_type type = codec_prop_type(id);
    size_t n = 1, k;
    int rc;
    out->id = id;
    out->type = (uint8_t)type;
    switch (type) {
    case MQ_PROPT_NONE: return MQ_ERR_PROPERTY_NOT_ALLOWED;
    case MQ_PROPT_BYTE:
        if (left < 2)
            return MQ_ERR_TRUNCATED;
        out->num = p[1];
        n = 2;
        break;
    case MQ_PROPT_U16:
        if (left < 3)
            return MQ_ERR_TRUNCATED;
        out->num = get_u16(p + 1);
        n = 3;
        break;
    case MQ_PROPT_U32:
        if (left < 5)
            return MQ_ERR_TRUNCATED;
        out->num = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        n = 5;
        break;
    case MQ_PROPT_VARINT:
        rc = codec_varint_read(p + 1, left - 1, true, &out->num);
        if (rc <= 0)
            return rc ? rc : MQ_ERR_TRUNCATED;
        n = 1 + (size_t)rc;
        break;
    case MQ_PROPT_UTF8:
    case MQ_PROPT_BINARY:
        if (!(k = read_field(p + 1, left - 1, &out->str)))
            return MQ_ERR_TRUNCATED;
        /* [MQTT-1.5.4-1], [MQTT-1.5.4-2]: ill-formed strings make the packet malformed. */
        if (type == MQ_PROPT_UTF8 && (rc = topic_check_utf8(out->str.ptr, out->str.len)))
            return rc;
        n += k;
        break;
    case MQ_PROPT_PAIR:
        if (!(k = read_field(p + 1, left - 1, &out->str)))
            return MQ_ERR_TRUNCATED;
        n += k;
        if (!(k = read_field(p + n, left - n, &out->value)))
            return MQ_ERR_TRUNCATED;
        n += k;
        /* [MQTT-1.5.7-1]: both strings of a pair obey the UTF-8 rules. */
        if ((rc = topic_check_utf8(out->str.ptr, out->str.len)) ||
            (rc = topic_check_utf8(out->value.ptr, out->value.len)))
            return rc;
        break;
    }
    out->raw = p;
    out->raw_len = (uint32_t)n;
    it->p = p + n;
    return 1;
}

/* The value rules of one property that can be judged alone. */
static int check_value(const struct mq_prop *p)
{
    uint64_t bit = MQ_PROP_BIT(p->id);
    if ((bit & BOOLEAN_PROPS) && p->num > 1)
        return MQ_ERR_PROPERTY_VALUE;
    switch (p->id) {
    case MQ_PROP_RECEIVE_MAXIMUM:     /* 3.1.2.11.3, 3.2.2.3.3 */
    case MQ_PROP_MAXIMUM_PACKET_SIZE: /* 3.1.2.11.4, 3.2.2.3.6 */
    case MQ_PROP_SUBSCRIPTION_ID:     /* 3.3.2.3.8, 3.8.2.1.2 */
        return p->num ? 0 : MQ_ERR_PROPERTY_VALUE;
    case MQ_PROP_TOPIC_ALIAS: /* [MQTT-3.3.2-8]; answered 0x94 Topic Alias invalid */
        return p->num ? 0 : MQ_ERR_TOPIC_ALIAS_ZERO;
    case MQ_PROP_RESPONSE_TOPIC: /* a topic name: [MQTT-3.3.2-14], [MQTT-4.7.3-1] */
        return topic_check_name(p->str.ptr, p->str.len) ? MQ_ERR_RESPONSE_TOPIC : 0;
    default: return 0;
    }
}

/* Store a property that passed every check in its field of *out. */
static void store(struct mq_props *out, const struct mq_prop *p)
{
    uint8_t b = (uint8_t)p->num;
    uint16_t h = (uint16_t)p->num;
    switch ((enum mq_prop_id)p->id) {
    case MQ_PROP_PAYLOAD_FORMAT: out->payload_format = b; break;
    case MQ_PROP_MESSAGE_EXPIRY: out->message_expiry = p->num; break;
    case MQ_PROP_CONTENT_TYPE: out->content_type = p->str; break;
    case MQ_PROP_RESPONSE_TOPIC: out->response_topic = p->str; break;
    case MQ_PROP_CORRELATION_DATA: out->correlation_data = p->str; break;
    case MQ_PROP_SUBSCRIPTION_ID:
        if (out->sub_id_count++ == 0)
            out->subscription_id = p->num;
        break;
    case MQ_PROP_SESSION_EXPIRY: out->session_expiry = p->num; break;
    case MQ_PROP_ASSIGNED_CLIENT_ID: out->assigned_client_id = p->str; break;
    case MQ_PROP_SERVER_KEEP_ALIVE: out->server_keep_alive = h; break;
    case MQ_PROP_AUTH_METHOD: out->auth_method = p->str; break;
    case MQ_PROP_AUTH_DATA: out->auth_data = p->str; break;
    case MQ_PROP_REQUEST_PROBLEM_INFO: out->request_problem_info = b; break;
    case MQ_PROP_WILL_DELAY: out->will_delay = p->num; break;
    case MQ_PROP_REQUEST_RESPONSE_INFO: out->request_response_info = b; break;
    case MQ_PROP_RESPONSE_INFO: out->response_info = p->str; break;
    case MQ_PROP_SERVER_REFERENCE: out->server_reference = p->str; break;
    case MQ_PROP_REASON_STRING: out->reason_string = p->str; break;
    case MQ_PROP_RECEIVE_MAXIMUM: out->receive_maximum = h; break;
    case MQ_PROP_TOPIC_ALIAS_MAXIMUM: out->topic_alias_maximum = h; break;
    case MQ_PROP_TOPIC_ALIAS: out->topic_alias = h; break;
    case MQ_PROP_MAXIMUM_QOS: out->maximum_qos = b; break;
    case MQ_PROP_RETAIN_AVAILABLE: out->retain_available = b; break;
    case MQ_PROP_USER: out->user_count++; break;
    case MQ_PROP_MAXIMUM_PACKET_SIZE: out->maximum_packet_size = p->num; break;
    case MQ_PROP_WILDCARD_SUB_AVAILABLE: out->wildcard_sub_available = b; break;
    case MQ_PROP_SUB_ID_AVAILABLE: out->sub_id_available = b; break;
    case MQ_PROP_SHARED_SUB_AVAILABLE: out->shared_sub_available = b; break;
    }
}

int codec_props_parse(unsigned where, const uint8_t *block, size_t len, struct mq_props *out)
{
    out->present = 0;
    out->raw = len ? block : NULL;
    out->raw_len = (uint32_t)len;
    out->user_count = 0;
    out->sub_id_count = 0;
    if (len > MQ_MAX_REMAINING_LENGTH)
        return MQ_ERR_TRUNCATED; /* no packet can hold it */
    uint64_t ok = where < 16 ? allowed[where] : 0;
    /* User Property may repeat anywhere; Subscription Identifier in PUBLISH, where a server
     * gives one per matching subscription (3.3.2.3.8); everything else only once. */
    uint64_t repeatable = B(USER) | (where == MQ_PUBLISH ? B(SUBSCRIPTION_ID) : 0);
    struct mq_prop_iter it = codec_prop_iter(block, len);
    struct mq_prop p;
    int rc;
    while ((rc = codec_prop_next(&it, &p)) > 0) {
        uint64_t bit = MQ_PROP_BIT(p.id);
        if (!(ok & bit))
            return MQ_ERR_PROPERTY_NOT_ALLOWED; /* 2.2.2.2: a Malformed Packet */
        if ((out->present & bit) && !(repeatable & bit))
            return MQ_ERR_DUPLICATE_PROPERTY;
        if ((rc = check_value(&p)))
            return rc;
        out->present |= bit;
        store(out, &p);
    }
    if (rc < 0)
        return rc;
    /* 3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is no
     * Authentication Method." */
    if (where == MQ_CONNECT && (out->present & B(AUTH_DATA)) && !(out->present & B(AUTH_METHOD)))
        return MQ_ERR_AUTH_METHOD;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------------------------- */

/* Room for n more bytes, or NULL (and overflow) when they do not fit. Once a property did
 * not fit nothing more is written, so the block never has a hole, but len keeps counting. */
static uint8_t *reserve(struct mq_prop_writer *w, size_t n)
{
    size_t at = w->len;
    w->len += n;
    if (w->overflow || n > w->cap || at > w->cap - n) {
        w->overflow = true;
        return NULL;
    }
    return w->buf + at;
}

/* Check id against the put function's type: false (and invalid) when they disagree. */
static bool typed(struct mq_prop_writer *w, unsigned id, enum mq_prop_type want)
{
    if (codec_prop_type(id) == want ||
        (want == MQ_PROPT_UTF8 && codec_prop_type(id) == MQ_PROPT_BINARY))
        return true;
    w->invalid = true;
    return false;
}

static uint8_t *put_be(uint8_t *p, uint32_t v, unsigned bytes)
{
    for (unsigned i = bytes; i-- > 0; v >>= 8)
        p[i] = (uint8_t)v;
    return p + bytes;
}

static void put_number(struct mq_prop_writer *w, unsigned id, enum mq_prop_type type, uint32_t v,
                       unsigned bytes)
{
    if (!typed(w, id, type))
        return;
    uint8_t *p = reserve(w, 1 + bytes);
    if (p) {
        *p = (uint8_t)id;
        put_be(p + 1, v, bytes);
    }
}

void codec_prop_put_u8(struct mq_prop_writer *w, enum mq_prop_id id, uint8_t v)
{
    put_number(w, id, MQ_PROPT_BYTE, v, 1);
}

void codec_prop_put_u16(struct mq_prop_writer *w, enum mq_prop_id id, uint16_t v)
{
    put_number(w, id, MQ_PROPT_U16, v, 2);
}

void codec_prop_put_u32(struct mq_prop_writer *w, enum mq_prop_id id, uint32_t v)
{
    put_number(w, id, MQ_PROPT_U32, v, 4);
}

void codec_prop_put_varint(struct mq_prop_writer *w, enum mq_prop_id id, uint32_t v)
{
    unsigned n = codec_varint_size(v);
    if (!typed(w, id, MQ_PROPT_VARINT))
        return;
    if (n == 0) {
        w->invalid = true;
        return;
    }
    uint8_t *p = reserve(w, 1 + n);
    if (p) {
        *p = (uint8_t)id;
        codec_varint_write(v, p + 1);
    }
}

static uint8_t *put_field(uint8_t *p, const void *s, size_t n)
{
    p = put_be(p, (uint32_t)n, 2);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

void codec_prop_put_bytes(struct mq_prop_writer *w, enum mq_prop_id id, const void *s, size_t n)
{
    if (!typed(w, id, MQ_PROPT_UTF8))
        return;
    if (n > UINT16_MAX || (n && !s)) {
        w->invalid = true;
        return;
    }
    uint8_t *p = reserve(w, 3 + n);
    if (p) {
        *p = (uint8_t)id;
        put_field(p + 1, s, n);
    }
}

void codec_prop_put_pair(struct mq_prop_writer *w, const void *name, size_t name_len,
                         const void *value, size_t value_len)
{
    if (name_len > UINT16_MAX || value_len > UINT16_MAX || (name_len && !name) ||
        (value_len && !value)) {
        w->invalid = true;
        return;
    }
    uint8_t *p = reserve(w, 5 + name_len + value_len);
    if (p) {
        *p = MQ_PROP_USER;
        put_field(put_field(p + 1, name, name_len), value, value_len);
    }
}

void codec_prop_put_raw(struct mq_prop_writer *w, const struct mq_prop *prop)
{
    if (!prop->raw || prop->raw_len == 0 || prop->raw[0] != prop->id ||
        codec_prop_type(prop->id) == MQ_PROPT_NONE) {
        w->invalid = true;
        return;
    }
    uint8_t *p = reserve(w, prop->raw_len);
    if (p)
        memcpy(p, prop->raw, prop->raw_len);
}

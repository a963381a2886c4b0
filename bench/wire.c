/*
 * wire.c - the few MQTT 3.1.1 and 5.0 packets midge-bench sends and reads.
 *
 * Written from the specification rather than shared with the broker, so that a
 * codec bug in midge cannot hide behind the same bug in its benchmark. Packets
 * are appended straight into a connection's output buffer: one write() then
 * carries everything a loop turn produced for that connection. MQTT 5 is the
 * same packets with a property block: midge-bench sends almost none (a Topic
 * Alias, a Session Expiry Interval) and acknowledges in the short forms, but it
 * reads every property a broker may send, to skip it or act on it.
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

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p = put_u16(p, (uint16_t)(v >> 16));
    return put_u16(p, (uint16_t)v);
}

/* Variable Byte Integer: the remaining length, and MQTT 5 property lengths. */
static uint8_t *put_varint(uint8_t *p, size_t v)
{
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        if (v)
            byte |= 0x80;
        *p++ = byte;
    } while (v);
    return p;
}

/* Fixed header: type/flags byte and the variable-length "remaining length". */
static uint8_t *put_fixed(uint8_t *p, int type, int flags, size_t remaining)
{
    *p++ = (uint8_t)((type << 4) | flags);
    return put_varint(p, remaining);
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

void wire_connect(struct buf *b, int version, const char *client_id, uint16_t keepalive, bool clean)
{
    size_t id_len = strlen(client_id);
    /* MQTT 5 without clean start: a session that outlives the connection, as clean session
     * 0 gives in 3.1.1 (a Session Expiry Interval of 0, the default, would end it). */
    size_t props = version == MQTT_5 && !clean ? 5 : 0;
    size_t rem = 10 + (version == MQTT_5 ? 1 + props : 0) + 2 + id_len;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_CONNECT, 0, rem);
    p = put_str(p, "MQTT", 4);
    *p++ = (uint8_t)version;    /* protocol level: 4 is 3.1.1, 5 is 5.0 */
    *p++ = clean ? 0x02 : 0x00; /* clean session / clean start or not; no will, no credentials */
    p = put_u16(p, keepalive);
    if (version == MQTT_5) {
        *p++ = (uint8_t)props;
        if (props) {
            *p++ = PROP_SESSION_EXPIRY;
            p = put_u32(p, 0xffffffffu);
        }
    }
    p = put_str(p, client_id, id_len);
    b->len = (size_t)(p - b->data);
}

void wire_subscribe(struct buf *b, int version, uint16_t pid, const char *share, const char *filter,
                    int qos)
{
    uint8_t len = (uint8_t)strlen(filter);
    wire_subscribe_list(b, version, pid, share, filter, 0, &len, 1, qos);
}

void wire_subscribe_list(struct buf *b, int version, uint16_t pid, const char *share,
                         const char *names, size_t stride, const uint8_t *lens, int n, int qos)
{
    size_t share_len = share ? strlen(share) : 0;
    size_t rem = 2 + (version == MQTT_5 ? 1 : 0);
    for (int k = 0; k < n; k++)
        rem += 2 + share_len + lens[k] + 1u;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_SUBSCRIBE, 0x2, rem); /* flags 0010 are mandatory */
    p = put_u16(p, pid);
    if (version == MQTT_5)
        *p++ = 0; /* no Subscription Identifier, no User Property */
    for (int k = 0; k < n; k++) {
        p = put_u16(p, (uint16_t)(share_len + lens[k]));
        memcpy(p, share, share_len);
        memcpy(p + share_len, names + (size_t)k * stride, lens[k]);
        p += share_len + lens[k];
        /* 3.1.1: the requested QoS; 5.0: the options byte, of which only the QoS is set (No
         * Local, Retain As Published and Retain Handling 0). */
        *p++ = (uint8_t)qos;
    }
    b->len = (size_t)(p - b->data);
}

uint8_t *wire_publish(struct buf *b, int version, const char *topic, size_t topic_len, int qos,
                      uint16_t pid, uint16_t alias, size_t payload_len)
{
    size_t props = alias ? 3 : 0;
    size_t rem = 2 + topic_len + (qos ? 2 : 0) + (version == MQTT_5 ? 1 + props : 0) + payload_len;
    buf_reserve(b, rem + 5);
    uint8_t *p = b->data + b->len;
    p = put_fixed(p, PKT_PUBLISH, qos << 1, rem);
    p = put_str(p, topic, topic_len);
    if (qos)
        p = put_u16(p, pid);
    if (version == MQTT_5) {
        *p++ = (uint8_t)props;
        if (alias) {
            *p++ = PROP_TOPIC_ALIAS;
            p = put_u16(p, alias);
        }
    }
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

/* ---- reading ---- */

/* A cursor over a packet's body: every read checks the end, and a short packet sets bad. */
struct rd {
    const uint8_t *p, *end;
    bool bad;
};

static uint8_t rd_u8(struct rd *r)
{
    if (r->end - r->p < 1) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

static uint16_t rd_u16(struct rd *r)
{
    if (r->end - r->p < 2) {
        r->bad = true;
        return 0;
    }
    uint16_t v = wire_u16(r->p);
    r->p += 2;
    return v;
}

static uint32_t rd_u32(struct rd *r)
{
    uint32_t hi = rd_u16(r);
    return hi << 16 | rd_u16(r);
}

static uint32_t rd_varint(struct rd *r)
{
    uint32_t v = 0;
    for (int shift = 0; shift <= 21; shift += 7) {
        uint8_t byte = rd_u8(r);
        v |= (uint32_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return v;
    }
    r->bad = true; /* more than four bytes */
    return 0;
}

/* Skips n bytes and returns where they start (NULL, with bad set, if there are fewer). */
static const uint8_t *rd_skip(struct rd *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

/* One MQTT 5 property: its identifier, and its value as a number or as bytes. */
struct prop {
    int id;
    uint32_t num;
    const uint8_t *str; /* strings and binary data (the first of a user property's pair) */
    size_t len;
};

/* Reads the next property of a block ending at r->end. Returns false at the end of the
 * block, or with r->bad set if the property is unknown or truncated. */
static bool prop_next(struct rd *r, struct prop *pr)
{
    if (r->bad || r->p >= r->end)
        return false;
    memset(pr, 0, sizeof(*pr));
    pr->id = (int)rd_varint(r);
    switch (pr->id) {
    case 0x01:
    case 0x17:
    case 0x19:
    case 0x24:
    case 0x25:
    case 0x28:
    case 0x29:
    case 0x2a:
        pr->num = rd_u8(r); /* byte */
        break;
    case 0x13:
    case 0x21:
    case 0x22:
    case 0x23:
        pr->num = rd_u16(r); /* two-byte integer */
        break;
    case 0x02:
    case 0x11:
    case 0x18:
    case 0x27:
        pr->num = rd_u32(r); /* four-byte integer */
        break;
    case 0x0b:
        pr->num = rd_varint(r); /* Subscription Identifier */
        break;
    case 0x03:
    case 0x08:
    case 0x09:
    case 0x12:
    case 0x15:
    case 0x16:
    case 0x1a:
    case 0x1c:
    case 0x1f:
        pr->len = rd_u16(r); /* UTF-8 string or binary data */
        pr->str = rd_skip(r, pr->len);
        break;
    case 0x26: /* User Property: a string pair */
        pr->len = rd_u16(r);
        pr->str = rd_skip(r, pr->len);
        rd_skip(r, rd_u16(r));
        break;
    default: r->bad = true; /* not a property of MQTT 5.0 */
    }
    return !r->bad;
}

/* Reads a property block's length and returns a cursor over the block; r moves past it. */
static struct rd rd_props(struct rd *r)
{
    uint32_t n = rd_varint(r);
    struct rd block = {r->p, r->p, r->bad};
    const uint8_t *at = rd_skip(r, n);
    if (at)
        block.end = at + n;
    block.bad = r->bad;
    return block;
}

static void copy_str(char *out, size_t cap, const struct prop *pr)
{
    size_t n = pr->len < cap - 1 ? pr->len : cap - 1;
    memcpy(out, pr->str, n);
    out[n] = '\0';
}

int wire_parse_connack(const struct packet *pk, int version, struct connack *out)
{
    memset(out, 0, sizeof(*out));
    out->receive_maximum = 65535;
    out->server_keepalive = -1;
    out->maximum_qos = 2;
    struct rd r = {pk->body, pk->body + pk->body_len, false};
    out->session_present = rd_u8(&r) & 1;
    out->reason = rd_u8(&r);
    if (version == MQTT_5 && !r.bad && r.p < r.end) {
        /* A 5.0 CONNACK always has a property block; tolerate its absence on a refusal
         * from a broker that answers an unknown level in 3.1.1 form. */
        struct rd props = rd_props(&r);
        struct prop pr;
        while (prop_next(&props, &pr)) {
            switch (pr.id) {
            case PROP_RECEIVE_MAXIMUM: out->receive_maximum = (uint16_t)pr.num; break;
            case PROP_SERVER_KEEPALIVE: out->server_keepalive = (int)pr.num; break;
            case PROP_TOPIC_ALIAS_MAXIMUM: out->topic_alias_max = (uint16_t)pr.num; break;
            case PROP_MAXIMUM_QOS: out->maximum_qos = (int)pr.num; break;
            case PROP_MAXIMUM_PACKET_SIZE: out->max_packet_size = pr.num; break;
            case PROP_REASON_STRING:
                copy_str(out->reason_string, sizeof(out->reason_string), &pr);
                break;
            default: break; /* Assigned Client Identifier, Retain Available, ...: not used */
            }
        }
        if (props.bad || out->receive_maximum == 0)
            return -1; /* 3.2.2.3.3: a Receive Maximum of 0 is a protocol error */
    }
    return r.bad || (version != MQTT_5 && r.p != r.end) ? -1 : 0;
}

int wire_parse_publish(const struct packet *pk, int version, struct publish_in *out)
{
    struct rd r = {pk->body, pk->body + pk->body_len, false};
    out->qos = (pk->flags >> 1) & 3;
    if (out->qos == 3)
        return -1;
    out->topic_len = rd_u16(&r);
    out->topic = rd_skip(&r, out->topic_len);
    out->pid = out->qos ? rd_u16(&r) : 0;
    out->props = NULL;
    out->props_len = 0;
    out->alias = 0;
    if (version == MQTT_5) {
        struct rd props = rd_props(&r);
        out->props = props.p;
        out->props_len = (size_t)(props.end - props.p);
        struct prop pr;
        while (prop_next(&props, &pr))
            if (pr.id == PROP_TOPIC_ALIAS)
                out->alias = (uint16_t)pr.num;
        if (props.bad)
            return -1;
    }
    if (r.bad || (out->qos && out->pid == 0))
        return -1;
    out->payload = r.p;
    out->payload_len = (size_t)(r.end - r.p);
    return 0;
}

int wire_parse_ack(const struct packet *pk, int version, uint16_t *pid, int *reason)
{
    struct rd r = {pk->body, pk->body + pk->body_len, false};
    *pid = rd_u16(&r);
    *reason = 0;
    if (version == MQTT_5 && !r.bad && r.p < r.end) {
        *reason = rd_u8(&r);
        if (r.p < r.end) {
            struct rd props = rd_props(&r);
            struct prop pr;
            while (prop_next(&props, &pr))
                ; /* a Reason String or User Properties: nothing to act on */
            r.bad |= props.bad;
        }
    }
    return r.bad || r.p != r.end ? -1 : 0;
}

int wire_parse_suback(const struct packet *pk, int version, uint16_t *pid, const uint8_t **codes,
                      size_t *n)
{
    struct rd r = {pk->body, pk->body + pk->body_len, false};
    *pid = rd_u16(&r);
    if (version == MQTT_5) {
        struct rd props = rd_props(&r);
        struct prop pr;
        while (prop_next(&props, &pr))
            ;
        r.bad |= props.bad;
    }
    if (r.bad)
        return -1;
    *codes = r.p;
    *n = (size_t)(r.end - r.p);
    /* An MQTT 3.1.1 UNSUBACK has no codes; a SUBACK has one per filter. */
    return pk->type == PKT_SUBACK && *n == 0 ? -1 : 0;
}

int wire_parse_disconnect(const struct packet *pk, int *reason, char *why, size_t cap)
{
    struct rd r = {pk->body, pk->body + pk->body_len, false};
    *reason = 0;
    why[0] = '\0';
    if (r.p < r.end)
        *reason = rd_u8(&r);
    if (!r.bad && r.p < r.end) {
        struct rd props = rd_props(&r);
        struct prop pr;
        while (prop_next(&props, &pr))
            if (pr.id == PROP_REASON_STRING)
                copy_str(why, cap, &pr);
        r.bad |= props.bad;
    }
    return r.bad ? -1 : 0;
}

const char *wire_connack_reason(int version, int rc)
{
    if (version == MQTT_5)
        return wire_reason_name(rc);
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

const char *wire_reason_name(int reason)
{
    switch (reason) {
    case 0x00: return "success";
    case 0x01: return "granted QoS 1";
    case 0x02: return "granted QoS 2";
    case 0x04: return "disconnect with will message";
    case 0x10: return "no matching subscribers";
    case 0x11: return "no subscription existed";
    case 0x80: return "unspecified error";
    case 0x81: return "malformed packet";
    case 0x82: return "protocol error";
    case 0x83: return "implementation specific error";
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8a: return "banned";
    case 0x8b: return "server shutting down";
    case 0x8c: return "bad authentication method";
    case 0x8d: return "keep alive timeout";
    case 0x8e: return "session taken over";
    case 0x8f: return "topic filter invalid";
    case 0x90: return "topic name invalid";
    case 0x91: return "packet identifier in use";
    case 0x92: return "packet identifier not found";
    case 0x93: return "receive maximum exceeded";
    case 0x94: return "topic alias invalid";
    case 0x95: return "packet too large";
    case 0x96: return "message rate too high";
    case 0x97: return "quota exceeded";
    case 0x98: return "administrative action";
    case 0x99: return "payload format invalid";
    case 0x9a: return "retain not supported";
    case 0x9b: return "QoS not supported";
    case 0x9c: return "use another server";
    case 0x9d: return "server moved";
    case 0x9e: return "shared subscriptions not supported";
    case 0x9f: return "connection rate exceeded";
    case 0xa0: return "maximum connect time";
    case 0xa1: return "subscription identifiers not supported";
    case 0xa2: return "wildcard subscriptions not supported";
    default: return "unknown reason code";
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

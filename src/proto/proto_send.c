/* proto_send.c - the packets the broker sends, in the dialect of each connection: MQTT 3.x
 * or 5.0 PUBLISH, the acknowledgements with their reason codes, SUBACK, UNSUBACK,
 * DISCONNECT.
 *
 * Owns "encode at send time": a message, an acknowledgement or a refusal is decided once
 * by the rest of proto, version-neutrally, and takes its wire form here, per connection.
 * Never allocates for a PUBLISH (header and properties go out by reference with the
 * payload); never sends an MQTT 5 client a packet larger than its Maximum Packet Size:
 * optional parts (Reason String) are left out first, and a PUBLISH that still does not
 * fit is not sent at all ([MQTT-3.1.2-24], [MQTT-3.1.2-25]).
 */
#include <stdlib.h>
#include <string.h>

#include "midge/codec.h"
#include "midge/msg.h"
#include "midge/session.h"
#include "proto_internal.h"

/* The largest packet the client accepts (MQTT 5 Maximum Packet Size), or 0 for none. */
static uint32_t packet_limit(const struct mq_conn *c)
{
    return conn_v5(c) && c->ext ? c->ext->max_packet_out : 0;
}

/* Whether a Reason String may go to this client: MQTT 5, and it did not set Request
 * Problem Information 0 ([MQTT-3.1.2-29]; the issue asks for the same on CONNACK and
 * DISCONNECT). */
static bool reason_strings(const struct mq_conn *c)
{
    return conn_v5(c) && (!c->ext || c->ext->problem_info);
}

/* A property block holding only a Reason String (when allowed, and when a packet of
 * `fixed` other bytes plus it stays within the client's limit): its length (0 for none). */
static size_t reason_props(const struct mq_conn *c, const char *why, size_t fixed, uint8_t *buf,
                           size_t cap)
{
    if (!why || !*why || !reason_strings(c))
        return 0;
    struct mq_prop_writer w;
    codec_prop_writer_init(&w, buf, cap);
    size_t n = strlen(why);
    codec_prop_put_bytes(&w, MQ_PROP_REASON_STRING, why, n > 256 ? 256 : n);
    if (!codec_prop_writer_ok(&w))
        return 0;
    uint32_t limit = packet_limit(c);
    /* fixed + the property length's own byte(s) + the block. */
    if (limit && fixed + codec_varint_size((uint32_t)w.len) + w.len > limit)
        return 0; /* [MQTT-3.4.2-2] and its siblings: left out, not truncated */
    return w.len;
}

size_t ack_bytes(const struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                 uint8_t reason, const char *why, uint8_t *out, size_t cap)
{
    (void)cap; /* >= MQ_ACK_MAX */
    if (!conn_v5(c)) {
        /* PUBREL is the only acknowledgement with flags (0b0010, [MQTT-3.6.1-1]). */
        out[0] = (uint8_t)(type << 4 | (type == MQ_PUBREL ? 2 : 0));
        out[1] = 2;
        out[2] = (uint8_t)(packet_id >> 8);
        out[3] = (uint8_t)packet_id;
        return 4;
    }
    uint8_t props[MQ_ACK_MAX - MQ_ACK5_HEADER_MAX];
    /* An ack with a Reason String has at most 5 + 2 + 1 + 4 bytes around its block. */
    size_t plen = reason ? reason_props(c, why, MQ_ACK5_HEADER_MAX, props, sizeof props) : 0;
    size_t n = codec_ack5_header(type, packet_id, reason, (uint32_t)plen, out);
    memcpy(out + n, props, plen);
    return n + plen;
}

void conn_send_ack(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id)
{
    conn_send_ack_rc(c, type, packet_id, 0, NULL);
}

void conn_send_ack_rc(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                      uint8_t reason, const char *why)
{
    uint8_t pkt[MQ_ACK_MAX];
    conn_send(c, pkt, ack_bytes(c, type, packet_id, reason, why, pkt, sizeof pkt));
}

size_t suback_header(const struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                     uint32_t codes, uint8_t *out)
{
    /* MQTT 5 SUBACK and UNSUBACK carry a property length (empty here) before the codes;
     * MQTT 3.x UNSUBACK carries no codes at all. */
    bool v5 = conn_v5(c);
    uint32_t remaining = 2u + (v5 ? 1u : 0u) + codes;
    size_t n = codec_fixed_header((uint8_t)(type << 4), remaining, out);
    out[n++] = (uint8_t)(packet_id >> 8);
    out[n++] = (uint8_t)packet_id;
    if (v5)
        out[n++] = 0;
    return n;
}

void conn_send_disconnect(struct mq_conn *c, uint8_t reason, const char *why)
{
    if (!conn_v5(c) || !c->connected || c->closing)
        return; /* [MQTT-3.14.0-1]: only after a successful CONNACK; 3.x has none to send */
    uint8_t pkt[MQ_ACK_MAX], props[MQ_ACK_MAX - MQ_ACK5_HEADER_MAX];
    size_t plen = reason_props(c, why, MQ_ACK5_HEADER_MAX, props, sizeof props);
    size_t n = codec_ack5_header(MQ_DISCONNECT, 0, reason, (uint32_t)plen, pkt);
    memcpy(pkt + n, props, plen);
    conn_send(c, pkt, n + plen);
}

/* Seconds of Message Expiry Interval left at now_ms ([MQTT-3.3.2-6]), to the nearest
 * second: a deadline restored after a restart may lie a few milliseconds beyond the
 * interval, and rounding up would announce more than the publisher gave. 0 once it has run
 * out (an interval of 0, or a message resent after a reconnect, which the expiry no longer
 * stops: [MQTT-4.3.3-7]). */
static uint32_t expiry_left(const struct mq_msg *m, uint64_t now_ms)
{
    if (now_ms >= m->expires_ms)
        return 0;
    uint64_t s = (m->expires_ms - now_ms + 500) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* The outbound alias of m's topic on c: 1.. when the client already has it (*known), or
 * when one may be assigned now (the table has room); 0 when none is used. Assigns nothing. */
static uint16_t alias_find(const struct mq_conn *c, const struct mq_msg *m, bool *known)
{
    const struct mq_conn_ext *x = c->ext;
    *known = false;
    if (!x || !x->alias_max_out)
        return 0; /* [MQTT-3.1.2-27], [MQTT-3.1.2-26] */
    for (uint16_t i = 0; i < x->alias_out_used; i++) {
        const struct mq_alias *a = &x->alias_out[i];
        if (a->len == m->topic_len && memcmp(a->topic, m->topic, a->len) == 0) {
            *known = true;
            return (uint16_t)(i + 1);
        }
    }
    /* Full: the topic goes out in full (no eviction: aliases stay stable). */
    return x->alias_out_used < x->alias_max_out ? (uint16_t)(x->alias_out_used + 1) : 0;
}

/* Record alias (from alias_find, not known) for m's topic; false on out of memory (the
 * topic then goes out in full, without the alias). */
static bool alias_assign(struct mq_conn *c, const struct mq_msg *m, uint16_t alias)
{
    struct mq_conn_ext *x = c->ext;
    if (!x->alias_out && !(x->alias_out = calloc(x->alias_max_out, sizeof(*x->alias_out))))
        return false;
    struct mq_alias *a = &x->alias_out[alias - 1];
    if (!(a->topic = malloc((size_t)m->topic_len + 1)))
        return false;
    memcpy(a->topic, m->topic, (size_t)m->topic_len + 1);
    a->len = m->topic_len;
    x->alias_out_used = alias;
    return true;
}

/* How an MQTT 5 PUBLISH of m goes to c: its per-copy property length and its whole size. */
struct publish5_shape {
    uint16_t alias;      /* 0: no alias */
    bool alias_known;    /* the client has it: an empty topic */
    uint32_t own_props;  /* expiry, identifiers, alias */
    uint32_t props_len;  /* own_props + the message's */
    uint64_t remaining;  /* remaining length */
    uint64_t total;      /* whole packet */
};

static void publish5_shape(const struct mq_conn *c, const struct mq_msg *m, uint8_t qos,
                           const uint32_t *ids, size_t n_ids, bool aliasing,
                           struct publish5_shape *sh)
{
    sh->alias_known = false;
    sh->alias = aliasing ? alias_find(c, m, &sh->alias_known) : 0;
    uint32_t own = m->expires_ms ? 5u : 0u;
    for (size_t i = 0; i < n_ids; i++)
        own += 1u + codec_varint_size(ids[i]);
    if (sh->alias)
        own += 3u;
    sh->own_props = own;
    sh->props_len = own + m->props_len;
    uint16_t topic_len = sh->alias_known ? 0 : m->topic_len;
    sh->remaining = 2u + (uint64_t)topic_len + (qos ? 2u : 0u) +
                    codec_varint_size(sh->props_len) + sh->props_len + m->payload_len;
    sh->total = 1u + codec_varint_size((uint32_t)sh->remaining) + sh->remaining;
}

static bool shape_fits(const struct mq_conn *c, const struct publish5_shape *sh)
{
    uint32_t limit = packet_limit(c);
    return sh->remaining <= MQ_MAX_REMAINING_LENGTH && (!limit || sh->total <= limit);
}

bool conn_publish_fits(const struct mq_conn *c, const struct mq_msg *m, uint8_t qos,
                       const uint32_t *ids, size_t n_ids)
{
    if (!conn_v5(c) || !packet_limit(c))
        return true;
    struct publish5_shape sh;
    publish5_shape(c, m, qos, ids, n_ids, true, &sh);
    return shape_fits(c, &sh);
}

bool conn_send_publish(struct mq_conn *c, const struct mq_msg *m, uint8_t qos, bool retain,
                       bool dup, uint16_t packet_id, const uint32_t *ids, size_t n_ids)
{
    if (c->closing)
        return true;
    struct mq_broker *b = c->broker;
    uint8_t first = (uint8_t)(MQ_PUBLISH << 4 | (dup ? 8 : 0) | qos << 1 | (retain ? 1 : 0));
    uint8_t pid[2] = {(uint8_t)(packet_id >> 8), (uint8_t)packet_id};
    if (!conn_v5(c)) {
        uint8_t hdr[MQ_MAX_FIXED_HEADER + 4];
        /* Header and topic are built separately from the payload so the payload is never
         * copied here: it goes to the sink by reference. */
        uint32_t remaining = 2u + m->topic_len + (qos ? 2u : 0u) + m->payload_len;
        size_t n = codec_fixed_header(first, remaining, hdr);
        hdr[n++] = (uint8_t)(m->topic_len >> 8);
        hdr[n++] = (uint8_t)m->topic_len;
        struct mq_iov iov[4] = {
            {hdr, n}, {m->topic, m->topic_len}, {pid, qos ? 2u : 0u}, {m->payload, m->payload_len}};
        b->sink->write(c, iov, 4);
        b->stats.msgs_sent++;
        b->stats.pub_sent++;
        b->stats.bytes_sent += n + remaining - 2u;
        c->pub_out++;
        c->bytes_out += n + remaining - 2u;
        return true;
    }

    /* MQTT 5: the properties of this copy, then those the message carries for everyone. */
    struct publish5_shape sh;
    publish5_shape(c, m, qos, ids, n_ids, true, &sh);
    if (!shape_fits(c, &sh))
        return false; /* [MQTT-3.1.2-25]: not sent; the caller goes on as if delivered */
    if (sh.alias && !sh.alias_known && !alias_assign(c, m, sh.alias))
        publish5_shape(c, m, qos, ids, n_ids, false, &sh); /* smaller: it fits too */
    /* The per-copy properties: on the stack, unless a message matches dozens of identified
     * subscriptions of one client. */
    uint8_t small[128];
    uint8_t *props = sh.own_props <= sizeof small ? small : malloc(sh.own_props);
    if (!props)
        return false;
    struct mq_prop_writer w;
    codec_prop_writer_init(&w, props, sh.own_props <= sizeof small ? sizeof small : sh.own_props);
    if (m->expires_ms)
        codec_prop_put_u32(&w, MQ_PROP_MESSAGE_EXPIRY, expiry_left(m, b->now_ms));
    for (size_t i = 0; i < n_ids; i++)
        codec_prop_put_varint(&w, MQ_PROP_SUBSCRIPTION_ID, ids[i]);
    if (sh.alias)
        codec_prop_put_u16(&w, MQ_PROP_TOPIC_ALIAS, sh.alias);
    uint16_t topic_len = sh.alias_known ? 0 : m->topic_len;
    uint32_t props_len = sh.props_len;
    uint64_t remaining = sh.remaining, total = sh.total;
    uint8_t hdr[MQ_MAX_FIXED_HEADER + 2];
    size_t n = codec_fixed_header(first, (uint32_t)remaining, hdr);
    hdr[n++] = (uint8_t)(topic_len >> 8);
    hdr[n++] = (uint8_t)topic_len;
    uint8_t plen[4];
    unsigned pl = codec_varint_write(props_len, plen);
    struct mq_iov iov[7] = {
        {hdr, n},       {m->topic, topic_len},        {pid, qos ? 2u : 0u},        {plen, pl},
        {props, w.len}, {msg_props(m), m->props_len}, {m->payload, m->payload_len}};
    b->sink->write(c, iov, 7); /* copies */
    if (props != small)
        free(props);
    b->stats.msgs_sent++;
    b->stats.pub_sent++;
    b->stats.bytes_sent += total;
    c->pub_out++;
    c->bytes_out += total;
    return true;
}

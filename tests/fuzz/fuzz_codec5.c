/* fuzz_codec5.c - libFuzzer target for the MQTT 5 wire format (mqtt5_codec.c, props.c and the
 * dialect choice in mqtt_codec.c).
 *
 * Owns only the oracles. Every input is decoded on an MQTT 5 connection and before CONNECT
 * (level 0, where a CONNECT says its own dialect). Whatever decodes as MQTT 5 must re-encode
 * to exactly the same bytes (MQTT 5 has one encoding of every packet), decode again to the
 * same fields, and read as "incomplete" one byte short. Every error must be one the codec
 * documents, with a reason code for it, and an MQTT 5 CONNECT that fails must say so.
 * Finally a few fields of the decoded packet are changed: whatever the encoder then accepts
 * must decode (the encoder never writes a packet the decoder refuses).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/codec.h"
#include "midge/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_codec5: %s:%d: %s\n", __FILE__, __LINE__, #cond);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void same_bytes(struct mq_bytes a, struct mq_bytes b)
{
    CHECK(a.len == b.len);
    CHECK(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Two decodes of the same property block agree on every field they claim. */
static void same_props(const struct mq_props *a, const struct mq_props *b)
{
    CHECK(a->present == b->present && a->raw_len == b->raw_len);
    CHECK(a->raw_len == 0 || memcmp(a->raw, b->raw, a->raw_len) == 0);
    CHECK(a->user_count == b->user_count && a->sub_id_count == b->sub_id_count);
#define SAME_NUM(id, f) CHECK(!codec_props_has(a, id) || a->f == b->f)
#define SAME_STR(id, f)                                                                            \
    if (codec_props_has(a, id))                                                                    \
    same_bytes(a->f, b->f)
    SAME_NUM(MQ_PROP_PAYLOAD_FORMAT, payload_format);
    SAME_NUM(MQ_PROP_MESSAGE_EXPIRY, message_expiry);
    SAME_NUM(MQ_PROP_SUBSCRIPTION_ID, subscription_id);
    SAME_NUM(MQ_PROP_SESSION_EXPIRY, session_expiry);
    SAME_NUM(MQ_PROP_SERVER_KEEP_ALIVE, server_keep_alive);
    SAME_NUM(MQ_PROP_REQUEST_PROBLEM_INFO, request_problem_info);
    SAME_NUM(MQ_PROP_WILL_DELAY, will_delay);
    SAME_NUM(MQ_PROP_REQUEST_RESPONSE_INFO, request_response_info);
    SAME_NUM(MQ_PROP_RECEIVE_MAXIMUM, receive_maximum);
    SAME_NUM(MQ_PROP_TOPIC_ALIAS_MAXIMUM, topic_alias_maximum);
    SAME_NUM(MQ_PROP_TOPIC_ALIAS, topic_alias);
    SAME_NUM(MQ_PROP_MAXIMUM_QOS, maximum_qos);
    SAME_NUM(MQ_PROP_RETAIN_AVAILABLE, retain_available);
    SAME_NUM(MQ_PROP_MAXIMUM_PACKET_SIZE, maximum_packet_size);
    SAME_NUM(MQ_PROP_WILDCARD_SUB_AVAILABLE, wildcard_sub_available);
    SAME_NUM(MQ_PROP_SUB_ID_AVAILABLE, sub_id_available);
    SAME_NUM(MQ_PROP_SHARED_SUB_AVAILABLE, shared_sub_available);
    SAME_STR(MQ_PROP_CONTENT_TYPE, content_type);
    SAME_STR(MQ_PROP_RESPONSE_TOPIC, response_topic);
    SAME_STR(MQ_PROP_CORRELATION_DATA, correlation_data);
    SAME_STR(MQ_PROP_ASSIGNED_CLIENT_ID, assigned_client_id);
    SAME_STR(MQ_PROP_AUTH_METHOD, auth_method);
    SAME_STR(MQ_PROP_AUTH_DATA, auth_data);
    SAME_STR(MQ_PROP_RESPONSE_INFO, response_info);
    SAME_STR(MQ_PROP_SERVER_REFERENCE, server_reference);
    SAME_STR(MQ_PROP_REASON_STRING, reason_string);
#undef SAME_NUM
#undef SAME_STR
    /* The block walks cleanly, and the counts and mask agree with the walk. */
    struct mq_prop_iter it = codec_prop_iter(a->raw, a->raw_len);
    struct mq_prop p;
    uint64_t seen = 0;
    uint32_t users = 0, subs = 0;
    int rc;
    while ((rc = codec_prop_next(&it, &p)) > 0) {
        seen |= MQ_PROP_BIT(p.id);
        users += p.id == MQ_PROP_USER;
        subs += p.id == MQ_PROP_SUBSCRIPTION_ID;
    }
    CHECK(rc == 0 && seen == a->present && users == a->user_count && subs == a->sub_id_count);
}

static void same_topic_list(const struct mq_topic_list *a, const struct mq_topic_list *b)
{
    CHECK(a->packet_id == b->packet_id && a->count == b->count && a->with_qos == b->with_qos);
    CHECK(a->entries_len == b->entries_len && memcmp(a->entries, b->entries, a->entries_len) == 0);
    struct mq_topic_iter ia = {a, 0}, ib = {b, 0};
    struct mq_bytes fa, fb;
    uint8_t oa, ob;
    unsigned n = 0;
    while (codec_topic_list_next(&ia, &fa, &oa)) {
        CHECK(codec_topic_list_next(&ib, &fb, &ob));
        same_bytes(fa, fb);
        CHECK(oa == ob && (a->with_qos || oa == 0));
        /* MQTT 5 options: QoS 0-2, Retain Handling 0-2, bits 6-7 clear */
        CHECK(MQ_SUB_QOS(oa) <= 2 && MQ_SUB_RETAIN_HANDLING(oa) <= 2 && (oa & 0xC0) == 0);
        n++;
    }
    CHECK(!codec_topic_list_next(&ib, &fb, &ob));
    CHECK(n == a->count);
}

static void same_packet(const struct mq_packet *a, const struct mq_packet *b)
{
    CHECK(a->type == b->type && a->flags == b->flags && a->version == b->version);
    CHECK(a->omitted == b->omitted);
    same_props(&a->props, &b->props);
    switch (a->type) {
    case MQ_CONNECT: {
        const struct mq_connect *x = &a->u.connect, *y = &b->u.connect;
        same_bytes(x->protocol_name, y->protocol_name);
        CHECK(x->protocol_level == y->protocol_level && x->bridge == y->bridge);
        CHECK(x->clean_session == y->clean_session && x->keepalive == y->keepalive);
        CHECK(x->will_flag == y->will_flag && x->will_qos == y->will_qos);
        CHECK(x->will_retain == y->will_retain);
        CHECK(x->has_username == y->has_username && x->has_password == y->has_password);
        same_bytes(x->client_id, y->client_id);
        same_bytes(x->will_topic, y->will_topic);
        same_bytes(x->will_payload, y->will_payload);
        same_bytes(x->username, y->username);
        same_bytes(x->password, y->password);
        if (x->will_flag)
            same_props(&x->will_props, &y->will_props);
        break;
    }
    case MQ_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present);
        CHECK(a->u.connack.return_code == b->u.connack.return_code);
        CHECK(codec_reason_allowed(MQ_CONNACK, a->u.connack.return_code));
        break;
    case MQ_PUBLISH: {
        const struct mq_publish *x = &a->u.publish, *y = &b->u.publish;
        CHECK(x->qos == y->qos && x->dup == y->dup && x->retain == y->retain);
        CHECK(x->packet_id == y->packet_id && x->payload_len == y->payload_len);
        CHECK(x->payload_len == 0 || memcmp(x->payload, y->payload, x->payload_len) == 0);
        same_bytes(x->topic, y->topic);
        CHECK(x->topic.len || codec_props_has(&a->props, MQ_PROP_TOPIC_ALIAS));
        break;
    }
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE: same_topic_list(&a->u.subscribe, &b->u.subscribe); break;
    case MQ_SUBACK:
    case MQ_UNSUBACK:
        CHECK(a->u.suback.packet_id == b->u.suback.packet_id && a->u.suback.packet_id != 0);
        CHECK(a->u.suback.count == b->u.suback.count && a->u.suback.count > 0);
        CHECK(memcmp(a->u.suback.codes, b->u.suback.codes, a->u.suback.count) == 0);
        for (unsigned i = 0; i < a->u.suback.count; i++)
            CHECK(codec_reason_allowed(a->type, a->u.suback.codes[i]));
        break;
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
        CHECK(a->u.ack.packet_id == b->u.ack.packet_id && a->u.ack.packet_id != 0);
        CHECK(a->u.packet_id == a->u.ack.packet_id);
        CHECK(a->u.ack.reason == b->u.ack.reason);
        CHECK(codec_reason_allowed(a->type, a->u.ack.reason));
        break;
    case MQ_DISCONNECT: CHECK(a->u.disconnect.reason == b->u.disconnect.reason); break;
    case MQ_AUTH:
        CHECK(a->u.auth.reason == b->u.auth.reason);
        CHECK(a->omitted || codec_props_has(&a->props, MQ_PROP_AUTH_METHOD));
        break;
    case MQ_PINGREQ:
    case MQ_PINGRESP: break;
    }
}

/* An error must be one the codec documents for decoding, answered with a real reason code;
 * after an MQTT 5 CONNECT's error the packet says so. */
static void check_error(int rc, const struct mq_packet *p)
{
    CHECK(strcmp(mq_err_name(rc), "MQ_ERR_UNKNOWN") != 0);
    uint8_t reason = codec_error_reason(rc);
    CHECK(reason == 0x81 || reason == 0x82 || reason == 0x84 || reason == 0x85 || reason == 0x94 ||
          reason == 0x95);
    uint8_t refusal = codec_connect_refusal(rc, p);
    if (p->type == MQ_CONNECT && p->version == 5) {
        CHECK(refusal == reason);
        CHECK(p->u.connect.protocol_level == 5);
        CHECK(p->u.connect.protocol_name.len == 4);
    } else {
        CHECK(refusal == 0 || refusal == 1 || refusal == 2);
    }
}

/* Decode data at `limits`; for MQTT 5 packets check the round trip. Returns the decoded
 * length (or 0). */
static int round_trip(const uint8_t *data, size_t size, const struct mq_decode_limits *limits,
                      struct mq_packet *p)
{
    int n = codec_decode(data, size, limits, p);
    if (n < 0)
        check_error(n, p);
    if (n <= 0)
        return 0;
    CHECK((size_t)n <= size);
    struct mq_packet q;
    CHECK(codec_decode(data, (size_t)n - 1, limits, &q) == 0);
    struct mq_decode_limits exact = *limits, below = *limits;
    exact.max_packet_size = (uint32_t)n;
    below.max_packet_size = (uint32_t)n - 1;
    CHECK(codec_decode(data, size, &exact, &q) == n);
    CHECK(codec_decode(data, size, &below, &q) == MQ_ERR_TOO_LARGE);
    if (p->version != 5)
        return n; /* MQTT 3.x: fuzz_codec's business */

    long len = codec_encode(p, NULL, 0);
    CHECK(len == n);                    /* one encoding per MQTT 5 packet */
    uint8_t *buf = malloc((size_t)len); /* exact size, so ASan sees any overrun */
    CHECK(buf);
    CHECK(codec_encode(p, buf, (size_t)len) == len);
    CHECK(memcmp(buf, data, (size_t)len) == 0);
    CHECK(codec_decode(buf, (size_t)len, limits, &q) == len);
    same_packet(p, &q);
    free(buf);
    return n;
}

/* Change a field or two as the input says (only ever shortening what points into data);
 * whatever the encoder accepts must decode again to the same bytes. */
static void mutate_and_encode(const struct mq_packet *p, const uint8_t *data, size_t size)
{
    uint8_t k = data[size - 1], v = data[0] ^ data[size / 2];
    struct mq_packet m = *p;
    switch (k & 3) {
    case 0: m.omitted = (uint8_t)(k >> 2 & 3); break;
    case 1: m.version = (k & 4) ? 4 : 5; break;
    case 2:
        if (m.props.raw_len)
            m.props.raw_len -= 1 + v % m.props.raw_len;
        break;
    case 3: /* a field of the packet's own member */
        switch (m.type) {
        case MQ_CONNECT:
            if (k & 4)
                m.u.connect.will_props.raw_len /= 2;
            if (k & 8)
                m.u.connect.has_username = !m.u.connect.has_username;
            if (k & 16)
                m.u.connect.will_flag = !m.u.connect.will_flag;
            if (k & 32)
                m.u.connect.will_qos = v & 3;
            break;
        case MQ_CONNACK:
            m.u.connack.return_code = v;
            m.u.connack.session_present = k & 4;
            break;
        case MQ_PUBLISH:
            if (k & 4)
                m.u.publish.topic.len = 0;
            else
                m.u.publish.qos = v & 3;
            break;
        case MQ_PUBACK:
        case MQ_PUBREC:
        case MQ_PUBREL:
        case MQ_PUBCOMP: m.u.ack.reason = v; break;
        case MQ_SUBSCRIBE:
        case MQ_UNSUBSCRIBE: m.u.subscribe.with_qos = !m.u.subscribe.with_qos; break;
        case MQ_SUBACK:
        case MQ_UNSUBACK:
            if (m.u.suback.count)
                m.u.suback.count--;
            break;
        case MQ_DISCONNECT: m.u.disconnect.reason = v; break;
        case MQ_AUTH: m.u.auth.reason = v; break;
        case MQ_PINGREQ:
        case MQ_PINGRESP: break;
        }
        break;
    }
    long len = codec_encode(&m, NULL, 0);
    if (len <= 0)
        return;
    uint8_t *buf = malloc((size_t)len);
    CHECK(buf);
    CHECK(codec_encode(&m, buf, (size_t)len) == len);
    struct mq_decode_limits at = {.protocol_level = m.version == 5 ? 5 : 4};
    struct mq_packet q;
    int rc = codec_decode(buf, (size_t)len, &at, &q);
    if (rc != len)
        fprintf(stderr, "fuzz_codec5: encoded a packet that decodes to %d (%s)\n", rc,
                mq_err_name(rc));
    CHECK(rc == len);
    uint8_t *again = malloc((size_t)len);
    CHECK(again);
    CHECK(codec_encode(&q, again, (size_t)len) == len);
    CHECK(memcmp(again, buf, (size_t)len) == 0);
    free(again);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct mq_decode_limits level5 = {.protocol_level = 5}, level0 = {0};
    struct mq_packet p;
    if (round_trip(data, size, &level5, &p) > 0)
        mutate_and_encode(&p, data, size);
    if (round_trip(data, size, &level0, &p) > 0 && p.version == 5)
        mutate_and_encode(&p, data, size);
    return 0;
}

/* test_codec.c - unit tests for src/codec/mqtt_codec.c: decode, encode and header helpers.
 *
 * Owns no production code. Valid packets are written out byte by byte from MQTT 3.1.1 §2-§3 and
 * must decode, re-encode to the identical bytes and read as "incomplete" at every shorter prefix.
 * Every malformed-packet rule has a test asserting its own error code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "midge/codec.h"
#include "midge/err.h"

/* Compare return values, naming the errors on failure so it says which rule fired. */
#define assert_err(got, want) check_err((got), (want), __FILE__, __LINE__)

static void check_err(long got, long want, const char *file, int line)
{
    if (got == want)
        return;
    print_error("got %ld (%s), want %ld (%s)\n", got, mq_err_name((int)got), want,
                mq_err_name((int)want));
    _fail(file, line);
}

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static int decode(const uint8_t *buf, size_t len, struct mq_packet *p)
{
    return codec_decode(buf, len, NULL, p);
}

/* The error a malformed packet decodes to (complete packets only). */
static int decode_err(const uint8_t *buf, size_t len)
{
    struct mq_packet p;
    return codec_decode(buf, len, NULL, &p);
}

static bool bytes_is(struct mq_bytes b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.ptr, s, b.len) == 0;
}

/* Decode a valid packet and check everything that must hold for every valid packet:
 * the whole packet is consumed, every shorter prefix is "incomplete" without touching *p,
 * and codec_encode reproduces the exact bytes, refusing to write into a short buffer. */
static void decode_valid(const uint8_t *wire, size_t len, struct mq_packet *p)
{
    struct mq_packet untouched;
    for (size_t k = 0; k < len; k++) {
        memset(p, 0x5A, sizeof *p);
        memset(&untouched, 0x5A, sizeof untouched);
        int rc = decode(wire, k, p);
        if (rc != 0)
            fail_msg("prefix of %zu/%zu bytes: %d (%s)", k, len, rc, mq_err_name(rc));
        assert_memory_equal(p, &untouched, sizeof *p);
    }
    assert_int_equal(decode(wire, len, p), (int)len);

    uint8_t *out = malloc(len + 8);
    assert_non_null(out);
    assert_int_equal(codec_encode(p, NULL, 0), (long)len);
    memset(out, 0xEE, len + 8);
    assert_int_equal(codec_encode(p, out, len - 1), (long)len);
    for (size_t i = 0; i < len + 8; i++)
        assert_int_equal(out[i], 0xEE); /* too small: nothing written */
    assert_int_equal(codec_encode(p, out, len + 8), (long)len);
    assert_memory_equal(out, wire, len);
    assert_int_equal(out[len], 0xEE);
    free(out);
}

/* ---- round trips of every packet type ----------------------------------------------------- */

static void test_connect_311_minimal(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 2, 'c', '1'), &p);
    assert_int_equal(p.type, MQ_CONNECT);
    const struct mq_connect *c = &p.u.connect;
    assert_true(bytes_is(c->protocol_name, "MQTT"));
    assert_int_equal(c->protocol_level, 4);
    assert_true(c->clean_session);
    assert_int_equal(c->keepalive, 60);
    assert_true(bytes_is(c->client_id, "c1"));
    assert_false(c->will_flag);
    assert_false(c->has_username);
    assert_false(c->has_password);
}

static void test_connect_311_full(void **state)
{
    (void)state;
    struct mq_packet p;
    /* will QoS 2 + retain, user name, binary password and will payload containing 0x00. */
    decode_valid(BYTES(0x10, 37, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xF6, 0x01, 0x2C, /* keepalive */
                       0, 3, 'c', 'i', 'd',                                     /* client id */
                       0, 3, 'w', '/', 't', 0, 3, 0x00, 0xFF, 'x',              /* will */
                       0, 4, 'u', 's', 'e', 'r', 0, 4, 'p', 0x00, 0xC0, 'w'),   /* user, pass */
                 &p);
    const struct mq_connect *c = &p.u.connect;
    assert_int_equal(c->keepalive, 300);
    assert_true(c->clean_session);
    assert_true(bytes_is(c->client_id, "cid"));
    assert_true(c->will_flag);
    assert_int_equal(c->will_qos, 2);
    assert_true(c->will_retain);
    assert_true(bytes_is(c->will_topic, "w/t"));
    assert_int_equal(c->will_payload.len, 3);
    assert_memory_equal(c->will_payload.ptr, "\x00\xFFx", 3);
    assert_true(c->has_username);
    assert_true(bytes_is(c->username, "user"));
    assert_true(c->has_password);
    assert_int_equal(c->password.len, 4);
    assert_memory_equal(c->password.ptr, "p\x00\xC0w", 4);
}

static void test_connect_31_mqisdp(void **state)
{
    (void)state;
    struct mq_packet p;
    /* MQTT 3.1: will QoS 1, user name and password, clean session off. */
    decode_valid(BYTES(0x10, 34, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0xCC, 0, 10, /* keepalive */
                       0, 3, 'o', 'l', 'd', 0, 1, 'w', 0, 3, 'b', 'y', 'e', /* client id, will */
                       0, 2, 'u', '1', 0, 3, 'p', 'w', 'd'),
                 &p);
    const struct mq_connect *c = &p.u.connect;
    assert_true(bytes_is(c->protocol_name, "MQIsdp"));
    assert_int_equal(c->protocol_level, 3);
    assert_false(c->clean_session);
    assert_int_equal(c->keepalive, 10);
    assert_true(bytes_is(c->client_id, "old"));
    assert_true(c->will_flag);
    assert_int_equal(c->will_qos, 1);
    assert_false(c->will_retain);
    assert_true(bytes_is(c->will_topic, "w"));
    assert_true(bytes_is(c->will_payload, "bye"));
    assert_true(bytes_is(c->username, "u1"));
    assert_true(bytes_is(c->password, "pwd"));
}

static void test_connect_empty_client_id_and_user(void **state)
{
    (void)state;
    struct mq_packet p;
    /* Empty client id is the proto layer's call ([MQTT-3.1.3-6]); empty strings are legal. */
    decode_valid(BYTES(0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 0, 0, 0, 0, 0, 0, 0), &p);
    assert_int_equal(p.u.connect.client_id.len, 0);
    assert_int_equal(p.u.connect.keepalive, 0);
    assert_true(p.u.connect.has_username);
    assert_int_equal(p.u.connect.username.len, 0);
    assert_true(p.u.connect.has_password);
    assert_int_equal(p.u.connect.password.len, 0);
}

static void test_connack(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x20, 2, 0x01, 0x00), &p);
    assert_int_equal(p.type, MQ_CONNACK);
    assert_true(p.u.connack.session_present);
    assert_int_equal(p.u.connack.return_code, 0);
    decode_valid(BYTES(0x20, 2, 0x00, 0x05), &p);
    assert_false(p.u.connack.session_present);
    assert_int_equal(p.u.connack.return_code, MQ_CONNACK_NOT_AUTHORIZED);
}

static void test_publish_qos0(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x31, 10, 0, 3, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'), &p);
    assert_int_equal(p.type, MQ_PUBLISH);
    assert_int_equal(p.flags, 0x1);
    const struct mq_publish *m = &p.u.publish;
    assert_int_equal(m->qos, 0);
    assert_true(m->retain);
    assert_false(m->dup);
    assert_true(bytes_is(m->topic, "a/b"));
    assert_int_equal(m->packet_id, 0);
    assert_int_equal(m->payload_len, 5);
    assert_memory_equal(m->payload, "hello", 5);
}

static void test_publish_qos1_dup_empty_payload(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x3A, 5, 0, 1, 't', 0x12, 0x34), &p);
    const struct mq_publish *m = &p.u.publish;
    assert_int_equal(m->qos, 1);
    assert_true(m->dup);
    assert_false(m->retain);
    assert_int_equal(m->packet_id, 0x1234);
    assert_int_equal(m->payload_len, 0);
}

static void test_publish_qos2(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x34, 9, 0, 2, '/', 'x', 0xFF, 0xFF, 0x00, 0x01, 0x02), &p);
    const struct mq_publish *m = &p.u.publish;
    assert_int_equal(m->qos, 2);
    assert_int_equal(m->packet_id, 0xFFFF);
    assert_true(bytes_is(m->topic, "/x"));
    assert_int_equal(m->payload_len, 3);
    assert_memory_equal(m->payload, "\x00\x01\x02", 3);
}

/* A payload big enough for a 3-byte remaining length. */
static void test_publish_large(void **state)
{
    (void)state;
    size_t payload = 200000, rem = 2 + 1 + payload, len = 1 + 3 + rem;
    uint8_t *wire = malloc(len);
    assert_non_null(wire);
    wire[0] = 0x30;
    wire[1] = (uint8_t)(0x80 | (rem & 0x7F));
    wire[2] = (uint8_t)(0x80 | ((rem >> 7) & 0x7F));
    wire[3] = (uint8_t)(rem >> 14);
    wire[4] = 0;
    wire[5] = 1;
    wire[6] = 'z';
    for (size_t i = 0; i < payload; i++)
        wire[7 + i] = (uint8_t)i;
    struct mq_packet p;
    assert_int_equal(decode(wire, len, &p), (int)len);
    assert_int_equal(p.u.publish.payload_len, payload);
    assert_ptr_equal(p.u.publish.payload, wire + 7);
    uint8_t *out = malloc(len);
    assert_non_null(out);
    assert_int_equal(codec_encode(&p, out, len), (long)len);
    assert_memory_equal(out, wire, len);
    assert_int_equal(decode(wire, len - 1, &p), 0);
    free(out);
    free(wire);
}

static void test_packet_id_only_types(void **state)
{
    (void)state;
    static const uint8_t firsts[] = {0x40, 0x50, 0x62, 0x70, 0xB0};
    static const enum mq_packet_type types[] = {MQ_PUBACK, MQ_PUBREC, MQ_PUBREL, MQ_PUBCOMP,
                                                MQ_UNSUBACK};
    for (size_t i = 0; i < sizeof firsts; i++) {
        uint8_t wire[4] = {firsts[i], 2, 0xAB, (uint8_t)(0x01 + i)};
        struct mq_packet p;
        decode_valid(wire, sizeof wire, &p);
        assert_int_equal(p.type, types[i]);
        assert_int_equal(p.u.packet_id, 0xAB01 + i);
    }
}

static void test_subscribe(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x82, 21, 0x00, 0x07,   /* packet id 7 */
                       0, 3, 'a', '/', 'b', 0, /* "a/b" QoS 0 */
                       0, 1, '#', 1,           /* "#" QoS 1 */
                       0, 6, '$', 'S', 'Y', 'S', '/', '+', 2),
                 &p);
    assert_int_equal(p.type, MQ_SUBSCRIBE);
    const struct mq_topic_list *l = &p.u.subscribe;
    assert_int_equal(l->packet_id, 7);
    assert_int_equal(l->count, 3);
    assert_true(l->with_qos);
    struct mq_topic_iter it = {l, 0};
    struct mq_bytes f;
    uint8_t qos = 9;
    assert_true(codec_topic_list_next(&it, &f, &qos));
    assert_true(bytes_is(f, "a/b"));
    assert_int_equal(qos, 0);
    assert_true(codec_topic_list_next(&it, &f, &qos));
    assert_true(bytes_is(f, "#"));
    assert_int_equal(qos, 1);
    assert_true(codec_topic_list_next(&it, &f, &qos));
    assert_true(bytes_is(f, "$SYS/+"));
    assert_int_equal(qos, 2);
    assert_false(codec_topic_list_next(&it, &f, &qos));
    assert_false(codec_topic_list_next(&it, &f, &qos));
}

static void test_unsubscribe(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0xA2, 11, 0x01, 0x00, 0, 3, 'a', '/', '#', 0, 2, '+', '/'), &p);
    assert_int_equal(p.type, MQ_UNSUBSCRIBE);
    const struct mq_topic_list *l = &p.u.subscribe;
    assert_int_equal(l->packet_id, 256);
    assert_int_equal(l->count, 2);
    assert_false(l->with_qos);
    struct mq_topic_iter it = {l, 0};
    struct mq_bytes f;
    uint8_t qos = 9;
    assert_true(codec_topic_list_next(&it, &f, &qos));
    assert_true(bytes_is(f, "a/#"));
    assert_int_equal(qos, 0);
    assert_true(codec_topic_list_next(&it, &f, NULL)); /* qos is optional */
    assert_true(bytes_is(f, "+/"));
    assert_false(codec_topic_list_next(&it, &f, &qos));
}

static void test_suback(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0x90, 6, 0x00, 0x09, 0x00, 0x01, 0x02, 0x80), &p);
    assert_int_equal(p.type, MQ_SUBACK);
    assert_int_equal(p.u.suback.packet_id, 9);
    assert_int_equal(p.u.suback.count, 4);
    assert_memory_equal(p.u.suback.codes, "\x00\x01\x02\x80", 4);
}

static void test_empty_packets(void **state)
{
    (void)state;
    struct mq_packet p;
    decode_valid(BYTES(0xC0, 0), &p);
    assert_int_equal(p.type, MQ_PINGREQ);
    decode_valid(BYTES(0xD0, 0), &p);
    assert_int_equal(p.type, MQ_PINGRESP);
    decode_valid(BYTES(0xE0, 0), &p);
    assert_int_equal(p.type, MQ_DISCONNECT);
}

/* Only the first packet is consumed when several share the buffer. */
static void test_back_to_back(void **state)
{
    (void)state;
    static const uint8_t two[] = {0xC0, 0, 0x40, 2, 0, 1};
    struct mq_packet p;
    assert_int_equal(decode(two, sizeof two, &p), 2);
    assert_int_equal(p.type, MQ_PINGREQ);
    assert_int_equal(decode(two + 2, sizeof two - 2, &p), 4);
    assert_int_equal(p.type, MQ_PUBACK);
    assert_int_equal(p.u.packet_id, 1);
}

/* ---- fixed header ------------------------------------------------------------------------- */

static void test_reserved_types(void **state)
{
    (void)state;
    /* The first byte alone is enough to reject. */
    for (unsigned flags = 0; flags < 16; flags++) {
        uint8_t b0 = (uint8_t)flags, b15 = (uint8_t)(0xF0 | flags);
        assert_err(decode_err(&b0, 1), MQ_ERR_BAD_TYPE);
        assert_err(decode_err(&b15, 1), MQ_ERR_BAD_TYPE);
    }
}

static void test_fixed_header_flags(void **state)
{
    (void)state;
    for (unsigned type = 1; type <= 14; type++) {
        if (type == MQ_PUBLISH)
            continue;
        unsigned want =
            (type == MQ_PUBREL || type == MQ_SUBSCRIBE || type == MQ_UNSUBSCRIBE) ? 2 : 0;
        for (unsigned flags = 0; flags < 16; flags++) {
            uint8_t b = (uint8_t)(type << 4 | flags);
            int rc = decode_err(&b, 1);
            if (rc != (flags == want ? 0 : MQ_ERR_BAD_FLAGS))
                fail_msg("type %u flags %u: %s", type, flags, mq_err_name(rc));
        }
    }
}

static void test_publish_flags(void **state)
{
    (void)state;
    for (unsigned flags = 0; flags < 16; flags++) {
        uint8_t b = (uint8_t)(0x30 | flags);
        unsigned qos = (flags >> 1) & 3;
        int want = qos == 3 ? MQ_ERR_QOS3 : (qos == 0 && (flags & 8)) ? MQ_ERR_BAD_FLAGS : 0;
        assert_err(decode_err(&b, 1), want);
    }
    /* Also when the whole packet is there. */
    assert_err(decode_err(BYTES(0x36, 5, 0, 1, 't', 0, 1)), MQ_ERR_QOS3);
    assert_err(decode_err(BYTES(0x38, 3, 0, 1, 't')), MQ_ERR_BAD_FLAGS);
}

static void test_remaining_length_boundaries(void **state)
{
    (void)state;
    /* Largest legal value: a header that says "wait for 268,435,455 more bytes". */
    assert_int_equal(decode_err(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0x7F)), 0);
    assert_int_equal(codec_packet_size(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0x7F)),
                     5 + MQ_MAX_REMAINING_LENGTH);
    /* A 4th byte with the continuation bit is fatal at once, with no 5th byte in sight. */
    assert_err(decode_err(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0xFF)), MQ_ERR_BAD_REMAINING_LENGTH);
    assert_err(decode_err(BYTES(0x30, 0x80, 0x80, 0x80, 0x80, 0x01)), MQ_ERR_BAD_REMAINING_LENGTH);
    assert_err(decode_err(BYTES(0xC0, 0x80, 0x80, 0x80, 0x80)), MQ_ERR_BAD_REMAINING_LENGTH);
    /* Up to there the header is merely incomplete. */
    assert_int_equal(decode_err(BYTES(0x30, 0xFF, 0xFF, 0xFF)), 0);
    assert_int_equal(decode_err(BYTES(0x30, 0xFF)), 0);
    assert_int_equal(decode_err(BYTES(0x30)), 0);
    assert_int_equal(decode_err(NULL, 0), 0);
    assert_int_equal(codec_packet_size(BYTES(0x30, 0xFF, 0xFF, 0xFF)), 0);
}

/* A non-minimal length encoding is not forbidden by 3.1.1; it is accepted, encode shortens it. */
static void test_remaining_length_non_minimal(void **state)
{
    (void)state;
    struct mq_packet p;
    assert_int_equal(decode_err(BYTES(0xC0, 0x80, 0x00)), 3);
    static const uint8_t wire[] = {0x40, 0x82, 0x00, 0x00, 0x05};
    assert_int_equal(decode(wire, sizeof wire, &p), 5);
    uint8_t out[8];
    assert_int_equal(codec_encode(&p, out, sizeof out), 4);
    assert_memory_equal(out, "\x40\x02\x00\x05", 4);
}

static void test_max_packet_size(void **state)
{
    (void)state;
    struct mq_decode_limits lim = {.max_packet_size = 10};
    struct mq_packet p;
    /* 2 + 9 = 11 bytes: refused from the 2-byte header, before any body byte. */
    assert_err(codec_decode(BYTES(0x30, 9), &lim, &p), MQ_ERR_TOO_LARGE);
    /* 2 + 8 = 10 bytes is allowed: incomplete, then complete. */
    assert_int_equal(codec_decode(BYTES(0x30, 8), &lim, &p), 0);
    assert_int_equal(codec_decode(BYTES(0x30, 8, 0, 1, 't', 1, 2, 3, 4, 5), &lim, &p), 10);
    /* The header size counts: 3-byte header + 128 = 131 > 130. */
    lim.max_packet_size = 130;
    assert_err(codec_decode(BYTES(0x30, 0x80, 0x01), &lim, &p), MQ_ERR_TOO_LARGE);
    lim.max_packet_size = 131;
    assert_int_equal(codec_decode(BYTES(0x30, 0x80, 0x01), &lim, &p), 0);
    /* A maximum-size header against a 1 MiB limit. */
    lim.max_packet_size = 1u << 20;
    assert_err(codec_decode(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0x7F), &lim, &p), MQ_ERR_TOO_LARGE);
    /* 0 means the spec maximum. */
    lim.max_packet_size = 0;
    assert_int_equal(codec_decode(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0x7F), &lim, &p), 0);
}

static void test_fixed_size_lengths(void **state)
{
    (void)state;
    static const uint8_t two[] = {0x20, 0x40, 0x50, 0x62, 0x70, 0xB0};
    for (size_t i = 0; i < sizeof two; i++) {
        for (unsigned rem = 0; rem < 5; rem++) {
            if (rem == 2)
                continue;
            uint8_t wire[2] = {two[i], (uint8_t)rem};
            /* Judged from the header alone: the body is never needed. */
            assert_err(decode_err(wire, sizeof wire), MQ_ERR_MALFORMED);
        }
    }
    static const uint8_t zero[] = {0xC0, 0xD0, 0xE0};
    for (size_t i = 0; i < sizeof zero; i++) {
        uint8_t wire[3] = {zero[i], 1, 0};
        assert_err(decode_err(wire, sizeof wire), MQ_ERR_MALFORMED);
    }
}

static void test_packet_id_zero(void **state)
{
    (void)state;
    assert_err(decode_err(BYTES(0x32, 5, 0, 1, 't', 0, 0)), MQ_ERR_PACKET_ID_ZERO);
    assert_err(decode_err(BYTES(0x34, 6, 0, 1, 't', 0, 0, 'x')), MQ_ERR_PACKET_ID_ZERO);
    static const uint8_t firsts[] = {0x40, 0x50, 0x62, 0x70, 0xB0};
    for (size_t i = 0; i < sizeof firsts; i++) {
        uint8_t wire[4] = {firsts[i], 2, 0, 0};
        assert_err(decode_err(wire, sizeof wire), MQ_ERR_PACKET_ID_ZERO);
    }
    assert_err(decode_err(BYTES(0x82, 6, 0, 0, 0, 1, 'a', 0)), MQ_ERR_PACKET_ID_ZERO);
    assert_err(decode_err(BYTES(0xA2, 5, 0, 0, 0, 1, 'a')), MQ_ERR_PACKET_ID_ZERO);
    assert_err(decode_err(BYTES(0x90, 3, 0, 0, 0)), MQ_ERR_PACKET_ID_ZERO);
}

/* ---- CONNECT ------------------------------------------------------------------------------ */

/* Build a CONNECT with any combination of fields; a NULL string leaves the field out whatever
 * the flags say, so inconsistent packets can be built too. Returns the packet length. */
static size_t connect_packet(uint8_t *out, const char *name, uint8_t level, uint8_t flags,
                             const char *client_id, const char *will_topic, const char *will_msg,
                             const char *user, const char *pass)
{
    uint8_t body[512];
    size_t n = 0;
    const char *strs[] = {name, NULL, client_id, will_topic, will_msg, user, pass};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (i == 1) {
            body[n++] = level;
            body[n++] = flags;
            body[n++] = 0;
            body[n++] = 30; /* keepalive */
            continue;
        }
        if (!strs[i])
            continue;
        size_t len = strlen(strs[i]);
        body[n++] = (uint8_t)(len >> 8);
        body[n++] = (uint8_t)len;
        memcpy(body + n, strs[i], len);
        n += len;
    }
    size_t h = codec_fixed_header(0x10, (uint32_t)n, out);
    memcpy(out + h, body, n);
    return h + n;
}

static int connect_err(const char *name, uint8_t level, uint8_t flags, const char *client_id,
                       const char *will_topic, const char *will_msg, const char *user,
                       const char *pass)
{
    uint8_t wire[600];
    size_t n =
        connect_packet(wire, name, level, flags, client_id, will_topic, will_msg, user, pass);
    int rc = decode_err(wire, n);
    return rc == (int)n ? 0 : rc; /* 0: the whole packet decoded */
}

static void test_connect_builder_sanity(void **state)
{
    (void)state;
    /* The builder itself makes valid packets, so the failures below are the intended ones. */
    uint8_t wire[600];
    struct mq_packet p;
    size_t n = connect_packet(wire, "MQTT", 4, 0xEE, "id", "w/t", "m", "u", "p");
    decode_valid(wire, n, &p);
    assert_int_equal(p.u.connect.will_qos, 1);
    n = connect_packet(wire, "MQIsdp", 3, 0x02, "id", NULL, NULL, NULL, NULL);
    decode_valid(wire, n, &p);
}

static void test_connect_protocol_name(void **state)
{
    (void)state;
    static const char *const bad[] = {"MQTX", "mqtt", "MQT", "MQTTT", "MQIsdP", "", "MQIsd"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_err(connect_err(bad[i], 4, 2, "id", NULL, NULL, NULL, NULL),
                   MQ_ERR_BAD_PROTOCOL_NAME);
    assert_err(connect_err("MQIsdp", 4, 2, "id", NULL, NULL, NULL, NULL),
               MQ_ERR_BAD_PROTOCOL_LEVEL);
}

static void test_connect_protocol_level_fills_fields(void **state)
{
    (void)state;
    uint8_t wire[600];
    struct mq_packet p;
    size_t n = connect_packet(wire, "MQTT", 3, 0x82, "client", NULL, NULL, "bob", NULL);
    assert_err(decode(wire, n, &p), MQ_ERR_BAD_PROTOCOL_LEVEL);
    /* Proto needs these to answer CONNACK 0x01 ([MQTT-3.1.2-2]). */
    assert_int_equal(p.type, MQ_CONNECT);
    assert_true(bytes_is(p.u.connect.protocol_name, "MQTT"));
    assert_int_equal(p.u.connect.protocol_level, 3);
    assert_true(bytes_is(p.u.connect.client_id, "client"));
    assert_true(bytes_is(p.u.connect.username, "bob"));
    assert_int_equal(p.u.connect.keepalive, 30);

    /* An MQTT 5 CONNECT (properties after the keepalive) is read as MQTT 5 since issue 13,
     * whatever the connection's level: test_codec5.c has its rules. */
    static const uint8_t v5[] = {0x10, 18, 0, 4,    'M', 'Q', 'T', 'T', 5, 0x02,
                                 0,    60, 5, 0x11, 0,   0,   0,   10,  0, 0};
    assert_int_equal(decode(v5, sizeof v5, &p), (int)sizeof v5);
    assert_int_equal(p.type, MQ_CONNECT);
    assert_int_equal(p.version, 5);
    assert_true(bytes_is(p.u.connect.protocol_name, "MQTT"));
    assert_int_equal(p.u.connect.protocol_level, 5);
    assert_int_equal(p.u.connect.keepalive, 60);

    n = connect_packet(wire, "MQIsdp", 4, 0x02, "x", NULL, NULL, NULL, NULL);
    assert_err(decode(wire, n, &p), MQ_ERR_BAD_PROTOCOL_LEVEL);
    assert_int_equal(p.u.connect.protocol_level, 4);
    /* A level-5 body cut right after the level is a malformed MQTT 5 CONNECT, answered with
     * CONNACK 0x81 (codec_connect_refusal). */
    assert_err(decode(BYTES(0x10, 7, 0, 4, 'M', 'Q', 'T', 'T', 5), &p), MQ_ERR_TRUNCATED);
    assert_int_equal(codec_connect_refusal(MQ_ERR_TRUNCATED, &p), 0x81);
}

/* Mosquitto's bridges set the top bit of the level (try_private): the same protocol, with
 * loop prevention asked for. The bit is reported apart and re-encoded. */
static void test_connect_bridge_bit(void **state)
{
    (void)state;
    uint8_t wire[600], again[600];
    struct mq_packet p;
    size_t n = connect_packet(wire, "MQTT", 0x84, 0x02, "bridge", NULL, NULL, NULL, NULL);
    decode_valid(wire, n, &p);
    assert_int_equal(p.u.connect.protocol_level, 4);
    assert_true(p.u.connect.bridge);
    assert_int_equal(codec_encode(&p, again, sizeof again), (long)n);
    assert_memory_equal(again, wire, n);

    n = connect_packet(wire, "MQIsdp", 0x83, 0x02, "bridge", NULL, NULL, NULL, NULL);
    decode_valid(wire, n, &p);
    assert_int_equal(p.u.connect.protocol_level, 3);
    assert_true(p.u.connect.bridge);

    n = connect_packet(wire, "MQTT", 4, 0x02, "plain", NULL, NULL, NULL, NULL);
    decode_valid(wire, n, &p);
    assert_false(p.u.connect.bridge);
    /* The bit does not make another level acceptable. */
    n = connect_packet(wire, "MQIsdp", 0x84, 0x02, "x", NULL, NULL, NULL, NULL);
    assert_err(decode(wire, n, &p), MQ_ERR_BAD_PROTOCOL_LEVEL);
}

/* MQTT 3.1 has no empty client id: a body that stops after the keepalive is answered with
 * CONNACK 2, so the decoder says so with the fields it read; in 3.1.1 it is malformed. */
static void test_connect_31_without_client_id(void **state)
{
    (void)state;
    struct mq_packet p;
    static const uint8_t v31[] = {0x10, 12, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0, 10};
    assert_err(decode(v31, sizeof v31, &p), MQ_ERR_NO_CLIENT_ID);
    assert_true(codec_connect_answerable(MQ_ERR_NO_CLIENT_ID));
    assert_int_equal(p.type, MQ_CONNECT);
    assert_int_equal(p.u.connect.protocol_level, 3);
    assert_int_equal(p.u.connect.keepalive, 10);
    static const uint8_t v311[] = {0x10, 10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 10};
    assert_err(decode(v311, sizeof v311, &p), MQ_ERR_TRUNCATED);
    assert_false(codec_connect_answerable(MQ_ERR_TRUNCATED));
}

static void test_connect_flags(void **state)
{
    (void)state;
    assert_err(connect_err("MQTT", 4, 0x03, "id", NULL, NULL, NULL, NULL), MQ_ERR_CONNECT_RESERVED);
    assert_err(connect_err("MQTT", 4, 0x08, "id", NULL, NULL, NULL, NULL), MQ_ERR_WILL_FLAGS);
    assert_err(connect_err("MQTT", 4, 0x10, "id", NULL, NULL, NULL, NULL), MQ_ERR_WILL_FLAGS);
    assert_err(connect_err("MQTT", 4, 0x20, "id", NULL, NULL, NULL, NULL), MQ_ERR_WILL_FLAGS);
    assert_err(connect_err("MQTT", 4, 0x1C, "id", "w", "m", NULL, NULL), MQ_ERR_QOS3);
    assert_err(connect_err("MQTT", 4, 0x42, "id", NULL, NULL, NULL, "pw"),
               MQ_ERR_PASSWORD_WITHOUT_USER);
    assert_err(connect_err("MQIsdp", 3, 0x42, "id", NULL, NULL, NULL, "pw"),
               MQ_ERR_PASSWORD_WITHOUT_USER);
    /* Each will QoS 0..2 with the will flag is fine, with or without retain. */
    for (uint8_t q = 0; q < 3; q++) {
        assert_err(connect_err("MQTT", 4, (uint8_t)(0x04 | q << 3), "id", "w", "", NULL, NULL), 0);
        assert_err(connect_err("MQTT", 4, (uint8_t)(0x24 | q << 3), "id", "w", "", NULL, NULL), 0);
    }
}

static void test_connect_strings(void **state)
{
    (void)state;
    assert_err(connect_err("MQTT", 4, 2, "\xC3", NULL, NULL, NULL, NULL), MQ_ERR_BAD_UTF8);
    assert_err(connect_err("MQTT", 4, 2, "\xED\xA0\x80", NULL, NULL, NULL, NULL),
               MQ_ERR_UTF8_SURROGATE);
    assert_err(connect_err("MQTT", 4, 0x06, "id", "a/+", "m", NULL, NULL),
               MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(connect_err("MQTT", 4, 0x06, "id", "#", "m", NULL, NULL), MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(connect_err("MQTT", 4, 0x06, "id", "", "m", NULL, NULL), MQ_ERR_EMPTY_TOPIC);
    assert_err(connect_err("MQTT", 4, 0x06, "id", "\xFF", "m", NULL, NULL), MQ_ERR_BAD_UTF8);
    assert_err(connect_err("MQTT", 4, 0x82, "id", NULL, NULL, "\xC0\x80", NULL), MQ_ERR_BAD_UTF8);
    /* Will payload and password are binary: invalid UTF-8 is fine there. */
    assert_err(connect_err("MQTT", 4, 0xC6, "id", "w", "\xFF\xC0", "u", "\xED\xA0\x80"), 0);
    /* U+0000 in the client id. */
    assert_err(decode_err(BYTES(0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 3, 'a', 0, 'b')),
               MQ_ERR_UTF8_NULL);
    assert_err(decode_err(BYTES(0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x82, 0, 0, 0, 0, 0, 1, 0)),
               MQ_ERR_UTF8_NULL);
}

static void test_connect_truncated_and_trailing(void **state)
{
    (void)state;
    /* Flags promise a will, a user name and a password that are missing. */
    assert_err(connect_err("MQTT", 4, 0x06, "id", NULL, NULL, NULL, NULL), MQ_ERR_TRUNCATED);
    assert_err(connect_err("MQTT", 4, 0x06, "id", "w", NULL, NULL, NULL), MQ_ERR_TRUNCATED);
    assert_err(connect_err("MQTT", 4, 0x82, "id", NULL, NULL, NULL, NULL), MQ_ERR_TRUNCATED);
    assert_err(connect_err("MQTT", 4, 0xC2, "id", NULL, NULL, "u", NULL), MQ_ERR_TRUNCATED);
    /* Fields present that the flags do not announce. */
    assert_err(connect_err("MQTT", 4, 0x02, "id", NULL, NULL, "u", NULL), MQ_ERR_TRAILING);
    assert_err(connect_err("MQTT", 4, 0x82, "id", NULL, NULL, "u", "p"), MQ_ERR_TRAILING);
    /* A string length that runs past the remaining length (bytes after it are not read). */
    assert_err(decode_err(BYTES(0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 3, 'a', 'b', 0)),
               MQ_ERR_TRUNCATED);
    /* Cut at every field boundary before the client id. */
    assert_err(decode_err(BYTES(0x10, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x10, 1, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x10, 3, 0, 4, 'M')), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x10, 6, 0, 4, 'M', 'Q', 'T', 'T')), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x10, 7, 0, 4, 'M', 'Q', 'T', 'T', 4)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x10, 9, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x10, 11, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0)),
               MQ_ERR_TRUNCATED);
}

/* ---- PUBLISH / SUBSCRIBE / UNSUBSCRIBE / SUBACK / CONNACK rules ----------------------------- */

static void test_publish_topic_rules(void **state)
{
    (void)state;
    assert_err(decode_err(BYTES(0x30, 3, 0, 0, 'x')), MQ_ERR_EMPTY_TOPIC);
    assert_err(decode_err(BYTES(0x30, 3, 0, 1, '#')), MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(decode_err(BYTES(0x30, 5, 0, 3, 'a', '/', '+')), MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(decode_err(BYTES(0x30, 4, 0, 2, 0xC3, 0x28)), MQ_ERR_BAD_UTF8);
    assert_err(decode_err(BYTES(0x30, 5, 0, 3, 0xED, 0xB0, 0x80)), MQ_ERR_UTF8_SURROGATE);
    assert_err(decode_err(BYTES(0x30, 3, 0, 1, 0)), MQ_ERR_UTF8_NULL);
    /* Topic length past the end; packet id missing. */
    assert_err(decode_err(BYTES(0x30, 3, 0, 2, 'a')), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x30, 1, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x30, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x32, 3, 0, 1, 'a')), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x32, 4, 0, 1, 'a', 1)), MQ_ERR_TRUNCATED);
    /* A name with spaces, empty levels and a leading '/' is fine. */
    assert_int_equal(decode_err(BYTES(0x30, 7, 0, 5, '/', ' ', '/', '/', 'x')), 9);
}

static void test_subscribe_rules(void **state)
{
    (void)state;
    assert_err(decode_err(BYTES(0x82, 2, 0, 1)), MQ_ERR_EMPTY_SUBSCRIBE);
    assert_err(decode_err(BYTES(0x82, 7, 0, 1, 0, 2, 'a', '#', 0)), MQ_ERR_BAD_FILTER);
    assert_err(decode_err(BYTES(0x82, 5, 0, 1, 0, 0, 0)), MQ_ERR_EMPTY_TOPIC);
    assert_err(decode_err(BYTES(0x82, 6, 0, 1, 0, 1, 0xFF, 0)), MQ_ERR_BAD_UTF8);
    for (unsigned q = 4; q < 256; q += 4) {
        uint8_t wire[] = {0x82, 6, 0, 1, 0, 1, 'a', (uint8_t)(q | 1)};
        assert_err(decode_err(wire, sizeof wire), MQ_ERR_SUBSCRIBE_RESERVED);
    }
    assert_err(decode_err(BYTES(0x82, 6, 0, 1, 0, 1, 'a', 3)), MQ_ERR_QOS3);
    /* QoS byte missing; filter length past the end; half a length. */
    assert_err(decode_err(BYTES(0x82, 5, 0, 1, 0, 1, 'a')), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x82, 5, 0, 1, 0, 2, 'a')), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x82, 3, 0, 1, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x82, 1, 0)), MQ_ERR_TRUNCATED);
    /* Every entry is validated, not just the first: proto iterates without checks. */
    assert_err(decode_err(BYTES(0x82, 10, 0, 1, 0, 1, 'a', 0, 0, 1, '#', 3)), MQ_ERR_QOS3);
    assert_err(decode_err(BYTES(0x82, 11, 0, 1, 0, 1, 'a', 0, 0, 2, '#', '#', 0)),
               MQ_ERR_BAD_FILTER);
    assert_err(decode_err(BYTES(0x82, 9, 0, 1, 0, 1, 'a', 0, 0, 1, 'b')), MQ_ERR_TRUNCATED);
}

static void test_unsubscribe_rules(void **state)
{
    (void)state;
    assert_err(decode_err(BYTES(0xA2, 2, 0, 1)), MQ_ERR_EMPTY_SUBSCRIBE);
    assert_err(decode_err(BYTES(0xA2, 8, 0, 1, 0, 1, 'a', 0, 1, '+')), 10);
    assert_err(decode_err(BYTES(0xA2, 9, 0, 1, 0, 1, 'a', 0, 2, '+', 'x')), MQ_ERR_BAD_FILTER);
    assert_err(decode_err(BYTES(0xA2, 4, 0, 1, 0, 0)), MQ_ERR_EMPTY_TOPIC);
    assert_err(decode_err(BYTES(0xA2, 5, 0, 1, 0, 2, 'a')), MQ_ERR_TRUNCATED);
    /* No QoS byte in UNSUBSCRIBE: a trailing byte is the start of a broken entry. */
    assert_err(decode_err(BYTES(0xA2, 6, 0, 1, 0, 1, 'a', 0)), MQ_ERR_TRUNCATED);
}

static void test_suback_rules(void **state)
{
    (void)state;
    for (unsigned code = 0; code < 256; code++) {
        uint8_t wire[] = {0x90, 3, 0, 1, (uint8_t)code};
        bool ok = code <= 2 || code == 0x80;
        assert_err(decode_err(wire, sizeof wire), ok ? 5 : MQ_ERR_BAD_RETURN_CODE);
    }
    assert_err(decode_err(BYTES(0x90, 2, 0, 1)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x90, 1, 0)), MQ_ERR_TRUNCATED);
    assert_err(decode_err(BYTES(0x90, 5, 0, 1, 0, 0x80, 0x03)), MQ_ERR_BAD_RETURN_CODE);
}

static void test_connack_rules(void **state)
{
    (void)state;
    assert_err(decode_err(BYTES(0x20, 2, 0x02, 0)), MQ_ERR_MALFORMED);
    assert_err(decode_err(BYTES(0x20, 2, 0x80, 0)), MQ_ERR_MALFORMED);
    for (unsigned code = 1; code < 256; code++) {
        uint8_t wire[] = {0x20, 2, 0, (uint8_t)code};
        assert_err(decode_err(wire, sizeof wire), code <= 5 ? 4 : MQ_ERR_BAD_RETURN_CODE);
    }
    /* [MQTT-3.2.2-4]: session present only with return code 0. */
    assert_err(decode_err(BYTES(0x20, 2, 0x01, 0x05)), MQ_ERR_MALFORMED);
}

/* Build an UNSUBSCRIBE with n entries "a" (or a SUBACK with n codes) on the heap. */
static uint8_t *big_list(uint8_t first, size_t n, size_t entry, size_t *len)
{
    size_t rem = 2 + n * entry;
    uint8_t *w = malloc(5 + rem);
    assert_non_null(w);
    size_t h = codec_fixed_header(first, (uint32_t)rem, w);
    w[h] = 0;
    w[h + 1] = 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = w + h + 2 + i * entry;
        if (entry == 3) {
            e[0] = 0;
            e[1] = 1;
            e[2] = 'a';
        } else {
            e[0] = 1;
        }
    }
    *len = h + rem;
    return w;
}

static void test_too_many_filters(void **state)
{
    (void)state;
    size_t len;
    struct mq_packet p;
    uint8_t *w = big_list(0xA2, 65535, 3, &len);
    assert_int_equal(decode(w, len, &p), (int)len);
    assert_int_equal(p.u.subscribe.count, 65535);
    free(w);
    w = big_list(0xA2, 65536, 3, &len);
    assert_err(decode(w, len, &p), MQ_ERR_TOO_MANY_FILTERS);
    free(w);
    w = big_list(0x90, 65535, 1, &len);
    assert_int_equal(decode(w, len, &p), (int)len);
    assert_int_equal(p.u.suback.count, 65535);
    free(w);
    w = big_list(0x90, 65536, 1, &len);
    assert_err(decode(w, len, &p), MQ_ERR_TOO_MANY_FILTERS);
    free(w);
}

/* ---- encoding from structs ---------------------------------------------------------------- */

static long encode(const struct mq_packet *p, uint8_t *out, size_t cap)
{
    long n = codec_encode(p, out, cap);
    if (n > 0 && (size_t)n <= cap) {
        /* Whatever we encode must decode back to the same size. */
        struct mq_packet back;
        assert_int_equal(decode(out, (size_t)n, &back), (int)n);
    }
    return n;
}

static void test_encode_connect_defaults(void **state)
{
    (void)state;
    uint8_t out[64];
    struct mq_packet p = {.type = MQ_CONNECT};
    p.u.connect.clean_session = true;
    p.u.connect.keepalive = 60;
    p.u.connect.client_id = (struct mq_bytes){(const uint8_t *)"c1", 2};
    assert_int_equal(encode(&p, out, sizeof out), 16);
    assert_memory_equal(out,
                        "\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02"
                        "c1",
                        16);
    p.u.connect.protocol_level = 3;
    assert_int_equal(encode(&p, out, sizeof out), 18);
    assert_memory_equal(out,
                        "\x10\x10\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02"
                        "c1",
                        18);
}

static void test_encode_connect_all_flags(void **state)
{
    (void)state;
    uint8_t out[128];
    struct mq_packet p = {.type = MQ_CONNECT, .flags = 0xF /* ignored */};
    struct mq_connect *c = &p.u.connect;
    c->protocol_name = (struct mq_bytes){(const uint8_t *)"MQTT", 4};
    c->protocol_level = 4;
    c->keepalive = 0x1234;
    c->client_id = (struct mq_bytes){(const uint8_t *)"id", 2};
    c->will_flag = true;
    c->will_qos = 1;
    c->will_retain = true;
    c->will_topic = (struct mq_bytes){(const uint8_t *)"t", 1};
    c->will_payload = (struct mq_bytes){(const uint8_t *)"\0", 1};
    c->has_username = true;
    c->username = (struct mq_bytes){(const uint8_t *)"u", 1};
    c->has_password = true;
    c->password = (struct mq_bytes){(const uint8_t *)"pw", 2};
    static const char want[] = "\x10\x1b\x00\x04MQTT\x04"
                               "\xEC"         /* user, password, will retain, will QoS 1, will */
                               "\x12\x34"     /* keepalive */
                               "\x00\x02id"   /* client id */
                               "\x00\x01t"    /* will topic */
                               "\x00\x01\x00" /* will payload: one NUL byte */
                               "\x00\x01u"    /* user name */
                               "\x00\x02pw";  /* password */
    assert_int_equal(encode(&p, out, sizeof out), sizeof want - 1);
    assert_memory_equal(out, want, sizeof want - 1);
}

static void test_encode_publish_and_header(void **state)
{
    (void)state;
    uint8_t out[64], hdr[MQ_MAX_FIXED_HEADER + 2 + 3 + 2];
    struct mq_packet p = {.type = MQ_PUBLISH};
    p.u.publish = (struct mq_publish){.qos = 2,
                                      .dup = true,
                                      .retain = true,
                                      .topic = {(const uint8_t *)"a/b", 3},
                                      .packet_id = 0x0102,
                                      .payload = (const uint8_t *)"xyz",
                                      .payload_len = 3};
    static const uint8_t want[] = {0x3D, 10, 0, 3, 'a', '/', 'b', 1, 2, 'x', 'y', 'z'};
    assert_int_equal(encode(&p, out, sizeof out), sizeof want);
    assert_memory_equal(out, want, sizeof want);
    /* The header helper writes exactly the bytes before the payload. */
    assert_int_equal(codec_publish_header(2, true, true, (const uint8_t *)"a/b", 3, 0x0102, 3, hdr),
                     sizeof want - 3);
    assert_memory_equal(hdr, want, sizeof want - 3);
    /* QoS 0: no packet id; a placeholder id 0 is allowed for QoS 1 (patched per receiver). */
    assert_int_equal(codec_publish_header(0, false, false, (const uint8_t *)"t", 1, 77, 0, hdr), 5);
    assert_memory_equal(hdr, "\x30\x03\x00\x01t", 5);
    assert_int_equal(codec_publish_header(1, false, false, (const uint8_t *)"t", 1, 0, 200, hdr),
                     8);
    assert_memory_equal(hdr, "\x32\xCD\x01\x00\x01t\x00\x00", 8);
    /* Invalid combinations and oversize. */
    assert_int_equal(codec_publish_header(3, false, false, (const uint8_t *)"t", 1, 1, 0, hdr), 0);
    assert_int_equal(codec_publish_header(0, true, false, (const uint8_t *)"t", 1, 1, 0, hdr), 0);
    assert_int_equal(codec_publish_header(1, false, false, (const uint8_t *)"t", 1, 1,
                                          MQ_MAX_REMAINING_LENGTH - 4, hdr),
                     0);
    assert_int_equal(codec_publish_header(1, false, false, (const uint8_t *)"t", 1, 1,
                                          MQ_MAX_REMAINING_LENGTH - 5, hdr),
                     10);
    assert_memory_equal(hdr, "\x32\xFF\xFF\xFF\x7F\x00\x01t\x00\x01", 10);
}

static void test_encode_subscribe_lists(void **state)
{
    (void)state;
    uint8_t out[64];
    static const uint8_t entries[] = {0, 3, 'a', '/', '#', 1, 0, 1, '+', 2};
    struct mq_packet p = {.type = MQ_SUBSCRIBE};
    p.u.subscribe = (struct mq_topic_list){.packet_id = 5,
                                           .count = 2,
                                           .entries = entries,
                                           .entries_len = sizeof entries,
                                           .with_qos = true};
    assert_int_equal(encode(&p, out, sizeof out), 14);
    assert_memory_equal(out,
                        "\x82\x0c\x00\x05\x00\x03"
                        "a/#\x01\x00\x01+\x02",
                        14);
    /* count must describe the entries, with_qos must match the type. */
    p.u.subscribe.count = 3;
    assert_err(codec_encode(&p, out, sizeof out), MQ_ERR_INVAL);
    p.u.subscribe.count = 2;
    p.u.subscribe.with_qos = false;
    assert_err(codec_encode(&p, out, sizeof out), MQ_ERR_INVAL);

    static const uint8_t unsub[] = {0, 1, 'x', 0, 2, 'y', '/'};
    p = (struct mq_packet){.type = MQ_UNSUBSCRIBE};
    p.u.subscribe = (struct mq_topic_list){
        .packet_id = 6, .count = 2, .entries = unsub, .entries_len = sizeof unsub};
    assert_int_equal(encode(&p, out, sizeof out), 11);
    assert_memory_equal(out, "\xA2\x09\x00\x06\x00\x01x\x00\x02y/", 11);
    p.u.subscribe.with_qos = true;
    assert_err(codec_encode(&p, out, sizeof out), MQ_ERR_INVAL);
}

static void test_encode_acks(void **state)
{
    (void)state;
    uint8_t out[16];
    static const uint8_t codes[] = {0, 2, 0x80};
    struct mq_packet p = {.type = MQ_SUBACK};
    p.u.suback = (struct mq_suback){.packet_id = 0x0A0B, .count = 3, .codes = codes};
    assert_int_equal(encode(&p, out, sizeof out), 7);
    assert_memory_equal(out, "\x90\x05\x0A\x0B\x00\x02\x80", 7);

    p = (struct mq_packet){.type = MQ_CONNACK};
    p.u.connack = (struct mq_connack){.session_present = true, .return_code = 0};
    assert_int_equal(encode(&p, out, sizeof out), 4);
    assert_memory_equal(out, "\x20\x02\x01\x00", 4);

    p = (struct mq_packet){.type = MQ_PUBREL, .u.packet_id = 0x4242};
    assert_int_equal(encode(&p, out, sizeof out), 4);
    assert_memory_equal(out, "\x62\x02\x42\x42", 4);
    p.type = MQ_UNSUBACK;
    assert_int_equal(encode(&p, out, sizeof out), 4);
    assert_memory_equal(out, "\xB0\x02\x42\x42", 4);

    p = (struct mq_packet){.type = MQ_PINGRESP};
    assert_int_equal(encode(&p, out, sizeof out), 2);
    assert_memory_equal(out, "\xD0\x00", 2);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    uint8_t out[64];
    static const uint8_t bad_codes[] = {0, 3};
    struct mq_packet p;

#define EXPECT_INVAL(pkt) assert_err(codec_encode(&(pkt), out, sizeof out), MQ_ERR_INVAL)
    p = (struct mq_packet){.type = 0};
    EXPECT_INVAL(p);
    p.type = 15;
    EXPECT_INVAL(p);

    struct mq_publish good = {.qos = 1, .topic = {(const uint8_t *)"t", 1}, .packet_id = 1};
    p = (struct mq_packet){.type = MQ_PUBLISH, .u.publish = good};
    assert_int_equal(codec_encode(&p, out, sizeof out), 7);
    p.u.publish.qos = 3;
    EXPECT_INVAL(p);
    p.u.publish = good;
    p.u.publish.packet_id = 0;
    EXPECT_INVAL(p);
    p.u.publish = good;
    p.u.publish.qos = 0;
    p.u.publish.dup = true;
    EXPECT_INVAL(p);
    p.u.publish = good;
    p.u.publish.topic = (struct mq_bytes){(const uint8_t *)"t/#", 3};
    EXPECT_INVAL(p);
    p.u.publish.topic = (struct mq_bytes){NULL, 0};
    EXPECT_INVAL(p);
    p.u.publish = good;
    p.u.publish.payload_len = MQ_MAX_REMAINING_LENGTH - 4;
    p.u.publish.payload = out; /* never read: the size check comes first */
    EXPECT_INVAL(p);
    p.u.publish.payload_len = MQ_MAX_REMAINING_LENGTH - 5;
    assert_int_equal(codec_encode(&p, out, sizeof out), 5 + MQ_MAX_REMAINING_LENGTH);

    struct mq_connect conn = {.protocol_level = 4, .client_id = {(const uint8_t *)"c", 1}};
    p = (struct mq_packet){.type = MQ_CONNECT, .u.connect = conn};
    assert_int_equal(codec_encode(&p, out, sizeof out), 15);
    p.u.connect.has_password = true;
    EXPECT_INVAL(p);
    p.u.connect = conn;
    p.u.connect.will_qos = 1;
    EXPECT_INVAL(p);
    p.u.connect = conn;
    p.u.connect.will_retain = true;
    EXPECT_INVAL(p);
    p.u.connect = conn;
    p.u.connect.will_flag = true;
    p.u.connect.will_topic = (struct mq_bytes){(const uint8_t *)"w", 1};
    p.u.connect.will_qos = 3;
    EXPECT_INVAL(p);
    p.u.connect.will_qos = 0;
    p.u.connect.will_topic = (struct mq_bytes){(const uint8_t *)"w+", 2};
    EXPECT_INVAL(p);
    p.u.connect = conn;
    p.u.connect.protocol_level = 5;
    EXPECT_INVAL(p);
    p.u.connect = conn;
    p.u.connect.protocol_name = (struct mq_bytes){(const uint8_t *)"MQIsdp", 6};
    EXPECT_INVAL(p);
    p.u.connect = conn;
    p.u.connect.client_id = (struct mq_bytes){(const uint8_t *)"\xC0\x80", 2};
    EXPECT_INVAL(p);

    p = (struct mq_packet){.type = MQ_CONNACK, .u.connack = {.return_code = 6}};
    EXPECT_INVAL(p);
    p.u.connack = (struct mq_connack){.session_present = true, .return_code = 1};
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_PUBACK, .u.packet_id = 0};
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_SUBACK,
                           .u.suback = {.packet_id = 1, .count = 2, .codes = bad_codes}};
    EXPECT_INVAL(p);
    p.u.suback.count = 0;
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_SUBSCRIBE, .u.subscribe = {.packet_id = 1, .with_qos = true}};
    EXPECT_INVAL(p); /* no entries */
#undef EXPECT_INVAL
}

/* ---- header helpers ----------------------------------------------------------------------- */

static void test_varint(void **state)
{
    (void)state;
    static const struct {
        uint32_t n;
        unsigned size;
        uint8_t bytes[4];
    } cases[] = {
        {0, 1, {0x00}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {2097151, 3, {0xFF, 0xFF, 0x7F}},
        {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
        {MQ_MAX_REMAINING_LENGTH, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[MQ_MAX_FIXED_HEADER + 1];
        memset(out, 0xEE, sizeof out);
        assert_int_equal(codec_varint_size(cases[i].n), cases[i].size);
        assert_int_equal(codec_fixed_header(0x30, cases[i].n, out), 1 + cases[i].size);
        assert_int_equal(out[0], 0x30);
        assert_memory_equal(out + 1, cases[i].bytes, cases[i].size);
        assert_int_equal(out[1 + cases[i].size], 0xEE);
        assert_int_equal(codec_packet_size(out, 1 + cases[i].size), 1 + cases[i].size + cases[i].n);
    }
    uint8_t out[MQ_MAX_FIXED_HEADER];
    assert_int_equal(codec_varint_size(MQ_MAX_REMAINING_LENGTH + 1), 0);
    assert_int_equal(codec_fixed_header(0x30, MQ_MAX_REMAINING_LENGTH + 1, out), 0);
}

static void test_type_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        "RESERVED", "CONNECT",  "CONNACK",    "PUBLISH", "PUBACK",      "PUBREC",
        "PUBREL",   "PUBCOMP",  "SUBSCRIBE",  "SUBACK",  "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ",  "PINGRESP", "DISCONNECT", "AUTH",
    };
    for (unsigned t = 0; t < 16; t++)
        assert_string_equal(codec_type_name(t), names[t]);
    assert_string_equal(codec_type_name(16), "RESERVED");
    assert_string_equal(codec_type_name(0xFFFFFFFFu), "RESERVED");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_311_minimal),
        cmocka_unit_test(test_connect_311_full),
        cmocka_unit_test(test_connect_31_mqisdp),
        cmocka_unit_test(test_connect_empty_client_id_and_user),
        cmocka_unit_test(test_connack),
        cmocka_unit_test(test_publish_qos0),
        cmocka_unit_test(test_publish_qos1_dup_empty_payload),
        cmocka_unit_test(test_publish_qos2),
        cmocka_unit_test(test_publish_large),
        cmocka_unit_test(test_packet_id_only_types),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_unsubscribe),
        cmocka_unit_test(test_suback),
        cmocka_unit_test(test_empty_packets),
        cmocka_unit_test(test_back_to_back),
        cmocka_unit_test(test_reserved_types),
        cmocka_unit_test(test_fixed_header_flags),
        cmocka_unit_test(test_publish_flags),
        cmocka_unit_test(test_remaining_length_boundaries),
        cmocka_unit_test(test_remaining_length_non_minimal),
        cmocka_unit_test(test_max_packet_size),
        cmocka_unit_test(test_fixed_size_lengths),
        cmocka_unit_test(test_packet_id_zero),
        cmocka_unit_test(test_connect_builder_sanity),
        cmocka_unit_test(test_connect_protocol_name),
        cmocka_unit_test(test_connect_protocol_level_fills_fields),
        cmocka_unit_test(test_connect_bridge_bit),
        cmocka_unit_test(test_connect_31_without_client_id),
        cmocka_unit_test(test_connect_flags),
        cmocka_unit_test(test_connect_strings),
        cmocka_unit_test(test_connect_truncated_and_trailing),
        cmocka_unit_test(test_publish_topic_rules),
        cmocka_unit_test(test_subscribe_rules),
        cmocka_unit_test(test_unsubscribe_rules),
        cmocka_unit_test(test_suback_rules),
        cmocka_unit_test(test_connack_rules),
        cmocka_unit_test(test_too_many_filters),
        cmocka_unit_test(test_encode_connect_defaults),
        cmocka_unit_test(test_encode_connect_all_flags),
        cmocka_unit_test(test_encode_publish_and_header),
        cmocka_unit_test(test_encode_subscribe_lists),
        cmocka_unit_test(test_encode_acks),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_type_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

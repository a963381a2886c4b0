/* test_codec5.c - unit tests for the MQTT 5 wire format: src/codec/mqtt5_codec.c, props.c,
 * reason.c and the MQTT 5 parts of mqtt_codec.c.
 *
 * Owns no production code. Golden packets are written out byte by byte from the MQTT 5.0
 * standard (§2-§3) and must decode to the listed fields, re-encode to the identical bytes and
 * read as "incomplete" at every shorter prefix. Every rule has a test asserting its own error
 * code, and the error → reason code mapping is pinned for every enum mq_err.
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

static const struct mq_decode_limits LEVEL5 = {.protocol_level = 5};

static int decode5(const uint8_t *buf, size_t len, struct mq_packet *p)
{
    return codec_decode(buf, len, &LEVEL5, p);
}

static int err5(const uint8_t *buf, size_t len)
{
    struct mq_packet p;
    return codec_decode(buf, len, &LEVEL5, &p);
}

static bool bytes_is(struct mq_bytes b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.ptr, s, b.len) == 0);
}

/* Decode a valid MQTT 5 packet at `limits` and check what must hold for every valid packet:
 * the whole packet is consumed, every shorter prefix is "incomplete" without touching *p,
 * and codec_encode reproduces the exact bytes, refusing to write into a short buffer. */
static void valid_at(const struct mq_decode_limits *limits, const uint8_t *wire, size_t len,
                     struct mq_packet *p)
{
    struct mq_packet untouched;
    for (size_t k = 0; k < len; k++) {
        memset(p, 0x5A, sizeof *p);
        memset(&untouched, 0x5A, sizeof untouched);
        int rc = codec_decode(wire, k, limits, p);
        if (rc != 0)
            fail_msg("prefix of %zu/%zu bytes: %d (%s)", k, len, rc, mq_err_name(rc));
        assert_memory_equal(p, &untouched, sizeof *p);
    }
    int rc = codec_decode(wire, len, limits, p);
    if (rc != (int)len)
        fail_msg("decode: %d (%s), want %zu", rc, mq_err_name(rc), len);
    assert_int_equal(p->version, 5);

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

static void valid5(const uint8_t *wire, size_t len, struct mq_packet *p)
{
    valid_at(&LEVEL5, wire, len, p);
}

/* ---- a small packet builder, for the rules that need many variants ------------------------ */

struct pk {
    uint8_t b[2048];
    size_t n;
};

static void add(struct pk *k, const void *s, size_t n)
{
    assert_true(k->n + n <= sizeof k->b);
    memcpy(k->b + k->n, s, n);
    k->n += n;
}

static void add_u8(struct pk *k, uint8_t v)
{
    add(k, &v, 1);
}

static void add_u16(struct pk *k, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    add(k, b, 2);
}

static void add_str(struct pk *k, const char *s)
{
    add_u16(k, (uint16_t)strlen(s));
    add(k, s, strlen(s));
}

static void add_varint(struct pk *k, uint32_t v)
{
    uint8_t b[4];
    unsigned n = codec_varint_write(v, b);
    assert_true(n > 0);
    add(k, b, n);
}

/* A property block with its length. */
static void add_props(struct pk *k, const uint8_t *props, size_t n)
{
    add_varint(k, (uint32_t)n);
    add(k, props, n);
}

/* Wrap a body into a packet: first byte, shortest remaining length, body. */
static struct pk packet(uint8_t first, const struct pk *body)
{
    struct pk k = {.n = 0};
    add_u8(&k, first);
    add_varint(&k, (uint32_t)body->n);
    add(&k, body->b, body->n);
    return k;
}

static struct pk pkt_of(uint8_t first, const uint8_t *body, size_t n)
{
    struct pk b = {.n = 0};
    add(&b, body, n);
    return packet(first, &b);
}

/* A packet from its first byte and body bytes; the remaining length is computed. */
#define PKT(first, ...) pkt_of((first), BYTES(__VA_ARGS__))

/* The smallest valid MQTT 5 packet of `type` whose property block is props[0..n): what the
 * property rules are tested in. MQ_PROPS_WILL gives a CONNECT with a will. */
static struct pk with_props(unsigned where, const uint8_t *props, size_t n)
{
    static const uint8_t none[1];
    struct pk b = {.n = 0};
    uint8_t first = (uint8_t)(where << 4);
    switch (where) {
    case MQ_PROPS_WILL:
    case MQ_CONNECT:
        first = MQ_CONNECT << 4;
        add_str(&b, "MQTT");
        add_u8(&b, 5);
        add_u8(&b, where == MQ_PROPS_WILL ? 0x06 : 0x02);
        add_u16(&b, 30);
        if (where == MQ_PROPS_WILL) {
            add_props(&b, none, 0);
            add_str(&b, "id");
            add_props(&b, props, n);
            add_str(&b, "will/t");
            add_str(&b, "bye");
        } else {
            add_props(&b, props, n);
            add_str(&b, "id");
        }
        break;
    case MQ_CONNACK:
        add_u8(&b, 0);
        add_u8(&b, 0);
        add_props(&b, props, n);
        break;
    case MQ_PUBLISH:
        first |= 0x02;
        add_str(&b, "t");
        add_u16(&b, 7);
        add_props(&b, props, n);
        add(&b, "pay", 3);
        break;
    case MQ_PUBREL: first |= 0x02; /* fall through */
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBCOMP:
        add_u16(&b, 7);
        add_u8(&b, 0);
        add_props(&b, props, n);
        break;
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE:
        first |= 0x02;
        add_u16(&b, 7);
        add_props(&b, props, n);
        add_str(&b, "a/b");
        if (where == MQ_SUBSCRIBE)
            add_u8(&b, 1);
        break;
    case MQ_SUBACK:
    case MQ_UNSUBACK:
        add_u16(&b, 7);
        add_props(&b, props, n);
        add_u8(&b, 0);
        break;
    case MQ_DISCONNECT:
        add_u8(&b, 0);
        add_props(&b, props, n);
        break;
    case MQ_AUTH:
        add_u8(&b, 0x18);
        add_props(&b, props, n);
        break;
    default: fail_msg("no packet for %u", where);
    }
    return packet(first, &b);
}

/* ---- CONNECT ------------------------------------------------------------------------------ */

static void test_connect5_minimal(void **state)
{
    (void)state;
    struct mq_packet p;
    valid5(BYTES(0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, /* name, level, flags, ka */
                 0,                                                  /* no properties */
                 0, 2, 'c', '1'),
           &p);
    assert_int_equal(p.type, MQ_CONNECT);
    const struct mq_connect *c = &p.u.connect;
    assert_true(bytes_is(c->protocol_name, "MQTT"));
    assert_int_equal(c->protocol_level, 5);
    assert_true(c->clean_session);
    assert_int_equal(c->keepalive, 60);
    assert_true(bytes_is(c->client_id, "c1"));
    assert_false(c->will_flag || c->has_username || c->has_password || c->bridge);
    assert_int_equal(p.props.present, 0);
    assert_int_equal(p.props.raw_len, 0);
    /* The same bytes decode the same at every connection level: CONNECT says its dialect. */
    static const struct mq_decode_limits levels[] = {
        {0}, {.protocol_level = 3}, {.protocol_level = 4}};
    for (size_t i = 0; i < 3; i++)
        valid_at(&levels[i],
                 BYTES(0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 2, 'c', '1'), &p);
    valid_at(NULL, BYTES(0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 2, 'c', '1'),
             &p);
}

static void test_connect5_full(void **state)
{
    (void)state;
    struct mq_packet p;
    /* Every CONNECT property, a will with every will property, user name and password. */
    static const uint8_t props[] = {
        0x11, 0, 0,  0x0E, 0x10,                 /* session expiry 3600 */
        0x21, 0, 20,                             /* receive maximum 20 */
        0x27, 0, 1,  0,    0,                    /* maximum packet size 65536 */
        0x22, 0, 10,                             /* topic alias maximum 10 */
        0x19, 1,                                 /* request response info */
        0x17, 0,                                 /* request problem info 0 */
        0x26, 0, 1,  'a',  0,    1,    '1',      /* user property a=1 */
        0x15, 0, 5,  'S',  'C',  'R',  'A', 'M', /* authentication method */
        0x16, 0, 3,  0x00, 0xFF, 0x01,           /* authentication data */
        0x26, 0, 1,  'a',  0,    1,    '2',      /* a=2: pairs may repeat */
        0x26, 0, 3,  'k',  'e',  'y',  0,   5,   'v', 'a', 'l', 'u', 'e', /* key=value */
        0x26, 0, 0,  0,    0,                                             /* ""="" */
    };
    static const uint8_t will_props[] = {
        0x18, 0,   0,   0,    30,   /* will delay 30 */
        0x01, 1,                    /* payload is UTF-8 */
        0x02, 0,   0,   0x0E, 0x10, /* message expiry 3600 */
        0x03, 0,   10,  't',  'e',  'x',  't',  '/',  'p',  'l',  'a', 'i', 'n', /* content type */
        0x08, 0,   8,   'r',  'e',  'p',  'l',  'y',  '/',  't',  'o',      /* response topic */
        0x09, 0,   4,   0xDE, 0xAD, 0xBE, 0xEF,                             /* correlation data */
        0x26, 0,   4,   'w',  'h',  'o',  'm',  0,    3,    'm',  'e', '!', /* will user property */
        0x26, 0,   2,   0xC3, 0xA9, 0,    3,    0xE2, 0x82, 0xAC,           /* "é" = "€" */
        0x26, 0,   0,   0,    130, /* ""=130 x: a long one */
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x', 'x', 'x', 'x', 'x', 'x', 'x',
        'x',  'x', 'x', 'x',  'x',  'x',  'x',  'x',  'x',  'x',  'x',
    };
    struct pk b = {.n = 0};
    add_str(&b, "MQTT");
    add_u8(&b, 5);
    add_u8(&b, 0xEE); /* user, password, will retain, will QoS 1, will, clean start */
    add_u16(&b, 300);
    add_props(&b, props, sizeof props);
    add_str(&b, "cid");
    add_props(&b, will_props, sizeof will_props); /* 200: a 2-byte length, 0xC8 0x01 */
    add_str(&b, "w/t");
    add(&b, "\x00\x03\x00\xFFx", 5); /* binary will payload */
    add_str(&b, "user");
    add(&b, "\x00\x02p\x00", 4); /* binary password */
    struct pk k = packet(0x10, &b);
    assert_int_equal(k.b[1] & 0x80, 0x80); /* a two-byte remaining length */
    valid5(k.b, k.n, &p);

    const struct mq_connect *c = &p.u.connect;
    assert_int_equal(c->keepalive, 300);
    assert_true(c->clean_session);
    assert_true(c->will_flag);
    assert_int_equal(c->will_qos, 1);
    assert_true(c->will_retain);
    assert_true(c->has_username && c->has_password);
    assert_true(bytes_is(c->client_id, "cid"));
    assert_true(bytes_is(c->will_topic, "w/t"));
    assert_int_equal(c->will_payload.len, 3);
    assert_memory_equal(c->will_payload.ptr, "\x00\xFFx", 3);
    assert_true(bytes_is(c->username, "user"));
    assert_int_equal(c->password.len, 2);

    const struct mq_props *q = &p.props;
    assert_int_equal(q->raw_len, sizeof props);
    assert_memory_equal(q->raw, props, sizeof props);
    assert_ptr_equal(q->raw, k.b + 3 + 10 + 1); /* borrowed from the buffer */
    assert_int_equal(q->present, MQ_PROP_BIT(0x11) | MQ_PROP_BIT(0x21) | MQ_PROP_BIT(0x27) |
                                     MQ_PROP_BIT(0x22) | MQ_PROP_BIT(0x19) | MQ_PROP_BIT(0x17) |
                                     MQ_PROP_BIT(0x26) | MQ_PROP_BIT(0x15) | MQ_PROP_BIT(0x16));
    assert_int_equal(q->session_expiry, 3600);
    assert_int_equal(q->receive_maximum, 20);
    assert_int_equal(q->maximum_packet_size, 65536);
    assert_int_equal(q->topic_alias_maximum, 10);
    assert_int_equal(q->request_response_info, 1);
    assert_int_equal(q->request_problem_info, 0);
    assert_int_equal(q->user_count, 4);
    assert_true(bytes_is(q->auth_method, "SCRAM"));
    assert_int_equal(q->auth_data.len, 3);
    assert_memory_equal(q->auth_data.ptr, "\x00\xFF\x01", 3);
    assert_true(codec_props_has(q, MQ_PROP_AUTH_DATA));
    assert_false(codec_props_has(q, MQ_PROP_REASON_STRING));

    const struct mq_props *w = &c->will_props;
    assert_int_equal(w->raw_len, sizeof will_props);
    assert_int_equal(w->will_delay, 30);
    assert_int_equal(w->payload_format, 1);
    assert_int_equal(w->message_expiry, 3600);
    assert_true(bytes_is(w->content_type, "text/plain"));
    assert_true(bytes_is(w->response_topic, "reply/to"));
    assert_int_equal(w->correlation_data.len, 4);
    assert_int_equal(w->user_count, 3);

    /* The user properties, in order, through the iterator. */
    struct mq_prop_iter it = codec_prop_iter(q->raw, q->raw_len);
    struct mq_prop pr;
    const char *want[][2] = {{"a", "1"}, {"a", "2"}, {"key", "value"}, {"", ""}};
    size_t users = 0;
    int rc;
    while ((rc = codec_prop_next(&it, &pr)) > 0) {
        if (pr.id != MQ_PROP_USER)
            continue;
        assert_int_equal(pr.type, MQ_PROPT_PAIR);
        assert_true(bytes_is(pr.str, want[users][0]));
        assert_true(bytes_is(pr.value, want[users][1]));
        users++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(users, 4);
}

/* 3.1.2.9: MQTT 5 allows a password without a user name ([MQTT-3.1.2-22] of 3.1.1 is gone). */
static void test_connect5_password_without_user(void **state)
{
    (void)state;
    struct mq_packet p;
    valid5(BYTES(0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x42, 0, 0, 0, 0, 0, 0, 3, 'p', 'w', 'd'),
           &p);
    assert_false(p.u.connect.has_username);
    assert_true(p.u.connect.has_password);
    assert_true(bytes_is(p.u.connect.password, "pwd"));
    assert_true(bytes_is(p.u.connect.client_id, ""));
    /* Bridges set the level's top bit (0x85) in MQTT 5 too. */
    valid5(BYTES(0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 0x85, 0x02, 0, 0, 0, 0, 0), &p);
    assert_true(p.u.connect.bridge);
    assert_int_equal(p.u.connect.protocol_level, 5);
}

static void test_connect5_flag_rules(void **state)
{
    (void)state;
    /* reserved flag, will QoS/retain without will, will QoS 3 */
    assert_err(err5(BYTES(0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x03, 0, 0, 0, 0, 0)),
               MQ_ERR_CONNECT_RESERVED);
    assert_err(err5(BYTES(0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x0A, 0, 0, 0, 0, 0)),
               MQ_ERR_WILL_FLAGS);
    assert_err(err5(BYTES(0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x22, 0, 0, 0, 0, 0)),
               MQ_ERR_WILL_FLAGS);
    assert_err(err5(BYTES(0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x1E, 0, 0, 0, 0, 0)),
               MQ_ERR_QOS3);
    /* The will has its properties before its topic: a will laid out as in 3.1.1 reads the
     * topic length's first byte as the property length, and then runs out. */
    assert_err(err5(BYTES(0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 0, 0, 0, 0, /* id */
                          0, 1, 't', 0, 0)),
               MQ_ERR_TRUNCATED);
    struct mq_packet p;
    valid5(BYTES(0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 0, 0, 0, 0, 0, 0, 1, 't', 0, 0),
           &p);
    assert_true(p.u.connect.will_flag);
    assert_int_equal(p.u.connect.will_props.raw_len, 0);
    /* will topic rules */
    assert_err(
        err5(BYTES(0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 0, 0, 0, 0, 0, 0, 1, '#', 0, 0)),
        MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(
        err5(BYTES(0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
        MQ_ERR_EMPTY_TOPIC);
    /* client id and user name are UTF-8 */
    assert_err(err5(BYTES(0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 0, 0, 1, 0xFF)),
               MQ_ERR_BAD_UTF8);
    assert_err(err5(BYTES(0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x82, 0, 0, 0, 0, 0, 0, 1, 0)),
               MQ_ERR_UTF8_NULL);
    /* truncated and trailing */
    assert_err(err5(BYTES(0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 0, 0)),
               MQ_ERR_TRUNCATED);
    assert_err(err5(BYTES(0x10, 11, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 5)),
               MQ_ERR_TRUNCATED); /* property length past the end */
    assert_err(err5(BYTES(0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 0, 0, 0, 'x')),
               MQ_ERR_TRAILING);
    assert_err(
        err5(BYTES(0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x42, 0, 0, 0, 0, 0, 0, 3, 'p', 'w')),
        MQ_ERR_TRUNCATED);
}

/* After ANY error of a CONNECT whose name and level say MQTT 5, the packet says MQ_CONNECT and
 * version 5 with what could be read, so that proto answers CONNACK 0x81/0x82 (4.13). */
static void test_connect5_errors_are_answerable(void **state)
{
    (void)state;
    static const struct {
        struct pk wire;
        int err;
        uint8_t reason;
    } * c,
        cases[] = {
            {{{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x03, 0, 0, 0, 0, 0}, 15},
             MQ_ERR_CONNECT_RESERVED,
             0x81},
            {{{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 0, 0}, 14},
             MQ_ERR_TRUNCATED,
             0x81},
            {{{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 3, 0x21, 0, 0, 0, 0}, 18},
             MQ_ERR_PROPERTY_VALUE,
             0x82},
            {{{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 4, 0x19, 1, 0x19, 1, 0, 0}, 19},
             MQ_ERR_DUPLICATE_PROPERTY,
             0x82},
            {{{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 2, 0x24, 1, 0, 0}, 17},
             MQ_ERR_PROPERTY_NOT_ALLOWED,
             0x81},
            {{{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 4, 0x16, 0, 1, 'x', 0, 0}, 19},
             MQ_ERR_AUTH_METHOD,
             0x82},
            /* non-minimal remaining length: MQTT 5 requires the shortest form ([MQTT-1.5.5-1]) */
            {{{0x10, 0x8D, 0x00, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 0, 0, 0}, 16},
             MQ_ERR_BAD_VARINT,
             0x81},
            /* the property length too */
            {{{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 0x80, 0x00, 0, 0}, 16},
             MQ_ERR_BAD_VARINT,
             0x81},
        };
    static const struct mq_decode_limits at0 = {0}, at4 = {.protocol_level = 4};
    for (c = cases; c < cases + sizeof cases / sizeof cases[0]; c++) {
        const struct mq_decode_limits *levels[] = {NULL, &at0, &at4, &LEVEL5};
        for (size_t i = 0; i < 4; i++) {
            struct mq_packet p;
            memset(&p, 0x5A, sizeof p);
            assert_err(codec_decode(c->wire.b, c->wire.n, levels[i], &p), c->err);
            assert_int_equal(p.type, MQ_CONNECT);
            assert_int_equal(p.version, 5);
            assert_int_equal(p.u.connect.protocol_level, 5);
            assert_true(bytes_is(p.u.connect.protocol_name, "MQTT"));
            assert_int_equal(codec_connect_refusal(c->err, &p), c->reason);
            assert_false(codec_connect_answerable(c->err));
        }
    }
    /* What was read before the error is there. */
    struct mq_packet p;
    assert_err(
        decode5(BYTES(0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 9, 4, 0x17, 0, 0x17, 1, 0, 0),
                &p),
        MQ_ERR_DUPLICATE_PROPERTY);
    assert_int_equal(p.u.connect.keepalive, 9);
    assert_true(codec_props_has(&p.props, MQ_PROP_REQUEST_PROBLEM_INFO));
    assert_int_equal(p.props.request_problem_info, 0);

    /* An oversized MQTT 5 CONNECT: Packet Too Large (0x95) once the level has arrived. */
    struct mq_decode_limits small = {.max_packet_size = 10};
    memset(&p, 0x5A, sizeof p);
    assert_err(codec_decode(BYTES(0x10, 0x80, 0x01, 0, 4, 'M', 'Q', 'T', 'T', 5), &small, &p),
               MQ_ERR_TOO_LARGE);
    assert_int_equal(p.type, MQ_CONNECT);
    assert_int_equal(p.version, 5);
    assert_int_equal(codec_connect_refusal(MQ_ERR_TOO_LARGE, &p), 0x95);
    /* before the level, or for an MQTT 3.1.1 one, it is not answerable */
    memset(&p, 0x5A, sizeof p);
    assert_err(codec_decode(BYTES(0x10, 0x80, 0x01, 0, 4, 'M', 'Q', 'T', 'T'), &small, &p),
               MQ_ERR_TOO_LARGE);
    assert_int_equal(codec_connect_refusal(MQ_ERR_TOO_LARGE, &p), 0);
    memset(&p, 0x5A, sizeof p);
    assert_err(codec_decode(BYTES(0x10, 0x80, 0x01, 0, 4, 'M', 'Q', 'T', 'T', 4), &small, &p),
               MQ_ERR_TOO_LARGE);
    assert_int_equal(codec_connect_refusal(MQ_ERR_TOO_LARGE, &p), 0);
}

/* MQTT 3.x CONNECT refusals keep their 3.x codes; everything else closes silently. */
static void test_connect_refusal_3x(void **state)
{
    (void)state;
    struct mq_packet p;
    memset(&p, 0x5A, sizeof p);
    /* "MQTT" level 6: a level error, answered in 3.1.1 form (the level is not 5). */
    assert_err(
        codec_decode(BYTES(0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 6, 0x02, 0, 0, 0, 0), NULL, &p),
        MQ_ERR_BAD_PROTOCOL_LEVEL);
    assert_int_equal(p.version, 4);
    assert_int_equal(codec_connect_refusal(MQ_ERR_BAD_PROTOCOL_LEVEL, &p), 0x01);
    assert_err(
        codec_decode(BYTES(0x10, 12, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0, 10), NULL, &p),
        MQ_ERR_NO_CLIENT_ID);
    assert_int_equal(codec_connect_refusal(MQ_ERR_NO_CLIENT_ID, &p), 0x02);
    /* "MQIsdp" with level 5 is not MQTT 5 */
    assert_err(
        codec_decode(BYTES(0x10, 14, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 5, 0x02, 0, 0, 0, 0), NULL,
                     &p),
        MQ_ERR_BAD_PROTOCOL_LEVEL);
    assert_int_equal(p.version, 3);
    assert_int_equal(codec_connect_refusal(MQ_ERR_BAD_PROTOCOL_LEVEL, &p), 0x01);
    assert_err(
        codec_decode(BYTES(0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x03, 0, 0, 0, 0), NULL, &p),
        MQ_ERR_CONNECT_RESERVED);
    assert_int_equal(codec_connect_refusal(MQ_ERR_CONNECT_RESERVED, &p), 0);
    /* An error before the type is known never looks like an MQTT 5 CONNECT, whatever *out
     * held before: a stale CONNECT from the previous call must not be answered. */
    memset(&p, 0, sizeof p);
    p.type = MQ_CONNECT;
    p.version = 5;
    assert_err(codec_decode(BYTES(0x11, 0), NULL, &p), MQ_ERR_BAD_FLAGS);
    assert_int_equal(codec_connect_refusal(MQ_ERR_BAD_FLAGS, &p), 0);
    p.version = 5;
    assert_err(codec_decode(BYTES(0x10, 0xFF, 0xFF, 0xFF, 0xFF), &LEVEL5, &p),
               MQ_ERR_BAD_REMAINING_LENGTH);
    assert_int_equal(codec_connect_refusal(MQ_ERR_BAD_REMAINING_LENGTH, &p), 0);
    p.version = 5;
    assert_err(codec_decode(BYTES(0x40, 3, 0, 1, 0), NULL, &p), MQ_ERR_MALFORMED);
    assert_int_equal(codec_connect_refusal(MQ_ERR_MALFORMED, &p), 0);
    assert_int_equal(codec_connect_refusal(0, &p), 0);
    assert_int_equal(codec_connect_refusal(42, &p), 0);
}

/* ---- CONNACK ------------------------------------------------------------------------------ */

static void test_connack5(void **state)
{
    (void)state;
    struct mq_packet p;
    valid5(BYTES(0x20, 3, 0x01, 0x00, 0x00), &p);
    assert_int_equal(p.type, MQ_CONNACK);
    assert_true(p.u.connack.session_present);
    assert_int_equal(p.u.connack.return_code, 0);
    /* Every CONNACK-only property. */
    struct pk k = PKT(0x20, 0x00, 0x00, 71,                  /* flags, reason, length */
                      0x12, 0, 4, 'a', 'u', 't', 'o',        /* assigned client id */
                      0x13, 0, 30,                           /* server keep alive */
                      0x1A, 0, 4, 'r', 'e', 's', 'p',        /* response information */
                      0x1C, 0, 5, 'o', 't', 'h', 'e', 'r',   /* server reference */
                      0x1F, 0, 2, 'o', 'k',                  /* reason string */
                      0x24, 1,                               /* maximum QoS 1 */
                      0x25, 0,                               /* retain available 0 */
                      0x28, 1, 0x29, 0, 0x2A, 1,             /* wildcard, sub id, shared */
                      0x21, 0, 100, 0x22, 0, 5,              /* receive max, alias max */
                      0x27, 0, 0, 0x10, 0, 0x11, 0, 0, 0, 0, /* max packet, session */
                      0x15, 0, 1, 'M', 0x16, 0, 1, 'D',      /* auth method, data */
                      0x26, 0, 1, 'k', 0, 1, 'v');           /* user property */
    valid5(k.b, k.n, &p);
    const struct mq_props *q = &p.props;
    assert_true(bytes_is(q->assigned_client_id, "auto"));
    assert_int_equal(q->server_keep_alive, 30);
    assert_true(bytes_is(q->response_info, "resp"));
    assert_true(bytes_is(q->server_reference, "other"));
    assert_true(bytes_is(q->reason_string, "ok"));
    assert_int_equal(q->maximum_qos, 1);
    assert_int_equal(q->retain_available, 0);
    assert_true(codec_props_has(q, MQ_PROP_RETAIN_AVAILABLE));
    assert_int_equal(q->wildcard_sub_available, 1);
    assert_int_equal(q->sub_id_available, 0);
    assert_int_equal(q->shared_sub_available, 1);
    assert_int_equal(q->receive_maximum, 100);
    assert_int_equal(q->topic_alias_maximum, 5);
    assert_int_equal(q->maximum_packet_size, 4096);
    assert_int_equal(q->session_expiry, 0);
    assert_true(bytes_is(q->auth_method, "M"));
    assert_true(bytes_is(q->auth_data, "D"));
    assert_int_equal(q->user_count, 1);

    /* Every reason code of 3.2.2.2 decodes; the others are a Protocol Error. */
    unsigned ok = 0;
    for (unsigned code = 0; code < 256; code++) {
        int rc = err5(BYTES(0x20, 3, 0x00, (uint8_t)code, 0));
        if (rc == 5)
            ok++;
        else
            assert_err(rc, MQ_ERR_BAD_REASON_CODE);
    }
    assert_int_equal(ok, 22);
    valid5(BYTES(0x20, 3, 0x00, 0x9F, 0x00), &p);
    assert_int_equal(p.u.connack.return_code, MQ_RC_CONNECTION_RATE_EXCEEDED);

    assert_err(err5(BYTES(0x20, 3, 0x02, 0x00, 0x00)), MQ_ERR_MALFORMED); /* [MQTT-3.2.2-1] */
    assert_err(err5(BYTES(0x20, 3, 0x01, 0x87, 0x00)), MQ_ERR_MALFORMED); /* [MQTT-3.2.2-6] */
    assert_err(err5(BYTES(0x20, 2, 0x00, 0x00)), MQ_ERR_TRUNCATED);       /* no property length */
    assert_err(err5(BYTES(0x20, 4, 0x00, 0x00, 0x00, 0x00)), MQ_ERR_TRAILING);
    assert_err(err5(BYTES(0x20, 5, 0x00, 0x00, 0x02, 0x24, 2)), MQ_ERR_PROPERTY_VALUE);
    assert_err(err5(BYTES(0x20, 5, 0x00, 0x00, 0x02, 0x01, 0)), MQ_ERR_PROPERTY_NOT_ALLOWED);
    assert_err(err5(BYTES(0x20, 0)), MQ_ERR_TRUNCATED);
}

/* ---- PUBLISH ------------------------------------------------------------------------------ */

static void test_publish5(void **state)
{
    (void)state;
    struct mq_packet p;
    /* QoS 0, no properties */
    valid5(BYTES(0x30, 9, 0, 3, 'a', '/', 'b', 0, 'h', 'i', '!'), &p);
    assert_int_equal(p.type, MQ_PUBLISH);
    assert_true(bytes_is(p.u.publish.topic, "a/b"));
    assert_int_equal(p.u.publish.packet_id, 0);
    assert_int_equal(p.u.publish.payload_len, 3);
    assert_memory_equal(p.u.publish.payload, "hi!", 3);
    assert_int_equal(p.props.present, 0);

    /* QoS 1 retained with every PUBLISH property, two subscription identifiers (a server's) */
    struct pk k = PKT(0x33, 0, 1, 't', 0x12, 0x34, 52,     /* topic, packet id, length */
                      0x01, 1,                             /* payload format: UTF-8 */
                      0x02, 0, 0, 0, 60,                   /* message expiry 60 */
                      0x03, 0, 4, 'j', 's', 'o', 'n',      /* content type */
                      0x08, 0, 5, 'r', '/', 'e', '/', 'q', /* response topic */
                      0x09, 0, 2, 0x00, 0x01,              /* correlation data */
                      0x0B, 0x80, 0x01,                    /* subscription id 128 */
                      0x0B, 0xFF, 0xFF, 0xFF, 0x7F,        /* and 268,435,455 */
                      0x23, 0, 3,                          /* topic alias 3 */
                      0x26, 0, 1, 'k', 0, 1, 'v',          /* user property */
                      0x26, 0, 1, 'k', 0, 1, 'w',          /* again */
                      '{', '}');
    valid5(k.b, k.n, &p);
    const struct mq_publish *m = &p.u.publish;
    assert_int_equal(m->qos, 1);
    assert_true(m->retain);
    assert_false(m->dup);
    assert_int_equal(m->packet_id, 0x1234);
    assert_int_equal(m->payload_len, 2);
    assert_memory_equal(m->payload, "{}", 2);
    const struct mq_props *q = &p.props;
    assert_int_equal(q->payload_format, 1);
    assert_int_equal(q->message_expiry, 60);
    assert_true(bytes_is(q->content_type, "json"));
    assert_true(bytes_is(q->response_topic, "r/e/q"));
    assert_int_equal(q->correlation_data.len, 2);
    assert_int_equal(q->subscription_id, 128);
    assert_int_equal(q->sub_id_count, 2);
    assert_int_equal(q->topic_alias, 3);
    assert_int_equal(q->user_count, 2);

    /* QoS 2 DUP with an aliased (empty) topic */
    valid5(BYTES(0x3C, 9, 0, 0, 0x00, 0x07, 3, 0x23, 0, 1, 'x'), &p);
    assert_int_equal(p.u.publish.topic.len, 0);
    assert_int_equal(p.u.publish.qos, 2);
    assert_true(p.u.publish.dup);
    assert_int_equal(p.props.topic_alias, 1);
    /* empty payload */
    valid5(BYTES(0x30, 4, 0, 1, 't', 0), &p);
    assert_int_equal(p.u.publish.payload_len, 0);

    /* 3.3.2.1: a zero-length topic needs a Topic Alias. */
    assert_err(err5(BYTES(0x30, 3, 0, 0, 0)), MQ_ERR_EMPTY_TOPIC_NO_ALIAS);
    assert_err(err5(BYTES(0x30, 7, 0, 0, 4, 0x02, 0, 0, 0)), MQ_ERR_TRUNCATED);
    assert_err(err5(BYTES(0x30, 8, 0, 0, 5, 0x02, 0, 0, 0, 1)), MQ_ERR_EMPTY_TOPIC_NO_ALIAS);
    assert_err(err5(BYTES(0x30, 6, 0, 0, 3, 0x23, 0, 0)), MQ_ERR_TOPIC_ALIAS_ZERO);
    assert_err(err5(BYTES(0x30, 5, 0, 2, 'a', '+', 0)), MQ_ERR_WILDCARD_IN_TOPIC);
    assert_err(err5(BYTES(0x30, 4, 0, 1, 0xC0, 0)), MQ_ERR_BAD_UTF8);
    assert_err(err5(BYTES(0x32, 4, 0, 1, 't', 0)), MQ_ERR_TRUNCATED); /* no packet id */
    assert_err(err5(BYTES(0x32, 6, 0, 1, 't', 0, 0, 0)), MQ_ERR_PACKET_ID_ZERO);
    assert_err(err5(BYTES(0x30, 3, 0, 1, 't')), MQ_ERR_TRUNCATED); /* no property length */
    assert_err(err5(BYTES(0x36, 4, 0, 1, 't', 0)), MQ_ERR_QOS3);
    assert_err(err5(BYTES(0x38, 4, 0, 1, 't', 0)), MQ_ERR_BAD_FLAGS);
    /* Subscription Identifier 0 is a Protocol Error in PUBLISH too (3.3.2.3.8). */
    assert_err(err5(BYTES(0x30, 6, 0, 1, 't', 2, 0x0B, 0)), MQ_ERR_PROPERTY_VALUE);
    /* Response Topic: a topic name, no wildcards ([MQTT-3.3.2-14]), not empty. */
    assert_err(err5(BYTES(0x30, 9, 0, 1, 't', 5, 0x08, 0, 2, 'a', '#')), MQ_ERR_RESPONSE_TOPIC);
    assert_err(err5(BYTES(0x30, 7, 0, 1, 't', 3, 0x08, 0, 0)), MQ_ERR_RESPONSE_TOPIC);
    assert_err(err5(BYTES(0x30, 8, 0, 1, 't', 4, 0x08, 0, 1, 0xFF)), MQ_ERR_BAD_UTF8);
    /* Payload Format Indicator is 0 or 1. */
    assert_err(err5(BYTES(0x30, 6, 0, 1, 't', 2, 0x01, 2)), MQ_ERR_PROPERTY_VALUE);
    valid5(BYTES(0x30, 6, 0, 1, 't', 2, 0x01, 0), &p);
    assert_int_equal(p.props.payload_format, 0);
    assert_true(codec_props_has(&p.props, MQ_PROP_PAYLOAD_FORMAT));
}

/* ---- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------------------------ */

static void test_acks5(void **state)
{
    (void)state;
    static const uint8_t firsts[] = {0x40, 0x50, 0x62, 0x70};
    static const enum mq_packet_type types[] = {MQ_PUBACK, MQ_PUBREC, MQ_PUBREL, MQ_PUBCOMP};
    static const unsigned allowed[] = {9, 9, 2, 2}; /* 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1 */
    for (size_t i = 0; i < 4; i++) {
        struct mq_packet p;
        uint8_t f = firsts[i];
        /* remaining length 2: success, no properties */
        uint8_t w2[] = {f, 2, 0x12, 0x34};
        valid5(w2, sizeof w2, &p);
        assert_int_equal(p.type, types[i]);
        assert_int_equal(p.u.ack.packet_id, 0x1234);
        assert_int_equal(p.u.packet_id, 0x1234); /* the alias of 3.x callers */
        assert_int_equal(p.u.ack.reason, 0);
        assert_int_equal(p.omitted, MQ_OMIT_REASON_AND_PROPERTIES);
        /* 3: reason only */
        uint8_t code = i < 2 ? 0x10 : 0x92;
        uint8_t w3[] = {f, 3, 0x00, 0x01, code};
        valid5(w3, sizeof w3, &p);
        assert_int_equal(p.u.ack.reason, code);
        assert_int_equal(p.omitted, MQ_OMIT_PROPERTIES);
        /* 3 with success, and 4 with an empty block: legal longer forms, kept as they came */
        uint8_t w3s[] = {f, 3, 0x00, 0x01, 0x00};
        valid5(w3s, sizeof w3s, &p);
        uint8_t w4[] = {f, 4, 0x00, 0x01, 0x00, 0x00};
        valid5(w4, sizeof w4, &p);
        assert_int_equal(p.omitted, MQ_OMIT_NONE);
        /* reason string and user property */
        uint8_t wp[] = {f,   16,  0x00, 0x02, code, 12,  0x1F, 0, 2,
                        'n', 'o', 0x26, 0,    1,    'a', 0,    1, 'b'};
        valid5(wp, sizeof wp, &p);
        assert_true(bytes_is(p.props.reason_string, "no"));
        assert_int_equal(p.props.user_count, 1);
        /* every reason code of its table, and no other */
        unsigned ok = 0;
        for (unsigned c = 0; c < 256; c++) {
            uint8_t w[] = {f, 3, 0x00, 0x01, (uint8_t)c};
            int rc = err5(w, sizeof w);
            if (rc == 5)
                ok++;
            else
                assert_err(rc, MQ_ERR_BAD_REASON_CODE);
            assert_int_equal(rc == 5, codec_reason_allowed(types[i], (uint8_t)c));
        }
        assert_int_equal(ok, allowed[i]);
        /* packet id 0, short, trailing, properties that do not belong here */
        uint8_t z[] = {f, 2, 0, 0};
        assert_err(err5(z, sizeof z), MQ_ERR_PACKET_ID_ZERO);
        uint8_t s1[] = {f, 1, 0};
        assert_err(err5(s1, sizeof s1), MQ_ERR_TRUNCATED);
        uint8_t s0[] = {f, 0};
        assert_err(err5(s0, sizeof s0), MQ_ERR_TRUNCATED);
        uint8_t tr[] = {f, 5, 0, 1, 0, 0, 0};
        assert_err(err5(tr, sizeof tr), MQ_ERR_TRAILING);
        uint8_t pl[] = {f, 5, 0, 1, 0, 3, 0x1F};
        assert_err(err5(pl, sizeof pl), MQ_ERR_TRUNCATED);
        uint8_t na[] = {f, 7, 0, 1, 0, 3, 0x23, 0, 1};
        assert_err(err5(na, sizeof na), MQ_ERR_PROPERTY_NOT_ALLOWED);
        uint8_t dup[] = {f, 12, 0, 1, 0, 8, 0x1F, 0, 1, 'a', 0x1F, 0, 1, 'b'};
        assert_err(err5(dup, sizeof dup), MQ_ERR_DUPLICATE_PROPERTY);
    }
    /* [MQTT-3.6.1-1]: PUBREL flags are 0010 in MQTT 5 too */
    assert_err(err5(BYTES(0x60, 2, 0, 1)), MQ_ERR_BAD_FLAGS);
    assert_err(err5(BYTES(0x41, 2, 0, 1)), MQ_ERR_BAD_FLAGS);
}

/* ---- SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK --------------------------------------------- */

static void test_subscribe5(void **state)
{
    (void)state;
    struct mq_packet p;
    struct pk k = PKT(0x82, 0x00, 0x0A,                /* packet id 10 */
                      7, 0x0B, 0x2A, 0x26, 0, 0, 0, 0, /* sub id 42, user ""="" */
                      0, 3, 'a', '/', 'b', 0x00,       /* QoS 0 */
                      0, 1, '#', 0x2D,                 /* QoS 1, NL, RAP, RH 2 */
                      0, 9, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 0x1A, /* QoS 2 RAP RH 1 */
                      0, 1, '+', 0x06);                                        /* QoS 2 No Local */
    valid5(k.b, k.n, &p);
    const struct mq_topic_list *l = &p.u.subscribe;
    assert_int_equal(l->packet_id, 10);
    assert_int_equal(l->count, 4);
    assert_true(l->with_qos);
    assert_int_equal(p.props.subscription_id, 42);
    assert_int_equal(p.props.user_count, 1);
    struct mq_topic_iter it = {l, 0};
    struct mq_bytes f;
    uint8_t o = 0xFF;
    assert_true(codec_topic_list_next(&it, &f, &o));
    assert_true(bytes_is(f, "a/b"));
    assert_int_equal(o, 0x00);
    assert_true(codec_topic_list_next(&it, &f, &o));
    assert_true(bytes_is(f, "#"));
    assert_int_equal(o, 0x2D); /* the whole options byte */
    assert_int_equal(MQ_SUB_QOS(o), 1);
    assert_true(o & MQ_SUB_NO_LOCAL);
    assert_true(o & MQ_SUB_RETAIN_AS_PUBLISHED);
    assert_int_equal(MQ_SUB_RETAIN_HANDLING(o), 2);
    assert_true(codec_topic_list_next(&it, &f, &o));
    assert_true(bytes_is(f, "$share/g/"));
    assert_int_equal(MQ_SUB_QOS(o), 2);
    assert_int_equal(MQ_SUB_RETAIN_HANDLING(o), 1);
    assert_false(o & MQ_SUB_NO_LOCAL);
    assert_true(codec_topic_list_next(&it, &f, NULL));
    assert_true(bytes_is(f, "+"));
    assert_false(codec_topic_list_next(&it, &f, &o));

    /* 3.8.3.1 option rules */
    k = PKT(0x82, 0, 1, 0, 0, 1, 't', 0x40);
    assert_err(err5(k.b, k.n), MQ_ERR_SUBSCRIBE_RESERVED); /* [MQTT-3.8.3-5]: Malformed */
    k = PKT(0x82, 0, 1, 0, 0, 1, 't', 0x80);
    assert_err(err5(k.b, k.n), MQ_ERR_SUBSCRIBE_RESERVED);
    k = PKT(0x82, 0, 1, 0, 0, 1, 't', 0x03);
    assert_err(err5(k.b, k.n), MQ_ERR_SUBSCRIBE_QOS3);
    k = PKT(0x82, 0, 1, 0, 0, 1, 't', 0x30);
    assert_err(err5(k.b, k.n), MQ_ERR_RETAIN_HANDLING);
    k = PKT(0x82, 0, 1, 0, 0, 9, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 0x04);
    assert_err(err5(k.b, k.n), MQ_ERR_NO_LOCAL_SHARED); /* [MQTT-3.8.3-4] */
    k = PKT(0x82, 0, 1, 0, 0, 9, '$', 's', 'h', 'a', 'r', 'e', 'x', 'g', '/', 0x04);
    valid5(k.b, k.n, &p); /* not a shared subscription */
    /* a SUBSCRIBE with no payload is a Protocol Error (3.8.3) */
    k = PKT(0x82, 0, 1, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_EMPTY_SUBSCRIBE);
    k = PKT(0x82, 0, 1, 0, 0, 1, 't');
    assert_err(err5(k.b, k.n), MQ_ERR_TRUNCATED); /* options byte missing */
    k = PKT(0x82, 0, 1, 0, 0, 2, 'a', '#', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_BAD_FILTER);
    k = PKT(0x82, 0, 0, 0, 0, 1, 't', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_PACKET_ID_ZERO);
    k = PKT(0x82, 0, 1);
    assert_err(err5(k.b, k.n), MQ_ERR_TRUNCATED); /* no property length */
    /* Subscription Identifier: not 0, not twice (3.8.2.1.2); multi-byte values are fine */
    k = PKT(0x82, 0, 1, 2, 0x0B, 0x00, 0, 1, 't', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_PROPERTY_VALUE);
    k = PKT(0x82, 0, 1, 4, 0x0B, 0x01, 0x0B, 0x02, 0, 1, 't', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_DUPLICATE_PROPERTY);
    k = PKT(0x82, 0, 1, 3, 0x0B, 0x81, 0x00, 0, 1, 't', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_BAD_VARINT); /* not in its shortest form */
    k = PKT(0x82, 0, 1, 5, 0x0B, 0x80, 0x80, 0x80, 0x01, 0, 1, 't', 0);
    valid5(k.b, k.n, &p);
    assert_int_equal(p.props.subscription_id, 2097152);
    k = PKT(0x82, 0, 1, 3, 0x1F, 0, 0, 0, 1, 't', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_PROPERTY_NOT_ALLOWED); /* reason string */
    assert_err(err5(BYTES(0x80, 5, 0, 1, 0, 0, 0)), MQ_ERR_BAD_FLAGS);
}

static void test_unsubscribe5(void **state)
{
    (void)state;
    struct mq_packet p;
    struct pk k = PKT(0xA2, 0x01, 0x00, 5, 0x26, 0, 0, 0, 0, 0, 3, 'a', '/', '#', 0, 2, '+', '/');
    valid5(k.b, k.n, &p);
    assert_int_equal(p.type, MQ_UNSUBSCRIBE);
    const struct mq_topic_list *l = &p.u.subscribe;
    assert_int_equal(l->packet_id, 256);
    assert_int_equal(l->count, 2);
    assert_false(l->with_qos);
    struct mq_topic_iter it = {l, 0};
    struct mq_bytes f;
    uint8_t o = 9;
    assert_true(codec_topic_list_next(&it, &f, &o));
    assert_true(bytes_is(f, "a/#"));
    assert_int_equal(o, 0);
    assert_true(codec_topic_list_next(&it, &f, &o));
    assert_false(codec_topic_list_next(&it, &f, &o));
    k = PKT(0xA2, 0, 1, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_EMPTY_SUBSCRIBE);
    k = PKT(0xA2, 0, 1, 2, 0x0B, 1, 0, 1, 't');
    assert_err(err5(k.b, k.n), MQ_ERR_PROPERTY_NOT_ALLOWED); /* only user properties */
    k = PKT(0xA2, 0, 1, 0, 0, 1, 't', 0);
    assert_err(err5(k.b, k.n), MQ_ERR_TRUNCATED); /* no options byte in UNSUBSCRIBE */
}

static void test_suback_unsuback5(void **state)
{
    (void)state;
    struct mq_packet p;
    struct pk k = PKT(0x90, 0, 9, 5, 0x1F, 0, 2, 'o', 'k', 0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F,
                      0x91, 0x97, 0x9E, 0xA1, 0xA2);
    valid5(k.b, k.n, &p);
    assert_int_equal(p.type, MQ_SUBACK);
    assert_int_equal(p.u.suback.packet_id, 9);
    assert_int_equal(p.u.suback.count, 12);
    assert_int_equal(p.u.suback.codes[11], MQ_RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
    assert_true(bytes_is(p.props.reason_string, "ok"));

    k = PKT(0xB0, 0, 9, 0, 0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91);
    valid5(k.b, k.n, &p);
    assert_int_equal(p.type, MQ_UNSUBACK);
    assert_int_equal(p.u.suback.packet_id, 9);
    assert_int_equal(p.u.packet_id, 9);
    assert_int_equal(p.u.suback.count, 7);
    assert_int_equal(p.u.suback.codes[1], MQ_RC_NO_SUBSCRIPTION_EXISTED);

    for (unsigned c = 0; c < 256; c++) {
        struct pk s = PKT(0x90, 0, 1, 0, (uint8_t)c), u = PKT(0xB0, 0, 1, 0, (uint8_t)c);
        assert_err(err5(s.b, s.n),
                   codec_reason_allowed(MQ_SUBACK, (uint8_t)c) ? 6 : MQ_ERR_BAD_REASON_CODE);
        assert_err(err5(u.b, u.n),
                   codec_reason_allowed(MQ_UNSUBACK, (uint8_t)c) ? 6 : MQ_ERR_BAD_REASON_CODE);
    }
    k = PKT(0x90, 0, 1, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_TRUNCATED); /* one code per filter, at least one */
    k = PKT(0xB0, 0, 1, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_TRUNCATED);
    k = PKT(0x90, 0, 1, 2, 0x0B, 1, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_PROPERTY_NOT_ALLOWED);
    k = PKT(0x90, 0, 0, 0, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_PACKET_ID_ZERO);
    /* a 3.1.1 UNSUBACK (remaining length 2) is too short for MQTT 5 */
    assert_err(err5(BYTES(0xB0, 2, 0, 1)), MQ_ERR_TRUNCATED);
}

/* ---- PINGREQ, PINGRESP, DISCONNECT, AUTH -------------------------------------------------- */

static void test_ping5(void **state)
{
    (void)state;
    struct mq_packet p;
    valid5(BYTES(0xC0, 0), &p);
    assert_int_equal(p.type, MQ_PINGREQ);
    valid5(BYTES(0xD0, 0), &p);
    assert_int_equal(p.type, MQ_PINGRESP);
    assert_err(err5(BYTES(0xC0, 1, 0)), MQ_ERR_MALFORMED);
    assert_err(err5(BYTES(0xD0, 1)), MQ_ERR_MALFORMED); /* judged from the fixed header */
    assert_err(err5(BYTES(0xC1, 0)), MQ_ERR_BAD_FLAGS);
}

static void test_disconnect5(void **state)
{
    (void)state;
    struct mq_packet p;
    valid5(BYTES(0xE0, 0), &p);
    assert_int_equal(p.type, MQ_DISCONNECT);
    assert_int_equal(p.u.disconnect.reason, 0);
    assert_int_equal(p.omitted, MQ_OMIT_REASON_AND_PROPERTIES);
    valid5(BYTES(0xE0, 1, 0x04), &p);
    assert_int_equal(p.u.disconnect.reason, MQ_RC_DISCONNECT_WITH_WILL);
    assert_int_equal(p.omitted, MQ_OMIT_PROPERTIES);
    valid5(BYTES(0xE0, 2, 0x00, 0x00), &p);
    assert_int_equal(p.omitted, MQ_OMIT_NONE);
    struct pk k = PKT(0xE0, 0x9C, 18, 0x11, 0, 0, 0, 0, 0x1C, 0, 4, 'h', 'o', 's', 't', 0x1F, 0, 3,
                      'b', 'y', 'e', 0x26, 0, 0, 0, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_TRAILING); /* the block says 18 bytes, 23 follow */
    k = PKT(0xE0, 0x9C, 23, 0x11, 0, 0, 0, 0, 0x1C, 0, 4, 'h', 'o', 's', 't', 0x1F, 0, 3, 'b', 'y',
            'e', 0x26, 0, 0, 0, 0);
    valid5(k.b, k.n, &p);
    assert_int_equal(p.u.disconnect.reason, MQ_RC_USE_ANOTHER_SERVER);
    assert_true(codec_props_has(&p.props, MQ_PROP_SESSION_EXPIRY));
    assert_int_equal(p.props.session_expiry, 0);
    assert_true(bytes_is(p.props.server_reference, "host"));
    assert_true(bytes_is(p.props.reason_string, "bye"));

    unsigned ok = 0;
    for (unsigned c = 0; c < 256; c++) {
        int rc = err5(BYTES(0xE0, 1, (uint8_t)c));
        if (rc == 3)
            ok++;
        else
            assert_err(rc, MQ_ERR_BAD_REASON_CODE);
    }
    assert_int_equal(ok, 29); /* 3.14.2.1 */
    assert_err(err5(BYTES(0xE0, 3, 0, 0, 0)), MQ_ERR_TRAILING);
    assert_err(err5(BYTES(0xE0, 4, 0, 2, 0x01, 0)), MQ_ERR_PROPERTY_NOT_ALLOWED);
    assert_err(err5(BYTES(0xE1, 0)), MQ_ERR_BAD_FLAGS); /* [MQTT-3.14.1-1] */
}

static void test_auth5(void **state)
{
    (void)state;
    struct mq_packet p;
    valid5(BYTES(0xF0, 0), &p);
    assert_int_equal(p.type, MQ_AUTH);
    assert_int_equal(p.u.auth.reason, 0);
    assert_int_equal(p.omitted, MQ_OMIT_REASON_AND_PROPERTIES);
    struct pk k = PKT(0xF0, 0x18, 23, 0x15, 0, 5, 'S', 'C', 'R', 'A', 'M', 0x16, 0, 3, 1, 2, 3,
                      0x1F, 0, 1, '?', 0x26, 0, 0, 0, 0);
    valid5(k.b, k.n, &p);
    assert_int_equal(p.u.auth.reason, MQ_RC_CONTINUE_AUTHENTICATION);
    assert_true(bytes_is(p.props.auth_method, "SCRAM"));
    assert_int_equal(p.props.auth_data.len, 3);
    k = PKT(0xF0, 0x19, 4, 0x15, 0, 1, 'M');
    valid5(k.b, k.n, &p);
    assert_int_equal(p.u.auth.reason, MQ_RC_REAUTHENTICATE);
    k = PKT(0xF0, 0x00, 4, 0x15, 0, 1, 'M');
    valid5(k.b, k.n, &p);

    /* 3.15.2.2.2: the Authentication Method may not be left out */
    assert_err(err5(BYTES(0xF0, 2, 0x18, 0)), MQ_ERR_AUTH_METHOD);
    assert_err(err5(BYTES(0xF0, 2, 0x00, 0)), MQ_ERR_AUTH_METHOD);
    assert_err(err5(BYTES(0xF0, 6, 0x18, 4, 0x16, 0, 1, 'D')), MQ_ERR_AUTH_METHOD);
    /* only the whole variable header may be left off: a reason alone is too short */
    assert_err(err5(BYTES(0xF0, 1, 0x18)), MQ_ERR_TRUNCATED);
    for (unsigned c = 0; c < 256; c++) {
        k = PKT(0xF0, (uint8_t)c, 4, 0x15, 0, 1, 'M');
        bool ok = c == 0x00 || c == 0x18 || c == 0x19;
        assert_err(err5(k.b, k.n), ok ? 8 : MQ_ERR_BAD_REASON_CODE);
        assert_int_equal(codec_reason_allowed(MQ_AUTH, (uint8_t)c), ok);
    }
    k = PKT(0xF0, 0x18, 6, 0x15, 0, 1, 'M', 0x11, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_TRUNCATED);
    k = PKT(0xF0, 0x18, 9, 0x15, 0, 1, 'M', 0x11, 0, 0, 0, 0);
    assert_err(err5(k.b, k.n), MQ_ERR_PROPERTY_NOT_ALLOWED);
    k = PKT(0xF0, 0x18, 8, 0x15, 0, 1, 'M', 0x15, 0, 1, 'N');
    assert_err(err5(k.b, k.n), MQ_ERR_DUPLICATE_PROPERTY);
    assert_err(err5(BYTES(0xF1, 0)), MQ_ERR_BAD_FLAGS); /* [MQTT-3.15.1-1] */
    /* AUTH does not exist before MQTT 5: a reserved type, from its first byte on. */
    static const struct mq_decode_limits at3 = {.protocol_level = 3}, at4 = {.protocol_level = 4};
    assert_err(codec_decode(BYTES(0xF0), NULL, &p), MQ_ERR_BAD_TYPE);
    assert_err(codec_decode(BYTES(0xF0, 0), &at3, &p), MQ_ERR_BAD_TYPE);
    assert_err(codec_decode(BYTES(0xF0, 0), &at4, &p), MQ_ERR_BAD_TYPE);
    assert_err(err5(BYTES(0x00, 0)), MQ_ERR_BAD_TYPE);
}

/* ---- properties: placement, repetition, values, types ------------------------------------ */

/* The "Used in" column of the table in 2.2.2.2, written out again here from the standard
 * so that a slip in props.c's table cannot hide behind itself. */
static const struct {
    uint8_t id;
    const char *where;
} placement[] = {
    {0x01, "PUBLISH WILL"},
    {0x02, "PUBLISH WILL"},
    {0x03, "PUBLISH WILL"},
    {0x08, "PUBLISH WILL"},
    {0x09, "PUBLISH WILL"},
    {0x0B, "PUBLISH SUBSCRIBE"},
    {0x11, "CONNECT CONNACK DISCONNECT"},
    {0x12, "CONNACK"},
    {0x13, "CONNACK"},
    {0x15, "CONNECT CONNACK AUTH"},
    {0x16, "CONNECT CONNACK AUTH"},
    {0x17, "CONNECT"},
    {0x18, "WILL"},
    {0x19, "CONNECT"},
    {0x1A, "CONNACK"},
    {0x1C, "CONNACK DISCONNECT"},
    {0x1F, "CONNACK PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK DISCONNECT AUTH"},
    {0x21, "CONNECT CONNACK"},
    {0x22, "CONNECT CONNACK"},
    {0x23, "PUBLISH"},
    {0x24, "CONNACK"},
    {0x25, "CONNACK"},
    {0x26, "CONNECT CONNACK PUBLISH WILL PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE SUBACK "
           "UNSUBSCRIBE UNSUBACK DISCONNECT AUTH"},
    {0x27, "CONNECT CONNACK"},
    {0x28, "CONNACK"},
    {0x29, "CONNACK"},
    {0x2A, "CONNACK"},
};

static const char *where_name(unsigned where)
{
    return where == MQ_PROPS_WILL ? "WILL" : codec_type_name(where);
}

static bool listed(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

/* One property with a value every rule accepts. */
static size_t sample_prop(uint8_t id, uint8_t *out, size_t cap)
{
    struct mq_prop_writer w;
    codec_prop_writer_init(&w, out, cap);
    switch (codec_prop_type(id)) {
    case MQ_PROPT_BYTE: codec_prop_put_u8(&w, id, 1); break;
    case MQ_PROPT_U16: codec_prop_put_u16(&w, id, 5); break;
    case MQ_PROPT_U32: codec_prop_put_u32(&w, id, 5); break;
    case MQ_PROPT_VARINT: codec_prop_put_varint(&w, id, 5); break;
    case MQ_PROPT_UTF8:
    case MQ_PROPT_BINARY: codec_prop_put_bytes(&w, id, "a/b", 3); break;
    case MQ_PROPT_PAIR: codec_prop_put_pair(&w, "k", 1, "v", 1); break;
    case MQ_PROPT_NONE: fail_msg("no sample for 0x%02x", id);
    }
    assert_true(codec_prop_writer_ok(&w));
    return w.len;
}

static void test_props_placement(void **state)
{
    (void)state;
    assert_int_equal(sizeof placement / sizeof placement[0], 27); /* every property of 2.2.2.2 */
    for (size_t i = 0; i < sizeof placement / sizeof placement[0]; i++) {
        uint8_t id = placement[i].id;
        uint8_t one[64], block[96];
        size_t n = sample_prop(id, one, sizeof one);
        for (unsigned where = 0; where < 16; where++) {
            bool ok = where != MQ_PINGREQ && where != MQ_PINGRESP &&
                      listed(placement[i].where, where_name(where));
            struct mq_props props;
            int rc = codec_props_parse(where, one, n, &props);
            int want = ok ? 0 : MQ_ERR_PROPERTY_NOT_ALLOWED;
            if (ok && where == MQ_CONNECT && id == MQ_PROP_AUTH_DATA)
                want = MQ_ERR_AUTH_METHOD; /* allowed, but not without the method */
            if (rc != want)
                fail_msg("0x%02x in %s: %s, want %s", id, where_name(where), mq_err_name(rc),
                         mq_err_name(want));
            if (rc == 0) {
                assert_int_equal(props.present, MQ_PROP_BIT(id));
                assert_ptr_equal(props.raw, one);
                assert_int_equal(props.raw_len, n);
            }
            if (where == 0 || where == MQ_PINGREQ || where == MQ_PINGRESP)
                continue;
            /* The same in a whole packet; AUTH also needs its method. */
            size_t bn = 0;
            if (where == MQ_AUTH && id != MQ_PROP_AUTH_METHOD)
                bn = sample_prop(MQ_PROP_AUTH_METHOD, block, sizeof block);
            memcpy(block + bn, one, n);
            struct pk k = with_props(where, block, bn + n);
            rc = err5(k.b, k.n);
            if (rc != (want ? want : (int)k.n))
                fail_msg("0x%02x in a %s packet: %s", id, where_name(where), mq_err_name(rc));
        }
        /* and in the will of a CONNECT */
        struct pk k = with_props(MQ_PROPS_WILL, one, n);
        int rc = err5(k.b, k.n);
        assert_err(rc, listed(placement[i].where, "WILL") ? (int)k.n : MQ_ERR_PROPERTY_NOT_ALLOWED);
    }
    /* Identifiers MQTT 5 does not define are refused everywhere. */
    static const uint8_t unknown[] = {0x00, 0x04, 0x05, 0x0A, 0x0C, 0x10, 0x14, 0x1B,
                                      0x1D, 0x1E, 0x20, 0x2B, 0x3F, 0x7F, 0x80, 0xFF};
    for (size_t i = 0; i < sizeof unknown; i++) {
        uint8_t b[4] = {unknown[i], 0, 0, 0};
        struct mq_props props;
        for (unsigned where = 0; where < 16; where++)
            assert_err(codec_props_parse(where, b, sizeof b, &props), MQ_ERR_PROPERTY_NOT_ALLOWED);
        assert_int_equal(codec_prop_type(unknown[i]), MQ_PROPT_NONE);
        assert_string_equal(codec_prop_name(unknown[i]), "unknown property");
    }
    struct mq_props props;
    assert_err(codec_props_parse(16, (const uint8_t *)"\x26\0\0\0\0", 5, &props),
               MQ_ERR_PROPERTY_NOT_ALLOWED);
    assert_err(codec_props_parse(MQ_PINGREQ, NULL, 0, &props), 0); /* an empty block is fine */
}

static void test_props_duplicates(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof placement / sizeof placement[0]; i++) {
        uint8_t id = placement[i].id;
        uint8_t block[128];
        size_t n = sample_prop(id, block, 64);
        memcpy(block + n, block, n);
        for (unsigned where = 0; where < 16; where++) {
            if (where == MQ_PINGREQ || where == MQ_PINGRESP ||
                !listed(placement[i].where, where_name(where)))
                continue;
            struct mq_props props;
            int rc = codec_props_parse(where, block, 2 * n, &props);
            /* User Property repeats anywhere; Subscription Identifier in a PUBLISH (a server
             * sends one per matching subscription); everything else is a Protocol Error. */
            bool repeats = id == MQ_PROP_USER || (id == MQ_PROP_SUBSCRIPTION_ID && where == 3);
            int want = repeats ? 0 : MQ_ERR_DUPLICATE_PROPERTY;
            if (rc != want)
                fail_msg("0x%02x twice in %s: %s", id, where_name(where), mq_err_name(rc));
            if (repeats) {
                assert_int_equal(props.present, MQ_PROP_BIT(id));
                assert_int_equal(id == MQ_PROP_USER ? props.user_count : props.sub_id_count, 2);
            } else {
                assert_true(codec_props_has(&props, (enum mq_prop_id)id)); /* the first stays */
            }
        }
    }
}

static int parse_in(unsigned where, const uint8_t *b, size_t n)
{
    struct mq_props props;
    return codec_props_parse(where, b, n, &props);
}

#define PARSE(where, ...) parse_in((where), BYTES(__VA_ARGS__))

static void test_props_values(void **state)
{
    (void)state;
    /* byte properties that are 0 or 1 */
    static const struct {
        uint8_t id;
        unsigned where;
    } booleans[] = {{0x01, MQ_PUBLISH}, {0x01, MQ_PROPS_WILL}, {0x17, MQ_CONNECT},
                    {0x19, MQ_CONNECT}, {0x24, MQ_CONNACK},    {0x25, MQ_CONNACK},
                    {0x28, MQ_CONNACK}, {0x29, MQ_CONNACK},    {0x2A, MQ_CONNACK}};
    for (size_t i = 0; i < sizeof booleans / sizeof booleans[0]; i++) {
        for (unsigned v = 0; v < 256; v++) {
            uint8_t b[2] = {booleans[i].id, (uint8_t)v};
            struct mq_props props;
            int rc = codec_props_parse(booleans[i].where, b, 2, &props);
            assert_err(rc, v <= 1 ? 0 : MQ_ERR_PROPERTY_VALUE);
            assert_int_equal(props.present, v <= 1 ? MQ_PROP_BIT(b[0]) : 0);
        }
    }
    /* Receive Maximum and Maximum Packet Size are never 0; Topic Alias Maximum may be. */
    assert_err(PARSE(MQ_CONNECT, 0x21, 0, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_CONNACK, 0x21, 0, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_CONNECT, 0x21, 0xFF, 0xFF), 0);
    assert_err(PARSE(MQ_CONNECT, 0x27, 0, 0, 0, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_CONNACK, 0x27, 0, 0, 0, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_CONNECT, 0x27, 0xFF, 0xFF, 0xFF, 0xFF), 0);
    assert_err(PARSE(MQ_CONNECT, 0x22, 0, 0), 0);
    assert_err(PARSE(MQ_CONNACK, 0x13, 0, 0), 0);
    assert_err(PARSE(MQ_CONNECT, 0x11, 0xFF, 0xFF, 0xFF, 0xFF), 0);
    assert_err(PARSE(MQ_PUBLISH, 0x02, 0, 0, 0, 0), 0);
    assert_err(PARSE(MQ_PROPS_WILL, 0x18, 0, 0, 0, 0), 0);
    /* Subscription Identifier 1..268,435,455, never 0 */
    assert_err(PARSE(MQ_SUBSCRIBE, 0x0B, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_PUBLISH, 0x0B, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_SUBSCRIBE, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F), 0);
    assert_err(PARSE(MQ_SUBSCRIBE, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01), MQ_ERR_BAD_VARINT);
    /* Topic Alias 0 is answered 0x94 */
    assert_err(PARSE(MQ_PUBLISH, 0x23, 0, 0), MQ_ERR_TOPIC_ALIAS_ZERO);
    assert_err(PARSE(MQ_PUBLISH, 0x23, 0xFF, 0xFF), 0);
    /* Response Topic is a topic name, in a PUBLISH and in a will */
    assert_err(PARSE(MQ_PUBLISH, 0x08, 0, 3, 'a', '/', '+'), MQ_ERR_RESPONSE_TOPIC);
    assert_err(PARSE(MQ_PROPS_WILL, 0x08, 0, 1, '#'), MQ_ERR_RESPONSE_TOPIC);
    assert_err(PARSE(MQ_PROPS_WILL, 0x08, 0, 0), MQ_ERR_RESPONSE_TOPIC);
    assert_err(PARSE(MQ_PUBLISH, 0x08, 0, 3, '$', 'a', '/'), 0);
    /* Authentication Data needs Authentication Method in CONNECT (3.1.2.11.10), in any order */
    assert_err(PARSE(MQ_CONNECT, 0x16, 0, 1, 'd'), MQ_ERR_AUTH_METHOD);
    assert_err(PARSE(MQ_CONNECT, 0x16, 0, 1, 'd', 0x15, 0, 1, 'm'), 0);
    assert_err(PARSE(MQ_CONNECT, 0x15, 0, 1, 'm'), 0);
    /* The first error in block order wins. */
    assert_err(PARSE(MQ_CONNECT, 0x21, 0, 0, 0x21, 0, 0), MQ_ERR_PROPERTY_VALUE);
    assert_err(PARSE(MQ_CONNECT, 0x21, 0, 1, 0x21, 0, 0), MQ_ERR_DUPLICATE_PROPERTY);
    assert_err(PARSE(MQ_CONNECT, 0x24, 0, 0x21, 0, 0), MQ_ERR_PROPERTY_NOT_ALLOWED);
}

static void test_props_types(void **state)
{
    (void)state;
    /* values running past the block, per data type */
    assert_err(PARSE(MQ_PUBLISH, 0x01), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x23, 0), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x02, 0, 0, 0), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x0B), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x0B, 0x80), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x0B, 0x80, 0x80, 0x80, 0x80), MQ_ERR_BAD_VARINT);
    assert_err(PARSE(MQ_PUBLISH, 0x0B, 0x80, 0x00), MQ_ERR_BAD_VARINT);
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0, 2, 'a'), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x09, 0, 2, 'a'), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x26, 0, 1, 'a'), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x26, 0, 1, 'a', 0, 2, 'b'), MQ_ERR_TRUNCATED);
    assert_err(PARSE(MQ_PUBLISH, 0x26, 0, 1, 'a', 0), MQ_ERR_TRUNCATED);
    /* UTF-8 strings and string pairs obey 1.5.4 ([MQTT-1.5.4-1], [MQTT-1.5.4-2], [MQTT-1.5.7-1]) */
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0, 1, 0xFF), MQ_ERR_BAD_UTF8);
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0, 2, 'a', 0x00), MQ_ERR_UTF8_NULL);
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0, 3, 0xED, 0xA0, 0x80), MQ_ERR_UTF8_SURROGATE);
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0, 2, 0xC0, 0x80), MQ_ERR_BAD_UTF8); /* overlong NUL */
    assert_err(PARSE(MQ_PUBLISH, 0x26, 0, 1, 0x80, 0, 0), MQ_ERR_BAD_UTF8);
    assert_err(PARSE(MQ_PUBLISH, 0x26, 0, 0, 0, 1, 0x00), MQ_ERR_UTF8_NULL);
    assert_err(PARSE(MQ_PUBACK, 0x1F, 0, 1, 0xFE), MQ_ERR_BAD_UTF8);
    assert_err(PARSE(MQ_CONNACK, 0x12, 0, 1, 0x00), MQ_ERR_UTF8_NULL);
    assert_err(PARSE(MQ_CONNACK, 0x1A, 0, 1, 0xFF), MQ_ERR_BAD_UTF8);
    assert_err(PARSE(MQ_CONNACK, 0x1C, 0, 1, 0xFF), MQ_ERR_BAD_UTF8);
    assert_err(PARSE(MQ_AUTH, 0x15, 0, 1, 0xFF), MQ_ERR_BAD_UTF8);
    /* [MQTT-1.5.4-3]: U+FEFF is kept, not an error */
    assert_err(PARSE(MQ_PUBLISH, 0x03, 0, 3, 0xEF, 0xBB, 0xBF), 0);
    /* binary data is anything */
    assert_err(PARSE(MQ_PUBLISH, 0x09, 0, 3, 0xFF, 0x00, 0xC0), 0);
    assert_err(PARSE(MQ_CONNECT, 0x15, 0, 1, 'm', 0x16, 0, 2, 0x00, 0xFF), 0);
    assert_err(parse_in(MQ_PUBLISH, NULL, 0), 0);
}

static void test_prop_iterator(void **state)
{
    (void)state;
    static const uint8_t block[] = {
        0x01, 1,                                   /* byte */
        0x23, 0x01, 0x02,                          /* u16 */
        0x02, 0x01, 0x02, 0x03, 0x04,              /* u32 */
        0x0B, 0x80, 0x01,                          /* varint 128 */
        0x03, 0,    2,    'c',  't',               /* UTF-8 */
        0x09, 0,    1,    0xFF,                    /* binary */
        0x26, 0,    1,    'n',  0,    2, 'v', 'v', /* pair */
        0x04,                                      /* undefined: the iterator stops here */
    };
    struct mq_prop_iter it = codec_prop_iter(block, sizeof block);
    struct mq_prop p;
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.id, MQ_PROP_PAYLOAD_FORMAT);
    assert_int_equal(p.type, MQ_PROPT_BYTE);
    assert_int_equal(p.num, 1);
    assert_ptr_equal(p.raw, block);
    assert_int_equal(p.raw_len, 2);
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.type, MQ_PROPT_U16);
    assert_int_equal(p.num, 0x0102);
    assert_int_equal(p.raw_len, 3);
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.type, MQ_PROPT_U32);
    assert_int_equal(p.num, 0x01020304);
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.type, MQ_PROPT_VARINT);
    assert_int_equal(p.num, 128);
    assert_int_equal(p.raw_len, 3);
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.type, MQ_PROPT_UTF8);
    assert_true(bytes_is(p.str, "ct"));
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.type, MQ_PROPT_BINARY);
    assert_int_equal(p.str.len, 1);
    assert_int_equal(codec_prop_next(&it, &p), 1);
    assert_int_equal(p.type, MQ_PROPT_PAIR);
    assert_true(bytes_is(p.str, "n"));
    assert_true(bytes_is(p.value, "vv"));
    assert_ptr_equal(p.raw, block + 22);
    assert_int_equal(p.raw_len, 8);
    const uint8_t *at = it.p;
    assert_err(codec_prop_next(&it, &p), MQ_ERR_PROPERTY_NOT_ALLOWED);
    assert_ptr_equal(it.p, at); /* an error does not move it */
    assert_err(codec_prop_next(&it, &p), MQ_ERR_PROPERTY_NOT_ALLOWED);
    it = codec_prop_iter(block, sizeof block - 1);
    int n = 0;
    while (codec_prop_next(&it, &p) > 0)
        n++;
    assert_int_equal(n, 7);
    assert_int_equal(codec_prop_next(&it, &p), 0);
    it = codec_prop_iter(NULL, 0);
    assert_int_equal(codec_prop_next(&it, &p), 0);

    assert_int_equal(codec_prop_type(MQ_PROP_USER), MQ_PROPT_PAIR);
    assert_int_equal(codec_prop_type(MQ_PROP_SUBSCRIPTION_ID), MQ_PROPT_VARINT);
    assert_int_equal(codec_prop_type(1000), MQ_PROPT_NONE);
    assert_string_equal(codec_prop_name(MQ_PROP_TOPIC_ALIAS), "Topic Alias");
    assert_string_equal(codec_prop_name(MQ_PROP_SHARED_SUB_AVAILABLE),
                        "Shared Subscription Available");
    for (size_t i = 0; i < sizeof placement / sizeof placement[0]; i++)
        assert_string_not_equal(codec_prop_name(placement[i].id), "unknown property");
}

static void test_prop_writer(void **state)
{
    (void)state;
    uint8_t buf[128];
    struct mq_prop_writer w;
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_u8(&w, MQ_PROP_MAXIMUM_QOS, 1);
    codec_prop_put_u16(&w, MQ_PROP_RECEIVE_MAXIMUM, 0x0102);
    codec_prop_put_u32(&w, MQ_PROP_MAXIMUM_PACKET_SIZE, 0x01020304);
    codec_prop_put_bytes(&w, MQ_PROP_REASON_STRING, "ok", 2);
    codec_prop_put_bytes(&w, MQ_PROP_AUTH_METHOD, "M", 1);
    codec_prop_put_bytes(&w, MQ_PROP_AUTH_DATA, "\x00\xFF", 2);
    codec_prop_put_pair(&w, "k", 1, "", 0);
    assert_true(codec_prop_writer_ok(&w));
    static const uint8_t want[] = {0x24, 1, 0x21, 1,    2,    0x27, 1, 2,   3,   4,
                                   0x1F, 0, 2,    'o',  'k',  0x15, 0, 1,   'M', 0x16,
                                   0,    2, 0x00, 0xFF, 0x26, 0,    1, 'k', 0,   0};
    assert_int_equal(w.len, sizeof want);
    assert_memory_equal(buf, want, sizeof want);
    struct mq_props props;
    assert_err(codec_props_parse(MQ_CONNACK, buf, w.len, &props), 0);
    assert_int_equal(props.maximum_packet_size, 0x01020304);

    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_varint(&w, MQ_PROP_SUBSCRIPTION_ID, 300);
    codec_prop_put_varint(&w, MQ_PROP_SUBSCRIPTION_ID, MQ_MAX_REMAINING_LENGTH);
    assert_true(codec_prop_writer_ok(&w));
    assert_int_equal(w.len, 3 + 5);
    assert_memory_equal(buf, "\x0B\xAC\x02\x0B\xFF\xFF\xFF\x7F", 8);

    /* the data type must match the put function; nothing is appended when it does not */
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_u8(&w, MQ_PROP_RECEIVE_MAXIMUM, 1);
    assert_true(w.invalid);
    assert_int_equal(w.len, 0);
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_u16(&w, (enum mq_prop_id)0x05, 1);
    assert_true(w.invalid && w.len == 0);
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_bytes(&w, MQ_PROP_USER, "x", 1);
    assert_true(w.invalid && w.len == 0);
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_u32(&w, MQ_PROP_TOPIC_ALIAS, 1);
    assert_true(w.invalid && w.len == 0);
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_varint(&w, MQ_PROP_SUBSCRIPTION_ID, MQ_MAX_REMAINING_LENGTH + 1);
    assert_true(w.invalid && w.len == 0);
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_varint(&w, MQ_PROP_MESSAGE_EXPIRY, 1);
    assert_true(w.invalid && w.len == 0);
    static uint8_t big[65536];
    codec_prop_writer_init(&w, buf, sizeof buf);
    codec_prop_put_bytes(&w, MQ_PROP_CONTENT_TYPE, big, sizeof big);
    assert_true(w.invalid && !w.overflow && w.len == 0);
    codec_prop_put_pair(&w, big, 1, big, sizeof big);
    codec_prop_put_pair(&w, big, sizeof big, big, 1);
    codec_prop_put_bytes(&w, MQ_PROP_CONTENT_TYPE, NULL, 1);
    assert_int_equal(w.len, 0);
    assert_false(codec_prop_writer_ok(&w));

    /* overflow: nothing past cap, nothing after the first miss, but len counts on */
    memset(buf, 0xEE, sizeof buf);
    codec_prop_writer_init(&w, buf, 10);
    codec_prop_put_bytes(&w, MQ_PROP_REASON_STRING, "hello", 5); /* 8 bytes: fits */
    assert_false(w.overflow);
    codec_prop_put_u32(&w, MQ_PROP_SESSION_EXPIRY, 7); /* 5 more: does not */
    assert_true(w.overflow);
    codec_prop_put_u8(&w, MQ_PROP_MAXIMUM_QOS, 0); /* 2 more: would fit, but after a miss */
    assert_int_equal(w.len, 8 + 5 + 2);
    assert_false(w.invalid);
    assert_false(codec_prop_writer_ok(&w));
    for (size_t i = 8; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0xEE);
    /* so a writer without a buffer measures */
    codec_prop_writer_init(&w, NULL, 0);
    codec_prop_put_bytes(&w, MQ_PROP_REASON_STRING, "hello", 5);
    codec_prop_put_pair(&w, "a", 1, "b", 1);
    assert_true(w.overflow);
    assert_int_equal(w.len, 8 + 7);

    /* forwarding verbatim: copy what the iterator read */
    static const uint8_t in[] = {0x23, 0, 9,   0x26, 0,    1,    'a', 0, 1,   'b', 0x03,
                                 0,    1, 'x', 0x0B, 0x07, 0x26, 0,   1, 'c', 0,   0};
    struct mq_prop_iter it = codec_prop_iter(in, sizeof in);
    struct mq_prop p;
    codec_prop_writer_init(&w, buf, sizeof buf);
    while (codec_prop_next(&it, &p) > 0)
        if (p.id == MQ_PROP_USER || p.id == MQ_PROP_CONTENT_TYPE)
            codec_prop_put_raw(&w, &p);
    assert_true(codec_prop_writer_ok(&w));
    static const uint8_t fwd[] = {0x26, 0,   1,    'a', 0, 1,   'b', 0x03, 0,
                                  1,    'x', 0x26, 0,   1, 'c', 0,   0};
    assert_int_equal(w.len, sizeof fwd);
    assert_memory_equal(buf, fwd, sizeof fwd);
    struct mq_prop bogus = {.id = 0x26, .raw = (const uint8_t *)"\x03", .raw_len = 1};
    codec_prop_put_raw(&w, &bogus);
    assert_true(w.invalid);
}

/* ---- reason codes ------------------------------------------------------------------------- */

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(codec_reason_name(0x00), "success");
    assert_string_equal(codec_reason_name(0x87), "not authorized");
    assert_string_equal(codec_reason_name(0x8E), "session taken over");
    assert_string_equal(codec_reason_name(0x95), "packet too large");
    assert_string_equal(codec_reason_name(0x04), "disconnect with will message");
    assert_string_equal(codec_reason_name(0x03), "unknown reason code");
    assert_string_equal(codec_reason_name(0xA3), "unknown reason code");
    assert_string_equal(codec_reason_name(0xFF), "unknown reason code");
    /* every code some packet may carry has words, and only those (2.4) */
    unsigned named = 0;
    for (unsigned c = 0; c < 256; c++) {
        bool used = false;
        for (unsigned t = 0; t < 16; t++)
            used = used || codec_reason_allowed(t, (uint8_t)c);
        bool has = strcmp(codec_reason_name((uint8_t)c), "unknown reason code") != 0;
        assert_int_equal(used, has);
        named += has;
    }
    assert_int_equal(named, 43);
}

static void test_reason_allowed(void **state)
{
    (void)state;
    /* how many codes each packet's table has */
    static const unsigned counts[16] = {[MQ_CONNACK] = 22, [MQ_PUBACK] = 9,      [MQ_PUBREC] = 9,
                                        [MQ_PUBREL] = 2,   [MQ_PUBCOMP] = 2,     [MQ_SUBACK] = 12,
                                        [MQ_UNSUBACK] = 7, [MQ_DISCONNECT] = 29, [MQ_AUTH] = 3};
    for (unsigned t = 0; t < 16; t++) {
        unsigned n = 0;
        for (unsigned c = 0; c < 256; c++)
            n += codec_reason_allowed(t, (uint8_t)c);
        assert_int_equal(n, counts[t]);
    }
    assert_false(codec_reason_allowed(99, 0));
    assert_true(codec_reason_allowed(MQ_CONNACK, MQ_RC_BAD_AUTHENTICATION_METHOD));
    assert_false(codec_reason_allowed(MQ_CONNACK, MQ_RC_SERVER_SHUTTING_DOWN));
    assert_true(codec_reason_allowed(MQ_DISCONNECT, MQ_RC_SERVER_SHUTTING_DOWN));
    assert_false(codec_reason_allowed(MQ_DISCONNECT, MQ_RC_BANNED));
    assert_true(codec_reason_allowed(MQ_SUBACK, MQ_RC_GRANTED_QOS2));
    assert_false(codec_reason_allowed(MQ_UNSUBACK, MQ_RC_GRANTED_QOS1));
    assert_true(codec_reason_allowed(MQ_PUBREC, MQ_RC_PAYLOAD_FORMAT_INVALID));
    assert_false(codec_reason_allowed(MQ_PUBREL, MQ_RC_NOT_AUTHORIZED));
}

/* Every error the project knows, with the reason code a server answers it with. Adding an
 * error to MQ_ERR_MAP fails this test until it is classified here. */
static void test_error_reason(void **state)
{
    (void)state;
    static const struct {
        int err;
        uint8_t reason;
    } map[] = {
        {MQ_ERR_NOMEM, 0x80},
        {MQ_ERR_INVAL, 0x80},
        {MQ_ERR_MALFORMED, 0x81},
        {MQ_ERR_BAD_TYPE, 0x81},
        {MQ_ERR_BAD_FLAGS, 0x81},
        {MQ_ERR_BAD_REMAINING_LENGTH, 0x81},
        {MQ_ERR_TOO_LARGE, 0x95},
        {MQ_ERR_CONNECT_TOO_LARGE, 0x95},
        {MQ_ERR_QOS3, 0x81},
        {MQ_ERR_PACKET_ID_ZERO, 0x82},
        {MQ_ERR_TRUNCATED, 0x81},
        {MQ_ERR_TRAILING, 0x81},
        {MQ_ERR_BAD_UTF8, 0x81},
        {MQ_ERR_UTF8_NULL, 0x81},
        {MQ_ERR_UTF8_SURROGATE, 0x81},
        {MQ_ERR_BAD_PROTOCOL_NAME, 0x84},
        {MQ_ERR_BAD_PROTOCOL_LEVEL, 0x84},
        {MQ_ERR_NO_CLIENT_ID, 0x85},
        {MQ_ERR_CONNECT_RESERVED, 0x81},
        {MQ_ERR_WILL_FLAGS, 0x81},
        {MQ_ERR_PASSWORD_WITHOUT_USER, 0x81},
        {MQ_ERR_EMPTY_SUBSCRIBE, 0x82},
        {MQ_ERR_SUBSCRIBE_RESERVED, 0x81},
        {MQ_ERR_EMPTY_TOPIC, 0x81},
        {MQ_ERR_WILDCARD_IN_TOPIC, 0x81},
        {MQ_ERR_BAD_FILTER, 0x81},
        {MQ_ERR_TOO_MANY_FILTERS, 0x81},
        {MQ_ERR_BAD_RETURN_CODE, 0x82},
        {MQ_ERR_BAD_VARINT, 0x81},
        {MQ_ERR_PROPERTY_NOT_ALLOWED, 0x81},
        {MQ_ERR_DUPLICATE_PROPERTY, 0x82},
        {MQ_ERR_PROPERTY_VALUE, 0x82},
        {MQ_ERR_TOPIC_ALIAS_ZERO, 0x94},
        {MQ_ERR_RESPONSE_TOPIC, 0x82},
        {MQ_ERR_AUTH_METHOD, 0x82},
        {MQ_ERR_BAD_REASON_CODE, 0x82},
        {MQ_ERR_EMPTY_TOPIC_NO_ALIAS, 0x82},
        {MQ_ERR_SUBSCRIBE_QOS3, 0x82},
        {MQ_ERR_RETAIN_HANDLING, 0x82},
        {MQ_ERR_NO_LOCAL_SHARED, 0x82},
        {MQ_ERR_FIRST_NOT_CONNECT, 0x82},
        {MQ_ERR_SECOND_CONNECT, 0x82},
        {MQ_ERR_UNEXPECTED_PACKET, 0x82},
        {MQ_ERR_UNKNOWN_PACKET_ID, 0x82},
        {MQ_ERR_IO, 0x80},
        {MQ_ERR_CONFIG, 0x80},
    };
    static const int all[] = {
#define XX(name, msg) MQ_ERR_##name,
        MQ_ERR_MAP(XX)
#undef XX
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        size_t j = 0;
        while (j < sizeof map / sizeof map[0] && map[j].err != all[i])
            j++;
        if (j == sizeof map / sizeof map[0])
            fail_msg("%s has no reason code in this test", mq_err_name(all[i]));
        if (codec_error_reason(all[i]) != map[j].reason)
            fail_msg("%s: 0x%02x, want 0x%02x", mq_err_name(all[i]), codec_error_reason(all[i]),
                     map[j].reason);
        /* the answer must be one a CONNACK and a DISCONNECT may carry, or 0x85 (CONNACK) */
        uint8_t r = map[j].reason;
        assert_true(codec_reason_allowed(MQ_CONNACK, r) || codec_reason_allowed(MQ_DISCONNECT, r));
    }
    assert_int_equal(codec_error_reason(0), 0x80);
    assert_int_equal(codec_error_reason(-1), 0x80);
}

/* ---- variable byte integers and the send-path helpers ------------------------------------- */

static void test_varint5(void **state)
{
    (void)state;
    static const uint32_t values[] = {
        0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MQ_MAX_REMAINING_LENGTH};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        uint8_t b[5];
        memset(b, 0xEE, sizeof b);
        unsigned n = codec_varint_write(values[i], b);
        assert_int_equal(n, codec_varint_size(values[i]));
        assert_int_equal(b[n], 0xEE);
        uint32_t v = 1;
        assert_int_equal(codec_varint_read(b, n, true, &v), (int)n);
        assert_int_equal(v, values[i]);
        for (unsigned k = 0; k < n; k++)
            assert_int_equal(codec_varint_read(b, k, true, &v), 0); /* incomplete */
    }
    uint8_t b[5];
    assert_int_equal(codec_varint_write(MQ_MAX_REMAINING_LENGTH + 1, b), 0);
    uint32_t v;
    assert_err(codec_varint_read(BYTES(0x80, 0x80, 0x80, 0x80, 0x01), true, &v), MQ_ERR_BAD_VARINT);
    assert_err(codec_varint_read(BYTES(0x80, 0x80, 0x80, 0x80), false, &v), MQ_ERR_BAD_VARINT);
    assert_err(codec_varint_read(BYTES(0x80, 0x00), true, &v), MQ_ERR_BAD_VARINT);
    assert_err(codec_varint_read(BYTES(0xFF, 0x80, 0x00), true, &v), MQ_ERR_BAD_VARINT);
    assert_err(codec_varint_read(BYTES(0x80, 0x00), false, &v), 2);
    assert_int_equal(v, 0);
    assert_err(codec_varint_read(BYTES(0x00), true, &v), 1);

    /* [MQTT-1.5.5-1]: the remaining length of an MQTT 5 packet is in its shortest form too;
     * MQTT 3.1.1 accepts the longer forms (test_codec.c). */
    assert_err(err5(BYTES(0x40, 0x82, 0x00, 0, 1)), MQ_ERR_BAD_VARINT);
    assert_err(err5(BYTES(0xC0, 0x80, 0x00)), MQ_ERR_BAD_VARINT);
    struct mq_packet p;
    assert_err(codec_decode(BYTES(0x40, 0x82, 0x00, 0, 1), NULL, &p), 5);
    /* codec_packet_size knows AUTH, which only MQTT 5 has */
    assert_int_equal(codec_packet_size(BYTES(0xF0, 0x81, 0x01)), 3 + 129);
    assert_int_equal(codec_packet_size(BYTES(0x00, 0x01)), 0);
}

static void test_publish5_header(void **state)
{
    (void)state;
    uint8_t props[64];
    struct mq_prop_writer w;
    codec_prop_writer_init(&w, props, sizeof props);
    codec_prop_put_varint(&w, MQ_PROP_SUBSCRIPTION_ID, 7);
    codec_prop_put_pair(&w, "k", 1, "v", 1);
    assert_true(codec_prop_writer_ok(&w));
    static const uint8_t aliased[] = {0x23, 0, 4};
    for (uint8_t qos = 0; qos <= 2; qos++) {
        for (int alias = 0; alias < 2; alias++) {
            const uint8_t *pb = alias ? aliased : props;
            uint32_t plen = alias ? (uint32_t)sizeof aliased : (uint32_t)w.len;
            const char *topic = alias ? "" : "a/b";
            uint16_t tl = (uint16_t)strlen(topic);
            uint8_t hdr[MQ_PUBLISH5_HEADER_MAX(3)];
            size_t n = codec_publish5_header(qos, qos > 0, true, (const uint8_t *)topic, tl,
                                             qos ? 0x0102 : 0, plen, 5, hdr);
            assert_true(n > 0 && n <= sizeof hdr);
            /* the same packet through codec_encode */
            struct mq_packet p = {.type = MQ_PUBLISH, .version = 5};
            p.u.publish = (struct mq_publish){.qos = qos,
                                              .dup = qos > 0,
                                              .retain = true,
                                              .topic = {(const uint8_t *)topic, tl},
                                              .packet_id = qos ? 0x0102 : 0,
                                              .payload = (const uint8_t *)"hello",
                                              .payload_len = 5};
            p.props.raw = pb;
            p.props.raw_len = plen;
            uint8_t enc[128], cat[128];
            long len = codec_encode(&p, enc, sizeof enc);
            assert_int_equal(len, (long)(n + plen + 5));
            memcpy(cat, hdr, n);
            memcpy(cat + n, pb, plen);
            memcpy(cat + n + plen, "hello", 5);
            assert_memory_equal(cat, enc, (size_t)len);
            struct mq_packet q;
            assert_int_equal(decode5(cat, (size_t)len, &q), (int)len);
            if (qos) {
                /* the packet id sits just before the property length */
                size_t at = n - 2 - codec_varint_size(plen);
                assert_int_equal(hdr[at] << 8 | hdr[at + 1], 0x0102);
            }
        }
    }
    uint8_t hdr[MQ_PUBLISH5_HEADER_MAX(1)];
    assert_int_equal(codec_publish5_header(3, false, false, (const uint8_t *)"t", 1, 1, 0, 0, hdr),
                     0);
    assert_int_equal(codec_publish5_header(0, true, false, (const uint8_t *)"t", 1, 0, 0, 0, hdr),
                     0);
    assert_int_equal(codec_publish5_header(0, false, false, (const uint8_t *)"t", 1, 0, 0,
                                           MQ_MAX_REMAINING_LENGTH - 3, hdr),
                     0);
    assert_int_equal(codec_publish5_header(0, false, false, (const uint8_t *)"t", 1, 0, 0,
                                           MQ_MAX_REMAINING_LENGTH - 4, hdr),
                     9);
    assert_int_equal(codec_publish5_header(0, false, false, (const uint8_t *)"t", 1, 0,
                                           MQ_MAX_REMAINING_LENGTH + 1, 0, hdr),
                     0);
}

static void test_ack5_header(void **state)
{
    (void)state;
    static const enum mq_packet_type types[] = {MQ_PUBACK,  MQ_PUBREC,     MQ_PUBREL,
                                                MQ_PUBCOMP, MQ_DISCONNECT, MQ_AUTH};
    static const uint8_t props[] = {0x1F, 0, 1, 'x'};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        enum mq_packet_type t = types[i];
        uint8_t code = t == MQ_PUBREL || t == MQ_PUBCOMP ? 0x92 : t == MQ_AUTH ? 0x18 : 0x80;
        if (t == MQ_PUBACK || t == MQ_PUBREC)
            code = 0x10;
        static const size_t plens[] = {0, sizeof props};
        for (int withcode = 0; withcode < 2; withcode++) {
            for (size_t j = 0; j < 2; j++) {
                uint8_t reason = withcode ? code : 0;
                uint32_t plen = (uint32_t)plens[j];
                uint8_t hdr[MQ_ACK5_HEADER_MAX], cat[64], enc[64];
                size_t n = codec_ack5_header(t, 0x0A0B, reason, plen, hdr);
                assert_true(n > 0 && n <= sizeof hdr);
                memcpy(cat, hdr, n);
                memcpy(cat + n, props, plen);
                struct mq_packet p;
                /* AUTH always names its method when it has properties */
                if (t == MQ_AUTH && (reason || plen))
                    continue;
                assert_int_equal(decode5(cat, n + plen, &p), (int)(n + plen));
                assert_int_equal(p.type, t);
                if (t != MQ_DISCONNECT && t != MQ_AUTH)
                    assert_int_equal(p.u.ack.packet_id, 0x0A0B);
                /* the shortest form the standard allows */
                int want = reason == 0 && plen == 0 ? MQ_OMIT_REASON_AND_PROPERTIES
                           : plen == 0              ? MQ_OMIT_PROPERTIES
                                                    : MQ_OMIT_NONE;
                assert_int_equal(p.omitted, want);
                assert_int_equal(codec_encode(&p, enc, sizeof enc), (long)(n + plen));
                assert_memory_equal(enc, cat, n + plen);
            }
        }
    }
    /* AUTH: no reason-only form */
    uint8_t hdr[MQ_ACK5_HEADER_MAX];
    assert_int_equal(codec_ack5_header(MQ_AUTH, 0, 0x18, 0, hdr), 4);
    assert_memory_equal(hdr, "\xF0\x02\x18\x00", 4);
    assert_int_equal(codec_ack5_header(MQ_AUTH, 0, 0, 0, hdr), 2);
    assert_int_equal(codec_ack5_header(MQ_PUBREL, 1, 0, 0, hdr), 4);
    assert_memory_equal(hdr, "\x62\x02\x00\x01", 4);
    assert_int_equal(codec_ack5_header(MQ_DISCONNECT, 0, 0x8E, 0, hdr), 3);
    assert_memory_equal(hdr, "\xE0\x01\x8E", 3);
    assert_int_equal(codec_ack5_header(MQ_PUBLISH, 1, 0, 0, hdr), 0);
    assert_int_equal(codec_ack5_header(MQ_SUBACK, 1, 0, 0, hdr), 0);
    assert_int_equal(codec_ack5_header(MQ_PUBACK, 1, 0, MQ_MAX_REMAINING_LENGTH, hdr), 0);
}

/* ---- encode --------------------------------------------------------------------------------- */

/* Packets built field by field (as tests, the bench and the fuzzers do) encode to what the
 * decoder reads back. */
static void test_encode5_from_fields(void **state)
{
    (void)state;
    uint8_t out[256];
    struct mq_packet p, q;
    static const uint8_t user[] = {0x26, 0, 1, 'k', 0, 1, 'v'};

    p = (struct mq_packet){.type = MQ_CONNECT, .version = 5};
    p.u.connect.client_id = (struct mq_bytes){(const uint8_t *)"c", 1};
    p.u.connect.keepalive = 10;
    p.u.connect.has_password = true;
    p.u.connect.password = (struct mq_bytes){(const uint8_t *)"pw", 2};
    p.u.connect.will_flag = true;
    p.u.connect.will_topic = (struct mq_bytes){(const uint8_t *)"w", 1};
    p.u.connect.will_props.raw = (const uint8_t *)"\x18\x00\x00\x00\x05";
    p.u.connect.will_props.raw_len = 5;
    p.props.raw = user;
    p.props.raw_len = sizeof user;
    long n = codec_encode(&p, out, sizeof out);
    static const uint8_t want[] = {0x10, 36, 0, 4,   'M', 'Q', 'T', 'T', 5, 0x44, 0,   10,   7,
                                   0x26, 0,  1, 'k', 0,   1,   'v', 0,   1, 'c',  5,   0x18, 0,
                                   0,    0,  5, 0,   1,   'w', 0,   0,   0, 2,    'p', 'w'};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(decode5(out, (size_t)n, &q), (int)n);
    assert_int_equal(q.u.connect.will_props.will_delay, 5);
    assert_int_equal(q.props.user_count, 1);

    p = (struct mq_packet){.type = MQ_CONNACK, .version = 5};
    p.u.connack.return_code = MQ_RC_NOT_AUTHORIZED;
    assert_int_equal(codec_encode(&p, out, sizeof out), 5);
    assert_memory_equal(out, "\x20\x03\x00\x87\x00", 5);

    p = (struct mq_packet){.type = MQ_PUBACK, .version = 5, .u.ack = {.packet_id = 5}};
    assert_int_equal(codec_encode(&p, out, sizeof out), 6); /* omitted 0: the long form */
    assert_memory_equal(out, "\x40\x04\x00\x05\x00\x00", 6);
    p.omitted = MQ_OMIT_REASON_AND_PROPERTIES;
    assert_int_equal(codec_encode(&p, out, sizeof out), 4);
    assert_memory_equal(out, "\x40\x02\x00\x05", 4);

    static const uint8_t codes[] = {0x00, 0x11};
    p = (struct mq_packet){.type = MQ_UNSUBACK, .version = 5};
    p.u.suback = (struct mq_suback){.packet_id = 3, .count = 2, .codes = codes};
    assert_int_equal(codec_encode(&p, out, sizeof out), 7);
    assert_memory_equal(out, "\xB0\x05\x00\x03\x00\x00\x11", 7);

    static const uint8_t entries[] = {0, 1, 'a', 0x2E};
    p = (struct mq_packet){.type = MQ_SUBSCRIBE, .version = 5};
    p.u.subscribe = (struct mq_topic_list){
        .packet_id = 1, .count = 1, .entries = entries, .entries_len = 4, .with_qos = true};
    p.props.raw = (const uint8_t *)"\x0B\x01";
    p.props.raw_len = 2;
    assert_int_equal(codec_encode(&p, out, sizeof out), 11);
    assert_memory_equal(out, "\x82\x09\x00\x01\x02\x0B\x01\x00\x01\x61\x2E", 11);

    p = (struct mq_packet){.type = MQ_DISCONNECT, .version = 5, .u.disconnect = {0x8E}};
    p.omitted = MQ_OMIT_PROPERTIES;
    assert_int_equal(codec_encode(&p, out, sizeof out), 3);
    p = (struct mq_packet){.type = MQ_AUTH, .version = 5, .u.auth = {0x18}};
    p.props.raw = (const uint8_t *)"\x15\x00\x01M";
    p.props.raw_len = 4;
    assert_int_equal(codec_encode(&p, out, sizeof out), 8);
    assert_memory_equal(out, "\xF0\x06\x18\x04\x15\x00\x01M", 8);
    p = (struct mq_packet){.type = MQ_PINGREQ, .version = 5};
    assert_int_equal(codec_encode(&p, out, sizeof out), 2);
}

static void test_encode5_rejects(void **state)
{
    (void)state;
    uint8_t out[128];
    struct mq_packet p;
#define EXPECT_INVAL(pkt) assert_err(codec_encode(&(pkt), out, sizeof out), MQ_ERR_INVAL)
    p = (struct mq_packet){.type = MQ_PINGREQ, .version = 6};
    EXPECT_INVAL(p);
    p.version = 2;
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = 0, .version = 5};
    EXPECT_INVAL(p);
    p.type = 16;
    EXPECT_INVAL(p);
    /* properties where there is no block, or that do not belong, or without bytes */
    p = (struct mq_packet){.type = MQ_PINGRESP, .version = 5};
    p.props.raw = (const uint8_t *)"\x26\0\0\0\0";
    p.props.raw_len = 5;
    EXPECT_INVAL(p);
    p.type = MQ_DISCONNECT;
    assert_int_equal(codec_encode(&p, out, sizeof out), 9);
    p.type = MQ_UNSUBSCRIBE;
    p.props.raw = (const uint8_t *)"\x1F\0\0";
    p.props.raw_len = 3;
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_CONNACK, .version = 5};
    p.props.raw_len = 3;
    EXPECT_INVAL(p);
    p.props.raw = (const uint8_t *)"\x21\0\0"; /* Receive Maximum 0 */
    EXPECT_INVAL(p);
    /* reason codes */
    p = (struct mq_packet){.type = MQ_CONNACK, .version = 5, .u.connack = {false, 0x05}};
    EXPECT_INVAL(p);
    p.u.connack = (struct mq_connack){true, 0x80};
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_PUBREL, .version = 5, .u.ack = {1, 0x10}};
    EXPECT_INVAL(p);
    p.u.ack.reason = 0x92;
    assert_int_equal(codec_encode(&p, out, sizeof out), 6);
    static const uint8_t bad[] = {0x00, 0x05};
    p = (struct mq_packet){.type = MQ_SUBACK, .version = 5};
    p.u.suback = (struct mq_suback){.packet_id = 1, .count = 2, .codes = bad};
    EXPECT_INVAL(p);
    p.u.suback.count = 1;
    assert_int_equal(codec_encode(&p, out, sizeof out), 6);
    p.u.suback.count = 0;
    EXPECT_INVAL(p);
    /* the short forms */
    p = (struct mq_packet){.type = MQ_PUBACK, .version = 5, .u.ack = {1, 0x10}};
    p.omitted = MQ_OMIT_REASON_AND_PROPERTIES;
    EXPECT_INVAL(p); /* a reason other than 0x00 cannot be left out */
    p.omitted = MQ_OMIT_PROPERTIES;
    assert_int_equal(codec_encode(&p, out, sizeof out), 5);
    p.props.raw = (const uint8_t *)"\x1F\0\0";
    p.props.raw_len = 3;
    EXPECT_INVAL(p); /* properties cannot be left out when there are some */
    p.omitted = 3;
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_AUTH, .version = 5, .u.auth = {0x18}};
    p.omitted = MQ_OMIT_PROPERTIES;
    EXPECT_INVAL(p);
    p.omitted = MQ_OMIT_NONE;
    EXPECT_INVAL(p); /* no Authentication Method */
    p = (struct mq_packet){.type = MQ_PUBLISH, .version = 5, .omitted = 1};
    p.u.publish.topic = (struct mq_bytes){(const uint8_t *)"t", 1};
    EXPECT_INVAL(p);
    /* PUBLISH: an empty topic needs a Topic Alias */
    p.omitted = 0;
    assert_int_equal(codec_encode(&p, out, sizeof out), 6);
    p.u.publish.topic.len = 0;
    EXPECT_INVAL(p);
    p.props.raw = (const uint8_t *)"\x23\0\1";
    p.props.raw_len = 3;
    assert_int_equal(codec_encode(&p, out, sizeof out), 8);
    p.u.publish.topic = (struct mq_bytes){(const uint8_t *)"+", 1};
    EXPECT_INVAL(p);
    /* SUBSCRIBE options by MQTT 5 rules */
    static const uint8_t rh3[] = {0, 1, 'a', 0x30}, ok3x[] = {0, 1, 'a', 0x2C};
    p = (struct mq_packet){.type = MQ_SUBSCRIBE, .version = 5};
    p.u.subscribe = (struct mq_topic_list){
        .packet_id = 1, .count = 1, .entries = rh3, .entries_len = 4, .with_qos = true};
    EXPECT_INVAL(p);
    p.u.subscribe.entries = ok3x;
    assert_int_equal(codec_encode(&p, out, sizeof out), 9);
    p.version = 4; /* not an MQTT 3.1.1 options byte */
    EXPECT_INVAL(p);
    /* CONNECT: the level follows the version */
    p = (struct mq_packet){.type = MQ_CONNECT, .version = 5};
    assert_int_equal(codec_encode(&p, out, sizeof out), 15);
    assert_memory_equal(out, "\x10\x0D\x00\x04MQTT\x05\x00\x00\x00\x00\x00\x00", 15);
    p.u.connect.protocol_level = 4;
    EXPECT_INVAL(p);
    p.u.connect.protocol_level = 5;
    p.u.connect.protocol_name = (struct mq_bytes){(const uint8_t *)"MQIsdp", 6};
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_CONNECT, .version = 5};
    p.u.connect.will_flag = true;
    p.u.connect.will_topic = (struct mq_bytes){(const uint8_t *)"w", 1};
    p.u.connect.will_props.raw = (const uint8_t *)"\x11\0\0\0\0"; /* session expiry */
    p.u.connect.will_props.raw_len = 5;
    EXPECT_INVAL(p);
    p.u.connect.will_props.raw = (const uint8_t *)"\x18\0\0\0\0";
    assert_int_equal(codec_encode(&p, out, sizeof out), 26);
    p.u.connect.will_qos = 3;
    EXPECT_INVAL(p);
    /* An MQTT 3.x packet has no properties, no short forms and no will properties. */
    p = (struct mq_packet){.type = MQ_PINGREQ};
    p.props.raw = (const uint8_t *)"\x26\0\0\0\0";
    p.props.raw_len = 5;
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_PUBACK, .u.packet_id = 1, .omitted = 2};
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_CONNECT};
    p.u.connect.will_flag = true;
    p.u.connect.will_topic = (struct mq_bytes){(const uint8_t *)"w", 1};
    p.u.connect.will_props.raw = (const uint8_t *)"\x18\0\0\0\0";
    p.u.connect.will_props.raw_len = 5;
    EXPECT_INVAL(p);
    p = (struct mq_packet){.type = MQ_AUTH, .version = 4};
    EXPECT_INVAL(p);
#undef EXPECT_INVAL
}

/* ---- the two dialects side by side --------------------------------------------------------- */

static void test_dialects(void **state)
{
    (void)state;
    struct mq_packet p;
    static const struct mq_decode_limits at3 = {.protocol_level = 3}, at4 = {.protocol_level = 4};
    /* The same bytes, two meanings: in 3.1.1 the 0 is the payload, in MQTT 5 the properties. */
    static const uint8_t pub[] = {0x30, 4, 0, 1, 't', 0};
    assert_int_equal(codec_decode(pub, sizeof pub, &at4, &p), 6);
    assert_int_equal(p.version, 4);
    assert_int_equal(p.u.publish.payload_len, 1);
    assert_int_equal(p.props.present, 0);
    assert_int_equal(p.props.raw_len, 0);
    assert_null(p.props.raw);
    assert_int_equal(p.omitted, 0);
    assert_int_equal(codec_decode(pub, sizeof pub, &at3, &p), 6);
    assert_int_equal(p.version, 3);
    assert_int_equal(codec_decode(pub, sizeof pub, NULL, &p), 6);
    assert_int_equal(p.version, 4);
    assert_int_equal(decode5(pub, sizeof pub, &p), 6);
    assert_int_equal(p.version, 5);
    assert_int_equal(p.u.publish.payload_len, 0);
    /* A PUBACK with a reason code is malformed before MQTT 5. */
    assert_err(codec_decode(BYTES(0x40, 3, 0, 1, 0x10), &at4, &p), MQ_ERR_MALFORMED);
    assert_err(decode5(BYTES(0x40, 3, 0, 1, 0x10), &p), 5);
    /* A 3.x UNSUBACK has no codes; u.packet_id reads u.suback.packet_id. */
    assert_int_equal(codec_decode(BYTES(0xB0, 2, 0x12, 0x34), NULL, &p), 4);
    assert_int_equal(p.u.suback.packet_id, 0x1234);
    assert_int_equal(p.u.packet_id, 0x1234);
    assert_int_equal(p.u.suback.count, 0);
    assert_null(p.u.suback.codes);
    /* ...and so does a 3.x PUBACK. */
    assert_int_equal(codec_decode(BYTES(0x40, 2, 0xAB, 0xCD), NULL, &p), 4);
    assert_int_equal(p.u.ack.packet_id, 0xABCD);
    assert_int_equal(p.u.ack.reason, 0);
    /* SUBSCRIBE options: the MQTT 5 bits are reserved in 3.1.1 */
    assert_err(codec_decode(BYTES(0x82, 6, 0, 1, 0, 1, 't', 0x04), NULL, &p),
               MQ_ERR_SUBSCRIBE_RESERVED);
    assert_err(decode5(BYTES(0x82, 7, 0, 1, 0, 0, 1, 't', 0x04), &p), 9);
    /* QoS 3: Malformed in 3.1.1's rule set, a Protocol Error in MQTT 5's */
    assert_err(codec_decode(BYTES(0x82, 6, 0, 1, 0, 1, 't', 0x03), NULL, &p), MQ_ERR_QOS3);
    assert_err(decode5(BYTES(0x82, 7, 0, 1, 0, 0, 1, 't', 0x03), &p), MQ_ERR_SUBSCRIBE_QOS3);
    /* A DISCONNECT with a reason is malformed in 3.1.1 */
    assert_err(codec_decode(BYTES(0xE0, 1, 0), NULL, &p), MQ_ERR_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect5_minimal),
        cmocka_unit_test(test_connect5_full),
        cmocka_unit_test(test_connect5_password_without_user),
        cmocka_unit_test(test_connect5_flag_rules),
        cmocka_unit_test(test_connect5_errors_are_answerable),
        cmocka_unit_test(test_connect_refusal_3x),
        cmocka_unit_test(test_connack5),
        cmocka_unit_test(test_publish5),
        cmocka_unit_test(test_acks5),
        cmocka_unit_test(test_subscribe5),
        cmocka_unit_test(test_unsubscribe5),
        cmocka_unit_test(test_suback_unsuback5),
        cmocka_unit_test(test_ping5),
        cmocka_unit_test(test_disconnect5),
        cmocka_unit_test(test_auth5),
        cmocka_unit_test(test_props_placement),
        cmocka_unit_test(test_props_duplicates),
        cmocka_unit_test(test_props_values),
        cmocka_unit_test(test_props_types),
        cmocka_unit_test(test_prop_iterator),
        cmocka_unit_test(test_prop_writer),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_reason_allowed),
        cmocka_unit_test(test_error_reason),
        cmocka_unit_test(test_varint5),
        cmocka_unit_test(test_publish5_header),
        cmocka_unit_test(test_ack5_header),
        cmocka_unit_test(test_encode5_from_fields),
        cmocka_unit_test(test_encode5_rejects),
        cmocka_unit_test(test_dialects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

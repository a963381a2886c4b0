/* fuzz_props.c - libFuzzer target for MQTT 5 property blocks (src/codec/props.c).
 *
 * Owns only the oracles. The first byte picks where the block sits (a packet type, or 0 for
 * the Will Properties of a CONNECT), the rest is the block. The iterator and the validator
 * must agree; a valid block must obey the placement and repetition rules again here, hold
 * the first value of each property, and be rebuilt byte for byte by the writer (typed puts
 * and verbatim copies), also into a short buffer; and the same block inside a whole MQTT 5
 * packet must be judged the same by the packet decoder.
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
            fprintf(stderr, "fuzz_props: %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Rewrite one property through the typed put for its data type. */
static void put_typed(struct mq_prop_writer *w, const struct mq_prop *p)
{
    switch (p->type) {
    case MQ_PROPT_BYTE: codec_prop_put_u8(w, p->id, (uint8_t)p->num); break;
    case MQ_PROPT_U16: codec_prop_put_u16(w, p->id, (uint16_t)p->num); break;
    case MQ_PROPT_U32: codec_prop_put_u32(w, p->id, p->num); break;
    case MQ_PROPT_VARINT: codec_prop_put_varint(w, p->id, p->num); break;
    case MQ_PROPT_UTF8:
    case MQ_PROPT_BINARY: codec_prop_put_bytes(w, p->id, p->str.ptr, p->str.len); break;
    case MQ_PROPT_PAIR:
        codec_prop_put_pair(w, p->str.ptr, p->str.len, p->value.ptr, p->value.len);
        break;
    default: CHECK(0);
    }
}

/* The block wrapped in the smallest MQTT 5 packet that carries it where `where` says; 0 when
 * there is none (PINGREQ, PINGRESP, types above 15). */
static size_t wrap(unsigned where, const uint8_t *block, size_t n, uint8_t *out)
{
    uint8_t head[32], tail[32];
    size_t h = 0, t = 0;
    uint8_t first = (uint8_t)(where << 4);
    switch (where) {
    case MQ_PROPS_WILL:
        first = 0x10;
        memcpy(head, "\0\4MQTT\5\6\0\0\0\0\0", 13); /* will flag, no properties, id "" */
        h = 13;
        memcpy(tail, "\0\1t\0\0", 5);
        t = 5;
        break;
    case MQ_CONNECT:
        memcpy(head, "\0\4MQTT\5\2\0\0", 10);
        h = 10;
        memcpy(tail, "\0\0", 2);
        t = 2;
        break;
    case MQ_CONNACK: h = 2, head[0] = head[1] = 0; break;
    case MQ_PUBLISH:
        memcpy(head, "\0\1t", 3);
        h = 3;
        break;
    case MQ_PUBREL: first |= 2; /* fall through */
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBCOMP:
        memcpy(head, "\0\1\0", 3);
        h = 3;
        break;
    case MQ_SUBSCRIBE:
        first |= 2;
        memcpy(head, "\0\1", 2);
        h = 2;
        memcpy(tail, "\0\1t\0", 4);
        t = 4;
        break;
    case MQ_UNSUBSCRIBE:
        first |= 2;
        memcpy(head, "\0\1", 2);
        h = 2;
        memcpy(tail, "\0\1t", 3);
        t = 3;
        break;
    case MQ_SUBACK:
    case MQ_UNSUBACK:
        memcpy(head, "\0\1", 2);
        h = 2;
        tail[0] = 0;
        t = 1;
        break;
    case MQ_DISCONNECT: h = 1, head[0] = 0; break;
    case MQ_AUTH: h = 1, head[0] = 0x18; break;
    default: return 0;
    }
    uint8_t len[4];
    unsigned ln = codec_varint_write((uint32_t)n, len);
    size_t body = h + ln + n + t;
    size_t k = 0;
    out[k++] = first;
    k += codec_varint_write((uint32_t)body, out + k);
    memcpy(out + k, head, h);
    k += h;
    memcpy(out + k, len, ln);
    k += ln;
    if (n)
        memcpy(out + k, block, n);
    k += n;
    memcpy(out + k, tail, t);
    return k + t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned where = data[0] % 17; /* 16: a place no property may be */
    const uint8_t *block = data + 1;
    size_t n = size - 1;

    struct mq_props props;
    int rc = codec_props_parse(where, block, n, &props);
    CHECK(props.raw_len == n && (n == 0 || props.raw == block));

    /* Walk it again, judging each property by the rules as the standard words them. */
    struct mq_prop_iter it = codec_prop_iter(block, n);
    struct mq_prop p;
    uint64_t seen = 0;
    uint32_t users = 0, subs = 0;
    int walk;
    while ((walk = codec_prop_next(&it, &p)) > 0) {
        CHECK(p.raw >= block && p.raw + p.raw_len <= block + n && p.raw[0] == p.id);
        CHECK(codec_prop_type(p.id) == p.type && p.type != MQ_PROPT_NONE);
        uint64_t bit = MQ_PROP_BIT(p.id);
        if (rc == 0) {
            CHECK(props.present & bit);
            bool again = (seen & bit) != 0;
            CHECK(!again || p.id == MQ_PROP_USER ||
                  (p.id == MQ_PROP_SUBSCRIPTION_ID && where == MQ_PUBLISH));
            if (p.id == MQ_PROP_TOPIC_ALIAS)
                CHECK(p.num != 0 && props.topic_alias == p.num);
            if (p.id == MQ_PROP_SUBSCRIPTION_ID && !again)
                CHECK(p.num != 0 && props.subscription_id == p.num);
            if (p.id == MQ_PROP_RECEIVE_MAXIMUM)
                CHECK(p.num != 0 && props.receive_maximum == p.num);
            if (p.id == MQ_PROP_MAXIMUM_PACKET_SIZE)
                CHECK(p.num != 0 && props.maximum_packet_size == p.num);
            if (p.type == MQ_PROPT_BYTE && p.id != 0)
                CHECK(p.num <= 1);
            if (p.id == MQ_PROP_REASON_STRING)
                CHECK(props.reason_string.ptr == p.str.ptr);
        }
        seen |= bit;
        users += p.id == MQ_PROP_USER;
        subs += p.id == MQ_PROP_SUBSCRIPTION_ID;
    }
    CHECK(walk <= 0);
    if (walk < 0)
        CHECK(rc < 0); /* what the iterator cannot read, the validator refuses */
    if (rc == 0) {
        CHECK(walk == 0 && seen == props.present);
        CHECK(users == props.user_count && subs == props.sub_id_count);
        CHECK((where < 16 && where != MQ_PINGREQ && where != MQ_PINGRESP) || n == 0);

        /* The writer rebuilds the same bytes, typed or verbatim, and into a short buffer
         * writes a prefix that ends on a property boundary while counting the whole. */
        uint8_t *typed = malloc(n + 1), *raw = malloc(n + 1), *part = malloc(n + 1);
        CHECK(typed && raw && part);
        size_t cap = n ? data[n] % (n + 1) : 0;
        struct mq_prop_writer wt, wr, wp;
        codec_prop_writer_init(&wt, typed, n);
        codec_prop_writer_init(&wr, raw, n);
        codec_prop_writer_init(&wp, part, cap);
        size_t boundary = 0;
        it = codec_prop_iter(block, n);
        while (codec_prop_next(&it, &p) > 0) {
            put_typed(&wt, &p);
            codec_prop_put_raw(&wr, &p);
            bool was = wp.overflow;
            codec_prop_put_raw(&wp, &p);
            if (!wp.overflow)
                boundary = wp.len;
            CHECK(!was || wp.overflow);
        }
        CHECK(codec_prop_writer_ok(&wt) && wt.len == n && (n == 0 || !memcmp(typed, block, n)));
        CHECK(codec_prop_writer_ok(&wr) && wr.len == n && (n == 0 || !memcmp(raw, block, n)));
        CHECK(!wp.invalid && wp.len == n && wp.overflow == (boundary < n));
        CHECK(boundary <= cap && (boundary == 0 || !memcmp(part, block, boundary)));
        free(typed);
        free(raw);
        free(part);
    }

    /* The packet decoder judges the block the same way, inside a whole packet. */
    uint8_t *pkt = malloc(n + 64);
    CHECK(pkt);
    size_t len = wrap(where, block, n, pkt);
    if (len) {
        static const struct mq_decode_limits level5 = {.protocol_level = 5};
        struct mq_packet m;
        int got = codec_decode(pkt, len, &level5, &m);
        int want = rc;
        if (rc == 0 && where == MQ_AUTH && !codec_props_has(&props, MQ_PROP_AUTH_METHOD))
            want = MQ_ERR_AUTH_METHOD;
        CHECK(got == (want ? want : (int)len));
        if (got > 0) {
            const struct mq_props *q = where == MQ_PROPS_WILL ? &m.u.connect.will_props : &m.props;
            CHECK(q->present == props.present && q->raw_len == n);
            uint8_t *again = malloc(len);
            CHECK(again);
            CHECK(codec_encode(&m, again, len) == (long)len && !memcmp(again, pkt, len));
            free(again);
        }
    }
    free(pkt);
    return 0;
}

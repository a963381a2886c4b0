/* round_trip.h - the round-trip oracle that fuzz_codec.c (MQTT 3.x) and fuzz_codec5.c (MQTT 5)
 * share: a packet codec_decode accepts is incomplete one byte short, fits a maximum packet size
 * of exactly its length and not one less, and re-encodes to a packet that decodes to the same
 * fields. Each target adds what its dialect adds (its own field checks, errors, encodings).
 * Header-only, with static inline functions: CMake makes every tests/fuzz/fuzz_*.c a target.
 */
#ifndef MIDGE_FUZZ_ROUND_TRIP_H
#define MIDGE_FUZZ_ROUND_TRIP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/codec.h"
#include "midge/err.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static inline void same_bytes(struct mq_bytes a, struct mq_bytes b)
{
    CHECK(a.len == b.len);
    CHECK(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Two decodes of one SUBSCRIBE or UNSUBSCRIBE list: the iterator yields exactly `count`
 * entries, equal pairwise, each options byte valid for the dialect (v5: MQTT 5 subscription
 * options; else a QoS). */
static inline void same_topic_list(const struct mq_topic_list *a, const struct mq_topic_list *b,
                                   bool v5)
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
        if (v5) /* QoS 0-2, Retain Handling 0-2, bits 6-7 clear */
            CHECK(MQ_SUB_QOS(oa) <= 2 && MQ_SUB_RETAIN_HANDLING(oa) <= 2 && (oa & 0xC0) == 0);
        else
            CHECK(oa <= 2);
        n++;
    }
    CHECK(!codec_topic_list_next(&ib, &fb, &ob));
    CHECK(n == a->count);
}

/* The fields of a CONNECT that both dialects have (not MQTT 5's will properties). */
static inline void same_connect(const struct mq_connect *x, const struct mq_connect *y)
{
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
}

static inline void same_publish(const struct mq_publish *x, const struct mq_publish *y)
{
    CHECK(x->qos == y->qos && x->dup == y->dup && x->retain == y->retain);
    CHECK(x->packet_id == y->packet_id && x->payload_len == y->payload_len);
    CHECK(x->payload_len == 0 || memcmp(x->payload, y->payload, x->payload_len) == 0);
    same_bytes(x->topic, y->topic);
}

/* codec_decode of data at limits (NULL: none) into *p; for an accepted packet of n bytes,
 * check that n - 1 bytes are "incomplete" and that a maximum packet size of n accepts it
 * and one of n - 1 refuses it. Returns codec_decode's result. */
static inline int decode_checked(const uint8_t *data, size_t size,
                                 const struct mq_decode_limits *limits, struct mq_packet *p)
{
    int n = codec_decode(data, size, limits, p);
    if (n <= 0)
        return n;
    CHECK((size_t)n <= size);
    struct mq_packet q;
    CHECK(codec_decode(data, (size_t)n - 1, limits, &q) == 0);
    struct mq_decode_limits exact = {0}, below;
    if (limits)
        exact = *limits;
    below = exact;
    exact.max_packet_size = (uint32_t)n;
    below.max_packet_size = (uint32_t)n - 1;
    CHECK(codec_decode(data, size, &exact, &q) == n);
    CHECK(codec_decode(data, size, &below, &q) == MQ_ERR_TOO_LARGE);
    return n;
}

/* Encode p into a buffer of exactly its size (so ASan sees any overrun), which must decode
 * whole at limits into *q. Returns the buffer (the caller frees it); *len is its size. */
static inline uint8_t *reencode(const struct mq_packet *p, const struct mq_decode_limits *limits,
                                struct mq_packet *q, long *len)
{
    *len = codec_encode(p, NULL, 0);
    CHECK(*len > 0);
    uint8_t *buf = malloc((size_t)*len);
    CHECK(buf);
    CHECK(codec_encode(p, buf, (size_t)*len) == *len);
    CHECK(codec_decode(buf, (size_t)*len, limits, q) == *len);
    return buf;
}

#endif

/* fuzz_codec.c - libFuzzer target for src/codec/mqtt_codec.c.
 *
 * Owns only the round-trip oracle: whatever codec_decode accepts must re-encode to a packet
 * that decodes to the same fields, byte for byte when the input used the shortest length
 * encoding, and no shorter prefix of an accepted packet may be anything but "incomplete".
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
            fprintf(stderr, "fuzz_codec: %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void same_bytes(struct mq_bytes a, struct mq_bytes b)
{
    CHECK(a.len == b.len);
    CHECK(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void same_topic_list(const struct mq_topic_list *a, const struct mq_topic_list *b)
{
    CHECK(a->packet_id == b->packet_id && a->count == b->count && a->with_qos == b->with_qos);
    CHECK(a->entries_len == b->entries_len && memcmp(a->entries, b->entries, a->entries_len) == 0);
    /* Walk both lists: the iterator must yield exactly `count` entries, equal pairwise. */
    struct mq_topic_iter ia = {a, 0}, ib = {b, 0};
    struct mq_bytes fa, fb;
    uint8_t qa, qb;
    unsigned n = 0;
    while (codec_topic_list_next(&ia, &fa, &qa)) {
        CHECK(codec_topic_list_next(&ib, &fb, &qb));
        same_bytes(fa, fb);
        CHECK(qa == qb && qa <= 2 && (a->with_qos || qa == 0));
        n++;
    }
    CHECK(!codec_topic_list_next(&ib, &fb, &qb));
    CHECK(n == a->count);
}

static void same_packet(const struct mq_packet *a, const struct mq_packet *b)
{
    CHECK(a->type == b->type && a->flags == b->flags);
    switch (a->type) {
    case MQ_CONNECT: {
        const struct mq_connect *x = &a->u.connect, *y = &b->u.connect;
        same_bytes(x->protocol_name, y->protocol_name);
        CHECK(x->protocol_level == y->protocol_level && x->clean_session == y->clean_session);
        CHECK(x->keepalive == y->keepalive && x->will_flag == y->will_flag);
        CHECK(x->will_qos == y->will_qos && x->will_retain == y->will_retain);
        CHECK(x->has_username == y->has_username && x->has_password == y->has_password);
        same_bytes(x->client_id, y->client_id);
        same_bytes(x->will_topic, y->will_topic);
        same_bytes(x->will_payload, y->will_payload);
        same_bytes(x->username, y->username);
        same_bytes(x->password, y->password);
        break;
    }
    case MQ_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present);
        CHECK(a->u.connack.return_code == b->u.connack.return_code);
        break;
    case MQ_PUBLISH: {
        const struct mq_publish *x = &a->u.publish, *y = &b->u.publish;
        CHECK(x->qos == y->qos && x->dup == y->dup && x->retain == y->retain);
        CHECK(x->packet_id == y->packet_id && x->payload_len == y->payload_len);
        CHECK(x->payload_len == 0 || memcmp(x->payload, y->payload, x->payload_len) == 0);
        same_bytes(x->topic, y->topic);
        break;
    }
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE: same_topic_list(&a->u.subscribe, &b->u.subscribe); break;
    case MQ_SUBACK:
        CHECK(a->u.suback.packet_id == b->u.suback.packet_id);
        CHECK(a->u.suback.count == b->u.suback.count);
        CHECK(memcmp(a->u.suback.codes, b->u.suback.codes, a->u.suback.count) == 0);
        break;
    case MQ_PUBACK:
    case MQ_PUBREC:
    case MQ_PUBREL:
    case MQ_PUBCOMP:
    case MQ_UNSUBACK: CHECK(a->u.packet_id == b->u.packet_id && a->u.packet_id != 0); break;
    case MQ_PINGREQ:
    case MQ_PINGRESP:
    case MQ_DISCONNECT:
    case MQ_AUTH: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mq_packet p, q;
    int n = codec_decode(data, size, NULL, &p);
    if (n <= 0)
        return 0;
    CHECK((size_t)n <= size);
    CHECK(codec_decode(data, (size_t)n - 1, NULL, &q) == 0);
    struct mq_decode_limits exact = {(uint32_t)n}, below = {(uint32_t)n - 1};
    CHECK(codec_decode(data, size, &exact, &q) == n);
    CHECK(codec_decode(data, size, &below, &q) == MQ_ERR_TOO_LARGE);

    long len = codec_encode(&p, NULL, 0);
    CHECK(len > 0 && len <= n);         /* shorter only when the input's length was not minimal */
    uint8_t *buf = malloc((size_t)len); /* exact size, so ASan sees any overrun */
    CHECK(buf);
    CHECK(codec_encode(&p, buf, (size_t)len) == len);
    CHECK(codec_decode(buf, (size_t)len, NULL, &q) == len);
    same_packet(&p, &q);
    CHECK(len < n || memcmp(buf, data, (size_t)len) == 0);
    free(buf);
    return 0;
}

/* fuzz_codec.c - libFuzzer target for src/codec/mqtt_codec.c.
 *
 * Owns only the round-trip oracle: whatever codec_decode accepts must re-encode to a packet
 * that decodes to the same fields, byte for byte when the input used the shortest length
 * encoding, and no shorter prefix of an accepted packet may be anything but "incomplete".
 * The checks both dialects share are tests/fuzz/round_trip.h's.
 */
#include "round_trip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_packet(const struct mq_packet *a, const struct mq_packet *b)
{
    CHECK(a->type == b->type && a->flags == b->flags);
    switch (a->type) {
    case MQ_CONNECT: same_connect(&a->u.connect, &b->u.connect); break;
    case MQ_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present);
        CHECK(a->u.connack.return_code == b->u.connack.return_code);
        break;
    case MQ_PUBLISH: same_publish(&a->u.publish, &b->u.publish); break;
    case MQ_SUBSCRIBE:
    case MQ_UNSUBSCRIBE: same_topic_list(&a->u.subscribe, &b->u.subscribe, false); break;
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
    int n = decode_checked(data, size, NULL, &p);
    if (n <= 0)
        return 0;
    long len;
    uint8_t *buf = reencode(&p, NULL, &q, &len);
    CHECK(len <= n); /* shorter only when the input's length was not minimal */
    same_packet(&p, &q);
    CHECK(len < n || memcmp(buf, data, (size_t)len) == 0);
    free(buf);
    return 0;
}

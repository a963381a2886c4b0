/* codec.h - MQTT 3.1 / 3.1.1 wire format: decode and encode all 14 packet types.
 *
 * Pure: no allocation, no I/O, no global state. Decoded packets point into the
 * caller's buffer (like picohttpparser), so they are valid only while it is.
 * Every malformed-packet rule of MQTT 3.1.1 that can be checked on one packet
 * in isolation is checked here; rules that need session state live in proto.
 */
#ifndef MIDGE_CODEC_H
#define MIDGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "midge/err.h"

enum mq_packet_type {
    MQ_CONNECT = 1,
    MQ_CONNACK = 2,
    MQ_PUBLISH = 3,
    MQ_PUBACK = 4,
    MQ_PUBREC = 5,
    MQ_PUBREL = 6,
    MQ_PUBCOMP = 7,
    MQ_SUBSCRIBE = 8,
    MQ_SUBACK = 9,
    MQ_UNSUBSCRIBE = 10,
    MQ_UNSUBACK = 11,
    MQ_PINGREQ = 12,
    MQ_PINGRESP = 13,
    MQ_DISCONNECT = 14,
};

/* The spec's largest remaining length (4 length bytes): 268,435,455. */
#define MQ_MAX_REMAINING_LENGTH 268435455u
/* Largest fixed header: 1 type byte + 4 length bytes. */
#define MQ_MAX_FIXED_HEADER 5
/* Largest possible CONNECT: fixed header, variable header with the longer protocol
 * name ("MQIsdp"), and five length-prefixed fields of at most 65,535 bytes. */
#define MQ_MAX_CONNECT_PACKET (MQ_MAX_FIXED_HEADER + 2 + 6 + 1 + 1 + 2 + 5 * (2 + 65535))

/* CONNACK return codes (3.2.2.3). */
enum mq_connack_code {
    MQ_CONNACK_ACCEPTED = 0,
    MQ_CONNACK_BAD_PROTOCOL = 1,
    MQ_CONNACK_ID_REJECTED = 2,
    MQ_CONNACK_UNAVAILABLE = 3,
    MQ_CONNACK_BAD_CREDENTIALS = 4,
    MQ_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQ_SUBACK_FAILURE 0x80

/* A length-prefixed field borrowed from the decode buffer (not NUL-terminated). */
struct mq_bytes {
    const uint8_t *ptr;
    uint16_t len;
};

struct mq_connect {
    struct mq_bytes protocol_name; /* "MQTT" (level 4) or "MQIsdp" (level 3) */
    uint8_t protocol_level;        /* 3 or 4, without the bridge bit */
    bool bridge; /* the level's top bit (0x83, 0x84): a bridge asking for loop prevention */
    bool clean_session;
    uint16_t keepalive; /* seconds; 0 disables */
    struct mq_bytes client_id;
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    struct mq_bytes will_topic;
    struct mq_bytes will_payload;
    bool has_username;
    struct mq_bytes username;
    bool has_password;
    struct mq_bytes password;
};

struct mq_connack {
    bool session_present;
    uint8_t return_code;
};

struct mq_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    struct mq_bytes topic;
    uint16_t packet_id; /* 0 for QoS 0 (no field on the wire) */
    const uint8_t *payload;
    uint32_t payload_len;
};

/* SUBSCRIBE / UNSUBSCRIBE: the entries were validated by codec_decode; walk them with
 * codec_topic_list_next(). For UNSUBSCRIBE the entries carry no QoS byte. */
struct mq_topic_list {
    uint16_t packet_id;
    uint16_t count;         /* number of entries (>= 1 after a successful decode) */
    const uint8_t *entries; /* raw entry bytes inside the decode buffer */
    uint32_t entries_len;
    bool with_qos; /* true for SUBSCRIBE */
};

/* Cursor over a struct mq_topic_list. */
struct mq_topic_iter {
    const struct mq_topic_list *list;
    uint32_t offset;
};

/* SUBACK: return codes borrowed from the buffer (or, for encode, from the caller). */
struct mq_suback {
    uint16_t packet_id;
    uint16_t count;
    const uint8_t *codes;
};

struct mq_packet {
    enum mq_packet_type type;
    uint8_t flags; /* low nibble of the first byte */
    union {
        struct mq_connect connect;
        struct mq_connack connack;
        struct mq_publish publish;
        struct mq_topic_list subscribe; /* SUBSCRIBE and UNSUBSCRIBE */
        struct mq_suback suback;
        uint16_t packet_id; /* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK */
    } u;
};

/* Limits the decoder enforces that are configuration, not protocol. */
struct mq_decode_limits {
    uint32_t max_packet_size; /* whole packet incl. fixed header; 0 = spec maximum */
};

/* Decode one packet from buf[0..len).
 * Returns the number of bytes the packet occupies (> 0) and fills *out;
 * 0 when buf holds only part of a packet (call again with more bytes);
 * a negative enum mq_err when the bytes can never become a valid packet.
 * MQ_ERR_TOO_LARGE is returned as soon as the fixed header is complete, so
 * the caller never buffers the body of an oversized packet.
 * *out borrows from buf. limits may be NULL (spec maximum). *out is untouched
 * when 0 is returned and unspecified after an error, except the two that proto answers
 * with a CONNACK (codec_connect_answerable): MQ_ERR_BAD_PROTOCOL_LEVEL (CONNACK 0x01) and
 * MQ_ERR_NO_CLIENT_ID (an MQTT 3.1 CONNECT that ends before its client id: CONNACK 0x02).
 * Then out->type is MQ_CONNECT and u.connect holds every field that could be read (at
 * least protocol_name and protocol_level).
 * Fixed-size packets with another remaining length are MQ_ERR_MALFORMED; in the
 * others a field running past the end is MQ_ERR_TRUNCATED and bytes after the last
 * CONNECT field are MQ_ERR_TRAILING. */
int codec_decode(const uint8_t *buf, size_t len, const struct mq_decode_limits *limits,
                 struct mq_packet *out);

/* True for the decode errors of a CONNECT that are answered with a CONNACK refusal rather
 * than by closing the connection (see codec_decode). */
static inline bool codec_connect_answerable(int err)
{
    return err == MQ_ERR_BAD_PROTOCOL_LEVEL || err == MQ_ERR_NO_CLIENT_ID;
}

/* Total size (fixed header + remaining length) of the packet starting at buf when its
 * fixed header is complete and well-formed; 0 otherwise. Lets a reader size its buffer
 * for a packet that has not fully arrived. */
size_t codec_packet_size(const uint8_t *buf, size_t len);

/* Read the next entry of a decoded SUBSCRIBE/UNSUBSCRIBE. Returns true and sets
 * *filter (borrowed) and *qos (0 for UNSUBSCRIBE; qos may be NULL) while entries remain. */
bool codec_topic_list_next(struct mq_topic_iter *it, struct mq_bytes *filter, uint8_t *qos);

/* Encode pkt into out[0..cap). Returns the packet's total size; when that is
 * larger than cap nothing useful is written and the caller retries with a
 * buffer of the returned size. Returns MQ_ERR_INVAL for packets that cannot be
 * encoded (remaining length over the spec maximum, wrong field combination): exactly
 * the packets codec_decode accepts are encodable, re-encoded byte for byte. The
 * flags nibble comes from the type and the PUBLISH fields; pkt->flags is ignored.
 * A CONNECT with an empty protocol_name gets the one matching protocol_level
 * (3 → "MQIsdp", 0 or 4 → "MQTT" level 4). out may be NULL when cap is 0. */
long codec_encode(const struct mq_packet *pkt, uint8_t *out, size_t cap);

/* Size of the remaining-length field for a remaining length n (1..4); 0 when n is
 * over MQ_MAX_REMAINING_LENGTH. */
unsigned codec_varint_size(uint32_t n);

/* Write the fixed header (first byte + remaining length) to out (>= 5 bytes);
 * returns its size, or 0 (nothing written) when remaining is over the spec maximum. */
unsigned codec_fixed_header(uint8_t first_byte, uint32_t remaining, uint8_t *out);

/* The fixed header + variable header of an outgoing PUBLISH up to, but not
 * including, the payload: first byte, remaining length, topic, packet id.
 * out must hold MQ_MAX_FIXED_HEADER + 2 + topic_len + 2 bytes. Returns its size,
 * or 0 when qos > 2, dup is set with QoS 0 or the packet would be over the spec
 * maximum. The topic is not validated. For QoS > 0 packet_id may be 0 as a
 * placeholder: it is the last two bytes, for the caller to patch per receiver. */
size_t codec_publish_header(uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                            uint16_t topic_len, uint16_t packet_id, uint32_t payload_len,
                            uint8_t *out);

/* Human-readable name of a packet type ("PUBLISH"); "RESERVED" when unknown. */
const char *codec_type_name(unsigned type);

#endif

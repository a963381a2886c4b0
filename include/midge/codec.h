/* codec.h - MQTT 3.1, 3.1.1 and 5.0 wire format: decode and encode all 15 packet types.
 *
 * Pure: no allocation, no I/O, no global state. Decoded packets point into the
 * caller's buffer (like picohttpparser), so they are valid only while it is.
 * Every malformed-packet and protocol-error rule of MQTT 3.1.1 and 5.0 that can be
 * checked on one packet in isolation is checked here; rules that need session or
 * connection state (topic alias ranges, Receive Maximum, who may send what) live in proto.
 * The dialect is the connection's: the caller passes the protocol level it negotiated
 * (struct mq_decode_limits), and a CONNECT says its own.
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
    MQ_AUTH = 15, /* MQTT 5 only: a reserved type (MQ_ERR_BAD_TYPE) on 3.x connections */
};

/* The spec's largest remaining length (4 length bytes): 268,435,455. */
#define MQ_MAX_REMAINING_LENGTH 268435455u
/* Largest fixed header: 1 type byte + 4 length bytes. */
#define MQ_MAX_FIXED_HEADER 5
/* Largest possible MQTT 3.x CONNECT: fixed header, variable header with the longer protocol
 * name ("MQIsdp"), and five length-prefixed fields of at most 65,535 bytes. (An MQTT 5
 * CONNECT has no such bound: its two property blocks may be as long as the packet allows.) */
#define MQ_MAX_CONNECT_PACKET (MQ_MAX_FIXED_HEADER + 2 + 6 + 1 + 1 + 2 + 5 * (2 + 65535))

/* CONNACK return codes of MQTT 3.1.1 (3.2.2.3). MQTT 5 uses enum mq_reason. */
enum mq_connack_code {
    MQ_CONNACK_ACCEPTED = 0,
    MQ_CONNACK_BAD_PROTOCOL = 1,
    MQ_CONNACK_ID_REJECTED = 2,
    MQ_CONNACK_UNAVAILABLE = 3,
    MQ_CONNACK_BAD_CREDENTIALS = 4,
    MQ_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQ_SUBACK_FAILURE 0x80

/* MQTT 5 reason codes (2.4), every one the standard defines. Several share a value. */
enum mq_reason {
    MQ_RC_SUCCESS = 0x00,
    MQ_RC_NORMAL_DISCONNECTION = 0x00,
    MQ_RC_GRANTED_QOS0 = 0x00,
    MQ_RC_GRANTED_QOS1 = 0x01,
    MQ_RC_GRANTED_QOS2 = 0x02,
    MQ_RC_DISCONNECT_WITH_WILL = 0x04,
    MQ_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQ_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    MQ_RC_CONTINUE_AUTHENTICATION = 0x18,
    MQ_RC_REAUTHENTICATE = 0x19,
    MQ_RC_UNSPECIFIED_ERROR = 0x80,
    MQ_RC_MALFORMED_PACKET = 0x81,
    MQ_RC_PROTOCOL_ERROR = 0x82,
    MQ_RC_IMPLEMENTATION_SPECIFIC_ERROR = 0x83,
    MQ_RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    MQ_RC_CLIENT_ID_NOT_VALID = 0x85,
    MQ_RC_BAD_USERNAME_OR_PASSWORD = 0x86,
    MQ_RC_NOT_AUTHORIZED = 0x87,
    MQ_RC_SERVER_UNAVAILABLE = 0x88,
    MQ_RC_SERVER_BUSY = 0x89,
    MQ_RC_BANNED = 0x8A,
    MQ_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQ_RC_BAD_AUTHENTICATION_METHOD = 0x8C,
    MQ_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
    MQ_RC_SESSION_TAKEN_OVER = 0x8E,
    MQ_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQ_RC_TOPIC_NAME_INVALID = 0x90,
    MQ_RC_PACKET_ID_IN_USE = 0x91,
    MQ_RC_PACKET_ID_NOT_FOUND = 0x92,
    MQ_RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93,
    MQ_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQ_RC_PACKET_TOO_LARGE = 0x95,
    MQ_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQ_RC_QUOTA_EXCEEDED = 0x97,
    MQ_RC_ADMINISTRATIVE_ACTION = 0x98,
    MQ_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    MQ_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    MQ_RC_QOS_NOT_SUPPORTED = 0x9B,
    MQ_RC_USE_ANOTHER_SERVER = 0x9C,
    MQ_RC_SERVER_MOVED = 0x9D,
    MQ_RC_SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E,
    MQ_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    MQ_RC_MAXIMUM_CONNECT_TIME = 0xA0,
    MQ_RC_SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1,
    MQ_RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2,
};

/* MQTT 5 property identifiers (2.2.2.2). */
enum mq_prop_id {
    MQ_PROP_PAYLOAD_FORMAT = 0x01,         /* byte: 0 bytes, 1 UTF-8 */
    MQ_PROP_MESSAGE_EXPIRY = 0x02,         /* u32 seconds */
    MQ_PROP_CONTENT_TYPE = 0x03,           /* UTF-8 string */
    MQ_PROP_RESPONSE_TOPIC = 0x08,         /* UTF-8 topic name */
    MQ_PROP_CORRELATION_DATA = 0x09,       /* binary */
    MQ_PROP_SUBSCRIPTION_ID = 0x0B,        /* variable byte integer 1..268,435,455 */
    MQ_PROP_SESSION_EXPIRY = 0x11,         /* u32 seconds */
    MQ_PROP_ASSIGNED_CLIENT_ID = 0x12,     /* UTF-8 string */
    MQ_PROP_SERVER_KEEP_ALIVE = 0x13,      /* u16 seconds */
    MQ_PROP_AUTH_METHOD = 0x15,            /* UTF-8 string */
    MQ_PROP_AUTH_DATA = 0x16,              /* binary */
    MQ_PROP_REQUEST_PROBLEM_INFO = 0x17,   /* byte 0/1 */
    MQ_PROP_WILL_DELAY = 0x18,             /* u32 seconds */
    MQ_PROP_REQUEST_RESPONSE_INFO = 0x19,  /* byte 0/1 */
    MQ_PROP_RESPONSE_INFO = 0x1A,          /* UTF-8 string */
    MQ_PROP_SERVER_REFERENCE = 0x1C,       /* UTF-8 string */
    MQ_PROP_REASON_STRING = 0x1F,          /* UTF-8 string */
    MQ_PROP_RECEIVE_MAXIMUM = 0x21,        /* u16, not 0 */
    MQ_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,    /* u16 */
    MQ_PROP_TOPIC_ALIAS = 0x23,            /* u16, not 0 */
    MQ_PROP_MAXIMUM_QOS = 0x24,            /* byte 0/1 */
    MQ_PROP_RETAIN_AVAILABLE = 0x25,       /* byte 0/1 */
    MQ_PROP_USER = 0x26,                   /* UTF-8 string pair; may repeat */
    MQ_PROP_MAXIMUM_PACKET_SIZE = 0x27,    /* u32, not 0 */
    MQ_PROP_WILDCARD_SUB_AVAILABLE = 0x28, /* byte 0/1 */
    MQ_PROP_SUB_ID_AVAILABLE = 0x29,       /* byte 0/1 */
    MQ_PROP_SHARED_SUB_AVAILABLE = 0x2A,   /* byte 0/1 */
};

/* Bit of a property in struct mq_props.present. */
#define MQ_PROP_BIT(id) (UINT64_C(1) << (id))

/* Data types of property values (1.5). */
enum mq_prop_type {
    MQ_PROPT_NONE = 0, /* not a property identifier of MQTT 5 */
    MQ_PROPT_BYTE,
    MQ_PROPT_U16,
    MQ_PROPT_U32,
    MQ_PROPT_VARINT,
    MQ_PROPT_UTF8,
    MQ_PROPT_BINARY,
    MQ_PROPT_PAIR,
};

/* Where a property block sits: a packet type, or the Will Properties of a CONNECT. */
#define MQ_PROPS_WILL 0

/* A length-prefixed field borrowed from the decode buffer (not NUL-terminated). */
struct mq_bytes {
    const uint8_t *ptr;
    uint16_t len;
};

/* The properties of one MQTT 5 packet (or of a will), decoded. A field is valid only when
 * its MQ_PROP_BIT(id) is set in `present`: the decoder writes the first five members and
 * the fields of the properties it meets, never the whole struct. `raw` is the property
 * block as it was on the wire (without its length), borrowed from the decode buffer: walk
 * it with codec_prop_next() for the User Properties, for every Subscription Identifier of
 * a server's PUBLISH, or to copy forwardable properties verbatim. codec_encode writes `raw`
 * and reads no other member. */
struct mq_props {
    uint64_t present;   /* MQ_PROP_BIT(id) of every property in the block */
    const uint8_t *raw; /* the block, without its length; NULL when raw_len is 0 */
    uint32_t raw_len;
    uint32_t user_count;   /* User Property pairs in the block */
    uint32_t sub_id_count; /* Subscription Identifiers (more than one only in a server PUBLISH) */
    uint8_t payload_format;
    uint8_t request_problem_info;
    uint8_t request_response_info;
    uint8_t maximum_qos;
    uint8_t retain_available;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;
    uint16_t server_keep_alive;
    uint16_t receive_maximum;
    uint16_t topic_alias_maximum;
    uint16_t topic_alias;
    uint32_t message_expiry;
    uint32_t session_expiry;
    uint32_t will_delay;
    uint32_t maximum_packet_size;
    uint32_t subscription_id; /* the first one */
    struct mq_bytes content_type;
    struct mq_bytes response_topic;
    struct mq_bytes correlation_data;
    struct mq_bytes assigned_client_id;
    struct mq_bytes auth_method;
    struct mq_bytes auth_data;
    struct mq_bytes response_info;
    struct mq_bytes server_reference;
    struct mq_bytes reason_string;
};

static inline bool codec_props_has(const struct mq_props *p, enum mq_prop_id id)
{
    return (p->present & MQ_PROP_BIT(id)) != 0;
}

struct mq_connect {
    struct mq_bytes protocol_name; /* "MQTT" (level 4 or 5) or "MQIsdp" (level 3) */
    uint8_t protocol_level;        /* 3, 4 or 5, without the bridge bit */
    bool bridge; /* the level's top bit (0x83, 0x84, 0x85): a bridge asking for loop prevention */
    bool clean_session; /* MQTT 5: Clean Start */
    uint16_t keepalive; /* seconds; 0 disables */
    struct mq_bytes client_id;
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    struct mq_bytes will_topic;
    struct mq_bytes will_payload;
    bool has_username;
    struct mq_bytes username;
    bool has_password; /* MQTT 5 allows a password without a user name */
    struct mq_bytes password;
    struct mq_props will_props; /* MQTT 5 with will_flag: the Will Properties */
};

struct mq_connack {
    bool session_present;
    uint8_t return_code; /* MQTT 5: the Connect Reason Code (enum mq_reason) */
};

struct mq_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    struct mq_bytes topic; /* MQTT 5: empty when a Topic Alias stands for it */
    uint16_t packet_id;    /* 0 for QoS 0 (no field on the wire) */
    const uint8_t *payload;
    uint32_t payload_len;
};

/* SUBSCRIBE / UNSUBSCRIBE: the entries were validated by codec_decode; walk them with
 * codec_topic_list_next(). For UNSUBSCRIBE the entries carry no options byte. */
struct mq_topic_list {
    uint16_t packet_id;
    uint16_t count;         /* number of entries (>= 1 after a successful decode) */
    const uint8_t *entries; /* raw entry bytes inside the decode buffer */
    uint32_t entries_len;
    bool with_qos; /* true for SUBSCRIBE */
};

/* The fields of a SUBSCRIBE entry's options byte: MQTT 3.x uses the QoS bits alone
 * (the others are reserved); MQTT 5 adds No Local, Retain As Published and Retain Handling. */
#define MQ_SUB_QOS(opts) ((uint8_t)((opts)&0x03))
#define MQ_SUB_NO_LOCAL 0x04
#define MQ_SUB_RETAIN_AS_PUBLISHED 0x08
#define MQ_SUB_RETAIN_HANDLING(opts) ((uint8_t)(((opts) >> 4) & 0x03))

/* Cursor over a struct mq_topic_list. */
struct mq_topic_iter {
    const struct mq_topic_list *list;
    uint32_t offset;
};

/* SUBACK, and the UNSUBACK of MQTT 5: one return (reason) code per filter, borrowed from
 * the buffer (or, for encode, from the caller). An MQTT 3.x UNSUBACK has none (count 0). */
struct mq_suback {
    uint16_t packet_id;
    uint16_t count;
    const uint8_t *codes;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
struct mq_ack {
    uint16_t packet_id;
    uint8_t reason; /* MQTT 5 (enum mq_reason); 0 in 3.x and when the wire omits it */
};

/* DISCONNECT and AUTH of MQTT 5 (0 in 3.x and when the wire omits it). */
struct mq_reason_only {
    uint8_t reason;
};

/* struct mq_packet.omitted: what an MQTT 5 PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT or
 * AUTH left off its end (reason 0x00 and no properties are implied). The decoder records
 * it so that codec_encode reproduces the same bytes. */
enum mq_omitted {
    MQ_OMIT_NONE = 0,
    MQ_OMIT_PROPERTIES = 1,            /* reason code present, no property length (not AUTH) */
    MQ_OMIT_REASON_AND_PROPERTIES = 2, /* nothing after the packet id (or at all) */
};

struct mq_packet {
    enum mq_packet_type type;
    uint8_t flags; /* low nibble of the first byte */
    /* The dialect's protocol level: 3, 4 or 5 after decode; for encode 0 means 4. */
    uint8_t version;
    uint8_t omitted; /* enum mq_omitted; 0 for every other packet and in 3.x */
    union {
        struct mq_connect connect;
        struct mq_connack connack;
        struct mq_publish publish;
        struct mq_topic_list subscribe; /* SUBSCRIBE and UNSUBSCRIBE */
        struct mq_suback suback;        /* SUBACK and UNSUBACK */
        struct mq_ack ack;              /* PUBACK, PUBREC, PUBREL, PUBCOMP */
        struct mq_reason_only disconnect;
        struct mq_reason_only auth;
        /* The packet id of PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: the first member
         * of u.ack and u.suback, readable and writable through either name. */
        uint16_t packet_id;
    } u;
    struct mq_props props; /* MQTT 5 properties; present == 0 and raw_len == 0 in 3.x */
};

/* Limits the decoder enforces that are configuration, not protocol, and the dialect. */
struct mq_decode_limits {
    uint32_t max_packet_size; /* whole packet incl. fixed header; 0 = spec maximum */
    /* The connection's protocol level: 0 before CONNECT (other packets are read as 3.1.1),
     * 3 or 4 for MQTT 3.1 / 3.1.1, 5 for MQTT 5. A CONNECT is read by its own level. */
    uint8_t protocol_level;
};

/* Decode one packet from buf[0..len).
 * Returns the number of bytes the packet occupies (> 0) and fills *out;
 * 0 when buf holds only part of a packet (call again with more bytes);
 * a negative enum mq_err when the bytes can never become a valid packet.
 * MQ_ERR_TOO_LARGE is returned as soon as the fixed header is complete, so
 * the caller never buffers the body of an oversized packet.
 * *out borrows from buf. limits may be NULL (spec maximum, level 0). *out is untouched
 * when 0 is returned. After an error out->version is set, and *out is otherwise unspecified,
 * except for the CONNECT errors that proto answers with a CONNACK (codec_connect_refusal):
 * - MQTT 3.x: MQ_ERR_BAD_PROTOCOL_LEVEL (CONNACK 0x01) and MQ_ERR_NO_CLIENT_ID (an MQTT 3.1
 *   CONNECT that ends before its client id: CONNACK 0x02);
 * - MQTT 5: every error of a CONNECT whose protocol name and level say MQTT 5 (CONNACK with
 *   codec_error_reason(err)), also MQ_ERR_TOO_LARGE when the level is already in buf.
 * Then out->type is MQ_CONNECT, out->version is the dialect (5 only for those) and u.connect
 * (and out->props) hold every field that could be read, at least protocol_name and
 * protocol_level. For every other error, out->type == MQ_CONNECT && out->version == 5
 * is false.
 * Fixed-size packets with another remaining length are MQ_ERR_MALFORMED; in the
 * others a field running past the end is MQ_ERR_TRUNCATED and bytes after the last
 * field are MQ_ERR_TRAILING. MQTT 5 packets must encode every variable byte integer in
 * its shortest form, the remaining length included (MQ_ERR_BAD_VARINT). */
int codec_decode(const uint8_t *buf, size_t len, const struct mq_decode_limits *limits,
                 struct mq_packet *out);

/* True for the decode errors of an MQTT 3.x CONNECT that are answered with a CONNACK refusal
 * rather than by closing the connection (see codec_decode). MQTT 5 adds its own: use
 * codec_connect_refusal, which covers both. */
static inline bool codec_connect_answerable(int err)
{
    return err == MQ_ERR_BAD_PROTOCOL_LEVEL || err == MQ_ERR_NO_CLIENT_ID;
}

/* The CONNACK code a decode error of a CONNECT is answered with, or 0 when the connection
 * is closed without one. p is the packet codec_decode filled. MQTT 3.x: 0x01 for
 * MQ_ERR_BAD_PROTOCOL_LEVEL, 0x02 for MQ_ERR_NO_CLIENT_ID; an MQTT 5 CONNECT (p->type ==
 * MQ_CONNECT, p->version == 5): codec_error_reason(err) for any error. */
uint8_t codec_connect_refusal(int err, const struct mq_packet *p);

/* Total size (fixed header + remaining length) of the packet starting at buf when its
 * fixed header is complete and well-formed; 0 otherwise. Lets a reader size its buffer
 * for a packet that has not fully arrived. */
size_t codec_packet_size(const uint8_t *buf, size_t len);

/* Read the next entry of a decoded SUBSCRIBE/UNSUBSCRIBE. Returns true and sets
 * *filter (borrowed) and *opts (qos may be NULL) while entries remain. *opts is the entry's
 * whole options byte: in MQTT 3.x that is the requested QoS; in MQTT 5 read it with
 * MQ_SUB_QOS() and the other MQ_SUB_ macros. 0 for UNSUBSCRIBE. */
bool codec_topic_list_next(struct mq_topic_iter *it, struct mq_bytes *filter, uint8_t *opts);

/* Encode pkt into out[0..cap). Returns the packet's total size; when that is
 * larger than cap nothing useful is written and the caller retries with a
 * buffer of the returned size. Returns MQ_ERR_INVAL for packets that cannot be
 * encoded (remaining length over the spec maximum, wrong field combination): exactly
 * the packets codec_decode accepts are encodable, re-encoded byte for byte. The
 * dialect is pkt->version (0 means 4); MQTT 5 packets carry pkt->props.raw (checked like
 * the decoder checks it: codec_props_parse) and honour pkt->omitted. The flags nibble
 * comes from the type and the PUBLISH fields; pkt->flags is ignored.
 * A CONNECT with an empty protocol_name gets the one matching protocol_level
 * (3 → "MQIsdp", 0 or 4 → "MQTT" level 4; with version 5, 0 or 5 → "MQTT" level 5).
 * out may be NULL when cap is 0. */
long codec_encode(const struct mq_packet *pkt, uint8_t *out, size_t cap);

/* Human-readable name of a packet type ("PUBLISH", "AUTH"); "RESERVED" when unknown. */
const char *codec_type_name(unsigned type);

/* ---------------------------------------------------------------------------------------------
 * Variable byte integers and send-path helpers (for packets the broker builds itself)
 * ------------------------------------------------------------------------------------------- */

/* Size of the variable byte integer (remaining length, property length, ...) for n (1..4);
 * 0 when n is over MQ_MAX_REMAINING_LENGTH. */
unsigned codec_varint_size(uint32_t n);

/* Write n as a variable byte integer to out (>= 4 bytes) in its shortest form; returns its
 * size, or 0 (nothing written) when n is over MQ_MAX_REMAINING_LENGTH. */
unsigned codec_varint_write(uint32_t n, uint8_t *out);

/* Read a variable byte integer from buf[0..len): its size (1..4) with *n set; 0 when buf
 * ends inside it; MQ_ERR_BAD_VARINT when a 4th byte still continues, or (minimal) when it
 * is not in its shortest form. */
int codec_varint_read(const uint8_t *buf, size_t len, bool minimal, uint32_t *n);

/* Write the fixed header (first byte + remaining length) to out (>= 5 bytes);
 * returns its size, or 0 (nothing written) when remaining is over the spec maximum. */
unsigned codec_fixed_header(uint8_t first_byte, uint32_t remaining, uint8_t *out);

/* The fixed header + variable header of an outgoing MQTT 3.x PUBLISH up to, but not
 * including, the payload: first byte, remaining length, topic, packet id.
 * out must hold MQ_MAX_FIXED_HEADER + 2 + topic_len + 2 bytes. Returns its size,
 * or 0 when qos > 2, dup is set with QoS 0 or the packet would be over the spec
 * maximum. The topic is not validated. For QoS > 0 packet_id may be 0 as a
 * placeholder: it is the last two bytes, for the caller to patch per receiver. */
size_t codec_publish_header(uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                            uint16_t topic_len, uint16_t packet_id, uint32_t payload_len,
                            uint8_t *out);

/* Largest output of codec_publish5_header for a topic of topic_len bytes. */
#define MQ_PUBLISH5_HEADER_MAX(topic_len) (MQ_MAX_FIXED_HEADER + 2 + (topic_len) + 2 + 4)

/* The same for an MQTT 5 PUBLISH: first byte, remaining length, topic (empty when a Topic
 * Alias in the properties stands for it), packet id, property length. The caller sends
 * three pieces, e.g. as iovecs: these bytes, the property block of props_len bytes (built
 * with a struct mq_prop_writer, or copied from a decoded one), then the payload.
 * out must hold MQ_PUBLISH5_HEADER_MAX(topic_len). Returns the size, or 0 on the same
 * conditions as codec_publish_header. Neither the topic nor the properties are validated.
 * For QoS > 0 packet_id may be 0 as a placeholder: it sits just before the property
 * length, at (size - 2 - codec_varint_size(props_len)). */
size_t codec_publish5_header(uint8_t qos, bool dup, bool retain, const uint8_t *topic,
                             uint16_t topic_len, uint16_t packet_id, uint32_t props_len,
                             uint32_t payload_len, uint8_t *out);

/* Largest output of codec_ack5_header. */
#define MQ_ACK5_HEADER_MAX (MQ_MAX_FIXED_HEADER + 2 + 1 + 4)

/* The header of an MQTT 5 PUBACK, PUBREC, PUBREL, PUBCOMP (with packet_id), DISCONNECT or
 * AUTH (packet_id ignored): fixed header, packet id, reason code and property length, in
 * the shortest form the standard allows (reason 0x00 without properties leaves both out;
 * any other reason without properties leaves the property length out, except in AUTH).
 * The caller sends the property block of props_len bytes right after it. out must hold
 * MQ_ACK5_HEADER_MAX bytes. Returns the size, or 0 for another type or a packet over the
 * spec maximum. The reason code is not validated (codec_reason_allowed). */
size_t codec_ack5_header(enum mq_packet_type type, uint16_t packet_id, uint8_t reason,
                         uint32_t props_len, uint8_t *out);

/* ---------------------------------------------------------------------------------------------
 * MQTT 5 properties (src/codec/props.c)
 * ------------------------------------------------------------------------------------------- */

/* One property read from a block. */
struct mq_prop {
    uint8_t id;            /* enum mq_prop_id */
    uint8_t type;          /* enum mq_prop_type */
    uint32_t num;          /* BYTE, U16, U32 and VARINT values */
    struct mq_bytes str;   /* UTF8 and BINARY values; the name of a PAIR */
    struct mq_bytes value; /* the value of a PAIR */
    const uint8_t *raw;    /* the whole encoded property, identifier included */
    uint32_t raw_len;
};

/* Cursor over a property block (without its length prefix). */
struct mq_prop_iter {
    const uint8_t *p;
    const uint8_t *end;
};

static inline struct mq_prop_iter codec_prop_iter(const uint8_t *block, size_t len)
{
    struct mq_prop_iter it = {block, len ? block + len : block}; /* NULL + 0 is undefined */
    return it;
}

/* Read the next property: 1 with *out set (borrowing the block), 0 at the end of the
 * block, or a negative error: MQ_ERR_PROPERTY_NOT_ALLOWED for an identifier MQTT 5 does not
 * define, MQ_ERR_TRUNCATED for a value running past the block, MQ_ERR_BAD_VARINT, or a UTF-8
 * error of a string. Checks data types only: not the placement, repetition or value rules
 * (codec_props_parse does). After an error the iterator does not move. */
int codec_prop_next(struct mq_prop_iter *it, struct mq_prop *out);

/* The data type of a property identifier; MQ_PROPT_NONE when MQTT 5 defines none. */
enum mq_prop_type codec_prop_type(unsigned id);

/* Human-readable name of a property ("Topic Alias"); "unknown property" when undefined. */
const char *codec_prop_name(unsigned id);

/* Validate the property block block[0..len) of a packet of type `where` (enum
 * mq_packet_type, or MQ_PROPS_WILL for the Will Properties of a CONNECT) and decode it into
 * *out (which borrows the block). Returns 0, or the first error met in block order:
 * MQ_ERR_PROPERTY_NOT_ALLOWED (unknown, or not allowed there: Malformed Packet), data type
 * and UTF-8 errors (Malformed Packet), MQ_ERR_DUPLICATE_PROPERTY (a property other than
 * User Property, or Subscription Identifier in PUBLISH, given twice: Protocol Error),
 * MQ_ERR_PROPERTY_VALUE (a value the standard forbids: Protocol Error),
 * MQ_ERR_TOPIC_ALIAS_ZERO, MQ_ERR_RESPONSE_TOPIC, MQ_ERR_AUTH_METHOD (Authentication Data
 * without Authentication Method in CONNECT). On error *out holds what was read before it. */
int codec_props_parse(unsigned where, const uint8_t *block, size_t len, struct mq_props *out);

/* Builds a property block (without its length prefix) in a caller's buffer, allocating
 * nothing. Each put appends one property when it fits; when it does not, nothing is written,
 * `overflow` is set and `len` still grows by the property's size, so after the last put
 * `len` is the size the whole block needs. `invalid` is set (and nothing appended) when the
 * identifier's data type does not match the put function or a value is out of its type's
 * range; the strings themselves are not checked (codec_props_parse does). */
struct mq_prop_writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow;
    bool invalid;
};

static inline void codec_prop_writer_init(struct mq_prop_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = false;
    w->invalid = false;
}

/* True when the block was built completely: no overflow, nothing invalid. */
static inline bool codec_prop_writer_ok(const struct mq_prop_writer *w)
{
    return !w->overflow && !w->invalid;
}

void codec_prop_put_u8(struct mq_prop_writer *w, enum mq_prop_id id, uint8_t v);
void codec_prop_put_u16(struct mq_prop_writer *w, enum mq_prop_id id, uint16_t v);
void codec_prop_put_u32(struct mq_prop_writer *w, enum mq_prop_id id, uint32_t v);
void codec_prop_put_varint(struct mq_prop_writer *w, enum mq_prop_id id, uint32_t v);
/* A UTF-8 string or binary property (at most 65,535 bytes). */
void codec_prop_put_bytes(struct mq_prop_writer *w, enum mq_prop_id id, const void *p, size_t n);
/* A User Property (name and value at most 65,535 bytes each). */
void codec_prop_put_pair(struct mq_prop_writer *w, const void *name, size_t name_len,
                         const void *value, size_t value_len);
/* A property exactly as codec_prop_next read it (prop->raw), to forward it verbatim. */
void codec_prop_put_raw(struct mq_prop_writer *w, const struct mq_prop *prop);

/* ---------------------------------------------------------------------------------------------
 * MQTT 5 reason codes (src/codec/reason.c)
 * ------------------------------------------------------------------------------------------- */

/* Words for a reason code, for logs ("not authorized", "session taken over"); 0x00 is
 * "success". "unknown reason code" for values the standard does not define. */
const char *codec_reason_name(uint8_t code);

/* True when the standard lets a packet of this type carry this reason code (CONNACK,
 * PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH); false for others. */
bool codec_reason_allowed(unsigned type, uint8_t code);

/* The MQTT 5 reason code a server answers an error with (in CONNACK before the session
 * exists, in DISCONNECT after): 0x81 Malformed Packet, 0x82 Protocol Error, 0x84
 * Unsupported Protocol Version, 0x85 Client Identifier not valid, 0x94 Topic Alias
 * invalid, 0x95 Packet too large; 0x80 Unspecified error for errors that are not about
 * the bytes received (MQ_ERR_NOMEM, MQ_ERR_IO, ...). */
uint8_t codec_error_reason(int err);

#endif

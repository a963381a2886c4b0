/* err.h - the project's single error space.
 *
 * Every fallible function returns 0 on success or a negative enum mq_err.
 * Non-errors ("incomplete", "no subscribers") are out-parameters, never codes.
 * The list is one X-macro so the enum, names and messages never drift apart.
 */
#ifndef MIDGE_ERR_H
#define MIDGE_ERR_H

#define MQ_ERR_MAP(XX)                                                                             \
    XX(NOMEM, "out of memory")                                                                     \
    XX(INVAL, "invalid argument")                                                                  \
    XX(MALFORMED, "malformed packet")                                                              \
    XX(BAD_TYPE, "reserved packet type 0 or 15")                                                   \
    XX(BAD_FLAGS, "reserved fixed-header flags have wrong values")                                 \
    XX(BAD_REMAINING_LENGTH, "remaining length uses more than 4 bytes")                            \
    XX(TOO_LARGE, "packet larger than the configured maximum")                                     \
    XX(CONNECT_TOO_LARGE, "first packet larger than any valid CONNECT")                            \
    XX(QOS3, "QoS 3 is reserved")                                                                  \
    XX(PACKET_ID_ZERO, "packet identifier 0")                                                      \
    XX(TRUNCATED, "packet shorter than its fields")                                                \
    XX(TRAILING, "bytes left over after the last field")                                           \
    XX(BAD_UTF8, "string is not valid UTF-8")                                                      \
    XX(UTF8_NULL, "string contains U+0000")                                                        \
    XX(UTF8_SURROGATE, "string contains a UTF-16 surrogate code point")                            \
    XX(BAD_PROTOCOL_NAME, "unknown protocol name")                                                 \
    XX(BAD_PROTOCOL_LEVEL, "unsupported protocol level")                                           \
    XX(NO_CLIENT_ID, "MQTT 3.1 CONNECT without a client identifier")                               \
    XX(CONNECT_RESERVED, "CONNECT reserved flag is set")                                           \
    XX(WILL_FLAGS, "will QoS/retain set without will flag")                                        \
    XX(PASSWORD_WITHOUT_USER, "password flag set without user name flag")                          \
    XX(EMPTY_SUBSCRIBE, "SUBSCRIBE/UNSUBSCRIBE with no topic filter")                              \
    XX(SUBSCRIBE_RESERVED, "reserved bits of requested QoS are set")                               \
    XX(EMPTY_TOPIC, "zero-length topic")                                                           \
    XX(WILDCARD_IN_TOPIC, "wildcard character in topic name")                                      \
    XX(BAD_FILTER, "wildcard not alone in its level or '#' not last")                              \
    XX(TOO_MANY_FILTERS, "more than 65535 topic filters or return codes in one packet")            \
    XX(BAD_RETURN_CODE, "reserved CONNACK or SUBACK return code")                                  \
    XX(BAD_VARINT, "variable byte integer longer than 4 bytes or not in its shortest form")        \
    XX(PROPERTY_NOT_ALLOWED, "unknown property, or a property this packet may not carry")          \
    XX(DUPLICATE_PROPERTY, "property included more than once")                                     \
    XX(PROPERTY_VALUE, "property value the standard does not allow")                               \
    XX(TOPIC_ALIAS_ZERO, "Topic Alias 0")                                                          \
    XX(RESPONSE_TOPIC, "Response Topic empty or containing wildcards")                             \
    XX(AUTH_METHOD, "Authentication Data or AUTH without an Authentication Method")                \
    XX(BAD_REASON_CODE, "reason code this packet may not carry")                                   \
    XX(EMPTY_TOPIC_NO_ALIAS, "zero-length topic without a Topic Alias")                            \
    XX(SUBSCRIBE_QOS3, "subscription option Maximum QoS 3")                                        \
    XX(RETAIN_HANDLING, "subscription option Retain Handling 3")                                   \
    XX(NO_LOCAL_SHARED, "No Local set on a shared subscription")                                   \
    XX(FIRST_NOT_CONNECT, "first packet is not CONNECT")                                           \
    XX(SECOND_CONNECT, "second CONNECT on one connection")                                         \
    XX(UNEXPECTED_PACKET, "packet type a client must not send")                                    \
    XX(UNKNOWN_PACKET_ID, "acknowledgement for an unknown packet identifier")                      \
    XX(IO, "input/output error")                                                                   \
    XX(CONFIG, "configuration error")

enum mq_err {
    MQ_OK = 0,
#define XX(name, msg) MQ_ERR_##name,
    MQ_ERR_FIRST_ = -1000,
    MQ_ERR_MAP(XX)
#undef XX
};

/* Human-readable sentence for an error code (static storage, never NULL). */
const char *mq_strerror(int err);

/* Symbolic name ("MQ_ERR_BAD_UTF8") for an error code (static storage, never NULL). */
const char *mq_err_name(int err);

#endif

/* reason.c - MQTT 5 reason codes (2.4): their names, which packet may carry which, and the
 * code each error is answered with.
 *
 * Owns the reason-code tables of 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3,
 * 3.11.3, 3.14.2.1 and 3.15.2.1, and the one mapping from enum mq_err to a reason code
 * (4.13). Pure: constant tables, no state.
 */
#include "midge/codec.h"
#include "midge/err.h"

const char *codec_reason_name(uint8_t code)
{
    static const char *const names[256] = {
        [MQ_RC_SUCCESS] = "success",
        [MQ_RC_GRANTED_QOS1] = "granted QoS 1",
        [MQ_RC_GRANTED_QOS2] = "granted QoS 2",
        [MQ_RC_DISCONNECT_WITH_WILL] = "disconnect with will message",
        [MQ_RC_NO_MATCHING_SUBSCRIBERS] = "no matching subscribers",
        [MQ_RC_NO_SUBSCRIPTION_EXISTED] = "no subscription existed",
        [MQ_RC_CONTINUE_AUTHENTICATION] = "continue authentication",
        [MQ_RC_REAUTHENTICATE] = "re-authenticate",
        [MQ_RC_UNSPECIFIED_ERROR] = "unspecified error",
        [MQ_RC_MALFORMED_PACKET] = "malformed packet",
        [MQ_RC_PROTOCOL_ERROR] = "protocol error",
        [MQ_RC_IMPLEMENTATION_SPECIFIC_ERROR] = "implementation specific error",
        [MQ_RC_UNSUPPORTED_PROTOCOL_VERSION] = "unsupported protocol version",
        [MQ_RC_CLIENT_ID_NOT_VALID] = "client identifier not valid",
        [MQ_RC_BAD_USERNAME_OR_PASSWORD] = "bad user name or password",
        [MQ_RC_NOT_AUTHORIZED] = "not authorized",
        [MQ_RC_SERVER_UNAVAILABLE] = "server unavailable",
        [MQ_RC_SERVER_BUSY] = "server busy",
        [MQ_RC_BANNED] = "banned",
        [MQ_RC_SERVER_SHUTTING_DOWN] = "server shutting down",
        [MQ_RC_BAD_AUTHENTICATION_METHOD] = "bad authentication method",
        [MQ_RC_KEEP_ALIVE_TIMEOUT] = "keep alive timeout",
        [MQ_RC_SESSION_TAKEN_OVER] = "session taken over",
        [MQ_RC_TOPIC_FILTER_INVALID] = "topic filter invalid",
        [MQ_RC_TOPIC_NAME_INVALID] = "topic name invalid",
        [MQ_RC_PACKET_ID_IN_USE] = "packet identifier in use",
        [MQ_RC_PACKET_ID_NOT_FOUND] = "packet identifier not found",
        [MQ_RC_RECEIVE_MAXIMUM_EXCEEDED] = "receive maximum exceeded",
        [MQ_RC_TOPIC_ALIAS_INVALID] = "topic alias invalid",
        [MQ_RC_PACKET_TOO_LARGE] = "packet too large",
        [MQ_RC_MESSAGE_RATE_TOO_HIGH] = "message rate too high",
        [MQ_RC_QUOTA_EXCEEDED] = "quota exceeded",
        [MQ_RC_ADMINISTRATIVE_ACTION] = "administrative action",
        [MQ_RC_PAYLOAD_FORMAT_INVALID] = "payload format invalid",
        [MQ_RC_RETAIN_NOT_SUPPORTED] = "retain not supported",
        [MQ_RC_QOS_NOT_SUPPORTED] = "QoS not supported",
        [MQ_RC_USE_ANOTHER_SERVER] = "use another server",
        [MQ_RC_SERVER_MOVED] = "server moved",
        [MQ_RC_SHARED_SUBSCRIPTIONS_NOT_SUPPORTED] = "shared subscriptions not supported",
        [MQ_RC_CONNECTION_RATE_EXCEEDED] = "connection rate exceeded",
        [MQ_RC_MAXIMUM_CONNECT_TIME] = "maximum connect time",
        [MQ_RC_SUBSCRIPTION_IDS_NOT_SUPPORTED] = "subscription identifiers not supported",
        [MQ_RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED] = "wildcard subscriptions not supported",
    };
    return names[code] ? names[code] : "unknown reason code";
}

bool codec_reason_allowed(unsigned type, uint8_t code)
{
    switch (type) {
    case MQ_CONNACK: /* 3.2.2.2 */
        switch (code) {
        case 0x00:
        case 0x80:
        case 0x81:
        case 0x82:
        case 0x83:
        case 0x84:
        case 0x85:
        case 0x86:
        case 0x87:
        case 0x88:
        case 0x89:
        case 0x8A:
        case 0x8C:
        case 0x90:
        case 0x95:
        case 0x97:
        case 0x99:
        case 0x9A:
        case 0x9B:
        case 0x9C:
        case 0x9D:
        case 0x9F: return true;
        default: return false;
        }
    case MQ_PUBACK: /* 3.4.2.1 */
    case MQ_PUBREC: /* 3.5.2.1: the same table */
        switch (code) {
        case 0x00:
        case 0x10:
        case 0x80:
        case 0x83:
        case 0x87:
        case 0x90:
        case 0x91:
        case 0x97:
        case 0x99: return true;
        default: return false;
        }
    case MQ_PUBREL: /* 3.6.2.1 */
    case MQ_PUBCOMP: /* 3.7.2.1 */ return code == 0x00 || code == 0x92;
    case MQ_SUBACK: /* 3.9.3 */
        switch (code) {
        case 0x00:
        case 0x01:
        case 0x02:
        case 0x80:
        case 0x83:
        case 0x87:
        case 0x8F:
        case 0x91:
        case 0x97:
        case 0x9E:
        case 0xA1:
        case 0xA2: return true;
        default: return false;
        }
    case MQ_UNSUBACK: /* 3.11.3 */
        switch (code) {
        case 0x00:
        case 0x11:
        case 0x80:
        case 0x83:
        case 0x87:
        case 0x8F:
        case 0x91: return true;
        default: return false;
        }
    case MQ_DISCONNECT: /* 3.14.2.1 */
        switch (code) {
        case 0x00:
        case 0x04:
        case 0x80:
        case 0x81:
        case 0x82:
        case 0x83:
        case 0x87:
        case 0x89:
        case 0x8B:
        case 0x8D:
        case 0x8E:
        case 0x8F:
        case 0x90:
        case 0x93:
        case 0x94:
        case 0x95:
        case 0x96:
        case 0x97:
        case 0x98:
        case 0x99:
        case 0x9A:
        case 0x9B:
        case 0x9C:
        case 0x9D:
        case 0x9E:
        case 0x9F:
        case 0xA0:
        case 0xA1:
        case 0xA2: return true;
        default: return false;
        }
    case MQ_AUTH: /* 3.15.2.1 */ return code == 0x00 || code == 0x18 || code == 0x19;
    default: return false;
    }
}

uint8_t codec_error_reason(int err)
{
    switch (err) {
    /* 4.13.1: bytes that cannot be parsed as the standard describes. */
    case MQ_ERR_MALFORMED:
    case MQ_ERR_BAD_TYPE:
    case MQ_ERR_BAD_FLAGS:
    case MQ_ERR_BAD_REMAINING_LENGTH:
    case MQ_ERR_QOS3: /* PUBLISH [MQTT-3.3.1-4] and the will (3.1.2.6): both Malformed */
    case MQ_ERR_TRUNCATED:
    case MQ_ERR_TRAILING:
    case MQ_ERR_BAD_UTF8:
    case MQ_ERR_UTF8_NULL:
    case MQ_ERR_UTF8_SURROGATE:
    case MQ_ERR_CONNECT_RESERVED: /* [MQTT-3.1.2-3] */
    case MQ_ERR_WILL_FLAGS:
    case MQ_ERR_PASSWORD_WITHOUT_USER: /* 3.x only: legal in MQTT 5 */
    case MQ_ERR_SUBSCRIBE_RESERVED:    /* [MQTT-3.8.3-5] */
    case MQ_ERR_EMPTY_TOPIC:
    case MQ_ERR_WILDCARD_IN_TOPIC:
    case MQ_ERR_BAD_FILTER:
    case MQ_ERR_TOO_MANY_FILTERS:
    case MQ_ERR_BAD_VARINT: /* [MQTT-1.5.5-1] */
    case MQ_ERR_PROPERTY_NOT_ALLOWED: /* 2.2.2.2 */ return MQ_RC_MALFORMED_PACKET;
    /* 4.13.2: well-formed data this packet, or this moment, does not allow. */
    case MQ_ERR_PACKET_ID_ZERO:
    case MQ_ERR_EMPTY_SUBSCRIBE: /* 3.8.3, 3.10.3: "a Protocol Error" */
    case MQ_ERR_BAD_RETURN_CODE:
    case MQ_ERR_DUPLICATE_PROPERTY:
    case MQ_ERR_PROPERTY_VALUE:
    case MQ_ERR_RESPONSE_TOPIC:
    case MQ_ERR_AUTH_METHOD:
    case MQ_ERR_BAD_REASON_CODE:
    case MQ_ERR_EMPTY_TOPIC_NO_ALIAS: /* 3.3.2.1 */
    case MQ_ERR_SUBSCRIBE_QOS3:       /* 3.8.3.1 */
    case MQ_ERR_RETAIN_HANDLING:      /* 3.8.3.1 */
    case MQ_ERR_NO_LOCAL_SHARED:      /* [MQTT-3.8.3-4] */
    case MQ_ERR_FIRST_NOT_CONNECT:
    case MQ_ERR_SECOND_CONNECT:
    case MQ_ERR_UNEXPECTED_PACKET:
    case MQ_ERR_UNKNOWN_PACKET_ID: return MQ_RC_PROTOCOL_ERROR;
    case MQ_ERR_TOPIC_ALIAS_ZERO: return MQ_RC_TOPIC_ALIAS_INVALID;
    case MQ_ERR_TOO_LARGE:
    case MQ_ERR_CONNECT_TOO_LARGE: return MQ_RC_PACKET_TOO_LARGE;
    case MQ_ERR_BAD_PROTOCOL_NAME: /* [MQTT-3.1.2-1] */
    case MQ_ERR_BAD_PROTOCOL_LEVEL: return MQ_RC_UNSUPPORTED_PROTOCOL_VERSION;
    case MQ_ERR_NO_CLIENT_ID: return MQ_RC_CLIENT_ID_NOT_VALID;
    default: return MQ_RC_UNSPECIFIED_ERROR;
    }
}

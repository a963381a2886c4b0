/* proto_internal.h - what the proto_*.c files share; not part of the public API. */
#ifndef MIDGE_PROTO_INTERNAL_H
#define MIDGE_PROTO_INTERNAL_H

#include "midge/codec.h"
#include "midge/proto.h"
#include "midge/session.h"

struct mq_session;
struct mq_msg;

/* proto.c */
/* The key of a session in broker->sessions: its client id. */
const void *broker_session_key(const void *session, size_t *len);
void conn_send(struct mq_conn *c, const uint8_t *bytes, size_t len);
/* The connection's extension block (proto.h), allocated on first use; NULL on out of
 * memory. */
struct mq_conn_ext *conn_ext(struct mq_conn *c);
/* Close c: log "client ID disconnected: reason" (or the pre-CONNECT form), publish
 * the will when publish_will, detach the session and ask the sink to close. */
void conn_close(struct mq_conn *c, bool publish_will, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* conn_close, telling an accepted MQTT 5 client why first: DISCONNECT with reason (an
 * enum mq_reason) and, when it allows them, the log reason as Reason String. The log line
 * names the reason code in words. */
void conn_close_rc(struct mq_conn *c, uint8_t reason, bool publish_will, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* conn_close without the log line, for callers that log their own (takeover). */
void conn_shutdown(struct mq_conn *c, bool publish_will);
/* Count a protocol error of c and close it with reason (MQTT 5), publishing its will. */
void conn_violation(struct mq_conn *c, uint8_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* proto_send.c: outgoing packets in the connection's dialect. */
/* Room for any acknowledgement ack_bytes builds (with a Reason String of up to 256 bytes). */
#define MQ_ACK_MAX (MQ_ACK5_HEADER_MAX + 300)
/* The bytes of PUBACK, PUBREC, PUBREL or PUBCOMP for packet_id into out (MQ_ACK_MAX bytes):
 * 4 bytes for MQTT 3.x; for MQTT 5 with reason (an enum mq_reason) and, for a failure,
 * why as Reason String when the client allows it and it fits its Maximum Packet Size.
 * Returns the size. ack_bytes is the call; ack5_bytes its MQTT 5 half. */
size_t ack5_bytes(const struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                  uint8_t reason, const char *why, uint8_t *out, size_t cap);
/* Inline for MQTT 3.x, whose acknowledgements are on every QoS 1 and 2 message's path. */
static inline size_t ack_bytes(const struct mq_conn *c, enum mq_packet_type type,
                               uint16_t packet_id, uint8_t reason, const char *why, uint8_t *out,
                               size_t cap)
{
    if (conn_v5(c))
        return ack5_bytes(c, type, packet_id, reason, why, out, cap);
    /* PUBREL is the only acknowledgement with flags (0b0010, [MQTT-3.6.1-1]). */
    out[0] = (uint8_t)(type << 4 | (type == MQ_PUBREL ? 2 : 0));
    out[1] = 2;
    out[2] = (uint8_t)(packet_id >> 8);
    out[3] = (uint8_t)packet_id;
    return 4;
}
void conn_send_ack(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id);
void conn_send_ack_rc(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                      uint8_t reason, const char *why);
/* The start of a SUBACK or UNSUBACK with `codes` reason codes to follow: fixed header,
 * packet id and (MQTT 5) an empty property length. out holds 10 bytes. Returns its size.
 * An MQTT 3.x UNSUBACK has no codes (pass 0). */
size_t suback_header(const struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                     uint32_t codes, uint8_t *out);
/* MQTT 5 only, after a successful CONNACK: DISCONNECT with reason and why as Reason
 * String (when allowed). A no-op for 3.x connections. */
void conn_send_disconnect(struct mq_conn *c, uint8_t reason, const char *why);
/* PUBLISH m to c in its dialect; for MQTT 5 with the remaining Message Expiry Interval,
 * ids (may be NULL) as Subscription Identifiers, an outbound topic alias when configured,
 * and m's forwarded properties. Returns false, having sent nothing, when the packet
 * would exceed the client's Maximum Packet Size. */
bool conn_send_publish(struct mq_conn *c, const struct mq_msg *m, uint8_t qos, bool retain,
                       bool dup, uint16_t packet_id, const uint32_t *ids, size_t n_ids);
/* True when m goes to c within its Maximum Packet Size whatever the per-copy properties
 * (a QoS 1/2 message is checked before it takes a packet id: one that cannot be sent is
 * dropped as if delivered, [MQTT-3.1.2-25]). */
bool conn_publish_fits(const struct mq_conn *c, const struct mq_msg *m, uint8_t qos,
                       const uint32_t *ids, size_t n_ids);
/* Printable client id (or "(not connected)"). */
const char *conn_name(const struct mq_conn *c);

/* True when topic (or filter) has more levels than max_topic_levels allows. */
bool topic_too_deep(const struct mq_broker *b, const uint8_t *topic, size_t len);

/* True when the session's listener ACL (if any) lets it do access on topic. Inline, as
 * every PUBLISH and every delivery asks, and most listeners have no ACL. */
bool session_acl_allows(const struct mq_session *s, const struct mq_acl *acl, const uint8_t *topic,
                        size_t len, int access);
static inline bool session_may(const struct mq_session *s, const uint8_t *topic, size_t len,
                               int access)
{
    const struct mq_acl *acl = s->listener ? s->listener->acl : NULL;
    return !acl || session_acl_allows(s, acl, topic, len, access);
}

/* proto_connect.c */
void handle_connect(struct mq_conn *c, const struct mq_packet *p, int decode_err);
void handle_disconnect(struct mq_conn *c, uint8_t reason, const struct mq_props *props);
/* Detach the connection from its session; a clean session is destroyed. */
void session_detach(struct mq_conn *c);
/* Remove a session from the broker entirely (subscriptions, table, memory), dropping a
 * will waiting for it unpublished (broker_free). */
void session_destroy(struct mq_broker *b, struct mq_session *s);
/* A session ends (expiry, a clean start replacing it): its waiting will is published, its
 * stored state deleted, then session_destroy. */
void session_end(struct mq_broker *b, struct mq_session *s);
/* Publish a will of session s (may be NULL) if its ACL lets it write the topic. */
void will_publish(struct mq_broker *b, struct mq_session *s, struct mq_msg *will);
/* Hold will (a new reference is taken) for delay_s seconds for session s. 0 or NOMEM. */
int will_delay(struct mq_broker *b, struct mq_session *s, struct mq_msg *will, uint32_t delay_s);
/* The will waiting for s, removed from the list (the reference moves to the caller). */
struct mq_msg *will_take(struct mq_broker *b, struct mq_session *s);
/* Publish the waiting wills whose delay has run out (broker_tick). */
void wills_due(struct mq_broker *b);
/* Publish every waiting will now (shutdown). */
void wills_publish_all(struct mq_broker *b);
/* Drop every waiting will unpublished (broker_free). */
void wills_free(struct mq_broker *b);

/* proto_publish.c */
void handle_publish(struct mq_conn *c, const struct mq_publish *p, const struct mq_props *props);
void handle_puback(struct mq_conn *c, uint16_t packet_id, uint8_t reason);
void handle_pubrec(struct mq_conn *c, uint16_t packet_id, uint8_t reason);
void handle_pubrel(struct mq_conn *c, uint16_t packet_id);
void handle_pubcomp(struct mq_conn *c, uint16_t packet_id);
/* A new message (refcount 1, NULL on out of memory) with what of an MQTT 5 PUBLISH or will
 * is forwarded to subscribers (props may be NULL): Payload Format Indicator, Content
 * Type, Response Topic, Correlation Data and User Properties in their order, and the
 * Message Expiry Interval as a deadline on b's clock. */
struct mq_msg *proto_msg_new(const struct mq_broker *b, const uint8_t *topic, uint16_t topic_len,
                             const uint8_t *payload, uint32_t payload_len, uint8_t qos, bool retain,
                             const struct mq_props *props);
/* Publish an application message to every matching subscriber (and the retained
 * store when its retain flag is set). m is borrowed. from: the connection that published
 * it, or NULL (a will, $SYS): a bridge is never sent back its own messages, and the
 * publisher's own copy is queued rather than sent, so that the caller can acknowledge the
 * PUBLISH first and then drain (session_drain_queue) — the order Mosquitto's clients see.
 * Returns how many sessions it was delivered (or queued) to. */
unsigned broker_publish(struct mq_broker *b, struct mq_msg *m, const struct mq_conn *from);
/* How session_deliver treats one delivery. */
enum mq_deliver_flags {
    MQ_DELIVER_RETAIN = 1, /* send with the retain flag (retained, on subscribe) */
    MQ_DELIVER_FORCE = 2,  /* bypass the queue caps (retained on subscribe) */
    MQ_DELIVER_HOLD = 4,   /* queue even when it could go out now (see broker_publish) */
};
/* How one message goes to one session (session_deliver). */
struct mq_route {
    uint8_t qos;         /* already downgraded to the grant */
    unsigned flags;      /* enum mq_deliver_flags */
    const uint32_t *ids; /* the Subscription Identifiers it carries (borrowed, copied) */
    size_t n_ids;
    uint32_t share_id; /* the shared subscription group it goes through, or 0 */
};
/* Deliver m to session s as r says; queue when the window is full or the client offline.
 * An expired message is dropped. */
void session_deliver(struct mq_broker *b, struct mq_session *s, struct mq_msg *m,
                     const struct mq_route *r);
/* Move queued messages into the window while it has room (and page in spilled ones). */
void session_drain_queue(struct mq_broker *b, struct mq_session *s);
/* After (re)connect: resend in-flight messages with DUP, then drain the queue. */
void session_resume_delivery(struct mq_broker *b, struct mq_session *s);

/* proto_subscribe.c (and shared subscriptions: proto_share.c) */
/* Route m through the shared subscription groups whose filter matches it: each gives it to
 * one member (round robin over connected members, else a persistent one that queues it).
 * Returns how many groups delivered it. */
unsigned share_route(struct mq_broker *b, struct mq_msg *m);
/* s leaves every shared subscription group (its session ends). Messages it held from them
 * that no member has started to receive (queued, and QoS 1 in flight) go to another
 * member when rehome ([MQTT-4.8.2-4], [MQTT-4.8.2-5]: QoS 2 in flight never does). */
void share_leave_all(struct mq_broker *b, struct mq_session *s, bool rehome);
/* s joins group "name/filter" of a "$share/name/filter" filter with grant. Returns a
 * SUBACK-style result: 0 on success, MQ_ERR_NOMEM, MQ_ERR_INVAL for a malformed one. */
int share_join(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len,
               uint32_t grant, bool *existed);
/* s leaves the group of a "$share/..." filter; true when it was a member. */
bool share_leave(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len);
void share_free_all(struct mq_broker *b);
void handle_subscribe(struct mq_conn *c, const struct mq_topic_list *l,
                      const struct mq_props *props);
void handle_unsubscribe(struct mq_conn *c, const struct mq_topic_list *l);

/* proto_persist.c: record a change in the durable store. Each is a no-op without a store,
 * and for clean sessions (only persistent sessions and retained messages are stored). */
bool persist_session_on(const struct mq_broker *b, const struct mq_session *s);
void persist_session_put(struct mq_broker *b, struct mq_session *s);
void persist_session_delete(struct mq_broker *b, struct mq_session *s);
void persist_sub(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len,
                 uint32_t grant);
void persist_unsub(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len);
/* Store an outgoing QoS 1/2 message as queued (QoS 0 too for a session that queues it in
 * line, session_queues_qos0), with its Subscription Identifiers; returns its seq, or 0 when
 * not stored. */
uint64_t persist_msg_add(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m,
                         uint8_t qos, bool retain, const uint32_t *ids, size_t n_ids);
struct mq_inflight;
/* The in-flight entry's packet id and state changed (sent, PUBREC received). */
void persist_msg_state(struct mq_broker *b, struct mq_session *s, const struct mq_inflight *e);
/* Message seq is finished or dropped. */
void persist_msg_done(struct mq_broker *b, struct mq_session *s, uint64_t seq);
/* Inbound QoS 2 packet id now held (PUBREC sent) or released (PUBREL). */
void persist_qos2_in(struct mq_broker *b, struct mq_session *s, uint16_t packet_id, bool held);
void persist_retain(struct mq_broker *b, const struct mq_msg *m);
/* A will now waits for its delay (MQTT 5) for persistent session s, or no longer does
 * (published, cancelled, or its session gone). */
void persist_will_put(struct mq_broker *b, struct mq_session *s, const struct mq_msg *will,
                      uint64_t due_ms);
void persist_will_delete(struct mq_broker *b, struct mq_session *s);
/* Send a packet that reveals the changes recorded since changes_before (a value of
 * b->store_changes): at once, or under durability ack once they are committed. */
void conn_send_durable(struct mq_conn *c, const uint8_t *bytes, size_t len,
                       uint64_t changes_before);
void conn_ack_durable(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                      uint8_t reason, const char *why, uint64_t changes_before);
void conn_publish_durable(struct mq_conn *c, struct mq_msg *m, uint8_t qos, bool retain, bool dup,
                          uint16_t packet_id, const uint32_t *ids, size_t n_ids,
                          uint64_t changes_before);
/* The connection is going away: its waiting packets are dropped. */
void conn_forget_deferred(struct mq_conn *c);
void persist_free(struct mq_broker *b);
/* Store a message for s on disk only, behind its memory queue (what persist_msg_add
 * stores); false when it could not be stored. */
bool persist_spill(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m, uint8_t qos,
                   bool retain, const uint32_t *ids, size_t n_ids);
/* s's memory queue ran low: ask for the next page of its spilled messages. */
void persist_page_in(struct mq_broker *b, struct mq_session *s);

#endif

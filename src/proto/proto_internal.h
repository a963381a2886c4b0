/* proto_internal.h - what the proto_*.c files share; not part of the public API. */
#ifndef MIDGE_PROTO_INTERNAL_H
#define MIDGE_PROTO_INTERNAL_H

#include "midge/codec.h"
#include "midge/proto.h"

struct mq_session;
struct mq_msg;

/* proto.c */
/* The key of a session in broker->sessions: its client id. */
const void *broker_session_key(const void *session, size_t *len);
void conn_send(struct mq_conn *c, const uint8_t *bytes, size_t len);
void conn_send_ack(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id);
/* The 4 bytes of PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK for packet_id. */
static inline void ack_packet(uint8_t pkt[4], enum mq_packet_type type, uint16_t packet_id)
{
    /* PUBREL is the only acknowledgement with flags (0b0010, [MQTT-3.6.1-1]). */
    pkt[0] = (uint8_t)(type << 4 | (type == MQ_PUBREL ? 2 : 0));
    pkt[1] = 2;
    pkt[2] = (uint8_t)(packet_id >> 8);
    pkt[3] = (uint8_t)packet_id;
}
void conn_send_publish(struct mq_conn *c, const struct mq_msg *m, uint8_t qos, bool retain,
                       bool dup, uint16_t packet_id);
/* Close c: log "client ID disconnected: reason" (or the pre-CONNECT form), publish
 * the will when publish_will, detach the session and ask the sink to close. */
void conn_close(struct mq_conn *c, bool publish_will, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* conn_close without the log line, for callers that log their own (takeover). */
void conn_shutdown(struct mq_conn *c, bool publish_will);
/* Printable client id (or "(not connected)"). */
const char *conn_name(const struct mq_conn *c);

/* True when topic (or filter) has more levels than max_topic_levels allows. */
bool topic_too_deep(const struct mq_broker *b, const uint8_t *topic, size_t len);

/* True when the session's listener ACL (if any) lets it do access on topic. */
bool session_may(const struct mq_session *s, const uint8_t *topic, size_t len, int access);

/* proto_connect.c */
void handle_connect(struct mq_conn *c, const struct mq_packet *p, int decode_err);
void handle_disconnect(struct mq_conn *c);
/* Detach the connection from its session; a clean session is destroyed. */
void session_detach(struct mq_conn *c);
/* Remove a session from the broker entirely (subscriptions, table, memory). */
void session_destroy(struct mq_broker *b, struct mq_session *s);

/* proto_publish.c */
void handle_publish(struct mq_conn *c, const struct mq_publish *p);
void handle_puback(struct mq_conn *c, uint16_t packet_id);
void handle_pubrec(struct mq_conn *c, uint16_t packet_id);
void handle_pubrel(struct mq_conn *c, uint16_t packet_id);
void handle_pubcomp(struct mq_conn *c, uint16_t packet_id);
/* Publish an application message to every matching subscriber (and the retained
 * store when its retain flag is set). m is borrowed. from: the connection that published
 * it, or NULL (a will, $SYS): a bridge is never sent back its own messages, and the
 * publisher's own copy is queued rather than sent, so that the caller can acknowledge the
 * PUBLISH first and then drain (session_drain_queue) — the order Mosquitto's clients see. */
void broker_publish(struct mq_broker *b, struct mq_msg *m, const struct mq_conn *from);
/* How session_deliver treats one delivery. */
enum mq_deliver_flags {
    MQ_DELIVER_RETAIN = 1, /* send with the retain flag (retained, on subscribe) */
    MQ_DELIVER_FORCE = 2,  /* bypass the queue caps (retained on subscribe) */
    MQ_DELIVER_HOLD = 4,   /* queue even when it could go out now (see broker_publish) */
};
/* Deliver m to session s at qos (already downgraded); queue when the window is
 * full or the client offline. flags: enum mq_deliver_flags. */
void session_deliver(struct mq_broker *b, struct mq_session *s, struct mq_msg *m, uint8_t qos,
                     unsigned flags);
/* Move queued messages into the window while it has room (and page in spilled ones). */
void session_drain_queue(struct mq_broker *b, struct mq_session *s);
/* After (re)connect: resend in-flight messages with DUP, then drain the queue. */
void session_resume_delivery(struct mq_broker *b, struct mq_session *s);

/* proto_subscribe.c */
void handle_subscribe(struct mq_conn *c, const struct mq_topic_list *l);
void handle_unsubscribe(struct mq_conn *c, const struct mq_topic_list *l);

/* proto_persist.c: record a change in the durable store. Each is a no-op without a store,
 * and for clean sessions (only persistent sessions and retained messages are stored). */
bool persist_session_on(const struct mq_broker *b, const struct mq_session *s);
void persist_session_put(struct mq_broker *b, struct mq_session *s);
void persist_session_delete(struct mq_broker *b, struct mq_session *s);
void persist_sub(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len,
                 uint8_t qos);
void persist_unsub(struct mq_broker *b, struct mq_session *s, const uint8_t *filter, uint16_t len);
/* Store an outgoing QoS 1/2 message as queued; returns its seq, or 0 when not stored. */
uint64_t persist_msg_add(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m,
                         uint8_t qos, bool retain);
struct mq_inflight;
/* The in-flight entry's packet id and state changed (sent, PUBREC received). */
void persist_msg_state(struct mq_broker *b, struct mq_session *s, const struct mq_inflight *e);
/* Message seq is finished or dropped. */
void persist_msg_done(struct mq_broker *b, struct mq_session *s, uint64_t seq);
/* Inbound QoS 2 packet id now held (PUBREC sent) or released (PUBREL). */
void persist_qos2_in(struct mq_broker *b, struct mq_session *s, uint16_t packet_id, bool held);
void persist_retain(struct mq_broker *b, const struct mq_msg *m);
/* Send a packet that reveals the changes recorded since changes_before (a value of
 * b->store_changes): at once, or under durability ack once they are committed. */
void conn_send_durable(struct mq_conn *c, const uint8_t *bytes, size_t len,
                       uint64_t changes_before);
void conn_ack_durable(struct mq_conn *c, enum mq_packet_type type, uint16_t packet_id,
                      uint64_t changes_before);
void conn_publish_durable(struct mq_conn *c, struct mq_msg *m, uint8_t qos, bool retain, bool dup,
                          uint16_t packet_id, uint64_t changes_before);
/* The connection is going away: its waiting packets are dropped. */
void conn_forget_deferred(struct mq_conn *c);
void persist_free(struct mq_broker *b);
/* Store a QoS 1/2 message for s on disk only, behind its memory queue; false when it could
 * not be stored. */
bool persist_spill(struct mq_broker *b, struct mq_session *s, const struct mq_msg *m,
                   uint8_t qos, bool retain);
/* s's memory queue ran low: ask for the next page of its spilled messages. */
void persist_page_in(struct mq_broker *b, struct mq_session *s);

#endif

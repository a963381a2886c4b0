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
 * store when its retain flag is set). m is borrowed. */
void broker_publish(struct mq_broker *b, struct mq_msg *m);
/* Deliver m to session s at qos (already downgraded); queue when the window is
 * full or the client offline. force bypasses the queue cap (retained on subscribe). */
void session_deliver(struct mq_broker *b, struct mq_session *s, struct mq_msg *m, uint8_t qos,
                     bool retain, bool force);
/* After (re)connect: resend in-flight messages with DUP, then drain the queue. */
void session_resume_delivery(struct mq_broker *b, struct mq_session *s);

/* proto_subscribe.c */
void handle_subscribe(struct mq_conn *c, const struct mq_topic_list *l);
void handle_unsubscribe(struct mq_conn *c, const struct mq_topic_list *l);

#endif

/* proto_fixture.h - whole MQTT conversations through the protocol layer (src/proto/) over
 * a fake sink, shared by the proto unit tests (test_proto.c for MQTT 3.1.1, test_proto5.c
 * for MQTT 5): no sockets, no event loop, no stubs.
 *
 * Each test gets a broker built on config_defaults() plus one hand-made listener (setup,
 * teardown). A connection's `io` is a struct fake_io that captures every byte the broker
 * writes; tests build client packets with codec_encode and parse the broker's output with
 * codec_decode in the dialect the connection speaks. The sink's close only records the
 * request: as in net/, the test calls proto_conn_closed later (io_gone), standing in for the
 * close callback. teardown checks the counters against what went out and that nothing was
 * written after a close; ASan checks every reference is released when the broker is freed.
 */
#ifndef MIDGE_TEST_PROTO_FIXTURE_H
#define MIDGE_TEST_PROTO_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "midge/codec.h"
#include "midge/config.h"
#include "midge/hmap.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/proto.h"
#include "midge/retain.h"
#include "midge/session.h"
#include "midge/store.h"

#define IO_CAP (1u << 18) /* bytes of output one fake connection can capture */
#define MAX_IOS 32
#define T0 1000000u /* broker clock at the start of every test, in ms */

struct fake_io {
    struct mq_conn *conn; /* &conn_state; NULL once proto_conn_closed was called */
    struct mq_conn conn_state;
    uint8_t *out;   /* append-only, so decoded packets stay valid for the whole test */
    size_t len, rd; /* bytes written by the broker / consumed by read_packet */
    int close_requests;
    int writes_after_close;
    uint8_t level; /* the dialect of what the broker wrote (its last protocol level) */
};

struct env {
    struct mq_config cfg;
    struct mq_listener_config listener;
    struct mq_listener_ctx lctx; /* what the server would hand proto: settings + security */
    struct mq_broker *b;
    struct fake_io ios[MAX_IOS];
    size_t nios;
};
extern struct env E;
/* The sink every fake connection writes to (for a test that builds its own broker). */
extern const struct mq_sink_ops fake_sink;

struct will {
    const char *topic, *payload;
    uint8_t qos;
    bool retain;
};

#define EXPECT_BYTES(io, ...)                                                                      \
    do {                                                                                           \
        const uint8_t expected_[] = {__VA_ARGS__};                                                 \
        expect_bytes((io), expected_, sizeof(expected_));                                          \
    } while (0)

int setup(void **state);
int teardown(void **state);
struct fake_io *io_open(void);
void io_gone(struct fake_io *io, const char *reason);
struct mq_session *session_of(struct fake_io *io);
const void *test_session_key(const void *session, size_t *len);
void feed(struct fake_io *io, const uint8_t *buf, size_t len);
size_t encode(const struct mq_packet *p, uint8_t *buf, size_t cap);
void send_packet(struct fake_io *io, const struct mq_packet *p);
struct mq_bytes str(const char *s);
struct mq_packet connect_pkt(const char *id, bool clean, uint16_t keepalive, const struct will *w);
struct mq_packet publish_pkt(const char *topic, const char *payload, uint8_t qos, bool retain,
                             uint16_t packet_id, bool dup);
struct mq_packet ack_pkt(enum mq_packet_type type, uint16_t packet_id);
size_t topic_list_pkt(enum mq_packet_type type, uint16_t packet_id, size_t n,
                      const char *const *filters, const uint8_t *qos, uint8_t *buf, size_t cap);
void send_publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                  bool retain, uint16_t packet_id, bool dup);
void send_ack(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id);
struct mq_packet read_packet(struct fake_io *io);
void expect_nothing(struct fake_io *io);
void expect_bytes(struct fake_io *io, const uint8_t *bytes, size_t len);
void expect_ack(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id);
uint16_t expect_publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                        bool retain, bool dup);
void expect_open(struct fake_io *io);
void expect_close_requested(struct fake_io *io);
struct fake_io *connect_will(const char *id, bool clean, uint16_t keepalive, const struct will *w,
                             bool session_present);
struct fake_io *connect_client(const char *id, bool clean, bool session_present);
struct fake_io *connect_refused(const struct mq_packet *p, uint8_t code);
void subscribe(struct fake_io *io, uint16_t packet_id, const char *filter, uint8_t qos);
void unsubscribe(struct fake_io *io, uint16_t packet_id, const char *filter);
void publish(struct fake_io *io, const char *topic, const char *payload, uint8_t qos, bool retain,
             uint16_t packet_id);
void complete_qos2(struct fake_io *io, uint16_t packet_id);

/* ---- MQTT 5 clients ---- */

/* A property block under construction (codec_prop_put_* on .w). */
struct props {
    uint8_t buf[2048];
    struct mq_prop_writer w;
};
void props_init(struct props *pp);

/* An MQTT 5 CONNECT: props and will_props (may be NULL) are its two property blocks. */
struct mq_packet connect5_pkt(const char *id, bool clean, uint16_t keepalive, const struct will *w,
                              const struct props *props, const struct props *will_props);
/* Open a connection and send an MQTT 5 CONNECT with Session Expiry Interval expiry (0: none
 * sent); the CONNACK must accept it with session present as given. Returns the io; *connack
 * (optional) receives the CONNACK. */
struct fake_io *connect5(const char *id, bool clean, uint32_t expiry, bool session_present,
                         struct mq_packet *connack);
/* The next packet must be of this type. */
struct mq_packet expect_type(struct fake_io *io, enum mq_packet_type type);
/* The next packet must be DISCONNECT with this reason code, and the connection closing. */
void expect_disconnect(struct fake_io *io, uint8_t reason);
/* An MQTT 5 PUBACK/PUBREC/PUBREL/PUBCOMP with this reason, and no properties but a Reason
 * String (not checked). */
void expect_ack5(struct fake_io *io, enum mq_packet_type type, uint16_t packet_id, uint8_t reason);
/* Send an MQTT 5 PUBLISH with the given property block (may be NULL). */
void send_publish5(struct fake_io *io, const char *topic, const char *payload, uint8_t qos,
                   bool retain, uint16_t packet_id, const struct props *props);
/* Send an MQTT 5 SUBSCRIBE of one filter with options (QoS and MQ_SUB_* bits) and a
 * Subscription Identifier (0: none); returns the SUBACK's reason code. */
uint8_t subscribe5(struct fake_io *io, uint16_t packet_id, const char *filter, uint8_t options,
                   uint32_t sub_id);
/* The Subscription Identifiers of a decoded PUBLISH, in order; returns how many. */
size_t publish_sub_ids(const struct mq_packet *p, uint32_t *ids, size_t cap);

#endif

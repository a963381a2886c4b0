/* proto.h - the MQTT rules (3.1, 3.1.1 and 5.0): connections, sessions, routing.
 *
 * proto owns the broker's protocol state (sessions, subscription tree, retained
 * store, counters) and one struct mq_conn per network connection. It reaches the
 * network only through struct mq_sink_ops, which net/ provides and tests fake, so
 * whole MQTT conversations run without sockets. No libuv, no OpenSSL here.
 * Time is whatever the caller last stored in broker->now_ms.
 */
#ifndef MIDGE_PROTO_H
#define MIDGE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "midge/hmap.h"
#include "midge/imap.h"
#include "midge/session.h"
#include "midge/sub_tree.h"

struct mq_acl;
struct mq_config;
struct mq_listener_config;
struct mq_retain;
struct mq_msg;
struct mq_session;
struct mq_store;
struct mq_deferred;
struct mq_conn;

/* One piece of output, for gather writes. */
struct mq_iov {
    const void *base;
    size_t len;
};

/* What proto needs from the transport. Each call names the connection by the mq_conn the
 * transport gave proto_conn_open; as that struct lives inside the transport's own
 * connection struct, the transport finds its state from it (container_of). */
struct mq_sink_ops {
    /* Queue bytes for the connection (copied before returning). */
    void (*write)(struct mq_conn *c, const struct mq_iov *iov, size_t n);
    /* Flush what is queued, then close the connection. proto_conn_closed follows later. */
    void (*close)(struct mq_conn *c);
    /* Bytes written for the connection but not yet taken by the socket (optional). */
    size_t (*backlog)(const struct mq_conn *c);
};

/* What one configured listener means to the protocol: its current settings and the
 * security files loaded for it. The server owns these for its whole run (a reload
 * updates them in place), so connections and sessions may point at them freely. */
struct mq_listener_ctx {
    const struct mq_listener_config *cfg; /* current settings */
    const void *passwd;       /* loaded password file (opaque: see check_password), or NULL */
    const struct mq_acl *acl; /* loaded ACL, or NULL (everything allowed) */
    unsigned clients;         /* open connections, for max_connections */
};

/* Password check, provided by the server (hashing needs OpenSSL, which proto must not
 * link): 0 = accepted, 1 = no such user, 2 = wrong password (enum mq_passwd_result). */
typedef int (*mq_check_password_fn)(const void *passwd, const uint8_t *user, size_t user_len,
                                    const uint8_t *password, size_t password_len);

/* Broker-wide counters ($SYS and the closing log). */
struct mq_stats {
    uint64_t clients_total;     /* connections accepted into a session ever */
    uint64_t clients_connected; /* currently connected */
    uint64_t clients_maximum;
    uint64_t msgs_received, msgs_sent; /* all packets */
    uint64_t pub_received, pub_sent;   /* PUBLISH packets */
    uint64_t pub_dropped;              /* queue overflow and slow readers */
    uint64_t pub_dropped_slow;         /* QoS 0 dropped: client not reading */
    uint64_t slow_disconnects;         /* clients closed for not reading */
    uint64_t memory_refusals;          /* CONNECTs and PUBLISHes refused: memory_limit */
    uint64_t bytes_received, bytes_sent;
    uint64_t protocol_errors;
    uint64_t clients_expired; /* persistent sessions removed by persistent_client_expiration */
    uint64_t sockets_total;   /* network connections opened ever (proto_conn_open) */
    /* Currently connected clients by protocol: MQTT 3.1, 3.1.1, 5.0. */
    uint64_t clients_by_version[3];
    uint64_t pub_dropped_too_large; /* not sent: over the client's Maximum Packet Size */
    uint64_t msgs_expired;          /* dropped by their Message Expiry Interval */
};

/* Index into mq_stats.clients_by_version for a protocol level (3, 4 or 5). */
static inline unsigned proto_version_index(uint8_t level)
{
    return level == 5 ? 2 : level == 3 ? 0 : 1;
}

/* A will waiting for its Will Delay Interval (MQTT 5): its connection is gone, its session
 * not (yet). Published when the delay runs out or the session ends, dropped when the
 * client comes back first ([MQTT-3.1.2-8], [MQTT-3.1.3-9]). */
struct mq_pending_will {
    struct mq_pending_will *next;
    struct mq_session *session; /* borrowed: the session it belongs to */
    struct mq_msg *will;        /* reference */
    uint64_t due_ms;
};

struct mq_broker {
    const struct mq_config *cfg; /* borrowed; replaced on reload */
    const struct mq_sink_ops *sink;
    mq_check_password_fn check_password; /* NULL: no password files in use */
    uint64_t now_ms;                     /* set by the caller before every entry point */
    uint64_t start_ms;

    struct mq_imap sessions; /* client id -> struct mq_session (broker_session_key) */
    struct mq_sub_tree *subs;
    struct mq_retain *retained;
    struct mq_sub_vec match_scratch; /* reused by every routing pass */
    uint32_t *id_scratch;            /* one copy's Subscription Identifiers, when several */
    size_t id_scratch_cap;
    /* Shared subscriptions (proto_share.c): a tree of the groups' filters, whose
     * subscribers are the groups, and the groups by "name/filter" and by id. */
    struct mq_sub_tree *shares;
    struct mq_sub_vec share_scratch;
    struct mq_hmap share_groups;
    struct mq_hmap share_by_id;
    uint32_t share_ids; /* last group id handed out */

    struct mq_conn *conns;                 /* doubly linked list of live connections */
    struct mq_pending_will *pending_wills; /* unordered; short (rare MQTT 5 feature) */
    uint64_t auto_id_counter;
    uint64_t last_expiry_scan_ms;
    bool memory_exceeded; /* heap over memory_limit at the last tick */
    bool shutting_down;   /* broker_close_all ran: wills are not delayed any more */
    uint64_t memory_drop_logged_ms;
    struct mq_stats stats;

    /* Durable state (proto_persist.c): NULL when persistence is off. */
    struct mq_store *store;
    bool store_wait;        /* persistence_durability ack: acknowledgements wait for commits */
    int64_t wall_offset_ms; /* wall clock (ms since the epoch) = now_ms + wall_offset_ms */
    uint64_t store_changes; /* changes handed to the store so far */
    uint64_t store_issued;  /* ticket of the last batch handed over */
    /* Acknowledgements waiting for their change to be committed, in the order they were
     * made; entries from `unticketed` on belong to the batch not yet handed over. */
    struct mq_deferred *deferred_head, *deferred_tail, *deferred_unticketed;
    uint64_t deferred_count;
    /* Paging spilled messages back in: the server reads them off the loop. */
    void (*page_read)(void *ctx, const char *client_id, uint16_t client_id_len, uint64_t after_seq,
                      uint32_t max, uint64_t token);
    void *page_ctx;
    uint64_t page_tokens;     /* last token handed out */
    struct mq_hmap page_wait; /* client id -> session waiting for its spill to commit */
};

/* A queued message read back from the store for broker_store_paged. */
struct mq_paged_msg {
    uint64_t seq;
    struct mq_msg *msg;        /* reference, moved to the broker */
    struct mq_sub_ids sub_ids; /* owned, moved to the broker */
    uint8_t qos;
    bool retain;
};

/* How many QoS 1/2 messages a persistent session keeps in memory with a store; the rest of
 * its queue waits on disk and is paged in as the queue drains below half of this. */
#define MQ_QUEUE_IN_MEMORY 1000

/* An inbound or outbound topic alias (MQTT 5): the topic it stands for. */
struct mq_alias {
    char *topic; /* owned, NUL-terminated; NULL when the alias is unused */
    uint16_t len;
};

/* What a connection needs beyond the common case (a plain MQTT 3.1.1 client): the limits
 * an MQTT 5 client negotiated, its topic aliases, and a TLS identity. Allocated on first
 * use (conn_ext), so an idle 3.1.1 connection pays one pointer. */
struct mq_conn_ext {
    char *identity;             /* owned: TLS client certificate CN (use_identity_as_username) */
    uint32_t max_packet_out;    /* the client's Maximum Packet Size; 0 = the MQTT maximum */
    uint16_t receive_max_out;   /* the client's Receive Maximum; 0 until CONNECT (= 65535) */
    uint16_t alias_max_out;     /* aliases midge may send: min(client's, max_topic_alias_broker) */
    uint16_t alias_max_in;      /* the Topic Alias Maximum announced in CONNACK */
    uint16_t inflight_in;       /* QoS 1/2 PUBLISHes received, not yet PUBACK/PUBCOMP'd */
    uint16_t alias_out_used;    /* outbound aliases assigned so far (1..alias_out_used) */
    bool problem_info;          /* Request Problem Information: reason strings may be sent */
    uint32_t will_delay;        /* the will's Will Delay Interval, seconds */
    uint32_t will_expiry;       /* the will's Message Expiry Interval, seconds (0: none) */
    uint32_t session_expiry;    /* the Session Expiry Interval in force for this connection */
    struct mq_alias *alias_in;  /* alias_max_in entries, allocated at the first alias */
    struct mq_alias *alias_out; /* alias_max_out entries, allocated at the first alias */
};

/* A connection as proto sees it. */
struct mq_conn {
    struct mq_broker *broker;
    struct mq_listener_ctx *listener; /* borrowed from the server (lives as long) */
    struct mq_session *session;       /* NULL until CONNECT is accepted */
    struct mq_msg *will;              /* reference; NULL when no will */
    struct mq_conn *prev, *next;
    /* Until CONNECT is accepted: when the connection was made (connect_timeout counts
     * from there, so a byte a minute cannot hold a slot). Then: when the last packet
     * arrived (keepalive). One field, as the two are never needed at once. Like
     * over_limit_since_ms, the low 32 bits of b->now_ms: only ever compared with now
     * through ms_since(), and the longest span read (a keepalive of 65,535 s, times 1.5)
     * is far below the 49.7 days after which 32 bits of milliseconds wrap. 32 bits each
     * keep struct mq_client in glibc's 224-byte chunk (tests/unit/test_footprint.c). */
    uint32_t last_rx_ms;
    uint32_t over_limit_since_ms; /* when its backlog went over client_output_limit, or 0 */
    uint16_t keepalive;
    uint8_t protocol_level;
    bool connected;   /* CONNACK 0 sent */
    bool bridge;      /* CONNECT had the bridge bit: never sent back what it published */
    bool closing;     /* close requested; input ignored, nothing more sent */
    bool not_reading; /* output backlog over twice client_output_limit: close at next tick */
    /* Connected only to set its session up (a bridge's local side while its remote is
     * down): what the session is to be sent waits in it as while offline. */
    bool no_delivery;
    /* Borrowed from the io, which keeps it for the connection's life: "addr:port" for
     * logs. The io may point it at a new name (X-Forwarded-For) that it keeps as long. */
    const char *peer;
    struct mq_conn_ext *ext; /* owned; NULL until MQTT 5 or a TLS identity needs it */
    uint32_t deferred;       /* acknowledgements to it waiting for the store */
    /* What the admin API shows of it (docs/admin.md): when CONNACK 0 went out, in seconds
     * from the broker's start; PUBLISH packets in and out (wrapping at 2^32); bytes of MQTT
     * packets in and out, counted where b->stats counts them. 24 bytes: inline, because a
     * busy client is the one an administrator asks about, and allocating them on first
     * use would give nearly every real client (they publish) a block bigger than this. */
    uint32_t connected_s;
    uint32_t pub_in, pub_out;
    uint64_t bytes_in, bytes_out;
};

/* Milliseconds from then (the low 32 bits of a broker time, as mq_conn keeps them) to
 * now: right across a wrap of the 32 bits, for spans under 49.7 days. */
static inline uint32_t ms_since(uint64_t now_ms, uint32_t then)
{
    return (uint32_t)now_ms - then;
}

/* True for an MQTT 5 connection (protocol level 5, set when its CONNECT is read). */
static inline bool conn_v5(const struct mq_conn *c)
{
    return c->protocol_level == 5;
}

/* New broker using cfg (borrowed, must outlive the broker or be replaced with
 * broker_set_config) and the sink. NULL on out of memory. */
struct mq_broker *broker_new(const struct mq_config *cfg, const struct mq_sink_ops *sink,
                             uint64_t now_ms);

/* Free all state. Every connection must already be gone (proto_conn_closed). */
void broker_free(struct mq_broker *b);

/* Switch to a new configuration (reload). cfg is borrowed. */
void broker_set_config(struct mq_broker *b, const struct mq_config *cfg);

/* Periodic work: keepalive timeouts. Call a few times a second. */
void broker_tick(struct mq_broker *b);

/* A new network connection, in storage the io owns (usually inside its own connection
 * struct, so a connection costs one allocation): c is initialised and stays in proto's
 * hands until proto_conn_closed returns. peer is borrowed: it must stay valid until
 * then (the io may replace it, see mq_conn.peer). */
void proto_conn_open(struct mq_conn *c, struct mq_broker *b, struct mq_listener_ctx *listener,
                     const char *peer);

/* The transport authenticated the peer (TLS client certificate): with
 * use_identity_as_username this becomes the client's user name. id is copied.
 * Returns 0 or MQ_ERR_NOMEM. */
int proto_conn_set_identity(struct mq_conn *c, const char *id);

/* Bytes arrived. Decodes and handles every complete packet in buf[0..len) and
 * returns how many bytes were consumed; the caller keeps the rest for the next
 * call. On a protocol error the connection is closed (sink close) and len is
 * returned. *need (optional) receives the total size of the partial packet at the
 * end when its fixed header is complete, else 0, so the caller can size its buffer. */
size_t proto_conn_input(struct mq_conn *c, const uint8_t *buf, size_t len, size_t *need);

/* The connection's output backlog fell (a write completed): send what waited for it. */
void proto_conn_drained(struct mq_conn *c);

/* The network connection is gone (peer closed, error, or after sink close).
 * reason is used for the log line when proto did not close it itself.
 * Proto holds no pointer to c afterwards: the io may free or reuse its storage. */
void proto_conn_closed(struct mq_conn *c, const char *reason);

/*
 * Durable state (persistence true). The server opens the store and owns it; proto records
 * every change that must survive a restart and holds back the acknowledgements that promise
 * one until the store says it is committed.
 */

/* Load what store holds into the broker (which must have no sessions yet: start-up), then
 * record every later change in it. wait_for_commit: persistence_durability ack.
 * wall_offset_ms: wall clock minus now_ms, for session last-seen times that survive a
 * restart. Returns 0 or a negative enum mq_err (logged); the broker then has no store. */
int broker_store_attach(struct mq_broker *b, struct mq_store *store, bool wait_for_commit,
                        int64_t wall_offset_ms);

/* The end of a loop turn: hand the changes made since the last call to the store as one
 * batch, and send acknowledgements whose changes are already committed. */
void broker_store_flush(struct mq_broker *b);

/* The store committed a batch: send the acknowledgements that waited for it. */
void broker_store_committed(struct mq_broker *b);

/* The page read that page_read started for client_id finished (any order, any time):
 * msgs[0..n) in seq order, all with seq > its after_seq; err < 0 when the read failed. The
 * references in msgs move to the broker, which discards a page its session no longer
 * waits for (session gone, token mismatch). */
void broker_store_paged(struct mq_broker *b, const char *client_id, uint16_t client_id_len,
                        uint64_t token, struct mq_paged_msg *msgs, size_t n, int err);

/* Publish a message as the broker itself, as $SYS values and wills are (a bridge's
 * connection state and figures): topic and payload are copied, the message goes to every
 * matching subscriber and, with retain, into the retained store. The topic must be a valid
 * topic name (not checked). Returns 0, or MQ_ERR_NOMEM when nothing was published. */
int broker_publish_local(struct mq_broker *b, const char *topic, size_t topic_len,
                         const void *payload, size_t payload_len, uint8_t qos, bool retain);

/* Shutdown: ask the sink to close every connection (MQTT 5 clients get DISCONNECT 0x8B,
 * server shutting down). Their wills are published, as
 * Mosquitto does: the clients did not send DISCONNECT, and a retained "offline" status
 * must be right after a restart. Call before the store's last commit, so that what the
 * wills change (retained messages, persistent sessions' queues) is stored. */
void broker_close_all(struct mq_broker *b);

#endif

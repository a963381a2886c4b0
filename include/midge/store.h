/* store.h - durable state (retained messages, persistent sessions, their subscriptions,
 * queued and in-flight QoS 1/2 messages, inbound QoS 2 ids and wills waiting for their
 * delay) in one SQLite database, written by the store's own thread so the event loop never
 * waits for a disk. It holds one version-neutral form: what MQTT 5 adds (properties,
 * expiries, subscription options and identifiers, session expiry) is simply absent for 3.x.
 *
 * The loop appends changes to an in-memory batch (store_retain_set, store_msg_add, ...),
 * hands the batch over with store_commit_async, which returns a ticket, and later learns
 * through the wake callback and store_committed() that the ticket is on disk. Nothing here
 * knows libuv: `wake` is a plain callback that the server points at uv_async_send.
 *
 * Threads: the change functions and store_commit_async belong to ONE thread (the loop);
 * store_committed, store_healthy and store_stats may be called from any thread. The report
 * and wake callbacks run on the store thread (report also on the caller's thread inside
 * store_open, store_load and store_msg_page), so they must be thread-safe.
 */
#ifndef MIDGE_STORE_H
#define MIDGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_msg;
struct mq_store;

/* The database schema version this build writes; a newer database is refused. */
#define MQ_STORE_SCHEMA_VERSION 2

/* PRAGMA application_id of a midge database ("MDGE"), so `file` and tools can tell it. */
#define MQ_STORE_APPLICATION_ID 0x4d444745

/* persistence_durability. */
enum mq_store_durability {
    /* synchronous=FULL: a commit is fsynced before its ticket counts as committed. The loop
     * sends PUBACK/PUBREC/SUBACK only once the change it acknowledges is committed. */
    MQ_STORE_DURABILITY_ACK = 0,
    /* synchronous=NORMAL: a commit survives a crash of midge at once and a power loss once
     * the WAL is next synced (within relaxed_sync_ms); the loop acknowledges without waiting. */
    MQ_STORE_DURABILITY_RELAXED = 1,
};

/* How much store_open checks an existing database before trusting it. */
enum mq_store_check {
    MQ_STORE_CHECK_QUICK = 0, /* PRAGMA quick_check: every page read, b-trees checked (default) */
    MQ_STORE_CHECK_NONE = 1,  /* header and schema only: faster start, damage found later */
    MQ_STORE_CHECK_FULL = 2,  /* PRAGMA integrity_check: also indexes against tables (slow) */
};

/* What a report is about; the server maps each to a log level (suggested in comments). */
enum mq_store_event {
    MQ_STORE_EV_CREATED = 1,         /* info: a new, empty database was created */
    MQ_STORE_EV_OPENED = 2,          /* info: an existing database was opened and checked */
    MQ_STORE_EV_MIGRATED = 3,        /* notice: the schema was upgraded from an older version */
    MQ_STORE_EV_MOVED_ASIDE = 4,     /* error: a damaged/unreadable file was moved aside */
    MQ_STORE_EV_REFUSED = 5,         /* error: store_open returns NULL (newer schema, in use...) */
    MQ_STORE_EV_WRITE_FAILING = 6,   /* error: commits fail and are retried (≤ 1 per interval) */
    MQ_STORE_EV_WRITE_RECOVERED = 7, /* notice: commits succeed again after failures */
    MQ_STORE_EV_CLOSE_LOST = 8,      /* error: store_close gave up on batches it could not write */
    MQ_STORE_EV_READ_FAILED = 9,     /* error: store_load or store_msg_page could not read */
};

/* text is a complete sentence (no trailing newline), borrowed for the call. */
typedef void (*mq_store_report_fn)(void *ctx, enum mq_store_event ev, const char *text);

struct mq_store_options {
    enum mq_store_durability durability;
    enum mq_store_check check;
    /* Called on the store thread after each commit and whenever store_healthy() changes,
     * until store_close returns (close the uv_async handle only after store_close).
     * Must be cheap and thread-safe (uv_async_send). NULL = never called. */
    void (*wake)(void *wake_ctx);
    void *wake_ctx;
    uint32_t retry_min_ms;       /* first wait after a failed commit (0 = 50) */
    uint32_t retry_max_ms;       /* backoff ceiling (0 = 5000) */
    uint32_t report_interval_ms; /* at most one WRITE_FAILING report per interval (0 = 60000) */
    uint32_t close_timeout_ms;   /* how long store_close keeps retrying (0 = 10000) */
    uint32_t relaxed_sync_ms;    /* relaxed: fsync the WAL at most this long after a commit
                                    (0 = 1000), bounding what a power loss can take */
};

/* Where an outgoing message stands. Values 1-3 equal enum mq_out_state (session.h). */
enum mq_store_msg_state {
    MQ_STORE_QUEUED = 0,      /* not sent yet (packet id 0) */
    MQ_STORE_WAIT_PUBACK = 1, /* QoS 1 sent */
    MQ_STORE_WAIT_PUBREC = 2, /* QoS 2 sent */
    MQ_STORE_WAIT_PUBCOMP = 3 /* PUBREL sent; the payload is no longer kept (loads as empty) */
};

/* A session's Session Expiry Interval when it has none (3.1.1 clean session 0, MQTT 5
 * 0xFFFFFFFF): equal to MQ_EXPIRY_NEVER (session.h). Sessions of a version 1 database. */
#define MQ_STORE_EXPIRY_NEVER UINT32_MAX

/* Views handed to callbacks; every pointer is borrowed for the duration of the call and
 * strings are NUL-terminated (lengths exclude the NUL). Times called "wall" are ms since
 * the epoch; 0 means never. props is an MQTT 5 property block as on the wire (the
 * forwarded properties of msg.h), props_len 0 (props then non-NULL) for 3.x messages. */
struct mq_store_retained {
    const char *topic;
    uint16_t topic_len;
    uint8_t qos;
    const uint8_t *payload; /* never NULL */
    uint32_t payload_len;
    const uint8_t *props; /* never NULL */
    uint32_t props_len;
    uint64_t expires_wall_ms; /* Message Expiry, wall clock; 0 = never */
};

struct mq_store_session {
    const char *client_id;
    uint16_t client_id_len;
    uint64_t last_seen_ms; /* wall clock (ms since the epoch) given to store_session_put */
    uint32_t expiry;       /* Session Expiry Interval in s, or MQ_STORE_EXPIRY_NEVER; never 0 */
    uint64_t msg_count;    /* outgoing messages stored for it */
    uint64_t max_seq;      /* highest seq stored (0 when none): continue numbering after it */
    uint64_t msgs_loaded;  /* how many of them store_load hands over (see msgs_per_session) */
};

struct mq_store_msg {
    uint64_t seq;
    const char *topic;
    uint16_t topic_len;
    const uint8_t *payload; /* never NULL */
    uint32_t payload_len;
    uint8_t qos;
    bool retain;
    uint16_t packet_id;   /* 0 while queued */
    uint8_t state;        /* enum mq_store_msg_state */
    const uint8_t *props; /* never NULL; empty once WAIT_PUBCOMP */
    uint32_t props_len;
    const uint32_t *sub_ids; /* Subscription Identifiers it is delivered with; NULL when none */
    size_t n_sub_ids;
    uint64_t expires_wall_ms; /* Message Expiry, wall clock; 0 = never */
};

/* A will waiting for its Will Delay Interval (MQTT 5). */
struct mq_store_will {
    const char *topic;
    uint16_t topic_len;
    uint8_t qos;
    bool retain;
    const uint8_t *payload; /* never NULL */
    uint32_t payload_len;
    const uint8_t *props; /* never NULL */
    uint32_t props_len;
    uint64_t expires_wall_ms; /* its Message Expiry, wall clock; 0 = never */
    uint64_t due_wall_ms;     /* when it is to be published, wall clock */
};

/* store_load callbacks. Each returns 0 to go on or a negative enum mq_err to stop the load,
 * which store_load then returns. NULL members are skipped. The session pointer of sub, msg,
 * qos2_in and will is the one last passed to `session`. */
struct mq_store_load_cb {
    int (*retained)(void *ctx, const struct mq_store_retained *r);
    int (*session)(void *ctx, const struct mq_store_session *s);
    int (*sub)(void *ctx, const struct mq_store_session *s, const char *filter, uint16_t len,
               uint32_t grant);
    int (*msg)(void *ctx, const struct mq_store_session *s, const struct mq_store_msg *m);
    int (*qos2_in)(void *ctx, const struct mq_store_session *s, uint16_t packet_id);
    /* The session's will waiting for its delay, if any: called last, at most once. */
    int (*will)(void *ctx, const struct mq_store_session *s, const struct mq_store_will *w);
    /* Load at most this many outgoing messages per session, lowest seq first (0 = all);
     * the rest stay on disk for store_msg_page. Keep it ≥ the in-flight window so every
     * in-flight message (they have the lowest seqs) is loaded. */
    uint32_t msgs_per_session;
};

struct mq_store_stats {
    uint64_t transactions;    /* committed transactions */
    uint64_t batches;         /* committed batches (≥ transactions: group commit) */
    uint64_t records;         /* committed records */
    uint64_t bytes;           /* committed batch bytes (records, strings and payloads) */
    uint64_t failures;        /* failed transaction attempts (each retried) */
    uint64_t pending_batches; /* handed over, not yet committed (memory the broker may cap) */
    uint64_t pending_records;
    uint64_t pending_bytes;
    uint64_t issued;    /* last ticket store_commit_async returned */
    uint64_t committed; /* store_committed() */
    bool healthy;       /* store_healthy() */
};

/* Open (or create) the database at path and start the store thread. Never fails because the
 * file is damaged: a file that is not a readable midge database (not SQLite, zero-filled,
 * empty, truncated, failing the check) is renamed to "<path>.corrupt-YYYYmmdd-HHMMSS" with its
 * -wal/-shm/-journal, reported (MQ_STORE_EV_MOVED_ASIDE) and replaced by an empty store.
 * Returns NULL, after a MQ_STORE_EV_REFUSED report saying why, when the database comes from a
 * newer midge (schema version), is used by another process, or the file cannot be created.
 * o may be NULL (defaults: ack, quick check); report may be NULL. The caller owns the result
 * and frees it with store_close. */
struct mq_store *store_open(const char *path, const struct mq_store_options *o,
                            mq_store_report_fn report, void *report_ctx);

/* Read everything back, synchronously, through the store's read-only connection: retained
 * messages, then each session followed by its subscriptions, its outgoing messages in seq
 * order, its inbound QoS 2 ids and its pending will. Expired messages are handed over like
 * the others (their expiry says so): the caller decides. Meant for start-up before the loop
 * runs; it sees committed data only. Returns 0, a callback's non-zero value, or MQ_ERR_IO
 * (reported). */
int store_load(struct mq_store *s, const struct mq_store_load_cb *cb, void *ctx);

/* Page outgoing messages of a client back in: those with seq > after_seq, in order, at most
 * max (0 = no limit). Synchronous disk read on a separate read-only connection (serialised by
 * a mutex, callable from any thread): run it off the loop, or accept one indexed read per
 * page at reconnect. It sees committed data only, so page a range only once the ticket of
 * the batch that added it is ≤ store_committed(). Returns the number of messages handed to
 * fn, or a negative enum mq_err (fn's non-zero value stops the page and is returned). */
int64_t store_msg_page(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                       uint64_t after_seq, uint32_t max,
                       int (*fn)(void *ctx, const struct mq_store_msg *m), void *ctx);

/*
 * Changes. Each appends one record to the current batch in memory: no disk I/O, no lock,
 * loop thread only. Strings and payloads are COPIED into the batch (the caller keeps its
 * references; msg is borrowed). Records apply in call order. Each returns 0, MQ_ERR_NOMEM
 * (the change is not recorded) or MQ_ERR_INVAL. Adding a subscription, message, QoS 2 id
 * or will for a client without a stored session creates the session (last_seen = now, never
 * expires).
 */

/* Store msg (its topic, payload, QoS and MQTT 5 properties) as the topic's retained message,
 * replacing any previous one; an empty payload deletes it, as in retain_set. expires_wall_ms:
 * its Message Expiry on the wall clock (the store does not know the broker's clock), 0 =
 * never. */
int store_retain_set(struct mq_store *s, const struct mq_msg *msg, uint64_t expires_wall_ms);
int store_retain_delete(struct mq_store *s, const char *topic, uint16_t topic_len);

/* Create the session or update its last-seen time (wall-clock ms, for expiry) and its Session
 * Expiry Interval (seconds, or MQ_STORE_EXPIRY_NEVER; 0 is MQ_ERR_INVAL: such a session ends
 * with its connection and is not stored, delete it instead). */
int store_session_put(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                      uint64_t last_seen_ms, uint32_t expiry);
/* Forget the session with its subscriptions, messages, QoS 2 ids and pending will. */
int store_session_delete(struct mq_store *s, const char *client_id, uint16_t client_id_len);

/* Subscription with its grant (sub_tree.h MQ_GRANT: QoS, No Local, Retain As Published,
 * Subscription Identifier; an MQTT 3.1.1 grant is its QoS), kept whole; adding an existing
 * filter updates its grant. A QoS above 2 is MQ_ERR_INVAL. */
int store_sub_add(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                  const char *filter, uint16_t filter_len, uint32_t grant);
int store_sub_remove(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                     const char *filter, uint16_t filter_len);

/* Most Subscription Identifiers one stored message carries (more is MQ_ERR_INVAL). */
#define MQ_STORE_SUB_IDS_MAX 65535u

/* Outgoing message number seq (caller-assigned, increasing per client: the delivery order),
 * stored as QUEUED with packet id 0, with msg's topic, payload and MQTT 5 properties, the
 * QoS and retain flag to deliver it with, the Subscription Identifiers it carries
 * (sub_ids[0..n_sub_ids), at most MQ_STORE_SUB_IDS_MAX, may be NULL when 0) and its expiry
 * (wall clock, 0 = never). Re-adding a seq replaces it. */
int store_msg_add(struct mq_store *s, const char *client_id, uint16_t client_id_len, uint64_t seq,
                  const struct mq_msg *msg, uint8_t qos, bool retain, const uint32_t *sub_ids,
                  size_t n_sub_ids, uint64_t expires_wall_ms);
/* Message seq was sent with packet_id and now waits in state (enum mq_store_msg_state). */
int store_msg_state(struct mq_store *s, const char *client_id, uint16_t client_id_len, uint64_t seq,
                    uint16_t packet_id, uint8_t state);
/* Message seq is finished (PUBACK/PUBCOMP received) or dropped. */
int store_msg_delete(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                     uint64_t seq);

/* Inbound QoS 2 packet id received (PUBREC sent) / released by PUBREL. */
int store_qos2_in_add(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                      uint16_t packet_id);
int store_qos2_in_remove(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                         uint16_t packet_id);

/* The client's will waits for its Will Delay Interval (MQTT 5): will's topic, payload, QoS,
 * retain flag and properties, its Message Expiry (wall clock, 0 = never) and when it is due
 * (wall clock). Replaces the client's previous one. */
int store_will_put(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                   const struct mq_msg *will, uint64_t expires_wall_ms, uint64_t due_wall_ms);
/* The client's pending will was published or dropped. */
int store_will_delete(struct mq_store *s, const char *client_id, uint16_t client_id_len);

/* Hand the current batch to the store thread (no I/O; one short mutex) and return its
 * ticket: tickets increase by one per non-empty batch, starting at 1. When the batch is
 * empty, returns the last ticket issued (0 if none), which covers everything appended so
 * far. Loop thread only. */
uint64_t store_commit_async(struct mq_store *s);

/* Highest ticket whose batch is committed (fsynced under durability ack); any thread.
 * Batches commit in ticket order, so every ticket ≤ this one is durable. */
uint64_t store_committed(struct mq_store *s);

/* False while commits are failing (disk full, I/O error) and being retried; any thread.
 * Under durability ack the loop should then stop acknowledging what it cannot store. */
bool store_healthy(struct mq_store *s);

/* Counters for $SYS, tests and benchmarks; any thread. */
void store_stats(struct mq_store *s, struct mq_store_stats *out);

/* Test and maintenance hook: while held, the store thread starts no transaction and handed-
 * over batches wait (then go out together, in one transaction). */
void store_hold(struct mq_store *s, bool hold);

/* Commit the current batch, wait for everything handed over to be written (retrying failures
 * for at most close_timeout_ms, then reporting MQ_STORE_EV_CLOSE_LOST), stop the thread, close
 * the database and free s. NULL is ignored. Loop thread (or after the loop stopped). */
void store_close(struct mq_store *s);

#endif

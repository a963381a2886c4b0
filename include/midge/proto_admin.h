/* proto_admin.h - what the admin API (src/admin/) may ask of proto and tell it to do.
 *
 * Read-only queries (clients and their sessions, subscriptions, retained messages) in pages
 * of at most MQ_ADMIN_PAGE_MAX entries, each page built in one short step of the loop, in a
 * stable order (byte-wise by client id, by client id and filter, by topic) after a key: the
 * key of the last entry of the previous page, so a cursor survives any change between pages
 * (an entry added or removed meanwhile is simply seen or not). And three commands, each
 * through the path MQTT itself uses: disconnect a client (its will is published as for a
 * lost connection), delete retained messages (persisted like any retained change), publish
 * (the checks of a client's PUBLISH, then broker_publish). Results borrow from the broker:
 * valid until the broker next changes, i.e. within the caller's loop turn.
 */
#ifndef MIDGE_PROTO_ADMIN_H
#define MIDGE_PROTO_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_broker;
struct mq_session;
struct mq_listener_ctx;
struct mq_msg;

/* Most entries one page may hold: bounds the work of one step of the loop. */
#define MQ_ADMIN_PAGE_MAX 1000
/* Most retained messages one DELETE removes (it says how many are left). */
#define MQ_ADMIN_DELETE_MAX 10000

/* Which clients a listing shows; every field is optional (NULL / -1 = any). */
struct mq_client_filter {
    int connected;        /* 1: connected only, 0: offline sessions only, -1: both */
    const char *username; /* exactly this user name */
    size_t username_len;
    const char *address; /* the connection's peer ("addr:port") starts with this */
    size_t address_len;
    const char *id_prefix; /* the client id starts with this */
    size_t id_prefix_len;
};

/* A page of clients (sessions) in client id order, after the id `after` (after_len bytes; 0
 * = from the first), of at most max (<= MQ_ADMIN_PAGE_MAX) entries that pass f (may be
 * NULL): out[0..n) borrowed. *total (optional) receives how many sessions pass f in all;
 * *more whether more follow this page. Returns n, or a negative MQ_ERR_NOMEM. */
int broker_clients_page(const struct mq_broker *b, const struct mq_client_filter *f,
                        const uint8_t *after, size_t after_len, size_t max,
                        const struct mq_session **out, size_t *total, bool *more);

/* The session of client id (len bytes), or NULL. Borrowed. */
const struct mq_session *broker_client_find(const struct mq_broker *b, const uint8_t *id,
                                            size_t len);

/* What the admin API shows of one client. Pointers borrow from the broker. */
struct mq_client_info {
    const char *client_id;
    uint16_t client_id_len;
    const char *username; /* NULL when none */
    bool connected;
    const char *peer;                       /* "addr:port"; NULL while offline */
    const struct mq_listener_ctx *listener; /* where it connected (last); may be NULL */
    uint8_t protocol_level;                 /* 3, 4 or 5; 0 while offline */
    uint16_t keepalive;                     /* seconds, as agreed; 0 while offline */
    bool bridge;                            /* CONNECT had the bridge bit */
    uint64_t connected_ms;                  /* broker clock when CONNACK went out (connected) */
    uint64_t last_seen_ms;                  /* broker clock when it went offline (offline) */
    bool clean;                             /* its session ends with its connection */
    uint32_t session_expiry;                /* seconds; MQ_EXPIRY_NEVER = never */
    uint32_t subscriptions;                 /* filters, shared ones included */
    uint32_t inflight;                      /* outgoing QoS 1/2 awaiting acknowledgement */
    uint64_t inflight_bytes;                /* their payload bytes (released ones count 0) */
    uint64_t queued;                        /* waiting in its queue, on disk included */
    uint64_t queued_bytes;                  /* their payload bytes */
    uint64_t dropped;                       /* messages dropped for it so far */
    uint32_t msgs_in, msgs_out;             /* PUBLISH packets of this connection */
    uint64_t bytes_in, bytes_out;           /* MQTT bytes of this connection */
    const char *will_topic;                 /* NULL when it has no will */
    bool will_delayed;                      /* a will waits for its Will Delay Interval */
};

/* Fill *out for session s (from broker_clients_page or broker_client_find). */
void broker_client_info(const struct mq_broker *b, const struct mq_session *s,
                        struct mq_client_info *out);

/* One subscription as the admin API shows it. filter is NUL-terminated, share (the share
 * name of a $share subscription, NULL otherwise) too; both valid only during the call. */
struct mq_sub_info {
    const struct mq_session *session;
    const char *filter;
    size_t filter_len;
    const char *share;
    uint32_t grant; /* sub_tree.h MQ_GRANT: QoS, No Local, Retain As Published, identifier */
};

/* A page of subscriptions in (client id, filter) order, after the key `after` (as
 * broker_sub_key builds it; after_len 0 = from the first): only those of client `client`
 * (client_len bytes) when client_len is not 0, and only those whose filter can match a
 * topic that `match` also matches (a topic name or a filter, match_len 0 = all) — for a
 * topic name, the subscriptions that would receive a message published on it. fn is called
 * for each entry of the page in order; *more says whether more follow. Returns the number
 * of entries, or a negative MQ_ERR_NOMEM (fn was then not called). */
int broker_subs_page(const struct mq_broker *b, const uint8_t *client, size_t client_len,
                     const uint8_t *match, size_t match_len, const uint8_t *after, size_t after_len,
                     size_t max, void (*fn)(void *ctx, const struct mq_sub_info *sub), void *ctx,
                     bool *more);

/* The page key of a subscription: client id, a 0 byte, the filter as listed ("$share/..."
 * for a shared one), into buf (cap bytes); returns its length (> cap: did not fit). */
size_t broker_sub_key(const struct mq_sub_info *sub, uint8_t *buf, size_t cap);

/* True when some topic name matches both filters a and b (either may be a topic name):
 * '+' and '#' as MQTT matches them, a leading wildcard never matching a '$' level. */
bool topic_filters_overlap(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* A page of retained messages in topic order (level by level, retain.h retain_page) after
 * the topic `after` (0 = from the first) whose topic matches the valid filter: out[0..n)
 * borrowed, *more whether more follow. *total (optional) receives the number of all matches
 * when that is known without a walk of the store (the filter "#"), else SIZE_MAX. A page
 * costs the nodes on the way to it, not the store's size. Returns n or MQ_ERR_NOMEM. */
int broker_retained_page(const struct mq_broker *b, const uint8_t *filter, size_t filter_len,
                         const uint8_t *after, size_t after_len, size_t max, struct mq_msg **out,
                         size_t *total, bool *more);

/* When the retained message m was stored (broker clock), 0 when unknown (loaded from the
 * store at start-up). */
uint64_t broker_retained_stored_ms(const struct mq_broker *b, const struct mq_msg *m);

/* Delete (dry_run: only count) the retained messages whose topic matches the valid filter,
 * at most max of them, each deletion recorded in the durable store like a client's empty
 * retained PUBLISH (subscribers are not sent anything). *matched receives how many matched
 * before; returns how many were deleted (dry run: would be), or MQ_ERR_NOMEM. who names the
 * administrator for the log line. */
int broker_retained_delete(struct mq_broker *b, const uint8_t *filter, size_t filter_len,
                           size_t max, bool dry_run, const char *who, size_t *matched);

enum mq_kick_result {
    MQ_KICK_DISCONNECTED = 0, /* it was connected and is now being closed */
    MQ_KICK_SESSION_REMOVED,  /* (discard) its offline session was removed */
    MQ_KICK_NOT_FOUND,        /* no session has this client id */
    MQ_KICK_NOT_CONNECTED,    /* offline, and discard_session was not asked for */
};

/* Disconnect client id (len bytes) as an administrator (who, for the log line): an MQTT 5
 * client is told DISCONNECT 0x98 (administrative action) first; the will is published as
 * for a lost connection. With discard_session its session goes too (its stored state
 * deleted, a delayed will published now), also when it was offline. */
enum mq_kick_result broker_kick(struct mq_broker *b, const uint8_t *id, size_t len,
                                bool discard_session, const char *who);

/* Publish an application message as administrator `user` (NUL-terminated, may be NULL) of
 * listener l (its ACL applies; may be NULL), with the checks of a client's PUBLISH: a valid
 * topic name, max_qos, retain_available, message_size_limit, max_topic_levels, memory_limit
 * and the ACL's WRITE. Returns 0 with *delivered (sessions it went to or was queued for), or
 * a negative enum mq_err with *why, a sentence for the refusal (MQ_ERR_INVAL: the request;
 * MQ_ERR_CONFIG: the broker's settings or ACL refuse it; MQ_ERR_NOMEM). */
int broker_admin_publish(struct mq_broker *b, const struct mq_listener_ctx *l, const char *user,
                         const uint8_t *topic, size_t topic_len, const uint8_t *payload,
                         size_t payload_len, uint8_t qos, bool retain, unsigned *delivered,
                         const char **why);

/* True when user (NULL: anonymous) of listener l may read topic by its ACL (no ACL: yes):
 * payloads of other topics are never shown. */
bool broker_admin_may_read(const struct mq_listener_ctx *l, const char *user, const char *topic,
                           size_t topic_len);

#endif

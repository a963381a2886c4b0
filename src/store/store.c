/* store.c - batches of changes from the loop, the store thread that commits them in groups,
 * and the read-only side (start-up load, paging queued messages back in).
 *
 * Owns: the write connection (store thread only, once store_open returns), the read-only
 * connection (under read_lock), every batch and the pending queue (under lock). The loop
 * thread alone touches the current batch, so appending a change takes no lock. Invariants:
 * batches commit in ticket order; a batch leaves the pending queue only after the transaction
 * holding it committed; `committed` only grows.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "midge/err.h"
#include "midge/msg.h"
#include "midge/session.h"
#include "midge/sub_tree.h"
#include "store_int.h"

_Static_assert(MQ_STORE_WAIT_PUBACK == (int)MQ_OUT_WAIT_PUBACK, "state values match session.h");
_Static_assert(MQ_STORE_WAIT_PUBREC == (int)MQ_OUT_WAIT_PUBREC, "state values match session.h");
_Static_assert(MQ_STORE_WAIT_PUBCOMP == (int)MQ_OUT_WAIT_PUBCOMP, "state values match session.h");
_Static_assert(MQ_STORE_EXPIRY_NEVER == MQ_EXPIRY_NEVER, "expiry values match session.h");

#define BATCH_FIRST_CAP (16u << 10)
#define BATCH_KEEP_CAP (1u << 20) /* larger batch buffers are freed, not recycled */
#define FREE_KEEP 4               /* recycled batches kept */
#define TXN_MAX_BYTES (64u << 20) /* group commit stops adding batches beyond this */
#define SESSION_CACHE 64          /* client id -> session row id, per transaction */

enum rec_type {
    R_RETAIN_SET = 1,
    R_RETAIN_DEL,
    R_SESSION_PUT,
    R_SESSION_DEL,
    R_SUB_ADD,
    R_SUB_DEL,
    R_MSG_ADD,
    R_MSG_STATE,
    R_MSG_DEL,
    R_QOS2_ADD,
    R_QOS2_DEL,
    R_WILL_PUT,
    R_WILL_DEL,
};

/* One change in a batch: this header, then (when has_ext) a struct rec_ext, then client id,
 * topic/filter, payload and property bytes and the Subscription Identifiers, padded to 8 so
 * the next header is aligned. */
struct rec {
    uint8_t type;
    uint8_t qos;
    uint8_t flag;    /* retain (R_MSG_ADD, R_WILL_PUT) or state (R_MSG_STATE) */
    uint8_t has_ext; /* a struct rec_ext follows */
    uint16_t packet_id;
    uint16_t client_len;
    uint32_t str_len;
    uint32_t payload_len;
    uint64_t num; /* seq, last_seen_ms, or the whole grant (R_SUB_ADD) */
};

/* What MQTT 5 adds to a record. Only a record that needs it carries one, so a 3.1.1
 * message costs what it did before MQTT 5 (a 24-byte header). */
struct rec_ext {
    uint64_t expires_wall_ms; /* message, retained message, will: 0 = never */
    uint64_t due_wall_ms;     /* will */
    uint32_t props_len;       /* property bytes after the payload */
    uint32_t n_sub_ids;       /* uint32_t ids (native order, unaligned) after the properties */
    uint32_t expiry;          /* session: Session Expiry Interval */
    uint32_t pad;
};

/* The variable parts of a record, in the order they follow the header. */
struct rec_parts {
    const void *client, *str, *payload, *props;
    const uint32_t *ids;
};

struct batch {
    struct batch *next;
    uint8_t *data;
    size_t len, cap;
    uint64_t records;
    uint64_t ticket;
};

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_RETAIN_SET,
    S_RETAIN_DEL,
    S_SESSION_PUT,
    S_SESSION_FIND,
    S_SESSION_NEW,
    S_SESSION_DEL, /* S_SESSION_DEL..S_WILL_DEL: what deleting a session runs */
    S_SUB_DEL_ALL,
    S_MSG_DEL_ALL,
    S_QOS2_DEL_ALL,
    S_WILL_DEL,
    S_SUB_ADD,
    S_SUB_DEL,
    S_MSG_ADD,
    S_MSG_STATE,
    S_MSG_DEL,
    S_QOS2_ADD,
    S_QOS2_DEL,
    S_WILL_PUT,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_RETAIN_SET] = "INSERT INTO retained(topic, qos, payload, props, expires_ms) "
                     "VALUES(?1, ?2, ?3, ?4, ?5) "
                     "ON CONFLICT(topic) DO UPDATE SET qos = excluded.qos, "
                     "payload = excluded.payload, props = excluded.props, "
                     "expires_ms = excluded.expires_ms",
    [S_RETAIN_DEL] = "DELETE FROM retained WHERE topic = ?1",
    [S_SESSION_PUT] = "INSERT INTO session(client_id, last_seen_ms, expiry_s) VALUES(?1, ?2, ?3) "
                      "ON CONFLICT(client_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, "
                      "expiry_s = excluded.expiry_s RETURNING id",
    [S_SESSION_FIND] = "SELECT id FROM session WHERE client_id = ?1",
    [S_SESSION_NEW] = "INSERT INTO session(client_id, last_seen_ms) VALUES(?1, ?2) RETURNING id",
    [S_SESSION_DEL] = "DELETE FROM session WHERE id = ?1",
    [S_SUB_DEL_ALL] = "DELETE FROM sub WHERE session_id = ?1",
    [S_MSG_DEL_ALL] = "DELETE FROM out_msg WHERE session_id = ?1",
    [S_QOS2_DEL_ALL] = "DELETE FROM qos2_in WHERE session_id = ?1",
    [S_WILL_DEL] = "DELETE FROM pending_will WHERE session_id = ?1",
    [S_SUB_ADD] = "INSERT INTO sub(session_id, filter, qos, options, sub_id) "
                  "VALUES(?1, ?2, ?3, ?4, ?5) "
                  "ON CONFLICT(session_id, filter) DO UPDATE SET qos = excluded.qos, "
                  "options = excluded.options, sub_id = excluded.sub_id",
    [S_SUB_DEL] = "DELETE FROM sub WHERE session_id = ?1 AND filter = ?2",
    [S_MSG_ADD] = "INSERT OR REPLACE INTO out_msg(session_id, seq, qos, retain, packet_id, state, "
                  "topic, payload, props, sub_ids, expires_ms) "
                  "VALUES(?1, ?2, ?3, ?4, 0, 0, ?5, ?6, ?7, ?8, ?9)",
    /* Once PUBREL is sent only the packet id matters: the message itself is dropped. */
    [S_MSG_STATE] = "UPDATE out_msg SET packet_id = ?3, state = ?4, "
                    "payload = CASE WHEN ?4 = 3 THEN x'' ELSE payload END, "
                    "props = CASE WHEN ?4 = 3 THEN NULL ELSE props END, "
                    "sub_ids = CASE WHEN ?4 = 3 THEN NULL ELSE sub_ids END "
                    "WHERE session_id = ?1 AND seq = ?2",
    [S_MSG_DEL] = "DELETE FROM out_msg WHERE session_id = ?1 AND seq = ?2",
    [S_QOS2_ADD] = "INSERT OR IGNORE INTO qos2_in(session_id, packet_id) VALUES(?1, ?2)",
    [S_QOS2_DEL] = "DELETE FROM qos2_in WHERE session_id = ?1 AND packet_id = ?2",
    /* Parenthesised: clang's -Wstring-concatenation reads a split literal as a missing comma. */
    [S_WILL_PUT] = ("INSERT OR REPLACE INTO pending_will(session_id, topic, qos, retain, payload, "
                    "props, expires_ms, due_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
};

struct session_slot {
    const char *client; /* points into a batch being written */
    uint16_t len;
    int64_t id;
};

struct mq_store {
    char *path;
    struct mq_store_options o;
    mq_store_report_fn report;
    void *report_ctx;
    int lock_fd;

    /* Loop thread only. */
    struct batch *cur;

    /* Store thread only (after store_open). */
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    struct session_slot cache[SESSION_CACHE];
    char last_error[512];
    uint8_t *ids_blob; /* Subscription Identifiers encoded for the row being written */
    size_t ids_blob_cap;
    uint64_t fail_since_ms, fail_reported_ms, fail_attempts;
    bool fail_reported;

    /* Read-only connection: store_load and store_msg_page, any thread, one at a time. */
    pthread_mutex_t read_lock;
    sqlite3 *rdb;

    /* Shared with the store thread, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    struct batch *pending, **pending_tail;
    struct batch *free_list;
    unsigned free_count;
    bool stopping, hold;
    uint64_t close_deadline_ms;
    uint64_t transactions, batches, records, bytes, failures;
    uint64_t pending_batches, pending_records, pending_bytes;

    _Atomic uint64_t issued;
    _Atomic uint64_t committed;
    _Atomic bool healthy;
};

/* ---- batches (loop thread) ---- */

static struct batch *batch_new(void)
{
    return calloc(1, sizeof(struct batch));
}

static void batch_free(struct batch *b)
{
    if (b) {
        free(b->data);
        free(b);
    }
}

/* Bytes of a record (before padding); x is its extension or NULL. */
static size_t rec_size(const struct rec *r, const struct rec_ext *x)
{
    size_t n = sizeof(*r) + (size_t)r->client_len + r->str_len + r->payload_len;
    if (x)
        n += sizeof(*x) + x->props_len + (size_t)x->n_sub_ids * sizeof(uint32_t);
    return n;
}

/* Append record r with its extension x (NULL: none) and its parts. */
static int append_ext(struct mq_store *s, const struct rec *r, const struct rec_ext *x,
                      const struct rec_parts *parts)
{
    size_t need = rec_size(r, x);
    size_t padded = (need + 7) & ~(size_t)7;
    struct batch *b;
    uint8_t *p;

    if (!s)
        return MQ_ERR_INVAL;
    if (!s->cur && !(s->cur = batch_new()))
        return MQ_ERR_NOMEM;
    b = s->cur;
    if (b->cap - b->len < padded) {
        size_t cap = b->cap ? b->cap : BATCH_FIRST_CAP;
        while (cap - b->len < padded) {
            if (cap > SIZE_MAX / 2)
                return MQ_ERR_NOMEM;
            cap *= 2;
        }
        uint8_t *data = realloc(b->data, cap);
        if (!data)
            return MQ_ERR_NOMEM;
        b->data = data;
        b->cap = cap;
    }
    p = b->data + b->len;
    memcpy(p, r, sizeof(*r));
    ((struct rec *)(void *)p)->has_ext = x != NULL;
    p += sizeof(*r);
    if (x) {
        memcpy(p, x, sizeof(*x));
        p += sizeof(*x);
    }
    if (r->client_len)
        memcpy(p, parts->client, r->client_len);
    p += r->client_len;
    if (r->str_len)
        memcpy(p, parts->str, r->str_len);
    p += r->str_len;
    if (r->payload_len)
        memcpy(p, parts->payload, r->payload_len);
    p += r->payload_len;
    if (x && x->props_len) {
        memcpy(p, parts->props, x->props_len);
        p += x->props_len;
    }
    if (x && x->n_sub_ids) {
        memcpy(p, parts->ids, (size_t)x->n_sub_ids * sizeof(uint32_t));
        p += (size_t)x->n_sub_ids * sizeof(uint32_t);
    }
    memset(p, 0, padded - need);
    b->len += padded;
    b->records++;
    return 0;
}

static int append(struct mq_store *s, const struct rec *r, const void *client, const void *str,
                  const void *payload)
{
    return append_ext(s, r, NULL, &(struct rec_parts){client, str, payload, NULL, NULL});
}

/* The extension of a message record, or NULL when it has nothing of MQTT 5. */
static const struct rec_ext *msg_ext(struct rec_ext *x, const struct mq_msg *msg, size_t n_sub_ids,
                                     uint64_t expires_wall_ms)
{
    *x = (struct rec_ext){.expires_wall_ms = expires_wall_ms,
                          .props_len = msg->props_len,
                          .n_sub_ids = (uint32_t)n_sub_ids};
    return msg->props_len || n_sub_ids || expires_wall_ms ? x : NULL;
}

int store_retain_set(struct mq_store *s, const struct mq_msg *msg, uint64_t expires_wall_ms)
{
    if (!msg || msg->topic_len == 0 || msg->qos > 2 || msg->payload_len > INT32_MAX ||
        msg->props_len > INT32_MAX || expires_wall_ms > INT64_MAX)
        return MQ_ERR_INVAL;
    if (msg->payload_len == 0)
        return store_retain_delete(s, msg->topic, msg->topic_len);
    struct rec r = {.type = R_RETAIN_SET,
                    .qos = msg->qos,
                    .str_len = msg->topic_len,
                    .payload_len = msg->payload_len};
    struct rec_ext x;
    return append_ext(s, &r, msg_ext(&x, msg, 0, expires_wall_ms),
                      &(struct rec_parts){"", msg->topic, msg->payload, msg_props(msg), NULL});
}

int store_retain_delete(struct mq_store *s, const char *topic, uint16_t topic_len)
{
    struct rec r = {.type = R_RETAIN_DEL, .str_len = topic_len};
    if (!topic || topic_len == 0)
        return MQ_ERR_INVAL;
    return append(s, &r, "", topic, "");
}

int store_session_put(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                      uint64_t last_seen_ms, uint32_t expiry)
{
    struct rec r = {.type = R_SESSION_PUT, .client_len = client_id_len, .num = last_seen_ms};
    struct rec_ext x = {.expiry = expiry};
    if (!client_id || last_seen_ms > INT64_MAX || expiry == 0)
        return MQ_ERR_INVAL;
    return append_ext(s, &r, &x, &(struct rec_parts){client_id, "", "", NULL, NULL});
}

int store_session_delete(struct mq_store *s, const char *client_id, uint16_t client_id_len)
{
    struct rec r = {.type = R_SESSION_DEL, .client_len = client_id_len};
    if (!client_id)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, "", "");
}

int store_sub_add(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                  const char *filter, uint16_t filter_len, uint32_t grant)
{
    struct rec r = {
        .type = R_SUB_ADD, .client_len = client_id_len, .str_len = filter_len, .num = grant};
    if (!client_id || !filter || filter_len == 0 || MQ_GRANT_QOS(grant) > 2)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, filter, "");
}

int store_sub_remove(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                     const char *filter, uint16_t filter_len)
{
    struct rec r = {.type = R_SUB_DEL, .client_len = client_id_len, .str_len = filter_len};
    if (!client_id || !filter || filter_len == 0)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, filter, "");
}

int store_msg_add(struct mq_store *s, const char *client_id, uint16_t client_id_len, uint64_t seq,
                  const struct mq_msg *msg, uint8_t qos, bool retain, const uint32_t *sub_ids,
                  size_t n_sub_ids, uint64_t expires_wall_ms)
{
    struct rec r = {.type = R_MSG_ADD,
                    .qos = qos,
                    .flag = retain,
                    .client_len = client_id_len,
                    .str_len = msg ? msg->topic_len : 0,
                    .payload_len = msg ? msg->payload_len : 0,
                    .num = seq};
    if (!client_id || !msg || qos > 2 || seq > INT64_MAX || msg->payload_len > INT32_MAX ||
        msg->props_len > INT32_MAX || expires_wall_ms > INT64_MAX ||
        n_sub_ids > MQ_STORE_SUB_IDS_MAX || (n_sub_ids && !sub_ids))
        return MQ_ERR_INVAL;
    struct rec_ext x;
    return append_ext(
        s, &r, msg_ext(&x, msg, n_sub_ids, expires_wall_ms),
        &(struct rec_parts){client_id, msg->topic, msg->payload, msg_props(msg), sub_ids});
}

int store_msg_state(struct mq_store *s, const char *client_id, uint16_t client_id_len, uint64_t seq,
                    uint16_t packet_id, uint8_t state)
{
    struct rec r = {.type = R_MSG_STATE,
                    .flag = state,
                    .packet_id = packet_id,
                    .client_len = client_id_len,
                    .num = seq};
    if (!client_id || state > MQ_STORE_WAIT_PUBCOMP || seq > INT64_MAX)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, "", "");
}

int store_msg_delete(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                     uint64_t seq)
{
    struct rec r = {.type = R_MSG_DEL, .client_len = client_id_len, .num = seq};
    if (!client_id || seq > INT64_MAX)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, "", "");
}

int store_qos2_in_add(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                      uint16_t packet_id)
{
    struct rec r = {.type = R_QOS2_ADD, .packet_id = packet_id, .client_len = client_id_len};
    if (!client_id || packet_id == 0)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, "", "");
}

int store_qos2_in_remove(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                         uint16_t packet_id)
{
    struct rec r = {.type = R_QOS2_DEL, .packet_id = packet_id, .client_len = client_id_len};
    if (!client_id || packet_id == 0)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, "", "");
}

int store_will_put(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                   const struct mq_msg *will, uint64_t expires_wall_ms, uint64_t due_wall_ms)
{
    if (!client_id || !will || will->topic_len == 0 || will->qos > 2 ||
        will->payload_len > INT32_MAX || will->props_len > INT32_MAX ||
        expires_wall_ms > INT64_MAX || due_wall_ms > INT64_MAX)
        return MQ_ERR_INVAL;
    struct rec r = {.type = R_WILL_PUT,
                    .qos = will->qos,
                    .flag = will->retain,
                    .client_len = client_id_len,
                    .str_len = will->topic_len,
                    .payload_len = will->payload_len};
    struct rec_ext x = {.expires_wall_ms = expires_wall_ms,
                        .due_wall_ms = due_wall_ms,
                        .props_len = will->props_len};
    return append_ext(
        s, &r, &x,
        &(struct rec_parts){client_id, will->topic, will->payload, msg_props(will), NULL});
}

int store_will_delete(struct mq_store *s, const char *client_id, uint16_t client_id_len)
{
    struct rec r = {.type = R_WILL_DEL, .client_len = client_id_len};
    if (!client_id)
        return MQ_ERR_INVAL;
    return append(s, &r, client_id, "", "");
}

uint64_t store_commit_async(struct mq_store *s)
{
    struct batch *b = s->cur, *next;
    uint64_t ticket;

    if (!b || b->records == 0)
        return atomic_load(&s->issued);
    ticket = atomic_load(&s->issued) + 1;
    b->ticket = ticket;
    b->next = NULL;
    pthread_mutex_lock(&s->lock);
    *s->pending_tail = b;
    s->pending_tail = &b->next;
    s->pending_batches++;
    s->pending_records += b->records;
    s->pending_bytes += b->len;
    next = s->free_list;
    if (next) {
        s->free_list = next->next;
        s->free_count--;
    }
    atomic_store(&s->issued, ticket);
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (next) {
        next->next = NULL;
        next->len = 0;
        next->records = 0;
    }
    s->cur = next ? next : batch_new(); /* NULL is retried by the next append */
    return ticket;
}

uint64_t store_committed(struct mq_store *s)
{
    return atomic_load(&s->committed);
}

bool store_healthy(struct mq_store *s)
{
    return atomic_load(&s->healthy);
}

void store_stats(struct mq_store *s, struct mq_store_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = (struct mq_store_stats){
        .transactions = s->transactions,
        .batches = s->batches,
        .records = s->records,
        .bytes = s->bytes,
        .failures = s->failures,
        .pending_batches = s->pending_batches,
        .pending_records = s->pending_records,
        .pending_bytes = s->pending_bytes,
    };
    pthread_mutex_unlock(&s->lock);
    out->issued = atomic_load(&s->issued);
    out->committed = atomic_load(&s->committed);
    out->healthy = atomic_load(&s->healthy);
}

void store_hold(struct mq_store *s, bool hold)
{
    pthread_mutex_lock(&s->lock);
    s->hold = hold;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- writing (store thread) ---- */

static void note_error(struct mq_store *s, int rc, const char *doing)
{
    int sys = sqlite3_system_errno(s->db);
    snprintf(s->last_error, sizeof(s->last_error), "%s: %s (SQLite code %d%s%s)", doing,
             sqlite3_errmsg(s->db), rc, sys ? ", " : "", sys ? strerror(sys) : "");
}

/* Step a statement that returns no rows (or whose rows we ignore) and reset it. */
static int run(struct mq_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        note_error(s, rc, stmt_sql[id]); /* before reset, which clears the system errno */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Step a statement returning one integer (a row id); *id = 0 when there is no row. */
static int run_id(struct mq_store *s, enum stmt_id id, int64_t *out)
{
    sqlite3_stmt *st = s->st[id];
    int rc = sqlite3_step(st);
    *out = 0;
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        note_error(s, rc, stmt_sql[id]);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static unsigned slot_of(const char *client, uint16_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (uint16_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)client[i]) * 16777619u;
    return h % SESSION_CACHE;
}

/* Row id of the client's session, created when asked; 0 when absent and not created. */
static int session_id(struct mq_store *s, const char *client, uint16_t len, bool create,
                      int64_t *id)
{
    struct session_slot *c = &s->cache[slot_of(client, len)];
    int rc;
    if (c->client && c->len == len && memcmp(c->client, client, len) == 0) {
        *id = c->id;
        return SQLITE_OK;
    }
    sqlite3_bind_text(s->st[S_SESSION_FIND], 1, client, len, SQLITE_STATIC);
    rc = run_id(s, S_SESSION_FIND, id);
    if (rc == SQLITE_OK && *id == 0 && create) {
        sqlite3_bind_text(s->st[S_SESSION_NEW], 1, client, len, SQLITE_STATIC);
        sqlite3_bind_int64(s->st[S_SESSION_NEW], 2, (int64_t)store_wall_ms());
        rc = run_id(s, S_SESSION_NEW, id);
    }
    if (rc == SQLITE_OK && *id != 0)
        *c = (struct session_slot){.client = client, .len = len, .id = *id};
    return rc;
}

/* Bind a property block: NULL when there is none (3.x), so old and new rows look alike. */
static void bind_props(sqlite3_stmt *st, int i, const uint8_t *props, uint32_t len)
{
    if (len)
        sqlite3_bind_blob(st, i, props, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Bind Subscription Identifiers (native, unaligned in the batch) as a BLOB of 4-byte
 * big-endian ids, or NULL when there are none. SQLITE_OK or SQLITE_NOMEM. */
static int bind_sub_ids(struct mq_store *s, sqlite3_stmt *st, int i, const uint8_t *ids, uint32_t n)
{
    size_t len = (size_t)n * 4;
    if (!n) {
        sqlite3_bind_null(st, i);
        return SQLITE_OK;
    }
    if (len > s->ids_blob_cap) {
        uint8_t *p = realloc(s->ids_blob, len);
        if (!p)
            return SQLITE_NOMEM;
        s->ids_blob = p;
        s->ids_blob_cap = len;
    }
    for (uint32_t k = 0; k < n; k++) {
        uint32_t v;
        memcpy(&v, ids + (size_t)k * 4, 4);
        s->ids_blob[k * 4] = (uint8_t)(v >> 24);
        s->ids_blob[k * 4 + 1] = (uint8_t)(v >> 16);
        s->ids_blob[k * 4 + 2] = (uint8_t)(v >> 8);
        s->ids_blob[k * 4 + 3] = (uint8_t)v;
    }
    sqlite3_bind_blob(st, i, s->ids_blob, (int)len, SQLITE_STATIC);
    return SQLITE_OK;
}

/* Write one record; data points after its header and extension (x: zeros when none). */
static int apply(struct mq_store *s, const struct rec *r, const struct rec_ext *x,
                 const uint8_t *data)
{
    const char *client = (const char *)data;
    const char *str = client + r->client_len;
    const uint8_t *payload = (const uint8_t *)str + r->str_len;
    const uint8_t *props = payload + r->payload_len;
    const uint8_t *ids = props + x->props_len;
    sqlite3_stmt *st;
    int64_t sid = 0;
    int rc = SQLITE_OK;
    bool create = r->type == R_SUB_ADD || r->type == R_MSG_ADD || r->type == R_QOS2_ADD ||
                  r->type == R_WILL_PUT;

    switch (r->type) {
    case R_RETAIN_SET:
        st = s->st[S_RETAIN_SET];
        sqlite3_bind_text(st, 1, str, (int)r->str_len, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, r->qos);
        sqlite3_bind_blob(st, 3, payload, (int)r->payload_len, SQLITE_STATIC);
        bind_props(st, 4, props, x->props_len);
        sqlite3_bind_int64(st, 5, (int64_t)x->expires_wall_ms);
        return run(s, S_RETAIN_SET);
    case R_RETAIN_DEL:
        sqlite3_bind_text(s->st[S_RETAIN_DEL], 1, str, (int)r->str_len, SQLITE_STATIC);
        return run(s, S_RETAIN_DEL);
    case R_SESSION_PUT:
        st = s->st[S_SESSION_PUT];
        sqlite3_bind_text(st, 1, client, r->client_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)r->num);
        sqlite3_bind_int64(st, 3, r->has_ext ? x->expiry : MQ_STORE_EXPIRY_NEVER);
        rc = run_id(s, S_SESSION_PUT, &sid);
        if (rc == SQLITE_OK)
            s->cache[slot_of(client, r->client_len)] =
                (struct session_slot){.client = client, .len = r->client_len, .id = sid};
        return rc;
    default: break;
    }

    rc = session_id(s, client, r->client_len, create, &sid);
    if (rc != SQLITE_OK || sid == 0)
        return rc; /* removing something of a session that is not stored: nothing to do */

    switch (r->type) {
    case R_SESSION_DEL:
        memset(s->cache, 0, sizeof(s->cache));
        for (enum stmt_id id = S_SESSION_DEL; id <= S_WILL_DEL; id++) {
            sqlite3_bind_int64(s->st[id], 1, sid);
            if ((rc = run(s, id)) != SQLITE_OK)
                return rc;
        }
        return SQLITE_OK;
    case R_SUB_ADD:
        st = s->st[S_SUB_ADD];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_text(st, 2, str, (int)r->str_len, SQLITE_STATIC);
        /* The grant in three columns, so that a shell shows what each means. */
        sqlite3_bind_int(st, 3, MQ_GRANT_QOS(r->num));
        sqlite3_bind_int(st, 4, (int)(r->num & (MQ_GRANT_NO_LOCAL | MQ_GRANT_RETAIN_AS_PUBLISHED)));
        sqlite3_bind_int64(st, 5, MQ_GRANT_SUB_ID(r->num));
        return run(s, S_SUB_ADD);
    case R_SUB_DEL:
        st = s->st[S_SUB_DEL];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_text(st, 2, str, (int)r->str_len, SQLITE_STATIC);
        return run(s, S_SUB_DEL);
    case R_MSG_ADD:
        st = s->st[S_MSG_ADD];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_int64(st, 2, (int64_t)r->num);
        sqlite3_bind_int(st, 3, r->qos);
        sqlite3_bind_int(st, 4, r->flag);
        sqlite3_bind_text(st, 5, str, (int)r->str_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, payload, (int)r->payload_len, SQLITE_STATIC);
        bind_props(st, 7, props, x->props_len);
        if ((rc = bind_sub_ids(s, st, 8, ids, x->n_sub_ids)) != SQLITE_OK) {
            snprintf(s->last_error, sizeof(s->last_error), "out of memory");
            sqlite3_clear_bindings(st);
            return rc;
        }
        sqlite3_bind_int64(st, 9, (int64_t)x->expires_wall_ms);
        return run(s, S_MSG_ADD);
    case R_MSG_STATE:
        st = s->st[S_MSG_STATE];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_int64(st, 2, (int64_t)r->num);
        sqlite3_bind_int(st, 3, r->packet_id);
        sqlite3_bind_int(st, 4, r->flag);
        return run(s, S_MSG_STATE);
    case R_MSG_DEL:
        sqlite3_bind_int64(s->st[S_MSG_DEL], 1, sid);
        sqlite3_bind_int64(s->st[S_MSG_DEL], 2, (int64_t)r->num);
        return run(s, S_MSG_DEL);
    case R_QOS2_ADD:
    case R_QOS2_DEL: {
        enum stmt_id id = r->type == R_QOS2_ADD ? S_QOS2_ADD : S_QOS2_DEL;
        sqlite3_bind_int64(s->st[id], 1, sid);
        sqlite3_bind_int(s->st[id], 2, r->packet_id);
        return run(s, id);
    }
    case R_WILL_PUT:
        st = s->st[S_WILL_PUT];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_text(st, 2, str, (int)r->str_len, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, r->qos);
        sqlite3_bind_int(st, 4, r->flag);
        sqlite3_bind_blob(st, 5, payload, (int)r->payload_len, SQLITE_STATIC);
        bind_props(st, 6, props, x->props_len);
        sqlite3_bind_int64(st, 7, (int64_t)x->expires_wall_ms);
        sqlite3_bind_int64(st, 8, (int64_t)x->due_wall_ms);
        return run(s, S_WILL_PUT);
    case R_WILL_DEL: sqlite3_bind_int64(s->st[S_WILL_DEL], 1, sid); return run(s, S_WILL_DEL);
    default: break;
    }
    return SQLITE_OK;
}

/* Write a chain of batches in one transaction. SQLITE_OK or the failing code (rolled back). */
static int write_batches(struct mq_store *s, struct batch *chain)
{
    int rc;
    memset(s->cache, 0, sizeof(s->cache));
    rc = run(s, S_BEGIN);
    for (struct batch *b = chain; rc == SQLITE_OK && b; b = b->next) {
        for (size_t off = 0; rc == SQLITE_OK && off < b->len;) {
            const struct rec *r = (const struct rec *)(const void *)(b->data + off);
            struct rec_ext x = {0};
            if (r->has_ext)
                memcpy(&x, b->data + off + sizeof(*r), sizeof(x));
            size_t need = rec_size(r, r->has_ext ? &x : NULL);
            rc = apply(s, r, &x, b->data + off + sizeof(*r) + (r->has_ext ? sizeof(x) : 0));
            off += (need + 7) & ~(size_t)7;
        }
    }
    if (rc == SQLITE_OK)
        rc = run(s, S_COMMIT);
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->st[S_ROLLBACK]); /* keeps last_error: the cause, not the clean-up */
        sqlite3_reset(s->st[S_ROLLBACK]);
    }
    return rc;
}

static void deadline_ts(struct timespec *ts, uint64_t wait_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(wait_ms / 1000);
    ts->tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Reports after a transaction attempt, outside the lock. */
static void after_attempt(struct mq_store *s, bool ok, uint64_t pend_records, uint64_t pend_batches,
                          uint64_t pend_bytes)
{
    uint64_t now = store_mono_ms();
    if (ok) {
        if (s->fail_attempts && s->fail_reported)
            store_reportf(s->report, s->report_ctx, MQ_STORE_EV_WRITE_RECOVERED,
                          "writes to persistence file %s succeed again after %llu failed "
                          "attempts over %.1f s; the changes that waited are committed",
                          s->path, (unsigned long long)s->fail_attempts,
                          (double)(now - s->fail_since_ms) / 1000.0);
        if (s->fail_attempts)
            s->fail_reported = false;
        s->fail_attempts = 0;
        return;
    }
    if (s->fail_attempts++ == 0)
        s->fail_since_ms = now;
    if (!s->fail_reported || now - s->fail_reported_ms >= s->o.report_interval_ms) {
        store_reportf(s->report, s->report_ctx, MQ_STORE_EV_WRITE_FAILING,
                      "cannot write to persistence file %s: %s; %llu changes in %llu batches "
                      "(%llu bytes) wait in memory and are retried",
                      s->path, s->last_error, (unsigned long long)pend_records,
                      (unsigned long long)pend_batches, (unsigned long long)pend_bytes);
        s->fail_reported = true;
        s->fail_reported_ms = now;
    }
}

/* Relaxed durability: fsync the WAL that synchronous=NORMAL leaves to the next checkpoint. */
static bool sync_wal(struct mq_store *s)
{
    sqlite3_file *f = NULL;
    int rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
    if (rc != SQLITE_OK || !f || !f->pMethods)
        return true; /* no WAL open: nothing to sync */
    rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK)
        snprintf(s->last_error, sizeof(s->last_error), "syncing the WAL: %s (SQLite code %d)",
                 sqlite3_errstr(rc), rc);
    return rc == SQLITE_OK;
}

static void *store_main(void *arg)
{
    struct mq_store *s = arg;
    uint64_t retry_at = 0, backoff = 0, unsynced_since = 0;
    bool unsynced = false;

    pthread_setname_np(pthread_self(), "midge-store"); /* for top -H, perf, gdb */
    pthread_mutex_lock(&s->lock);
    for (;;) {
        uint64_t now = store_mono_ms();
        bool give_up = s->stopping && now >= s->close_deadline_ms;
        if (unsynced && now - unsynced_since >= s->o.relaxed_sync_ms) {
            pthread_mutex_unlock(&s->lock);
            bool ok = sync_wal(s);
            unsynced = false;
            if (!ok) { /* unhealthy until the next commit succeeds */
                bool was_healthy = atomic_exchange(&s->healthy, false);
                after_attempt(s, false, 0, 0, 0);
                if (was_healthy && s->o.wake)
                    s->o.wake(s->o.wake_ctx);
            }
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (!s->pending && s->stopping)
            break;
        if (s->pending && give_up && backoff) {
            uint64_t n = s->pending_batches, bytes = s->pending_bytes, recs = s->pending_records;
            pthread_mutex_unlock(&s->lock);
            store_reportf(s->report, s->report_ctx, MQ_STORE_EV_CLOSE_LOST,
                          "closing persistence file %s: gave up after %u ms; %llu changes in "
                          "%llu batches (%llu bytes) were NOT written (%s)",
                          s->path, s->o.close_timeout_ms, (unsigned long long)recs,
                          (unsigned long long)n, (unsigned long long)bytes, s->last_error);
            pthread_mutex_lock(&s->lock);
            break;
        }
        if (!s->pending || (s->hold && !s->stopping) || (backoff && now < retry_at)) {
            struct timespec ts;
            uint64_t wait = 1000;
            if (backoff && s->pending)
                wait = retry_at > now ? retry_at - now : 0;
            if (s->stopping && s->close_deadline_ms > now && s->close_deadline_ms - now < wait)
                wait = s->close_deadline_ms - now;
            if (unsynced && unsynced_since + s->o.relaxed_sync_ms - now < wait)
                wait = unsynced_since + s->o.relaxed_sync_ms - now;
            deadline_ts(&ts, wait);
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
            continue;
        }

        /* Group commit: everything waiting, up to TXN_MAX_BYTES (at least one batch). */
        struct batch *chain = s->pending, *last = chain;
        uint64_t bytes = last->len, records = last->records, nb = 1;
        while (last->next && bytes + last->next->len <= TXN_MAX_BYTES) {
            last = last->next;
            bytes += last->len;
            records += last->records;
            nb++;
        }
        /* Detach it: commit_async appends to the list while we write, without us seeing. */
        s->pending = last->next;
        if (!s->pending)
            s->pending_tail = &s->pending;
        last->next = NULL;
        pthread_mutex_unlock(&s->lock);

        int rc = write_batches(s, chain);
        bool was_healthy = atomic_load(&s->healthy);
        /* A recovery is reported before the commit becomes visible, so whoever sees the
         * committed ticket (or healthy again) also sees the report. */
        if (rc == SQLITE_OK)
            after_attempt(s, true, 0, 0, 0);

        pthread_mutex_lock(&s->lock);
        if (rc == SQLITE_OK) {
            s->pending_batches -= nb;
            s->pending_records -= records;
            s->pending_bytes -= bytes;
            s->transactions++;
            s->batches += nb;
            s->records += records;
            s->bytes += bytes;
            atomic_store(&s->committed, last->ticket);
            atomic_store(&s->healthy, true);
            backoff = 0;
            if (s->o.durability == MQ_STORE_DURABILITY_RELAXED && !unsynced) {
                unsynced = true;
                unsynced_since = store_mono_ms();
            }
            while (chain) {
                struct batch *b = chain;
                chain = b->next;
                if (s->free_count < FREE_KEEP && b->cap <= BATCH_KEEP_CAP) {
                    b->next = s->free_list;
                    s->free_list = b;
                    s->free_count++;
                } else {
                    batch_free(b);
                }
            }
        } else {
            last->next = s->pending; /* back in front, to be retried first */
            if (!s->pending)
                s->pending_tail = &last->next;
            s->pending = chain;
            s->failures++;
            atomic_store(&s->healthy, false);
            backoff = backoff ? backoff * 2 : s->o.retry_min_ms;
            if (backoff > s->o.retry_max_ms)
                backoff = s->o.retry_max_ms;
            retry_at = store_mono_ms() + backoff;
        }
        uint64_t pend_records = s->pending_records, pend_batches = s->pending_batches;
        uint64_t pend_bytes = s->pending_bytes;
        pthread_mutex_unlock(&s->lock);

        if (rc != SQLITE_OK)
            after_attempt(s, false, pend_records, pend_batches, pend_bytes);
        if (s->o.wake && (rc == SQLITE_OK || was_healthy))
            s->o.wake(s->o.wake_ctx);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- reading (any thread, read_lock) ---- */

static const uint8_t empty_payload[1];

/* A BLOB column, never NULL (an empty one for NULL). */
static const uint8_t *column_bytes(sqlite3_stmt *st, int i, uint32_t *len)
{
    const uint8_t *p = sqlite3_column_blob(st, i);
    *len = (uint32_t)sqlite3_column_bytes(st, i);
    if (!p) {
        *len = 0;
        return empty_payload;
    }
    return p;
}

/* A wall-clock time column: 0 (never) for anything negative or not a number. */
static uint64_t column_wall(sqlite3_stmt *st, int i)
{
    int64_t v = sqlite3_column_int64(st, i);
    return v > 0 ? (uint64_t)v : 0;
}

/* Subscription Identifiers decoded from their BLOB, for the row being handed over. */
struct ids_buf {
    uint32_t *v;
    size_t cap;
};

/* Decode column i (4-byte big-endian ids) into b: *ids and *n for the view. 0 or
 * MQ_ERR_NOMEM. */
static int column_sub_ids(sqlite3_stmt *st, int i, struct ids_buf *b, const uint32_t **ids,
                          size_t *n)
{
    uint32_t len;
    const uint8_t *p = column_bytes(st, i, &len);
    size_t count = len / 4; /* a torn trailing id (never written so) is ignored */
    *ids = NULL;
    *n = 0;
    if (!count)
        return 0;
    if (count > b->cap) {
        uint32_t *v = realloc(b->v, count * sizeof(*v));
        if (!v)
            return MQ_ERR_NOMEM;
        b->v = v;
        b->cap = count;
    }
    for (size_t k = 0; k < count; k++, p += 4)
        b->v[k] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    *ids = b->v;
    *n = count;
    return 0;
}

static int msg_view(sqlite3_stmt *st, struct ids_buf *ids, struct mq_store_msg *m)
{
    /* columns: MSG_COLUMNS */
    m->seq = (uint64_t)sqlite3_column_int64(st, 0);
    m->topic = (const char *)sqlite3_column_text(st, 1);
    m->topic_len = (uint16_t)sqlite3_column_bytes(st, 1);
    m->payload = sqlite3_column_blob(st, 2);
    m->payload_len = (uint32_t)sqlite3_column_bytes(st, 2);
    if (!m->payload)
        m->payload = empty_payload;
    if (!m->topic)
        m->topic = "";
    m->qos = (uint8_t)sqlite3_column_int(st, 3);
    m->retain = sqlite3_column_int(st, 4) != 0;
    m->packet_id = (uint16_t)sqlite3_column_int(st, 5);
    m->state = (uint8_t)sqlite3_column_int(st, 6);
    m->props = column_bytes(st, 7, &m->props_len);
    m->expires_wall_ms = column_wall(st, 9);
    return column_sub_ids(st, 8, ids, &m->sub_ids, &m->n_sub_ids);
}

#define MSG_COLUMNS "seq, topic, payload, qos, retain, packet_id, state, props, sub_ids, expires_ms"

static int read_failed(struct mq_store *s, int rc, const char *doing)
{
    store_reportf(s->report, s->report_ctx, MQ_STORE_EV_READ_FAILED,
                  "reading persistence file %s failed while %s: %s (SQLite code %d)", s->path,
                  doing, sqlite3_errmsg(s->rdb), rc);
    return MQ_ERR_IO;
}

static int load_session(struct mq_store *s, sqlite3_stmt *const *q, int64_t sid,
                        const struct mq_store_session *info, const struct mq_store_load_cb *cb,
                        struct ids_buf *ids, void *ctx)
{
    int rc, err = 0;

    sqlite3_bind_int64(q[0], 1, sid);
    while (!err && (rc = sqlite3_step(q[0])) == SQLITE_ROW) {
        /* qos, options, sub_id: a version 1 row has options 0 and sub_id 0 */
        uint32_t grant = MQ_GRANT(sqlite3_column_int(q[0], 1) & 3, sqlite3_column_int(q[0], 2),
                                  (uint32_t)sqlite3_column_int64(q[0], 3) & MQ_GRANT_SUB_ID_MAX);
        if (cb->sub)
            err = cb->sub(ctx, info, (const char *)sqlite3_column_text(q[0], 0),
                          (uint16_t)sqlite3_column_bytes(q[0], 0), grant);
    }
    sqlite3_reset(q[0]);
    if (err || rc != SQLITE_DONE)
        return err ? err : read_failed(s, rc, "loading subscriptions");

    sqlite3_bind_int64(q[1], 1, sid);
    sqlite3_bind_int64(q[1], 2, cb->msgs_per_session ? (int64_t)cb->msgs_per_session : -1);
    while (!err && (rc = sqlite3_step(q[1])) == SQLITE_ROW) {
        struct mq_store_msg m;
        err = msg_view(q[1], ids, &m);
        if (!err && cb->msg)
            err = cb->msg(ctx, info, &m);
    }
    sqlite3_reset(q[1]);
    if (err || rc != SQLITE_DONE)
        return err ? err : read_failed(s, rc, "loading messages");

    sqlite3_bind_int64(q[2], 1, sid);
    while (!err && (rc = sqlite3_step(q[2])) == SQLITE_ROW)
        if (cb->qos2_in)
            err = cb->qos2_in(ctx, info, (uint16_t)sqlite3_column_int(q[2], 0));
    sqlite3_reset(q[2]);
    if (err || rc != SQLITE_DONE)
        return err ? err : read_failed(s, rc, "loading QoS 2 state");

    sqlite3_bind_int64(q[3], 1, sid);
    while (!err && (rc = sqlite3_step(q[3])) == SQLITE_ROW) {
        struct mq_store_will w = {
            .topic = (const char *)sqlite3_column_text(q[3], 0),
            .topic_len = (uint16_t)sqlite3_column_bytes(q[3], 0),
            .qos = (uint8_t)(sqlite3_column_int(q[3], 2) & 3),
            .retain = sqlite3_column_int(q[3], 3) != 0,
            .expires_wall_ms = column_wall(q[3], 5),
            .due_wall_ms = column_wall(q[3], 6),
        };
        w.payload = column_bytes(q[3], 1, &w.payload_len);
        w.props = column_bytes(q[3], 4, &w.props_len);
        if (!w.topic)
            w.topic = "";
        if (cb->will)
            err = cb->will(ctx, info, &w);
    }
    sqlite3_reset(q[3]);
    if (err || rc != SQLITE_DONE)
        return err ? err : read_failed(s, rc, "loading pending wills");
    return 0;
}

/* A stored Session Expiry Interval; 0 (never written) and nonsense read as never. */
static uint32_t column_expiry(sqlite3_stmt *st, int i)
{
    int64_t v = sqlite3_column_int64(st, i);
    return v > 0 && v < (int64_t)MQ_STORE_EXPIRY_NEVER ? (uint32_t)v : MQ_STORE_EXPIRY_NEVER;
}

int store_load(struct mq_store *s, const struct mq_store_load_cb *cb, void *ctx)
{
    static const char *const sql[] = {
        "SELECT topic, payload, qos, props, expires_ms FROM retained",
        ("SELECT id, client_id, last_seen_ms,"
         " (SELECT count(*) FROM out_msg WHERE session_id = session.id),"
         " (SELECT coalesce(max(seq), 0) FROM out_msg WHERE session_id = session.id),"
         " expiry_s FROM session ORDER BY id"),
        "SELECT filter, qos, options, sub_id FROM sub WHERE session_id = ?1",
        ("SELECT " MSG_COLUMNS " FROM out_msg WHERE session_id = ?1 ORDER BY seq LIMIT ?2"),
        "SELECT packet_id FROM qos2_in WHERE session_id = ?1 ORDER BY packet_id",
        ("SELECT topic, payload, qos, retain, props, expires_ms, due_ms FROM pending_will"
         " WHERE session_id = ?1"),
    };
    enum { NQ = sizeof(sql) / sizeof(sql[0]) };
    sqlite3_stmt *q[NQ] = {NULL};
    struct ids_buf ids = {0};
    int rc = SQLITE_OK, err = 0;
    bool in_txn = false;

    pthread_mutex_lock(&s->read_lock);
    for (size_t i = 0; rc == SQLITE_OK && i < NQ; i++)
        rc = sqlite3_prepare_v2(s->rdb, sql[i], -1, &q[i], NULL);
    if (rc != SQLITE_OK) {
        err = read_failed(s, rc, "preparing queries");
        goto out;
    }
    /* One read transaction: a consistent snapshot even if the store thread commits meanwhile. */
    if ((rc = sqlite3_exec(s->rdb, "BEGIN", NULL, NULL, NULL)) != SQLITE_OK) {
        err = read_failed(s, rc, "starting a read");
        goto out;
    }
    in_txn = true;

    while (!err && (rc = sqlite3_step(q[0])) == SQLITE_ROW) {
        struct mq_store_retained r = {
            .topic = (const char *)sqlite3_column_text(q[0], 0),
            .topic_len = (uint16_t)sqlite3_column_bytes(q[0], 0),
            .payload = sqlite3_column_blob(q[0], 1),
            .payload_len = (uint32_t)sqlite3_column_bytes(q[0], 1),
            .qos = (uint8_t)sqlite3_column_int(q[0], 2),
            .expires_wall_ms = column_wall(q[0], 4),
        };
        if (!r.payload)
            r.payload = empty_payload;
        r.props = column_bytes(q[0], 3, &r.props_len);
        if (cb->retained)
            err = cb->retained(ctx, &r);
    }
    if (!err && rc != SQLITE_DONE)
        err = read_failed(s, rc, "loading retained messages");

    while (!err && (rc = sqlite3_step(q[1])) == SQLITE_ROW) {
        int64_t sid = sqlite3_column_int64(q[1], 0);
        struct mq_store_session info = {
            .client_id = (const char *)sqlite3_column_text(q[1], 1),
            .client_id_len = (uint16_t)sqlite3_column_bytes(q[1], 1),
            .last_seen_ms = (uint64_t)sqlite3_column_int64(q[1], 2),
            .msg_count = (uint64_t)sqlite3_column_int64(q[1], 3),
            .max_seq = (uint64_t)sqlite3_column_int64(q[1], 4),
            .expiry = column_expiry(q[1], 5),
        };
        if (!info.client_id)
            info.client_id = "";
        info.msgs_loaded = cb->msgs_per_session && info.msg_count > cb->msgs_per_session
                               ? cb->msgs_per_session
                               : info.msg_count;
        if (cb->session)
            err = cb->session(ctx, &info);
        if (!err)
            err = load_session(s, q + 2, sid, &info, cb, &ids, ctx);
    }
    if (!err && rc != SQLITE_DONE)
        err = read_failed(s, rc, "loading sessions");
out:
    for (size_t i = 0; i < NQ; i++)
        sqlite3_finalize(q[i]);
    free(ids.v);
    if (in_txn)
        sqlite3_exec(s->rdb, "COMMIT", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->read_lock);
    return err;
}

int64_t store_msg_page(struct mq_store *s, const char *client_id, uint16_t client_id_len,
                       uint64_t after_seq, uint32_t max,
                       int (*fn)(void *ctx, const struct mq_store_msg *m), void *ctx)
{
    static const char sql[] =
        "SELECT " MSG_COLUMNS " FROM out_msg WHERE session_id ="
        " (SELECT id FROM session WHERE client_id = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3";
    sqlite3_stmt *st = NULL;
    struct ids_buf ids = {0};
    int64_t n = 0;
    int rc, err = 0;

    if (!client_id || !fn || after_seq > INT64_MAX)
        return MQ_ERR_INVAL;
    pthread_mutex_lock(&s->read_lock);
    rc = sqlite3_prepare_v2(s->rdb, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        err = read_failed(s, rc, "paging messages in");
        goto out;
    }
    sqlite3_bind_text(st, 1, client_id, client_id_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)after_seq);
    sqlite3_bind_int64(st, 3, max ? (int64_t)max : -1);
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct mq_store_msg m;
        if ((err = msg_view(st, &ids, &m)) != 0)
            break;
        err = fn(ctx, &m);
        n++;
    }
    if (!err && rc != SQLITE_DONE)
        err = read_failed(s, rc, "paging messages in");
out:
    sqlite3_finalize(st);
    free(ids.v);
    pthread_mutex_unlock(&s->read_lock);
    return err ? err : n;
}

/* ---- life cycle ---- */

static void store_free(struct mq_store *s)
{
    struct batch *b;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->rdb);
    sqlite3_close(s->db); /* the last connection: checkpoints and removes the WAL */
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* only after SQLite let go of the file */
    while ((b = s->pending)) {
        s->pending = b->next;
        batch_free(b);
    }
    while ((b = s->free_list)) {
        s->free_list = b->next;
        batch_free(b);
    }
    batch_free(s->cur);
    free(s->ids_blob);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->read_lock);
    free(s->path);
    free(s);
}

struct mq_store *store_open(const char *path, const struct mq_store_options *o,
                            mq_store_report_fn report, void *report_ctx)
{
    struct mq_store *s = NULL, *ret = NULL;
    pthread_condattr_t ca;
    sigset_t all, old;
    int rc;

    if (!path)
        goto out;
    if (!(s = calloc(1, sizeof(*s))))
        goto out;
    s->lock_fd = -1;
    s->pending_tail = &s->pending;
    atomic_init(&s->issued, 0);
    atomic_init(&s->committed, 0);
    atomic_init(&s->healthy, true);
    if (o)
        s->o = *o;
    if (!s->o.retry_min_ms)
        s->o.retry_min_ms = 50;
    if (!s->o.retry_max_ms)
        s->o.retry_max_ms = 5000;
    if (s->o.retry_max_ms < s->o.retry_min_ms)
        s->o.retry_max_ms = s->o.retry_min_ms;
    if (!s->o.report_interval_ms)
        s->o.report_interval_ms = 60000;
    if (!s->o.close_timeout_ms)
        s->o.close_timeout_ms = 10000;
    if (!s->o.relaxed_sync_ms)
        s->o.relaxed_sync_ms = 1000;
    s->report = report;
    s->report_ctx = report_ctx;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->read_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (!(s->path = strdup(path)) || !(s->cur = batch_new()))
        goto out;

    if (store_db_open(path, &s->o, report, report_ctx, &s->db, &s->lock_fd) != 0)
        goto out;
    for (int i = 0; i < S_COUNT; i++) {
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK) {
            store_reportf(report, report_ctx, MQ_STORE_EV_REFUSED,
                          "persistence file %s: cannot prepare '%s': %s", path, stmt_sql[i],
                          sqlite3_errmsg(s->db));
            goto out;
        }
    }
    rc = sqlite3_open_v2(path, &s->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        store_reportf(report, report_ctx, MQ_STORE_EV_REFUSED,
                      "persistence file %s: cannot open a read-only connection: %s", path,
                      s->rdb ? sqlite3_errmsg(s->rdb) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_busy_timeout(s->rdb, 5000);

    /* The store thread takes no signals: they belong to the loop (uv_signal). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&s->thread, NULL, store_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        store_reportf(report, report_ctx, MQ_STORE_EV_REFUSED,
                      "persistence file %s: cannot start the store thread: %s", path, strerror(rc));
        goto out;
    }
    ret = s;
    s = NULL;
out:
    if (s)
        store_free(s);
    return ret;
}

void store_close(struct mq_store *s)
{
    if (!s)
        return;
    store_commit_async(s);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    s->close_deadline_ms = store_mono_ms() + s->o.close_timeout_ms;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    store_free(s);
}

/* test_store.c - unit tests for the durable store (src/store) against temporary databases.
 *
 * Every test works in its own mkdtemp directory and removes it. store_load output is turned
 * into text lines ("R topic qos payload", "S client ...", "M seq ...") so a whole database is
 * compared with one string; what MQTT 5 adds shows only when present (a property block as its
 * length and FNV-1a hash), so the 3.1.1 lines read as they always did. Callbacks run on the store
 * thread only record; assertions stay on the test thread. The disk-full test mounts a small tmpfs
 * when it can (root), and falls back to RLIMIT_FSIZE otherwise. Figures (load time, commit
 * throughput) are printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "midge/err.h"
#include "midge/msg.h"
#include "midge/store.h"
#include "midge/sub_tree.h"

/* ---- helpers ---- */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct tmp {
    char dir[64];
    char db[128];
};

static void tmp_make(struct tmp *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/midge-store-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->db, sizeof(t->db), "%s/midge.db", t->dir);
}

/* Reports, recorded from any thread. */
struct reports {
    pthread_mutex_t lock;
    int count[16];
    char last[16][1024];
};

static struct reports rep = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_report(void *ctx, enum mq_store_event ev, const char *text)
{
    struct reports *r = ctx;
    pthread_mutex_lock(&r->lock);
    r->count[ev]++;
    snprintf(r->last[ev], sizeof(r->last[ev]), "%s", text);
    pthread_mutex_unlock(&r->lock);
    if (getenv("STORE_TEST_VERBOSE"))
        fprintf(stderr, "  report %d: %s\n", ev, text);
}

static void reports_reset(void)
{
    pthread_mutex_lock(&rep.lock);
    memset(rep.count, 0, sizeof(rep.count));
    memset(rep.last, 0, sizeof(rep.last));
    pthread_mutex_unlock(&rep.lock);
}

static int reports_count(enum mq_store_event ev)
{
    pthread_mutex_lock(&rep.lock);
    int n = rep.count[ev];
    pthread_mutex_unlock(&rep.lock);
    return n;
}

static void reports_text(enum mq_store_event ev, char *out, size_t n)
{
    pthread_mutex_lock(&rep.lock);
    snprintf(out, n, "%s", rep.last[ev]);
    pthread_mutex_unlock(&rep.lock);
}

/* Wake callback: counts and signals. */
static atomic_uint wakes;
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cond = PTHREAD_COND_INITIALIZER;

static void on_wake(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&wakes, 1);
    pthread_mutex_lock(&wake_lock);
    pthread_cond_broadcast(&wake_cond);
    pthread_mutex_unlock(&wake_lock);
}

static struct mq_store_options opts(enum mq_store_durability d)
{
    return (struct mq_store_options){
        .durability = d, .wake = on_wake, .retry_min_ms = 10, .retry_max_ms = 100};
}

static struct mq_store *open_ok(const char *path, const struct mq_store_options *o)
{
    struct mq_store *s = store_open(path, o, on_report, &rep);
    assert_non_null(s);
    return s;
}

/* A deadline in microseconds from now, stretched under qemu-user (MIDGE_TEST_SLOWDOWN, set by
 * CMake for a cross build's tests: writing 100,000 retained messages took 10 s there). */
static uint64_t deadline_us(unsigned timeout_ms)
{
    const char *slow = getenv("MIDGE_TEST_SLOWDOWN");
    uint64_t f = slow && atoi(slow) > 1 ? (uint64_t)atoi(slow) : 1;
    return now_us() + (uint64_t)timeout_ms * 1000 * f;
}

/* Wait (driven by the wake callback) until ticket t is committed; false on timeout. */
static bool wait_committed(struct mq_store *s, uint64_t t, unsigned timeout_ms)
{
    uint64_t end = deadline_us(timeout_ms);
    pthread_mutex_lock(&wake_lock);
    while (store_committed(s) < t && now_us() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 2000000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&wake_cond, &wake_lock, &ts);
    }
    pthread_mutex_unlock(&wake_lock);
    return store_committed(s) >= t;
}

static bool wait_healthy(struct mq_store *s, bool want, unsigned timeout_ms)
{
    uint64_t end = deadline_us(timeout_ms);
    while (store_healthy(s) != want && now_us() < end)
        sleep_ms(2);
    return store_healthy(s) == want;
}

static struct mq_msg *mk(const char *topic, const char *payload, uint8_t qos)
{
    struct mq_msg *m = msg_new((const uint8_t *)topic, (uint16_t)strlen(topic),
                               (const uint8_t *)payload, (uint32_t)strlen(payload), qos, false);
    assert_non_null(m);
    return m;
}

#define ID(c) c, (uint16_t)strlen(c)

static void retain(struct mq_store *s, const char *topic, const char *payload, uint8_t qos)
{
    struct mq_msg *m = mk(topic, payload, qos);
    assert_int_equal(store_retain_set(s, m, 0), 0);
    msg_unref(m);
}

static void add_msg(struct mq_store *s, const char *client, uint64_t seq, const char *topic,
                    const char *payload, uint8_t qos, bool rtn)
{
    struct mq_msg *m = mk(topic, payload, qos);
    assert_int_equal(store_msg_add(s, ID(client), seq, m, qos, rtn, NULL, 0, 0), 0);
    msg_unref(m);
}

static void commit_wait(struct mq_store *s)
{
    uint64_t t = store_commit_async(s);
    assert_true(wait_committed(s, t, 10000));
}

/* ---- store_load → text ---- */

struct dump {
    char *buf;
    size_t len, cap;
    uint32_t retained, sessions, msgs;
};

static void dump_add(struct dump *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dump_add(struct dump *d, const char *fmt, ...)
{
    va_list ap;
    char line[512];
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1; /* long payloads are cut: the tests compare short ones */
    if (d->len + (size_t)n + 1 > d->cap) {
        d->cap = (d->cap + (size_t)n + 1) * 2;
        d->buf = realloc(d->buf, d->cap);
    }
    memcpy(d->buf + d->len, line, (size_t)n + 1);
    d->len += (size_t)n;
}

/* " props=<len>/<fnv1a>" and " exp=<ms>" for what MQTT 5 adds, "" when absent. */
static const char *v5_text(char *buf, size_t n, const uint8_t *props, uint32_t props_len,
                           uint64_t expires)
{
    uint32_t h = 2166136261u;
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < props_len; i++)
        h = (h ^ props[i]) * 16777619u;
    if (props_len)
        used += (size_t)snprintf(buf + used, n - used, " props=%u/%08x", props_len, h);
    if (expires)
        snprintf(buf + used, n - used, " exp=%llu", (unsigned long long)expires);
    return buf;
}

static int d_retained(void *ctx, const struct mq_store_retained *r)
{
    struct dump *d = ctx;
    char v5[64];
    d->retained++;
    assert_non_null(r->props);
    if (d->cap != SIZE_MAX)
        dump_add(d, "R %s %u %.*s%s\n", r->topic, r->qos, (int)r->payload_len,
                 (const char *)r->payload,
                 v5_text(v5, sizeof(v5), r->props, r->props_len, r->expires_wall_ms));
    return 0;
}

static int d_session(void *ctx, const struct mq_store_session *s)
{
    struct dump *d = ctx;
    char exp[32] = "";
    d->sessions++;
    assert_int_not_equal(s->expiry, 0);
    if (s->expiry != MQ_STORE_EXPIRY_NEVER)
        snprintf(exp, sizeof(exp), " expiry=%u", s->expiry);
    dump_add(d, "S %s seen=%llu n=%llu max=%llu loaded=%llu%s\n", s->client_id,
             (unsigned long long)s->last_seen_ms, (unsigned long long)s->msg_count,
             (unsigned long long)s->max_seq, (unsigned long long)s->msgs_loaded, exp);
    return 0;
}

static int d_sub(void *ctx, const struct mq_store_session *s, const char *f, uint16_t len,
                 uint32_t grant)
{
    (void)s;
    char id[32] = "";
    if (MQ_GRANT_SUB_ID(grant))
        snprintf(id, sizeof(id), " id=%u", MQ_GRANT_SUB_ID(grant));
    dump_add(ctx, " s %.*s %u%s%s%s\n", (int)len, f, MQ_GRANT_QOS(grant),
             grant & MQ_GRANT_NO_LOCAL ? " nl" : "",
             grant & MQ_GRANT_RETAIN_AS_PUBLISHED ? " rap" : "", id);
    return 0;
}

static void dump_msg(struct dump *d, const struct mq_store_msg *m)
{
    char v5[64], ids[128] = "";
    size_t used = 0;
    d->msgs++;
    assert_non_null(m->props);
    for (size_t i = 0; i < m->n_sub_ids && used < sizeof(ids); i++)
        used += (size_t)snprintf(ids + used, sizeof(ids) - used, "%s%u",
                                 i ? "," : " ids=", m->sub_ids[i]);
    dump_add(d, " M %llu %s %.*s q%u r%u p%u st%u%s%s\n", (unsigned long long)m->seq, m->topic,
             (int)m->payload_len, (const char *)m->payload, m->qos, m->retain, m->packet_id,
             m->state, v5_text(v5, sizeof(v5), m->props, m->props_len, m->expires_wall_ms), ids);
}

static int d_msg(void *ctx, const struct mq_store_session *s, const struct mq_store_msg *m)
{
    (void)s;
    dump_msg(ctx, m);
    return 0;
}

static int d_page(void *ctx, const struct mq_store_msg *m)
{
    dump_msg(ctx, m);
    return 0;
}

static int d_qos2(void *ctx, const struct mq_store_session *s, uint16_t id)
{
    (void)s;
    dump_add(ctx, " Q %u\n", id);
    return 0;
}

static int d_will(void *ctx, const struct mq_store_session *s, const struct mq_store_will *w)
{
    (void)s;
    char v5[64];
    assert_non_null(w->props);
    dump_add(ctx, " W %s %.*s q%u r%u due=%llu%s\n", w->topic, (int)w->payload_len,
             (const char *)w->payload, w->qos, w->retain, (unsigned long long)w->due_wall_ms,
             v5_text(v5, sizeof(v5), w->props, w->props_len, w->expires_wall_ms));
    return 0;
}

static const struct mq_store_load_cb dump_cb = {.retained = d_retained,
                                                .session = d_session,
                                                .sub = d_sub,
                                                .msg = d_msg,
                                                .qos2_in = d_qos2,
                                                .will = d_will};

/* Whole store as text (caller frees). */
static char *load_text(struct mq_store *s, uint32_t per_session)
{
    struct dump d = {0};
    struct mq_store_load_cb cb = dump_cb;
    cb.msgs_per_session = per_session;
    dump_add(&d, "%s", "");
    assert_int_equal(store_load(s, &cb, &d), 0);
    return d.buf;
}

static void assert_store_text(struct mq_store *s, const char *want)
{
    char *got = load_text(s, 0);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "--- got:\n%s--- want:\n%s", got, want);
    assert_string_equal(got, want);
    free(got);
}

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

static void write_file(const char *p, const void *data, size_t n)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void *read_file(const char *p, size_t *n)
{
    struct stat st;
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return buf;
}

/* The one "<base>.corrupt-YYYYmmdd-HHMMSS" file beside base, or false. */
static bool find_aside(const struct tmp *t, char *out, size_t n)
{
    DIR *d = opendir(t->dir);
    struct dirent *e;
    bool found = false;
    assert_non_null(d);
    while ((e = readdir(d))) {
        const char *p = strstr(e->d_name, ".corrupt-");
        if (strncmp(e->d_name, "midge.db.corrupt-", 17) != 0 || !p)
            continue;
        if (strlen(e->d_name) != 17 + 15) /* companions end in -wal/-shm */
            continue;
        for (int i = 0; i < 15; i++)
            assert_true(i == 8 ? e->d_name[17 + i] == '-'
                               : e->d_name[17 + i] >= '0' && e->d_name[17 + i] <= '9');
        snprintf(out, n, "%s/%s", t->dir, e->d_name);
        assert_false(found);
        found = true;
    }
    closedir(d);
    return found;
}

/* ---- tests ---- */

/* Every record type survives close and reopen; replacements and deletions apply in order. */
static void test_round_trip(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    struct mq_store *s;
    tmp_make(&t);
    reports_reset();

    s = open_ok(t.db, &o);
    assert_int_equal(reports_count(MQ_STORE_EV_CREATED), 1);
    assert_store_text(s, "");

    retain(s, "a/b", "one", 1);
    retain(s, "a/c", "two", 0);
    retain(s, "a/b", "three", 2); /* replaces */
    retain(s, "gone", "x", 1);
    assert_int_equal(store_retain_delete(s, ID("gone")), 0);
    retain(s, "gone2", "x", 1);
    retain(s, "gone2", "", 1); /* empty payload deletes */

    assert_int_equal(store_session_put(s, ID("alice"), 1700000000123ull, MQ_STORE_EXPIRY_NEVER), 0);
    assert_int_equal(store_sub_add(s, ID("alice"), ID("x/#"), 1), 0);
    assert_int_equal(store_sub_add(s, ID("alice"), ID("y/+"), 0), 0);
    assert_int_equal(store_sub_add(s, ID("alice"), ID("y/+"), 2), 0); /* updates QoS */
    assert_int_equal(store_sub_add(s, ID("alice"), ID("z"), 1), 0);
    assert_int_equal(store_sub_remove(s, ID("alice"), ID("z")), 0);
    add_msg(s, "alice", 1, "x/1", "m1", 1, false);
    add_msg(s, "alice", 2, "x/2", "m2", 2, true);
    add_msg(s, "alice", 3, "x/3", "m3", 2, false);
    add_msg(s, "alice", 4, "x/4", "m4", 1, false);
    add_msg(s, "alice", 5, "x/5", "m5", 1, false);
    assert_int_equal(store_msg_state(s, ID("alice"), 1, 7, MQ_STORE_WAIT_PUBACK), 0);
    assert_int_equal(store_msg_state(s, ID("alice"), 2, 8, MQ_STORE_WAIT_PUBREC), 0);
    assert_int_equal(store_msg_state(s, ID("alice"), 3, 9, MQ_STORE_WAIT_PUBREC), 0);
    assert_int_equal(store_msg_state(s, ID("alice"), 3, 9, MQ_STORE_WAIT_PUBCOMP), 0);
    assert_int_equal(store_msg_delete(s, ID("alice"), 4), 0);
    assert_int_equal(store_qos2_in_add(s, ID("alice"), 300), 0);
    assert_int_equal(store_qos2_in_add(s, ID("alice"), 12), 0);
    assert_int_equal(store_qos2_in_add(s, ID("alice"), 12), 0); /* duplicate: kept once */
    assert_int_equal(store_qos2_in_add(s, ID("alice"), 13), 0);
    assert_int_equal(store_qos2_in_remove(s, ID("alice"), 13), 0);
    commit_wait(s);

    /* A second batch: a session created implicitly, one deleted with everything it had. */
    add_msg(s, "bob", 10, "t", "b10", 1, false);
    assert_int_equal(store_session_put(s, ID("carol"), 5, MQ_STORE_EXPIRY_NEVER), 0);
    assert_int_equal(store_sub_add(s, ID("carol"), ID("#"), 1), 0);
    add_msg(s, "carol", 1, "t", "c1", 1, false);
    assert_int_equal(store_qos2_in_add(s, ID("carol"), 1), 0);
    commit_wait(s);
    assert_int_equal(store_session_delete(s, ID("carol")), 0);
    /* Changes for a session that is not stored are no-ops, not errors. */
    assert_int_equal(store_msg_delete(s, ID("nobody"), 1), 0);
    assert_int_equal(store_sub_remove(s, ID("nobody"), ID("a")), 0);
    assert_int_equal(store_session_put(s, ID("bob"), 42, MQ_STORE_EXPIRY_NEVER), 0);
    commit_wait(s);

    const char *want = "R a/b 2 three\n"
                       "R a/c 0 two\n"
                       "S alice seen=1700000000123 n=4 max=5 loaded=4\n"
                       " s x/# 1\n"
                       " s y/+ 2\n"
                       " M 1 x/1 m1 q1 r0 p7 st1\n"
                       " M 2 x/2 m2 q2 r1 p8 st2\n"
                       " M 3 x/3  q2 r0 p9 st3\n" /* PUBREL sent: payload dropped */
                       " M 5 x/5 m5 q1 r0 p0 st0\n"
                       " Q 12\n"
                       " Q 300\n"
                       "S bob seen=42 n=1 max=10 loaded=1\n"
                       " M 10 t b10 q1 r0 p0 st0\n";
    assert_store_text(s, want);
    store_close(s);

    reports_reset();
    s = open_ok(t.db, &o);
    assert_int_equal(reports_count(MQ_STORE_EV_OPENED), 1);
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 0);
    assert_store_text(s, want);
    store_close(s);

    /* Relaxed durability reads and writes the same database. */
    o = opts(MQ_STORE_DURABILITY_RELAXED);
    s = open_ok(t.db, &o);
    assert_store_text(s, want);
    store_close(s);
    rm_rf(t.dir);
}

/* A message with a property block of props_len pattern bytes (the store keeps any block). */
static struct mq_msg *mk5(const char *topic, const char *payload, uint8_t qos, bool rtn,
                          uint32_t props_len, uint8_t seed)
{
    struct mq_msg *m =
        msg_new_props((const uint8_t *)topic, (uint16_t)strlen(topic), (const uint8_t *)payload,
                      (uint32_t)strlen(payload), qos, rtn, props_len, 0);
    assert_non_null(m);
    for (uint32_t i = 0; i < props_len; i++)
        msg_props(m)[i] = (uint8_t)(seed + i * 7);
    return m;
}

/* The dump text of mk5's block: " props=<len>/<hash>". */
static const char *props_tag(char *buf, size_t n, uint32_t props_len, uint8_t seed)
{
    uint8_t p[1024];
    assert_true(props_len <= sizeof(p));
    for (uint32_t i = 0; i < props_len; i++)
        p[i] = (uint8_t)(seed + i * 7);
    return v5_text(buf, n, p, props_len, 0);
}

/* Everything MQTT 5 adds survives close and reopen: the Session Expiry Interval, whole
 * grants (options, the largest Subscription Identifier), a message's properties, its
 * Subscription Identifiers and expiry, retained properties and expiry, pending wills (one
 * replaced, one deleted, one gone with its session). */
static void test_v5_round_trip(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    char p300[64], p5[64], p40[64], p9[64], want[2048];
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);

    assert_int_equal(store_session_put(s, ID("v5"), 1700000000000ull, 120), 0);
    assert_int_equal(store_session_put(s, ID("flip"), 7, 300), 0);
    assert_int_equal(store_session_put(s, ID("flip"), 8, MQ_STORE_EXPIRY_NEVER), 0);
    uint32_t all =
        MQ_GRANT(1, MQ_GRANT_NO_LOCAL | MQ_GRANT_RETAIN_AS_PUBLISHED, MQ_GRANT_SUB_ID_MAX);
    assert_int_equal(store_sub_add(s, ID("v5"), ID("a/+"), all), 0);
    assert_int_equal(store_sub_add(s, ID("v5"), ID("b"), MQ_GRANT(2, 0, 7)), 0);
    assert_int_equal(store_sub_add(s, ID("v5"), ID("b"), MQ_GRANT(2, MQ_GRANT_NO_LOCAL, 0)), 0);
    assert_int_equal(
        store_sub_add(s, ID("v5"), ID("c"), MQ_GRANT(0, MQ_GRANT_RETAIN_AS_PUBLISHED, 1)), 0);

    static const uint32_t three[] = {1, MQ_GRANT_SUB_ID_MAX, 42};
    struct mq_msg *m = mk5("a/1", "big", 1, false, 300, 3);
    assert_int_equal(store_msg_add(s, ID("v5"), 1, m, 1, false, three, 3, 1700000123456ull), 0);
    msg_unref(m);
    add_msg(s, "v5", 2, "b", "plain", 2, false); /* a 3.1.1 message between them */
    m = mk5("a/3", "released", 2, true, 40, 9);
    assert_int_equal(store_msg_add(s, ID("v5"), 3, m, 2, true, three + 2, 1, 0), 0);
    msg_unref(m);
    m = mk5("a/4", "sent", 2, false, 5, 1);
    assert_int_equal(store_msg_add(s, ID("v5"), 4, m, 2, false, three, 1, 1700000999000ull), 0);
    msg_unref(m);
    /* PUBREL sent: the message goes, properties and ids with it; PUBREC pending: kept. */
    assert_int_equal(store_msg_state(s, ID("v5"), 3, 21, MQ_STORE_WAIT_PUBCOMP), 0);
    assert_int_equal(store_msg_state(s, ID("v5"), 4, 22, MQ_STORE_WAIT_PUBREC), 0);

    m = mk5("r/1", "kept", 1, true, 9, 5);
    assert_int_equal(store_retain_set(s, m, 1800000000000ull), 0);
    msg_unref(m);
    m = mk5("r/2", "first", 1, true, 9, 5);
    assert_int_equal(store_retain_set(s, m, 1800000000000ull), 0);
    msg_unref(m);
    retain(s, "r/2", "second", 0); /* replaced by a 3.1.1 one: properties and expiry gone */

    m = mk5("will/v5", "old will", 1, false, 9, 5);
    assert_int_equal(store_will_put(s, ID("v5"), m, 0, 1700000000500ull), 0);
    msg_unref(m);
    m = mk5("will/v5", "offline", 2, true, 40, 9);
    assert_int_equal(store_will_put(s, ID("v5"), m, 1700000600000ull, 1700000060000ull), 0);
    msg_unref(m);
    m = mk5("will/gone", "x", 0, false, 0, 0);
    assert_int_equal(store_will_put(s, ID("gone"), m, 0, 5), 0); /* creates the session */
    assert_int_equal(store_will_put(s, ID("undone"), m, 0, 5), 0);
    msg_unref(m);
    commit_wait(s);
    assert_int_equal(store_session_delete(s, ID("gone")), 0);
    assert_int_equal(store_will_delete(s, ID("undone")), 0);
    assert_int_equal(store_will_delete(s, ID("nobody")), 0); /* no session: nothing to do */
    commit_wait(s);

    snprintf(want, sizeof(want),
             "R r/1 1 kept%s exp=1800000000000\n"
             "R r/2 0 second\n"
             "S v5 seen=1700000000000 n=4 max=4 loaded=4 expiry=120\n"
             " s a/+ 1 nl rap id=268435455\n"
             " s b 2 nl\n"
             " s c 0 rap id=1\n"
             " M 1 a/1 big q1 r0 p0 st0%s exp=1700000123456 ids=1,268435455,42\n"
             " M 2 b plain q2 r0 p0 st0\n"
             " M 3 a/3  q2 r1 p21 st3\n"
             " M 4 a/4 sent q2 r0 p22 st2%s exp=1700000999000 ids=1\n"
             " W will/v5 offline q2 r1 due=1700000060000%s exp=1700000600000\n"
             "S flip seen=8 n=0 max=0 loaded=0\n"
             "S undone seen=%s",
             props_tag(p9, sizeof(p9), 9, 5), props_tag(p300, sizeof(p300), 300, 3),
             props_tag(p5, sizeof(p5), 5, 1), props_tag(p40, sizeof(p40), 40, 9), "");
    char *got = load_text(s, 0);
    if (getenv("STORE_TEST_VERBOSE"))
        fprintf(stderr, "%s", got);
    /* "undone" was created by its will with last_seen = now: compare up to there. */
    if (strncmp(got, want, strlen(want)) != 0)
        fprintf(stderr, "--- got:\n%s--- want:\n%s\n", got, want);
    assert_true(strncmp(got, want, strlen(want)) == 0);
    assert_non_null(strstr(got + strlen(want), " n=0 max=0 loaded=0\n"));
    assert_null(strstr(got, "gone"));
    assert_null(strstr(got, "W will/gone"));
    store_close(s);

    /* Reopened: the same, and a page read carries the same views. */
    s = open_ok(t.db, &o);
    char *again = load_text(s, 0);
    assert_string_equal(again, got);
    free(again);
    struct dump pg = {0};
    dump_add(&pg, "%s", "");
    assert_int_equal(store_msg_page(s, ID("v5"), 0, 1, d_page, &pg), 1);
    char line[256];
    snprintf(line, sizeof(line),
             " M 1 a/1 big q1 r0 p0 st0%s exp=1700000123456 ids=1,268435455,42\n", p300);
    assert_string_equal(pg.buf, line);
    free(pg.buf);
    free(got);
    (void)p9;
    store_close(s);
    rm_rf(t.dir);
}

/* Version 1 of the schema, as midge 1 created it (src/store/store_open.c, migration 1): a
 * copy, so that this test keeps checking the upgrade from what is really on disks. */
static const char v1_schema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value NOT NULL);"
    "CREATE TABLE retained(topic TEXT PRIMARY KEY NOT NULL, qos INTEGER NOT NULL,"
    "                      payload BLOB NOT NULL);"
    "CREATE TABLE session(id INTEGER PRIMARY KEY, client_id TEXT NOT NULL UNIQUE,"
    "                     last_seen_ms INTEGER NOT NULL);"
    "CREATE TABLE sub(session_id INTEGER NOT NULL, filter TEXT NOT NULL,"
    "                 qos INTEGER NOT NULL, PRIMARY KEY(session_id, filter)) WITHOUT ROWID;"
    "CREATE TABLE out_msg(session_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
    "                     qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    "                     packet_id INTEGER NOT NULL, state INTEGER NOT NULL,"
    "                     topic TEXT NOT NULL, payload BLOB NOT NULL,"
    "                     UNIQUE(session_id, seq));"
    "CREATE TABLE qos2_in(session_id INTEGER NOT NULL, packet_id INTEGER NOT NULL,"
    "                     PRIMARY KEY(session_id, packet_id)) WITHOUT ROWID;";

/* A version 1 database with rows of every kind, written with plain SQLite (in WAL mode, as
 * midge 1 left it); extra_sql runs last. */
static void make_v1(const char *path, const char *extra_sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA application_id=1296320325;", NULL,
                          NULL, NULL);
    assert_int_equal(rc, SQLITE_OK);
    rc = sqlite3_exec(db, v1_schema, NULL, NULL, NULL);
    assert_int_equal(rc, SQLITE_OK);
    rc = sqlite3_exec(
        db,
        "INSERT INTO meta VALUES('schema_version', 1), ('created_by', 'midge 1.0'),"
        "                       ('created_ms', 1700000000000);"
        "INSERT INTO retained VALUES('r/1', 1, x'6f6e65');"
        "INSERT INTO session(id, client_id, last_seen_ms) VALUES(1, 'old', 1700000000123),"
        "                                                       (2, 'idle', 1700000000456);"
        "INSERT INTO sub VALUES(1, 'x/#', 1), (1, 'y', 2), (2, 'z', 0);"
        "INSERT INTO out_msg VALUES(1, 1, 1, 0, 7, 1, 'x/1', x'6d31'),"
        "                          (1, 2, 2, 1, 0, 0, 'x/2', x'6d32'),"
        "                          (1, 3, 2, 0, 9, 3, 'x/3', x'');"
        "INSERT INTO qos2_in VALUES(1, 12);",
        NULL, NULL, NULL);
    assert_int_equal(rc, SQLITE_OK);
    if (extra_sql)
        assert_int_equal(sqlite3_exec(db, extra_sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* A version 1 database is upgraded in place: its rows load as before (sessions never
 * expire, grants are their QoS, messages have no properties), and the new fields work on
 * it at once. */
static void test_migrate_v1(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    char text[1024], p40[64], want[1024];
    tmp_make(&t);
    make_v1(t.db, NULL);

    reports_reset();
    struct mq_store *s = open_ok(t.db, &o);
    assert_int_equal(reports_count(MQ_STORE_EV_MIGRATED), 1);
    assert_int_equal(reports_count(MQ_STORE_EV_CREATED), 0);
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 0);
    reports_text(MQ_STORE_EV_MIGRATED, text, sizeof(text));
    printf("    %s\n", text);
    assert_non_null(strstr(text, "from schema version 1 to 2"));
    const char *v1_text = "R r/1 1 one\n"
                          "S old seen=1700000000123 n=3 max=3 loaded=3\n"
                          " s x/# 1\n"
                          " s y 2\n"
                          " M 1 x/1 m1 q1 r0 p7 st1\n"
                          " M 2 x/2 m2 q2 r1 p0 st0\n"
                          " M 3 x/3  q2 r0 p9 st3\n"
                          " Q 12\n"
                          "S idle seen=1700000000456 n=0 max=0 loaded=0\n"
                          " s z 0\n";
    assert_store_text(s, v1_text);

    /* MQTT 5 state on the upgraded file, beside the old rows. */
    assert_int_equal(store_session_put(s, ID("old"), 1700000001000ull, 60), 0);
    assert_int_equal(store_sub_add(s, ID("old"), ID("y"), MQ_GRANT(2, MQ_GRANT_NO_LOCAL, 5)), 0);
    static const uint32_t ids[] = {5};
    struct mq_msg *m = mk5("y", "m4", 2, false, 40, 9);
    assert_int_equal(store_msg_add(s, ID("old"), 4, m, 2, false, ids, 1, 1700000002000ull), 0);
    assert_int_equal(store_will_put(s, ID("idle"), m, 0, 1700000003000ull), 0);
    msg_unref(m);
    commit_wait(s);
    store_close(s);

    reports_reset();
    s = open_ok(t.db, &o);
    assert_int_equal(reports_count(MQ_STORE_EV_OPENED), 1); /* already current */
    assert_int_equal(reports_count(MQ_STORE_EV_MIGRATED), 0);
    props_tag(p40, sizeof(p40), 40, 9);
    snprintf(want, sizeof(want),
             "R r/1 1 one\n"
             "S old seen=1700000001000 n=4 max=4 loaded=4 expiry=60\n"
             " s x/# 1\n"
             " s y 2 nl id=5\n"
             " M 1 x/1 m1 q1 r0 p7 st1\n"
             " M 2 x/2 m2 q2 r1 p0 st0\n"
             " M 3 x/3  q2 r0 p9 st3\n"
             " M 4 y m4 q2 r0 p0 st0%s exp=1700000002000 ids=5\n"
             " Q 12\n"
             "S idle seen=1700000000456 n=0 max=0 loaded=0\n"
             " s z 0\n"
             " W y m4 q2 r0 due=1700000003000%s\n",
             p40, p40);
    assert_store_text(s, want);
    store_close(s);
    assert_int_equal(sql_int(t.db, "SELECT value FROM meta WHERE key = 'schema_version'"), 2);
    assert_int_equal(sql_int(t.db, "SELECT value FROM meta WHERE key = 'created_ms'"),
                     1700000000000ll); /* the creation record is the original one */
    rm_rf(t.dir);
}

/* The upgrade is one transaction: a step that fails leaves the version 1 file as it was
 * (refused, not moved aside, not half-upgraded). */
static void test_migration_atomic(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    char text[1024];
    tmp_make(&t);
    /* A table in the way of the last statement of step 2. */
    make_v1(t.db, "CREATE TABLE pending_will(x);");

    reports_reset();
    assert_null(store_open(t.db, &o, on_report, &rep));
    assert_int_equal(reports_count(MQ_STORE_EV_REFUSED), 1);
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 0);
    reports_text(MQ_STORE_EV_REFUSED, text, sizeof(text));
    printf("    %s\n", text);
    assert_non_null(strstr(text, "upgrading the schema"));
    assert_int_equal(sql_int(t.db, "SELECT value FROM meta WHERE key = 'schema_version'"), 1);
    assert_int_equal(
        sql_int(t.db, "SELECT count(*) FROM pragma_table_info('retained') WHERE name = 'props'"),
        0);
    assert_int_equal(
        sql_int(t.db, "SELECT count(*) FROM pragma_table_info('session') WHERE name = 'expiry_s'"),
        0);
    assert_int_equal(sql_int(t.db, "SELECT count(*) FROM out_msg"), 3);
    char aside[256];
    assert_false(find_aside(&t, aside, sizeof(aside)));
    rm_rf(t.dir);
}

/* store_close commits what was appended but never handed over. */
static void test_close_drains(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_RELAXED);
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);
    for (int i = 0; i < 50; i++) {
        char topic[32];
        snprintf(topic, sizeof(topic), "t/%02d", i);
        retain(s, topic, "p", 0);
        if (i % 10 == 9)
            store_commit_async(s); /* some handed over, the last 0 not */
    }
    retain(s, "last", "p", 1);
    store_close(s);
    s = open_ok(t.db, &o);
    struct dump d = {0};
    d.cap = SIZE_MAX; /* count only */
    assert_int_equal(store_load(s, &dump_cb, &d), 0);
    assert_int_equal(d.retained, 51);
    store_close(s);
    rm_rf(t.dir);
}

/* Outgoing messages come back in seq order, a load can stop after N per session, and the
 * rest pages in from where it stopped. */
static void test_msg_order_and_paging(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_RELAXED);
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);

    /* Interleave two clients over many batches; write seqs out of order within a batch to
     * prove the order comes from seq, not from insertion. */
    for (uint64_t base = 0; base < 1000; base += 10) {
        for (int i = 9; i >= 0; i--) {
            char p[16];
            snprintf(p, sizeof(p), "%llu", (unsigned long long)(base + (uint64_t)i + 1));
            add_msg(s, "one", base + (uint64_t)i + 1, "q", p, 1, false);
            add_msg(s, "two", base + (uint64_t)i + 1, "q", p, 2, false);
        }
        store_commit_async(s);
    }
    for (uint64_t seq = 2; seq <= 1000; seq += 3)
        assert_int_equal(store_msg_delete(s, ID("one"), seq), 0);
    commit_wait(s);
    store_close(s);

    s = open_ok(t.db, &o);
    struct dump d = {0};
    struct mq_store_load_cb cb = dump_cb;
    cb.msgs_per_session = 20;
    dump_add(&d, "%s", "");
    assert_int_equal(store_load(s, &cb, &d), 0);
    assert_int_equal(d.sessions, 2);
    assert_int_equal(d.msgs, 40);
    assert_non_null(strstr(d.buf, "S one seen="));
    assert_non_null(strstr(d.buf, " n=667 max=1000 loaded=20\n"));
    assert_non_null(strstr(d.buf, " n=1000 max=1000 loaded=20\n"));
    free(d.buf);

    /* Page "one" in from seq 0 in pages of 100: every surviving seq once, ascending. */
    uint64_t after = 0, expect = 1, total = 0;
    for (;;) {
        struct dump pg = {0};
        dump_add(&pg, "%s", "");
        int64_t n = store_msg_page(s, ID("one"), after, 100, d_page, &pg);
        assert_true(n >= 0);
        if (n == 0) {
            free(pg.buf);
            break;
        }
        char *line = pg.buf;
        for (int64_t i = 0; i < n; i++) {
            unsigned long long seq;
            assert_int_equal(sscanf(line, " M %llu", &seq), 1);
            if (expect % 3 == 2)
                expect++;
            assert_int_equal(seq, expect);
            expect++;
            after = seq;
            line = strchr(line, '\n') + 1;
        }
        total += (uint64_t)n;
        free(pg.buf);
    }
    assert_int_equal(total, 667);
    struct dump none = {0};
    assert_int_equal(store_msg_page(s, ID("nobody"), 0, 0, d_page, &none), 0);
    store_close(s);
    rm_rf(t.dir);
}

/* Many batches handed over while the thread is busy go out in one transaction; tickets
 * increase by one per non-empty batch; the wake callback fires. */
static void test_group_commit_and_tickets(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    struct mq_store_stats st;
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);

    assert_int_equal(store_committed(s), 0);
    assert_int_equal(store_commit_async(s), 0); /* nothing appended: no ticket */
    store_hold(s, true);
    uint64_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        char topic[32];
        snprintf(topic, sizeof(topic), "g/%d", i);
        retain(s, topic, "v", 1);
        uint64_t tk = store_commit_async(s);
        assert_int_equal(tk, prev + 1);
        prev = tk;
    }
    assert_int_equal(store_commit_async(s), 1000); /* empty: the last ticket again */
    sleep_ms(30);
    assert_int_equal(store_committed(s), 0); /* held: nothing written */
    store_stats(s, &st);
    assert_int_equal(st.pending_batches, 1000);
    unsigned w0 = atomic_load(&wakes);
    store_hold(s, false);
    assert_true(wait_committed(s, 1000, 10000));
    store_stats(s, &st);
    assert_int_equal(st.transactions, 1);
    assert_int_equal(st.batches, 1000);
    assert_int_equal(st.records, 1000);
    assert_int_equal(st.pending_batches, 0);
    assert_int_equal(st.issued, 1000);
    assert_int_equal(st.committed, 1000);
    assert_true(st.healthy);
    for (int i = 0; i < 1000 && atomic_load(&wakes) == w0; i++)
        sleep_ms(1); /* the wake comes just after `committed` moves */
    assert_true(atomic_load(&wakes) > w0);

    /* Unheld, as fast as we can hand them over: still far fewer transactions than batches. */
    for (int i = 0; i < 2000; i++) {
        add_msg(s, "c", (uint64_t)i + 1, "t", "payload", 1, false);
        prev = store_commit_async(s);
    }
    assert_true(wait_committed(s, prev, 20000));
    store_stats(s, &st);
    printf("    group commit: 2000 batches from the loop went out in %llu transactions\n",
           (unsigned long long)(st.transactions - 1));
    assert_true(st.transactions - 1 < 2000);
    store_close(s);
    rm_rf(t.dir);
}

/* A database this build did not write is refused untouched, not moved aside. */
static void test_newer_schema_refused(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    sqlite3 *db;
    char text[1024];
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);
    retain(s, "keep", "me", 1);
    commit_wait(s);
    store_close(s);

    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    off_t before = file_size(t.db);

    reports_reset();
    assert_null(store_open(t.db, &o, on_report, &rep));
    assert_int_equal(reports_count(MQ_STORE_EV_REFUSED), 1);
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 0);
    reports_text(MQ_STORE_EV_REFUSED, text, sizeof(text));
    printf("    %s\n", text);
    assert_non_null(strstr(text, "newer midge (schema version 99"));
    assert_non_null(strstr(text, "knows versions up to 2)"));
    assert_int_equal(file_size(t.db), before);
    char aside[256];
    assert_false(find_aside(&t, aside, sizeof(aside)));
    rm_rf(t.dir);
}

/* A second store on the same file (another midge) is refused while the first is open. */
static void test_in_use_refused(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    char text[1024];
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);
    reports_reset();
    assert_null(store_open(t.db, &o, on_report, &rep));
    reports_text(MQ_STORE_EV_REFUSED, text, sizeof(text));
    assert_non_null(strstr(text, "in use by another process"));
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 0);
    store_close(s);
    s = open_ok(t.db, &o); /* and usable again once it is closed */
    store_close(s);
    rm_rf(t.dir);
}

/* Write a valid store with some content, then let mangle() damage the file. */
static void make_db(const struct tmp *t, int retained, int payload_bytes)
{
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_RELAXED);
    struct mq_store *s = open_ok(t->db, &o);
    char *payload = malloc((size_t)payload_bytes + 1);
    memset(payload, 'p', (size_t)payload_bytes);
    payload[payload_bytes] = '\0';
    for (int i = 0; i < retained; i++) {
        char topic[32];
        snprintf(topic, sizeof(topic), "r/%06d", i);
        retain(s, topic, payload, 1);
    }
    commit_wait(s);
    free(payload);
    store_close(s);
}

/* Open a damaged file: it must be moved aside byte for byte, reported with `expect` in the
 * text, and replaced by an empty, working store. */
static void expect_moved_aside(const struct tmp *t, const char *expect)
{
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    char text[1024], aside[256];
    size_t n_before, n_after;
    void *before = read_file(t->db, &n_before);

    reports_reset();
    struct mq_store *s = open_ok(t->db, &o);
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 1);
    assert_int_equal(reports_count(MQ_STORE_EV_CREATED), 1);
    reports_text(MQ_STORE_EV_MOVED_ASIDE, text, sizeof(text));
    printf("    %s\n", text);
    assert_non_null(strstr(text, expect));
    assert_true(find_aside(t, aside, sizeof(aside)));
    assert_non_null(strstr(text, aside));
    void *after = read_file(aside, &n_after);
    assert_int_equal(n_after, n_before);
    assert_memory_equal(after, before, n_before);
    free(before);
    free(after);

    assert_store_text(s, "");
    retain(s, "fresh", "start", 1);
    commit_wait(s);
    store_close(s);
    s = open_ok(t->db, &o);
    assert_store_text(s, "R fresh 1 start\n");
    store_close(s);
}

static void test_corrupt_truncated(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    make_db(&t, 2000, 200);
    assert_int_equal(truncate(t.db, file_size(t.db) / 2), 0);
    expect_moved_aside(&t, "is truncated");
    rm_rf(t.dir);
}

static void test_corrupt_random(void **state)
{
    (void)state;
    struct tmp t;
    unsigned char junk[10000];
    tmp_make(&t);
    srand(7);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)rand();
    write_file(t.db, junk, sizeof(junk));
    expect_moved_aside(&t, "is not an SQLite database (it begins with bytes");
    rm_rf(t.dir);
}

static void test_corrupt_zero_filled(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    make_db(&t, 100, 100);
    off_t n = file_size(t.db);
    void *zeros = calloc(1, (size_t)n);
    write_file(t.db, zeros, (size_t)n); /* what a power loss on some file systems leaves */
    free(zeros);
    expect_moved_aside(&t, "is zero-filled");
    rm_rf(t.dir);
}

static void test_corrupt_empty_file(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    write_file(t.db, "", 0);
    expect_moved_aside(&t, "is empty (0 bytes)");
    rm_rf(t.dir);
}

static void test_corrupt_page_inside(void **state)
{
    (void)state;
    struct tmp t;
    char junk[4096];
    tmp_make(&t);
    make_db(&t, 3000, 300);
    /* Scribble over a b-tree page in the middle: header and schema still read fine, only
     * the check finds it. */
    memset(junk, 0x5a, sizeof(junk));
    int fd = open(t.db, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, sizeof(junk), (file_size(t.db) / 4096 / 2) * 4096),
                     (ssize_t)sizeof(junk));
    close(fd);
    expect_moved_aside(&t, "quick_check");
    rm_rf(t.dir);
}

static void test_foreign_files(void **state)
{
    (void)state;
    struct tmp t;
    sqlite3 *db;
    /* Mosquitto's own persistence file (mosquitto.db) given as persistence_file. */
    static const unsigned char mosq[32] = {0x00, 0xB5, 0x00, 'm', 'o', 's', 'q', 'u', 'i', 't', 't',
                                           'o',  ' ',  'd',  'b', 0,   0,   0,   0,   0,   0,   6};
    tmp_make(&t);
    write_file(t.db, mosq, sizeof(mosq));
    expect_moved_aside(&t, "Mosquitto persistence file");
    rm_rf(t.dir);

    /* Somebody else's SQLite database. */
    tmp_make(&t);
    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "CREATE TABLE t(a); INSERT INTO t VALUES(1);", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    expect_moved_aside(&t, "another application");
    rm_rf(t.dir);

    /* An empty but valid SQLite file is simply initialised. */
    tmp_make(&t);
    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 0; VACUUM;", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    reports_reset();
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    struct mq_store *s = open_ok(t.db, &o);
    assert_int_equal(reports_count(MQ_STORE_EV_MOVED_ASIDE), 0);
    assert_int_equal(reports_count(MQ_STORE_EV_CREATED), 1);
    store_close(s);

    /* The database of a midge knows itself to the sqlite3 shell. */
    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), MQ_STORE_APPLICATION_ID);
    sqlite3_finalize(st);
    sqlite3_close(db);
    rm_rf(t.dir);
}

/* A directory that does not exist is refused (nothing to move aside), not a crash. */
static void test_bad_directory_refused(void **state)
{
    (void)state;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    char text[1024];
    reports_reset();
    assert_null(store_open("/nonexistent-midge-dir/midge.db", &o, on_report, &rep));
    reports_text(MQ_STORE_EV_REFUSED, text, sizeof(text));
    assert_non_null(strstr(text, "cannot be opened or created"));
}

/* ---- disk full ---- */

struct fullfs {
    struct tmp t;
    bool tmpfs;
    char filler[160];
};

static struct fullfs *fullfs_active; /* for the teardown when an assertion fails midway */

static bool fullfs_make(struct fullfs *f)
{
    fullfs_active = f;
    tmp_make(&f->t);
    snprintf(f->filler, sizeof(f->filler), "%s/filler", f->t.dir);
    f->tmpfs = geteuid() == 0 && !getenv("STORE_TEST_NO_TMPFS") &&
               mount("tmpfs", f->t.dir, "tmpfs", 0, "size=8m,mode=0700") == 0;
    return f->tmpfs;
}

/* Take every free byte (tmpfs) or forbid files to grow (RLIMIT_FSIZE). */
static void fullfs_fill(struct fullfs *f)
{
    if (f->tmpfs) {
        static char block[65536];
        int fd = open(f->filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        memset(block, 'F', sizeof(block));
        size_t bs = sizeof(block);
        for (;;) {
            ssize_t w = write(fd, block, bs);
            if (w < 0 && errno == ENOSPC) {
                if (bs == 1)
                    break;
                bs /= 2;
                continue;
            }
            assert_true(w > 0);
        }
        close(fd);
    } else {
        struct rlimit rl = {.rlim_cur = 16384, .rlim_max = RLIM_INFINITY};
        signal(SIGXFSZ, SIG_IGN);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
    }
}

static void fullfs_free(struct fullfs *f)
{
    if (f->tmpfs) {
        assert_int_equal(unlink(f->filler), 0);
    } else {
        struct rlimit rl = {.rlim_cur = RLIM_INFINITY, .rlim_max = RLIM_INFINITY};
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
    }
}

static void fullfs_done(struct fullfs *f)
{
    struct rlimit rl = {.rlim_cur = RLIM_INFINITY, .rlim_max = RLIM_INFINITY};
    if (!f->tmpfs)
        setrlimit(RLIMIT_FSIZE, &rl);
    if (f->tmpfs)
        umount2(f->t.dir, MNT_DETACH);
    rm_rf(f->t.dir);
    fullfs_active = NULL;
}

static int fullfs_teardown(void **state)
{
    (void)state;
    if (fullfs_active)
        fullfs_done(fullfs_active);
    return 0;
}

/* Disk full: unhealthy, nothing committed, nothing lost from memory, one report; recovery
 * by itself when space returns; then a close that cannot write gives up in bounded time. */
static void test_disk_full(void **state)
{
    (void)state;
    struct fullfs f;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    struct mq_store_stats st;
    char text[1024], payload[8193];
    bool tmpfs = fullfs_make(&f);
    printf("    disk full simulated with %s\n",
           tmpfs ? "an 8 MiB tmpfs" : "RLIMIT_FSIZE (no tmpfs mount)");
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';

    reports_reset();
    struct mq_store *s = open_ok(f.t.db, &o);
    unsigned w0 = atomic_load(&wakes);
    retain(s, "base", "line", 1);
    commit_wait(s);
    for (int i = 0; i < 1000 && atomic_load(&wakes) == w0; i++)
        sleep_ms(1); /* the wake of that commit comes just after `committed` moves */
    w0 = atomic_load(&wakes);

    fullfs_fill(&f);
    uint64_t last = 0;
    for (int i = 1; i <= 100; i++) {
        add_msg(s, "sub", (uint64_t)i, "big", payload, 1, false);
        last = store_commit_async(s);
    }
    assert_true(wait_healthy(s, false, 10000));
    sleep_ms(300);                                 /* several retries */
    assert_int_equal(atomic_load(&wakes), w0 + 1); /* healthy -> unhealthy, once */
    assert_true(store_committed(s) < last);
    store_stats(s, &st);
    assert_true(st.failures >= 2);
    assert_true(st.pending_batches > 0);
    assert_int_equal(reports_count(MQ_STORE_EV_WRITE_FAILING), 1); /* once per interval */
    reports_text(MQ_STORE_EV_WRITE_FAILING, text, sizeof(text));
    printf("    %s\n", text);

    /* Changes keep arriving while the disk is full; they queue behind. */
    retain(s, "during", "full", 0);
    last = store_commit_async(s);

    fullfs_free(&f);
    /* Generous: under ASan with the integration tests running beside it, the retries are
     * slow; a store that never recovers still fails, and says where it stands. */
    if (!wait_committed(s, last, 30000)) {
        store_stats(s, &st);
        print_error("not recovered after space returned: committed %llu of %llu, %llu "
                    "failures, %llu batches pending\n",
                    (unsigned long long)store_committed(s), (unsigned long long)last,
                    (unsigned long long)st.failures, (unsigned long long)st.pending_batches);
        fail();
    }
    assert_true(store_healthy(s));
    assert_int_equal(reports_count(MQ_STORE_EV_WRITE_RECOVERED), 1);
    reports_text(MQ_STORE_EV_WRITE_RECOVERED, text, sizeof(text));
    printf("    %s\n", text);
    store_close(s);

    s = open_ok(f.t.db, &o);
    struct dump d = {0};
    dump_add(&d, "%s", "");
    assert_int_equal(store_load(s, &dump_cb, &d), 0);
    assert_int_equal(d.retained, 2);
    assert_int_equal(d.msgs, 100);
    free(d.buf);

    /* Full again at shutdown: store_close retries for close_timeout_ms, then says what it
     * could not write, and returns. */
    store_close(s);
    o.close_timeout_ms = 300;
    reports_reset();
    s = open_ok(f.t.db, &o);
    fullfs_fill(&f);
    for (int i = 101; i <= 150; i++)
        add_msg(s, "sub", (uint64_t)i, "big", payload, 1, false);
    uint64_t t0 = now_us();
    store_close(s);
    uint64_t took_ms = (now_us() - t0) / 1000;
    assert_true(took_ms < 3000);
    assert_int_equal(reports_count(MQ_STORE_EV_CLOSE_LOST), 1);
    reports_text(MQ_STORE_EV_CLOSE_LOST, text, sizeof(text));
    printf("    %s (after %llu ms)\n", text, (unsigned long long)took_ms);
    fullfs_free(&f);

    s = open_ok(f.t.db, &o); /* the database itself is intact */
    d = (struct dump){0};
    dump_add(&d, "%s", "");
    assert_int_equal(store_load(s, &dump_cb, &d), 0);
    assert_int_equal(d.msgs, 100);
    free(d.buf);
    store_close(s);
    fullfs_done(&f);
}

/* ---- figures ---- */

static void test_load_100k_retained(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_RELAXED);
    char payload[65];
    tmp_make(&t);
    memset(payload, 'v', 64);
    payload[64] = '\0';
    struct mq_store *s = open_ok(t.db, &o);
    uint64_t t0 = now_us();
    for (int i = 0; i < 100000; i++) {
        char topic[64];
        snprintf(topic, sizeof(topic), "site/%03d/sensor/%05d", i / 100, i);
        retain(s, topic, payload, (uint8_t)(i % 3));
        if (i % 1000 == 999)
            store_commit_async(s);
    }
    commit_wait(s);
    uint64_t write_us = now_us() - t0;
    store_close(s);

    t0 = now_us();
    s = open_ok(t.db, &o);
    uint64_t open_us = now_us() - t0;
    struct dump d = {0};
    d.cap = SIZE_MAX;
    t0 = now_us();
    assert_int_equal(store_load(s, &dump_cb, &d), 0);
    uint64_t load_us = now_us() - t0;
    assert_int_equal(d.retained, 100000);
    printf("    100,000 retained (64-byte payloads, %lld KiB file): written in %.0f ms; "
           "store_open (quick_check) %.0f ms + store_load %.0f ms\n",
           (long long)file_size(t.db) / 1024, write_us / 1000.0, open_us / 1000.0,
           load_us / 1000.0);
    store_close(s);
    rm_rf(t.dir);
}

/* Commit throughput with synchronous=FULL on this disk: one record per transaction waited
 * for (the fsync rate), then pipelined batches as a busy loop would hand them over. */
static void test_commit_throughput(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    struct mq_store_stats a, b;
    char payload[101];
    const char *dir = getenv("STORE_BENCH_DIR");
    memset(payload, 'p', 100);
    payload[100] = '\0';
    if (dir) {
        snprintf(t.dir, sizeof(t.dir), "%s/midge-store-XXXXXX", dir);
        assert_non_null(mkdtemp(t.dir));
        snprintf(t.db, sizeof(t.db), "%s/midge.db", t.dir);
    } else {
        tmp_make(&t);
    }
    for (int mode = 0; mode < 2; mode++) {
        o = opts(mode ? MQ_STORE_DURABILITY_RELAXED : MQ_STORE_DURABILITY_ACK);
        struct mq_store *s = open_ok(t.db, &o);
        uint64_t seq = (uint64_t)mode * 10000000, t0 = now_us(), n = 0;
        store_stats(s, &a);
        while (now_us() - t0 < 1000000) {
            add_msg(s, "bench", ++seq, "bench/t", payload, 1, false);
            uint64_t tk = store_commit_async(s);
            assert_true(wait_committed(s, tk, 10000));
            n++;
        }
        double secs = (double)(now_us() - t0) / 1e6;
        printf("    %s, serial (1 record, wait for commit): %.0f transactions/s\n",
               mode ? "relaxed" : "ack", (double)n / secs);

        store_stats(s, &a);
        t0 = now_us();
        uint64_t last = 0;
        while (now_us() - t0 < 1000000) {
            for (int i = 0; i < 20; i++)
                add_msg(s, "bench", ++seq, "bench/t", payload, 1, false);
            last = store_commit_async(s);
            while (last - store_committed(s) > 256) /* bounded backlog */
                wait_committed(s, last - 256, 1000);
        }
        assert_true(wait_committed(s, last, 20000));
        secs = (double)(now_us() - t0) / 1e6;
        store_stats(s, &b);
        printf("    %s, pipelined (batches of 20 x 100-byte messages): %.0f transactions/s, "
               "%.0f batches/s, %.0f records/s\n",
               mode ? "relaxed" : "ack", (double)(b.transactions - a.transactions) / secs,
               (double)(b.batches - a.batches) / secs, (double)(b.records - a.records) / secs);
        store_close(s);
    }
    rm_rf(t.dir);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    struct tmp t;
    struct mq_store_options o = opts(MQ_STORE_DURABILITY_ACK);
    tmp_make(&t);
    struct mq_store *s = open_ok(t.db, &o);
    struct mq_msg *m = mk("t", "p", 1);
    assert_int_equal(store_msg_add(s, ID("c"), 1, m, 3, false, NULL, 0, 0), MQ_ERR_INVAL);
    assert_int_equal(store_msg_state(s, ID("c"), 1, 1, 4), MQ_ERR_INVAL);
    assert_int_equal(store_qos2_in_add(s, ID("c"), 0), MQ_ERR_INVAL);
    assert_int_equal(store_sub_add(s, ID("c"), "", 0, 1), MQ_ERR_INVAL);
    assert_int_equal(store_retain_delete(s, "", 0), MQ_ERR_INVAL);
    assert_int_equal(store_msg_add(s, ID("c"), UINT64_MAX, m, 1, false, NULL, 0, 0), MQ_ERR_INVAL);
    assert_int_equal(store_session_put(s, ID("c"), 1, 0), MQ_ERR_INVAL); /* clean: not stored */
    assert_int_equal(store_sub_add(s, ID("c"), ID("f"), MQ_GRANT(3, 0, 9)), MQ_ERR_INVAL);
    assert_int_equal(store_msg_add(s, ID("c"), 1, m, 1, false, NULL, 2, 0), MQ_ERR_INVAL);
    uint32_t *many = calloc(MQ_STORE_SUB_IDS_MAX + 1, sizeof(*many));
    assert_int_equal(store_msg_add(s, ID("c"), 1, m, 1, false, many, MQ_STORE_SUB_IDS_MAX + 1, 0),
                     MQ_ERR_INVAL);
    free(many);
    assert_int_equal(store_retain_set(s, m, UINT64_MAX), MQ_ERR_INVAL);
    assert_int_equal(store_will_put(s, ID("c"), m, 0, UINT64_MAX), MQ_ERR_INVAL);
    assert_int_equal(store_will_put(s, NULL, 0, m, 0, 1), MQ_ERR_INVAL);
    assert_int_equal(store_will_delete(s, NULL, 0), MQ_ERR_INVAL);
    assert_int_equal(store_commit_async(s), 0); /* nothing was recorded */
    msg_unref(m);
    store_close(s);
    store_close(NULL);
    rm_rf(t.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_v5_round_trip),
        cmocka_unit_test(test_migrate_v1),
        cmocka_unit_test(test_migration_atomic),
        cmocka_unit_test(test_close_drains),
        cmocka_unit_test(test_msg_order_and_paging),
        cmocka_unit_test(test_group_commit_and_tickets),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_in_use_refused),
        cmocka_unit_test(test_corrupt_truncated),
        cmocka_unit_test(test_corrupt_random),
        cmocka_unit_test(test_corrupt_zero_filled),
        cmocka_unit_test(test_corrupt_empty_file),
        cmocka_unit_test(test_corrupt_page_inside),
        cmocka_unit_test(test_foreign_files),
        cmocka_unit_test(test_bad_directory_refused),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test_teardown(test_disk_full, fullfs_teardown),
        cmocka_unit_test(test_load_100k_retained),
        cmocka_unit_test(test_commit_throughput),
    };
    if (getenv("STORE_TEST_FILTER")) /* e.g. STORE_TEST_FILTER='test_disk*' */
        cmocka_set_test_filter(getenv("STORE_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}

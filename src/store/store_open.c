/* store_open.c - from a path to a trustworthy database: lock, recognise, check, migrate, or
 * move a damaged file aside and start again with an empty one.
 *
 * Owns the start-up decisions of persistence. It never deletes a file (a damaged one is
 * renamed beside the original with a timestamp, with its -wal/-shm/-journal), never trusts a
 * file it has not recognised and checked, and never writes to a database of a newer schema.
 * Runs on the caller's thread inside store_open, before the store thread exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "midge/err.h"
#include "store_int.h"

#define BUSY_TIMEOUT_MS 5000
#define WHY_MAX 600
#define ZERO_SCAN_MAX (64u << 20) /* bytes read to tell "zero-filled" from "begins with zeros" */

/* Table-driven migrations: step i brings a database from version to-1 to version to. An
 * empty database is version 0; a new step is appended here and never edited afterwards. */
struct migration {
    int to;
    const char *sql;
};

static const struct migration migrations[] = {
    {1, "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value NOT NULL);"
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
        "                     PRIMARY KEY(session_id, packet_id)) WITHOUT ROWID;"},
    /* MQTT 5: properties and expiry of messages, the Session Expiry Interval, subscription
     * options and identifiers, wills waiting for their delay. Every new column has a
     * default that means what a version 1 row meant (no properties, never expires, the
     * grant is the QoS), so existing rows need no rewrite: ADD COLUMN only edits the
     * schema. */
    {2, "ALTER TABLE retained ADD COLUMN props BLOB;"
        "ALTER TABLE retained ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE session ADD COLUMN expiry_s INTEGER NOT NULL DEFAULT 4294967295;"
        "ALTER TABLE sub ADD COLUMN options INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE sub ADD COLUMN sub_id INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE out_msg ADD COLUMN props BLOB;"
        "ALTER TABLE out_msg ADD COLUMN sub_ids BLOB;"
        "ALTER TABLE out_msg ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;"
        "CREATE TABLE pending_will(session_id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
        "                          qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
        "                          payload BLOB NOT NULL, props BLOB,"
        "                          expires_ms INTEGER NOT NULL, due_ms INTEGER NOT NULL);"},
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == MQ_STORE_SCHEMA_VERSION,
               "one migration step per schema version");

enum verdict { V_OK, V_DAMAGED, V_REFUSE };

struct opener {
    const char *path;
    const struct mq_store_options *o;
    mq_store_report_fn report;
    void *ctx;
    char why[WHY_MAX]; /* what is wrong, as the end of "persistence file X ..." */
};

void store_reportf(mq_store_report_fn fn, void *ctx, enum mq_store_event ev, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    if (!fn)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    fn(ctx, ev, text);
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t store_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
uint64_t store_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

/* First column of the first row of sql as an integer. SQLITE_OK, SQLITE_DONE when there is no
 * row, or the SQLite error. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto out;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

/* Same for text, copied into buf. */
static int query_text(sqlite3 *db, const char *sql, char *buf, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto out;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(buf, n, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Say what a file that SQLite calls "not a database" actually holds. */
static void describe_not_sqlite(struct opener *op)
{
    static const char mosquitto_magic[] = "mosquitto db";
    unsigned char buf[65536], head[8] = {0};
    uint64_t total = 0, zeros = 0;
    bool all_zero = true, mosquitto = false;
    int fd = open(op->path, O_RDONLY | O_CLOEXEC);

    while (fd >= 0 && all_zero && total < ZERO_SCAN_MAX) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (total == 0) {
            memcpy(head, buf, (size_t)n < sizeof(head) ? (size_t)n : sizeof(head));
            mosquitto = n >= 16 && memmem(buf, 16, mosquitto_magic, sizeof(mosquitto_magic) - 1);
        }
        for (ssize_t i = 0; i < n && all_zero; i++) {
            if (buf[i])
                all_zero = false;
            else
                zeros++;
        }
        total += (uint64_t)n;
    }
    if (fd >= 0)
        close(fd);
    if (mosquitto)
        snprintf(op->why, sizeof(op->why),
                 "is a Mosquitto persistence file, which midge cannot read (midge keeps its "
                 "state in SQLite)");
    else if (fd >= 0 && all_zero && total < ZERO_SCAN_MAX)
        snprintf(op->why, sizeof(op->why), "is zero-filled (%llu bytes of zeros)",
                 (unsigned long long)total);
    else if (zeros >= 512)
        snprintf(op->why, sizeof(op->why),
                 "is not an SQLite database (it begins with %llu zero bytes)",
                 (unsigned long long)zeros);
    else
        snprintf(op->why, sizeof(op->why),
                 "is not an SQLite database (it begins with bytes %02x %02x %02x %02x %02x %02x "
                 "%02x %02x)",
                 head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]);
}

/* For a database SQLite finds damaged: is it shorter than its header says? */
static void describe_damage(struct opener *op, const char *detail)
{
    unsigned char h[100];
    struct stat st;
    int fd = open(op->path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, h, sizeof(h), 0) : -1;
    if (fd >= 0 && n == (ssize_t)sizeof(h) && fstat(fd, &st) == 0) {
        uint32_t page = (uint32_t)h[16] << 8 | h[17];
        uint64_t pages = be32(h + 28);
        if (page == 1)
            page = 65536;
        if (pages > 0 && (uint64_t)st.st_size < pages * page) {
            snprintf(op->why, sizeof(op->why),
                     "is truncated: %lld bytes where its header says %llu (%s)",
                     (long long)st.st_size, (unsigned long long)(pages * page), detail);
            close(fd);
            return;
        }
    }
    if (fd >= 0)
        close(fd);
    snprintf(op->why, sizeof(op->why), "is damaged (%s)", detail);
}

/* Classify an SQLite failure while opening or reading: damage we move aside, or a reason to
 * refuse (moving the file would not help, or would hurt another process). */
static enum verdict sqlite_verdict(struct opener *op, int rc, sqlite3 *db, const char *doing)
{
    char detail[300];
    snprintf(detail, sizeof(detail), "%s: %s, SQLite code %d%s%s", doing,
             db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc,
             db && sqlite3_system_errno(db) ? ", " : "",
             db && sqlite3_system_errno(db) ? strerror(sqlite3_system_errno(db)) : "");
    switch (rc & 0xff) {
    case SQLITE_NOTADB: describe_not_sqlite(op); return V_DAMAGED;
    case SQLITE_CORRUPT: describe_damage(op, detail); return V_DAMAGED;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
    case SQLITE_FORMAT:
        snprintf(op->why, sizeof(op->why), "could not be read (%s)", detail);
        return V_DAMAGED;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        snprintf(op->why, sizeof(op->why), "is locked by another process (%s)", detail);
        return V_REFUSE;
    default: snprintf(op->why, sizeof(op->why), "cannot be used (%s)", detail); return V_REFUSE;
    }
}

/* rename(2) that never replaces an existing file. */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (access(to, F_OK) == 0) { /* file system without RENAME_NOREPLACE */
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* Make a rename or creation in path's directory durable. */
static void fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd;
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Rename path (and its companions) to path.corrupt-STAMP[-N]; aside receives the new name and
 * also_moved the companions moved ("" or " with its -wal and -shm"). 0 or -errno. */
static int move_aside(const char *path, char *aside, size_t aside_n, char *also, size_t also_n)
{
    static const char *const companions[] = {"-wal", "-shm", "-journal"};
    char stamp[32], from[PATH_MAX + 16], to[PATH_MAX + 64];
    time_t now = time(NULL);
    struct tm tm;
    size_t used = 0;
    int moved = 0;

    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    for (int i = 0;; i++) {
        if (i == 0)
            snprintf(aside, aside_n, "%s.corrupt-%s", path, stamp);
        else
            snprintf(aside, aside_n, "%s.corrupt-%s-%d", path, stamp, i);
        if (rename_noreplace(path, aside) == 0)
            break;
        if (errno != EEXIST || i == 99)
            return -errno;
    }
    also[0] = '\0';
    for (size_t i = 0; i < sizeof(companions) / sizeof(companions[0]); i++) {
        snprintf(from, sizeof(from), "%s%s", path, companions[i]);
        snprintf(to, sizeof(to), "%s%s", aside, companions[i]);
        if (access(from, F_OK) != 0 || rename_noreplace(from, to) != 0)
            continue;
        used += (size_t)snprintf(also + used, also_n - used, "%s%s", moved ? " and " : " with its ",
                                 companions[i]);
        if (used >= also_n)
            used = also_n - 1;
        moved++;
    }
    fsync_dir_of(path);
    return 0;
}

/* Open and lock the file itself. The flock keeps a second midge (or a second store in this
 * process) from using, or moving aside, a database that is in use. */
static enum verdict lock_file(struct opener *op, int *fdp, bool *fresh)
{
    struct stat st;
    int fd = open(op->path, O_RDWR | O_CLOEXEC);
    *fresh = false;
    if (fd < 0 && errno == ENOENT) {
        fd = open(op->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        *fresh = fd >= 0;
    }
    if (fd < 0) {
        int e = errno;
        if ((e == EACCES || e == EPERM) && access(op->path, F_OK) == 0) {
            snprintf(op->why, sizeof(op->why), "could not be opened (%s)", strerror(e));
            return V_DAMAGED;
        }
        snprintf(op->why, sizeof(op->why), "cannot be opened or created (%s)", strerror(e));
        return V_REFUSE;
    }
    *fdp = fd;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        snprintf(op->why, sizeof(op->why), "is in use by another process (another midge?)");
        return V_REFUSE;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(op->why, sizeof(op->why), "is not a regular file");
        return V_REFUSE;
    }
    if (!*fresh && st.st_size == 0) {
        snprintf(op->why, sizeof(op->why), "is empty (0 bytes)");
        return V_DAMAGED;
    }
    return V_OK;
}

/* Run PRAGMA quick_check / integrity_check; V_OK or V_DAMAGED with the first complaint. */
static enum verdict check_db(struct opener *op, sqlite3 *db)
{
    const char *sql =
        op->o->check == MQ_STORE_CHECK_FULL ? "PRAGMA integrity_check(1)" : "PRAGMA quick_check(1)";
    const char *name = op->o->check == MQ_STORE_CHECK_FULL ? "integrity_check" : "quick_check";
    char first[256];
    int rc = query_text(db, sql, first, sizeof(first));
    if (rc != SQLITE_OK)
        return sqlite_verdict(op, rc, db, name);
    if (strcmp(first, "ok") != 0) {
        char detail[300];
        snprintf(detail, sizeof(detail), "%s: %s", name, first);
        describe_damage(op, detail);
        return V_DAMAGED;
    }
    return V_OK;
}

/* Bring the schema from version `from` to MQ_STORE_SCHEMA_VERSION in one transaction. */
static enum verdict migrate(struct opener *op, sqlite3 *db, int64_t from)
{
    char sql[256];
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof(migrations) / sizeof(migrations[0]); i++)
        if (migrations[i].to > from)
            rc = sqlite3_exec(db, migrations[i].sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK && from == 0) {
        snprintf(sql, sizeof(sql),
                 "PRAGMA application_id=%d;"
                 "INSERT INTO meta VALUES('created_by', 'midge %s');"
                 "INSERT INTO meta VALUES('created_ms', %llu);",
                 MQ_STORE_APPLICATION_ID, MIDGE_VERSION, (unsigned long long)store_wall_ms());
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta VALUES('schema_version', %d)",
                 MQ_STORE_SCHEMA_VERSION);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        enum verdict v =
            sqlite_verdict(op, rc, db, from ? "upgrading the schema" : "creating the schema");
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return v == V_DAMAGED && (rc & 0xff) != SQLITE_CORRUPT ? V_REFUSE : v;
    }
    return V_OK;
}

/* Open the locked file with SQLite, recognise it, check it, and make it current. */
static enum verdict open_db(struct opener *op, bool fresh, sqlite3 **dbp)
{
    int64_t tables = 0, app_id = 0, version = 0, has_meta = 0;
    uint64_t t0 = store_mono_ms();
    char mode[32], pragmas[160];
    enum verdict v;
    int rc = sqlite3_open_v2(op->path, dbp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    sqlite3 *db = *dbp;

    if (rc != SQLITE_OK)
        return sqlite_verdict(op, rc, db, "opening");
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

    /* The first read parses the header and the schema: not-a-database and most damage show
     * up here. */
    rc = query_int(db, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc != SQLITE_OK)
        return sqlite_verdict(op, rc, db, "reading the schema");
    if (tables > 0) {
        rc = query_int(db, "PRAGMA application_id", &app_id);
        if (rc == SQLITE_OK)
            rc = query_int(db,
                           "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'",
                           &has_meta);
        if (rc != SQLITE_OK)
            return sqlite_verdict(op, rc, db, "reading the schema");
        if (!has_meta && app_id != MQ_STORE_APPLICATION_ID) {
            snprintf(op->why, sizeof(op->why),
                     "is an SQLite database of another application (application_id 0x%llx, no "
                     "midge meta table)",
                     (unsigned long long)(uint32_t)app_id);
            return V_DAMAGED;
        }
        rc = has_meta ? query_int(db, "SELECT value FROM meta WHERE key='schema_version'", &version)
                      : SQLITE_DONE;
        if (rc == SQLITE_DONE || (rc == SQLITE_OK && version < 1)) {
            snprintf(op->why, sizeof(op->why), "is a midge database without a schema_version");
            return V_DAMAGED;
        }
        if (rc != SQLITE_OK)
            return sqlite_verdict(op, rc, db, "reading the schema version");
        if (version > MQ_STORE_SCHEMA_VERSION) {
            snprintf(op->why, sizeof(op->why),
                     "was written by a newer midge (schema version %lld; this midge knows "
                     "versions up to %d): run a newer midge, or move the file away to start "
                     "with an empty store",
                     (long long)version, MQ_STORE_SCHEMA_VERSION);
            return V_REFUSE;
        }
        if (op->o->check != MQ_STORE_CHECK_NONE && (v = check_db(op, db)) != V_OK)
            return v;
    }

    rc = query_text(db, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
    if (rc != SQLITE_OK)
        return sqlite_verdict(op, rc, db, "switching to WAL");
    if (strcmp(mode, "wal") != 0) {
        snprintf(op->why, sizeof(op->why),
                 "cannot use write-ahead logging (journal mode stays '%s'; a network or "
                 "read-only file system?)",
                 mode);
        return V_REFUSE;
    }
    /* The page cache is bounded memory that a long queue on disk must not turn into RAM
     * (writes append, pages are read once): 4 MiB, not SQLite's default 2 MiB x the
     * connections, nor more. */
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA synchronous=%s; PRAGMA journal_size_limit=%d; PRAGMA cache_size=-4096",
             op->o->durability == MQ_STORE_DURABILITY_RELAXED ? "NORMAL" : "FULL", 64 << 20);
    rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sqlite_verdict(op, rc, db, "setting pragmas");

    if (version < MQ_STORE_SCHEMA_VERSION && (v = migrate(op, db, version)) != V_OK)
        return v;
    if (fresh || version == 0)
        fsync_dir_of(op->path); /* the new file and its -wal must survive a power loss too */

    if (version == 0)
        store_reportf(op->report, op->ctx, MQ_STORE_EV_CREATED,
                      "created persistence file %s (schema version %d)", op->path,
                      MQ_STORE_SCHEMA_VERSION);
    else if (version < MQ_STORE_SCHEMA_VERSION)
        store_reportf(op->report, op->ctx, MQ_STORE_EV_MIGRATED,
                      "upgraded persistence file %s from schema version %lld to %d", op->path,
                      (long long)version, MQ_STORE_SCHEMA_VERSION);
    else
        store_reportf(op->report, op->ctx, MQ_STORE_EV_OPENED,
                      "opened persistence file %s (schema version %lld, %s in %llu ms)", op->path,
                      (long long)version,
                      op->o->check == MQ_STORE_CHECK_NONE   ? "not checked"
                      : op->o->check == MQ_STORE_CHECK_FULL ? "integrity_check ok"
                                                            : "quick_check ok",
                      (unsigned long long)(store_mono_ms() - t0));
    return V_OK;
}

int store_db_open(const char *path, const struct mq_store_options *o, mq_store_report_fn report,
                  void *report_ctx, sqlite3 **dbp, int *lock_fd)
{
    struct opener op = {.path = path, .o = o, .report = report, .ctx = report_ctx};
    char aside[PATH_MAX + 64], also[64], damage[WHY_MAX];
    sqlite3 *db = NULL;
    int fd = -1, rc = MQ_ERR_IO;

    for (int attempt = 0;; attempt++) {
        bool fresh = false;
        enum verdict v = lock_file(&op, &fd, &fresh);
        if (v == V_OK)
            v = open_db(&op, fresh, &db);
        if (v == V_OK)
            break;
        sqlite3_close(db); /* before fd: closing fd would drop SQLite's POSIX locks */
        db = NULL;
        if (v == V_REFUSE || attempt > 0) {
            store_reportf(report, report_ctx, MQ_STORE_EV_REFUSED, "persistence file %s %s", path,
                          op.why);
            goto out;
        }
        snprintf(damage, sizeof(damage), "%s", op.why);
        int err = move_aside(path, aside, sizeof(aside), also, sizeof(also));
        if (fd >= 0)
            close(fd);
        fd = -1;
        if (err != 0) {
            store_reportf(report, report_ctx, MQ_STORE_EV_REFUSED,
                          "persistence file %s %s, and it could not be moved aside (%s)", path,
                          damage, strerror(-err));
            goto out;
        }
        store_reportf(report, report_ctx, MQ_STORE_EV_MOVED_ASIDE,
                      "persistence file %s %s; moved it aside to %s%s and started with an empty "
                      "store",
                      path, damage, aside, also);
    }
    *dbp = db;
    *lock_fd = fd;
    db = NULL;
    fd = -1;
    rc = 0;
out:
    sqlite3_close(db);
    if (fd >= 0)
        close(fd);
    return rc;
}

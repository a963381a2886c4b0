/* log.c - the process-wide logger: format on the caller's thread, write on a
 * dedicated writer thread.
 *
 * The event loop only ever copies a line into a bounded ring under a mutex; the
 * writer thread does the blocking write(2). When the ring is full the line is
 * dropped and counted, and the writer reports the count once it catches up, so a
 * stalled stderr pipe or journal can never stall clients.
 */
#include "midge/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "midge/err.h"

#define LOG_RING_BYTES (256 * 1024)
#define LOG_LINE_MAX 1024

struct logger {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running;
    bool stopping;
    struct mq_log_options opts;
    char ts_format[64];
    char ring[LOG_RING_BYTES];
    size_t head, used;        /* bytes [head, head+used) mod size are queued */
    uint64_t dropped;         /* lines lost since the start */
    uint64_t dropped_unreported;
};

/* The one piece of process-wide state, like stderr itself (see log.h). */
static struct logger g_log = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .opts = {.types = MQ_LOG_DEFAULT_TYPES, .fd = 2, .timestamps = true},
};

static const char *level_name(enum mq_log_level level)
{
    switch (level) {
    case MQ_LOG_ERR: return "error";
    case MQ_LOG_WARNING: return "warning";
    case MQ_LOG_NOTICE: return "notice";
    case MQ_LOG_INFO: return "info";
    case MQ_LOG_DEBUG: return "debug";
    case MQ_LOG_SUBSCRIBE: return "subscribe";
    case MQ_LOG_UNSUBSCRIBE: return "unsubscribe";
    }
    return "log";
}

/* syslog(3) priorities, which journald reads from a "<N>" prefix. */
static int level_priority(enum mq_log_level level)
{
    switch (level) {
    case MQ_LOG_ERR: return 3;
    case MQ_LOG_WARNING: return 4;
    case MQ_LOG_NOTICE: return 5;
    case MQ_LOG_INFO: return 6;
    default: return 7;
    }
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    char chunk[16384];
    pthread_mutex_lock(&g_log.lock);
    for (;;) {
        while (!g_log.used && !g_log.dropped_unreported && !g_log.stopping)
            pthread_cond_wait(&g_log.wake, &g_log.lock);
        if (!g_log.used && !g_log.dropped_unreported && g_log.stopping)
            break;
        size_t n = g_log.used < sizeof(chunk) ? g_log.used : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = g_log.ring[(g_log.head + i) % LOG_RING_BYTES];
        g_log.head = (g_log.head + n) % LOG_RING_BYTES;
        g_log.used -= n;
        uint64_t lost = g_log.used ? 0 : g_log.dropped_unreported;
        if (lost)
            g_log.dropped_unreported = 0;
        int fd = g_log.opts.fd;
        pthread_mutex_unlock(&g_log.lock);
        write_all(fd, chunk, n);
        if (lost) {
            char note[96];
            int len = snprintf(note, sizeof(note),
                               "log: %llu lines dropped because the log output was too slow\n",
                               (unsigned long long)lost);
            write_all(fd, note, (size_t)len);
        }
        pthread_mutex_lock(&g_log.lock);
    }
    pthread_mutex_unlock(&g_log.lock);
    return NULL;
}

static void apply_options(const struct mq_log_options *opts)
{
    g_log.opts = *opts;
    if (opts->ts_format) {
        snprintf(g_log.ts_format, sizeof(g_log.ts_format), "%s", opts->ts_format);
        g_log.opts.ts_format = g_log.ts_format;
    }
}

int log_start(const struct mq_log_options *opts)
{
    pthread_mutex_lock(&g_log.lock);
    apply_options(opts);
    g_log.stopping = false;
    int rc = 0;
    if (!g_log.running) {
        if (pthread_create(&g_log.thread, NULL, writer_main, NULL) == 0)
            g_log.running = true;
        else
            rc = MQ_ERR_NOMEM;
    }
    pthread_mutex_unlock(&g_log.lock);
    return rc;
}

void log_configure(const struct mq_log_options *opts)
{
    pthread_mutex_lock(&g_log.lock);
    apply_options(opts);
    pthread_mutex_unlock(&g_log.lock);
}

void log_stop(void)
{
    pthread_mutex_lock(&g_log.lock);
    if (!g_log.running) {
        pthread_mutex_unlock(&g_log.lock);
        return;
    }
    g_log.stopping = true;
    pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.lock);
    pthread_join(g_log.thread, NULL);
    pthread_mutex_lock(&g_log.lock);
    g_log.running = false;
    pthread_mutex_unlock(&g_log.lock);
}

bool log_enabled(enum mq_log_level level)
{
    /* A racy read is fine: the mask only changes on reload. */
    return (g_log.opts.types & (unsigned)level) != 0;
}

uint64_t log_dropped(void)
{
    pthread_mutex_lock(&g_log.lock);
    uint64_t n = g_log.dropped;
    pthread_mutex_unlock(&g_log.lock);
    return n;
}

static size_t format_prefix(char *buf, size_t cap, enum mq_log_level level,
                            const struct mq_log_options *o)
{
    size_t n = 0;
    if (o->journal_priority)
        n += (size_t)snprintf(buf + n, cap - n, "<%d>", level_priority(level));
    if (o->timestamps) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        if (o->ts_format) {
            n += strftime(buf + n, cap - n, o->ts_format, &tm);
            n += (size_t)snprintf(buf + n, cap - n, " ");
        } else {
            n += strftime(buf + n, cap - n, "%Y-%m-%d %H:%M:%S", &tm);
            n += (size_t)snprintf(buf + n, cap - n, ".%03d ", (int)(tv.tv_usec / 1000));
        }
    }
    n += (size_t)snprintf(buf + n, cap - n, "%s: ", level_name(level));
    return n < cap ? n : cap - 1;
}

void mq_log(enum mq_log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[LOG_LINE_MAX];
    struct mq_log_options o = g_log.opts;
    size_t n = format_prefix(line, sizeof(line), level, &o);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m < sizeof(line) - n - 1 ? (size_t)m : sizeof(line) - n - 2;
    /* A line is one line: control characters from clients (ids, topics) are escaped
     * by replacing them, so a client cannot forge log lines. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
            line[i] = '?';
    line[n++] = '\n';

    pthread_mutex_lock(&g_log.lock);
    if (!g_log.running) {
        int fd = g_log.opts.fd;
        pthread_mutex_unlock(&g_log.lock);
        write_all(fd, line, n);
        return;
    }
    if (LOG_RING_BYTES - g_log.used < n) {
        g_log.dropped++;
        g_log.dropped_unreported++;
    } else {
        size_t tail = (g_log.head + g_log.used) % LOG_RING_BYTES;
        size_t first = n < LOG_RING_BYTES - tail ? n : LOG_RING_BYTES - tail;
        memcpy(g_log.ring + tail, line, first);
        memcpy(g_log.ring, line + first, n - first);
        g_log.used += n;
    }
    pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.lock);
}

/* log.c - the process-wide logger: format on the caller's thread, write on a
 * dedicated writer thread.
 *
 * The event loop only ever copies a line into a bounded ring under a mutex; the
 * writer thread does the blocking write(2)/syslog(3). When the ring is full the
 * line is dropped and counted, and the writer reports the count once it catches
 * up, so a stalled stderr pipe or journal can never stall clients.
 * The ring holds records: [u16 text length][u8 level][u8 offset of the message
 * after the timestamp][text], so syslog gets the bare message and its priority.
 */
#include "midge/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "midge/err.h"

#define LOG_RING_BYTES (256 * 1024)
#define LOG_LINE_MAX 1024
#define REC_HDR 4

struct logger {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running;
    bool stopping;
    bool syslog_open;
    struct mq_log_options opts;
    char ts_format[64];
    unsigned char ring[LOG_RING_BYTES];
    size_t head, used; /* bytes [head, head+used) mod size are queued */
    uint64_t dropped;  /* lines lost since the start */
    uint64_t dropped_unreported;
};

/* The one piece of process-wide state, like stderr itself (see log.h). */
static struct logger g_log = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .opts = {.types = MQ_LOG_DEFAULT_TYPES, .to_stderr = true, .file_fd = -1, .timestamps = true},
};

struct mq_log_options log_default_options(void)
{
    return (struct mq_log_options){
        .types = MQ_LOG_DEFAULT_TYPES, .to_stderr = true, .file_fd = -1, .timestamps = true};
}

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

/* syslog(3) priorities, which journald also reads from a "<N>" prefix. */
static int level_priority(unsigned level)
{
    switch (level) {
    case MQ_LOG_ERR: return LOG_ERR;
    case MQ_LOG_WARNING: return LOG_WARNING;
    case MQ_LOG_NOTICE: return LOG_NOTICE;
    case MQ_LOG_INFO: return LOG_INFO;
    default: return LOG_DEBUG;
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
        p += (size_t)w;
        n -= (size_t)w;
    }
}

static void ring_read(size_t pos, void *dst, size_t n)
{
    size_t off = pos % LOG_RING_BYTES;
    size_t first = n < LOG_RING_BYTES - off ? n : LOG_RING_BYTES - off;
    memcpy(dst, g_log.ring + off, first);
    memcpy((char *)dst + first, g_log.ring, n - first);
}

static void ring_write(size_t pos, const void *src, size_t n)
{
    size_t off = pos % LOG_RING_BYTES;
    size_t first = n < LOG_RING_BYTES - off ? n : LOG_RING_BYTES - off;
    memcpy(g_log.ring + off, src, first);
    memcpy(g_log.ring, (const char *)src + first, n - first);
}

/* Deliver one line to every destination (writer thread, lock not held). */
static void emit(const struct mq_log_options *o, unsigned level, const char *text, size_t len,
                 size_t body_off, char *scratch)
{
    size_t n = 0;
    if (o->journal_priority)
        n = (size_t)snprintf(scratch, 8, "<%d>", level_priority(level));
    memcpy(scratch + n, text, len);
    n += len;
    scratch[n++] = '\n';
    if (o->to_stderr)
        write_all(2, scratch, n);
    if (o->to_stdout)
        write_all(1, scratch, n);
    if (o->file_fd >= 0) {
        size_t skip = o->journal_priority ? n - len - 1 : 0;
        write_all(o->file_fd, scratch + skip, n - skip);
    }
    if (o->to_syslog)
        syslog(level_priority(level), "%.*s", (int)(len - body_off), text + body_off);
}

static size_t format_timestamp(char *buf, size_t cap, const struct mq_log_options *o)
{
    if (!o->timestamps)
        return 0;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    size_t n;
    if (o->ts_format) {
        n = strftime(buf, cap, o->ts_format, &tm);
    } else {
        n = strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
        n += (size_t)snprintf(buf + n, cap - n, ".%03d", (int)(tv.tv_usec / 1000));
    }
    n += (size_t)snprintf(buf + n, cap - n, " ");
    return n < cap ? n : cap - 1;
}

/* Format "timestamp level: message" into line (LOG_LINE_MAX bytes); returns the length
 * and sets *body to where the part after the timestamp starts. */
static size_t format_line(char *line, enum mq_log_level level, const struct mq_log_options *o,
                          size_t *body, const char *fmt, va_list ap)
{
    *body = format_timestamp(line, 128, o);
    size_t n =
        *body + (size_t)snprintf(line + *body, LOG_LINE_MAX - *body, "%s: ", level_name(level));
    int m = vsnprintf(line + n, LOG_LINE_MAX - n, fmt, ap);
    if (m > 0)
        n += (size_t)m < LOG_LINE_MAX - n ? (size_t)m : LOG_LINE_MAX - n - 1;
    return n;
}

static size_t format_linef(char *line, enum mq_log_level level, const struct mq_log_options *o,
                           size_t *body, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_line(line, level, o, body, fmt, ap);
    va_end(ap);
    return n;
}

static void *writer_main(void *arg)
{
    (void)arg;
    char text[LOG_LINE_MAX];
    char scratch[LOG_LINE_MAX + 16];
    pthread_mutex_lock(&g_log.lock);
    for (;;) {
        while (!g_log.used && !g_log.dropped_unreported && !g_log.stopping)
            pthread_cond_wait(&g_log.wake, &g_log.lock);
        if (!g_log.used && !g_log.dropped_unreported)
            break; /* stopping, and everything is written */
        struct mq_log_options o = g_log.opts;
        if (g_log.used) {
            unsigned char hdr[REC_HDR];
            ring_read(g_log.head, hdr, REC_HDR);
            size_t len = (size_t)hdr[0] << 8 | hdr[1];
            ring_read(g_log.head + REC_HDR, text, len);
            g_log.head = (g_log.head + REC_HDR + len) % LOG_RING_BYTES;
            g_log.used -= REC_HDR + len;
            pthread_mutex_unlock(&g_log.lock);
            emit(&o, hdr[2], text, len, hdr[3], scratch);
        } else {
            uint64_t lost = g_log.dropped_unreported;
            g_log.dropped_unreported = 0;
            pthread_mutex_unlock(&g_log.lock);
            size_t body;
            size_t n = format_linef(text, MQ_LOG_WARNING, &o, &body,
                                    "log: %llu lines dropped because the log output was too slow",
                                    (unsigned long long)lost);
            emit(&o, MQ_LOG_WARNING, text, n, body, scratch);
        }
        pthread_mutex_lock(&g_log.lock);
    }
    pthread_mutex_unlock(&g_log.lock);
    return NULL;
}

/* Lock held. */
static void apply_options(const struct mq_log_options *opts)
{
    if (g_log.opts.file_fd >= 0 && g_log.opts.file_fd != opts->file_fd)
        close(g_log.opts.file_fd);
    g_log.opts = *opts;
    if (opts->ts_format) {
        snprintf(g_log.ts_format, sizeof(g_log.ts_format), "%s", opts->ts_format);
        g_log.opts.ts_format = g_log.ts_format;
    }
    if (opts->to_syslog && !g_log.syslog_open) {
        openlog("midge", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        g_log.syslog_open = true;
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
    bool running = g_log.running;
    g_log.stopping = true;
    pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.lock);
    if (running)
        pthread_join(g_log.thread, NULL);
    pthread_mutex_lock(&g_log.lock);
    g_log.running = false;
    if (g_log.opts.file_fd >= 0)
        close(g_log.opts.file_fd);
    g_log.opts.file_fd = -1;
    if (g_log.syslog_open)
        closelog();
    g_log.syslog_open = false;
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

void mq_log(enum mq_log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[LOG_LINE_MAX];
    struct mq_log_options o = g_log.opts;
    size_t body;
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_line(line, level, &o, &body, fmt, ap);
    va_end(ap);
    /* A line stays one line: control characters from clients (ids, topics) are
     * replaced, so a client cannot forge log lines. */
    for (size_t i = body; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';

    pthread_mutex_lock(&g_log.lock);
    if (!g_log.running) {
        struct mq_log_options now = g_log.opts;
        pthread_mutex_unlock(&g_log.lock);
        char scratch[LOG_LINE_MAX + 16];
        emit(&now, (unsigned)level, line, n, body, scratch);
        return;
    }
    if (LOG_RING_BYTES - g_log.used < REC_HDR + n) {
        g_log.dropped++;
        g_log.dropped_unreported++;
    } else {
        unsigned char hdr[REC_HDR] = {(unsigned char)(n >> 8), (unsigned char)n,
                                      (unsigned char)level, (unsigned char)body};
        size_t tail = g_log.head + g_log.used;
        ring_write(tail, hdr, REC_HDR);
        ring_write(tail + REC_HDR, line, n);
        g_log.used += REC_HDR + n;
    }
    pthread_cond_signal(&g_log.wake);
    pthread_mutex_unlock(&g_log.lock);
}

/* log.h - the process-wide logger.
 *
 * Lines are formatted on the caller's thread into a bounded in-memory ring and
 * written by a dedicated writer thread, so a full stderr pipe or a slow journal
 * never stalls the event loop: when the ring is full the line is dropped and
 * counted (log_dropped()). The logger is the one piece of process-wide state:
 * like stderr itself it belongs to the process, not to a broker.
 */
#ifndef MIDGE_LOG_H
#define MIDGE_LOG_H

#include <stdbool.h>
#include <stdint.h>

/* Levels double as mask bits for `log_type` (Mosquitto's names in comments). */
enum mq_log_level {
    MQ_LOG_ERR = 1 << 0,         /* error */
    MQ_LOG_WARNING = 1 << 1,     /* warning */
    MQ_LOG_NOTICE = 1 << 2,      /* notice */
    MQ_LOG_INFO = 1 << 3,        /* information */
    MQ_LOG_DEBUG = 1 << 4,       /* debug */
    MQ_LOG_SUBSCRIBE = 1 << 5,   /* subscribe */
    MQ_LOG_UNSUBSCRIBE = 1 << 6, /* unsubscribe */
};
#define MQ_LOG_DEFAULT_TYPES (MQ_LOG_ERR | MQ_LOG_WARNING | MQ_LOG_NOTICE | MQ_LOG_INFO)
#define MQ_LOG_ALL_TYPES 0x7f

struct mq_log_options {
    unsigned types;        /* enum mq_log_level mask to emit */
    bool to_stderr;        /* log_dest stderr */
    bool to_stdout;        /* log_dest stdout */
    int file_fd;           /* log_dest file: an open descriptor (the logger owns it), or -1 */
    bool to_syslog;        /* log_dest syslog (daemon facility, "midge") */
    bool timestamps;       /* prefix "YYYY-MM-DD HH:MM:SS.mmm" local time */
    const char *ts_format; /* strftime format replacing the default; NULL = default */
    bool journal_priority; /* prefix stderr/stdout lines with "<N>" for journald */
};

/* Options for early start-up and unit tests: everything to stderr, with timestamps. */
struct mq_log_options log_default_options(void);

/* Start the writer thread. Before log_start (and after log_stop) lines are written
 * synchronously to stderr, which is what unit tests and early start-up want.
 * Returns 0 or a negative enum mq_err. */
int log_start(const struct mq_log_options *opts);

/* Change the options of a running logger (reload). */
void log_configure(const struct mq_log_options *opts);

/* Flush what is queued (bounded wait) and stop the writer thread. */
void log_stop(void);

/* True when lines of this level would be emitted (to skip formatting costs). */
bool log_enabled(enum mq_log_level level);

/* Format and emit one line; a trailing newline is added. Never blocks on I/O. */
void mq_log(enum mq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lines dropped because the writer could not keep up. */
uint64_t log_dropped(void);

#endif

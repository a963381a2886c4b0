/* store_int.h - what the files of src/store share and nothing outside it may use.
 *
 * store_open.c turns a path into a checked, current, exclusively locked SQLite database
 * (moving a damaged file aside); store.c owns batches, the thread, writing and reading.
 */
#ifndef MIDGE_STORE_INT_H
#define MIDGE_STORE_INT_H

#include <sqlite3.h>
#include <stdarg.h>

#include "midge/store.h"

/* Format a report and pass it to fn (nothing when fn is NULL). */
void store_reportf(mq_store_report_fn fn, void *ctx, enum mq_store_event ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Open path for writing: locked against other processes (flock on *lock_fd), checked per
 * o->check, WAL, synchronous per o->durability, schema at MQ_STORE_SCHEMA_VERSION. A damaged
 * file is moved aside and replaced (reported). Returns 0 with *db and *lock_fd owned by the
 * caller (close *db before *lock_fd), or MQ_ERR_IO after a MQ_STORE_EV_REFUSED report. */
int store_db_open(const char *path, const struct mq_store_options *o, mq_store_report_fn report,
                  void *report_ctx, sqlite3 **db, int *lock_fd);

/* Milliseconds of CLOCK_MONOTONIC / CLOCK_REALTIME. */
uint64_t store_mono_ms(void);
uint64_t store_wall_ms(void);

#endif

/* daemon.h - process-level chores: log destinations, detaching, pid file, and
 * dropping root. Nothing here touches the event loop or the broker.
 */
#ifndef MIDGE_DAEMON_H
#define MIDGE_DAEMON_H

#include <stdbool.h>

#include "midge/log.h"

struct mq_config;

/* Translate the configuration's log_* options into logger options, opening the
 * log file when there is one (the logger takes ownership of the descriptor).
 * verbose forces every log type. Returns 0, or -1 after logging which file could
 * not be opened and why. */
int daemon_log_options(const struct mq_config *cfg, bool verbose, struct mq_log_options *out);

/* -d: fork into the background. Returns in the child with *ready_fd set to a pipe
 * that daemon_ready() reports start-up success on; the parent waits for that report
 * and exits 0 (serving) or 1 (start-up failed). Returns -1 if the fork failed. */
int daemon_detach(int *ready_fd);

/* Tell the waiting parent (if any, fd >= 0) whether start-up succeeded; closes fd. */
void daemon_ready(int fd, bool ok);

/* Write our pid to path (atomically: temporary file + rename). 0 or -1 (logged). */
int daemon_write_pidfile(const char *path);

/* Remove the pid file written above (errors ignored). */
void daemon_remove_pidfile(const char *path);

/* When running as root and user is set (and not "root"), switch to that user and
 * its groups. Called after the listeners are bound, so ports below 1024 work.
 * The log and pid files created as root are handed to that user first, so a reload
 * can reopen the log. Returns 0, or -1 (logged) when the switch failed: never keep running as root
 * by mistake. */
int daemon_drop_privileges(const char *user, const char *log_file, const char *pid_file);

#endif

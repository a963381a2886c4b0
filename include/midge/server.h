/* server.h - run the broker: event loop, listeners, signals, reload, periodic work. */
#ifndef MIDGE_SERVER_H
#define MIDGE_SERVER_H

#include <stdbool.h>

struct mq_config;

/* What the command line says, kept for reloads. */
struct mq_server_options {
    const char *config_path; /* NULL: built-in defaults (loopback only) */
    int port;                /* -p, or -1 */
    bool verbose;            /* -v */
    int ready_fd;            /* -d: pipe to report start-up success on, or -1 */
};

/* Load the configuration the options name (file or built-in defaults) and apply the
 * command-line overrides. Errors are logged with file:line. 0 or MQ_ERR_CONFIG. */
int server_load_config(const struct mq_server_options *opts, struct mq_config *cfg);

/* Bind every listener of cfg, serve until SIGINT/SIGTERM, then shut down cleanly.
 * Takes ownership of *cfg (heap-allocated; freed at the end). SIGHUP reloads from
 * opts->config_path. Returns the exit status: 0 after a clean shutdown, 1 when
 * start-up failed (the reason is logged). */
int server_run(struct mq_config *cfg, const struct mq_server_options *opts);

#endif

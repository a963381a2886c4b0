/* server.h - run the broker: event loop, listeners, signals, periodic work. */
#ifndef MIDGE_SERVER_H
#define MIDGE_SERVER_H

struct mq_config;

/* Bind every listener in cfg, serve until SIGINT/SIGTERM, then shut down cleanly.
 * cfg is borrowed for the whole run. Returns the process exit status: 0 after a
 * clean shutdown, 1 when start-up failed (the reason is logged). */
int server_run(const struct mq_config *cfg);

#endif

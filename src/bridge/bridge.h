/* bridge.h - bridges (docs/bridge.md): for each `connection` section an MQTT client to a
 * remote broker inside the event loop, and on the local side a session like any other.
 *
 * server.c is the only user. Every function runs on the loop. A bridge's queue for its
 * remote is its local session's queue (limits, paging, durability): nothing here stores a
 * message.
 */
#ifndef MIDGE_BRIDGE_H
#define MIDGE_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>

struct mq_server;
struct mq_config;
struct mq_bridge_reload;

/* Start the bridges of srv->cfg (after the store is loaded): their TLS contexts are built
 * (a file that cannot be used fails start-up: -1, logged), their local sessions made ready,
 * and the automatic and once ones start connecting. Returns 0 or -1. */
int bridges_start(struct mq_server *srv);

/* Reload, first half: build what the bridges of ncfg that are new or changed need (TLS
 * contexts). Returns 0 with *out set (to commit or abort), or -1 (logged): the reload is
 * refused and nothing changed. */
int bridges_reload_prepare(struct mq_server *srv, const struct mq_config *ncfg,
                           struct mq_bridge_reload **out);
/* Second half, once ncfg is in force: unchanged bridges are left alone, removed ones stop
 * (their local session ends), changed ones restart, new ones start. ncfg is borrowed and must
 * live until shutdown (retired configurations do). */
void bridges_reload_commit(struct mq_server *srv, struct mq_bridge_reload *r);
/* The reload failed after bridges_reload_prepare: release what it built. */
void bridges_reload_abort(struct mq_bridge_reload *r);

/* Every TICK_MS: keepalive, the CONNACK timeout, lazy bridges' threshold and idle time, the
 * primary address probe. */
void bridges_tick(struct mq_server *srv);

/* Publish each bridge's figures under $SYS/broker/bridge/NAME/ (the $SYS timer). */
void bridges_sys(struct mq_server *srv);

/* Append each bridge's figures in the Prometheus text format to buf (like snprintf: returns
 * the length of the whole text; truncated when that is >= cap). */
size_t bridges_format_metrics(const struct mq_server *srv, char *buf, size_t cap);

/* Shutdown: each connected bridge tells its remote it goes (state 0, DISCONNECT), dials are
 * cancelled and timers closed. Call before the clients are closed. */
void bridges_stop(struct mq_server *srv);

/* Free everything, after the loop has ended (the broker may already be freed). */
void bridges_free(struct mq_server *srv);

#endif

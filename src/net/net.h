/* net.h - what the files of src/net and server.c share: the server object and a
 * client connection. Every libuv handle of midge lives in these structs.
 */
#ifndef MIDGE_NET_H
#define MIDGE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "midge/proto.h"
#include "midge/server.h"
#include "midge/sys.h"

struct mq_config;
struct mq_listener_config;

#define NET_READ_BUF_SIZE (64 * 1024)

struct mq_client;
struct mq_listen_socket;
struct mq_out_free;

/* A layer between the socket and MQTT bytes (TLS, WebSocket); plain TCP has none.
 * Transports stack: each one hands its output to the next with client_send_raw()
 * or its own lower layer, and its decoded input to client_deliver(). */
struct mq_transport_ops {
    const char *name; /* for logs: "tls" */
    /* Set up per-connection state in cl->transport_state from the listener's context.
     * Returns 0, or -1 after logging (the connection is then closed). */
    int (*attach)(struct mq_client *cl, void *listener_ctx);
    /* Raw bytes from the socket: pass decoded MQTT bytes to client_deliver() and any
     * bytes of the transport's own (handshake, alerts) to client_send_raw(). Returns 0,
     * or -1 after client_close(). */
    int (*input)(struct mq_client *cl, const uint8_t *raw, size_t len);
    /* MQTT bytes to send: encode them and pass the result to client_send_raw().
     * Returns 0, or -1 after client_close(). */
    int (*output)(struct mq_client *cl, const uint8_t *data, size_t len);
    /* The broker is about to close the connection: send the transport's goodbye
     * (TLS close_notify) with the last output. Optional. */
    void (*shutdown)(struct mq_client *cl);
    /* Free cl->transport_state (close callback). */
    void (*detach)(struct mq_client *cl);
    /* Free a listener context (listener closed). */
    void (*ctx_free)(void *listener_ctx);
};

/* One bound socket of a configured listener. */
struct mq_listen_socket {
    uv_tcp_t tcp; /* first: handle pointers convert back to the struct */
    struct mq_server *srv;
    struct mq_listener_ctx *lctx;             /* the listener's settings; server-owned */
    const struct mq_transport_ops *transport; /* NULL: plain TCP */
    void *transport_ctx;                      /* e.g. the SSL_CTX; owned */
    char name[80];                            /* "127.0.0.1:1883" */
};

struct mq_server {
    uv_loop_t loop;
    struct mq_config *cfg; /* owned; replaced by a reload */
    const struct mq_server_options *opts;
    /* One context per configured listener, index for index with cfg->listeners. */
    struct mq_listener_ctx **lctx;
    /* Configurations and listener contexts replaced by reloads: connections and
     * sessions may still point into them, so they live until shutdown. */
    struct mq_config **retired;
    size_t retired_count;
    struct mq_listener_ctx **retired_lctx;
    size_t retired_lctx_count;
    struct mq_broker *broker;
    struct mq_listen_socket **sockets;
    size_t socket_count;
    uv_signal_t sig_int, sig_term, sig_hup, sig_usr1, sig_usr2;
    uv_timer_t tick;
    uv_timer_t watchdog; /* systemd WATCHDOG=1 and STATUS= */
    uv_timer_t sys;      /* $SYS publication every sys_interval seconds */
    struct mq_sys sys_state;
    uint32_t sys_interval;     /* what the sys timer runs at (0 = stopped) */
    uv_check_t flush;          /* writes out what each client got during a loop turn... */
    uv_prepare_t flush_pre;    /* ...and what timers and close callbacks produced */
    struct mq_client *dirty;   /* clients with output or a close to carry out */
    struct mq_client *clients; /* every open client (for shutdown) */
    size_t client_count;
    /* Output buffers given back by clients whose output was all written (client.c):
     * busy clients take one again next turn, idle ones hold none. */
    struct mq_out_free *out_free;
    size_t out_free_count;
    size_t out_free_low; /* fewest pooled since the last tick: that many went unused */
    bool stopping;
    uint8_t read_buf[NET_READ_BUF_SIZE]; /* shared: idle clients hold no read buffer */
};

struct mq_client {
    uv_tcp_t tcp; /* first */
    struct mq_server *srv;
    const struct mq_transport_ops *transport; /* NULL: plain TCP */
    void *transport_state;
    struct mq_listener_ctx *lctx;  /* counted in lctx->clients once admitted; else NULL */
    struct mq_conn *conn;          /* NULL once proto has been told the connection is gone */
    struct mq_client *prev, *next; /* srv->clients */
    struct mq_client *dirty_next;
    bool in_dirty;
    bool close_requested;
    bool closing; /* uv_close called */
    bool write_pending;
    size_t write_pending_bytes; /* handed to uv_write, not yet confirmed */
    /* The unprocessed tail of the input (a partial packet); NULL when none. */
    uint8_t *in;
    size_t in_len, in_cap;
    /* Output gathered during this loop turn. */
    uint8_t *out;
    size_t out_len, out_cap;
    const char *close_reason; /* static string for proto when the socket dies */
    char peer[64];
};

/* listener.c */
int listeners_start(struct mq_server *srv);
/* Reload: keep unchanged sockets, close removed ones, bind new ones. -1 when a new
 * listener could not be bound (logged); the others are in place either way. */
int listeners_reload(struct mq_server *srv, const struct mq_config *ncfg,
                     struct mq_listener_ctx **nlctx);
void listeners_stop(struct mq_server *srv);

/* server.c: move the settings and security files of fresh into kept (a reload of
 * an unchanged listener) and free fresh. */
void listener_ctx_adopt(struct mq_listener_ctx *kept, struct mq_listener_ctx *fresh);

/* client.c */
extern const struct mq_sink_ops client_sink;
/* Accept a pending connection on the listening socket. */
void client_accept(struct mq_listen_socket *ls);
/* Write out the output of every dirty client; carry out requested closes. */
void client_flush_all(struct mq_server *srv);
/* Close a client's socket now (shutdown and errors). */
void client_close(struct mq_client *cl, const char *reason);
/* Release the pooled output buffers no client took since the last call (the server
 * tick), or all of them when all is true (shutdown, after the loop has stopped). */
void client_out_trim(struct mq_server *srv, bool all);
/* Queue bytes for the socket as they are (a transport's output). */
void client_send_raw(struct mq_client *cl, const uint8_t *data, size_t len);
/* Hand decoded MQTT bytes to proto, keeping an unfinished packet for later. */
void client_deliver(struct mq_client *cl, const uint8_t *data, size_t len);

#endif

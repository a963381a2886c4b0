/* net.h - what the files of src/net and server.c share: the server object and a
 * client connection. Every libuv handle of midge lives in these structs; a client has
 * none (its socket is in poller.c's epoll set).
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
struct mq_store;

#define NET_READ_BUF_SIZE (64 * 1024)

struct mq_client;
struct mq_listen_socket;
struct mq_bridges;

/* A client's unsent output (client.c): what it got during a loop turn, written at the
 * turn's end; what the socket did not take waits here for EPOLLOUT. Given back to the
 * server's pool (srv->out_free) once all of it is written, so an idle client holds none. */
struct mq_out {
    union {
        struct {
            uint32_t len;  /* bytes in data */
            uint32_t sent; /* of them already written (the socket took part) */
        };
        struct mq_out *next_free; /* in the pool */
    };
    uint32_t cap; /* bytes data can hold */
    uint8_t data[];
};

/* Transport layers per connection at most (WebSocket over TLS is two). */
#define NET_MAX_LAYERS 2

/* A layer between the socket and MQTT bytes (TLS, WebSocket); plain TCP has none.
 * Layers stack, level 0 next to the socket: a layer passes what it decodes upward
 * with client_layer_up() (the next layer's input, or proto from the top one) and what
 * it encodes downward with client_layer_down() (the next layer's output, or the
 * socket from level 0). A layer never knows what is above or below it. */
struct mq_transport_ops {
    const char *name; /* for logs: "tls" */
    /* Set up per-connection state in cl->layer[level].state from the listener's context.
     * Returns 0, or -1 after logging (the connection is then closed). */
    int (*attach)(struct mq_client *cl, unsigned level, void *listener_ctx);
    /* Bytes from the layer below (the socket at level 0): pass decoded bytes to
     * client_layer_up() and any bytes of the layer's own (handshake, alerts, pongs) to
     * client_layer_down(). raw is scratch space (the server's shared read buffer): the
     * layer may decode in place, and must not keep it past the call. Returns 0, or -1
     * once the connection is closing. */
    int (*input)(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len);
    /* Bytes from the layer above (MQTT from the top one): encode them and pass the result
     * to client_layer_down(). Returns 0, or -1 once the connection is closing. */
    int (*output)(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len);
    /* The same for whole packets in pieces (proto writes a PUBLISH as header, topic and
     * payload; each of its writes ends at a packet end), in one call, so that a layer that
     * stages pays its per-call work once per packet and knows where packets end. Optional,
     * and only for the top layer: without it each piece goes to output. */
    int (*outputv)(struct mq_client *cl, unsigned level, const struct mq_iov *iov, size_t n);
    /* The broker is about to close the connection: send the layer's goodbye (a WebSocket
     * close frame, TLS close_notify) with the last output, then, at once or when that
     * goodbye has really been queued, client_layer_shutdown_below(), so the layers say
     * goodbye top to bottom. Optional: without it the shutdown passes straight down. */
    void (*shutdown)(struct mq_client *cl, unsigned level);
    /* The bottom layer's output staged in the connection's output buffer (a TLS record
     * being filled) must be made final: called right before the buffer is written.
     * Optional. Returns 0, or -1 after closing the connection. */
    int (*flush)(struct mq_client *cl, unsigned level);
    /* Free cl->layer[level].state (close callback). */
    void (*detach)(struct mq_client *cl, unsigned level);
    /* Free a listener context (listener closed). */
    void (*ctx_free)(void *listener_ctx);
    /* Optional: bytes this layer holds for its peer beyond the client's own output (a
     * bridge's local side, whose peer is the bridge's remote connection); proto counts them
     * in the connection's backlog. */
    size_t (*backlog)(const struct mq_client *cl, unsigned level);
    /* Optional: the socket took every byte that was waiting for it (EPOLLOUT emptied the
     * output), so what was held back for a slow peer can go now. */
    void (*drained)(struct mq_client *cl, unsigned level);
};

/* One layer of a connection: its transport and that transport's state. */
struct mq_layer {
    const struct mq_transport_ops *ops;
    void *state; /* owned by ops (detach) */
};

/* One bound socket of a configured listener: a plain socket that libuv watches for
 * connections to accept (listener.c). */
struct mq_listen_socket {
    uv_poll_t poll; /* first: handle pointers convert back to the struct */
    int fd;         /* owned: closed with the poll handle */
    struct mq_server *srv;
    struct mq_listener_ctx *lctx; /* the listener's settings; server-owned */
    /* The transports of its connections, bottom first (TLS, then WebSocket), each with
     * its listener context (the SSL_CTX; owned, freed with ops->ctx_free) */
    const struct mq_transport_ops *stack[NET_MAX_LAYERS];
    void *stack_ctx[NET_MAX_LAYERS];
    unsigned depth; /* 0: plain TCP */
    char name[80];  /* "127.0.0.1:1883" */
};

struct tls_conn;

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
    uint32_t sys_interval;   /* what the sys timer runs at (0 = stopped) */
    uv_timer_t accept_pause; /* out of file descriptors: accepting resumes after a pause */
    uint64_t accept_err_ms;  /* when the last accept error was logged (rate limit), or 0 */
    int epfd;                /* poller.c: every client socket and libuv's fd; or -1 */
    /* libuv must run a turn before the loop blocks: a uv_poll was started, and libuv
     * hands a watcher's fd to the kernel only inside uv_run. */
    bool uv_turn_due;
    uv_check_t flush;          /* writes out what each client got during a loop turn... */
    uv_prepare_t flush_pre;    /* ...and what timers and close callbacks produced */
    struct mq_store *store;    /* persistence true: the durable store; else NULL */
    struct mq_admin *admin;    /* the admin API (admin.h), answering /api/ on websockets */
    uv_async_t store_wake;     /* the store thread committed a batch */
    struct mq_client *dirty;   /* clients with output, a close to carry out, or closed */
    struct mq_client *clients; /* every open client (for shutdown) */
    size_t client_count;
    /* Output buffers given back by clients whose output was all written (client.c):
     * busy clients take one again next turn, idle ones hold none. */
    struct mq_out *out_free;
    size_t out_free_count;
    size_t out_free_low; /* fewest pooled since the last tick: that many went unused */
    bool stopping;
    /* Sockets closed by the broker that linger until the peer closes too (linger.c). */
    struct mq_linger *lingering;
    size_t linger_count;
    uv_timer_t linger_timer; /* closes the ones past their time; initialised on first use */
    bool linger_timer_ready;
    struct mq_bridges *bridges; /* src/bridge/: NULL until a bridge is configured */
    /* TLS handshakes (transport_tls.c): the time spent in them during this wake-up, and
     * the handshakes waiting, oldest first, for a later wake-up because that time passed a
     * budget, so that a reconnect storm cannot hold up the connected clients' traffic. */
    uint64_t handshake_ns;
    struct tls_conn *hs_wait_head[2], *hs_wait_tail[2]; /* tls.h: HS_CONTINUING, HS_NEW */
    uint64_t hs_credit_ms; /* when the waiting ones' connect_timeout was last credited */
    /* The threads that run handshake steps (tls_pool.c), started at the first handshake
     * unless tls_handshake_threads is 0; hs_pool_off once that (or starting them) failed. */
    struct tls_pool *hs_pool;
    bool hs_pool_off;
    uint8_t read_buf[NET_READ_BUF_SIZE]; /* shared: idle clients hold no read buffer */
    /* OpenSSL's plaintext (transport_tls.c): apart from read_buf, whose ciphertext OpenSSL
     * may still be reading while a record completed from an earlier read comes out. */
    uint8_t tls_plain_buf[NET_READ_BUF_SIZE];
};

/* One connection. Sized for the idle case (issue 7, scenario F): no libuv handle, no
 * buffers while idle, 32-bit lengths, and the peer's name allocated with the struct. */
struct mq_client {
    struct mq_server *srv;
    /* The transport layers, layer[0] next to the socket; allocated (layers entries) only
     * for TLS and WebSocket connections, so a plain TCP one pays a pointer. */
    struct mq_layer *layer;
    struct mq_client *prev, *next; /* srv->clients */
    struct mq_client *dirty_next;  /* srv->dirty */
    /* The unprocessed tail of the input (a partial packet); NULL when none. */
    uint8_t *in;
    struct mq_out *out;       /* unsent output; NULL when none */
    const char *close_reason; /* static (or layer-owned) string for proto when the socket dies */
    int fd;                   /* in the poller while open; -1 once closed */
    uint32_t in_len, in_cap;
    uint8_t layers; /* in use in layer[]; 0: plain TCP */
    bool in_dirty;
    bool close_requested;
    bool closing;        /* socket closed; freed at the next flush (client_flush_all) */
    bool want_out;       /* EPOLLOUT is on: out holds what the socket did not take */
    bool conn_open;      /* conn is proto's: from admission until proto_conn_closed */
    bool outgoing;       /* midge dialled it (a bridge): no proto connection, the top layer
                            speaks MQTT as a client */
    struct mq_conn conn; /* proto's state of this connection, in the same allocation */
    /* "host:port" as accepted; use client_peer(), which follows a rewrite. */
    char peer_addr[];
};

/* The peer's name for log lines: "host:port" as accepted, or what a WebSocket
 * X-Forwarded-For from a trusted proxy made of it (transport_ws.c points proto's borrowed
 * conn->peer at the new name, which that layer keeps for the connection's life). */
static inline const char *client_peer(const struct mq_client *cl)
{
    return cl->conn_open ? cl->conn.peer : cl->peer_addr;
}

/* The listener's settings, once the connection is admitted (counted in its clients and
 * handed to proto, which keeps them in conn.listener); NULL before and after. */
static inline struct mq_listener_ctx *client_lctx(const struct mq_client *cl)
{
    return cl->conn_open ? cl->conn.listener : NULL;
}

/* The client whose proto state c is (the sink's calls name the mq_conn). */
static inline struct mq_client *client_of_conn(struct mq_conn *c)
{
    return (struct mq_client *)((char *)c - offsetof(struct mq_client, conn));
}

/* listener.c */
int listeners_start(struct mq_server *srv);
/* Reload: keep unchanged sockets, close removed ones, bind new ones. -1 when a new
 * listener could not be bound (logged); the others are in place either way. */
int listeners_reload(struct mq_server *srv, const struct mq_config *ncfg,
                     struct mq_listener_ctx **nlctx);
void listeners_stop(struct mq_server *srv);

/* server.c: the end of a loop turn: hand the turn's changes to the store (one group
 * commit), then write every client's output (client_flush_all). Called by poller_run
 * after the client events of a wake-up and after libuv's turn. */
void server_flush_turn(struct mq_server *srv);

/* server.c: move the settings and security files of fresh into kept (a reload of
 * an unchanged listener) and free fresh. */
void listener_ctx_adopt(struct mq_listener_ctx *kept, struct mq_listener_ctx *fresh);

/* Resume accepting on every listening socket (the accept_pause timer). */
void listeners_resume(uv_timer_t *t);

/* poller.c */
/* Create the epoll set of client sockets, with srv->loop's backend fd in it. Call once,
 * before listeners_start. Returns 0, or -1 after logging. */
int poller_start(struct mq_server *srv);
/* The event loop, in place of uv_run(UV_RUN_DEFAULT): block in one epoll_wait on the set
 * (timeout: libuv's next timer), dispatch client events, flush, run a non-blocking libuv
 * turn when its fd is ready or a timer is due, flush again. Returns when srv->loop has
 * no live handle left (after shutdown, as uv_run would). */
void poller_run(struct mq_server *srv);
/* Close the set once poller_run has returned and every client is gone (shutdown;
 * start-up failure). Harmless when poller_start failed or was not called. */
void poller_stop(struct mq_server *srv);
/* Watch cl->fd for input (and hangups, errors). cl is borrowed: client.c removes the
 * socket before it frees the client. Returns 0, or -1 with errno set. */
int poller_add(struct mq_server *srv, struct mq_client *cl);
/* Watch cl->fd for room to write too (on) or no longer (off). Returns 0, or -1 with errno. */
int poller_want_out(struct mq_server *srv, struct mq_client *cl, bool on);
/* Stop watching cl->fd (before it is closed). */
void poller_remove(struct mq_server *srv, struct mq_client *cl);

/* client.c */
extern const struct mq_sink_ops client_sink;
/* Room for the longest net_addr_name: "[" IPv6 "]:" port. */
#define NET_ADDR_NAME_MAX 64
/* "host:port" ("[host]:port" for IPv6) of a socket address: peers and listeners. */
void net_addr_name(const struct sockaddr *sa, char *out, size_t size);
/* A connection accepted on ls: fd (owned from now on, non-blocking) from peer sa. */
void client_accept(struct mq_listen_socket *ls, int fd, const struct sockaddr *sa);
/* The poller saw input, a hangup or an error on cl's socket: read once and pass it on. */
void client_readable(struct mq_client *cl);
/* The poller saw room to write on cl's socket: write what is waiting. */
void client_writable(struct mq_client *cl);
/* Write out the output of every dirty client; carry out requested closes and free the
 * clients that were closed (the one safe point for that: no callback of theirs is up
 * the stack). Called once per loop turn, and at shutdown. */
void client_flush_all(struct mq_server *srv);
/* Close a client's socket now (shutdown and errors); the struct is freed at the next
 * client_flush_all, so callers up the stack may still look at it. */
void client_close(struct mq_client *cl, const char *reason);
/* Close gracefully, as proto's sink close does: each layer's goodbye (top first), the last
 * output, then the socket, at the end of the turn. */
void client_request_close(struct mq_client *cl);

/* ---- linger.c ---- */

/* Close fd, a socket the broker has finished with, once the peer has what was sent on it:
 * shut down for writing, then read and discarded until the peer closes, for a bounded time
 * and amount (linger.c says why). Closes at once while the broker stops. Owns fd. */
void linger_close(struct mq_server *srv, int fd);
/* Shutdown: close every lingering socket now. */
void linger_stop(struct mq_server *srv);
/* Release the pooled output buffers no client took since the last call (the server
 * tick), or all of them when all is true (shutdown, after the loop has stopped). */
void client_out_trim(struct mq_server *srv, bool all);
/* Queue bytes for the socket as they are (a transport's output). */
void client_send_raw(struct mq_client *cl, const uint8_t *data, size_t len);
/* Room for n more bytes at the end of the client's output, for the bottom layer to
 * fill in place (and seal later: mq_transport_ops.flush). Returns where they go, valid
 * until the next output call; NULL once the client is closed (out of memory closes it). */
uint8_t *client_out_append(struct mq_client *cl, size_t n);
/* The client has output staged in a layer: its flush (mq_transport_ops.flush) runs at
 * the end of the turn. */
void client_mark_dirty(struct mq_client *cl);
/* Hand decoded MQTT bytes to proto, keeping an unfinished packet for later. */
void client_deliver(struct mq_client *cl, const uint8_t *data, size_t len);
/* An outgoing connection: fd (connected, non-blocking, owned from now on) to peer (a name
 * for log lines, copied), with the transport layers stack[0..depth), each attached with its
 * ctx[i]; the top one speaks MQTT as a client (src/bridge/) and is told that the connection
 * is gone by its detach, at the flush that frees the client. Returns the client (borrowed:
 * valid until that detach), or NULL after logging and closing fd (no layer is then left
 * attached: a layer whose attach failed, and those above it, were never attached). */
struct mq_client *client_open_outgoing(struct mq_server *srv, int fd, const char *peer,
                                       const struct mq_transport_ops *const *stack,
                                       void *const *ctx, unsigned depth);
/* A connection without a socket (a bridge's local side): proto's connection on listener
 * context lctx (borrowed, must outlive the connection's sessions), named peer (copied) in
 * log lines, whose only layer is ops, attached with ctx: it receives proto's output, and
 * client_deliver feeds proto. Returns the client (borrowed: valid until ops->detach), or
 * NULL on out of memory (logged). */
struct mq_client *client_open_internal(struct mq_server *srv, struct mq_listener_ctx *lctx,
                                       const char *peer, const struct mq_transport_ops *ops,
                                       void *ctx);
/* What layer `level` decoded: to the input of the layer above (which may decode it in
 * place), or to client_deliver from the top layer. data is borrowed for the call. */
static inline void client_layer_up(struct mq_client *cl, unsigned level, uint8_t *data, size_t len)
{
    if (level + 1 < cl->layers)
        cl->layer[level + 1].ops->input(cl, level + 1, data, len);
    else
        client_deliver(cl, data, len);
}
/* What layer `level` encoded: to the output of the layer below, or to client_send_raw
 * from level 0; proto's output enters at level cl->layers. data is borrowed for the
 * call. */
static inline void client_layer_down(struct mq_client *cl, unsigned level, const uint8_t *data,
                                     size_t len)
{
    if (level)
        cl->layer[level - 1].ops->output(cl, level - 1, data, len);
    else
        client_send_raw(cl, data, len);
}
/* Layer `level` has queued its goodbye: the layer below says its own (see
 * mq_transport_ops.shutdown). */
void client_layer_shutdown_below(struct mq_client *cl, unsigned level);

#endif

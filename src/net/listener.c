/* listener.c - bind and listen for each configured listener; accept -> client.
 *
 * A listener with no bind address gets two sockets (0.0.0.0 and ::, the IPv6 one
 * v6-only) like Mosquitto; a host name may resolve to several addresses. Port 0
 * means "any free port": the first socket of a listener picks it and the others
 * of the same listener share it, so tests can run on ephemeral ports.
 * A listening socket is a plain socket watched by a uv_poll_t: accept4 hands the new
 * socket straight to client.c, which keeps it out of libuv (see poller.c; a uv_poll started
 * sets srv->uv_turn_due, as libuv registers its fd only inside uv_run). Running out
 * of file descriptors pauses accepting for a moment instead of spinning on a socket
 * that stays readable.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "midge/config.h"
#include "midge/log.h"
#include "net.h"
#include "tls.h"
#include "ws.h"

/* Connections accepted per wake-up at most: a storm of them still lets the loop serve
 * the connected clients (the rest are accepted at the next turn). */
#define ACCEPT_BATCH 128
/* How long accepting pauses when the process or system is out of descriptors (or
 * memory), and how often that is logged at most. */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_EVERY_MS 10000

static void on_readable(uv_poll_t *h, int status, int events);

void listeners_resume(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    if (srv->stopping)
        return;
    for (size_t i = 0; i < srv->socket_count; i++)
        uv_poll_start(&srv->sockets[i]->poll, UV_READABLE, on_readable);
    srv->uv_turn_due = true; /* see poller_run */
}

/* accept4 failed with err, which a retry right away would repeat (no descriptors or
 * memory left): stop watching every listening socket for a moment. A connection that
 * waits in the backlog meanwhile is accepted when descriptors are free again. */
static void pause_accepting(struct mq_listen_socket *ls, int err)
{
    struct mq_server *srv = ls->srv;
    uint64_t now = uv_now(&srv->loop);
    if (!srv->accept_err_ms || now - srv->accept_err_ms >= ACCEPT_LOG_EVERY_MS) {
        mq_log(MQ_LOG_WARNING,
               "accept on %s failed: %s; not accepting for %d ms (logged once per %d s)", ls->name,
               uv_strerror(-err), ACCEPT_PAUSE_MS, ACCEPT_LOG_EVERY_MS / 1000);
        srv->accept_err_ms = now ? now : 1;
    }
    for (size_t i = 0; i < srv->socket_count; i++)
        uv_poll_stop(&srv->sockets[i]->poll);
    uv_timer_start(&srv->accept_pause, listeners_resume, ACCEPT_PAUSE_MS, 0);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct mq_listen_socket *ls = (struct mq_listen_socket *)h;
    if (status < 0) {
        mq_log(MQ_LOG_WARNING, "accept on %s failed: %s", ls->name, uv_strerror(status));
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(ls->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            client_accept(ls, fd, (struct sockaddr *)&ss);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        /* The connection died in the backlog, or a network error was pending on it
         * (accept(2), "Error handling"): the next one may be fine. */
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
        case EPERM: continue;
        default: pause_accepting(ls, errno); return;
        }
    }
}

/* The last of a listening socket: its transport contexts, its fd, itself. */
static void socket_free(struct mq_listen_socket *ls)
{
    for (unsigned i = 0; i < ls->depth; i++)
        if (ls->stack[i]->ctx_free)
            ls->stack[i]->ctx_free(ls->stack_ctx[i]);
    if (ls->fd >= 0)
        close(ls->fd);
    free(ls);
}

static void on_socket_closed(uv_handle_t *h)
{
    socket_free((struct mq_listen_socket *)h);
}

/* Stop accepting at once: uv_close stops the poll handle and takes the fd out of libuv's
 * epoll set before returning, so the socket is closed here, not in the close callback
 * (which only frees): once "no longer listening" is logged, connections are refused. */
static void socket_close(struct mq_listen_socket *ls)
{
    uv_close((uv_handle_t *)&ls->poll, on_socket_closed);
    if (ls->fd >= 0) {
        close(ls->fd);
        ls->fd = -1;
    }
}

/* A bound, listening, non-blocking socket for addr (name: for logs); -1 after logging. */
static int open_socket(const struct sockaddr_storage *addr, const struct mq_listener_config *lc,
                       const char *name)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mq_log(MQ_LOG_ERR, "cannot listen on %s: %s", name, uv_strerror(-errno));
        return -1;
    }
    int one = 1;
    /* A restart can rebind at once (libuv's uv_tcp_bind did the same). */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* The IPv6 socket of a wildcard listener leaves IPv4 to its own socket. */
    if (addr->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* A specific address may not exist yet when systemd starts us before the network
     * is up: IP_FREEBIND lets the bind succeed and traffic flows once it appears. */
    if (lc->bind_address) {
        if (addr->ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
        else
            setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
    }
    if (lc->bind_interface && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, lc->bind_interface,
                                         (socklen_t)strlen(lc->bind_interface)) < 0) {
        mq_log(MQ_LOG_ERR, "listener %u: bind_interface %s: %s", lc->port, lc->bind_interface,
               strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t len =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)addr, len) || listen(fd, 511)) {
        mq_log(MQ_LOG_ERR, "cannot listen on %s: %s", name, uv_strerror(-errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int add_socket(struct mq_server *srv, struct mq_listener_ctx *lctx,
                      const struct sockaddr *sa, uint16_t *port, void *tls)
{
    struct sockaddr_storage addr;
    memcpy(&addr, sa,
           sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    if (addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons(*port);
    else
        ((struct sockaddr_in *)&addr)->sin_port = htons(*port);

    struct mq_listen_socket *ls = calloc(1, sizeof(*ls));
    struct mq_listen_socket **grown =
        realloc(srv->sockets, (srv->socket_count + 1) * sizeof(*srv->sockets));
    if (!ls || !grown) {
        free(ls);
        if (grown)
            srv->sockets = grown;
        mq_log(MQ_LOG_ERR, "out of memory creating a listener");
        return -1;
    }
    srv->sockets = grown;
    ls->srv = srv;
    ls->lctx = lctx;
    /* The layers of its connections, bottom first: TLS under WebSocket for wss. Set
     * before listen(): no connection is ever accepted in plaintext. */
    if (tls) {
        ls->stack[ls->depth] = &tls_transport;
        ls->stack_ctx[ls->depth++] = tls_ctx_ref(tls);
    }
    const struct mq_listener_config *lc = lctx->cfg;
    if (lc->protocol == MQ_LISTENER_WEBSOCKETS)
        ls->stack[ls->depth++] = &ws_transport; /* no context: it reads lctx per request */
    ls->fd = -1;
    net_addr_name((const struct sockaddr *)&addr, ls->name, sizeof(ls->name));
    int rc = 0;
    if ((ls->fd = open_socket(&addr, lc, ls->name)) < 0) {
        socket_free(ls);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (*port == 0 && getsockname(ls->fd, (struct sockaddr *)&bound, &blen) == 0) {
        *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
        net_addr_name((const struct sockaddr *)&bound, ls->name, sizeof(ls->name));
    }
    if ((rc = uv_poll_init(&srv->loop, &ls->poll, ls->fd))) {
        mq_log(MQ_LOG_ERR, "cannot listen on %s: %s", ls->name, uv_strerror(rc));
        socket_free(ls);
        return -1;
    }
    srv->sockets[srv->socket_count++] = ls;
    /* Paused for lack of descriptors: this one waits for the same timer. */
    if (!uv_is_active((uv_handle_t *)&srv->accept_pause)) {
        uv_poll_start(&ls->poll, UV_READABLE, on_readable);
        srv->uv_turn_due = true; /* libuv watches its fd from its next turn on */
    }
    bool ws = lc->protocol == MQ_LISTENER_WEBSOCKETS;
    mq_log(MQ_LOG_NOTICE, "listening on %s (%s)", ls->name,
           ws ? (tls ? "websockets over tls" : "websockets") : (tls ? "mqtt over tls" : "mqtt"));
    return 0;
}

/* Bind one configured listener: every address it names, sharing one port. */
static int start_listener(struct mq_server *srv, struct mq_listener_ctx *lctx, uint16_t *port_io)
{
    const struct mq_listener_config *lc = lctx->cfg;
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    if (lc->socket_domain == 4)
        hints.ai_family = AF_INET;
    else if (lc->socket_domain == 6)
        hints.ai_family = AF_INET6;
    struct addrinfo *res = NULL;
    /* Start-up only, before the loop runs: a blocking resolver call is acceptable here. */
    int gai = getaddrinfo(lc->bind_address, "0", &hints, &res);
    if (gai) {
        mq_log(MQ_LOG_ERR, "listener %u: cannot resolve bind address \"%s\": %s", lc->port,
               lc->bind_address ? lc->bind_address : "*", gai_strerror(gai));
        return -1;
    }
    /* Certificates are loaded before anything is bound: a TLS listener whose files do
     * not load is not opened at all, never served unencrypted. */
    void *tls = NULL;
    if (tls_enabled(lc) && !(tls = tls_ctx_new(lc))) {
        freeaddrinfo(res);
        return -1;
    }
    uint16_t port = *port_io;
    int rc = 0, bound = 0;

    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (add_socket(srv, lctx, ai->ai_addr, &port, tls) == 0) {
            bound++;
        } else if (ai->ai_family == AF_INET6 && !lc->bind_address) {
            /* A machine without IPv6 still serves IPv4 on a wildcard listener. */
            mq_log(MQ_LOG_WARNING, "IPv6 unavailable for listener %u; serving IPv4 only", lc->port);
        } else {
            rc = -1;
        }
    }
    freeaddrinfo(res);
    if (tls)
        tls_transport.ctx_free(tls);
    *port_io = port;
    return rc == 0 && bound ? 0 : -1;
}

int listeners_start(struct mq_server *srv)
{
    const struct mq_config *cfg = srv->cfg;
    uint16_t previous_port = 0;
    for (size_t i = 0; i < cfg->listener_count; i++) {
        /* The loopback pair is one logical listener: with -p 0 both halves share the
         * port the first one picked. */
        uint16_t port = cfg->listeners[i].port;
        if (port == 0 && cfg->listeners[i].shares_port)
            port = previous_port;
        if (start_listener(srv, srv->lctx[i], &port))
            return -1;
        previous_port = port;
    }
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Two listener configurations that would bind the same sockets. */
static bool same_binding(const struct mq_listener_config *a, const struct mq_listener_config *b)
{
    return a->port == b->port && a->protocol == b->protocol &&
           a->socket_domain == b->socket_domain && same_str(a->bind_address, b->bind_address) &&
           same_str(a->bind_interface, b->bind_interface) && tls_enabled(a) == tls_enabled(b);
}

/* The new TLS context of a kept listener, built once for all of its sockets. */
struct reload_tls {
    void *ctx;
    bool tried;
};

/* A kept TLS socket (mqtts or wss) takes a context built from the new settings
 * (certificates are re-read on SIGHUP). Its connections keep the SSL objects they have;
 * OpenSSL frees the old context with the last of them. New files that fail keep the old
 * context. */
static void swap_tls(struct mq_listen_socket *ls, unsigned layer,
                     const struct mq_listener_config *lc, struct reload_tls *rt)
{
    if (!rt->tried) {
        rt->tried = true;
        if (!(rt->ctx = tls_ctx_new(lc)))
            mq_log(MQ_LOG_ERR,
                   "reload: listener %u keeps its current TLS certificates and settings (the "
                   "new ones could not be loaded, above)",
                   lc->port);
    }
    if (!rt->ctx)
        return;
    tls_transport.ctx_free(ls->stack_ctx[layer]);
    ls->stack_ctx[layer] = tls_ctx_ref(rt->ctx);
}

int listeners_reload(struct mq_server *srv, const struct mq_config *ncfg,
                     struct mq_listener_ctx **nlctx)
{
    /* Keep the sockets whose binding is unchanged (pointing them at the new settings),
     * close the ones no longer configured, then bind what is new. Connected clients
     * are never touched. */
    size_t kept = 0;
    bool *matched = calloc(ncfg->listener_count + 1, sizeof(*matched));
    struct reload_tls *tls = calloc(ncfg->listener_count + 1, sizeof(*tls));
    if (!matched || !tls) {
        free(matched);
        free(tls);
        return -1;
    }
    for (size_t i = 0; i < srv->socket_count; i++) {
        struct mq_listen_socket *ls = srv->sockets[i];
        size_t found = SIZE_MAX;
        for (size_t j = 0; j < ncfg->listener_count && found == SIZE_MAX; j++)
            if (same_binding(ls->lctx->cfg, &ncfg->listeners[j]))
                found = j;
        if (found != SIZE_MAX) {
            /* The same listener: its context object stays (clients point at it) and
             * takes the new settings; the caller's fresh one for it is dropped. */
            if (!matched[found] && nlctx[found] != ls->lctx)
                listener_ctx_adopt(ls->lctx, nlctx[found]);
            nlctx[found] = ls->lctx;
            matched[found] = true;
            for (unsigned k = 0; k < ls->depth; k++)
                if (ls->stack[k] == &tls_transport)
                    swap_tls(ls, k, &ncfg->listeners[found], &tls[found]);
            srv->sockets[kept++] = ls;
        } else {
            socket_close(ls);
            mq_log(MQ_LOG_NOTICE, "no longer listening on %s", ls->name);
        }
    }
    srv->socket_count = kept;
    int rc = 0;
    for (size_t j = 0; j < ncfg->listener_count; j++) {
        if (matched[j])
            continue;
        uint16_t port = ncfg->listeners[j].port;
        if (start_listener(srv, nlctx[j], &port))
            rc = -1;
    }
    for (size_t j = 0; j < ncfg->listener_count; j++)
        if (tls[j].ctx)
            tls_transport.ctx_free(tls[j].ctx);
    free(tls);
    free(matched);
    return rc;
}

void listeners_stop(struct mq_server *srv)
{
    for (size_t i = 0; i < srv->socket_count; i++)
        socket_close(srv->sockets[i]);
    free(srv->sockets);
    srv->sockets = NULL;
    srv->socket_count = 0;
}

/* dial.c - outgoing TCP connections for bridges: asynchronous DNS (uv_getaddrinfo on libuv's
 * thread pool), then a non-blocking connect to each resolved address in turn, each watched
 * by a uv_poll_t and bounded by a timer.
 *
 * Owns the dial and, until it is handed over, the socket. The connecting socket is libuv's
 * (a uv_poll_t, as listeners are): a bridge makes a handful of connections, and only a
 * connected socket joins poller.c's set (client_open_outgoing). A dial frees itself when its
 * last libuv handle or request has come back, so cancelling is safe at any moment: the
 * callback is then simply never called.
 */
#include "dial.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "midge/log.h"
#include "net.h"

struct mq_dial {
    uv_loop_t *loop;
    uv_getaddrinfo_t req;
    uv_timer_t timer;
    uv_poll_t *poll; /* the connect being watched; closed (and freed) before the next */
    struct addrinfo *res, *next;
    mq_dial_cb cb;
    void *ctx;
    int fd;      /* the socket being connected, or -1 */
    int pending; /* libuv handles and requests not yet given back */
    bool resolving, done, timer_init;
    uint16_t port;
    uint32_t timeout_ms;
    char *host, *bind_address;
    char peer[NET_ADDR_NAME_MAX];
    char why[256]; /* the last failure */
};

static void release(struct mq_dial *d)
{
    if (--d->pending > 0)
        return;
    if (d->res)
        uv_freeaddrinfo(d->res);
    free(d->host);
    free(d->bind_address);
    free(d);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mq_dial *d = h->data;
    if (h != (uv_handle_t *)&d->timer)
        free(h); /* a uv_poll_t of one attempt */
    release(d);
}

static void stop_poll(struct mq_dial *d)
{
    if (!d->poll)
        return;
    /* Closing takes the socket out of libuv's epoll set at once (uv_poll_stop does); the
     * handle's memory goes in the close callback. */
    uv_close((uv_handle_t *)d->poll, on_handle_closed);
    d->poll = NULL;
}

/* The dial is over: close what is left, and report unless cancelled (cb NULL). */
static void finish(struct mq_dial *d, int fd)
{
    d->done = true;
    stop_poll(d);
    if (d->timer_init)
        uv_timer_stop(&d->timer);
    if (d->fd >= 0 && d->fd != fd)
        close(d->fd);
    d->fd = -1;
    mq_dial_cb cb = d->cb;
    d->cb = NULL;
    if (cb)
        cb(d->ctx, fd, d->peer, d->why);
    else if (fd >= 0)
        close(fd);
    if (d->timer_init && !uv_is_closing((uv_handle_t *)&d->timer))
        uv_close((uv_handle_t *)&d->timer, on_handle_closed);
    release(d); /* the dial's own reference */
}

static void try_next(struct mq_dial *d);

static void attempt_failed(struct mq_dial *d, int err)
{
    snprintf(d->why, sizeof(d->why), "connecting to %s failed: %s", d->peer, strerror(err));
    stop_poll(d);
    uv_timer_stop(&d->timer);
    close(d->fd);
    d->fd = -1;
    try_next(d);
}

static void on_writable(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct mq_dial *d = h->data;
    /* libuv reports a socket error (EPOLLERR) as UV_EBADF: the socket says what it was. */
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len))
        err = errno;
    if (!err && status < 0)
        err = -status;
    if (err == EINPROGRESS)
        return;
    if (err) {
        attempt_failed(d, err);
        return;
    }
    int fd = d->fd;
    d->fd = -1;
    finish(d, fd);
}

static void on_timeout(uv_timer_t *t)
{
    struct mq_dial *d = t->data;
    if (d->fd >= 0)
        attempt_failed(d, ETIMEDOUT);
}

/* A socket bound to bind_address when one is set; -1 with errno (or EAFNOSUPPORT when the
 * bind address is of the other family). */
static int open_socket(struct mq_dial *d, const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || !d->bind_address)
        return fd;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = 0;
    if (ai->ai_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        sl = inet_pton(AF_INET, d->bind_address, &a->sin_addr) == 1 ? sizeof(*a) : 0;
    } else if (ai->ai_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        sl = inet_pton(AF_INET6, d->bind_address, &a->sin6_addr) == 1 ? sizeof(*a) : 0;
    }
    if (!sl) {
        close(fd);
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&ss, sl)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void try_next(struct mq_dial *d)
{
    while (d->next) {
        const struct addrinfo *ai = d->next;
        d->next = ai->ai_next;
        net_addr_name(ai->ai_addr, d->peer, sizeof(d->peer));
        int fd = open_socket(d, ai);
        if (fd < 0) {
            int e = errno;
            if (d->bind_address && e == EAFNOSUPPORT)
                snprintf(d->why, sizeof(d->why),
                         "connecting to %s failed: bridge_bind_address %s is not of its address "
                         "family",
                         d->peer, d->bind_address);
            else if (d->bind_address)
                snprintf(d->why, sizeof(d->why), "connecting to %s failed: binding to %s: %s",
                         d->peer, d->bind_address, strerror(e));
            else
                snprintf(d->why, sizeof(d->why), "connecting to %s failed: %s", d->peer,
                         strerror(e));
            continue;
        }
        d->fd = fd;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            d->fd = -1;
            finish(d, fd);
            return;
        }
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            d->fd = -1;
            snprintf(d->why, sizeof(d->why), "connecting to %s failed: %s", d->peer, strerror(e));
            continue;
        }
        uv_poll_t *p = malloc(sizeof(*p));
        if (!p || uv_poll_init(d->loop, p, fd)) {
            free(p);
            close(fd);
            d->fd = -1;
            snprintf(d->why, sizeof(d->why), "connecting to %s failed: out of memory", d->peer);
            continue;
        }
        p->data = d;
        d->poll = p;
        d->pending++;
        uv_poll_start(p, UV_WRITABLE, on_writable);
        uv_timer_start(&d->timer, on_timeout, d->timeout_ms, 0);
        return;
    }
    finish(d, -1);
}

static void on_start_failed(uv_timer_t *t)
{
    finish(t->data, -1);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct mq_dial *d = req->data;
    d->resolving = false;
    d->res = res;
    if (!d->cb) { /* cancelled meanwhile */
        release(d);
        return;
    }
    if (status < 0) {
        snprintf(d->why, sizeof(d->why), "DNS lookup of %s failed: %s", d->host,
                 uv_strerror(status));
        release(d); /* the request's reference */
        finish(d, -1);
        return;
    }
    d->next = res;
    release(d);
    try_next(d);
}

struct mq_dial *dial_start(uv_loop_t *loop, const char *host, uint16_t port,
                           const char *bind_address, uint32_t timeout_ms, mq_dial_cb cb, void *ctx)
{
    struct mq_dial *d = calloc(1, sizeof(*d));
    if (!d || !(d->host = strdup(host)) ||
        (bind_address && !(d->bind_address = strdup(bind_address)))) {
        mq_log(MQ_LOG_ERR, "out of memory connecting to %s", host);
        if (d)
            free(d->host);
        free(d);
        return NULL;
    }
    d->loop = loop;
    d->cb = cb;
    d->ctx = ctx;
    d->fd = -1;
    d->port = port;
    d->timeout_ms = timeout_ms;
    d->pending = 1; /* the dial's own reference, dropped by finish */
    snprintf(d->peer, sizeof(d->peer), "%s:%u", host, port);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->timer_init = true;
    d->pending++; /* the timer, given back by its close callback */
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    /* No AI_ADDRCONFIG: on a host whose only addresses are loopback ones it would hide
     * 127.0.0.1 and ::1, which a bridge to a broker on the same machine needs. An address of
     * a family the host cannot reach fails at connect, and the next one is tried. */
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    d->req.data = d;
    d->resolving = true;
    d->pending++;
    int rc = uv_getaddrinfo(loop, &d->req, on_resolved, host, service, &hints);
    if (rc) {
        d->resolving = false;
        d->pending--;
        snprintf(d->why, sizeof(d->why), "DNS lookup of %s failed: %s", host, uv_strerror(rc));
        /* Report from the loop, not from inside the caller: a zero timer. */
        uv_timer_start(&d->timer, on_start_failed, 0, 0);
    }
    return d;
}

void dial_cancel(struct mq_dial *d)
{
    if (!d || d->done)
        return;
    d->cb = NULL;
    if (d->resolving) {
        /* The request comes back with UV_ECANCELED (or its result, if it was running): its
         * callback releases it. */
        uv_cancel((uv_req_t *)&d->req);
    }
    finish(d, -1);
}

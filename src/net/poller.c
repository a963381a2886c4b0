/* poller.c - one epoll set holding every client socket, watched by one uv_poll_t.
 *
 * A libuv stream per connection (a uv_tcp_t is 248 bytes, plus its slot in the loop's
 * watcher array) was half of what an idle connection cost (issue 7, scenario F), so
 * client sockets are not libuv handles: they sit in this level-triggered epoll set,
 * whose own fd is the one thing libuv watches for them. Timers, signals, uv_async, the
 * thread pool and the per-turn flush stay libuv's. Owns the epoll fd and its uv_poll_t;
 * never owns a client (epoll_event.data.ptr is borrowed: client.c removes a socket
 * before it closes it, and frees a client only outside this file's callback).
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "midge/log.h"
#include "net.h"

/* Events taken per wake-up; more stay ready (level-triggered) for the next loop turn,
 * so the loop's timers and flush still run between batches. */
#define POLLER_BATCH 256

static void on_ready(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct mq_server *srv = h->data;
    if (status < 0) {
        mq_log(MQ_LOG_ERR, "client sockets: poll failed: %s", uv_strerror(status));
        return;
    }
    struct epoll_event ev[POLLER_BATCH];
    int n = epoll_wait(srv->epfd, ev, POLLER_BATCH, 0);
    for (int i = 0; i < n; i++) {
        /* A client closed earlier in this batch is still allocated (it is freed at the
         * flush), and client.c ignores events for it. */
        struct mq_client *cl = ev[i].data.ptr;
        if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            client_readable(cl); /* a hangup or error shows as the read's result */
        if (ev[i].events & EPOLLOUT)
            client_writable(cl);
    }
}

static void on_poller_closed(uv_handle_t *h)
{
    struct mq_server *srv = h->data;
    close(srv->epfd);
    srv->epfd = -1;
}

int poller_start(struct mq_server *srv)
{
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        mq_log(MQ_LOG_ERR, "cannot create the epoll set for client sockets: %s", strerror(errno));
        return -1;
    }
    int rc = uv_poll_init(&srv->loop, &srv->poller, srv->epfd);
    if (rc) {
        mq_log(MQ_LOG_ERR, "cannot watch the epoll set of client sockets: %s", uv_strerror(rc));
        close(srv->epfd);
        srv->epfd = -1;
        return -1;
    }
    srv->poller.data = srv;
    uv_poll_start(&srv->poller, UV_READABLE, on_ready);
    return 0;
}

void poller_stop(struct mq_server *srv)
{
    if (srv->epfd < 0 || uv_is_closing((uv_handle_t *)&srv->poller))
        return;
    uv_close((uv_handle_t *)&srv->poller, on_poller_closed);
}

int poller_add(struct mq_server *srv, struct mq_client *cl)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = cl};
    return epoll_ctl(srv->epfd, EPOLL_CTL_ADD, cl->fd, &ev);
}

int poller_want_out(struct mq_server *srv, struct mq_client *cl, bool on)
{
    struct epoll_event ev = {.events = on ? EPOLLIN | EPOLLOUT : EPOLLIN, .data.ptr = cl};
    return epoll_ctl(srv->epfd, EPOLL_CTL_MOD, cl->fd, &ev);
}

void poller_remove(struct mq_server *srv, struct mq_client *cl)
{
    /* ENOENT for a socket refused before it was added: nothing to undo. */
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, cl->fd, NULL);
}

/* poller.c - the event loop's wait: one epoll set holding every client socket and
 * libuv's own backend fd, and the one blocking epoll_wait per wake-up.
 *
 * A libuv stream per connection (a uv_tcp_t is 248 bytes, plus its slot in the loop's
 * watcher array) was half of what an idle connection cost (issue 7, scenario F), so
 * client sockets are not libuv handles: they sit in this level-triggered set. libuv is
 * embedded (uv_backend_fd/uv_backend_timeout): its fd sits in the set too, and
 * poller_run runs a non-blocking libuv turn when it is ready or a timer is due, so
 * timers, signals, uv_async, the thread pool, listeners and close callbacks stay
 * libuv's. Owns the epoll fd; never owns a client (epoll_event.data.ptr is borrowed:
 * client.c removes a socket before it closes it, and frees a client only at the flush).
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "midge/log.h"
#include "net.h"
#include "tls.h"

/* Events taken per wake-up; more stay ready (level-triggered) for the next turn, so
 * the flush and libuv's turn still run between batches. */
#define POLLER_BATCH 256

/* data.ptr of libuv's backend fd in the set: no client has this address. */
static char uv_marker;

int poller_start(struct mq_server *srv)
{
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        mq_log(MQ_LOG_ERR, "cannot create the epoll set for client sockets: %s", strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &uv_marker};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, uv_backend_fd(&srv->loop), &ev)) {
        mq_log(MQ_LOG_ERR, "cannot watch the event loop's descriptor: %s", strerror(errno));
        close(srv->epfd);
        srv->epfd = -1;
        return -1;
    }
    /* libuv registers the fds of watchers started so far (signals, the thread pool's
     * wake-up) with its backend only inside uv_run: the first turn must run it. */
    srv->uv_turn_due = true;
    return 0;
}

void poller_stop(struct mq_server *srv)
{
    if (srv->epfd < 0)
        return;
    close(srv->epfd);
    srv->epfd = -1;
}

void poller_run(struct mq_server *srv)
{
    uv_loop_t *loop = &srv->loop;
    struct epoll_event ev[POLLER_BATCH];
    while (uv_loop_alive(loop)) {
        /* The loop's clock is stale when only clients woke us: timers would fire late. */
        uv_update_time(loop);
        /* 0 when libuv has work it must not wait for (a timer due, handles closing or
         * idle, callbacks pending), or when the flush left clients to free or write
         * (it stops after a bounded number of rounds of wills and closes). */
        int timeout = srv->uv_turn_due || srv->dirty || tls_handshakes_waiting(srv)
                          ? 0
                          : uv_backend_timeout(loop);
        int n = epoll_wait(srv->epfd, ev, POLLER_BATCH, timeout);
        srv->handshake_ns = 0; /* a fresh TLS handshake budget per wake-up */
        if (n < 0) {
            if (errno != EINTR)
                mq_log(MQ_LOG_ERR, "waiting for events failed: %s", strerror(errno));
            n = 0; /* a signal: libuv's signal pipe has it, its turn runs below */
        }
        uv_update_time(loop); /* what libuv does after its own wait: now_ms for the clients */
        bool run_uv = n == 0 || timeout == 0;
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == &uv_marker) {
                run_uv = true; /* every wait reports it while ready: never starved */
                continue;
            }
            /* A client closed earlier in this batch is still allocated (it is freed at
             * the flush), and client.c ignores events for it. */
            struct mq_client *cl = ev[i].data.ptr;
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                client_readable(cl); /* a hangup or error shows as the read's result */
            if (ev[i].events & EPOLLOUT)
                client_writable(cl);
        }
        tls_handshakes_run(srv); /* those that waited, within this wake-up's budget */
        server_flush_turn(srv);
        if (!run_uv)
            continue;
        srv->uv_turn_due = false;
        /* Its uv_prepare and uv_check flush what timers and I/O callbacks produce; close
         * callbacks run after the check, and (libuv >= 1.45) timers after both. */
        uv_run(loop, UV_RUN_NOWAIT);
        server_flush_turn(srv);
    }
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

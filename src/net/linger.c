/* linger.c - sockets the broker has finished with, kept for a moment so that what it sent
 * last reaches the peer ("lingering close", as web servers do it).
 *
 * Closing a TCP socket whose receive queue still holds unread bytes, or that receives more
 * after the close, makes the kernel answer with RST instead of FIN; a peer whose stack
 * gets the RST may throw away what it had received but its application not yet read: the
 * MQTT 5 DISCONNECT that says why, a CONNACK refusal, a WebSocket close frame. So when the
 * broker ends a connection itself, the socket is shut down for writing instead (FIN after
 * the queued bytes) and what still arrives is read and discarded until the peer closes
 * too, for at most LINGER_MS and LINGER_MAX_BYTES. At most LINGER_MAX sockets linger at
 * once (each holds a descriptor); past that, or while the broker shuts down, a socket is
 * closed at once, as before.
 *
 * A lingering socket is a libuv poll handle, not a client: it has no session, no buffers
 * and no place in poller.c's set, and is never seen by proto.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

#define LINGER_MS 2000
#define LINGER_MAX_BYTES (256 * 1024)
#define LINGER_MAX 1024

struct mq_linger {
    uv_poll_t poll; /* data: the server */
    int fd;
    uint64_t deadline_ms;
    size_t drained;
    struct mq_linger *prev, *next; /* srv->lingering */
};

static void on_closed(uv_handle_t *h)
{
    struct mq_linger *l = (struct mq_linger *)h;
    close(l->fd);
    free(l);
}

/* The peer has closed, gone quiet for too long, or sent too much: close for good. */
static void finish(struct mq_server *srv, struct mq_linger *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        srv->lingering = l->next;
    if (l->next)
        l->next->prev = l->prev;
    srv->linger_count--;
    if (!srv->linger_count)
        uv_timer_stop(&srv->linger_timer);
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, on_closed);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    (void)events;
    struct mq_linger *l = (struct mq_linger *)p;
    struct mq_server *srv = p->data;
    if (status < 0) {
        finish(srv, l);
        return;
    }
    for (;;) {
        /* The shared read buffer: nothing else uses it during this callback. */
        ssize_t n = recv(l->fd, srv->read_buf, sizeof srv->read_buf, MSG_DONTWAIT);
        if (n > 0) {
            l->drained += (size_t)n;
            if (l->drained > LINGER_MAX_BYTES)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break; /* 0: the peer's FIN, all it sent is read; or an error */
    }
    finish(srv, l);
}

static void on_timer(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    uint64_t now = uv_now(&srv->loop);
    for (struct mq_linger *l = srv->lingering, *next; l; l = next) {
        next = l->next;
        if (now >= l->deadline_ms)
            finish(srv, l);
    }
}

void linger_close(struct mq_server *srv, int fd)
{
    struct mq_linger *l = NULL;
    if (srv->stopping || srv->linger_count >= LINGER_MAX || shutdown(fd, SHUT_WR) ||
        !(l = calloc(1, sizeof *l)) || uv_poll_init(&srv->loop, &l->poll, fd)) {
        free(l);
        close(fd);
        return;
    }
    l->poll.data = srv;
    l->fd = fd;
    l->deadline_ms = uv_now(&srv->loop) + LINGER_MS;
    if (uv_poll_start(&l->poll, UV_READABLE, on_readable)) {
        /* Initialised, so it must be closed as a handle (on_closed closes fd). */
        uv_close((uv_handle_t *)&l->poll, on_closed);
        return;
    }
    if (!srv->linger_timer_ready) {
        uv_timer_init(&srv->loop, &srv->linger_timer);
        srv->linger_timer.data = srv;
        srv->linger_timer_ready = true;
    }
    if (!srv->linger_count)
        uv_timer_start(&srv->linger_timer, on_timer, LINGER_MS / 4, LINGER_MS / 4);
    l->next = srv->lingering;
    if (l->next)
        l->next->prev = l;
    srv->lingering = l;
    srv->linger_count++;
    /* libuv hands a new poll handle's fd to the kernel only inside uv_run. */
    srv->uv_turn_due = true;
}

void linger_stop(struct mq_server *srv)
{
    while (srv->lingering)
        finish(srv, srv->lingering);
    if (srv->linger_timer_ready) {
        uv_close((uv_handle_t *)&srv->linger_timer, NULL);
        srv->linger_timer_ready = false;
    }
}

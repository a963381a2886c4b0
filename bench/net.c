/*
 * net.c - non-blocking TCP connections driven by one epoll instance.
 *
 * The generator has to stay cheaper than the broker it measures, so it does
 * what it expects the broker to do: packets produced during a loop turn are
 * appended to the connection's output buffer and sent with one write() at the
 * end of the turn; EPOLLOUT is watched only while a write is blocked; reads
 * are large and every complete packet in the buffer is handled.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

void loop_init(struct loop *l, const char *host, int port, const char *ws_path)
{
    memset(l, 0, sizeof(*l));
    l->ws_path = ws_path;
    snprintf(l->ws_host, sizeof(l->ws_host), "%s:%d", host, port);
    l->rng = (now_ns() ^ ((uint64_t)getpid() << 32)) | 1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        die(1, "epoll_create1: %s", strerror(errno));
    l->addr.sin_family = AF_INET;
    l->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &l->addr.sin_addr) != 1)
        die(EXIT_USAGE, "--host %s: expected an IPv4 address such as 127.0.0.1", host);
}

void conn_set_events(struct loop *l, struct conn *c, uint32_t events)
{
    if (c->epoll_events == events || c->fd < 0)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die(1, "epoll_ctl: %s", strerror(errno));
    c->epoll_events = events;
}

int conn_open(struct loop *l, struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    /* Every message should leave when written, as a real client's would. */
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->started_ns = now_ns();
    c->state = CS_CONNECTING;
    c->dirty = false;
    const struct sockaddr_in *to = c->addr ? c->addr : &l->addr;
    if (connect(c->fd, (const struct sockaddr *)to, sizeof(*to)) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(c->fd);
        c->fd = -1;
        c->state = CS_CLOSED;
        return -err;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die(1, "epoll_ctl: %s", strerror(errno));
    c->epoll_events = EPOLLOUT;
    return 0;
}

int conn_finish_connect(struct loop *l, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        return err;
    c->state = CS_MQTT;
    conn_set_events(l, c, EPOLLIN);
    if (l->tls)
        tls_conn_start(l, c);
    if (l->ws_path)
        ws_start(l, c); /* the HTTP upgrade goes first; MQTT waits for the 101 */
    return 0;
}

void conn_mark_dirty(struct loop *l, struct conn *c)
{
    if (c->dirty || c->state == CS_CONNECTING || c->state == CS_CLOSED)
        return;
    c->dirty = true;
    c->next_dirty = l->dirty_head;
    l->dirty_head = c;
}

int conn_flush(struct loop *l, struct conn *c)
{
    struct buf *ob = &c->out;
    if (c->ws) {
        if (c->ws == WS_OPEN)
            ws_frame_out(l, c);
        ob = &c->wout;
    }
    while (ob->off < ob->len) {
        ssize_t n;
        if (c->ssl) {
            n = tls_write(l, c, ob->data + ob->off, ob->len - ob->off);
            if (n == -EAGAIN)
                return 0; /* the handshake goes on: tls_read marks us dirty after it */
            if (n < 0)
                return (int)n;
        } else {
            n = write(c->fd, ob->data + ob->off, ob->len - ob->off);
        }
        l->write_calls++;
        if (n > 0) {
            ob->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            /* The broker is not reading fast enough: wait until it does. */
            conn_set_events(l, c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    ob->off = ob->len = 0;
    if (c->epoll_events & EPOLLOUT)
        conn_set_events(l, c, EPOLLIN);
    return 0;
}

struct conn *loop_flush_all(struct loop *l, int *err)
{
    struct conn *failed = NULL;
    *err = 0;
    while (l->dirty_head) {
        struct conn *c = l->dirty_head;
        l->dirty_head = c->next_dirty;
        c->dirty = false;
        if (c->state == CS_CLOSED || c->state == CS_CONNECTING)
            continue;
        int rc = conn_flush(l, c);
        if (rc < 0 && !failed) {
            failed = c;
            *err = -rc;
        }
    }
    return failed;
}

ssize_t conn_read(struct loop *l, struct conn *c)
{
    if (c->ws)
        return ws_read(l, c);
    if (c->in.cap == 0) {
        c->in.data = malloc(c->in_cap);
        if (!c->in.data)
            die(1, "out of memory");
        c->in.cap = c->in_cap;
    }
    buf_compact(&c->in);
    if (c->in.len == c->in.cap)
        buf_reserve(&c->in, c->in.cap); /* a packet larger than the buffer */
    ssize_t n = conn_raw_read(l, c, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (n > 0)
        c->in.len += (size_t)n;
    return n;
}

ssize_t conn_raw_read(struct loop *l, struct conn *c, void *buf, size_t cap)
{
    for (;;) {
        l->read_calls++;
        if (c->ssl)
            return tls_read(l, c, buf, cap);
        ssize_t n = read(c->fd, buf, cap);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return -errno;
    }
}

void conn_close(struct loop *l, struct conn *c)
{
    tls_conn_free(c);
    if (c->fd >= 0) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = CS_CLOSED;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wout);
    buf_free(&c->raw);
    c->ws = WS_NONE;
}

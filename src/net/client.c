/* client.c - one TCP connection: bytes in -> proto, proto's output -> socket.
 *
 * Client sockets are not libuv handles: they sit in poller.c's epoll set, whose loop calls
 * client_readable and client_writable. A read lands in the server's shared 64 KiB buffer
 * and passes through the connection's transport layers, if any (net.h: TLS, WebSocket,
 * or WebSocket over TLS); only the unfinished tail of a packet is copied into the
 * client, so an idle connection holds no read buffer.
 * Output produced during a loop turn is gathered per client and written once by
 * client_flush_all (at the end of each turn of poller_run, and in libuv's uv_check and
 * uv_prepare) with one send(); what the socket does not take stays in the client's
 * buffer, written when epoll reports room (EPOLLOUT). Once all is written, the buffer goes back to
 * a server-wide pool, so an idle connection holds no output buffer either, while a busy one takes a
 * pooled buffer every turn without calling malloc. A closed client is freed only by
 * client_flush_all, never inside a callback that may still use it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "midge/buf.h"
#include "midge/config.h"
#include "midge/log.h"
#include "net.h"

/* Pool output buffers up to this size; free larger ones so a burst does not pin
 * memory once it has been written. A fan-out gives each subscriber several KiB per
 * turn: pooling only small buffers made every such turn regrow and free one per
 * subscriber (realloc and its copies were 15% of the broker's CPU in scenario D). The
 * pool is trimmed by the tick, so idle connections still hold nothing. */
#define OUT_KEEP_BYTES (64 * 1024)
/* Largest partial packet we reserve room for in one go (see keep_tail). */
#define EAGER_RESERVE_MAX (1u << 20)

/* Output buffers start at this size (header included) and double. */
#define OUT_MIN_BYTES 256

/* Give the client's output buffer (written out, or abandoned at close) back. */
static void out_release(struct mq_client *cl)
{
    struct mq_server *srv = cl->srv;
    struct mq_out *o = cl->out;
    if (!o)
        return;
    cl->out = NULL;
    if (sizeof(*o) + o->cap > OUT_KEEP_BYTES) {
        free(o);
        return;
    }
    o->next_free = srv->out_free;
    srv->out_free = o;
    srv->out_free_count++;
}

/* Take a pooled buffer for a client that has none, when there is one. */
static void out_acquire(struct mq_client *cl)
{
    struct mq_server *srv = cl->srv;
    struct mq_out *o = srv->out_free;
    if (!o)
        return;
    srv->out_free = o->next_free;
    o->len = o->sent = 0;
    cl->out = o;
    if (--srv->out_free_count < srv->out_free_low)
        srv->out_free_low = srv->out_free_count;
}

void client_out_trim(struct mq_server *srv, bool all)
{
    /* The pool never went below out_free_low since the last tick: that many buffers
     * served nobody for a whole tick, so the connections that made them are idle. */
    size_t n = all ? srv->out_free_count : srv->out_free_low;
    while (n--) {
        struct mq_out *o = srv->out_free;
        srv->out_free = o->next_free;
        srv->out_free_count--;
        free(o);
    }
    srv->out_free_low = srv->out_free_count;
}

/* out_reserve's slow path: take a pooled buffer, compact, or grow. */
static int out_grow(struct mq_client *cl, size_t n)
{
    if (!cl->out)
        out_acquire(cl);
    struct mq_out *o = cl->out;
    if (o && o->cap - o->len >= n)
        return 0;
    if (o && o->sent) {
        /* What the socket already took goes before growing: a slow reader's buffer is
         * compacted only when it fills, not at every partial write. */
        memmove(o->data, o->data + o->sent, o->len - o->sent);
        o->len -= o->sent;
        o->sent = 0;
        if (o->cap - o->len >= n)
            return 0;
    }
    size_t used = o ? o->len : 0;
    size_t total = o ? sizeof(*o) + o->cap : OUT_MIN_BYTES;
    while (total - sizeof(*o) < used + n) {
        if (total > UINT32_MAX)
            return -1;
        total *= 2;
    }
    struct mq_out *grown = realloc(o, total);
    if (!grown)
        return -1;
    if (!o)
        grown->len = grown->sent = 0;
    grown->cap = (uint32_t)(total - sizeof(*grown));
    cl->out = grown;
    return 0;
}

/* Make room for n more bytes of output. -1 on out of memory (or beyond 32-bit lengths).
 * Inline: it runs for every packet, and there is room in the common case. */
static inline int out_reserve(struct mq_client *cl, size_t n)
{
    const struct mq_out *o = cl->out;
    if (o && o->cap - o->len >= n)
        return 0;
    return out_grow(cl, n);
}

static void mark_dirty(struct mq_client *cl)
{
    /* A closed client is listed by client_close, to be freed: no output for it. */
    if (cl->in_dirty || cl->closing)
        return;
    cl->in_dirty = true;
    cl->dirty_next = cl->srv->dirty;
    cl->srv->dirty = cl;
}

void client_send_raw(struct mq_client *cl, const uint8_t *data, size_t len)
{
    if (cl->closing || !len)
        return;
    if (out_reserve(cl, len)) {
        mq_log(MQ_LOG_ERR, "%s: out of memory for output, closing", client_peer(cl));
        client_close(cl, "out of memory");
        return;
    }
    memcpy(cl->out->data + cl->out->len, data, len);
    cl->out->len += (uint32_t)len;
    mark_dirty(cl);
}

void client_mark_dirty(struct mq_client *cl)
{
    mark_dirty(cl);
}

/* The bottom layer's staged output, made final before a write (mq_transport_ops.flush).
 * -1 when that closed the client. */
static int layer_flush(struct mq_client *cl)
{
    if (cl->layers && cl->layer[0].ops->flush)
        return cl->layer[0].ops->flush(cl, 0);
    return 0;
}

uint8_t *client_out_append(struct mq_client *cl, size_t n)
{
    if (cl->closing)
        return NULL;
    if (out_reserve(cl, n)) {
        mq_log(MQ_LOG_ERR, "%s: out of memory for output, closing", client_peer(cl));
        client_close(cl, "out of memory");
        return NULL;
    }
    uint8_t *p = cl->out->data + cl->out->len;
    cl->out->len += (uint32_t)n;
    mark_dirty(cl);
    return p;
}

/* A packet's pieces, queued for the socket as they are: room made once for all of them. */
static void send_rawv(struct mq_client *cl, const struct mq_iov *iov, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += iov[i].len;
    if (!total)
        return;
    if (out_reserve(cl, total)) {
        mq_log(MQ_LOG_ERR, "%s: out of memory for output, closing", client_peer(cl));
        client_close(cl, "out of memory");
        return;
    }
    struct mq_out *o = cl->out;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].len)
            memcpy(o->data + o->len, iov[i].base, iov[i].len);
        o->len += (uint32_t)iov[i].len;
    }
    mark_dirty(cl);
}

static void sink_write(struct mq_conn *c, const struct mq_iov *iov, size_t n)
{
    struct mq_client *cl = client_of_conn(c);
    if (cl->closing)
        return;
    if (!cl->layers) {
        send_rawv(cl, iov, n);
        return;
    }
    const struct mq_transport_ops *top = cl->layer[cl->layers - 1].ops;
    if (top->outputv) {
        top->outputv(cl, cl->layers - 1, iov, n);
        return;
    }
    /* The layers stage what they get (a TLS record, a WebSocket message per turn), so
     * the pieces of a packet go down as they are. */
    for (size_t i = 0; i < n && !cl->closing; i++) {
        if (!iov[i].len)
            continue;
        client_layer_down(cl, cl->layers, iov[i].base, iov[i].len);
    }
}

void client_request_close(struct mq_client *cl)
{
    if (!cl->close_requested && !cl->closing)
        client_layer_shutdown_below(cl, cl->layers); /* the top layer's goodbye first */
    cl->close_requested = true;
    mark_dirty(cl);
}

static void sink_close(struct mq_conn *c)
{
    client_request_close(client_of_conn(c));
}

static size_t sink_backlog(const struct mq_conn *c)
{
    const struct mq_client *cl = client_of_conn((struct mq_conn *)c); /* read only */
    size_t n = cl->out ? cl->out->len - cl->out->sent : 0;
    for (unsigned i = 0; i < cl->layers; i++)
        if (cl->layer[i].ops->backlog)
            n += cl->layer[i].ops->backlog(cl, i);
    return n;
}

const struct mq_sink_ops client_sink = {
    .write = sink_write, .close = sink_close, .backlog = sink_backlog};

/* The end of a closed client: tell proto, release everything. Only from
 * client_flush_all, where no callback of the client is up the stack. */
static void client_free(struct mq_client *cl)
{
    struct mq_server *srv = cl->srv;
    if (cl->conn_open) {
        cl->conn.listener->clients--; /* counted from admission, which opened conn */
        srv->broker->now_ms = uv_now(&srv->loop);
        proto_conn_closed(&cl->conn, cl->close_reason ? cl->close_reason : "connection closed");
        cl->conn_open = false;
    }
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        srv->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    srv->client_count--;
    for (unsigned i = cl->layers; i-- > 0;)
        cl->layer[i].ops->detach(cl, i);
    free(cl->layer);
    free(cl->in);
    out_release(cl);
    free(cl);
}

/* Close cl's socket; linger: after the broker's own goodbye (see linger.c). */
static void close_client(struct mq_client *cl, const char *reason, bool linger)
{
    if (cl->closing)
        return;
    if (!cl->close_reason)
        cl->close_reason = reason;
    if (cl->fd >= 0) { /* a bridge's local side has no socket */
        poller_remove(cl->srv, cl);
        if (linger)
            linger_close(cl->srv, cl->fd);
        else
            close(cl->fd);
        cl->fd = -1;
    }
    /* Listed (once) so that client_flush_all frees it; mark_dirty lists no closed client. */
    mark_dirty(cl);
    cl->closing = true;
}

void client_close(struct mq_client *cl, const char *reason)
{
    close_client(cl, reason, false);
}

/* Write what the socket takes of the client's output, with one send(). Returns 0 when all
 * of it went, 1 when some is left (the socket is full), -1 after closing the client. */
static int write_out(struct mq_client *cl)
{
    /* The bottom layer seals what it staged (a TLS record) first. */
    if (layer_flush(cl))
        return -1;
    struct mq_out *o = cl->out;
    size_t left = o->len - o->sent;
    /* MSG_NOSIGNAL: a peer that vanished is a write error, not a SIGPIPE. */
    ssize_t n = send(cl->fd, o->data + o->sent, left, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 1;
        client_close(cl, "write error");
        return -1;
    }
    o->sent += (uint32_t)n;
    return (size_t)n == left ? 0 : 1;
}

/* Write what the client has gathered, keeping what the socket does not take for
 * EPOLLOUT; carry out a requested close. */
static void flush_client(struct mq_client *cl)
{
    if (layer_flush(cl)) /* staged output may become the first bytes of cl->out */
        return;
    if (cl->out && (!cl->want_out || cl->close_requested)) {
        /* While the socket is full only EPOLLOUT writes, except once before a close. */
        int rc = write_out(cl);
        if (rc < 0)
            return;
        if (rc == 0 && !cl->want_out) {
            out_release(cl);
        } else if (rc && !cl->want_out && !cl->close_requested) {
            if (poller_want_out(cl->srv, cl, true)) {
                client_close(cl, "write error");
                return;
            }
            cl->want_out = true;
        }
    }
    /* A close is carried out after one attempt to send what precedes it (CONNACK
     * refusals, for example): a peer that does not read cannot hold it open. */
    if (cl->close_requested) {
        /* Lingering is for a peer that reads: one whose output is still waiting here (a
         * client closed for not reading) is closed at once, its buffers released. */
        bool all_written = !cl->out || cl->out->sent == cl->out->len;
        close_client(cl, "closed by broker", all_written);
    }
}

void client_writable(struct mq_client *cl)
{
    if (cl->closing || !cl->want_out)
        return;
    if (write_out(cl))
        return; /* still full, or closed */
    if (poller_want_out(cl->srv, cl, false)) {
        client_close(cl, "write error");
        return;
    }
    cl->want_out = false;
    out_release(cl);
    /* Messages held back while this client was slow can go now. */
    cl->srv->broker->now_ms = uv_now(&cl->srv->loop);
    if (cl->conn_open)
        proto_conn_drained(&cl->conn);
    for (unsigned i = 0; i < cl->layers && !cl->closing; i++)
        if (cl->layer[i].ops->drained)
            cl->layer[i].ops->drained(cl, i);
    if (cl->close_requested)
        mark_dirty(cl);
}

void client_flush_all(struct mq_server *srv)
{
    /* Freeing a closed client tells proto, which may give others output (its will) or
     * close them: go round again, a bounded number of times, so that the loop does not
     * block with output waiting. */
    for (int round = 0; srv->dirty && round < 8; round++) {
        struct mq_client *cl = srv->dirty;
        srv->dirty = NULL;
        while (cl) {
            struct mq_client *next = cl->dirty_next;
            cl->in_dirty = false;
            cl->dirty_next = NULL;
            if (!cl->closing)
                flush_client(cl);
            /* Closed by its own flush, it is listed again: freed in the next round. */
            if (cl->closing && !cl->in_dirty)
                client_free(cl);
            cl = next;
        }
    }
}

/* Room for a read of at least 32-bit in_cap bytes: buf_reserve on 32-bit lengths. */
static int in_reserve(struct mq_client *cl, size_t need)
{
    if (need > UINT32_MAX)
        return -1;
    size_t cap = cl->in_cap;
    if (buf_reserve(&cl->in, &cap, need, 256))
        return -1;
    cl->in_cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
    return 0;
}

/* Keep the unconsumed tail [data+consumed, data+len) for the next read. */
static int keep_tail(struct mq_client *cl, const uint8_t *data, size_t len, size_t consumed,
                     size_t need)
{
    size_t rest = len - consumed;
    if (!rest) {
        /* Every packet complete: give the buffer back now, so a client that goes idle
         * after a packet split across reads does not hold up to 128 KiB until its next
         * read (a busy one pays a malloc per split packet, not per read). */
        cl->in_len = 0;
        free(cl->in);
        cl->in = NULL;
        cl->in_cap = 0;
        return 0;
    }
    if (data == cl->in) {
        memmove(cl->in, cl->in + consumed, rest);
        cl->in_len = (uint32_t)rest;
    } else {
        if (in_reserve(cl, rest))
            return -1;
        memcpy(cl->in, data + consumed, rest);
        cl->in_len = (uint32_t)rest;
    }
    /* When the header told us the packet's size, make room for it at once, up to a
     * point: a huge announced size is only believed as the bytes actually arrive. */
    size_t want = need < EAGER_RESERVE_MAX ? need : cl->in_len + NET_READ_BUF_SIZE;
    if (need > cl->in_len && in_reserve(cl, want))
        return -1;
    return 0;
}

/* Decode every complete packet of data[0..len) and keep the unfinished rest. */
static void feed_proto(struct mq_client *cl, const uint8_t *data, size_t len)
{
    size_t need = 0;
    size_t used = proto_conn_input(&cl->conn, data, len, &need);
    if (cl->close_requested) {
        cl->in_len = 0;
        return;
    }
    if (keep_tail(cl, data, len, used, need))
        client_close(cl, "out of memory for input");
}

void client_readable(struct mq_client *cl)
{
    struct mq_server *srv = cl->srv;
    /* After a close request nothing more is read (the close follows at this turn's
     * flush); a closed client's event is a stale one of this batch. */
    if (cl->closing || cl->close_requested)
        return;
    /* A transport decodes from the shared buffer; only plain TCP reads straight into
     * the tail of a half-received packet. */
    uint8_t *buf = srv->read_buf;
    size_t cap = sizeof(srv->read_buf);
    if (cl->in_len && !cl->layers) {
        /* A packet is half here: read the rest straight after it. */
        if (cl->in_cap - cl->in_len < 4096 &&
            in_reserve(cl, (size_t)cl->in_len + NET_READ_BUF_SIZE)) {
            client_close(cl, "out of memory for input");
            return;
        }
        buf = cl->in + cl->in_len;
        cap = cl->in_cap - cl->in_len;
    }
    ssize_t nread = read(cl->fd, buf, cap);
    if (nread <= 0) {
        if (nread == 0)
            client_close(cl, "connection closed by peer");
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            client_close(cl, errno == ECONNRESET ? "connection reset by peer" : "read error");
        return;
    }
    if (!cl->conn_open && !cl->outgoing)
        return;
    srv->broker->now_ms = uv_now(&srv->loop);

    if (cl->layers) {
        cl->layer[0].ops->input(cl, 0, buf, (size_t)nread);
    } else if (buf == srv->read_buf) {
        client_deliver(cl, buf, (size_t)nread);
    } else {
        /* The bytes landed right after the partial packet kept in cl->in. */
        cl->in_len += (uint32_t)nread;
        feed_proto(cl, cl->in, cl->in_len);
    }
}

void client_deliver(struct mq_client *cl, const uint8_t *data, size_t len)
{
    if (!cl->conn_open || cl->close_requested || cl->closing || !len)
        return;
    if (!cl->in_len) {
        feed_proto(cl, data, len);
        return;
    }
    /* Complete the kept partial packet first. */
    if (in_reserve(cl, (size_t)cl->in_len + len)) {
        client_close(cl, "out of memory for input");
        return;
    }
    memcpy(cl->in + cl->in_len, data, len);
    cl->in_len += (uint32_t)len;
    feed_proto(cl, cl->in, cl->in_len);
}

void client_layer_shutdown_below(struct mq_client *cl, unsigned level)
{
    if (!level || cl->closing)
        return;
    const struct mq_transport_ops *ops = cl->layer[level - 1].ops;
    if (ops->shutdown)
        ops->shutdown(cl, level - 1);
    else
        client_layer_shutdown_below(cl, level - 1);
}

void net_addr_name(const struct sockaddr *sa, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    }
    snprintf(out, size, sa->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

/* A client struct for peer, listed in the server's clients (freed by client_free); the
 * peer's name is allocated with it, at its exact size. */
static struct mq_client *client_alloc(struct mq_server *srv, int fd, const char *peer)
{
    size_t size = offsetof(struct mq_client, peer_addr) + strlen(peer) + 1;
    struct mq_client *cl = calloc(1, size > sizeof(*cl) ? size : sizeof(*cl));
    if (!cl)
        return NULL;
    memcpy(cl->peer_addr, peer, strlen(peer) + 1);
    cl->srv = srv;
    cl->fd = fd;
    cl->next = srv->clients;
    if (srv->clients)
        srv->clients->prev = cl;
    srv->clients = cl;
    srv->client_count++;
    return cl;
}

/* Attach stack[0..depth) to cl; false (the client closed) when one fails. */
static bool attach_layers(struct mq_client *cl, const struct mq_transport_ops *const *stack,
                          void *const *ctx, unsigned depth)
{
    if (depth && !(cl->layer = calloc(depth, sizeof(*cl->layer)))) {
        client_close(cl, "out of memory");
        return false;
    }
    for (unsigned i = 0; i < depth; i++) {
        cl->layer[i].ops = stack[i];
        if (cl->layer[i].ops->attach(cl, i, ctx[i])) {
            client_close(cl, "transport set-up failed");
            return false;
        }
        cl->layers = (uint8_t)(i + 1); /* detached in client_free */
    }
    return true;
}

void client_accept(struct mq_listen_socket *ls, int fd, const struct sockaddr *sa)
{
    struct mq_server *srv = ls->srv;
    char peer[NET_ADDR_NAME_MAX];
    net_addr_name(sa, peer, sizeof(peer));
    struct mq_client *cl = client_alloc(srv, fd, peer);
    if (!cl) {
        mq_log(MQ_LOG_ERR, "out of memory accepting a connection on %s", ls->name);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    int max = ls->lctx->cfg->max_connections;
    if (max >= 0 && ls->lctx->clients >= (unsigned)max) {
        /* Refused before any byte is read: a full listener costs nothing more. */
        mq_log(MQ_LOG_WARNING, "connection from %s on %s refused: max_connections %d reached",
               cl->peer_addr, ls->name, max);
        client_close(cl, "max_connections reached");
        return;
    }
    ls->lctx->clients++;
    srv->broker->now_ms = uv_now(&srv->loop);
    proto_conn_open(&cl->conn, srv->broker, ls->lctx, cl->peer_addr);
    cl->conn_open = true;
    if (!attach_layers(cl, ls->stack, ls->stack_ctx, ls->depth))
        return; /* closed: freed at the flush, with the layers that were attached */
    if (poller_add(srv, cl))
        client_close(cl, "read failed");
}

struct mq_client *client_open_outgoing(struct mq_server *srv, int fd, const char *peer,
                                       const struct mq_transport_ops *const *stack,
                                       void *const *ctx, unsigned depth)
{
    struct mq_client *cl = client_alloc(srv, fd, peer);
    if (!cl) {
        mq_log(MQ_LOG_ERR, "out of memory for the connection to %s", peer);
        close(fd);
        return NULL;
    }
    cl->outgoing = true;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!attach_layers(cl, stack, ctx, depth))
        return NULL; /* closed: freed at the flush, with the layers that were attached */
    if (poller_add(srv, cl)) {
        client_close(cl, "cannot watch the socket");
        return NULL;
    }
    return cl;
}

struct mq_client *client_open_internal(struct mq_server *srv, struct mq_listener_ctx *lctx,
                                       const char *peer, const struct mq_transport_ops *ops,
                                       void *ctx)
{
    struct mq_client *cl = client_alloc(srv, -1, peer);
    if (!cl) {
        mq_log(MQ_LOG_ERR, "out of memory for the connection %s", peer);
        return NULL;
    }
    lctx->clients++;
    srv->broker->now_ms = uv_now(&srv->loop);
    proto_conn_open(&cl->conn, srv->broker, lctx, cl->peer_addr);
    cl->conn_open = true;
    const struct mq_transport_ops *stack[1] = {ops};
    void *ctxs[1] = {ctx};
    if (!attach_layers(cl, stack, ctxs, 1))
        return NULL;
    return cl;
}

/* client.c - one TCP connection: bytes in -> proto, proto's output -> socket.
 *
 * Reads land in the server's shared 64 KiB buffer and pass through the connection's
 * transport layers, if any (net.h: TLS, WebSocket, or WebSocket over TLS); only the
 * unfinished tail of a packet is copied into the client, so an idle connection holds
 * no read buffer.
 * Output produced during a loop turn is gathered per client and written once by
 * client_flush_all (a uv_check handle), directly when the socket takes it and by
 * a queued uv_write only on EAGAIN. Once written, the buffer goes back to a
 * server-wide pool, so an idle connection holds no output buffer either, while a
 * busy one takes a pooled buffer every turn without calling malloc. A client is
 * freed only in its close callback.
 */
#include <stdlib.h>
#include <string.h>

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

static struct mq_client *client_of(uv_handle_t *h)
{
    return (struct mq_client *)h;
}

/* A pooled output buffer: its first bytes hold the link and its capacity (every
 * buffer is at least 256 bytes, see client_send_raw). */
struct mq_out_free {
    struct mq_out_free *next;
    size_t cap;
};

/* Give the client's output buffer (written out, or abandoned at close) back. */
static void out_release(struct mq_client *cl)
{
    struct mq_server *srv = cl->srv;
    if (cl->out && cl->out_cap <= OUT_KEEP_BYTES) {
        struct mq_out_free *f = (struct mq_out_free *)(void *)cl->out;
        f->next = srv->out_free;
        f->cap = cl->out_cap;
        srv->out_free = f;
        srv->out_free_count++;
    } else {
        free(cl->out);
    }
    cl->out = NULL;
    cl->out_len = cl->out_cap = 0;
}

/* Take a pooled buffer for a client that has none, when there is one. */
static void out_acquire(struct mq_client *cl)
{
    struct mq_server *srv = cl->srv;
    struct mq_out_free *f = srv->out_free;
    if (!f)
        return;
    srv->out_free = f->next;
    cl->out = (uint8_t *)f;
    cl->out_cap = f->cap;
    if (--srv->out_free_count < srv->out_free_low)
        srv->out_free_low = srv->out_free_count;
}

void client_out_trim(struct mq_server *srv, bool all)
{
    /* The pool never went below out_free_low since the last tick: that many buffers
     * served nobody for a whole tick, so the connections that made them are idle. */
    size_t n = all ? srv->out_free_count : srv->out_free_low;
    while (n--) {
        struct mq_out_free *f = srv->out_free;
        srv->out_free = f->next;
        srv->out_free_count--;
        free(f);
    }
    srv->out_free_low = srv->out_free_count;
}

static void mark_dirty(struct mq_client *cl)
{
    /* A closing client may be freed before the next flush: never list it. */
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
    if (!cl->out)
        out_acquire(cl);
    if (buf_reserve(&cl->out, &cl->out_cap, cl->out_len + len, 256)) {
        mq_log(MQ_LOG_ERR, "%s: out of memory for output, closing", cl->peer);
        client_close(cl, "out of memory");
        return;
    }
    memcpy(cl->out + cl->out_len, data, len);
    cl->out_len += len;
    mark_dirty(cl);
}

static void sink_write(void *io, const struct mq_iov *iov, size_t n)
{
    struct mq_client *cl = io;
    if (cl->closing)
        return;
    if (cl->layers && n > 1) {
        /* One packet, one output call: a TLS record or WebSocket frame per piece would
         * cost a header each. */
        uint8_t packet[16384];
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += iov[i].len;
        if (total <= sizeof(packet)) {
            size_t off = 0;
            for (size_t i = 0; i < n; i++) {
                if (iov[i].len)
                    memcpy(packet + off, iov[i].base, iov[i].len);
                off += iov[i].len;
            }
            client_layer_down(cl, cl->layers, packet, total);
            return;
        }
    }
    for (size_t i = 0; i < n && !cl->closing; i++) {
        if (!iov[i].len)
            continue;
        client_layer_down(cl, cl->layers, iov[i].base, iov[i].len);
    }
}

static void sink_close(void *io)
{
    struct mq_client *cl = io;
    if (!cl->close_requested && !cl->closing)
        client_layer_shutdown_below(cl, cl->layers); /* the top layer's goodbye first */
    cl->close_requested = true;
    mark_dirty(cl);
}

static size_t sink_backlog(void *io)
{
    struct mq_client *cl = io;
    return cl->out_len + cl->write_pending_bytes;
}

const struct mq_sink_ops client_sink = {
    .write = sink_write, .close = sink_close, .backlog = sink_backlog};

static void on_close(uv_handle_t *h)
{
    struct mq_client *cl = client_of(h);
    struct mq_server *srv = cl->srv;
    if (cl->conn) {
        srv->broker->now_ms = uv_now(&srv->loop);
        proto_conn_closed(cl->conn, cl->close_reason ? cl->close_reason : "connection closed");
        cl->conn = NULL;
    }
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        srv->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    srv->client_count--;
    if (cl->lctx)
        cl->lctx->clients--;
    for (unsigned i = cl->layers; i-- > 0;)
        cl->layer[i].ops->detach(cl, i);
    free(cl->layer);
    free(cl->in);
    out_release(cl);
    free(cl);
}

void client_close(struct mq_client *cl, const char *reason)
{
    if (cl->closing)
        return;
    cl->closing = true;
    if (!cl->close_reason)
        cl->close_reason = reason;
    /* Pending uv_write requests are cancelled by uv_close; their callbacks free
     * their buffers. */
    uv_close((uv_handle_t *)&cl->tcp, on_close);
}

struct write_req {
    uv_write_t req;
    struct mq_client *cl;
    uint8_t *buf; /* owned */
};

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    struct mq_client *cl = wr->cl;
    free(wr->buf);
    free(wr);
    if (status == UV_ECANCELED)
        return; /* the client is closing; it may already be gone */
    cl->write_pending = false;
    cl->write_pending_bytes = 0;
    if (status < 0) {
        client_close(cl, "write error");
        return;
    }
    /* Messages held back while this client was slow can go now. */
    if (cl->conn) {
        cl->srv->broker->now_ms = uv_now(&cl->srv->loop);
        proto_conn_drained(cl->conn);
    }
    if (cl->out_len || cl->close_requested)
        mark_dirty(cl);
}

/* Write what the client has gathered: straight to the socket when it takes it,
 * otherwise hand the rest to a uv_write and start a fresh buffer. */
static void flush_client(struct mq_client *cl)
{
    if (cl->closing)
        return;
    if (cl->write_pending) {
        /* A close waits for nobody: a peer that stopped reading would otherwise hold
         * its socket and buffers forever (uv_close cancels the pending write). */
        if (cl->close_requested)
            client_close(cl, "closed by broker");
        return;
    }
    if (cl->out_len) {
        uv_buf_t b = uv_buf_init((char *)cl->out, (unsigned)cl->out_len);
        int n = uv_try_write((uv_stream_t *)&cl->tcp, &b, 1);
        if (n == UV_EAGAIN || n == UV_ENOSYS)
            n = 0;
        if (n < 0) {
            client_close(cl, "write error");
            return;
        }
        if ((size_t)n == cl->out_len) {
            out_release(cl);
        } else if (!cl->close_requested) {
            struct write_req *wr = malloc(sizeof(*wr));
            if (!wr) {
                client_close(cl, "out of memory");
                return;
            }
            size_t rest = cl->out_len - (size_t)n;
            memmove(cl->out, cl->out + n, rest);
            wr->cl = cl;
            wr->buf = cl->out;
            cl->out = NULL;
            cl->out_len = cl->out_cap = 0;
            uv_buf_t rb = uv_buf_init((char *)wr->buf, (unsigned)rest);
            if (uv_write(&wr->req, (uv_stream_t *)&cl->tcp, &rb, 1, on_write)) {
                free(wr->buf);
                free(wr);
                client_close(cl, "write error");
                return;
            }
            cl->write_pending = true;
            cl->write_pending_bytes = rest;
        }
    }
    /* A close is carried out after one attempt to send what precedes it (CONNACK
     * refusals, for example): a peer that does not read cannot hold it open. */
    if (cl->close_requested)
        client_close(cl, "closed by broker");
}

void client_flush_all(struct mq_server *srv)
{
    struct mq_client *cl = srv->dirty;
    srv->dirty = NULL;
    while (cl) {
        struct mq_client *next = cl->dirty_next;
        cl->in_dirty = false;
        cl->dirty_next = NULL;
        flush_client(cl);
        cl = next;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct mq_client *cl = client_of(h);
    /* A transport decodes from the shared buffer; only plain TCP reads straight into
     * the tail of a half-received packet. */
    if (!cl->in_len || cl->layers) {
        *buf = uv_buf_init((char *)cl->srv->read_buf, sizeof(cl->srv->read_buf));
        return;
    }
    /* A packet is half here: read the rest straight after it. */
    if (cl->in_cap - cl->in_len < 4096 &&
        buf_reserve(&cl->in, &cl->in_cap, cl->in_len + NET_READ_BUF_SIZE, 256)) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)cl->in + cl->in_len, (unsigned)(cl->in_cap - cl->in_len));
}

/* Keep the unconsumed tail [data+consumed, data+len) for the next read. */
static int keep_tail(struct mq_client *cl, const uint8_t *data, size_t len, size_t consumed,
                     size_t need)
{
    size_t rest = len - consumed;
    if (!rest) {
        cl->in_len = 0;
        if (cl->in_cap > NET_READ_BUF_SIZE * 2 || data != cl->in) {
            free(cl->in);
            cl->in = NULL;
            cl->in_cap = 0;
        }
        return 0;
    }
    if (data == cl->in) {
        memmove(cl->in, cl->in + consumed, rest);
        cl->in_len = rest;
    } else {
        if (buf_reserve(&cl->in, &cl->in_cap, rest, 256))
            return -1;
        memcpy(cl->in, data + consumed, rest);
        cl->in_len = rest;
    }
    /* When the header told us the packet's size, make room for it at once, up to a
     * point: a huge announced size is only believed as the bytes actually arrive. */
    size_t want = need < EAGER_RESERVE_MAX ? need : cl->in_len + NET_READ_BUF_SIZE;
    if (need > cl->in_len && buf_reserve(&cl->in, &cl->in_cap, want, 256))
        return -1;
    return 0;
}

/* Decode every complete packet of data[0..len) and keep the unfinished rest. */
static void feed_proto(struct mq_client *cl, const uint8_t *data, size_t len)
{
    size_t need = 0;
    size_t used = proto_conn_input(cl->conn, data, len, &need);
    if (cl->close_requested) {
        cl->in_len = 0;
        return;
    }
    if (keep_tail(cl, data, len, used, need))
        client_close(cl, "out of memory for input");
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct mq_client *cl = client_of((uv_handle_t *)stream);
    struct mq_server *srv = cl->srv;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            client_close(cl, "connection closed by peer");
        else if (nread == UV_ENOBUFS)
            client_close(cl, "out of memory for input");
        else
            client_close(cl, nread == UV_ECONNRESET ? "connection reset by peer" : "read error");
        return;
    }
    if (!cl->conn || cl->close_requested)
        return;
    srv->broker->now_ms = uv_now(&srv->loop);

    if (cl->layers) {
        cl->layer[0].ops->input(cl, 0, (uint8_t *)buf->base, (size_t)nread);
    } else if ((uint8_t *)buf->base == srv->read_buf) {
        client_deliver(cl, srv->read_buf, (size_t)nread);
    } else {
        /* The bytes landed right after the partial packet kept in cl->in. */
        cl->in_len += (size_t)nread;
        feed_proto(cl, cl->in, cl->in_len);
    }
    if (cl->close_requested && !cl->closing)
        uv_read_stop(stream);
}

void client_deliver(struct mq_client *cl, const uint8_t *data, size_t len)
{
    if (!cl->conn || cl->close_requested || cl->closing || !len)
        return;
    if (!cl->in_len) {
        feed_proto(cl, data, len);
        return;
    }
    /* Complete the kept partial packet first. */
    if (buf_reserve(&cl->in, &cl->in_cap, cl->in_len + len, 256)) {
        client_close(cl, "out of memory for input");
        return;
    }
    memcpy(cl->in + cl->in_len, data, len);
    cl->in_len += len;
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

void client_accept(struct mq_listen_socket *ls)
{
    struct mq_server *srv = ls->srv;
    struct mq_client *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        mq_log(MQ_LOG_ERR, "out of memory accepting a connection on %s", ls->name);
        return;
    }
    cl->srv = srv;
    uv_tcp_init(&srv->loop, &cl->tcp);
    cl->next = srv->clients;
    if (srv->clients)
        srv->clients->prev = cl;
    srv->clients = cl;
    srv->client_count++;
    if (uv_accept((uv_stream_t *)&ls->tcp, (uv_stream_t *)&cl->tcp)) {
        client_close(cl, "accept failed");
        return;
    }
    uv_tcp_nodelay(&cl->tcp, 1);

    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&cl->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, host, sizeof(host));
            port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, host, sizeof(host));
            port = ntohs(a->sin_port);
        }
    }
    snprintf(cl->peer, sizeof(cl->peer), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host,
             port);
    int max = ls->lctx->cfg->max_connections;
    if (max >= 0 && ls->lctx->clients >= (unsigned)max) {
        /* Refused before any byte is read: a full listener costs nothing more. */
        mq_log(MQ_LOG_WARNING, "connection from %s on %s refused: max_connections %d reached",
               cl->peer, ls->name, max);
        client_close(cl, "max_connections reached");
        return;
    }
    cl->lctx = ls->lctx;
    cl->lctx->clients++;
    srv->broker->now_ms = uv_now(&srv->loop);
    cl->conn = &cl->conn_state;
    proto_conn_open(cl->conn, srv->broker, cl, ls->lctx, cl->peer);
    if (ls->depth && !(cl->layer = calloc(ls->depth, sizeof(*cl->layer)))) {
        client_close(cl, "out of memory");
        return;
    }
    for (unsigned i = 0; i < ls->depth; i++) {
        cl->layer[i].ops = ls->stack[i];
        if (cl->layer[i].ops->attach(cl, i, ls->stack_ctx[i])) {
            client_close(cl, "transport set-up failed");
            return;
        }
        cl->layers = (uint8_t)(i + 1); /* detached in on_close */
    }
    if (uv_read_start((uv_stream_t *)&cl->tcp, on_alloc, on_read))
        client_close(cl, "read failed");
}

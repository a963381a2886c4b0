/*
 * tls.c - MQTT over TLS for midge-bench (--tls, --cafile, --resume).
 *
 * The client side of TLS with OpenSSL reading and writing the non-blocking socket
 * itself (SSL_set_fd): net.c's conn_flush and conn_read (and the WebSocket layer's
 * reads) go through tls_write and tls_read when a connection has an SSL. The handshake
 * happens inside the first write and the reads that follow, as in a client library.
 * With --resume every connection offers the session (ticket) of the last connection
 * that got one; tls_prime_session gets a first one with one blocking connection before
 * a run, so that all measured handshakes are resumption attempts.
 */
#include "bench.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static SSL_CTX *ctx;
static SSL_SESSION *last_session; /* the newest ticket the broker gave us (--resume) */
static bool resume;
static int mqtt_version; /* the priming connection's CONNECT: the run's version */

/* A new session (a TLS 1.3 ticket arrives after the handshake): keep the newest. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (!resume)
        return 0;
    if (last_session)
        SSL_SESSION_free(last_session);
    last_session = sess;
    return 1; /* we keep the reference */
}

static const char *ssl_why(void)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    return e ? ERR_reason_error_string(e) : "unexpected end of data";
}

void tls_loop_init(struct loop *l, const struct common_opts *o)
{
    l->tls = true;
    mqtt_version = o->version;
    if (ctx)
        return;
    resume = o->resume;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die(1, "cannot create a TLS context");
    if (o->tls_version && !strcmp(o->tls_version, "tlsv1.2"))
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    else if (o->tls_version && strcmp(o->tls_version, "tlsv1.3"))
        die(EXIT_USAGE, "--tls-version %s: expected tlsv1.2 or tlsv1.3", o->tls_version);
    if (o->cafile) {
        if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1)
            die(EXIT_USAGE, "--cafile %s: %s", o->cafile, ssl_why());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->certfile) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->certfile) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, o->keyfile ? o->keyfile : o->certfile,
                                        SSL_FILETYPE_PEM) != 1)
            die(EXIT_USAGE, "--cert %s: %s", o->certfile, ssl_why());
    }
    /* Partial writes: conn_flush hands over what is left, from wherever it now is. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
}

int tls_conn_start(struct loop *l, struct conn *c)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, c->fd) != 1)
        die(1, "out of memory for TLS");
    SSL_set_connect_state(ssl);
    if (last_session) {
        /* A copy each: OpenSSL's client treats a TLS 1.3 session as single use (it
         * rewrites it once resumed), while the broker accepts a ticket many times. */
        SSL_SESSION *copy = SSL_SESSION_dup(last_session);
        if (!copy)
            die(1, "out of memory for TLS");
        SSL_set_session(ssl, copy);
        SSL_SESSION_free(copy);
    }
    c->ssl = ssl;
    c->tls_done = false;
    (void)l;
    return 0;
}

/* After the handshake: count it, full or resumed. */
static void handshake_check(struct loop *l, struct conn *c)
{
    if (c->tls_done || !SSL_is_init_finished(c->ssl))
        return;
    c->tls_done = true;
    l->tls_handshakes++;
    if (SSL_session_reused(c->ssl))
        l->tls_resumed++;
}

/* What SSL_get_error says, as read/write results: -EAGAIN (with the events the
 * handshake waits for), 0 at the peer's close_notify, or an error. */
static ssize_t tls_result(struct loop *l, struct conn *c, int n)
{
    int e = SSL_get_error(c->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_READ: return -EAGAIN; /* EPOLLIN is always watched */
    case SSL_ERROR_WANT_WRITE: conn_set_events(l, c, EPOLLIN | EPOLLOUT); return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
        if (!ERR_peek_error())
            return errno ? -errno : 0; /* EOF without close_notify reads as EOF */
        /* fall through */
    default:
        if (!l->tls_error[0])
            snprintf(l->tls_error, sizeof(l->tls_error), "TLS: %s", ssl_why());
        ERR_clear_error();
        return -EPROTO;
    }
}

ssize_t tls_read(struct loop *l, struct conn *c, void *buf, size_t cap)
{
    /* Fill buf with as many records as are there: with read-ahead OpenSSL may hold
     * records the socket no longer shows to epoll. */
    size_t have = 0;
    ssize_t rc = 0;
    while (have < cap) {
        ERR_clear_error();
        errno = 0;
        size_t room = cap - have;
        int n = SSL_read(c->ssl, (char *)buf + have, room > INT32_MAX ? INT32_MAX : (int)room);
        if (n <= 0) {
            rc = tls_result(l, c, n);
            break;
        }
        have += (size_t)n;
    }
    handshake_check(l, c);
    /* A write that waited for the handshake can go now. */
    if (c->tls_done && (c->out.len > c->out.off || c->wout.len > c->wout.off))
        conn_mark_dirty(l, c);
    if (have)
        return (ssize_t)have; /* an error or EOF shows at the next read */
    return rc;
}

ssize_t tls_write(struct loop *l, struct conn *c, const void *buf, size_t len)
{
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    handshake_check(l, c);
    if (n > 0)
        return n;
    return tls_result(l, c, n);
}

void tls_conn_free(struct conn *c)
{
    if (!c->ssl)
        return;
    if (c->tls_done && c->fd >= 0)
        SSL_shutdown(c->ssl); /* close_notify, best effort (non-blocking) */
    SSL_free(c->ssl);
    c->ssl = NULL;
    ERR_clear_error();
}

/* One blocking connection: handshake, CONNECT, CONNACK (after which the tickets have
 * been read), DISCONNECT. Dies when it fails: a run whose sessions cannot resume would
 * measure full handshakes under the wrong name. */
void tls_prime_session(struct loop *l, const char *client_id)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&l->addr, sizeof(l->addr)) < 0)
        die(EXIT_CONNECT, "--resume: connect: %s", strerror(errno));
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1)
        die(EXIT_CONNECT, "--resume: TLS handshake: %s", ssl_why());
    struct buf b = {0};
    wire_connect(&b, mqtt_version, client_id, 0, true);
    if (SSL_write(ssl, b.data, (int)b.len) != (int)b.len)
        die(EXIT_PROTOCOL, "--resume: write: %s", ssl_why());
    uint8_t in[512]; /* an MQTT 5 CONNACK carries properties */
    size_t have = 0;
    struct packet pk;
    struct connack ca;
    while (have < sizeof(in)) {
        int n = SSL_read(ssl, in + have, (int)(sizeof(in) - have));
        if (n <= 0)
            die(EXIT_PROTOCOL, "--resume: no CONNACK: %s", ssl_why());
        have += (size_t)n;
        if (wire_parse(in, have, &pk) == 1)
            break;
    }
    if (wire_parse(in, have, &pk) != 1 || pk.type != PKT_CONNACK ||
        wire_parse_connack(&pk, mqtt_version, &ca) < 0 || ca.reason != 0)
        die(EXIT_CONNECT, "--resume: the broker did not accept the priming CONNECT");
    /* TLS 1.3 tickets may follow the CONNACK in the stream: wait briefly for them. */
    for (int tries = 0; !last_session && tries < 20; tries++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        char junk[64];
        if (SSL_read(ssl, junk, sizeof(junk)) <= 0 && SSL_get_error(ssl, -1) != SSL_ERROR_WANT_READ)
            break;
    }
    b.len = b.off = 0;
    wire_simple(&b, PKT_DISCONNECT);
    SSL_write(ssl, b.data, (int)b.len);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    buf_free(&b);
    ERR_clear_error();
    if (!last_session)
        die(EXIT_PROTOCOL, "--resume: the broker gave no session ticket");
}

/* transport_ws_client.c - MQTT over WebSocket as a client (RFC 6455), for a bridge whose
 * address is ws:// or wss:// (networks where only port 443 is open).
 *
 * Owns its cl->layer[].state (struct ws_client). The connection starts with our HTTP/1.1
 * upgrade request (subprotocol mqtt) and the server's 101 answer, checked strictly
 * (Sec-WebSocket-Accept, the subprotocol); after it libwslay's client context frames
 * everything both ways and masks what we send. A bridge moves little traffic compared with
 * the listeners, so this side favours simplicity: each MQTT write is one binary message and
 * received messages are reassembled by libwslay. Never logs: failures end the connection with
 * a close reason the bridge logs.
 * Invariant: wslay is never entered for sending while wslay_event_recv runs (what the bridge
 * writes meanwhile is staged and sent after it).
 */
#include "ws_client.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "midge/buf.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455, 1.3 */
#define WS_HEAD_MAX 8192                               /* the 101 answer's head */
#define WS_MSG_MAX (268435460u + 64) /* an MQTT packet of the largest size, and some */

enum phase { P_HTTP, P_OPEN, P_DONE };

struct ws_client {
    uint8_t level;
    uint8_t phase; /* enum phase */
    bool in_recv;
    wslay_event_context_ptr ev;
    char accept[32]; /* the Sec-WebSocket-Accept we expect */
    uint8_t *head;   /* the answer's head so far */
    size_t head_len, head_cap;
    uint8_t *stage; /* MQTT written before the 101, or while wslay receives */
    size_t stage_len, stage_cap;
    const uint8_t *rx; /* bytes being handed to wslay_event_recv */
    size_t rx_len;
    char reason[200];
};

static void fail(struct mq_client *cl, struct ws_client *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct mq_client *cl, struct ws_client *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof(w->reason), fmt, ap);
    va_end(ap);
    w->phase = P_DONE;
    if (!cl->close_reason)
        cl->close_reason = w->reason;
    client_request_close(cl);
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    struct mq_client *cl = user;
    struct ws_client *w = NULL;
    for (unsigned i = 0; i < cl->layers && !w; i++)
        if (cl->layer[i].ops == &ws_client_transport)
            w = cl->layer[i].state;
    if (!w || !w->rx_len) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->rx_len ? len : w->rx_len;
    memcpy(buf, w->rx, n);
    w->rx += n;
    w->rx_len -= n;
    return (ssize_t)n;
}

static struct ws_client *state_of(struct mq_client *cl, unsigned *level)
{
    for (unsigned i = 0; i < cl->layers; i++)
        if (cl->layer[i].ops == &ws_client_transport) {
            *level = i;
            return cl->layer[i].state;
        }
    return NULL;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)ctx;
    (void)flags;
    struct mq_client *cl = user;
    unsigned level;
    if (!state_of(cl, &level) || cl->closing)
        return (ssize_t)len;
    client_layer_down(cl, level, data, len);
    return (ssize_t)len;
}

static int on_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx;
    (void)user;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    struct mq_client *cl = user;
    unsigned level;
    struct ws_client *w = state_of(cl, &level);
    if (!w || w->phase != P_OPEN || cl->closing || cl->close_requested)
        return;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        snprintf(w->reason, sizeof(w->reason), "the remote closed the WebSocket (status %u)",
                 arg->status_code);
        if (!cl->close_reason)
            cl->close_reason = w->reason;
        return;
    }
    if (arg->opcode != WSLAY_BINARY_FRAME) {
        fail(cl, w, "the remote sent a WebSocket text message (MQTT travels in binary ones)");
        return;
    }
    /* The bridge only reads what it is given. */
    client_layer_up(cl, level, (uint8_t *)(uintptr_t)arg->msg, arg->msg_length);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = on_recv,
    .send_callback = on_send,
    .genmask_callback = on_genmask,
    .on_msg_recv_callback = on_msg,
};

static bool stage(struct ws_client *w, const uint8_t *data, size_t len)
{
    if (buf_reserve(&w->stage, &w->stage_cap, w->stage_len + len, 256))
        return false;
    memcpy(w->stage + w->stage_len, data, len);
    w->stage_len += len;
    return true;
}

/* Queue the staged bytes as one message and send what wslay has. */
static void send_staged(struct mq_client *cl, struct ws_client *w)
{
    if (w->phase != P_OPEN || cl->closing)
        return;
    if (w->stage_len) {
        struct wslay_event_msg m = {WSLAY_BINARY_FRAME, w->stage, w->stage_len};
        if (wslay_event_queue_msg(w->ev, &m)) {
            fail(cl, w, "out of memory for WebSocket output");
            return;
        }
        w->stage_len = 0;
    }
    if (wslay_event_want_write(w->ev) && wslay_event_send(w->ev))
        fail(cl, w, "WebSocket error while sending");
}

static int attach(struct mq_client *cl, unsigned level, void *ctx)
{
    const struct mq_ws_client_target *t = ctx;
    struct ws_client *w = calloc(1, sizeof(*w));
    if (!w)
        return -1;
    w->level = (uint8_t)level;
    cl->layer[level].state = w;
    if (wslay_event_context_client_init(&w->ev, &callbacks, cl)) {
        cl->layer[level].state = NULL;
        free(w);
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(w->ev, WS_MSG_MAX);
    uint8_t nonce[16];
    RAND_bytes(nonce, sizeof(nonce));
    char key[32];
    EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
    /* What the server must answer: base64(SHA-1(key + GUID)). */
    char cat[96];
    snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    EVP_Digest(cat, strlen(cat), digest, &dlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)w->accept, digest, (int)dlen);
    bool default_port = t->port == (t->tls ? 443 : 80);
    bool v6 = strchr(t->host, ':') != NULL;
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s%s%s%s%.0u\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: %s\r\nUser-Agent: midge-bridge\r\n\r\n",
                     t->path, v6 ? "[" : "", t->host, v6 ? "]" : "", default_port ? "" : ":",
                     default_port ? 0u : (unsigned)t->port, key, t->protocol);
    if (n <= 0 || (size_t)n >= sizeof(req)) {
        fail(cl, w, "the WebSocket request is too long (path or host)");
        return 0;
    }
    client_layer_down(cl, level, (const uint8_t *)req, (size_t)n);
    return 0;
}

static void detach(struct mq_client *cl, unsigned level)
{
    struct ws_client *w = cl->layer[level].state;
    if (!w)
        return;
    if (cl->close_reason == w->reason)
        cl->close_reason = "WebSocket error";
    wslay_event_context_free(w->ev);
    free(w->head);
    free(w->stage);
    free(w);
    cl->layer[level].state = NULL;
}

/* The 101 answer. Returns the bytes after its head, or -1 after failing the connection. */
static long take_head(struct mq_client *cl, struct ws_client *w, const uint8_t *raw, size_t len)
{
    if (buf_reserve(&w->head, &w->head_cap, w->head_len + len + 1, 512)) {
        fail(cl, w, "out of memory for the WebSocket answer");
        return -1;
    }
    memcpy(w->head + w->head_len, raw, len);
    w->head_len += len;
    w->head[w->head_len] = '\0';
    char *end = memmem(w->head, w->head_len, "\r\n\r\n", 4);
    if (!end) {
        if (w->head_len <= WS_HEAD_MAX)
            return (long)len; /* all of it is head so far */
        fail(cl, w, "the WebSocket answer's head is over %u bytes", WS_HEAD_MAX);
        return -1;
    }
    size_t head_len = (size_t)(end - (char *)w->head) + 4;
    char why[160];
    if (ws_client_check_answer((const char *)w->head, head_len, w->accept, why, sizeof(why))) {
        fail(cl, w, "%s", why);
        return -1;
    }
    w->phase = P_OPEN;
    /* What came after the head is frames already: the head ended in this read, so those
     * bytes are the last `rest` of it. */
    size_t rest = w->head_len - head_len;
    size_t from_raw = rest < len ? rest : len;
    free(w->head);
    w->head = NULL;
    w->head_len = w->head_cap = 0;
    return (long)(len - from_raw);
}

static int input(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len)
{
    struct ws_client *w = cl->layer[level].state;
    if (!w || w->phase == P_DONE || !len)
        return 0;
    if (w->phase == P_HTTP) {
        long used = take_head(cl, w, raw, len);
        if (used < 0)
            return -1;
        if (w->phase != P_OPEN)
            return 0;
        raw += used;
        len -= (size_t)used;
        send_staged(cl, w); /* the CONNECT written before the answer */
        if (w->phase != P_OPEN)
            return -1;
    }
    if (!len)
        return 0;
    w->rx = raw;
    w->rx_len = len;
    w->in_recv = true;
    int rc = wslay_event_recv(w->ev);
    w->in_recv = false;
    w->rx_len = 0;
    if (cl->closing || w->phase != P_OPEN)
        return -1;
    if (rc) {
        fail(cl, w, "the remote sent a bad WebSocket frame");
        return -1;
    }
    send_staged(cl, w);
    if (wslay_event_get_close_received(w->ev) && !cl->close_requested) {
        if (!cl->close_reason)
            cl->close_reason = "the remote closed the WebSocket";
        client_request_close(cl);
    }
    return 0;
}

static int output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    struct ws_client *w = cl->layer[level].state;
    if (!w || w->phase == P_DONE || cl->closing)
        return 0;
    if (!stage(w, data, len)) {
        fail(cl, w, "out of memory for WebSocket output");
        return -1;
    }
    if (w->phase == P_OPEN && !w->in_recv)
        send_staged(cl, w);
    return 0;
}

static void shutdown_layer(struct mq_client *cl, unsigned level)
{
    struct ws_client *w = cl->layer[level].state;
    if (w && w->phase == P_OPEN && !cl->closing) {
        send_staged(cl, w);
        if (w->phase == P_OPEN) {
            wslay_event_queue_close(w->ev, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
            wslay_event_send(w->ev);
        }
        w->phase = P_DONE;
    }
    client_layer_shutdown_below(cl, level);
}

static void ctx_free(void *ctx)
{
    (void)ctx;
}

const struct mq_transport_ops ws_client_transport = {
    .name = "ws-client",
    .attach = attach,
    .input = input,
    .output = output,
    .shutdown = shutdown_layer,
    .detach = detach,
    .ctx_free = ctx_free,
};

/* transport_ws.c - MQTT over WebSocket (RFC 6455) for `protocol websockets` listeners,
 * over TCP (ws://) or as the layer above TLS (wss://): it reads and writes only through
 * client_layer_up/down, so it never knows which.
 *
 * A connection starts in HTTP: one strictly parsed request, answered with the embedded
 * page, /metrics, /healthz or an error (then closed), or upgraded with 101. After the
 * upgrade, sending is libwslay's event API throughout: proto's output of a loop turn is
 * staged and queued as one binary message at the start of the next turn, before client.c
 * writes (an idle handle), so a subscriber taking many small packets costs one wslay
 * allocation and frame per turn, not per packet. Receiving is split: well-formed data
 * frames are parsed here and unmasked 8 bytes at a time in place (libwslay unmasks a byte
 * at a time; see ws_feed and docs/websocket.md, "Throughput"), so the MQTT bytes of one
 * read reach proto in one call; control frames and every frame RFC 6455 forbids go to
 * libwslay, which answers pings, runs the close handshake and refuses bad frames. Owns
 * only per-connection state (struct ws_conn); never frees the client, only asks client.c
 * to close it. Invariant: wslay is never entered for sending while wslay_event_recv runs.
 */
#include "ws.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "bridge/bridge.h"
#include "http.h"
#include "midge/admin.h"
#include "midge/buf.h"
#include "midge/config.h"
#include "midge/log.h"
#include "midge/sys.h"

#define MQTT_MAX_PACKET 268435460u  /* 256 MiB remaining length + 5 header bytes */
#define WS_FRAME_SLACK (64u * 1024) /* a full-size packet may share a frame with small ones */
#define WS_DIRECT_MIN (16u * 1024)  /* output pieces this large skip the staging copy */
#define WS_STAGE_MAX (64u * 1024)   /* staged output past this goes out at a packet end */

/* What the next received bytes are (ws_feed). */
enum rx_mode {
    RX_HEADER, /* the start of a frame */
    RX_DATA,   /* payload of a binary or continuation frame: unmasked here, to proto */
    RX_WSLAY,  /* the rest of a frame libwslay handles (control, or one it will refuse) */
};

enum ws_phase {
    WS_HTTP, /* reading the request head */
    WS_OPEN, /* upgraded: WebSocket frames */
    WS_DONE, /* response or close frame sent; input ignored until the socket closes */
};

struct ws_conn {
    struct mq_client *cl;  /* borrowed; NULL once detached */
    uint8_t level;         /* in the connection's layers (1 over TLS) */
    bool shutdown_pending; /* the broker closed us during input: close frame after it */
    enum ws_phase phase;
    char *peer;       /* owned: the peer's name from X-Forwarded-For (proto borrows it) */
    char reason[112]; /* why the connection ended, for proto's closing log line */

    /* HTTP: the request head when it spans reads (else parsed straight from the read). */
    uint8_t *req;
    size_t req_len;

    /* Deferred work, run once at the start of the next loop turn (idle handles run right
     * before the prepare handle that writes gathered output, and keep the loop from
     * blocking meanwhile): send the output staged during this turn as one message, and
     * close after a response or a close frame has had its first write. */
    uv_idle_t idle;
    bool idle_init;
    bool close_pending;

    /* WebSocket input (see ws_feed): where the frame being received stands. */
    wslay_event_context_ptr ev;
    const uint8_t *rx; /* bytes being fed to wslay_event_recv */
    size_t rx_len;
    bool in_recv;       /* processing a read: its answers are staged with the rest */
    bool rx_failed;     /* we queued a close: drop whatever follows */
    bool rx_in_msg;     /* a fragmented data message is open (no FIN yet) */
    uint8_t rx_mode;    /* enum rx_mode */
    uint8_t rx_hdr_len; /* bytes in rx_hdr: a frame header split across reads */
    uint8_t rx_phase;   /* position of the next payload byte in the mask key, 0..3 */
    uint8_t rx_hdr[14]; /* longest header: 2 + 8 length bytes + 4 mask bytes */
    uint8_t rx_mask[8]; /* the data frame's masking key, twice */
    uint64_t rx_left;   /* RX_DATA: payload bytes to come; RX_WSLAY: frame bytes to come */
    uint64_t msg_len;   /* bytes of the message being received (all its frames) */
    uint64_t max_len;   /* frame and message size limit */
    const char *fail_text;

    /* WebSocket output: whole packets (a batch of them) not yet queued as a message. */
    uint8_t *stage;
    size_t stage_len, stage_cap;
};

/* ---- small helpers ---------------------------------------------------------------- */

static void ws_free(struct ws_conn *ws)
{
    if (ws->ev)
        wslay_event_context_free(ws->ev);
    free(ws->req);
    free(ws->stage);
    free(ws->peer);
    free(ws);
}

static void on_idle_closed(uv_handle_t *h)
{
    ws_free(h->data);
}

static void ws_pump(struct mq_client *cl, struct ws_conn *ws, int recv_rc);
static void send_close(struct mq_client *cl, struct ws_conn *ws);

static void on_idle(uv_idle_t *h)
{
    struct ws_conn *ws = h->data;
    uv_idle_stop(h);
    struct mq_client *cl = ws->cl;
    if (!cl || cl->closing)
        return;
    if (ws->phase == WS_OPEN)
        ws_pump(cl, ws, 0);
    /* A close is asked for only now, after the flush that followed the response: the
     * response has had a write of its own, and the client.c sink close gives what the
     * socket did not take then one more write before closing. */
    if (ws->close_pending && !uv_is_active((uv_handle_t *)h))
        client_request_close(cl);
}

/* Run on_idle at the start of the next loop turn. -1 when the handle cannot be set up. */
static int defer(struct mq_client *cl, struct ws_conn *ws)
{
    if (!ws->idle_init) {
        if (uv_idle_init(&cl->srv->loop, &ws->idle))
            return -1;
        ws->idle.data = ws;
        ws->idle_init = true;
    }
    if (!uv_is_active((uv_handle_t *)&ws->idle))
        uv_idle_start(&ws->idle, on_idle);
    return 0;
}

static void close_after_flush(struct mq_client *cl, struct ws_conn *ws)
{
    ws->phase = WS_DONE;
    ws->close_pending = true;
    if (!cl->close_reason && ws->reason[0])
        cl->close_reason = ws->reason;
    if (defer(cl, ws))
        client_request_close(cl);
}

static bool span_eq(const struct http_span *s, const char *z)
{
    return s->n == strlen(z) && memcmp(s->p, z, s->n) == 0;
}

/* ---- trusted proxies and origins --------------------------------------------------- */

struct ip_addr {
    int family;
    uint8_t b[16];
};

static bool parse_ip(const char *s, size_t n, struct ip_addr *a)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (!n || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET, tmp, a->b) == 1) {
        a->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, a->b) == 1) {
        a->family = AF_INET6;
        return true;
    }
    return false;
}

/* True when a matches one entry ("ADDR" or "ADDR/PREFIX") of the whitespace- or
 * comma-separated list (validated by config.c). */
static bool ip_in_list(const char *list, const struct ip_addr *a)
{
    const char *p = list;
    while (p && *p) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (!n)
            break;
        const char *slash = memchr(p, '/', n);
        size_t alen = slash ? (size_t)(slash - p) : n;
        struct ip_addr net;
        if (parse_ip(p, alen, &net) && net.family == a->family) {
            unsigned bits = a->family == AF_INET ? 32 : 128;
            unsigned prefix = slash ? (unsigned)strtoul(slash + 1, NULL, 10) : bits;
            if (prefix > bits)
                prefix = bits;
            unsigned full = prefix / 8, rest = prefix % 8;
            bool match = memcmp(net.b, a->b, full) == 0;
            if (match && rest) {
                uint8_t mask = (uint8_t)(0xff << (8 - rest));
                match = (net.b[full] & mask) == (a->b[full] & mask);
            }
            if (match)
                return true;
        }
        p += n;
    }
    return false;
}

static bool peer_ip(struct mq_client *cl, struct ip_addr *a)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(cl->fd, (struct sockaddr *)&ss, &len))
        return false;
    if (ss.ss_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->b, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return true;
    }
    if (ss.ss_family == AF_INET6) {
        a->family = AF_INET6;
        memcpy(a->b, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        return true;
    }
    return false;
}

/* X-Forwarded-For from a trusted proxy names the real client: the rightmost address
 * that is not itself a trusted proxy. The peer becomes "CLIENT via PROXY" for logs. */
static void apply_forwarded_for(struct mq_client *cl, struct ws_conn *ws,
                                const struct http_request *req)
{
    const char *proxies = client_lctx(cl) ? client_lctx(cl)->cfg->http_trusted_proxies : NULL;
    size_t count = 0;
    const struct http_span *xff = http_header(req, "X-Forwarded-For", &count);
    struct ip_addr peer;
    if (!proxies || !xff || count != 1 || !peer_ip(cl, &peer) || !ip_in_list(proxies, &peer))
        return;
    const char *begin = xff->p, *end = xff->p + xff->n;
    struct http_span chosen = {NULL, 0};
    while (end > begin) {
        const char *comma = end;
        while (comma > begin && comma[-1] != ',')
            comma--;
        const char *a = comma, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        struct ip_addr ip;
        if (!parse_ip(a, (size_t)(b - a), &ip)) {
            mq_log(MQ_LOG_WARNING, "http: %s: ignoring a malformed X-Forwarded-For",
                   client_peer(cl));
            return;
        }
        chosen = (struct http_span){a, (size_t)(b - a)};
        if (!ip_in_list(proxies, &ip))
            break;
        end = comma > begin ? comma - 1 : begin;
    }
    if (!chosen.n)
        return;
    /* The new name replaces the old one in every log line, proto's included: proto
     * borrows conn->peer, so it points at this layer's copy, kept until ws_detach (after
     * proto_conn_closed). */
    const char *old = client_peer(cl);
    size_t n = chosen.n + strlen(" via ") + strlen(old) + 1;
    char *name = malloc(n);
    if (!name || !cl->conn_open) {
        free(name);
        return; /* the connection keeps its socket's name */
    }
    snprintf(name, n, "%.*s via %s", (int)chosen.n, chosen.p, old);
    free(ws->peer);
    ws->peer = name;
    cl->conn.peer = name;
}

/* Origin allow-list (websockets_origins): unset allows every origin; requests without
 * an Origin (non-browser clients, which could send any) and same-origin requests (the
 * embedded page) are always allowed. */
static bool origin_allowed(struct mq_client *cl, const struct http_request *req)
{
    const char *list = client_lctx(cl) ? client_lctx(cl)->cfg->websockets_origins : NULL;
    const struct http_span *origin = http_header(req, "Origin", NULL);
    if (!list || !origin)
        return true;
    const struct http_span *host = http_header(req, "Host", NULL);
    for (int tls = 0; host && tls < 2; tls++) {
        size_t sn = tls ? 8 : 7;
        if (origin->n == sn + host->n &&
            !strncasecmp(origin->p, tls ? "https://" : "http://", sn) &&
            !strncasecmp(origin->p + sn, host->p, host->n))
            return true;
    }
    const char *p = list;
    while (*p) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (!n)
            break;
        size_t m = n;
        while (m > 1 && p[m - 1] == '/')
            m--;
        if (origin->n == m && !strncasecmp(origin->p, p, m))
            return true;
        p += n;
    }
    return false;
}

/* ---- HTTP responses ----------------------------------------------------------------- */

struct response {
    int status;
    const char *content_type;
    const uint8_t *body;
    size_t body_len;
    const char *extra; /* more header lines, each ending in CRLF, or NULL */
};

static void respond(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req,
                    const struct response *r)
{
    char head[768];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "%s"
                     "Connection: close\r\n\r\n",
                     r->status, http_status_text(r->status), r->content_type, r->body_len,
                     r->extra ? r->extra : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        client_close(cl, "http: response head too long");
        return;
    }
    client_layer_down(cl, ws->level, (const uint8_t *)head, (size_t)n);
    bool head_only = req && span_eq(&req->method, "HEAD");
    if (!head_only && r->body_len)
        client_layer_down(cl, ws->level, r->body, r->body_len);
    if (req)
        snprintf(ws->reason, sizeof(ws->reason), "HTTP %.*s %.*s %d", (int)req->method.n,
                 req->method.p, (int)(req->path.n > 60 ? 60 : req->path.n), req->path.p, r->status);
    else
        snprintf(ws->reason, sizeof(ws->reason), "HTTP %d", r->status);
    close_after_flush(cl, ws);
}

/* A refusal: a plain-text body saying why, and one log line naming the peer. */
static void refuse(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req,
                   int status, const char *what, const char *why, const char *extra)
{
    mq_log(MQ_LOG_NOTICE, "http: %s: %s: %s", client_peer(cl), what, why);
    char body[256];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, http_status_text(status), why);
    struct response r = {status, "text/plain; charset=utf-8", (const uint8_t *)body,
                         n > 0 ? ((size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1) : 0,
                         extra};
    respond(cl, ws, req, &r);
}

static void serve_metrics(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req)
{
    struct mq_server *srv = cl->srv;
    const struct mq_sys *s = srv->sys_interval ? &srv->sys_state : NULL;
    size_t cap = 16384;
    char *buf = NULL;
    for (int tries = 0; tries < 4; tries++) {
        char *nb = realloc(buf, cap);
        if (!nb)
            break;
        buf = nb;
        size_t n = sys_format_metrics(srv->broker, s, buf, cap);
        n += bridges_format_metrics(srv, buf + (n < cap ? n : cap), n < cap ? cap - n : 0);
        if (n < cap) {
            struct response r = {200, "text/plain; version=0.0.4; charset=utf-8",
                                 (const uint8_t *)buf, n, NULL};
            respond(cl, ws, req, &r);
            free(buf);
            return;
        }
        cap = n + 1;
    }
    free(buf);
    refuse(cl, ws, req, 500, "internal error", "out of memory for /metrics", NULL);
}

static void serve_get(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req)
{
    const struct http_span *path = &req->path;
    if (span_eq(path, "/metrics")) {
        serve_metrics(cl, ws, req);
        return;
    }
    if (span_eq(path, "/healthz")) {
        bool up = !cl->srv->stopping;
        struct response r = {up ? 200 : 503, "text/plain; charset=utf-8",
                             (const uint8_t *)(up ? "ok\n" : "stopping\n"), up ? 3 : 9, NULL};
        respond(cl, ws, req, &r);
        return;
    }
    const struct http_asset *a = http_asset_find(path);
    if (a) {
        struct response r = {200, a->content_type, a->data, a->len, NULL};
        respond(cl, ws, req, &r);
        return;
    }
    if (span_eq(path, "/mqtt")) {
        static const char msg[] = "426 Upgrade Required: this is the MQTT over WebSocket "
                                  "endpoint; connect with an MQTT client (subprotocol mqtt)\n";
        struct response r = {426, "text/plain; charset=utf-8", (const uint8_t *)msg,
                             sizeof(msg) - 1, "Upgrade: websocket\r\n"};
        respond(cl, ws, req, &r);
        return;
    }
    static const char nf[] = "404 Not Found\n";
    struct response r = {404, "text/plain; charset=utf-8", (const uint8_t *)nf, sizeof(nf) - 1,
                         NULL};
    respond(cl, ws, req, &r);
}

/* ---- WebSocket ---------------------------------------------------------------------- */

static ssize_t on_wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                             void *user)
{
    (void)flags;
    struct ws_conn *ws = user;
    if (!ws->rx_len) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->rx_len ? len : ws->rx_len;
    memcpy(buf, ws->rx, n);
    ws->rx += n;
    ws->rx_len -= n;
    return (ssize_t)n;
}

static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                             int flags, void *user)
{
    (void)ctx;
    (void)flags;
    struct ws_conn *ws = user;
    if (ws->cl)
        client_layer_down(ws->cl, ws->level, data, len);
    return (ssize_t)len;
}

/* End the WebSocket from our side: close frame with code, no more input. */
static void ws_fail(struct ws_conn *ws, uint16_t code, const char *text)
{
    if (ws->rx_failed)
        return;
    ws->rx_failed = true;
    ws->fail_text = text;
    wslay_event_queue_close(ws->ev, code, (const uint8_t *)text, strlen(text));
    wslay_event_shutdown_read(ws->ev);
}

static const struct wslay_event_callbacks wslay_callbacks = {
    .recv_callback = on_wslay_recv,
    .send_callback = on_wslay_send,
};

static const char *close_code_text(uint16_t code)
{
    switch (code) {
    case 1000: return "normal closure";
    case 1001: return "going away";
    case 1002: return "protocol error";
    case 1003: return "unsupported data";
    case 1005: return "no status";
    case 1007: return "invalid payload data";
    case 1008: return "policy violation";
    case 1009: return "message too big";
    case 1011: return "internal error";
    default: return "close";
    }
}

/* Queue staged output as one binary message. */
static int queue_bytes(struct mq_client *cl, struct ws_conn *ws, const uint8_t *data, size_t len)
{
    if (!len)
        return 0;
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, data, len};
    int r = wslay_event_queue_msg(ws->ev, &m);
    if (r == 0 || r == WSLAY_ERR_NO_MORE_MSG) /* closing: the output is moot */
        return 0;
    client_close(cl, "out of memory for WebSocket output");
    return -1;
}

static int queue_stage(struct mq_client *cl, struct ws_conn *ws)
{
    int r = queue_bytes(cl, ws, ws->stage, ws->stage_len);
    ws->stage_len = 0;
    return r;
}

/* Send what wslay has queued and act on a close that was sent (answered or ours). */
static void ws_pump(struct mq_client *cl, struct ws_conn *ws, int recv_rc)
{
    if (cl->closing || ws->phase != WS_OPEN)
        return;
    /* Staged bytes are whole packets: each output call brings whole packets. */
    if (ws->stage_len && queue_stage(cl, ws))
        return;
    int send_rc = wslay_event_send(ws->ev);
    if (recv_rc < 0 || send_rc < 0) {
        snprintf(ws->reason, sizeof(ws->reason), "websocket: %s",
                 recv_rc == WSLAY_ERR_NOMEM || send_rc == WSLAY_ERR_NOMEM ? "out of memory"
                                                                          : "protocol error");
        close_after_flush(cl, ws);
        return;
    }
    if (!wslay_event_get_close_sent(ws->ev))
        return;
    uint16_t code = wslay_event_get_status_code_sent(ws->ev);
    if (wslay_event_get_close_received(ws->ev))
        snprintf(ws->reason, sizeof(ws->reason), "websocket closed by peer (%u %s)",
                 wslay_event_get_status_code_received(ws->ev),
                 close_code_text(wslay_event_get_status_code_received(ws->ev)));
    else
        snprintf(ws->reason, sizeof(ws->reason), "websocket %s (close %u%s%s)",
                 close_code_text(code), code, ws->fail_text ? ": " : "",
                 ws->fail_text ? ws->fail_text : "");
    close_after_flush(cl, ws);
}

/* XOR n bytes of src into dst (dst <= src; they may overlap) with the masking key
 * (key2: the 4 key bytes twice) from key position phase, 8 bytes per step: libwslay
 * unmasks a byte at a time, which cost a WebSocket publisher a third of its throughput.
 * Returns the phase after the last byte. */
static unsigned unmask_move(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key2[8],
                            unsigned phase)
{
    uint32_t k4;
    memcpy(&k4, key2 + phase, 4);             /* the key as it lines up with src[0..4) */
    uint64_t k8 = k4 * 0x0000000100000001ull; /* the same 4 bytes twice, either byte order */
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v; /* loaded before the store: dst + 8 never passes unread bytes */
        memcpy(&v, src + i, 8);
        v ^= k8;
        memcpy(dst + i, &v, 8);
    }
    if (i + 4 <= n) {
        uint32_t v;
        memcpy(&v, src + i, 4);
        v ^= k4;
        memcpy(dst + i, &v, 4);
        i += 4;
    }
    for (unsigned j = phase; i < n; i++, j++)
        dst[i] = src[i] ^ key2[j];
    return (unsigned)((phase + n) & 3);
}

/* A frame header at p[0..n): its size with the masking key, or 0 when incomplete. */
struct frame_head {
    uint8_t b0;         /* FIN, RSV1-3, opcode */
    bool masked;        /* MASK bit */
    bool minimal;       /* the length is in its shortest form, below 2^63 */
    uint64_t len;       /* payload length */
    const uint8_t *key; /* masking key (in p), when masked */
};

static size_t parse_head(const uint8_t *p, size_t n, struct frame_head *h)
{
    if (n < 2)
        return 0;
    unsigned l7 = p[1] & 0x7f;
    size_t size = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (p[1] & 0x80 ? 4 : 0);
    if (n < size)
        return 0;
    h->b0 = p[0];
    h->masked = p[1] & 0x80;
    if (l7 < 126) {
        h->len = l7;
        h->minimal = true;
    } else if (l7 == 126) {
        h->len = (uint64_t)p[2] << 8 | p[3];
        h->minimal = h->len >= 126;
    } else {
        h->len = 0;
        for (int i = 0; i < 8; i++)
            h->len = h->len << 8 | p[2 + i];
        h->minimal = h->len > 0xffff && !(h->len >> 63);
    }
    h->key = h->masked ? p + size - 4 : NULL;
    return size;
}

/* Hand bytes of a control (or refused) frame to libwslay, which answers pings, runs the
 * close handshake and refuses what RFC 6455 forbids, exactly as when it parsed every
 * frame. Returns wslay_event_recv's result. */
static int feed_wslay(struct ws_conn *ws, const uint8_t *p, size_t n)
{
    ws->rx = p;
    ws->rx_len = n;
    int rc = wslay_event_recv(ws->ev);
    ws->rx = NULL;
    ws->rx_len = 0; /* after a close, whatever followed it is dropped */
    return rc;
}

/* A complete frame header: decide who takes the frame. Data frames that are well formed
 * (masked, no RSV bit, length in shortest form) are ours; every other frame goes to
 * libwslay whole, header included (hdr_from_ws: the header is in rx_hdr, already
 * consumed from the read, so it is fed now). */
static int start_frame(struct ws_conn *ws, const struct frame_head *h, size_t size,
                       bool hdr_from_ws)
{
    unsigned op = h->b0 & 0x0f;
    bool data =
        op == WSLAY_BINARY_FRAME || op == WSLAY_CONTINUATION_FRAME || op == WSLAY_TEXT_FRAME;
    if (!data || !h->masked || !h->minimal || (h->b0 & 0x70)) {
        ws->rx_mode = RX_WSLAY;
        uint64_t total = h->len > UINT64_MAX - size ? UINT64_MAX : h->len + size;
        if (!hdr_from_ws) {
            ws->rx_left = total; /* the header is still in the read: wslay gets it there */
            return 0;
        }
        ws->rx_left = total - size;
        return feed_wslay(ws, ws->rx_hdr, size);
    }
    /* The rules libwslay applied to data frames. */
    if (op == WSLAY_CONTINUATION_FRAME && !ws->rx_in_msg) {
        ws_fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "continuation frame without a message");
        return 0;
    }
    if (op != WSLAY_CONTINUATION_FRAME && ws->rx_in_msg) {
        ws_fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "new message inside a fragmented one");
        return 0;
    }
    if (op == WSLAY_TEXT_FRAME) {
        ws_fail(ws, WSLAY_CODE_UNSUPPORTED_DATA, "MQTT needs binary frames");
        return 0;
    }
    ws->msg_len = op == WSLAY_BINARY_FRAME ? h->len : ws->msg_len + h->len;
    if (h->len > ws->max_len || ws->msg_len > ws->max_len) {
        ws_fail(ws, WSLAY_CODE_MESSAGE_TOO_BIG, "message too big");
        return 0;
    }
    ws->rx_in_msg = !(h->b0 & 0x80);
    memcpy(ws->rx_mask, h->key, 4);
    memcpy(ws->rx_mask + 4, h->key, 4);
    ws->rx_phase = 0;
    ws->rx_left = h->len;
    ws->rx_mode = h->len ? RX_DATA : RX_HEADER;
    return 0;
}

/* One read after the upgrade. Data frames are parsed here and their payloads unmasked
 * in place, moved to the front of raw, so that the MQTT bytes of the whole read reach
 * proto in one call (as over TCP) without a copy or a buffer per connection; control
 * frames, and frames RFC 6455 forbids, go to libwslay (see docs/websocket.md,
 * "Throughput"). raw is the shared read buffer (or the TLS layer's plaintext in it). */
static void ws_feed(struct mq_client *cl, struct ws_conn *ws, uint8_t *raw, size_t len)
{
    ws->in_recv = true;
    uint8_t *w = raw;
    const uint8_t *r = raw, *end = raw + len;
    int rc = 0;
    bool reading = wslay_event_get_read_enabled(ws->ev); /* changes only in wslay calls */
    while (r < end && reading && rc >= 0 && !ws->rx_failed) {
        size_t avail = (size_t)(end - r);
        if (ws->rx_mode == RX_DATA) {
            size_t k = ws->rx_left < avail ? (size_t)ws->rx_left : avail;
            ws->rx_phase = (uint8_t)unmask_move(w, r, k, ws->rx_mask, ws->rx_phase);
            w += k;
            r += k;
            ws->rx_left -= k;
            if (!ws->rx_left)
                ws->rx_mode = RX_HEADER;
            continue;
        }
        if (ws->rx_mode == RX_WSLAY) {
            size_t k = ws->rx_left < avail ? (size_t)ws->rx_left : avail;
            rc = feed_wslay(ws, r, k);
            reading = wslay_event_get_read_enabled(ws->ev);
            r += k;
            ws->rx_left -= k;
            if (!ws->rx_left)
                ws->rx_mode = RX_HEADER;
            continue;
        }
        struct frame_head h;
        size_t size;
        if (!ws->rx_hdr_len && (size = parse_head(r, avail, &h))) {
            rc = start_frame(ws, &h, size, false);
            if (ws->rx_mode != RX_WSLAY)
                r += size; /* a frame for wslay keeps its header in the read */
            continue;
        }
        /* A header split across reads (at most 14 bytes): gather it in rx_hdr. */
        size_t had = ws->rx_hdr_len, take = sizeof(ws->rx_hdr) - had;
        if (take > avail)
            take = avail;
        memcpy(ws->rx_hdr + had, r, take);
        size = parse_head(ws->rx_hdr, had + take, &h);
        if (!size) {
            ws->rx_hdr_len = (uint8_t)(had + take);
            r += take;
            continue;
        }
        ws->rx_hdr_len = 0;
        r += size - had;
        rc = start_frame(ws, &h, size, true);
        reading = wslay_event_get_read_enabled(ws->ev);
    }
    if (w > raw)
        client_layer_up(cl, ws->level, raw, (size_t)(w - raw)); /* answers are staged */
    ws->in_recv = false;
    if (ws->shutdown_pending) {
        ws->shutdown_pending = false;
        send_close(cl, ws);
        client_layer_shutdown_below(cl, ws->level);
    }
    /* Control frames (pong, close) and answers before a close go out now; the rest waits
     * for the next turn so that everything this connection gets meanwhile shares one
     * message (one wslay allocation and frame for many MQTT packets). */
    if (rc < 0 || wslay_event_want_write(ws->ev) || cl->close_requested || defer(cl, ws))
        ws_pump(cl, ws, rc);
}

static void upgrade(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req,
                    uint8_t *rest, size_t rest_len)
{
    const char *bad = NULL;
    size_t n = 0;
    const struct http_span *v;
    int status = 400;
    const char *extra = NULL;

    if (!span_eq(&req->method, "GET"))
        bad = "a WebSocket upgrade must use GET";
    else if (req->minor_version != 1)
        bad = "a WebSocket upgrade needs HTTP/1.1";
    else if (!(v = http_header(req, "Upgrade", &n)) || n != 1 || !http_list_has(v, "websocket"))
        bad = "Upgrade header is not websocket";
    else if (!(v = http_header(req, "Connection", NULL)) || !http_list_has(v, "upgrade"))
        bad = "Connection header lacks Upgrade";
    else if (!(v = http_header(req, "Sec-WebSocket-Version", &n)) || n != 1 || !span_eq(v, "13")) {
        bad = v ? "unsupported Sec-WebSocket-Version (13 is supported)"
                : "missing Sec-WebSocket-Version";
        extra = "Sec-WebSocket-Version: 13\r\n";
    } else if (!(v = http_header(req, "Sec-WebSocket-Key", &n)))
        bad = "missing Sec-WebSocket-Key";
    else if (n != 1 || !http_ws_key_valid(v))
        bad = "invalid Sec-WebSocket-Key (not 16 bytes in base64)";
    else if (!origin_allowed(cl, req)) {
        status = 403;
        bad = "origin not allowed (websockets_origins)";
    }
    if (bad) {
        refuse(cl, ws, req, status, status == 403 ? "forbidden" : "bad request", bad, extra);
        return;
    }
    const struct http_span *key = v;

    /* Subprotocol: the first of mqtt / mqttv3.1 the client offers, in its order (MQTT.js
     * sends "mqtt", Paho JS "mqtt" or "mqttv3.1"); none offered is accepted like
     * Mosquitto does, but an offer without either is refused. */
    struct http_span proto = {NULL, 0};
    bool offered = false;
    for (size_t i = 0; i < req->header_count && !proto.n; i++) {
        const struct http_header *h = &req->headers[i];
        if (!http_span_ieq(&h->name, "Sec-WebSocket-Protocol"))
            continue;
        offered = true;
        const char *p = h->value.p, *end = h->value.p + h->value.n;
        while (p < end && !proto.n) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end, *a = p, *b = e;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            struct http_span tok = {a, (size_t)(b - a)};
            if (span_eq(&tok, "mqtt") || span_eq(&tok, "mqttv3.1"))
                proto = tok;
            p = comma ? comma + 1 : end;
        }
    }
    if (offered && !proto.n) {
        refuse(cl, ws, req, 400, "bad request",
               "no supported WebSocket subprotocol offered (mqtt, mqttv3.1)", NULL);
        return;
    }

    uint64_t limit = client_lctx(cl) ? client_lctx(cl)->cfg->websockets_max_frame_size : 0;
    if (!limit) {
        uint32_t mps = cl->srv->cfg->max_packet_size;
        limit = (uint64_t)(mps ? mps : MQTT_MAX_PACKET) + WS_FRAME_SLACK;
    }
    if (wslay_event_context_server_init(&ws->ev, &wslay_callbacks, ws)) {
        ws->ev = NULL;
        client_close(cl, "out of memory for WebSocket");
        return;
    }
    /* Payload streams to client_deliver, which keeps partial MQTT packets itself: wslay
     * never holds a whole message, and checks each frame against the limit. */
    wslay_event_config_set_no_buffering(ws->ev, 1);
    wslay_event_config_set_max_recv_msg_length(ws->ev, limit);
    ws->max_len = limit;

    char accept[29];
    http_ws_accept(key, accept);
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n"
                      "%s%.*s%s"
                      "\r\n",
                      accept, proto.n ? "Sec-WebSocket-Protocol: " : "", (int)proto.n,
                      proto.p ? proto.p : "", proto.n ? "\r\n" : "");
    client_layer_down(cl, ws->level, (const uint8_t *)head, (size_t)hn);
    ws->phase = WS_OPEN;
    mq_log(MQ_LOG_INFO, "ws: %s: WebSocket upgrade on %.*s (subprotocol %.*s)", client_peer(cl),
           (int)(req->path.n > 60 ? 60 : req->path.n), req->path.p, proto.n ? (int)proto.n : 4,
           proto.n ? proto.p : "none");
    /* Frames the client sent right behind its request. */
    if (rest_len)
        ws_feed(cl, ws, rest, rest_len);
}

/* ---- the admin API ------------------------------------------------------------------ */

/* Content-Length of an admin request: its value (digits only, given once), or why not. */
static enum admin_body_error body_length(const struct http_request *req, size_t *len)
{
    size_t n = 0;
    const struct http_span *v = http_header(req, "Content-Length", &n);
    *len = 0;
    if (http_header(req, "Transfer-Encoding", NULL))
        return ADMIN_BODY_CHUNKED;
    if (!v)
        return ADMIN_BODY_OK;
    if (n != 1 || !v->n || v->n > 12)
        return ADMIN_BODY_BAD_LENGTH;
    uint64_t x = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9')
            return ADMIN_BODY_BAD_LENGTH;
        x = x * 10 + (uint64_t)(v->p[i] - '0');
    }
    if (x > ADMIN_MAX_BODY)
        return ADMIN_BODY_TOO_LARGE;
    *len = (size_t)x;
    return ADMIN_BODY_OK;
}

/* True when an admin request's body has arrived whole (or never will: a refused one). */
static bool body_complete(const struct http_request *req, size_t have)
{
    size_t need;
    return body_length(req, &need) != ADMIN_BODY_OK || have >= need;
}

/* The address alone of a peer name ("1.2.3.4:5678", "[::1]:5678", "CLIENT via PROXY"). */
static void peer_address(const char *peer, char *out, size_t size)
{
    size_t n = strcspn(peer, " ");
    const char *p = peer;
    if (n && p[0] == '[') {
        const char *end = memchr(p, ']', n);
        if (end) {
            p++;
            n = (size_t)(end - p);
        }
    } else {
        const char *colon = memchr(p, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - p)))
            n = (size_t)(colon - p); /* one colon: IPv4 with a port */
    }
    snprintf(out, size, "%.*s", (int)n, p);
}

static void span_to(const struct http_span *v, const char **p, size_t *n)
{
    *p = v ? v->p : NULL;
    *n = v ? v->n : 0;
}

/* /api/...: the request (head and body, already whole) goes to admin.c, which answers in
 * JSON; the connection then closes like every HTTP response here. */
static void serve_admin(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req,
                        const uint8_t *rest, size_t rest_len)
{
    struct mq_server *srv = cl->srv;
    char addr[INET6_ADDRSTRLEN + 8];
    peer_address(client_peer(cl), addr, sizeof(addr));
    struct admin_request rq = {
        .method = req->method.p,
        .method_len = req->method.n,
        .target = req->target.p,
        .target_len = req->target.n,
        .requested_with = http_header(req, "X-Requested-With", NULL) != NULL,
        .peer = client_peer(cl),
        .peer_addr = addr,
        .listener = client_lctx(cl),
        .tls = ws->level > 0, /* only TLS sits below a WebSocket layer */
    };
    span_to(http_header(req, "Authorization", NULL), &rq.authorization, &rq.authorization_len);
    span_to(http_header(req, "Origin", NULL), &rq.origin, &rq.origin_len);
    span_to(http_header(req, "Host", NULL), &rq.host, &rq.host_len);
    span_to(http_header(req, "Content-Type", NULL), &rq.content_type, &rq.content_type_len);
    span_to(http_header(req, "Sec-Fetch-Site", NULL), &rq.sec_fetch_site, &rq.sec_fetch_site_len);
    size_t len = 0;
    rq.body_error = body_length(req, &len);
    if (rq.body_error == ADMIN_BODY_OK) {
        rq.body = rest;
        rq.body_len = len <= rest_len ? len : rest_len;
    }
    struct admin_response rs;
    if (!srv->admin) {
        refuse(cl, ws, req, 503, "unavailable", "the admin API is not running", NULL);
        return;
    }
    srv->broker->now_ms = uv_now(&srv->loop);
    admin_handle(srv->admin, &rq, &rs);
    struct response r = {rs.status, "application/json; charset=utf-8", (const uint8_t *)rs.body,
                         rs.body_len, rs.headers[0] ? rs.headers : NULL};
    respond(cl, ws, req, &r);
    admin_response_free(&rs);
}

static void handle_request(struct mq_client *cl, struct ws_conn *ws, const struct http_request *req,
                           uint8_t *rest, size_t rest_len)
{
    apply_forwarded_for(cl, ws, req);
    size_t hosts = 0;
    http_header(req, "Host", &hosts);
    if (hosts > 1 || (req->minor_version == 1 && hosts == 0)) {
        refuse(cl, ws, req, 400, "bad request",
               hosts ? "more than one Host header" : "missing Host header", NULL);
        return;
    }
    if (admin_is_api_path(req->target.p, req->target.n)) {
        serve_admin(cl, ws, req, rest, rest_len);
        return;
    }
    bool get = span_eq(&req->method, "GET"), head = span_eq(&req->method, "HEAD");
    if (!get && !head) {
        char why[80];
        snprintf(why, sizeof(why), "%.*s (only GET and HEAD are served)",
                 (int)(req->method.n > 20 ? 20 : req->method.n), req->method.p);
        refuse(cl, ws, req, 405, "method not allowed", why, "Allow: GET, HEAD\r\n");
        return;
    }
    const struct http_span *cl_len = http_header(req, "Content-Length", NULL);
    if (http_header(req, "Transfer-Encoding", NULL) || (cl_len && !span_eq(cl_len, "0"))) {
        refuse(cl, ws, req, 400, "bad request", "a GET or HEAD request with a body", NULL);
        return;
    }
    if (http_header(req, "Upgrade", NULL) || http_header(req, "Sec-WebSocket-Key", NULL) ||
        http_header(req, "Sec-WebSocket-Version", NULL)) {
        upgrade(cl, ws, req, rest, rest_len);
        return;
    }
    serve_get(cl, ws, req);
}

static void http_input(struct mq_client *cl, struct ws_conn *ws, uint8_t *raw, size_t len)
{
    uint8_t *buf = raw;
    size_t blen = len;
    if (ws->req_len) {
        uint8_t *n = realloc(ws->req, ws->req_len + len);
        if (!n) {
            client_close(cl, "out of memory for an HTTP request");
            return;
        }
        memcpy(n + ws->req_len, raw, len);
        ws->req = n;
        ws->req_len += len;
        buf = ws->req;
        blen = ws->req_len;
    }
    struct http_request req;
    const char *reason = NULL;
    int r = http_parse_request(buf, blen, &req, &reason);
    /* An admin request's body (bounded by ADMIN_MAX_BODY) is waited for like the rest of
     * its head; connect_timeout bounds how long. */
    if (r >= 0 && admin_is_api_path(req.target.p, req.target.n) &&
        !body_complete(&req, blen - (size_t)r))
        r = HTTP_PARTIAL;
    if (r == HTTP_PARTIAL) {
        if (!ws->req_len) {
            ws->req = malloc(len);
            if (!ws->req) {
                client_close(cl, "out of memory for an HTTP request");
                return;
            }
            memcpy(ws->req, raw, len);
            ws->req_len = len;
        }
        return;
    }
    if (r == HTTP_ERROR) {
        refuse(cl, ws, NULL, 400, "bad request", reason, NULL);
    } else if (r == HTTP_TOO_LARGE) {
        char why[96];
        snprintf(why, sizeof(why), "request head larger than %d bytes or %d header fields",
                 HTTP_MAX_HEAD, HTTP_MAX_HEADERS);
        refuse(cl, ws, NULL, 431, "bad request", why, NULL);
    } else {
        handle_request(cl, ws, &req, buf + r, blen - (size_t)r);
    }
    /* buf may be ws->req: only now is it no longer pointed into. */
    free(ws->req);
    ws->req = NULL;
    ws->req_len = 0;
}

/* ---- the transport ------------------------------------------------------------------ */

static int ws_attach(struct mq_client *cl, unsigned level, void *listener_ctx)
{
    (void)listener_ctx;
    struct ws_conn *ws = calloc(1, sizeof(*ws));
    if (!ws) {
        mq_log(MQ_LOG_ERR, "ws: %s: out of memory", client_peer(cl));
        return -1;
    }
    ws->cl = cl;
    ws->level = (uint8_t)level;
    ws->phase = WS_HTTP;
    cl->layer[level].state = ws;
    return 0;
}

static int ws_input(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len)
{
    struct ws_conn *ws = cl->layer[level].state;
    if (ws->phase == WS_HTTP)
        http_input(cl, ws, raw, len);
    else if (ws->phase == WS_OPEN)
        ws_feed(cl, ws, raw, len);
    return cl->closing ? -1 : 0;
}

/* Stage one piece of a packet, or queue it as a message of its own when it is large (the
 * packet then spans two messages). 1 when that queued it, 0 when staged, -1 when closed. */
static int stage_piece(struct mq_client *cl, struct ws_conn *ws, const uint8_t *data, size_t len)
{
    if (len >= WS_DIRECT_MIN)
        return queue_stage(cl, ws) || queue_bytes(cl, ws, data, len) ? -1 : 1;
    if (ws->stage_len + len > ws->stage_cap &&
        buf_reserve(&ws->stage, &ws->stage_cap, ws->stage_len + len, 1024)) {
        client_close(cl, "out of memory for WebSocket output");
        return -1;
    }
    memcpy(ws->stage + ws->stage_len, data, len);
    ws->stage_len += len;
    return 0;
}

/* proto's output: whole packets, each in pieces (proto writes a PUBLISH as header, topic and
 * payload), staged and sent as one binary message per loop turn (see ws_feed and on_idle), so
 * the pieces and the many packets a busy subscriber gets share a frame. Large pieces skip the
 * staging copy. Staged output past WS_STAGE_MAX goes out at the end of the call: a packet
 * end. */
static int ws_outputv(struct mq_client *cl, unsigned level, const struct mq_iov *iov, size_t n)
{
    struct ws_conn *ws = cl->layer[level].state;
    if (ws->phase != WS_OPEN || cl->closing)
        return 0;
    bool now = false, any = false;
    for (size_t i = 0; i < n; i++) {
        if (!iov[i].len)
            continue;
        any = true;
        int rc = stage_piece(cl, ws, iov[i].base, iov[i].len);
        if (rc < 0)
            return -1;
        now |= rc;
    }
    if (!any)
        return 0;
    if (ws->stage_len >= WS_STAGE_MAX) { /* bounded staging */
        if (queue_stage(cl, ws))
            return -1;
        now = true;
    }
    if (ws->in_recv)
        return 0; /* ws_feed sends or defers once the read is processed */
    if (now || cl->close_requested || defer(cl, ws))
        ws_pump(cl, ws, 0);
    return cl->closing ? -1 : 0;
}

/* One whole packet (mq_transport_ops.output; proto's writes come through ws_outputv). */
static int ws_output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    const struct mq_iov one = {.base = data, .len = len};
    return ws_outputv(cl, level, &one, 1);
}

/* The broker ends the connection (DISCONNECT refused, protocol error, takeover...):
 * send what is staged, then a close frame 1000, so browsers see a clean close rather
 * than 1006. */
static void send_close(struct mq_client *cl, struct ws_conn *ws)
{
    if (ws->phase != WS_OPEN || cl->closing || wslay_event_get_close_sent(ws->ev))
        return;
    if (queue_stage(cl, ws))
        return;
    /* Data first: wslay sends queued control frames ahead of queued messages, and the
     * CONNACK of a refusal must arrive before the close. */
    wslay_event_send(ws->ev);
    wslay_event_queue_close(ws->ev, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    wslay_event_send(ws->ev);
}

static void ws_shutdown(struct mq_client *cl, unsigned level)
{
    struct ws_conn *ws = cl->layer[level].state;
    if (ws && ws->in_recv) {
        ws->shutdown_pending = true; /* ws_feed sends it once the input is processed */
        return;
    }
    if (ws)
        send_close(cl, ws);
    client_layer_shutdown_below(cl, level); /* TLS close_notify after the close frame */
}

static void ws_detach(struct mq_client *cl, unsigned level)
{
    struct ws_conn *ws = cl->layer[level].state;
    cl->layer[level].state = NULL;
    if (!ws)
        return;
    ws->cl = NULL;
    if (ws->idle_init)
        uv_close((uv_handle_t *)&ws->idle, on_idle_closed);
    else
        ws_free(ws);
}

static void ws_ctx_free(void *listener_ctx)
{
    (void)listener_ctx;
}

const struct mq_transport_ops ws_transport = {
    .name = "websockets",
    .attach = ws_attach,
    .input = ws_input,
    .output = ws_output,
    .outputv = ws_outputv,
    .shutdown = ws_shutdown,
    .detach = ws_detach,
    .ctx_free = ws_ctx_free,
};

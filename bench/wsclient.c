/*
 * wsclient.c - MQTT over WebSocket (RFC 6455, MQTT 3.1.1 section 6) for
 * midge-bench's connections, written from the RFC like the rest of the tool.
 *
 * What a browser client such as MQTT.js does, and no more:
 * - an HTTP/1.1 GET upgrade with a random Sec-WebSocket-Key, version 13 and
 *   the subprotocol "mqtt"; the answer must be 101 with the matching
 *   Sec-WebSocket-Accept (SHA-1 below, so the tool keeps no dependency);
 * - every MQTT packet goes out in its own binary frame, masked with a fresh
 *   random key, as the RFC asks of a client;
 * - frames from the server (binary or continuation) are unwrapped into the
 *   connection's MQTT input, wherever the packet boundaries fall; a ping is
 *   answered, a close ends the connection like EOF.
 *
 * The packets the modes append to c->out stay plain MQTT: conn_flush() calls
 * ws_frame_out() to wrap them into c->wout, and conn_read() calls ws_read(),
 * which leaves unwrapped MQTT bytes in c->in. The rest of the tool does not
 * know which transport it runs on.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_MAX_HEAD 8192 /* a 101 answer larger than this is not one */

/* ---- SHA-1 (FIPS 180-4), only for Sec-WebSocket-Accept ---- */

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    size_t i = 0;
    for (; i + 64 <= len; i += 64)
        sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rest = len - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int k = 0; k < 8; k++)
        tail[tail_len - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha1_block(h, tail);
    if (tail_len == 128)
        sha1_block(h, tail + 64);
    for (int k = 0; k < 5; k++) {
        out[4 * k] = (uint8_t)(h[k] >> 24);
        out[4 * k + 1] = (uint8_t)(h[k] >> 16);
        out[4 * k + 2] = (uint8_t)(h[k] >> 8);
        out[4 * k + 3] = (uint8_t)h[k];
    }
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* xorshift64*: masking keys and Sec-WebSocket-Key need to be unpredictable to the server,
 * not cryptographic; seeded from the clock and the pid in loop_init. */
static uint64_t rnd(struct loop *l)
{
    l->rng ^= l->rng >> 12;
    l->rng ^= l->rng << 25;
    l->rng ^= l->rng >> 27;
    return l->rng * 0x2545f4914f6cdd1dull;
}

/* ---- handshake ---- */

void ws_start(struct loop *l, struct conn *c)
{
    uint8_t nonce[16];
    uint64_t a = rnd(l), b = rnd(l);
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    char key[32];
    base64(nonce, sizeof(nonce), key);
    char cat[96];
    int n = snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
    uint8_t digest[20];
    sha1((const uint8_t *)cat, (size_t)n, digest);
    base64(digest, sizeof(digest), c->ws_accept);

    char req[512];
    int len = snprintf(req, sizeof(req),
                       "GET %s HTTP/1.1\r\n"
                       "Host: %s\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Protocol: mqtt\r\n"
                       "\r\n",
                       l->ws_path, l->ws_host, key);
    if (len < 0 || (size_t)len >= sizeof(req))
        die(EXIT_USAGE, "--ws %s: path too long", l->ws_path);
    buf_reserve(&c->wout, (size_t)len);
    memcpy(c->wout.data + c->wout.len, req, (size_t)len);
    c->wout.len += (size_t)len;
    c->ws = WS_HANDSHAKE;
}

/* Value of header NAME in the head [p, end), or NULL; *vlen gets its length. */
static const char *header_value(const char *p, const char *end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *line = memchr(p, '\n', (size_t)(end - p)); /* skip the status line */
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        if ((size_t)(eol - line) > nlen && !strncasecmp(line, name, nlen) && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol;
    }
    return NULL;
}

/* Checks the server's answer once all of it arrived. Returns 1 when the connection is
 * open (the head consumed), 0 if more bytes are needed, -EPROTO on a refusal. */
static int handshake_answer(struct conn *c)
{
    const char *p = (const char *)c->raw.data + c->raw.off;
    size_t n = c->raw.len - c->raw.off;
    const char *end = NULL;
    for (size_t i = 0; i + 3 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
            end = p + i + 4;
            break;
        }
    if (!end) {
        if (n > WS_MAX_HEAD) {
            warnx_("WebSocket: no end of the HTTP answer in %d bytes", WS_MAX_HEAD);
            return -EPROTO;
        }
        return 0;
    }
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    int status_len = (int)(eol - p);
    if (strncmp(p, "HTTP/1.1 101", 12) != 0) {
        warnx_("WebSocket: the upgrade was refused: %.*s", status_len, p);
        return -EPROTO;
    }
    size_t vlen;
    const char *v = header_value(p, end, "Sec-WebSocket-Accept", &vlen);
    if (!v || vlen != strlen(c->ws_accept) || memcmp(v, c->ws_accept, vlen) != 0) {
        warnx_("WebSocket: missing or wrong Sec-WebSocket-Accept (expected %s)", c->ws_accept);
        return -EPROTO;
    }
    v = header_value(p, end, "Sec-WebSocket-Protocol", &vlen);
    if (v && !(vlen == 4 && !strncasecmp(v, "mqtt", 4))) {
        warnx_("WebSocket: the server chose subprotocol %.*s, not mqtt", (int)vlen, v);
        return -EPROTO;
    }
    c->raw.off += (size_t)(end - p);
    c->ws = WS_OPEN;
    return 1;
}

/* ---- frames ---- */

/* Appends one masked client frame carrying payload [p, p + n). */
static void put_frame(struct loop *l, struct buf *b, int opcode, const uint8_t *p, size_t n)
{
    buf_reserve(b, n + 14);
    uint8_t *o = b->data + b->len;
    *o++ = (uint8_t)(0x80 | opcode); /* FIN: one packet, one frame */
    if (n < 126) {
        *o++ = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        *o++ = 0x80 | 126;
        *o++ = (uint8_t)(n >> 8);
        *o++ = (uint8_t)n;
    } else {
        *o++ = 0x80 | 127;
        for (int k = 7; k >= 0; k--)
            *o++ = (uint8_t)((uint64_t)n >> (8 * k));
    }
    uint32_t key32 = (uint32_t)rnd(l);
    uint8_t key[4];
    memcpy(key, &key32, 4);
    memcpy(o, key, 4);
    o += 4;
    /* Eight bytes at a time: the key repeats every four, so a doubled key fits a word. */
    uint64_t k64;
    memcpy(&k64, key, 4);
    memcpy((uint8_t *)&k64 + 4, key, 4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= k64;
        memcpy(o + i, &w, 8);
    }
    for (; i < n; i++)
        o[i] = p[i] ^ key[i & 3];
    b->len = (size_t)(o - b->data) + n;
}

void ws_frame_out(struct loop *l, struct conn *c)
{
    struct packet pk;
    while (c->out.off < c->out.len) {
        int rc = wire_parse(c->out.data + c->out.off, c->out.len - c->out.off, &pk);
        if (rc != 1)
            die(1, "internal error: an incomplete MQTT packet queued for a WebSocket frame");
        put_frame(l, &c->wout, 0x2, c->out.data + c->out.off, pk.total);
        c->out.off += pk.total;
    }
    c->out.off = c->out.len = 0;
}

/* Unwraps every complete frame in c->raw into c->in. Returns MQTT bytes added, or -EPIPE
 * on a close frame, or -EPROTO. */
static ssize_t unwrap(struct loop *l, struct conn *c)
{
    ssize_t added = 0;
    for (;;) {
        const uint8_t *p = c->raw.data + c->raw.off;
        size_t n = c->raw.len - c->raw.off;
        if (n < 2)
            break;
        int opcode = p[0] & 0x0f;
        bool masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7f;
        size_t hdr = 2;
        if (plen == 126) {
            if (n < 4)
                break;
            plen = (uint64_t)p[2] << 8 | p[3];
            hdr = 4;
        } else if (plen == 127) {
            if (n < 10)
                break;
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = plen << 8 | p[2 + k];
            hdr = 10;
        }
        if (plen > (1ull << 30)) {
            warnx_("WebSocket: a frame of %llu bytes", (unsigned long long)plen);
            return -EPROTO;
        }
        size_t mhdr = hdr + (masked ? 4 : 0);
        if (n < mhdr || n - mhdr < plen) {
            /* Incomplete: make room for the whole frame (the read buffer may be smaller). */
            size_t need = mhdr + (size_t)plen;
            if (c->raw.off + need > c->raw.cap)
                buf_reserve(&c->raw, need);
            break;
        }
        const uint8_t *pl = p + mhdr;
        switch (opcode) {
        case 0x0: /* continuation */
        case 0x2: /* binary */
            buf_reserve(&c->in, (size_t)plen);
            memcpy(c->in.data + c->in.len, pl, (size_t)plen);
            if (masked) /* a server must not mask; tolerate it anyway */
                for (size_t i = 0; i < plen; i++)
                    c->in.data[c->in.len + i] ^= p[hdr + (i & 3)];
            c->in.len += (size_t)plen;
            added += (ssize_t)plen;
            break;
        case 0x8: /* close */
            return -EPIPE;
        case 0x9: /* ping: a pong with the same payload */
            put_frame(l, &c->wout, 0xA, pl, (size_t)plen);
            conn_mark_dirty(l, c);
            break;
        case 0xA: break; /* pong */
        default: warnx_("WebSocket: unexpected frame opcode %d", opcode); return -EPROTO;
        }
        c->raw.off += mhdr + (size_t)plen;
    }
    return added;
}

ssize_t ws_read(struct loop *l, struct conn *c)
{
    if (c->raw.cap == 0) {
        c->raw.data = malloc(c->in_cap);
        if (!c->raw.data)
            die(1, "out of memory");
        c->raw.cap = c->in_cap;
    }
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0;
    else
        buf_compact(&c->in);
    for (;;) {
        buf_compact(&c->raw);
        if (c->raw.len == c->raw.cap)
            buf_reserve(&c->raw, c->raw.cap);
        ssize_t n = conn_raw_read(l, c, c->raw.data + c->raw.len, c->raw.cap - c->raw.len);
        if (n <= 0)
            return n;
        c->raw.len += (size_t)n;
        if (c->ws == WS_HANDSHAKE) {
            int rc = handshake_answer(c);
            if (rc < 0)
                return rc;
            if (rc == 0)
                continue;
            conn_mark_dirty(l, c); /* what the mode queued while the upgrade was pending */
        }
        ssize_t added = unwrap(l, c);
        if (added == -EPIPE)
            return 0; /* a close frame: the same as EOF to the modes */
        if (added != 0)
            return added;
        /* Only a frame header or a control frame so far: read on until EAGAIN. */
    }
}

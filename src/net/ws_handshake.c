/* ws_handshake.c - the check of a WebSocket server's answer to a bridge's upgrade request
 * (ws_client.h): pure, no allocation, so that tests/fuzz/fuzz_ws_answer.c can drive it. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ws_client.h"

/* The value of header name among the lines of head[0..len) after the status line, or NULL. */
static const char *header(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *end = head + len;
    const char *p = memchr(head, '\n', len);
    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *e = memchr(line, '\n', (size_t)(end - line));
        if (!e)
            return NULL;
        const char *le = e > line && e[-1] == '\r' ? e - 1 : e;
        if ((size_t)(le - line) > nl && line[nl] == ':' && !strncasecmp(line, name, nl)) {
            const char *v = line + nl + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = le;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = e;
    }
    return NULL;
}

/* True when the comma-separated list v[0..len) holds token (any case). */
static bool has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= len; i++)
        if (!strncasecmp(v + i, token, tl) && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
            (i + tl == len || v[i + tl] == ',' || v[i + tl] == ' '))
            return true;
    return false;
}

int ws_client_check_answer(const char *head, size_t len, const char *accept, char *why,
                           size_t why_size)
{
    const char *eol = memchr(head, '\r', len);
    size_t first = eol ? (size_t)(eol - head) : len;
    if (first < 12 || (strncmp(head, "HTTP/1.1 ", 9) && strncmp(head, "HTTP/1.0 ", 9)) ||
        head[9] < '1' || head[9] > '5' || head[10] < '0' || head[10] > '9' || head[11] < '0' ||
        head[11] > '9') {
        snprintf(why, why_size, "the remote's answer to the WebSocket upgrade is not HTTP");
        return -1;
    }
    if (strncmp(head + 9, "101", 3)) {
        snprintf(why, why_size, "the remote refused the WebSocket upgrade: %.*s",
                 (int)(first < 80 ? first : 80), head);
        return -1;
    }
    size_t vl;
    const char *v = header(head, len, "Upgrade", &vl);
    if (!v || !has_token(v, vl, "websocket")) {
        snprintf(why, why_size, "the remote's 101 answer lacks Upgrade: websocket");
        return -1;
    }
    v = header(head, len, "Connection", &vl);
    if (!v || !has_token(v, vl, "upgrade")) {
        snprintf(why, why_size, "the remote's 101 answer lacks Connection: Upgrade");
        return -1;
    }
    v = header(head, len, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != strlen(accept) || memcmp(v, accept, vl)) {
        snprintf(why, why_size, "the remote's Sec-WebSocket-Accept is wrong");
        return -1;
    }
    v = header(head, len, "Sec-WebSocket-Protocol", &vl);
    if (v && !(vl == 4 && !strncasecmp(v, "mqtt", 4))) {
        snprintf(why, why_size, "the remote chose WebSocket subprotocol %.*s, not mqtt",
                 (int)(vl < 40 ? vl : 40), v);
        return -1;
    }
    return 0;
}

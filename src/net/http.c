/* http.c - a strict HTTP/1.1 request-head parser and the helpers a WebSocket upgrade
 * needs (token lists, Sec-WebSocket-Key/Accept), for the WebSocket listener.
 *
 * Owns no state and allocates nothing: everything points into the caller's buffer.
 * Strict on purpose: a WebSocket port is reached by browsers, MQTT libraries and
 * scanners, and anything that is not a well-formed request is refused with 400 rather
 * than guessed at (RFC 9112 permits each of the refusals below).
 */
#include "http.h"

#include <openssl/evp.h>
#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static bool is_tchar(uint8_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* request-target characters: visible ASCII */
static bool is_vchar(uint8_t c)
{
    return c > 0x20 && c < 0x7f;
}

/* field-value characters: visible ASCII, obs-text, space and tab */
static bool is_field_char(uint8_t c)
{
    return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

static bool ieq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

bool http_span_ieq(const struct http_span *s, const char *z)
{
    return ieq(s->p, s->n, z, strlen(z));
}

int http_parse_request(const uint8_t *buf, size_t len, struct http_request *req,
                       const char **reason)
{
    /* Bytes past the limit are never looked at: running out of them means "too large"
     * rather than "partial". */
    size_t lim = len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD;
    size_t i = 0;
    const char *s = (const char *)buf;
    *reason = NULL;
    memset(req, 0, offsetof(struct http_request, headers));
    req->header_count = 0;

    /* method SP */
    while (i < lim && is_tchar(buf[i]))
        i++;
    if (i == lim)
        goto out_of_data;
    if (i == 0 || buf[i] != ' ') {
        *reason = "invalid method in request line";
        return HTTP_ERROR;
    }
    req->method = (struct http_span){s, i};
    i++;

    /* request-target SP */
    size_t t = i;
    while (i < lim && is_vchar(buf[i]))
        i++;
    if (i == lim)
        goto out_of_data;
    if (i == t) {
        *reason = "empty request target";
        return HTTP_ERROR;
    }
    if (buf[i] != ' ') {
        *reason = "invalid character in request target";
        return HTTP_ERROR;
    }
    if (buf[t] != '/') {
        *reason = "request target is not a path starting with /";
        return HTTP_ERROR;
    }
    req->target = (struct http_span){s + t, i - t};
    const char *q = memchr(s + t, '?', i - t);
    req->path = (struct http_span){s + t, q ? (size_t)(q - (s + t)) : i - t};
    i++;

    /* HTTP-version CRLF, checked byte by byte so that garbage fails at once */
    static const char version[] = "HTTP/1.";
    for (size_t k = 0; k < sizeof(version) - 1; k++, i++) {
        if (i == lim)
            goto out_of_data;
        if (buf[i] != (uint8_t)version[k]) {
            *reason = k >= 5 ? "unsupported HTTP version (not HTTP/1.x)" : "invalid HTTP version";
            return HTTP_ERROR;
        }
    }
    if (i == lim)
        goto out_of_data;
    if (buf[i] != '0' && buf[i] != '1') {
        *reason = "unsupported HTTP version (not HTTP/1.0 or HTTP/1.1)";
        return HTTP_ERROR;
    }
    req->minor_version = buf[i] - '0';
    i++;
    for (size_t k = 0; k < 2; k++, i++) {
        if (i == lim)
            goto out_of_data;
        if (buf[i] != (uint8_t) "\r\n"[k]) {
            *reason = "request line does not end with CRLF";
            return HTTP_ERROR;
        }
    }

    /* header-field CRLF ... CRLF */
    for (;;) {
        if (i == lim)
            goto out_of_data;
        if (buf[i] == '\r') {
            if (i + 1 == lim)
                goto out_of_data;
            if (buf[i + 1] != '\n') {
                *reason = "header section does not end with CRLF";
                return HTTP_ERROR;
            }
            return (int)(i + 2);
        }
        if (buf[i] == ' ' || buf[i] == '\t') {
            *reason = "obsolete header line folding";
            return HTTP_ERROR;
        }
        size_t n = i;
        while (i < lim && is_tchar(buf[i]))
            i++;
        if (i == lim)
            goto out_of_data;
        if (i == n || buf[i] != ':') {
            *reason = i == n ? "invalid header field name"
                      : (buf[i] == ' ' || buf[i] == '\t')
                          ? "whitespace before colon in header field"
                          : "invalid character in header field name";
            return HTTP_ERROR;
        }
        if (req->header_count == HTTP_MAX_HEADERS)
            return HTTP_TOO_LARGE;
        struct http_header *h = &req->headers[req->header_count];
        h->name = (struct http_span){s + n, i - n};
        i++;
        while (i < lim && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        size_t v = i;
        while (i < lim && buf[i] != '\r') {
            if (!is_field_char(buf[i])) {
                *reason = buf[i] == '\n' ? "header line ends with a bare LF"
                                         : "invalid character in header field value";
                return HTTP_ERROR;
            }
            i++;
        }
        if (i == lim || i + 1 == lim)
            goto out_of_data;
        if (buf[i + 1] != '\n') {
            *reason = "header line does not end with CRLF";
            return HTTP_ERROR;
        }
        size_t e = i;
        while (e > v && (buf[e - 1] == ' ' || buf[e - 1] == '\t'))
            e--;
        h->value = (struct http_span){s + v, e - v};
        req->header_count++;
        i += 2;
    }

out_of_data:
    return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
}

const struct http_span *http_header(const struct http_request *req, const char *name, size_t *count)
{
    const struct http_span *found = NULL;
    size_t n = 0, nl = strlen(name);
    for (size_t i = 0; i < req->header_count; i++) {
        const struct http_header *h = &req->headers[i];
        if (ieq(h->name.p, h->name.n, name, nl)) {
            if (!found)
                found = &h->value;
            n++;
        }
    }
    if (count)
        *count = n;
    return found;
}

bool http_list_has(const struct http_span *v, const char *token)
{
    size_t tl = strlen(token);
    const char *p = v->p, *end = v->p + v->n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *a = p, *b = e;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (ieq(a, (size_t)(b - a), token, tl))
            return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

bool http_ws_key_valid(const struct http_span *key)
{
    /* 16 bytes are 22 base64 digits and "==". */
    if (key->n != 24 || key->p[22] != '=' || key->p[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(key->p[i]))
            return false;
    return true;
}

void http_ws_accept(const struct http_span *key, char out[29])
{
    uint8_t in[64 + sizeof(WS_GUID)];
    size_t n = key->n < 64 ? key->n : 64;
    memcpy(in, key->p, n);
    memcpy(in + n, WS_GUID, sizeof(WS_GUID) - 1);
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(in, n + sizeof(WS_GUID) - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
        out[0] = '\0'; /* the client then refuses the handshake */
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, md, 20);
}

const struct http_asset *http_asset_find(const struct http_span *path)
{
    struct http_span p = *path;
    if (p.n == 1 && p.p[0] == '/')
        p = (struct http_span){"/index.html", 11};
    for (size_t i = 0; i < http_asset_count; i++) {
        const char *ap = http_assets[i].path;
        if (strlen(ap) == p.n && memcmp(ap, p.p, p.n) == 0)
            return &http_assets[i];
    }
    return NULL;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

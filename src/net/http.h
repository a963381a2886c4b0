/* http.h - the small, strict HTTP/1.1 subset a WebSocket listener speaks before the
 * upgrade: a request-head parser, header helpers and the embedded web assets.
 *
 * Pure: no libuv, no sockets, no allocation. Like picohttpparser, the parser returns how
 * much it consumed, "partial" or "error", and hands back pointers into the caller's
 * buffer, which must outlive the struct http_request it filled.
 */
#ifndef MIDGE_HTTP_H
#define MIDGE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD 8192  /* request line + headers; more is refused with 431 */
#define HTTP_MAX_HEADERS 64 /* more is refused with 431 */

/* http_parse_request results besides "bytes consumed". */
#define HTTP_PARTIAL (-1)   /* valid so far, the head is not complete */
#define HTTP_ERROR (-2)     /* malformed: 400, *reason says why */
#define HTTP_TOO_LARGE (-3) /* over HTTP_MAX_HEAD or HTTP_MAX_HEADERS: 431 */

struct http_span {
    const char *p;
    size_t n;
};

struct http_header {
    struct http_span name, value; /* value without leading and trailing whitespace */
};

struct http_request {
    struct http_span method;
    struct http_span target; /* origin-form: starts with '/', query included */
    struct http_span path;   /* target without the query */
    int minor_version;       /* HTTP/1.x */
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t header_count;
};

/* Parse the request head at buf[0..len). Returns the head's length (request line,
 * headers and the empty line) when complete, HTTP_PARTIAL when every byte so far is
 * valid but the head has not ended, HTTP_ERROR with *reason (a static sentence) for a
 * malformed head, HTTP_TOO_LARGE when the head exceeds HTTP_MAX_HEAD bytes or
 * HTTP_MAX_HEADERS fields. Strict: CRLF line ends, token methods and field names, no
 * whitespace before a colon, no obsolete line folding, no control characters, origin-form
 * targets only, HTTP/1.0 or HTTP/1.1. Call it again with the whole buffer when more bytes
 * arrive; req points into buf. */
int http_parse_request(const uint8_t *buf, size_t len, struct http_request *req,
                       const char **reason);

/* The value of header name (case-insensitive) and how many times it occurs; the first
 * occurrence is returned. NULL when absent. */
const struct http_span *http_header(const struct http_request *req, const char *name,
                                    size_t *count);

/* True when the comma-separated token list v contains token (case-insensitive), as in
 * "Connection: keep-alive, Upgrade". */
bool http_list_has(const struct http_span *v, const char *token);

/* True when s equals the NUL-terminated z, case-insensitively. */
bool http_span_ieq(const struct http_span *s, const char *z);

/* RFC 6455 section 4.2.2: base64(SHA-1(key + GUID)) into out (28 characters and a NUL).
 * key is the Sec-WebSocket-Key value as sent. */
void http_ws_accept(const struct http_span *key, char out[29]);

/* True when key is the base64 encoding of exactly 16 bytes (RFC 6455 section 4.1). */
bool http_ws_key_valid(const struct http_span *key);

/* One file of web/, embedded in the binary by cmake/embed.cmake (the generated
 * web_assets.c defines the table). Paths start with '/': "/index.html". */
struct http_asset {
    const char *path;
    const uint8_t *data;
    size_t len;
    const char *content_type;
};
extern const struct http_asset http_assets[];
extern const size_t http_asset_count;

/* The embedded asset for a request path ("/" means "/index.html"), or NULL. */
const struct http_asset *http_asset_find(const struct http_span *path);

/* The reason phrase of an HTTP status code midge sends ("Not Found"). */
const char *http_status_text(int status);

#endif

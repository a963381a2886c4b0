/* admin.h - the admin API (docs/admin.md): an HTTP request under /api/ in, a JSON response
 * out.
 *
 * net/ hands over a request it has read whole (head and bounded body) on a websockets
 * listener; this module routes it, authenticates the admin (HTTP Basic against the
 * listener's password_file, admin_user, failed logins rate-limited per address, state
 * changes only from the page's own origin or without an Origin), asks proto through
 * proto_admin.h and answers JSON made with jansson. No sockets, no libuv: the fuzz target
 * drives it with a broker of its own. Every request is logged at info with the admin's name.
 */
#ifndef MIDGE_ADMIN_H
#define MIDGE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_broker;
struct mq_listener_ctx;
struct mq_sys;
struct mq_admin;

/* Largest request body accepted (POST /api/v1/publish): 64 KiB. */
#define ADMIN_MAX_BODY (64u * 1024)

/* One listening socket as /api/v1/broker lists it. */
struct admin_listener {
    const char *name;     /* "127.0.0.1:1883" */
    const char *protocol; /* "mqtt", "websockets", "mqtt over tls", "websockets over tls" */
    bool admin;           /* the admin API is served there */
};

/* What the server tells the admin API about itself (all optional). */
struct admin_server {
    const char *config_file;  /* NULL: built-in defaults */
    const struct mq_sys *sys; /* the $SYS sampler, for rates; NULL when off */
    void *ctx;                /* for the callbacks */
    /* The listening sockets: up to max into out; returns how many there are. */
    size_t (*listeners)(void *ctx, struct admin_listener *out, size_t max);
    /* A name for where a client connected ("127.0.0.1:1883 (mqtt)") into buf; false when
     * the listener is gone (reloaded away). */
    bool (*listener_name)(void *ctx, const struct mq_listener_ctx *l, char *buf, size_t size);
};

/* What a request's body could not be (net/ read the head, not a body it refused). */
enum admin_body_error {
    ADMIN_BODY_OK = 0,
    ADMIN_BODY_TOO_LARGE,  /* Content-Length over ADMIN_MAX_BODY: 413 */
    ADMIN_BODY_CHUNKED,    /* Transfer-Encoding: 411, a Content-Length is required */
    ADMIN_BODY_BAD_LENGTH, /* Content-Length not a number, or given twice: 400 */
};

/* One request, as read by net/. Strings are not NUL-terminated unless said; absent
 * headers are NULL. Everything is borrowed for the call. */
struct admin_request {
    const char *method;
    size_t method_len;
    const char *target; /* "/api/v1/clients?limit=10", as sent (still percent-encoded) */
    size_t target_len;
    const char *authorization, *origin, *host, *content_type, *sec_fetch_site;
    size_t authorization_len, origin_len, host_len, content_type_len, sec_fetch_site_len;
    bool requested_with; /* X-Requested-With present: no WWW-Authenticate (no browser popup) */
    const uint8_t *body;
    size_t body_len;
    enum admin_body_error body_error;
    const char *peer;      /* "addr:port", NUL-terminated, for the log */
    const char *peer_addr; /* the address alone, NUL-terminated: failed logins count per it */
    const struct mq_listener_ctx *listener; /* where it came in (admin_user, password_file) */
    bool tls;                               /* https:// */
};

/* The answer: status, a JSON body (owned: admin_response_free) and extra header lines
 * ("Retry-After: 6\r\n"), each ending in CRLF. */
struct admin_response {
    int status;
    char *body;
    size_t body_len;
    char headers[160];
};

/* New admin API state for broker b (borrowed, must outlive it) and the server's
 * description (copied; its pointers borrowed). NULL on out of memory. */
struct mq_admin *admin_new(struct mq_broker *b, const struct admin_server *srv);
void admin_free(struct mq_admin *a);

/* True when target (a request path, query included) is the admin API's: starts with
 * "/api/" or is "/api". */
bool admin_is_api_path(const char *target, size_t len);

/* Answer one request into *out (always filled: errors are JSON too). Acts on the broker
 * for DELETE and POST; call with b->now_ms current. */
void admin_handle(struct mq_admin *a, const struct admin_request *rq, struct admin_response *out);

/* Release what admin_handle put in *r. */
void admin_response_free(struct admin_response *r);

#endif

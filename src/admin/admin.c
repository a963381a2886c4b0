/* admin.c - the admin API (admin.h, docs/admin.md): routes under /api/v1/, authentication,
 * JSON in and out.
 *
 * Owns the failed-login buckets (one per client address, bounded) and nothing of the
 * broker: it reads through proto_admin.h's queries and acts through its commands. JSON is
 * built and parsed with jansson, never pasted from strings: a client id, a topic or a user
 * name is always a JSON string value, escaped by the library. Every response, errors too,
 * is {"...": ...} with a status; every request is logged at info with the admin's name.
 * Order of checks: route, API enabled on the listener, method, origin (CSRF), failed-login
 * limit, credentials, then the handler's own validation of every parameter.
 */
#include "midge/admin.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "midge/config.h"
#include "midge/enc.h"
#include "midge/err.h"
#include "midge/hmap.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/proto.h"
#include "midge/proto_admin.h"
#include "midge/session.h"
#include "midge/sub_tree.h"
#include "midge/sys.h"
#include "midge/topic.h"

#ifndef MIDGE_VERSION
#define MIDGE_VERSION "unknown"
#endif

/* Failed logins: a token bucket per address, LOGIN_BURST failures at once, then one more
 * every LOGIN_REFILL_MS. The table holds at most LOGIN_TABLE addresses; past that, a
 * shared bucket stands in for new ones (an attacker with many addresses shares one). */
#define LOGIN_BURST 10.0
#define LOGIN_REFILL_MS 6000.0
#define LOGIN_TABLE 4096

#define DEFAULT_LIMIT 100
#define PREVIEW_DEFAULT 128
#define PREVIEW_MAX 4096
#define DETAIL_SUBS_MAX 1000 /* subscriptions listed in one client's detail */

struct bucket {
    double tokens;
    uint64_t at_ms;
    char addr[]; /* the key */
};

struct mq_admin {
    struct mq_broker *b;
    struct admin_server srv;
    struct mq_hmap buckets; /* address -> struct bucket */
    struct bucket *shared;  /* when the table is full */
    int64_t wall_offset;    /* wall_offset() of the request being answered */
    /* The last listener named during this request: a page of clients asks 1,000 times. */
    const struct mq_listener_ctx *lname_of;
    bool lname_ok;
    char lname[128];
};

/* One request being answered. */
struct call {
    struct mq_admin *a;
    const struct admin_request *rq;
    struct admin_response *out;
    char user[128]; /* the authenticated admin, for the log and the ACL */
    bool authed;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    char path[1024]; /* the route part of the path, for the log */
};

/* ---- responses ----------------------------------------------------------------------------- */

static const char *status_word(int status)
{
    switch (status) {
    case 200: return "ok";
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 411: return "length_required";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 422: return "unprocessable";
    case 429: return "too_many_requests";
    case 503: return "unavailable";
    default: return "internal_error";
    }
}

/* Serialise root (consumed) as the response body with status. */
static void send_json(struct call *c, int status, json_t *root)
{
    struct admin_response *out = c->out;
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL; /* UTF-8, as sent */
    json_decref(root);
    if (!text) {
        static const char oom[] =
            "{\"status\":500,\"error\":\"internal_error\",\"message\":\"out of memory\"}";
        free(out->body);
        out->body = strdup(oom);
        out->body_len = out->body ? sizeof(oom) - 1 : 0;
        out->status = 500;
        return;
    }
    free(out->body);
    out->body = text;
    out->body_len = strlen(text);
    out->status = status;
}

/* An error response: {"status": N, "error": "word", "message": "sentence"}. */
static void fail(struct call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct call *c, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The sentence quotes what the client sent: keep it valid UTF-8 for the library. */
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("(request text that is not UTF-8)");
    json_t *root =
        json_pack("{s:i, s:s, s:o*}", "status", status, "error", status_word(status), "message", m);
    send_json(c, status, root);
}

static void add_header(struct call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_header(struct call *c, const char *fmt, ...)
{
    size_t used = strlen(c->out->headers);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->out->headers + used, sizeof(c->out->headers) - used, fmt, ap);
    va_end(ap);
}

/* A string for text quoted in a sentence: at most 80 bytes, printable ASCII (anything else
 * as '?'), so a log line or a message never carries control characters. */
static const char *quote(const char *s, size_t n, char buf[84])
{
    size_t k = n < 80 ? n : 80;
    for (size_t i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    buf[k] = 0;
    if (n > 80)
        memcpy(buf + 77, "...", 4);
    return buf;
}

/* ---- time -------------------------------------------------------------------------------- */

/* Wall clock minus the broker clock, in ms: read once per request. */
static int64_t wall_offset(const struct mq_broker *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - (int64_t)b->now_ms;
}

/* An ISO 8601 UTC time for broker clock t (ms), or JSON null for 0 (unknown). */
static json_t *iso_time(const struct mq_admin *a, uint64_t t)
{
    if (!t)
        return json_null();
    int64_t wall = a->wall_offset + (int64_t)t;
    time_t sec = (time_t)(wall / 1000);
    struct tm tm;
    if (!gmtime_r(&sec, &tm))
        return json_null();
    char buf[96];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall % 1000));
    return json_string(buf);
}

/* ---- failed logins ------------------------------------------------------------------------- */

static void refill(struct bucket *k, uint64_t now)
{
    if (now > k->at_ms) {
        k->tokens += (double)(now - k->at_ms) / LOGIN_REFILL_MS;
        if (k->tokens > LOGIN_BURST)
            k->tokens = LOGIN_BURST;
    }
    k->at_ms = now;
}

/* The bucket of addr, created full when new (the shared one when the table is full and no
 * entry has refilled completely). NULL only when out of memory. */
static struct bucket *bucket_of(struct mq_admin *a, const char *addr, uint64_t now)
{
    size_t n = strlen(addr);
    struct bucket *k = hmap_get(&a->buckets, addr, n);
    if (k) {
        refill(k, now);
        return k;
    }
    if (hmap_count(&a->buckets) >= LOGIN_TABLE) {
        /* Entries that refilled completely mean nothing: drop them. */
        uint32_t pos = 0;
        struct bucket *e;
        while ((e = hmap_next(&a->buckets, &pos, NULL, NULL))) {
            refill(e, now);
            if (e->tokens >= LOGIN_BURST) {
                hmap_remove(&a->buckets, e->addr, strlen(e->addr));
                free(e);
            }
        }
    }
    if (hmap_count(&a->buckets) >= LOGIN_TABLE) {
        refill(a->shared, now);
        return a->shared;
    }
    k = malloc(sizeof(*k) + n + 1);
    if (!k)
        return NULL;
    k->tokens = LOGIN_BURST;
    k->at_ms = now;
    memcpy(k->addr, addr, n + 1);
    if (hmap_put(&a->buckets, k->addr, n, k)) {
        free(k);
        return NULL;
    }
    return k;
}

/* ---- authentication ------------------------------------------------------------------------ */

/* True when name (n bytes) is one of the listener's admin_user names. */
static bool is_admin_user(const char *list, const char *name, size_t n)
{
    for (const char *p = list; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        p = nl ? nl + 1 : p + len;
    }
    return false;
}

static void ask_credentials(struct call *c, const char *why)
{
    if (!c->rq->requested_with)
        add_header(c, "WWW-Authenticate: Basic realm=\"midge admin\", charset=\"UTF-8\"\r\n");
    fail(c, 401, "%s", why);
}

/* HTTP Basic against the listener's password file (constant time: passwd_check), then
 * admin_user. Failed attempts cost a token of the address's bucket; an empty bucket is
 * 429 with Retry-After, before any password is checked. True when c->user is an admin. */
static bool authenticate(struct call *c)
{
    const struct admin_request *rq = c->rq;
    const struct mq_listener_ctx *l = rq->listener;
    struct mq_broker *b = c->a->b;
    struct bucket *k = bucket_of(c->a, rq->peer_addr ? rq->peer_addr : "?", b->now_ms);
    if (!k) {
        fail(c, 503, "out of memory");
        return false;
    }
    if (k->tokens < 1.0) {
        double wait_ms = (1.0 - k->tokens) * LOGIN_REFILL_MS;
        unsigned secs = (unsigned)(wait_ms / 1000.0) + 1;
        add_header(c, "Retry-After: %u\r\n", secs);
        fail(c, 429, "too many failed logins from %s: try again in %u s",
             rq->peer_addr ? rq->peer_addr : "this address", secs);
        return false;
    }
    if (!rq->authorization) {
        ask_credentials(c, "this is the admin API: log in with the user name and password of "
                           "an admin_user (HTTP Basic authentication)");
        return false;
    }
    const char *v = rq->authorization;
    size_t n = rq->authorization_len;
    if (n < 6 || strncasecmp(v, "Basic ", 6) != 0) {
        ask_credentials(c, "only HTTP Basic authentication is supported");
        return false;
    }
    v += 6;
    n -= 6;
    while (n && *v == ' ') {
        v++;
        n--;
    }
    uint8_t creds[768];
    long dn = n <= 1000 ? enc_b64_decode(v, n, creds, false) : -1;
    const uint8_t *colon = dn > 0 ? memchr(creds, ':', (size_t)dn) : NULL;
    if (!colon) {
        ask_credentials(c, "the Authorization header is not base64 of user:password");
        return false;
    }
    size_t ulen = (size_t)(colon - creds), plen = (size_t)dn - ulen - 1;
    char q[84];
    quote((const char *)creds, ulen, q);
    snprintf(c->user, sizeof(c->user), "%s", q);
    int r = l && l->passwd && b->check_password
                ? b->check_password(l->passwd, creds, ulen, colon + 1, plen)
                : 1;
    bool admin = r == 0 && ulen < sizeof(c->user) &&
                 is_admin_user(l->cfg ? l->cfg->admin_users : NULL, (const char *)creds, ulen);
    if (r == 0 && admin) {
        memcpy(c->user, creds, ulen); /* the exact name: the ACL checks it */
        c->user[ulen] = 0;
        c->authed = true;
        return true;
    }
    k->tokens -= 1.0;
    mq_log(MQ_LOG_NOTICE, "admin: %s: failed login as %s (%s)", rq->peer, q,
           r == 0   ? "not an admin_user"
           : r == 1 ? "unknown user"
                    : "wrong password");
    if (r == 0)
        fail(c, 403, "user %s is not an admin_user of this listener", q);
    else
        ask_credentials(c, "wrong user name or password");
    return false;
}

/* CSRF: a request that changes something comes from the page's own origin or from a
 * non-browser client (no Origin); a page elsewhere cannot drive the API through a browser
 * that holds the admin's credentials. */
static bool same_origin(struct call *c)
{
    const struct admin_request *rq = c->rq;
    if (rq->sec_fetch_site && rq->sec_fetch_site_len == 10 &&
        !strncasecmp(rq->sec_fetch_site, "cross-site", 10)) {
        fail(c, 403, "cross-site request refused (Sec-Fetch-Site: cross-site)");
        return false;
    }
    if (!rq->origin)
        return true;
    const char *scheme = rq->tls ? "https://" : "http://";
    size_t sn = strlen(scheme);
    if (rq->host && rq->origin_len == sn + rq->host_len && !strncasecmp(rq->origin, scheme, sn) &&
        !strncasecmp(rq->origin + sn, rq->host, rq->host_len))
        return true;
    char q[84];
    fail(c, 403, "cross-origin request refused: Origin %s is not this page's own",
         quote(rq->origin, rq->origin_len, q));
    return false;
}

/* ---- query parameters ---------------------------------------------------------------------- */

/* The parameters a route accepts; each found one is decoded into its own buffer. */
struct param {
    const char *name;
    char *val; /* decoded, NUL-terminated; NULL when absent */
    size_t len;
};

/* Decode the query into ps[0..n): an unknown or repeated parameter, a malformed escape or a
 * NUL byte is a 400. Values are allocated (params_free). */
static bool parse_query(struct call *c, struct param *ps, size_t n)
{
    const char *p = c->query, *end = c->query ? c->query + c->query_len : NULL;
    struct enc_param e;
    while (p && enc_query_next(&p, end, &e)) {
        char name[64], q[84];
        long nl = e.name_len < sizeof(name) ? enc_pct_decode(e.name, e.name_len, name, true) : -1;
        struct param *hit = NULL;
        for (size_t i = 0; nl >= 0 && i < n; i++)
            if (strlen(ps[i].name) == (size_t)nl && !memcmp(ps[i].name, name, (size_t)nl))
                hit = &ps[i];
        if (!hit) {
            fail(c, 400, "unknown query parameter \"%s\"", quote(e.name, e.name_len, q));
            return false;
        }
        if (hit->val) {
            fail(c, 400, "query parameter %s given twice", hit->name);
            return false;
        }
        hit->val = malloc(e.value_len + 1);
        if (!hit->val) {
            fail(c, 503, "out of memory");
            return false;
        }
        long vl = enc_pct_decode(e.value ? e.value : "", e.value_len, hit->val, true);
        if (vl < 0) {
            fail(c, 400, "query parameter %s: malformed percent-encoding", hit->name);
            return false;
        }
        hit->val[vl] = 0;
        hit->len = (size_t)vl;
        if (memchr(hit->val, 0, hit->len)) {
            fail(c, 400, "query parameter %s contains a NUL byte (%%00)", hit->name);
            return false;
        }
    }
    return true;
}

static void params_free(struct param *ps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ps[i].val);
}

/* A boolean parameter: 1/0/true/false; absent = dflt. */
static bool param_bool(struct call *c, const struct param *p, bool dflt, bool *out)
{
    if (!p->val) {
        *out = dflt;
        return true;
    }
    if (!strcmp(p->val, "1") || !strcmp(p->val, "true") || !p->len)
        *out = true;
    else if (!strcmp(p->val, "0") || !strcmp(p->val, "false"))
        *out = false;
    else {
        char q[84];
        fail(c, 400, "query parameter %s must be 1, 0, true or false, not \"%s\"", p->name,
             quote(p->val, p->len, q));
        return false;
    }
    return true;
}

/* A whole number from min to max; absent = dflt. */
static bool param_uint(struct call *c, const struct param *p, unsigned long dflt, unsigned long min,
                       unsigned long max, unsigned long *out)
{
    if (!p->val) {
        *out = dflt;
        return true;
    }
    unsigned long v = 0;
    bool ok = p->len > 0 && p->len <= 9;
    for (size_t i = 0; ok && i < p->len; i++) {
        if (p->val[i] < '0' || p->val[i] > '9')
            ok = false;
        else
            v = v * 10 + (unsigned long)(p->val[i] - '0');
    }
    if (!ok || v < min || v > max) {
        char q[84];
        fail(c, 400, "query parameter %s must be a whole number from %lu to %lu, not \"%s\"",
             p->name, min, max, quote(p->val, p->len, q));
        return false;
    }
    *out = v;
    return true;
}

/* The cursor of a page: base64url of the last key, as `next` gave it. */
static bool param_cursor(struct call *c, const struct param *p, uint8_t **key, size_t *len)
{
    *key = NULL;
    *len = 0;
    if (!p->val || !p->len)
        return true;
    uint8_t *k = p->len <= 200000 ? malloc(p->len / 4 * 3 + 3) : NULL;
    long n = k ? enc_b64_decode(p->val, p->len, k, true) : -1;
    if (n <= 0) {
        free(k);
        fail(c, 400,
             "cursor is not one this API gave (use the \"cursor\" of the last page's "
             "meta)");
        return false;
    }
    *key = k;
    *len = (size_t)n;
    return true;
}

static json_t *cursor_json(const uint8_t *key, size_t len)
{
    char *s = malloc(enc_b64_len(len, true) + 1);
    if (!s)
        return NULL;
    enc_b64_encode(key, len, s, true);
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* A topic filter parameter (absent: dflt). */
static bool param_filter(struct call *c, const struct param *p, const char *dflt, const char **f,
                         size_t *len)
{
    *f = p->val ? p->val : dflt;
    *len = p->val ? p->len : (dflt ? strlen(dflt) : 0);
    if (!*f)
        return true;
    if (!*len || topic_check_filter((const uint8_t *)*f, *len)) {
        char q[84];
        fail(c, 400, "%s \"%s\" is not a valid topic filter", p->name, quote(*f, *len, q));
        return false;
    }
    return true;
}

/* ---- JSON of broker state ------------------------------------------------------------------ */

static json_t *jstrn(const char *s, size_t n)
{
    return s ? json_stringn(s, n) : json_null();
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static const char *version_name(uint8_t level)
{
    return level == 5 ? "5.0" : level == 3 ? "3.1" : level == 4 ? "3.1.1" : NULL;
}

static json_t *client_json(struct mq_admin *a, const struct mq_session *s)
{
    struct mq_client_info ci;
    broker_client_info(a->b, s, &ci);
    if (ci.listener && ci.listener != a->lname_of && a->srv.listener_name) {
        a->lname_of = ci.listener;
        a->lname_ok = a->srv.listener_name(a->srv.ctx, ci.listener, a->lname, sizeof(a->lname));
    }
    const char *lname = ci.listener && ci.listener == a->lname_of && a->lname_ok ? a->lname : NULL;
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "client_id", jstrn(ci.client_id, ci.client_id_len));
    bad |= json_object_set_new(o, "username", jstr(ci.username));
    bad |= json_object_set_new(o, "connected", json_boolean(ci.connected));
    bad |= json_object_set_new(o, "address", jstr(ci.peer));
    bad |= json_object_set_new(o, "listener", jstr(lname));
    bad |= json_object_set_new(o, "protocol", jstr(version_name(ci.protocol_level)));
    bad |= json_object_set_new(o, "keepalive",
                               ci.connected ? json_integer(ci.keepalive) : json_null());
    bad |= json_object_set_new(o, "bridge", json_boolean(ci.bridge));
    bad |= json_object_set_new(o, "connected_at", iso_time(a, ci.connected ? ci.connected_ms : 0));
    bad |=
        json_object_set_new(o, "disconnected_at", iso_time(a, ci.connected ? 0 : ci.last_seen_ms));
    bad |= json_object_set_new(o, "clean_session", json_boolean(ci.clean));
    bad |= json_object_set_new(
        o, "session_expiry",
        ci.session_expiry == MQ_EXPIRY_NEVER ? json_null() : json_integer(ci.session_expiry));
    bad |= json_object_set_new(o, "subscriptions_count", json_integer(ci.subscriptions));
    bad |= json_object_set_new(o, "inflight", json_integer(ci.inflight));
    bad |= json_object_set_new(o, "inflight_bytes", json_integer((json_int_t)ci.inflight_bytes));
    bad |= json_object_set_new(o, "queued", json_integer((json_int_t)ci.queued));
    bad |= json_object_set_new(o, "queued_bytes", json_integer((json_int_t)ci.queued_bytes));
    bad |= json_object_set_new(o, "dropped", json_integer((json_int_t)ci.dropped));
    bad |= json_object_set_new(o, "messages_in", json_integer(ci.msgs_in));
    bad |= json_object_set_new(o, "messages_out", json_integer(ci.msgs_out));
    bad |= json_object_set_new(o, "bytes_in", json_integer((json_int_t)ci.bytes_in));
    bad |= json_object_set_new(o, "bytes_out", json_integer((json_int_t)ci.bytes_out));
    bad |= json_object_set_new(o, "will_topic", jstr(ci.will_topic));
    bad |= json_object_set_new(o, "will_delayed", json_boolean(ci.will_delayed));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *sub_json(const struct mq_sub_info *si, bool with_client)
{
    uint32_t g = si->grant;
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    if (with_client)
        bad |= json_object_set_new(o, "client_id",
                                   jstrn(si->session->client_id, si->session->client_id_len));
    bad |= json_object_set_new(o, "filter", jstrn(si->filter, si->filter_len));
    bad |= json_object_set_new(o, "qos", json_integer(MQ_GRANT_QOS(g)));
    bad |= json_object_set_new(o, "no_local", json_boolean(g & MQ_GRANT_NO_LOCAL));
    bad |= json_object_set_new(o, "retain_as_published",
                               json_boolean(g & MQ_GRANT_RETAIN_AS_PUBLISHED));
    bad |= json_object_set_new(o, "subscription_id",
                               MQ_GRANT_SUB_ID(g) ? json_integer(MQ_GRANT_SUB_ID(g)) : json_null());
    bad |= json_object_set_new(o, "share", jstr(si->share));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

struct sub_list {
    json_t *arr;
    bool with_client;
    bool bad;
    uint8_t *last; /* the last entry's key, for the cursor */
    size_t last_len;
};

static void collect_sub(void *ctx, const struct mq_sub_info *si)
{
    struct sub_list *l = ctx;
    if (json_array_append_new(l->arr, sub_json(si, l->with_client)))
        l->bad = true;
    size_t need = broker_sub_key(si, NULL, 0);
    uint8_t *k = realloc(l->last, need ? need : 1);
    if (!k) {
        l->bad = true;
        return;
    }
    l->last = k;
    l->last_len = broker_sub_key(si, k, need);
}

/* {"data": [...], "meta": {"limit", "count", "hasnext", "cursor"}} */
static json_t *page_json(json_t *data, unsigned long limit, long total, bool more, json_t *cursor)
{
    json_t *meta =
        json_pack("{s:i, s:o, s:b, s:o}", "limit", (json_int_t)limit, "count",
                  total >= 0 ? json_integer(total) : json_null(), "hasnext", more, "cursor",
                  more && cursor ? cursor : (json_decref(cursor), json_null()));
    return json_pack("{s:o, s:o*}", "data", data, "meta", meta);
}

/* ---- routes -------------------------------------------------------------------------------- */

static void get_clients(struct call *c)
{
    struct param ps[] = {{"connected"}, {"username"}, {"address"},
                         {"prefix"},    {"limit"},    {"cursor"}};
    enum { P_CONN, P_USER, P_ADDR, P_PREFIX, P_LIMIT, P_CURSOR, P_N };
    const struct mq_session **page = NULL;
    uint8_t *after = NULL;
    size_t after_len;
    unsigned long limit;
    bool connected = false;
    if (!parse_query(c, ps, P_N) ||
        !param_uint(c, &ps[P_LIMIT], DEFAULT_LIMIT, 1, MQ_ADMIN_PAGE_MAX, &limit) ||
        !param_cursor(c, &ps[P_CURSOR], &after, &after_len) ||
        (ps[P_CONN].val && !param_bool(c, &ps[P_CONN], true, &connected)))
        goto out;
    struct mq_client_filter f = {
        .connected = ps[P_CONN].val ? connected : -1,
        .username = ps[P_USER].val,
        .username_len = ps[P_USER].len,
        .address = ps[P_ADDR].val,
        .address_len = ps[P_ADDR].len,
        .id_prefix = ps[P_PREFIX].val,
        .id_prefix_len = ps[P_PREFIX].len,
    };
    page = malloc(limit * sizeof(*page));
    size_t total = 0;
    bool more = false;
    int n = page ? broker_clients_page(c->a->b, &f, after, after_len, limit, page, &total, &more)
                 : MQ_ERR_NOMEM;
    if (n < 0) {
        fail(c, 503, "out of memory");
        goto out;
    }
    json_t *data = json_array();
    for (int i = 0; data && i < n; i++)
        if (json_array_append_new(data, client_json(c->a, page[i]))) {
            json_decref(data);
            data = NULL;
        }
    json_t *cur =
        n ? cursor_json((const uint8_t *)page[n - 1]->client_id, page[n - 1]->client_id_len) : NULL;
    send_json(c, 200, data ? page_json(data, limit, (long)total, more, cur) : NULL);
out:
    free(page);
    free(after);
    params_free(ps, P_N);
}

/* The client id of /api/v1/clients/{id}: the rest of the path, percent-decoded. */
static bool client_id_of(struct call *c, const char *rest, size_t n, char **id, size_t *len)
{
    *id = malloc(n + 1);
    if (!*id) {
        fail(c, 503, "out of memory");
        return false;
    }
    long k = enc_pct_decode(rest, n, *id, false);
    char q[84];
    if (k <= 0) {
        fail(c, 400, k ? "malformed percent-encoding in the client id" : "empty client id");
        return false;
    }
    if (k > 65535 || topic_check_utf8((const uint8_t *)*id, (size_t)k)) {
        fail(c, 400, "\"%s\" cannot be a client id (UTF-8, no U+0000, at most 65535 bytes)",
             quote(*id, (size_t)k, q));
        return false;
    }
    (*id)[k] = 0;
    *len = (size_t)k;
    return true;
}

static void get_client(struct call *c, const char *rest, size_t rest_len)
{
    char *id = NULL;
    size_t len;
    if (!parse_query(c, NULL, 0) || !client_id_of(c, rest, rest_len, &id, &len))
        goto out;
    const struct mq_session *s = broker_client_find(c->a->b, (const uint8_t *)id, len);
    char q[84];
    if (!s) {
        fail(c, 404, "no client with id \"%s\"", quote(id, len, q));
        goto out;
    }
    json_t *o = client_json(c->a, s);
    struct sub_list l = {.arr = json_array()};
    bool more = false;
    int n = o && l.arr ? broker_subs_page(c->a->b, (const uint8_t *)id, len, NULL, 0, NULL, 0,
                                          DETAIL_SUBS_MAX, collect_sub, &l, &more)
                       : MQ_ERR_NOMEM;
    free(l.last);
    if (n < 0 || l.bad || json_object_set_new(o, "subscriptions", l.arr) ||
        json_object_set_new(o, "subscriptions_truncated", json_boolean(more))) {
        json_decref(o);
        fail(c, 503, "out of memory");
        goto out;
    }
    send_json(c, 200, json_pack("{s:o}", "data", o));
out:
    free(id);
}

static void delete_client(struct call *c, const char *rest, size_t rest_len)
{
    struct param ps[] = {{"discard_session"}};
    char *id = NULL;
    size_t len;
    bool discard;
    if (!parse_query(c, ps, 1) || !param_bool(c, &ps[0], false, &discard) ||
        !client_id_of(c, rest, rest_len, &id, &len))
        goto out;
    char q[84];
    quote(id, len, q);
    enum mq_kick_result r = broker_kick(c->a->b, (const uint8_t *)id, len, discard, c->user);
    switch (r) {
    case MQ_KICK_NOT_FOUND: fail(c, 404, "no client with id \"%s\"", q); break;
    case MQ_KICK_NOT_CONNECTED:
        fail(c, 409,
             "client \"%s\" is not connected (add discard_session=1 to remove its "
             "session)",
             q);
        break;
    default:
        send_json(c, 200,
                  json_pack("{s:o, s:b, s:b}", "client_id", json_stringn(id, len), "disconnected",
                            r == MQ_KICK_DISCONNECTED, "session_removed", discard));
        break;
    }
out:
    free(id);
    params_free(ps, 1);
}

static void get_subscriptions(struct call *c)
{
    struct param ps[] = {{"filter"}, {"client"}, {"limit"}, {"cursor"}};
    enum { P_FILTER, P_CLIENT, P_LIMIT, P_CURSOR, P_N };
    uint8_t *after = NULL;
    size_t after_len, flen;
    const char *filter;
    unsigned long limit;
    struct sub_list l = {.with_client = true};
    if (!parse_query(c, ps, P_N) ||
        !param_uint(c, &ps[P_LIMIT], DEFAULT_LIMIT, 1, MQ_ADMIN_PAGE_MAX, &limit) ||
        !param_cursor(c, &ps[P_CURSOR], &after, &after_len) ||
        !param_filter(c, &ps[P_FILTER], NULL, &filter, &flen))
        goto out;
    /* A $share/... filter is matched by the filter its group subscribes to. */
    if (filter && flen > 7 && !memcmp(filter, "$share/", 7)) {
        const char *slash = memchr(filter + 7, '/', flen - 7);
        if (slash) {
            flen -= (size_t)(slash + 1 - filter);
            filter = slash + 1;
        }
    }
    bool more = false;
    l.arr = json_array();
    int n =
        l.arr ? broker_subs_page(c->a->b, (const uint8_t *)ps[P_CLIENT].val,
                                 ps[P_CLIENT].val ? ps[P_CLIENT].len : 0, (const uint8_t *)filter,
                                 filter ? flen : 0, after, after_len, limit, collect_sub, &l, &more)
              : MQ_ERR_NOMEM;
    if (n < 0 || l.bad) {
        json_decref(l.arr);
        fail(c, 503, "out of memory");
        goto out;
    }
    json_t *cur = n ? cursor_json(l.last, l.last_len) : NULL;
    send_json(c, 200, page_json(l.arr, limit, -1, more, cur));
out:
    free(l.last);
    free(after);
    params_free(ps, P_N);
}

/* The payload of a retained message as the admin may see it: its first `max` bytes as a
 * string when they are UTF-8 (cut at a character boundary), else base64. */
static int set_preview(json_t *o, const struct mq_msg *m, size_t max)
{
    size_t n = m->payload_len < max ? m->payload_len : max;
    /* Step back over a character cut in two (continuation bytes are 10xxxxxx). */
    size_t k = n;
    if (n < m->payload_len)
        while (k > 0 && k + 4 > n && (m->payload[k] & 0xC0) == 0x80)
            k--;
    json_t *s = json_stringn((const char *)m->payload, k);
    if (s && !memchr(m->payload, 0, k))
        return json_object_set_new(o, "payload", s) |
               json_object_set_new(o, "payload_base64", json_null());
    json_decref(s);
    char *b = malloc(enc_b64_len(n, false) + 1);
    if (!b)
        return -1;
    enc_b64_encode(m->payload, n, b, false);
    int r = json_object_set_new(o, "payload", json_null()) |
            json_object_set_new(o, "payload_base64", json_string(b));
    free(b);
    return r;
}

static json_t *retained_json(struct call *c, const struct mq_msg *m, size_t preview)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "topic", json_stringn(m->topic, m->topic_len));
    bad |= json_object_set_new(o, "size", json_integer(m->payload_len));
    bad |= json_object_set_new(o, "qos", json_integer(m->qos));
    bad |=
        json_object_set_new(o, "stored_at", iso_time(c->a, broker_retained_stored_ms(c->a->b, m)));
    bool readable = broker_admin_may_read(c->rq->listener, c->user, m->topic, m->topic_len);
    bad |= json_object_set_new(o, "readable", json_boolean(readable));
    if (readable)
        bad |= set_preview(o, m, preview);
    else
        bad |= json_object_set_new(o, "payload", json_null()) |
               json_object_set_new(o, "payload_base64", json_null());
    bad |= json_object_set_new(o, "truncated", json_boolean(readable && m->payload_len > preview));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void get_retained(struct call *c)
{
    struct param ps[] = {{"filter"}, {"limit"}, {"cursor"}, {"preview"}};
    enum { P_FILTER, P_LIMIT, P_CURSOR, P_PREVIEW, P_N };
    uint8_t *after = NULL;
    size_t after_len, flen;
    const char *filter;
    unsigned long limit, preview;
    struct mq_msg **page = NULL;
    if (!parse_query(c, ps, P_N) ||
        !param_uint(c, &ps[P_LIMIT], DEFAULT_LIMIT, 1, MQ_ADMIN_PAGE_MAX, &limit) ||
        !param_uint(c, &ps[P_PREVIEW], PREVIEW_DEFAULT, 0, PREVIEW_MAX, &preview) ||
        !param_cursor(c, &ps[P_CURSOR], &after, &after_len) ||
        !param_filter(c, &ps[P_FILTER], "#", &filter, &flen))
        goto out;
    page = malloc(limit * sizeof(*page));
    size_t total = 0;
    bool more = false;
    int n = page ? broker_retained_page(c->a->b, (const uint8_t *)filter, flen, after, after_len,
                                        limit, page, &total, &more)
                 : MQ_ERR_NOMEM;
    if (n < 0) {
        fail(c, 503, "out of memory");
        goto out;
    }
    json_t *data = json_array();
    for (int i = 0; data && i < n; i++)
        if (json_array_append_new(data, retained_json(c, page[i], preview))) {
            json_decref(data);
            data = NULL;
        }
    json_t *cur =
        n ? cursor_json((const uint8_t *)page[n - 1]->topic, page[n - 1]->topic_len) : NULL;
    send_json(c, 200,
              data ? page_json(data, limit, total == SIZE_MAX ? -1 : (long)total, more, cur)
                   : NULL);
out:
    free(page);
    free(after);
    params_free(ps, P_N);
}

static void delete_retained(struct call *c)
{
    struct param ps[] = {{"filter"}, {"dry_run"}};
    size_t flen;
    const char *filter;
    bool dry;
    if (!parse_query(c, ps, 2) || !param_bool(c, &ps[1], false, &dry))
        goto out;
    if (!ps[0].val) {
        fail(c, 400,
             "filter is required: the topic filter of the retained messages to delete "
             "(# for all)");
        goto out;
    }
    if (!param_filter(c, &ps[0], NULL, &filter, &flen))
        goto out;
    if (filter[0] == '$') {
        fail(c, 400, "retained messages under $ topics are the broker's own: not deleted");
        goto out;
    }
    size_t matched = 0;
    int n = broker_retained_delete(c->a->b, (const uint8_t *)filter, flen, MQ_ADMIN_DELETE_MAX, dry,
                                   c->user, &matched);
    if (n < 0) {
        fail(c, 503, "out of memory");
        goto out;
    }
    size_t left = dry ? matched : matched - (size_t)n;
    send_json(c, 200,
              json_pack("{s:s, s:b, s:I, s:I, s:I}", "filter", filter, "dry_run", dry, "matched",
                        (json_int_t)matched, dry ? "would_delete" : "deleted", (json_int_t)n,
                        "remaining", (json_int_t)left));
out:
    params_free(ps, 2);
}

static bool is_json_type(const struct admin_request *rq)
{
    const char *t = rq->content_type;
    size_t n = rq->content_type_len;
    if (!t || n < 16 || strncasecmp(t, "application/json", 16))
        return false;
    return n == 16 || t[16] == ';' || t[16] == ' ';
}

static void post_publish(struct call *c)
{
    const struct admin_request *rq = c->rq;
    uint8_t *decoded = NULL;
    json_t *body = NULL;
    if (!parse_query(c, NULL, 0))
        goto out;
    if (!is_json_type(rq)) {
        fail(c, 415, "the body must be JSON (Content-Type: application/json)");
        goto out;
    }
    json_error_t err;
    body = json_loadb((const char *)rq->body, rq->body_len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!body) {
        fail(c, 400, "the body is not valid JSON: %s (line %d, column %d)", err.text, err.line,
             err.column);
        goto out;
    }
    if (!json_is_object(body)) {
        fail(c, 400,
             "the body must be a JSON object like {\"topic\": \"a/b\", \"payload\": "
             "\"hello\"}");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        static const char *const known[] = {"topic", "payload", "payload_base64", "qos", "retain"};
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok |= !strcmp(key, known[i]);
        if (!ok) {
            char q[84];
            fail(c, 400, "unknown field \"%s\" (topic, payload or payload_base64, qos, retain)",
                 quote(key, strlen(key), q));
            goto out;
        }
    }
    json_t *topic = json_object_get(body, "topic"), *pl = json_object_get(body, "payload"),
           *pb = json_object_get(body, "payload_base64"), *qos = json_object_get(body, "qos"),
           *retain = json_object_get(body, "retain");
    if (!json_is_string(topic)) {
        fail(c, 400, "topic is required and must be a string");
        goto out;
    }
    if (pl && pb) {
        fail(c, 400, "give payload or payload_base64, not both");
        goto out;
    }
    if ((pl && !json_is_string(pl)) || (pb && !json_is_string(pb))) {
        fail(c, 400, "payload and payload_base64 must be strings");
        goto out;
    }
    if (qos &&
        (!json_is_integer(qos) || json_integer_value(qos) < 0 || json_integer_value(qos) > 2)) {
        fail(c, 400, "qos must be 0, 1 or 2");
        goto out;
    }
    if (retain && !json_is_boolean(retain)) {
        fail(c, 400, "retain must be true or false");
        goto out;
    }
    const uint8_t *payload = (const uint8_t *)"";
    size_t plen = 0;
    if (pl) {
        payload = (const uint8_t *)json_string_value(pl);
        plen = json_string_length(pl);
    } else if (pb) {
        size_t n = json_string_length(pb);
        decoded = malloc(n / 4 * 3 + 3);
        long dn = decoded ? enc_b64_decode(json_string_value(pb), n, decoded, false) : -1;
        if (dn < 0) {
            fail(c, 400, "payload_base64 is not base64 (RFC 4648, with padding)");
            goto out;
        }
        payload = decoded;
        plen = (size_t)dn;
    }
    unsigned delivered = 0;
    const char *why = NULL;
    const char *t = json_string_value(topic);
    size_t tlen = json_string_length(topic);
    int q = qos ? (int)json_integer_value(qos) : 0;
    bool r = retain && json_is_true(retain);
    int rc = broker_admin_publish(c->a->b, rq->listener, c->user, (const uint8_t *)t, tlen, payload,
                                  plen, (uint8_t)q, r, &delivered, &why);
    char tq[84];
    quote(t, tlen, tq);
    if (rc == MQ_ERR_INVAL) {
        fail(c, 400, "cannot publish to \"%s\": %s", tq, why);
    } else if (rc == MQ_ERR_CONFIG) {
        fail(c, 403, "publish to \"%s\" refused: %s", tq, why);
    } else if (rc) {
        fail(c, 503, "publish to \"%s\" failed: %s", tq, why ? why : "out of memory");
    } else {
        mq_log(MQ_LOG_NOTICE, "admin %s: published %zu bytes to %s (QoS %d%s, %u receivers)",
               c->user, plen, tq, q, r ? ", retained" : "", delivered);
        send_json(c, 200,
                  json_pack("{s:s%, s:i, s:b, s:I, s:i}", "topic", t, tlen, "qos", q, "retain", r,
                            "size", (json_int_t)plen, "delivered", (int)delivered));
    }
out:
    free(decoded);
    json_decref(body);
}

static void add_sys(void *ctx, const char *name, uint64_t value)
{
    json_object_set_new(ctx, name, json_integer((json_int_t)value));
}

static void get_broker(struct call *c)
{
    if (!parse_query(c, NULL, 0))
        return;
    struct mq_admin *a = c->a;
    struct mq_broker *b = a->b;
    json_t *sys = json_object(), *ls = json_array();
    if (sys) {
        sys_values(b, a->srv.sys, add_sys, sys);
        if (a->srv.sys) {
            json_object_set_new(sys, "publish/rate/received", json_real(a->srv.sys->pub_in_rate));
            json_object_set_new(sys, "publish/rate/sent", json_real(a->srv.sys->pub_out_rate));
        }
    }
    struct admin_listener l[64];
    size_t n = a->srv.listeners ? a->srv.listeners(a->srv.ctx, l, 64) : 0;
    for (size_t i = 0; ls && i < n && i < 64; i++)
        json_array_append_new(ls, json_pack("{s:s, s:s, s:b}", "address", l[i].name, "protocol",
                                            l[i].protocol, "admin", l[i].admin));
    json_t *root =
        json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:s}", "version", MIDGE_VERSION, "uptime",
                  (json_int_t)((b->now_ms - b->start_ms) / 1000u), "started_at",
                  iso_time(a, b->start_ms ? b->start_ms : 1), "config_file",
                  jstr(a->srv.config_file), "listeners", ls, "sys", sys, "admin_user", c->user);
    send_json(c, 200, root);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

bool admin_is_api_path(const char *target, size_t len)
{
    return (len >= 5 && !memcmp(target, "/api/", 5)) ||
           (len >= 4 && !memcmp(target, "/api", 4) && (len == 4 || target[4] == '?'));
}

struct mq_admin *admin_new(struct mq_broker *b, const struct admin_server *srv)
{
    struct mq_admin *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->shared = calloc(1, sizeof(*a->shared) + 2);
    if (!a->shared) {
        free(a);
        return NULL;
    }
    a->shared->tokens = LOGIN_BURST;
    a->shared->at_ms = b->now_ms;
    a->b = b;
    if (srv)
        a->srv = *srv;
    hmap_init(&a->buckets);
    return a;
}

void admin_free(struct mq_admin *a)
{
    if (!a)
        return;
    uint32_t pos = 0;
    struct bucket *k;
    while ((k = hmap_next(&a->buckets, &pos, NULL, NULL)))
        free(k);
    hmap_destroy(&a->buckets);
    free(a->shared);
    free(a);
}

void admin_response_free(struct admin_response *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

static bool method_is(const struct admin_request *rq, const char *m)
{
    return rq->method_len == strlen(m) && !memcmp(rq->method, m, rq->method_len);
}

enum route { R_NONE, R_CLIENTS, R_CLIENT, R_SUBS, R_RETAINED, R_PUBLISH, R_BROKER };

/* Which route the path is, and for /clients/{id} where the id starts. */
static enum route route_of(const char *path, size_t n, const char **rest, size_t *rest_len)
{
    static const char v1[] = "/api/v1/";
    if (n < sizeof(v1) - 1 || memcmp(path, v1, sizeof(v1) - 1))
        return R_NONE;
    path += sizeof(v1) - 1;
    n -= sizeof(v1) - 1;
    static const struct {
        const char *name;
        enum route r;
    } routes[] = {{"clients", R_CLIENTS},
                  {"subscriptions", R_SUBS},
                  {"retained", R_RETAINED},
                  {"publish", R_PUBLISH},
                  {"broker", R_BROKER}};
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        size_t k = strlen(routes[i].name);
        if (n == k && !memcmp(path, routes[i].name, k))
            return routes[i].r;
    }
    if (n > 8 && !memcmp(path, "clients/", 8)) {
        *rest = path + 8;
        *rest_len = n - 8;
        return R_CLIENT;
    }
    return R_NONE;
}

static const char *allowed_methods(enum route r)
{
    switch (r) {
    case R_CLIENT: return "GET, HEAD, DELETE";
    case R_RETAINED: return "GET, HEAD, DELETE";
    case R_PUBLISH: return "POST";
    default: return "GET, HEAD";
    }
}

static void dispatch(struct call *c, const char *path, size_t path_len)
{
    const struct admin_request *rq = c->rq;
    const char *rest = NULL;
    size_t rest_len = 0;
    enum route r = route_of(path, path_len, &rest, &rest_len);
    if (r == R_NONE) {
        char q[84];
        fail(c, 404, "no such API route: %s (see docs/admin.md)", quote(path, path_len, q));
        return;
    }
    const struct mq_listener_config *lc = rq->listener ? rq->listener->cfg : NULL;
    if (!lc || !lc->admin_users) {
        fail(c, 404,
             "the admin API is off on this listener (no admin_user is configured; see "
             "docs/admin.md)");
        return;
    }
    if (rq->body_error != ADMIN_BODY_OK) {
        if (rq->body_error == ADMIN_BODY_TOO_LARGE)
            fail(c, 413, "request body larger than %u bytes", ADMIN_MAX_BODY);
        else if (rq->body_error == ADMIN_BODY_CHUNKED)
            fail(c, 411, "a body must come with a Content-Length (chunked is not accepted)");
        else
            fail(c, 400, "invalid Content-Length");
        return;
    }
    bool get = method_is(rq, "GET") || method_is(rq, "HEAD");
    bool del = method_is(rq, "DELETE"), post = method_is(rq, "POST");
    bool ok = r == R_PUBLISH ? post : (r == R_CLIENT || r == R_RETAINED) ? get || del : get;
    if (!ok) {
        char q[84];
        add_header(c, "Allow: %s\r\n", allowed_methods(r));
        fail(c, 405, "%s is not allowed here (%s)", quote(rq->method, rq->method_len, q),
             allowed_methods(r));
        return;
    }
    if (!get && !same_origin(c))
        return;
    if (!authenticate(c))
        return;
    if (get && rq->body_len) {
        fail(c, 400, "a GET request with a body");
        return;
    }
    switch (r) {
    case R_CLIENTS: get_clients(c); break;
    case R_CLIENT: get ? get_client(c, rest, rest_len) : delete_client(c, rest, rest_len); break;
    case R_SUBS: get_subscriptions(c); break;
    case R_RETAINED: get ? get_retained(c) : delete_retained(c); break;
    case R_PUBLISH: post_publish(c); break;
    case R_BROKER: get_broker(c); break;
    case R_NONE: break;
    }
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void admin_handle(struct mq_admin *a, const struct admin_request *rq, struct admin_response *out)
{
    double t0 = mono_ms();
    a->wall_offset = wall_offset(a->b);
    a->lname_of = NULL; /* listeners may have changed since the last request (reload) */
    memset(out, 0, sizeof(*out));
    struct call c = {.a = a, .rq = rq, .out = out};
    const char *q = memchr(rq->target, '?', rq->target_len);
    size_t path_len = q ? (size_t)(q - rq->target) : rq->target_len;
    if (q) {
        c.query = q + 1;
        c.query_len = rq->target_len - path_len - 1;
    }
    dispatch(&c, rq->target, path_len);
    if (!out->body)
        fail(&c, 500, "no response");
    char m[84], p[84];
    quote(rq->method, rq->method_len, m);
    /* The time the loop spent on it: a page must stay a short step (docs/admin.md). */
    mq_log(MQ_LOG_INFO, "admin %s: %s %s %s -> %d (%.1f ms)", c.authed ? c.user : "(not logged in)",
           rq->peer ? rq->peer : "?", m, quote(rq->target, rq->target_len, p), out->status,
           mono_ms() - t0);
}

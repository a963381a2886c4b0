/* config.c - mosquitto.conf syntax -> struct mq_config.
 *
 * Owns the option table (one row per option: parser, scope, field) and the listener and
 * security resolution Mosquitto 2.0 applies after reading. Reads files and directories,
 * never sockets or the event loop, and reports only through the caller's callback: no
 * global state, every bit of parse state lives in a struct parser on the stack.
 * Invariant: when a public function fails, the caller's struct is zeroed and owns nothing.
 */
#include "midge/config.h"
#include "midge/file.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/log.h"

#define DEFAULT_PORT 1883
#define MAX_VALUES 4               /* values kept per line; more are only counted */
#define MAX_FILE_SIZE (16u << 20)  /* a config file is text: refuse anything bigger */
#define QUOTE_MAX 200              /* longest user text quoted back in a message */
#define NO_LISTENER ((size_t)-1)   /* p->cur when options go to the default listener */
#define MQTT_MAX_PAYLOAD 268435455 /* largest remaining length */
#define MQTT_MAX_PACKET (MQTT_MAX_PAYLOAD + 5)

struct span {
    const char *s;
    size_t n;
};

/* One line split into its option name and whitespace-separated values. */
struct line {
    struct span name;
    struct span val[MAX_VALUES];
    size_t nval;      /* may exceed MAX_VALUES */
    struct span rest; /* everything after the name, trimmed: the value of path options */
};

/* The options per_listener_settings moves between global and listener scope. */
struct sec {
    int8_t allow_anonymous;            /* -1 = not set */
    int8_t allow_zero_length_clientid; /* -1 = not set */
    int8_t accept_any_password;        /* -1 = not set */
    char *password_file;
    char *acl_file;
    char *auto_id_prefix;
};

struct lbuild {
    struct mq_listener_config lc;
    struct sec sec;
};

struct parser {
    struct mq_config *cfg;
    mq_config_report_fn report;
    void *ctx;
    const char *file;
    unsigned line;
    int depth; /* 0 = main file; include_dir is only honoured there */
    unsigned errors;
    bool nomem;

    struct lbuild *ls; /* `listener` blocks in order */
    size_t nls, capls;
    size_t cur;        /* index into ls, or NO_LISTENER */
    struct lbuild def; /* Mosquitto's default listener (port, bind_address, early options) */
    bool def_explicit; /* port or bind_address seen: the default listener exists */
    bool def_touched;  /* some listener option went to the default listener */
    bool port_seen;
    struct sec gsec;    /* security options when per_listener_settings is false */
    bool security_seen; /* per_listener_settings may no longer change */
    bool log_dest_seen, log_type_seen;
    unsigned log_dest, log_types;
    size_t nprefixes;
};

enum scope { S_NONE, S_GLOBAL, S_LISTENER, S_SECURITY, S_DEFAULT };
enum vtype { V_NONE, V_BOOL, V_TRI, V_U16, V_U32, V_U64, V_INT, V_STR, V_STR_LAST };

struct option;
typedef void (*parse_fn)(struct parser *p, const struct option *o, const struct line *l);

struct option {
    const char *name; /* a trailing '*' matches every option with that prefix */
    parse_fn parse;
    enum scope scope; /* which struct offset is relative to */
    size_t offset;
    enum vtype type;
    long long min, max; /* for numbers */
};

/* ---- reporting ---------------------------------------------------------------------- */

static int qlen(size_t n)
{
    return n > QUOTE_MAX ? QUOTE_MAX : (int)n;
}
#define QS(sp) qlen((sp)->n), (sp)->s
#define QZ(z) qlen(strlen(z)), (z)

static void vreport(struct parser *p, bool is_error, bool with_line, const char *fmt, va_list ap)
{
    char buf[2048];
    int n = 0;

    if (is_error)
        p->errors++;
    if (!p->report)
        return;
    if (with_line)
        n = snprintf(buf, sizeof buf, "%s:%u: ", p->file, p->line);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1;
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    p->report(p->ctx, is_error, buf);
}

static void error_at(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void error_at(struct parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(p, true, true, fmt, ap);
    va_end(ap);
}

static void warning_at(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warning_at(struct parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(p, false, true, fmt, ap);
    va_end(ap);
}

/* A diagnostic about a whole file, before any line was read. */
static void file_error(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void file_error(struct parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(p, true, false, fmt, ap);
    va_end(ap);
}

/* ---- small helpers ------------------------------------------------------------------ */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool span_is(const struct span *sp, const char *z)
{
    size_t n = strlen(z);
    return sp->n == n && memcmp(sp->s, z, n) == 0;
}

static char *dup_span(struct parser *p, const struct span *sp)
{
    char *s = strndup(sp->s, sp->n);
    if (!s)
        p->nomem = true;
    return s;
}

/* Copy src (may be NULL) into *dst. Returns false when out of memory. */
static bool dup_str(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return true;
    *dst = strdup(src);
    return *dst != NULL;
}

/* Decimal integer in [min, max]; a leading '-' only, no '+', no blanks, no suffix. */
static bool to_int(const struct span *sp, long long min, long long max, long long *out)
{
    size_t i = 0;
    bool neg = false;
    unsigned long long v = 0;

    if (sp->n > 0 && sp->s[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == sp->n)
        return false;
    for (; i < sp->n; i++) {
        unsigned d = (unsigned)(sp->s[i] - '0');
        if (d > 9 || v > ((unsigned long long)LLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    long long r = neg ? -(long long)v : (long long)v;
    if (r < min || r > max)
        return false;
    *out = r;
    return true;
}

static bool to_bool(const struct span *sp, bool *out)
{
    /* 1 and 0 too: Mosquitto accepts them. */
    if (span_is(sp, "true") || span_is(sp, "1"))
        *out = true;
    else if (span_is(sp, "false") || span_is(sp, "0"))
        *out = false;
    else
        return false;
    return true;
}

/* ---- listeners and security scopes --------------------------------------------------- */

/* Every heap string of a listener, so free and copy cannot forget one. */
static const size_t listener_strings[] = {
    offsetof(struct mq_listener_config, bind_address),
    offsetof(struct mq_listener_config, bind_interface),
    offsetof(struct mq_listener_config, password_file),
    offsetof(struct mq_listener_config, acl_file),
    offsetof(struct mq_listener_config, auto_id_prefix),
    offsetof(struct mq_listener_config, cafile),
    offsetof(struct mq_listener_config, capath),
    offsetof(struct mq_listener_config, certfile),
    offsetof(struct mq_listener_config, keyfile),
    offsetof(struct mq_listener_config, crlfile),
    offsetof(struct mq_listener_config, tls_version),
    offsetof(struct mq_listener_config, ciphers),
    offsetof(struct mq_listener_config, ciphers_tls13),
    offsetof(struct mq_listener_config, websockets_origins),
    offsetof(struct mq_listener_config, http_trusted_proxies),
};
#define N_LISTENER_STRINGS (sizeof listener_strings / sizeof listener_strings[0])

static char **lstr(struct mq_listener_config *lc, size_t i)
{
    return (char **)((char *)lc + listener_strings[i]);
}

static void listener_init(struct mq_listener_config *lc)
{
    memset(lc, 0, sizeof *lc);
    lc->port = DEFAULT_PORT;
    lc->max_connections = -1;
    lc->protocol = MQ_LISTENER_MQTT;
    lc->allow_zero_length_clientid = true;
}

static void listener_free(struct mq_listener_config *lc)
{
    for (size_t i = 0; i < N_LISTENER_STRINGS; i++)
        free(*lstr(lc, i));
    memset(lc, 0, sizeof *lc);
}

/* Deep copy; on failure dst owns nothing. */
static bool listener_copy(struct mq_listener_config *dst, const struct mq_listener_config *src)
{
    *dst = *src;
    for (size_t i = 0; i < N_LISTENER_STRINGS; i++)
        *lstr(dst, i) = NULL;
    for (size_t i = 0; i < N_LISTENER_STRINGS; i++) {
        if (!dup_str(lstr(dst, i), *lstr((struct mq_listener_config *)src, i))) {
            listener_free(dst);
            return false;
        }
    }
    return true;
}

static void sec_init(struct sec *s)
{
    memset(s, 0, sizeof *s);
    s->allow_anonymous = -1;
    s->allow_zero_length_clientid = -1;
    s->accept_any_password = -1;
}

static void sec_free(struct sec *s)
{
    free(s->password_file);
    free(s->acl_file);
    free(s->auto_id_prefix);
    sec_init(s);
}

static struct lbuild *cur_listener(struct parser *p)
{
    if (p->cur == NO_LISTENER) {
        p->def_touched = true;
        return &p->def;
    }
    return &p->ls[p->cur];
}

/* Start a new `listener` block; options that follow go to it. */
static struct lbuild *push_listener(struct parser *p)
{
    if (p->nls == p->capls) {
        size_t cap = p->capls ? p->capls * 2 : 4;
        struct lbuild *v = realloc(p->ls, cap * sizeof *v);
        if (!v) {
            p->nomem = true;
            return NULL;
        }
        p->ls = v;
        p->capls = cap;
    }
    struct lbuild *lb = &p->ls[p->nls];
    listener_init(&lb->lc);
    sec_init(&lb->sec);
    p->cur = p->nls++;
    return lb;
}

/* The field an option row writes, in the scope in force at this line. */
static void *field(struct parser *p, const struct option *o)
{
    char *base = NULL;

    switch (o->scope) {
    case S_GLOBAL: base = (char *)p->cfg; break;
    case S_LISTENER: base = (char *)&cur_listener(p)->lc; break;
    case S_SECURITY:
        p->security_seen = true;
        base = p->cfg->per_listener_settings ? (char *)&cur_listener(p)->sec : (char *)&p->gsec;
        break;
    case S_DEFAULT:
        p->def_explicit = true;
        base = (char *)&p->def.lc;
        break;
    case S_NONE: return NULL;
    }
    return base + o->offset;
}

/* ---- value checks shared by the parsers --------------------------------------------- */

static void extra_value(struct parser *p, const struct line *l, size_t i)
{
    const struct span *v = &l->val[i];
    error_at(p, "%.*s: unexpected extra value \"%.*s\"%s", QS(&l->name), QS(v),
             v->s[0] == '#' ? " (comments must be on a line of their own)" : "");
}

/* True when the line has exactly one value; otherwise reports why not. */
static bool one_value(struct parser *p, const struct line *l)
{
    if (l->nval == 0) {
        error_at(p, "%.*s: missing value", QS(&l->name));
        return false;
    }
    if (l->nval > 1) {
        extra_value(p, l, 1);
        return false;
    }
    return true;
}

/* ---- option parsers ----------------------------------------------------------------- */

static void parse_bool(struct parser *p, const struct option *o, const struct line *l)
{
    bool v;

    if (!one_value(p, l))
        return;
    if (!to_bool(&l->val[0], &v)) {
        error_at(p, "%s: expected true or false, got \"%.*s\"", o->name, QS(&l->val[0]));
        return;
    }
    void *f = field(p, o);
    if (o->type == V_TRI)
        *(int8_t *)f = v;
    else
        *(bool *)f = v;
}

static void parse_number(struct parser *p, const struct option *o, const struct line *l)
{
    long long v;

    if (!one_value(p, l))
        return;
    if (!to_int(&l->val[0], o->min, o->max, &v)) {
        error_at(p, "%s: expected a number from %lld to %lld, got \"%.*s\"", o->name, o->min,
                 o->max, QS(&l->val[0]));
        return;
    }
    void *f = field(p, o);
    switch (o->type) {
    case V_U16: *(uint16_t *)f = (uint16_t)v; break;
    case V_U32: *(uint32_t *)f = (uint32_t)v; break;
    case V_U64: *(uint64_t *)f = (uint64_t)v; break;
    default: *(int *)f = (int)v; break;
    }
}

/* The rest of the line, spaces included, like Mosquitto's path and string options. */
static void parse_string(struct parser *p, const struct option *o, const struct line *l)
{
    if (l->rest.n == 0) {
        error_at(p, "%s: missing value", o->name);
        return;
    }
    char **f = field(p, o);
    if (*f && o->type != V_STR_LAST) {
        error_at(p, "%s: duplicate value, already set to \"%.*s\"", o->name, QZ(*f));
        return;
    }
    char *v = dup_span(p, &l->rest);
    if (!v)
        return;
    free(*f);
    *f = v;
}

/* One entry of an origin list: http(s)://host[:port], an optional trailing '/'. */
static bool is_origin(const char *e, size_t n)
{
    size_t k = n >= 8 && !strncmp(e, "https://", 8)  ? 8
               : n >= 7 && !strncmp(e, "http://", 7) ? 7
                                                     : 0;
    if (!k)
        return false;
    while (n > k && e[n - 1] == '/')
        n--;
    if (n == k)
        return false;
    for (size_t i = k; i < n; i++)
        if (e[i] == '/' || e[i] == '?' || e[i] == '#' || (unsigned char)e[i] <= ' ')
            return false;
    return true;
}

/* One entry of a proxy list: an IPv4 or IPv6 address, optionally /PREFIX. */
static bool is_cidr(const char *e, size_t n)
{
    char tmp[64];
    const char *slash = memchr(e, '/', n);
    size_t alen = slash ? (size_t)(slash - e) : n;
    if (!alen || alen >= sizeof(tmp))
        return false;
    memcpy(tmp, e, alen);
    tmp[alen] = '\0';
    unsigned char buf[16];
    int bits = inet_pton(AF_INET, tmp, buf) == 1    ? 32
               : inet_pton(AF_INET6, tmp, buf) == 1 ? 128
                                                    : 0;
    if (!bits)
        return false;
    if (!slash)
        return true;
    size_t dn = n - alen - 1;
    if (!dn || dn > 3)
        return false;
    int v = 0;
    for (size_t i = 0; i < dn; i++) {
        if (slash[1 + i] < '0' || slash[1 + i] > '9')
            return false;
        v = v * 10 + (slash[1 + i] - '0');
    }
    return v <= bits;
}

/* websockets_origins / http_trusted_proxies: a whitespace- or comma-separated list, each
 * entry checked here so a typo fails at load rather than silently allowing nothing. */
static void parse_list(struct parser *p, const struct option *o, const struct line *l)
{
    bool origins = !strcmp(o->name, "websockets_origins");
    const char *s = l->rest.s, *end = l->rest.s + l->rest.n;
    while (s < end) {
        while (s < end && (*s == ' ' || *s == '\t' || *s == ','))
            s++;
        const char *e = s;
        while (e < end && *e != ' ' && *e != '\t' && *e != ',')
            e++;
        if (e > s && !(origins ? is_origin(s, (size_t)(e - s)) : is_cidr(s, (size_t)(e - s)))) {
            error_at(p, "%s: \"%.*s\" is not %s", o->name, qlen((size_t)(e - s)), s,
                     origins ? "an origin like http://192.168.1.10:9001"
                             : "an IP address or prefix like 192.168.1.0/24");
            return;
        }
        s = e;
    }
    parse_string(p, o, l);
}

static bool to_port(struct parser *p, const struct line *l, uint16_t *port)
{
    long long v;
    if (!to_int(&l->val[0], 0, 65535, &v)) {
        error_at(p, "%.*s: expected a port number from 0 to 65535, got \"%.*s\"", QS(&l->name),
                 QS(&l->val[0]));
        return false;
    }
    *port = (uint16_t)v;
    return true;
}

static void parse_listener(struct parser *p, const struct option *o, const struct line *l)
{
    uint16_t port = 0;
    bool ok;
    (void)o;

    if (l->nval == 0) {
        error_at(p, "listener: missing value");
        return;
    }
    ok = to_port(p, l, &port);
    if (ok && l->nval > 2) {
        extra_value(p, l, 2);
        ok = false;
    }
    if (ok && port != 0) {
        for (size_t i = 0; i < p->nls; i++) {
            const char *b = p->ls[i].lc.bind_address;
            bool same_bind = l->nval == 1 ? !b : b && span_is(&l->val[1], b);
            if (p->ls[i].lc.port == port && same_bind) {
                if (b)
                    error_at(p, "listener: port %u on %.*s is already defined", port, QZ(b));
                else
                    error_at(p, "listener: port %u is already defined", port);
                ok = false;
                break;
            }
        }
    }
    /* A bad line still opens a block, so the options after it do not land elsewhere. */
    struct lbuild *lb = push_listener(p);
    if (!lb || !ok)
        return;
    lb->lc.port = port;
    if (l->nval == 2)
        lb->lc.bind_address = dup_span(p, &l->val[1]);
}

static void parse_port(struct parser *p, const struct option *o, const struct line *l)
{
    uint16_t port;

    if (!one_value(p, l) || !to_port(p, l, &port))
        return;
    if (p->port_seen)
        warning_at(p, "port: set more than once, the last value is used");
    p->port_seen = true;
    *(uint16_t *)field(p, o) = port;
}

static void parse_socket_domain(struct parser *p, const struct option *o, const struct line *l)
{
    int v;

    if (!one_value(p, l))
        return;
    if (span_is(&l->val[0], "ipv4")) {
        v = 4;
    } else if (span_is(&l->val[0], "ipv6")) {
        v = 6;
    } else {
        error_at(p, "socket_domain: expected ipv4 or ipv6, got \"%.*s\"", QS(&l->val[0]));
        return;
    }
    *(int *)field(p, o) = v;
}

/* The one value of an option that takes one of two keywords: 0 for the first, 1 for the
 * second, -1 after reporting anything else. */
static int two_keywords(struct parser *p, const struct line *l, const char *option,
                        const char *first, const char *second)
{
    if (!one_value(p, l))
        return -1;
    if (span_is(&l->val[0], first))
        return 0;
    if (span_is(&l->val[0], second))
        return 1;
    error_at(p, "%s: expected %s or %s, got \"%.*s\"", option, first, second, QS(&l->val[0]));
    return -1;
}

static void parse_protocol(struct parser *p, const struct option *o, const struct line *l)
{
    int k = two_keywords(p, l, "protocol", "mqtt", "websockets");
    if (k >= 0)
        *(enum mq_listener_protocol *)field(p, o) = k ? MQ_LISTENER_WEBSOCKETS : MQ_LISTENER_MQTT;
}

static void parse_durability(struct parser *p, const struct option *o, const struct line *l)
{
    int k = two_keywords(p, l, "persistence_durability", "ack", "relaxed");
    if (k >= 0)
        *(enum mq_durability *)field(p, o) = k ? MQ_DURABILITY_RELAXED : MQ_DURABILITY_ACK;
}

static const struct {
    const char *name;
    unsigned bit;
} log_dests[] = {
    {"stderr", MQ_LOG_DEST_STDERR},
    {"stdout", MQ_LOG_DEST_STDOUT},
    {"syslog", MQ_LOG_DEST_SYSLOG},
    {"topic", MQ_LOG_DEST_TOPIC},
    {"none", 0},
};

static void parse_log_dest(struct parser *p, const struct option *o, const struct line *l)
{
    const struct span *v = &l->val[0];
    struct mq_config *cfg = p->cfg;
    (void)o;

    if (l->nval == 0) {
        error_at(p, "log_dest: missing value");
        return;
    }
    if (span_is(v, "file")) {
        struct span path = {v->s + v->n, (size_t)(l->rest.s + l->rest.n - (v->s + v->n))};
        while (path.n > 0 && is_space(path.s[0])) {
            path.s++;
            path.n--;
        }
        if (path.n == 0) {
            error_at(p, "log_dest: missing path after \"file\"");
            return;
        }
        if (cfg->log_file) {
            error_at(p, "log_dest: only one file destination is allowed, already set to \"%.*s\"",
                     QZ(cfg->log_file));
            return;
        }
        if (!(cfg->log_file = dup_span(p, &path)))
            return;
        p->log_dest |= MQ_LOG_DEST_FILE;
        p->log_dest_seen = true;
        return;
    }
    if (!one_value(p, l))
        return;
    if (span_is(v, "dlt")) {
        warning_at(p, "log_dest: dlt not supported by midge, ignored");
        return;
    }
    for (size_t i = 0; i < sizeof log_dests / sizeof log_dests[0]; i++) {
        if (!span_is(v, log_dests[i].name))
            continue;
        if (log_dests[i].bit == 0) {
            /* none: forget what earlier lines added; later lines add again. */
            p->log_dest = 0;
            free(cfg->log_file);
            cfg->log_file = NULL;
        } else {
            p->log_dest |= log_dests[i].bit;
        }
        p->log_dest_seen = true;
        return;
    }
    error_at(p, "log_dest: expected stdout, stderr, syslog, file, topic or none, got \"%.*s\"",
             QS(v));
}

static const struct {
    const char *name;
    unsigned bits;
} log_types[] = {
    {"error", MQ_LOG_ERR},
    {"warning", MQ_LOG_WARNING},
    {"notice", MQ_LOG_NOTICE},
    {"information", MQ_LOG_INFO},
    {"debug", MQ_LOG_DEBUG},
    {"subscribe", MQ_LOG_SUBSCRIBE},
    {"unsubscribe", MQ_LOG_UNSUBSCRIBE},
    {"all", MQ_LOG_ALL_TYPES},
    {"none", 0},
};

static void parse_log_type(struct parser *p, const struct option *o, const struct line *l)
{
    const struct span *v = &l->val[0];
    (void)o;

    if (!one_value(p, l))
        return;
    if (span_is(v, "websockets") || span_is(v, "internal")) {
        warning_at(p, "log_type: %.*s not supported by midge, ignored", QS(v));
        return;
    }
    for (size_t i = 0; i < sizeof log_types / sizeof log_types[0]; i++) {
        if (!span_is(v, log_types[i].name))
            continue;
        /* all and none replace; the others accumulate, as in Mosquitto. */
        if (log_types[i].bits == 0 || log_types[i].bits == MQ_LOG_ALL_TYPES)
            p->log_types = log_types[i].bits;
        else
            p->log_types |= log_types[i].bits;
        p->log_type_seen = true;
        return;
    }
    error_at(p,
             "log_type: expected error, warning, notice, information, debug, subscribe, "
             "unsubscribe, all or none, got \"%.*s\"",
             QS(v));
}

/* Mosquitto's duration: a positive count and one unit letter; m is a month (30 days). */
static void parse_duration(struct parser *p, const struct option *o, const struct line *l)
{
    static const struct {
        char unit;
        long long seconds;
    } units[] = {
        /* 's' is midge's addition (tests, short-lived demos); the rest are Mosquitto's. */
        {'s', 1},         {'h', 3600},       {'d', 86400},
        {'w', 7 * 86400}, {'m', 30 * 86400}, {'y', 365 * 86400},
    };
    const struct span *v = &l->val[0];
    long long count, mult = 0;

    if (!one_value(p, l))
        return;
    if (v->n >= 2) {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (v->s[v->n - 1] == units[i].unit)
                mult = units[i].seconds;
    }
    struct span digits = {v->s, v->n - 1};
    if (mult == 0 || digits.s[0] == '-' || !to_int(&digits, 1, LLONG_MAX / mult, &count)) {
        error_at(p, "%s: expected a duration like 30s, 1h, 2d, 1w, 1m or 1y, got \"%.*s\"", o->name,
                 QS(v));
        return;
    }
    *(int64_t *)field(p, o) = (int64_t)(count * mult);
}

static void parse_per_listener(struct parser *p, const struct option *o, const struct line *l)
{
    bool v;

    if (!one_value(p, l))
        return;
    if (!to_bool(&l->val[0], &v)) {
        error_at(p, "%s: expected true or false, got \"%.*s\"", o->name, QS(&l->val[0]));
        return;
    }
    if (v != p->cfg->per_listener_settings && p->security_seen) {
        error_at(p, "per_listener_settings: must come before any allow_anonymous, password_file, "
                    "acl_file, allow_zero_length_clientid or auto_id_prefix line");
        return;
    }
    p->cfg->per_listener_settings = v;
}

/* Each line adds one prefix (Mosquitto takes a single one; a list costs nothing). */
static void parse_clientid_prefix(struct parser *p, const struct option *o, const struct line *l)
{
    struct mq_config *cfg = p->cfg;

    if (l->rest.n == 0) {
        error_at(p, "%s: missing value", o->name);
        return;
    }
    char **v = realloc(cfg->clientid_prefixes, (p->nprefixes + 2) * sizeof *v);
    if (!v) {
        p->nomem = true;
        return;
    }
    cfg->clientid_prefixes = v;
    v[p->nprefixes] = NULL;
    if (!(v[p->nprefixes] = dup_span(p, &l->rest)))
        return;
    v[++p->nprefixes] = NULL;
}

static void parse_unsupported(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    warning_at(p, "%.*s: not supported by midge, ignored", QS(&l->name));
}

static void parse_text(struct parser *p, const char *name, const char *text, size_t len, int depth);
static void parse_include_dir(struct parser *p, const struct option *o, const struct line *l);

/* ---- the option table --------------------------------------------------------------- */

#define G(f) S_GLOBAL, offsetof(struct mq_config, f)
#define L(f) S_LISTENER, offsetof(struct mq_listener_config, f)
#define SEC(f) S_SECURITY, offsetof(struct sec, f)
#define DEF(f) S_DEFAULT, offsetof(struct mq_listener_config, f)
#define NOF S_NONE, 0, V_NONE
#define UNSUPPORTED(name)                                                                          \
    {                                                                                              \
        name, parse_unsupported, NOF, 0, 0                                                         \
    }

static const struct option options[] = {
    /* Global options. */
    {"autosave_interval", parse_number, G(autosave_interval), V_U32, 0, INT32_MAX},
    {"clientid_prefixes", parse_clientid_prefix, NOF, 0, 0},
    {"connect_timeout", parse_number, G(connect_timeout), V_U32, 1, 3600},
    {"connection_messages", parse_bool, G(connection_messages), V_BOOL, 0, 0},
    {"tls_handshake_threads", parse_number, G(tls_handshake_threads), V_U32, 0, 64},
    {"max_topic_levels", parse_number, G(max_topic_levels), V_U32, 0, 65535},
    {"memory_limit", parse_number, G(memory_limit), V_U64, 0, INT64_MAX},
    {"client_output_limit", parse_number, G(client_output_limit), V_U64, 0, INT64_MAX},
    {"include_dir", parse_include_dir, NOF, 0, 0},
    {"log_dest", parse_log_dest, NOF, 0, 0},
    {"log_timestamp", parse_bool, G(log_timestamp), V_BOOL, 0, 0},
    {"log_timestamp_format", parse_string, G(log_timestamp_format), V_STR, 0, 0},
    {"log_type", parse_log_type, NOF, 0, 0},
    {"max_inflight_messages", parse_number, G(max_inflight_messages), V_U32, 0, 65535},
    {"max_keepalive", parse_number, G(max_keepalive), V_U16, 0, 65535},
    {"max_packet_size", parse_number, G(max_packet_size), V_U32, 20, MQTT_MAX_PACKET},
    {"max_queued_bytes", parse_number, G(max_queued_bytes), V_U64, 0, INT64_MAX},
    {"max_queued_messages", parse_number, G(max_queued_messages), V_U32, 0, INT32_MAX},
    {"message_size_limit", parse_number, G(message_size_limit), V_U32, 0, MQTT_MAX_PAYLOAD},
    {"per_listener_settings", parse_per_listener, G(per_listener_settings), V_BOOL, 0, 0},
    {"persistence", parse_bool, G(persistence), V_BOOL, 0, 0},
    {"persistence_durability", parse_durability, G(persistence_durability), V_NONE, 0, 0},
    {"persistence_file", parse_string, G(persistence_file), V_STR, 0, 0},
    {"persistence_location", parse_string, G(persistence_location), V_STR, 0, 0},
    {"persistent_client_expiration", parse_duration, G(persistent_client_expiration), V_NONE, 0, 0},
    {"pid_file", parse_string, G(pid_file), V_STR, 0, 0},
    {"queue_qos0_messages", parse_bool, G(queue_qos0_messages), V_BOOL, 0, 0},
    {"retain_available", parse_bool, G(retain_available), V_BOOL, 0, 0},
    {"sys_interval", parse_number, G(sys_interval), V_U32, 0, 65535},
    {"upgrade_outgoing_qos", parse_bool, G(upgrade_outgoing_qos), V_BOOL, 0, 0},
    {"user", parse_string, G(user), V_STR_LAST, 0, 0},

    /* Security: global, or the current listener's with per_listener_settings true. */
    {"acl_file", parse_string, SEC(acl_file), V_STR, 0, 0},
    {"allow_anonymous", parse_bool, SEC(allow_anonymous), V_TRI, 0, 0},
    {"allow_zero_length_clientid", parse_bool, SEC(allow_zero_length_clientid), V_TRI, 0, 0},
    {"accept_any_password", parse_bool, SEC(accept_any_password), V_TRI, 0, 0},
    {"auto_id_prefix", parse_string, SEC(auto_id_prefix), V_STR, 0, 0},
    {"password_file", parse_string, SEC(password_file), V_STR, 0, 0},

    /* The default listener only (Mosquitto: "only applicable to the default listener"). */
    {"bind_address", parse_string, DEF(bind_address), V_STR, 0, 0},
    {"port", parse_port, DEF(port), V_NONE, 0, 0},

    /* The current listener: the last `listener` of this file, else the default listener. */
    {"listener", parse_listener, NOF, 0, 0},
    {"bind_interface", parse_string, L(bind_interface), V_STR, 0, 0},
    {"max_connections", parse_number, L(max_connections), V_INT, -1, INT32_MAX},
    {"protocol", parse_protocol, L(protocol), V_NONE, 0, 0},
    {"socket_domain", parse_socket_domain, L(socket_domain), V_NONE, 0, 0},
    {"cafile", parse_string, L(cafile), V_STR, 0, 0},
    {"capath", parse_string, L(capath), V_STR, 0, 0},
    {"certfile", parse_string, L(certfile), V_STR, 0, 0},
    {"ciphers", parse_string, L(ciphers), V_STR, 0, 0},
    {"ciphers_tls1.3", parse_string, L(ciphers_tls13), V_STR, 0, 0},
    {"crlfile", parse_string, L(crlfile), V_STR, 0, 0},
    {"keyfile", parse_string, L(keyfile), V_STR, 0, 0},
    {"require_certificate", parse_bool, L(require_certificate), V_BOOL, 0, 0},
    {"tls_version", parse_string, L(tls_version), V_STR, 0, 0},
    {"use_identity_as_username", parse_bool, L(use_identity_as_username), V_BOOL, 0, 0},
    {"websockets_origins", parse_list, L(websockets_origins), V_STR, 0, 0},
    {"http_trusted_proxies", parse_list, L(http_trusted_proxies), V_STR, 0, 0},
    {"websockets_max_frame_size", parse_number, L(websockets_max_frame_size), V_U32, 0, UINT32_MAX},

    /* Mosquitto options midge knows but does not implement: warned about, ignored. */
    UNSUPPORTED("accept_protocol_versions"),
    UNSUPPORTED("allow_duplicate_messages"),
    UNSUPPORTED("auth_plugin"),
    UNSUPPORTED("auth_plugin_deny_special_chars"),
    UNSUPPORTED("autosave_on_changes"),
    UNSUPPORTED("check_retain_source"),
    UNSUPPORTED("dhparamfile"),
    UNSUPPORTED("disable_client_cert_date_checks"),
    UNSUPPORTED("enable_control_api"),
    UNSUPPORTED("global_max_clients"),
    UNSUPPORTED("global_max_connections"),
    UNSUPPORTED("global_plugin"),
    UNSUPPORTED("http_dir"),
    UNSUPPORTED("log_facility"),
    UNSUPPORTED("max_inflight_bytes"),
    UNSUPPORTED("max_qos"),
    UNSUPPORTED("max_topic_alias"),
    UNSUPPORTED("max_topic_alias_broker"),
    UNSUPPORTED("mount_point"),
    UNSUPPORTED("plugin"),
    UNSUPPORTED("psk_file"),
    UNSUPPORTED("psk_hint"),
    UNSUPPORTED("retry_interval"),
    UNSUPPORTED("set_tcp_nodelay"),
    UNSUPPORTED("store_clean_interval"),
    UNSUPPORTED("tls_engine"),
    UNSUPPORTED("tls_engine_kpass_sha1"),
    UNSUPPORTED("tls_keyform"),
    UNSUPPORTED("use_subject_as_username"),
    UNSUPPORTED("use_username_as_clientid"),
    UNSUPPORTED("websockets_headers_size"),
    UNSUPPORTED("websockets_log_level"),
    UNSUPPORTED("websockets_origin"),
    /* Bridges. */
    UNSUPPORTED("address"),
    UNSUPPORTED("addresses"),
    UNSUPPORTED("cleansession"),
    UNSUPPORTED("clientid"),
    UNSUPPORTED("connection"),
    UNSUPPORTED("idle_timeout"),
    UNSUPPORTED("keepalive_interval"),
    UNSUPPORTED("local_cleansession"),
    UNSUPPORTED("local_clientid"),
    UNSUPPORTED("local_password"),
    UNSUPPORTED("local_username"),
    UNSUPPORTED("notification_topic"),
    UNSUPPORTED("notifications"),
    UNSUPPORTED("notifications_local_only"),
    UNSUPPORTED("password"),
    UNSUPPORTED("remote_clientid"),
    UNSUPPORTED("remote_password"),
    UNSUPPORTED("remote_username"),
    UNSUPPORTED("restart_timeout"),
    UNSUPPORTED("round_robin"),
    UNSUPPORTED("start_type"),
    UNSUPPORTED("threshold"),
    UNSUPPORTED("topic"),
    UNSUPPORTED("try_private"),
    UNSUPPORTED("username"),
    /* Prefix rows last, so exact names win. */
    UNSUPPORTED("bridge_*"),
    UNSUPPORTED("auth_opt_*"),
    UNSUPPORTED("plugin_opt_*"),
};

static const struct option *find_option(const struct span *name)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const char *n = options[i].name;
        size_t k = strlen(n);
        if (n[k - 1] == '*') {
            if (name->n >= k - 1 && memcmp(name->s, n, k - 1) == 0)
                return &options[i];
        } else if (span_is(name, n)) {
            return &options[i];
        }
    }
    return NULL;
}

/* ---- lines, files and include_dir --------------------------------------------------- */

static void parse_line(struct parser *p, const char *s, size_t n)
{
    struct line l;
    size_t i = 0;

    while (n > 0 && is_space(s[n - 1]))
        n--;
    while (i < n && is_space(s[i]))
        i++;
    if (i == n || s[i] == '#')
        return;
    if (memchr(s, '\0', n)) {
        error_at(p, "line contains a NUL byte");
        return;
    }
    memset(&l, 0, sizeof l);
    l.name.s = s + i;
    while (i < n && !is_space(s[i]))
        i++;
    l.name.n = (size_t)(s + i - l.name.s);
    while (i < n && is_space(s[i]))
        i++;
    l.rest.s = s + i;
    l.rest.n = n - i;
    while (i < n) {
        size_t start = i;
        while (i < n && !is_space(s[i]))
            i++;
        if (l.nval < MAX_VALUES)
            l.val[l.nval] = (struct span){s + start, i - start};
        l.nval++;
        while (i < n && is_space(s[i]))
            i++;
    }
    const struct option *o = find_option(&l.name);
    if (!o) {
        error_at(p, "unknown option \"%.*s\"", QS(&l.name));
        return;
    }
    o->parse(p, o, &l);
}

/* Each file starts in the default listener's scope, as in Mosquitto. */
static void parse_text(struct parser *p, const char *name, const char *text, size_t len, int depth)
{
    const char *saved_file = p->file;
    unsigned saved_line = p->line;
    int saved_depth = p->depth;
    size_t saved_cur = p->cur;
    size_t pos = 0;

    p->file = name;
    p->line = 0;
    p->depth = depth;
    p->cur = NO_LISTENER;
    while (pos < len && !p->nomem) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        p->line++;
        parse_line(p, s, n);
    }
    p->file = saved_file;
    p->line = saved_line;
    p->depth = saved_depth;
    p->cur = saved_cur;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.conf in the directory, in byte order (C locale), each with its own file:line. */
static void parse_include_dir(struct parser *p, const struct option *o, const struct line *l)
{
    DIR *dir = NULL;
    char *path = NULL, *file = NULL, *text = NULL;
    char **names = NULL;
    size_t nnames = 0, cap = 0;
    struct dirent *de;
    (void)o;

    if (p->depth > 0) {
        warning_at(p, "include_dir: only read from the main configuration file, ignored");
        return;
    }
    if (l->rest.n == 0) {
        error_at(p, "include_dir: missing value");
        return;
    }
    if (!(path = dup_span(p, &l->rest)))
        goto out;
    if (!(dir = opendir(path))) {
        error_at(p, "include_dir: cannot open directory %.*s: %s", QZ(path), strerror(errno));
        goto out;
    }
    while ((de = readdir(dir)) != NULL) {
        size_t k = strlen(de->d_name);
        if (k <= 5 || strcmp(de->d_name + k - 5, ".conf") != 0)
            continue;
        if (nnames == cap) {
            cap = cap ? cap * 2 : 8;
            char **v = realloc(names, cap * sizeof *v);
            if (!v) {
                p->nomem = true;
                goto out;
            }
            names = v;
        }
        if (!(names[nnames] = strdup(de->d_name))) {
            p->nomem = true;
            goto out;
        }
        nnames++;
    }
    if (nnames > 1)
        qsort(names, nnames, sizeof *names, cmp_names);
    for (size_t i = 0; i < nnames && !p->nomem; i++) {
        size_t plen = strlen(path);
        const char *sep = plen > 0 && path[plen - 1] == '/' ? "" : "/";
        size_t len;
        const char *op = "open";
        int err = 0;

        free(file);
        if (asprintf(&file, "%s%s%s", path, sep, names[i]) < 0) {
            file = NULL;
            p->nomem = true;
            goto out;
        }
        int rc = file_read_all(file, MAX_FILE_SIZE, &text, &len, &op, &err);
        if (rc == MQ_ERR_NOMEM) {
            p->nomem = true;
            goto out;
        }
        if (rc) {
            error_at(p, "include_dir: cannot %s %.*s: %s", op, QZ(file), strerror(err));
            continue;
        }
        parse_text(p, file, text, len, p->depth + 1);
        free(text);
        text = NULL;
    }

out:
    if (dir)
        closedir(dir);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    free(file);
    free(text);
    free(path);
}

/* ---- resolution after the last line ------------------------------------------------- */

/* Fill a final listener's security fields from its own settings or the global ones. */
static bool resolve_security(struct parser *p, struct mq_listener_config *lc, const struct sec *own,
                             bool local_only)
{
    const struct sec *s = p->cfg->per_listener_settings ? own : &p->gsec;

    lc->allow_anonymous = s->allow_anonymous >= 0 ? s->allow_anonymous : local_only;
    lc->allow_zero_length_clientid =
        s->allow_zero_length_clientid >= 0 ? s->allow_zero_length_clientid : true;
    lc->accept_any_password = s->accept_any_password > 0;
    free(lc->password_file);
    free(lc->acl_file);
    free(lc->auto_id_prefix);
    lc->password_file = lc->acl_file = lc->auto_id_prefix = NULL;
    return dup_str(&lc->password_file, s->password_file) && dup_str(&lc->acl_file, s->acl_file) &&
           dup_str(&lc->auto_id_prefix, s->auto_id_prefix ? s->auto_id_prefix : "auto-");
}

/* Strings with defaults are filled last so the parser can tell "set twice" from "default". */
static int fill_string_defaults(struct mq_config *cfg)
{
    if (!cfg->auto_id_prefix && !(cfg->auto_id_prefix = strdup("auto-")))
        return MQ_ERR_NOMEM;
    if (!cfg->persistence_file && !(cfg->persistence_file = strdup("midge.db")))
        return MQ_ERR_NOMEM;
    return 0;
}

static void scalar_defaults(struct mq_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->allow_zero_length_clientid = true;
    cfg->max_inflight_messages = 20;
    cfg->max_queued_messages = 1000;
    cfg->max_keepalive = 65535;
    cfg->connect_timeout = 10;
    cfg->max_topic_levels = 1024;
    cfg->client_output_limit = 8u << 20;
    cfg->retain_available = true;
    cfg->sys_interval = 10;
    cfg->autosave_interval = 1800;
    cfg->log_dest = MQ_LOG_DEST_STDERR;
    cfg->log_types = MQ_LOG_DEFAULT_TYPES;
    cfg->log_timestamp = true;
    cfg->connection_messages = true;
}

/* Mosquitto 2.0's listener rules (see config.h and docs/configuration.md). */
static int build_listeners(struct parser *p)
{
    struct mq_config *cfg = p->cfg;
    bool add_default = p->def_explicit || (p->def_touched && p->nls > 0);
    bool local_only = !add_default && p->nls == 0;
    size_t n = p->nls + (add_default ? 1 : 0) + (local_only ? 2 : 0);

    cfg->listeners = calloc(n, sizeof *cfg->listeners);
    if (!cfg->listeners)
        return MQ_ERR_NOMEM;
    for (size_t i = 0; i < p->nls; i++) {
        struct mq_listener_config *lc = &cfg->listeners[cfg->listener_count++];
        *lc = p->ls[i].lc;
        memset(&p->ls[i].lc, 0, sizeof p->ls[i].lc);
        if (!resolve_security(p, lc, &p->ls[i].sec, false))
            return MQ_ERR_NOMEM;
    }
    if (add_default) {
        struct mq_listener_config *lc = &cfg->listeners[cfg->listener_count++];
        *lc = p->def.lc;
        memset(&p->def.lc, 0, sizeof p->def.lc);
        if (!resolve_security(p, lc, &p->def.sec, false))
            return MQ_ERR_NOMEM;
    }
    if (local_only) {
        static const struct {
            const char *addr;
            int domain;
        } loopback[] = {{"127.0.0.1", 4}, {"::1", 6}};
        for (size_t i = 0; i < 2; i++) {
            int want = p->def.lc.socket_domain;
            if (want != 0 && want != loopback[i].domain)
                continue;
            struct mq_listener_config *lc = &cfg->listeners[cfg->listener_count];
            if (!listener_copy(lc, &p->def.lc))
                return MQ_ERR_NOMEM;
            cfg->listener_count++;
            lc->port = DEFAULT_PORT;
            lc->socket_domain = loopback[i].domain;
            lc->shares_port = i > 0 && cfg->listener_count > 1;
            if (!(lc->bind_address = strdup(loopback[i].addr)) ||
                !resolve_security(p, lc, &p->def.sec, true))
                return MQ_ERR_NOMEM;
        }
    }
    return 0;
}

static int finish(struct parser *p)
{
    struct mq_config *cfg = p->cfg;
    int rc;

    if (p->nomem)
        return MQ_ERR_NOMEM;
    if (p->errors)
        return MQ_ERR_CONFIG;
    if (p->log_dest_seen)
        cfg->log_dest = p->log_dest;
    if (p->log_type_seen)
        cfg->log_types = p->log_types;
    if ((rc = build_listeners(p)) != 0)
        return rc;
    /* The global copies (the listeners already hold their effective values). */
    if (p->gsec.allow_zero_length_clientid >= 0)
        cfg->allow_zero_length_clientid = p->gsec.allow_zero_length_clientid;
    if (!dup_str(&cfg->auto_id_prefix, p->gsec.auto_id_prefix))
        return MQ_ERR_NOMEM;
    return fill_string_defaults(cfg);
}

static void parser_free(struct parser *p)
{
    for (size_t i = 0; i < p->nls; i++) {
        listener_free(&p->ls[i].lc);
        sec_free(&p->ls[i].sec);
    }
    free(p->ls);
    listener_free(&p->def.lc);
    sec_free(&p->def.sec);
    sec_free(&p->gsec);
}

static void parser_init(struct parser *p, struct mq_config *cfg, mq_config_report_fn report,
                        void *ctx)
{
    memset(p, 0, sizeof *p);
    p->cfg = cfg;
    p->report = report;
    p->ctx = ctx;
    p->cur = NO_LISTENER;
    listener_init(&p->def.lc);
    sec_init(&p->def.sec);
    sec_init(&p->gsec);
    scalar_defaults(cfg);
    cfg->from_file = true;
}

/* Parse main-file text and resolve; on failure *cfg is zeroed. */
static int parse_main(struct parser *p, const char *name, const char *text, size_t len)
{
    int rc;

    parse_text(p, name, text, len, 0);
    rc = finish(p);
    if (rc == MQ_ERR_NOMEM && p->report)
        p->report(p->ctx, true, "out of memory while reading the configuration");
    parser_free(p);
    if (rc)
        config_free(p->cfg);
    return rc;
}

/* ---- public API (contracts in config.h) --------------------------------------------- */

/* Defaults only: no listeners, from_file false. */
int config_defaults(struct mq_config *cfg)
{
    scalar_defaults(cfg);
    if (fill_string_defaults(cfg) != 0) {
        config_free(cfg);
        return MQ_ERR_NOMEM;
    }
    return 0;
}

/* Parse in-memory text as a main configuration file named name. */
int config_parse_string(const char *text, size_t len, const char *name, struct mq_config *cfg,
                        mq_config_report_fn report, void *ctx)
{
    struct parser p;

    parser_init(&p, cfg, report, ctx);
    return parse_main(&p, name, text, len);
}

/* Read and parse the file at path; a file that cannot be read is one reported error. */
int config_load(const char *path, struct mq_config *cfg, mq_config_report_fn report, void *ctx)
{
    struct parser p;
    char *text = NULL;
    size_t len;
    const char *op = "open";
    int err = 0, rc;

    parser_init(&p, cfg, report, ctx);
    rc = file_read_all(path, MAX_FILE_SIZE, &text, &len, &op, &err);
    if (rc == MQ_ERR_IO) {
        file_error(&p, "cannot %s %s: %s", op, path, strerror(err));
        rc = MQ_ERR_CONFIG;
    }
    if (rc) {
        parser_free(&p);
        config_free(cfg);
        return rc;
    }
    rc = parse_main(&p, path, text, len);
    free(text);
    return rc;
}

/* The no-config-file setup: loopback listeners at port, anonymous allowed. */
int config_local_only(struct mq_config *cfg, uint16_t port)
{
    static const char *const addrs[] = {"127.0.0.1", "::1"};

    if (config_defaults(cfg) != 0)
        return MQ_ERR_NOMEM;
    cfg->from_file = false;
    cfg->listeners = calloc(2, sizeof *cfg->listeners);
    if (!cfg->listeners)
        goto fail;
    for (size_t i = 0; i < 2; i++) {
        struct mq_listener_config *lc = &cfg->listeners[cfg->listener_count++];
        listener_init(lc);
        lc->port = port;
        lc->socket_domain = i == 0 ? 4 : 6;
        lc->shares_port = i > 0;
        lc->allow_anonymous = true;
        if (!(lc->bind_address = strdup(addrs[i])) || !(lc->auto_id_prefix = strdup("auto-")))
            goto fail;
    }
    return 0;

fail:
    config_free(cfg);
    return MQ_ERR_NOMEM;
}

/* Free everything *cfg owns (safe on a zeroed struct) and zero it. */
void config_free(struct mq_config *cfg)
{
    for (size_t i = 0; i < cfg->listener_count; i++)
        listener_free(&cfg->listeners[i]);
    free(cfg->listeners);
    if (cfg->clientid_prefixes) {
        for (char **s = cfg->clientid_prefixes; *s; s++)
            free(*s);
        free(cfg->clientid_prefixes);
    }
    free(cfg->auto_id_prefix);
    free(cfg->persistence_location);
    free(cfg->persistence_file);
    free(cfg->log_file);
    free(cfg->log_timestamp_format);
    free(cfg->user);
    free(cfg->pid_file);
    memset(cfg, 0, sizeof *cfg);
}

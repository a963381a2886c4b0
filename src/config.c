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
#include <unistd.h>

#include "midge/err.h"
#include "midge/log.h"
#include "midge/topic.h"

#define DEFAULT_PORT 1883
#define MAX_VALUES 5               /* values kept per line (a bridge topic has 5); more counted */
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
    char *admin_users; /* admin_user lines, one name per line */
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
    const char *main_file; /* the file config_load was given, for whole-file messages */
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
    size_t cur_bridge; /* index into cfg->bridges of the current `connection`, or NO_BRIDGE */
    size_t bridge_cap;
};

#define NO_BRIDGE ((size_t)-1)

enum scope { S_NONE, S_GLOBAL, S_LISTENER, S_SECURITY, S_DEFAULT, S_BRIDGE };
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

/* A diagnostic about the whole configuration (no line to point at). */
static void vreport_plain(struct parser *p, bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void vreport_plain(struct parser *p, bool is_error, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (is_error)
        p->errors++;
    if (p->report) {
        char line[1200];
        snprintf(line, sizeof line, "%s: %s", p->main_file ? p->main_file : "(configuration)", msg);
        p->report(p->ctx, is_error, line);
    }
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
    offsetof(struct mq_listener_config, admin_users),
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
    free(s->admin_users);
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
    case S_BRIDGE: base = (char *)&p->cfg->bridges[p->cur_bridge]; break;
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

/* admin_user NAME: one more user of password_file who may use the admin API (repeatable,
 * like Mosquitto's list options). Kept as one string, a name per line: a name may hold
 * spaces, never a newline or a colon (password files split on the colon). */
static void parse_admin_user(struct parser *p, const struct option *o, const struct line *l)
{
    const struct span *v = &l->rest;
    if (v->n == 0) {
        error_at(p, "%s: missing value (a user name of password_file)", o->name);
        return;
    }
    if (memchr(v->s, ':', v->n) || v->n > 1024) {
        error_at(p, "%s: \"%.*s\" cannot be a user name of a password file (%s)", o->name, QS(v),
                 v->n > 1024 ? "longer than 1024 bytes" : "it contains a colon");
        return;
    }
    char **f = field(p, o);
    size_t old = *f ? strlen(*f) : 0;
    char *n = realloc(*f, old + (old ? 1 : 0) + v->n + 1);
    if (!n) {
        p->nomem = true;
        return;
    }
    if (old)
        n[old++] = '\n';
    memcpy(n + old, v->s, v->n);
    n[old + v->n] = '\0';
    *f = n;
}

static void parse_unsupported(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    warning_at(p, "%.*s: not supported by midge, ignored", QS(&l->name));
}

/* ---- bridges (docs/bridge.md) ------------------------------------------------------- */

/* A diagnostic about a whole bridge section, at its `connection` line. */
static void bridge_error(struct parser *p, const struct mq_bridge_config *bc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bridge_error(struct parser *p, const struct mq_bridge_config *bc, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    file_error(p, "%s:%u: connection %.*s: %s", bc->file, bc->line, QZ(bc->name), msg);
}

static void bridge_topic_free(struct mq_bridge_topic *t)
{
    free(t->pattern);
    free(t->local_prefix);
    free(t->remote_prefix);
    free(t->local);
    free(t->remote);
}

static void bridge_free(struct mq_bridge_config *bc)
{
    free(bc->name);
    free(bc->file);
    for (size_t i = 0; i < bc->address_count; i++) {
        free(bc->addresses[i].host);
        free(bc->addresses[i].path);
    }
    free(bc->addresses);
    for (size_t i = 0; i < bc->topic_count; i++)
        bridge_topic_free(&bc->topics[i]);
    free(bc->topics);
    char **strs[] = {&bc->remote_username,
                     &bc->remote_password,
                     &bc->remote_clientid,
                     &bc->local_clientid,
                     &bc->notification_topic,
                     &bc->bind_address,
                     &bc->cafile,
                     &bc->capath,
                     &bc->certfile,
                     &bc->keyfile,
                     &bc->tls_version,
                     &bc->alpn,
                     &bc->identity,
                     &bc->psk};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    memset(bc, 0, sizeof *bc);
}

/* The current bridge, or NULL after reporting that option o needs one. */
static struct mq_bridge_config *cur_bridge(struct parser *p, const struct line *l)
{
    if (p->cur_bridge != NO_BRIDGE)
        return &p->cfg->bridges[p->cur_bridge];
    error_at(p,
             "%.*s: a bridge option outside a bridge section (start one with \"connection "
             "NAME\")",
             QS(&l->name));
    return NULL;
}

/* `connection NAME`: a new bridge section; the bridge options that follow belong to it. */
static void parse_connection(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    if (!one_value(p, l))
        return;
    struct mq_config *cfg = p->cfg;
    const struct span *name = &l->val[0];
    bool dup = false;
    for (size_t i = 0; i < cfg->bridge_count && !dup; i++)
        dup = span_is(name, cfg->bridges[i].name);
    if (cfg->bridge_count == p->bridge_cap) {
        size_t cap = p->bridge_cap ? p->bridge_cap * 2 : 4;
        struct mq_bridge_config *v = realloc(cfg->bridges, cap * sizeof *v);
        if (!v) {
            p->nomem = true;
            return;
        }
        cfg->bridges = v;
        p->bridge_cap = cap;
    }
    /* Opened even when the name is bad, so the options after it do not land elsewhere. */
    struct mq_bridge_config *bc = &cfg->bridges[cfg->bridge_count++];
    memset(bc, 0, sizeof *bc);
    p->cur_bridge = cfg->bridge_count - 1;
    bc->local_cleansession = -1;
    bc->keepalive = 60;
    bc->restart_base = 5;
    bc->restart_cap = 30;
    bc->idle_timeout = 60;
    bc->threshold = 10;
    bc->notifications = true;
    bc->try_private = true;
    bc->protocol_version = 4;
    bc->outgoing_retain = true;
    bc->attempt_unsubscribe = true;
    bc->session_expiry = -1;
    bc->line = p->line;
    if (!(bc->name = dup_span(p, name)) || !(bc->file = strdup(p->file))) {
        p->nomem = true;
        return;
    }
    if (dup) {
        error_at(p, "connection: a bridge named \"%.*s\" is already defined", QS(name));
        return;
    }
    /* The name goes into topics ($SYS/broker/connection/NAME/state) and client ids. */
    for (size_t i = 0; i < name->n; i++) {
        char c = name->s[i];
        if (c == '+' || c == '#' || c == '/' || (unsigned char)c < 0x20) {
            error_at(p,
                     "connection: the name \"%.*s\" may not contain '+', '#', '/' or control "
                     "characters (it is part of the notification topic)",
                     QS(name));
            return;
        }
    }
}

/* Generic bridge options: the value parsers of the global ones, into the current bridge. */
static void parse_bridge_value(struct parser *p, const struct option *o, const struct line *l)
{
    if (!cur_bridge(p, l))
        return;
    switch (o->type) {
    case V_BOOL:
    case V_TRI: parse_bool(p, o, l); break;
    case V_STR:
    case V_STR_LAST: parse_string(p, o, l); break;
    default: parse_number(p, o, l); break;
    }
}

/* One address: host, host:port, [v6], [v6]:port, v6:port (Mosquitto: with an IPv6 address
 * the port is not optional), ws://host[:port][/path], wss://... */
static bool parse_one_address(struct parser *p, const struct span *v, struct mq_bridge_address *a)
{
    const char *s = v->s, *end = v->s + v->n;
    uint8_t scheme = MQ_BRIDGE_MQTT;
    uint16_t port = 1883;
    if (v->n > 5 && !strncmp(s, "ws://", 5)) {
        scheme = MQ_BRIDGE_WS;
        s += 5;
        port = 80;
    } else if (v->n > 6 && !strncmp(s, "wss://", 6)) {
        scheme = MQ_BRIDGE_WSS;
        s += 6;
        port = 443;
    } else if (memmem(s, v->n, "://", 3)) {
        error_at(p,
                 "address: \"%.*s\": only ws:// and wss:// URLs are understood (plain MQTT "
                 "is host[:port], TLS is host[:port] with bridge_cafile or bridge_capath)",
                 QS(v));
        return false;
    }
    const char *path = NULL;
    if (scheme != MQ_BRIDGE_MQTT) {
        path = memchr(s, '/', (size_t)(end - s));
        if (path) {
            for (const char *c = path; c < end; c++)
                if ((unsigned char)*c <= ' ' || *c == '#') {
                    error_at(p, "address: \"%.*s\": the path may not contain spaces or '#'", QS(v));
                    return false;
                }
        }
    }
    const char *hend = path ? path : end;
    const char *host = s, *colon = NULL;
    size_t hlen;
    if (host < hend && *host == '[') {
        const char *close = memchr(host, ']', (size_t)(hend - host));
        if (!close || close == host + 1) {
            error_at(p, "address: \"%.*s\": unterminated or empty [IPv6 address]", QS(v));
            return false;
        }
        if (close + 1 < hend && close[1] != ':') {
            error_at(p, "address: \"%.*s\": expected ':' after ']'", QS(v));
            return false;
        }
        colon = close + 1 < hend ? close + 1 : NULL;
        host++;
        hlen = (size_t)(close - host);
    } else {
        for (const char *c = hend; c > host; c--)
            if (c[-1] == ':') {
                colon = c - 1;
                break;
            }
        hlen = (size_t)((colon ? colon : hend) - host);
    }
    if (colon) {
        struct span ps = {colon + 1, (size_t)(hend - colon - 1)};
        long long n;
        if (!to_int(&ps, 1, 65535, &n)) {
            error_at(p, "address: \"%.*s\": expected a port number from 1 to 65535 after ':'",
                     QS(v));
            return false;
        }
        port = (uint16_t)n;
    }
    if (!hlen) {
        error_at(p, "address: \"%.*s\": no host", QS(v));
        return false;
    }
    a->scheme = scheme;
    a->port = port;
    a->host = strndup(host, hlen);
    a->path = scheme == MQ_BRIDGE_MQTT ? NULL
              : path                   ? strndup(path, (size_t)(end - path))
                                       : strdup("/mqtt");
    if (!a->host || (scheme != MQ_BRIDGE_MQTT && !a->path)) {
        free(a->host);
        free(a->path);
        p->nomem = true;
        return false;
    }
    return true;
}

/* `address`/`addresses`: one or more addresses on one line (more lines add to them). */
static void parse_address(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    struct mq_bridge_config *bc = cur_bridge(p, l);
    if (!bc)
        return;
    if (l->nval == 0) {
        error_at(p, "%.*s: missing value", QS(&l->name));
        return;
    }
    const char *s = l->rest.s, *end = l->rest.s + l->rest.n;
    while (s < end) {
        while (s < end && is_space(*s))
            s++;
        const char *e = s;
        while (e < end && !is_space(*e))
            e++;
        if (e == s)
            break;
        if (*s == '#') {
            error_at(p, "%.*s: unexpected \"%.*s\" (comments must be on a line of their own)",
                     QS(&l->name), qlen((size_t)(end - s)), s);
            return;
        }
        struct mq_bridge_address *v =
            realloc(bc->addresses, (bc->address_count + 1) * sizeof *bc->addresses);
        if (!v) {
            p->nomem = true;
            return;
        }
        bc->addresses = v;
        struct span one = {s, (size_t)(e - s)};
        memset(&v[bc->address_count], 0, sizeof *v);
        if (!parse_one_address(p, &one, &v[bc->address_count]))
            return;
        bc->address_count++;
        s = e;
    }
}

static bool is_empty_marker(const struct span *v)
{
    return span_is(v, "\"\"");
}

/* A prefix + pattern as a filter on one side; NULL (after reporting) when invalid. */
static char *bridge_filter(struct parser *p, const char *prefix, const char *pattern,
                           const char *side)
{
    size_t n = (prefix ? strlen(prefix) : 0) + (pattern ? strlen(pattern) : 0);
    char *f = malloc(n + 1);
    if (!f) {
        p->nomem = true;
        return NULL;
    }
    snprintf(f, n + 1, "%s%s", prefix ? prefix : "", pattern ? pattern : "");
    if (!n || n > 65535 || topic_check_filter((const uint8_t *)f, n) != 0) {
        error_at(p,
                 "topic: the %s prefix and the pattern make \"%.*s\", which is not a valid "
                 "topic filter",
                 side, QZ(f));
        free(f);
        return NULL;
    }
    return f;
}

/* `topic pattern [[[out|in|both] qos] local-prefix remote-prefix]`, every form of
 * mosquitto.conf(5), "" standing for an empty pattern or prefix. */
static void parse_topic(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    struct mq_bridge_config *bc = cur_bridge(p, l);
    if (!bc)
        return;
    if (l->nval == 0) {
        error_at(p, "topic: missing value");
        return;
    }
    if (l->nval > 5) {
        error_at(p,
                 "topic: %zu values, at most 5 are allowed (pattern, direction, QoS, local "
                 "prefix, remote prefix)",
                 l->nval);
        return;
    }
    struct mq_bridge_topic t = {.direction = MQ_BRIDGE_OUT, .qos = 0};
    if (l->nval >= 2) {
        const struct span *d = &l->val[1];
        if (span_is(d, "out"))
            t.direction = MQ_BRIDGE_OUT;
        else if (span_is(d, "in"))
            t.direction = MQ_BRIDGE_IN;
        else if (span_is(d, "both"))
            t.direction = MQ_BRIDGE_BOTH;
        else {
            error_at(p, "topic: expected in, out or both after the pattern, got \"%.*s\"", QS(d));
            return;
        }
    }
    if (l->nval >= 3) {
        long long q;
        if (!to_int(&l->val[2], 0, 2, &q)) {
            error_at(p, "topic: expected a QoS of 0, 1 or 2, got \"%.*s\"", QS(&l->val[2]));
            return;
        }
        t.qos = (uint8_t)q;
    }
    const struct span *pat = &l->val[0];
    bool ok = true;
    if (!is_empty_marker(pat) && !(t.pattern = dup_span(p, pat)))
        ok = false;
    /* Prefixes are topic names: no wildcards, valid UTF-8. */
    for (size_t i = 3; ok && i < l->nval; i++) {
        const struct span *v = &l->val[i];
        if (is_empty_marker(v))
            continue;
        if (topic_check_name((const uint8_t *)v->s, v->n) != 0) {
            error_at(p, "topic: the %s prefix \"%.*s\" is not a valid topic name (no wildcards)",
                     i == 3 ? "local" : "remote", QS(v));
            ok = false;
            break;
        }
        char **dst = i == 3 ? &t.local_prefix : &t.remote_prefix;
        if (!(*dst = dup_span(p, v)))
            ok = false;
    }
    if (ok && !t.pattern && (!t.local_prefix || !t.remote_prefix)) {
        /* mosquitto.conf(5)'s table: "" as the pattern needs both prefixes. */
        error_at(p, "topic: with \"\" as the pattern both a local and a remote prefix are "
                    "needed (the prefixes are then the whole topics)");
        ok = false;
    }
    if (ok && t.pattern && topic_check_filter((const uint8_t *)t.pattern, strlen(t.pattern))) {
        error_at(p, "topic: \"%.*s\" is not a valid topic filter", QZ(t.pattern));
        ok = false;
    }
    if (ok && (t.direction & MQ_BRIDGE_OUT) &&
        ((t.remote_prefix && !strncmp(t.remote_prefix, "$share/", 7)) ||
         (!t.remote_prefix && t.pattern && !strncmp(t.pattern, "$share/", 7)))) {
        error_at(p, "topic: a $share/ remote side only works for in lines (messages are not "
                    "published to a shared subscription)");
        ok = false;
    }
    if (ok && !(t.local = bridge_filter(p, t.local_prefix, t.pattern, "local")))
        ok = false;
    if (ok && !(t.remote = bridge_filter(p, t.remote_prefix, t.pattern, "remote")))
        ok = false;
    if (ok) {
        struct mq_bridge_topic *v = realloc(bc->topics, (bc->topic_count + 1) * sizeof *v);
        if (!v) {
            p->nomem = true;
            ok = false;
        } else {
            bc->topics = v;
            v[bc->topic_count++] = t;
            return;
        }
    }
    bridge_topic_free(&t);
}

/* `restart_timeout constant` or `restart_timeout base cap` (decorrelated jitter). */
static void parse_restart_timeout(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    struct mq_bridge_config *bc = cur_bridge(p, l);
    if (!bc)
        return;
    if (l->nval == 0 || l->nval > 2) {
        if (l->nval > 2)
            extra_value(p, l, 2);
        else
            error_at(p, "restart_timeout: missing value");
        return;
    }
    long long base, cap = 0;
    if (!to_int(&l->val[0], 1, 86400, &base) ||
        (l->nval == 2 && !to_int(&l->val[1], 1, 86400, &cap))) {
        error_at(p,
                 "restart_timeout: expected seconds from 1 to 86400 (\"constant\" or \"base "
                 "cap\"), got \"%.*s\"",
                 QS(&l->rest));
        return;
    }
    if (l->nval == 2 && cap < base) {
        error_at(p, "restart_timeout: the cap (%lld) is smaller than the base (%lld)", cap, base);
        return;
    }
    bc->restart_base = (uint32_t)base;
    bc->restart_cap = (uint32_t)cap;
}

static void parse_start_type(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    struct mq_bridge_config *bc = cur_bridge(p, l);
    if (!bc || !one_value(p, l))
        return;
    if (span_is(&l->val[0], "automatic"))
        bc->start_type = MQ_BRIDGE_AUTOMATIC;
    else if (span_is(&l->val[0], "lazy"))
        bc->start_type = MQ_BRIDGE_LAZY;
    else if (span_is(&l->val[0], "once"))
        bc->start_type = MQ_BRIDGE_ONCE;
    else if (span_is(&l->val[0], "manual"))
        error_at(p, "start_type: manual is RSMB's and not supported (Mosquitto does not have it "
                    "either); use automatic, lazy or once");
    else
        error_at(p, "start_type: expected automatic, lazy or once, got \"%.*s\"", QS(&l->val[0]));
}

static void parse_bridge_version(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    struct mq_bridge_config *bc = cur_bridge(p, l);
    if (!bc || !one_value(p, l))
        return;
    if (span_is(&l->val[0], "mqttv31"))
        bc->protocol_version = 3;
    else if (span_is(&l->val[0], "mqttv311"))
        bc->protocol_version = 4;
    else if (span_is(&l->val[0], "mqttv50"))
        bc->protocol_version = 5;
    else
        error_at(p, "bridge_protocol_version: expected mqttv31, mqttv311 or mqttv50, got \"%.*s\"",
                 QS(&l->val[0]));
}

/* keepalive_interval: Mosquitto raises anything under 5 seconds to 5. */
static void parse_bridge_keepalive(struct parser *p, const struct option *o, const struct line *l)
{
    struct mq_bridge_config *bc = cur_bridge(p, l);
    long long v;
    if (!bc || !one_value(p, l))
        return;
    if (!to_int(&l->val[0], 0, 65535, &v)) {
        error_at(p, "%s: expected seconds from 5 to 65535, got \"%.*s\"", o->name, QS(&l->val[0]));
        return;
    }
    if (v < 5) {
        warning_at(p, "%s: %lld is under the minimum of 5 seconds, 5 is used", o->name, v);
        v = 5;
    }
    bc->keepalive = (uint16_t)v;
}

static void parse_notification_topic(struct parser *p, const struct option *o, const struct line *l)
{
    if (!cur_bridge(p, l) || !one_value(p, l))
        return;
    if (topic_check_name((const uint8_t *)l->val[0].s, l->val[0].n)) {
        error_at(p, "notification_topic: \"%.*s\" is not a valid topic name", QS(&l->val[0]));
        return;
    }
    parse_string(p, o, l);
}

static void parse_bridge_tls_version(struct parser *p, const struct option *o, const struct line *l)
{
    if (!cur_bridge(p, l) || !one_value(p, l))
        return;
    const struct span *v = &l->val[0];
    if (!span_is(v, "tlsv1.3") && !span_is(v, "tlsv1.2") && !span_is(v, "tlsv1.1")) {
        error_at(p, "bridge_tls_version: expected tlsv1.3, tlsv1.2 or tlsv1.1, got \"%.*s\"",
                 QS(v));
        return;
    }
    parse_string(p, o, l);
}

/* bridge_psk: the key in hexadecimal, without "0x". */
static void parse_bridge_psk(struct parser *p, const struct option *o, const struct line *l)
{
    if (!cur_bridge(p, l) || !one_value(p, l))
        return;
    const struct span *v = &l->val[0];
    bool hex = v->n >= 2 && v->n % 2 == 0 && v->n <= 512;
    for (size_t i = 0; hex && i < v->n; i++)
        hex = (v->s[i] >= '0' && v->s[i] <= '9') || (v->s[i] >= 'a' && v->s[i] <= 'f') ||
              (v->s[i] >= 'A' && v->s[i] <= 'F');
    if (!hex) {
        error_at(p, "bridge_psk: expected the key in hexadecimal (an even number of 0-9a-f, at "
                    "most 512, no \"0x\")");
        return;
    }
    parse_string(p, o, l);
}

/* bridge_require_ocsp: false is what midge does; true is refused (no OCSP checking). */
static void parse_bridge_ocsp(struct parser *p, const struct option *o, const struct line *l)
{
    bool v;
    (void)o;
    if (!cur_bridge(p, l) || !one_value(p, l))
        return;
    if (!to_bool(&l->val[0], &v)) {
        error_at(p, "bridge_require_ocsp: expected true or false, got \"%.*s\"", QS(&l->val[0]));
        return;
    }
    if (v)
        error_at(p, "bridge_require_ocsp: midge's bridges do not check OCSP responses; refusing "
                    "to start a bridge that would run without the check you asked for (remove "
                    "the line or set it to false)");
}

/* Options midge's bridges do not implement: refused with the reason, never ignored. */
static void parse_bridge_refused(struct parser *p, const struct option *o, const struct line *l)
{
    (void)o;
    if (!cur_bridge(p, l))
        return;
    if (span_is(&l->name, "local_username") || span_is(&l->name, "local_password"))
        error_at(p,
                 "%.*s: not supported: a bridge's local side is inside midge and is not "
                 "checked against the password file or the ACL; remove the line",
                 QS(&l->name));
    else
        error_at(p,
                 "%.*s: not implemented by midge's bridges (docs/bridge.md lists the options "
                 "they take); remove the line",
                 QS(&l->name));
}

/* After the last line: the defaults that depend on other options, and what a section needs. */
static void finish_bridges(struct parser *p)
{
    struct mq_config *cfg = p->cfg;
    char host[256];
    if (gethostname(host, sizeof host))
        snprintf(host, sizeof host, "midge");
    host[sizeof host - 1] = '\0';
    /* After a bad line a section may lack what that line would have given it: the checks
     * of what is missing would only repeat that error. */
    bool clean = !p->errors;
    for (size_t i = 0; i < cfg->bridge_count && !p->nomem; i++) {
        struct mq_bridge_config *bc = &cfg->bridges[i];
        if (!bc->address_count && clean)
            bridge_error(p, bc, "no address (add \"address host[:port]\")");
        if (!bc->topic_count && clean)
            bridge_error(p, bc, "no topic (add at least one \"topic pattern [in|out|both]\")");
        if (bc->remote_password && !bc->remote_username)
            bridge_error(p, bc, "remote_password is set but remote_username is not");
        if (!bc->certfile != !bc->keyfile)
            bridge_error(p, bc, "%s is set but %s is not (a client certificate needs both)",
                         bc->certfile ? "bridge_certfile" : "bridge_keyfile",
                         bc->certfile ? "bridge_keyfile" : "bridge_certfile");
        if (!bc->psk != !bc->identity)
            bridge_error(p, bc, "%s is set but %s is not (PSK needs both)",
                         bc->psk ? "bridge_psk" : "bridge_identity",
                         bc->psk ? "bridge_identity" : "bridge_psk");
        if (bc->psk && (bc->cafile || bc->capath || bc->certfile))
            bridge_error(p, bc,
                         "bridge_psk and certificates (bridge_cafile, bridge_capath, "
                         "bridge_certfile) are both set: use one or the other");
        bool wss = false;
        for (size_t k = 0; k < bc->address_count; k++)
            wss |= bc->addresses[k].scheme == MQ_BRIDGE_WSS;
        if (!config_bridge_tls(bc) && !wss) {
            const char *opt = bc->certfile      ? "bridge_certfile"
                              : bc->insecure    ? "bridge_insecure"
                              : bc->tls_version ? "bridge_tls_version"
                              : bc->alpn        ? "bridge_alpn"
                                                : NULL;
            if (opt)
                bridge_error(p, bc,
                             "%s is set but neither bridge_cafile nor bridge_capath is: the "
                             "connection would not use TLS (add bridge_capath /etc/ssl/certs for "
                             "the system's CAs, or remove %s)",
                             opt, opt);
        }
        if (bc->protocol_version != 5 && (bc->receive_maximum || bc->session_expiry >= 0))
            bridge_error(p, bc, "%s needs bridge_protocol_version mqttv50",
                         bc->receive_maximum ? "bridge_receive_maximum"
                                             : "bridge_session_expiry_interval");
        if (!bc->remote_clientid &&
            asprintf(&bc->remote_clientid, "%s.%s", host, bc->name ? bc->name : "") < 0) {
            bc->remote_clientid = NULL;
            p->nomem = true;
        }
        if (bc->remote_clientid && !bc->local_clientid &&
            asprintf(&bc->local_clientid, "local.%s", bc->remote_clientid) < 0) {
            bc->local_clientid = NULL;
            p->nomem = true;
        }
        if (!bc->notification_topic &&
            asprintf(&bc->notification_topic, "$SYS/broker/connection/%s/state",
                     bc->name ? bc->name : "") < 0) {
            bc->notification_topic = NULL;
            p->nomem = true;
        }
        if (bc->local_cleansession < 0)
            bc->local_cleansession = bc->cleansession;
        for (size_t k = 0; k < i && bc->local_clientid && clean; k++)
            if (cfg->bridges[k].local_clientid &&
                !strcmp(cfg->bridges[k].local_clientid, bc->local_clientid))
                bridge_error(p, bc, "local_clientid \"%.*s\" is also the one of connection %.*s",
                             QZ(bc->local_clientid), QZ(cfg->bridges[k].name));
    }
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

bool config_bridge_equal(const struct mq_bridge_config *a, const struct mq_bridge_config *b)
{
    if (a->address_count != b->address_count || a->topic_count != b->topic_count)
        return false;
    for (size_t i = 0; i < a->address_count; i++) {
        const struct mq_bridge_address *x = &a->addresses[i], *y = &b->addresses[i];
        if (!str_eq(x->host, y->host) || !str_eq(x->path, y->path) || x->port != y->port ||
            x->scheme != y->scheme)
            return false;
    }
    for (size_t i = 0; i < a->topic_count; i++) {
        const struct mq_bridge_topic *x = &a->topics[i], *y = &b->topics[i];
        if (!str_eq(x->pattern, y->pattern) || !str_eq(x->local_prefix, y->local_prefix) ||
            !str_eq(x->remote_prefix, y->remote_prefix) || x->direction != y->direction ||
            x->qos != y->qos)
            return false;
    }
    const char *sa[] = {a->name,
                        a->remote_username,
                        a->remote_password,
                        a->remote_clientid,
                        a->local_clientid,
                        a->notification_topic,
                        a->bind_address,
                        a->cafile,
                        a->capath,
                        a->certfile,
                        a->keyfile,
                        a->tls_version,
                        a->alpn,
                        a->identity,
                        a->psk};
    const char *sb[] = {b->name,
                        b->remote_username,
                        b->remote_password,
                        b->remote_clientid,
                        b->local_clientid,
                        b->notification_topic,
                        b->bind_address,
                        b->cafile,
                        b->capath,
                        b->certfile,
                        b->keyfile,
                        b->tls_version,
                        b->alpn,
                        b->identity,
                        b->psk};
    for (size_t i = 0; i < sizeof sa / sizeof sa[0]; i++)
        if (!str_eq(sa[i], sb[i]))
            return false;
    return a->round_robin == b->round_robin && a->cleansession == b->cleansession &&
           a->local_cleansession == b->local_cleansession && a->keepalive == b->keepalive &&
           a->restart_base == b->restart_base && a->restart_cap == b->restart_cap &&
           a->start_type == b->start_type && a->idle_timeout == b->idle_timeout &&
           a->threshold == b->threshold && a->notifications == b->notifications &&
           a->notifications_local_only == b->notifications_local_only &&
           a->try_private == b->try_private && a->protocol_version == b->protocol_version &&
           a->outgoing_retain == b->outgoing_retain &&
           a->attempt_unsubscribe == b->attempt_unsubscribe &&
           a->max_packet_size == b->max_packet_size && a->receive_maximum == b->receive_maximum &&
           a->session_expiry == b->session_expiry && a->insecure == b->insecure;
}

static void parse_text(struct parser *p, const char *name, const char *text, size_t len, int depth);
static void parse_include_dir(struct parser *p, const struct option *o, const struct line *l);

/* ---- the option table --------------------------------------------------------------- */

#define G(f) S_GLOBAL, offsetof(struct mq_config, f)
#define L(f) S_LISTENER, offsetof(struct mq_listener_config, f)
#define SEC(f) S_SECURITY, offsetof(struct sec, f)
#define DEF(f) S_DEFAULT, offsetof(struct mq_listener_config, f)
#define NOF S_NONE, 0, V_NONE
#define B(f) S_BRIDGE, offsetof(struct mq_bridge_config, f)
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
    {"max_qos", parse_number, G(max_qos), V_U16, 0, 2},
    {"max_topic_alias", parse_number, G(max_topic_alias), V_U16, 0, 65535},
    {"max_topic_alias_broker", parse_number, G(max_topic_alias_broker), V_U16, 0, 65535},
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
    {"response_information", parse_string, G(response_information), V_STR, 0, 0},
    {"retain_available", parse_bool, G(retain_available), V_BOOL, 0, 0},
    {"sys_interval", parse_number, G(sys_interval), V_U32, 0, 65535},
    {"upgrade_outgoing_qos", parse_bool, G(upgrade_outgoing_qos), V_BOOL, 0, 0},
    {"user", parse_string, G(user), V_STR_LAST, 0, 0},

    /* Security: global, or the current listener's with per_listener_settings true. */
    {"acl_file", parse_string, SEC(acl_file), V_STR, 0, 0},
    {"admin_user", parse_admin_user, SEC(admin_users), V_STR, 0, 0},
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

    /* Bridges: `connection NAME` starts a section; these options belong to the last one. */
    {"connection", parse_connection, NOF, 0, 0},
    {"address", parse_address, NOF, 0, 0},
    {"addresses", parse_address, NOF, 0, 0},
    {"topic", parse_topic, NOF, 0, 0},
    {"round_robin", parse_bridge_value, B(round_robin), V_BOOL, 0, 0},
    {"remote_username", parse_bridge_value, B(remote_username), V_STR, 0, 0},
    {"username", parse_bridge_value, B(remote_username), V_STR, 0, 0},
    {"remote_password", parse_bridge_value, B(remote_password), V_STR, 0, 0},
    {"password", parse_bridge_value, B(remote_password), V_STR, 0, 0},
    {"remote_clientid", parse_bridge_value, B(remote_clientid), V_STR, 0, 0},
    {"clientid", parse_bridge_value, B(remote_clientid), V_STR, 0, 0},
    {"local_clientid", parse_bridge_value, B(local_clientid), V_STR, 0, 0},
    {"cleansession", parse_bridge_value, B(cleansession), V_BOOL, 0, 0},
    {"local_cleansession", parse_bridge_value, B(local_cleansession), V_TRI, 0, 0},
    {"keepalive_interval", parse_bridge_keepalive, B(keepalive), V_NONE, 0, 0},
    {"restart_timeout", parse_restart_timeout, NOF, 0, 0},
    {"start_type", parse_start_type, NOF, 0, 0},
    {"idle_timeout", parse_bridge_value, B(idle_timeout), V_U32, 1, 86400 * 365},
    {"threshold", parse_bridge_value, B(threshold), V_U32, 1, INT32_MAX},
    {"notifications", parse_bridge_value, B(notifications), V_BOOL, 0, 0},
    {"notifications_local_only", parse_bridge_value, B(notifications_local_only), V_BOOL, 0, 0},
    {"notification_topic", parse_notification_topic, B(notification_topic), V_STR, 0, 0},
    {"try_private", parse_bridge_value, B(try_private), V_BOOL, 0, 0},
    {"bridge_protocol_version", parse_bridge_version, NOF, 0, 0},
    {"bridge_outgoing_retain", parse_bridge_value, B(outgoing_retain), V_BOOL, 0, 0},
    {"bridge_attempt_unsubscribe", parse_bridge_value, B(attempt_unsubscribe), V_BOOL, 0, 0},
    {"bridge_max_packet_size", parse_bridge_value, B(max_packet_size), V_U32, 0, MQTT_MAX_PACKET},
    {"bridge_receive_maximum", parse_bridge_value, B(receive_maximum), V_U16, 1, 65535},
    {"bridge_session_expiry_interval", parse_bridge_value, B(session_expiry), V_U64, 0, UINT32_MAX},
    {"bridge_bind_address", parse_bridge_value, B(bind_address), V_STR, 0, 0},
    {"bridge_cafile", parse_bridge_value, B(cafile), V_STR, 0, 0},
    {"bridge_capath", parse_bridge_value, B(capath), V_STR, 0, 0},
    {"bridge_certfile", parse_bridge_value, B(certfile), V_STR, 0, 0},
    {"bridge_keyfile", parse_bridge_value, B(keyfile), V_STR, 0, 0},
    {"bridge_insecure", parse_bridge_value, B(insecure), V_BOOL, 0, 0},
    {"bridge_tls_version", parse_bridge_tls_version, B(tls_version), V_STR, 0, 0},
    {"bridge_alpn", parse_bridge_value, B(alpn), V_STR, 0, 0},
    {"bridge_identity", parse_bridge_value, B(identity), V_STR, 0, 0},
    {"bridge_psk", parse_bridge_psk, B(psk), V_STR, 0, 0},
    {"bridge_require_ocsp", parse_bridge_ocsp, NOF, 0, 0},
    {"local_username", parse_bridge_refused, NOF, 0, 0},
    {"local_password", parse_bridge_refused, NOF, 0, 0},

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
    /* Prefix rows last, so exact names win. */
    {"bridge_*", parse_bridge_refused, NOF, 0, 0},
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
    free(lc->admin_users);
    lc->password_file = lc->acl_file = lc->auto_id_prefix = lc->admin_users = NULL;
    return dup_str(&lc->password_file, s->password_file) && dup_str(&lc->acl_file, s->acl_file) &&
           dup_str(&lc->auto_id_prefix, s->auto_id_prefix ? s->auto_id_prefix : "auto-") &&
           dup_str(&lc->admin_users, s->admin_users);
}

static bool is_loopback_name(const char *a)
{
    return a && (!strncmp(a, "127.", 4) || !strcmp(a, "::1") || !strcmp(a, "localhost"));
}

/* The admin API (docs/admin.md) is served by websockets listeners whose admin_user list is
 * not empty, to users of their password_file: one without a password file could never log
 * in, which is a mistake worth refusing; one without a websockets listener is a warning,
 * and so is one on a plain-HTTP listener reachable from the network (Basic authentication
 * sends the password readable by anyone on the way). */
static void check_admin(struct parser *p)
{
    struct mq_config *cfg = p->cfg;
    bool any = false, served = false;
    for (size_t i = 0; i < cfg->listener_count; i++) {
        const struct mq_listener_config *lc = &cfg->listeners[i];
        if (!lc->admin_users)
            continue;
        any = true;
        if (lc->protocol != MQ_LISTENER_WEBSOCKETS)
            continue;
        served = true;
        if (!lc->password_file)
            vreport_plain(p, true,
                          "admin_user: listener %u has admin users but no password_file to "
                          "check their passwords against (docs/admin.md)",
                          lc->port);
        else if (!lc->certfile && !is_loopback_name(lc->bind_address))
            vreport_plain(p, false,
                          "admin_user: the admin API of websockets listener %u is plain HTTP "
                          "and not bound to loopback: its passwords cross the network "
                          "unencrypted (add certfile/keyfile for https://, or bind_address "
                          "127.0.0.1)",
                          lc->port);
    }
    if (any && !served)
        vreport_plain(p, false,
                      "admin_user: no listener with admin users has protocol websockets, so "
                      "the admin API is not served anywhere (docs/admin.md)");
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
    cfg->max_qos = 2;
    cfg->max_topic_alias = 10;
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
    finish_bridges(p);
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
    check_admin(p);
    if (p->errors)
        return MQ_ERR_CONFIG;
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
    p->cur_bridge = NO_BRIDGE;
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

    p->main_file = name;
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
    free(cfg->response_information);
    for (size_t i = 0; i < cfg->bridge_count; i++)
        bridge_free(&cfg->bridges[i]);
    free(cfg->bridges);
    memset(cfg, 0, sizeof *cfg);
}

/* acl.c - Mosquitto acl_file parsing and access checks (user / topic / pattern with %u, %c).
 *
 * Owns struct mq_acl: the anonymous section, one entry list per user (hash map by name) and the
 * pattern list; strings and compiled patterns live in one arena freed with the ACL. Touches no
 * socket, event loop or OpenSSL. Invariants: a loaded ACL never changes; every stored filter
 * passed topic_check_filter and is at most 65535 bytes; each list keeps its deny entries apart
 * from its grants, because Mosquitto tries denies first and a grant only ever allows, so a
 * check never depends on line order inside a list.
 */
#include "midge/acl.h"
#include "midge/file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/hmap.h"
#include "midge/topic.h"

#define MAX_FILE_SIZE (64u << 20) /* an ACL file larger than this is a mistake, not a policy */
#define MAX_STRING 65535u         /* MQTT strings (filters, user names) are at most this long */
#define MAX_REPORTS 50            /* diagnostics per load, then one "more not shown" line */
#define QUOTE_MAX 80              /* bytes of user text shown in a message */
#define ACCESS_RW (MQ_ACL_READ | MQ_ACL_WRITE)

/* ---- arena: every string and compiled pattern of one ACL, freed at once ---- */

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
};

struct arena {
    struct arena_block *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(struct arena *a)
{
    while (a->head) {
        struct arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* ---- the loaded ACL ---- */

enum piece_kind { PIECE_TEXT, PIECE_USER, PIECE_CLIENT };

/* A filter is a sequence of pieces: literal text, or %u / %c replaced at check time. A `topic`
 * entry is one text piece; substitution is textual, as in Mosquitto 2.0 ("dev_%c" works). */
struct piece {
    uint32_t kind; /* enum piece_kind */
    uint32_t off;  /* PIECE_TEXT: bytes text[off, off + len) of the entry */
    uint32_t len;
};

struct entry {
    const uint8_t *text; /* the filter as written (arena) */
    const struct piece *pieces;
    uint32_t text_len;
    uint32_t npieces;
    uint8_t access; /* MQ_ACL_READ / MQ_ACL_WRITE bits; 0 = deny */
    bool uses_user; /* contains %u: never applies to a client without a user name */
};

struct list {
    struct entry *deny, *grant; /* malloc'd arrays */
    uint32_t ndeny, ngrant, capdeny, capgrant;
};

struct user {
    struct list list;
    size_t name_len;
    char name[]; /* the hash map key */
};

struct mq_acl {
    struct mq_hmap users; /* name -> struct user * */
    struct list anon;     /* `topic` lines before the first `user` line */
    struct list patterns;
    struct arena arena;
    size_t nentries;
};

static void list_free(struct list *l)
{
    free(l->deny);
    free(l->grant);
}

void acl_free(struct mq_acl *acl)
{
    if (!acl)
        return;
    uint32_t pos = 0;
    struct user *u;
    const void *key;
    size_t key_len;
    while ((u = hmap_next(&acl->users, &pos, &key, &key_len)))
        list_free(&u->list);
    hmap_destroy(&acl->users);
    list_free(&acl->anon);
    list_free(&acl->patterns);
    arena_free(&acl->arena);
    free(acl);
}

size_t acl_user_count(const struct mq_acl *acl)
{
    return acl ? hmap_count(&acl->users) : 0;
}

size_t acl_entry_count(const struct mq_acl *acl)
{
    return acl ? acl->nentries : 0;
}

static int list_add(struct list *l, const struct entry *e)
{
    struct entry **v = e->access ? &l->grant : &l->deny;
    uint32_t *n = e->access ? &l->ngrant : &l->ndeny;
    uint32_t *cap = e->access ? &l->capgrant : &l->capdeny;
    if (*n == *cap) {
        if (*cap >= UINT32_MAX / 2)
            return MQ_ERR_NOMEM;
        uint32_t ncap = *cap ? *cap * 2 : 4;
        struct entry *nv = realloc(*v, (size_t)ncap * sizeof *nv);
        if (!nv)
            return MQ_ERR_NOMEM;
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = *e;
    return 0;
}

/* ---- parser ---- */

struct parser {
    const char *name;
    mq_acl_report_fn report;
    void *ctx;
    size_t line; /* 1-based; 0 while no line is being read */
    unsigned errors;
    unsigned shown; /* diagnostics passed to the callback */
    struct mq_acl *acl;
    struct list *section; /* where `topic` lines go: &acl->anon, then the current user's */
};

static void report(struct parser *ps, bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct parser *ps, bool is_error, const char *fmt, ...)
{
    if (is_error)
        ps->errors++;
    if (!ps->report)
        return;
    if (ps->shown >= MAX_REPORTS) {
        if (ps->shown == MAX_REPORTS) {
            ps->shown++;
            char out[512];
            snprintf(out, sizeof out, "%s: more errors or warnings not shown", ps->name);
            ps->report(ps->ctx, false, out);
        }
        return;
    }
    ps->shown++;
    char msg[640], out[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ps->line)
        snprintf(out, sizeof out, "%s:%zu: %s", ps->name, ps->line, msg);
    else
        snprintf(out, sizeof out, "%s: %s", ps->name, msg);
    ps->report(ps->ctx, is_error, out);
}

/* User text for a log line: printable ASCII kept, the rest as \xNN, cut at QUOTE_MAX bytes. */
static const char *quote(char *buf, size_t cap, const uint8_t *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < QUOTE_MAX && o + 5 < cap; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7F && s[i] != '\\' && s[i] != '"')
            buf[o++] = (char)s[i];
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", s[i]);
    }
    if (n > QUOTE_MAX && o + 4 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

#define QUOTE_BUF (QUOTE_MAX * 4 + 8)

/* isspace() of the C locale, which is what Mosquitto trims lines and filters with. */
static bool is_space(uint8_t c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static bool word_is(const uint8_t *w, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(w, lit, n) == 0;
}

static int parse_access(const uint8_t *w, size_t n)
{
    if (word_is(w, n, "read"))
        return MQ_ACL_READ;
    if (word_is(w, n, "write"))
        return MQ_ACL_WRITE;
    if (word_is(w, n, "readwrite"))
        return ACCESS_RW;
    if (word_is(w, n, "deny"))
        return 0;
    return -1;
}

static int user_line(struct parser *ps, const uint8_t *s, size_t n)
{
    char q[QUOTE_BUF];
    /* Mosquitto: the rest of the line, blanks trimmed; it may contain spaces. */
    while (n && is_space(s[0])) {
        s++;
        n--;
    }
    if (n == 0) {
        report(ps, true, "user line has no user name");
        return 0;
    }
    if (n > MAX_STRING) {
        report(ps, true, "user name \"%s\" is longer than %u bytes", quote(q, sizeof q, s, n),
               MAX_STRING);
        return 0;
    }
    struct user *u = hmap_get(&ps->acl->users, s, n);
    if (!u) {
        /* A repeated section adds to the first one, as in Mosquitto. */
        u = arena_alloc(&ps->acl->arena, sizeof *u + n + 1);
        if (!u)
            return MQ_ERR_NOMEM;
        memset(&u->list, 0, sizeof u->list);
        u->name_len = n;
        memcpy(u->name, s, n);
        u->name[n] = '\0';
        if (hmap_put(&ps->acl->users, u->name, n, u))
            return MQ_ERR_NOMEM;
    }
    ps->section = &u->list;
    return 0;
}

/* Split a pattern into text / %u / %c pieces, scanning left to right like Mosquitto's
 * substitution loop ("%%u" is a '%' then the user name). */
static int compile_pattern(struct parser *ps, struct entry *e)
{
    uint32_t count = 0;
    for (int pass = 0; pass < 2; pass++) {
        struct piece *pc = NULL;
        if (pass == 1) {
            pc = arena_alloc(&ps->acl->arena, (size_t)count * sizeof *pc);
            if (!pc)
                return MQ_ERR_NOMEM;
            e->pieces = pc;
            e->npieces = count;
        }
        uint32_t k = 0, start = 0;
        for (uint32_t i = 0; i <= e->text_len; i++) {
            bool subst = i + 1 < e->text_len && e->text[i] == '%' &&
                         (e->text[i + 1] == 'u' || e->text[i + 1] == 'c');
            if (!subst && i < e->text_len)
                continue;
            if (i > start) {
                if (pc)
                    pc[k] = (struct piece){PIECE_TEXT, start, i - start};
                k++;
            }
            if (subst) {
                bool user = e->text[i + 1] == 'u';
                if (pc)
                    pc[k] = (struct piece){user ? PIECE_USER : PIECE_CLIENT, 0, 0};
                k++;
                e->uses_user |= user;
                start = i + 2;
                i++;
            }
        }
        count = k;
    }
    return 0;
}

static int topic_line(struct parser *ps, bool pattern, const uint8_t *s, size_t n)
{
    const char *kw = pattern ? "pattern" : "topic";
    char q[QUOTE_BUF];

    /* Mosquitto splits off one space-separated word; when more follows, that word is the
     * access and the trimmed rest is the filter (which may contain spaces), otherwise the word
     * is the filter and the access is readwrite. */
    while (n && s[0] == ' ') {
        s++;
        n--;
    }
    if (n == 0) {
        report(ps, true, "%s line has no topic filter", kw);
        return 0;
    }
    const uint8_t *sp = memchr(s, ' ', n);
    size_t wlen = sp ? (size_t)(sp - s) : n;
    const uint8_t *filter = s;
    size_t flen = n;
    int access = ACCESS_RW;
    if (sp) {
        filter = sp + 1;
        flen = n - wlen - 1;
        while (flen && is_space(filter[0])) {
            filter++;
            flen--;
        }
    }
    if (sp && flen) {
        access = parse_access(s, wlen);
        if (access < 0) {
            report(ps, true, "invalid access \"%s\" (expected read, write, readwrite or deny)",
                   quote(q, sizeof q, s, wlen));
            return 0;
        }
    } else {
        filter = s;
        flen = wlen;
        if (parse_access(s, wlen) >= 0)
            report(ps, false,
                   "%s line has only \"%s\": it is read as the topic filter \"%s\" with "
                   "readwrite access, as Mosquitto does; add a filter if an access was meant",
                   kw, quote(q, sizeof q, s, wlen), quote(q, sizeof q, s, wlen));
    }
    if (flen > MAX_STRING) {
        report(ps, true, "topic filter \"%s\" is longer than %u bytes",
               quote(q, sizeof q, filter, flen), MAX_STRING);
        return 0;
    }
    int rc = topic_check_filter(filter, flen);
    if (rc) {
        report(ps, true, "invalid topic filter \"%s\": %s", quote(q, sizeof q, filter, flen),
               mq_strerror(rc));
        return 0;
    }
    if (memchr(filter, '\t', flen))
        report(ps, false,
               "topic filter \"%s\" contains a tab: words are separated by spaces only, so "
               "the tab is part of the filter",
               quote(q, sizeof q, filter, flen));

    struct entry e = {.access = (uint8_t)access, .text_len = (uint32_t)flen};
    uint8_t *text = arena_alloc(&ps->acl->arena, flen);
    if (!text)
        return MQ_ERR_NOMEM;
    memcpy(text, filter, flen);
    e.text = text;
    if (pattern) {
        rc = compile_pattern(ps, &e);
        if (rc)
            return rc;
        bool subst = false;
        for (uint32_t i = 0; i < e.npieces; i++)
            subst |= e.pieces[i].kind != PIECE_TEXT;
        if (!subst)
            report(ps, false,
                   "pattern \"%s\" contains neither %%u nor %%c: it applies to every client",
                   quote(q, sizeof q, filter, flen));
    } else {
        struct piece *pc = arena_alloc(&ps->acl->arena, sizeof *pc);
        if (!pc)
            return MQ_ERR_NOMEM;
        *pc = (struct piece){PIECE_TEXT, 0, e.text_len};
        e.pieces = pc;
        e.npieces = 1;
    }
    rc = list_add(pattern ? &ps->acl->patterns : ps->section, &e);
    if (rc)
        return rc;
    ps->acl->nentries++;
    return 0;
}

/* One line without its '\n'. Returns 0, or MQ_ERR_NOMEM (syntax errors are only reported). */
static int parse_line(struct parser *ps, const uint8_t *s, size_t n)
{
    char q[QUOTE_BUF];

    if (memchr(s, '\0', n)) {
        report(ps, true, "line contains a NUL byte");
        return 0;
    }
    while (n && is_space(s[n - 1]))
        n--; /* also the '\r' of CRLF */
    /* Mosquitto skips leading spaces only; tabs are accepted too (it rejects such lines). */
    while (n && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        n--;
    }
    if (n == 0 || s[0] == '#')
        return 0;
    const uint8_t *sp = memchr(s, ' ', n);
    size_t wlen = sp ? (size_t)(sp - s) : n;
    const uint8_t *rest = s + wlen;
    size_t rlen = n - wlen;

    if (word_is(s, wlen, "user"))
        return user_line(ps, rest, rlen);
    if (word_is(s, wlen, "topic"))
        return topic_line(ps, false, rest, rlen);
    if (word_is(s, wlen, "pattern"))
        return topic_line(ps, true, rest, rlen);
    report(ps, true, "unknown keyword \"%s\" (expected user, topic, pattern or a # comment)",
           quote(q, sizeof q, s, wlen));
    return 0;
}

struct mq_acl *acl_parse(const char *text, size_t len, const char *name, mq_acl_report_fn report_fn,
                         void *ctx)
{
    struct parser ps = {.name = name ? name : "acl", .report = report_fn, .ctx = ctx};
    struct mq_acl *acl = calloc(1, sizeof *acl);

    if (!acl) {
        report(&ps, true, "%s", mq_strerror(MQ_ERR_NOMEM));
        return NULL;
    }
    hmap_init(&acl->users);
    ps.acl = acl;
    ps.section = &acl->anon;

    const uint8_t *p = (const uint8_t *)text, *end = p + len;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        ps.line++;
        if (parse_line(&ps, p, n)) {
            report(&ps, true, "%s", mq_strerror(MQ_ERR_NOMEM));
            break;
        }
        p += n + (nl != NULL);
    }
    if (ps.errors) {
        acl_free(acl);
        return NULL;
    }
    return acl;
}

/* acl_load: see acl.h. The whole file is read first, so a file replaced while it is being
 * read is never half-parsed; path is borrowed. */
struct mq_acl *acl_load(const char *path, mq_acl_report_fn report_fn, void *ctx)
{
    struct parser ps = {.name = path, .report = report_fn, .ctx = ctx};
    char *buf = NULL, why[256];
    size_t len = 0;
    if (file_read_whole(path, MAX_FILE_SIZE, "ACL file", &buf, &len, why, sizeof(why))) {
        report(&ps, true, "%s", why);
        return NULL;
    }
    struct mq_acl *acl = acl_parse(buf, len, path, report_fn, ctx);
    free(buf);
    return acl;
}

/* ---- matching ---- */

/* The user name and client id a pattern is evaluated with (NULL user: no %u patterns). */
struct subst {
    const uint8_t *user, *client;
    size_t user_len, client_len;
};

/* A forward cursor over an entry's filter with %u/%c replaced, so a pattern is matched
 * without building the substituted string. */
struct vcur {
    const struct entry *e;
    const struct subst *s;
    uint32_t next;    /* index of the next piece to load */
    const uint8_t *p; /* bytes of the current piece */
    size_t n, off;
};

static void vcur_fill(struct vcur *c)
{
    while (c->off == c->n && c->next < c->e->npieces) {
        const struct piece *pc = &c->e->pieces[c->next++];
        c->off = 0;
        switch (pc->kind) {
        case PIECE_USER:
            c->p = c->s->user;
            c->n = c->s->user_len;
            break;
        case PIECE_CLIENT:
            c->p = c->s->client;
            c->n = c->s->client_len;
            break;
        default:
            c->p = c->e->text + pc->off;
            c->n = pc->len;
            break;
        }
    }
}

static void vcur_init(struct vcur *c, const struct entry *e, const struct subst *s)
{
    *c = (struct vcur){.e = e, .s = s};
    vcur_fill(c);
}

/* The next byte, or -1 at the end of the filter. */
static int vcur_peek(const struct vcur *c)
{
    return c->off < c->n ? c->p[c->off] : -1;
}

static void vcur_next(struct vcur *c)
{
    c->off++;
    vcur_fill(c);
}

/* Consume the cursor's current level (up to '/' or the end); true when it equals l[0..n). */
static bool vcur_level_equals(struct vcur *c, const uint8_t *l, size_t n)
{
    if (c->n - c->off >= n) {
        /* The usual case: the whole level lies in one piece. l holds no '/', so a '/' inside
         * the compared bytes is a mismatch as it should be. */
        if (memcmp(c->p + c->off, l, n) != 0)
            return false;
        c->off += n;
        vcur_fill(c);
        int ch = vcur_peek(c);
        return ch < 0 || ch == '/';
    }
    for (size_t k = 0;; k++) {
        int ch = vcur_peek(c);
        if (ch < 0 || ch == '/')
            return k == n;
        if (k >= n || l[k] != ch)
            return false;
        vcur_next(c);
    }
}

static void vcur_skip_level(struct vcur *c)
{
    int ch;
    while ((ch = vcur_peek(c)) >= 0 && ch != '/')
        vcur_next(c);
}

/* After a '/' has been consumed: true when exactly "#" remains ("a/#" matches "a"). */
static bool vcur_rest_is_hash(struct vcur *c)
{
    if (vcur_peek(c) != '#')
        return false;
    vcur_next(c);
    return vcur_peek(c) < 0;
}

static size_t level_end(const uint8_t *s, size_t len, size_t from)
{
    const uint8_t *slash = memchr(s + from, '/', len - from);
    return slash ? (size_t)(slash - s) : len;
}

/* Wildcards in the entry come from its text only: a valid filter has '+' and '#' alone in
 * their level, and names with '+' or '#' never reach a pattern (acl_check refuses them). */

/* True when every topic matched by filter f (a topic name being the filter that matches
 * itself) is matched by the entry. For a name this is plain MQTT matching. */
static bool entry_covers(const struct entry *e, const struct subst *s, const uint8_t *f,
                         size_t flen)
{
    struct vcur c;
    vcur_init(&c, e, s);
    int first = vcur_peek(&c);
    /* [MQTT-4.7.2-1] and Mosquitto's "a '$' topic needs an entry starting with '$'". */
    if (first < 0 || flen == 0 || (first == '$') != (f[0] == '$'))
        return false;
    for (size_t i = 0;;) {
        size_t end = level_end(f, flen, i);
        bool f_plus = end - i == 1 && f[i] == '+', f_hash = end - i == 1 && f[i] == '#';
        int ch = vcur_peek(&c);
        if (ch == '#')
            return true;
        if (ch == '+') {
            if (f_hash) {
                /* '#' also matches the level above it, so only '#' covers it, unless that
                 * parent is the topic "" (no name): then "+/#" covers "#" and "+/+/#" "/#". */
                if (i > 1 || (i == 1 && f[0] != '/'))
                    return false;
                vcur_next(&c);
                if (vcur_peek(&c) != '/')
                    return false;
                vcur_next(&c);
                return vcur_rest_is_hash(&c);
            }
            vcur_next(&c);
        } else if (f_plus || f_hash || !vcur_level_equals(&c, f + i, end - i)) {
            return false;
        }
        bool e_end = vcur_peek(&c) < 0, f_end = end == flen;
        if (e_end)
            return f_end;
        vcur_next(&c); /* the entry's '/' */
        if (f_end)
            return vcur_rest_is_hash(&c);
        i = end + 1;
    }
}

/* True when at least one topic is matched by both the entry and filter f. */
static bool entry_overlaps(const struct entry *e, const struct subst *s, const uint8_t *f,
                           size_t flen)
{
    struct vcur c;
    vcur_init(&c, e, s);
    int first = vcur_peek(&c);
    if (first < 0 || flen == 0 || (first == '$') != (f[0] == '$'))
        return false;
    for (size_t i = 0;;) {
        size_t end = level_end(f, flen, i);
        bool f_plus = end - i == 1 && f[i] == '+', f_hash = end - i == 1 && f[i] == '#';
        int ch = vcur_peek(&c);
        if (ch == '#' || f_hash)
            return true;
        /* Ending after a first level that must be empty would only meet in the topic "",
         * which is no topic name. */
        bool ok = i > 0 || (end > i && ch != '/' && ch >= 0);
        if (ch == '+')
            vcur_next(&c);
        else if (f_plus)
            vcur_skip_level(&c);
        else if (!vcur_level_equals(&c, f + i, end - i))
            return false;
        bool e_end = vcur_peek(&c) < 0, f_end = end == flen;
        if (e_end && f_end)
            return ok;
        if (e_end) /* the filter goes deeper: only its "/#" still matches this depth */
            return ok && flen - end == 2 && f[end + 1] == '#';
        vcur_next(&c);
        if (f_end)
            return ok && vcur_rest_is_hash(&c);
        i = end + 1;
    }
}

enum verdict { UNDECIDED = -1, REFUSE = 0, ALLOW = 1 };

static enum verdict check_list(const struct list *l, const struct subst *s, const uint8_t *t,
                               size_t tlen, enum mq_acl_access access)
{
    bool sub = access == MQ_ACL_SUBSCRIBE;
    uint8_t need = sub ? MQ_ACL_READ : (uint8_t)access;

    for (uint32_t i = 0; i < l->ndeny; i++) {
        const struct entry *e = &l->deny[i];
        if (e->uses_user && !s->user)
            continue;
        if (entry_covers(e, s, t, tlen))
            return REFUSE;
    }
    for (uint32_t i = 0; i < l->ngrant; i++) {
        const struct entry *e = &l->grant[i];
        if (!(e->access & need) || (e->uses_user && !s->user))
            continue;
        if (sub ? entry_overlaps(e, s, t, tlen) : entry_covers(e, s, t, tlen))
            return ALLOW;
    }
    return UNDECIDED;
}

bool acl_check(const struct mq_acl *acl, const char *username, const char *client_id,
               const uint8_t *topic, size_t topic_len, enum mq_acl_access access)
{
    if (!acl || !topic || topic_len == 0 ||
        (access != MQ_ACL_READ && access != MQ_ACL_WRITE && access != MQ_ACL_SUBSCRIBE))
        return false;

    const struct list *own = &acl->anon;
    if (username) {
        const struct user *u = hmap_get(&acl->users, username, strlen(username));
        own = u ? &u->list : NULL;
    }
    const struct subst none = {0};
    if (own) {
        enum verdict v = check_list(own, &none, topic, topic_len, access);
        if (v != UNDECIDED)
            return v == ALLOW;
    }

    if (acl->patterns.ndeny + acl->patterns.ngrant == 0)
        return false;
    /* Mosquitto 2.0 refuses every pattern to a client whose user name or client id holds a
     * wildcard: "a/#" substituted into "%u/feeds/#" would otherwise widen it. '/' is allowed
     * (and substituted as text), as in Mosquitto. */
    if (!client_id || strpbrk(client_id, "+#") || (username && strpbrk(username, "+#")))
        return false;
    const struct subst s = {
        .user = (const uint8_t *)username,
        .user_len = username ? strlen(username) : 0,
        .client = (const uint8_t *)client_id,
        .client_len = strlen(client_id),
    };
    return check_list(&acl->patterns, &s, topic, topic_len, access) == ALLOW;
}

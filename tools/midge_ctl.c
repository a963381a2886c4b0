/* midge_ctl.c - midge-ctl: the admin API (docs/admin.md) from a shell.
 *
 * Every command is one or more HTTP requests made with libcurl to a midge websockets
 * listener; the answers are parsed with jansson and printed as aligned tables, or as JSON
 * with --json. Listings follow the API's cursors until the end. Any error ends the program
 * with status 1 and the API's own sentence on stderr (2 for a wrong command line).
 * Credentials: -u/-P, MIDGE_ADMIN_USER/MIDGE_ADMIN_PASSWORD, or a file of "user:password".
 * Nothing secret is printed.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MIDGE_VERSION
#define MIDGE_VERSION "unknown"
#endif

#define DEFAULT_URL "http://127.0.0.1:9001"
#define PAGE 500 /* entries per request: each is one step of the broker's loop */
#define MAX_RESPONSE (64u << 20)

struct opts {
    const char *url;
    char *user, *password;
    const char *cacert;
    bool insecure, json;
};

struct buf {
    char *p;
    size_t len;
    bool too_big;
};

static const char *prog = "midge-ctl";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: midge-ctl [-H URL] [-u USER] [-P PASSWORD] [-F FILE] [--json] COMMAND\n"
            "commands:\n"
            "  clients [--connected|--offline] [--user U] [--address A] [--prefix P]\n"
            "  client ID                      one client: session, counters, subscriptions\n"
            "  kick ID [--discard-session]    disconnect it (its will is published)\n"
            "  subscriptions [FILTER] [--client ID]\n"
            "  retained [FILTER] [--preview N]\n"
            "  retained --delete FILTER [--dry-run]\n"
            "  publish TOPIC MESSAGE [-q QOS] [-r]\n"
            "  broker                         version, uptime, listeners, $SYS figures\n"
            "options:\n"
            "  -H, --host URL        the broker's websockets listener (default %s,\n"
            "                        or MIDGE_ADMIN_URL)\n"
            "  -u, --user USER       admin user (or MIDGE_ADMIN_USER)\n"
            "  -P, --password PASS   its password (or MIDGE_ADMIN_PASSWORD)\n"
            "  -F, --credentials FILE  a file whose first line is user:password\n"
            "  --cacert FILE         CA certificate for https://\n"
            "  -k, --insecure        do not verify the https:// certificate\n"
            "  --json                print the API's JSON instead of a table\n"
            "  -h, --help            this text; --version  the version\n",
            DEFAULT_URL);
}

static void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    struct buf *b = ctx;
    size_t k = size * n;
    if (b->len + k > MAX_RESPONSE) {
        b->too_big = true;
        return 0;
    }
    char *np = realloc(b->p, b->len + k + 1);
    if (!np)
        return 0;
    memcpy(np + b->len, p, k);
    b->p = np;
    b->len += k;
    b->p[b->len] = 0;
    return k;
}

/* One request: method, path (with query, already escaped), optional JSON body. Returns the
 * parsed JSON answer of a 2xx response; any failure ends the program with the API's
 * sentence. */
static json_t *call(const struct opts *o, const char *method, const char *path, const char *body)
{
    CURL *c = curl_easy_init();
    if (!c)
        die(1, "cannot start libcurl");
    size_t ul = strlen(o->url);
    while (ul && o->url[ul - 1] == '/')
        ul--;
    char *url = malloc(ul + strlen(path) + 1);
    if (!url)
        die(1, "out of memory");
    memcpy(url, o->url, ul);
    strcpy(url + ul, path);
    struct buf b = {0};
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "X-Requested-With: midge-ctl");
    if (body)
        h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "midge-ctl/" MIDGE_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    if (o->user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, o->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, o->password ? o->password : "");
    }
    if (o->cacert)
        curl_easy_setopt(c, CURLOPT_CAINFO, o->cacert);
    if (o->insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(b.p);
        if (b.too_big)
            die(1, "%s %s: the answer is larger than %u MiB", method, url, MAX_RESPONSE >> 20);
        die(1, "%s %s: %s", method, url, err[0] ? err : curl_easy_strerror(rc));
    }
    json_error_t je;
    json_t *j = b.p ? json_loadb(b.p, b.len, 0, &je) : NULL;
    if (status < 200 || status > 299) {
        const char *msg = json_string_value(json_object_get(j, "message"));
        if (msg)
            fprintf(stderr, "%s: %s (HTTP %ld)\n", prog, msg, status);
        else
            fprintf(stderr, "%s: %s %s: HTTP %ld%s%.200s\n", prog, method, url, status,
                    b.p ? ": " : "", b.p ? b.p : "");
        exit(1);
    }
    if (!j)
        die(1, "%s %s: the answer is not JSON (%s): is %s midge's websockets listener?", method,
            url, je.text, o->url);
    free(b.p);
    free(url);
    return j;
}

static char *esc(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        die(1, "out of memory");
    return e;
}

/* Append "&name=escaped(value)" (or "?..." first) to a path of cap bytes. */
static void add_param(char *path, size_t cap, const char *name, const char *value)
{
    if (!value)
        return;
    char *e = esc(value);
    size_t n = strlen(path);
    snprintf(path + n, cap - n, "%c%s=%s", strchr(path, '?') ? '&' : '?', name, e);
    curl_free(e);
}

/* ---- tables ------------------------------------------------------------------------------ */

struct table {
    size_t cols, rows, cap;
    char **cell; /* rows * cols, row 0 = the header */
};

static void table_add(struct table *t, char **row)
{
    if (t->rows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->cell = realloc(t->cell, t->cap * t->cols * sizeof(*t->cell));
        if (!t->cell)
            die(1, "out of memory");
    }
    memcpy(&t->cell[t->rows * t->cols], row, t->cols * sizeof(*row));
    t->rows++;
}

/* Display width: UTF-8 characters (continuation bytes do not count). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void table_print(struct table *t)
{
    size_t *w = calloc(t->cols, sizeof(*w));
    if (!w)
        die(1, "out of memory");
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols; c++) {
            size_t x = width(t->cell[r * t->cols + c]);
            if (x > w[c])
                w[c] = x;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols; c++) {
            const char *s = t->cell[r * t->cols + c];
            fputs(s, stdout);
            if (c + 1 < t->cols)
                printf("%*s", (int)(w[c] - width(s) + 2), "");
        }
        putchar('\n');
    }
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cell[i]);
    free(t->cell);
    free(w);
}

/* A cell's text for a JSON value: strings as they are (control characters as '?'), null
 * as "-", numbers and booleans in JSON. */
static char *cell(json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("-");
    if (json_is_string(v)) {
        char *s = strdup(json_string_value(v));
        for (char *p = s; p && *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        return s;
    }
    if (json_is_true(v))
        return strdup("yes");
    if (json_is_false(v))
        return strdup("no");
    return json_dumps(v, JSON_ENCODE_ANY);
}

/* ---- commands ---------------------------------------------------------------------------- */

/* GET every page of base (a path with its query) and gather the "data" arrays. */
static json_t *all_pages(const struct opts *o, const char *base)
{
    json_t *all = json_array();
    char *cursor = NULL;
    for (;;) {
        size_t cap = strlen(base) + 64 + (cursor ? strlen(cursor) : 0);
        char *path = malloc(cap);
        if (!path || !all)
            die(1, "out of memory");
        snprintf(path, cap, "%s", base);
        char lim[16];
        snprintf(lim, sizeof(lim), "%d", PAGE);
        add_param(path, cap, "limit", lim);
        add_param(path, cap, "cursor", cursor);
        json_t *j = call(o, "GET", path, NULL);
        free(path);
        free(cursor);
        cursor = NULL;
        json_array_extend(all, json_object_get(j, "data"));
        json_t *meta = json_object_get(j, "meta");
        const char *next = json_string_value(json_object_get(meta, "cursor"));
        bool more = json_is_true(json_object_get(meta, "hasnext")) && next;
        if (more)
            cursor = strdup(next);
        json_decref(j);
        if (!more)
            return all;
    }
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s)
        puts(s);
    free(s);
}

static void list(const struct opts *o, const char *base, const char *const *heads,
                 const char *const *keys, size_t cols)
{
    json_t *all = all_pages(o, base);
    if (o->json) {
        print_json(all);
        json_decref(all);
        return;
    }
    struct table t = {.cols = cols};
    char *row[16];
    for (size_t c = 0; c < cols; c++)
        row[c] = strdup(heads[c]);
    table_add(&t, row);
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        for (size_t c = 0; c < cols; c++)
            row[c] = cell(json_object_get(e, keys[c]));
        table_add(&t, row);
    }
    table_print(&t);
    json_decref(all);
}

static void cmd_clients(const struct opts *o, int argc, char **argv)
{
    char base[4096] = "/api/v1/clients";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--connected"))
            add_param(base, sizeof(base), "connected", "1");
        else if (!strcmp(a, "--offline"))
            add_param(base, sizeof(base), "connected", "0");
        else if (i + 1 < argc && !strcmp(a, "--user"))
            add_param(base, sizeof(base), "username", argv[++i]);
        else if (i + 1 < argc && !strcmp(a, "--address"))
            add_param(base, sizeof(base), "address", argv[++i]);
        else if (i + 1 < argc && !strcmp(a, "--prefix"))
            add_param(base, sizeof(base), "prefix", argv[++i]);
        else
            die(2, "clients: unknown option %s", a);
    }
    static const char *const heads[] = {"CLIENT ID", "CONNECTED", "ADDRESS", "USER",   "MQTT",
                                        "MSGS IN",   "MSGS OUT",  "QUEUED",  "DROPPED"};
    static const char *const keys[] = {"client_id",    "connected", "address",
                                       "username",     "protocol",  "messages_in",
                                       "messages_out", "queued",    "dropped"};
    list(o, base, heads, keys, 9);
}

static void cmd_client(const struct opts *o, const char *id)
{
    char *e = esc(id);
    char path[8192];
    snprintf(path, sizeof(path), "/api/v1/clients/%s", e);
    curl_free(e);
    json_t *j = call(o, "GET", path, NULL);
    json_t *d = json_object_get(j, "data");
    if (o->json) {
        print_json(d);
        json_decref(j);
        return;
    }
    const char *key;
    json_t *v;
    size_t kw = 0;
    json_object_foreach(d, key, v) if (strlen(key) > kw) kw = strlen(key);
    json_object_foreach(d, key, v)
    {
        if (!strcmp(key, "subscriptions"))
            continue;
        char *s = cell(v);
        printf("%-*s  %s\n", (int)kw, key, s);
        free(s);
    }
    json_t *subs = json_object_get(d, "subscriptions");
    size_t i;
    json_t *sv;
    if (json_array_size(subs)) {
        printf("\n");
        struct table t = {.cols = 4};
        char *row[4] = {strdup("FILTER"), strdup("QOS"), strdup("NO LOCAL"), strdup("SHARE")};
        table_add(&t, row);
        json_array_foreach(subs, i, sv)
        {
            row[0] = cell(json_object_get(sv, "filter"));
            row[1] = cell(json_object_get(sv, "qos"));
            row[2] = cell(json_object_get(sv, "no_local"));
            row[3] = cell(json_object_get(sv, "share"));
            table_add(&t, row);
        }
        table_print(&t);
    }
    json_decref(j);
}

static void cmd_kick(const struct opts *o, int argc, char **argv)
{
    const char *id = NULL;
    bool discard = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--discard-session"))
            discard = true;
        else if (!id)
            id = argv[i];
        else
            die(2, "kick: unexpected %s", argv[i]);
    }
    if (!id)
        die(2, "kick: which client id?");
    char *e = esc(id);
    char path[8192];
    snprintf(path, sizeof(path), "/api/v1/clients/%s%s", e, discard ? "?discard_session=1" : "");
    curl_free(e);
    json_t *j = call(o, "DELETE", path, NULL);
    if (o->json)
        print_json(j);
    else if (json_is_true(json_object_get(j, "disconnected")))
        printf("%s disconnected%s\n", id, discard ? ", session removed" : "");
    else
        printf("%s: offline session removed\n", id);
    json_decref(j);
}

static void cmd_subscriptions(const struct opts *o, int argc, char **argv)
{
    char base[8192] = "/api/v1/subscriptions";
    for (int i = 0; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--client"))
            add_param(base, sizeof(base), "client", argv[++i]);
        else if (argv[i][0] != '-' || !argv[i][1])
            add_param(base, sizeof(base), "filter", argv[i]);
        else
            die(2, "subscriptions: unknown option %s", argv[i]);
    }
    static const char *const heads[] = {"CLIENT ID", "FILTER", "QOS", "SHARE"};
    static const char *const keys[] = {"client_id", "filter", "qos", "share"};
    list(o, base, heads, keys, 4);
}

static void cmd_retained(const struct opts *o, int argc, char **argv)
{
    const char *filter = NULL, *preview = NULL;
    bool del = false, dry = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--delete"))
            del = true;
        else if (!strcmp(argv[i], "--dry-run"))
            dry = true;
        else if (i + 1 < argc && !strcmp(argv[i], "--preview"))
            preview = argv[++i];
        else if (!filter && (argv[i][0] != '-' || !argv[i][1]))
            filter = argv[i];
        else
            die(2, "retained: unexpected %s", argv[i]);
    }
    char base[8192] = "/api/v1/retained";
    if (!del) {
        add_param(base, sizeof(base), "filter", filter);
        add_param(base, sizeof(base), "preview", preview);
        static const char *const heads[] = {"TOPIC", "SIZE", "QOS", "STORED", "PAYLOAD"};
        static const char *const keys[] = {"topic", "size", "qos", "stored_at", "payload"};
        list(o, base, heads, keys, 5);
        return;
    }
    if (!filter)
        die(2, "retained --delete: which topic filter? (# for all)");
    add_param(base, sizeof(base), "filter", filter);
    if (dry)
        add_param(base, sizeof(base), "dry_run", "1");
    long long total = 0;
    for (;;) { /* one request deletes at most 10,000: go on until none is left */
        json_t *j = call(o, "DELETE", base, NULL);
        long long n = json_integer_value(json_object_get(j, dry ? "would_delete" : "deleted"));
        long long left = json_integer_value(json_object_get(j, "remaining"));
        total += n;
        if (o->json && (dry || !left))
            print_json(j);
        json_decref(j);
        if (dry) {
            if (!o->json)
                printf("%lld retained message%s match %s (nothing deleted: --dry-run)\n", left,
                       left == 1 ? "" : "s", filter);
            return;
        }
        if (!left || !n)
            break;
    }
    if (!o->json)
        printf("%lld retained message%s deleted under %s\n", total, total == 1 ? "" : "s", filter);
}

static void cmd_publish(const struct opts *o, int argc, char **argv)
{
    const char *topic = NULL, *msg = NULL;
    int qos = 0;
    bool retain = false;
    for (int i = 0; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "-q")) {
            const char *q = argv[++i];
            if (strlen(q) != 1 || q[0] < '0' || q[0] > '2')
                die(2, "publish: -q takes 0, 1 or 2");
            qos = q[0] - '0';
        } else if (!strcmp(argv[i], "-r")) {
            retain = true;
        } else if (!topic) {
            topic = argv[i];
        } else if (!msg) {
            msg = argv[i];
        } else {
            die(2, "publish: unexpected %s", argv[i]);
        }
    }
    if (!topic || !msg)
        die(2, "publish: TOPIC and MESSAGE are required");
    json_t *body = json_pack("{s:s, s:s, s:i, s:b}", "topic", topic, "payload", msg, "qos", qos,
                             "retain", retain);
    if (!body)
        die(2, "publish: the topic and the message must be UTF-8 text");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *j = call(o, "POST", "/api/v1/publish", text);
    free(text);
    if (o->json)
        print_json(j);
    else
        printf("published to %s (QoS %d%s): %lld receiver%s\n", topic, qos,
               retain ? ", retained" : "",
               (long long)json_integer_value(json_object_get(j, "delivered")),
               json_integer_value(json_object_get(j, "delivered")) == 1 ? "" : "s");
    json_decref(j);
}

static void cmd_broker(const struct opts *o)
{
    json_t *j = call(o, "GET", "/api/v1/broker", NULL);
    if (o->json) {
        print_json(j);
        json_decref(j);
        return;
    }
    char *v[4] = {cell(json_object_get(j, "version")), cell(json_object_get(j, "uptime")),
                  cell(json_object_get(j, "started_at")), cell(json_object_get(j, "config_file"))};
    printf("midge %s, up %s s (since %s), configuration %s\n", v[0], v[1], v[2], v[3]);
    for (int i = 0; i < 4; i++)
        free(v[i]);
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(j, "listeners"), i, l)
    {
        char *a = cell(json_object_get(l, "address")), *p = cell(json_object_get(l, "protocol"));
        printf("listener %s (%s)%s\n", a, p,
               json_is_true(json_object_get(l, "admin")) ? ", admin API" : "");
        free(a);
        free(p);
    }
    const char *key;
    json_t *val;
    struct table t = {.cols = 2};
    char *row[2] = {strdup("$SYS/broker/..."), strdup("VALUE")};
    table_add(&t, row);
    json_object_foreach(json_object_get(j, "sys"), key, val)
    {
        row[0] = strdup(key);
        row[1] = cell(val);
        table_add(&t, row);
    }
    putchar('\n');
    table_print(&t);
    json_decref(j);
}

/* "user:password" from the first line of path. */
static void read_credentials(struct opts *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die(2, "cannot read %s", path);
    char line[2048];
    if (!fgets(line, sizeof(line), f)) {
        fclose(f);
        die(2, "%s is empty (it should hold user:password)", path);
    }
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    char *colon = strchr(line, ':');
    if (!colon)
        die(2, "%s: the first line is not user:password", path);
    *colon = 0;
    free(o->user);
    free(o->password);
    o->user = strdup(line);
    o->password = strdup(colon + 1);
    memset(line, 0, sizeof(line));
}

int main(int argc, char **argv)
{
    struct opts o = {.url = getenv("MIDGE_ADMIN_URL")};
    if (!o.url || !*o.url)
        o.url = DEFAULT_URL;
    if (getenv("MIDGE_ADMIN_USER"))
        o.user = strdup(getenv("MIDGE_ADMIN_USER"));
    if (getenv("MIDGE_ADMIN_PASSWORD"))
        o.password = strdup(getenv("MIDGE_ADMIN_PASSWORD"));
    int i = 1, status = 2;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            status = 0;
            goto out;
        } else if (!strcmp(a, "--version")) {
            printf("midge-ctl %s\n", MIDGE_VERSION);
            status = 0;
            goto out;
        } else if (has && (!strcmp(a, "-H") || !strcmp(a, "--host"))) {
            o.url = argv[++i];
        } else if (has && (!strcmp(a, "-u") || !strcmp(a, "--user"))) {
            free(o.user);
            o.user = strdup(argv[++i]);
        } else if (has && (!strcmp(a, "-P") || !strcmp(a, "--password"))) {
            free(o.password);
            o.password = strdup(argv[++i]);
        } else if (has && (!strcmp(a, "-F") || !strcmp(a, "--credentials"))) {
            read_credentials(&o, argv[++i]);
        } else if (has && !strcmp(a, "--cacert")) {
            o.cacert = argv[++i];
        } else if (!strcmp(a, "-k") || !strcmp(a, "--insecure")) {
            o.insecure = true;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else {
            fprintf(stderr, "%s: unknown option %s\n", prog, a);
            usage(stderr);
            goto out;
        }
    }
    if (i >= argc) {
        usage(stderr);
        goto out;
    }
    /* Options may also follow the command (midge-ctl clients --json). */
    for (int k = i + 1; k < argc; k++)
        if (!strcmp(argv[k], "--json")) {
            o.json = true;
            memmove(&argv[k], &argv[k + 1], (size_t)(argc - k - 1) * sizeof(*argv));
            argc--;
            k--;
        }
    if (curl_global_init(CURL_GLOBAL_DEFAULT))
        die(1, "cannot start libcurl");
    const char *cmd = argv[i];
    int n = argc - i - 1;
    char **rest = argv + i + 1;
    if (!strcmp(cmd, "clients"))
        cmd_clients(&o, n, rest);
    else if (!strcmp(cmd, "client") && n == 1)
        cmd_client(&o, rest[0]);
    else if (!strcmp(cmd, "kick"))
        cmd_kick(&o, n, rest);
    else if (!strcmp(cmd, "subscriptions"))
        cmd_subscriptions(&o, n, rest);
    else if (!strcmp(cmd, "retained"))
        cmd_retained(&o, n, rest);
    else if (!strcmp(cmd, "publish"))
        cmd_publish(&o, n, rest);
    else if (!strcmp(cmd, "broker") && n == 0)
        cmd_broker(&o);
    else {
        fprintf(stderr, "%s: unknown command or wrong arguments: %s\n", prog, cmd);
        usage(stderr);
        curl_global_cleanup();
        goto out;
    }
    curl_global_cleanup();
    status = 0;
out:
    if (o.password)
        memset(o.password, 0, strlen(o.password));
    free(o.user);
    free(o.password);
    return status;
}

/* server.c - the event loop: listeners, signals, reload, the keepalive tick, the
 * per-turn output flush, systemd notification, and an orderly shutdown. The loop's wait
 * is poller.c's (poller_run), which embeds libuv's loop.
 *
 * Owns the uv loop, every server-wide handle and the running configuration.
 * Shutdown order: stop accepting, ask proto to close every connection (their
 * output is flushed once), close and free the clients, close the server's handles,
 * run the loop until every close callback has run, then free the broker: nothing is
 * freed inside a callback that still needs it.
 */
#include "midge/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/bridge.h"
#include "midge/acl.h"
#include "midge/admin.h"
#include "midge/config.h"
#include "midge/daemon.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/notify.h"
#include "midge/passwd.h"
#include "midge/proto.h"
#include "midge/store.h"
#include "net/net.h"
#include "net/tls.h"

#define TICK_MS 250

static void report_config(void *ctx, bool is_error, const char *line)
{
    (void)ctx;
    mq_log(is_error ? MQ_LOG_ERR : MQ_LOG_WARNING, "%s", line);
}

/* Settings that would silently weaken security or change the transport if ignored:
 * refuse to run rather than serve plaintext or let everyone read everything. TLS
 * options are checked for every listener, `protocol websockets` (wss) included. */
static int refuse_unimplemented(const char *path, const struct mq_config *cfg)
{
    int bad = 0;
    const char *file = path ? path : "(built-in defaults)";
    for (size_t i = 0; i < cfg->listener_count; i++)
        if (tls_check_config(file, &cfg->listeners[i]))
            bad = 1;
    return bad ? -1 : 0;
}

int server_load_config(const struct mq_server_options *opts, struct mq_config *cfg)
{
    uint16_t port = opts->port >= 0 ? (uint16_t)opts->port : 1883;
    int rc = opts->config_path ? config_load(opts->config_path, cfg, report_config, NULL)
                               : config_local_only(cfg, port);
    if (rc)
        return MQ_ERR_CONFIG;
    /* -p replaces the port of the first listener, and of every other listener on that
     * same port (the loopback pair a file without `listener` lines gets). */
    if (opts->config_path && opts->port >= 0 && cfg->listener_count) {
        uint16_t first = cfg->listeners[0].port;
        for (size_t i = 0; i < cfg->listener_count; i++)
            if (cfg->listeners[i].port == first)
                cfg->listeners[i].port = (uint16_t)opts->port;
    }
    if (refuse_unimplemented(opts->config_path, cfg)) {
        config_free(cfg);
        return MQ_ERR_CONFIG;
    }
    return 0;
}

static void report_security(void *ctx, bool is_error, const char *line)
{
    (void)ctx;
    mq_log(is_error ? MQ_LOG_ERR : MQ_LOG_WARNING, "%s", line);
}

static int check_password(const void *passwd, const uint8_t *user, size_t user_len,
                          const uint8_t *password, size_t password_len)
{
    return (int)passwd_check(passwd, user, user_len, password, password_len);
}

static void listener_ctx_free(struct mq_listener_ctx *l)
{
    if (!l)
        return;
    passwd_free((struct mq_passwd *)l->passwd);
    acl_free((struct mq_acl *)l->acl);
    free(l);
}

void listener_ctx_adopt(struct mq_listener_ctx *kept, struct mq_listener_ctx *fresh)
{
    passwd_free((struct mq_passwd *)kept->passwd);
    acl_free((struct mq_acl *)kept->acl);
    kept->cfg = fresh->cfg;
    kept->passwd = fresh->passwd;
    kept->acl = fresh->acl;
    free(fresh);
}

static void listener_ctxs_free(struct mq_listener_ctx **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        listener_ctx_free(v[i]);
    free(v);
}

/* One context per listener of cfg, with its password file and ACL loaded. NULL (after
 * logging every problem with file:line) when a file is missing or invalid. */
static struct mq_listener_ctx **listener_ctxs_new(const struct mq_config *cfg)
{
    struct mq_listener_ctx **v = calloc(cfg->listener_count + 1, sizeof(*v));
    bool ok = v != NULL;
    for (size_t i = 0; ok && i < cfg->listener_count; i++) {
        const struct mq_listener_config *lc = &cfg->listeners[i];
        struct mq_listener_ctx *l = calloc(1, sizeof(*l));
        if (!l) {
            ok = false;
            break;
        }
        v[i] = l;
        l->cfg = lc;
        /* Listeners sharing a file share nothing else: loading it once per listener
         * keeps ownership simple, and such files are small. */
        if (lc->password_file &&
            !(l->passwd = passwd_load(lc->password_file, report_security, NULL)))
            ok = false;
        if (lc->acl_file && !(l->acl = acl_load(lc->acl_file, report_security, NULL)))
            ok = false;
    }
    if (!ok) {
        listener_ctxs_free(v, cfg->listener_count);
        return NULL;
    }
    return v;
}

/* ---- what the admin API asks the server --------------------------------------------- */

static const char *socket_protocol(const struct mq_listen_socket *ls)
{
    const struct mq_listener_config *lc = ls->lctx->cfg;
    bool tls = lc->certfile != NULL;
    if (lc->protocol == MQ_LISTENER_WEBSOCKETS)
        return tls ? "websockets over tls" : "websockets";
    return tls ? "mqtt over tls" : "mqtt";
}

static size_t admin_listeners(void *ctx, struct admin_listener *out, size_t max)
{
    struct mq_server *srv = ctx;
    for (size_t i = 0; i < srv->socket_count && i < max; i++) {
        const struct mq_listen_socket *ls = srv->sockets[i];
        const struct mq_listener_config *lc = ls->lctx->cfg;
        out[i] = (struct admin_listener){
            .name = ls->name,
            .protocol = socket_protocol(ls),
            .admin = lc->protocol == MQ_LISTENER_WEBSOCKETS && lc->admin_users,
        };
    }
    return srv->socket_count;
}

static bool admin_listener_name(void *ctx, const struct mq_listener_ctx *l, char *buf, size_t size)
{
    struct mq_server *srv = ctx;
    for (size_t i = 0; i < srv->socket_count; i++) {
        const struct mq_listen_socket *ls = srv->sockets[i];
        if (ls->lctx == l) {
            snprintf(buf, size, "%s (%s)", ls->name, socket_protocol(ls));
            return true;
        }
    }
    return false;
}

static void on_tick(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    srv->broker->now_ms = uv_now(&srv->loop);
    broker_tick(srv->broker);
    bridges_tick(srv);
    client_out_trim(srv, false);
}

/* The changes of a loop turn go to the store as one batch (group commit) before the
 * output is written, so acknowledgements already covered go out in the same write. */
void server_flush_turn(struct mq_server *srv)
{
    broker_store_flush(srv->broker);
    client_flush_all(srv);
}

/* Inside libuv's turn (poller_run): after its I/O callbacks (listeners, signals,
 * uv_async of the store, thread-pool completions)... */
static void on_flush(uv_check_t *h)
{
    server_flush_turn(h->data);
}

/* ...and after its timers (keepalive timeouts, $SYS), before its own poll. */
static void on_flush_pre(uv_prepare_t *h)
{
    server_flush_turn(h->data);
}

/* ---- the durable store ------------------------------------------------------------- */

static void on_store_wake(uv_async_t *h)
{
    struct mq_server *srv = h->data;
    broker_store_committed(srv->broker);
}

/* Called on the store thread: uv_async_send is the one libuv call allowed there. */
static void store_wake(void *ctx)
{
    uv_async_send(ctx);
}

/* Paging: a persistent session's queued messages beyond what it keeps in memory are read
 * back on libuv's thread pool, never on the loop, and handed to proto when read. */
struct page_work {
    uv_work_t req;
    struct mq_server *srv;
    struct mq_store *store;
    uint64_t after_seq, token;
    int64_t wall_offset_ms; /* the broker's, read on the loop: expiries come back on its clock */
    uint32_t max;
    int64_t err;
    struct mq_paged_msg *msgs;
    size_t n, cap;
    uint16_t client_id_len;
    char client_id[];
};

static int page_collect(void *ctx, const struct mq_store_msg *m)
{
    struct page_work *w = ctx;
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 64;
        struct mq_paged_msg *v = realloc(w->msgs, ncap * sizeof(*v));
        if (!v)
            return MQ_ERR_NOMEM;
        w->msgs = v;
        w->cap = ncap;
    }
    /* The message object is new and not shared yet, so building it here is safe. Its
     * properties and Subscription Identifiers come back with it, its expiry on the broker's
     * clock (one that passed is dropped and counted by proto when it would be sent). */
    uint64_t expires = 0;
    if (m->expires_wall_ms) {
        int64_t t = (int64_t)m->expires_wall_ms - w->wall_offset_ms;
        expires = t > 0 ? (uint64_t)t : 1;
    }
    struct mq_msg *msg = msg_new_props((const uint8_t *)m->topic, m->topic_len, m->payload,
                                       m->payload_len, m->qos, m->retain, m->props_len, expires);
    if (!msg)
        return MQ_ERR_NOMEM;
    if (m->props_len)
        memcpy(msg_props(msg), m->props, m->props_len);
    struct mq_paged_msg *p = &w->msgs[w->n];
    *p = (struct mq_paged_msg){.seq = m->seq, .msg = msg, .qos = m->qos, .retain = m->retain};
    if (sub_ids_set(&p->sub_ids, m->sub_ids, m->n_sub_ids)) {
        msg_unref(msg);
        return MQ_ERR_NOMEM;
    }
    w->n++;
    return 0;
}

static void page_work(uv_work_t *req)
{
    struct page_work *w = req->data;
    w->err = store_msg_page(w->store, w->client_id, w->client_id_len, w->after_seq, w->max,
                            page_collect, w);
}

static void page_done(uv_work_t *req, int status)
{
    struct page_work *w = req->data;
    struct mq_server *srv = w->srv;
    srv->broker->now_ms = uv_now(&srv->loop);
    broker_store_paged(srv->broker, w->client_id, w->client_id_len, w->token, w->msgs, w->n,
                       status < 0   ? MQ_ERR_IO
                       : w->err < 0 ? (int)w->err
                                    : 0);
    free(w->msgs);
    free(w);
}

static void page_read(void *ctx, const char *client_id, uint16_t client_id_len, uint64_t after_seq,
                      uint32_t max, uint64_t token)
{
    struct mq_server *srv = ctx;
    struct page_work *w = calloc(1, sizeof(*w) + client_id_len + 1u);
    if (w) {
        w->srv = srv;
        w->store = srv->store;
        w->after_seq = after_seq;
        w->token = token;
        w->wall_offset_ms = srv->broker->wall_offset_ms;
        w->max = max;
        w->client_id_len = client_id_len;
        memcpy(w->client_id, client_id, client_id_len);
        w->req.data = w;
    }
    if (!w || uv_queue_work(&srv->loop, &w->req, page_work, page_done)) {
        mq_log(MQ_LOG_ERR, "persistence: cannot start reading queued messages of client %.*s",
               (int)client_id_len, client_id);
        free(w);
        broker_store_paged(srv->broker, client_id, client_id_len, token, NULL, 0, MQ_ERR_NOMEM);
    }
}

static void store_report(void *ctx, enum mq_store_event ev, const char *text)
{
    (void)ctx;
    int level;
    switch (ev) {
    case MQ_STORE_EV_CREATED:
    case MQ_STORE_EV_OPENED: level = MQ_LOG_INFO; break;
    case MQ_STORE_EV_MIGRATED:
    case MQ_STORE_EV_WRITE_RECOVERED: level = MQ_LOG_NOTICE; break;
    default: level = MQ_LOG_ERR; break;
    }
    mq_log(level, "persistence: %s", text);
}

static char *store_path(const struct mq_config *cfg)
{
    const char *dir = cfg->persistence_location ? cfg->persistence_location : "";
    size_t dl = strlen(dir);
    /* Mosquitto documents a trailing slash; accept the directory without one too. */
    const char *sep = dl && dir[dl - 1] != '/' ? "/" : "";
    size_t n = dl + strlen(sep) + strlen(cfg->persistence_file) + 1;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s%s%s", dir, sep, cfg->persistence_file);
    return path;
}

static int64_t wall_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* persistence true: open the database (a damaged one is moved aside by store_open),
 * load it into the broker and start recording. -1 (logged) when it cannot be used. */
static int store_start(struct mq_server *srv)
{
    const struct mq_config *cfg = srv->cfg;
    uv_async_init(&srv->loop, &srv->store_wake, on_store_wake);
    srv->store_wake.data = srv;
    uv_unref((uv_handle_t *)&srv->store_wake); /* never what keeps the loop running */
    if (!cfg->persistence)
        return 0;
    char *path = store_path(cfg);
    if (!path) {
        mq_log(MQ_LOG_ERR, "out of memory");
        return -1;
    }
    bool ack = cfg->persistence_durability == MQ_DURABILITY_ACK;
    struct mq_store_options o = {
        .durability = ack ? MQ_STORE_DURABILITY_ACK : MQ_STORE_DURABILITY_RELAXED,
        .wake = store_wake,
        .wake_ctx = &srv->store_wake,
    };
    srv->store = store_open(path, &o, store_report, NULL);
    if (!srv->store) {
        mq_log(MQ_LOG_ERR, "persistence: cannot use %s (above); not starting", path);
        free(path);
        return -1;
    }
    srv->broker->now_ms = uv_now(&srv->loop);
    if (broker_store_attach(srv->broker, srv->store, ack,
                            wall_clock_ms() - (int64_t)srv->broker->now_ms)) {
        mq_log(MQ_LOG_ERR,
               "persistence: %s could not be loaded (above); not starting, so "
               "that nothing in it is lost",
               path);
        free(path);
        return -1;
    }
    srv->broker->page_read = page_read;
    srv->broker->page_ctx = srv;
    mq_log(MQ_LOG_INFO, "persistence: %s, durability %s", path, ack ? "ack" : "relaxed");
    free(path);
    return 0;
}

/* After the loop: commit the last changes (sessions going offline), wait for the disk,
 * close the database. Then the wake handle can go (the caller runs the loop once more). */
static void store_stop(struct mq_server *srv)
{
    if (srv->store) {
        broker_store_flush(srv->broker);
        store_close(srv->store);
        srv->store = NULL;
        srv->broker->store = NULL;
    }
    if (!uv_is_closing((uv_handle_t *)&srv->store_wake))
        uv_close((uv_handle_t *)&srv->store_wake, NULL);
}

static void notify_status(struct mq_server *srv, const char *prefix)
{
    const struct mq_stats *st = &srv->broker->stats;
    notify_sendf("%sSTATUS=%llu clients connected, %llu messages received, %llu sent", prefix,
                 (unsigned long long)st->clients_connected, (unsigned long long)st->pub_received,
                 (unsigned long long)st->pub_sent);
}

static void on_watchdog(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    notify_status(srv, "WATCHDOG=1\n");
}

static void on_sys(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    srv->broker->now_ms = uv_now(&srv->loop);
    sys_update(&srv->sys_state, srv->broker);
    bridges_sys(srv);
}

/* (Re)start $SYS publication at the configured interval; 0 stops it. The first
 * set is published at once so monitors see values right after start-up. */
static void sys_timer_apply(struct mq_server *srv)
{
    uint32_t interval = srv->cfg->sys_interval;
    if (interval == srv->sys_interval)
        return;
    srv->sys_interval = interval;
    uv_timer_stop(&srv->sys);
    if (interval)
        uv_timer_start(&srv->sys, on_sys, 0, (uint64_t)interval * 1000u);
}

static uint64_t monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void reload(struct mq_server *srv)
{
    const char *path = srv->opts->config_path;
    if (!path) {
        mq_log(MQ_LOG_NOTICE, "SIGHUP received: running without a configuration file, "
                              "nothing to reload");
        return;
    }
    notify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)monotonic_usec());
    mq_log(MQ_LOG_NOTICE, "SIGHUP received: reloading %s", path);
    struct mq_config *ncfg = calloc(1, sizeof(*ncfg));
    struct mq_config **retired =
        realloc(srv->retired, (srv->retired_count + 1) * sizeof(*srv->retired));
    if (retired)
        srv->retired = retired;
    struct mq_log_options lo;
    if (!ncfg || !retired) {
        mq_log(MQ_LOG_ERR, "reload: out of memory; the running configuration stays in force");
        free(ncfg);
        goto out;
    }
    if (server_load_config(srv->opts, ncfg)) {
        mq_log(MQ_LOG_ERR,
               "reload: %s has errors (above); the running configuration stays "
               "in force",
               path);
        free(ncfg);
        goto out;
    }
    struct mq_listener_ctx **nlctx = listener_ctxs_new(ncfg);
    struct mq_listener_ctx **rl = realloc(
        srv->retired_lctx, (srv->retired_lctx_count + srv->cfg->listener_count + 1) * sizeof(*rl));
    if (rl)
        srv->retired_lctx = rl;
    struct mq_bridge_reload *br = NULL;
    if (!nlctx || !rl || daemon_log_options(ncfg, srv->opts->verbose, &lo) ||
        bridges_reload_prepare(srv, ncfg, &br)) {
        mq_log(MQ_LOG_ERR, "reload: the running configuration stays in force (the password "
                           "file, ACL and log settings included)");
        listener_ctxs_free(nlctx, ncfg->listener_count);
        config_free(ncfg);
        free(ncfg);
        goto out;
    }
    /* Contexts of listeners that go away stay alive for their clients and sessions. */
    struct mq_listener_ctx **old = srv->lctx;
    if (listeners_reload(srv, ncfg, nlctx))
        mq_log(MQ_LOG_ERR, "reload: some new listeners could not be opened (above); the rest "
                           "of the new configuration is in force");
    /* Connections accepted under the old configuration keep pointers into it. */
    for (size_t i = 0; i < srv->cfg->listener_count; i++) {
        bool kept = false;
        for (size_t j = 0; j < ncfg->listener_count && !kept; j++)
            kept = nlctx[j] == old[i];
        if (!kept)
            srv->retired_lctx[srv->retired_lctx_count++] = old[i];
    }
    free(old);
    srv->lctx = nlctx;
    srv->retired[srv->retired_count++] = srv->cfg;
    srv->cfg = ncfg;
    broker_set_config(srv->broker, ncfg);
    bridges_reload_commit(srv, br);
    log_configure(&lo);
    sys_timer_apply(srv);
    mq_log(MQ_LOG_NOTICE, "configuration reloaded from %s (%zu listening sockets)", path,
           srv->socket_count);
out:
    notify_status(srv, "READY=1\n");
}

static void begin_shutdown(struct mq_server *srv, const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    notify_send("STOPPING=1");
    mq_log(MQ_LOG_NOTICE, "%s: shutting down (%zu clients connected)", why, srv->client_count);
    listeners_stop(srv);
    linger_stop(srv); /* and from now on a closed socket is closed at once */
    srv->broker->now_ms = uv_now(&srv->loop);
    bridges_stop(srv); /* tells the remotes, before proto closes the bridges' local sides */
    broker_close_all(srv->broker);
    client_flush_all(srv);
    /* Close what remains: sockets proto never saw, and any left mid-close. */
    for (struct mq_client *cl = srv->clients; cl; cl = cl->next)
        client_close(cl, "broker shutting down");
    while (srv->dirty) /* frees every client: all are closed, so this ends */
        client_flush_all(srv);
    tls_server_stop(srv); /* handshake steps still running belonged to those clients */
    /* The epoll set stays open: poller_run waits on it until the loop has drained. */
    uv_close((uv_handle_t *)&srv->accept_pause, NULL);
    uv_close((uv_handle_t *)&srv->tick, NULL);
    uv_close((uv_handle_t *)&srv->watchdog, NULL);
    uv_close((uv_handle_t *)&srv->sys, NULL);
    uv_close((uv_handle_t *)&srv->flush, NULL);
    uv_close((uv_handle_t *)&srv->flush_pre, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_hup, NULL);
    uv_close((uv_handle_t *)&srv->sig_usr1, NULL);
    uv_close((uv_handle_t *)&srv->sig_usr2, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct mq_server *srv = h->data;
    if (signum == SIGHUP)
        reload(srv);
    else if (signum == SIGUSR1 || signum == SIGUSR2)
        mq_log(MQ_LOG_INFO, "SIGUSR%d received and ignored", signum == SIGUSR1 ? 1 : 2);
    else
        begin_shutdown(srv, signum == SIGINT ? "SIGINT received" : "SIGTERM received");
}

static bool all_loopback(const struct mq_server *srv)
{
    for (size_t i = 0; i < srv->socket_count; i++) {
        const char *n = srv->sockets[i]->name;
        if (strncmp(n, "127.", 4) != 0 && strncmp(n, "[::1]", 5) != 0)
            return false;
    }
    return true;
}

/* One line that says where the broker can be reached and how to open it up. */
static void log_summary(const struct mq_server *srv)
{
    char list[512];
    size_t n = 0;
    list[0] = '\0';
    for (size_t i = 0; i < srv->socket_count && n < sizeof(list) - 1; i++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "",
                              srv->sockets[i]->name);
    if (all_loopback(srv))
        mq_log(MQ_LOG_NOTICE,
               "midge %s serving %s (loopback only; to open it to the LAN, start with "
               "-c /etc/midge/midge.conf or a config with \"listener 1883\" and "
               "\"allow_anonymous true\")",
               MIDGE_VERSION, list);
    else
        mq_log(MQ_LOG_NOTICE, "midge %s serving %s", MIDGE_VERSION, list);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void init_handles(struct mq_server *srv)
{
    uv_timer_init(&srv->loop, &srv->tick);
    uv_timer_init(&srv->loop, &srv->watchdog);
    uv_timer_init(&srv->loop, &srv->sys);
    uv_timer_init(&srv->loop, &srv->accept_pause);
    uv_check_init(&srv->loop, &srv->flush);
    uv_prepare_init(&srv->loop, &srv->flush_pre);
    uv_signal_init(&srv->loop, &srv->sig_int);
    uv_signal_init(&srv->loop, &srv->sig_term);
    uv_signal_init(&srv->loop, &srv->sig_hup);
    uv_signal_init(&srv->loop, &srv->sig_usr1);
    uv_signal_init(&srv->loop, &srv->sig_usr2);
    srv->sig_usr1.data = srv->sig_usr2.data = srv;
    srv->tick.data = srv->watchdog.data = srv->sys.data = srv->accept_pause.data = srv;
    srv->flush.data = srv->flush_pre.data = srv;
    srv->sig_int.data = srv->sig_term.data = srv->sig_hup.data = srv;
}

static void start_handles(struct mq_server *srv)
{
    uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
    uv_check_start(&srv->flush, on_flush);
    uv_prepare_start(&srv->flush_pre, on_flush_pre);
    uint64_t wd = notify_watchdog_usec();
    if (wd) {
        /* Half the interval, as sd_watchdog_enabled(3) recommends. */
        uint64_t ms = wd / 2000u ? wd / 2000u : 1;
        uv_timer_start(&srv->watchdog, on_watchdog, ms, ms);
    }
    sys_timer_apply(srv);
}

int server_run(struct mq_config *cfg, const struct mq_server_options *opts)
{
    struct mq_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        mq_log(MQ_LOG_ERR, "out of memory");
        config_free(cfg);
        free(cfg);
        daemon_ready(opts->ready_fd, false);
        return 1;
    }
    int status = 1;
    srv->cfg = cfg;
    srv->opts = opts;
    srv->epfd = -1;
    if (uv_loop_init(&srv->loop)) {
        mq_log(MQ_LOG_ERR, "cannot create the event loop");
        goto out_noloop;
    }
    srv->broker = broker_new(cfg, &client_sink, uv_now(&srv->loop));
    if (!srv->broker) {
        mq_log(MQ_LOG_ERR, "out of memory");
        goto out;
    }
    srv->broker->check_password = check_password;
    srv->admin = admin_new(srv->broker, &(struct admin_server){
                                            .config_file = opts->config_path,
                                            .sys = &srv->sys_state,
                                            .ctx = srv,
                                            .listeners = admin_listeners,
                                            .listener_name = admin_listener_name,
                                        });
    if (!srv->admin) {
        mq_log(MQ_LOG_ERR, "out of memory");
        goto out;
    }
    srv->lctx = listener_ctxs_new(cfg);
    if (!srv->lctx) {
        mq_log(MQ_LOG_ERR, "start-up failed: a password or ACL file could not be loaded");
        goto out;
    }
    if (store_start(srv)) {
        store_stop(srv);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        goto out;
    }
    signal(SIGPIPE, SIG_IGN); /* a peer that vanished is a write error, not a death */
    sys_init(&srv->sys_state, srv->broker);
    init_handles(srv);

    /* Signals first: a SIGTERM that arrives while the listeners are being bound must
     * still mean a clean shutdown, not the default action. */
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
    /* Mosquitto users may send these (save / dump); they must not kill the broker. */
    uv_signal_start(&srv->sig_usr1, on_signal, SIGUSR1);
    uv_signal_start(&srv->sig_usr2, on_signal, SIGUSR2);
    if (poller_start(srv) || listeners_start(srv) || bridges_start(srv) ||
        daemon_drop_privileges(cfg->user, cfg->log_dest & MQ_LOG_DEST_FILE ? cfg->log_file : NULL,
                               cfg->pid_file)) {
        mq_log(MQ_LOG_ERR, "start-up failed: %s",
               srv->socket_count ? "see above" : "not every listener could be opened");
        listeners_stop(srv);
        poller_stop(srv);
        store_stop(srv);
        uv_walk(&srv->loop, close_walk, NULL);
        uv_run(&srv->loop, UV_RUN_DEFAULT); /* no client yet: nothing was accepted */
        goto out;
    }
    log_summary(srv);
    start_handles(srv);
    daemon_ready(opts->ready_fd, true);
    notify_status(srv, "READY=1\n"); /* only now: every listener is bound */

    poller_run(srv);
    /* Every client is gone (begin_shutdown freed them) and no listener is left: libuv's
     * own loop can drain what the store's closing leaves. */
    poller_stop(srv);
    store_stop(srv);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    mq_log(MQ_LOG_NOTICE, "midge stopped (%llu messages received, %llu sent)",
           (unsigned long long)srv->broker->stats.pub_received,
           (unsigned long long)srv->broker->stats.pub_sent);
    status = 0;
out:
    client_out_trim(srv, true); /* every client is closed: the pool is all that is left */
    if (uv_loop_close(&srv->loop))
        mq_log(MQ_LOG_WARNING, "event loop closed with handles still open");
out_noloop:
    if (status)
        daemon_ready(opts->ready_fd, false);
    admin_free(srv->admin);
    broker_free(srv->broker);
    bridges_free(srv); /* after the broker: sessions point at the bridges' listener context */
    listener_ctxs_free(srv->lctx, srv->cfg->listener_count);
    listener_ctxs_free(srv->retired_lctx, srv->retired_lctx_count);
    for (size_t i = 0; i < srv->retired_count; i++) {
        config_free(srv->retired[i]);
        free(srv->retired[i]);
    }
    free(srv->retired);
    config_free(srv->cfg);
    free(srv->cfg);
    free(srv);
    return status;
}

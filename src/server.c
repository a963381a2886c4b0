/* server.c - the event loop: listeners, signals, reload, the keepalive tick, the
 * per-turn output flush, systemd notification, and an orderly shutdown.
 *
 * Owns the uv loop, every server-wide handle and the running configuration.
 * Shutdown order: stop accepting, ask proto to close every connection (their
 * output is flushed once), close the server's handles, run the loop until every
 * close callback has run, then free the broker: nothing is freed inside a
 * callback that still needs it.
 */
#include "midge/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "midge/acl.h"
#include "midge/config.h"
#include "midge/daemon.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/notify.h"
#include "midge/passwd.h"
#include "midge/proto.h"
#include "net/net.h"
#include "net/tls.h"

#define TICK_MS 250

static void report_config(void *ctx, bool is_error, const char *line)
{
    (void)ctx;
    mq_log(is_error ? MQ_LOG_ERR : MQ_LOG_WARNING, "%s", line);
}

/* Settings that would silently weaken security or change the transport if ignored:
 * refuse to run rather than serve plaintext or let everyone read everything. */
static int refuse_unimplemented(const char *path, const struct mq_config *cfg)
{
    int bad = 0;
    const char *file = path ? path : "(built-in defaults)";
    for (size_t i = 0; i < cfg->listener_count; i++) {
        const struct mq_listener_config *l = &cfg->listeners[i];
        if (l->protocol == MQ_LISTENER_WEBSOCKETS && tls_enabled(l)) {
            mq_log(MQ_LOG_ERR,
                   "%s: listener %u: websockets over TLS (wss) is not yet supported "
                   "by this version of midge; refusing to serve that listener "
                   "unencrypted",
                   file, l->port);
            bad = 1;
        }
        if (tls_check_config(file, l))
            bad = 1;
    }
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

static void on_tick(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    srv->broker->now_ms = uv_now(&srv->loop);
    broker_tick(srv->broker);
    client_out_trim(srv, false);
}

static void on_flush(uv_check_t *h)
{
    struct mq_server *srv = h->data;
    client_flush_all(srv);
}

/* Output made outside I/O callbacks (keepalive timeouts, wills published from a
 * close callback) is flushed before the loop blocks again. */
static void on_flush_pre(uv_prepare_t *h)
{
    struct mq_server *srv = h->data;
    client_flush_all(srv);
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
    if (!nlctx || !rl || daemon_log_options(ncfg, srv->opts->verbose, &lo)) {
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
    srv->broker->now_ms = uv_now(&srv->loop);
    broker_close_all(srv->broker);
    client_flush_all(srv);
    /* Close what remains: sockets proto never saw, and any left mid-close. */
    for (struct mq_client *cl = srv->clients; cl; cl = cl->next)
        client_close(cl, "broker shutting down");
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
    uv_check_init(&srv->loop, &srv->flush);
    uv_prepare_init(&srv->loop, &srv->flush_pre);
    uv_signal_init(&srv->loop, &srv->sig_int);
    uv_signal_init(&srv->loop, &srv->sig_term);
    uv_signal_init(&srv->loop, &srv->sig_hup);
    uv_signal_init(&srv->loop, &srv->sig_usr1);
    uv_signal_init(&srv->loop, &srv->sig_usr2);
    srv->sig_usr1.data = srv->sig_usr2.data = srv;
    srv->tick.data = srv->watchdog.data = srv->sys.data = srv;
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
    srv->lctx = listener_ctxs_new(cfg);
    if (!srv->lctx) {
        mq_log(MQ_LOG_ERR, "start-up failed: a password or ACL file could not be loaded");
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
    if (listeners_start(srv) ||
        daemon_drop_privileges(cfg->user, cfg->log_dest & MQ_LOG_DEST_FILE ? cfg->log_file : NULL,
                               cfg->pid_file)) {
        mq_log(MQ_LOG_ERR, "start-up failed: %s",
               srv->socket_count ? "see above" : "not every listener could be opened");
        listeners_stop(srv);
        uv_walk(&srv->loop, close_walk, NULL);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        goto out;
    }
    log_summary(srv);
    start_handles(srv);
    daemon_ready(opts->ready_fd, true);
    notify_status(srv, "READY=1\n"); /* only now: every listener is bound */

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
    broker_free(srv->broker);
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

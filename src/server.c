/* server.c - the event loop: listeners, signals, the keepalive tick, the per-turn
 * output flush, and an orderly shutdown.
 *
 * Owns the uv loop and every server-wide handle. Shutdown order: stop accepting,
 * ask proto to close every connection (their output is flushed once), close the
 * server's handles, run the loop until every handle's close callback has run,
 * then free the broker: nothing is freed inside a callback that still needs it.
 */
#include "midge/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/config.h"
#include "midge/log.h"
#include "midge/proto.h"
#include "net/net.h"

#define TICK_MS 250

static void on_tick(uv_timer_t *t)
{
    struct mq_server *srv = t->data;
    srv->broker->now_ms = uv_now(&srv->loop);
    broker_tick(srv->broker);
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

static void begin_shutdown(struct mq_server *srv, const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    mq_log(MQ_LOG_NOTICE, "%s: shutting down (%zu clients connected)", why, srv->client_count);
    listeners_stop(srv);
    srv->broker->now_ms = uv_now(&srv->loop);
    broker_close_all(srv->broker);
    client_flush_all(srv);
    /* Close what remains (connections still in their CONNECT phase are closed by
     * proto too; this catches sockets proto never saw). */
    for (struct mq_client *cl = srv->clients; cl; cl = cl->next)
        client_close(cl, "broker shutting down");
    uv_close((uv_handle_t *)&srv->tick, NULL);
    uv_close((uv_handle_t *)&srv->flush, NULL);
    uv_close((uv_handle_t *)&srv->flush_pre, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_hup, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct mq_server *srv = h->data;
    if (signum == SIGHUP) {
        mq_log(MQ_LOG_WARNING, "SIGHUP received: configuration reload is not implemented yet; "
                               "restart midge to apply changes");
        return;
    }
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

int server_run(const struct mq_config *cfg)
{
    struct mq_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        mq_log(MQ_LOG_ERR, "out of memory");
        return 1;
    }
    int status = 1;
    srv->cfg = cfg;
    if (uv_loop_init(&srv->loop)) {
        mq_log(MQ_LOG_ERR, "cannot create the event loop");
        free(srv);
        return 1;
    }
    srv->broker = broker_new(cfg, &client_sink, uv_now(&srv->loop));
    if (!srv->broker) {
        mq_log(MQ_LOG_ERR, "out of memory");
        goto out;
    }
    signal(SIGPIPE, SIG_IGN); /* a peer that vanished is a write error, not a death */

    uv_timer_init(&srv->loop, &srv->tick);
    uv_check_init(&srv->loop, &srv->flush);
    uv_prepare_init(&srv->loop, &srv->flush_pre);
    uv_signal_init(&srv->loop, &srv->sig_int);
    uv_signal_init(&srv->loop, &srv->sig_term);
    uv_signal_init(&srv->loop, &srv->sig_hup);
    srv->tick.data = srv->flush.data = srv->flush_pre.data = srv;
    srv->sig_int.data = srv->sig_term.data = srv->sig_hup.data = srv;

    if (listeners_start(srv)) {
        mq_log(MQ_LOG_ERR, "start-up failed: not every listener could be opened");
        listeners_stop(srv);
        uv_walk(&srv->loop, close_walk, NULL);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        goto out;
    }
    log_summary(srv);
    uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
    uv_check_start(&srv->flush, on_flush);
    uv_prepare_start(&srv->flush_pre, on_flush_pre);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);

    uv_run(&srv->loop, UV_RUN_DEFAULT);
    mq_log(MQ_LOG_NOTICE, "midge stopped (%llu messages received, %llu sent)",
           (unsigned long long)srv->broker->stats.pub_received,
           (unsigned long long)srv->broker->stats.pub_sent);
    status = 0;
out:
    if (uv_loop_close(&srv->loop))
        mq_log(MQ_LOG_WARNING, "event loop closed with handles still open");
    broker_free(srv->broker);
    free(srv);
    return status;
}

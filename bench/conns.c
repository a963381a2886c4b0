/*
 * conns.c - the "conns" mode: K idle connections, each CONNECT + SUBSCRIBE to
 * its own topic, opened at a paced rate and then held.
 *
 * It answers two questions about a broker on a small machine: how fast it
 * takes new sessions, and what an idle session costs it in memory (broker RSS
 * after minus before, divided by the sessions held). Handshakes are paced and
 * capped in number so that the figure measures the broker, not a SYN flood.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

struct cconn {
    struct conn c; /* first: epoll hands back the struct conn pointer */
    bool held;
};

struct cstate {
    const struct conns_opts *o;
    struct loop loop;
    struct cconn *conns;
    int count;
    int opened;
    int pending; /* handshakes in progress */
    int held;
    int failed;
    int refused; /* CONNACK or SUBACK said no */
    int dropped; /* closed by the broker after the handshake */
    int first_err;
    char first_reason[128];
    bool holding;
    uint16_t keepalive; /* the client's, or the shortest Server Keep Alive a CONNACK set */
    struct hist hs; /* handshake time: connect() to SUBACK */
    uint64_t t_first_done, t_last_done;
};

static void fail_conn(struct cstate *s, struct cconn *cc, const char *why, int err)
{
    if (!s->first_err && !s->first_reason[0]) {
        s->first_err = err;
        snprintf(s->first_reason, sizeof(s->first_reason), "connection %d: %s%s%s", cc->c.index,
                 why, err ? ": " : "", err ? strerror(err) : "");
    }
    if (cc->held) {
        cc->held = false;
        s->held--;
        s->dropped++;
    } else {
        s->pending--;
        s->failed++;
    }
    conn_close(&s->loop, &cc->c);
}

static void handle_packet(struct cstate *s, struct cconn *cc, const struct packet *pk, uint64_t now)
{
    char why[160];
    const int version = s->o->c.version;
    switch (pk->type) {
    case PKT_CONNACK: {
        struct connack ca;
        if (wire_parse_connack(pk, version, &ca) < 0) {
            fail_conn(s, cc, "malformed CONNACK", 0);
            break;
        }
        if (ca.reason != 0) {
            snprintf(why, sizeof(why), "CONNACK refused: %s (code 0x%02x)%s%s",
                     wire_connack_reason(version, ca.reason), ca.reason,
                     ca.reason_string[0] ? ": " : "", ca.reason_string);
            s->refused++;
            fail_conn(s, cc, why, 0);
            break;
        }
        if (ca.server_keepalive > 0 && (s->keepalive == 0 || ca.server_keepalive < s->keepalive))
            s->keepalive = (uint16_t)ca.server_keepalive;
        break;
    }
    case PKT_SUBACK: {
        uint16_t pid;
        const uint8_t *codes;
        size_t n;
        if (wire_parse_suback(pk, version, &pid, &codes, &n) < 0) {
            fail_conn(s, cc, "malformed SUBACK", 0);
            break;
        }
        if (wire_suback_refused(codes[0])) {
            snprintf(why, sizeof(why), "SUBACK refused the subscription (0x%02x)", codes[0]);
            s->refused++;
            fail_conn(s, cc, why, 0);
            break;
        }
        if (!cc->held) {
            cc->held = true;
            cc->c.state = CS_READY;
            s->held++;
            s->pending--;
            hist_add(&s->hs, now - cc->c.started_ns);
            if (!s->t_first_done)
                s->t_first_done = now;
            s->t_last_done = now;
        }
        break;
    }
    case PKT_PINGRESP: break;
    case PKT_DISCONNECT: {
        int reason;
        char text[96];
        if (version == MQTT_5 && wire_parse_disconnect(pk, &reason, text, sizeof(text)) == 0)
            snprintf(why, sizeof(why), "DISCONNECT from the broker: 0x%02x (%s)%s%s", reason,
                     wire_reason_name(reason), text[0] ? ": " : "", text);
        else
            snprintf(why, sizeof(why), "unexpected DISCONNECT packet");
        fail_conn(s, cc, why, 0);
        break;
    }
    default:
        snprintf(why, sizeof(why), "unexpected %s packet", wire_type_name(pk->type));
        fail_conn(s, cc, why, 0);
    }
}

static void on_event(struct cstate *s, struct cconn *cc, uint32_t events, uint64_t now)
{
    struct conn *c = &cc->c;
    if (c->state == CS_CLOSED)
        return;
    if (c->state == CS_CONNECTING) {
        int err = conn_finish_connect(&s->loop, c);
        if (err) {
            fail_conn(s, cc, "connect", err);
            return;
        }
        char id[48], topic[64];
        snprintf(id, sizeof(id), "%s-c%d", s->o->c.prefix, c->index);
        snprintf(topic, sizeof(topic), "%s/c%d", s->o->c.prefix, c->index);
        wire_connect(&c->out, s->o->c.version, id, s->o->c.keepalive, true);
        wire_subscribe(&c->out, s->o->c.version, 1, NULL, topic, 0);
        conn_mark_dirty(&s->loop, c);
        return;
    }
    if (events & EPOLLOUT) {
        int rc = conn_flush(&s->loop, c);
        if (rc < 0) {
            fail_conn(s, cc, "write", -rc);
            return;
        }
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    ssize_t n = conn_read(&s->loop, c);
    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        fail_conn(s, cc, n == 0 ? "closed by the broker" : "read", n < 0 ? (int)-n : 0);
        return;
    }
    struct packet pk;
    int rc;
    while (c->state != CS_CLOSED &&
           (rc = wire_parse(c->in.data + c->in.off, c->in.len - c->in.off, &pk)) == 1) {
        handle_packet(s, cc, &pk, now);
        if (c->state != CS_CLOSED)
            c->in.off += pk.total;
    }
    if (c->state != CS_CLOSED && rc < 0)
        fail_conn(s, cc, "malformed packet", 0);
}

/* Runs the loop once; returns after events or at the deadline. */
static void turn(struct cstate *s, uint64_t wake)
{
    static struct epoll_event events[512];
    int err;
    struct conn *bad;
    while ((bad = loop_flush_all(&s->loop, &err)) != NULL)
        fail_conn(s, (struct cconn *)bad, "write", err);
    uint64_t now = now_ns();
    struct timespec ts = {0, 0};
    if (wake > now) {
        ts.tv_sec = (time_t)((wake - now) / 1000000000ull);
        ts.tv_nsec = (long)((wake - now) % 1000000000ull);
    }
    int n = epoll_pwait2(s->loop.epfd, events, 512, &ts, NULL);
    if (n < 0 && errno != EINTR)
        die(1, "epoll_pwait2: %s", strerror(errno));
    for (int k = 0; k < n; k++)
        on_event(s, events[k].data.ptr, events[k].events, now_ns());
}

int run_conns(const struct conns_opts *o)
{
    struct cstate *s = calloc(1, sizeof(*s));
    if (!s)
        die(1, "out of memory");
    s->o = o;
    s->keepalive = o->c.keepalive;
    hist_reset(&s->hs);
    uint64_t fd_limit = raise_fd_limit();
    s->count = o->count;
    bool clamped = false;
    if ((uint64_t)s->count + 16 > fd_limit) {
        s->count = (int)(fd_limit - 16);
        clamped = true;
        warnx_("--count %d exceeds the file-descriptor limit (%llu): opening %d connections",
               o->count, (unsigned long long)fd_limit, s->count);
    }
    s->conns = calloc((size_t)s->count, sizeof(*s->conns));
    if (!s->conns)
        die(1, "out of memory");
    loop_init(&s->loop, o->c.host, o->c.port, o->c.ws_path);
    if (o->c.tls) {
        tls_loop_init(&s->loop, &o->c);
        if (o->c.resume) {
            char id[48];
            snprintf(id, sizeof(id), "%s-prime", o->c.prefix);
            tls_prime_session(&s->loop, id);
        }
    }
    for (int i = 0; i < s->count; i++) {
        s->conns[i].c.fd = -1;
        s->conns[i].c.index = i;
        s->conns[i].c.in_cap = 64; /* CONNACK, SUBACK, PINGRESP: keep our own side small */
    }

    struct proc_sample b0 = {0}, b1 = {0}, b2 = {0};
    if (o->c.broker_pid && !proc_sample(o->c.broker_pid, &b0))
        warnx_("--broker-pid %d: cannot read /proc", o->c.broker_pid);

    /* Handshakes, paced: connection i starts no earlier than t0 + i / rate. */
    uint64_t t0 = now_ns();
    uint64_t interval = (uint64_t)(1e9 / o->rate);
    uint64_t timeout = (uint64_t)(o->timeout * 1e9);
    uint64_t last_open = t0;
    for (;;) {
        uint64_t now = now_ns();
        while (s->opened < s->count && s->pending < o->max_pending &&
               t0 + (uint64_t)s->opened * interval <= now) {
            struct cconn *cc = &s->conns[s->opened++];
            s->pending++;
            last_open = now;
            int rc = conn_open(&s->loop, &cc->c);
            if (rc < 0)
                fail_conn(s, cc, "socket/connect", -rc);
        }
        if (s->opened == s->count && s->pending == 0)
            break;
        if (s->opened > 0 && s->held == 0 && s->failed == s->opened && s->first_err == ECONNREFUSED)
            die(EXIT_CONNECT, "connect to %s:%d: %s (is the broker running and listening there?)",
                o->c.host, o->c.port, strerror(ECONNREFUSED));
        if (now - last_open > timeout)
            break; /* handshakes stuck: report what was reached */
        uint64_t wake = now + 50000000ull;
        if (s->opened < s->count && s->pending < o->max_pending) {
            uint64_t due = t0 + (uint64_t)s->opened * interval;
            if (due < wake)
                wake = due;
        }
        turn(s, wake);
    }
    uint64_t t_hs_end = now_ns();
    int timed_out = s->pending;
    if (o->c.broker_pid && !proc_sample(o->c.broker_pid, &b1))
        warnx_("--broker-pid %d: cannot read /proc (did the broker exit?)", o->c.broker_pid);

    /* Hold: the sessions stay idle; a broker that drops them shows here. */
    s->holding = true;
    int held_after_handshakes = s->held;
    uint64_t hold_end = now_ns() + (s->held ? (uint64_t)(o->hold * 1e9) : 0);
    uint64_t next_ping = s->keepalive ? now_ns() + s->keepalive * 500000000ull : UINT64_MAX;
    for (uint64_t now = now_ns(); now < hold_end; now = now_ns()) {
        if (now >= next_ping) {
            for (int i = 0; i < s->count; i++)
                if (s->conns[i].held) {
                    wire_simple(&s->conns[i].c.out, PKT_PINGREQ);
                    conn_mark_dirty(&s->loop, &s->conns[i].c);
                }
            next_ping = now + s->keepalive * 500000000ull;
        }
        turn(s, hold_end < next_ping ? hold_end : next_ping);
    }
    if (o->c.broker_pid && !proc_sample(o->c.broker_pid, &b2))
        warnx_("--broker-pid %d: cannot read /proc (did the broker exit?)", o->c.broker_pid);

    double hs_secs = s->t_last_done > t0 ? (double)(s->t_last_done - t0) / 1e9 : 0;
    double conn_rate = hs_secs > 0 ? held_after_handshakes / hs_secs : 0;
    bool have = o->c.broker_pid && b0.ok && b1.ok && b2.ok;
    double kib_per_conn = 0, cpu_us_per_conn = 0, idle_cpu_pct = 0;
    if (have && s->held > 0) {
        kib_per_conn = ((double)b2.rss_kib - (double)b0.rss_kib) / s->held;
        cpu_us_per_conn = (double)proc_cpu_delta(&b0, &b1) / 1e3 / held_after_handshakes;
        double hold_s = (double)(b2.taken_ns - b1.taken_ns) / 1e9;
        idle_cpu_pct = hold_s > 0 ? 100.0 * (double)proc_cpu_delta(&b1, &b2) / 1e9 / hold_s : 0;
    }

    printf("midge-bench conns: %d connection(s) requested%s, MQTT %s, one subscription each, "
           "keep-alive %u s, paced at %.0f/s\n",
           o->count, clamped ? " (clamped to the fd limit)" : "",
           o->c.version == MQTT_5 ? "5.0" : "3.1.1", o->c.keepalive, o->rate);
    printf("  broker %s:%d; handshakes finished in %.2f s: %.0f connections/s\n", o->c.host,
           o->c.port, (double)(t_hs_end - t0) / 1e9, conn_rate);
    printf("  held %d of %d after %.1f s idle (failed %d, refused %d, timed out %d, dropped "
           "while idle %d)\n",
           s->held, s->count, o->hold, s->failed - s->refused, s->refused, timed_out, s->dropped);
    if (s->first_reason[0])
        printf("  first failure: %s\n", s->first_reason);
    if (s->loop.tls_error[0])
        printf("  first TLS failure: %s\n", s->loop.tls_error);
    if (o->c.tls)
        printf("  TLS: %llu handshakes, %llu resumed\n",
               (unsigned long long)s->loop.tls_handshakes,
               (unsigned long long)s->loop.tls_resumed);
    printf("  handshake (connect to SUBACK) us: p50 %.0f  p99 %.0f  max %.0f\n",
           (double)hist_percentile(&s->hs, 50) / 1e3, (double)hist_percentile(&s->hs, 99) / 1e3,
           (double)s->hs.max / 1e3);
    if (have)
        printf("  broker pid %d: RSS %llu KiB before, %llu KiB after (peak %llu KiB): %.2f KiB "
               "per connection; %.1f us CPU per handshake; %.1f %% CPU while idle\n",
               o->c.broker_pid, (unsigned long long)b0.rss_kib, (unsigned long long)b2.rss_kib,
               (unsigned long long)b2.hwm_kib, kib_per_conn, cpu_us_per_conn, idle_cpu_pct);
    char k1[32], k2[32], k3[32], k4[32], k5[32];
    printf("RESULT mode=conns mqtt=%d requested=%d count=%d held=%d failed=%d refused=%d "
           "timed_out=%d dropped=%d conn_per_s=%.0f hs_p50_us=%.0f hs_p99_us=%.0f "
           "broker_rss_before_kib=%s broker_rss_kib=%s broker_hwm_kib=%s kib_per_conn=%s broker_cpu_us_per_conn=%s "
           "fd_limit=%llu tls=%d tls_handshakes=%llu tls_resumed=%llu hs_secs=%.2f status=%s\n",
           o->c.version, o->count, s->count, s->held, s->failed - s->refused, s->refused, timed_out,
           s->dropped, conn_rate, (double)hist_percentile(&s->hs, 50) / 1e3,
           (double)hist_percentile(&s->hs, 99) / 1e3,
           fmt_opt(k1, sizeof(k1), have, (double)b0.rss_kib, 0),
           fmt_opt(k2, sizeof(k2), have, (double)b2.rss_kib, 0),
           fmt_opt(k3, sizeof(k3), have, (double)b2.hwm_kib, 0),
           fmt_opt(k4, sizeof(k4), have && s->held, kib_per_conn, 3),
           fmt_opt(k5, sizeof(k5), have && s->held, cpu_us_per_conn, 1),
           (unsigned long long)fd_limit, o->c.tls, (unsigned long long)s->loop.tls_handshakes,
           (unsigned long long)s->loop.tls_resumed, hs_secs, s->held == s->count ? "ok" : "partial");

    for (int i = 0; i < s->count; i++) {
        struct conn *c = &s->conns[i].c;
        if (c->state == CS_READY || c->state == CS_MQTT) {
            wire_simple(&c->out, PKT_DISCONNECT);
            conn_flush(&s->loop, c);
        }
        if (c->state != CS_CLOSED)
            conn_close(&s->loop, c);
    }
    int rc = s->held == 0 ? (s->refused ? EXIT_CONNECT : EXIT_TIMEOUT) : 0;
    close(s->loop.epfd);
    free(s->conns);
    free(s);
    return rc;
}

/*
 * pubsub.c - the "pubsub" mode: P publishers, S subscribers, T topics.
 *
 * Publisher i publishes on topic i % T and subscriber j subscribes to topic
 * j % T (or to every topic with --wildcard), which covers 1:1 pairs
 * (P = S = T), fan-out (1 publisher, S subscribers, 1 topic) and fan-in
 * (P publishers, 1 subscriber). With --spread, T can be far larger than P:
 * publisher i owns the topics k = i, i + P, i + 2P, ... < T and publishes on
 * them in turn, and each subscriber takes every topic of its publishers with
 * exact filters sent in bulk (or one wildcard filter per publisher group). Every
 * payload carries the publisher id, a sequence number and the send time, so each
 * subscriber tracks, per publisher, loss, duplicates, reordering and latency
 * without any per-message allocation.
 *
 * With --shared, the subscribers that would each have received every message of
 * a publisher form one shared subscription ($share/GROUP/<filter>) and each
 * message goes to one of them: they then count into one stream per publisher
 * and group, so that lost means received by no member and dup received twice
 * by any; reordering is counted per member, the only order a broker keeps.
 * MQTT 5 (--mqtt5) is the same traffic with property blocks, and --topic-alias
 * makes each publisher name its topic once and then send its alias.
 *
 * Saturation is paced end to end rather than by the TCP window: a publisher may
 * send while fewer than --window of its messages have not yet reached every
 * subscriber. That keeps a backlog in the broker (so it can batch) without
 * letting queues grow until the broker drops or the kernel buffers dominate
 * the latency figures.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

enum { ROLE_SUB = 1, ROLE_PUB = 2 };

#define SEEN_BITS 4096u  /* per-stream duplicate detection window, in sequence numbers */
#define HEADER_BYTES 24u /* magic, publisher id, sequence, send time */
/* Handshakes (TCP connect to the last SUBACK or CONNACK) in progress during setup: more
 * would overflow Mosquitto's listen backlog of 100 and time SYN retries instead. */
#define MAX_CONNECTING 100
#define TOPIC_STRIDE 48    /* --spread: bytes per topic name in a publisher's table */
#define MAX_UNACKED 65000u /* QoS 1/2 packet ids in use per publisher, at most */

struct publisher;

/* One publisher as seen by one subscriber, or by the members of one shared subscription. */
struct stream {
    struct publisher *pub;
    uint64_t next; /* highest sequence number seen + 1 */
    uint64_t unique;
    /* What the publisher's window counts as arrived: next; for a shared subscription,
     * unique, since its members' connections are read in no particular order and one that
     * lags must hold the publisher back too. */
    uint64_t progress;
    uint64_t dup;
    uint64_t reorder;
    uint64_t seen[SEEN_BITS / 64]; /* bit s % SEEN_BITS: s in [next - SEEN_BITS, next) seen */
};

struct publisher {
    struct conn c; /* first: epoll hands back the struct conn pointer */
    char topic[64];
    size_t topic_len;
    /* --spread: the publisher's topics, TOPIC_STRIDE bytes apart; message n goes to
     * topic n % ntopics. Without --spread, ntopics is 1 and topic[] is used. */
    char *tnames;
    uint8_t *tlens;
    uint32_t ntopics;
    int group;
    uint64_t sent;
    /* End-to-end window: frontier = min over streams of progress; "above" counts streams
     * already past it, so the minimum is recomputed only when all of them are. */
    uint64_t frontier;
    int nstreams;
    int above;
    struct stream **streams;
    uint64_t progress_ns; /* last time the frontier moved */
    uint64_t stalls;
    uint8_t *pid_state; /* QoS 1/2: 0 free, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP */
    uint16_t next_pid;
    uint32_t max_unacked; /* --pub-inflight, lowered to the broker's Receive Maximum */
    uint32_t unacked;
    uint64_t acked;
    uint64_t phase_ns; /* fixed rate: offset of this publisher's first message */
    /* --topic-alias: topic k has alias k + 1 if k < alias_max (the broker's Topic Alias
     * Maximum); alias_set[k] once a PUBLISH has carried both the topic and the alias. */
    uint8_t *alias_set;
    uint16_t alias_max;
    bool ready;
};

struct subscriber {
    struct conn c;
    char filter[64];
    struct stream **by_pub; /* indexed by publisher id; NULL if not expected here */
    uint64_t *member_next;  /* --shared: per publisher, highest sequence this member got + 1 */
    uint64_t received;
    int group;
    int sub_packets; /* SUBSCRIBE packets sent */
    int subacks;     /* SUBACKs received */
    bool connacked;
    bool subacked;
};

enum phase { PH_SETUP, PH_RUN, PH_DRAIN, PH_DONE };

struct run {
    const struct pubsub_opts *o;
    struct loop loop;
    struct publisher *pubs;
    struct subscriber *subs;
    struct hist hist;
    uint32_t magic;
    enum phase phase;
    bool measuring;
    int connecting;   /* setup: handshakes in progress */
    int groups;       /* publisher i feeds subscriber j iff their groups match */
    uint64_t filters; /* subscriptions in all */
    char share[48];   /* --shared: "$share/GROUP/", put before every filter; else "" */
    uint16_t keepalive; /* the client's, or the shortest Server Keep Alive a CONNACK set */
    int next_open;  /* setup: next connection to open, subscribers first */
    int subs_ready;
    int pubs_ready;
    uint64_t t_start, t_measure, t_end, t_grace, t_last_rx, t_next_ping;
    uint64_t interval_ns; /* fixed rate: per publisher */
    uint32_t max_unacked; /* QoS 1/2 flows a publisher keeps open */
    uint64_t waits;       /* epoll_pwait2 calls */
    uint64_t total_sent, total_received, unexpected, foreign, corrupt, bad_acks, stalls_seen;
    uint64_t ack_refused;    /* MQTT 5 acknowledgements with a reason code of 0x80 or more */
    uint64_t ack_nomatch;    /* MQTT 5 PUBACK/PUBREC 0x10: no matching subscribers */
    uint64_t member_reorder; /* --shared: a member got a sequence below one it already had */
    uint64_t win_sent0, win_recv0, win_sent1, win_recv1;
    struct proc_sample broker0, broker1;
    struct proc_sample peer0, peer1; /* --broker-pid2 */
    struct sockaddr_in sub_addr;     /* --sub-port */
    struct rusage self0, self1;
};

static void put_le32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4); /* the tool reads what it wrote on the same host: native order is fine */
}

static void put_le64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static const char *conn_name(const struct conn *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s %d", c->role == ROLE_SUB ? "subscriber" : "publisher", c->index);
    return out;
}

/* ---- setup ---- */

/* Topic of publisher p's message number seq. */
static inline const char *pub_topic(const struct publisher *p, uint64_t seq, size_t *len)
{
    if (p->ntopics <= 1) {
        *len = p->topic_len;
        return p->topic;
    }
    uint32_t k = (uint32_t)(seq % p->ntopics);
    *len = p->tlens[k];
    return p->tnames + (size_t)k * TOPIC_STRIDE;
}

static bool feeds(const struct run *r, int i, int j)
{
    const struct pubsub_opts *o = r->o;
    if (o->wildcard && !o->spread)
        return true; /* PREFIX/+ takes every topic */
    return r->pubs[i].group == r->subs[j].group;
}

static void build_topology(struct run *r)
{
    const struct pubsub_opts *o = r->o;
    /* Without --spread a group is a topic; with it, publisher i and subscriber j meet in
     * group i % G = j % G, G = min(P, S), and the topics of a publisher are named
     * PREFIX/<group>/<k>, so that PREFIX/<group>/+ is the wildcard of a group. */
    r->groups =
        o->spread ? (o->publishers < o->subscribers ? o->publishers : o->subscribers) : o->topics;
    if (o->spread && o->topics < o->publishers)
        die(EXIT_USAGE,
            "--spread: --topics %d is below --publishers %d (every publisher owns "
            "at least one topic)",
            o->topics, o->publishers);
    r->pubs = calloc((size_t)o->publishers, sizeof(*r->pubs));
    r->subs = calloc((size_t)o->subscribers, sizeof(*r->subs));
    if (!r->pubs || !r->subs)
        die(1, "out of memory");
    for (int i = 0; i < o->publishers; i++) {
        struct publisher *p = &r->pubs[i];
        p->c.fd = -1;
        p->c.role = ROLE_PUB;
        p->c.index = i;
        p->c.in_cap = 16384; /* acks only */
        p->group = i % r->groups;
        p->topic_len =
            (size_t)snprintf(p->topic, sizeof(p->topic), "%s/t%d", o->c.prefix, i % o->topics);
        if (o->spread) {
            p->ntopics = (uint32_t)((o->topics - i + o->publishers - 1) / o->publishers);
            p->tnames = malloc((size_t)p->ntopics * TOPIC_STRIDE);
            p->tlens = malloc(p->ntopics);
            if (!p->tnames || !p->tlens)
                die(1, "out of memory");
            for (uint32_t k = 0; k < p->ntopics; k++) {
                long topic = i + (long)k * o->publishers;
                p->tlens[k] = (uint8_t)snprintf(p->tnames + (size_t)k * TOPIC_STRIDE, TOPIC_STRIDE,
                                                "%s/%d/%ld", o->c.prefix, p->group, topic);
            }
            memcpy(p->topic, p->tnames, p->tlens[0] + 1u);
            p->topic_len = p->tlens[0];
        } else {
            p->ntopics = 1;
        }
        p->next_pid = 1;
        p->max_unacked = r->max_unacked;
        if (o->topic_alias) {
            p->alias_set = calloc(p->ntopics, 1);
            if (!p->alias_set)
                die(1, "out of memory");
        }
        if (o->qos) {
            p->pid_state = calloc(65536, 1);
            if (!p->pid_state)
                die(1, "out of memory");
        }
    }
    /* --shared: one stream per publisher and shared subscription; subscriber j is in the
     * shared subscription of its filter, which is its group's, or the one PREFIX/+. */
    struct stream **group_stream = NULL;
    int *members = calloc((size_t)r->groups, sizeof(*members));
    if (!members)
        die(1, "out of memory");
    if (o->shared_group) {
        group_stream = calloc((size_t)o->publishers * (size_t)r->groups, sizeof(*group_stream));
        if (!group_stream)
            die(1, "out of memory");
    }
    for (int j = 0; j < o->subscribers; j++) {
        struct subscriber *s = &r->subs[j];
        s->c.fd = -1;
        s->c.role = ROLE_SUB;
        s->c.index = j;
        /* Thousands of subscribers each read a message or two at a time. */
        s->c.in_cap = o->subscribers > 1000 ? 16384 : 65536;
        s->group = j % r->groups;
        int key = o->wildcard && !o->spread ? 0 : s->group;
        members[key]++;
        if (o->spread && o->wildcard)
            snprintf(s->filter, sizeof(s->filter), "%s/%d/+", o->c.prefix, s->group);
        else if (o->wildcard)
            snprintf(s->filter, sizeof(s->filter), "%s/+", o->c.prefix);
        else
            snprintf(s->filter, sizeof(s->filter), "%s/t%d", o->c.prefix, j % o->topics);
        s->by_pub = calloc((size_t)o->publishers, sizeof(*s->by_pub));
        if (!s->by_pub)
            die(1, "out of memory");
        if (o->shared_group) {
            s->member_next = calloc((size_t)o->publishers, sizeof(*s->member_next));
            if (!s->member_next)
                die(1, "out of memory");
        }
        for (int i = 0; i < o->publishers; i++) {
            if (!feeds(r, i, j))
                continue;
            struct publisher *p = &r->pubs[i];
            struct stream **slot = group_stream ? &group_stream[(size_t)i * r->groups + key] : NULL;
            struct stream *st = slot ? *slot : NULL;
            if (!st) {
                st = calloc(1, sizeof(*st));
                if (!st)
                    die(1, "out of memory");
                st->pub = p;
                /* Doubled at each power of two: 10,000 subscribers of one publisher. */
                if ((p->nstreams & (p->nstreams - 1)) == 0) {
                    size_t cap = p->nstreams ? 2 * (size_t)p->nstreams : 1;
                    struct stream **grown = realloc(p->streams, cap * sizeof(*p->streams));
                    if (!grown)
                        die(1, "out of memory");
                    p->streams = grown;
                }
                p->streams[p->nstreams++] = st;
                if (slot)
                    *slot = st;
            }
            s->by_pub[i] = st;
            if (o->spread && !o->wildcard)
                r->filters += p->ntopics;
        }
        if (!o->spread || o->wildcard)
            r->filters++;
    }
    free(group_stream);
    for (int i = 0; i < o->publishers; i++) {
        struct publisher *p = &r->pubs[i];
        if (p->nstreams == 0)
            die(EXIT_USAGE,
                "publisher %d publishes on %s, which no subscriber takes: use --topics <= "
                "--subscribers, --wildcard or --spread",
                i, p->topic);
    }
    /* Brokers queue at most max_queued_messages (Mosquitto's default: 1000) per subscriber
     * and drop the rest, QoS 1/2 included: warn before that reads as a broken guarantee. A
     * shared subscription's members share its publishers' windows. */
    long most = 0;
    int most_feeds = 0, most_members = 1;
    for (int j = 0; j < o->subscribers; j++) {
        int feeds = 0;
        for (int i = 0; i < o->publishers; i++)
            feeds += r->subs[j].by_pub[i] != NULL;
        int m = o->shared_group ? members[o->wildcard && !o->spread ? 0 : r->subs[j].group] : 1;
        long load = ((long)feeds * o->window + m - 1) / m;
        if (load > most) {
            most = load;
            most_feeds = feeds;
            most_members = m;
        }
    }
    free(members);
    if (o->qos > 0 && most > 1000)
        warnx_("up to %ld QoS %d messages may be in flight to one subscriber (%d publishers x "
               "--window %d%s): more than a broker's usual max_queued_messages of 1000",
               most, o->qos, most_feeds, o->window,
               most_members > 1 ? " over the members of a shared subscription" : "");
}

static struct conn *conn_at(struct run *r, int k)
{
    if (k < r->o->subscribers)
        return &r->subs[k].c;
    return &r->pubs[k - r->o->subscribers].c;
}

/* Opens connections while few are connecting; publishers wait until every subscriber has
 * its SUBACK, so that no message is published before it can be delivered. */
static void setup_open_more(struct run *r)
{
    int total = r->o->subscribers + r->o->publishers;
    while (r->next_open < total && r->connecting < MAX_CONNECTING) {
        if (r->next_open >= r->o->subscribers && r->subs_ready < r->o->subscribers)
            return;
        struct conn *c = conn_at(r, r->next_open);
        int rc = conn_open(&r->loop, c);
        if (rc < 0)
            die(EXIT_CONNECT, "socket/connect to %s:%d: %s", r->o->c.host, r->o->c.port,
                strerror(-rc));
        r->connecting++;
        r->next_open++;
    }
}

/* --spread without --wildcard: one exact filter per topic of every publisher that feeds
 * this subscriber, --sub-batch filters per SUBSCRIBE. */
static void subscribe_exact(struct run *r, struct subscriber *s)
{
    const struct pubsub_opts *o = r->o;
    for (int i = 0; i < o->publishers; i++) {
        if (!s->by_pub[i])
            continue;
        const struct publisher *p = &r->pubs[i];
        for (uint32_t k = 0; k < p->ntopics; k += (uint32_t)o->sub_batch) {
            uint32_t n =
                p->ntopics - k < (uint32_t)o->sub_batch ? p->ntopics - k : (uint32_t)o->sub_batch;
            if (s->sub_packets == 65535)
                die(EXIT_USAGE,
                    "subscriber %d: more than 65535 SUBSCRIBE packets: raise "
                    "--sub-batch",
                    s->c.index);
            wire_subscribe_list(&s->c.out, o->c.version, (uint16_t)(++s->sub_packets), r->share,
                                p->tnames + (size_t)k * TOPIC_STRIDE, TOPIC_STRIDE, p->tlens + k,
                                (int)n, o->qos);
        }
    }
}

static void on_connected(struct run *r, struct conn *c)
{
    char id[48];
    if (c->role == ROLE_SUB) {
        struct subscriber *s = (struct subscriber *)c;
        snprintf(id, sizeof(id), "%s-s%d", r->o->c.prefix, c->index);
        wire_connect(&c->out, r->o->c.version, id, r->o->c.keepalive, !r->o->sub_persistent);
        /* MQTT lets a client send before CONNACK: save a round trip. */
        if (r->o->spread && !r->o->wildcard) {
            subscribe_exact(r, s);
        } else {
            wire_subscribe(&c->out, r->o->c.version, 1, r->share, s->filter, r->o->qos);
            s->sub_packets = 1;
        }
    } else {
        snprintf(id, sizeof(id), "%s-p%d", r->o->c.prefix, c->index);
        wire_connect(&c->out, r->o->c.version, id, r->o->c.keepalive, true);
    }
    conn_mark_dirty(&r->loop, c);
}

/* ---- the measured window ---- */

static void sample_broker(struct run *r, struct proc_sample *s, struct proc_sample *peer)
{
    if (r->o->c.broker_pid && !proc_sample(r->o->c.broker_pid, s))
        warnx_("--broker-pid %d: cannot read /proc (did the broker exit?)", r->o->c.broker_pid);
    if (r->o->c.broker_pid2 && !proc_sample(r->o->c.broker_pid2, peer))
        warnx_("--broker-pid2 %d: cannot read /proc (did the broker exit?)", r->o->c.broker_pid2);
}

static void start_run(struct run *r, uint64_t now)
{
    const struct pubsub_opts *o = r->o;
    r->phase = PH_RUN;
    r->t_start = now;
    r->t_measure = now + (uint64_t)(o->warmup * 1e9);
    r->t_end = r->t_measure + (uint64_t)(o->duration * 1e9);
    r->t_grace = r->t_end + (uint64_t)(o->grace * 1e9);
    if (r->keepalive)
        r->t_next_ping = now + (uint64_t)r->keepalive * 500000000ull;
    if (o->rate > 0) {
        r->interval_ns = (uint64_t)(1e9 * o->publishers / o->rate);
        if (r->interval_ns == 0)
            r->interval_ns = 1;
        /* Spread the publishers over the interval so they do not fire in lockstep. */
        for (int i = 0; i < o->publishers; i++)
            r->pubs[i].phase_ns = r->interval_ns * (uint64_t)i / (uint64_t)o->publishers;
    }
    for (int i = 0; i < o->publishers; i++)
        r->pubs[i].progress_ns = now;
    r->t_last_rx = now;
}

static void begin_window(struct run *r)
{
    sample_broker(r, &r->broker0, &r->peer0);
    getrusage(RUSAGE_SELF, &r->self0);
    r->win_sent0 = r->total_sent;
    r->win_recv0 = r->total_received;
    r->measuring = true;
}

static void end_window(struct run *r)
{
    sample_broker(r, &r->broker1, &r->peer1);
    getrusage(RUSAGE_SELF, &r->self1);
    r->win_sent1 = r->total_sent;
    r->win_recv1 = r->total_received;
    r->measuring = false;
    r->phase = PH_DRAIN;
}

/* ---- receiving ---- */

static void frontier_recompute(struct publisher *p, uint64_t now)
{
    uint64_t f = UINT64_MAX;
    for (int k = 0; k < p->nstreams; k++)
        if (p->streams[k]->progress < f)
            f = p->streams[k]->progress;
    int above = 0;
    for (int k = 0; k < p->nstreams; k++)
        if (p->streams[k]->progress > f)
            above++;
    if (f > p->frontier)
        p->progress_ns = now;
    p->frontier = f;
    p->above = above;
}

/* A stream's progress moved up to progress (it never moves back). */
static void stream_progress(struct stream *st, uint64_t progress, uint64_t now)
{
    struct publisher *p = st->pub;
    uint64_t old = st->progress;
    st->progress = progress;
    if (old <= p->frontier && progress > p->frontier && ++p->above == p->nstreams)
        frontier_recompute(p, now);
}

static inline bool seen_test(const struct stream *s, uint64_t seq)
{
    return s->seen[(seq % SEEN_BITS) / 64] >> (seq % 64) & 1;
}

static inline void seen_set(struct stream *s, uint64_t seq)
{
    s->seen[(seq % SEEN_BITS) / 64] |= 1ull << (seq % 64);
}

static inline void seen_clear(struct stream *s, uint64_t seq)
{
    s->seen[(seq % SEEN_BITS) / 64] &= ~(1ull << (seq % 64));
}

static void on_message(struct run *r, struct subscriber *s, const struct publish_in *m,
                       uint64_t now)
{
    const uint8_t *pl = m->payload;
    size_t len = m->payload_len;
    if (len < HEADER_BYTES || get32(pl) != r->magic) {
        r->foreign++; /* not from this run: another client on the same broker */
        return;
    }
    uint32_t id = get32(pl + 4);
    uint64_t seq = get64(pl + 8);
    uint64_t sent_ns = get64(pl + 16);
    if (id >= (uint32_t)r->o->publishers || !s->by_pub[id]) {
        r->unexpected++; /* routed to a subscriber whose filter does not match */
        return;
    }
    struct stream *st = s->by_pub[id];
    /* Cheap checks that the broker forwarded the message intact: a codec bug that shifts
     * or truncates a packet shows here rather than as a plausible-looking count. Publishers
     * send no property but a Topic Alias, which a broker must not forward: a delivered
     * MQTT 5 PUBLISH has an empty property block. */
    size_t want_len;
    const char *want = pub_topic(st->pub, seq, &want_len);
    if (len != r->o->size || m->topic_len != want_len || memcmp(m->topic, want, want_len) ||
        pl[len - 1] != 'x' || m->props_len) {
        r->corrupt++;
        return;
    }
    s->received++;
    r->total_received++;
    r->t_last_rx = now;
    /* Latency belongs to the messages sent in the window, even those that arrive during
     * the drain: otherwise a broker stall at the end of the window would go unseen. */
    if (sent_ns >= r->t_measure && sent_ns < r->t_end)
        hist_add(&r->hist, now > sent_ns ? now - sent_ns : 0);
    /* The members of a shared subscription each get a part of the stream, on connections
     * read in whatever order epoll reports them: order holds per member only. */
    bool shared = s->member_next != NULL;
    if (shared) {
        if (seq < s->member_next[id])
            r->member_reorder++;
        else
            s->member_next[id] = seq + 1;
    }

    if (seq >= st->next) {
        uint64_t gap = seq - st->next;
        if (gap >= SEEN_BITS)
            memset(st->seen, 0, sizeof(st->seen));
        else
            for (uint64_t x = st->next; x < seq; x++)
                seen_clear(st, x); /* skipped: not seen (yet) */
        seen_set(st, seq);
        st->unique++;
        st->next = seq + 1;
        stream_progress(st, shared ? st->unique : st->next, now);
    } else if (st->next - seq > SEEN_BITS) {
        st->unique++; /* too old to tell: assume a very late first copy */
        st->reorder += !shared;
        if (shared)
            stream_progress(st, st->unique, now);
    } else if (seen_test(st, seq)) {
        st->dup++;
    } else {
        seen_set(st, seq);
        st->unique++;
        st->reorder += !shared;
        if (shared)
            stream_progress(st, st->unique, now);
    }
}

static void protocol_error(struct run *r, struct conn *c, const char *what)
{
    char name[48];
    (void)r;
    die(EXIT_PROTOCOL, "%s: %s", conn_name(c, name, sizeof(name)), what);
}

/* A CONNACK for either role: refusals end the run; an MQTT 5 broker's limits are checked
 * against what the run will send, and its Server Keep Alive shortens the pings. */
static void on_connack(struct run *r, struct conn *c, const struct packet *pk, struct connack *ca)
{
    const struct pubsub_opts *o = r->o;
    char name[48];
    if (wire_parse_connack(pk, o->c.version, ca) < 0)
        protocol_error(r, c, "malformed CONNACK");
    if (ca->reason != 0)
        die(EXIT_CONNECT, "%s: CONNACK refused the connection: %s (code 0x%02x)%s%s",
            conn_name(c, name, sizeof(name)), wire_connack_reason(o->c.version, ca->reason),
            ca->reason, ca->reason_string[0] ? ": " : "", ca->reason_string);
    if (o->c.version != MQTT_5)
        return;
    if (ca->maximum_qos < o->qos)
        die(EXIT_CONNECT, "%s: the broker's Maximum QoS is %d, below --qos %d",
            conn_name(c, name, sizeof(name)), ca->maximum_qos, o->qos);
    /* Our largest PUBLISH, either way: fixed header, topic, packet id, properties, payload. */
    size_t biggest = 5 + 2 + 64 + 2 + 4 + o->size;
    if (ca->max_packet_size && ca->max_packet_size < biggest)
        die(EXIT_USAGE,
            "%s: the broker's Maximum Packet Size is %u bytes: --size %zu does "
            "not fit",
            conn_name(c, name, sizeof(name)), ca->max_packet_size, o->size);
    if (ca->server_keepalive > 0 && (r->keepalive == 0 || ca->server_keepalive < r->keepalive))
        r->keepalive = (uint16_t)ca->server_keepalive;
}

/* A server's MQTT 5 DISCONNECT ends the run with its reason. */
static void on_disconnect(struct run *r, struct conn *c, const struct packet *pk)
{
    char name[48], why[96];
    int reason;
    if (r->o->c.version != MQTT_5 || wire_parse_disconnect(pk, &reason, why, sizeof(why)) < 0)
        protocol_error(r, c, "unexpected or malformed DISCONNECT");
    die(EXIT_PROTOCOL, "the broker disconnected %s: reason 0x%02x (%s)%s%s",
        conn_name(c, name, sizeof(name)), reason, wire_reason_name(reason), why[0] ? ": " : "",
        why);
}

static void handle_sub_packet(struct run *r, struct subscriber *s, const struct packet *pk,
                              uint64_t now)
{
    struct conn *c = &s->c;
    const int version = r->o->c.version;
    char msg[160];
    switch (pk->type) {
    case PKT_PUBLISH: {
        struct publish_in m;
        if (wire_parse_publish(pk, version, &m) < 0)
            protocol_error(r, c, "malformed PUBLISH");
        /* midge-bench's CONNECT sets no Topic Alias Maximum: 0, so none may come. */
        if (m.alias)
            protocol_error(r, c, "PUBLISH with a Topic Alias, though CONNECT allowed none");
        if (m.qos) {
            wire_ack(&c->out, m.qos == 1 ? PKT_PUBACK : PKT_PUBREC, m.pid);
            conn_mark_dirty(&r->loop, c);
        }
        on_message(r, s, &m, now);
        break;
    }
    case PKT_PUBREL: {
        uint16_t pid;
        int reason;
        if (wire_parse_ack(pk, version, &pid, &reason) < 0)
            protocol_error(r, c, "malformed PUBREL");
        wire_ack(&c->out, PKT_PUBCOMP, pid);
        conn_mark_dirty(&r->loop, c);
        break;
    }
    case PKT_CONNACK: {
        struct connack ca;
        on_connack(r, c, pk, &ca);
        s->connacked = true;
        break;
    }
    case PKT_SUBACK: {
        uint16_t pid;
        const uint8_t *codes;
        size_t n;
        if (wire_parse_suback(pk, version, &pid, &codes, &n) < 0)
            protocol_error(r, c, "malformed SUBACK");
        for (size_t k = 0; k < n; k++) {
            if (wire_suback_refused(codes[k]))
                die(EXIT_CONNECT,
                    "subscriber %d: SUBACK %u refused filter %zu (first filter %s%s): 0x%02x%s%s",
                    c->index, pid, k + 1, r->share, s->filter, codes[k],
                    version == MQTT_5 ? " " : "",
                    version == MQTT_5 ? wire_reason_name(codes[k]) : "");
            if (codes[k] != r->o->qos)
                warnx_("subscriber %d: granted QoS %d instead of %d", c->index, codes[k],
                       r->o->qos);
        }
        if (!s->subacked && ++s->subacks == s->sub_packets) {
            s->subacked = true;
            c->state = CS_READY;
            r->subs_ready++;
            r->connecting--;
        }
        break;
    }
    case PKT_PINGRESP: break;
    case PKT_DISCONNECT: on_disconnect(r, c, pk); break;
    default:
        snprintf(msg, sizeof(msg), "unexpected %s packet", wire_type_name(pk->type));
        protocol_error(r, c, msg);
    }
}

static void ack_done(struct run *r, struct publisher *p, uint16_t pid, int want_state)
{
    if (!p->pid_state || p->pid_state[pid] != want_state) {
        r->bad_acks++; /* an ack for a packet id we do not have in that state */
        return;
    }
    p->pid_state[pid] = 0;
    p->unacked--;
    p->acked++;
}

/* MQTT 5 reason codes in PUBACK, PUBREC and PUBCOMP: 0x10 (no matching subscribers) is a
 * success that says the message went nowhere; 0x80 and above end the flow unsuccessfully.
 * Either way the subscribers' counts show the message as lost. */
static void count_reason(struct run *r, int reason)
{
    if (reason == 0x10)
        r->ack_nomatch++;
    else if (reason >= 0x80)
        r->ack_refused++;
}

static void handle_pub_packet(struct run *r, struct publisher *p, const struct packet *pk)
{
    struct conn *c = &p->c;
    const int version = r->o->c.version;
    char msg[160];
    uint16_t pid = 0;
    int reason = 0;
    if (pk->type >= PKT_PUBACK && pk->type <= PKT_PUBCOMP &&
        wire_parse_ack(pk, version, &pid, &reason) < 0) {
        snprintf(msg, sizeof(msg), "malformed %s", wire_type_name(pk->type));
        protocol_error(r, c, msg);
    }
    switch (pk->type) {
    case PKT_PUBACK:
        count_reason(r, reason);
        ack_done(r, p, pid, 1);
        break;
    case PKT_PUBREC: {
        count_reason(r, reason);
        if (reason >= 0x80) {
            ack_done(r, p, pid, 1); /* the exchange ends here: no PUBREL (4.3.3) */
            break;
        }
        if (p->pid_state && p->pid_state[pid] == 1) {
            p->pid_state[pid] = 2;
        } else if (!p->pid_state || p->pid_state[pid] != 2) {
            r->bad_acks++;
            break;
        }
        /* Also answers a repeated PUBREC for an id already released, as 4.3.3 asks. */
        wire_ack(&c->out, PKT_PUBREL, pid);
        conn_mark_dirty(&r->loop, c);
        break;
    }
    case PKT_PUBCOMP:
        count_reason(r, reason);
        ack_done(r, p, pid, 2);
        break;
    case PKT_CONNACK: {
        struct connack ca;
        on_connack(r, c, pk, &ca);
        if (version == MQTT_5) {
            if (ca.receive_maximum < p->max_unacked)
                p->max_unacked = ca.receive_maximum;
            p->alias_max = ca.topic_alias_max;
            if (r->o->topic_alias && p->alias_max == 0)
                die(EXIT_CONNECT,
                    "publisher %d: --topic-alias, but the broker's CONNACK "
                    "allows no topic alias (Topic Alias Maximum 0)",
                    c->index);
        }
        if (!p->ready) {
            p->ready = true;
            c->state = CS_READY;
            r->pubs_ready++;
            r->connecting--;
        }
        break;
    }
    case PKT_PINGRESP: break;
    case PKT_DISCONNECT: on_disconnect(r, c, pk); break;
    default:
        snprintf(msg, sizeof(msg), "unexpected %s packet", wire_type_name(pk->type));
        protocol_error(r, c, msg);
    }
}

static void on_readable(struct run *r, struct conn *c, uint64_t now)
{
    for (;;) {
        ssize_t n = conn_read(&r->loop, c);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            char name[48];
            die(EXIT_PROTOCOL, "the broker closed the connection of %s%s%s",
                conn_name(c, name, sizeof(name)), n < 0 ? ": " : " (EOF)",
                n < 0 ? strerror((int)-n) : "");
        }
        bool filled = c->in.len == c->in.cap;
        struct packet pk;
        int rc;
        while ((rc = wire_parse(c->in.data + c->in.off, c->in.len - c->in.off, &pk)) == 1) {
            if (c->role == ROLE_SUB)
                handle_sub_packet(r, (struct subscriber *)c, &pk, now);
            else
                handle_pub_packet(r, (struct publisher *)c, &pk);
            c->in.off += pk.total;
        }
        if (rc < 0)
            protocol_error(r, c, "malformed packet (bad remaining length)");
        /* A short read drained the socket; a full buffer means there may be more. */
        if (!filled)
            return;
    }
}

/* ---- sending ---- */

static bool window_open(const struct run *r, const struct publisher *p)
{
    return p->sent - p->frontier < (uint64_t)r->o->window &&
           (!p->pid_state || p->unacked < p->max_unacked);
}

static void publish_one(struct run *r, struct publisher *p, uint64_t now)
{
    const struct pubsub_opts *o = r->o;
    uint16_t pid = 0;
    if (p->pid_state) {
        while (p->next_pid == 0 || p->pid_state[p->next_pid])
            p->next_pid++;
        pid = p->next_pid++;
        p->pid_state[pid] = 1;
        p->unacked++;
    }
    size_t tlen;
    const char *topic = pub_topic(p, p->sent, &tlen);
    uint16_t alias = 0;
    if (p->alias_set) {
        /* Topic k's alias is k + 1; the first PUBLISH carries topic and alias, later ones
         * an empty topic. Topics beyond the broker's maximum go without an alias. */
        uint32_t k = p->ntopics > 1 ? (uint32_t)(p->sent % p->ntopics) : 0;
        if (k < p->alias_max) {
            alias = (uint16_t)(k + 1);
            if (p->alias_set[k])
                tlen = 0;
            p->alias_set[k] = 1;
        }
    }
    uint8_t *pl = wire_publish(&p->c.out, o->c.version, topic, tlen, o->qos, pid, alias, o->size);
    put_le32(pl, r->magic);
    put_le32(pl + 4, (uint32_t)p->c.index);
    put_le64(pl + 8, p->sent);
    /* Written by the same write() at the end of this loop turn: one clock read suffices. */
    put_le64(pl + 16, now);
    memset(pl + HEADER_BYTES, 'x', o->size - HEADER_BYTES);
    p->sent++;
    r->total_sent++;
}

/* Publishes what the window (and, at a fixed rate, the schedule) allows. Returns the
 * earliest time a publisher is due next, for the epoll timeout. */
static uint64_t publish_all(struct run *r, uint64_t now)
{
    uint64_t wake = UINT64_MAX;
    for (int i = 0; i < r->o->publishers; i++) {
        struct publisher *p = &r->pubs[i];
        uint64_t before = p->sent;
        if (r->o->qos == 0 && !window_open(r, p) &&
            now - p->progress_ns > (uint64_t)(r->o->stall * 1e9)) {
            /* Nothing of the window arrived for --stall seconds: at QoS 0 the broker has
             * dropped it. Write it off so that the run goes on; the loss is counted. At
             * QoS 1/2 the broker owes us every message, so the publisher just waits. */
            p->frontier = p->sent;
            p->above = 0;
            p->progress_ns = now;
            p->stalls++;
            r->stalls_seen++;
        }
        while (window_open(r, p)) {
            if (r->interval_ns) {
                uint64_t due = r->t_start + p->phase_ns + p->sent * r->interval_ns;
                if (due > now) {
                    if (due < wake)
                        wake = due;
                    break;
                }
            }
            publish_one(r, p, now);
        }
        if (p->sent != before)
            conn_mark_dirty(&r->loop, &p->c);
    }
    return wake;
}

/* ---- end of run ---- */

static bool drained(const struct run *r)
{
    for (int i = 0; i < r->o->publishers; i++) {
        const struct publisher *p = &r->pubs[i];
        if (p->unacked)
            return false;
        for (int k = 0; k < p->nstreams; k++)
            if (p->streams[k]->unique < p->sent)
                return false;
    }
    return true;
}

static void disconnect_all(struct run *r)
{
    int total = r->o->subscribers + r->o->publishers;
    for (int k = 0; k < total; k++) {
        struct conn *c = conn_at(r, k);
        if (c->state == CS_CLOSED)
            continue;
        wire_simple(&c->out, PKT_DISCONNECT);
        conn_flush(&r->loop, c); /* best effort: the broker may already be gone */
        conn_close(&r->loop, c);
    }
}

static void free_run(struct run *r)
{
    for (int j = 0; j < r->o->subscribers; j++) {
        free(r->subs[j].by_pub);
        free(r->subs[j].member_next);
    }
    for (int i = 0; i < r->o->publishers; i++) {
        /* A stream belongs to its publisher; subscribers, or a shared subscription's
         * members, only point at it. */
        for (int k = 0; k < r->pubs[i].nstreams; k++)
            free(r->pubs[i].streams[k]);
        free(r->pubs[i].streams);
        free(r->pubs[i].alias_set);
        free(r->pubs[i].pid_state);
        free(r->pubs[i].tnames);
        free(r->pubs[i].tlens);
    }
    free(r->subs);
    free(r->pubs);
    close(r->loop.epfd);
    free(r);
}

static double tv_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static int report(struct run *r)
{
    const struct pubsub_opts *o = r->o;
    uint64_t lost = 0, dup = 0, reorder = 0, unacked = 0, acked = 0, stalls = 0;
    for (int i = 0; i < o->publishers; i++) {
        struct publisher *p = &r->pubs[i];
        unacked += p->unacked;
        acked += p->acked;
        stalls += p->stalls;
        for (int k = 0; k < p->nstreams; k++) {
            struct stream *st = p->streams[k];
            if (st->unique < p->sent)
                lost += p->sent - st->unique;
            dup += st->dup;
            reorder += st->reorder;
        }
    }
    reorder += r->member_reorder;
    /* --shared: how evenly the members shared the messages (all subscribers: one group
     * per topic, or the one PREFIX/+ group). */
    uint64_t member_min = UINT64_MAX, member_max = 0;
    for (int j = 0; j < o->subscribers; j++) {
        if (r->subs[j].received < member_min)
            member_min = r->subs[j].received;
        if (r->subs[j].received > member_max)
            member_max = r->subs[j].received;
    }
    double secs = (double)(r->t_end - r->t_measure) / 1e9;
    uint64_t win_recv = r->win_recv1 - r->win_recv0;
    uint64_t win_sent = r->win_sent1 - r->win_sent0;
    double msgs_per_s = (double)win_recv / secs;
    double sent_per_s = (double)win_sent / secs;
    bool have_broker = o->c.broker_pid && r->broker0.ok && r->broker1.ok;
    bool have_peer = have_broker && o->c.broker_pid2 && r->peer0.ok && r->peer1.ok;
    have_broker = have_broker && (!o->c.broker_pid2 || have_peer);
    /* Two brokers (a bridge): both spend CPU on each delivered message. */
    double cpu_a = have_broker ? (double)proc_cpu_delta(&r->broker0, &r->broker1) / 1e9 : 0;
    double cpu_b = have_peer ? (double)proc_cpu_delta(&r->peer0, &r->peer1) / 1e9 : 0;
    double cpu_s = cpu_a + cpu_b;
    double cpu_win_s = have_broker ? (double)(r->broker1.taken_ns - r->broker0.taken_ns) / 1e9 : 1;
    double us_per_msg = win_recv ? cpu_s * 1e6 / (double)win_recv : 0;
    double self_s = tv_s(&r->self1.ru_utime) + tv_s(&r->self1.ru_stime) - tv_s(&r->self0.ru_utime) -
                    tv_s(&r->self0.ru_stime);
    double p50 = (double)hist_percentile(&r->hist, 50) / 1e3;
    double p99 = (double)hist_percentile(&r->hist, 99) / 1e3;
    double p999 = (double)hist_percentile(&r->hist, 99.9) / 1e3;
    double pmax = (double)r->hist.max / 1e3;
    char rate_desc[64];
    if (o->rate > 0)
        snprintf(rate_desc, sizeof(rate_desc), "fixed rate %.0f msg/s", o->rate);
    else
        snprintf(rate_desc, sizeof(rate_desc), "saturation");

    printf("midge-bench pubsub: %d publisher(s) -> %d topic(s)%s%s -> %d subscriber(s) with "
           "%llu %ssubscription(s), QoS %d, %zu-byte payload, %s, window %d, MQTT %s%s%s\n",
           o->publishers, o->topics, o->spread ? " in turn" : "",
           o->wildcard ? " (wildcard subscriptions)" : "", o->subscribers,
           (unsigned long long)r->filters, o->shared_group ? "shared " : "", o->qos, o->size,
           rate_desc, o->window, o->c.version == MQTT_5 ? "5.0" : "3.1.1",
           o->topic_alias ? " with topic aliases" : "", o->c.ws_path ? ", over WebSocket" : "");
    printf("  broker %s:%d; warm-up %.1f s, measured %.2f s\n", o->c.host, o->c.port, o->warmup,
           secs);
    printf("  sent     %llu in all, %.0f msg/s in the window\n", (unsigned long long)r->total_sent,
           sent_per_s);
    printf("  received %llu in all, %.0f msg/s in the window (%llu deliveries)\n",
           (unsigned long long)r->total_received, msgs_per_s, (unsigned long long)win_recv);
    printf("  lost %llu, duplicates %llu, reordered %llu, unexpected %llu, corrupt %llu, "
           "foreign %llu, window write-offs %llu\n",
           (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)reorder,
           (unsigned long long)r->unexpected, (unsigned long long)r->corrupt,
           (unsigned long long)r->foreign, (unsigned long long)stalls);
    if (o->qos)
        printf("  publisher flows completed %llu, still open %llu, stray acks %llu, refused "
               "(reason >= 0x80) %llu, no matching subscribers (0x10) %llu\n",
               (unsigned long long)acked, (unsigned long long)unacked,
               (unsigned long long)r->bad_acks, (unsigned long long)r->ack_refused,
               (unsigned long long)r->ack_nomatch);
    if (o->shared_group)
        printf("  shared subscription %s: each member received %llu to %llu messages; "
               "reordered counts per member\n",
               r->share, (unsigned long long)member_min, (unsigned long long)member_max);
    printf("  latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (%llu samples)\n", p50, p99,
           p999, pmax, (unsigned long long)r->hist.count);
    if (have_broker)
        printf("  broker pid %d (%d threads): %.3f s CPU in %.2f s (%.0f %% of a core), "
               "%.3f us per delivered message; RSS %llu KiB, peak %llu KiB\n",
               o->c.broker_pid, r->broker1.threads, cpu_s, cpu_win_s, 100 * cpu_s / cpu_win_s,
               us_per_msg, (unsigned long long)r->broker1.rss_kib,
               (unsigned long long)r->broker1.hwm_kib);
    if (have_peer)
        printf("  of which the publishers' broker (pid %d) %.3f us and the subscribers' (pid %d) "
               "%.3f us per delivered message\n",
               o->c.broker_pid, win_recv ? cpu_a * 1e6 / (double)win_recv : 0, o->c.broker_pid2,
               win_recv ? cpu_b * 1e6 / (double)win_recv : 0);
    printf("  midge-bench itself: %.3f s CPU (%.0f %% of a core), %llu writes, %llu reads, "
           "%llu waits\n",
           self_s, 100 * self_s / secs, (unsigned long long)r->loop.write_calls,
           (unsigned long long)r->loop.read_calls, (unsigned long long)r->waits);

    bool integrity_failed = (o->qos > 0 && (lost || dup)) || r->unexpected || r->corrupt;
    if (integrity_failed)
        warnx_("QoS %d run: lost %llu, duplicated %llu, misrouted %llu, corrupt %llu: the "
               "broker broke its delivery guarantee, dropped on queue overflow "
               "(max_queued_messages), or did not deliver within --grace %.1f s",
               o->qos, (unsigned long long)lost, (unsigned long long)dup,
               (unsigned long long)r->unexpected, (unsigned long long)r->corrupt, o->grace);
    char b1[32], b2[32], b3[32], b4[32], peer_fields[96] = "";
    if (have_peer)
        snprintf(peer_fields, sizeof(peer_fields),
                 " broker_a_cpu_us_per_msg=%.3f broker_b_cpu_us_per_msg=%.3f",
                 win_recv ? cpu_a * 1e6 / (double)win_recv : 0,
                 win_recv ? cpu_b * 1e6 / (double)win_recv : 0);
    printf("RESULT mode=pubsub pubs=%d subs=%d topics=%d spread=%d wildcard=%d filters=%llu "
           "ws=%d tls=%d mqtt=%d topic_alias=%d shared=%d qos=%d size=%zu rate=%.0f window=%d "
           "duration=%.3f sent=%llu received=%llu lost=%llu dup=%llu reorder=%llu "
           "unexpected=%llu corrupt=%llu foreign=%llu stalls=%llu unacked=%llu "
           "ack_refused=%llu ack_nomatch=%llu sub_min=%llu sub_max=%llu msgs_per_s=%.0f "
           "sent_per_s=%.0f "
           "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f broker_cpu_us_per_msg=%s "
           "broker_cpu_pct=%s broker_rss_kib=%s broker_hwm_kib=%s bench_cpu_pct=%.0f%s status=%s\n",
           o->publishers, o->subscribers, o->topics, o->spread, o->wildcard,
           (unsigned long long)r->filters, o->c.ws_path != NULL, o->c.tls, o->c.version,
           o->topic_alias, o->shared_group != NULL, o->qos, o->size, o->rate, o->window, secs,
           (unsigned long long)r->total_sent, (unsigned long long)r->total_received,
           (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)reorder,
           (unsigned long long)r->unexpected, (unsigned long long)r->corrupt,
           (unsigned long long)r->foreign, (unsigned long long)stalls, (unsigned long long)unacked,
           (unsigned long long)r->ack_refused, (unsigned long long)r->ack_nomatch,
           (unsigned long long)member_min, (unsigned long long)member_max, msgs_per_s, sent_per_s,
           p50, p99, p999, pmax, fmt_opt(b1, sizeof(b1), have_broker, us_per_msg, 3),
           fmt_opt(b2, sizeof(b2), have_broker, 100 * cpu_s / cpu_win_s, 1),
           fmt_opt(b3, sizeof(b3), have_broker, (double)r->broker1.rss_kib, 0),
           fmt_opt(b4, sizeof(b4), have_broker, (double)r->broker1.hwm_kib, 0), 100 * self_s / secs,
           peer_fields, integrity_failed ? "integrity" : "ok");
    return integrity_failed ? EXIT_INTEGRITY : 0;
}

/* ---- main loop ---- */

static void on_event(struct run *r, struct conn *c, uint32_t events, uint64_t now)
{
    if (c->state == CS_CLOSED)
        return;
    if (c->state == CS_CONNECTING) {
        int err = conn_finish_connect(&r->loop, c);
        if (err)
            die(EXIT_CONNECT, "connect to %s:%d: %s%s", r->o->c.host, r->o->c.port, strerror(err),
                err == ECONNREFUSED ? " (is the broker running and listening there?)" : "");
        on_connected(r, c);
        return;
    }
    if (events & EPOLLOUT) {
        int rc = conn_flush(&r->loop, c);
        if (rc < 0) {
            char name[48];
            die(EXIT_PROTOCOL, "write to %s: %s", conn_name(c, name, sizeof(name)), strerror(-rc));
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(r, c, now);
}

int run_pubsub(const struct pubsub_opts *o)
{
    struct run *r = calloc(1, sizeof(*r));
    if (!r)
        die(1, "out of memory");
    r->o = o;
    r->magic = (uint32_t)(now_ns() ^ ((uint64_t)getpid() << 16)) | 1u;
    uint64_t fd_limit = raise_fd_limit();
    if ((uint64_t)o->publishers + (uint64_t)o->subscribers + 16 > fd_limit)
        die(EXIT_USAGE, "%d connections exceed the file-descriptor limit (%llu)",
            o->publishers + o->subscribers, (unsigned long long)fd_limit);
    r->max_unacked = o->pub_inflight ? (uint32_t)o->pub_inflight : MAX_UNACKED;
    if (r->max_unacked > MAX_UNACKED)
        r->max_unacked = MAX_UNACKED;
    r->keepalive = o->c.keepalive;
    if (o->shared_group)
        snprintf(r->share, sizeof(r->share), "$share/%s/", o->shared_group);
    loop_init(&r->loop, o->c.host, o->c.port, o->c.ws_path);
    if (o->c.tls)
        tls_loop_init(&r->loop, &o->c);
    build_topology(r);
    if (o->c.sub_port) {
        /* Subscribers on another broker (bridged from the publishers' one). */
        r->sub_addr = r->loop.addr;
        r->sub_addr.sin_port = htons((uint16_t)o->c.sub_port);
        for (int i = 0; i < o->subscribers; i++)
            r->subs[i].c.addr = &r->sub_addr;
    }
    hist_reset(&r->hist);

    struct epoll_event events[256];
    uint64_t setup_deadline = now_ns() + (uint64_t)(o->setup_timeout * 1e9);
    setup_open_more(r);
    while (r->phase != PH_DONE) {
        uint64_t now = now_ns();
        uint64_t wake = now + 50000000ull; /* stall checks and phase changes: 50 ms at most */

        if (r->phase == PH_SETUP) {
            setup_open_more(r);
            if (r->subs_ready == o->subscribers && r->pubs_ready == o->publishers) {
                start_run(r, now);
                if (o->warmup <= 0)
                    begin_window(r);
            } else if (now > setup_deadline) {
                die(EXIT_TIMEOUT,
                    "setup timed out after %.0f s: %d/%d subscribers subscribed, %d/%d "
                    "publishers connected (the broker accepts TCP but does not answer MQTT?)",
                    o->setup_timeout, r->subs_ready, o->subscribers, r->pubs_ready, o->publishers);
            }
        }
        if (r->phase == PH_RUN) {
            if (!r->measuring && now >= r->t_measure && now < r->t_end)
                begin_window(r);
            if (now >= r->t_end) {
                if (!r->measuring)
                    begin_window(r); /* a stall skipped the whole window: measure nothing */
                end_window(r);
            } else {
                uint64_t due = publish_all(r, now);
                if (due < wake)
                    wake = due;
                uint64_t edge = r->measuring ? r->t_end : r->t_measure;
                if (edge < wake)
                    wake = edge;
            }
        }
        if (r->phase == PH_DRAIN) {
            /* At QoS 0 silence means the rest was dropped; at QoS 1/2 it is owed: wait. */
            bool quiet = o->qos == 0 && now - r->t_last_rx > (uint64_t)(o->stall * 1e9);
            if (drained(r) || quiet || now >= r->t_grace)
                r->phase = PH_DONE;
        }
        if (r->t_next_ping && now >= r->t_next_ping) {
            for (int k = 0; k < o->subscribers + o->publishers; k++) {
                struct conn *c = conn_at(r, k);
                if (c->state == CS_READY) {
                    wire_simple(&c->out, PKT_PINGREQ);
                    conn_mark_dirty(&r->loop, c);
                }
            }
            r->t_next_ping = now + (uint64_t)r->keepalive * 500000000ull;
        }
        int err;
        struct conn *bad = loop_flush_all(&r->loop, &err);
        if (bad) {
            char name[48];
            die(EXIT_PROTOCOL, "write to %s: %s", conn_name(bad, name, sizeof(name)),
                strerror(err));
        }
        if (r->phase == PH_DONE)
            break;

        now = now_ns();
        struct timespec ts = {0, 0};
        if (wake > now) {
            ts.tv_sec = (time_t)((wake - now) / 1000000000ull);
            ts.tv_nsec = (long)((wake - now) % 1000000000ull);
        }
        int n = epoll_pwait2(r->loop.epfd, events, 256, &ts, NULL);
        r->waits++;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die(1, "epoll_pwait2: %s", strerror(errno));
        }
        /* A fresh clock per event: a busy batch would otherwise flatter the latencies. */
        for (int k = 0; k < n; k++)
            on_event(r, events[k].data.ptr, events[k].events, now_ns());
    }
    int rc = report(r);
    disconnect_all(r);
    free_run(r);
    return rc;
}

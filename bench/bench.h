/*
 * bench.h - shared declarations of midge-bench, the MQTT 3.1.1 load generator.
 *
 * midge-bench deliberately shares no code with the broker: it has its own wire
 * encoding (wire.c), its own event loop over epoll (net.c), a latency
 * histogram (hist.c) and a /proc sampler for the broker under test
 * (procstat.c). The two modes live in pubsub.c and conns.c; main.c parses the
 * command line.
 */
#ifndef MIDGE_BENCH_H
#define MIDGE_BENCH_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- utilities (main.c) ---- */

uint64_t now_ns(void);
void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Raises RLIMIT_NOFILE to the hard limit and returns the new soft limit. */
uint64_t raise_fd_limit(void);
/* Fixed, locale-independent formatting of "n/a" for optional numbers. */
const char *fmt_opt(char *out, size_t cap, bool have, double v, int decimals);

/* Exit codes: distinct so that scripts can tell a refused connection from a bad run. */
enum {
    EXIT_USAGE = 2,     /* bad command line */
    EXIT_CONNECT = 3,   /* TCP connect failed or CONNACK refused */
    EXIT_PROTOCOL = 4,  /* broker sent something we cannot parse or closed on us */
    EXIT_TIMEOUT = 5,   /* setup did not finish in time */
    EXIT_INTEGRITY = 6, /* run finished but QoS 1/2 messages were lost or duplicated */
};

/* ---- growable byte buffer ---- */

struct buf {
    uint8_t *data;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed from the front (written or parsed) */
    size_t cap;
};

void buf_reserve(struct buf *b, size_t extra);
void buf_compact(struct buf *b);
void buf_free(struct buf *b);

/* ---- MQTT 3.1.1 wire format (wire.c) ---- */

enum {
    PKT_CONNECT = 1,
    PKT_CONNACK = 2,
    PKT_PUBLISH = 3,
    PKT_PUBACK = 4,
    PKT_PUBREC = 5,
    PKT_PUBREL = 6,
    PKT_PUBCOMP = 7,
    PKT_SUBSCRIBE = 8,
    PKT_SUBACK = 9,
    PKT_PINGREQ = 12,
    PKT_PINGRESP = 13,
    PKT_DISCONNECT = 14,
};

struct packet {
    int type;
    int flags;           /* low nibble of the first byte */
    const uint8_t *body; /* variable header + payload */
    size_t body_len;
    size_t total; /* whole packet length, fixed header included */
};

/* Returns 1 with *pkt filled, 0 if more bytes are needed, -1 if malformed. */
int wire_parse(const uint8_t *p, size_t n, struct packet *pkt);
void wire_connect(struct buf *b, const char *client_id, uint16_t keepalive, bool clean);
void wire_subscribe(struct buf *b, uint16_t pid, const char *filter, int qos);
/* One SUBSCRIBE with n filters, filter k at names + k * stride, lens[k] bytes long. */
void wire_subscribe_list(struct buf *b, uint16_t pid, const char *names, size_t stride,
                         const uint8_t *lens, int n, int qos);
/* Appends a PUBLISH header and returns where the payload_len payload bytes go. */
uint8_t *wire_publish(struct buf *b, const char *topic, size_t topic_len, int qos, uint16_t pid,
                      size_t payload_len);
/* PUBACK, PUBREC, PUBREL (flags 0010 added here) or PUBCOMP. */
void wire_ack(struct buf *b, int type, uint16_t pid);
void wire_simple(struct buf *b, int type); /* PINGREQ, DISCONNECT */
const char *wire_connack_reason(int rc);
const char *wire_type_name(int type);
uint16_t wire_u16(const uint8_t *p);

/* ---- latency histogram (hist.c): log-linear, about 1.6 % relative precision ---- */

#define HIST_SUB_BITS 6
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) << HIST_SUB_BITS)

struct hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    uint64_t buckets[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
/* Value at percentile pct (0..100]: the upper edge of its bucket, never above max. */
uint64_t hist_percentile(const struct hist *h, double pct);

/* ---- broker process sampling (procstat.c) ---- */

struct proc_sample {
    bool ok;
    uint64_t sched_ns; /* sum of the live threads' run time (schedstat), ns */
    uint64_t tick_ns;  /* utime+stime of the process, exited threads included, 10 ms steps */
    uint64_t rss_kib;  /* VmRSS */
    uint64_t hwm_kib;  /* VmHWM: peak RSS since the process started */
    int threads;
    uint64_t taken_ns; /* CLOCK_MONOTONIC time of the sample */
};

bool proc_sample(int pid, struct proc_sample *s);
/* CPU time the broker used between two samples, ns. */
uint64_t proc_cpu_delta(const struct proc_sample *a, const struct proc_sample *b);

/* ---- connections and the epoll loop (net.c) ---- */

enum conn_state {
    CS_CONNECTING, /* TCP connect in progress */
    CS_MQTT,       /* TCP up, CONNECT sent, handshake packets pending */
    CS_READY,      /* handshake complete */
    CS_CLOSED,
};

/* WebSocket transport state of a connection (--ws); WS_NONE for plain TCP. */
enum { WS_NONE, WS_HANDSHAKE, WS_OPEN };

struct conn {
    int fd;
    enum conn_state state;
    int role; /* owner's tag */
    int index;
    uint32_t epoll_events; /* what epoll currently watches */
    bool dirty;            /* on the loop's flush list */
    struct conn *next_dirty;
    struct buf in;
    struct buf out;
    size_t in_cap; /* read buffer size for this connection */
    uint64_t started_ns;
    /* WebSocket only: out holds plain MQTT packets, wout the frames that carry them; raw
     * holds what was read, in holds the unwrapped MQTT bytes. */
    int ws;
    struct buf wout;
    struct buf raw;
    char ws_accept[32]; /* the Sec-WebSocket-Accept the server must answer */
    /* TLS only (--tls): OpenSSL reads and writes the socket itself (tls.c). */
    struct ssl_st *ssl;
    bool tls_done; /* handshake finished (and counted) */
};

struct loop {
    int epfd;
    struct sockaddr_in addr;
    struct conn *dirty_head;
    uint64_t write_calls;
    uint64_t read_calls;
    const char *ws_path; /* MQTT over WebSocket to this path; NULL: plain TCP */
    char ws_host[64];    /* Host header */
    uint64_t rng;        /* WebSocket keys and masks */
    bool tls;            /* --tls: every connection is MQTT over TLS (or wss) */
    uint64_t tls_handshakes, tls_resumed;
    char tls_error[160]; /* the first TLS failure, for the summary */
};

/* ws_path: NULL for MQTT over TCP, else the WebSocket path (e.g. "/mqtt"). */
void loop_init(struct loop *l, const char *host, int port, const char *ws_path);
/* Non-blocking connect; the caller gets EPOLLOUT when it completes. Returns 0 or -errno. */
int conn_open(struct loop *l, struct conn *c);
/* Checks SO_ERROR after EPOLLOUT in CS_CONNECTING: 0 when connected, else an errno. */
int conn_finish_connect(struct loop *l, struct conn *c);
void conn_mark_dirty(struct loop *l, struct conn *c);
/* Writes what is queued; returns -errno on a dead socket, else 0. */
int conn_flush(struct loop *l, struct conn *c);
/* Flushes every dirty connection; returns the first failing one (or NULL). */
struct conn *loop_flush_all(struct loop *l, int *err);
/* Reads what is available into c->in: >0 bytes, 0 on EOF, -EAGAIN, or -errno. */
ssize_t conn_read(struct loop *l, struct conn *c);
/* One read of the connection's byte stream (decrypted with --tls): as conn_read. */
ssize_t conn_raw_read(struct loop *l, struct conn *c, void *buf, size_t cap);
void conn_close(struct loop *l, struct conn *c);
void conn_set_events(struct loop *l, struct conn *c, uint32_t events);

/* ---- MQTT over WebSocket (wsclient.c), called by net.c ---- */

/* Queues the HTTP upgrade request in c->wout; c->out waits for the 101. */
void ws_start(struct loop *l, struct conn *c);
/* Wraps every MQTT packet queued in c->out into its own masked binary frame in c->wout. */
void ws_frame_out(struct loop *l, struct conn *c);
/* conn_read for a WebSocket connection: >0 MQTT bytes added to c->in, 0 on EOF or a close
 * frame, -EAGAIN, -EPROTO (refused upgrade, bad frame) or -errno. */
ssize_t ws_read(struct loop *l, struct conn *c);

/* ---- modes ---- */

struct common_opts {
    const char *host;
    int port;
    int broker_pid; /* 0: not sampled */
    uint16_t keepalive;
    const char *prefix; /* topic and client-id prefix, unique per run */
    const char *ws_path; /* --ws: MQTT over WebSocket to this path; NULL: TCP */
    bool tls;            /* --tls */
    const char *cafile;  /* --cafile: verify the broker's certificate */
    const char *certfile, *keyfile; /* --cert, --key: a client certificate */
    const char *tls_version;        /* --tls-version tlsv1.2: at most TLS 1.2 */
    bool resume;         /* --resume: offer the last session ticket on every connection */
};

/* ---- TLS (tls.c) ---- */

void tls_loop_init(struct loop *l, const struct common_opts *o);
int tls_conn_start(struct loop *l, struct conn *c);
ssize_t tls_read(struct loop *l, struct conn *c, void *buf, size_t cap);
ssize_t tls_write(struct loop *l, struct conn *c, const void *buf, size_t len);
void tls_conn_free(struct conn *c);
void tls_prime_session(struct loop *l, const char *client_id);

struct pubsub_opts {
    struct common_opts c;
    int publishers;
    int subscribers;
    int topics;
    int qos;
    size_t size;
    double duration;
    double warmup;
    double rate; /* total msg/s; 0 = saturation */
    int window;
    int pub_inflight; /* QoS 1/2 flows open per publisher (a client's max inflight); 0 = 65000 */
    bool wildcard;    /* subscribers take every topic with prefix/+ */
    bool sub_persistent; /* subscribers connect with clean session 0 (--sub-clean 0) */
    bool spread;      /* publishers cycle over their share of T topics (see pubsub.c) */
    int sub_batch;    /* --spread: filters per SUBSCRIBE packet */
    double setup_timeout;
    double grace;
    double stall;
};

struct conns_opts {
    struct common_opts c;
    int count;
    double rate;
    double hold;
    double timeout;
    int max_pending; /* handshakes in progress at once */
};

int run_pubsub(const struct pubsub_opts *o);
int run_conns(const struct conns_opts *o);

#endif

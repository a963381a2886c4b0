/*
 * bench.h - shared declarations of midge-bench, the MQTT 3.1.1 and 5.0 load generator.
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

/* ---- MQTT 3.1.1 and 5.0 wire format (wire.c) ---- */

/* Protocol levels in CONNECT: every encoder and parser takes one of them. */
enum { MQTT_311 = 4, MQTT_5 = 5 };

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
    PKT_UNSUBSCRIBE = 10,
    PKT_UNSUBACK = 11,
    PKT_PINGREQ = 12,
    PKT_PINGRESP = 13,
    PKT_DISCONNECT = 14,
};

/* MQTT 5 property identifiers midge-bench sends or acts on (spec 2.2.2.2). */
enum {
    PROP_SESSION_EXPIRY = 0x11,
    PROP_SERVER_KEEPALIVE = 0x13,
    PROP_REASON_STRING = 0x1f,
    PROP_RECEIVE_MAXIMUM = 0x21,
    PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    PROP_TOPIC_ALIAS = 0x23,
    PROP_MAXIMUM_QOS = 0x24,
    PROP_MAXIMUM_PACKET_SIZE = 0x27,
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
/* CONNECT without will or credentials. MQTT 5 with clean false also asks for a session
 * that never expires (Session Expiry Interval 0xFFFFFFFF), which is what clean session 0
 * means in 3.1.1; otherwise its property block is empty. */
void wire_connect(struct buf *b, int version, const char *client_id, uint16_t keepalive,
                  bool clean);
/* SUBSCRIBE with one filter, share + filter (share: NULL or e.g. "$share/g/"); MQTT 5 adds
 * an empty property block and sends the QoS as the options byte (no other option set). */
void wire_subscribe(struct buf *b, int version, uint16_t pid, const char *share, const char *filter,
                    int qos);
/* One SUBSCRIBE with n filters, filter k being share + (names + k * stride, lens[k] bytes). */
void wire_subscribe_list(struct buf *b, int version, uint16_t pid, const char *share,
                         const char *names, size_t stride, const uint8_t *lens, int n, int qos);
/* Appends a PUBLISH header and returns where the payload_len payload bytes go. MQTT 5:
 * alias 0 sends no Topic Alias property (an empty property block); alias > 0 sends it,
 * after topic, which is empty (topic_len 0) once the alias is set. */
uint8_t *wire_publish(struct buf *b, int version, const char *topic, size_t topic_len, int qos,
                      uint16_t pid, uint16_t alias, size_t payload_len);
/* PUBACK, PUBREC, PUBREL (flags 0010 added here) or PUBCOMP, in the 2-byte form that MQTT 5
 * reads as reason 0x00 without properties. */
void wire_ack(struct buf *b, int type, uint16_t pid);
void wire_simple(struct buf *b, int type); /* PINGREQ, DISCONNECT (MQTT 5: reason 0x00) */

/* What a CONNACK says; the MQTT 5 fields keep their spec defaults when absent. */
struct connack {
    int reason; /* 3.1.1 return code or MQTT 5 reason code: 0 accepted */
    bool session_present;
    uint16_t receive_maximum; /* 65535 unless sent */
    int server_keepalive;     /* -1 unless sent */
    uint16_t topic_alias_max; /* 0 unless sent */
    int maximum_qos;          /* 2 unless sent */
    uint32_t max_packet_size; /* 0: no limit */
    char reason_string[96];   /* "" unless sent */
};

/* A PUBLISH as received; pointers into the packet. */
struct publish_in {
    int qos;
    uint16_t pid;
    const uint8_t *topic;
    size_t topic_len;
    const uint8_t *props; /* MQTT 5 property block (without its length); NULL in 3.1.1 */
    size_t props_len;
    uint16_t alias; /* MQTT 5 Topic Alias property; 0 if none */
    const uint8_t *payload;
    size_t payload_len;
};

/* The parsers return 0, or -1 when the packet is malformed for that protocol version. */
int wire_parse_connack(const struct packet *pk, int version, struct connack *out);
int wire_parse_publish(const struct packet *pk, int version, struct publish_in *out);
/* PUBACK, PUBREC, PUBREL, PUBCOMP: the short form (packet id only) has reason 0x00. */
int wire_parse_ack(const struct packet *pk, int version, uint16_t *pid, int *reason);
/* SUBACK or UNSUBACK: the return or reason codes, one per filter, at *codes. */
int wire_parse_suback(const struct packet *pk, int version, uint16_t *pid, const uint8_t **codes,
                      size_t *n);
/* A server's MQTT 5 DISCONNECT: its reason code (0x00 if none) and Reason String. */
int wire_parse_disconnect(const struct packet *pk, int *reason, char *why, size_t cap);
/* True if a SUBACK return or reason code refuses the subscription. */
static inline bool wire_suback_refused(int code)
{
    return code >= 0x80;
}
const char *wire_connack_reason(int version, int rc);
/* A short English name for an MQTT 5 reason code, e.g. "quota exceeded" for 0x97. */
const char *wire_reason_name(int reason);
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
    int role;                       /* owner's tag */
    const struct sockaddr_in *addr; /* where it connects; NULL: the loop's address */
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
    int sub_port;    /* pubsub: subscribers connect here (a bridged broker); 0: port */
    int broker_pid;  /* 0: not sampled */
    int broker_pid2; /* a second broker sampled too (a bridge's remote); 0: none */
    uint16_t keepalive;
    const char *prefix;  /* topic and client-id prefix, unique per run */
    const char *ws_path; /* --ws: MQTT over WebSocket to this path; NULL: TCP */
    int version;         /* MQTT_311 or MQTT_5 (--mqtt5, --protocol) */
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
    int pub_inflight;    /* QoS 1/2 flows open per publisher (a client's max inflight); 0 = 65000 */
    bool wildcard;       /* subscribers take every topic with prefix/+ */
    bool sub_persistent; /* subscribers connect with clean session 0 (--sub-clean 0) */
    bool spread;      /* publishers cycle over their share of T topics (see pubsub.c) */
    int sub_batch;    /* --spread: filters per SUBSCRIBE packet */
    bool topic_alias; /* MQTT 5: a publisher names each topic once, then sends its alias */
    const char *shared_group; /* --shared: subscribers take $share/GROUP/<filter>; NULL: no */
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

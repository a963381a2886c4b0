/* tls.h - TLS listeners (src/net/transport_tls.c): an OpenSSL context per listener and
 * the transport that runs each connection's TLS over memory BIOs.
 *
 * The header keeps OpenSSL out of its users: a listener context is a void * that
 * tls_transport.ctx_free releases. Contexts are refcounted by OpenSSL, so a connection
 * keeps the context it was accepted with after a reload swaps in a new one.
 */
#ifndef MIDGE_TLS_H
#define MIDGE_TLS_H

#include <stdbool.h>
#include <stdint.h>

#include "net.h"
#include "tls_pool.h"

struct mq_listener_config;
struct ssl_st;
struct tls_rec;

/* The queues of handshakes waiting for a later wake-up (mq_server.hs_wait_head): those
 * under way (their SSL made), served first, and new ones. */
enum { HS_CONTINUING, HS_NEW };

/* Longest TLS 1.3 traffic secret (SHA-384). */
#define TLS_SECRET_MAX 48

/* What the handshake phase keeps beside OpenSSL to take the record layer over once the
 * handshake is done (transport_tls.c, hand_over): freed then, or at once for TLS 1.2. */
struct tls_hs {
    /* TLS 1.3: the application traffic secrets; TLS 1.2: the master secret in the first. */
    uint8_t client_secret[TLS_SECRET_MAX], server_secret[TLS_SECRET_MAX];
    uint64_t rseq, wseq; /* records since each side's Finished, each way */
    uint32_t body_left;  /* of the record OpenSSL is reading */
    uint8_t hdr[5], hdr_have;
    uint8_t secret_len;
    uint8_t secrets; /* bit 0: client secret known, bit 1: server secret, bit 2: master */
    bool own_finished, peer_finished;
    bool keep_openssl;      /* a KeyUpdate was seen: the keys moved on inside OpenSSL */
    struct ssl_ctx_st *ctx; /* a reference to the listener's context until the SSL is made */
    /* Waiting for a later wake-up (srv->hs_wait_head): the bytes so far, and the queue. */
    bool waiting;
    uint8_t wait_queue; /* HS_CONTINUING or HS_NEW */
    uint32_t wait_len;
    uint64_t wait_since_ms; /* uv_now when it began to wait */
    uint8_t *wait_buf;
    struct tls_conn *wait_next, *wait_prev;
    /* A handshake step on a worker thread (tls_pool.c, when the server runs one): from
     * tls_pool_submit until the step is back on the loop thread, the worker alone uses the
     * SSL, this struct and step_in/step_out. Bytes that arrive meanwhile wait in wait_buf. */
    struct tls_job job;
    struct tls_conn *owner;
    bool on_worker;       /* the connection BIO writes to step_out, not to the connection */
    bool orphan;          /* the connection left during the step: its return frees the rest */
    int step_r, step_err; /* SSL_do_handshake's result, SSL_get_error's */
    char step_why[128];   /* a failure's reason (OpenSSL's error queue is per thread) */
    uint8_t *step_in;     /* the socket bytes of the step (owned) */
    uint8_t *step_out;    /* what OpenSSL wrote during it (owned) */
    uint32_t step_out_len, step_out_cap;
};

/* One TLS connection (cl->layer[level].state). During the handshake OpenSSL runs it
 * (ssl, with hs); once it is established and idle between records, the record layer moves
 * to tls_rec (TLS 1.3, and TLS 1.2 with an AEAD suite) and the SSL is freed, so an idle
 * connection holds this, rec and rec's two cipher contexts. */
struct tls_conn {
    struct ssl_st *ssl;  /* made at the first bytes; NULL after the hand-over */
    struct tls_rec *rec; /* NULL before it (and for ever under TLS 1.2) */
    struct tls_hs *hs;   /* NULL after it */
    struct mq_client *cl;
    const uint8_t *in; /* socket bytes OpenSSL may read (the connection's BIO), in_len of them */
    size_t in_len;
    /* Plaintext for OpenSSL's record layer (during the handshake, or TLS 1.2), written
     * with SSL_write at the flush; NULL when none. */
    uint8_t *stage;
    uint32_t stage_len, stage_cap;
    uint8_t level; /* in the connection's layers */
    bool established;
    bool failed; /* fatal error logged, or close_notify sent: the close is under way */
    bool got_input;
    uint8_t first_byte; /* of the connection, for the "plain MQTT?" hint */
};

/* The TLS transport: attach/input/output/shutdown (close_notify)/detach per
 * connection, ctx_free for a listener context made by tls_ctx_new or tls_ctx_ref. It is
 * the bottom layer of a connection, alone (mqtts) or under WebSocket (wss). */
extern const struct mq_transport_ops tls_transport;

/* True when lc asks for TLS (certfile or keyfile set). Such a listener is never
 * served unencrypted: if its context cannot be built, it is not opened at all. */
bool tls_enabled(const struct mq_listener_config *lc);

/* Check lc's TLS options for consistency without reading any file (configuration
 * load, start-up and reload): certfile without keyfile, TLS options on a listener
 * without a certificate, client verification without a CA, an unknown tls_version.
 * Logs each problem as "FILE: listener PORT: ..." (file is the configuration's name
 * for messages) and returns -1; returns 0 when consistent. lc is borrowed. */
int tls_check_config(const char *file, const struct mq_listener_config *lc);

/* Build the TLS context of a listener: certificate chain, private key (checked
 * against the certificate), CA file or directory, CRL, minimum version, ciphers and
 * the client-certificate policy. Returns an owned reference, released with
 * tls_transport.ctx_free, or NULL after logging precisely which file or setting
 * failed and why. Reads files with blocking calls: call it at start-up or on
 * reload, never while serving traffic. lc is borrowed. */
void *tls_ctx_new(const struct mq_listener_config *lc);

/* Take another reference to ctx (one per listening socket); returns ctx. */
void *tls_ctx_ref(void *ctx);

/* Run the first step of the TLS handshakes that wait (srv->hs_wait_head, oldest first)
 * until this wake-up's handshake budget is spent. Called by the poller after each
 * wake-up's events; the poller does not block while some wait. */
void tls_handshakes_run(struct mq_server *srv);

/* At shutdown, after every client is gone: stop the handshake threads (if any). */
void tls_server_stop(struct mq_server *srv);

/* Some handshakes wait (the poller must not block). */
static inline bool tls_handshakes_waiting(const struct mq_server *srv)
{
    return srv->hs_wait_head[HS_CONTINUING] || srv->hs_wait_head[HS_NEW];
}

#endif

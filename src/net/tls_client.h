/* tls_client.h - TLS as a client (src/net/transport_tls_client.c): the lower layer of a
 * bridge's connection to its remote (mqtts, wss). OpenSSL stays out of the users: a context
 * is a void * (an SSL_CTX, refcounted by OpenSSL, so a connection keeps the one it started
 * with after a reload builds another).
 */
#ifndef MIDGE_TLS_CLIENT_H
#define MIDGE_TLS_CLIENT_H

#include <stdbool.h>

#include "net.h"

/* What a client context is built from (a bridge's bridge_* options). Borrowed. */
struct mq_tls_client_config {
    const char *name;            /* for messages: "bridge cloud" */
    const char *cafile, *capath; /* neither: the system's CAs (OpenSSL's default paths) */
    const char *certfile, *keyfile;
    const char *tls_version;    /* minimum: "tlsv1.3", "tlsv1.2" (default), "tlsv1.1" */
    const char *alpn;           /* comma-separated protocol names, or NULL */
    const char *identity, *psk; /* PSK instead of certificates (psk in hex) */
};

/* Build a client context: the CA to verify the remote with, a client certificate, minimum
 * version, ALPN, PSK. Reads files with blocking calls (start-up, reload). Returns an owned
 * reference (release with tls_client_ctx_free), or NULL after logging which file or setting
 * failed and why. */
void *tls_client_ctx_new(const struct mq_tls_client_config *c);
void tls_client_ctx_free(void *ctx);

/* The per-connection context attach takes (borrowed for the call): the client context and
 * the remote's host name, sent as SNI (unless it is an IP address) and verified against the
 * remote's certificate unless verify_host is false (bridge_insecure). */
struct mq_tls_client_target {
    void *ctx;
    const char *host;
    bool verify_host;
};

/* The layer: attach starts the handshake at once; plaintext written before it completes is
 * sent right after. A failure ends the connection with a close reason saying why (the
 * certificate error, the alert), for the bridge's log line; the layer logs nothing itself. */
extern const struct mq_transport_ops tls_client_transport;

#endif

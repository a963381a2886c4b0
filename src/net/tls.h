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

#include "net.h"

struct mq_listener_config;

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

#endif

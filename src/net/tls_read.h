/* tls_read.h - the SSL_read loop both TLS transports share (src/net/tls_read.c). */
#ifndef MIDGE_TLS_READ_H
#define MIDGE_TLS_READ_H

#include <stddef.h>
#include <stdint.h>

struct mq_client;
struct ssl_st;

/* Pass up at level what OpenSSL has decrypted for ssl (the connection's record layer is
 * still OpenSSL's), cap bytes of buf at a time, until it wants more input or cl starts
 * closing; returns 0 then. At an end, after passing up what came before it, returns what
 * SSL_get_error reported: SSL_ERROR_ZERO_RETURN (the peer's close_notify) or a failure,
 * for the caller to handle. */
int tls_read_plain(struct mq_client *cl, struct ssl_st *ssl, unsigned level, uint8_t *buf,
                   size_t cap);

#endif

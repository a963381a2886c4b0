/* tls_common.h - what the broker's and the bridge's TLS transports share
 * (src/net/tls_common.c): the reason of an OpenSSL error, and the SSL_read loop. */
#ifndef MIDGE_TLS_COMMON_H
#define MIDGE_TLS_COMMON_H

#include <stddef.h>
#include <stdint.h>

struct mq_client;
struct ssl_st;

/* The reason of the oldest error in OpenSSL's queue ("key values mismatch"), which is then
 * cleared; "unknown error" when the queue is empty. buf (size bytes) holds the text when
 * OpenSSL has no reason string of its own; code, when not NULL, gets the error's code. */
const char *tls_ssl_reason(char *buf, size_t size, unsigned long *code);

/* Why a connection failed, from SSL_get_error's ssl_err and OpenSSL's queue (then cleared):
 * "unexpected end of data" for a peer gone without close_notify, else tls_ssl_reason. */
const char *tls_fail_reason(int ssl_err, char *buf, size_t size);

/* Pass up at level what OpenSSL has decrypted for ssl (the connection's record layer is
 * still OpenSSL's), cap bytes of buf at a time, until it wants more input or cl starts
 * closing; returns 0 then. At an end, after passing up what came before it, returns what
 * SSL_get_error reported: SSL_ERROR_ZERO_RETURN (the peer's close_notify) or a failure,
 * for the caller to handle; for a failure, why (why_size bytes) holds tls_fail_reason's
 * text, taken before anything is passed up (the layers above may make OpenSSL calls that
 * clear its queue: another client's TLS output, a password hash). */
int tls_read_plain(struct mq_client *cl, struct ssl_st *ssl, unsigned level, uint8_t *buf,
                   size_t cap, char *why, size_t why_size);

#endif

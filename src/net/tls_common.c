/* tls_common.c - what the two TLS transports (transport_tls.c, the broker's side;
 * transport_tls_client.c, a bridge's) share: the reason of an OpenSSL error, for their log
 * lines and close reasons, and the SSL_read loop they run while OpenSSL still holds a
 * connection's record layer (during and right after the handshake on the broker's side,
 * for the whole connection on a bridge's). Owns nothing; what an end means (close_notify,
 * a failure) is each transport's to decide.
 */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net.h"
#include "tls_common.h"

const char *tls_ssl_reason(char *buf, size_t size, unsigned long *code)
{
    unsigned long e = ERR_get_error();
    if (code)
        *code = e;
    ERR_clear_error();
    if (!e)
        return "unknown error";
    const char *r = ERR_reason_error_string(e);
    if (r)
        return r;
    ERR_error_string_n(e, buf, size);
    return buf;
}

const char *tls_fail_reason(int ssl_err, char *buf, size_t size)
{
    if (ssl_err == SSL_ERROR_SYSCALL && !ERR_peek_error())
        return "unexpected end of data";
    return tls_ssl_reason(buf, size, NULL);
}

int tls_read_plain(struct mq_client *cl, struct ssl_st *ssl, unsigned level, uint8_t *buf,
                   size_t cap, char *why, size_t why_size)
{
    size_t have = 0;
    int end = 0;
    while (!cl->closing && !cl->close_requested) {
        ERR_clear_error();
        int n = SSL_read(ssl, buf + have, (int)(cap - have));
        if (n > 0) {
            have += (size_t)n;
            if (have == cap) { /* buf is the caller's scratch buffer: pass up, reuse */
                client_layer_up(cl, level, buf, have);
                have = 0;
            }
            continue;
        }
        int e = SSL_get_error(ssl, n);
        if (e != SSL_ERROR_WANT_READ)
            end = e;
        if (end && end != SSL_ERROR_ZERO_RETURN) {
            char text[256];
            snprintf(why, why_size, "%s", tls_fail_reason(end, text, sizeof(text)));
        }
        break;
    }
    if (have) /* what came before an end is still valid */
        client_layer_up(cl, level, buf, have);
    return end;
}

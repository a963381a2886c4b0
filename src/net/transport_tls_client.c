/* transport_tls_client.c - TLS as a client, for bridges, over OpenSSL memory BIOs.
 *
 * The mirror of transport_tls.c, kept apart because the two differ where it matters: a
 * client speaks first, verifies the server's certificate and its host name, sends SNI and a
 * client certificate, and reports failures to its owner (a bridge, which logs one line per
 * attempt) instead of logging them. Owns its cl->layer[].state (struct tls_client); never
 * touches the socket except through client.c.
 * Invariant: plaintext reaches the bridge only after the handshake, and with it the
 * certificate and host name checks, have succeeded.
 */
#include "tls_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "midge/log.h"
#include "tls_common.h"

#define TLS_CHUNK 16384

struct tls_client {
    SSL *ssl; /* owns both BIOs */
    BIO *rbio, *wbio;
    uint8_t level;
    bool established;
    bool failed;
    uint8_t *early; /* plaintext written before the handshake finished */
    size_t early_len, early_cap;
    char host[256];
    char reason[320]; /* the close reason, for the owner's log line */
};

/* ---- contexts -------------------------------------------------------------------------- */

struct psk {
    char *identity;
    size_t len;
    unsigned char key[256];
};

static int psk_index = -1;

static void psk_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    struct psk *p = ptr;
    if (!p)
        return;
    OPENSSL_cleanse(p->key, sizeof(p->key));
    free(p->identity);
    free(p);
}

static unsigned int psk_client_cb(SSL *ssl, const char *hint, char *identity,
                                  unsigned int max_identity_len, unsigned char *psk,
                                  unsigned int max_psk_len)
{
    (void)hint;
    const struct psk *p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), psk_index);
    if (!p || strlen(p->identity) + 1 > max_identity_len || p->len > max_psk_len)
        return 0;
    memcpy(identity, p->identity, strlen(p->identity) + 1);
    memcpy(psk, p->key, p->len);
    return (unsigned int)p->len;
}

static bool set_psk(SSL_CTX *ctx, const struct mq_tls_client_config *c)
{
    if (psk_index < 0)
        psk_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, psk_free);
    struct psk *p = calloc(1, sizeof(*p));
    size_t hex = strlen(c->psk);
    if (!p || psk_index < 0 || hex % 2 || hex / 2 > sizeof(p->key) ||
        !(p->identity = strdup(c->identity))) {
        if (p)
            free(p->identity);
        free(p);
        mq_log(MQ_LOG_ERR, "%s: bridge_psk cannot be used", c->name);
        return false;
    }
    for (size_t i = 0; i < hex / 2; i++) {
        unsigned v;
        sscanf(c->psk + 2 * i, "%2x", &v);
        p->key[i] = (unsigned char)v;
    }
    p->len = hex / 2;
    SSL_CTX_set_ex_data(ctx, psk_index, p);
    SSL_CTX_set_psk_client_callback(ctx, psk_client_cb);
    return true;
}

/* ALPN's wire format from "a,b": each name prefixed by its length. */
static bool set_alpn(SSL_CTX *ctx, const struct mq_tls_client_config *c)
{
    unsigned char wire[256];
    size_t n = 0;
    const char *s = c->alpn;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (!len || len > 255 || n + 1 + len > sizeof(wire)) {
            mq_log(MQ_LOG_ERR, "%s: bridge_alpn \"%s\" is not a list of protocol names", c->name,
                   c->alpn);
            return false;
        }
        wire[n++] = (unsigned char)len;
        memcpy(wire + n, s, len);
        n += len;
        s += len + (e ? 1 : 0);
    }
    if (!n || SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)n) != 0) {
        mq_log(MQ_LOG_ERR, "%s: bridge_alpn \"%s\" cannot be used", c->name, c->alpn);
        return false;
    }
    return true;
}

static bool readable(const char *name, const char *option, const char *path, bool dir)
{
    struct stat st;
    if (stat(path, &st)) {
        mq_log(MQ_LOG_ERR, "%s: %s %s: %s", name, option, path, strerror(errno));
        return false;
    }
    if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        mq_log(MQ_LOG_ERR, "%s: %s %s: not a %s", name, option, path,
               dir ? "directory" : "regular file");
        return false;
    }
    return true;
}

void *tls_client_ctx_new(const struct mq_tls_client_config *c)
{
    char buf[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        mq_log(MQ_LOG_ERR, "%s: cannot create a TLS context (%s)", c->name,
               tls_ssl_reason(buf, sizeof(buf), NULL));
        return NULL;
    }
    int min = !c->tls_version || !strcmp(c->tls_version, "tlsv1.2") ? TLS1_2_VERSION
              : !strcmp(c->tls_version, "tlsv1.3")                  ? TLS1_3_VERSION
                                                                    : TLS1_1_VERSION;
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1) {
        mq_log(MQ_LOG_ERR, "%s: bridge_tls_version %s cannot be used", c->name, c->tls_version);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (c->psk) {
        if (!set_psk(ctx, c))
            goto fail;
    } else {
        if ((c->cafile && !readable(c->name, "bridge_cafile", c->cafile, false)) ||
            (c->capath && !readable(c->name, "bridge_capath", c->capath, true)))
            goto fail;
        ERR_clear_error();
        if (c->cafile || c->capath) {
            if (SSL_CTX_load_verify_locations(ctx, c->cafile, c->capath) != 1) {
                mq_log(MQ_LOG_ERR, "%s: %s %s holds no usable PEM CA certificate (OpenSSL: %s)",
                       c->name, c->cafile ? "bridge_cafile" : "bridge_capath",
                       c->cafile ? c->cafile : c->capath, tls_ssl_reason(buf, sizeof(buf), NULL));
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            mq_log(MQ_LOG_ERR, "%s: the system's CA certificates cannot be loaded (OpenSSL: %s)",
                   c->name, tls_ssl_reason(buf, sizeof(buf), NULL));
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (c->certfile) {
            if (!readable(c->name, "bridge_certfile", c->certfile, false) ||
                !readable(c->name, "bridge_keyfile", c->keyfile, false))
                goto fail;
            ERR_clear_error();
            if (SSL_CTX_use_certificate_chain_file(ctx, c->certfile) != 1) {
                mq_log(MQ_LOG_ERR,
                       "%s: bridge_certfile %s holds no usable PEM certificate "
                       "(OpenSSL: %s)",
                       c->name, c->certfile, tls_ssl_reason(buf, sizeof(buf), NULL));
                goto fail;
            }
            if (SSL_CTX_use_PrivateKey_file(ctx, c->keyfile, SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(ctx) != 1) {
                mq_log(MQ_LOG_ERR,
                       "%s: bridge_keyfile %s is not a usable unencrypted PEM key for "
                       "bridge_certfile %s (OpenSSL: %s)",
                       c->name, c->keyfile, c->certfile, tls_ssl_reason(buf, sizeof(buf), NULL));
                goto fail;
            }
        }
    }
    if (c->alpn && !set_alpn(ctx, c))
        goto fail;
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_client_ctx_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

/* ---- connections ------------------------------------------------------------------------ */

static void flush_wbio(struct mq_client *cl, struct tls_client *t)
{
    uint8_t buf[TLS_CHUNK + 1024];
    int n;
    while ((n = BIO_read(t->wbio, buf, (int)sizeof(buf))) > 0)
        client_layer_down(cl, t->level, buf, (size_t)n);
}

/* A fatal error (why: OpenSSL's reason, tls_fail_reason): the close reason says why (the
 * certificate check first), the alert OpenSSL made goes out, then the connection closes. */
static void fail_why(struct mq_client *cl, struct tls_client *t, const char *why)
{
    long vr = SSL_get_verify_result(t->ssl);
    if (!t->established && vr != X509_V_OK)
        snprintf(t->reason, sizeof(t->reason), "TLS handshake failed: %s (remote certificate: %s)",
                 why, X509_verify_cert_error_string(vr));
    else
        snprintf(t->reason, sizeof(t->reason), "%s: %s",
                 t->established ? "TLS error" : "TLS handshake failed", why);
    t->failed = true;
    flush_wbio(cl, t);
    if (!cl->close_reason)
        cl->close_reason = t->reason;
    client_request_close(cl);
}

static void fail(struct mq_client *cl, struct tls_client *t, int ssl_err)
{
    char buf[256];
    fail_why(cl, t, tls_fail_reason(ssl_err, buf, sizeof(buf)));
}

static bool is_ip(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

static int attach(struct mq_client *cl, unsigned level, void *ctx)
{
    const struct mq_tls_client_target *tg = ctx;
    struct tls_client *t = calloc(1, sizeof(*t));
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    SSL *ssl = SSL_new(tg->ctx);
    if (!t || !rbio || !wbio || !ssl) {
        mq_log(MQ_LOG_ERR, "%s: out of memory setting up TLS", client_peer(cl));
        SSL_free(ssl);
        BIO_free(rbio);
        BIO_free(wbio);
        free(t);
        ERR_clear_error();
        return -1;
    }
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_connect_state(ssl);
    snprintf(t->host, sizeof(t->host), "%s", tg->host);
    bool ip = is_ip(t->host);
    /* SNI names a host, never an address (RFC 6066, 3). */
    if (!ip)
        SSL_set_tlsext_host_name(ssl, t->host);
    if (tg->verify_host) {
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host);
        else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            SSL_set1_host(ssl, t->host);
        }
    }
    t->ssl = ssl;
    t->rbio = rbio;
    t->wbio = wbio;
    t->level = (uint8_t)level;
    cl->layer[level].state = t;
    /* The client speaks first: the ClientHello goes out now. */
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r != 1 && SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ) {
        fail(cl, t, SSL_get_error(ssl, r));
        return 0; /* closing, with the reason set */
    }
    flush_wbio(cl, t);
    ERR_clear_error();
    return 0;
}

static void detach(struct mq_client *cl, unsigned level)
{
    struct tls_client *t = cl->layer[level].state;
    if (!t)
        return;
    if (cl->close_reason == t->reason)
        cl->close_reason = "TLS error";
    SSL_free(t->ssl);
    free(t->early);
    free(t);
    cl->layer[level].state = NULL;
}

static int write_plain(struct mq_client *cl, struct tls_client *t, const uint8_t *data, size_t len)
{
    while (len) {
        int chunk = len > TLS_CHUNK ? TLS_CHUNK : (int)len;
        ERR_clear_error();
        int n = SSL_write(t->ssl, data, chunk);
        if (n <= 0) {
            fail(cl, t, SSL_get_error(t->ssl, n));
            return -1;
        }
        data += n;
        len -= (size_t)n;
        flush_wbio(cl, t);
    }
    return 0;
}

static int input(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len)
{
    struct tls_client *t = cl->layer[level].state;
    if (t->failed || !len)
        return 0;
    while (len) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int n = BIO_write(t->rbio, raw, chunk);
        if (n <= 0) {
            ERR_clear_error();
            client_close(cl, "out of memory for TLS input");
            return -1;
        }
        raw += n;
        len -= (size_t)n;
    }
    if (!t->established) {
        ERR_clear_error();
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                flush_wbio(cl, t);
                return 0;
            }
            fail(cl, t, e);
            return -1;
        }
        t->established = true;
        flush_wbio(cl, t);
        mq_log(MQ_LOG_INFO, "TLS connection to %s: %s, %s", client_peer(cl),
               SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
        if (t->early_len) {
            int rc = write_plain(cl, t, t->early, t->early_len);
            free(t->early);
            t->early = NULL;
            t->early_len = t->early_cap = 0;
            if (rc)
                return -1;
        }
    }
    char why[256];
    int end = tls_read_plain(cl, t->ssl, level, cl->srv->read_buf, sizeof(cl->srv->read_buf), why,
                             sizeof(why));
    if (end == SSL_ERROR_ZERO_RETURN) {
        SSL_shutdown(t->ssl);
        flush_wbio(cl, t);
        t->failed = true;
        if (!cl->close_reason)
            cl->close_reason = "connection closed by the remote (TLS close_notify)";
        client_request_close(cl);
    } else if (end) {
        fail_why(cl, t, why);
    }
    int rc = end ? -1 : 0;
    if (!t->failed)
        flush_wbio(cl, t);
    ERR_clear_error();
    return rc;
}

static int output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    struct tls_client *t = cl->layer[level].state;
    if (t->failed || cl->closing)
        return 0;
    if (t->established)
        return write_plain(cl, t, data, len);
    /* The bridge's CONNECT goes right after the handshake. */
    if (t->early_len + len > t->early_cap) {
        size_t ncap = t->early_cap ? t->early_cap : 256;
        while (ncap < t->early_len + len)
            ncap *= 2;
        uint8_t *n = realloc(t->early, ncap);
        if (!n) {
            client_close(cl, "out of memory for TLS output");
            return -1;
        }
        t->early = n;
        t->early_cap = ncap;
    }
    memcpy(t->early + t->early_len, data, len);
    t->early_len += len;
    return 0;
}

static void shutdown_layer(struct mq_client *cl, unsigned level)
{
    struct tls_client *t = cl->layer[level].state;
    if (t && !t->failed && t->established && !cl->closing) {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
        ERR_clear_error();
        flush_wbio(cl, t);
        t->failed = true;
    }
    client_layer_shutdown_below(cl, level);
}

const struct mq_transport_ops tls_client_transport = {
    .name = "tls-client",
    .attach = attach,
    .input = input,
    .output = output,
    .shutdown = shutdown_layer,
    .detach = detach,
    .ctx_free = tls_client_ctx_free,
};

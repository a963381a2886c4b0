/* transport_tls.c - TLS for MQTT listeners over OpenSSL memory BIOs.
 *
 * One SSL_CTX per listener (refcounted by OpenSSL: each listening socket and each
 * connection holds a reference), one SSL per connection. Raw socket bytes go into
 * the read BIO; whatever OpenSSL writes (handshake records, application data,
 * alerts) is drained from the write BIO to the layer below (the socket) after every
 * step, so OpenSSL never touches the socket and nothing here blocks; plaintext goes to
 * the layer above (proto, or WebSocket for wss). Owns its cl->layer[].state (struct
 * tls_conn); never closes the socket itself except through client.c.
 * Invariant: plaintext reaches proto only after the handshake (and the client
 * certificate check) has succeeded.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "midge/config.h"
#include "midge/log.h"
#include "midge/proto.h"
#include "tls.h"

/* Largest plaintext handed to SSL_write at once (one TLS record), so the write BIO
 * never holds more than about a record: a 1 MB message does not leave a 1 MB buffer
 * behind in every connection that once sent it. */
#define TLS_CHUNK 16384

/* Bytes of the first flight that mark a plaintext MQTT client: a CONNECT packet. */
#define MQTT_CONNECT_BYTE 0x10
#define TLS_HANDSHAKE_BYTE 0x16

struct tls_conn {
    SSL *ssl;      /* owns both BIOs */
    BIO *rbio;     /* socket -> OpenSSL */
    BIO *wbio;     /* OpenSSL -> socket */
    uint8_t level; /* in the connection's layers */
    bool established;
    bool failed; /* fatal error logged; the close is under way */
    bool got_input;
    uint8_t first_byte; /* of the connection, for the "plain MQTT?" hint */
    /* Plaintext proto wrote before the handshake finished; sent right after it. */
    uint8_t *early;
    size_t early_len, early_cap;
};

/* ---- configuration -------------------------------------------------------------------- */

bool tls_enabled(const struct mq_listener_config *lc)
{
    return lc->certfile || lc->keyfile;
}

static bool verifies_clients(const struct mq_listener_config *lc)
{
    return lc->require_certificate || lc->use_identity_as_username;
}

/* Minimum protocol version for a Mosquitto tls_version name; 0 when unknown. */
static int min_version(const char *name)
{
    if (!name)
        return TLS1_2_VERSION;
    if (!strcmp(name, "tlsv1.3"))
        return TLS1_3_VERSION;
    if (!strcmp(name, "tlsv1.2"))
        return TLS1_2_VERSION;
    if (!strcmp(name, "tlsv1.1"))
        return TLS1_1_VERSION;
    return 0;
}

int tls_check_config(const char *file, const struct mq_listener_config *lc)
{
    int bad = 0;
    unsigned port = lc->port;
    if (lc->certfile && !lc->keyfile) {
        mq_log(MQ_LOG_ERR, "%s: listener %u: certfile is set but keyfile is not (TLS needs both)",
               file, port);
        bad = 1;
    }
    if (lc->keyfile && !lc->certfile) {
        mq_log(MQ_LOG_ERR, "%s: listener %u: keyfile is set but certfile is not (TLS needs both)",
               file, port);
        bad = 1;
    }
    if (!tls_enabled(lc)) {
        /* A TLS option on a listener without a certificate would otherwise mean
         * "serve this in plaintext": refuse it, naming the first such option. */
        const char *opt = lc->cafile                     ? "cafile"
                          : lc->capath                   ? "capath"
                          : lc->crlfile                  ? "crlfile"
                          : lc->tls_version              ? "tls_version"
                          : lc->ciphers                  ? "ciphers"
                          : lc->require_certificate      ? "require_certificate"
                          : lc->use_identity_as_username ? "use_identity_as_username"
                                                         : NULL;
        if (opt) {
            mq_log(MQ_LOG_ERR,
                   "%s: listener %u: %s is set but certfile and keyfile are not; refusing to "
                   "serve this listener unencrypted (add certfile and keyfile, or remove %s)",
                   file, port, opt, opt);
            bad = 1;
        }
        return bad ? -1 : 0;
    }
    if (verifies_clients(lc) && !lc->cafile && !lc->capath) {
        mq_log(MQ_LOG_ERR,
               "%s: listener %u: %s needs cafile or capath (the CA that signs the client "
               "certificates)",
               file, port,
               lc->require_certificate ? "require_certificate true" : "use_identity_as_username");
        bad = 1;
    }
    if (lc->tls_version && !min_version(lc->tls_version)) {
        mq_log(MQ_LOG_ERR,
               "%s: listener %u: tls_version \"%s\" is not known (use tlsv1.2 or tlsv1.3)", file,
               port, lc->tls_version);
        bad = 1;
    }
    if (lc->crlfile && !verifies_clients(lc))
        mq_log(MQ_LOG_WARNING,
               "%s: listener %u: crlfile has no effect without require_certificate true (client "
               "certificates are not asked for)",
               file, port);
    return bad ? -1 : 0;
}

/* The reason of the oldest error in OpenSSL's queue ("key values mismatch"), which is
 * then cleared; "unknown error" when the queue is empty. */
static const char *ssl_reason(char *buf, size_t size, unsigned long *code)
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

/* A regular file we can open: precise "path: strerror" otherwise. */
static bool readable_file(unsigned port, const char *option, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        mq_log(MQ_LOG_ERR, "listener %u: %s %s: %s", port, option, path, strerror(errno));
        return false;
    }
    struct stat st;
    bool regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    fclose(f);
    if (!regular)
        mq_log(MQ_LOG_ERR, "listener %u: %s %s: not a regular file", port, option, path);
    return regular;
}

/* OpenSSL asks for a key's passphrase: there is nobody to ask (a daemon), so refuse
 * instead of reading the terminal, and remember that a passphrase was the problem. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)userdata = true;
    return -1;
}

static bool load_cert_and_key(SSL_CTX *ctx, const struct mq_listener_config *lc)
{
    unsigned port = lc->port;
    char buf[256];
    unsigned long code;
    if (!readable_file(port, "certfile", lc->certfile) ||
        !readable_file(port, "keyfile", lc->keyfile))
        return false;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, lc->certfile) != 1) {
        mq_log(MQ_LOG_ERR, "listener %u: certfile %s holds no usable PEM certificate (OpenSSL: %s)",
               port, lc->certfile, ssl_reason(buf, sizeof(buf), NULL));
        return false;
    }
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (cert && X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
        mq_log(MQ_LOG_WARNING,
               "listener %u: certfile %s has expired: clients that check it will refuse to "
               "connect",
               port, lc->certfile);
    bool asked = false;
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
    int ok = SSL_CTX_use_PrivateKey_file(ctx, lc->keyfile, SSL_FILETYPE_PEM);
    SSL_CTX_set_default_passwd_cb(ctx, NULL);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    if (ok != 1) {
        const char *why = ssl_reason(buf, sizeof(buf), &code);
        int reason = ERR_GET_REASON(code);
        if (asked)
            mq_log(MQ_LOG_ERR,
                   "listener %u: keyfile %s is protected by a passphrase, which midge cannot "
                   "ask for; store the key unencrypted with mode 0600 (openssl pkey -in %s -out "
                   "NEWFILE)",
                   port, lc->keyfile, lc->keyfile);
        else if (reason == X509_R_KEY_VALUES_MISMATCH || reason == X509_R_KEY_TYPE_MISMATCH ||
                 reason == SSL_R_PRIVATE_KEY_MISMATCH)
            mq_log(MQ_LOG_ERR,
                   "listener %u: keyfile %s does not match certfile %s (%s): the key belongs to "
                   "another certificate",
                   port, lc->keyfile, lc->certfile, why);
        else
            mq_log(MQ_LOG_ERR,
                   "listener %u: keyfile %s holds no usable PEM private key (OpenSSL: %s)", port,
                   lc->keyfile, why);
        return false;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        mq_log(MQ_LOG_ERR,
               "listener %u: keyfile %s does not match certfile %s (%s): the key belongs to "
               "another certificate",
               port, lc->keyfile, lc->certfile, ssl_reason(buf, sizeof(buf), NULL));
        return false;
    }
    return true;
}

/* The CA that verifies client certificates, the CRL, and the verification policy. */
static bool load_client_verification(SSL_CTX *ctx, const struct mq_listener_config *lc)
{
    unsigned port = lc->port;
    char buf[256];
    if (lc->cafile) {
        if (!readable_file(port, "cafile", lc->cafile))
            return false;
        ERR_clear_error();
        if (SSL_CTX_load_verify_locations(ctx, lc->cafile, NULL) != 1) {
            mq_log(MQ_LOG_ERR,
                   "listener %u: cafile %s holds no usable PEM CA certificate (OpenSSL: %s)", port,
                   lc->cafile, ssl_reason(buf, sizeof(buf), NULL));
            return false;
        }
    }
    if (lc->capath) {
        struct stat st;
        if (stat(lc->capath, &st) != 0) {
            mq_log(MQ_LOG_ERR, "listener %u: capath %s: %s", port, lc->capath, strerror(errno));
            return false;
        }
        if (!S_ISDIR(st.st_mode)) {
            mq_log(MQ_LOG_ERR,
                   "listener %u: capath %s: not a directory (a single CA file goes in cafile)",
                   port, lc->capath);
            return false;
        }
        ERR_clear_error();
        if (SSL_CTX_load_verify_locations(ctx, NULL, lc->capath) != 1) {
            mq_log(MQ_LOG_ERR, "listener %u: capath %s cannot be used (OpenSSL: %s)", port,
                   lc->capath, ssl_reason(buf, sizeof(buf), NULL));
            return false;
        }
    }
    if (!verifies_clients(lc)) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return true;
    }
    if (lc->crlfile) {
        if (!readable_file(port, "crlfile", lc->crlfile))
            return false;
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
        ERR_clear_error();
        if (!lookup || X509_load_crl_file(lookup, lc->crlfile, X509_FILETYPE_PEM) < 1) {
            mq_log(MQ_LOG_ERR, "listener %u: crlfile %s holds no usable PEM CRL (OpenSSL: %s)",
                   port, lc->crlfile, ssl_reason(buf, sizeof(buf), NULL));
            return false;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    /* Tell clients which CA we accept, so one with several certificates picks right. */
    if (lc->cafile) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(lc->cafile);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    /* use_identity_as_username alone asks for a certificate but lets a client without
     * one finish the handshake: proto then refuses it with CONNACK 5 and says why. */
    int mode = SSL_VERIFY_PEER;
    if (lc->require_certificate)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    return true;
}

void *tls_ctx_new(const struct mq_listener_config *lc)
{
    unsigned port = lc->port;
    char buf[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        mq_log(MQ_LOG_ERR, "listener %u: cannot create a TLS context (%s)", port,
               ssl_reason(buf, sizeof(buf), NULL));
        return NULL;
    }
    int min = min_version(lc->tls_version);
    if (!min || SSL_CTX_set_min_proto_version(ctx, min) != 1) {
        mq_log(MQ_LOG_ERR, "listener %u: tls_version \"%s\" cannot be used", port,
               lc->tls_version ? lc->tls_version : "(default)");
        goto fail;
    }
    /* No renegotiation (a client could make us redo handshakes at will), and the
     * server's cipher order wins. Idle connections give their record buffers back. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Needed for session resumption when client certificates are verified. */
    static const unsigned char sid_ctx[] = "midge";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (lc->ciphers) {
        ERR_clear_error();
        if (SSL_CTX_set_cipher_list(ctx, lc->ciphers) != 1) {
            mq_log(MQ_LOG_ERR,
                   "listener %u: ciphers \"%s\" selects no cipher this OpenSSL knows (%s; see "
                   "openssl ciphers -v)",
                   port, lc->ciphers, ssl_reason(buf, sizeof(buf), NULL));
            goto fail;
        }
    }
    if (!load_cert_and_key(ctx, lc) || !load_client_verification(ctx, lc))
        goto fail;
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

void *tls_ctx_ref(void *ctx)
{
    SSL_CTX_up_ref(ctx);
    return ctx;
}

static void tls_ctx_free(void *ctx)
{
    SSL_CTX_free(ctx); /* drops one reference; connections may still hold theirs */
}

/* ---- connections ---------------------------------------------------------------------- */

/* Hand what OpenSSL has written to the socket's output. */
static void flush_wbio(struct mq_client *cl, struct tls_conn *t)
{
    uint8_t buf[TLS_CHUNK + 1024];
    int n;
    while ((n = BIO_read(t->wbio, buf, (int)sizeof(buf))) > 0)
        client_layer_down(cl, t->level, buf, (size_t)n);
}

/* A fatal TLS error: one log line with the peer and OpenSSL's reason, the alert
 * OpenSSL produced goes out, then the connection closes (after that one write,
 * through client.c's deferred close, so a peer that never reads cannot hold it). */
static void fail(struct mq_client *cl, struct tls_conn *t, int ssl_err)
{
    char buf[256];
    const char *why;
    if (ssl_err == SSL_ERROR_SYSCALL && !ERR_peek_error())
        why = "unexpected end of data";
    else
        why = ssl_reason(buf, sizeof(buf), NULL);
    char extra[192] = "";
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK)
        snprintf(extra, sizeof(extra), " (client certificate: %s)",
                 X509_verify_cert_error_string(vr));
    else if (!t->established && t->first_byte == MQTT_CONNECT_BYTE)
        snprintf(extra, sizeof(extra), " (is the client speaking plain MQTT to a TLS port?)");
    else if (!t->established && t->first_byte != TLS_HANDSHAKE_BYTE)
        snprintf(extra, sizeof(extra), " (the client is not speaking TLS)");
    if (t->established)
        mq_log(MQ_LOG_NOTICE, "TLS error on the connection from %s: %s%s", client_peer(cl), why,
               extra);
    else
        mq_log(MQ_LOG_NOTICE, "TLS handshake with %s failed: %s%s", client_peer(cl), why, extra);
    t->failed = true;
    flush_wbio(cl, t);
    if (!cl->close_reason)
        cl->close_reason = t->established ? "TLS error" : "TLS handshake failed";
    client_request_close(cl);
}

static int attach(struct mq_client *cl, unsigned level, void *listener_ctx)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    SSL *ssl = SSL_new(listener_ctx);
    if (!t || !rbio || !wbio || !ssl) {
        mq_log(MQ_LOG_ERR, "%s: out of memory setting up TLS", client_peer(cl));
        SSL_free(ssl);
        BIO_free(rbio);
        BIO_free(wbio);
        free(t);
        ERR_clear_error();
        return -1;
    }
    /* An empty read BIO means "wait for more", never end of file. */
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_accept_state(ssl);
    t->ssl = ssl;
    t->rbio = rbio;
    t->wbio = wbio;
    t->level = (uint8_t)level;
    cl->layer[level].state = t;
    return 0;
}

static void detach(struct mq_client *cl, unsigned level)
{
    struct tls_conn *t = cl->layer[level].state;
    if (!t)
        return;
    SSL_free(t->ssl); /* and both BIOs; the SSL_CTX reference goes with it */
    free(t->early);
    free(t);
    cl->layer[level].state = NULL;
}

/* Encrypt plaintext into the write BIO a record at a time, flushing as we go. */
static int write_plain(struct mq_client *cl, struct tls_conn *t, const uint8_t *data, size_t len)
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

/* The subject CN of the peer's certificate into buf. Returns NULL, or why there is
 * no usable CN (as a user name it must be non-empty, without control characters). */
static const char *peer_cn(SSL *ssl, char *buf, size_t size)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (!peer)
        return "no client certificate";
    X509_NAME *name = X509_get_subject_name(peer);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0)
        return "the client certificate has no CN";
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    const char *err = NULL;
    if (n <= 0)
        err = "the client certificate's CN is not valid text";
    else if ((size_t)n >= size)
        err = "the client certificate's CN is too long";
    for (int k = 0; !err && k < n; k++)
        if (utf8[k] < 0x20 || utf8[k] == 0x7f)
            err = "the client certificate's CN contains control characters";
    if (!err) {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = '\0';
    }
    OPENSSL_free(utf8);
    ERR_clear_error();
    return err;
}

/* The handshake is done: note who the peer is, hand its identity to proto, and send
 * what proto wrote meanwhile. */
static int established(struct mq_client *cl, struct tls_conn *t)
{
    t->established = true;
    char cn[256];
    const char *no_cn = peer_cn(t->ssl, cn, sizeof(cn));
    const struct mq_listener_config *lc = client_lctx(cl) ? client_lctx(cl)->cfg : NULL;
    bool identity = lc && lc->use_identity_as_username;
    mq_log(MQ_LOG_INFO, "TLS connection from %s: %s, %s%s%s%s", client_peer(cl),
           SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
           no_cn ? "" : ", client certificate CN=", no_cn ? "" : cn,
           identity && !no_cn ? " (its user name)" : "");
    if (identity) {
        if (no_cn)
            mq_log(MQ_LOG_NOTICE,
                   "%s: use_identity_as_username is set but %s: its CONNECT will be refused",
                   client_peer(cl), no_cn);
        else if (cl->conn_open && proto_conn_set_identity(&cl->conn, cn)) {
            mq_log(MQ_LOG_ERR, "%s: out of memory for the TLS identity, closing", client_peer(cl));
            client_close(cl, "out of memory");
            return -1;
        }
    }
    if (t->early_len) {
        int rc = write_plain(cl, t, t->early, t->early_len);
        free(t->early);
        t->early = NULL;
        t->early_len = t->early_cap = 0;
        if (rc)
            return -1;
    }
    return 0;
}

static int input(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t->failed || !len)
        return 0;
    if (!t->got_input) {
        t->got_input = true;
        t->first_byte = raw[0];
    }
    /* All of raw goes into the BIO first: it may be the server's shared read buffer,
     * which the plaintext then reuses. */
    while (len) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int n = BIO_write(t->rbio, raw, chunk);
        if (n <= 0) {
            mq_log(MQ_LOG_ERR, "%s: out of memory for TLS input, closing", client_peer(cl));
            ERR_clear_error();
            client_close(cl, "out of memory");
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
                flush_wbio(cl, t); /* our part of the handshake */
                return 0;
            }
            fail(cl, t, e);
            return -1;
        }
        flush_wbio(cl, t);
        if (established(cl, t))
            return -1;
    }
    /* Decrypt into the shared buffer, filling it before each hand-over to proto. */
    uint8_t *buf = cl->srv->read_buf;
    size_t cap = sizeof(cl->srv->read_buf), have = 0;
    int rc = 0;
    for (;;) {
        if (cl->closing || cl->close_requested)
            break;
        ERR_clear_error();
        int n = SSL_read(t->ssl, buf + have, (int)(cap - have));
        if (n > 0) {
            have += (size_t)n;
            if (have == cap) {
                client_layer_up(cl, level, buf, have);
                have = 0;
            }
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        client_layer_up(cl, level, buf, have); /* what came before the end is still valid */
        have = 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* The peer's close_notify: answer it, then close like a TCP end of file. */
            SSL_shutdown(t->ssl);
            flush_wbio(cl, t);
            t->failed = true;
            if (!cl->close_reason)
                cl->close_reason = "connection closed by peer (TLS close_notify)";
            client_request_close(cl);
        } else {
            fail(cl, t, e);
        }
        rc = -1;
        break;
    }
    if (have)
        client_layer_up(cl, level, buf, have);
    if (!t->failed)
        flush_wbio(cl, t); /* key updates, session tickets */
    ERR_clear_error();
    return rc;
}

static int output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t->failed || cl->closing)
        return 0;
    if (t->established)
        return write_plain(cl, t, data, len);
    /* Rare: proto only speaks after it heard CONNECT, which needs the handshake. */
    if (t->early_len + len > t->early_cap) {
        size_t ncap = t->early_cap ? t->early_cap : 256;
        while (ncap < t->early_len + len)
            ncap *= 2;
        uint8_t *n = realloc(t->early, ncap);
        if (!n) {
            mq_log(MQ_LOG_ERR, "%s: out of memory for TLS output, closing", client_peer(cl));
            client_close(cl, "out of memory");
            return -1;
        }
        t->early = n;
        t->early_cap = ncap;
    }
    memcpy(t->early + t->early_len, data, len);
    t->early_len += len;
    return 0;
}

/* Queue close_notify (best effort) before the broker closes a connection it decided to
 * end; nothing before the handshake completed or after it failed. The layers above
 * have already queued their goodbyes (a WebSocket close frame goes out encrypted). */
static void tls_shutdown(struct mq_client *cl, unsigned level)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t && !t->failed && t->established && !cl->closing) {
        ERR_clear_error();
        SSL_shutdown(t->ssl); /* queues close_notify; we do not wait for the peer's */
        ERR_clear_error();
        flush_wbio(cl, t);
        t->failed = true; /* nothing may follow close_notify */
    }
    client_layer_shutdown_below(cl, level);
}

const struct mq_transport_ops tls_transport = {
    .name = "tls",
    .attach = attach,
    .input = input,
    .output = output,
    .shutdown = tls_shutdown,
    .detach = detach,
    .ctx_free = tls_ctx_free,
};

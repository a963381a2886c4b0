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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "midge/config.h"
#include "midge/log.h"
#include "midge/proto.h"
#include "tls.h"
#include "tls_common.h"
#include "tls_rec.h"

/* Largest plaintext handed to SSL_write at once (one TLS record), so the write BIO
 * never holds more than about a record: a 1 MB message does not leave a 1 MB buffer
 * behind in every connection that once sent it. */
#define TLS_CHUNK 16384

/* TLS handshake time per wake-up of the loop before further handshakes wait for the next
 * one: an RSA-2048 handshake costs the broker about 0.8 ms, so a storm of reconnecting
 * clients gets about one per wake-up while the connected clients' traffic flows between
 * them (bench: scenario TS). */
#define HANDSHAKE_BUDGET_NS 500000
/* What a waiting handshake may send before its turn: a ClientHello, with room to spare. */
#define HANDSHAKE_WAIT_MAX (64 * 1024)

/* The TLS 1.3 suites in the server's order when ciphers_tls1.3 is not set. OpenSSL's
 * default puts AES-256-GCM-SHA384 first; AES-128-GCM-SHA256 first makes the handshake's
 * transcript hash, key schedule and HMACs SHA-256, which x86 (SHA-NI) and ARMv8 compute in
 * hardware where SHA-384 is software: broker CPU per full ECDSA handshake 0.92 x, per
 * resumed one 0.9 x (docs/tls.md). AES-128 is TLS 1.3's mandatory suite; ChaCha20 goes
 * first for a client that asks for it first (SSL_OP_PRIORITIZE_CHACHA: no AES hardware). */
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* Bytes of the first flight that mark a plaintext MQTT client: a CONNECT packet. */
#define MQTT_CONNECT_BYTE 0x10
#define TLS_HANDSHAKE_BYTE 0x16

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
                          : lc->ciphers_tls13            ? "ciphers_tls1.3"
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
               port, lc->certfile, tls_ssl_reason(buf, sizeof(buf), NULL));
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
        const char *why = tls_ssl_reason(buf, sizeof(buf), &code);
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
               port, lc->keyfile, lc->certfile, tls_ssl_reason(buf, sizeof(buf), NULL));
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
                   lc->cafile, tls_ssl_reason(buf, sizeof(buf), NULL));
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
                   lc->capath, tls_ssl_reason(buf, sizeof(buf), NULL));
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
                   port, lc->crlfile, tls_ssl_reason(buf, sizeof(buf), NULL));
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

/* ---- session tickets ------------------------------------------------------------------ */

/* Ticket keys rotate: new tickets are sealed with the current key for TICKET_ROTATE_S
 * seconds, the previous key still opens tickets (which are then renewed), so a ticket
 * resumes for at least TICKET_ROTATE_S and at most twice that (the session timeout).
 * Keys live in memory with their SSL_CTX: a restart or a reload (new certificates, CA or
 * CRL) makes every earlier ticket useless, and the next handshake is a full one. */
#define TICKET_ROTATE_S 3600

struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
    time_t born; /* 0: unused slot */
};

struct ticket_keys {
    struct ticket_key key[2]; /* [cur] seals, the other one still opens */
    unsigned cur;
};

static int ticket_index = -1; /* SSL_CTX ex_data slot, taken once (OpenSSL's own table) */

static void ticket_keys_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (ptr) {
        OPENSSL_cleanse(ptr, sizeof(struct ticket_keys));
        free(ptr);
    }
}

static int ticket_key_fill(struct ticket_key *k, time_t now)
{
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
        return -1;
    k->born = now;
    return 0;
}

static time_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1; /* never 0, which marks an unused slot */
}

/* Handshake threads (tls_pool.c) seal and open tickets too: the keys' rotation and reads
 * are under this lock. AES-256-CBC is fetched once, at the first context (loop thread). */
static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static EVP_CIPHER *ticket_cipher;

/* OpenSSL asks to seal (enc 1) or open (enc 0) a ticket: AES-256-CBC and HMAC-SHA256
 * under our keys. Returns 1 (sealed), 2 (opened: issue a fresh ticket), 0 for a ticket
 * we cannot open (a full handshake follows), -1 on failure. Any thread. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_keys *tk = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_index);
    if (!tk || !ticket_cipher)
        return -1;
    time_t now = mono_s();
    struct ticket_key k; /* a copy, used outside the lock */
    bool found = false;
    int rc = 1;
    pthread_mutex_lock(&ticket_lock);
    if (enc) {
        if (now - tk->key[tk->cur].born >= TICKET_ROTATE_S) {
            unsigned next = tk->cur ^ 1;
            if (ticket_key_fill(&tk->key[next], now) == 0)
                tk->cur = next;
        }
        k = tk->key[tk->cur];
        found = k.born && now - k.born < TICKET_ROTATE_S;
    } else {
        for (unsigned i = 0; i < 2 && !found; i++) {
            const struct ticket_key *c = &tk->key[(tk->cur + i) & 1];
            /* The previous key opens tickets for one more period, then it is retired. */
            if (c->born && !memcmp(c->name, key_name, 16) &&
                (i == 0 || now - c->born < 2 * TICKET_ROTATE_S)) {
                k = *c;
                found = true;
            }
        }
        /* Renew on every resumption: clients use a TLS 1.3 ticket once (RFC 8446, C.4),
         * so a device that reconnects needs a fresh one each time to resume again. */
        rc = 2;
    }
    pthread_mutex_unlock(&ticket_lock);
    if (!found) {
        OPENSSL_cleanse(&k, sizeof(k));
        return enc ? -1 : 0;
    }
    if (enc) {
        if (RAND_bytes(iv, 16) != 1)
            rc = -1;
        memcpy(key_name, k.name, 16);
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (rc > 0 && (EVP_CipherInit_ex(cctx, ticket_cipher, NULL, k.aes, iv, enc) != 1 ||
                   EVP_MAC_CTX_set_params(hctx, params) != 1))
        rc = -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return rc;
}

/* Session resumption by tickets (TLS 1.3 and 1.2) with keys of our own, rotated. */
static bool setup_tickets(SSL_CTX *ctx, unsigned port)
{
    if (ticket_index < 0)
        ticket_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ticket_keys_free);
    /* Fetched once: the getter EVP_aes_256_cbc() would look it up at every ticket. */
    if (!ticket_cipher)
        ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    struct ticket_keys *tk = calloc(1, sizeof(*tk));
    if (ticket_index < 0 || !ticket_cipher || !tk || ticket_key_fill(&tk->key[0], mono_s()) ||
        !SSL_CTX_set_ex_data(ctx, ticket_index, tk)) {
        free(tk);
        mq_log(MQ_LOG_ERR, "listener %u: cannot set up TLS session tickets", port);
        return false;
    }
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_timeout(ctx, 2 * TICKET_ROTATE_S);
    /* One ticket per handshake: an MQTT client keeps one connection, and each ticket
     * costs the broker a seal and the client a few hundred bytes. */
    SSL_CTX_set_num_tickets(ctx, 1);
    return true;
}

static BIO_METHOD *conn_bio_method(void);
static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg);
static void on_keylog(const SSL *ssl, const char *line);

void *tls_ctx_new(const struct mq_listener_config *lc)
{
    unsigned port = lc->port;
    char buf[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        mq_log(MQ_LOG_ERR, "listener %u: cannot create a TLS context (%s)", port,
               tls_ssl_reason(buf, sizeof(buf), NULL));
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
                                 SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION);
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
                   port, lc->ciphers, tls_ssl_reason(buf, sizeof(buf), NULL));
            goto fail;
        }
    }
    const char *suites = lc->ciphers_tls13 ? lc->ciphers_tls13 : TLS13_SUITES;
    ERR_clear_error();
    if (SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
        mq_log(MQ_LOG_ERR,
               "listener %u: ciphers_tls1.3 \"%s\" selects no TLS 1.3 suite this OpenSSL knows "
               "(%s; see openssl ciphers -v -tls1_3)",
               port, suites, tls_ssl_reason(buf, sizeof(buf), NULL));
        goto fail;
    }
    if (!load_cert_and_key(ctx, lc) || !load_client_verification(ctx, lc))
        goto fail;
    if (!conn_bio_method()) {
        mq_log(MQ_LOG_ERR, "listener %u: cannot create a TLS context (out of memory)", port);
        goto fail;
    }
    /* The chain sent to clients, built once here: without one (a certfile holding only its
     * certificate), OpenSSL builds it from the CA store at every handshake, a chain
     * verification per handshake. The same certificates go out as before; a chain that
     * cannot be completed is sent as far as it goes, as OpenSSL did. */
    ERR_clear_error();
    SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR);
    ERR_clear_error();
    if (!setup_tickets(ctx, port))
        goto fail;
    /* What the hand-over to tls_rec needs: the record counts and the traffic secrets. */
    SSL_CTX_set_msg_callback(ctx, on_msg);
    SSL_CTX_set_keylog_callback(ctx, on_keylog);
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

/* ---- connections: OpenSSL's part (the handshake) ------------------------------------- */

/* The connection's BIO: OpenSSL reads the socket bytes input() is handling (t->in) and
 * writes straight into the layer below (the connection's output buffer), so nothing is
 * buffered here: an idle connection holds no BIO buffer (two memory BIOs kept about
 * 2.3 KiB per connection, their largest handshake flight). */
static int bio_write(BIO *b, const char *data, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return len;
    struct tls_hs *hs = t->hs;
    if (hs && hs->on_worker) {
        /* A handshake thread: the connection is the loop thread's; keep it for the
         * step's return (step_done). */
        if ((size_t)len > UINT32_MAX / 2 - hs->step_out_len)
            return -1;
        uint32_t need = hs->step_out_len + (uint32_t)len;
        if (need > hs->step_out_cap) {
            uint32_t cap = hs->step_out_cap ? hs->step_out_cap : 4096;
            while (cap < need)
                cap *= 2;
            uint8_t *n = realloc(hs->step_out, cap);
            if (!n)
                return -1;
            hs->step_out = n;
            hs->step_out_cap = cap;
        }
        memcpy(hs->step_out + hs->step_out_len, data, (size_t)len);
        hs->step_out_len = need;
        return len;
    }
    client_layer_down(t->cl, t->level, (const uint8_t *)data, (size_t)len);
    return len;
}

/* Follow the record framing of what OpenSSL has consumed, so that the hand-over to
 * tls_rec happens only between two records. */
static void track_records(struct tls_hs *hs, const uint8_t *p, size_t n)
{
    while (n) {
        if (hs->body_left) {
            size_t k = n < hs->body_left ? n : hs->body_left;
            hs->body_left -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        hs->hdr[hs->hdr_have++] = *p++;
        n--;
        if (hs->hdr_have == 5) {
            hs->body_left = (uint32_t)hs->hdr[3] << 8 | hs->hdr[4];
            hs->hdr_have = 0;
        }
    }
}

static int bio_read(BIO *b, char *out, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!t->in_len || len <= 0) {
        BIO_set_retry_read(b); /* "wait for more", never end of file */
        return -1;
    }
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
    memcpy(out, t->in, n);
    if (t->hs)
        track_records(t->hs, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *conn_bio_method(void)
{
    /* Made once, on the loop thread, at the first TLS context: immutable afterwards
     * (like OpenSSL's own method tables). */
    static BIO_METHOD *method;
    if (!method && (method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                          "midge connection")) != NULL) {
        BIO_meth_set_write(method, bio_write);
        BIO_meth_set_read(method, bio_read);
        BIO_meth_set_ctrl(method, bio_ctrl);
    }
    return method;
}

/* OpenSSL reports every record header and handshake message it reads or writes: count
 * the records protected with the application traffic keys in each direction (their
 * sequence numbers) and notice a KeyUpdate, which rules the hand-over out. */
static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    (void)version;
    (void)arg;
    struct tls_conn *t = SSL_get_app_data(ssl);
    struct tls_hs *hs = t ? t->hs : NULL;
    if (!hs)
        return;
    if (content_type == SSL3_RT_HEADER) {
        if (write_p && hs->own_finished)
            hs->wseq++;
        else if (!write_p && hs->peer_finished)
            hs->rseq++;
        return;
    }
    if (content_type != SSL3_RT_HANDSHAKE || len < 1)
        return;
    uint8_t type = *(const uint8_t *)buf;
    if (type == SSL3_MT_FINISHED) {
        if (write_p)
            hs->own_finished = true;
        else
            hs->peer_finished = true;
    } else if (type == SSL3_MT_KEY_UPDATE) {
        hs->keep_openssl = true;
    }
}

static int hex_val(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* NSS key log lines are how OpenSSL 3.0 hands out the TLS 1.3 traffic secrets: keep
 * the two application ones (never logged, wiped at the hand-over). */
static void on_keylog(const SSL *ssl, const char *line)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    struct tls_hs *hs = t ? t->hs : NULL;
    if (!hs)
        return;
    uint8_t *secret;
    static const char client[] = "CLIENT_TRAFFIC_SECRET_0 ", server[] = "SERVER_TRAFFIC_SECRET_0 ";
    static const char master[] = "CLIENT_RANDOM "; /* TLS 1.2: the master secret */
    unsigned bit = 1;
    if (!strncmp(line, master, sizeof(master) - 1)) {
        secret = hs->client_secret;
        line += sizeof(master) - 1;
        bit = 4;
    } else if (!strncmp(line, client, sizeof(client) - 1)) {
        secret = hs->client_secret;
        line += sizeof(client) - 1;
    } else if (!strncmp(line, server, sizeof(server) - 1)) {
        secret = hs->server_secret;
        line += sizeof(server) - 1;
    } else {
        return;
    }
    const char *sp = strchr(line, ' '); /* after the client random */
    if (!sp)
        return;
    size_t n = 0;
    for (const char *p = sp + 1; p[0] && p[1] && n < TLS_SECRET_MAX; p += 2) {
        int hi = hex_val(p[0]), lo = hex_val(p[1]);
        if (hi < 0 || lo < 0)
            break;
        secret[n++] = (uint8_t)(hi << 4 | lo);
    }
    hs->secret_len = (uint8_t)n;
    hs->secrets |= bit == 4 ? 4 : secret == hs->client_secret ? 1 : 2;
}

/* A fatal TLS error: one log line with the peer and the reason, the alert OpenSSL (or
 * tls_rec) produced goes out, then the connection closes (after that one write, through
 * client.c's deferred close, so a peer that never reads cannot hold it). */
static void fail_why(struct mq_client *cl, struct tls_conn *t, const char *why)
{
    char extra[192] = "";
    long vr = t->ssl ? SSL_get_verify_result(t->ssl) : X509_V_OK;
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
    if (!cl->close_reason)
        cl->close_reason = t->established ? "TLS error" : "TLS handshake failed";
    client_request_close(cl);
}

static void fail(struct mq_client *cl, struct tls_conn *t, int ssl_err)
{
    char buf[256];
    fail_why(cl, t, tls_fail_reason(ssl_err, buf, sizeof(buf)));
}

static void wait_unlink(struct mq_server *srv, struct tls_conn *t);

/* The handshake bookkeeping is done with: wipe the secrets it held. */
static void hs_free(struct tls_conn *t)
{
    if (!t->hs)
        return;
    if (t->hs->waiting)
        wait_unlink(t->cl->srv, t);
    free(t->hs->wait_buf); /* bytes that came during a step on a handshake thread */
    free(t->hs->step_in);
    free(t->hs->step_out);
    SSL_CTX_free(t->hs->ctx); /* NULL once the SSL was made */
    OPENSSL_cleanse(t->hs, sizeof(*t->hs));
    free(t->hs);
    t->hs = NULL;
}

/* The connection's SSL, made at its first bytes rather than at accept: a storm of
 * connections costs the accept loop no SSL_new, and the budget of tls_handshakes_run (or
 * a handshake thread) covers it. ssl_new: any thread, -1 when out of memory; make_ssl:
 * the loop thread, -1 after closing the connection. */
static int ssl_new(struct tls_conn *t)
{
    BIO *bio = BIO_new(conn_bio_method());
    SSL *ssl = SSL_new(t->hs->ctx);
    if (!bio || !ssl) {
        SSL_free(ssl);
        BIO_free(bio);
        ERR_clear_error();
        return -1;
    }
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio); /* the same BIO both ways: the SSL takes our one reference */
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, t);
    t->ssl = ssl;
    SSL_CTX_free(t->hs->ctx); /* the SSL holds its own reference */
    t->hs->ctx = NULL;
    return 0;
}

static int make_ssl(struct mq_client *cl, struct tls_conn *t)
{
    if (ssl_new(t) == 0)
        return 0;
    mq_log(MQ_LOG_ERR, "%s: out of memory setting up TLS", client_peer(cl));
    client_close(cl, "out of memory");
    return -1;
}

static int attach(struct mq_client *cl, unsigned level, void *listener_ctx)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    struct tls_hs *hs = calloc(1, sizeof(*hs));
    if (!t || !hs) {
        mq_log(MQ_LOG_ERR, "%s: out of memory setting up TLS", client_peer(cl));
        free(hs);
        free(t);
        return -1;
    }
    /* The context the connection was accepted with, even if a reload swaps the
     * listener's before the first bytes come. */
    hs->ctx = tls_ctx_ref(listener_ctx);
    t->hs = hs;
    t->cl = cl;
    t->level = (uint8_t)level;
    cl->layer[level].state = t;
    return 0;
}

/* Everything of a connection's TLS; t->cl may be gone already (an orphaned step). */
static void conn_free(struct tls_conn *t)
{
    SSL_free(t->ssl); /* and its BIO; the SSL_CTX reference goes with it */
    tls_rec_free(t->rec);
    hs_free(t);
    free(t->stage);
    free(t);
}

static void detach(struct mq_client *cl, unsigned level)
{
    struct tls_conn *t = cl->layer[level].state;
    if (!t)
        return;
    cl->layer[level].state = NULL;
    if (t->hs && t->hs->on_worker) {
        if (!tls_pool_cancel(cl->srv->hs_pool, &t->hs->job)) {
            /* A handshake thread has it: step_done frees it when the step is back. */
            t->hs->orphan = true;
            t->cl = NULL;
            return;
        }
        t->hs->on_worker = false;
    }
    conn_free(t);
}

/* Encrypt plaintext a record at a time (OpenSSL until the hand-over, tls_rec after). */
static int write_plain(struct mq_client *cl, struct tls_conn *t, const uint8_t *data, size_t len)
{
    if (t->rec)
        return tls_rec_write(t->rec, cl, data, len);
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
    mq_log(MQ_LOG_INFO, "TLS connection from %s: %s, %s%s%s%s%s", client_peer(cl),
           SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
           SSL_session_reused(t->ssl) ? ", resumed" : "",
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
    int version = SSL_version(t->ssl);
    if (version != TLS1_3_VERSION && version != TLS1_2_VERSION) {
        /* The record layer stays OpenSSL's (see hand_over): no bookkeeping needed. */
        hs_free(t);
    }
    if (t->stage_len)
        client_mark_dirty(cl); /* what proto wrote meanwhile goes at the flush */
    return 0;
}

/* Hand what is staged to OpenSSL (established, OpenSSL's record layer). */
static int flush_stage(struct mq_client *cl, struct tls_conn *t)
{
    if (!t->stage_len || !t->established || !t->ssl || t->failed)
        return 0;
    int rc = write_plain(cl, t, t->stage, t->stage_len);
    free(t->stage); /* an idle connection keeps none */
    t->stage = NULL;
    t->stage_len = t->stage_cap = 0;
    return rc;
}

/* Between two records of an established connection, with nothing buffered in OpenSSL:
 * take its record layer over (tls_rec) and free the SSL object, which is most of what an
 * idle TLS connection costs (about 14 KiB with OpenSSL 3.0: the SSL, its session,
 * certificate and key-exchange state). Connections that cannot be handed over (a TLS 1.2
 * CBC suite, a KeyUpdate already seen, a suite tls_rec lacks) keep OpenSSL's. */
static void hand_over(struct mq_client *cl, struct tls_conn *t)
{
    struct tls_hs *hs = t->hs;
    if (!hs || !t->established || t->failed || cl->closing || cl->close_requested || hs->hdr_have ||
        hs->body_left || SSL_has_pending(t->ssl) || !SSL_is_init_finished(t->ssl))
        return;
    bool v13 = SSL_version(t->ssl) == TLS1_3_VERSION;
    if (!hs->own_finished || !hs->peer_finished ||
        (v13 ? (hs->secrets & 3) != 3 : !(hs->secrets & 4)))
        return;
    /* What proto wrote so far goes out under OpenSSL's sequence numbers first. */
    if (flush_stage(cl, t))
        return;
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
    if (hs->keep_openssl) {
        /* the keys moved on inside OpenSSL: it keeps the record layer */
    } else if (v13) {
        t->rec = tls_rec_new(SSL_CIPHER_get_id(c), hs->client_secret, hs->server_secret,
                             hs->secret_len, hs->rseq, hs->wseq);
    } else if (SSL_CIPHER_is_aead(c) && !SSL_get_current_compression(t->ssl)) {
        uint8_t cr[32], sr[32];
        if (SSL_get_client_random(t->ssl, cr, sizeof(cr)) == sizeof(cr) &&
            SSL_get_server_random(t->ssl, sr, sizeof(sr)) == sizeof(sr))
            /* Under TLS 1.2 the Finished is the first record under the new keys
             * (sequence number 0), itself sent after the ChangeCipherSpec. */
            t->rec = tls_rec_new12(SSL_CIPHER_get_cipher_nid(c), SSL_CIPHER_get_handshake_digest(c),
                                   hs->client_secret, hs->secret_len, cr, sr, hs->rseq + 1,
                                   hs->wseq + 1);
    }
    hs_free(t);
    ERR_clear_error();
    if (!t->rec)
        return; /* OpenSSL keeps the connection */
    SSL_free(t->ssl);
    t->ssl = NULL;
}

/* The peer's close_notify: answer it, then close like a TCP end of file. */
static void peer_closed(struct mq_client *cl, struct tls_conn *t)
{
    if (t->ssl) {
        SSL_shutdown(t->ssl);
        ERR_clear_error();
    } else {
        tls_rec_alert(t->rec, cl, TLS_ALERT_WARNING, TLS_ALERT_CLOSE_NOTIFY);
    }
    t->failed = true;
    if (!cl->close_reason)
        cl->close_reason = "connection closed by peer (TLS close_notify)";
    client_request_close(cl);
}

/* Input after the hand-over: tls_rec decrypts in place; what it cannot take is an error
 * it has already answered with an alert. */
static int rec_input(struct mq_client *cl, struct tls_conn *t, unsigned level, uint8_t *raw,
                     size_t len)
{
    const char *why = NULL;
    int rc = tls_rec_input(t->rec, cl, level, raw, len, &why);
    if (rc == TLS_REC_CLOSE_NOTIFY) {
        peer_closed(cl, t);
        return -1;
    }
    if (rc < 0) {
        fail_why(cl, t, why ? why : "record error");
        return -1;
    }
    return 0;
}

/* The handshake input step: raw to OpenSSL, then the plaintext that follows it. */
static int feed(struct mq_client *cl, struct tls_conn *t, unsigned level, uint8_t *raw, size_t len);
static struct tls_pool *pool_get(struct mq_server *srv);
static int submit_step(struct mq_client *cl, struct tls_conn *t, struct tls_pool *pool,
                       const uint8_t *raw, size_t len);
static int busy_add(struct mq_client *cl, struct tls_conn *t, const uint8_t *raw, size_t len);
static void credit_queued(struct tls_job *job, void *arg);

/* Take t out of the server's queue of waiting handshakes. */
static void wait_unlink(struct mq_server *srv, struct tls_conn *t)
{
    struct tls_hs *hs = t->hs;
    unsigned q = hs->wait_queue;
    if (hs->wait_prev)
        hs->wait_prev->hs->wait_next = hs->wait_next;
    else
        srv->hs_wait_head[q] = hs->wait_next;
    if (hs->wait_next)
        hs->wait_next->hs->wait_prev = hs->wait_prev;
    else
        srv->hs_wait_tail[q] = hs->wait_prev;
    hs->wait_next = hs->wait_prev = NULL;
    hs->waiting = false;
    free(hs->wait_buf);
    hs->wait_buf = NULL;
    hs->wait_len = 0;
}

/* Append raw to the bytes that wait in wait_buf (the caller checked the limit). */
static int wait_buf_append(struct mq_client *cl, struct tls_hs *hs, const uint8_t *raw, size_t len)
{
    uint8_t *b = realloc(hs->wait_buf, hs->wait_len + len);
    if (!b) {
        client_close(cl, "out of memory");
        return -1;
    }
    memcpy(b + hs->wait_len, raw, len);
    hs->wait_buf = b;
    hs->wait_len += (uint32_t)len;
    return 0;
}

/* Keep a handshake's bytes until a later wake-up (tls_handshakes_run), at the end of
 * queue q (HS_CONTINUING or HS_NEW), or after what already waits. */
static int wait_add(struct mq_client *cl, struct tls_conn *t, const uint8_t *raw, size_t len,
                    unsigned q)
{
    struct tls_hs *hs = t->hs;
    if (len > HANDSHAKE_WAIT_MAX - hs->wait_len) {
        fail_why(cl, t, "handshake flight too large");
        return -1;
    }
    if (wait_buf_append(cl, hs, raw, len))
        return -1;
    if (!hs->waiting) {
        struct mq_server *srv = cl->srv;
        hs->waiting = true;
        hs->wait_queue = (uint8_t)q;
        hs->wait_since_ms = uv_now(&srv->loop);
        hs->wait_prev = srv->hs_wait_tail[q];
        if (srv->hs_wait_tail[q])
            srv->hs_wait_tail[q]->hs->wait_next = t;
        else
            srv->hs_wait_head[q] = t;
        srv->hs_wait_tail[q] = t;
    }
    return 0;
}

/* connect_timeout is for the client to send its CONNECT, not for the time its handshake
 * waited its turn here: proto's deadline (conn.last_rx_ms, the time the connection was
 * made until CONNECT) moves on by the time t has waited since it last did. */
static void wait_credit(struct tls_conn *t, uint64_t now)
{
    struct mq_client *cl = t->cl;
    if (cl->conn_open && !cl->conn.connected)
        cl->conn.last_rx_ms += (uint32_t)(now - t->hs->wait_since_ms);
    t->hs->wait_since_ms = now;
}

void tls_handshakes_run(struct mq_server *srv)
{
    uint64_t now = uv_now(&srv->loop);
    /* Twice a second, every waiting handshake is credited, before proto's once-a-second
     * check of connect_timeout could count a long wait against it. */
    if (now - srv->hs_credit_ms >= 500) {
        srv->hs_credit_ms = now;
        for (unsigned q = HS_CONTINUING; q <= HS_NEW; q++)
            for (struct tls_conn *t = srv->hs_wait_head[q]; t; t = t->hs->wait_next)
                wait_credit(t, now);
        if (srv->hs_pool)
            tls_pool_each_queued(srv->hs_pool, credit_queued, &now);
    }
    /* Handshakes under way first: their steps are cheap, and finishing them is what
     * lets their clients in (and their connect_timeout stop running). */
    for (unsigned q = HS_CONTINUING; q <= HS_NEW; q++) {
        while (srv->hs_wait_head[q] && srv->handshake_ns < HANDSHAKE_BUDGET_NS) {
            struct tls_conn *t = srv->hs_wait_head[q];
            struct mq_client *cl = t->cl;
            uint8_t *data = t->hs->wait_buf;
            size_t len = t->hs->wait_len;
            wait_credit(t, now);
            t->hs->wait_buf = NULL; /* ours now */
            wait_unlink(srv, t);
            if (!cl->closing && !cl->close_requested && !t->failed)
                feed(cl, t, 0, data, len);
            free(data);
        }
    }
}

static int input(struct mq_client *cl, unsigned level, uint8_t *raw, size_t len)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t->failed || !len)
        return 0;
    if (t->rec)
        return rec_input(cl, t, level, raw, len);
    if (t->hs && t->hs->on_worker)
        return busy_add(cl, t, raw, len);
    if (t->hs && t->hs->waiting)
        return wait_add(cl, t, raw, len, t->hs->wait_queue);
    if (!t->got_input) {
        t->got_input = true;
        t->first_byte = raw[0];
    }
    /* A handshake step (the ClientHello's, with the server's signature, is most of a
     * handshake's cost) waits behind those already waiting once this wake-up's budget
     * is spent: a wake-up runs the budget's worth, handshakes under way first, then new
     * ones, each oldest first. */
    if (!t->established && t->hs) {
        struct mq_server *srv = cl->srv;
        struct tls_pool *pool = pool_get(srv);
        if (pool)
            return submit_step(cl, t, pool, raw, len);
        unsigned q = t->ssl ? HS_CONTINUING : HS_NEW;
        if (srv->handshake_ns >= HANDSHAKE_BUDGET_NS || srv->hs_wait_head[HS_CONTINUING] ||
            (q == HS_NEW && srv->hs_wait_head[HS_NEW]))
            return wait_add(cl, t, raw, len, q);
    }
    return feed(cl, t, level, raw, len);
}

/* After the handshake: decrypt what OpenSSL can read of t->in into the shared plaintext
 * buffer, filling it before each hand-over up; then take the record layer over if the
 * connection is between two records. */
static int read_plain(struct mq_client *cl, struct tls_conn *t, unsigned level)
{
    char why[256];
    int end = tls_read_plain(cl, t->ssl, level, cl->srv->tls_plain_buf,
                             sizeof(cl->srv->tls_plain_buf), why, sizeof(why));
    if (end == SSL_ERROR_ZERO_RETURN)
        peer_closed(cl, t);
    else if (end)
        fail_why(cl, t, why);
    t->in_len = 0; /* what is left of raw (after a close) is dropped */
    ERR_clear_error();
    if (!end && t->ssl)
        hand_over(cl, t);
    return end ? -1 : 0;
}

/* What a handshake step's result (r from SSL_do_handshake, e from SSL_get_error, why
 * for a failure) means for the connection, on the loop thread: wait for more, fail, or
 * established, then the plaintext that followed in t->in. */
static int after_step(struct mq_client *cl, struct tls_conn *t, unsigned level, int r, int e,
                      const char *why)
{
    if (r != 1) {
        t->in_len = 0;
        if (e == SSL_ERROR_WANT_READ)
            return 0; /* our part of the handshake went out through the BIO */
        fail_why(cl, t, why);
        return -1;
    }
    if (established(cl, t)) {
        t->in_len = 0;
        return -1;
    }
    return read_plain(cl, t, level);
}

static int feed(struct mq_client *cl, struct tls_conn *t, unsigned level, uint8_t *raw, size_t len)
{
    /* OpenSSL reads raw through the BIO as it needs it (raw may be the server's shared
     * read buffer); the plaintext goes to a buffer of its own, since a record begun in an
     * earlier read can yield more plaintext than the ciphertext it takes from raw. */
    if (!t->ssl && make_ssl(cl, t))
        return -1;
    t->in = raw;
    t->in_len = len;
    if (t->established)
        return read_plain(cl, t, level);
    ERR_clear_error();
    uint64_t t0 = uv_hrtime();
    int r = SSL_do_handshake(t->ssl);
    cl->srv->handshake_ns += uv_hrtime() - t0;
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    char buf[256];
    const char *why =
        r == 1 || e == SSL_ERROR_WANT_READ ? NULL : tls_fail_reason(e, buf, sizeof(buf));
    return after_step(cl, t, level, r, e, why);
}

/* ---- handshake steps on the handshake threads (tls_pool.c) ---------------------------- */

/* On a handshake thread: one SSL_do_handshake over step_in. The connection BIO writes to
 * step_out; the callbacks (on_msg, on_keylog, ticket_cb) run here too. */
static void run_step(struct tls_job *job)
{
    struct tls_hs *hs = (struct tls_hs *)((char *)job - offsetof(struct tls_hs, job));
    struct tls_conn *t = hs->owner;
    if (!t->ssl && ssl_new(t)) {
        hs->step_r = -1;
        hs->step_err = SSL_ERROR_SSL;
        snprintf(hs->step_why, sizeof(hs->step_why), "out of memory");
        return;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    hs->step_r = r;
    hs->step_err = e;
    hs->step_why[0] = '\0';
    if (r != 1 && e != SSL_ERROR_WANT_READ) {
        char buf[sizeof(hs->step_why)];
        /* Taken here: OpenSSL's error queue is this thread's. */
        const char *why = tls_fail_reason(e, buf, sizeof(buf));
        size_t n = strnlen(why, sizeof(hs->step_why) - 1);
        memcpy(hs->step_why, why, n);
        hs->step_why[n] = '\0';
    }
    ERR_clear_error();
}

/* Back on the loop thread: send what OpenSSL wrote, act on the result, then take the
 * bytes that arrived meanwhile. */
static void step_done(struct tls_job *job)
{
    struct tls_hs *hs = (struct tls_hs *)((char *)job - offsetof(struct tls_hs, job));
    struct tls_conn *t = hs->owner;
    hs->on_worker = false;
    if (hs->orphan) {
        conn_free(t);
        return;
    }
    struct mq_client *cl = t->cl;
    wait_credit(t, uv_now(&cl->srv->loop));
    if (hs->step_out_len && !cl->closing)
        client_layer_down(cl, t->level, hs->step_out, hs->step_out_len);
    free(hs->step_out);
    hs->step_out = NULL;
    hs->step_out_len = hs->step_out_cap = 0;
    uint8_t *in = hs->step_in, *more = hs->wait_buf;
    size_t more_len = hs->wait_len;
    hs->step_in = hs->wait_buf = NULL;
    hs->wait_len = 0;
    int rc = -1;
    if (cl->closing || cl->close_requested || t->failed)
        t->in_len = 0;
    else
        rc = after_step(cl, t, t->level, hs->step_r, hs->step_err, hs->step_why);
    free(in);
    if (!rc && more_len)
        input(cl, t->level, more, more_len);
    free(more);
}

/* The server's handshake threads, started at the first handshake; NULL: handshakes run
 * on the loop thread (tls_handshake_threads 0, or the threads could not be started). */
static struct tls_pool *pool_get(struct mq_server *srv)
{
    if (srv->hs_pool || srv->hs_pool_off)
        return srv->hs_pool;
    uint32_t n = srv->cfg->tls_handshake_threads;
    if (n)
        srv->hs_pool = tls_pool_new(&srv->loop, n, run_step, step_done);
    if (srv->hs_pool)
        mq_log(MQ_LOG_INFO, "TLS handshakes run on %u thread%s of idle priority", n,
               n == 1 ? "" : "s");
    else
        srv->hs_pool_off = true;
    return srv->hs_pool;
}

/* Hand a handshake step (raw: its socket bytes) to the handshake threads. */
static int submit_step(struct mq_client *cl, struct tls_conn *t, struct tls_pool *pool,
                       const uint8_t *raw, size_t len)
{
    struct tls_hs *hs = t->hs;
    uint8_t *in = malloc(len); /* the SSL is made on the handshake thread (ssl_new) */
    if (!in) {
        client_close(cl, "out of memory");
        return -1;
    }
    memcpy(in, raw, len);
    hs->step_in = in;
    t->in = in;
    t->in_len = len;
    hs->owner = t;
    hs->on_worker = true;
    hs->wait_since_ms = uv_now(&cl->srv->loop);
    tls_pool_submit(pool, &hs->job, t->ssl ? 0 : 1); /* under way first */
    return 0;
}

/* Bytes of a connection whose step is on a handshake thread: they wait in wait_buf. */
static int busy_add(struct mq_client *cl, struct tls_conn *t, const uint8_t *raw, size_t len)
{
    struct tls_hs *hs = t->hs;
    if (len > HANDSHAKE_WAIT_MAX - hs->wait_len) {
        /* Not fail_why: the SSL is the handshake thread's now. */
        mq_log(MQ_LOG_NOTICE, "TLS handshake with %s failed: handshake flight too large",
               client_peer(cl));
        t->failed = true;
        if (!cl->close_reason)
            cl->close_reason = "TLS handshake failed";
        client_request_close(cl);
        return -1;
    }
    return wait_buf_append(cl, hs, raw, len);
}

static void credit_queued(struct tls_job *job, void *arg)
{
    struct tls_hs *hs = (struct tls_hs *)((char *)job - offsetof(struct tls_hs, job));
    wait_credit(hs->owner, *(uint64_t *)arg);
}

void tls_server_stop(struct mq_server *srv)
{
    tls_pool_free(srv->hs_pool);
    srv->hs_pool = NULL;
    srv->hs_pool_off = true;
}

static int output(struct mq_client *cl, unsigned level, const uint8_t *data, size_t len)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t->failed || cl->closing)
        return 0;
    if (t->rec)
        return tls_rec_write(t->rec, cl, data, len); /* filled in place, sealed at the flush */
    /* OpenSSL's record layer (the handshake, TLS 1.2): staged, and written with SSL_write
     * at the flush (tls_flush), so a loop turn's packets share records there too. Before
     * the handshake is done this is rare: proto speaks after CONNECT. */
    if (t->stage_len >= TLS_CHUNK && t->established && flush_stage(cl, t))
        return -1;
    if (len > (1u << 30) - t->stage_len) {
        client_close(cl, "too much output before the TLS handshake");
        return -1;
    }
    if (t->stage_len + len > t->stage_cap) {
        size_t ncap = t->stage_cap ? t->stage_cap : 256;
        while (ncap < t->stage_len + len)
            ncap *= 2;
        uint8_t *n = realloc(t->stage, ncap);
        if (!n) {
            mq_log(MQ_LOG_ERR, "%s: out of memory for TLS output, closing", client_peer(cl));
            client_close(cl, "out of memory");
            return -1;
        }
        t->stage = n;
        t->stage_cap = (uint32_t)ncap;
    }
    memcpy(t->stage + t->stage_len, data, len);
    t->stage_len += (uint32_t)len;
    client_mark_dirty(cl);
    return 0;
}

/* proto's packets, each in pieces (MQTT over TLS: TLS is the top layer), into the record
 * being filled in one step; OpenSSL's record layer takes them piece by piece. */
static int outputv(struct mq_client *cl, unsigned level, const struct mq_iov *iov, size_t n)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t->failed || cl->closing)
        return 0;
    if (t->rec)
        return tls_rec_writev(t->rec, cl, iov, n);
    for (size_t i = 0; i < n; i++)
        if (iov[i].len && output(cl, level, iov[i].base, iov[i].len))
            return -1;
    return 0;
}

/* Queue close_notify (best effort) before the broker closes a connection it decided to
 * end; nothing before the handshake completed or after it failed. The layers above
 * have already queued their goodbyes (a WebSocket close frame goes out encrypted). */
static void tls_shutdown(struct mq_client *cl, unsigned level)
{
    struct tls_conn *t = cl->layer[level].state;
    if (t && !t->failed && t->established && !cl->closing) {
        if (t->ssl) {
            if (flush_stage(cl, t))
                return;
            ERR_clear_error();
            SSL_shutdown(t->ssl); /* queues close_notify; we do not wait for the peer's */
            ERR_clear_error();
        } else {
            tls_rec_alert(t->rec, cl, TLS_ALERT_WARNING, TLS_ALERT_CLOSE_NOTIFY);
        }
        t->failed = true; /* nothing may follow close_notify */
    }
    client_layer_shutdown_below(cl, level);
}

/* Seal the record being filled (or hand the staged plaintext to OpenSSL) before the
 * output buffer is written. */
static int tls_flush(struct mq_client *cl, unsigned level)
{
    struct tls_conn *t = cl->layer[level].state;
    if (!t)
        return 0;
    return t->rec ? tls_rec_flush(t->rec, cl) : flush_stage(cl, t);
}

const struct mq_transport_ops tls_transport = {
    .name = "tls",
    .attach = attach,
    .input = input,
    .output = output,
    .outputv = outputv,
    .shutdown = tls_shutdown,
    .flush = tls_flush,
    .detach = detach,
    .ctx_free = tls_ctx_free,
};

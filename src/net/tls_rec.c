/* tls_rec.c - the TLS 1.3 record layer of an established connection (RFC 8446, 5).
 *
 * OpenSSL runs the handshake; transport_tls.c then hands the application traffic secrets
 * and the sequence numbers reached to tls_rec_new and frees the SSL object, which with
 * its session and key-exchange state was most of an idle TLS connection's memory. What
 * is left per connection is this struct and one AEAD context per direction (OpenSSL's
 * EVP, so the ciphers are OpenSSL's own). Owns its keys (wiped when freed) and at most
 * one incomplete incoming record; never touches the socket (client_layer_up/down).
 * Invariants: plaintext is delivered only from a record whose tag verified; sequence
 * numbers advance once per record each way; nothing is sealed after a fatal alert.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/tls1.h>

#include "midge/log.h"
#include "net.h"
#include "tls.h"
#include "tls_rec.h"

#define REC_HEADER 5
#define REC_TAG 16
#define REC_IV 12
#define REC_MAX_PLAIN 16384
/* RFC 8446, 5.2: TLSCiphertext.length may exceed the plaintext limit by 256. */
#define REC_MAX_CIPHER (REC_MAX_PLAIN + 256)
#define HS_KEY_UPDATE 24
/* open_record: a control record, handled (never TLS_REC_CLOSE_NOTIFY's value). */
#define REC_HANDLED 1

enum suite { SUITE_AES_128_GCM, SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305 };

struct tls_dir {
    EVP_CIPHER_CTX *ctx; /* keyed; the nonce is set per record */
    uint64_t seq;
    uint8_t iv[REC_IV];
    uint8_t secret[TLS_SECRET_MAX]; /* for KeyUpdate */
};

struct tls_rec {
    struct tls_dir r, w;
    uint8_t *part; /* an incomplete incoming record (header first); NULL when none */
    uint32_t part_len, part_cap;
    /* The record being filled in place at the end of the connection's output buffer:
     * its header, then open_len bytes of plaintext (tls_rec_flush seals it). */
    uint16_t open_len;
    bool open;
    uint8_t suite, secret_len, key_len;
};

static const EVP_CIPHER *suite_cipher(uint8_t suite)
{
    return suite == SUITE_AES_128_GCM   ? EVP_aes_128_gcm()
           : suite == SUITE_AES_256_GCM ? EVP_aes_256_gcm()
                                        : EVP_chacha20_poly1305();
}

static const EVP_MD *suite_md(uint8_t suite)
{
    return suite == SUITE_AES_256_GCM ? EVP_sha384() : EVP_sha256();
}

/* HKDF-Expand-Label(secret, label, "", olen) (RFC 8446, 7.1); olen is at most the hash
 * length, so HKDF-Expand is a single HMAC block. */
static int expand_label(const struct tls_rec *r, const uint8_t *secret, const char *label,
                        uint8_t *out, size_t olen)
{
    uint8_t info[2 + 1 + 6 + 16 + 1 + 1], md[EVP_MAX_MD_SIZE];
    size_t llen = strlen(label), n = 0;
    unsigned mdlen = 0;
    info[n++] = (uint8_t)(olen >> 8);
    info[n++] = (uint8_t)olen;
    info[n++] = (uint8_t)(6 + llen);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, llen);
    n += llen;
    info[n++] = 0; /* empty context */
    info[n++] = 1; /* HKDF-Expand's block counter */
    if (!HMAC(suite_md(r->suite), secret, r->secret_len, info, n, md, &mdlen) || mdlen < olen)
        return -1;
    memcpy(out, md, olen);
    OPENSSL_cleanse(md, sizeof(md));
    return 0;
}

/* Key and IV of one direction from its traffic secret; the sequence number restarts. */
static int set_keys(struct tls_rec *r, struct tls_dir *d, int enc)
{
    uint8_t key[32];
    int rc = -1;
    if (expand_label(r, d->secret, "key", key, r->key_len) ||
        expand_label(r, d->secret, "iv", d->iv, REC_IV))
        goto out;
    if (!d->ctx && !(d->ctx = EVP_CIPHER_CTX_new()))
        goto out;
    if (EVP_CipherInit_ex(d->ctx, suite_cipher(r->suite), NULL, key, NULL, enc) != 1)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

struct tls_rec *tls_rec_new(uint32_t cipher_id, const uint8_t *client_secret,
                            const uint8_t *server_secret, size_t secret_len, uint64_t rseq,
                            uint64_t wseq)
{
    uint8_t suite, want_len;
    switch (cipher_id) {
    case TLS1_3_CK_AES_128_GCM_SHA256: suite = SUITE_AES_128_GCM, want_len = 32; break;
    case TLS1_3_CK_AES_256_GCM_SHA384: suite = SUITE_AES_256_GCM, want_len = 48; break;
    case TLS1_3_CK_CHACHA20_POLY1305_SHA256: suite = SUITE_CHACHA20_POLY1305, want_len = 32; break;
    default: return NULL; /* CCM suites stay with OpenSSL */
    }
    if (secret_len != want_len)
        return NULL;
    struct tls_rec *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->suite = suite;
    r->secret_len = want_len;
    r->key_len = suite == SUITE_AES_128_GCM ? 16 : 32;
    memcpy(r->r.secret, client_secret, secret_len); /* we read what the client writes */
    memcpy(r->w.secret, server_secret, secret_len);
    if (set_keys(r, &r->r, 0) || set_keys(r, &r->w, 1)) {
        tls_rec_free(r);
        return NULL;
    }
    r->r.seq = rseq;
    r->w.seq = wseq;
    return r;
}

void tls_rec_free(struct tls_rec *r)
{
    if (!r)
        return;
    EVP_CIPHER_CTX_free(r->r.ctx);
    EVP_CIPHER_CTX_free(r->w.ctx);
    free(r->part);
    OPENSSL_cleanse(r, sizeof(*r));
    free(r);
}

/* The per-record nonce: the IV with the sequence number XORed into its last 8 bytes. */
static void nonce(const struct tls_dir *d, uint8_t out[REC_IV])
{
    memcpy(out, d->iv, REC_IV);
    for (int i = 0; i < 8; i++)
        out[REC_IV - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* Seal in place the record at rec: room for its header, n (<= REC_MAX_PLAIN) bytes of
 * plaintext, then room for the content type and the tag. Returns 0, or -1 on a cipher
 * failure. */
static int seal(struct tls_rec *r, uint8_t *rec, size_t n, uint8_t type)
{
    size_t clen = n + 1 + REC_TAG;
    uint8_t iv[REC_IV];
    uint8_t *body = rec + REC_HEADER;
    int l;
    rec[0] = TLS_CT_APPLICATION_DATA; /* the outer type of every protected record */
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (uint8_t)(clen >> 8);
    rec[4] = (uint8_t)clen;
    body[n] = type;
    nonce(&r->w, iv);
    EVP_CIPHER_CTX *c = r->w.ctx;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1 ||
        EVP_EncryptUpdate(c, NULL, &l, rec, REC_HEADER) != 1 ||
        EVP_EncryptUpdate(c, body, &l, body, (int)n + 1) != 1 ||
        EVP_EncryptFinal_ex(c, body + n + 1, &l) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, REC_TAG, body + n + 1) != 1)
        return -1;
    r->w.seq++;
    return 0;
}

static int seal_failed(struct mq_client *cl)
{
    mq_log(MQ_LOG_ERR, "%s: TLS encryption failed, closing", client_peer(cl));
    client_close(cl, "TLS error");
    return -1;
}

int tls_rec_flush(struct tls_rec *r, struct mq_client *cl)
{
    if (!r->open)
        return 0;
    r->open = false;
    uint8_t *tail = client_out_append(cl, 1 + REC_TAG);
    if (!tail)
        return -1;
    if (seal(r, tail - r->open_len - REC_HEADER, r->open_len, TLS_CT_APPLICATION_DATA))
        return seal_failed(cl);
    return 0;
}

int tls_rec_write(struct tls_rec *r, struct mq_client *cl, const uint8_t *data, size_t len)
{
    while (len) {
        if (!r->open) {
            if (!client_out_append(cl, REC_HEADER))
                return -1;
            r->open = true;
            r->open_len = 0;
        }
        size_t n = REC_MAX_PLAIN - r->open_len;
        if (n > len)
            n = len;
        uint8_t *p = client_out_append(cl, n);
        if (!p)
            return -1;
        memcpy(p, data, n);
        r->open_len = (uint16_t)(r->open_len + n);
        data += n;
        len -= n;
        if (r->open_len == REC_MAX_PLAIN && tls_rec_flush(r, cl))
            return -1;
    }
    return 0;
}

int tls_rec_send(struct tls_rec *r, struct mq_client *cl, uint8_t type, const uint8_t *data,
                 size_t len)
{
    if (tls_rec_flush(r, cl)) /* what was staged goes first */
        return -1;
    while (len) {
        size_t n = len > REC_MAX_PLAIN ? REC_MAX_PLAIN : len;
        uint8_t *rec = client_out_append(cl, REC_HEADER + n + 1 + REC_TAG);
        if (!rec)
            return -1;
        memcpy(rec + REC_HEADER, data, n);
        if (seal(r, rec, n, type))
            return seal_failed(cl);
        data += n;
        len -= n;
    }
    return 0;
}

void tls_rec_alert(struct tls_rec *r, struct mq_client *cl, uint8_t alert_level, uint8_t desc)
{
    uint8_t alert[2] = {alert_level, desc};
    tls_rec_send(r, cl, TLS_CT_ALERT, alert, sizeof(alert));
}

/* A fatal error of ours: the alert goes out, then the caller closes. */
static int fatal(struct tls_rec *r, struct mq_client *cl, uint8_t desc, const char *sentence,
                 const char **why)
{
    tls_rec_alert(r, cl, TLS_ALERT_FATAL, desc);
    *why = sentence;
    return -1;
}

/* The length of the record whose header is h, or -1 after a fatal alert. */
static long check_header(struct tls_rec *r, struct mq_client *cl, const uint8_t *h,
                         const char **why)
{
    /* After the handshake every record is protected, under the outer type 23. */
    if (h[0] != TLS_CT_APPLICATION_DATA)
        return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected record", why);
    long clen = (long)h[3] << 8 | h[4];
    if (clen > REC_MAX_CIPHER)
        return fatal(r, cl, TLS_ALERT_RECORD_OVERFLOW, "record overflow", why);
    if (clen < 1 + REC_TAG)
        return fatal(r, cl, TLS_ALERT_BAD_RECORD_MAC, "decryption failed or bad record mac", why);
    return clen;
}

/* A KeyUpdate (RFC 8446, 4.6.3): the client's keys move on; if it asks, ours too, after
 * telling it under the old ones. */
static int key_update(struct tls_rec *r, struct mq_client *cl, uint8_t request, const char **why)
{
    if (expand_label(r, r->r.secret, "traffic upd", r->r.secret, r->secret_len) ||
        set_keys(r, &r->r, 0))
        return fatal(r, cl, TLS_ALERT_INTERNAL_ERROR, "key update failed", why);
    r->r.seq = 0;
    if (!request)
        return 0;
    static const uint8_t answer[5] = {HS_KEY_UPDATE, 0, 0, 1, 0}; /* update_not_requested */
    if (tls_rec_send(r, cl, TLS_CT_HANDSHAKE, answer, sizeof(answer)))
        return -1;
    if (expand_label(r, r->w.secret, "traffic upd", r->w.secret, r->secret_len) ||
        set_keys(r, &r->w, 1))
        return fatal(r, cl, TLS_ALERT_INTERNAL_ERROR, "key update failed", why);
    r->w.seq = 0;
    return 0;
}

/* Open the whole record rec (header + clen bytes) in place. Returns 0 with application
 * data at rec + REC_HEADER (*plen bytes), REC_HANDLED for a record handled here (KeyUpdate),
 * TLS_REC_CLOSE_NOTIFY, or -1 with *why after a fatal alert (or the peer's own). */
static int open_record(struct tls_rec *r, struct mq_client *cl, uint8_t *rec, size_t clen,
                       size_t *plen, const char **why)
{
    uint8_t iv[REC_IV];
    uint8_t *body = rec + REC_HEADER;
    size_t n = clen - REC_TAG;
    int l;
    nonce(&r->r, iv);
    EVP_CIPHER_CTX *c = r->r.ctx;
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) != 1 ||
        EVP_DecryptUpdate(c, NULL, &l, rec, REC_HEADER) != 1 ||
        EVP_DecryptUpdate(c, body, &l, body, (int)n) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, REC_TAG, body + n) != 1 ||
        EVP_DecryptFinal_ex(c, body + n, &l) != 1)
        return fatal(r, cl, TLS_ALERT_BAD_RECORD_MAC, "decryption failed or bad record mac", why);
    r->r.seq++;
    /* TLSInnerPlaintext: content, the real type, then zero padding. */
    while (n && !body[n - 1])
        n--;
    if (!n)
        return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "record without a content type", why);
    uint8_t type = body[--n];
    if (n > REC_MAX_PLAIN)
        return fatal(r, cl, TLS_ALERT_RECORD_OVERFLOW, "record overflow", why);
    switch (type) {
    case TLS_CT_APPLICATION_DATA: *plen = n; return 0;
    case TLS_CT_ALERT:
        if (n != 2)
            return fatal(r, cl, TLS_ALERT_DECODE_ERROR, "bad alert record", why);
        if (body[1] == TLS_ALERT_CLOSE_NOTIFY)
            return TLS_REC_CLOSE_NOTIFY;
        if (body[1] == 90) /* user_canceled: close_notify follows */
            return REC_HANDLED;
        *why = "the client sent a fatal alert"; /* answered by closing, not by an alert */
        mq_log(MQ_LOG_INFO, "%s: TLS alert %u from the client", client_peer(cl), body[1]);
        return -1;
    case TLS_CT_HANDSHAKE:
        /* After the handshake a client may only send KeyUpdate (no post-handshake
         * authentication is asked for), whole in one record. */
        if (n != 5 || body[0] != HS_KEY_UPDATE || body[1] || body[2] || body[3] != 1 || body[4] > 1)
            return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected handshake message", why);
        return key_update(r, cl, body[4], why) ? -1 : REC_HANDLED;
    default: return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected record type", why);
    }
}

/* Keep n more bytes of an incomplete record. */
static int part_add(struct tls_rec *r, const uint8_t *data, size_t n, size_t need)
{
    if (need > r->part_cap) {
        uint8_t *p = realloc(r->part, need);
        if (!p)
            return -1;
        r->part = p;
        r->part_cap = (uint32_t)need;
    }
    memcpy(r->part + r->part_len, data, n);
    r->part_len += (uint32_t)n;
    return 0;
}

static void part_drop(struct tls_rec *r)
{
    free(r->part);
    r->part = NULL;
    r->part_len = r->part_cap = 0;
}

int tls_rec_input(struct tls_rec *r, struct mq_client *cl, unsigned level, uint8_t *raw, size_t len,
                  const char **why)
{
    size_t pos = 0, out = 0, plen = 0;
    int rc;
    if (r->part_len) {
        /* Complete the record a previous read left unfinished, then deliver it alone. */
        if (r->part_len < REC_HEADER) {
            size_t k = REC_HEADER - r->part_len < len ? REC_HEADER - r->part_len : len;
            if (part_add(r, raw, k, REC_HEADER))
                goto oom;
            pos = k;
            if (r->part_len < REC_HEADER)
                return 0;
        }
        long clen = check_header(r, cl, r->part, why);
        if (clen < 0)
            return -1;
        size_t total = REC_HEADER + (size_t)clen;
        size_t k = total - r->part_len < len - pos ? total - r->part_len : len - pos;
        if (part_add(r, raw + pos, k, total))
            goto oom;
        pos += k;
        if (r->part_len < total)
            return 0;
        rc = open_record(r, cl, r->part, (size_t)clen, &plen, why);
        if (rc == 0 && plen)
            client_layer_up(cl, level, r->part + REC_HEADER, plen);
        part_drop(r);
        if (rc < 0 || rc == TLS_REC_CLOSE_NOTIFY)
            return rc;
    }
    /* Whole records in place; their plaintext gathered at the front of raw (it is
     * shorter than the ciphertext, so it never overtakes what is still to be opened). */
    while (pos < len && !cl->closing && !cl->close_requested) {
        size_t avail = len - pos;
        if (avail < REC_HEADER) {
            if (part_add(r, raw + pos, avail, REC_HEADER))
                goto oom;
            break;
        }
        long clen = check_header(r, cl, raw + pos, why);
        if (clen < 0)
            return -1;
        size_t total = REC_HEADER + (size_t)clen;
        if (avail < total) {
            if (part_add(r, raw + pos, avail, total))
                goto oom;
            break;
        }
        rc = open_record(r, cl, raw + pos, (size_t)clen, &plen, why);
        if (rc == 0) {
            memmove(raw + out, raw + pos + REC_HEADER, plen);
            out += plen;
        } else if (rc < 0 || rc == TLS_REC_CLOSE_NOTIFY) {
            if (out)
                client_layer_up(cl, level, raw, out); /* what came before is still valid */
            return rc;
        }
        pos += total;
    }
    if (out)
        client_layer_up(cl, level, raw, out);
    return 0;
oom:
    *why = "out of memory for a TLS record";
    return -1;
}

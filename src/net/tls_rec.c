/* tls_rec.c - the record layer of an established TLS connection: TLS 1.3 (RFC 8446, 5)
 * and TLS 1.2 with an AEAD cipher (RFC 5246, 6.2.3.3; RFC 5288 for AES-GCM, RFC 7905 for
 * ChaCha20-Poly1305).
 *
 * OpenSSL runs the handshake; transport_tls.c then hands the traffic secrets (TLS 1.3) or
 * the master secret (TLS 1.2) and the sequence numbers reached to tls_rec_new or
 * tls_rec_new12 and frees the SSL object, which with
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

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/tls1.h>

#include "midge/log.h"
#include "net.h"
#include "tls.h"
#include "tls_rec.h"

#define REC_HEADER 5
#define REC_TAG 16
#define REC_EXPLICIT 8 /* TLS 1.2 AES-GCM: the nonce's explicit part, before the ciphertext */
#define HS_CLIENT_HELLO 1
#define ALERT_NO_RENEGOTIATION 100
#define REC_IV 12
#define REC_MAX_PLAIN 16384
/* RFC 8446, 5.2: TLSCiphertext.length may exceed the plaintext limit by 256 (TLS 1.2
 * allows 2048: an AEAD record is at most 24 bytes longer). */
#define REC_MAX_CIPHER (REC_MAX_PLAIN + 256)
#define HS_KEY_UPDATE 24
/* open_record: a control record, handled (never TLS_REC_CLOSE_NOTIFY's value). */
#define REC_HANDLED 1

enum suite { SUITE_AES_128_GCM, SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305 };

/* The algorithms, fetched from OpenSSL's default provider once, on the loop thread, then
 * only read (like OpenSSL's own tables): the getters EVP_aes_128_gcm() and friends make
 * OpenSSL 3.0 look the implementation up again at every use, which at a record layer's
 * set-up per handshake was a measurable share of it. */
struct algs {
    EVP_CIPHER *cipher[3]; /* enum suite */
    EVP_MD *sha256, *sha384;
    EVP_KDF *tls1_prf;
    bool fetched, ok;
};

static const struct algs *algs(void)
{
    static struct algs a;
    if (!a.fetched) {
        a.fetched = true;
        a.cipher[SUITE_AES_128_GCM] = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
        a.cipher[SUITE_AES_256_GCM] = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
        a.cipher[SUITE_CHACHA20_POLY1305] = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
        a.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        a.sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
        a.tls1_prf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
        a.ok = a.cipher[0] && a.cipher[1] && a.cipher[2] && a.sha256 && a.sha384 && a.tls1_prf;
    }
    return a.ok ? &a : NULL;
}

static const EVP_CIPHER *suite_cipher(uint8_t suite)
{
    return algs()->cipher[suite]; /* checked by tls_rec_new and tls_rec_new12 */
}

static const EVP_MD *suite_md(uint8_t suite)
{
    return suite == SUITE_AES_256_GCM ? algs()->sha384 : algs()->sha256;
}

/* HMAC(key, data) (RFC 2104) with md, whose block the key fits in (a traffic secret is the
 * hash's length): two digests over the padded key, no MAC object to fetch. */
static int hmac(const EVP_MD *md, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen,
                uint8_t *out)
{
    uint8_t pad[128], inner[EVP_MAX_MD_SIZE];
    size_t block = (size_t)EVP_MD_get_block_size(md);
    unsigned ilen = 0, olen = 0;
    int rc = -1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || block > sizeof(pad) || klen > block)
        goto out;
    memset(pad, 0x36, block);
    for (size_t i = 0; i < klen; i++)
        pad[i] ^= key[i];
    if (EVP_DigestInit_ex(c, md, NULL) != 1 || EVP_DigestUpdate(c, pad, block) != 1 ||
        EVP_DigestUpdate(c, data, dlen) != 1 || EVP_DigestFinal_ex(c, inner, &ilen) != 1)
        goto out;
    for (size_t i = 0; i < block; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    if (EVP_DigestInit_ex(c, md, NULL) != 1 || EVP_DigestUpdate(c, pad, block) != 1 ||
        EVP_DigestUpdate(c, inner, ilen) != 1 || EVP_DigestFinal_ex(c, out, &olen) != 1)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    EVP_MD_CTX_free(c);
    return rc;
}

/* HKDF-Expand-Label(secret, label, "", olen) (RFC 8446, 7.1); olen is at most the hash
 * length, so HKDF-Expand is a single HMAC block. */
static int expand_label(const struct tls_rec *r, const uint8_t *secret, const char *label,
                        uint8_t *out, size_t olen)
{
    uint8_t info[2 + 1 + 6 + 16 + 1 + 1], md[EVP_MAX_MD_SIZE];
    size_t llen = strlen(label), n = 0;
    info[n++] = (uint8_t)(olen >> 8);
    info[n++] = (uint8_t)olen;
    info[n++] = (uint8_t)(6 + llen);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, llen);
    n += llen;
    info[n++] = 0; /* empty context */
    info[n++] = 1; /* HKDF-Expand's block counter */
    if (hmac(suite_md(r->suite), secret, r->secret_len, info, n, md))
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
    if (secret_len != want_len || !algs())
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
    r->pre = REC_HEADER;
    r->post = 1 + REC_TAG; /* the inner content type, then the tag */
    return r;
}

/* TLS 1.2's key block (RFC 5246, 6.3), PRF(master, "key expansion", server_random +
 * client_random) with the suite's hash, into out (n bytes). */
static int key_block(const EVP_MD *md, const uint8_t *master, size_t master_len,
                     const uint8_t *client_random, const uint8_t *server_random, uint8_t *out,
                     size_t n)
{
    uint8_t seed[13 + 32 + 32];
    memcpy(seed, "key expansion", 13);
    memcpy(seed + 13, server_random, 32);
    memcpy(seed + 45, client_random, 32);
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(algs()->tls1_prf);
    if (!kctx)
        return -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)master, master_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed)),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(kctx, out, n, params) == 1;
    EVP_KDF_CTX_free(kctx);
    return ok ? 0 : -1;
}

struct tls_rec *tls_rec_new12(int cipher_nid, const EVP_MD *md, const uint8_t *master,
                              size_t master_len, const uint8_t *client_random,
                              const uint8_t *server_random, uint64_t rseq, uint64_t wseq)
{
    uint8_t suite, key_len, iv_len;
    switch (cipher_nid) {
    case NID_aes_128_gcm: suite = SUITE_AES_128_GCM, key_len = 16, iv_len = 4; break;
    case NID_aes_256_gcm: suite = SUITE_AES_256_GCM, key_len = 32, iv_len = 4; break;
    case NID_chacha20_poly1305: suite = SUITE_CHACHA20_POLY1305, key_len = 32, iv_len = 12; break;
    default: return NULL; /* CBC and CCM suites stay with OpenSSL */
    }
    if (!md || master_len != 48 || !algs())
        return NULL;
    uint8_t kb[2 * 32 + 2 * 12];
    struct tls_rec *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->tls12 = true;
    r->suite = suite;
    r->key_len = key_len;
    r->pre = REC_HEADER + (suite == SUITE_CHACHA20_POLY1305 ? 0 : REC_EXPLICIT);
    r->post = REC_TAG;
    /* client_write_key, server_write_key, client_write_IV, server_write_IV (no MAC keys
     * for an AEAD suite); a 4-byte IV is GCM's salt, the nonce's implicit part. */
    if (key_block(md, master, master_len, client_random, server_random, kb,
                  2 * (size_t)key_len + 2 * (size_t)iv_len))
        goto fail;
    memcpy(r->r.iv, kb + 2 * key_len, iv_len);
    memcpy(r->w.iv, kb + 2 * key_len + iv_len, iv_len);
    if (!(r->r.ctx = EVP_CIPHER_CTX_new()) || !(r->w.ctx = EVP_CIPHER_CTX_new()) ||
        EVP_CipherInit_ex(r->r.ctx, suite_cipher(suite), NULL, kb, NULL, 0) != 1 ||
        EVP_CipherInit_ex(r->w.ctx, suite_cipher(suite), NULL, kb + key_len, NULL, 1) != 1)
        goto fail;
    OPENSSL_cleanse(kb, sizeof(kb));
    r->r.seq = rseq;
    r->w.seq = wseq;
    return r;
fail:
    OPENSSL_cleanse(kb, sizeof(kb));
    tls_rec_free(r);
    return NULL;
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

/* The per-record nonce: the IV with the sequence number XORed into its last 8 bytes
 * (TLS 1.3, and TLS 1.2 ChaCha20-Poly1305); for TLS 1.2 AES-GCM the 4-byte salt, then the
 * sequence number as the explicit part (what OpenSSL sends too). */
static void nonce(const struct tls_rec *r, const struct tls_dir *d, uint8_t out[REC_IV])
{
    if (r->tls12 && r->suite != SUITE_CHACHA20_POLY1305) {
        memcpy(out, d->iv, 4);
        for (int i = 0; i < 8; i++)
            out[4 + i] = (uint8_t)(d->seq >> (56 - 8 * i));
        return;
    }
    memcpy(out, d->iv, REC_IV);
    for (int i = 0; i < 8; i++)
        out[REC_IV - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* TLS 1.2's additional data: seq_num, type, version, plaintext length. */
static void aad12(uint64_t seq, uint8_t type, size_t plen, uint8_t out[13])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(seq >> (56 - 8 * i));
    out[8] = type;
    out[9] = 3;
    out[10] = 3;
    out[11] = (uint8_t)(plen >> 8);
    out[12] = (uint8_t)plen;
}

/* Seal in place the record at rec: room for r->pre bytes (the header, and for TLS 1.2
 * AES-GCM the explicit nonce), n (<= REC_MAX_PLAIN) bytes of plaintext, then room for
 * r->post (TLS 1.3's inner content type, and the tag). Returns 0, or -1 on a cipher
 * failure. */
static int seal(struct tls_rec *r, uint8_t *rec, size_t n, uint8_t type)
{
    uint8_t *body = rec + r->pre;
    size_t clen = r->pre - REC_HEADER + n + r->post;
    uint8_t iv[REC_IV], aad[13];
    const uint8_t *ad = rec;
    size_t adlen = REC_HEADER, plen = n;
    int l;
    rec[0] = r->tls12 ? type : TLS_CT_APPLICATION_DATA; /* TLS 1.3 hides the real type */
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (uint8_t)(clen >> 8);
    rec[4] = (uint8_t)clen;
    nonce(r, &r->w, iv);
    if (r->tls12) {
        if (r->pre > REC_HEADER)
            memcpy(rec + REC_HEADER, iv + 4, REC_EXPLICIT);
        aad12(r->w.seq, type, n, aad);
        ad = aad;
        adlen = sizeof(aad);
    } else {
        body[n] = type;
        plen = n + 1;
    }
    EVP_CIPHER_CTX *c = r->w.ctx;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1 ||
        EVP_EncryptUpdate(c, NULL, &l, ad, (int)adlen) != 1 ||
        EVP_EncryptUpdate(c, body, &l, body, (int)plen) != 1 ||
        EVP_EncryptFinal_ex(c, body + plen, &l) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, REC_TAG, body + plen) != 1)
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
    uint8_t *tail = client_out_append(cl, r->post);
    if (!tail)
        return -1;
    if (seal(r, tail - r->open_len - r->pre, r->open_len, TLS_CT_APPLICATION_DATA))
        return seal_failed(cl);
    return 0;
}

int tls_rec_write(struct tls_rec *r, struct mq_client *cl, const uint8_t *data, size_t len)
{
    while (len) {
        if (!r->open) {
            if (!client_out_append(cl, r->pre))
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

int tls_rec_writev(struct tls_rec *r, struct mq_client *cl, const struct mq_iov *iov, size_t n)
{
    size_t total = 0, filled = r->open ? r->open_len : 0;
    for (size_t i = 0; i < n; i++)
        total += iov[i].len;
    if (!total)
        return 0;
    if (filled + total > REC_MAX_PLAIN) { /* the packet crosses a record's end */
        for (size_t i = 0; i < n; i++)
            if (iov[i].len && tls_rec_write(r, cl, iov[i].base, iov[i].len))
                return -1;
        return 0;
    }
    size_t head = r->open ? 0 : r->pre; /* a new record starts with room for its header */
    uint8_t *p = client_out_append(cl, head + total);
    if (!p)
        return -1;
    p += head;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].len)
            memcpy(p, iov[i].base, iov[i].len);
        p += iov[i].len;
    }
    r->open = true;
    r->open_len = (uint16_t)(filled + total);
    return r->open_len == REC_MAX_PLAIN ? tls_rec_flush(r, cl) : 0;
}

int tls_rec_send(struct tls_rec *r, struct mq_client *cl, uint8_t type, const uint8_t *data,
                 size_t len)
{
    if (tls_rec_flush(r, cl)) /* what was staged goes first */
        return -1;
    while (len) {
        size_t n = len > REC_MAX_PLAIN ? REC_MAX_PLAIN : len;
        uint8_t *rec = client_out_append(cl, r->pre + n + r->post);
        if (!rec)
            return -1;
        memcpy(rec + r->pre, data, n);
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
    /* After the handshake every TLS 1.3 record is protected, under the outer type 23. */
    if (r->tls12 ? h[0] < TLS_CT_ALERT || h[0] > TLS_CT_APPLICATION_DATA || h[1] != 3
                 : h[0] != TLS_CT_APPLICATION_DATA)
        return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected record", why);
    long clen = (long)h[3] << 8 | h[4];
    if (clen > REC_MAX_CIPHER)
        return fatal(r, cl, TLS_ALERT_RECORD_OVERFLOW, "record overflow", why);
    if (clen < (long)(r->pre - REC_HEADER + r->post))
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
 * data at rec + r->pre (*plen bytes), REC_HANDLED for a record handled here (KeyUpdate,
 * a renegotiation refused), TLS_REC_CLOSE_NOTIFY, or -1 with *why after a fatal alert (or
 * the peer's own). */
static int open_record(struct tls_rec *r, struct mq_client *cl, uint8_t *rec, size_t clen,
                       size_t *plen, const char **why)
{
    uint8_t iv[REC_IV], aad[13];
    uint8_t *body = rec + r->pre;
    size_t n = clen - (r->pre - REC_HEADER) - REC_TAG; /* ciphertext without the tag */
    const uint8_t *ad = rec;
    size_t adlen = REC_HEADER;
    int l;
    nonce(r, &r->r, iv);
    if (r->tls12) {
        if (r->pre > REC_HEADER)
            memcpy(iv + 4, rec + REC_HEADER, REC_EXPLICIT); /* the sender's explicit part */
        aad12(r->r.seq, rec[0], n, aad);
        ad = aad;
        adlen = sizeof(aad);
    }
    EVP_CIPHER_CTX *c = r->r.ctx;
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) != 1 ||
        EVP_DecryptUpdate(c, NULL, &l, ad, (int)adlen) != 1 ||
        EVP_DecryptUpdate(c, body, &l, body, (int)n) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, REC_TAG, body + n) != 1 ||
        EVP_DecryptFinal_ex(c, body + n, &l) != 1)
        return fatal(r, cl, TLS_ALERT_BAD_RECORD_MAC, "decryption failed or bad record mac", why);
    r->r.seq++;
    uint8_t type = rec[0];
    if (!r->tls12) {
        /* TLSInnerPlaintext: content, the real type, then zero padding. */
        while (n && !body[n - 1])
            n--;
        if (!n)
            return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "record without a content type", why);
        type = body[--n];
    }
    if (n > REC_MAX_PLAIN)
        return fatal(r, cl, TLS_ALERT_RECORD_OVERFLOW, "record overflow", why);
    switch (type) {
    case TLS_CT_APPLICATION_DATA: *plen = n; return 0;
    case TLS_CT_ALERT:
        if (n != 2)
            return fatal(r, cl, TLS_ALERT_DECODE_ERROR, "bad alert record", why);
        if (body[1] == TLS_ALERT_CLOSE_NOTIFY)
            return TLS_REC_CLOSE_NOTIFY;
        /* TLS 1.3: only user_canceled is not an error (close_notify follows); TLS 1.2:
         * warnings are not. */
        if (r->tls12 ? body[0] == TLS_ALERT_WARNING : body[1] == 90)
            return REC_HANDLED;
        *why = "the client sent a fatal alert"; /* answered by closing, not by an alert */
        mq_log(MQ_LOG_INFO, "%s: TLS alert %u from the client", client_peer(cl), body[1]);
        return -1;
    case TLS_CT_HANDSHAKE:
        if (r->tls12) {
            /* A ClientHello asking to renegotiate: refused (OpenSSL's answer with
             * SSL_OP_NO_RENEGOTIATION), the connection goes on. */
            if (n < 1 || body[0] != HS_CLIENT_HELLO)
                return fatal(r, cl, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected handshake message",
                             why);
            tls_rec_alert(r, cl, TLS_ALERT_WARNING, ALERT_NO_RENEGOTIATION);
            return REC_HANDLED;
        }
        /* After the handshake a TLS 1.3 client may only send KeyUpdate (no
         * post-handshake authentication is asked for), whole in one record. */
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
            client_layer_up(cl, level, r->part + r->pre, plen);
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
            memmove(raw + out, raw + pos + r->pre, plen);
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

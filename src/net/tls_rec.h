/* tls_rec.h - the record layer of an established TLS 1.3 or TLS 1.2 (AEAD) connection
 * (tls_rec.c).
 *
 * transport_tls.c lets OpenSSL run the handshake, then hands the connection's record
 * layer to this module (the traffic secrets and the sequence numbers reached) and frees
 * the SSL object: what an idle TLS connection keeps is a struct tls_rec and two AEAD
 * contexts. It seals and opens application data, alerts and KeyUpdate (RFC 8446, 5 and
 * 4.6.3), reading through client_layer_up and writing into the output buffer.
 */
#ifndef MIDGE_TLS_REC_H
#define MIDGE_TLS_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evp_cipher_ctx_st;
struct evp_md_st;
struct mq_client;
struct mq_iov;

/* The structs are here for tests/unit/test_footprint.c, which pins their size (an idle TLS
 * connection holds one struct tls_rec); only tls_rec.c touches their fields. */

/* One direction: its AEAD context, sequence number, IV (for TLS 1.2 AES-GCM its first 4
 * bytes are the salt) and, for TLS 1.3, the traffic secret. */
struct tls_dir {
    struct evp_cipher_ctx_st *ctx; /* keyed; the nonce is set per record */
    uint64_t seq;
    uint8_t iv[12];
    uint8_t secret[48]; /* TLS 1.3, for KeyUpdate */
};

struct tls_rec {
    struct tls_dir r, w;
    uint8_t *part; /* an incomplete incoming record (header first); NULL when none */
    uint32_t part_len, part_cap;
    /* The record being filled in place at the end of the connection's output buffer:
     * its header, then open_len bytes of plaintext (tls_rec_flush seals it). */
    uint16_t open_len;
    bool open;
    bool tls12;
    uint8_t suite, secret_len, key_len;
    uint8_t pre, post; /* bytes around a record's plaintext: header (+ explicit nonce), tag */
};

enum { TLS_CT_ALERT = 21, TLS_CT_HANDSHAKE = 22, TLS_CT_APPLICATION_DATA = 23 };
enum { TLS_ALERT_WARNING = 1, TLS_ALERT_FATAL = 2 };
enum {
    TLS_ALERT_CLOSE_NOTIFY = 0,
    TLS_ALERT_UNEXPECTED_MESSAGE = 10,
    TLS_ALERT_BAD_RECORD_MAC = 20,
    TLS_ALERT_RECORD_OVERFLOW = 22,
    TLS_ALERT_DECODE_ERROR = 50,
    TLS_ALERT_INTERNAL_ERROR = 80,
};

/* tls_rec_input's result when the peer sent close_notify. */
#define TLS_REC_CLOSE_NOTIFY 2

/* A record layer for the TLS 1.3 cipher suite cipher_id (SSL_CIPHER_get_id: AES-128-GCM,
 * AES-256-GCM, ChaCha20-Poly1305) from the client's and the server's application
 * traffic secrets (secret_len bytes each, borrowed) and the number of records each side
 * has already sent under them. Returns an owned object (tls_rec_free), or NULL for
 * another suite or out of memory: the caller then keeps OpenSSL's record layer. */
struct tls_rec *tls_rec_new(uint32_t cipher_id, const uint8_t *client_secret,
                            const uint8_t *server_secret, size_t secret_len, uint64_t rseq,
                            uint64_t wseq);

/* A TLS 1.2 record layer for an AEAD suite (cipher_nid: NID_aes_128_gcm, NID_aes_256_gcm
 * or NID_chacha20_poly1305; md the suite's PRF hash) from the 48-byte master secret and
 * the two hello randoms (32 bytes each, borrowed), with the number of records each side
 * has already sent since its ChangeCipherSpec. Returns an owned object, or NULL for another
 * suite or out of memory (OpenSSL then keeps the record layer). */
struct tls_rec *tls_rec_new12(int cipher_nid, const struct evp_md_st *md, const uint8_t *master,
                              size_t master_len, const uint8_t *client_random,
                              const uint8_t *server_random, uint64_t rseq, uint64_t wseq);

/* Free r (NULL is fine), wiping its keys. */
void tls_rec_free(struct tls_rec *r);

/* TLS is the bottom layer (level 0): records go straight into the connection's output
 * buffer (client_out_append), application data into a record filled in place across
 * calls and sealed when full or by tls_rec_flush, so the packets of a loop turn share
 * records instead of paying a record (and a seal) each. */

/* Stage len bytes of application data. Returns 0, or -1 once the client is closed. */
int tls_rec_write(struct tls_rec *r, struct mq_client *cl, const uint8_t *data, size_t len);

/* The same for the pieces of one packet (mq_transport_ops.outputv): room made and the
 * record's length counted once, not per piece. */
int tls_rec_writev(struct tls_rec *r, struct mq_client *cl, const struct mq_iov *iov, size_t n);

/* Seal the record being filled, if any: before the output buffer is written. Returns 0,
 * or -1 once the client is closed (a cipher failure, logged). */
int tls_rec_flush(struct tls_rec *r, struct mq_client *cl);

/* Seal len bytes of content type type (after what is staged) into records of their own.
 * Returns 0, or -1 once the client is closed. */
int tls_rec_send(struct tls_rec *r, struct mq_client *cl, uint8_t type, const uint8_t *data,
                 size_t len);

/* Send an alert (alert_level TLS_ALERT_WARNING or _FATAL, description desc). */
void tls_rec_alert(struct tls_rec *r, struct mq_client *cl, uint8_t alert_level, uint8_t desc);

/* Socket bytes: open each complete record in place in raw (scratch space, as a
 * transport's input), pass application data to client_layer_up(cl, level) and keep an
 * incomplete record for the next call. Answers KeyUpdate. Returns 0; TLS_REC_CLOSE_NOTIFY
 * at the peer's close_notify (what preceded it was delivered); or -1 with *why set
 * after a fatal alert went out (bad record, unexpected message, the peer's own alert). */
int tls_rec_input(struct tls_rec *r, struct mq_client *cl, unsigned level, uint8_t *raw, size_t len,
                  const char **why);

#endif

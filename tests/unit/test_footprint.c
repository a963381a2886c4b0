/* test_footprint.c - the memory an idle connection costs, pinned (issue 7, scenario F).
 *
 * Each idle connection with one subscription holds one struct of each kind below (the
 * session with its client id and its subscription's leaf handle inline) plus a trie
 * leaf. Every field added to them since the first benchmark raised the per-connection
 * figure without anyone noticing: these budgets make such a change a conscious one
 * (raise the budget in the same commit, and say why).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>

#include "midge/imap.h"
#include "midge/proto.h"
#include "midge/session.h"
#include "midge/sub_tree.h"
#include "net/net.h"
#include "net/tls.h"
#include "net/tls_rec.h"

/* Budgets in bytes, one set per data model: pointers and size_t are 8 bytes on x86-64 and
 * arm64 (LP64) but 4 on armhf (ILP32, 32-bit Raspberry Pi OS), so the same structs are
 * smaller there and glibc's chunks are finer. A change must fit both. */
#if UINTPTR_MAX > UINT32_MAX
/* LP64. glibc hands out chunks of (size + 8) rounded up to 16, so the comments give the
 * chunk each struct lands in. */
/* The whole mq_client, proto's mq_conn inside (one allocation per connection): it holds no
 * libuv handle (its socket is in poller.c's epoll set), its peer name is allocated with it,
 * and what proto keeps (the listener, the io) is not kept twice. With "127.0.0.1:54321" it
 * is a 216-byte request, the largest of chunk 224 (CLIENT_TYPICAL_MAX); the longest IPv4
 * name lands in chunk 240 (CLIENT_MAX). History: before the poller 440 bytes, chunk 448,
 * around a 248-byte uv_tcp_t, and mq_conn a chunk of its own; then chunk 208; the admin
 * API's 24 bytes of mq_conn made it 240, and mq_conn's two timestamps in 32 bits brought
 * it back to 224. */
#define CLIENT_MAX 232
#define CLIENT_TYPICAL_MAX 216 /* largest request glibc serves from a 224-byte chunk */
/* mq_conn, inside mq_client: the peer is borrowed from the io, and one timestamp serves
 * connect_timeout, then keepalive (32 bits, as the output-limit one). The admin API's
 * per-connection figures (issue 15: when it connected, PUBLISH and bytes in and out) are
 * its last 24 bytes: an administrator asks "which board is flooding", and a lazily
 * allocated block would be bigger for every client that publishes at all. */
#define CONN_MAX 112
/* mq_session with its client id inline: the id starts at byte 55, so an idle session under
 * a 13-byte id like "mb12345-c1234" is a 69-byte request, chunk 80 (ids up to 16 bytes fit
 * it). QoS 1/2 state, persistence state and a second subscription are separate blocks. */
#define SESSION_MAX 56
#define SESSION_CHUNK_REQUEST_MAX 72 /* largest request glibc serves from an 80-byte chunk */
#else
/* ILP32 (armhf): glibc's chunks are (size + 4) rounded up to 8. mq_client is 136 bytes up
 * to its peer name: chunk 160 with "127.0.0.1:54321", 168 with the longest IPv4 name
 * (before the admin API's 24 bytes of counters: 120, chunks 144 and 152; with them and
 * 64-bit timestamps: 144, chunks 168 and 176). */
#define CLIENT_MAX 164 /* largest request glibc serves from a 168-byte chunk */
#define CLIENT_TYPICAL_MAX 156 /* largest request glibc serves from a 160-byte chunk */
#define CONN_MAX 80 /* 64 before the admin API's 24 bytes of counters, 88 with 64-bit times */
/* The id starts at byte 39: "mb12345-c1234" makes a 53-byte request, chunk 64 (ids up to
 * 20 bytes fit it). */
#define SESSION_MAX 40
#define SESSION_CHUNK_REQUEST_MAX 60 /* largest request glibc serves from a 64-byte chunk */
#endif

/* What an idle TLS connection holds beside its mq_client once the record layer is midge's
 * (issue 17, scenario TF): its layer slot (16, chunk 32), struct tls_conn (chunk 80) and
 * struct tls_rec (chunk 208), and two OpenSSL AEAD contexts (EVP_CIPHER_CTX with its
 * provider context: about 1.2 KiB each for AES-GCM, OpenSSL 3.0), which are OpenSSL's and
 * not pinned here. Before issue 17 an idle TLS connection kept the whole SSL object and
 * two memory BIOs: about 17 KiB. */
#define TLS_CONN_MAX 72
#define TLS_REC_MAX 192

static void test_struct_sizes(void **state)
{
    (void)state;
    print_message("mq_client up to peer_addr %zu, mq_conn %zu, mq_session %zu (client id at %zu)\n",
                  offsetof(struct mq_client, peer_addr), sizeof(struct mq_conn),
                  sizeof(struct mq_session), offsetof(struct mq_session, client_id));
    assert_true(offsetof(struct mq_client, peer_addr) + sizeof("255.255.255.255:65535") <=
                CLIENT_MAX);
    assert_true(offsetof(struct mq_client, peer_addr) + sizeof("127.0.0.1:54321") <=
                CLIENT_TYPICAL_MAX);
    assert_true(sizeof(struct mq_conn) <= CONN_MAX);
    assert_true(sizeof(struct mq_session) <= SESSION_MAX);
    assert_true(offsetof(struct mq_session, client_id) + sizeof("mb12345-c1234") <=
                SESSION_CHUNK_REQUEST_MAX);
    assert_true(sizeof(struct tls_conn) <= TLS_CONN_MAX);
    assert_true(sizeof(struct tls_rec) <= TLS_REC_MAX);
}

/* What the pure layers keep per idle connection, as the broker builds it for the
 * scenario F benchmark (midge-bench conns): a session under a client id like
 * "mb12345-c1234", one subscription to "mb12345/c1234", the session in the broker's
 * table and the leaf under one shared trie node. Heap bytes per connection at 1,000
 * connections, table shares included. LP64, measured 165: the session with its id and its
 * one subscription inline (chunk 80), the trie leaf with its subscriber inline (chunk 48)
 * and about 37 of shares of the sessions table and the shared node's children map.
 * armhf, measured 114: chunks 64 and 32, and about 18 of shares (4-byte slots). */
#if UINTPTR_MAX > UINT32_MAX
#define PURE_HEAP_MAX 168
#else
#define PURE_HEAP_MAX 116
#endif

#if !defined(__SANITIZE_ADDRESS__)
/* The broker's table is keyed by the session's client id (broker_session_key). */
static const void *session_key(const void *value, size_t *len)
{
    const struct mq_session *s = value;
    *len = s->client_id_len;
    return s->client_id;
}
#endif

static void test_pure_heap_per_connection(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* ASan's allocator has its own layout: the budget is glibc's */
#else
    enum { N = 1000 };
    static struct mq_session *sessions[N];
    struct mq_imap table;
    imap_init(&table);
    struct mq_sub_tree *t = sub_tree_new();
    assert_non_null(t);
    /* The shared node and the tables start with a first entry, as after the broker's
     * first connection: the budget is for the ones that follow. */
    char id[32], filter[32];
    struct mq_session *first = session_new((const uint8_t *)"first", 5, true);
    assert_non_null(first);
    assert_int_equal(imap_put(&table, first, session_key), 0);
    struct mq_sub_leaf *leaf =
        sub_tree_add(t, (const uint8_t *)"mb12345/first", 13, first, 0, NULL);
    assert_non_null(leaf);
    assert_int_equal(session_sub_add(first, leaf), 0);

    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < N; i++) {
        int idlen = snprintf(id, sizeof(id), "mb12345-c%d", 1000 + i);
        int flen = snprintf(filter, sizeof(filter), "mb12345/c%d", 1000 + i);
        struct mq_session *s = session_new((const uint8_t *)id, (uint16_t)idlen, true);
        assert_non_null(s);
        assert_int_equal(imap_put(&table, s, session_key), 0);
        leaf = sub_tree_add(t, (const uint8_t *)filter, (size_t)flen, s, 0, NULL);
        assert_non_null(leaf);
        assert_int_equal(session_sub_add(s, leaf), 0);
        sessions[i] = s;
    }
    size_t per = (mallinfo2().uordblks - before) / N;
    print_message("pure-layer heap per idle connection: %zu bytes (budget %d)\n", per,
                  PURE_HEAP_MAX);
    assert_true(per <= PURE_HEAP_MAX);

    for (int i = 0; i < N; i++) {
        struct mq_session *s = sessions[i];
        uint32_t pos = 0;
        assert_true(sub_tree_leaf_remove(t, session_sub_next(s, &pos), s));
        imap_remove(&table, s->client_id, s->client_id_len, session_key);
        session_free(s);
    }
    sub_tree_remove(t, (const uint8_t *)"mb12345/first", 13, first, NULL);
    imap_remove(&table, first->client_id, first->client_id_len, session_key);
    session_free(first);
    assert_int_equal(sub_tree_node_count(t), 0);
    sub_tree_free(t);
    imap_destroy(&table);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_struct_sizes),
        cmocka_unit_test(test_pure_heap_per_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* fuzz_admin.c - libFuzzer target for the admin API: src/admin/admin.c (routing, query
 * strings, cursors, the JSON body of POST /api/v1/publish) over a broker of its own, and
 * src/admin/enc.c's decoders directly.
 *
 * Input: byte 0 picks the method and whether the request is logged in; the target runs to
 * the first '\n', the rest is the body. Each input gets a fresh broker with three clients
 * (one persistent and offline, two connected with subscriptions and wills) and retained
 * messages, so listings, kicks, deletions and publishes all reach proto. The oracle: every
 * response is one JSON object with a status, nothing leaks (ASan), and the decoders never
 * write past what they promise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "midge/admin.h"
#include "midge/config.h"
#include "midge/enc.h"
#include "midge/log.h"
#include "midge/proto.h"
#include "midge/proto_admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sink_write(struct mq_conn *c, const struct mq_iov *iov, size_t n)
{
    (void)c;
    (void)iov;
    (void)n;
}

static void sink_close(struct mq_conn *c)
{
    (void)c;
}

static const struct mq_sink_ops sink = {sink_write, sink_close, NULL};

/* alice:pw is an admin; anything else is refused. */
static int check_password(const void *passwd, const uint8_t *user, size_t ulen, const uint8_t *pw,
                          size_t plen)
{
    (void)passwd;
    if (ulen != 5 || memcmp(user, "alice", 5))
        return 1;
    return plen == 2 && !memcmp(pw, "pw", 2) ? 0 : 2;
}

static void feed(struct mq_conn *c, const uint8_t *p, size_t n)
{
    proto_conn_input(c, p, n, NULL);
}

/* A 3.1.1 CONNECT of id (short) with a will on w/<id>, clean as given, user alice. */
static void connect_as(struct mq_conn *c, const char *id, bool clean)
{
    uint8_t pkt[128];
    size_t idl = strlen(id), n = 0;
    uint8_t body[120];
    size_t b = 0;
    memcpy(body + b, "\0\4MQTT\4", 7);
    b += 7;
    body[b++] = (uint8_t)(0x80 | 0x04 | (clean ? 0x02 : 0)); /* user, will, clean */
    body[b++] = 0;
    body[b++] = 60;
    body[b++] = 0;
    body[b++] = (uint8_t)idl;
    memcpy(body + b, id, idl);
    b += idl;
    body[b++] = 0;
    body[b++] = (uint8_t)(2 + idl);
    memcpy(body + b, "w/", 2);
    memcpy(body + b + 2, id, idl);
    b += 2 + idl;
    memcpy(body + b, "\0\3bye\0\5alice", 12);
    b += 12;
    pkt[n++] = 0x10;
    pkt[n++] = (uint8_t)b;
    memcpy(pkt + n, body, b);
    feed(c, pkt, n + b);
    static const uint8_t sub[] = {0x82, 14, 0, 1, 0, 3, 'a', '/', '#', 1, 0, 4, 's', '/', '+', 0};
    feed(c, sub, sizeof(sub));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        struct mq_log_options lo = log_default_options();
        lo.types = 0; /* the oracle is the response, not the log */
        log_configure(&lo);
        quiet = true;
    }

    /* enc.c on its own: the decoders stay within their promised sizes. */
    char *pct = malloc(size + 1);
    uint8_t *b64 = malloc(size / 4 * 3 + 3);
    if (!pct || !b64)
        abort();
    long n = enc_pct_decode((const char *)data, size, pct, size & 1);
    if (n > (long)size)
        abort();
    n = enc_b64_decode((const char *)data, size, b64, true);
    if (n > (long)(size / 4 * 3 + 3))
        abort();
    if (n >= 0) {
        /* Canonical: decoding then encoding gives the input back (its optional padding
         * aside). */
        size_t unpadded = size;
        while (unpadded && data[unpadded - 1] == '=')
            unpadded--;
        char *again = malloc(enc_b64_len((size_t)n, true) + 1);
        if (!again || enc_b64_encode(b64, (size_t)n, again, true) != unpadded ||
            memcmp(again, data, unpadded))
            abort();
        free(again);
    }
    enc_b64_decode((const char *)data, size, b64, false);
    const char *qp = (const char *)data, *qend = qp + size;
    struct enc_param ep;
    while (enc_query_next(&qp, qend, &ep))
        if (ep.name < (const char *)data || ep.name + ep.name_len > qend)
            abort();
    free(pct);
    free(b64);

    if (size < 2)
        return 0;
    /* A broker with something in it. */
    struct mq_config cfg;
    if (config_defaults(&cfg))
        return 0;
    cfg.connection_messages = false;
    cfg.message_size_limit = 1000;
    struct mq_listener_config lc = {.max_connections = -1,
                                    .allow_anonymous = true,
                                    .allow_zero_length_clientid = true,
                                    .protocol = MQ_LISTENER_WEBSOCKETS,
                                    .admin_users = (char *)"bob\nalice"};
    static int passwd_token;
    struct mq_listener_ctx lctx = {.cfg = &lc, .passwd = &passwd_token};
    struct mq_broker *b = broker_new(&cfg, &sink, 1000000);
    if (!b)
        abort();
    b->check_password = check_password;
    struct mq_conn conns[3];
    static const char *const ids[3] = {"p/1", "c-2", "c/3"};
    for (int i = 0; i < 3; i++) {
        proto_conn_open(&conns[i], b, &lctx, "127.0.0.1:1000");
        connect_as(&conns[i], ids[i], i != 0);
    }
    proto_conn_closed(&conns[0], "gone"); /* p/1 stays as an offline session */
    for (int i = 0; i < 5; i++) {
        char topic[16];
        snprintf(topic, sizeof(topic), "a/%d", i);
        unsigned delivered;
        const char *why;
        broker_admin_publish(b, NULL, NULL, (const uint8_t *)topic, strlen(topic),
                             (const uint8_t *)"\xff\0x\xe6\xb8\xa9", 5, 1, true, &delivered, &why);
    }

    static const char *const methods[] = {"GET", "DELETE", "POST", "HEAD", "PUT", "OPTIONS"};
    const char *method = methods[data[0] % 6];
    bool authed = !(data[0] & 0x80);
    bool origin = data[0] & 0x40;
    const uint8_t *nl = memchr(data + 1, '\n', size - 1);
    size_t tlen = nl ? (size_t)(nl - data - 1) : size - 1;
    const uint8_t *body = nl ? nl + 1 : NULL;
    size_t blen = nl ? size - (size_t)(body - data) : 0;
    static const char auth[] = "Basic YWxpY2U6cHc="; /* alice:pw */
    struct admin_request rq = {
        .method = method,
        .method_len = strlen(method),
        .target = (const char *)data + 1,
        .target_len = tlen,
        .authorization = authed ? auth : NULL,
        .authorization_len = authed ? sizeof(auth) - 1 : 0,
        .origin = origin ? "http://x" : NULL,
        .origin_len = origin ? 8 : 0,
        .host = "x",
        .host_len = 1,
        .content_type = "application/json",
        .content_type_len = 16,
        .body = body,
        .body_len = blen,
        .peer = "127.0.0.1:1",
        .peer_addr = "127.0.0.1",
        .listener = &lctx,
    };
    struct mq_admin *a = admin_new(b, NULL);
    if (!a)
        abort();
    if (admin_is_api_path(rq.target, rq.target_len)) {
        struct admin_response rs;
        admin_handle(a, &rq, &rs);
        json_error_t err;
        json_t *j = json_loadb(rs.body, rs.body_len, 0, &err);
        if (!j || !json_is_object(j) || rs.status < 200 || rs.status > 599)
            abort();
        if (rs.status >= 400 && !json_is_string(json_object_get(j, "message")))
            abort();
        json_decref(j);
        admin_response_free(&rs);
    }
    admin_free(a);
    for (int i = 1; i < 3; i++)
        proto_conn_closed(&conns[i], "over");
    broker_free(b);
    config_free(&cfg);
    return 0;
}

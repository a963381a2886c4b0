/* proto_connect.c - CONNECT and DISCONNECT: client ids, anonymous access, session
 * takeover and resumption, session present, the will.
 *
 * Owns the attach/detach of sessions to connections; a clean session dies with
 * its connection, a persistent one stays in the broker's table.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/session.h"
#include "proto_internal.h"

static void send_connack(struct mq_conn *c, bool session_present, uint8_t code)
{
    uint8_t pkt[4] = {MQ_CONNACK << 4, 2, session_present ? 1 : 0, code};
    conn_send(c, pkt, sizeof(pkt));
}

/* Answer CONNECT with a refusal code and close ([MQTT-3.2.2-5]). */
static void refuse(struct mq_conn *c, uint8_t code, const char *client_id, const char *why)
{
    send_connack(c, false, code);
    conn_close(c, false, "client %s refused: %s (CONNACK %u)", client_id, why, code);
}

void session_destroy(struct mq_broker *b, struct mq_session *s)
{
    uint32_t pos = 0;
    struct mq_sub_leaf *leaf;
    while ((leaf = session_sub_next(s, &pos)))
        sub_tree_leaf_remove(b->subs, leaf, s); /* prunes only leaves nobody else holds */
    imap_remove(&b->sessions, s->client_id, s->client_id_len, broker_session_key);
    hmap_remove(&b->page_wait, s->client_id, s->client_id_len);
    session_free(s);
}

void session_detach(struct mq_conn *c)
{
    struct mq_session *s = c->session;
    if (!s)
        return;
    struct mq_broker *b = c->broker;
    c->session = NULL;
    if (c->connected && b->stats.clients_connected)
        b->stats.clients_connected--;
    s->conn = NULL;
    s->last_seen_ms = b->now_ms;
    if (s->clean)
        session_destroy(b, s); /* [MQTT-3.1.2-6] */
    else
        persist_session_put(b, s); /* its last-seen time, for expiry after a restart */
}

/* Build the will message from CONNECT (validated by the codec). */
static int make_will(struct mq_conn *c, const struct mq_connect *cp)
{
    if (!cp->will_flag)
        return 0;
    c->will = msg_new(cp->will_topic.ptr, cp->will_topic.len, cp->will_payload.ptr,
                      cp->will_payload.len, cp->will_qos, cp->will_retain);
    return c->will ? 0 : MQ_ERR_NOMEM;
}

/* Characters (code points) in a validated UTF-8 field: bytes that do not continue one. */
static size_t utf8_chars(struct mq_bytes b)
{
    size_t n = 0;
    for (uint16_t i = 0; i < b.len; i++)
        n += (b.ptr[i] & 0xC0) != 0x80;
    return n;
}

static bool has_allowed_prefix(const struct mq_config *cfg, struct mq_bytes id)
{
    for (char **p = cfg->clientid_prefixes; *p; p++) {
        size_t n = strlen(*p);
        if (n <= id.len && memcmp(id.ptr, *p, n) == 0)
            return true;
    }
    return false;
}

/* Who may connect: password file, anonymous access, the any-password profile.
 * Refuses (and returns false) with CONNACK 5 ([MQTT-3.2.2-5]), for a wrong user name or
 * password too: 3.1.1 reserves 4 for credentials that are malformed, and Mosquitto,
 * Adafruit IO and the course's firmware all report a wrong key as 5. Never logs a
 * password. */
static bool authenticate(struct mq_conn *c, const struct mq_connect *cp, const char *id)
{
    const struct mq_listener_ctx *l = c->listener;
    const struct mq_listener_config *lc = l ? l->cfg : NULL;
    if (!lc)
        return true; /* unit tests without a listener */
    if (lc->use_identity_as_username) {
        /* The certificate is the credential (Mosquitto: no password check). */
        if (c->identity)
            return true;
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, id,
               "use_identity_as_username is set but the client presented no certificate");
        return false;
    }
    if (!cp->has_username) {
        if (lc->allow_anonymous)
            return true;
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, id,
               "anonymous access is not allowed on this listener (set allow_anonymous true, "
               "or give the client a user name and password)");
        return false;
    }
    if (l->passwd && c->broker->check_password) {
        char user[96];
        snprintf(user, sizeof(user), "%.*s", (int)(cp->username.len < 80 ? cp->username.len : 80),
                 (const char *)cp->username.ptr);
        int r = c->broker->check_password(l->passwd, cp->username.ptr, cp->username.len,
                                          cp->has_password ? cp->password.ptr : NULL,
                                          cp->has_password ? cp->password.len : 0);
        if (r == 0)
            return true;
        char why[160];
        snprintf(why, sizeof(why), "%s for user %s (password_file)",
                 r == 1 ? "unknown user name" : "wrong password", user);
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, id, why);
        return false;
    }
    /* The course-firmware profile: a user name is enough, the password (an Adafruit IO
     * key in the firmware) is not checked; the ACL's %u patterns keep users apart. */
    if (lc->accept_any_password || lc->allow_anonymous)
        return true;
    refuse(c, MQ_CONNACK_NOT_AUTHORIZED, id,
           "no password_file is configured to check the user name against (set "
           "password_file, accept_any_password true or allow_anonymous true)");
    return false;
}

void handle_connect(struct mq_conn *c, const struct mq_packet *p, int decode_err)
{
    struct mq_broker *b = c->broker;
    const struct mq_config *cfg = b->cfg;
    const struct mq_connect *cp = &p->u.connect;
    const struct mq_listener_config *lc = c->listener ? c->listener->cfg : NULL;
    char id[96];
    snprintf(id, sizeof(id), "%.*s", (int)(cp->client_id.len < 80 ? cp->client_id.len : 80),
             cp->client_id.ptr ? (const char *)cp->client_id.ptr : "");

    if (decode_err == MQ_ERR_BAD_PROTOCOL_LEVEL) { /* [MQTT-3.1.2-2] */
        char why[64];
        snprintf(why, sizeof(why), "unsupported protocol level %u", cp->protocol_level);
        refuse(c, MQ_CONNACK_BAD_PROTOCOL, "(unknown)", why);
        return;
    }
    /* MQTT 3.1 requires an id of 1 to 23 characters and has no assigned ids (3.1.1
     * relaxed both): refused with CONNACK 2, as Mosquitto does for an empty one. */
    if (decode_err == MQ_ERR_NO_CLIENT_ID || (cp->protocol_level == 3 && cp->client_id.len == 0)) {
        refuse(c, MQ_CONNACK_ID_REJECTED, "(empty)",
               decode_err ? "MQTT 3.1 CONNECT without a client id"
                          : "zero-length client id (MQTT 3.1 requires 1 to 23 characters)");
        return;
    }
    if (cp->protocol_level == 3 && utf8_chars(cp->client_id) > 23) {
        refuse(c, MQ_CONNACK_ID_REJECTED, id,
               "client id longer than 23 characters (MQTT 3.1 allows 1 to 23; use MQTT 3.1.1)");
        return;
    }

    /* Client identifier ([MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.1.3-8]). */
    char auto_id[64];
    const uint8_t *client_id = cp->client_id.ptr;
    uint16_t client_id_len = cp->client_id.len;
    if (client_id_len == 0) {
        if (cfg && cfg->clientid_prefixes) {
            /* An assigned id would bypass the restriction to known prefixes. */
            refuse(c, MQ_CONNACK_ID_REJECTED, "(empty)",
                   "zero-length client id not allowed with clientid_prefixes");
            return;
        }
        if (!cp->clean_session) {
            refuse(c, MQ_CONNACK_ID_REJECTED, "(empty)",
                   "zero-length client id requires clean session 1");
            return;
        }
        if (lc && !lc->allow_zero_length_clientid) {
            refuse(c, MQ_CONNACK_ID_REJECTED, "(empty)",
                   "zero-length client id not allowed (allow_zero_length_clientid false)");
            return;
        }
        /* [MQTT-3.1.3-6]: unique. A client may have chosen an id of the same shape, so
         * skip any that is in use. */
        const char *prefix = lc && lc->auto_id_prefix ? lc->auto_id_prefix : "auto-";
        size_t n;
        do {
            int w = snprintf(auto_id, sizeof(auto_id), "%.32s%" PRIx64 "-%" PRIu64, prefix,
                             b->start_ms, ++b->auto_id_counter);
            n = w < (int)sizeof(auto_id) ? (size_t)w : sizeof(auto_id) - 1;
        } while (imap_get(&b->sessions, auto_id, n, broker_session_key));
        client_id = (const uint8_t *)auto_id;
        client_id_len = (uint16_t)n;
        snprintf(id, sizeof(id), "%s", auto_id);
    } else if (cfg && cfg->clientid_prefixes && !has_allowed_prefix(cfg, cp->client_id)) {
        refuse(c, MQ_CONNACK_ID_REJECTED, id,
               "client id does not start with one of "
               "clientid_prefixes");
        return;
    }

    /* Mosquitto's rule for 3.1/3.1.1, which cannot be told a smaller keepalive: refuse.
     * Keepalive 0 (umqtt.simple's default) is always accepted. */
    if (cfg && cp->keepalive > cfg->max_keepalive) {
        char why[96];
        snprintf(why, sizeof(why), "keepalive %u s exceeds max_keepalive %u s", cp->keepalive,
                 cfg->max_keepalive);
        refuse(c, MQ_CONNACK_ID_REJECTED, id, why);
        return;
    }

    /* The will is a message like any other: a payload over message_size_limit is refused
     * now rather than published later (Mosquitto answers CONNACK 5 too). */
    if (cp->will_flag && cfg && cfg->message_size_limit &&
        cp->will_payload.len > cfg->message_size_limit) {
        char why[128];
        snprintf(why, sizeof(why), "will payload of %u bytes exceeds message_size_limit %u",
                 cp->will_payload.len, cfg->message_size_limit);
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, id, why);
        return;
    }

    if (!authenticate(c, cp, id))
        return;
    if (b->memory_exceeded) {
        b->stats.memory_refusals++;
        refuse(c, MQ_CONNACK_UNAVAILABLE, id, "server over memory_limit");
        return;
    }

    if (make_will(c, cp)) {
        refuse(c, MQ_CONNACK_UNAVAILABLE, id, "out of memory");
        return;
    }

    /* Takeover: the existing connection with this id is closed ([MQTT-3.1.4-2]). Its will
     * is published when its session ends here, i.e. when the old or the new connection
     * uses clean session 1; when both use 0 the session simply continues on the new
     * connection and the client was never offline, so no will (as Mosquitto does). */
    struct mq_session *s = imap_get(&b->sessions, client_id, client_id_len, broker_session_key);
    if (s && s->conn) {
        struct mq_conn *old = s->conn;
        if (!cfg || cfg->connection_messages)
            mq_log(MQ_LOG_NOTICE, "client %s taken over by %s", s->client_id, c->peer);
        conn_shutdown(old, s->clean || cp->clean_session);
        s = imap_get(&b->sessions, client_id, client_id_len,
                     broker_session_key); /* a clean one is gone */
    }
    bool session_present = false;
    if (s && cp->clean_session) {
        persist_session_delete(b, s);
        session_destroy(b, s); /* [MQTT-3.1.2-6] */
        s = NULL;
    }
    if (s) {
        session_present = true; /* [MQTT-3.2.2-2] */
        s->clean = false;
    } else {
        s = session_new(client_id, client_id_len, cp->clean_session);
        if (!s || imap_put(&b->sessions, s, broker_session_key)) {
            session_free(s);
            refuse(c, MQ_CONNACK_UNAVAILABLE, id, "out of memory");
            return;
        }
    }
    free(s->username);
    s->username = NULL;
    if (lc && lc->use_identity_as_username && c->identity) {
        if (!(s->username = strdup(c->identity))) {
            session_destroy(b, s);
            refuse(c, MQ_CONNACK_UNAVAILABLE, id, "out of memory");
            return;
        }
    } else if (cp->has_username) {
        s->username = malloc((size_t)cp->username.len + 1);
        if (!s->username) {
            session_destroy(b, s);
            refuse(c, MQ_CONNACK_UNAVAILABLE, id, "out of memory");
            return;
        }
        memcpy(s->username, cp->username.ptr, cp->username.len);
        s->username[cp->username.len] = '\0';
    }
    s->listener = c->listener;
    s->conn = c;
    c->session = s;
    persist_session_put(b, s);
    c->keepalive = cp->keepalive;
    c->protocol_level = cp->protocol_level;
    c->connected = true;
    c->last_rx_ms = b->now_ms; /* keepalive counts from here */
    b->stats.clients_total++;
    b->stats.clients_connected++;
    if (b->stats.clients_connected > b->stats.clients_maximum)
        b->stats.clients_maximum = b->stats.clients_connected;

    c->bridge = cp->bridge;

    /* MQTT 3.1 has no session-present flag: byte 1 is reserved there, always 0. */
    send_connack(c, session_present && cp->protocol_level >= 4,
                 MQ_CONNACK_ACCEPTED); /* [MQTT-3.2.0-1] */
    if (!cfg || cfg->connection_messages)
        mq_log(MQ_LOG_NOTICE,
               "client %s connected from %s (MQTT %s%s, clean session %d, keepalive %u s%s%s)",
               s->client_id, c->peer, cp->protocol_level == 3 ? "3.1" : "3.1.1",
               cp->bridge ? " bridge" : "", cp->clean_session ? 1 : 0, cp->keepalive,
               session_present ? ", session resumed" : "",
               cp->has_username ? ", with user name" : "");
    if (session_present)
        session_resume_delivery(b, s); /* [MQTT-4.4.0-1] */
}

void handle_disconnect(struct mq_conn *c)
{
    /* [MQTT-3.14.4-3]: a clean DISCONNECT discards the will. */
    if (c->will) {
        msg_unref(c->will);
        c->will = NULL;
    }
    conn_close(c, false, "DISCONNECT received");
}

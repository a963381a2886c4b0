/* proto_connect.c - CONNECT and DISCONNECT: client ids, anonymous access, session
 * takeover and resumption, session present and expiry, the will and its delay.
 *
 * Owns the attach/detach of sessions to connections and the wills waiting for their
 * Will Delay Interval (broker->pending_wills). A session that ends with its connection
 * (3.1.1 clean session 1, MQTT 5 Session Expiry Interval 0) dies with it; any other stays
 * in the broker's table until it expires (proto.c) or a clean start replaces it. One code
 * path serves both dialects: MQTT 5 only adds properties and its own reason codes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/acl.h"
#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/msg.h"
#include "midge/session.h"
#include "proto_internal.h"

/* CONNACK: 3.x as two bytes; MQTT 5 with a property block (may be empty). */
static void send_connack(struct mq_conn *c, bool session_present, uint8_t code,
                         const uint8_t *props, size_t props_len)
{
    if (!conn_v5(c)) {
        uint8_t pkt[4] = {MQ_CONNACK << 4, 2, session_present ? 1 : 0, code};
        conn_send(c, pkt, sizeof(pkt));
        return;
    }
    uint8_t hdr[MQ_MAX_FIXED_HEADER + 2 + 4];
    uint32_t remaining = 2u + codec_varint_size((uint32_t)props_len) + (uint32_t)props_len;
    size_t n = codec_fixed_header(MQ_CONNACK << 4, remaining, hdr);
    hdr[n++] = session_present ? 1 : 0;
    hdr[n++] = code;
    n += codec_varint_write((uint32_t)props_len, hdr + n);
    struct mq_iov iov[2] = {{hdr, n}, {props, props_len}};
    c->broker->sink->write(c, iov, 2);
    c->broker->stats.msgs_sent++;
    c->broker->stats.bytes_sent += n + props_len;
    c->bytes_out += n + props_len;
}

/* Answer CONNECT with a refusal and close ([MQTT-3.2.2-5], [MQTT-3.2.2-7]): code311 for
 * MQTT 3.x, code5 (with the reason as Reason String, unless the client asked for no problem
 * information or it would not fit its Maximum Packet Size) for MQTT 5. */
static void refuse(struct mq_conn *c, uint8_t code311, uint8_t code5, const char *client_id,
                   const char *why)
{
    if (!conn_v5(c)) {
        send_connack(c, false, code311, NULL, 0);
        conn_close(c, false, "client %s refused: %s (CONNACK %u)", client_id, why, code311);
        return;
    }
    uint8_t props[300];
    struct mq_prop_writer w;
    codec_prop_writer_init(&w, props, sizeof props);
    const struct mq_conn_ext *x = c->ext;
    size_t n = strlen(why);
    uint32_t limit = x ? x->max_packet_out : 0;
    /* 2 (fixed header) + 2 (flags, code) + the property length + the string itself. */
    if ((!x || x->problem_info) && (!limit || 2 + 2 + 2 + 3 + (n > 256 ? 256 : n) <= limit))
        codec_prop_put_bytes(&w, MQ_PROP_REASON_STRING, why, n > 256 ? 256 : n);
    send_connack(c, false, code5, props, codec_prop_writer_ok(&w) ? w.len : 0);
    conn_close(c, false, "client %s refused: %s (CONNACK 0x%02x %s)", client_id, why, code5,
               codec_reason_name(code5));
}

void session_destroy(struct mq_broker *b, struct mq_session *s)
{
    uint32_t pos = 0;
    struct mq_sub_leaf *leaf;
    while ((leaf = session_sub_next(s, &pos)))
        sub_tree_leaf_remove(b->subs, leaf, s); /* prunes only leaves nobody else holds */
    share_leave_all(b, s, false);
    if (s->will_pending)
        msg_unref(will_take(b, s));
    imap_remove(&b->sessions, s->client_id, s->client_id_len, broker_session_key);
    hmap_remove(&b->page_wait, s->client_id, s->client_id_len);
    session_free(s);
}

void session_end(struct mq_broker *b, struct mq_session *s)
{
    /* A will waiting for its delay goes out when its session ends first ([MQTT-3.1.2-8]). */
    if (s->will_pending) {
        struct mq_msg *will = will_take(b, s);
        will_publish(b, s, will);
        msg_unref(will);
    }
    share_leave_all(b, s, true);
    persist_session_delete(b, s);
    session_destroy(b, s);
}

void session_detach(struct mq_conn *c)
{
    struct mq_session *s = c->session;
    if (!s)
        return;
    struct mq_broker *b = c->broker;
    c->session = NULL;
    if (c->connected && b->stats.clients_connected) {
        b->stats.clients_connected--;
        uint64_t *by = &b->stats.clients_by_version[proto_version_index(c->protocol_level)];
        if (*by)
            (*by)--;
    }
    s->conn = NULL;
    s->last_seen_ms = b->now_ms;
    if (s->clean) {
        share_leave_all(b, s, true); /* what it held from shared subscriptions goes on */
        session_destroy(b, s);       /* [MQTT-3.1.2-6] */
    } else {
        persist_session_put(b, s); /* its last-seen time, for expiry after a restart */
    }
}

/* ---- wills ------------------------------------------------------------------------------ */

void will_publish(struct mq_broker *b, struct mq_session *s, struct mq_msg *will)
{
    if (s && !session_may(s, (const uint8_t *)will->topic, will->topic_len, MQ_ACL_WRITE)) {
        mq_log(MQ_LOG_NOTICE, "client %s: will on %s not published: acl_file denies write",
               s->client_id, will->topic);
        return;
    }
    broker_publish(b, will, NULL);
}

int will_delay(struct mq_broker *b, struct mq_session *s, struct mq_msg *will, uint32_t delay_s)
{
    struct mq_pending_will *pw = malloc(sizeof(*pw));
    if (!pw)
        return MQ_ERR_NOMEM;
    *pw = (struct mq_pending_will){.next = b->pending_wills,
                                   .session = s,
                                   .will = msg_ref(will),
                                   .due_ms = b->now_ms + (uint64_t)delay_s * 1000u};
    b->pending_wills = pw;
    s->will_pending = true;
    persist_will_put(b, s, will, pw->due_ms);
    return 0;
}

struct mq_msg *will_take(struct mq_broker *b, struct mq_session *s)
{
    for (struct mq_pending_will **pp = &b->pending_wills; *pp; pp = &(*pp)->next) {
        struct mq_pending_will *pw = *pp;
        if (pw->session != s)
            continue;
        *pp = pw->next;
        struct mq_msg *will = pw->will;
        free(pw);
        s->will_pending = false;
        persist_will_delete(b, s);
        return will;
    }
    s->will_pending = false;
    return NULL;
}

void wills_due(struct mq_broker *b)
{
    struct mq_pending_will **pp = &b->pending_wills;
    while (*pp) {
        struct mq_pending_will *pw = *pp;
        if (b->now_ms < pw->due_ms) {
            pp = &pw->next;
            continue;
        }
        *pp = pw->next;
        pw->session->will_pending = false;
        persist_will_delete(b, pw->session);
        /* Publishing routes a message: it never touches this list. */
        will_publish(b, pw->session, pw->will);
        msg_unref(pw->will);
        free(pw);
    }
}

void wills_publish_all(struct mq_broker *b)
{
    struct mq_pending_will *pw;
    while ((pw = b->pending_wills)) {
        b->pending_wills = pw->next;
        pw->session->will_pending = false;
        persist_will_delete(b, pw->session);
        will_publish(b, pw->session, pw->will);
        msg_unref(pw->will);
        free(pw);
    }
}

void wills_free(struct mq_broker *b)
{
    struct mq_pending_will *pw;
    while ((pw = b->pending_wills)) {
        b->pending_wills = pw->next;
        msg_unref(pw->will);
        free(pw);
    }
}

/* Build the will message from CONNECT (validated by the codec): its forwarded properties
 * and Message Expiry Interval with it, its Will Delay Interval on the connection. */
static int make_will(struct mq_conn *c, const struct mq_connect *cp)
{
    if (!cp->will_flag)
        return 0;
    c->will = proto_msg_new(c->broker, cp->will_topic.ptr, cp->will_topic.len, cp->will_payload.ptr,
                            cp->will_payload.len, cp->will_qos, cp->will_retain,
                            conn_v5(c) ? &cp->will_props : NULL);
    if (!c->will)
        return MQ_ERR_NOMEM;
    if (conn_v5(c) && codec_props_has(&cp->will_props, MQ_PROP_WILL_DELAY))
        c->ext->will_delay = cp->will_props.will_delay;
    /* Its Message Expiry Interval counts from when it is published, not from CONNECT:
     * conn_shutdown sets the deadline. */
    if (conn_v5(c) && codec_props_has(&cp->will_props, MQ_PROP_MESSAGE_EXPIRY)) {
        c->ext->will_expiry = cp->will_props.message_expiry;
        c->will->expires_ms = 0;
    }
    return 0;
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
        if (c->ext && c->ext->identity)
            return true;
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, MQ_RC_NOT_AUTHORIZED, id,
               "use_identity_as_username is set but the client presented no certificate");
        return false;
    }
    if (!cp->has_username) {
        if (lc->allow_anonymous)
            return true;
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, MQ_RC_NOT_AUTHORIZED, id,
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
        /* MQTT 5 too: Mosquitto answers 0x87, not 0x86. */
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, MQ_RC_NOT_AUTHORIZED, id, why);
        return false;
    }
    /* The course-firmware profile: a user name is enough, the password (an Adafruit IO
     * key in the firmware) is not checked; the ACL's %u patterns keep users apart. */
    if (lc->accept_any_password || lc->allow_anonymous)
        return true;
    refuse(c, MQ_CONNACK_NOT_AUTHORIZED, MQ_RC_NOT_AUTHORIZED, id,
           "no password_file is configured to check the user name against (set "
           "password_file, accept_any_password true or allow_anonymous true)");
    return false;
}

/* The MQTT 5 properties of an accepted CONNACK into w: the limits midge holds this client
 * to ([MQTT-3.2.2-9] and the rest of 3.2.2.3), each only when it differs from the
 * standard's default. */
static void connack_props(struct mq_conn *c, const struct mq_connect *cp,
                          const struct mq_props *asked, const char *assigned,
                          uint16_t server_keepalive, struct mq_prop_writer *w)
{
    const struct mq_config *cfg = c->broker->cfg;
    const struct mq_conn_ext *x = c->ext;
    uint32_t inflight = cfg ? cfg->max_inflight_messages : 20;
    if (inflight && inflight < 65535)
        codec_prop_put_u16(w, MQ_PROP_RECEIVE_MAXIMUM, (uint16_t)inflight);
    if (cfg && cfg->max_qos < 2)
        codec_prop_put_u8(w, MQ_PROP_MAXIMUM_QOS, (uint8_t)cfg->max_qos);
    if (cfg && !cfg->retain_available)
        codec_prop_put_u8(w, MQ_PROP_RETAIN_AVAILABLE, 0);
    if (cfg && cfg->max_packet_size)
        codec_prop_put_u32(w, MQ_PROP_MAXIMUM_PACKET_SIZE, cfg->max_packet_size);
    if (assigned) /* [MQTT-3.1.3-7], [MQTT-3.2.2-16] */
        codec_prop_put_bytes(w, MQ_PROP_ASSIGNED_CLIENT_ID, assigned, strlen(assigned));
    if (x->alias_max_in)
        codec_prop_put_u16(w, MQ_PROP_TOPIC_ALIAS_MAXIMUM, x->alias_max_in);
    if (server_keepalive != cp->keepalive)
        codec_prop_put_u16(w, MQ_PROP_SERVER_KEEP_ALIVE, server_keepalive);
    /* Response Information only when asked for and configured ([MQTT-3.1.2-28]). */
    if (cfg && cfg->response_information && codec_props_has(asked, MQ_PROP_REQUEST_RESPONSE_INFO) &&
        asked->request_response_info)
        codec_prop_put_bytes(w, MQ_PROP_RESPONSE_INFO, cfg->response_information,
                             strlen(cfg->response_information));
}

/* Take in an MQTT 5 CONNECT's properties: the limits the client sets for what it is sent
 * (Receive Maximum, Maximum Packet Size, Topic Alias Maximum, Request Problem
 * Information) and the Session Expiry Interval. Returns false after refusing the
 * connection (an authentication method: none is configured). */
static bool take_connect_props(struct mq_conn *c, const struct mq_props *pr, const char *id)
{
    const struct mq_config *cfg = c->broker->cfg;
    struct mq_conn_ext *x = c->ext;
    if (codec_props_has(pr, MQ_PROP_AUTH_METHOD)) {
        /* [MQTT-4.12.0-1]: Mosquitto without an authentication plugin answers the same. */
        char why[128];
        snprintf(why, sizeof(why), "authentication method \"%.*s\" is not supported",
                 (int)(pr->auth_method.len < 64 ? pr->auth_method.len : 64),
                 (const char *)pr->auth_method.ptr);
        refuse(c, MQ_CONNACK_NOT_AUTHORIZED, MQ_RC_BAD_AUTHENTICATION_METHOD, id, why);
        return false;
    }
    x->receive_max_out = codec_props_has(pr, MQ_PROP_RECEIVE_MAXIMUM) ? pr->receive_maximum : 65535;
    x->max_packet_out =
        codec_props_has(pr, MQ_PROP_MAXIMUM_PACKET_SIZE) ? pr->maximum_packet_size : 0;
    uint16_t alias_max =
        codec_props_has(pr, MQ_PROP_TOPIC_ALIAS_MAXIMUM) ? pr->topic_alias_maximum : 0;
    uint16_t broker_max = cfg ? cfg->max_topic_alias_broker : 0;
    x->alias_max_out = alias_max < broker_max ? alias_max : broker_max;
    x->alias_max_in = cfg ? cfg->max_topic_alias : 10;
    x->problem_info =
        !codec_props_has(pr, MQ_PROP_REQUEST_PROBLEM_INFO) || pr->request_problem_info;
    x->session_expiry = codec_props_has(pr, MQ_PROP_SESSION_EXPIRY) ? pr->session_expiry : 0;
    return true;
}

void handle_connect(struct mq_conn *c, const struct mq_packet *p, int decode_err)
{
    struct mq_broker *b = c->broker;
    const struct mq_config *cfg = b->cfg;
    const struct mq_connect *cp = &p->u.connect;
    const struct mq_listener_config *lc = c->listener ? c->listener->cfg : NULL;
    bool v5 = p->version == 5;
    char id[96];
    snprintf(id, sizeof(id), "%.*s", (int)(cp->client_id.len < 80 ? cp->client_id.len : 80),
             cp->client_id.ptr ? (const char *)cp->client_id.ptr : "");

    /* The dialect of every answer from here on, the refusals included. */
    c->protocol_level = v5 ? 5 : cp->protocol_level == 3 ? 3 : 4;
    if (v5 && !conn_ext(c)) {
        c->protocol_level = 4; /* no room to speak MQTT 5: refuse the way 3.1.1 would */
        refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "out of memory");
        return;
    }
    if (decode_err == MQ_ERR_BAD_PROTOCOL_LEVEL) { /* [MQTT-3.1.2-2] */
        char why[64];
        snprintf(why, sizeof(why), "unsupported protocol level %u", cp->protocol_level);
        c->protocol_level = 4;
        refuse(c, MQ_CONNACK_BAD_PROTOCOL, MQ_RC_UNSUPPORTED_PROTOCOL_VERSION, "(unknown)", why);
        return;
    }
    if (decode_err && v5) {
        /* A malformed MQTT 5 CONNECT is answered with its reason code, never closed
         * silently ([MQTT-3.1.4-1], [MQTT-4.13.1-1]). */
        char why[128];
        snprintf(why, sizeof(why), "malformed CONNECT: %s", mq_strerror(decode_err));
        c->broker->stats.protocol_errors++;
        refuse(c, 0, codec_connect_refusal(decode_err, p), id[0] ? id : "(unknown)", why);
        return;
    }
    /* MQTT 3.1 requires an id of 1 to 23 characters and has no assigned ids (3.1.1
     * relaxed both): refused with CONNACK 2, as Mosquitto does for an empty one. */
    if (decode_err == MQ_ERR_NO_CLIENT_ID || (cp->protocol_level == 3 && cp->client_id.len == 0)) {
        refuse(c, MQ_CONNACK_ID_REJECTED, 0, "(empty)",
               decode_err ? "MQTT 3.1 CONNECT without a client id"
                          : "zero-length client id (MQTT 3.1 requires 1 to 23 characters)");
        return;
    }
    if (cp->protocol_level == 3 && utf8_chars(cp->client_id) > 23) {
        refuse(c, MQ_CONNACK_ID_REJECTED, 0, id,
               "client id longer than 23 characters (MQTT 3.1 allows 1 to 23; use MQTT 3.1.1)");
        return;
    }
    if (v5 && !take_connect_props(c, &p->props, id))
        return;

    /* Client identifier ([MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.1.3-8]). */
    char auto_id[64];
    const uint8_t *client_id = cp->client_id.ptr;
    uint16_t client_id_len = cp->client_id.len;
    bool assigned = false;
    if (client_id_len == 0) {
        if (cfg && cfg->clientid_prefixes) {
            /* An assigned id would bypass the restriction to known prefixes. */
            refuse(c, MQ_CONNACK_ID_REJECTED, MQ_RC_CLIENT_ID_NOT_VALID, "(empty)",
                   "zero-length client id not allowed with clientid_prefixes");
            return;
        }
        /* 3.1.1 only: MQTT 5 assigns an id whatever Clean Start says. */
        if (!v5 && !cp->clean_session) {
            refuse(c, MQ_CONNACK_ID_REJECTED, 0, "(empty)",
                   "zero-length client id requires clean session 1");
            return;
        }
        if (lc && !lc->allow_zero_length_clientid) {
            refuse(c, MQ_CONNACK_ID_REJECTED, MQ_RC_CLIENT_ID_NOT_VALID, "(empty)",
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
        assigned = true;
        snprintf(id, sizeof(id), "%s", auto_id);
    } else if (cfg && cfg->clientid_prefixes && !has_allowed_prefix(cfg, cp->client_id)) {
        refuse(c, MQ_CONNACK_ID_REJECTED, MQ_RC_CLIENT_ID_NOT_VALID, id,
               "client id does not start with one of clientid_prefixes");
        return;
    }

    /* max_keepalive. MQTT 5 can be told a smaller keepalive (Server Keep Alive), also for a
     * client asking for none. 3.1/3.1.1 cannot: Mosquitto's rule is to refuse, and
     * keepalive 0 (umqtt.simple's default) is always accepted there. */
    uint16_t keepalive = cp->keepalive;
    if (cfg && v5 && cfg->max_keepalive < 65535 &&
        (keepalive == 0 || keepalive > cfg->max_keepalive))
        keepalive = cfg->max_keepalive;
    if (cfg && !v5 && cp->keepalive > cfg->max_keepalive) {
        char why[96];
        snprintf(why, sizeof(why), "keepalive %u s exceeds max_keepalive %u s", cp->keepalive,
                 cfg->max_keepalive);
        refuse(c, MQ_CONNACK_ID_REJECTED, 0, id, why);
        return;
    }

    if (cp->will_flag && cfg) {
        /* The will is a message like any other: a payload over message_size_limit is
         * refused now rather than published later (Mosquitto answers CONNACK 5 too). */
        char why[128];
        if (cfg->message_size_limit && cp->will_payload.len > cfg->message_size_limit) {
            snprintf(why, sizeof(why), "will payload of %u bytes exceeds message_size_limit %u",
                     cp->will_payload.len, cfg->message_size_limit);
            refuse(c, MQ_CONNACK_NOT_AUTHORIZED, MQ_RC_PACKET_TOO_LARGE, id, why);
            return;
        }
        if (cp->will_qos > cfg->max_qos) { /* [MQTT-3.2.2-12] */
            snprintf(why, sizeof(why), "will QoS %u exceeds max_qos %u", cp->will_qos,
                     cfg->max_qos);
            if (v5) {
                refuse(c, 0, MQ_RC_QOS_NOT_SUPPORTED, id, why);
            } else {
                /* 3.1.1 has no code for it: closed without CONNACK, as Mosquitto does. */
                b->stats.protocol_errors++;
                conn_close(c, false, "client %s refused: %s", id, why);
            }
            return;
        }
        if (v5 && cp->will_retain && !cfg->retain_available) { /* [MQTT-3.2.2-13] */
            refuse(c, 0, MQ_RC_RETAIN_NOT_SUPPORTED, id,
                   "retained will but retain_available is false");
            return;
        }
    }

    if (!authenticate(c, cp, id))
        return;
    if (b->memory_exceeded) {
        b->stats.memory_refusals++;
        refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "server over memory_limit");
        return;
    }

    if (make_will(c, cp)) {
        refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "out of memory");
        return;
    }

    /* Takeover: the existing connection with this id is closed ([MQTT-3.1.4-2]; an MQTT 5
     * one is told so with DISCONNECT 0x8E, [MQTT-3.1.4-3]). Its will is published when its
     * session ends here, i.e. when the old connection's session ends with it or the new
     * one starts clean; otherwise the session simply continues on the new connection and
     * the client was never offline, so no will (as Mosquitto does). */
    struct mq_session *s = imap_get(&b->sessions, client_id, client_id_len, broker_session_key);
    if (s && s->conn) {
        struct mq_conn *old = s->conn;
        if (!cfg || cfg->connection_messages)
            mq_log(MQ_LOG_NOTICE, "client %s taken over by %s", s->client_id, c->peer);
        conn_send_disconnect(old, MQ_RC_SESSION_TAKEN_OVER,
                             "another connection took over the client id");
        conn_shutdown(old, s->clean || cp->clean_session);
        s = imap_get(&b->sessions, client_id, client_id_len,
                     broker_session_key); /* a clean one is gone */
    }
    bool session_present = false;
    if (s && cp->clean_session) { /* [MQTT-3.1.2-4] */
        session_end(b, s);
        s = NULL;
    }
    if (s) {
        session_present = true; /* [MQTT-3.2.2-2], [MQTT-3.1.2-5] */
        /* Back within the Will Delay Interval: the old will is not sent ([MQTT-3.1.3-9]). */
        if (s->will_pending)
            msg_unref(will_take(b, s));
    } else {
        s = session_new(client_id, client_id_len, true);
        if (!s || imap_put(&b->sessions, s, broker_session_key)) {
            session_free(s);
            refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "out of memory");
            return;
        }
    }
    /* The Session Expiry Interval: 3.1.1's clean session 0 never expires (but for
     * persistent_client_expiration), 1 ends with the connection. */
    uint32_t expiry = v5 ? c->ext->session_expiry : cp->clean_session ? 0 : MQ_EXPIRY_NEVER;
    if (!expiry)
        persist_session_delete(b, s); /* a stored session that now ends with its connection */
    if (session_set_expiry(s, expiry)) {
        session_end(b, s);
        refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "out of memory");
        return;
    }
    free(s->username);
    s->username = NULL;
    const char *identity = c->ext ? c->ext->identity : NULL;
    if (lc && lc->use_identity_as_username && identity) {
        if (!(s->username = strdup(identity))) {
            session_end(b, s);
            refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "out of memory");
            return;
        }
    } else if (cp->has_username) {
        s->username = malloc((size_t)cp->username.len + 1);
        if (!s->username) {
            session_end(b, s);
            refuse(c, MQ_CONNACK_UNAVAILABLE, MQ_RC_SERVER_UNAVAILABLE, id, "out of memory");
            return;
        }
        memcpy(s->username, cp->username.ptr, cp->username.len);
        s->username[cp->username.len] = '\0';
    }
    s->listener = c->listener;
    s->conn = c;
    c->session = s;
    persist_session_put(b, s);
    c->keepalive = keepalive;
    c->connected = true;
    c->connected_s = (uint32_t)((b->now_ms - b->start_ms) / 1000u);
    c->bridge = cp->bridge;
    c->last_rx_ms = (uint32_t)b->now_ms; /* keepalive counts from here */
    b->stats.clients_total++;
    b->stats.clients_connected++;
    b->stats.clients_by_version[proto_version_index(c->protocol_level)]++;
    if (b->stats.clients_connected > b->stats.clients_maximum)
        b->stats.clients_maximum = b->stats.clients_connected;

    if (v5) {
        uint8_t props[512];
        struct mq_prop_writer w;
        codec_prop_writer_init(&w, props, sizeof props);
        connack_props(c, cp, &p->props, assigned ? auto_id : NULL, keepalive, &w);
        send_connack(c, session_present, MQ_RC_SUCCESS, props,
                     codec_prop_writer_ok(&w) ? w.len : 0);
    } else {
        /* MQTT 3.1 has no session-present flag: byte 1 is reserved there, always 0. */
        send_connack(c, session_present && cp->protocol_level >= 4, MQ_CONNACK_ACCEPTED, NULL,
                     0); /* [MQTT-3.2.0-1] */
    }
    if (!cfg || cfg->connection_messages) {
        char how[64];
        if (v5)
            snprintf(how, sizeof(how), "clean start %d, session expiry %s%" PRIu32 " s",
                     cp->clean_session ? 1 : 0, expiry == MQ_EXPIRY_NEVER ? "never (" : "", expiry);
        else
            snprintf(how, sizeof(how), "clean session %d", cp->clean_session ? 1 : 0);
        if (v5 && expiry == MQ_EXPIRY_NEVER)
            snprintf(how, sizeof(how), "clean start %d, session never expires",
                     cp->clean_session ? 1 : 0);
        mq_log(MQ_LOG_NOTICE, "client %s connected from %s (MQTT %s%s, %s, keepalive %u s%s%s)",
               s->client_id, c->peer,
               v5                        ? "5.0"
               : cp->protocol_level == 3 ? "3.1"
                                         : "3.1.1",
               cp->bridge ? " bridge" : "", how, keepalive,
               session_present ? ", session resumed" : "",
               cp->has_username ? ", with user name" : "");
    }
    if (session_present)
        session_resume_delivery(b, s); /* [MQTT-4.4.0-1] */
}

void handle_disconnect(struct mq_conn *c, uint8_t reason, const struct mq_props *pr)
{
    struct mq_session *s = c->session;
    if (conn_v5(c) && codec_props_has(pr, MQ_PROP_SESSION_EXPIRY)) {
        /* The client may change its Session Expiry Interval on the way out, but not from
         * 0: its session is already gone ([MQTT-3.14.2-2] of the client's side). */
        if (c->ext->session_expiry == 0 && pr->session_expiry != 0) {
            conn_violation(c, MQ_RC_PROTOCOL_ERROR,
                           "protocol error: DISCONNECT sets a Session Expiry Interval after "
                           "CONNECT set 0");
            return;
        }
        c->ext->session_expiry = pr->session_expiry;
        if (!pr->session_expiry)
            persist_session_delete(c->broker, s); /* it now ends with this connection */
        if (session_set_expiry(s, pr->session_expiry)) {
            conn_close(c, true, "out of memory");
            return;
        }
        persist_session_put(c->broker, s);
    }
    if (reason == MQ_RC_NORMAL_DISCONNECTION) {
        /* [MQTT-3.14.4-3], [MQTT-3.1.2-10]: a normal DISCONNECT discards the will. */
        msg_unref(c->will);
        c->will = NULL;
        conn_close(c, false, "DISCONNECT received");
        return;
    }
    /* MQTT 5: 0x04 (disconnect with will message) or an error of the client's: the will
     * goes out as for a lost connection. */
    conn_close(c, true, "DISCONNECT received (0x%02x %s)", reason, codec_reason_name(reason));
}

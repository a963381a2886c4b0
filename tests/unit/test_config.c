/* test_config.c - the mosquitto.conf parser: every option, every message, listener rules.
 *
 * Drives config_parse_string and config_load only; reports are captured through the
 * callback and compared byte for byte. Temporary directories come from mkdtemp and are
 * removed by the test that made them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"

#define MAX_REPORTS 16

struct reports {
    size_t n;
    bool is_error[MAX_REPORTS];
    char line[MAX_REPORTS][512];
};

static void collect(void *ctx, bool is_error, const char *line)
{
    struct reports *r = ctx;
    assert_true(r->n < MAX_REPORTS);
    r->is_error[r->n] = is_error;
    snprintf(r->line[r->n], sizeof r->line[r->n], "%s", line);
    r->n++;
}

static int parse(const char *text, struct mq_config *cfg, struct reports *r)
{
    memset(r, 0, sizeof *r);
    return config_parse_string(text, strlen(text), "midge.conf", cfg, collect, r);
}

/* Parse text that must succeed without any report. */
static void parse_ok(const char *text, struct mq_config *cfg)
{
    struct reports r;
    int rc = parse(text, cfg, &r);
    if (r.n)
        print_error("unexpected report: %s\n", r.line[0]);
    assert_int_equal(rc, 0);
    assert_int_equal(r.n, 0);
}

static void assert_zeroed(const struct mq_config *cfg)
{
    static const struct mq_config zero;
    assert_memory_equal(cfg, &zero, sizeof zero);
}

/* Parse text that must fail with exactly one error, whose text is expected. */
static void expect_error(const char *text, const char *expected)
{
    struct mq_config cfg;
    struct reports r;
    int rc = parse(text, &cfg, &r);
    assert_int_equal(rc, MQ_ERR_CONFIG);
    if (r.n != 1)
        print_error("reports: %zu, first: %s, second: %s\n", r.n, r.line[0], r.line[1]);
    assert_int_equal(r.n, 1);
    assert_true(r.is_error[0]);
    assert_string_equal(r.line[0], expected);
    assert_zeroed(&cfg);
}

/* Parse text that must succeed with exactly one warning. */
static void expect_warning(const char *text, const char *expected)
{
    struct mq_config cfg;
    struct reports r;
    int rc = parse(text, &cfg, &r);
    assert_int_equal(rc, 0);
    assert_int_equal(r.n, 1);
    assert_false(r.is_error[0]);
    assert_string_equal(r.line[0], expected);
    config_free(&cfg);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_tree(const char *dir, const char *const *names)
{
    char path[512];
    for (; *names; names++) {
        snprintf(path, sizeof path, "%s/%s", dir, *names);
        unlink(path);
    }
    rmdir(dir);
}

/* ---- defaults ------------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    struct mq_config cfg;
    (void)state;

    assert_int_equal(config_defaults(&cfg), 0);
    assert_int_equal(cfg.listener_count, 0);
    assert_null(cfg.listeners);
    assert_false(cfg.from_file);
    assert_false(cfg.per_listener_settings);
    assert_true(cfg.allow_zero_length_clientid);
    assert_string_equal(cfg.auto_id_prefix, "auto-");
    assert_null(cfg.clientid_prefixes);
    assert_int_equal(cfg.max_inflight_messages, 20);
    assert_int_equal(cfg.max_queued_messages, 1000);
    assert_int_equal(cfg.max_queued_bytes, 0);
    assert_int_equal(cfg.message_size_limit, 0);
    assert_int_equal(cfg.max_packet_size, 0);
    assert_int_equal(cfg.max_keepalive, 65535);
    assert_true(cfg.retain_available);
    assert_false(cfg.upgrade_outgoing_qos);
    assert_false(cfg.queue_qos0_messages);
    assert_int_equal(cfg.persistent_client_expiration, 0);
    assert_int_equal(cfg.sys_interval, 10);
    assert_false(cfg.persistence);
    assert_null(cfg.persistence_location);
    assert_string_equal(cfg.persistence_file, "midge.db");
    assert_int_equal(cfg.persistence_durability, MQ_DURABILITY_ACK);
    assert_int_equal(cfg.autosave_interval, 1800);
    assert_int_equal(cfg.log_dest, MQ_LOG_DEST_STDERR);
    assert_null(cfg.log_file);
    assert_int_equal(cfg.log_types, MQ_LOG_DEFAULT_TYPES);
    assert_true(cfg.log_timestamp);
    assert_null(cfg.log_timestamp_format);
    assert_true(cfg.connection_messages);
    assert_null(cfg.user);
    assert_null(cfg.pid_file);
    config_free(&cfg);
    assert_zeroed(&cfg);
}

static void check_loopback(const struct mq_config *cfg, uint16_t port, bool anonymous)
{
    assert_int_equal(cfg->listener_count, 2);
    assert_string_equal(cfg->listeners[0].bind_address, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].socket_domain, 4);
    assert_string_equal(cfg->listeners[1].bind_address, "::1");
    assert_int_equal(cfg->listeners[1].socket_domain, 6);
    for (size_t i = 0; i < 2; i++) {
        const struct mq_listener_config *lc = &cfg->listeners[i];
        assert_int_equal(lc->port, port);
        assert_int_equal(lc->allow_anonymous, anonymous);
        assert_int_equal(lc->protocol, MQ_LISTENER_MQTT);
        assert_int_equal(lc->max_connections, -1);
        assert_true(lc->allow_zero_length_clientid);
        assert_string_equal(lc->auto_id_prefix, "auto-");
        assert_null(lc->acl_file);
    }
}

static void test_local_only(void **state)
{
    struct mq_config cfg;
    (void)state;

    assert_int_equal(config_local_only(&cfg, 1884), 0);
    assert_false(cfg.from_file);
    check_loopback(&cfg, 1884, true);
    assert_string_equal(cfg.persistence_file, "midge.db");
    config_free(&cfg);
}

/* A file with no listener, port or bind_address: Mosquitto 2.0's local-only mode. */
static void test_empty_file_is_local_only(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("", &cfg);
    assert_true(cfg.from_file);
    check_loopback(&cfg, 1883, true);
    assert_string_equal(cfg.auto_id_prefix, "auto-");
    assert_string_equal(cfg.persistence_file, "midge.db");
    assert_int_equal(cfg.max_inflight_messages, 20);
    config_free(&cfg);

    parse_ok("# only a comment\n\n   \n\t# indented comment\n", &cfg);
    check_loopback(&cfg, 1883, true);
    config_free(&cfg);
}

static void test_local_only_file_options(void **state)
{
    struct mq_config cfg;
    (void)state;

    /* An explicit allow_anonymous wins over the local-only default. */
    parse_ok("allow_anonymous false\npassword_file /etc/pw\n", &cfg);
    check_loopback(&cfg, 1883, false);
    assert_string_equal(cfg.listeners[0].password_file, "/etc/pw");
    assert_string_equal(cfg.listeners[1].password_file, "/etc/pw");
    config_free(&cfg);

    /* Listener options given without a listener apply to both loopback listeners. */
    parse_ok("max_connections 7\n", &cfg);
    assert_int_equal(cfg.listener_count, 2);
    assert_int_equal(cfg.listeners[0].max_connections, 7);
    assert_int_equal(cfg.listeners[1].max_connections, 7);
    assert_true(cfg.listeners[0].allow_anonymous);
    config_free(&cfg);

    parse_ok("socket_domain ipv4\n", &cfg);
    assert_int_equal(cfg.listener_count, 1);
    assert_string_equal(cfg.listeners[0].bind_address, "127.0.0.1");
    config_free(&cfg);

    parse_ok("socket_domain ipv6\n", &cfg);
    assert_int_equal(cfg.listener_count, 1);
    assert_string_equal(cfg.listeners[0].bind_address, "::1");
    config_free(&cfg);
}

/* ---- every option to its field ------------------------------------------------------ */

static void test_global_options(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("listener 1883\n"
             "allow_zero_length_clientid false\n"
             "auto_id_prefix gen-\n"
             "clientid_prefixes secure-\n"
             "clientid_prefixes test client-\n"
             "max_inflight_messages 0\n"
             "max_queued_messages 5000\n"
             "max_queued_bytes 1099511627776\n"
             "message_size_limit 268435455\n"
             "max_packet_size 1024\n"
             "max_keepalive 300\n"
             "retain_available false\n"
             "upgrade_outgoing_qos true\n"
             "queue_qos0_messages 1\n"
             "persistent_client_expiration 2d\n"
             "sys_interval 0\n"
             "persistence true\n"
             "persistence_location /var/lib/midge/\n"
             "persistence_file broker.db\n"
             "persistence_durability relaxed\n"
             "autosave_interval 60\n"
             "log_timestamp false\n"
             "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
             "connection_messages false\n"
             "user midge\n"
             "pid_file /run/midge.pid\n",
             &cfg);
    assert_false(cfg.allow_zero_length_clientid);
    assert_false(cfg.listeners[0].allow_zero_length_clientid);
    assert_string_equal(cfg.auto_id_prefix, "gen-");
    assert_string_equal(cfg.listeners[0].auto_id_prefix, "gen-");
    assert_non_null(cfg.clientid_prefixes);
    assert_string_equal(cfg.clientid_prefixes[0], "secure-");
    assert_string_equal(cfg.clientid_prefixes[1], "test client-");
    assert_null(cfg.clientid_prefixes[2]);
    assert_int_equal(cfg.max_inflight_messages, 0);
    assert_int_equal(cfg.max_queued_messages, 5000);
    assert_true(cfg.max_queued_bytes == 1099511627776ull);
    assert_int_equal(cfg.message_size_limit, 268435455);
    assert_int_equal(cfg.max_packet_size, 1024);
    assert_int_equal(cfg.max_keepalive, 300);
    assert_false(cfg.retain_available);
    assert_true(cfg.upgrade_outgoing_qos);
    assert_true(cfg.queue_qos0_messages);
    assert_int_equal(cfg.persistent_client_expiration, 2 * 86400);
    assert_int_equal(cfg.sys_interval, 0);
    assert_true(cfg.persistence);
    assert_string_equal(cfg.persistence_location, "/var/lib/midge/");
    assert_string_equal(cfg.persistence_file, "broker.db");
    assert_int_equal(cfg.persistence_durability, MQ_DURABILITY_RELAXED);
    assert_int_equal(cfg.autosave_interval, 60);
    assert_false(cfg.log_timestamp);
    assert_string_equal(cfg.log_timestamp_format, "%Y-%m-%dT%H:%M:%S");
    assert_false(cfg.connection_messages);
    assert_string_equal(cfg.user, "midge");
    assert_string_equal(cfg.pid_file, "/run/midge.pid");
    config_free(&cfg);
}

static void test_listener_options(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("listener 8883 0.0.0.0\n"
             "bind_interface eth0\n"
             "socket_domain ipv4\n"
             "protocol mqtt\n"
             "max_connections 100\n"
             "cafile /etc/ca.pem\n"
             "capath /etc/certs\n"
             "certfile /etc/server.pem\n"
             "keyfile /etc/server.key\n"
             "crlfile /etc/crl.pem\n"
             "tls_version tlsv1.2\n"
             "ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384\n"
             "require_certificate true\n"
             "use_identity_as_username true\n"
             "listener 9001\n"
             "protocol websockets\n"
             "socket_domain ipv6\n"
             "max_connections -1\n",
             &cfg);
    assert_true(cfg.from_file);
    assert_int_equal(cfg.listener_count, 2);
    const struct mq_listener_config *a = &cfg.listeners[0], *b = &cfg.listeners[1];
    assert_int_equal(a->port, 8883);
    assert_string_equal(a->bind_address, "0.0.0.0");
    assert_string_equal(a->bind_interface, "eth0");
    assert_int_equal(a->socket_domain, 4);
    assert_int_equal(a->protocol, MQ_LISTENER_MQTT);
    assert_int_equal(a->max_connections, 100);
    assert_string_equal(a->cafile, "/etc/ca.pem");
    assert_string_equal(a->capath, "/etc/certs");
    assert_string_equal(a->certfile, "/etc/server.pem");
    assert_string_equal(a->keyfile, "/etc/server.key");
    assert_string_equal(a->crlfile, "/etc/crl.pem");
    assert_string_equal(a->tls_version, "tlsv1.2");
    assert_string_equal(a->ciphers, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384");
    assert_true(a->require_certificate);
    assert_true(a->use_identity_as_username);
    assert_false(a->allow_anonymous);

    assert_int_equal(b->port, 9001);
    assert_null(b->bind_address);
    assert_null(b->bind_interface);
    assert_int_equal(b->socket_domain, 6);
    assert_int_equal(b->protocol, MQ_LISTENER_WEBSOCKETS);
    assert_int_equal(b->max_connections, -1);
    assert_null(b->cafile);
    assert_null(b->certfile);
    assert_false(b->require_certificate);
    assert_false(b->use_identity_as_username);
    config_free(&cfg);
}

/* Path options take the rest of the line, inner spaces included, trailing ones trimmed. */
static void test_paths_keep_spaces(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("listener 1883\npassword_file   /etc/my dir/pw file  \n"
             "log_dest file  /var/log/midge broker.log \n",
             &cfg);
    assert_string_equal(cfg.listeners[0].password_file, "/etc/my dir/pw file");
    assert_string_equal(cfg.log_file, "/var/log/midge broker.log");
    config_free(&cfg);

    /* Relative paths are kept as written. */
    parse_ok("listener 1883\nacl_file conf/acl\n", &cfg);
    assert_string_equal(cfg.listeners[0].acl_file, "conf/acl");
    config_free(&cfg);
}

static void test_user_last_wins(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("user a\nuser b\n", &cfg);
    assert_string_equal(cfg.user, "b");
    config_free(&cfg);
}

static void test_persistent_client_expiration(void **state)
{
    static const struct {
        const char *value;
        int64_t seconds;
    } cases[] = {
        {"1h", 3600},       {"2d", 2 * 86400},   {"1w", 7 * 86400},
        {"1m", 30 * 86400}, {"1y", 365 * 86400}, {"36h", 36 * 3600},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[64];
        struct mq_config cfg;
        snprintf(text, sizeof text, "persistent_client_expiration %s\n", cases[i].value);
        parse_ok(text, &cfg);
        assert_int_equal(cfg.persistent_client_expiration, cases[i].seconds);
        config_free(&cfg);
    }
}

static void test_booleans(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("retain_available 0\nlog_timestamp false\nconnection_messages 1\n", &cfg);
    assert_false(cfg.retain_available);
    assert_false(cfg.log_timestamp);
    assert_true(cfg.connection_messages);
    config_free(&cfg);
}

/* tls_handshake_threads: 0 (the loop thread) to 64, as docs/configuration.md says. Each
 * accepted value follows a 7 so that a 0 that was not stored would show. */
static void test_tls_handshake_threads_range(void **state)
{
    static const uint32_t accepted[] = {0, 1, 64};
    static const struct {
        const char *text;
        const char *message;
    } refused[] = {
        {"tls_handshake_threads 65\n",
         "midge.conf:1: tls_handshake_threads: expected a number from 0 to 64, got \"65\""},
        {"tls_handshake_threads -1\n",
         "midge.conf:1: tls_handshake_threads: expected a number from 0 to 64, got \"-1\""},
        {"tls_handshake_threads abc\n",
         "midge.conf:1: tls_handshake_threads: expected a number from 0 to 64, got \"abc\""},
        {"tls_handshake_threads\n", "midge.conf:1: tls_handshake_threads: missing value"},
        {"tls_handshake_threads \t\n", "midge.conf:1: tls_handshake_threads: missing value"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        char text[96];
        struct mq_config cfg;
        snprintf(text, sizeof text, "tls_handshake_threads 7\ntls_handshake_threads %u\n",
                 (unsigned)accepted[i]);
        parse_ok(text, &cfg);
        assert_int_equal(cfg.tls_handshake_threads, accepted[i]);
        config_free(&cfg);
    }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        expect_error(refused[i].text, refused[i].message);
}

/* ---- logging ------------------------------------------------------------------------- */

static void test_log_dest(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("log_dest stdout\n", &cfg);
    assert_int_equal(cfg.log_dest, MQ_LOG_DEST_STDOUT);
    config_free(&cfg);

    parse_ok("log_dest stdout\nlog_dest syslog\nlog_dest topic\nlog_dest file /tmp/m.log\n"
             "log_dest stderr\n",
             &cfg);
    assert_int_equal(cfg.log_dest, MQ_LOG_DEST_STDOUT | MQ_LOG_DEST_SYSLOG | MQ_LOG_DEST_TOPIC |
                                       MQ_LOG_DEST_FILE | MQ_LOG_DEST_STDERR);
    assert_string_equal(cfg.log_file, "/tmp/m.log");
    config_free(&cfg);

    /* none clears what came before, file included; later lines add again. */
    parse_ok("log_dest file /tmp/a.log\nlog_dest none\nlog_dest file /tmp/b.log\n", &cfg);
    assert_int_equal(cfg.log_dest, MQ_LOG_DEST_FILE);
    assert_string_equal(cfg.log_file, "/tmp/b.log");
    config_free(&cfg);

    parse_ok("log_dest stdout\nlog_dest none\n", &cfg);
    assert_int_equal(cfg.log_dest, 0);
    assert_null(cfg.log_file);
    config_free(&cfg);
}

static void test_log_type(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("log_type error\nlog_type warning\n", &cfg);
    assert_int_equal(cfg.log_types, MQ_LOG_ERR | MQ_LOG_WARNING);
    config_free(&cfg);

    parse_ok("log_type notice\nlog_type information\nlog_type debug\nlog_type subscribe\n"
             "log_type unsubscribe\n",
             &cfg);
    assert_int_equal(cfg.log_types, MQ_LOG_NOTICE | MQ_LOG_INFO | MQ_LOG_DEBUG | MQ_LOG_SUBSCRIBE |
                                        MQ_LOG_UNSUBSCRIBE);
    config_free(&cfg);

    parse_ok("log_type all\n", &cfg);
    assert_int_equal(cfg.log_types, MQ_LOG_ALL_TYPES);
    config_free(&cfg);

    parse_ok("log_type all\nlog_type none\nlog_type error\n", &cfg);
    assert_int_equal(cfg.log_types, MQ_LOG_ERR);
    config_free(&cfg);

    parse_ok("log_type none\n", &cfg);
    assert_int_equal(cfg.log_types, 0);
    config_free(&cfg);
}

/* ---- listeners ----------------------------------------------------------------------- */

static void test_port_only(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("port 1884\n", &cfg);
    assert_int_equal(cfg.listener_count, 1);
    assert_int_equal(cfg.listeners[0].port, 1884);
    assert_null(cfg.listeners[0].bind_address);
    assert_false(cfg.listeners[0].allow_anonymous);
    assert_int_equal(cfg.listeners[0].max_connections, -1);
    config_free(&cfg);

    /* bind_address alone: the default listener on 1883 at that address. */
    parse_ok("bind_address 10.0.0.1\n", &cfg);
    assert_int_equal(cfg.listener_count, 1);
    assert_int_equal(cfg.listeners[0].port, 1883);
    assert_string_equal(cfg.listeners[0].bind_address, "10.0.0.1");
    assert_false(cfg.listeners[0].allow_anonymous);
    config_free(&cfg);
}

/* Mosquitto appends the default listener after the `listener` ones. */
static void test_port_and_listener(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("port 1884\nbind_address 127.0.0.1\nmax_connections 3\nlistener 8883\n"
             "max_connections 9\n",
             &cfg);
    assert_int_equal(cfg.listener_count, 2);
    assert_int_equal(cfg.listeners[0].port, 8883);
    assert_int_equal(cfg.listeners[0].max_connections, 9);
    assert_null(cfg.listeners[0].bind_address);
    assert_int_equal(cfg.listeners[1].port, 1884);
    assert_string_equal(cfg.listeners[1].bind_address, "127.0.0.1");
    assert_int_equal(cfg.listeners[1].max_connections, 3);
    config_free(&cfg);

    /* A listener option before the first `listener` creates the default listener too. */
    parse_ok("protocol websockets\nlistener 1884\n", &cfg);
    assert_int_equal(cfg.listener_count, 2);
    assert_int_equal(cfg.listeners[0].port, 1884);
    assert_int_equal(cfg.listeners[0].protocol, MQ_LISTENER_MQTT);
    assert_int_equal(cfg.listeners[1].port, 1883);
    assert_int_equal(cfg.listeners[1].protocol, MQ_LISTENER_WEBSOCKETS);
    config_free(&cfg);

    /* Port 0 is allowed: an ephemeral port for tests. */
    parse_ok("listener 0 127.0.0.1\n", &cfg);
    assert_int_equal(cfg.listener_count, 1);
    assert_int_equal(cfg.listeners[0].port, 0);
    config_free(&cfg);
}

static void test_port_twice_warns(void **state)
{
    (void)state;
    expect_warning("port 1884\nport 1885\n",
                   "midge.conf:2: port: set more than once, the last value is used");
}

static void test_same_port_other_address(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("listener 1883 127.0.0.1\nlistener 1883 ::1\nlistener 1883\n", &cfg);
    assert_int_equal(cfg.listener_count, 3);
    config_free(&cfg);
}

/* per_listener_settings false: the security options apply to every listener, wherever
 * they appear. */
static void test_security_global(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("listener 1883\n"
             "listener 8883\n"
             "allow_anonymous true\n"
             "password_file /etc/pw\n"
             "acl_file /etc/acl\n"
             "allow_zero_length_clientid false\n"
             "auto_id_prefix x-\n",
             &cfg);
    assert_false(cfg.per_listener_settings);
    assert_int_equal(cfg.listener_count, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct mq_listener_config *lc = &cfg.listeners[i];
        assert_true(lc->allow_anonymous);
        assert_string_equal(lc->password_file, "/etc/pw");
        assert_string_equal(lc->acl_file, "/etc/acl");
        assert_false(lc->allow_zero_length_clientid);
        assert_string_equal(lc->auto_id_prefix, "x-");
    }
    assert_ptr_not_equal(cfg.listeners[0].password_file, cfg.listeners[1].password_file);
    config_free(&cfg);

    /* With listeners and no allow_anonymous, anonymous access is refused. */
    parse_ok("listener 1883\n", &cfg);
    assert_false(cfg.listeners[0].allow_anonymous);
    assert_null(cfg.listeners[0].password_file);
    assert_true(cfg.listeners[0].allow_zero_length_clientid);
    assert_string_equal(cfg.listeners[0].auto_id_prefix, "auto-");
    config_free(&cfg);
}

static void test_security_per_listener(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("per_listener_settings true\n"
             "listener 1883\n"
             "allow_anonymous true\n"
             "auto_id_prefix a-\n"
             "listener 8883\n"
             "password_file /etc/pw\n"
             "acl_file /etc/acl\n"
             "allow_zero_length_clientid false\n",
             &cfg);
    assert_true(cfg.per_listener_settings);
    assert_int_equal(cfg.listener_count, 2);
    const struct mq_listener_config *a = &cfg.listeners[0], *b = &cfg.listeners[1];
    assert_true(a->allow_anonymous);
    assert_null(a->password_file);
    assert_null(a->acl_file);
    assert_true(a->allow_zero_length_clientid);
    assert_string_equal(a->auto_id_prefix, "a-");
    assert_false(b->allow_anonymous);
    assert_string_equal(b->password_file, "/etc/pw");
    assert_string_equal(b->acl_file, "/etc/acl");
    assert_false(b->allow_zero_length_clientid);
    assert_string_equal(b->auto_id_prefix, "auto-");
    /* The global copies keep their defaults. */
    assert_true(cfg.allow_zero_length_clientid);
    assert_string_equal(cfg.auto_id_prefix, "auto-");
    config_free(&cfg);

    /* Per-listener security before the first listener goes to the default listener. */
    parse_ok("per_listener_settings true\nallow_anonymous true\nlistener 8883\n", &cfg);
    assert_int_equal(cfg.listener_count, 2);
    assert_int_equal(cfg.listeners[0].port, 8883);
    assert_false(cfg.listeners[0].allow_anonymous);
    assert_int_equal(cfg.listeners[1].port, 1883);
    assert_true(cfg.listeners[1].allow_anonymous);
    config_free(&cfg);
}

/* ---- errors -------------------------------------------------------------------------- */

static void test_error_messages(void **state)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"xyz 1\n", "midge.conf:1: unknown option \"xyz\""},
        {"port=1883\n", "midge.conf:1: unknown option \"port=1883\""},
        {"max_inflight_messages x\n",
         "midge.conf:1: max_inflight_messages: expected a number from 0 to 65535, got \"x\""},
        {"max_inflight_messages 65536\n",
         "midge.conf:1: max_inflight_messages: expected a number from 0 to 65535, got \"65536\""},
        {"max_inflight_messages -1\n",
         "midge.conf:1: max_inflight_messages: expected a number from 0 to 65535, got \"-1\""},
        {"max_inflight_messages 20abc\n",
         "midge.conf:1: max_inflight_messages: expected a number from 0 to 65535, got \"20abc\""},
        {"max_inflight_messages\n", "midge.conf:1: max_inflight_messages: missing value"},
        {"max_inflight_messages 1 2\n",
         "midge.conf:1: max_inflight_messages: unexpected extra value \"2\""},
        {"max_inflight_messages 1 # twenty\n",
         "midge.conf:1: max_inflight_messages: unexpected extra value \"#\" (comments must be on "
         "a line of their own)"},
        {"max_queued_messages 99999999999999999999\n",
         "midge.conf:1: max_queued_messages: expected a number from 0 to 2147483647, got "
         "\"99999999999999999999\""},
        {"max_queued_bytes -5\n",
         "midge.conf:1: max_queued_bytes: expected a number from 0 to 9223372036854775807, got "
         "\"-5\""},
        {"message_size_limit 268435456\n",
         "midge.conf:1: message_size_limit: expected a number from 0 to 268435455, got "
         "\"268435456\""},
        {"max_packet_size 19\n",
         "midge.conf:1: max_packet_size: expected a number from 20 to 268435460, got \"19\""},
        {"max_keepalive 70000\n",
         "midge.conf:1: max_keepalive: expected a number from 0 to 65535, got \"70000\""},
        {"sys_interval 1.5\n",
         "midge.conf:1: sys_interval: expected a number from 0 to 65535, got \"1.5\""},
        {"autosave_interval +5\n",
         "midge.conf:1: autosave_interval: expected a number from 0 to 2147483647, got \"+5\""},
        {"max_connections -2\n",
         "midge.conf:1: max_connections: expected a number from -1 to 2147483647, got \"-2\""},
        {"allow_anonymous yes\n",
         "midge.conf:1: allow_anonymous: expected true or false, got \"yes\""},
        {"allow_anonymous\n", "midge.conf:1: allow_anonymous: missing value"},
        {"allow_anonymous true false\n",
         "midge.conf:1: allow_anonymous: unexpected extra value \"false\""},
        {"retain_available TRUE\n",
         "midge.conf:1: retain_available: expected true or false, got \"TRUE\""},
        {"per_listener_settings maybe\n",
         "midge.conf:1: per_listener_settings: expected true or false, got \"maybe\""},
        {"listener\n", "midge.conf:1: listener: missing value"},
        {"listener 70000\n",
         "midge.conf:1: listener: expected a port number from 0 to 65535, got \"70000\""},
        {"listener -1\n",
         "midge.conf:1: listener: expected a port number from 0 to 65535, got \"-1\""},
        {"listener 1883 0.0.0.0 extra\n",
         "midge.conf:1: listener: unexpected extra value \"extra\""},
        {"listener 1883\nlistener 1883\n", "midge.conf:2: listener: port 1883 is already defined"},
        {"listener 1883 ::1\nlistener 1883 ::1\n",
         "midge.conf:2: listener: port 1883 on ::1 is already defined"},
        {"port abc\n", "midge.conf:1: port: expected a port number from 0 to 65535, got \"abc\""},
        {"port\n", "midge.conf:1: port: missing value"},
        {"port 1 2\n", "midge.conf:1: port: unexpected extra value \"2\""},
        {"socket_domain ipv5\n",
         "midge.conf:1: socket_domain: expected ipv4 or ipv6, got \"ipv5\""},
        {"protocol http\n", "midge.conf:1: protocol: expected mqtt or websockets, got \"http\""},
        {"persistence_durability sync\n",
         "midge.conf:1: persistence_durability: expected ack or relaxed, got \"sync\""},
        {"protocol\n", "midge.conf:1: protocol: missing value"},
        {"log_dest\n", "midge.conf:1: log_dest: missing value"},
        {"log_dest journal\n",
         "midge.conf:1: log_dest: expected stdout, stderr, syslog, file, topic or none, got "
         "\"journal\""},
        {"log_dest stdout stderr\n", "midge.conf:1: log_dest: unexpected extra value \"stderr\""},
        {"log_dest file\n", "midge.conf:1: log_dest: missing path after \"file\""},
        {"log_dest file /a\nlog_dest file /b\n",
         "midge.conf:2: log_dest: only one file destination is allowed, already set to \"/a\""},
        {"log_type chatty\n",
         "midge.conf:1: log_type: expected error, warning, notice, information, debug, "
         "subscribe, unsubscribe, all or none, got \"chatty\""},
        {"log_type\n", "midge.conf:1: log_type: missing value"},
        {"password_file\n", "midge.conf:1: password_file: missing value"},
        {"password_file /a\npassword_file /b\n",
         "midge.conf:2: password_file: duplicate value, already set to \"/a\""},
        {"listener 1\ncafile /a\ncafile /b\n",
         "midge.conf:3: cafile: duplicate value, already set to \"/a\""},
        {"persistent_client_expiration 5\n",
         "midge.conf:1: persistent_client_expiration: expected a duration like 30s, 1h, 2d, 1w, "
         "1m or 1y, got \"5\""},
        {"persistent_client_expiration 0d\n",
         "midge.conf:1: persistent_client_expiration: expected a duration like 30s, 1h, 2d, 1w, "
         "1m or 1y, got \"0d\""},
        {"persistent_client_expiration -1d\n",
         "midge.conf:1: persistent_client_expiration: expected a duration like 30s, 1h, 2d, 1w, "
         "1m or 1y, got \"-1d\""},
        {"persistent_client_expiration d\n",
         "midge.conf:1: persistent_client_expiration: expected a duration like 30s, 1h, 2d, 1w, "
         "1m or 1y, got \"d\""},
        {"persistent_client_expiration 1x\n",
         "midge.conf:1: persistent_client_expiration: expected a duration like 30s, 1h, 2d, 1w, "
         "1m or 1y, got \"1x\""},
        {"persistent_client_expiration 99999999999999999y\n",
         "midge.conf:1: persistent_client_expiration: expected a duration like 30s, 1h, 2d, 1w, "
         "1m or 1y, got \"99999999999999999y\""},
        {"persistent_client_expiration\n",
         "midge.conf:1: persistent_client_expiration: missing value"},
        {"allow_anonymous true\nper_listener_settings true\n",
         "midge.conf:2: per_listener_settings: must come before any allow_anonymous, "
         "password_file, acl_file, allow_zero_length_clientid or auto_id_prefix line"},
        {"clientid_prefixes\n", "midge.conf:1: clientid_prefixes: missing value"},
        {"include_dir\n", "midge.conf:1: include_dir: missing value"},
        {"include_dir /nonexistent/midge.d\n",
         "midge.conf:1: include_dir: cannot open directory /nonexistent/midge.d: No such file or "
         "directory"},
        /* Line numbers count comments, blank lines and CRLF lines. */
        {"# comment\n\n  \r\nlistener 1883\r\n\tbogus\r\n",
         "midge.conf:5: unknown option \"bogus\""},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(cases[i].text, cases[i].message);
}

static void test_nul_byte(void **state)
{
    static const char text[] = "listener 1883\nuser a\0b\nmax_keepalive 5\n";
    struct mq_config cfg;
    struct reports r = {0};
    (void)state;

    int rc = config_parse_string(text, sizeof text - 1, "midge.conf", &cfg, collect, &r);
    assert_int_equal(rc, MQ_ERR_CONFIG);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.line[0], "midge.conf:2: line contains a NUL byte");
    assert_zeroed(&cfg);
}

/* Every error in the file is reported, not only the first; warnings too. */
static void test_all_errors_collected(void **state)
{
    struct mq_config cfg;
    struct reports r;
    (void)state;

    int rc = parse("listener 1883\n"
                   "max_inflight_messages x\n"
                   "mount_point x/\n"
                   "unknown_thing 1\n"
                   "password_file /etc/pw\n"
                   "allow_anonymous maybe\n",
                   &cfg, &r);
    assert_int_equal(rc, MQ_ERR_CONFIG);
    assert_int_equal(r.n, 4);
    assert_string_equal(
        r.line[0],
        "midge.conf:2: max_inflight_messages: expected a number from 0 to 65535, got \"x\"");
    assert_true(r.is_error[0]);
    assert_string_equal(r.line[1], "midge.conf:3: mount_point: not supported by midge, ignored");
    assert_false(r.is_error[1]);
    assert_string_equal(r.line[2], "midge.conf:4: unknown option \"unknown_thing\"");
    assert_string_equal(r.line[3],
                        "midge.conf:6: allow_anonymous: expected true or false, got \"maybe\"");
    assert_zeroed(&cfg);
}

static void test_long_values_are_truncated_in_messages(void **state)
{
    char text[1200];
    struct mq_config cfg;
    struct reports r;
    (void)state;

    memcpy(text, "max_keepalive ", 14);
    memset(text + 14, '9', 1000);
    text[1014] = '\0';
    assert_int_equal(parse(text, &cfg, &r), MQ_ERR_CONFIG);
    assert_int_equal(r.n, 1);
    assert_true(strlen(r.line[0]) < 300);
}

/* ---- warnings ------------------------------------------------------------------------ */

static void test_unsupported_options_warn(void **state)
{
    static const char *const names[] = {
        "plugin",
        "auth_plugin",
        "auth_opt_db_host",
        "plugin_opt_x",
        "psk_hint",
        "psk_file",
        "http_dir",
        "websockets_log_level",
        "websockets_headers_size",
        "check_retain_source",
        "set_tcp_nodelay",
        "mount_point",
        "use_username_as_clientid",
        "log_facility",
        "allow_duplicate_messages",
        "autosave_on_changes",
        "max_inflight_bytes",
    };
    (void)state;

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char text[128], expected[192];
        snprintf(text, sizeof text, "listener 1883\n%s some value\n", names[i]);
        snprintf(expected, sizeof expected, "midge.conf:2: %s: not supported by midge, ignored",
                 names[i]);
        expect_warning(text, expected);
    }
    expect_warning("log_dest dlt\n", "midge.conf:1: log_dest: dlt not supported by midge, ignored");
    expect_warning("log_type websockets\n",
                   "midge.conf:1: log_type: websockets not supported by midge, ignored");
}

/* ---- line syntax --------------------------------------------------------------------- */

static void test_crlf_and_last_line(void **state)
{
    struct mq_config cfg;
    (void)state;

    parse_ok("listener 1883\r\nmax_keepalive 60\r\nuser midge\r\n", &cfg);
    assert_int_equal(cfg.max_keepalive, 60);
    assert_string_equal(cfg.user, "midge");
    config_free(&cfg);

    parse_ok("listener 1883\nmax_keepalive 61", &cfg);
    assert_int_equal(cfg.max_keepalive, 61);
    config_free(&cfg);

    parse_ok("listener 1883\nuser midge", &cfg);
    assert_string_equal(cfg.user, "midge");
    config_free(&cfg);

    /* Indentation, tabs and trailing blanks. */
    parse_ok("listener\t1883   \n    max_keepalive\t \t62  \t\n\t# note\n", &cfg);
    assert_int_equal(cfg.listeners[0].port, 1883);
    assert_int_equal(cfg.max_keepalive, 62);
    config_free(&cfg);
}

/* The text need not be NUL-terminated: only len bytes are read. */
static void test_length_bounded(void **state)
{
    static const char text[] = "max_keepalive 12345";
    struct mq_config cfg;
    struct reports r = {0};
    (void)state;

    assert_int_equal(config_parse_string(text, 16, "x.conf", &cfg, collect, &r), 0);
    assert_int_equal(cfg.max_keepalive, 12);
    config_free(&cfg);

    /* A NULL report callback is allowed. */
    assert_int_equal(config_parse_string("bogus", 5, "x.conf", &cfg, NULL, NULL), MQ_ERR_CONFIG);
    assert_zeroed(&cfg);
}

/* ---- include_dir --------------------------------------------------------------------- */

static void test_include_dir(void **state)
{
    static const char *const files[] = {"b.conf", "a.conf",     "Z.conf", "notes.txt",
                                        ".conf",  "c.conf.bak", NULL};
    char dir[] = "/tmp/midge-test-config-XXXXXX";
    char text[256];
    struct mq_config cfg;
    (void)state;

    assert_non_null(mkdtemp(dir));
    write_file(dir, "b.conf", "listener 2002\nmax_connections 2\n");
    write_file(dir, "a.conf", "listener 2001\n");
    write_file(dir, "Z.conf", "listener 2000\n");
    write_file(dir, "notes.txt", "not a config\n");
    write_file(dir, ".conf", "not a config either\n");
    write_file(dir, "c.conf.bak", "bogus\n");

    /* Sorted byte order; options after include_dir go back to the main file's listener. */
    snprintf(text, sizeof text, "listener 1999\ninclude_dir %s\nmax_connections 9\n", dir);
    parse_ok(text, &cfg);
    assert_int_equal(cfg.listener_count, 4);
    assert_int_equal(cfg.listeners[0].port, 1999);
    assert_int_equal(cfg.listeners[0].max_connections, 9);
    assert_int_equal(cfg.listeners[1].port, 2000);
    assert_int_equal(cfg.listeners[2].port, 2001);
    assert_int_equal(cfg.listeners[3].port, 2002);
    assert_int_equal(cfg.listeners[3].max_connections, 2);
    config_free(&cfg);

    /* A trailing slash on the directory is fine. */
    snprintf(text, sizeof text, "include_dir %s/\n", dir);
    parse_ok(text, &cfg);
    assert_int_equal(cfg.listener_count, 3);
    config_free(&cfg);

    remove_tree(dir, files);
}

static void test_include_dir_messages(void **state)
{
    static const char *const files[] = {"a.conf", "b.conf", NULL};
    char dir[] = "/tmp/midge-test-config-XXXXXX";
    char text[256], expected[2][512];
    struct mq_config cfg;
    struct reports r;
    (void)state;

    assert_non_null(mkdtemp(dir));
    write_file(dir, "a.conf", "# a\nlistener 1883\nmax_keepalive nope\n");
    write_file(dir, "b.conf", "include_dir /etc\n");
    snprintf(text, sizeof text, "\ninclude_dir %s\nbogus\n", dir);
    assert_int_equal(parse(text, &cfg, &r), MQ_ERR_CONFIG);
    assert_int_equal(r.n, 3);
    snprintf(expected[0], sizeof expected[0],
             "%s/a.conf:3: max_keepalive: expected a number from 0 to 65535, got \"nope\"", dir);
    snprintf(expected[1], sizeof expected[1],
             "%s/b.conf:1: include_dir: only read from the main configuration file, ignored", dir);
    assert_string_equal(r.line[0], expected[0]);
    assert_true(r.is_error[0]);
    assert_string_equal(r.line[1], expected[1]);
    assert_false(r.is_error[1]);
    /* The main file's line count resumes after the include. */
    assert_string_equal(r.line[2], "midge.conf:3: unknown option \"bogus\"");
    assert_zeroed(&cfg);
    remove_tree(dir, files);
}

/* Each file starts in the default listener's scope (Mosquitto does the same). */
static void test_include_dir_scope(void **state)
{
    static const char *const files[] = {"a.conf", NULL};
    char dir[] = "/tmp/midge-test-config-XXXXXX";
    char text[256];
    struct mq_config cfg;
    (void)state;

    assert_non_null(mkdtemp(dir));
    write_file(dir, "a.conf", "max_connections 5\n");
    snprintf(text, sizeof text, "listener 1884\ninclude_dir %s\n", dir);
    parse_ok(text, &cfg);
    assert_int_equal(cfg.listener_count, 2);
    assert_int_equal(cfg.listeners[0].port, 1884);
    assert_int_equal(cfg.listeners[0].max_connections, -1);
    assert_int_equal(cfg.listeners[1].port, 1883);
    assert_int_equal(cfg.listeners[1].max_connections, 5);
    config_free(&cfg);
    remove_tree(dir, files);
}

/* ---- config_load --------------------------------------------------------------------- */

static void test_load_missing_file(void **state)
{
    struct mq_config cfg;
    struct reports r = {0};
    (void)state;

    assert_int_equal(config_load("/nonexistent/midge.conf", &cfg, collect, &r), MQ_ERR_CONFIG);
    assert_int_equal(r.n, 1);
    assert_true(r.is_error[0]);
    assert_string_equal(r.line[0],
                        "cannot open /nonexistent/midge.conf: No such file or directory");
    assert_zeroed(&cfg);
}

static void test_load_directory(void **state)
{
    char dir[] = "/tmp/midge-test-config-XXXXXX";
    char expected[256];
    struct mq_config cfg;
    struct reports r = {0};
    (void)state;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(config_load(dir, &cfg, collect, &r), MQ_ERR_CONFIG);
    assert_int_equal(r.n, 1);
    snprintf(expected, sizeof expected, "cannot read %s: Is a directory", dir);
    assert_string_equal(r.line[0], expected);
    assert_zeroed(&cfg);
    rmdir(dir);
}

static void test_load_file(void **state)
{
    static const char *const files[] = {"midge.conf", NULL};
    char dir[] = "/tmp/midge-test-config-XXXXXX";
    char path[256], expected[512];
    struct mq_config cfg;
    struct reports r = {0};
    (void)state;

    assert_non_null(mkdtemp(dir));
    write_file(dir, "midge.conf", "listener 1885\nallow_anonymous true\nsys_interval 0\n");
    snprintf(path, sizeof path, "%s/midge.conf", dir);
    assert_int_equal(config_load(path, &cfg, collect, &r), 0);
    assert_int_equal(r.n, 0);
    assert_true(cfg.from_file);
    assert_int_equal(cfg.listener_count, 1);
    assert_int_equal(cfg.listeners[0].port, 1885);
    assert_true(cfg.listeners[0].allow_anonymous);
    assert_int_equal(cfg.sys_interval, 0);
    config_free(&cfg);

    /* Messages name the path as given. */
    write_file(dir, "midge.conf", "listener 1885\nmax_keepalive x\n");
    assert_int_equal(config_load(path, &cfg, collect, &r), MQ_ERR_CONFIG);
    snprintf(expected, sizeof expected,
             "%s:2: max_keepalive: expected a number from 0 to 65535, got \"x\"", path);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.line[0], expected);
    remove_tree(dir, files);
}

/* ---- bridges ------------------------------------------------------------------------- */

#define BRIDGE_HEAD "connection b1\naddress 10.0.0.1\n"

static void test_bridge_defaults(void **state)
{
    (void)state;
    struct mq_config cfg;
    parse_ok("connection cloud\naddress broker.example.com\ntopic sensors/#\n", &cfg);
    assert_int_equal(cfg.bridge_count, 1);
    const struct mq_bridge_config *bc = &cfg.bridges[0];
    assert_string_equal(bc->name, "cloud");
    assert_string_equal(bc->file, "midge.conf");
    assert_int_equal(bc->line, 1);
    assert_int_equal(bc->address_count, 1);
    assert_string_equal(bc->addresses[0].host, "broker.example.com");
    assert_int_equal(bc->addresses[0].port, 1883);
    assert_int_equal(bc->addresses[0].scheme, MQ_BRIDGE_MQTT);
    assert_null(bc->addresses[0].path);
    assert_int_equal(bc->topic_count, 1);
    assert_string_equal(bc->topics[0].pattern, "sensors/#");
    assert_int_equal(bc->topics[0].direction, MQ_BRIDGE_OUT);
    assert_int_equal(bc->topics[0].qos, 0);
    assert_string_equal(bc->topics[0].local, "sensors/#");
    assert_string_equal(bc->topics[0].remote, "sensors/#");
    /* mosquitto.conf(5)'s defaults. */
    assert_false(bc->round_robin);
    assert_false(bc->cleansession);
    assert_int_equal(bc->local_cleansession, 0); /* as cleansession */
    assert_int_equal(bc->keepalive, 60);
    assert_int_equal(bc->restart_base, 5);
    assert_int_equal(bc->restart_cap, 30);
    assert_int_equal(bc->start_type, MQ_BRIDGE_AUTOMATIC);
    assert_int_equal(bc->idle_timeout, 60);
    assert_int_equal(bc->threshold, 10);
    assert_true(bc->notifications);
    assert_false(bc->notifications_local_only);
    assert_string_equal(bc->notification_topic, "$SYS/broker/connection/cloud/state");
    assert_true(bc->try_private);
    assert_int_equal(bc->protocol_version, 4);
    assert_true(bc->outgoing_retain);
    assert_true(bc->attempt_unsubscribe);
    assert_int_equal(bc->session_expiry, -1);
    assert_false(config_bridge_tls(bc));
    /* remote_clientid is "<hostname>.<name>", local_clientid "local.<remote_clientid>". */
    char host[256], want[300];
    assert_int_equal(gethostname(host, sizeof host), 0);
    snprintf(want, sizeof want, "%s.cloud", host);
    assert_string_equal(bc->remote_clientid, want);
    snprintf(want, sizeof want, "local.%s.cloud", host);
    assert_string_equal(bc->local_clientid, want);
    config_free(&cfg);
}

static void test_bridge_every_option(void **state)
{
    (void)state;
    struct mq_config cfg;
    parse_ok("listener 0 127.0.0.1\n"
             "connection hive\n"
             "addresses a.example.com:8883 [::1]:1884 ::1:1885\n"
             "address wss://ws.example.com/mqtt ws://10.1.2.3:8080\n"
             "round_robin true\n"
             "topic a/# both 2\n"
             "remote_username user\n"
             "remote_password secret\n"
             "remote_clientid rid\n"
             "local_clientid lid\n"
             "cleansession true\n"
             "local_cleansession false\n"
             "keepalive_interval 30\n"
             "restart_timeout 10 60\n"
             "start_type lazy\n"
             "idle_timeout 120\n"
             "threshold 5\n"
             "notifications false\n"
             "notifications_local_only true\n"
             "notification_topic state/hive\n"
             "try_private false\n"
             "bridge_protocol_version mqttv50\n"
             "bridge_outgoing_retain false\n"
             "bridge_attempt_unsubscribe false\n"
             "bridge_max_packet_size 10000\n"
             "bridge_receive_maximum 50\n"
             "bridge_session_expiry_interval 3600\n"
             "bridge_bind_address 127.0.0.1\n"
             "bridge_cafile /etc/ca.pem\n"
             "bridge_capath /etc/ssl/certs\n"
             "bridge_certfile /etc/c.pem\n"
             "bridge_keyfile /etc/k.pem\n"
             "bridge_insecure true\n"
             "bridge_tls_version tlsv1.3\n"
             "bridge_alpn mqtt\n"
             "bridge_require_ocsp false\n",
             &cfg);
    const struct mq_bridge_config *bc = &cfg.bridges[0];
    assert_int_equal(bc->address_count, 5);
    assert_string_equal(bc->addresses[0].host, "a.example.com");
    assert_int_equal(bc->addresses[0].port, 8883);
    assert_string_equal(bc->addresses[1].host, "::1");
    assert_int_equal(bc->addresses[1].port, 1884);
    assert_string_equal(bc->addresses[2].host, "::1");
    assert_int_equal(bc->addresses[2].port, 1885);
    assert_int_equal(bc->addresses[3].scheme, MQ_BRIDGE_WSS);
    assert_string_equal(bc->addresses[3].host, "ws.example.com");
    assert_int_equal(bc->addresses[3].port, 443);
    assert_string_equal(bc->addresses[3].path, "/mqtt");
    assert_int_equal(bc->addresses[4].scheme, MQ_BRIDGE_WS);
    assert_int_equal(bc->addresses[4].port, 8080);
    assert_string_equal(bc->addresses[4].path, "/mqtt"); /* the default path */
    assert_true(bc->round_robin);
    assert_int_equal(bc->topics[0].direction, MQ_BRIDGE_BOTH);
    assert_int_equal(bc->topics[0].qos, 2);
    assert_string_equal(bc->remote_username, "user");
    assert_string_equal(bc->remote_password, "secret");
    assert_string_equal(bc->remote_clientid, "rid");
    assert_string_equal(bc->local_clientid, "lid");
    assert_true(bc->cleansession);
    assert_int_equal(bc->local_cleansession, 0);
    assert_int_equal(bc->keepalive, 30);
    assert_int_equal(bc->restart_base, 10);
    assert_int_equal(bc->restart_cap, 60);
    assert_int_equal(bc->start_type, MQ_BRIDGE_LAZY);
    assert_int_equal(bc->idle_timeout, 120);
    assert_int_equal(bc->threshold, 5);
    assert_false(bc->notifications);
    assert_true(bc->notifications_local_only);
    assert_string_equal(bc->notification_topic, "state/hive");
    assert_false(bc->try_private);
    assert_int_equal(bc->protocol_version, 5);
    assert_false(bc->outgoing_retain);
    assert_false(bc->attempt_unsubscribe);
    assert_int_equal(bc->max_packet_size, 10000);
    assert_int_equal(bc->receive_maximum, 50);
    assert_int_equal(bc->session_expiry, 3600);
    assert_string_equal(bc->bind_address, "127.0.0.1");
    assert_string_equal(bc->cafile, "/etc/ca.pem");
    assert_string_equal(bc->capath, "/etc/ssl/certs");
    assert_string_equal(bc->certfile, "/etc/c.pem");
    assert_string_equal(bc->keyfile, "/etc/k.pem");
    assert_true(bc->insecure);
    assert_string_equal(bc->tls_version, "tlsv1.3");
    assert_string_equal(bc->alpn, "mqtt");
    assert_true(config_bridge_tls(bc));
    /* Bridge options do not touch the listener before them. */
    assert_int_equal(cfg.listener_count, 1);
    assert_null(cfg.listeners[0].cafile);
    config_free(&cfg);

    /* The old names and a constant restart_timeout; start types; versions. */
    parse_ok(BRIDGE_HEAD "topic x\nclientid c\nusername u\npassword p\nrestart_timeout 20\n"
                         "start_type once\nbridge_protocol_version mqttv31\n",
             &cfg);
    bc = &cfg.bridges[0];
    assert_string_equal(bc->remote_clientid, "c");
    assert_string_equal(bc->local_clientid, "local.c");
    assert_string_equal(bc->remote_username, "u");
    assert_string_equal(bc->remote_password, "p");
    assert_int_equal(bc->restart_base, 20);
    assert_int_equal(bc->restart_cap, 0);
    assert_int_equal(bc->start_type, MQ_BRIDGE_ONCE);
    assert_int_equal(bc->protocol_version, 3);
    config_free(&cfg);

    /* PSK; two bridges in order. */
    parse_ok(BRIDGE_HEAD "topic x\nbridge_identity me\nbridge_psk 0123abcdEF\n"
                         "connection b2\naddress h2\ntopic y in\n",
             &cfg);
    assert_int_equal(cfg.bridge_count, 2);
    assert_string_equal(cfg.bridges[0].psk, "0123abcdEF");
    assert_true(config_bridge_tls(&cfg.bridges[0]));
    assert_string_equal(cfg.bridges[1].name, "b2");
    assert_int_equal(cfg.bridges[1].topics[0].direction, MQ_BRIDGE_IN);
    config_free(&cfg);
}

/* Every topic form of mosquitto.conf(5)'s table, "" markers included. */
static void test_bridge_topic_forms(void **state)
{
    (void)state;
    static const struct {
        const char *line, *local, *remote, *pattern, *lp, *rp;
        uint8_t dir, qos;
    } ok[] = {
        {"topic a/#", "a/#", "a/#", "a/#", NULL, NULL, MQ_BRIDGE_OUT, 0},
        {"topic a/# in", "a/#", "a/#", "a/#", NULL, NULL, MQ_BRIDGE_IN, 0},
        {"topic a/+/c out 1", "a/+/c", "a/+/c", "a/+/c", NULL, NULL, MQ_BRIDGE_OUT, 1},
        {"topic pattern both 2 L/ R/", "L/pattern", "R/pattern", "pattern", "L/", "R/",
         MQ_BRIDGE_BOTH, 2},
        {"topic pattern out 0 L/ \"\"", "L/pattern", "pattern", "pattern", "L/", NULL,
         MQ_BRIDGE_OUT, 0},
        {"topic pattern in 1 \"\" R/", "pattern", "R/pattern", "pattern", NULL, "R/", MQ_BRIDGE_IN,
         1},
        {"topic pattern in 1 \"\" \"\"", "pattern", "pattern", "pattern", NULL, NULL, MQ_BRIDGE_IN,
         1},
        {"topic \"\" out 1 local remote", "local", "remote", NULL, "local", "remote", MQ_BRIDGE_OUT,
         1},
        {"topic # both 2 local/topic/ remote/topic/", "local/topic/#", "remote/topic/#", "#",
         "local/topic/", "remote/topic/", MQ_BRIDGE_BOTH, 2},
        {"topic clients/total in 0 test/mosquitto/org/ $SYS/broker/",
         "test/mosquitto/org/clients/total", "$SYS/broker/clients/total", "clients/total",
         "test/mosquitto/org/", "$SYS/broker/", MQ_BRIDGE_IN, 0},
        /* Four values: a local prefix, no remote one. */
        {"topic t in 0 L/", "L/t", "t", "t", "L/", NULL, MQ_BRIDGE_IN, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, BRIDGE_HEAD "%s\n", ok[i].line);
        struct mq_config cfg;
        parse_ok(text, &cfg);
        const struct mq_bridge_topic *t = &cfg.bridges[0].topics[0];
        assert_string_equal(t->local, ok[i].local);
        assert_string_equal(t->remote, ok[i].remote);
        if (ok[i].pattern)
            assert_string_equal(t->pattern, ok[i].pattern);
        else
            assert_null(t->pattern);
        if (ok[i].lp)
            assert_string_equal(t->local_prefix, ok[i].lp);
        else
            assert_null(t->local_prefix);
        if (ok[i].rp)
            assert_string_equal(t->remote_prefix, ok[i].rp);
        else
            assert_null(t->remote_prefix);
        assert_int_equal(t->direction, ok[i].dir);
        assert_int_equal(t->qos, ok[i].qos);
        config_free(&cfg);
    }
    /* The invalid rows of the table, and other bad lines. */
    expect_error(BRIDGE_HEAD "topic \"\" out 0 local \"\"\n",
                 "midge.conf:3: topic: with \"\" as the pattern both a local and a remote prefix "
                 "are needed (the prefixes are then the whole topics)");
    expect_error(BRIDGE_HEAD "topic \"\" out 0 \"\" remote\n",
                 "midge.conf:3: topic: with \"\" as the pattern both a local and a remote prefix "
                 "are needed (the prefixes are then the whole topics)");
    expect_error(BRIDGE_HEAD "topic \"\" out 0 \"\" \"\"\n",
                 "midge.conf:3: topic: with \"\" as the pattern both a local and a remote prefix "
                 "are needed (the prefixes are then the whole topics)");
    expect_error(BRIDGE_HEAD "topic \"\"\n",
                 "midge.conf:3: topic: with \"\" as the pattern both a local and a remote prefix "
                 "are needed (the prefixes are then the whole topics)");
    expect_error(BRIDGE_HEAD "topic a sideways\n",
                 "midge.conf:3: topic: expected in, out or both after the pattern, got "
                 "\"sideways\"");
    expect_error(BRIDGE_HEAD "topic a in 3\n",
                 "midge.conf:3: topic: expected a QoS of 0, 1 or 2, got \"3\"");
    expect_error(BRIDGE_HEAD "topic a/#/b\n",
                 "midge.conf:3: topic: \"a/#/b\" is not a valid topic filter");
    expect_error(BRIDGE_HEAD "topic a in 0 L/+/ R/\n",
                 "midge.conf:3: topic: the local prefix \"L/+/\" is not a valid topic name (no "
                 "wildcards)");
    expect_error(BRIDGE_HEAD "topic a in 0 L/ R/#\n",
                 "midge.conf:3: topic: the remote prefix \"R/#\" is not a valid topic name (no "
                 "wildcards)");
    expect_error(BRIDGE_HEAD "topic a in 0 L R S T\n",
                 "midge.conf:3: topic: 7 values, at most 5 are allowed (pattern, direction, QoS, "
                 "local prefix, remote prefix)");
    expect_error(BRIDGE_HEAD "topic\n", "midge.conf:3: topic: missing value");
    expect_error(BRIDGE_HEAD "topic a both 0 \"\" $share/g/\n",
                 "midge.conf:3: topic: a $share/ remote side only works for in lines (messages "
                 "are not published to a shared subscription)");
}

static void test_bridge_errors(void **state)
{
    (void)state;
    expect_error("topic a/#\n", "midge.conf:1: topic: a bridge option outside a bridge section "
                                "(start one with \"connection NAME\")");
    expect_error("cleansession true\n",
                 "midge.conf:1: cleansession: a bridge option outside a bridge section (start "
                 "one with \"connection NAME\")");
    expect_error("connection a\naddress h\ntopic t\nconnection a\naddress h\ntopic t\n",
                 "midge.conf:4: connection: a bridge named \"a\" is already defined");
    expect_error("connection a/b\naddress h\ntopic t\n",
                 "midge.conf:1: connection: the name \"a/b\" may not contain '+', '#', '/' or "
                 "control characters (it is part of the notification topic)");
    expect_error("connection a\ntopic t\n",
                 "midge.conf:1: connection a: no address (add \"address host[:port]\")");
    expect_error("connection a\naddress h\n",
                 "midge.conf:1: connection a: no topic (add at least one \"topic pattern "
                 "[in|out|both]\")");
    expect_error(BRIDGE_HEAD "topic t\nremote_password p\n",
                 "midge.conf:1: connection b1: remote_password is set but remote_username is "
                 "not");
    expect_error(BRIDGE_HEAD "topic t\nbridge_cafile ca\nbridge_certfile c\n",
                 "midge.conf:1: connection b1: bridge_certfile is set but bridge_keyfile is not "
                 "(a client certificate needs both)");
    expect_error(BRIDGE_HEAD "topic t\nbridge_insecure true\n",
                 "midge.conf:1: connection b1: bridge_insecure is set but neither bridge_cafile "
                 "nor bridge_capath is: the connection would not use TLS (add bridge_capath "
                 "/etc/ssl/certs for the system's CAs, or remove bridge_insecure)");
    expect_error(BRIDGE_HEAD "topic t\nbridge_psk 00ff\n",
                 "midge.conf:1: connection b1: bridge_psk is set but bridge_identity is not (PSK "
                 "needs both)");
    expect_error(BRIDGE_HEAD "topic t\nbridge_psk 00ff\nbridge_identity i\nbridge_cafile c\n",
                 "midge.conf:1: connection b1: bridge_psk and certificates (bridge_cafile, "
                 "bridge_capath, bridge_certfile) are both set: use one or the other");
    expect_error(BRIDGE_HEAD "topic t\nbridge_psk 0x00\n",
                 "midge.conf:4: bridge_psk: expected the key in hexadecimal (an even number of "
                 "0-9a-f, at most 512, no \"0x\")");
    expect_error(BRIDGE_HEAD "topic t\nbridge_receive_maximum 10\n",
                 "midge.conf:1: connection b1: bridge_receive_maximum needs "
                 "bridge_protocol_version mqttv50");
    expect_error(BRIDGE_HEAD "topic t\nbridge_require_ocsp true\n",
                 "midge.conf:4: bridge_require_ocsp: midge's bridges do not check OCSP "
                 "responses; refusing to start a bridge that would run without the check you "
                 "asked for (remove the line or set it to false)");
    expect_error(BRIDGE_HEAD "topic t\nlocal_username u\n",
                 "midge.conf:4: local_username: not supported: a bridge's local side is inside "
                 "midge and is not checked against the password file or the ACL; remove the "
                 "line");
    expect_error(BRIDGE_HEAD "topic t\nbridge_tcp_keepalive 10\n",
                 "midge.conf:4: bridge_tcp_keepalive: not implemented by midge's bridges "
                 "(docs/bridge.md lists the options they take); remove the line");
    expect_error(BRIDGE_HEAD "topic t\nrestart_timeout 30 10\n",
                 "midge.conf:4: restart_timeout: the cap (10) is smaller than the base (30)");
    expect_error(BRIDGE_HEAD "topic t\nrestart_timeout 0\n",
                 "midge.conf:4: restart_timeout: expected seconds from 1 to 86400 (\"constant\" "
                 "or \"base cap\"), got \"0\"");
    expect_error(BRIDGE_HEAD "topic t\nstart_type manual\n",
                 "midge.conf:4: start_type: manual is RSMB's and not supported (Mosquitto does "
                 "not have it either); use automatic, lazy or once");
    expect_error(BRIDGE_HEAD "topic t\nbridge_protocol_version mqttv6\n",
                 "midge.conf:4: bridge_protocol_version: expected mqttv31, mqttv311 or mqttv50, "
                 "got \"mqttv6\"");
    expect_error(BRIDGE_HEAD "topic t\nbridge_tls_version tlsv1.0\n",
                 "midge.conf:4: bridge_tls_version: expected tlsv1.3, tlsv1.2 or tlsv1.1, got "
                 "\"tlsv1.0\"");
    expect_error(BRIDGE_HEAD "topic t\nnotification_topic a/+\n",
                 "midge.conf:4: notification_topic: \"a/+\" is not a valid topic name");
    expect_error("connection a\naddress h:0\ntopic t\n",
                 "midge.conf:2: address: \"h:0\": expected a port number from 1 to 65535 after "
                 "':'");
    expect_error("connection a\naddress mqtts://h\ntopic t\n",
                 "midge.conf:2: address: \"mqtts://h\": only ws:// and wss:// URLs are "
                 "understood (plain MQTT is host[:port], TLS is host[:port] with bridge_cafile "
                 "or bridge_capath)");
    expect_error("connection a\naddress [::1\ntopic t\n",
                 "midge.conf:2: address: \"[::1\": unterminated or empty [IPv6 address]");
    expect_error("connection a\naddress h\ntopic t\nremote_clientid a\nconnection b\naddress h\n"
                 "topic t\nlocal_clientid local.a\n",
                 "midge.conf:5: connection b: local_clientid \"local.a\" is also the one of "
                 "connection a");
    expect_warning(BRIDGE_HEAD "topic t\nkeepalive_interval 2\n",
                   "midge.conf:4: keepalive_interval: 2 is under the minimum of 5 seconds, 5 is "
                   "used");
}

static void test_bridge_equal(void **state)
{
    (void)state;
    struct mq_config a, b, c;
    const char *text = BRIDGE_HEAD "topic t both 1 L/ R/\nremote_clientid r\n";
    parse_ok(text, &a);
    parse_ok(text, &b);
    parse_ok(BRIDGE_HEAD "topic t both 1 L/ R2/\nremote_clientid r\n", &c);
    assert_true(config_bridge_equal(&a.bridges[0], &b.bridges[0]));
    assert_false(config_bridge_equal(&a.bridges[0], &c.bridges[0]));
    config_free(&a);
    config_free(&b);
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_local_only),
        cmocka_unit_test(test_empty_file_is_local_only),
        cmocka_unit_test(test_local_only_file_options),
        cmocka_unit_test(test_global_options),
        cmocka_unit_test(test_listener_options),
        cmocka_unit_test(test_paths_keep_spaces),
        cmocka_unit_test(test_user_last_wins),
        cmocka_unit_test(test_persistent_client_expiration),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_tls_handshake_threads_range),
        cmocka_unit_test(test_log_dest),
        cmocka_unit_test(test_log_type),
        cmocka_unit_test(test_port_only),
        cmocka_unit_test(test_port_and_listener),
        cmocka_unit_test(test_port_twice_warns),
        cmocka_unit_test(test_same_port_other_address),
        cmocka_unit_test(test_security_global),
        cmocka_unit_test(test_security_per_listener),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_all_errors_collected),
        cmocka_unit_test(test_long_values_are_truncated_in_messages),
        cmocka_unit_test(test_unsupported_options_warn),
        cmocka_unit_test(test_crlf_and_last_line),
        cmocka_unit_test(test_length_bounded),
        cmocka_unit_test(test_include_dir),
        cmocka_unit_test(test_include_dir_messages),
        cmocka_unit_test(test_include_dir_scope),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_load_directory),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_bridge_defaults),
        cmocka_unit_test(test_bridge_every_option),
        cmocka_unit_test(test_bridge_topic_forms),
        cmocka_unit_test(test_bridge_errors),
        cmocka_unit_test(test_bridge_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

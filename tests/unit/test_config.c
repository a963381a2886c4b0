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
                   "connection bridge1\n"
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
    assert_string_equal(r.line[1], "midge.conf:3: connection: not supported by midge, ignored");
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
        "connection",
        "address",
        "topic",
        "bridge_cafile",
        "bridge_protocol_version",
        "cleansession",
        "notifications",
        "remote_username",
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

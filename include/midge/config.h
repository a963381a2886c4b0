/* config.h - mosquitto.conf syntax -> an immutable struct mq_config.
 *
 * The parser reads files (config, include_dir) but opens no sockets and knows
 * nothing of the event loop. Every error and warning names file:line and the
 * option. A struct mq_config is built once per load and never modified after
 * config_load returns; reload builds a new one.
 */
#ifndef MIDGE_CONFIG_H
#define MIDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mq_listener_protocol { MQ_LISTENER_MQTT = 0, MQ_LISTENER_WEBSOCKETS = 1 };

/* Per-listener settings (Mosquitto: `listener` and the options that follow it). */
struct mq_listener_config {
    uint16_t port;        /* 0 = ephemeral (tests); the bound port is logged */
    char *bind_address;   /* NULL = all interfaces */
    char *bind_interface; /* NULL = none */
    int socket_domain;    /* 0 = any, 4 = ipv4, 6 = ipv6 */
    enum mq_listener_protocol protocol;
    int max_connections; /* -1 = unlimited */
    bool shares_port;    /* second half of the loopback pair: with port 0 it
                            takes the port the previous listener picked */
    /* Security: effective values after per_listener_settings is applied. */
    bool allow_anonymous;
    bool accept_any_password; /* midge: a user name is enough (course firmware) */
    char *password_file;
    char *acl_file;
    bool allow_zero_length_clientid; /* effective value (global unless per_listener_settings) */
    char *auto_id_prefix;            /* effective value, never NULL after a successful load */
    /* TLS (parsed; implemented in the security issue). */
    char *cafile, *capath, *certfile, *keyfile, *crlfile, *tls_version, *ciphers;
    char *ciphers_tls13; /* ciphers_tls1.3: the TLS 1.3 suites, in the server's order */
    bool require_certificate;
    bool use_identity_as_username;
    /* protocol websockets (docs/websocket.md). Lists are whitespace- or comma-separated. */
    char *websockets_origins;           /* allowed Origin values ("http://host:port");
                                           NULL = any */
    char *http_trusted_proxies;         /* addresses or CIDR prefixes whose X-Forwarded-For
                                           is believed; NULL = none */
    uint32_t websockets_max_frame_size; /* bytes per frame and per message; 0 = default:
                                           max_packet_size (or the MQTT maximum) + 64 KiB */
    /* admin_user (midge, docs/admin.md): the users of password_file who may use the admin
     * API of a websockets listener, one name per line ("alice\nbob"); NULL = the API is
     * off. Effective value (global unless per_listener_settings). */
    char *admin_users;
};

/* Bridges (docs/bridge.md): a `connection` section of mosquitto.conf and the options after
 * it. Strings are owned; NULL when not set. */
enum mq_bridge_direction { MQ_BRIDGE_OUT = 1, MQ_BRIDGE_IN = 2, MQ_BRIDGE_BOTH = 3 };
enum mq_bridge_start { MQ_BRIDGE_AUTOMATIC = 0, MQ_BRIDGE_LAZY = 1, MQ_BRIDGE_ONCE = 2 };
enum mq_bridge_scheme { MQ_BRIDGE_MQTT = 0, MQ_BRIDGE_WS = 1, MQ_BRIDGE_WSS = 2 };

/* One `topic pattern [[[out|in|both] qos] local-prefix remote-prefix]` line. The pattern
 * and the prefixes are NULL for "" (or when not given); local and remote are the full
 * filters on each side: prefix + pattern, or the prefix alone when the pattern is "". */
struct mq_bridge_topic {
    char *pattern, *local_prefix, *remote_prefix;
    char *local, *remote;
    uint8_t direction; /* enum mq_bridge_direction */
    uint8_t qos;
};

/* One entry of `address`: host[:port], [v6]:port, or ws[s]://host[:port]/path. */
struct mq_bridge_address {
    char *host; /* without brackets */
    char *path; /* WebSocket request path ("/mqtt"); NULL for MQTT over TCP */
    uint16_t port;
    uint8_t scheme; /* enum mq_bridge_scheme */
};

struct mq_bridge_config {
    char *name; /* `connection NAME` */
    char *file; /* where the section starts, for messages */
    unsigned line;
    struct mq_bridge_address *addresses;
    size_t address_count;
    struct mq_bridge_topic *topics;
    size_t topic_count;
    bool round_robin; /* default false */
    char *remote_username, *remote_password;
    char *remote_clientid;              /* default "<hostname>.<name>" (filled at load) */
    char *local_clientid;               /* default "local.<remote_clientid>" */
    bool cleansession;                  /* default false */
    int8_t local_cleansession;          /* -1 = as cleansession */
    uint16_t keepalive;                 /* keepalive_interval, default 60, at least 5 */
    uint32_t restart_base, restart_cap; /* restart_timeout: cap 0 = constant base; default 5 30 */
    uint8_t start_type;                 /* enum mq_bridge_start */
    uint32_t idle_timeout;              /* lazy: seconds idle before stopping; default 60 */
    uint32_t threshold;                 /* lazy: queued messages that start it; default 10 */
    bool notifications;                 /* default true */
    bool notifications_local_only;      /* default false */
    char *notification_topic;           /* default $SYS/broker/connection/<name>/state */
    bool try_private;                   /* default true */
    uint8_t protocol_version;           /* 3, 4 (default) or 5 */
    bool outgoing_retain;               /* default true */
    bool attempt_unsubscribe;           /* default true */
    uint32_t max_packet_size;           /* bridge_max_packet_size; 0 = none */
    uint16_t receive_maximum;           /* bridge_receive_maximum; 0 = not set */
    int64_t session_expiry;             /* bridge_session_expiry_interval; -1 = not set */
    char *bind_address;
    /* TLS: on when cafile, capath or psk is set, or for wss:// addresses. */
    char *cafile, *capath, *certfile, *keyfile, *tls_version, *alpn, *identity, *psk;
    bool insecure;
};

/* True when the bridge's connection runs over TLS (bridge_cafile, bridge_capath or
 * bridge_psk set). wss:// addresses use TLS whatever this says. */
static inline bool config_bridge_tls(const struct mq_bridge_config *bc)
{
    return bc->cafile || bc->capath || bc->psk;
}

/* True when a and b configure the same bridge in every respect (a reload leaves it alone). */
bool config_bridge_equal(const struct mq_bridge_config *a, const struct mq_bridge_config *b);

/* Where log lines go. */
enum mq_log_dest_mask {
    MQ_LOG_DEST_STDERR = 1 << 0,
    MQ_LOG_DEST_STDOUT = 1 << 1,
    MQ_LOG_DEST_SYSLOG = 1 << 2,
    MQ_LOG_DEST_FILE = 1 << 3,
    MQ_LOG_DEST_TOPIC = 1 << 4,
};

/* persistence_durability (midge): when PUBACK/PUBREC/PUBCOMP and the SUBACK of a
 * persistent session may go out relative to the store's commit. */
enum mq_durability {
    MQ_DURABILITY_ACK = 0,     /* only once the change they acknowledge is fsynced */
    MQ_DURABILITY_RELAXED = 1, /* at once; the store commits in the background */
};

struct mq_config {
    struct mq_listener_config *listeners;
    size_t listener_count;
    bool from_file; /* false: built-in defaults (no -c), Mosquitto's local-only mode */

    bool per_listener_settings;
    /* The next two are the global settings; the server reads each listener's copy. */
    bool allow_zero_length_clientid;      /* default true */
    char *auto_id_prefix;                 /* default "auto-" */
    char **clientid_prefixes;             /* NULL-terminated or NULL */
    uint32_t max_inflight_messages;       /* default 20; 0 = unlimited */
    uint32_t max_queued_messages;         /* default 1000; 0 = unlimited */
    uint64_t max_queued_bytes;            /* default 0 = unlimited */
    uint32_t message_size_limit;          /* payload bytes; 0 = spec maximum */
    uint32_t max_packet_size;             /* whole packet; 0 = spec maximum */
    uint16_t max_keepalive;               /* default 65535 */
    uint16_t max_qos;                     /* highest QoS accepted and granted; default 2 */
    uint16_t max_topic_alias;             /* Topic Alias Maximum announced to MQTT 5
                                             clients; default 10, 0 = none */
    uint16_t max_topic_alias_broker;      /* topic aliases midge may send an MQTT 5 client
                                             (at most the client's maximum); default 0 =
                                             none (midge; Mosquitto's default is 10) */
    char *response_information;           /* Response Information for MQTT 5 clients that
                                             ask; NULL = none (midge) */
    uint32_t connect_timeout;             /* seconds to wait for CONNECT; default 10 (midge) */
    uint64_t memory_limit;                /* heap bytes; over it new CONNECTs and incoming
                                             PUBLISH are refused; 0 = none (Mosquitto) */
    uint32_t max_topic_levels;            /* deeper topics/filters refused; default 1024; 0 =
                                             unlimited (midge) */
    uint64_t client_output_limit;         /* bytes unsent to one client before its QoS 0
                                             messages are dropped (2x: disconnected); default
                                             8 MiB; 0 = unlimited (midge) */
    bool retain_available;                /* default true */
    bool upgrade_outgoing_qos;            /* default false */
    bool queue_qos0_messages;             /* default false */
    int64_t persistent_client_expiration; /* seconds; 0 = never */
    uint32_t sys_interval;                /* seconds; default 10; 0 disables */
    /* Threads that run TLS handshake steps off the loop thread at nice 10; default 0: on
     * the loop thread, within a time budget per wake-up (midge; docs/tls.md). */
    uint32_t tls_handshake_threads;

    bool persistence;
    char *persistence_location;
    char *persistence_file;                    /* default "midge.db" */
    enum mq_durability persistence_durability; /* default ack (midge) */
    uint32_t autosave_interval;                /* seconds; default 1800 */

    unsigned log_dest; /* enum mq_log_dest_mask; default stderr */
    char *log_file;    /* with MQ_LOG_DEST_FILE */
    unsigned
        log_types; /* enum mq_log_level mask from log.h; default error|warning|notice|information */
    bool log_timestamp;         /* default true */
    char *log_timestamp_format; /* strftime format; NULL = ISO-8601 local time */
    bool connection_messages;   /* default true */

    char *user; /* drop privileges to; default NULL */
    char *pid_file;

    struct mq_bridge_config *bridges; /* `connection` sections, in file order */
    size_t bridge_count;
};

/* Report one parse diagnostic: "file:line: option: message". */
typedef void (*mq_config_report_fn)(void *ctx, bool is_error, const char *line);

/* Fill *cfg (uninitialised on entry) with Mosquitto 2.0's built-in defaults and no
 * listeners. Returns 0 or MQ_ERR_NOMEM (then *cfg holds nothing to free). */
int config_defaults(struct mq_config *cfg);

/* Parse the file at path (and its include_dir files, in sorted order) into *cfg, which
 * is uninitialised on entry and owned by the caller on success (release with
 * config_free). Returns 0, MQ_ERR_CONFIG or MQ_ERR_NOMEM; on error every problem in
 * the files has been reported and *cfg holds nothing to free. Warnings
 * (known-but-unimplemented options) are reported and parsing goes on. report may be
 * NULL; the line passed to it is only valid during the call.
 * Listeners, like Mosquitto 2.0: `listener` lines as written; `port`/`bind_address` (or
 * listener options given before the first `listener`) add a default listener (port
 * 1883 unless `port`, all interfaces unless `bind_address`); with none of these, two
 * loopback listeners (127.0.0.1 and ::1, port 1883) where anonymous access defaults to
 * true. docs/configuration.md has the details. */
int config_load(const char *path, struct mq_config *cfg, mq_config_report_fn report, void *ctx);

/* Parse config text held in memory (for tests and fuzzing); name is used in messages
 * and text need not be NUL-terminated. Same contract as config_load; include_dir
 * paths are read from the file system. */
int config_parse_string(const char *text, size_t len, const char *name, struct mq_config *cfg,
                        mq_config_report_fn report, void *ctx);

/* Configuration used when midge runs without -c: listeners on 127.0.0.1 and ::1 at port
 * with anonymous access, like Mosquitto 2.0 without a config. *cfg is uninitialised on
 * entry. Returns 0 or MQ_ERR_NOMEM (then *cfg holds nothing to free). */
int config_local_only(struct mq_config *cfg, uint16_t port);

/* Free everything *cfg owns and reset it to zero. */
void config_free(struct mq_config *cfg);

#endif

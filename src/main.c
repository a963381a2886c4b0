/* main.c - command line, configuration loading, logger start-up, exit status.
 *
 * Exit status: 0 after a clean shutdown (or -h, --version, a good --test-config),
 * 1 for a bad command line, configuration or start-up failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/config.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/server.h"

static void usage(FILE *f)
{
    fprintf(f, "midge %s - MQTT 3.1.1 broker for the LAN\n\n"
               "usage: midge [-c FILE] [-p PORT] [-v] [--test-config]\n"
               "       midge -h | --version\n\n"
               "  -c FILE         read mosquitto.conf-style configuration from FILE\n"
               "                  (without it: loopback only, port 1883, anonymous access)\n"
               "  -p PORT         listen on PORT instead of the first listener's port\n"
               "                  (0 picks a free port and logs it)\n"
               "  -v              verbose: log every message type (log_type all)\n"
               "  --test-config   check the configuration, print the result, exit 0 or 1\n"
               "  -h, --help      show this help\n"
               "  --version       print the version\n",
               MIDGE_VERSION);
}

static void report(void *ctx, bool is_error, const char *line)
{
    (void)ctx;
    fprintf(stderr, "%s: %s\n", is_error ? "error" : "warning", line);
}

static int parse_port(const char *s, uint16_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    bool verbose = false, test_config = false, have_port = false;
    uint16_t port = 1883;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("midge %s\n", MIDGE_VERSION);
            return 0;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = true;
        } else if (!strcmp(a, "--test-config") || !strcmp(a, "-t")) {
            test_config = true;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config-file")) && i + 1 < argc) {
            config_path = argv[++i];
        } else if ((!strcmp(a, "-p") || !strcmp(a, "--port")) && i + 1 < argc) {
            if (parse_port(argv[++i], &port)) {
                fprintf(stderr, "midge: -p: expected a port number from 0 to 65535, got \"%s\"\n",
                        argv[i]);
                return 1;
            }
            have_port = true;
        } else {
            fprintf(stderr, "midge: unknown or incomplete option \"%s\"\n\n", a);
            usage(stderr);
            return 1;
        }
    }

    struct mq_config cfg;
    int rc = config_path ? config_load(config_path, &cfg, report, NULL)
                         : config_local_only(&cfg, port);
    if (rc) {
        fprintf(stderr, "midge: %s: configuration not loaded\n",
                config_path ? config_path : "built-in defaults");
        return 1;
    }
    if (config_path && have_port && cfg.listener_count)
        cfg.listeners[0].port = port;
    if (test_config) {
        printf("midge: configuration %s is valid\n", config_path ? config_path : "(defaults)");
        config_free(&cfg);
        return 0;
    }

    struct mq_log_options lo = {
        .types = verbose ? MQ_LOG_ALL_TYPES : cfg.log_types,
        .fd = (cfg.log_dest & MQ_LOG_DEST_STDOUT) && !(cfg.log_dest & MQ_LOG_DEST_STDERR) ? 1 : 2,
        .timestamps = cfg.log_timestamp,
        .ts_format = cfg.log_timestamp_format,
    };
    if (cfg.log_dest == 0)
        lo.types = 0; /* log_dest none */
    if (log_start(&lo)) {
        fprintf(stderr, "midge: cannot start the logger\n");
        config_free(&cfg);
        return 1;
    }
    int status = server_run(&cfg);
    log_stop();
    config_free(&cfg);
    return status;
}

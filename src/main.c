/* main.c - command line, configuration loading, logger start-up, daemon mode and
 * the exit status.
 *
 * Exit status: 0 after a clean shutdown (or -h, --version, a good --test-config),
 * 1 for a bad command line, configuration or start-up failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/config.h"
#include "midge/daemon.h"
#include "midge/err.h"
#include "midge/log.h"
#include "midge/notify.h"
#include "midge/server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "midge %s - MQTT 3.1.1 broker for the LAN\n\n"
            "usage: midge [-c FILE] [-p PORT] [-v] [-d] [--test-config]\n"
            "       midge -h | --version\n\n"
            "  -c FILE         read mosquitto.conf-style configuration from FILE\n"
            "                  (without it: loopback only, port 1883, anonymous access)\n"
            "  -p PORT         listen on PORT instead of the first listener's port\n"
            "                  (0 picks a free port and logs it)\n"
            "  -v              verbose: log every message type (log_type all)\n"
            "  -d              run in the background (log to a file or syslog then)\n"
            "  --test-config   check the configuration, print the result, exit 0 or 1\n"
            "  -h, --help      show this help\n"
            "  --version       print the version\n\n"
            "Signals: SIGHUP reloads the configuration; SIGINT and SIGTERM stop.\n",
            MIDGE_VERSION);
}

static int parse_port(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    struct mq_server_options opts = {.port = -1, .ready_fd = -1};
    bool test_config = false, daemonize = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("midge %s\n", MIDGE_VERSION);
            return 0;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            opts.verbose = true;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--daemon")) {
            daemonize = true;
        } else if (!strcmp(a, "--test-config") || !strcmp(a, "-t")) {
            test_config = true;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config-file")) && i + 1 < argc) {
            opts.config_path = argv[++i];
        } else if ((!strcmp(a, "-p") || !strcmp(a, "--port")) && i + 1 < argc) {
            if (parse_port(argv[++i], &opts.port)) {
                fprintf(stderr, "midge: -p: expected a port number from 0 to 65535, got \"%s\"\n",
                        argv[i]);
                return 1;
            }
        } else {
            fprintf(stderr, "midge: unknown or incomplete option \"%s\"\n\n", a);
            usage(stderr);
            return 1;
        }
    }

    /* Until the configured logger starts, lines go straight to stderr; under systemd
     * they carry journald priorities from the first one on. */
    struct mq_log_options early = log_default_options();
    early.journal_priority = notify_stderr_is_journal();
    log_configure(&early);
    struct mq_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg || server_load_config(&opts, cfg)) {
        mq_log(MQ_LOG_ERR, "%s: configuration not loaded",
               opts.config_path ? opts.config_path : "built-in defaults");
        free(cfg);
        return 1;
    }
    if (test_config) {
        char bridges[48] = "";
        if (cfg->bridge_count)
            snprintf(bridges, sizeof(bridges), ", %zu bridge%s", cfg->bridge_count,
                     cfg->bridge_count == 1 ? "" : "s");
        printf("midge: configuration %s is valid (%zu listener%s%s)\n",
               opts.config_path ? opts.config_path : "(built-in defaults)", cfg->listener_count,
               cfg->listener_count == 1 ? "" : "s", bridges);
        config_free(cfg);
        free(cfg);
        return 0;
    }

    struct mq_log_options lo;
    if (daemon_log_options(cfg, opts.verbose, &lo) ||
        (daemonize && daemon_detach(&opts.ready_fd)) || log_start(&lo)) {
        config_free(cfg);
        free(cfg);
        return 1;
    }
    char *pid_file = cfg->pid_file ? strdup(cfg->pid_file) : NULL;
    int status = 1;
    if (!pid_file || daemon_write_pidfile(pid_file) == 0)
        status = server_run(cfg, &opts); /* takes cfg */
    else {
        daemon_ready(opts.ready_fd, false);
        config_free(cfg);
        free(cfg);
    }
    daemon_remove_pidfile(pid_file);
    free(pid_file);
    log_stop();
    return status;
}

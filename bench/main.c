/*
 * main.c - midge-bench command line: option parsing, shared helpers, and a
 * watchdog that guarantees the tool stops even if the broker under test hangs.
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void die(int code, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("midge-bench: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    /* Scripts read the last line of stdout: make a failed run unmistakable there too. */
    printf("RESULT status=error exit=%d\n", code);
    exit(code);
}

void warnx_(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("midge-bench: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

uint64_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (uint64_t)rl.rlim_cur;
}

const char *fmt_opt(char *out, size_t cap, bool have, double v, int decimals)
{
    if (!have)
        snprintf(out, cap, "na");
    else
        snprintf(out, cap, "%.*f", decimals, v);
    return out;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] =
        "midge-bench: error: watchdog: the run overran its time budget (broker stalled?)\n";
    static const char result[] = "RESULT status=error exit=5 reason=watchdog\n";
    ssize_t rc = write(2, msg, sizeof(msg) - 1);
    rc = write(1, result, sizeof(result) - 1);
    (void)rc;
    _exit(EXIT_TIMEOUT);
}

/* Hard upper bound on the whole run, whatever the broker does. */
static void arm_watchdog(double seconds)
{
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(seconds + 1.0));
}

static void usage(FILE *f)
{
    fputs("usage: midge-bench pubsub [options]\n"
          "       midge-bench conns [options]\n"
          "\n"
          "common options:\n"
          "  --host ADDR          broker IPv4 address (127.0.0.1)\n"
          "  --port N             broker port (1883)\n"
          "  --broker-pid PID     sample the broker's CPU time and RSS from /proc\n"
          "  --sub-port N         pubsub: subscribers connect to this port (a broker bridged\n"
          "                       from the publishers' one), publishers to --port\n"
          "  --broker-pid2 PID    sample a second broker (the bridged one) too: its CPU is\n"
          "                       added to the first's in broker_cpu_us_per_msg\n"
          "  --keepalive SECS     MQTT keep-alive sent in CONNECT (0 = none)\n"
          "  --prefix STR         topic and client-id prefix (mb<pid>)\n"
          "  --ws [PATH]          MQTT over WebSocket (RFC 6455) to PATH (/mqtt): HTTP/1.1\n"
          "                       upgrade with subprotocol mqtt, one masked binary frame per\n"
          "                       packet, as MQTT.js sends them\n"
          "  --tls                MQTT over TLS (with --ws: wss); OpenSSL's client defaults\n"
          "  --cafile FILE        verify the broker's certificate against FILE (else unverified)\n"
          "  --cert FILE --key FILE  present a client certificate\n"
          "  --tls-version tlsv1.2   at most TLS 1.2 (default: TLS 1.3 when offered)\n"
          "  --resume             offer a session ticket on every connection: one priming\n"
          "                       connection gets it first, so every measured handshake is a\n"
          "                       resumption attempt (RESULT counts tls_resumed)\n"
          "  --mqtt5, --protocol 5|3.1.1\n"
          "                       MQTT 5.0 instead of 3.1.1: property blocks (empty but for\n"
          "                       the options below), CONNACK limits honoured (Receive\n"
          "                       Maximum, Server Keep Alive, Maximum QoS, Topic Alias\n"
          "                       Maximum), acknowledgements sent in their short forms\n"
          "\n"
          "pubsub: P publishers, S subscribers, T topics; publisher i publishes on topic i%T,\n"
          "subscriber j subscribes to topic j%T (or to every topic with --wildcard).\n"
          "  --publishers P (1)  --subscribers S (1)  --topics T (1)  --qos 0|1|2 (0)\n"
          "  --size BYTES (64, at least 24)  --duration SECS (5)  --warmup SECS (1)\n"
          "  --rate MSGS_PER_SEC  total fixed rate over all publishers; 'saturation' or 0 = as\n"
          "                       fast as the window allows (default)\n"
          "  --window W           max messages per publisher sent but not yet received by all\n"
          "                       its subscribers (100)\n"
          "  --pub-inflight N     QoS 1/2 publish flows a publisher keeps open, like a client\n"
          "                       library's max-inflight setting (20; 0 = no limit). Mosquitto\n"
          "                       acknowledges, then drops, QoS 2 messages beyond its\n"
          "                       max_inflight_messages, so keep this at or below it\n"
          "  --wildcard           subscribers subscribe to PREFIX/+ (fan-in over many topics)\n"
          "  --spread             T may exceed P: publisher i owns topics k = i, i+P, i+2P ... < T,\n"
          "                       named PREFIX/<g>/<k>, and publishes on them in turn; with\n"
          "                       G = min(P, S) groups, subscriber j takes every topic of the\n"
          "                       publishers i with i%G = j%G, one exact filter per topic (or\n"
          "                       PREFIX/<g>/+ with --wildcard)\n"
          "  --sub-batch N        --spread: filters per SUBSCRIBE packet (100)\n"
          "  --topic-alias        MQTT 5: a publisher's first message on a topic sets alias 1\n"
          "                       (topic k of its --spread topics: k+1, up to the broker's\n"
          "                       Topic Alias Maximum); later ones send an empty topic\n"
          "  --shared GROUP       subscribers take $share/GROUP/<filter>: the subscribers that\n"
          "                       share a filter form one shared subscription, and each\n"
          "                       message goes to one of them (3.1.1 or 5.0). lost = received\n"
          "                       by no member, dup = received twice by any\n"
          "  --setup-timeout SECS connecting and subscribing everyone (10 s + 2 ms per\n"
          "                       connection + 0.1 ms per subscription)\n"
          "  --sub-clean 0|1      subscribers' clean session flag (1); 0 = persistent sessions,\n"
          "                       whose QoS 1/2 state a persistent broker must store\n"
          "  --grace SECS         max time to drain in-flight messages at the end (3)\n"
          "  --stall SECS         QoS 0: a window with no progress for this long is written\n"
          "                       off as lost, so dropped messages cannot stall a publisher;\n"
          "                       the drain also ends after this long without a message (1)\n"
          "\n"
          "conns: K idle connections, each CONNECT + SUBSCRIBE to its own topic.\n"
          "  --count K (1000)  --rate HANDSHAKES_PER_SEC (1000)  --hold SECS (2)\n"
          "  --timeout SECS       give up on handshakes not done this long after the last\n"
          "                       one started (10)\n"
          "  --max-pending N      handshakes in progress at once (100): more would overflow\n"
          "                       the listen backlog (Mosquitto's is 100) and time SYN retries\n"
          "\n"
          "Output: a human summary, then one line 'RESULT key=value ...'.\n"
          "Exit codes: 0 ok, 2 usage, 3 connect/CONNACK refused, 4 protocol error or broker\n"
          "closed a connection, 5 timeout, 6 QoS 1/2 messages lost or duplicated.\n",
          f);
}

static double parse_num(const char *name, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi)
        die(EXIT_USAGE, "%s %s: expected a number from %g to %g", name, v, lo, hi);
    return d;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *mode = argv[1];
    bool is_pubsub = !strcmp(mode, "pubsub");
    bool is_conns = !strcmp(mode, "conns");
    if (!is_pubsub && !is_conns) {
        usage(stderr);
        die(EXIT_USAGE, "unknown mode '%s' (expected pubsub or conns)", mode);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* a broker that closes on us is reported, not fatal by signal */

    static char prefix[32];
    snprintf(prefix, sizeof(prefix), "mb%d", (int)getpid());
    struct common_opts c = {
        .host = "127.0.0.1", .port = 1883, .prefix = prefix, .version = MQTT_311};
    struct pubsub_opts ps = {
        .publishers = 1,
        .subscribers = 1,
        .topics = 1,
        .qos = 0,
        .size = 64,
        .duration = 5,
        .warmup = 1,
        .rate = 0,
        .window = 100,
        .pub_inflight = 20,
        .grace = 3,
        .stall = 1,
        .sub_batch = 100,
    };
    struct conns_opts cs = {
        .count = 1000,
        .rate = 1000,
        .hold = 2,
        .timeout = 10,
        .max_pending = 100,
    };

    for (int i = 2; i < argc; i++) {
        const char *name = argv[i];
        char namebuf[64];
        const char *val = NULL;
        const char *eq = strchr(name, '=');
        if (eq && (size_t)(eq - name) < sizeof(namebuf)) {
            memcpy(namebuf, name, (size_t)(eq - name));
            namebuf[eq - name] = '\0';
            name = namebuf;
            val = eq + 1;
        }
        if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
            usage(stdout);
            return 0;
        }
        bool is_flag = !strcmp(name, "--wildcard") || !strcmp(name, "--spread") ||
                       !strcmp(name, "--tls") || !strcmp(name, "--resume") ||
                       !strcmp(name, "--mqtt5") || !strcmp(name, "--topic-alias");
        if (!strcmp(name, "--ws") && !val) {
            /* The path is optional: "--ws", "--ws /path" or "--ws=/path". */
            is_flag = true;
            if (i + 1 < argc && argv[i + 1][0] == '/')
                val = argv[++i];
        }
        if (!is_flag && !val) {
            if (i + 1 >= argc)
                die(EXIT_USAGE, "%s needs a value", name);
            val = argv[++i];
        }
#define OPT(s) (!strcmp(name, s))
        if (OPT("--host"))
            c.host = val;
        else if (OPT("--port"))
            c.port = (int)parse_num(name, val, 1, 65535);
        else if (OPT("--broker-pid"))
            c.broker_pid = (int)parse_num(name, val, 1, 1e9);
        else if (OPT("--sub-port"))
            c.sub_port = (int)parse_num(name, val, 1, 65535);
        else if (OPT("--broker-pid2"))
            c.broker_pid2 = (int)parse_num(name, val, 1, 1e9);
        else if (OPT("--keepalive"))
            c.keepalive = (uint16_t)parse_num(name, val, 0, 65535);
        else if (OPT("--prefix"))
            c.prefix = val;
        else if (OPT("--ws")) {
            c.ws_path = val ? val : "/mqtt";
            if (c.ws_path[0] != '/' || strlen(c.ws_path) > 200 || strpbrk(c.ws_path, " \r\n"))
                die(EXIT_USAGE, "--ws %s: expected a path such as /mqtt", c.ws_path);
        }
        else if (OPT("--tls"))
            c.tls = true;
        else if (OPT("--cafile"))
            c.cafile = val;
        else if (OPT("--cert"))
            c.certfile = val;
        else if (OPT("--key"))
            c.keyfile = val;
        else if (OPT("--tls-version"))
            c.tls_version = val;
        else if (OPT("--resume"))
            c.resume = true;
        else if (OPT("--mqtt5"))
            c.version = MQTT_5;
        else if (OPT("--protocol")) {
            if (!strcmp(val, "5") || !strcmp(val, "5.0"))
                c.version = MQTT_5;
            else if (!strcmp(val, "4") || !strcmp(val, "3.1.1"))
                c.version = MQTT_311;
            else
                die(EXIT_USAGE, "--protocol %s: expected 5 (5.0) or 4 (3.1.1)", val);
        }
        else if (is_pubsub && OPT("--topic-alias"))
            ps.topic_alias = true;
        else if (is_pubsub && OPT("--shared")) {
            /* A share name is one topic level without wildcards (MQTT 5, 4.8.2). */
            if (!*val || strlen(val) > 32 || strpbrk(val, "/+#"))
                die(EXIT_USAGE, "--shared %s: expected a name of 1 to 32 characters without "
                                "'/', '+' or '#'",
                    val);
            ps.shared_group = val;
        }
        else if (is_pubsub && OPT("--publishers"))
            ps.publishers = (int)parse_num(name, val, 1, 100000);
        else if (is_pubsub && OPT("--subscribers"))
            ps.subscribers = (int)parse_num(name, val, 1, 100000);
        else if (is_pubsub && OPT("--topics"))
            ps.topics = (int)parse_num(name, val, 1, 1000000);
        else if (is_pubsub && OPT("--qos"))
            ps.qos = (int)parse_num(name, val, 0, 2);
        else if (is_pubsub && OPT("--size"))
            ps.size = (size_t)parse_num(name, val, 24, 16 * 1024 * 1024);
        else if (is_pubsub && OPT("--duration"))
            ps.duration = parse_num(name, val, 0.1, 86400);
        else if (is_pubsub && OPT("--warmup"))
            ps.warmup = parse_num(name, val, 0, 3600);
        else if (is_pubsub && OPT("--rate"))
            ps.rate = !strcmp(val, "saturation") ? 0 : parse_num(name, val, 0, 1e9);
        else if (is_pubsub && OPT("--window"))
            ps.window = (int)parse_num(name, val, 1, 60000);
        else if (is_pubsub && OPT("--pub-inflight"))
            ps.pub_inflight = (int)parse_num(name, val, 0, 65000);
        else if (is_pubsub && OPT("--wildcard"))
            ps.wildcard = true;
        else if (is_pubsub && OPT("--spread"))
            ps.spread = true;
        else if (is_pubsub && OPT("--sub-clean"))
            ps.sub_persistent = parse_num(name, val, 0, 1) == 0;
        else if (is_pubsub && OPT("--sub-batch"))
            ps.sub_batch = (int)parse_num(name, val, 1, 10000);
        else if (is_pubsub && OPT("--setup-timeout"))
            ps.setup_timeout = parse_num(name, val, 1, 3600);
        else if (is_pubsub && OPT("--grace"))
            ps.grace = parse_num(name, val, 0, 600);
        else if (is_pubsub && OPT("--stall"))
            ps.stall = parse_num(name, val, 0.01, 600);
        else if (is_conns && OPT("--count"))
            cs.count = (int)parse_num(name, val, 1, 10000000);
        else if (is_conns && OPT("--rate"))
            cs.rate = parse_num(name, val, 1, 1e7);
        else if (is_conns && OPT("--hold"))
            cs.hold = parse_num(name, val, 0, 86400);
        else if (is_conns && OPT("--timeout"))
            cs.timeout = parse_num(name, val, 0.1, 3600);
        else if (is_conns && OPT("--max-pending"))
            cs.max_pending = (int)parse_num(name, val, 1, 10000000);
        else
            die(EXIT_USAGE, "unknown option '%s' for %s (see --help)", name, mode);
#undef OPT
    }
    if ((c.cafile || c.certfile || c.resume || c.tls_version) && !c.tls)
        die(EXIT_USAGE, "--cafile, --cert, --tls-version and --resume need --tls");
    if (strlen(c.prefix) > 12)
        die(EXIT_USAGE, "--prefix %s: at most 12 characters (client ids must stay short)",
            c.prefix);
    if (c.broker_pid && kill(c.broker_pid, 0) < 0 && errno == ESRCH)
        die(EXIT_USAGE, "--broker-pid %d: no such process", c.broker_pid);
    if (c.broker_pid2 && kill(c.broker_pid2, 0) < 0 && errno == ESRCH)
        die(EXIT_USAGE, "--broker-pid2 %d: no such process", c.broker_pid2);
    if (c.broker_pid2 && !c.broker_pid)
        die(EXIT_USAGE, "--broker-pid2 needs --broker-pid");

    if (is_pubsub) {
        ps.c = c;
        if (ps.topic_alias && c.version != MQTT_5)
            die(EXIT_USAGE, "--topic-alias needs MQTT 5 (--mqtt5)");
        if (ps.setup_timeout <= 0) {
            double subscriptions =
                ps.spread && !ps.wildcard
                    ? (double)ps.topics *
                          (ps.subscribers > ps.publishers ? ps.subscribers / ps.publishers : 1)
                    : ps.subscribers;
            ps.setup_timeout =
                10 + 0.002 * (ps.publishers + ps.subscribers) + 0.0001 * subscriptions;
        }
        /* Setup + run + drain, and a margin for the final report. */
        arm_watchdog(ps.setup_timeout + ps.warmup + ps.duration + ps.grace + ps.stall + 5);
        return run_pubsub(&ps);
    }
    cs.c = c;
    arm_watchdog(cs.count / cs.rate + cs.timeout + cs.hold + 10);
    return run_conns(&cs);
}

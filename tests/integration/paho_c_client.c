/* paho_c_client.c - a small MQTT 3.1.1 command-line client on Eclipse Paho's synchronous
 * C library (libpaho-mqtt3c), used by tests/integration/test_paho_c.py to check midge
 * against a third-party client implementation.
 *
 * Order of work: connect, subscribe (each --sub), publish (each --pub, waiting for its
 * QoS flow to complete), receive until --expect messages arrived (or --timeout), watch
 * --quiet more milliseconds for an unexpected extra message, then DISCONNECT. With --hold
 * it keeps receiving and printing after that until it is killed (the will test).
 *
 * stdout, line-buffered: status lines start with "# " (a topic name can never start with
 * '#'); every received message is one line "TOPIC PAYLOAD QOS RETAINED".
 *
 * Exit status: 0 all well; 1 bad command line; 2 connect failed or refused (CONNACK code
 * printed); 3 subscribe or publish failed; 4 fewer messages than --expect within
 * --timeout; 5 a message beyond --expect arrived within --quiet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <MQTTClient.h>

#define MAX_ITEMS 32

struct pub {
    const char *topic, *payload;
    int qos, retain;
};

struct opts {
    const char *host, *id, *user, *password;
    int port, clean, keepalive;
    const char *will_topic, *will_payload;
    int will_qos, will_retain;
    char *sub_filter[MAX_ITEMS];
    int sub_qos[MAX_ITEMS], sub_count;
    struct pub pubs[MAX_ITEMS];
    int pub_count;
    int expect;
    long timeout_ms, quiet_ms;
    int hold;
};

static void usage(void)
{
    fprintf(stderr,
            "usage: paho_c_client -p PORT -i CLIENT_ID [-h HOST] [-c CLEAN(0|1)] [-k KEEPALIVE]\n"
            "         [-u USER] [-P PASSWORD] [--will TOPIC PAYLOAD QOS RETAIN]\n"
            "         [--sub FILTER QOS]... [--pub TOPIC PAYLOAD QOS RETAIN]...\n"
            "         [--expect N] [--timeout MS] [--quiet MS] [--hold]\n");
}

static int to_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (i + (n) >= argc) {                                                                     \
            fprintf(stderr, "paho_c_client: %s needs %d argument(s)\n", a, (n));                   \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

#define NUM(dst, str, lo, hi)                                                                      \
    do {                                                                                           \
        long v_;                                                                                   \
        if (to_int((str), (lo), (hi), &v_)) {                                                      \
            fprintf(stderr, "paho_c_client: %s: bad number \"%s\"\n", a, (str));                   \
            return -1;                                                                             \
        }                                                                                          \
        (dst) = v_;                                                                                \
    } while (0)

static int parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->clean = 1;
    o->keepalive = 60;
    o->timeout_ms = 5000;
    o->port = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h")) {
            NEED(1);
            o->host = argv[++i];
        } else if (!strcmp(a, "-p")) {
            NEED(1);
            NUM(o->port, argv[i + 1], 1, 65535);
            i++;
        } else if (!strcmp(a, "-i")) {
            NEED(1);
            o->id = argv[++i];
        } else if (!strcmp(a, "-c")) {
            NEED(1);
            NUM(o->clean, argv[i + 1], 0, 1);
            i++;
        } else if (!strcmp(a, "-k")) {
            NEED(1);
            NUM(o->keepalive, argv[i + 1], 0, 65535);
            i++;
        } else if (!strcmp(a, "-u")) {
            NEED(1);
            o->user = argv[++i];
        } else if (!strcmp(a, "-P")) {
            NEED(1);
            o->password = argv[++i];
        } else if (!strcmp(a, "--will")) {
            NEED(4);
            o->will_topic = argv[i + 1];
            o->will_payload = argv[i + 2];
            NUM(o->will_qos, argv[i + 3], 0, 2);
            NUM(o->will_retain, argv[i + 4], 0, 1);
            i += 4;
        } else if (!strcmp(a, "--sub")) {
            NEED(2);
            if (o->sub_count == MAX_ITEMS) {
                fprintf(stderr, "paho_c_client: too many --sub\n");
                return -1;
            }
            o->sub_filter[o->sub_count] = argv[i + 1];
            NUM(o->sub_qos[o->sub_count], argv[i + 2], 0, 2);
            o->sub_count++;
            i += 2;
        } else if (!strcmp(a, "--pub")) {
            NEED(4);
            if (o->pub_count == MAX_ITEMS) {
                fprintf(stderr, "paho_c_client: too many --pub\n");
                return -1;
            }
            struct pub *p = &o->pubs[o->pub_count++];
            p->topic = argv[i + 1];
            p->payload = argv[i + 2];
            NUM(p->qos, argv[i + 3], 0, 2);
            NUM(p->retain, argv[i + 4], 0, 1);
            i += 4;
        } else if (!strcmp(a, "--expect")) {
            NEED(1);
            NUM(o->expect, argv[i + 1], 0, 1000000);
            i++;
        } else if (!strcmp(a, "--timeout")) {
            NEED(1);
            NUM(o->timeout_ms, argv[i + 1], 0, 3600000);
            i++;
        } else if (!strcmp(a, "--quiet")) {
            NEED(1);
            NUM(o->quiet_ms, argv[i + 1], 0, 3600000);
            i++;
        } else if (!strcmp(a, "--hold")) {
            o->hold = 1;
        } else {
            fprintf(stderr, "paho_c_client: unknown option \"%s\"\n", a);
            return -1;
        }
    }
    if (o->port < 0 || !o->id) {
        fprintf(stderr, "paho_c_client: -p and -i are required\n");
        return -1;
    }
    return 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait up to timeout_ms for one message and print it. 1 = printed, 0 = timeout, -1 = error. */
static int receive_one(MQTTClient c, long timeout_ms)
{
    char *topic = NULL;
    int topic_len = 0;
    MQTTClient_message *m = NULL;
    if (timeout_ms < 0)
        timeout_ms = 0;
    int rc = MQTTClient_receive(c, &topic, &topic_len, &m, (unsigned long)timeout_ms);
    if (rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED) {
        printf("# receive failed rc=%d\n", rc);
        return -1;
    }
    if (!m) {
        if (topic)
            MQTTClient_free(topic);
        return 0;
    }
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    fwrite(topic, 1, tlen, stdout);
    putchar(' ');
    fwrite(m->payload, 1, (size_t)m->payloadlen, stdout);
    printf(" %d %d\n", m->qos, m->retained ? 1 : 0);
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
    return 1;
}

static int run(const struct opts *o)
{
    char uri[300];
    snprintf(uri, sizeof(uri), "tcp://%s:%d", o->host, o->port);
    MQTTClient c;
    int rc = MQTTClient_create(&c, uri, o->id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS) {
        printf("# create failed rc=%d\n", rc);
        return 2;
    }
    MQTTClient_connectOptions co = MQTTClient_connectOptions_initializer;
    MQTTClient_willOptions wo = MQTTClient_willOptions_initializer;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.cleansession = o->clean;
    co.keepAliveInterval = o->keepalive;
    co.connectTimeout = 10;
    co.username = o->user;
    co.password = o->password;
    if (o->will_topic) {
        wo.topicName = o->will_topic;
        wo.message = o->will_payload;
        wo.qos = o->will_qos;
        wo.retained = o->will_retain;
        co.will = &wo;
    }
    int status = 0;
    rc = MQTTClient_connect(c, &co);
    if (rc != MQTTCLIENT_SUCCESS) {
        /* 1-5 are CONNACK refusal codes; negative values are library errors. */
        printf("# connect failed rc=%d\n", rc);
        MQTTClient_destroy(&c);
        return 2;
    }
    printf("# connected session_present=%d\n", co.returned.sessionPresent ? 1 : 0);

    for (int i = 0; i < o->sub_count; i++) {
        int qos = o->sub_qos[i];
        rc = MQTTClient_subscribeMany(c, 1, &o->sub_filter[i], &qos);
        if (rc != MQTTCLIENT_SUCCESS) {
            printf("# subscribe %s failed rc=%d\n", o->sub_filter[i], rc);
            status = 3;
            goto out;
        }
        printf("# subscribed %s granted=%d\n", o->sub_filter[i], qos);
    }

    for (int i = 0; i < o->pub_count; i++) {
        const struct pub *p = &o->pubs[i];
        MQTTClient_message m = MQTTClient_message_initializer;
        m.payload = (void *)p->payload;
        m.payloadlen = (int)strlen(p->payload);
        m.qos = p->qos;
        m.retained = p->retain;
        MQTTClient_deliveryToken tok = 0;
        rc = MQTTClient_publishMessage(c, p->topic, &m, &tok);
        if (rc == MQTTCLIENT_SUCCESS && p->qos > 0)
            rc = MQTTClient_waitForCompletion(c, tok, (unsigned long)o->timeout_ms);
        if (rc != MQTTCLIENT_SUCCESS) {
            printf("# publish %s failed rc=%d\n", p->topic, rc);
            status = 3;
            goto out;
        }
        printf("# published %s qos=%d\n", p->topic, p->qos);
    }

    long deadline = now_ms() + o->timeout_ms;
    int got = 0;
    while (got < o->expect) {
        long left = deadline - now_ms();
        if (left <= 0) {
            printf("# timeout: received %d of %d messages\n", got, o->expect);
            status = 4;
            goto out;
        }
        rc = receive_one(c, left);
        if (rc < 0) {
            status = 4;
            goto out;
        }
        got += rc;
    }
    if (o->quiet_ms) {
        long quiet_end = now_ms() + o->quiet_ms;
        long left;
        while ((left = quiet_end - now_ms()) > 0) {
            rc = receive_one(c, left);
            if (rc != 0) {
                printf("# unexpected message after the expected %d\n", o->expect);
                status = 5;
                goto out;
            }
        }
    }
    printf("# done: received %d messages\n", got);

    if (o->hold) {
        printf("# holding\n");
        for (;;)
            if (receive_one(c, 1000) < 0)
                break;
    }
out:
    MQTTClient_disconnect(c, 1000);
    MQTTClient_destroy(&c);
    return status;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct opts o;
    if (parse_args(argc, argv, &o)) {
        usage();
        return 1;
    }
    return run(&o);
}

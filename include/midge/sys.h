/* sys.h - broker statistics: the $SYS topic tree and the Prometheus /metrics text.
 *
 * Both views come from one snapshot of the broker (counters in b->stats, sessions, the
 * subscription tree, the retained store), so they never disagree. $SYS values are
 * published retained at QoS 0 through the broker's own routing: they land in the retained
 * store and reach `$SYS/#` subscribers, never `#` ones ([MQTT-4.7.2-1]). Pure: no libuv;
 * the caller owns the timer, and sys_interval 0 means it never calls sys_update.
 */
#ifndef MIDGE_SYS_H
#define MIDGE_SYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "midge/proto.h"

/* Load series: messages, PUBLISH and bytes in and out, dropped, sockets, connections. */
#define SYS_LOAD_SERIES 9
#define SYS_LOAD_WINDOWS 3 /* 1, 5 and 15 minutes */
#define SYS_TOPIC_SLOTS 64 /* every periodic topic has one slot (sys.c checks the count) */
#define SYS_PAYLOAD_MAX 32 /* longest payload is "<20 digits> seconds" */

/* Publisher state between updates. Embed it anywhere (no allocation, nothing to free);
 * set it up with sys_init. */
struct mq_sys {
    uint64_t last_ms;     /* broker clock at the previous sample */
    struct mq_stats prev; /* counters at the previous sample, for rates */
    /* Mosquitto's load figures: events per minute, exponentially averaged over 1/5/15 min. */
    double load[SYS_LOAD_SERIES][SYS_LOAD_WINDOWS];
    double pub_in_rate, pub_out_rate; /* PUBLISH per second over the last interval */
    uint64_t heap_max;                /* largest heap sample seen (0 where unknown) */
    bool version_sent;
    /* Payload last published per topic ("" = never), so an unchanged value is not sent
     * again every interval: the retained copy already holds it. */
    char last[SYS_TOPIC_SLOTS][SYS_PAYLOAD_MAX];
};

/* Start sampling b (borrowed, only read): rates and load averages count from b's
 * current counters and clock. Call once, when the broker is created or when $SYS is
 * switched on. Cannot fail. */
void sys_init(struct mq_sys *s, const struct mq_broker *b);

/* Take a sample and publish the $SYS/broker/... topics whose value changed (the version
 * once, the uptime every time) as retained QoS 0 messages via broker_publish. Call every
 * sys_interval seconds with b->now_ms current; the interval may vary (reload), rates use
 * the real elapsed time. Out of memory skips a topic until the next call. */
void sys_update(struct mq_sys *s, struct mq_broker *b);

/* Every integer figure of the $SYS tree, read from b now: fn(ctx, name, value) with its topic
 * under $SYS/broker/ ("clients/connected"); the heap figures only where they are known.
 * s (may be NULL) supplies the sampler's heap maximum. For the admin API's /broker. */
void sys_values(const struct mq_broker *b, const struct mq_sys *s,
                void (*fn)(void *ctx, const char *name, uint64_t value), void *ctx);

/* Heap bytes in use according to the allocator (glibc mallinfo2); false when unknown
 * (another allocator, or ASan), and *bytes is then not meaningful. */
bool sys_heap_in_use(uint64_t *bytes);

/* Write the broker's statistics in the Prometheus text exposition format (0.0.4) into
 * buf, NUL-terminated when cap > 0. Gauges and counters are read from b now; the rate and
 * load figures come from s's last sample and are left out when s is NULL ($SYS
 * disabled). Returns the length of the whole text (without the NUL), like snprintf:
 * when it is >= cap the text was truncated and the caller may retry with a larger buffer. */
size_t sys_format_metrics(const struct mq_broker *b, const struct mq_sys *s, char *buf, size_t cap);

#endif

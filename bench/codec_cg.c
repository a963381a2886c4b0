/* codec_cg.c - decodes one PUBLISH N times, for counting instructions per codec_decode with
 * callgrind (bench/codec_callgrind.sh). Not part of midge-bench: it links midge's codec.
 *
 * usage: codec_cg N QOS DIALECT   (DIALECT 4: MQTT 3.1.1; 5: MQTT 5 without properties;
 *                                  6: MQTT 5 with a message expiry and a user property)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/codec.h"

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int qos = argc > 2 ? atoi(argv[2]) : 0;
    int dialect = argc > 3 ? atoi(argv[3]) : 4;
    static const uint8_t props[] = {0x02, 0, 0, 0, 60, 0x26, 0, 1, 'k', 0, 1, 'v'};
    const char *topic = "bench/topic/0001";
    size_t tl = strlen(topic), pl = 32, plen = dialect == 6 ? sizeof props : 0, i = 0;
    static uint8_t buf[256];
    buf[i++] = (uint8_t)(0x30 | qos << 1);
    buf[i++] = (uint8_t)(2 + tl + (qos ? 2 : 0) + (dialect >= 5 ? 1 + plen : 0) + pl);
    buf[i++] = 0;
    buf[i++] = (uint8_t)tl;
    memcpy(buf + i, topic, tl);
    i += tl;
    if (qos) {
        buf[i++] = 0x12;
        buf[i++] = 0x34;
    }
    if (dialect >= 5) {
        buf[i++] = (uint8_t)plen;
        memcpy(buf + i, props, plen);
        i += plen;
    }
    memset(buf + i, 'x', pl);
    i += pl;
    struct mq_decode_limits lim = {.protocol_level = (uint8_t)(dialect >= 5 ? 5 : 0)};
    long sum = 0;
    for (long k = 0; k < n; k++) {
        struct mq_packet p;
        int r = codec_decode(buf, i, &lim, &p);
        if (r != (int)i)
            return 1;
        sum += r + p.u.publish.payload_len;
        __asm__ volatile("" ::: "memory"); /* one real decode per iteration */
    }
    printf("%ld\n", sum);
    return 0;
}

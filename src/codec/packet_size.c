/* packet_size.c - how big a partially received packet will be, from its fixed header. */
#include "midge/codec.h"

size_t codec_packet_size(const uint8_t *buf, size_t len)
{
    uint32_t remaining = 0;
    for (size_t i = 1; i < len && i <= 4; i++) {
        remaining |= (uint32_t)(buf[i] & 0x7f) << (7 * (i - 1));
        if (!(buf[i] & 0x80))
            return 1 + i + remaining;
    }
    return 0;
}

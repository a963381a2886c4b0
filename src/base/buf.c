/* buf.c - growable byte buffers (see buf.h). */
#include "midge/buf.h"

#include <stdlib.h>

int buf_reserve(uint8_t **buf, size_t *cap, size_t need, size_t min_cap)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : min_cap;
    while (ncap < need)
        ncap *= 2;
    uint8_t *n = realloc(*buf, ncap);
    if (!n)
        return -1;
    *buf = n;
    *cap = ncap;
    return 0;
}

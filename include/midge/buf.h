/* buf.h - growable byte buffers: the one growth rule every buffer of midge uses. */
#ifndef MIDGE_BUF_H
#define MIDGE_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Make *buf (heap, *cap bytes, may be NULL/0) hold at least need bytes, doubling from
 * min_cap. Contents are kept. Returns 0, or -1 on out of memory (buffer unchanged). */
int buf_reserve(uint8_t **buf, size_t *cap, size_t need, size_t min_cap);

#endif

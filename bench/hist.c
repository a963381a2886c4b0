/*
 * hist.c - latency histogram with fixed log-linear buckets.
 *
 * Every delivered message is recorded, so recording must not allocate and
 * must cost a few instructions: the bucket index comes from the position of
 * the highest set bit plus the next HIST_SUB_BITS bits (HdrHistogram's idea),
 * which bounds the relative error to 1/64 over the whole 1 ns .. 2^64 ns range.
 */
#include "bench.h"

#include <string.h>

static unsigned bucket_of(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS))
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);      /* e >= HIST_SUB_BITS */
    unsigned mant = (unsigned)(v >> (e - HIST_SUB_BITS)); /* in [2^SUB, 2^(SUB+1)) */
    return ((e - HIST_SUB_BITS) << HIST_SUB_BITS) + mant;
}

/* Largest value that falls in bucket idx. */
static uint64_t bucket_top(unsigned idx)
{
    if (idx < (1u << HIST_SUB_BITS))
        return idx;
    unsigned e = (idx >> HIST_SUB_BITS) - 1 + HIST_SUB_BITS;
    uint64_t mant = (idx & ((1u << HIST_SUB_BITS) - 1)) | (1u << HIST_SUB_BITS);
    unsigned shift = e - HIST_SUB_BITS;
    return ((mant + 1) << shift) - 1;
}

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void hist_add(struct hist *h, uint64_t v)
{
    h->buckets[bucket_of(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

uint64_t hist_percentile(const struct hist *h, double pct)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(pct / 100.0 * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* hmap.c - open-addressing hash map (linear probing) from borrowed byte-string keys to pointers.
 *
 * Owns only the slot array. Invariants: cap is 0 or a power of two; used (live + tombstones)
 * stays at or below 70% of cap so every probe ends at an empty slot; a slot's hash is cached
 * so growing never reads keys; an emptied map frees its slots (trie nodes hold many maps).
 */
#include "midge/hmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"

const uint8_t hmap_tombstone;

#define TOMBSTONE ((const void *)&hmap_tombstone)
/* Most trie nodes have a single child ("dev/42/temp"): two slots hold it at 50% load. */
#define MIN_CAP 2u
#define MAX_CAP (1u << 31)

static uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* Loads of 4 and 8 bytes from any alignment (memcpy compiles to one mov). */
static uint64_t load64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static uint64_t load32(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* The last 1-7 bytes as one word, read with at most two loads that may overlap. Not a
 * variable-length memcpy into a zeroed word: that compiles to a byte loop whose stores
 * the following 8-byte load cannot forward from, a stall that made hashing a topic
 * level half of all topic-matching time (perf annotate, scenario A). */
static uint64_t load_tail(const uint8_t *p, size_t len)
{
    if (len >= 4)
        return load32(p) << 32 | load32(p + len - 4);
    return (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
}

/* Multiply-rotate over 8-byte words, then an xor-shift-multiply finaliser so every input bit
 * reaches the low bits we mask with. Keys are mostly short topic levels, so the loop runs once
 * or twice and the tail is read in one or two loads. */
static uint32_t hash_bytes(const uint8_t *p, size_t len)
{
    const uint64_t k1 = 0xa0761d6478bd642full;
    const uint64_t k2 = 0xe7037ed1a0b428dbull;
    uint64_t h = 0x8ebc6af09c88c6e3ull ^ ((uint64_t)len * k2);
    uint64_t w;

    while (len >= 8) {
        w = load64(p);
        h = rotl64(h ^ (w * k1), 31) * k2;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        w = load_tail(p, len);
        h = rotl64(h ^ (w * k1), 31) * k2;
    }
    h ^= h >> 32;
    h *= 0x589965cc75374cc3ull;
    h ^= h >> 29;
    return (uint32_t)(h ^ (h >> 32));
}

uint32_t hmap_hash(const void *key, size_t len)
{
    return hash_bytes(key, len);
}

static bool slot_live(const struct mq_hmap_slot *s)
{
    return s->key && s->key != TOMBSTONE;
}

/* Index of the live slot holding key, or UINT32_MAX. */
static uint32_t find(const struct mq_hmap *m, const void *key, uint32_t len, uint32_t hash)
{
    if (m->count == 0)
        return UINT32_MAX;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = hash & mask;; i = (i + 1) & mask) {
        const struct mq_hmap_slot *s = &m->slots[i];
        if (!s->key)
            return UINT32_MAX;
        if (s->key != TOMBSTONE && s->hash == hash && s->key_len == len &&
            (len == 0 || memcmp(s->key, key, len) == 0))
            return i;
    }
}

/* Re-home every live entry into a fresh array sized for count + 1 at <= 50% load, which
 * drops all tombstones and may shrink a map that grew and then emptied out. */
static int rehash(struct mq_hmap *m)
{
    uint32_t want = m->count + 1;
    uint32_t cap = MIN_CAP;
    while ((uint64_t)want * 2 > cap) {
        if (cap >= MAX_CAP)
            return MQ_ERR_NOMEM;
        cap <<= 1;
    }
    struct mq_hmap_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return MQ_ERR_NOMEM;
    for (uint32_t i = 0; i < m->cap; i++) {
        const struct mq_hmap_slot *s = &m->slots[i];
        if (!slot_live(s))
            continue;
        uint32_t j = s->hash & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->count;
    return 0;
}

void hmap_init(struct mq_hmap *m)
{
    memset(m, 0, sizeof(*m));
}

void hmap_destroy(struct mq_hmap *m)
{
    free(m->slots);
    hmap_init(m);
}

void *hmap_get(const struct mq_hmap *m, const void *key, size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    uint32_t i = find(m, key, (uint32_t)len, hash_bytes(key, len));
    return i == UINT32_MAX ? NULL : m->slots[i].value;
}

int hmap_put(struct mq_hmap *m, const void *key, size_t len, void *value)
{
    if (len > UINT32_MAX)
        return MQ_ERR_INVAL;
    if (!key)
        key = ""; /* NULL marks an empty slot; a zero-length key needs some address */
    uint32_t hash = hash_bytes(key, len);
    uint32_t i = find(m, key, (uint32_t)len, hash);
    if (i != UINT32_MAX) {
        m->slots[i].key = key;
        m->slots[i].value = value;
        return 0;
    }

    /* Reusing a tombstone keeps used unchanged, so only a fresh empty slot can trigger growth. */
    uint32_t mask = m->cap - 1;
    uint32_t slot = UINT32_MAX;
    if (m->cap > 0) {
        for (i = hash & mask;; i = (i + 1) & mask) {
            if (m->slots[i].key == TOMBSTONE || !m->slots[i].key) {
                slot = i;
                break;
            }
        }
    }
    if (slot == UINT32_MAX || !m->slots[slot].key) {
        if ((uint64_t)(m->used + 1) * 10 > (uint64_t)m->cap * 7) {
            int err = rehash(m);
            if (err)
                return err;
            mask = m->cap - 1;
            for (slot = hash & mask; m->slots[slot].key; slot = (slot + 1) & mask)
                ;
        }
        m->used++;
    }
    m->slots[slot] = (struct mq_hmap_slot){key, (uint32_t)len, hash, value};
    m->count++;
    return 0;
}

void *hmap_remove(struct mq_hmap *m, const void *key, size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    uint32_t i = find(m, key, (uint32_t)len, hash_bytes(key, len));
    if (i == UINT32_MAX)
        return NULL;
    void *value = m->slots[i].value;
    m->count--;
    if (m->count == 0) {
        hmap_destroy(m);
        return value;
    }

    uint32_t mask = m->cap - 1;
    m->slots[i].key = TOMBSTONE;
    m->slots[i].value = NULL;
    /* A run of tombstones that ends at an empty slot lies on no probe path to a live key, so
     * it can become empty again; this keeps delete-heavy maps from drifting toward a rehash. */
    if (!m->slots[(i + 1) & mask].key) {
        while (m->slots[i].key == TOMBSTONE) {
            m->slots[i].key = NULL;
            m->used--;
            i = (i - 1) & mask;
        }
    }
    return value;
}

void *hmap_next(const struct mq_hmap *m, uint32_t *pos, const void **key, size_t *len)
{
    for (uint32_t i = *pos; i < m->cap; i++) {
        const struct mq_hmap_slot *s = &m->slots[i];
        if (!slot_live(s))
            continue;
        *pos = i + 1;
        if (key)
            *key = s->key;
        if (len)
            *len = s->key_len;
        return s->value;
    }
    *pos = m->cap;
    return NULL;
}

/* imap.c - open-addressing hash map (linear probing) of values that carry their own key.
 *
 * Owns only the slot array, one pointer per slot: neither the key nor its hash is kept,
 * so probing compares through key_of and growing re-hashes every key (growth is rare;
 * the memory is per entry, forever). Invariants as in hmap.c: cap is 0 or a power of two;
 * used (live + tombstones) stays at or below 70% of cap, so every probe ends at an empty
 * slot; an emptied map frees its slots.
 */
#include "midge/imap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"
#include "midge/hmap.h"

static const uint8_t imap_tombstone;

#define TOMBSTONE ((void *)&imap_tombstone)
#define MIN_CAP 2u
#define MAX_CAP (1u << 31)

static bool slot_live(const void *v)
{
    return v && v != TOMBSTONE;
}

static bool key_equal(const void *value, const void *key, size_t len, mq_imap_key_fn key_of)
{
    size_t vlen;
    const void *vkey = key_of(value, &vlen);
    return vlen == len && (len == 0 || memcmp(vkey, key, len) == 0);
}

/* Index of the live slot whose key is key[0..len), or UINT32_MAX. */
static uint32_t find(const struct mq_imap *m, const void *key, size_t len, uint32_t hash,
                     mq_imap_key_fn key_of)
{
    if (m->count == 0)
        return UINT32_MAX;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = hash & mask;; i = (i + 1) & mask) {
        void *v = m->slots[i];
        if (!v)
            return UINT32_MAX;
        if (v != TOMBSTONE && key_equal(v, key, len, key_of))
            return i;
    }
}

static uint32_t hash_of(const void *value, mq_imap_key_fn key_of)
{
    size_t len;
    const void *key = key_of(value, &len);
    return hmap_hash(key, len);
}

/* Re-home every live entry into a fresh array sized for count + 1 at <= 50% load, which
 * drops all tombstones and may shrink a map that grew and then emptied out. */
static int rehash(struct mq_imap *m, mq_imap_key_fn key_of)
{
    uint32_t want = m->count + 1;
    uint32_t cap = MIN_CAP;
    while ((uint64_t)want * 2 > cap) {
        if (cap >= MAX_CAP)
            return MQ_ERR_NOMEM;
        cap <<= 1;
    }
    void **slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return MQ_ERR_NOMEM;
    for (uint32_t i = 0; i < m->cap; i++) {
        void *v = m->slots[i];
        if (!slot_live(v))
            continue;
        uint32_t j = hash_of(v, key_of) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = v;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->count;
    return 0;
}

void imap_init(struct mq_imap *m)
{
    memset(m, 0, sizeof(*m));
}

void imap_destroy(struct mq_imap *m)
{
    free(m->slots);
    imap_init(m);
}

void *imap_get(const struct mq_imap *m, const void *key, size_t len, mq_imap_key_fn key_of)
{
    if (m->count == 0)
        return NULL; /* skips hashing: most trie nodes are leaves with an empty map */
    uint32_t i = find(m, key, len, hmap_hash(key, len), key_of);
    return i == UINT32_MAX ? NULL : m->slots[i];
}

int imap_put(struct mq_imap *m, void *value, mq_imap_key_fn key_of)
{
    size_t len;
    const void *key = key_of(value, &len);
    uint32_t hash = hmap_hash(key, len);
    uint32_t i = find(m, key, len, hash, key_of);
    if (i != UINT32_MAX) {
        m->slots[i] = value;
        return 0;
    }

    /* Reusing a tombstone keeps used unchanged, so only a fresh empty slot can trigger growth. */
    uint32_t mask = m->cap - 1;
    uint32_t slot = UINT32_MAX;
    if (m->cap > 0) {
        for (i = hash & mask;; i = (i + 1) & mask) {
            if (m->slots[i] == TOMBSTONE || !m->slots[i]) {
                slot = i;
                break;
            }
        }
    }
    if (slot == UINT32_MAX || !m->slots[slot]) {
        if ((uint64_t)(m->used + 1) * 10 > (uint64_t)m->cap * 7) {
            int err = rehash(m, key_of);
            if (err)
                return err;
            mask = m->cap - 1;
            for (slot = hash & mask; m->slots[slot]; slot = (slot + 1) & mask)
                ;
        }
        m->used++;
    }
    m->slots[slot] = value;
    m->count++;
    return 0;
}

void *imap_remove(struct mq_imap *m, const void *key, size_t len, mq_imap_key_fn key_of)
{
    if (m->count == 0)
        return NULL;
    uint32_t i = find(m, key, len, hmap_hash(key, len), key_of);
    if (i == UINT32_MAX)
        return NULL;
    void *value = m->slots[i];
    m->count--;
    if (m->count == 0) {
        imap_destroy(m);
        return value;
    }

    uint32_t mask = m->cap - 1;
    m->slots[i] = TOMBSTONE;
    /* A run of tombstones that ends at an empty slot lies on no probe path to a live key, so
     * it can become empty again; this keeps delete-heavy maps from drifting toward a rehash. */
    if (!m->slots[(i + 1) & mask]) {
        while (m->slots[i] == TOMBSTONE) {
            m->slots[i] = NULL;
            m->used--;
            i = (i - 1) & mask;
        }
    }
    return value;
}

void *imap_next(const struct mq_imap *m, uint32_t *pos)
{
    for (uint32_t i = *pos; i < m->cap; i++) {
        if (!slot_live(m->slots[i]))
            continue;
        *pos = i + 1;
        return m->slots[i];
    }
    *pos = m->cap;
    return NULL;
}

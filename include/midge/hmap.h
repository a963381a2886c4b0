/* hmap.h - open-addressing hash map from byte-string keys to pointers.
 *
 * Keys are borrowed: the map stores the caller's key pointer, so the key bytes
 * must stay valid (typically they live inside the value) until removed.
 * Not thread-safe; no iteration order guarantees.
 */
#ifndef MIDGE_HMAP_H
#define MIDGE_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct mq_hmap_slot {
    const void *key; /* NULL = empty; (void *)&hmap_tombstone = deleted */
    uint32_t key_len;
    uint32_t hash;
    void *value;
};

struct mq_hmap {
    struct mq_hmap_slot *slots; /* NULL until the first put */
    uint32_t cap;               /* power of two or 0 */
    uint32_t count;             /* live entries */
    uint32_t used;              /* live + tombstones */
};

/* The address a deleted slot's key points at; never a real key. */
extern const uint8_t hmap_tombstone;

/* Initialise an empty map (allocates nothing). */
void hmap_init(struct mq_hmap *m);

/* Free the slot array; values and keys are the caller's to free first. */
void hmap_destroy(struct mq_hmap *m);

/* Value stored under key, or NULL. */
void *hmap_get(const struct mq_hmap *m, const void *key, size_t len);

/* Insert or replace. Returns 0 or MQ_ERR_NOMEM (map unchanged on error), or
 * MQ_ERR_INVAL when len exceeds UINT32_MAX. On replace the new key pointer is
 * stored, so the old key may be freed afterwards. key is borrowed (see file
 * comment) and may be NULL only when len is 0; value must not be NULL. */
int hmap_put(struct mq_hmap *m, const void *key, size_t len, void *value);

/* Remove key; returns its value, or NULL when absent. Removing the last entry
 * frees the slot array, so an emptied map holds no memory. */
void *hmap_remove(struct mq_hmap *m, const void *key, size_t len);

/* Iterate: start with *pos = 0; returns the next value (and its key) or NULL at the end.
 * The map must not be modified during iteration, except hmap_remove of the entry
 * just returned. */
void *hmap_next(const struct mq_hmap *m, uint32_t *pos, const void **key, size_t *len);

/* The hash of key[0..len) this map uses; imap.c shares it. */
uint32_t hmap_hash(const void *key, size_t len);

/* Number of live entries. */
static inline uint32_t hmap_count(const struct mq_hmap *m)
{
    return m->count;
}

#endif

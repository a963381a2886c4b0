/* imap.h - open-addressing hash map whose slot is the value pointer alone.
 *
 * For large tables of objects that carry their own key (sessions by client id, trie
 * children by topic level): a slot costs 8 bytes where an mq_hmap slot costs 24. The key
 * is read from the value by the caller's key_of function, passed to every call that needs
 * it, so a lookup dereferences each candidate it probes. Values are borrowed and must keep
 * their key unchanged while stored. Not thread-safe; no iteration order guarantees.
 */
#ifndef MIDGE_IMAP_H
#define MIDGE_IMAP_H

#include <stddef.h>
#include <stdint.h>

struct mq_imap {
    void **slots;   /* NULL until the first put */
    uint32_t cap;   /* power of two or 0 */
    uint32_t count; /* live entries */
    uint32_t used;  /* live + tombstones */
};

/* The key of a stored value: returns its bytes and sets *len. */
typedef const void *(*mq_imap_key_fn)(const void *value, size_t *len);

/* Initialise an empty map (allocates nothing). */
void imap_init(struct mq_imap *m);

/* Free the slot array; the values are the caller's. */
void imap_destroy(struct mq_imap *m);

/* The value whose key equals key[0..len), or NULL. */
void *imap_get(const struct mq_imap *m, const void *key, size_t len, mq_imap_key_fn key_of);

/* Insert value (not NULL) under its key, replacing a value with an equal key. Returns 0,
 * or MQ_ERR_NOMEM with the map unchanged. */
int imap_put(struct mq_imap *m, void *value, mq_imap_key_fn key_of);

/* Remove the value whose key equals key[0..len) and return it, or NULL when absent.
 * Removing the last entry frees the slot array, so an emptied map holds no memory. */
void *imap_remove(struct mq_imap *m, const void *key, size_t len, mq_imap_key_fn key_of);

/* Iterate: start with *pos = 0; returns the next value or NULL at the end. The map must
 * not be modified during iteration, except imap_remove of the value just returned. */
void *imap_next(const struct mq_imap *m, uint32_t *pos);

/* Number of live entries. */
static inline uint32_t imap_count(const struct mq_imap *m)
{
    return m->count;
}

#endif

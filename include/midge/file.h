/* file.h - read a small configuration-like file whole, so a file replaced while it
 * is being read is never half-parsed. */
#ifndef MIDGE_FILE_H
#define MIDGE_FILE_H

#include <stddef.h>

/* Read the file at path (at most max bytes). Returns 0 with *out (owned by the caller,
 * free()) holding *len bytes; MQ_ERR_NOMEM; or MQ_ERR_IO with *op ("open" or "read")
 * and *err (an errno value; EFBIG when the file is larger than max) set. */
int file_read_all(const char *path, size_t max, char **out, size_t *len, const char **op, int *err);

/* file_read_all, with a failure turned into one sentence in why[0..cap) naming the file as
 * kind ("password file"): "<kind> larger than N MiB", "cannot open <kind>: <errno text>",
 * or the error's own sentence. Same return values. */
int file_read_whole(const char *path, size_t max, const char *kind, char **out, size_t *len,
                    char *why, size_t cap);

#endif

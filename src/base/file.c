/* file.c - read a small file whole (configuration, password and ACL files). */
#include "midge/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "midge/err.h"

int file_read_all(const char *path, size_t max, char **out, size_t *len, const char **op, int *err)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    *out = NULL;
    *len = 0;
    f = fopen(path, "rb");
    if (!f) {
        *op = "open";
        *err = errno;
        rc = MQ_ERR_IO;
        goto fail;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max) {
                *op = "read";
                *err = EFBIG;
                rc = MQ_ERR_IO;
                goto fail;
            }
            cap = cap ? cap * 2 : 4096;
            if (cap > max)
                cap = max;
            char *v = realloc(buf, cap + 1);
            if (!v) {
                rc = MQ_ERR_NOMEM;
                goto fail;
            }
            buf = v;
        }
        errno = 0;
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                *op = "read";
                *err = errno ? errno : EIO;
                rc = MQ_ERR_IO;
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    if (!buf && !(buf = malloc(1)))
        return MQ_ERR_NOMEM;
    buf[n] = '\0'; /* convenient for text parsers; not counted in *len */
    *out = buf;
    *len = n;
    return 0;

fail:
    if (f)
        fclose(f);
    free(buf);
    return rc;
}

int file_read_whole(const char *path, size_t max, const char *kind, char **out, size_t *len,
                    char *why, size_t cap)
{
    const char *op = "read";
    int err = 0;
    int rc = file_read_all(path, max, out, len, &op, &err);
    if (rc == MQ_ERR_IO && err == EFBIG)
        snprintf(why, cap, "%s larger than %zu MiB", kind, max >> 20);
    else if (rc == MQ_ERR_IO)
        snprintf(why, cap, "cannot %s %s: %s", op, kind, strerror(err));
    else if (rc)
        snprintf(why, cap, "%s", mq_strerror(rc));
    return rc;
}

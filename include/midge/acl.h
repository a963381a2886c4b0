/* acl.h - Mosquitto acl_file access control lists: load, then check each PUBLISH, SUBSCRIBE
 * and delivery.
 *
 * A loaded ACL is immutable: reload builds a new one and swaps it only when the load succeeded,
 * so a bad file keeps the old rules. Pure module (no I/O beyond reading the file in acl_load,
 * no libuv, no OpenSSL); checks never allocate. See docs/acl.md for the format and semantics.
 */
#ifndef MIDGE_ACL_H
#define MIDGE_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_acl; /* an immutable loaded ACL file */

/* What a client wants to do; the values are Mosquitto's MOSQ_ACL_* bits. */
enum mq_acl_access {
    MQ_ACL_READ = 1,      /* receive a message on `topic` (every delivery, retained included) */
    MQ_ACL_WRITE = 2,     /* PUBLISH to `topic` (a will is checked as a WRITE at CONNECT) */
    MQ_ACL_SUBSCRIBE = 4, /* SUBSCRIBE with topic filter `topic` (may contain + and #) */
};

/* Report one diagnostic, "file:line: message" (NUL-terminated, valid only during the call).
 * is_error is true for the errors that make the load fail; false for warnings. */
typedef void (*mq_acl_report_fn)(void *ctx, bool is_error, const char *line);

/* Read and parse the ACL file at path. Returns a new ACL (owned by the caller, release with
 * acl_free), or NULL after reporting the errors found ("file:line: message", or
 * "file: <OS error>" when the file cannot be read; at most 50 diagnostics, then one line saying
 * more were not shown). Warnings do not fail the load. report may be NULL. */
struct mq_acl *acl_load(const char *path, mq_acl_report_fn report, void *ctx);

/* Parse ACL text held in memory (tests, fuzzing); text need not be NUL-terminated and may
 * contain any bytes. name is used in diagnostics only (borrowed, may be NULL → "acl").
 * Same result and ownership as acl_load. */
struct mq_acl *acl_parse(const char *text, size_t len, const char *name, mq_acl_report_fn report,
                         void *ctx);

/* Release an ACL from acl_load/acl_parse; NULL is allowed. No acl_check may be running on it. */
void acl_free(struct mq_acl *acl);

/* True when the client may do `access` on `topic`, by Mosquitto 2.0's rules (docs/acl.md):
 *   1. the client's own section (its user's, or the anonymous section when username is NULL):
 *      a matching `deny` entry refuses; otherwise a matching entry granting `access` allows;
 *   2. when the file has `pattern` lines, a user name or client id containing '+' or '#'
 *      refuses (it could otherwise widen a pattern);
 *   3. the patterns, with %u and %c replaced: a matching `deny` refuses; otherwise a matching
 *      pattern granting `access` allows;
 *   4. anything else is refused (an empty file refuses everything).
 * For READ and WRITE "matching" is MQTT filter matching of the entry against the topic name
 * ('$' topics only match entries that start with '$'). For SUBSCRIBE `topic` is the requested
 * filter: a `deny` entry refuses when it matches every topic the filter can match, and a
 * read/readwrite entry allows when at least one topic matches both (each delivery is then
 * checked with READ, so a broad filter only ever receives what the client may read).
 * acl: borrowed, not NULL (with no acl_file configured the caller allows everything itself).
 * username: NUL-terminated, or NULL for a client that sent no user name. client_id:
 * NUL-terminated (substituted for %c; NULL refuses every pattern). topic: topic_len bytes,
 * not NUL-terminated, already validated by the codec (a name for READ/WRITE, a filter for
 * SUBSCRIBE). Never allocates; safe to call concurrently on one ACL. */
bool acl_check(const struct mq_acl *acl, const char *username, const char *client_id,
               const uint8_t *topic, size_t topic_len, enum mq_acl_access access);

/* Number of `user` sections (distinct user names) loaded. */
size_t acl_user_count(const struct mq_acl *acl);

/* Number of entries (topic and pattern lines) loaded. */
size_t acl_entry_count(const struct mq_acl *acl);

#endif

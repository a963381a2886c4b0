/* passwd.h - Mosquitto password files: load, verify, hash, write.
 *
 * Format: one "user:hash" per line, hash "$7$<iterations>$<salt b64>$<hash b64>"
 * (PBKDF2-HMAC-SHA512, what mosquitto_passwd 2.0 writes) or "$6$<salt b64>$<hash b64>"
 * (salted SHA-512, older files). Hashing uses OpenSSL; this module is linked into the
 * server, never into the pure protocol layers, which reach it through a callback.
 */
#ifndef MIDGE_PASSWD_H
#define MIDGE_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_passwd; /* an immutable loaded file */

/* Report one diagnostic: "file:line: message" (never containing a password or hash). */
typedef void (*mq_passwd_report_fn)(void *ctx, bool is_error, const char *line);

/* Load a password file. Malformed lines are skipped with a warning naming file:line;
 * the valid users are kept. Returns NULL (after reporting why: missing file, OS error)
 * when the file cannot be read at all. */
struct mq_passwd *passwd_load(const char *path, mq_passwd_report_fn report, void *ctx);

/* Parse password-file text held in memory (tests, fuzzing). */
struct mq_passwd *passwd_parse(const char *text, size_t len, const char *name,
                               mq_passwd_report_fn report, void *ctx);

void passwd_free(struct mq_passwd *p);

/* Number of users loaded. */
size_t passwd_count(const struct mq_passwd *p);

/* Result of a password check. */
enum mq_passwd_result {
    MQ_PASSWD_OK = 0,
    MQ_PASSWD_NO_SUCH_USER = 1,
    MQ_PASSWD_MISMATCH = 2,
};

/* Check user/password (byte strings, not NUL-terminated) against the file, in time
 * independent of where the hashes differ (CRYPTO_memcmp). */
enum mq_passwd_result passwd_check(const struct mq_passwd *p, const uint8_t *user, size_t user_len,
                                   const uint8_t *password, size_t password_len);

/* Hashing work done by this process so far (PBKDF2 iterations; 1 per SHA-512), so
 * tests can check that an unknown user costs as much as a known one without timing. */
uint64_t passwd_work_done(void);

/* Make a "$7$..." hash of password with a fresh random salt and mosquitto_passwd's
 * default iteration count, into out (NUL-terminated). Returns 0 or a negative enum mq_err. */
int passwd_hash(const char *password, size_t password_len, char *out, size_t cap);

#endif

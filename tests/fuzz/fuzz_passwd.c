/* fuzz_passwd.c - libFuzzer target: arbitrary bytes through passwd_parse.
 *
 * Every input is parsed, every report is read, and the result is freed; ASan/LSan catch
 * overflows and leaks. passwd_check is deliberately not called: an input may carry an
 * iteration count up to the parser's cap of 10,000,000, seconds of PBKDF2 per run.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "midge/passwd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void report(void *ctx, bool is_error, const char *line)
{
    size_t *total = ctx;
    *total += strlen(line) + is_error;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t total = 0;
    struct mq_passwd *p = passwd_parse((const char *)data, size, "fuzz.pw", report, &total);

    if (p && passwd_count(p) > size)
        __builtin_trap(); /* every user needs at least one line of input */
    passwd_free(p);
    return 0;
}

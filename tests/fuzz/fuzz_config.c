/* fuzz_config.c - libFuzzer target: arbitrary bytes through config_parse_string.
 *
 * Every input is parsed, every report is formatted and read, and the result is freed;
 * ASan/LSan catch overflows and leaks. Inputs that name include_dir are skipped so the
 * fuzzer never walks the host's directories.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "midge/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void report(void *ctx, bool is_error, const char *line)
{
    size_t *total = ctx;
    *total += strlen(line) + is_error;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mq_config cfg;
    size_t total = 0;

    if (memmem(data, size, "include_dir", 11))
        return 0;
    if (config_parse_string((const char *)data, size, "fuzz.conf", &cfg, report, &total) == 0)
        config_free(&cfg);
    return 0;
}

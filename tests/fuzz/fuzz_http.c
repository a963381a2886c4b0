/* fuzz_http.c - libFuzzer target for src/net/http.c's request-head parser.
 *
 * Owns only the oracle: a parse never reads past the input, and a complete head ends with
 * the empty line, has a method and a '/' target, and headers that point inside the input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/net/http.c"

const struct http_asset http_assets[] = {{"/index.html", (const uint8_t *)"x", 1, "text/html"}};
const size_t http_asset_count = 1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_request req;
    const char *why = NULL;
    int r = http_parse_request(data, size, &req, &why);
    if (r == HTTP_ERROR && !why)
        abort();
    if (r > 0) {
        if ((size_t)r > size || r < 4 || memcmp(data + r - 4, "\r\n\r\n", 4) || !req.method.n ||
            req.target.p[0] != '/')
            abort();
        for (size_t i = 0; i < req.header_count; i++) {
            const struct http_header *h = &req.headers[i];
            if (h->name.p < (const char *)data || h->value.p + h->value.n > (const char *)data + r)
                abort();
            (void)http_list_has(&h->value, "upgrade");
        }
    }
    return 0;
}

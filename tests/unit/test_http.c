/* test_http.c - unit tests for src/net/http.c: the strict request-head parser, token
 * lists, Sec-WebSocket-Key/Accept (RFC 6455 section 1.3's own example) and asset lookup.
 *
 * http.c is pure (no libuv) but lives in midge_net, so it is compiled in here; the asset
 * table the build generates is replaced by a two-entry one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "../../src/net/http.c"

static const uint8_t page[] = "<!doctype html>";
const struct http_asset http_assets[] = {
    {"/index.html", page, sizeof(page) - 1, "text/html; charset=utf-8"},
    {"/app.js", page, 1, "text/javascript; charset=utf-8"},
};
const size_t http_asset_count = 2;

static int parse(const char *s, struct http_request *req, const char **why)
{
    return http_parse_request((const uint8_t *)s, strlen(s), req, why);
}

static void span_is(const struct http_span *sp, const char *want)
{
    assert_int_equal(sp->n, strlen(want));
    assert_memory_equal(sp->p, want, sp->n);
}

static void test_complete_request(void **state)
{
    (void)state;
    struct http_request req;
    const char *why;
    const char *s = "GET /mqtt?x=1 HTTP/1.1\r\nHost: h:9001\r\nUpgrade:  websocket \r\n"
                    "Connection: keep-alive, Upgrade\r\nX-Empty:\r\n\r\nFRAMES";
    int n = parse(s, &req, &why);
    assert_int_equal(n, (int)(strstr(s, "FRAMES") - s));
    span_is(&req.method, "GET");
    span_is(&req.target, "/mqtt?x=1");
    span_is(&req.path, "/mqtt");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.header_count, 4);
    size_t count;
    const struct http_span *v = http_header(&req, "upgrade", &count);
    assert_non_null(v);
    assert_int_equal(count, 1);
    span_is(v, "websocket"); /* surrounding whitespace trimmed */
    assert_true(http_list_has(http_header(&req, "Connection", NULL), "upgrade"));
    assert_false(http_list_has(http_header(&req, "Connection", NULL), "close"));
    span_is(http_header(&req, "x-empty", NULL), "");
    assert_null(http_header(&req, "Origin", &count));
    assert_int_equal(count, 0);
}

static void test_partial_at_every_length(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.0\r\nHost: a\r\n\r\n";
    struct http_request req;
    const char *why;
    for (size_t i = 0; i < strlen(s); i++)
        assert_int_equal(http_parse_request((const uint8_t *)s, i, &req, &why), HTTP_PARTIAL);
    assert_int_equal(parse(s, &req, &why), (int)strlen(s));
    assert_int_equal(req.minor_version, 0);
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "\x16\x03\x01\x00",        /* TLS ClientHello */
        "\x10\x0c\x00\x04MQTT",    /* MQTT CONNECT */
        " GET / HTTP/1.1\r\n\r\n", /* leading space */
        "GET  / HTTP/1.1\r\n\r\n", /* empty target */
        "GET * HTTP/1.1\r\n\r\n",  /* not origin-form */
        "GET http://a/ HTTP/1.1\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "GET / HTTX/1.1\r\n\r\n",
        "GET / HTTP/1.1\n\n", /* bare LF */
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", /* folding */
        "GET / HTTP/1.1\r\n: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\nB: c\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        "GET / HTTP/1.1\r\n\rX",
        "GET /\x7f HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct http_request req;
        const char *why = NULL;
        int r = parse(bad[i], &req, &why);
        if (r != HTTP_ERROR)
            print_error("case %zu: %d\n", i, r);
        assert_int_equal(r, HTTP_ERROR);
        assert_non_null(why);
    }
}

static void test_too_large(void **state)
{
    (void)state;
    static char buf[HTTP_MAX_HEAD + 64];
    struct http_request req;
    const char *why;
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    memset(buf + 19, 'a', sizeof(buf) - 19);
    assert_int_equal(http_parse_request((uint8_t *)buf, HTTP_MAX_HEAD, &req, &why), HTTP_PARTIAL);
    assert_int_equal(http_parse_request((uint8_t *)buf, HTTP_MAX_HEAD + 1, &req, &why),
                     HTTP_TOO_LARGE);
    /* 65 header fields */
    char many[2048] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 65; i++)
        strcat(many, "A: b\r\n");
    strcat(many, "\r\n");
    assert_int_equal(parse(many, &req, &why), HTTP_TOO_LARGE);
}

static void test_websocket_key_and_accept(void **state)
{
    (void)state;
    /* RFC 6455 section 1.3 */
    struct http_span key = {"dGhlIHNhbXBsZSBub25jZQ==", 24};
    assert_true(http_ws_key_valid(&key));
    char accept[29];
    http_ws_accept(&key, accept);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    struct http_span shorter = {"dGhlIHNhbXBsZQ==", 16};
    struct http_span bad = {"dGhlIHNhbXBsZSBub25jZQ=!", 24};
    struct http_span longer = {"dGhlIHNhbXBsZSBub25jZXg=", 24}; /* 17 bytes */
    assert_false(http_ws_key_valid(&shorter));
    assert_false(http_ws_key_valid(&bad));
    assert_false(http_ws_key_valid(&longer));
}

static void test_assets(void **state)
{
    (void)state;
    struct http_span root = {"/", 1}, js = {"/app.js", 7}, none = {"/app", 4};
    assert_ptr_equal(http_asset_find(&root), &http_assets[0]);
    assert_ptr_equal(http_asset_find(&js), &http_assets[1]);
    assert_null(http_asset_find(&none));
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_request),
        cmocka_unit_test(test_partial_at_every_length),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_websocket_key_and_accept),
        cmocka_unit_test(test_assets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

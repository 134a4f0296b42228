/* Unit tests for engine/routes/files.c: the list route's ?limit and ?after. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/routes/files.c"

/* Parse a request head the way the engine does. */
static struct http_head *head_for(const char *req)
{
    static struct http_head h;
    struct http_parser p;
    struct http_ev ev;
    ssize_t n;

    http_init(&p);
    http_begin(&p, &h);
    n = http_feed(&p, req, strlen(req), &ev);
    assert_true(n > 0);
    assert_int_equal(ev.kind, HTTP_EV_HEAD);
    return &h;
}

static void test_query_param(void **state)
{
    struct http_head *h = head_for("GET /v1/files?x=1&limit=20&after=abc HTTP/1.1\r\n\r\n");
    struct http_span v;

    (void)state;
    assert_true(http_query_param(h, "limit", &v));
    assert_int_equal(v.len, 2);
    assert_memory_equal(v.p, "20", 2);
    assert_true(http_query_param(h, "after", &v));
    assert_memory_equal(v.p, "abc", 3);
    assert_false(http_query_param(h, "lim", &v));
    assert_false(http_query_param(h, "y", &v));
    h = head_for("GET /v1/files HTTP/1.1\r\n\r\n");
    assert_false(http_query_param(h, "limit", &v));
}

static void test_parse_list(void **state)
{
    char cur[IDS_CURSOR_MAX];
    char req[512];
    struct files_req q;

    (void)state;
    memset(&q, 0, sizeof(q));
    assert_true(parse_list(head_for("GET /v1/files HTTP/1.1\r\n\r\n"), &q));
    assert_int_equal(q.limit, LIST_DEFAULT);
    assert_string_equal(q.after_id, "");

    assert_true(parse_list(head_for("GET /v1/files?limit=1000 HTTP/1.1\r\n\r\n"), &q));
    assert_int_equal(q.limit, 1000);
    assert_false(parse_list(head_for("GET /v1/files?limit=1001 HTTP/1.1\r\n\r\n"), &q));
    assert_false(parse_list(head_for("GET /v1/files?limit=0 HTTP/1.1\r\n\r\n"), &q));
    assert_false(parse_list(head_for("GET /v1/files?limit= HTTP/1.1\r\n\r\n"), &q));
    assert_false(parse_list(head_for("GET /v1/files?limit=-1 HTTP/1.1\r\n\r\n"), &q));
    assert_false(parse_list(head_for("GET /v1/files?limit=12345 HTTP/1.1\r\n\r\n"), &q));

    ids_cursor_encode(cur, "2026-11-29T21:02:53.050203Z", "ceb5e4c2-1045-42e9-80f7-e0375b9ecc58");
    snprintf(req, sizeof(req), "GET /v1/files?after=%s&limit=5 HTTP/1.1\r\n\r\n", cur);
    memset(&q, 0, sizeof(q));
    assert_true(parse_list(head_for(req), &q));
    assert_int_equal(q.limit, 5);
    assert_string_equal(q.after_ts, "2026-11-29T21:02:53.050203Z");
    assert_string_equal(q.after_id, "ceb5e4c2-1045-42e9-80f7-e0375b9ecc58");

    /* A cursor must be exactly what a page hands out. */
    assert_false(parse_list(head_for("GET /v1/files?after=garbage HTTP/1.1\r\n\r\n"), &q));
    ids_b64url_encode(cur, (const unsigned char *)"2026-11-29 21:02:53|x", 21);
    snprintf(req, sizeof(req), "GET /v1/files?after=%s HTTP/1.1\r\n\r\n", cur);
    assert_false(parse_list(head_for(req), &q));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_param),
        cmocka_unit_test(test_parse_list),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

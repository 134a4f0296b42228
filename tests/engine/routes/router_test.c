/*
 * Unit tests for engine/routes/router.c: the route table, the matcher (404
 * vs 405 and its Allow line, HEAD as GET, captures, what is and is not the
 * same path), and the order of the phases a matched request runs through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/routes/router.c"

#define UUID "ceb5e4c2-1045-42e9-80f7-e0375b9ecc58"

static struct http_span span(const char *s)
{
    struct http_span v = {s, strlen(s)};

    return v;
}

static enum match_result match_path(int method, const char *path, struct route_match *m)
{
    return match(routes, NROUTES, method, span(path), m);
}

/* Match method and path, failing with both named unless the result is want. */
static void expect_match(int method, const char *path, enum match_result want,
                         struct route_match *m)
{
    enum match_result got = match_path(method, path, m);

    if (got != want)
        fail_msg("%s %s: match result %d, want %d", llhttp_method_name((llhttp_method_t)method),
                 path, (int)got, (int)want);
}

static void assert_span(struct http_span s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

/* A path of pattern with every capture replaced by a value of its kind. */
static void sample_path(const char *pattern, char *out, size_t cap)
{
    size_t n = 0;

    while (*pattern != '\0' && n + 40 < cap) {
        if (*pattern == '{') {
            const char *v = strncmp(pattern, "{id}", 4) == 0 ? UUID : "some-name.bin";
            n += (size_t)snprintf(out + n, cap - n, "%s", v);
            pattern = strchr(pattern, '}') + 1;
        } else {
            out[n++] = *pattern++;
        }
    }
    out[n] = '\0';
}

/* Every route of the table is reachable: by each of its methods, on a path of its pattern. */
static void test_every_route_matches(void **state)
{
    static const int methods[] = {HTTP_GET,  HTTP_HEAD,  HTTP_PUT,
                                  HTTP_POST, HTTP_PATCH, HTTP_DELETE};
    size_t i;
    size_t j;

    (void)state;
    for (i = 0; i < NROUTES; i++) {
        const struct route *r = &routes[i];
        char path[256];
        unsigned tried = 0;

        assert_non_null(r->handler);
        assert_true(r->size >= sizeof(struct route_req));
        assert_true(r->pattern[0] == '/');
        sample_path(r->pattern, path, sizeof(path));
        for (j = 0; j < sizeof(methods) / sizeof(methods[0]); j++) {
            struct route_match m;
            if ((r->methods & method_bit(methods[j])) == 0)
                continue;
            expect_match(methods[j], path, MATCH_OK, &m);
            /* Not shadowed by an earlier route. */
            assert_ptr_equal(m.route, r);
            tried |= method_bit(methods[j]);
        }
        assert_int_equal(tried, r->methods & ~M_OPTIONS);
    }
}

struct want {
    int method;
    const char *path;
    route_handler_fn handler;
    route_step_fn parse;
    enum route_auth auth;
    bool body;
    const char *cap; /* the first capture, or NULL for none */
};

/* The routes of API.md, as the table must serve them. */
static void test_routes_of_the_api(void **state)
{
    static const struct want wants[] = {
        {HTTP_GET, "/healthz", healthz, NULL, ROUTE_OPEN, false, NULL},
        {HTTP_HEAD, "/healthz", healthz, NULL, ROUTE_OPEN, false, NULL},
        {HTTP_GET, "/metrics", metrics, NULL, ROUTE_OPEN, false, NULL},
        {HTTP_HEAD, "/metrics", metrics, NULL, ROUTE_OPEN, false, NULL},
        {HTTP_GET, "/v1/files", files_list, files_parse_list, ROUTE_TOKEN, false, NULL},
        {HTTP_HEAD, "/v1/files", files_list, files_parse_list, ROUTE_TOKEN, false, NULL},
        {HTTP_GET, "/v1/files/" UUID, files_get, files_parse_id, ROUTE_ANON, false, UUID},
        {HTTP_HEAD, "/v1/files/" UUID, files_get, files_parse_id, ROUTE_ANON, false, UUID},
        {HTTP_GET, "/v1/files/not-a-uuid", files_get, files_parse_id, ROUTE_ANON, false,
         "not-a-uuid"},
        {HTTP_DELETE, "/v1/files/" UUID, files_delete, files_parse_id, ROUTE_TOKEN, false, UUID},
        {HTTP_PUT, "/v1/files/a.txt", intake_begin, intake_parse, ROUTE_ANON, true, "a.txt"},
        {HTTP_PUT, "/v1/files/" UUID, intake_begin, intake_parse, ROUTE_ANON, true, UUID},
        {HTTP_GET, "/v1/files/" UUID "/content", files_content, files_parse_id, ROUTE_ANON, false,
         UUID},
        {HTTP_HEAD, "/v1/files/" UUID "/content", files_content, files_parse_id, ROUTE_ANON, false,
         UUID},
        {HTTP_GET, "/v1/files/abc/content", files_content, files_parse_id, ROUTE_ANON, false,
         "abc"},
        {HTTP_POST, "/v1/files/" UUID "/link", files_link, files_parse_id, ROUTE_TOKEN, false,
         UUID},
        {HTTP_POST, "/v1/uploads", intake_begin, intake_parse, ROUTE_ANON, true, NULL},
        /* Captures are raw: not decoded, and an encoded slash does not split them. */
        {HTTP_PUT, "/v1/files/a%2Fb.txt", intake_begin, intake_parse, ROUTE_ANON, true,
         "a%2Fb.txt"},
        {HTTP_PUT, "/v1/files/%FF", intake_begin, intake_parse, ROUTE_ANON, true, "%FF"},
        {HTTP_GET, "/v1/files/%20" UUID, files_get, files_parse_id, ROUTE_ANON, false, "%20" UUID},
        {HTTP_PUT, "/v1/files/{name}", intake_begin, intake_parse, ROUTE_ANON, true, "{name}"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
        const struct want *w = &wants[i];
        struct route_match m;

        expect_match(w->method, w->path, MATCH_OK, &m);
        assert_ptr_equal(m.route->handler, w->handler);
        assert_ptr_equal(m.route->parse, w->parse);
        assert_int_equal(m.route->auth, w->auth);
        assert_int_equal(m.route->body, w->body);
        if (w->cap == NULL) {
            assert_int_equal(m.ncap, 0);
        } else {
            assert_int_equal(m.ncap, 1);
            assert_span(m.cap[0], w->cap);
        }
    }
}

/* Paths no route has: 404, whatever the method. */
static void test_no_path(void **state)
{
    static const char *const paths[] = {
        "/",
        "",
        "*",
        "healthz",
        "/healthz/",
        "//healthz",
        "/healthzz",
        "/health",
        "/HEALTHZ",
        "/metrics/x",
        "/readyz",
        "/v1",
        "/v1/",
        "/v1/files/",
        "/v1//files",
        "/V1/files",
        "/v1/%66iles",
        "/v1/files/a/b",
        "/v1/files//content",
        "/v1/files/" UUID "/",
        "/v1/files/" UUID "/content/",
        "/v1/files/" UUID "/content/x",
        "/v1/files/" UUID "/contents",
        "/v1/files/" UUID "/link/",
        "/v1/uploads/",
        "/v1/uploads/x",
        "/v1/tus/",
    };
    static const int methods[] = {HTTP_GET,  HTTP_HEAD,   HTTP_PUT,
                                  HTTP_POST, HTTP_DELETE, HTTP_OPTIONS};
    size_t i;
    size_t j;

    (void)state;
    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        for (j = 0; j < sizeof(methods) / sizeof(methods[0]); j++) {
            struct route_match m;
            expect_match(methods[j], paths[i], MATCH_NO_PATH, &m);
            assert_null(m.route);
        }
    }
}

/* Known paths, other methods: 405 with the path's methods in Allow. */
static void test_no_method(void **state)
{
    static const struct {
        int method;
        const char *path;
        const char *allow;
        bool bodyless; /* some route of the path takes no body: skip the body first */
    } cases[] = {
        {HTTP_POST, "/healthz", "Allow: GET, HEAD\r\n", true},
        {HTTP_DELETE, "/healthz", "Allow: GET, HEAD\r\n", true},
        {HTTP_OPTIONS, "/healthz", "Allow: GET, HEAD\r\n", true},
        {HTTP_PUT, "/metrics", "Allow: GET, HEAD\r\n", true},
        {HTTP_POST, "/v1/files", "Allow: GET, HEAD\r\n", true},
        {HTTP_DELETE, "/v1/files", "Allow: GET, HEAD\r\n", true},
        {HTTP_PATCH, "/v1/files", "Allow: GET, HEAD\r\n", true},
        {HTTP_PUT, "/v1/files", "Allow: GET, HEAD\r\n", true},
        {HTTP_POST, "/v1/files/" UUID, "Allow: GET, HEAD, PUT, DELETE\r\n", true},
        {HTTP_PATCH, "/v1/files/" UUID, "Allow: GET, HEAD, PUT, DELETE\r\n", true},
        {HTTP_PROPFIND, "/v1/files/x", "Allow: GET, HEAD, PUT, DELETE\r\n", true},
        {HTTP_PUT, "/v1/files/" UUID "/content", "Allow: GET, HEAD\r\n", true},
        {HTTP_DELETE, "/v1/files/" UUID "/content", "Allow: GET, HEAD\r\n", true},
        {HTTP_GET, "/v1/files/" UUID "/link", "Allow: POST\r\n", true},
        {HTTP_GET, "/v1/uploads", "Allow: POST, OPTIONS\r\n", false},
        {HTTP_HEAD, "/v1/uploads", "Allow: POST, OPTIONS\r\n", false},
        {HTTP_PUT, "/v1/uploads", "Allow: POST, OPTIONS\r\n", false},
        /* OPTIONS is the preflight's (before the table), never a route's. */
        {HTTP_OPTIONS, "/v1/uploads", "Allow: POST, OPTIONS\r\n", false},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route_match m;
        char line[ALLOW_MAX];

        expect_match(cases[i].method, cases[i].path, MATCH_NO_METHOD, &m);
        assert_null(m.route);
        assert_string_equal(allow_line(m.allow, line), cases[i].allow);
        assert_int_equal(m.bodyless, cases[i].bodyless);
    }
}

static void test_allow_line(void **state)
{
    char line[ALLOW_MAX];

    (void)state;
    assert_string_equal(allow_line(M_GET, line), "Allow: GET, HEAD\r\n");
    assert_string_equal(allow_line(M_DELETE, line), "Allow: DELETE\r\n");
    assert_string_equal(allow_line(M_OPTIONS | M_PATCH, line), "Allow: PATCH, OPTIONS\r\n");
    assert_string_equal(allow_line(M_GET | M_PUT | M_POST | M_PATCH | M_DELETE | M_OPTIONS, line),
                        "Allow: GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS\r\n");
}

/* The matcher sees the path only: the query string is not part of it. */
static void test_query_is_not_path(void **state)
{
    static struct http_head h;
    static const char req[] = "GET /v1/files?limit=5&after=x/y HTTP/1.1\r\n\r\n";
    struct http_parser p;
    struct http_ev ev;
    struct route_match m;

    (void)state;
    http_init(&p);
    http_begin(&p, &h);
    assert_true(http_feed(&p, req, sizeof(req) - 1, &ev) > 0);
    assert_int_equal(ev.kind, HTTP_EV_HEAD);
    assert_int_equal(match(routes, NROUTES, h.method, http_path(&h), &m), MATCH_OK);
    assert_ptr_equal(m.route->handler, files_list);
}

/* Two captures, in order; a capture is never empty. */
static void test_captures(void **state)
{
    static const struct route table[] = {
        {M_GET, "/a/{x}/b/{y}", ROUTE_OPEN, false, BARE, NULL, healthz},
        {M_GET, "/{x}", ROUTE_OPEN, false, BARE, NULL, metrics},
    };
    struct route_match m;

    (void)state;
    assert_int_equal(match(table, 2, HTTP_GET, span("/a/one/b/two"), &m), MATCH_OK);
    assert_ptr_equal(m.route, &table[0]);
    assert_int_equal(m.ncap, 2);
    assert_span(m.cap[0], "one");
    assert_span(m.cap[1], "two");
    assert_int_equal(match(table, 2, HTTP_GET, span("/a//b/two"), &m), MATCH_NO_PATH);
    assert_int_equal(match(table, 2, HTTP_GET, span("/a/one/b/"), &m), MATCH_NO_PATH);
    assert_int_equal(match(table, 2, HTTP_GET, span("/a"), &m), MATCH_OK);
    assert_ptr_equal(m.route, &table[1]);
    assert_span(m.cap[0], "a");
    assert_int_equal(match(table, 2, HTTP_GET, span("/"), &m), MATCH_NO_PATH);
}

/* ---- phases ---- */

static enum route_phase seen[8];
static unsigned nseen;
static enum route_rc parse_rc;

static enum route_rc rec_parse(struct conn *c, struct route_req *q)
{
    (void)c;
    seen[nseen++] = (enum route_phase)q->phase;
    return parse_rc;
}

static enum conn_verdict rec_handler(struct conn *c, struct route_req *q)
{
    (void)c;
    seen[nseen++] = (enum route_phase)q->phase;
    free(q);
    return CONN_READ_BODY;
}

static const struct route rec_route = {M_POST, "/t",      ROUTE_OPEN, true,
                                       BARE,   rec_parse, rec_handler};

static struct route_req *rec_req(enum route_rc rc)
{
    struct route_req *q = calloc(1, rec_route.size);

    assert_non_null(q);
    q->route = &rec_route;
    q->auth = rec_route.auth;
    q->phase = PHASE_PARSE;
    nseen = 0;
    parse_rc = rc;
    return q;
}

/* The sequence itself: parse, auth, limits, then the handler. */
static void test_phase_order(void **state)
{
    (void)state;
    assert_true(PHASE_PARSE < PHASE_AUTH);
    assert_true(PHASE_AUTH < PHASE_LIMITS);
    assert_true(PHASE_LIMITS < PHASE_HANDLER);
    assert_int_equal(sizeof(phases) / sizeof(phases[0]), PHASE_HANDLER);
    assert_ptr_equal(phases[PHASE_PARSE], parse_phase);
    assert_ptr_equal(phases[PHASE_AUTH], access_check);
    assert_ptr_equal(phases[PHASE_LIMITS], limits_check);
}

/* A request runs every phase, then the handler, whose verdict is the router's. */
static void test_phases_run(void **state)
{
    struct route_req *q = rec_req(ROUTE_NEXT);

    (void)state;
    assert_int_equal(run(NULL, q), CONN_READ_BODY);
    assert_int_equal(nseen, 2);
    assert_int_equal(seen[0], PHASE_PARSE);
    assert_int_equal(seen[1], PHASE_HANDLER);
}

/* A phase that answers ends the request there: no later phase, no handler. */
static void test_phase_answers(void **state)
{
    struct route_req *q = rec_req(ROUTE_ANSWERED);

    (void)state;
    assert_int_equal(run(NULL, q), CONN_ANSWERED); /* q freed: ASan says if not */
    assert_int_equal(nseen, 1);
    assert_int_equal(seen[0], PHASE_PARSE);
}

/* A phase that defers: the request waits, then goes on at the next phase, or ends. */
static void test_phase_defers(void **state)
{
    struct route_req *q = rec_req(ROUTE_PENDING);

    (void)state;
    assert_int_equal(run(NULL, q), CONN_PENDING);
    assert_int_equal(nseen, 1);
    assert_int_equal(q->phase, PHASE_PARSE);
    assert_int_equal(proceed(NULL, q, ROUTE_NEXT), CONN_READ_BODY);
    assert_int_equal(nseen, 2); /* the parse step did not run again */
    assert_int_equal(seen[1], PHASE_HANDLER);

    q = rec_req(ROUTE_PENDING);
    assert_int_equal(run(NULL, q), CONN_PENDING);
    assert_int_equal(proceed(NULL, q, ROUTE_ANSWERED), CONN_ANSWERED);
    assert_int_equal(nseen, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_matches),
        cmocka_unit_test(test_routes_of_the_api),
        cmocka_unit_test(test_no_path),
        cmocka_unit_test(test_no_method),
        cmocka_unit_test(test_allow_line),
        cmocka_unit_test(test_query_is_not_path),
        cmocka_unit_test(test_captures),
        cmocka_unit_test(test_phase_order),
        cmocka_unit_test(test_phases_run),
        cmocka_unit_test(test_phase_answers),
        cmocka_unit_test(test_phase_defers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for bench/load/req.c: the request builders byte for byte, the
 * response parser at every split point (and byte by byte), pipelined
 * responses, framing and malformed input, the JSON lookups, and the URL and
 * size parsers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "bench/load/req.c"

#define TOKEN "rgu_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"

static const struct req_common with_token = {"127.0.0.1:8080", TOKEN, false};
static const struct req_common anonymous_close = {"127.0.0.9:1", NULL, true};

/* The builder's output equals want exactly; cap one short of room fails with -EMSGSIZE. */
#define CHECK_BUILT(want, call_with_cap)                                                           \
    do {                                                                                           \
        char out_[2048];                                                                           \
        size_t want_len_ = strlen(want);                                                           \
        size_t cap;                                                                                \
        int n_;                                                                                    \
        cap = sizeof(out_);                                                                        \
        n_ = (call_with_cap);                                                                      \
        assert_int_equal(n_, (int)want_len_);                                                      \
        assert_memory_equal(out_, want, want_len_);                                                \
        cap = want_len_ + 1;                                                                       \
        assert_int_equal((call_with_cap), (int)want_len_);                                         \
        cap = want_len_;                                                                           \
        assert_int_equal((call_with_cap), -EMSGSIZE);                                              \
        cap = 10;                                                                                  \
        assert_int_equal((call_with_cap), -EMSGSIZE);                                              \
    } while (0)

static void test_put(void **state)
{
    (void)state;
    CHECK_BUILT("PUT /v1/files/a-1.bin HTTP/1.1\r\n"
                "Host: 127.0.0.1:8080\r\n"
                "Authorization: Bearer " TOKEN "\r\n"
                "Content-Type: application/octet-stream\r\n"
                "Content-Length: 16384\r\n\r\n",
                req_put(out_, cap, &with_token, "a-1.bin", 16384));
    CHECK_BUILT("PUT /v1/files/x HTTP/1.1\r\n"
                "Host: 127.0.0.9:1\r\n"
                "Connection: close\r\n"
                "Content-Type: application/octet-stream\r\n"
                "Content-Length: 10485760\r\n\r\n",
                req_put(out_, cap, &anonymous_close, "x", 10485760));
    CHECK_BUILT("PUT /v1/files/z HTTP/1.1\r\n"
                "Host: 127.0.0.9:1\r\n"
                "Connection: close\r\n"
                "Content-Type: application/octet-stream\r\n"
                "Content-Length: 0\r\n\r\n",
                req_put(out_, cap, &anonymous_close, "z", 0));
}

/* The Content-Length value of a head. */
static uint64_t head_content_length(const char *head, size_t len)
{
    struct req_resp r;
    char buf[2048];
    int n;

    /* Reuse the response parser on a fake status line + the head's header lines. */
    const char *eol = memchr(head, '\n', len);

    assert_non_null(eol);
    n = snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\n%.*s", (int)(len - (size_t)(eol + 1 - head)),
                 eol + 1);
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    req_resp_init(&r);
    assert_true(req_resp_feed(&r, buf, (size_t)n) == n);
    assert_true(r.has_length);
    return r.length;
}

#define MP_WANT_HEAD                                                                               \
    "POST /v1/uploads HTTP/1.1\r\n"                                                                \
    "Host: 127.0.0.1:8080\r\n"                                                                     \
    "Authorization: Bearer " TOKEN "\r\n"                                                          \
    "Content-Type: multipart/form-data; boundary=ringupload0123456789abcdef\r\n"                   \
    "Content-Length: %llu\r\n\r\n"

static void test_multipart(void **state)
{
    const char *b = "ringupload0123456789abcdef";
    const char *want_pre = "--ringupload0123456789abcdef\r\n"
                           "Content-Disposition: form-data; name=\"file\"; filename=\"f-7.bin\"\r\n"
                           "Content-Type: application/octet-stream\r\n\r\n";
    const char *want_epi = "\r\n--ringupload0123456789abcdef--\r\n";
    uint64_t sizes[] = {0, 1, 16384, 10485760};
    char out[2048];
    char want[2048];
    char epi[128];
    size_t head_len;
    unsigned i;
    int n;
    int e;

    (void)state;
    e = req_multipart_epilogue(epi, sizeof(epi), b);
    assert_int_equal(e, (int)strlen(want_epi));
    assert_memory_equal(epi, want_epi, (size_t)e);
    assert_int_equal(req_multipart_epilogue(epi, (size_t)e, b), -EMSGSIZE);
    assert_int_equal(req_multipart_preamble_len(b, "f-7.bin"), strlen(want_pre));
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t total = strlen(want_pre) + sizes[i] + strlen(want_epi);
        int wl;

        n = req_multipart(out, sizeof(out), &with_token, b, "f-7.bin", sizes[i], &head_len);
        wl = snprintf(want, sizeof(want), MP_WANT_HEAD, (unsigned long long)total);
        assert_true(wl > 0);
        assert_int_equal(head_len, (size_t)wl);
        memcpy(want + wl, want_pre, strlen(want_pre));
        assert_int_equal(n, wl + (int)strlen(want_pre));
        assert_memory_equal(out, want, (size_t)n);
        /* What is sent after the head (preamble, file, epilogue) is what Content-Length says. */
        assert_int_equal(head_content_length(out, head_len),
                         (uint64_t)n - head_len + sizes[i] + (uint64_t)e);
    }
    /* Too small for the head, or for the preamble after it. */
    assert_int_equal(req_multipart(out, 40, &with_token, b, "f", 1, &head_len), -EMSGSIZE);
    n = req_multipart(out, sizeof(out), &with_token, b, "f", 1, &head_len);
    assert_true(n > 0);
    assert_int_equal(req_multipart(out, head_len + 5, &with_token, b, "f", 1, &head_len),
                     -EMSGSIZE);
}

static void test_tus(void **state)
{
    (void)state;
    CHECK_BUILT("POST /v1/tus/ HTTP/1.1\r\n"
                "Host: 127.0.0.1:8080\r\n"
                "Authorization: Bearer " TOKEN "\r\n"
                "Tus-Resumable: 1.0.0\r\n"
                "Upload-Length: 3145728\r\n"
                "Content-Length: 0\r\n\r\n",
                req_tus_create(out_, cap, &with_token, 3145728));
    CHECK_BUILT("PATCH /v1/tus/abc HTTP/1.1\r\n"
                "Host: 127.0.0.1:8080\r\n"
                "Authorization: Bearer " TOKEN "\r\n"
                "Tus-Resumable: 1.0.0\r\n"
                "Upload-Offset: 1048576\r\n"
                "Content-Type: application/offset+octet-stream\r\n"
                "Content-Length: 524288\r\n\r\n",
                req_tus_patch(out_, cap, &with_token, "/v1/tus/abc", 1048576, 524288));
}

static void test_get(void **state)
{
    (void)state;
    CHECK_BUILT("GET /v1/files/0b7f/content HTTP/1.1\r\n"
                "Host: 127.0.0.1:8080\r\n"
                "Authorization: Bearer " TOKEN "\r\n\r\n",
                req_get(out_, cap, &with_token, "/v1/files/0b7f/content"));
    CHECK_BUILT("GET /healthz HTTP/1.1\r\n"
                "Host: 127.0.0.9:1\r\n"
                "Connection: close\r\n\r\n",
                req_get(out_, cap, &anonymous_close, "/healthz"));
}

/* ---- response parser ---- */

/* What a parsed response looked like. */
struct seen {
    int status;
    bool close;
    bool has_length;
    uint64_t length;
    uint64_t body_seen;
    char keep[REQ_KEEP_MAX + 1];
    char location[REQ_LOC_MAX];
    int used; /* bytes consumed in all, or the error */
};

/*
 * Parse one response from in, fed in pieces cut at cuts[0..ncuts). Stops at
 * the first complete response. eof: call req_resp_eof after the input.
 */
static void parse_cuts(const char *in, size_t len, const size_t *cuts, size_t ncuts, bool eof,
                       struct seen *s)
{
    struct req_resp *r = malloc(sizeof(*r));
    size_t off = 0;
    size_t k;

    assert_non_null(r);
    memset(s, 0, sizeof(*s));
    req_resp_init(r);
    for (k = 0; k <= ncuts && !req_resp_done(r); k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        char *piece;
        int n;

        if (end < off)
            continue;
        /* A heap copy of exactly the piece, so ASan catches reads past it. */
        piece = malloc(end - off + 1);
        assert_non_null(piece);
        memcpy(piece, in + off, end - off);
        n = req_resp_feed(r, piece, end - off);
        free(piece);
        if (n < 0) {
            s->used = n;
            free(r);
            return;
        }
        if ((size_t)n < end - off && !req_resp_done(r))
            fail_msg("parser left %zu bytes unconsumed without finishing", end - off - (size_t)n);
        off += (size_t)n;
        if (req_resp_done(r))
            break;
        off = end;
    }
    if (!req_resp_done(r) && eof && req_resp_eof(r) < 0) {
        s->used = -EBADMSG;
        free(r);
        return;
    }
    s->status = r->status;
    s->close = r->close;
    s->has_length = r->has_length;
    s->length = r->length;
    s->body_seen = r->body_seen;
    memcpy(s->keep, r->keep, r->keep_len);
    s->keep[r->keep_len] = '\0';
    memcpy(s->location, r->location, r->loc_len + 1);
    s->used = req_resp_done(r) ? (int)off : -EAGAIN;
    free(r);
}

static void parse_whole(const char *in, bool eof, struct seen *s)
{
    parse_cuts(in, strlen(in), NULL, 0, eof, s);
}

static void assert_same(const struct seen *a, const struct seen *b)
{
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->close, b->close);
    assert_int_equal(a->length, b->length);
    assert_int_equal(a->body_seen, b->body_seen);
    assert_string_equal(a->keep, b->keep);
    assert_string_equal(a->location, b->location);
}

/* The same result when cut at every point, and when fed one byte at a time. */
static void check_splits(const char *in, bool eof, const struct seen *want)
{
    size_t len = strlen(in);
    size_t *bytes = malloc((len + 1) * sizeof(*bytes));
    struct seen got;
    size_t i;

    assert_non_null(bytes);
    for (i = 0; i <= len; i++) {
        parse_cuts(in, len, &i, 1, eof, &got);
        assert_same(want, &got);
    }
    for (i = 0; i < len; i++)
        bytes[i] = i + 1;
    parse_cuts(in, len, bytes, len, eof, &got);
    assert_same(want, &got);
    free(bytes);
}

static const char created[] = "HTTP/1.1 201 Created\r\n"
                              "Content-Type: application/json\r\n"
                              "Location: /v1/files/0b7f4e4c-8e3d-4a44-9b8e-6bb2c0a5a001\r\n"
                              "Content-Length: 91\r\n"
                              "\r\n"
                              "{\"id\":\"0b7f4e4c-8e3d-4a44-9b8e-6bb2c0a5a001\",\"name\":\"a.bin\","
                              "\"size\":16384,\"status\":\"queued\"}";

static void test_resp_created(void **state)
{
    struct seen s;
    char id[64];
    uint64_t size;

    (void)state;
    assert_int_equal(strlen(strstr(created, "\r\n\r\n") + 4), 91);
    parse_whole(created, false, &s);
    assert_int_equal(s.used, (int)strlen(created));
    assert_int_equal(s.status, 201);
    assert_false(s.close);
    assert_true(s.has_length);
    assert_int_equal(s.length, 91);
    assert_int_equal(s.body_seen, 91);
    assert_string_equal(s.location, "/v1/files/0b7f4e4c-8e3d-4a44-9b8e-6bb2c0a5a001");
    assert_int_equal(req_json_str(s.keep, strlen(s.keep), "id", id, sizeof(id)), 36);
    assert_string_equal(id, "0b7f4e4c-8e3d-4a44-9b8e-6bb2c0a5a001");
    assert_int_equal(req_json_u64(s.keep, strlen(s.keep), "size", &size), 0);
    assert_int_equal(size, 16384);
    check_splits(created, false, &s);
}

static void test_resp_close(void **state)
{
    static const char *closes[] = {
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 404 Not Found\r\nconnection:   Upgrade, CLOSE \r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
    };
    static const char *keeps[] = {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 404 Not Found\nX-Closed: close\nContent-Length: 2\n\n{}",
    };
    struct seen s;
    unsigned i;

    (void)state;
    for (i = 0; i < sizeof(closes) / sizeof(closes[0]); i++) {
        parse_whole(closes[i], false, &s);
        assert_int_equal(s.status, 404);
        assert_true(s.close);
        assert_string_equal(s.keep, "{}");
        check_splits(closes[i], false, &s);
    }
    for (i = 0; i < sizeof(keeps) / sizeof(keeps[0]); i++) {
        parse_whole(keeps[i], false, &s);
        assert_int_equal(s.status, 404);
        assert_false(s.close);
        assert_int_equal(s.used, (int)strlen(keeps[i]));
        check_splits(keeps[i], false, &s);
    }
}

static void test_resp_no_body(void **state)
{
    static const char r204[] = "HTTP/1.1 204 No Content\r\nUpload-Offset: 5\r\n\r\n";
    static const char r100[] = "HTTP/1.1 100 Continue\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    static const char eof[] = "HTTP/1.1 200 OK\r\n\r\nuntil the end";
    struct seen s;

    (void)state;
    parse_whole(r204, false, &s);
    assert_int_equal(s.status, 204);
    assert_int_equal(s.used, (int)strlen(r204));
    assert_int_equal(s.body_seen, 0);
    check_splits(r204, false, &s);

    parse_whole(r100, false, &s);
    assert_int_equal(s.status, 200);
    assert_string_equal(s.keep, "abc");
    assert_int_equal(s.used, (int)strlen(r100));
    check_splits(r100, false, &s);

    /* No Content-Length: the body runs to the close, which completes it. */
    parse_whole(eof, false, &s);
    assert_int_equal(s.used, -EAGAIN);
    parse_whole(eof, true, &s);
    assert_int_equal(s.status, 200);
    assert_true(s.close);
    assert_string_equal(s.keep, "until the end");
    check_splits(eof, true, &s);
}

static void test_resp_chunked(void **state)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
    struct seen s;

    (void)state;
    parse_whole(in, false, &s);
    assert_int_equal(s.used, (int)strlen(in));
    assert_string_equal(s.keep, "hello, world");
    assert_int_equal(s.body_seen, 12);
    check_splits(in, false, &s);
}

/* A body longer than the keep buffer is counted in full, kept in part. */
static void test_resp_big_body(void **state)
{
    size_t body = 3 * REQ_KEEP_MAX + 17;
    char *in = malloc(body + 128);
    struct seen s;
    int h;

    (void)state;
    assert_non_null(in);
    h = snprintf(in, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body);
    memset(in + h, 'x', body);
    in[h + (int)body] = '\0';
    parse_whole(in, false, &s);
    assert_int_equal(s.used, h + (int)body);
    assert_int_equal(s.body_seen, body);
    assert_int_equal(strlen(s.keep), REQ_KEEP_MAX);
    check_splits(in, false, &s);
    free(in);
}

/* Two responses in one buffer: the first stops exactly at its end; the rest parses next. */
static void test_resp_pipelined(void **state)
{
    static const char two[] = "HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nabcd"
                              "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    size_t first = strstr(two, "abcd") + 4 - two;
    size_t len = strlen(two);
    struct req_resp *r = malloc(sizeof(*r));
    size_t cut;

    (void)state;
    assert_non_null(r);
    for (cut = 0; cut <= len; cut++) {
        size_t off = 0;
        size_t end = cut;
        int n;

        req_resp_init(r);
        /* First piece [0, cut), then the rest; a response ends where it ends. */
        while (!req_resp_done(r)) {
            n = req_resp_feed(r, two + off, end - off);
            assert_true(n >= 0);
            off += (size_t)n;
            if (!req_resp_done(r)) {
                assert_int_equal(off, end);
                end = len;
            }
        }
        assert_int_equal(off, first);
        assert_int_equal(r->status, 201);
        assert_false(r->close);
        assert_int_equal(r->body_seen, 4);
        req_resp_init(r);
        if (end < off)
            end = off;
        while (!req_resp_done(r)) {
            n = req_resp_feed(r, two + off, end - off);
            assert_true(n >= 0);
            off += (size_t)n;
            if (!req_resp_done(r)) {
                assert_int_equal(off, end);
                assert_true(end < len);
                end = len;
            }
        }
        assert_int_equal(off, len);
        assert_int_equal(r->status, 204);
        assert_true(r->close);
    }
    free(r);
}

static void test_resp_malformed(void **state)
{
    static const char *bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 600 Nope\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        "HTTP/1.1 200 OK\r\nName : value\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
    };
    struct seen s;
    unsigned i;
    char *big;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parse_whole(bad[i], false, &s);
        if (s.used != -EBADMSG)
            fail_msg("accepted (%d): %s", s.used, bad[i]);
        check_splits(bad[i], false, &s);
    }
    /* Same Content-Length twice is fine. */
    parse_whole("HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx", false, &s);
    assert_int_equal(s.status, 200);
    /* A line past REQ_LINE_MAX. */
    big = malloc(REQ_LINE_MAX + 64);
    assert_non_null(big);
    strcpy(big, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + strlen(big), 'a', REQ_LINE_MAX);
    strcpy(big + strlen("HTTP/1.1 200 OK\r\nX-Big: ") + REQ_LINE_MAX, "\r\n\r\n");
    parse_whole(big, false, &s);
    assert_int_equal(s.used, -EMSGSIZE);
    free(big);
    /* Truncated: the close comes before the body's end, or inside the head. */
    parse_whole("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true, &s);
    assert_int_equal(s.used, -EBADMSG);
    parse_whole("HTTP/1.1 200 OK\r\nContent-Le", true, &s);
    assert_int_equal(s.used, -EBADMSG);
    parse_whole("", true, &s);
    assert_int_equal(s.used, -EBADMSG);
}

/* ---- JSON, URL, sizes ---- */

static void test_json(void **state)
{
    static const char doc[] = "{\"files\":[{\"id\": \"abc-1\", \"name\":\"id\",\"size\" : 42,"
                              "\"x\":\"a\\\"b\",\"f\":1.5,\"neg\":-1}]}";
    char out[16];
    uint64_t v;

    (void)state;
    assert_int_equal(req_json_str(doc, strlen(doc), "id", out, sizeof(out)), 5);
    assert_string_equal(out, "abc-1");
    assert_int_equal(req_json_str(doc, strlen(doc), "id", out, 5), -EMSGSIZE);
    assert_int_equal(req_json_str(doc, strlen(doc), "id", out, 6), 5);
    assert_int_equal(req_json_str(doc, strlen(doc), "name", out, sizeof(out)), 2);
    assert_string_equal(out, "id");
    assert_int_equal(req_json_str(doc, strlen(doc), "x", out, sizeof(out)), -ENOENT);
    assert_int_equal(req_json_str(doc, strlen(doc), "size", out, sizeof(out)), -ENOENT);
    assert_int_equal(req_json_str(doc, strlen(doc), "missing", out, sizeof(out)), -ENOENT);
    assert_int_equal(req_json_u64(doc, strlen(doc), "size", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(req_json_u64(doc, strlen(doc), "f", &v), -EINVAL);
    assert_int_equal(req_json_u64(doc, strlen(doc), "neg", &v), -EINVAL);
    assert_int_equal(req_json_u64(doc, strlen(doc), "id", &v), -EINVAL);
    assert_int_equal(req_json_u64(doc, strlen(doc), "nope", &v), -ENOENT);
    /* Cut inside the value: not found rather than read past the end. */
    assert_int_equal(req_json_str(doc, 20, "id", out, sizeof(out)), -ENOENT);
}

static void test_url(void **state)
{
    struct req_url u;

    (void)state;
    assert_int_equal(req_parse_url("http://127.0.0.1:8080", &u), 0);
    assert_int_equal(u.addr, 0x7f000001);
    assert_int_equal(u.port, 8080);
    assert_string_equal(u.host, "127.0.0.1:8080");
    assert_int_equal(req_parse_url("http://127.1.2.3:65535/", &u), 0);
    assert_int_equal(u.addr, 0x7f010203);
    assert_string_equal(u.host, "127.1.2.3:65535");
    assert_int_equal(req_parse_url("http://127.0.0.1", &u), 0);
    assert_int_equal(u.port, 80);
    assert_int_equal(req_parse_url("http://10.0.0.1:80", &u), -EPERM);
    assert_int_equal(req_parse_url("http://128.0.0.1:80", &u), -EPERM);
    assert_int_equal(req_parse_url("http://0.0.0.0:80", &u), -EPERM);
    assert_int_equal(req_parse_url("http://192.168.1.1:80/", &u), -EPERM);
    assert_int_equal(req_parse_url("https://127.0.0.1:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://localhost:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0.1:0", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0.1:65536", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0.1:80/v1", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0.256:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0.01:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://0177.0.0.1:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://[::1]:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("127.0.0.1:80", &u), -EINVAL);
    assert_int_equal(req_parse_url("http://127.0.0.1:", &u), -EINVAL);
}

static void test_sizes(void **state)
{
    struct req_sizes d;
    uint64_t v;
    uint64_t counts[3] = {0, 0, 0};
    uint64_t r;

    (void)state;
    assert_int_equal(req_parse_size("16k", &v), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(req_parse_size("10m", &v), 0);
    assert_int_equal(v, 10485760);
    assert_int_equal(req_parse_size("10M", &v), 0);
    assert_int_equal(v, 10485760);
    assert_int_equal(req_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(req_parse_size("123", &v), 0);
    assert_int_equal(v, 123);
    assert_int_equal(req_parse_size("", &v), -EINVAL);
    assert_int_equal(req_parse_size("k", &v), -EINVAL);
    assert_int_equal(req_parse_size("1.5m", &v), -EINVAL);
    assert_int_equal(req_parse_size("-1", &v), -EINVAL);
    assert_int_equal(req_parse_size("16kb", &v), -EINVAL);
    assert_int_equal(req_parse_size("99999999999999999999", &v), -EINVAL);
    assert_int_equal(req_parse_size("17179869184g", &v), -EINVAL);

    assert_int_equal(req_parse_sizes("16k:70,1m:25,10m:5", &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.size[0], 16384);
    assert_int_equal(d.size[2], 10485760);
    assert_int_equal(d.total, 100);
    for (r = 0; r < 100000; r++) {
        uint64_t s = req_pick_size(&d, r * 0x9e3779b97f4a7c15ull);

        counts[s == 16384 ? 0 : s == 1048576 ? 1 : 2]++;
    }
    assert_true(counts[0] > 69000 && counts[0] < 71000);
    assert_true(counts[1] > 24000 && counts[1] < 26000);
    assert_true(counts[2] > 4500 && counts[2] < 5500);
    assert_int_equal(req_pick_size(&d, 0), 16384);
    assert_int_equal(req_pick_size(&d, 69), 16384);
    assert_int_equal(req_pick_size(&d, 70), 1048576);
    assert_int_equal(req_pick_size(&d, 95), 10485760);
    assert_int_equal(req_pick_size(&d, 199), 10485760);
    assert_int_equal(req_parse_sizes("16k", &d), -EINVAL);
    assert_int_equal(req_parse_sizes("16k:0", &d), -EINVAL);
    assert_int_equal(req_parse_sizes("16k:1,", &d), -EINVAL);
    assert_int_equal(req_parse_sizes(":1", &d), -EINVAL);
    assert_int_equal(req_parse_sizes("16k:x", &d), -EINVAL);
    assert_int_equal(req_parse_sizes("1:1,2:1,3:1,4:1,5:1,6:1,7:1,8:1,9:1,10:1,11:1,12:1,13:1,14:1,"
                                     "15:1,16:1",
                                     &d),
                     0);
    assert_int_equal(req_parse_sizes("1:1,2:1,3:1,4:1,5:1,6:1,7:1,8:1,9:1,10:1,11:1,12:1,13:1,14:1,"
                                     "15:1,16:1,17:1",
                                     &d),
                     -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put),
        cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_tus),
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_resp_created),
        cmocka_unit_test(test_resp_close),
        cmocka_unit_test(test_resp_no_body),
        cmocka_unit_test(test_resp_chunked),
        cmocka_unit_test(test_resp_big_body),
        cmocka_unit_test(test_resp_pipelined),
        cmocka_unit_test(test_resp_malformed),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_sizes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for proto/ids.c: UUID text, base64url and list cursors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "proto/ids.c"

static void test_uuid(void **state)
{
    (void)state;
    assert_true(ids_uuid_ok("cd2148e8-6948-483f-b500-21cdcea6c36e", 36));
    assert_true(ids_uuid_ok("CD2148E8-6948-483F-B500-21CDCEA6C36E", 36));
    assert_false(ids_uuid_ok("cd2148e8-6948-483f-b500-21cdcea6c36", 35));
    assert_false(ids_uuid_ok("cd2148e8x6948-483f-b500-21cdcea6c36e", 36));
    assert_false(ids_uuid_ok("cd2148e8-6948-483f-b500-21cdcea6c36g", 36));
    assert_false(ids_uuid_ok("../../etc/passwd-000000000000000000", 36));
    assert_false(ids_uuid_ok("", 0));
}

static void test_ts(void **state)
{
    (void)state;
    assert_true(ids_ts_ok("2026-11-29T21:02:53.050203Z", 27));
    assert_false(ids_ts_ok("2026-11-29T21:02:53Z", 20));
    assert_false(ids_ts_ok("2026-11-29T21:02:53.05020xZ", 27));
    assert_false(ids_ts_ok("2026-11-29'21:02:53.050203Z", 27));
    /* The right shape, but no such instant: PostgreSQL would refuse the query. */
    assert_true(ids_ts_ok("0001-01-01T00:00:00.000000Z", 27));
    assert_true(ids_ts_ok("9999-12-31T23:59:59.999999Z", 27));
    assert_true(ids_ts_ok("2024-02-29T00:00:00.000000Z", 27));
    assert_true(ids_ts_ok("2000-02-29T00:00:00.000000Z", 27));
    assert_true(ids_ts_ok("2026-04-30T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("0000-01-01T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-00-10T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-13-10T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-99-99T99:99:99.000000Z", 27));
    assert_false(ids_ts_ok("2026-01-00T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-01-32T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-04-31T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-02-29T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("1900-02-29T00:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-11-29T24:00:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-11-29T23:60:00.000000Z", 27));
    assert_false(ids_ts_ok("2026-11-29T23:59:60.000000Z", 27));
}

static void test_b64_roundtrip(void **state)
{
    unsigned char in[64] = {0};
    unsigned char back[64];
    char enc[100];
    size_t n;

    (void)state;
    for (n = 0; n < sizeof(in); n++) {
        size_t i;
        size_t e;
        for (i = 0; i < n; i++)
            in[i] = (unsigned char)(i * 37 + n);
        e = ids_b64url_encode(enc, in, n);
        assert_int_equal(e, (n * 4 + 2) / 3);
        assert_int_equal(ids_b64url_decode(back, sizeof(back), enc, e), (int)n);
        assert_memory_equal(in, back, n);
        /* Every decode with too little room refuses instead of writing past it. */
        if (n > 0)
            assert_int_equal(ids_b64url_decode(back, n - 1, enc, e), -ENOSPC);
    }
    assert_int_equal(ids_b64url_decode(back, sizeof(back), "ab=c", 4), -EBADMSG);
    assert_int_equal(ids_b64url_decode(back, sizeof(back), "ab+c", 4), -EBADMSG);
    assert_int_equal(ids_b64url_decode(back, sizeof(back), "abcde", 5), -EBADMSG);
    assert_int_equal(ids_b64url_decode(back, sizeof(back), "ab\0c", 4), -EBADMSG);
}

static void test_cursor(void **state)
{
    char cur[IDS_CURSOR_MAX];
    char ts[IDS_TS_LEN + 1];
    char id[IDS_UUID_LEN + 1];
    int n;

    (void)state;
    n = ids_cursor_encode(cur, "2026-11-29T21:02:53.050203Z",
                          "ceb5e4c2-1045-42e9-80f7-e0375b9ecc58");
    assert_true(n > 0 && n < IDS_CURSOR_MAX);
    assert_int_equal(ids_cursor_decode(cur, (size_t)n, ts, id), 0);
    assert_string_equal(ts, "2026-11-29T21:02:53.050203Z");
    assert_string_equal(id, "ceb5e4c2-1045-42e9-80f7-e0375b9ecc58");
    /* Truncated, extended, or altered cursors are refused. */
    assert_int_equal(ids_cursor_decode(cur, (size_t)n - 1, ts, id), -EBADMSG);
    assert_int_equal(ids_cursor_decode("garbage", 7, ts, id), -EBADMSG);
    cur[3] = cur[3] == 'A' ? 'B' : 'A';
    assert_int_equal(ids_cursor_decode(cur, (size_t)n, ts, id), -EBADMSG);
    assert_int_equal(ids_cursor_encode(cur, "2026-11-29 21:02:53", "x"), -EINVAL);
    /* A well-formed cursor around an impossible timestamp is refused too. */
    n = ids_b64url_encode(cur,
                          (const unsigned char *)"2026-13-45T25:61:61.000000Z|"
                                                 "ceb5e4c2-1045-42e9-80f7-e0375b9ecc58",
                          IDS_TS_LEN + 1 + IDS_UUID_LEN);
    assert_int_equal(ids_cursor_decode(cur, (size_t)n, ts, id), -EBADMSG);
}

static void test_utf8(void **state)
{
    static const char *const good[] = {
        "a",
        "photo.jpg",
        "caf\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\x7f",
        "\xc2\x80",
        "\xdf\xbf",
        "\xe0\xa0\x80",
        "\xed\x9f\xbf",
        "\xee\x80\x80",
        "\xef\xbf\xbf",
        "\xf0\x90\x80\x80",
        "\xf4\x8f\xbf\xbf",
    };
    static const char *const bad[] = {
        "\xff",
        "\xfe",
        "\x80",
        "a\xbf"
        "b",
        "\xc3",
        "caf\xc3",
        "\xc3\x28",
        "\xe2\x82",
        /* overlong forms of '/', NUL and U+07FF, U+FFFF */
        "\xc0\xaf",
        "\xc1\xbf",
        "\xc0\x80",
        "\xe0\x80\xaf",
        "\xe0\x9f\xbf",
        "\xf0\x80\x80\xaf",
        "\xf0\x8f\xbf\xbf",
        /* UTF-16 surrogates, alone and paired */
        "\xed\xa0\x80",
        "\xed\xbf\xbf",
        "\xed\xa0\xbd\xed\xb8\x80",
        /* past U+10FFFF */
        "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80",
        "\xf7\xbf\xbf\xbf",
        "\xf8\x88\x80\x80\x80",
        /* a lead byte without enough continuation bytes, then ASCII */
        "\xf0\x9f\x98"
        "a",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!ids_utf8_ok(good[i], strlen(good[i])))
            fail_msg("refused #%zu", i);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ids_utf8_ok(bad[i], strlen(bad[i])))
            fail_msg("accepted #%zu", i);
    assert_true(ids_utf8_ok("", 0));
    assert_false(ids_utf8_ok("a\0b", 3));
    assert_false(ids_utf8_ok("\0", 1));
}

static void expect_name(const char *in, const char *want)
{
    char out[IDS_NAME_MAX + 1];
    size_t n = ids_filename(in, strlen(in), out);

    assert_int_equal(n, strlen(out));
    assert_string_equal(out, want);
}

static void test_filename(void **state)
{
    char big[600];
    char out[IDS_NAME_MAX + 1];
    size_t i;
    size_t n;

    (void)state;
    expect_name("photo.jpg", "photo.jpg");
    expect_name("..%2F..%2Fetc%2Fpasswd", ".._.._etc_passwd");
    expect_name("a%00b", "a_b");
    expect_name("%2e%2e", "_");
    expect_name("..", "_");
    expect_name(".", "_");
    expect_name("", "file");
    expect_name("a\\b", "a_b");
    expect_name("%zz%4", "%zz%4");
    expect_name("caf%C3%A9", "caf\xc3\xa9");
    /* 300 bytes of two-byte UTF-8: cut at 254, never inside a sequence. */
    for (i = 0; i < 300; i += 2) {
        big[i] = (char)0xc3;
        big[i + 1] = (char)0xa9;
    }
    n = ids_filename(big, 300, out);
    assert_int_equal(n, 254);
    assert_int_equal((unsigned char)out[n - 1], 0xa9);
    memset(big, 'x', sizeof(big));
    assert_int_equal(ids_filename(big, sizeof(big), out), IDS_NAME_MAX);
}

/* A name that does not decode to UTF-8 is refused; out still holds a safe name. */
static void expect_bad_name(const char *in, const char *fallback)
{
    char out[IDS_NAME_MAX + 1];

    assert_int_equal(ids_filename(in, strlen(in), out), -EILSEQ);
    assert_string_equal(out, fallback);
    assert_true(ids_utf8_ok(out, strlen(out)));
}

static void test_filename_utf8(void **state)
{
    char big[600];
    char out[IDS_NAME_MAX + 1];

    (void)state;
    expect_bad_name("%FF", "_");
    expect_bad_name("\xff", "_");
    expect_bad_name("a%C0%AFb", "a__b");
    expect_bad_name("%ED%A0%80.txt", "___.txt");
    expect_bad_name("%F4%90%80%80", "____");
    expect_bad_name("caf%C3", "caf_");
    expect_bad_name("caf\xc3", "caf_");
    expect_bad_name("%C3%A9%E9", "\xc3\xa9_");
    /* Control bytes (NUL too) become '_' before the check: still a valid name. */
    expect_name("a%00%C3%A9\x01", "a_\xc3\xa9_");
    expect_name("%F0%9F%98%80", "\xf0\x9f\x98\x80");
    /* The whole name counts, not only the part that is kept. */
    memset(big, 'x', sizeof(big));
    memcpy(big + 590, "%FF", 3);
    assert_int_equal(ids_filename(big, 593, out), -EILSEQ);
    assert_int_equal(strlen(out), IDS_NAME_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid),          cmocka_unit_test(test_ts),
        cmocka_unit_test(test_b64_roundtrip), cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_filename),      cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_filename_utf8),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

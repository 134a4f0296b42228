/* Unit tests for proto/json.c: string quoting and error bodies, exact bytes and bounds. */
#include "proto/json.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

/* Quote into a heap buffer of exactly cap bytes, so ASan sees any overrun. */
static ssize_t quote_cap(size_t cap, const char *s, size_t len, char *copy)
{
    char *out = malloc(cap > 0 ? cap : 1);
    ssize_t n;

    assert_non_null(out);
    n = json_quote(out, cap, s, len);
    if (n >= 0 && copy != NULL) {
        memcpy(copy, out, (size_t)n);
        copy[n] = '\0';
    }
    free(out);
    return n;
}

/* The output is want, at exactly strlen(want) bytes, and every smaller cap is -ENOSPC. */
static void check_quote(const char *s, size_t len, const char *want)
{
    size_t need = strlen(want);
    char *got = malloc(need + 1);
    size_t cap;

    assert_non_null(got);
    assert_int_equal(quote_cap(need, s, len, got), (ssize_t)need);
    assert_string_equal(got, want);
    assert_int_equal(quote_cap(need + 7, s, len, got), (ssize_t)need);
    assert_string_equal(got, want);
    for (cap = 0; cap < need; cap++)
        assert_int_equal(quote_cap(cap, s, len, NULL), -ENOSPC);
    free(got);
}

static void check_quote_str(const char *s, const char *want)
{
    check_quote(s, strlen(s), want);
}

static void test_quote_plain(void **state)
{
    (void)state;
    check_quote_str("", "\"\"");
    check_quote_str("abc", "\"abc\"");
    check_quote_str("not_found", "\"not_found\"");
    check_quote_str("a/b <c> & 'd'", "\"a/b <c> & 'd'\"");
    /* len, not the terminator, bounds the input. */
    check_quote("abcdef", 3, "\"abc\"");
}

static void test_quote_escapes(void **state)
{
    (void)state;
    check_quote_str("\"", "\"\\\"\"");
    check_quote_str("\\", "\"\\\\\"");
    check_quote_str("say \"hi\" \\o/", "\"say \\\"hi\\\" \\\\o/\"");
    check_quote_str("a\nb\rc\td", "\"a\\nb\\rc\\td\"");
    check_quote_str("\x01", "\"\\u0001\"");
    check_quote_str("\b\f", "\"\\u0008\\u000c\"");
    check_quote_str("\x1f\x1e", "\"\\u001f\\u001e\"");
    check_quote_str("\x7f", "\"\x7f\"");
    check_quote("a\0b", 3, "\"a\\u0000b\"");
}

static void test_quote_utf8(void **state)
{
    (void)state;
    check_quote_str("caf\xc3\xa9", "\"caf\xc3\xa9\"");
    check_quote_str("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");
    check_quote_str("\xf0\x9f\x93\x81.txt", "\"\xf0\x9f\x93\x81.txt\"");
    /* Bytes >= 0x80 pass through as they are, valid UTF-8 or not. */
    check_quote_str("\xff\xfe\x80", "\"\xff\xfe\x80\"");
}

/* Every byte value, against an independent encoder. */
static void test_quote_all_bytes(void **state)
{
    char in[256];
    char want[256 * 6 + 3];
    size_t n = 0;
    int c;

    (void)state;
    want[n++] = '"';
    for (c = 0; c < 256; c++) {
        in[c] = (char)c;
        if (c == '"' || c == '\\') {
            want[n++] = '\\';
            want[n++] = (char)c;
        } else if (c == '\n') {
            memcpy(want + n, "\\n", 2);
            n += 2;
        } else if (c == '\r') {
            memcpy(want + n, "\\r", 2);
            n += 2;
        } else if (c == '\t') {
            memcpy(want + n, "\\t", 2);
            n += 2;
        } else if (c < 0x20) {
            snprintf(want + n, 7, "\\u%04x", c);
            n += 6;
        } else {
            want[n++] = (char)c;
        }
    }
    want[n++] = '"';
    want[n] = '\0';
    {
        char *got = malloc(n + 1);
        assert_non_null(got);
        assert_int_equal(quote_cap(n, in, sizeof(in), got), (ssize_t)n);
        assert_memory_equal(got, want, n);
        free(got);
    }
    for (c = 0; (size_t)c < n; c++)
        assert_int_equal(quote_cap((size_t)c, in, sizeof(in), NULL), -ENOSPC);
}

static void check_error(const char *code, const char *msg, const char *want)
{
    size_t need = strlen(want);
    size_t cap;

    for (cap = 0; cap <= need + 3; cap++) {
        char *out = malloc(cap > 0 ? cap : 1);
        ssize_t n;
        assert_non_null(out);
        n = json_error(out, cap, code, msg);
        if (cap < need) {
            assert_int_equal(n, -ENOSPC);
        } else {
            assert_int_equal(n, (ssize_t)need);
            assert_memory_equal(out, want, need);
        }
        free(out);
    }
}

static void test_error(void **state)
{
    (void)state;
    check_error("not_found", "No such file.",
                "{\"error\":{\"code\":\"not_found\",\"message\":\"No such file.\"}}");
    check_error("bad_request", "header \"X-A\" is\tbad\\\n",
                "{\"error\":{\"code\":\"bad_request\","
                "\"message\":\"header \\\"X-A\\\" is\\tbad\\\\\\n\"}}");
    check_error("", "", "{\"error\":{\"code\":\"\",\"message\":\"\"}}");
    check_error("too_large", "Datei zu gro\xc3\x9f",
                "{\"error\":{\"code\":\"too_large\",\"message\":\"Datei zu gro\xc3\x9f\"}}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_plain), cmocka_unit_test(test_quote_escapes),
        cmocka_unit_test(test_quote_utf8),  cmocka_unit_test(test_quote_all_bytes),
        cmocka_unit_test(test_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

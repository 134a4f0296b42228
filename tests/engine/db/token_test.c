/* Unit tests for engine/token.c: token shape, randomness, hashing, prefixes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/db/token.c"

#define MANY 1000 /* tokens drawn for the uniqueness test */

/* Lowercase hex of a hash, for readable comparisons with published vectors. */
static void hex(const uint8_t h[TOK_HASH_LEN], char out[2 * TOK_HASH_LEN + 1])
{
    size_t i;

    for (i = 0; i < TOK_HASH_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static int cmp_tok(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Base64url without padding, RFC 4648 section 10 vectors plus the two url-safe symbols. */
static void test_encode_vectors(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } v[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
    };
    char out[16];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n = encode((const uint8_t *)v[i].in, strlen(v[i].in), out);

        out[n] = '\0';
        assert_string_equal(out, v[i].out);
    }
}

static void test_new_format(void **state)
{
    char tok[TOK_LEN + 1];
    size_t i;

    (void)state;
    assert_int_equal(tok_new(tok), 0);
    assert_int_equal(strlen(tok), 47);
    assert_memory_equal(tok, "rgu_", 4);
    assert_true(tok_wellformed(tok, strlen(tok)));
    for (i = TOK_MAGIC_LEN; i < TOK_LEN; i++)
        assert_non_null(strchr(b64url, tok[i]));
    /* 256 bits fill 42 symbols and 4 bits of the last: its 2 low bits are always 0. */
    assert_int_equal((strchr(b64url, tok[TOK_LEN - 1]) - b64url) & 3, 0);
}

static void test_new_unique(void **state)
{
    static char toks[MANY][TOK_LEN + 1];
    size_t i;

    (void)state;
    for (i = 0; i < MANY; i++) {
        assert_int_equal(tok_new(toks[i]), 0);
        assert_true(tok_wellformed(toks[i], TOK_LEN));
    }
    qsort(toks, MANY, sizeof(toks[0]), cmp_tok);
    for (i = 1; i < MANY; i++)
        assert_string_not_equal(toks[i - 1], toks[i]);
}

static void test_wellformed(void **state)
{
    const char *good = "rgu_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    char t[TOK_LEN + 2];
    static const char bad_chars[] = "+/=. \t\n\x7f\xc3";
    size_t i;

    (void)state;
    assert_int_equal(strlen(good), TOK_LEN);
    assert_true(tok_wellformed(good, TOK_LEN));
    assert_true(tok_wellformed("rgu_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-", TOK_LEN));
    assert_true(tok_wellformed("rgu_09azAZ09azAZ09azAZ09azAZ09azAZ09azAZ09azAZ0", TOK_LEN));

    assert_false(tok_wellformed("", 0));
    assert_false(tok_wellformed("rgu_", 4));
    assert_false(tok_wellformed(good, TOK_LEN - 1));
    assert_false(tok_wellformed(good, 12));

    memcpy(t, good, TOK_LEN);
    t[TOK_LEN] = 'A';
    t[TOK_LEN + 1] = '\0';
    assert_false(tok_wellformed(t, TOK_LEN + 1));

    memcpy(t, good, TOK_LEN + 1);
    t[0] = 'R';
    assert_false(tok_wellformed(t, TOK_LEN));
    memcpy(t, good, TOK_LEN + 1);
    t[3] = '-';
    assert_false(tok_wellformed(t, TOK_LEN));

    /* An embedded NUL counts as a byte of the span, and is not in the alphabet. */
    memcpy(t, good, TOK_LEN + 1);
    t[20] = '\0';
    assert_false(tok_wellformed(t, TOK_LEN));

    for (i = 0; i < sizeof(bad_chars) - 1; i++) {
        memcpy(t, good, TOK_LEN + 1);
        t[TOK_LEN - 1] = bad_chars[i];
        assert_false(tok_wellformed(t, TOK_LEN));
        memcpy(t, good, TOK_LEN + 1);
        t[TOK_MAGIC_LEN] = bad_chars[i];
        assert_false(tok_wellformed(t, TOK_LEN));
    }
}

/* FIPS 180-2 "abc", the empty string, and a token-shaped string checked with another tool. */
static void test_hash_vectors(void **state)
{
    uint8_t h[TOK_HASH_LEN];
    char x[2 * TOK_HASH_LEN + 1];

    (void)state;
    tok_hash("abc", 3, h);
    hex(h, x);
    assert_string_equal(x, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    tok_hash("", 0, h);
    hex(h, x);
    assert_string_equal(x, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    tok_hash("rgu_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", TOK_LEN, h);
    hex(h, x);
    assert_string_equal(x, "a35e76020e41d13da53729ccacefc06c61ca10365eda95f974171eafb3be1ac7");
}

static void test_hash_equal(void **state)
{
    uint8_t a[TOK_HASH_LEN];
    uint8_t b[TOK_HASH_LEN];

    (void)state;
    tok_hash("abc", 3, a);
    tok_hash("abc", 3, b);
    assert_true(tok_hash_equal(a, b));
    b[0] ^= 1;
    assert_false(tok_hash_equal(a, b));
    b[0] ^= 1;
    b[TOK_HASH_LEN - 1] ^= 0x80;
    assert_false(tok_hash_equal(a, b));
    tok_hash("abd", 3, b);
    assert_false(tok_hash_equal(a, b));
}

static void test_prefix(void **state)
{
    char tok[TOK_LEN + 1];
    char p[TOK_PREFIX_LEN + 1];

    (void)state;
    tok_prefix("rgu_abcdefgh_rest_of_the_token_is_not_copied_x", p);
    assert_string_equal(p, "rgu_abcdefgh");
    assert_int_equal(tok_new(tok), 0);
    memset(p, 'x', sizeof(p));
    tok_prefix(tok, p);
    assert_int_equal(strlen(p), TOK_PREFIX_LEN);
    assert_memory_equal(p, tok, TOK_PREFIX_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_vectors), cmocka_unit_test(test_new_format),
        cmocka_unit_test(test_new_unique),     cmocka_unit_test(test_wellformed),
        cmocka_unit_test(test_hash_vectors),   cmocka_unit_test(test_hash_equal),
        cmocka_unit_test(test_prefix),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for engine/db/mcache.c: the cache's keys and the encoding of its values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/db/mcache.c"

#define ID "0b6f4a3e-8d2c-4f1a-9e7b-5c3d2a1f0e9d"

static void test_key(void **state)
{
    char key[MCACHE_KEY_MAX];

    (void)state;
    assert_int_equal(mcache_key(key, ID), strlen("ringup:meta:" ID));
    assert_string_equal(key, "ringup:meta:" ID);
}

/* An entry decodes to the owner and the exact body it was made of. */
static void test_roundtrip(void **state)
{
    static const char body[] = "{\"id\":\"" ID "\",\"name\":\"a b\",\"size\":3}";
    char buf[256];
    struct mcache_val v;
    size_t n;

    (void)state;
    n = mcache_encode(buf, "alice", body, sizeof(body) - 1);
    assert_int_equal(n, mcache_encoded_len("alice", sizeof(body) - 1));
    assert_int_equal(mcache_decode(buf, n, &v), MCACHE_ENTRY);
    assert_int_equal(v.owner_len, 5);
    assert_memory_equal(v.owner, "alice", 5);
    assert_int_equal(v.body_len, sizeof(body) - 1);
    assert_memory_equal(v.body, body, sizeof(body) - 1);
    assert_true(mcache_owned_by(&v, "alice"));
    assert_false(mcache_owned_by(&v, "alic"));
    assert_false(mcache_owned_by(&v, "alice2"));
    assert_false(mcache_owned_by(&v, "bob"));
}

static void test_tombstone(void **state)
{
    struct mcache_val v;

    (void)state;
    assert_int_equal(mcache_decode("T", 1, &v), MCACHE_TOMB);
    /* A T with more after it is no tombstone we wrote. */
    assert_int_equal(mcache_decode("Tx", 2, &v), -EBADMSG);
}

/* Values not written by mcache_encode() are refused: the reader goes to the database. */
static void test_malformed(void **state)
{
    struct mcache_val v;

    (void)state;
    assert_int_equal(mcache_decode("", 0, &v), -EBADMSG);
    assert_int_equal(mcache_decode("M", 1, &v), -EBADMSG);
    assert_int_equal(mcache_decode("Malice", 6, &v), -EBADMSG);       /* no NUL */
    assert_int_equal(mcache_decode("M\0{}", 4, &v), -EBADMSG);        /* no owner */
    assert_int_equal(mcache_decode("Malice\0", 7, &v), -EBADMSG);     /* no body */
    assert_int_equal(mcache_decode("X alice\0{}", 10, &v), -EBADMSG); /* not our tag */
    assert_int_equal(mcache_decode("{\"id\":1}", 8, &v), -EBADMSG);   /* bare JSON */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_tombstone),
        cmocka_unit_test(test_malformed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for engine/auth.c: the token cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/auth.c"

static void hash_of(uint8_t h[32], uint32_t seed)
{
    unsigned i;

    for (i = 0; i < 32; i++)
        h[i] = (uint8_t)(seed * 2654435761u >> (i % 4 * 8)) ^ (uint8_t)i;
}

static void test_hit_and_expiry(void **state)
{
    struct auth_cache ac;
    uint8_t h[32];
    const char *user = NULL;

    (void)state;
    auth_cache_init(&ac);
    hash_of(h, 1);
    assert_false(auth_cache_get(&ac, h, 1000, &user));
    auth_cache_put(&ac, h, "alice", 1000);
    assert_true(auth_cache_get(&ac, h, 1000 + AUTH_TTL_MS - 1, &user));
    assert_string_equal(user, "alice");
    assert_false(auth_cache_get(&ac, h, 1000 + AUTH_TTL_MS, &user));
    auth_cache_free(&ac);
}

static void test_negative_entries(void **state)
{
    struct auth_cache ac;
    uint8_t h[32];
    const char *user = NULL;

    (void)state;
    auth_cache_init(&ac);
    hash_of(h, 2);
    auth_cache_put(&ac, h, NULL, 50);
    assert_true(auth_cache_get(&ac, h, 50, &user));
    assert_string_equal(user, "");
    assert_false(auth_cache_get(&ac, h, 50 + AUTH_NEG_TTL_MS, &user));
    auth_cache_free(&ac);
}

/* Two tokens in one slot: the newer wins, the older misses (never the wrong user). */
static void test_collision_never_confuses(void **state)
{
    struct auth_cache ac;
    uint8_t a[32];
    uint8_t b[32];
    const char *user = NULL;

    (void)state;
    auth_cache_init(&ac);
    hash_of(a, 3);
    memcpy(b, a, 32);
    b[31] ^= 0xff; /* same slot (first bytes), other token */
    auth_cache_put(&ac, a, "alice", 0);
    auth_cache_put(&ac, b, "bob", 0);
    assert_true(auth_cache_get(&ac, b, 1, &user));
    assert_string_equal(user, "bob");
    assert_false(auth_cache_get(&ac, a, 1, &user));
    auth_cache_free(&ac);
}

static void test_long_user_not_cached(void **state)
{
    char name[AUTH_USER_MAX + 2];
    struct auth_cache ac;
    uint8_t h[32];
    const char *user = NULL;

    (void)state;
    memset(name, 'u', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    auth_cache_init(&ac);
    hash_of(h, 4);
    auth_cache_put(&ac, h, name, 0);
    assert_false(auth_cache_get(&ac, h, 1, &user));
    auth_cache_free(&ac);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_expiry),
        cmocka_unit_test(test_negative_entries),
        cmocka_unit_test(test_collision_never_confuses),
        cmocka_unit_test(test_long_user_not_cached),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

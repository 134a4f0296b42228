/* Unit tests for engine/auth.c: the token cache, lookups in flight, bad-token counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/db/auth.c"

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
    assert_int_equal(auth_cache_get(&ac, h, 1000, &user), AUTH_MISS);
    auth_cache_put(&ac, h, "alice", 1000);
    assert_int_equal(auth_cache_get(&ac, h, 1000 + AUTH_TTL_MS - 1, &user), AUTH_VALID);
    assert_string_equal(user, "alice");
    /* Expired: asked again, as a token that was valid lately. */
    assert_int_equal(auth_cache_get(&ac, h, 1000 + AUTH_TTL_MS, &user), AUTH_EXPIRED);
    auth_cache_put(&ac, h, "alice", 1000 + AUTH_TTL_MS);
    assert_int_equal(auth_cache_get(&ac, h, 1000 + AUTH_TTL_MS, &user), AUTH_VALID);
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
    assert_int_equal(auth_cache_get(&ac, h, 50, &user), AUTH_INVALID);
    assert_int_equal(auth_cache_get(&ac, h, 50 + AUTH_NEG_TTL_MS - 1, &user), AUTH_INVALID);
    assert_int_equal(auth_cache_get(&ac, h, 50 + AUTH_NEG_TTL_MS, &user), AUTH_MISS);
    /* Created after it was refused: valid at once once looked up. */
    auth_cache_put(&ac, h, NULL, 100);
    auth_cache_put(&ac, h, "alice", 200);
    assert_int_equal(auth_cache_get(&ac, h, 201, &user), AUTH_VALID);
    assert_string_equal(user, "alice");
    auth_cache_free(&ac);
}

/* A revoked token loses its entry: it is no longer one that was valid lately. */
static void test_revoked_forgotten(void **state)
{
    struct auth_cache ac;
    uint8_t h[32];
    const char *user = NULL;

    (void)state;
    auth_cache_init(&ac);
    hash_of(h, 5);
    auth_cache_put(&ac, h, "alice", 0);
    auth_cache_put(&ac, h, NULL, AUTH_TTL_MS);
    assert_int_equal(auth_cache_get(&ac, h, AUTH_TTL_MS, &user), AUTH_INVALID);
    assert_int_equal(auth_cache_get(&ac, h, AUTH_TTL_MS + AUTH_NEG_TTL_MS, &user), AUTH_MISS);
    auth_cache_free(&ac);
}

/* Tokens sharing a set: AUTH_WAYS fit, one more evicts the one that expires first. */
static void test_collision_never_confuses(void **state)
{
    struct auth_cache ac;
    uint8_t h[AUTH_WAYS + 1][32];
    const char *user = NULL;
    char name[8];
    unsigned i;

    (void)state;
    auth_cache_init(&ac);
    for (i = 0; i <= AUTH_WAYS; i++) {
        hash_of(h[i], 3);
        h[i][31] ^= (uint8_t)(i + 1); /* same set (first bytes), other token */
    }
    for (i = 0; i < AUTH_WAYS; i++) {
        snprintf(name, sizeof(name), "u%u", i);
        auth_cache_put(&ac, h[i], name, i);
    }
    for (i = 0; i < AUTH_WAYS; i++) {
        snprintf(name, sizeof(name), "u%u", i);
        assert_int_equal(auth_cache_get(&ac, h[i], AUTH_WAYS, &user), AUTH_VALID);
        assert_string_equal(user, name);
    }
    auth_cache_put(&ac, h[AUTH_WAYS], "last", AUTH_WAYS);
    assert_int_equal(auth_cache_get(&ac, h[0], AUTH_WAYS, &user), AUTH_MISS);
    for (i = 1; i < AUTH_WAYS; i++)
        assert_int_equal(auth_cache_get(&ac, h[i], AUTH_WAYS, &user), AUTH_VALID);
    assert_int_equal(auth_cache_get(&ac, h[AUTH_WAYS], AUTH_WAYS, &user), AUTH_VALID);
    assert_string_equal(user, "last");
    auth_cache_free(&ac);
}

/* A flood of unknown tokens never evicts a known one: they live in their own table. */
static void test_unknown_flood_keeps_users(void **state)
{
    struct auth_cache ac;
    uint8_t h[32];
    uint8_t bad[32];
    const char *user = NULL;
    uint32_t i;

    (void)state;
    auth_cache_init(&ac);
    hash_of(h, 6);
    auth_cache_put(&ac, h, "alice", 0);
    for (i = 0; i < 16 * AUTH_SLOTS; i++) {
        hash_of(bad, 1000 + i);
        auth_cache_put(&ac, bad, NULL, 1);
    }
    memcpy(bad, h, 32);
    bad[31] ^= 1; /* the same set and slot as alice's */
    auth_cache_put(&ac, bad, NULL, 1);
    assert_int_equal(auth_cache_get(&ac, bad, 2, &user), AUTH_INVALID);
    assert_int_equal(auth_cache_get(&ac, h, 2, &user), AUTH_VALID);
    assert_string_equal(user, "alice");
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
    assert_int_equal(auth_cache_get(&ac, h, 1, &user), AUTH_MISS);
    auth_cache_free(&ac);
}

/* N waiters on one token: one lookup started, all of them answered from it, in order. */
static void test_flight_coalesces(void **state)
{
    struct auth_cache ac;
    struct auth_wait w[5];
    struct auth_wait *out;
    struct auth_flight *f;
    struct auth_flight *g;
    uint8_t h[32];
    bool started;
    unsigned i;

    (void)state;
    auth_cache_init(&ac);
    hash_of(h, 7);
    f = auth_flight_join(&ac, h, false, &w[0], &started);
    assert_non_null(f);
    assert_true(started);
    for (i = 1; i < 5; i++) {
        g = auth_flight_join(&ac, h, false, &w[i], &started);
        assert_ptr_equal(g, f);
        assert_false(started);
    }
    assert_int_equal(ac.lookups, 1);
    assert_int_equal(ac.unknown, 1);
    out = auth_flight_end(f);
    for (i = 0; i < 5; i++) {
        assert_ptr_equal(out, &w[i]);
        out = out->next;
    }
    assert_null(out);
    assert_int_equal(ac.lookups, 0);
    assert_int_equal(ac.unknown, 0);
    /* Ended: the next request for that token starts a new lookup. */
    f = auth_flight_join(&ac, h, false, &w[0], &started);
    assert_true(started);
    auth_flight_end(f);
    auth_cache_free(&ac);
}

/*
 * Unknown tokens stop at AUTH_LOOKUPS_MAX lookups in flight; renewals of
 * tokens valid lately still start, up to AUTH_FLIGHTS; a token already in
 * flight is always joined; an ended lookup frees its place.
 */
static void test_flight_caps(void **state)
{
    static struct auth_wait w[AUTH_FLIGHTS + 3];
    static struct auth_flight *f[AUTH_FLIGHTS];
    struct auth_cache ac;
    uint8_t h[32];
    bool started;
    unsigned i;

    (void)state;
    auth_cache_init(&ac);
    for (i = 0; i < AUTH_LOOKUPS_MAX; i++) {
        hash_of(h, 100 + i);
        f[i] = auth_flight_join(&ac, h, false, &w[i], &started);
        assert_non_null(f[i]);
        assert_true(started);
    }
    hash_of(h, 99);
    assert_null(auth_flight_join(&ac, h, false, &w[AUTH_FLIGHTS], &started));
    hash_of(h, 100);
    assert_ptr_equal(auth_flight_join(&ac, h, false, &w[AUTH_FLIGHTS], &started), f[0]);
    assert_false(started);
    for (i = AUTH_LOOKUPS_MAX; i < AUTH_FLIGHTS; i++) {
        hash_of(h, 100 + i);
        f[i] = auth_flight_join(&ac, h, true, &w[i], &started);
        assert_non_null(f[i]);
        assert_true(started);
    }
    hash_of(h, 98);
    assert_null(auth_flight_join(&ac, h, true, &w[AUTH_FLIGHTS + 1], &started));
    assert_int_equal(ac.lookups, AUTH_FLIGHTS);
    assert_int_equal(ac.unknown, AUTH_LOOKUPS_MAX);
    /* One unknown lookup ends: one unknown token may start. */
    auth_flight_end(f[0]);
    hash_of(h, 99);
    f[0] = auth_flight_join(&ac, h, false, &w[AUTH_FLIGHTS + 2], &started);
    assert_non_null(f[0]);
    assert_true(started);
    for (i = 0; i < AUTH_FLIGHTS; i++)
        auth_flight_end(f[i]);
    assert_int_equal(ac.lookups, 0);
    assert_int_equal(ac.unknown, 0);
    auth_cache_free(&ac);
}

/* A renewal ended frees a renewal's place, never an unknown token's. */
static void test_flight_known_accounting(void **state)
{
    struct auth_cache ac;
    struct auth_wait w[2];
    struct auth_flight *f;
    uint8_t h[32];
    bool started;

    (void)state;
    auth_cache_init(&ac);
    hash_of(h, 8);
    f = auth_flight_join(&ac, h, true, &w[0], &started);
    assert_int_equal(ac.unknown, 0);
    assert_int_equal(ac.lookups, 1);
    auth_flight_end(f);
    assert_int_equal(ac.unknown, 0);
    assert_int_equal(ac.lookups, 0);
    auth_cache_free(&ac);
}

static void test_strikes(void **state)
{
    struct auth_cache ac;
    uint64_t a = (uint64_t)7 << 32 | 3;
    uint64_t b = (uint64_t)8 << 32 | 3; /* the same slot, reused */
    uint64_t c = (uint64_t)7 << 32 | 4;
    uint32_t i;

    (void)state;
    auth_cache_init(&ac);
    for (i = 1; i <= AUTH_STRIKES_MAX; i++)
        assert_int_equal(auth_strike(&ac, a), i);
    assert_int_equal(auth_strike(&ac, c), 1);
    assert_int_equal(auth_strike(&ac, a), AUTH_STRIKES_MAX + 1);
    /* A new connection in the slot starts from nothing. */
    assert_int_equal(auth_strike(&ac, b), 1);
    assert_int_equal(auth_strike(&ac, 0), 1);
    assert_int_equal(auth_strike(&ac, 0), 2);
    auth_cache_free(&ac);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_expiry),
        cmocka_unit_test(test_negative_entries),
        cmocka_unit_test(test_revoked_forgotten),
        cmocka_unit_test(test_collision_never_confuses),
        cmocka_unit_test(test_unknown_flood_keeps_users),
        cmocka_unit_test(test_long_user_not_cached),
        cmocka_unit_test(test_flight_coalesces),
        cmocka_unit_test(test_flight_caps),
        cmocka_unit_test(test_flight_known_accounting),
        cmocka_unit_test(test_strikes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

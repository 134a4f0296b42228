/* Unit tests for engine/db/bucket.c: GCRA sums, Retry-After, the fallback share, the block. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The module under test is compiled in (the Makefile links the rest of the tree). */
#include "engine/db/bucket.c"

/* Take permits one at a time at now until one is refused; returns how many were taken. */
static uint32_t drain(struct bucket *b, double now, uint32_t limit, uint32_t cap)
{
    uint32_t n = 0;

    while (n < cap && bucket_fit(b, now, limit, 1) == 1) {
        bucket_debit(b, now, limit, 1);
        n++;
    }
    return n;
}

static void test_exact_burst(void **state)
{
    static const uint32_t limits[] = {1, 3, 7, 10, 60, 100, 1000, 999983, 1000000};
    double now = 1.7e12; /* ms since 1970, as the Redis script's clock */
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        struct bucket b = {0, 0};
        uint32_t l = limits[i];

        assert_int_equal(drain(&b, now, l, l + 5), l);
        /* Empty: full again one period later, to the ms. */
        assert_int_equal(bucket_reset_ms(&b, now), 60000);
        assert_int_equal(bucket_fit(&b, now, l, l), 0);
    }
}

static void test_fit_and_block_debit(void **state)
{
    struct bucket b = {0, 0};
    double now = 1000;

    (void)state;
    assert_int_equal(bucket_fit(&b, now, 10, 4), 4);
    bucket_debit(&b, now, 10, 4);
    assert_int_equal(bucket_fit(&b, now, 10, 100), 6);
    bucket_debit(&b, now, 10, 6);
    assert_int_equal(bucket_fit(&b, now, 10, 1), 0);
    /* Refill at one permit per 6 s. */
    assert_int_equal(bucket_fit(&b, now + 5999, 10, 2), 0);
    assert_int_equal(bucket_fit(&b, now + 6000, 10, 2), 1);
    assert_int_equal(bucket_fit(&b, now + 12000, 10, 2), 2);
    assert_int_equal(bucket_fit(&b, now + 60000, 10, 20), 10);
    assert_int_equal(bucket_fit(&b, now + 600000, 10, 20), 10);
}

/* Retry-After is honest: at retry the permits fit, a ms earlier they do not. */
static void test_retry_honest(void **state)
{
    static const uint32_t limits[] = {1, 7, 10, 100, 1000, 123457};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        uint32_t l = limits[i];
        uint32_t n;

        for (n = 1; n <= 3 && n <= l; n++) {
            struct bucket b = {0, 0};
            double now = 777.25;
            uint64_t w;

            drain(&b, now, l, l);
            w = bucket_retry_ms(&b, now, l, n);
            assert_true(w > 0);
            assert_int_equal(bucket_fit(&b, now + (double)w, l, n), n);
            if (w > 1)
                assert_true(bucket_fit(&b, now + (double)w - 1, l, n) < n);
        }
    }
    {
        struct bucket full = {0, 0};

        assert_int_equal(bucket_retry_ms(&full, 100, 10, 1), 0);
        assert_int_equal(bucket_retry_ms(&full, 100, 0, 1000), 0);
    }
}

static void test_credit(void **state)
{
    struct bucket b = {0, 0};
    double now = 2000;

    (void)state;
    bucket_debit(&b, now, 10, 10);
    bucket_credit(&b, now, 10, 3);
    assert_int_equal(bucket_fit(&b, now, 10, 10), 3);
    /* Never past a full bucket: credits of lost permits do not pile up. */
    bucket_credit(&b, now, 10, 50);
    assert_true(b.debt == 0);
    assert_int_equal(bucket_fit(&b, now, 10, 20), 10);
    assert_int_equal(bucket_reset_ms(&b, now), 0);
}

static void test_off(void **state)
{
    (void)state;
    struct bucket b = {1.0, 5.0};

    assert_int_equal(bucket_fit(&b, 0, 0, 77), 77);
    bucket_debit(&b, 1.0, 0, 9);
    assert_true(b.debt == 5.0);
}

static void test_secs(void **state)
{
    (void)state;
    assert_int_equal(bucket_secs(0), 0);
    assert_int_equal(bucket_secs(1), 1);
    assert_int_equal(bucket_secs(1000), 1);
    assert_int_equal(bucket_secs(1001), 2);
    assert_int_equal(bucket_secs(60000), 60);
}

/* The fallback: each of k instances takes limit/k, never more than the limit together. */
static void test_share(void **state)
{
    uint32_t k;

    (void)state;
    assert_int_equal(bucket_share(100, 1), 100);
    assert_int_equal(bucket_share(100, 0), 100);
    assert_int_equal(bucket_share(100, 2), 50);
    assert_int_equal(bucket_share(100, 3), 33);
    assert_int_equal(bucket_share(2, 5), 1);
    assert_int_equal(bucket_share(0, 3), 0);
    for (k = 1; k <= 64; k++)
        assert_true((uint64_t)bucket_share(1000, k) * k <= 1000);
}

static void test_block(void **state)
{
    (void)state;
    assert_int_equal(bucket_block(10, 1000), 1);
    assert_int_equal(bucket_block(100, 1000), 1);
    assert_int_equal(bucket_block(0, 1000), 15);
    assert_int_equal(bucket_block(6400, 0), 100);
    assert_int_equal(bucket_block(1000000, 640), 10);
    assert_int_equal(bucket_block(1000000000, 1000000000), BUCKET_BLOCK_MAX);
}

/* High limits keep their precision on a clock some years after boot. */
static void test_high_limit(void **state)
{
    struct bucket b = {0, 0};
    double now = 1e12; /* Redis's clock: ms since 1970 */
    uint32_t taken = 0;

    (void)state;
    while (bucket_fit(&b, now, 1000000000, BUCKET_BLOCK_MAX) == BUCKET_BLOCK_MAX &&
           taken < 2000000000u) {
        bucket_debit(&b, now, 1000000000, BUCKET_BLOCK_MAX);
        taken += BUCKET_BLOCK_MAX;
    }
    taken += bucket_fit(&b, now, 1000000000, BUCKET_BLOCK_MAX);
    assert_true(taken >= 999999000u && taken <= 1000000000u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_burst),  cmocka_unit_test(test_fit_and_block_debit),
        cmocka_unit_test(test_retry_honest), cmocka_unit_test(test_credit),
        cmocka_unit_test(test_off),          cmocka_unit_test(test_secs),
        cmocka_unit_test(test_share),        cmocka_unit_test(test_block),
        cmocka_unit_test(test_high_limit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

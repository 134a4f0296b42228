/*
 * Unit tests for bench/load/hist.c: bucket layout, quantiles against exact
 * nearest-rank values of sorted samples (within the histogram's stated
 * relative error, 1/64), edge values, merging, max and mean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "bench/load/hist.c"

#define REL_ERR (1.0 / 64.0) /* half a bucket's width over its lower bound */

static const double quantiles[] = {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The nearest-rank quantile of n sorted values. */
static uint64_t exact_quantile(const uint64_t *sorted, size_t n, double q)
{
    long double r = (long double)q * (long double)n;
    size_t rank = (size_t)ceill(r - r * 1e-12L);

    if (rank == 0)
        rank = 1;
    return sorted[rank - 1];
}

/* Every quantile of h within REL_ERR of the exact one of vals (sorted here). */
static void check_quantiles(const struct hist *h, uint64_t *vals, size_t n)
{
    size_t i;

    qsort(vals, n, sizeof(*vals), cmp_u64);
    for (i = 0; i < sizeof(quantiles) / sizeof(quantiles[0]); i++) {
        uint64_t want = exact_quantile(vals, n, quantiles[i]);
        uint64_t got = hist_quantile(h, quantiles[i]);
        double err = want ? fabs((double)got - (double)want) / (double)want : (double)got;

        if (err > REL_ERR)
            fail_msg("q=%g: want %llu, got %llu (error %.4f)", quantiles[i],
                     (unsigned long long)want, (unsigned long long)got, err);
    }
    assert_int_equal(hist_quantile(h, 1.0), vals[n - 1]);
    assert_int_equal(hist_quantile(h, 0.0), vals[0]);
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_layout(void **state)
{
    unsigned i;
    uint64_t v;

    (void)state;
    /* Small values are exact. */
    for (v = 0; v < HIST_SUB; v++) {
        assert_int_equal(hist_index(v), v);
        assert_int_equal(hist_bucket_low((unsigned)v), v);
        assert_int_equal(hist_bucket_high((unsigned)v), v);
    }
    /* Buckets tile the range without gaps or overlap, each at most 1/32 of its low bound wide. */
    for (i = 1; i < HIST_BUCKETS; i++) {
        assert_int_equal(hist_bucket_low(i), hist_bucket_high(i - 1) + 1);
        assert_int_equal(hist_index(hist_bucket_low(i)), i);
        assert_int_equal(hist_index(hist_bucket_high(i)), i);
        if (i >= HIST_SUB)
            assert_true((double)(hist_bucket_high(i) - hist_bucket_low(i) + 1) <=
                        (double)hist_bucket_low(i) / HIST_SUB);
    }
    assert_int_equal(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
    assert_int_equal(hist_bucket_high(HIST_BUCKETS - 1), UINT64_MAX);
    assert_int_equal(hist_index(32), 32);
    assert_int_equal(hist_index(33), 33);
    assert_int_equal(hist_index(64), 64);
    assert_int_equal(hist_index(66), 65);
}

static void test_empty(void **state)
{
    struct hist *h = malloc(sizeof(*h));

    (void)state;
    assert_non_null(h);
    hist_init(h);
    assert_int_equal(h->count, 0);
    assert_int_equal(hist_quantile(h, 0.5), 0);
    assert_int_equal(hist_quantile(h, 1.0), 0);
    assert_true(hist_mean(h) == 0.0);
    free(h);
}

static void test_edges(void **state)
{
    struct hist *h = malloc(sizeof(*h));

    (void)state;
    assert_non_null(h);
    hist_init(h);
    hist_record(h, 0);
    assert_int_equal(hist_quantile(h, 0.5), 0);
    assert_int_equal(h->max, 0);
    assert_int_equal(h->min, 0);

    hist_init(h);
    hist_record(h, 1);
    assert_int_equal(hist_quantile(h, 0.5), 1);
    assert_int_equal(hist_quantile(h, 0.999), 1);

    hist_init(h);
    hist_record(h, UINT64_MAX);
    assert_int_equal(hist_quantile(h, 0.5), UINT64_MAX);
    assert_int_equal(h->max, UINT64_MAX);
    assert_true(hist_mean(h) == (double)UINT64_MAX);

    /* 0, 1 and huge together: the median is 1, the top is exact, the mean is exact. */
    hist_init(h);
    hist_record(h, 0);
    hist_record(h, 1);
    hist_record(h, (uint64_t)1 << 62);
    assert_int_equal(hist_quantile(h, 0.34), 1);
    assert_int_equal(hist_quantile(h, 0.33), 0);
    assert_int_equal(hist_quantile(h, 1.0), (uint64_t)1 << 62);
    assert_true(hist_mean(h) == (double)(((uint64_t)1 << 62) + 1) / 3.0);

    /* A lone value in a wide bucket is reported exactly (clamped to min and max). */
    hist_init(h);
    hist_record(h, 1000003);
    assert_int_equal(hist_quantile(h, 0.5), 1000003);
    free(h);
}

static void test_uniform(void **state)
{
    enum { N = 100000 };
    struct hist *h = malloc(sizeof(*h));
    uint64_t *vals = malloc(N * sizeof(*vals));
    uint64_t s = 88172645463325252ull;
    long double sum = 0;
    uint64_t max = 0;
    size_t i;

    (void)state;
    assert_non_null(h);
    assert_non_null(vals);
    hist_init(h);
    for (i = 0; i < N; i++) {
        vals[i] = xs(&s) % 2000000;
        hist_record(h, vals[i]);
        sum += vals[i];
        if (vals[i] > max)
            max = vals[i];
    }
    assert_int_equal(h->count, N);
    assert_int_equal(h->max, max);
    assert_true(fabs(hist_mean(h) - (double)(sum / N)) < 1e-6);
    check_quantiles(h, vals, N);
    free(vals);
    free(h);
}

/* Latency-like: log-uniform over 1 us .. 10 s, plus a few outliers. */
static void test_log_spread(void **state)
{
    enum { N = 50000 };
    struct hist *h = malloc(sizeof(*h));
    uint64_t *vals = malloc(N * sizeof(*vals));
    uint64_t s = 0x1234567887654321ull;
    size_t i;

    (void)state;
    assert_non_null(h);
    assert_non_null(vals);
    hist_init(h);
    for (i = 0; i < N; i++) {
        double e = (double)(xs(&s) % 1000000) / 1000000.0 * 7.0;

        vals[i] = (uint64_t)pow(10.0, e);
        if (i % 9973 == 0)
            vals[i] = 3000000000ull + i;
        hist_record(h, vals[i]);
    }
    check_quantiles(h, vals, N);
    free(vals);
    free(h);
}

/* Few distinct values: quantiles land exactly on them. */
static void test_exact_small(void **state)
{
    struct hist *h = malloc(sizeof(*h));
    unsigned i;

    (void)state;
    assert_non_null(h);
    hist_init(h);
    for (i = 1; i <= 10; i++)
        hist_record(h, i);
    assert_int_equal(hist_quantile(h, 0.5), 5);
    assert_int_equal(hist_quantile(h, 0.51), 6);
    assert_int_equal(hist_quantile(h, 0.9), 9);
    assert_int_equal(hist_quantile(h, 0.91), 10);
    assert_true(hist_mean(h) == 5.5);
    free(h);
}

static void test_merge(void **state)
{
    enum { N = 20000 };
    struct hist *a = malloc(sizeof(*a));
    struct hist *b = malloc(sizeof(*b));
    struct hist *both = malloc(sizeof(*both));
    struct hist *empty = malloc(sizeof(*empty));
    uint64_t s = 99;
    size_t i;

    (void)state;
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(both);
    assert_non_null(empty);
    hist_init(a);
    hist_init(b);
    hist_init(both);
    hist_init(empty);
    for (i = 0; i < N; i++) {
        uint64_t v = xs(&s) % (i % 2 ? 5000 : 5000000);

        hist_record(i % 3 ? a : b, v);
        hist_record(both, v);
    }
    hist_merge(a, b);
    assert_memory_equal(a->bucket, both->bucket, sizeof(a->bucket));
    assert_int_equal(a->count, both->count);
    assert_int_equal(a->min, both->min);
    assert_int_equal(a->max, both->max);
    assert_true(a->sum == both->sum);
    for (i = 0; i < sizeof(quantiles) / sizeof(quantiles[0]); i++)
        assert_int_equal(hist_quantile(a, quantiles[i]), hist_quantile(both, quantiles[i]));
    /* An empty histogram changes nothing, either way round. */
    hist_merge(a, empty);
    assert_int_equal(a->min, both->min);
    assert_int_equal(a->count, both->count);
    hist_merge(empty, both);
    assert_memory_equal(empty->bucket, both->bucket, sizeof(both->bucket));
    assert_int_equal(empty->min, both->min);
    assert_int_equal(empty->max, both->max);
    free(a);
    free(b);
    free(both);
    free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),     cmocka_unit_test(test_empty),
        cmocka_unit_test(test_edges),      cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_log_spread), cmocka_unit_test(test_exact_small),
        cmocka_unit_test(test_merge),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for proto/prom.c: exposition lines, exact bytes, and overflow. */
#include "proto/prom.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

/* A buffer of exactly cap bytes on the heap, so ASan sees any overrun. */
static void buf_open(struct prom_buf *b, size_t cap)
{
    b->p = malloc(cap > 0 ? cap : 1);
    assert_non_null(b->p);
    b->len = 0;
    b->cap = cap;
    b->full = false;
}

static void buf_check(struct prom_buf *b, const char *want)
{
    assert_false(b->full);
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->p, want, b->len);
    free(b->p);
}

static void sample_is(const char *labels, double v, const char *want)
{
    struct prom_buf b;

    buf_open(&b, 256);
    prom_sample(&b, "m", labels, v);
    buf_check(&b, want);
}

static void test_family(void **state)
{
    struct prom_buf b;

    (void)state;
    buf_open(&b, 256);
    prom_family(&b, "ringup_requests_total", "counter", "HTTP requests answered.");
    prom_family(&b, "ringup_queue_depth", "gauge", "Jobs waiting.");
    buf_check(&b, "# HELP ringup_requests_total HTTP requests answered.\n"
                  "# TYPE ringup_requests_total counter\n"
                  "# HELP ringup_queue_depth Jobs waiting.\n"
                  "# TYPE ringup_queue_depth gauge\n");
}

static void test_sample_integers(void **state)
{
    (void)state;
    sample_is(NULL, 0, "m 0\n");
    sample_is("", 42, "m 42\n");
    sample_is(NULL, -3, "m -3\n");
    sample_is(NULL, 1e6, "m 1000000\n");
    sample_is(NULL, 9007199254740991.0, "m 9007199254740991\n");
    sample_is(NULL, 18446744073709551615.0, "m 1.84467441e+19\n");
    sample_is("code=\"200\"", 7, "m{code=\"200\"} 7\n");
    sample_is("code=\"200\",method=\"GET\"", 12345, "m{code=\"200\",method=\"GET\"} 12345\n");
}

static void test_sample_fractions(void **state)
{
    (void)state;
    sample_is(NULL, 0.5, "m 0.5\n");
    sample_is(NULL, -0.25, "m -0.25\n");
    sample_is(NULL, 1.0 / 3.0, "m 0.333333333\n");
    sample_is(NULL, 1.25e-7, "m 1.25e-07\n");
    sample_is(NULL, 123456.789, "m 123456.789\n");
    sample_is("q=\"0.99\"", 0.012, "m{q=\"0.99\"} 0.012\n");
    sample_is(NULL, NAN, "m NaN\n");
    sample_is(NULL, INFINITY, "m +Inf\n");
    sample_is(NULL, -INFINITY, "m -Inf\n");
}

static const double bounds[] = {0.005, 0.1, 1, 2.5, 1e6};
static const uint64_t counts[] = {1, 2, 0, 3, 5, 4};

static void test_histogram(void **state)
{
    struct prom_buf b;

    (void)state;
    buf_open(&b, 1024);
    prom_histogram(&b, "lat_seconds", NULL, bounds, counts, 5, 123.5);
    buf_check(&b, "lat_seconds_bucket{le=\"0.005\"} 1\n"
                  "lat_seconds_bucket{le=\"0.1\"} 3\n"
                  "lat_seconds_bucket{le=\"1\"} 3\n"
                  "lat_seconds_bucket{le=\"2.5\"} 6\n"
                  "lat_seconds_bucket{le=\"1e+06\"} 11\n"
                  "lat_seconds_bucket{le=\"+Inf\"} 15\n"
                  "lat_seconds_sum 123.5\n"
                  "lat_seconds_count 15\n");

    buf_open(&b, 1024);
    prom_histogram(&b, "lat_seconds", "route=\"put\"", bounds, counts, 2, 7);
    buf_check(&b, "lat_seconds_bucket{route=\"put\",le=\"0.005\"} 1\n"
                  "lat_seconds_bucket{route=\"put\",le=\"0.1\"} 3\n"
                  "lat_seconds_bucket{route=\"put\",le=\"+Inf\"} 3\n"
                  "lat_seconds_sum{route=\"put\"} 7\n"
                  "lat_seconds_count{route=\"put\"} 3\n");

    /* No bounds: one +Inf bucket. Empty labels are no labels. */
    buf_open(&b, 1024);
    prom_histogram(&b, "h", "", bounds, counts + 3, 0, 0.75);
    buf_check(&b, "h_bucket{le=\"+Inf\"} 3\n"
                  "h_sum 0.75\n"
                  "h_count 3\n");
}

/* Everything a scrape writes, for the overflow test. */
static void write_all(struct prom_buf *b)
{
    prom_family(b, "lat_seconds", "histogram", "Request latency.");
    prom_histogram(b, "lat_seconds", "route=\"get\"", bounds, counts, 5, 0.125);
    prom_family(b, "up", "gauge", "Serving.");
    prom_sample(b, "up", NULL, 1);
}

/*
 * Past the cap, full is set and stays set, len never passes cap, and what
 * was written is whole lines of the full text. The text needs one spare byte
 * (vsnprintf's terminator), so a buffer of exactly its length is full.
 */
static void test_overflow(void **state)
{
    struct prom_buf b;
    char *whole;
    size_t need;
    size_t cap;

    (void)state;
    buf_open(&b, 4096);
    write_all(&b);
    assert_false(b.full);
    need = b.len;
    whole = b.p;
    for (cap = 0; cap <= need + 1; cap++) {
        buf_open(&b, cap);
        write_all(&b);
        if (cap <= need) {
            assert_true(b.full);
            assert_true(b.len < cap || b.len == 0);
            assert_memory_equal(b.p, whole, b.len);
            assert_true(b.len == 0 || b.p[b.len - 1] == '\n');
            /* Writes after the overflow change nothing. */
            {
                size_t len = b.len;
                prom_sample(&b, "x", NULL, 1);
                prom_family(&b, "x", "gauge", "x");
                assert_true(b.full);
                assert_int_equal(b.len, len);
            }
        } else {
            assert_false(b.full);
            assert_int_equal(b.len, need);
            assert_memory_equal(b.p, whole, need);
        }
        free(b.p);
    }
    free(whole);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family),           cmocka_unit_test(test_sample_integers),
        cmocka_unit_test(test_sample_fractions), cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_overflow),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for engine/tmr.c: the timer heap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/core/tmr.c"

#define N 500

static uint64_t fired[N];
static unsigned nfired;

struct item {
    struct tmr t;
    uint64_t id;
};

static void record(struct tmr *t)
{
    struct item *it = (struct item *)((char *)t - offsetof(struct item, t));

    fired[nfired++] = it->id;
}

/* Check the heap property over every armed timer and its back-pointers. */
static void check_heap(const struct tmr_heap *h)
{
    uint32_t i;

    for (i = 0; i < h->n; i++) {
        assert_int_equal(h->v[i]->heap_idx, i);
        if (i > 0)
            assert_true(h->v[(i - 1) / 2]->deadline <= h->v[i]->deadline);
    }
}

static void test_order(void **state)
{
    static struct item items[N];
    struct tmr_heap h;
    unsigned i;

    (void)state;
    nfired = 0;
    tmr_heap_init(&h);
    assert_true(tmr_next(&h) == UINT64_MAX);
    srand(7);
    for (i = 0; i < N; i++) {
        items[i].id = i;
        tmr_init(&items[i].t, record);
        assert_false(tmr_armed(&items[i].t));
        tmr_set(&h, &items[i].t, 1000 + (uint64_t)(rand() % 5000));
        assert_true(tmr_armed(&items[i].t));
    }
    check_heap(&h);
    /* Move half of them, cancel a tenth. */
    for (i = 0; i < N; i += 2)
        tmr_set(&h, &items[i].t, 1000 + (uint64_t)(rand() % 5000));
    check_heap(&h);
    for (i = 0; i < N; i += 10)
        tmr_cancel(&h, &items[i].t);
    check_heap(&h);
    assert_int_equal(h.n, N - N / 10);

    assert_int_equal(tmr_expire(&h, 999), 0);
    {
        unsigned n = tmr_expire(&h, 3000);
        assert_int_equal(n, nfired);
    }
    assert_true(nfired > 0);
    for (i = 0; i < nfired; i++)
        assert_true(items[fired[i]].t.deadline <= 3000);
    check_heap(&h);
    {
        unsigned left = h.n;
        assert_true(tmr_next(&h) > 3000);
        assert_int_equal(tmr_expire(&h, 10000), left);
    }
    assert_int_equal(h.n, 0);
    assert_int_equal(nfired, N - N / 10);
    for (i = 1; i < nfired; i++)
        assert_true(items[fired[i - 1]].t.deadline <= items[fired[i]].t.deadline);
    for (i = 0; i < N; i++)
        assert_false(tmr_armed(&items[i].t));
    tmr_heap_free(&h);
}

static struct tmr_heap *rearm_heap;
static unsigned rearm_count;

/* A callback that re-arms itself once: expiry must not loop on it. */
static void rearm(struct tmr *t)
{
    if (rearm_count++ == 0)
        tmr_set(rearm_heap, t, t->deadline + 100);
}

static void test_rearm_in_callback(void **state)
{
    struct tmr_heap h;
    struct tmr t;

    (void)state;
    tmr_heap_init(&h);
    rearm_heap = &h;
    rearm_count = 0;
    tmr_init(&t, rearm);
    tmr_set(&h, &t, 10);
    assert_int_equal(tmr_expire(&h, 50), 1);
    assert_true(tmr_armed(&t));
    assert_true(tmr_next(&h) == 110);
    assert_int_equal(tmr_expire(&h, 110), 1);
    assert_false(tmr_armed(&t));
    tmr_cancel(&h, &t); /* cancelling a disarmed timer is a no-op */
    tmr_heap_free(&h);
}

static void test_now_moves(void **state)
{
    uint64_t a = tmr_now_ms();
    uint64_t b = tmr_now_ms();

    (void)state;
    assert_true(a > 0);
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_rearm_in_callback),
        cmocka_unit_test(test_now_moves),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

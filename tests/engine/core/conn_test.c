/* Unit tests for engine/core/conn.c: slot generations and the tagged user_data. */
/*
 * The module under test is compiled in, so the test reaches its statics;
 * before cmocka.h, whose fail() macro would rename conn.c's fail().
 */
#include "engine/core/conn.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#define REUSES 70000 /* past 2^16: a 16-bit generation wraps inside this loop */

/* Every field of user_data survives its encoding, at the widths' edges. */
static void test_user_data_round_trip(void **state)
{
    static const uint32_t gens[] = {0, 1, 0xffff, 0x10000, 0xfffffffe, 0xffffffff};
    static const uint32_t idxs[] = {0, 1, CONN_CHUNK, 65535, RING_UD_IDX_MAX};
    size_t g;
    size_t i;

    (void)state;
    for (g = 0; g < sizeof(gens) / sizeof(gens[0]); g++) {
        for (i = 0; i < sizeof(idxs) / sizeof(idxs[0]); i++) {
            uint64_t ud = ring_ud(3, gens[g], idxs[i]);
            assert_int_equal(ud >> 56, 3);
            assert_int_equal((uint32_t)(ud >> RING_UD_IDX_BITS), gens[g]);
            assert_int_equal((uint32_t)ud & RING_UD_IDX_MAX, idxs[i]);
        }
    }
}

/*
 * A slot freed and taken again 70,000 times (last in, first out, as under
 * connection churn): the first connection's reference never resolves to a
 * later one, nor does a late CQE's (idx, gen).
 */
static void test_stale_ref_after_reuse(void **state)
{
    struct ring r;
    struct conn_pool *p;
    struct conn *c;
    uint64_t ref;
    uint32_t idx;
    uint32_t gen;
    uint32_t i;

    (void)state;
    memset(&r, 0, sizeof(r));
    p = conn_pool_new(&r, NULL, NULL);
    c = slot_take(p);
    c->fd = 7;
    c->state = CONN_BODY;
    c->waiting = 1;
    ref = conn_ref(c);
    idx = c->idx;
    gen = c->gen;
    assert_ptr_equal(conn_find(p, ref), c);
    assert_ptr_equal(conn_deref(p, ref), c);

    for (i = 0; i < REUSES; i++) {
        struct conn *n;

        slot_retire(p, c);
        slots_reclaim(p);
        n = slot_take(p);
        assert_ptr_equal(n, c); /* the same slot, as the free list hands it out */
        n->fd = 7;
        n->state = CONN_BODY;
        n->waiting = 1;
        if (conn_find(p, ref) != NULL || conn_deref(p, ref) != NULL || lookup(p, idx, gen))
            fail_msg("a stale reference resolved after %u reuses", i + 1);
        assert_ptr_equal(conn_find(p, conn_ref(n)), n);
    }
    conn_pool_free(p);
}

/* A retired slot resolves to nothing even before it is reused. */
static void test_retired_slot(void **state)
{
    struct ring r;
    struct conn_pool *p;
    struct conn *c;
    uint64_t ref;

    (void)state;
    memset(&r, 0, sizeof(r));
    p = conn_pool_new(&r, NULL, NULL);
    c = slot_take(p);
    c->fd = 3;
    ref = conn_ref(c);
    slot_retire(p, c);
    assert_null(conn_find(p, ref));
    assert_null(conn_find(p, ref + 1)); /* an index never handed out */
    assert_null(conn_find(p, (uint64_t)1 << 32 | (uint64_t)CONN_CHUNK * 5));
    conn_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_data_round_trip),
        cmocka_unit_test(test_stale_ref_after_reuse),
        cmocka_unit_test(test_retired_slot),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for engine/conn.c: slot generations and the tagged user_data. */
/*
 * The module under test is compiled in, so the test reaches its statics;
 * before cmocka.h, whose fail() macro would rename conn.c's fail().
 */
#include "engine/conn.c"

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
            uint64_t ud = ring_ud(RING_OP_CONN, gens[g], idxs[i]);
            assert_int_equal(ud >> 56, RING_OP_CONN);
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
    struct conn *c;
    uint64_t ref;
    uint32_t idx;
    uint32_t gen;
    uint32_t i;

    (void)state;
    memset(&r, 0, sizeof(r));
    conn_pool_init(&r.conns);
    c = slot_take(&r.conns);
    c->fd = 7;
    c->state = CONN_BODY;
    c->waiting = 1;
    ref = conn_ref(c);
    idx = c->idx;
    gen = c->gen;
    assert_ptr_equal(conn_find(&r, ref), c);
    assert_ptr_equal(conn_deref(&r, ref), c);

    for (i = 0; i < REUSES; i++) {
        struct conn *n;

        slot_retire(&r.conns, c);
        slots_reclaim(&r.conns);
        n = slot_take(&r.conns);
        assert_ptr_equal(n, c); /* the same slot, as the free list hands it out */
        n->fd = 7;
        n->state = CONN_BODY;
        n->waiting = 1;
        if (conn_find(&r, ref) != NULL || conn_deref(&r, ref) != NULL || lookup(&r, idx, gen))
            fail_msg("a stale reference resolved after %u reuses", i + 1);
        assert_ptr_equal(conn_find(&r, conn_ref(n)), n);
    }
    conn_pool_free(&r.conns);
}

/* A retired slot resolves to nothing even before it is reused. */
static void test_retired_slot(void **state)
{
    struct ring r;
    struct conn *c;
    uint64_t ref;

    (void)state;
    memset(&r, 0, sizeof(r));
    conn_pool_init(&r.conns);
    c = slot_take(&r.conns);
    c->fd = 3;
    ref = conn_ref(c);
    slot_retire(&r.conns, c);
    assert_null(conn_find(&r, ref));
    assert_null(conn_find(&r, ref + 1)); /* an index never handed out */
    assert_null(conn_find(&r, (uint64_t)1 << 32 | (uint64_t)CONN_CHUNK * 5));
    conn_pool_free(&r.conns);
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

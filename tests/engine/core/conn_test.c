/*
 * Unit tests for engine/core/conn.c: slot generations, the tagged user_data,
 * and the request state machine, driven without sockets: a real ring (whose
 * SQEs are never submitted), receive completions made up from provided
 * buffers the test fills, and a scripted handler.
 */
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

/* ---- the state machine, driven without sockets ---- */

/* What the scripted handler does, and what it saw. */
struct script {
    enum conn_verdict on_head; /* verdict of head() when not skipped */
    bool take_body;            /* head() takes the body */
    bool detach;               /* ... and reads the rest from the socket */
    enum conn_verdict on_body; /* verdict of body() */
    bool answer_in_body;       /* body() answers 413 (then CONN_ANSWERED) */
    int heads;                 /* head() calls (skipped false) */
    int skipped_heads;         /* head() calls after a skipped body */
    int bodies;                /* body() calls */
    int ends;                  /* end() calls */
    int fails;                 /* fail() calls */
    int last_err;              /* fail()'s err */
    int detached;              /* detach callbacks */
    char seen[256];            /* body bytes, in order */
    size_t nseen;
};

static struct script sc;

static void answer(struct conn *c, int status)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    char *o = conn_out_reserve(c, sizeof(resp) - 1);

    memcpy(o, resp, sizeof(resp) - 1);
    conn_out_commit(c, sizeof(resp) - 1);
    conn_answered(c, status);
}

static void on_detached(struct conn *c, int res)
{
    (void)c;
    (void)res;
    sc.detached++;
}

static enum conn_verdict t_body(struct conn *c, struct http_span body)
{
    sc.bodies++;
    assert_true(sc.nseen + body.len <= sizeof(sc.seen));
    memcpy(sc.seen + sc.nseen, body.p, body.len);
    sc.nseen += body.len;
    if (sc.answer_in_body) {
        answer(c, 413);
        return CONN_ANSWERED;
    }
    return sc.on_body;
}

static enum conn_verdict t_end(struct conn *c)
{
    sc.ends++;
    answer(c, 201);
    return CONN_ANSWERED;
}

static enum conn_verdict t_head(struct conn *c, const struct http_head *h,
                                const struct http_parser *p, bool skipped)
{
    (void)h;
    (void)p;
    if (skipped) {
        sc.skipped_heads++;
        answer(c, 200);
        return CONN_ANSWERED;
    }
    sc.heads++;
    if (sc.take_body) {
        conn_take_body(c, t_body, t_end);
        if (sc.detach)
            conn_detach_body(c, on_detached);
        return CONN_READ_BODY;
    }
    if (sc.on_head == CONN_ANSWERED)
        answer(c, 200);
    return sc.on_head;
}

static void t_fail(struct conn *c, int err, const struct http_head *h)
{
    (void)h;
    sc.fails++;
    sc.last_err = err;
    answer(c, 400);
    conn_close_after(c);
}

static const struct conn_handler t_handler = {.head = t_head, .fail = t_fail};

struct rig {
    struct cfg cfg;
    struct ring r;
    struct conn_pool *p;
    struct conn *c;
    uint16_t next_bid;
};

static int rig_setup(void **state)
{
    struct rig *g = calloc(1, sizeof(*g));

    assert_non_null(g);
    cfg_defaults(&g->cfg);
    if (ring_init(&g->r, &g->cfg, 0) < 0) {
        free(g);
        return -1;
    }
    g->p = conn_pool_new(&g->r, &t_handler, NULL);
    conn_accept(g->p, 5); /* a direct descriptor index; nothing is ever submitted on it */
    g->c = slot(g->p, 0);
    assert_int_equal(g->c->fd, 5);
    memset(&sc, 0, sizeof(sc));
    *state = g;
    return 0;
}

static int rig_teardown(void **state)
{
    struct rig *g = *state;
    struct conn *c = g->c;

    /* The connection never closes for real (no CQEs): give its buffers back to the pool. */
    while (c->fd >= 0 && c->out_first != NULL) {
        struct obuf *o = c->out_first;
        c->out_first = o->next;
        obuf_put(g->p, o);
    }
    if (c->fd >= 0)
        release_head(c);
    conn_pool_free(g->p);
    ring_fini(&g->r);
    free(g);
    return 0;
}

/* A receive completion carrying bytes, as the kernel would post it. */
static void rig_recv(struct rig *g, const char *bytes)
{
    struct io_uring_cqe cqe;
    uint16_t bid = g->next_bid++;
    size_t n = strlen(bytes);

    memcpy(buf_addr(&g->r.bufs, bid), bytes, n);
    memset(&cqe, 0, sizeof(cqe));
    cqe.res = (int32_t)n;
    cqe.flags = IORING_CQE_F_BUFFER | IORING_CQE_F_MORE | (uint32_t)bid << IORING_CQE_BUFFER_SHIFT;
    on_recv(g->p, g->c->idx, g->c->gen, &cqe);
}

/* A completion of the connection's kind with a result (a cancel, a close...). */
static void rig_cqe(struct rig *g, ring_cqe_fn fn, int res, uint32_t flags)
{
    struct io_uring_cqe cqe;

    memset(&cqe, 0, sizeof(cqe));
    cqe.res = res;
    cqe.flags = flags;
    fn(g->p, g->c->idx, g->c->gen, &cqe);
}

/* A request without a body is answered at once and the connection waits for the next. */
static void test_sm_bodiless(void **state)
{
    struct rig *g = *state;

    sc.on_head = CONN_ANSWERED;
    assert_int_equal(g->c->state, CONN_IDLE);
    rig_recv(g, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(sc.heads, 1);
    assert_int_equal(g->c->state, CONN_IDLE);
    assert_int_equal(g->c->body, BODY_DISCARD);
    assert_true(g->c->out_bytes > 0);
    assert_true(g->c->send_busy);
    assert_null(g->c->hp.head); /* the head buffer went back between requests */
}

/* CONN_SKIP_BODY: the body is skipped, then head() answers with skipped true. */
static void test_sm_skip_body(void **state)
{
    struct rig *g = *state;

    sc.on_head = CONN_SKIP_BODY;
    rig_recv(g, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
    assert_int_equal(sc.heads, 1);
    assert_int_equal(sc.skipped_heads, 0);
    assert_int_equal(g->c->body, BODY_SKIP);
    assert_int_equal(g->c->state, CONN_BODY);
    rig_recv(g, "world");
    assert_int_equal(sc.skipped_heads, 1);
    assert_int_equal(g->c->state, CONN_IDLE);
    assert_int_equal(sc.bodies, 0);
}

/*
 * A taken body: a span the handler holds (CONN_PENDING) keeps its buffer and
 * stops parsing until conn_resume(); the end comes once, after every span.
 */
static void test_sm_taken_body_held(void **state)
{
    struct rig *g = *state;

    sc.take_body = true;
    sc.on_body = CONN_PENDING;
    rig_recv(g, "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello");
    assert_int_equal(g->c->body, BODY_TAKEN);
    assert_int_equal(sc.bodies, 1);
    assert_true(g->c->waiting);
    assert_true(g->c->held > 0);
    rig_recv(g, " world"); /* queued, not parsed while the handler holds a span */
    assert_int_equal(sc.bodies, 1);
    assert_int_equal(g->c->in_count, 2);
    conn_resume(g->c);
    assert_int_equal(sc.bodies, 2);
    assert_true(g->c->waiting);
    sc.on_body = CONN_ANSWERED;
    conn_resume(g->c);
    assert_int_equal(sc.ends, 1);
    assert_int_equal(g->c->state, CONN_IDLE);
    assert_int_equal(g->c->in_count, 0);
    assert_int_equal(sc.nseen, 11);
    assert_memory_equal(sc.seen, "hello world", 11);
}

/* An answer in the middle of a body: the rest is discarded and end() never comes. */
static void test_sm_answered_mid_body(void **state)
{
    struct rig *g = *state;

    sc.take_body = true;
    sc.answer_in_body = true;
    rig_recv(g, "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(sc.bodies, 1);
    assert_true(g->c->answered);
    assert_int_equal(g->c->body, BODY_DISCARD);
    rig_recv(g, "defghij");
    assert_int_equal(sc.bodies, 1);
    assert_int_equal(sc.ends, 0);
    assert_int_equal(g->c->state, CONN_IDLE);
}

/* A handler that answers later holds back a pipelined request until it resumes. */
static void test_sm_pending_head_pipelined(void **state)
{
    struct rig *g = *state;

    sc.on_head = CONN_PENDING;
    rig_recv(g, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(sc.heads, 1);
    assert_true(g->c->waiting);
    assert_true(g->c->done_pending);
    sc.on_head = CONN_ANSWERED;
    answer(g->c, 200);
    conn_resume(g->c);
    assert_int_equal(sc.heads, 2);
    assert_false(g->c->waiting);
    assert_int_equal(g->c->state, CONN_IDLE);
}

/*
 * The handler reads the rest of the body from the socket: HANDOVER until the
 * receive has stopped and every received byte went to body(), DETACHED then;
 * conn_body_read() ends the message and end() follows.
 */
static void test_sm_detach(void **state)
{
    struct rig *g = *state;

    sc.take_body = true;
    sc.detach = true;
    sc.on_body = CONN_ANSWERED;
    rig_recv(g, "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc");
    assert_int_equal(g->c->body, BODY_HANDOVER);
    assert_int_equal(sc.bodies, 1);
    assert_true(g->c->recv_cancel); /* the multishot receive is being cancelled */
    assert_int_equal(sc.detached, 0);
    rig_cqe(g, on_recv, -ECANCELED, 0); /* the receive ends */
    assert_int_equal(sc.detached, 0);   /* its cancel has not come back yet */
    rig_cqe(g, on_done, 0, 0);
    assert_int_equal(sc.detached, 1);
    assert_int_equal(g->c->body, BODY_DETACHED);
    assert_false(g->c->recv_armed);
    /* The handler read the other 99,997 bytes; the parser learns it from conn_body_read(). */
    conn_body_read(g->c);
    assert_int_equal(sc.ends, 1);
    assert_int_equal(g->c->state, CONN_IDLE);
    assert_true(g->c->recv_armed); /* receiving again for the next request */
}

/* A malformed request goes to fail() and the connection closes after the answer. */
static void test_sm_malformed(void **state)
{
    struct rig *g = *state;

    rig_recv(g, "GET / HTTP/1.1\r\nHost x\r\n\r\n");
    assert_int_equal(sc.fails, 1);
    assert_int_equal(sc.last_err, -EBADMSG);
    assert_int_equal(sc.heads, 0);
    assert_true(g->c->close_after);
}

/* A pinned connection is not freed when it closes until the pin is released. */
static void test_sm_pin(void **state)
{
    struct rig *g = *state;
    struct conn *c = g->c;
    uint64_t ref = conn_ref(c);

    conn_pin(c);
    conn_close(c);
    assert_int_equal(c->state, CONN_CLOSING);
    rig_cqe(g, on_recv, -ECANCELED, 0); /* the receive, cancelled */
    rig_cqe(g, on_done, 0, 0);          /* the cancel itself */
    assert_int_equal(c->inflight, 0);
    assert_false(c->closed); /* pinned: the descriptor stays */
    assert_null(conn_unpin(g->p, ref));
    assert_true(c->closed); /* its close is submitted now */
    rig_cqe(g, on_done, 0, 0);
    assert_int_equal(c->fd, -1); /* retired */
    assert_null(conn_unpin(g->p, ref));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_data_round_trip),
        cmocka_unit_test(test_stale_ref_after_reuse),
        cmocka_unit_test(test_retired_slot),
        cmocka_unit_test_setup_teardown(test_sm_bodiless, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_skip_body, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_taken_body_held, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_answered_mid_body, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_pending_head_pipelined, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_detach, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_malformed, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_sm_pin, rig_setup, rig_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for engine/db/limit.c: leases, coalescing, the idle return,
 * the local fallback. Redis is faked: the calls queue up and a test
 * answers them with a C model of the script (bucket.c's sums), so what is
 * checked is the worker's side, with a Redis that behaves.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The Redis slice, renamed: the fakes below stand in for it. */
#define redis_script_init fake_script_init
#define redis_up fake_up
#define redis_pool_on_state fake_on_state
#define redis_eval fake_eval
#define redis_cmd fake_cmd
#define redis_reply_int fake_reply_int
#define redis_reply_at fake_reply_at
#define redis_reply_len fake_reply_len
#define redis_reply_is_error fake_reply_is_error

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/db/limit.c"

/* A reply: an integer, or an array of up to 5 of them. */
struct redisReply {
    bool array;
    long long v;
    size_t n;
    struct redisReply *el;
};

/* A call sent and not answered yet. */
struct call {
    redis_cb cb;
    void *ud;
    char key[KEY_MAX];
    char op[8];
    uint32_t need, want, ul, gl;
};

#define CALLS_MAX 64
#define MODEL_USERS 8

static struct {
    bool up;
    unsigned evals; /* every EVALSHA, answered or not */
    unsigned cmds;  /* plain commands */
    struct call q[CALLS_MAX];
    unsigned nq;
    double now; /* the model's clock (ms) */
    struct bucket global;
    char users[MODEL_USERS][KEY_MAX];
    struct bucket ub[MODEL_USERS];
} fake;

void fake_script_init(struct redis_script *s)
{
    (void)s;
}

bool fake_up(const struct redis_pool *p)
{
    (void)p;
    return fake.up;
}

void fake_on_state(struct redis_pool *p, redis_state_fn fn, void *ctx)
{
    (void)p;
    (void)fn;
    (void)ctx;
}

int fake_cmd(struct redis_pool *p, redis_cb cb, void *ud, uint64_t tag, const char *fmt, ...)
{
    (void)p;
    (void)cb;
    (void)ud;
    (void)tag;
    (void)fmt;
    fake.cmds++;
    return fake.up ? 0 : -ENOTCONN;
}

int fake_eval(struct redis_pool *p, struct redis_script *s, redis_cb cb, void *ud, uint64_t tag,
              int nkeys, int argc, const char *const *argv, const size_t *lens)
{
    struct call *c;

    (void)p;
    (void)tag;
    (void)nkeys;
    (void)lens;
    if (!fake.up)
        return -ENOTCONN;
    fake.evals++;
    if (s != &lease_script)
        return 0; /* heartbeats: not modelled */
    assert_int_equal(argc, 7);
    assert_true(fake.nq < CALLS_MAX);
    c = &fake.q[fake.nq++];
    c->cb = cb;
    c->ud = ud;
    snprintf(c->key, sizeof(c->key), "%s", argv[0]);
    snprintf(c->op, sizeof(c->op), "%s", argv[2]);
    c->need = (uint32_t)atoi(argv[3]);
    c->want = (uint32_t)atoi(argv[4]);
    c->ul = (uint32_t)atoi(argv[5]);
    c->gl = (uint32_t)atoi(argv[6]);
    return 0;
}

bool fake_reply_int(const struct redisReply *r, long long *v)
{
    if (r == NULL || r->array)
        return false;
    *v = r->v;
    return true;
}

const struct redisReply *fake_reply_at(const struct redisReply *r, size_t i)
{
    return r != NULL && r->array && i < r->n ? &r->el[i] : NULL;
}

size_t fake_reply_len(const struct redisReply *r)
{
    return r != NULL && r->array ? r->n : 0;
}

bool fake_reply_is_error(const struct redisReply *r)
{
    (void)r;
    return false;
}

static struct bucket *model_user(const char *key)
{
    unsigned i;

    for (i = 0; i < MODEL_USERS; i++) {
        if (strcmp(fake.users[i], key) == 0)
            return &fake.ub[i];
        if (fake.users[i][0] == '\0') {
            snprintf(fake.users[i], sizeof(fake.users[i]), "%s", key);
            return &fake.ub[i];
        }
    }
    fail();
    return NULL;
}

/* The script, in C: take or give, as limit.c's Lua does. */
static void model(const struct call *c, long long out[5])
{
    struct bucket *u = model_user(c->key);
    uint32_t ufit = bucket_fit(u, fake.now, c->ul, c->want);
    uint32_t gfit = bucket_fit(&fake.global, fake.now, c->gl, c->want);
    uint32_t j = ufit < gfit ? ufit : gfit;
    bool user_tighter;

    memset(out, 0, 5 * sizeof(out[0]));
    if (strcmp(c->op, "give") == 0) {
        bucket_credit(u, fake.now, c->ul, c->want);
        bucket_credit(&fake.global, fake.now, c->gl, c->want);
        return;
    }
    if (j < c->need) {
        uint64_t ur = bucket_retry_ms(u, fake.now, c->ul, c->need);
        uint64_t gr = bucket_retry_ms(&fake.global, fake.now, c->gl, c->need);

        user_tighter = !(c->gl != 0 && gr > ur);
        out[1] = user_tighter ? 0 : 1;
        out[2] = (long long)(user_tighter ? ur : gr);
        out[3] = user_tighter ? bucket_fit(u, fake.now, c->ul, c->ul)
                              : bucket_fit(&fake.global, fake.now, c->gl, c->gl);
        return;
    }
    bucket_debit(u, fake.now, c->ul, j);
    bucket_debit(&fake.global, fake.now, c->gl, j);
    out[0] = j;
    out[3] = bucket_fit(u, fake.now, c->ul, c->ul);
}

/* Answer every queued call in order (err: fail them instead). */
static void answer_all(int err)
{
    while (fake.nq > 0) {
        struct call c = fake.q[0];
        struct redisReply el[5];
        struct redisReply arr = {true, 0, 5, el};
        long long out[5];
        unsigned i;

        memmove(&fake.q[0], &fake.q[1], (fake.nq - 1) * sizeof(fake.q[0]));
        fake.nq--;
        model(&c, out);
        for (i = 0; i < 5; i++)
            el[i] = (struct redisReply){false, out[i], 0, NULL};
        if (c.cb != NULL)
            c.cb(c.ud, 0, err != 0 ? NULL : &arr, err);
    }
}

/* A request of the test: its wait, and what it was told. */
struct req {
    struct lim_wait w;
    bool done;
    struct lim_verdict v;
};

static void on_verdict(struct lim_wait *w, const struct lim_verdict *v)
{
    struct req *r = (struct req *)w;

    assert_false(r->done);
    r->done = true;
    r->v = *v;
}

/* Take n for user: decided now (done set) or left waiting. */
static void take(struct lim *l, struct req *r, const char *user, uint32_t n)
{
    memset(r, 0, sizeof(*r));
    r->done = lim_take(l, user, n, on_verdict, &r->w, &r->v);
}

struct world {
    struct cfg cfg;
    struct ring ring[2];
    struct lim *lim[2];
};

static void setup_world(struct world *w, uint32_t ulimit, uint32_t glimit)
{
    unsigned i;

    memset(&fake, 0, sizeof(fake));
    fake.up = true;
    fake.now = 1.7e12;
    memset(w, 0, sizeof(*w));
    w->cfg.upload_rate_limit = ulimit;
    w->cfg.global_rate_limit = glimit;
    snprintf(w->cfg.instance_id, sizeof(w->cfg.instance_id), "test:1");
    if (proc.slots == NULL)
        lim_setup(&w->cfg);
    memset(proc.slots, 0, LOCAL_SLOTS * sizeof(*proc.slots));
    proc.global = (struct bucket){0, 0};
    proc.instances = 1;
    for (i = 0; i < 2; i++) {
        tmr_heap_init(&w->ring[i].timers);
        w->ring[i].now_ms = 1000;
        w->ring[i].id = i;
        w->lim[i] = lim_new(&w->ring[i], &w->cfg, NULL, i);
    }
}

static void free_world(struct world *w)
{
    unsigned i;

    for (i = 0; i < 2; i++) {
        lim_stop(w->lim[i]);
        lim_free(w->lim[i]);
        tmr_heap_free(&w->ring[i].timers);
    }
}

/* Limit 10, two workers alternating: exactly 10 allowed, each decided in Redis. */
static void test_exact_one_by_one(void **state)
{
    struct world w;
    struct req r;
    unsigned allowed = 0;
    unsigned i;

    (void)state;
    setup_world(&w, 10, 1000);
    assert_int_equal(w.lim[0]->block, 1);
    for (i = 0; i < 16; i++) {
        struct lim *l = w.lim[i % 2];

        take(l, &r, "alice", 1);
        assert_false(r.done);
        flush(l);
        answer_all(0);
        assert_true(r.done);
        allowed += r.v.allowed;
        if (!r.v.allowed) {
            assert_int_equal(r.v.scope, LIM_USER);
            assert_int_equal(r.v.limit, 10);
            assert_int_equal(r.v.remaining, 0);
            assert_int_equal(r.v.retry_s, 6); /* one permit per 6 s */
        }
    }
    assert_int_equal(allowed, 10);
    assert_int_equal(fake.evals, 16);
    /* Another user is not limited by alice. */
    take(w.lim[0], &r, "bob", 1);
    flush(w.lim[0]);
    answer_all(0);
    assert_true(r.done && r.v.allowed);
    assert_int_equal(r.v.remaining, 9);
    free_world(&w);
}

/* The global limit binds across users. */
static void test_global(void **state)
{
    struct world w;
    struct req r;
    unsigned allowed = 0;
    unsigned i;
    char user[16];

    (void)state;
    setup_world(&w, 100, 5);
    for (i = 0; i < 8; i++) {
        snprintf(user, sizeof(user), "u%u", i % 4);
        take(w.lim[i % 2], &r, user, 1);
        flush(w.lim[i % 2]);
        answer_all(0);
        assert_true(r.done);
        allowed += r.v.allowed;
        if (!r.v.allowed)
            assert_int_equal(r.v.scope, LIM_GLOBAL);
    }
    assert_int_equal(allowed, 5);
    free_world(&w);
}

/* Waiters of one user in one turn share one call; what does not fit is refused. */
static void test_coalesce(void **state)
{
    struct world w;
    struct req r[4];
    unsigned i;
    unsigned allowed = 0;

    (void)state;
    setup_world(&w, 3, 0);
    for (i = 0; i < 4; i++)
        take(w.lim[0], &r[i], "carol", 1);
    flush(w.lim[0]);
    assert_int_equal(fake.evals, 1);
    assert_int_equal(fake.q[0].want, 4);
    answer_all(0);
    /* 3 granted; the fourth asks again next turn and is refused there. */
    flush(w.lim[0]);
    assert_int_equal(fake.evals, 2);
    answer_all(0);
    for (i = 0; i < 4; i++) {
        assert_true(r[i].done);
        allowed += r[i].v.allowed;
    }
    assert_int_equal(allowed, 3);
    assert_false(r[3].v.allowed);
    free_world(&w);
}

/* High limits: one call buys a block; the block is used with no call; idle permits go back. */
static void test_lease_block(void **state)
{
    struct world w;
    struct req r;
    unsigned i;

    (void)state;
    setup_world(&w, 64000, 1000000);
    assert_int_equal(w.lim[0]->block, 256);
    take(w.lim[0], &r, "dave", 1);
    flush(w.lim[0]);
    answer_all(0);
    assert_true(r.done && r.v.allowed);
    assert_int_equal(w.ring[0].met.rl_leased, 256);
    for (i = 0; i < 255; i++) {
        take(w.lim[0], &r, "dave", 1);
        assert_true(r.done && r.v.allowed);
    }
    assert_int_equal(fake.evals, 1);
    /* Held permits used up: the next one asks again. */
    take(w.lim[0], &r, "dave", 1);
    assert_false(r.done);
    flush(w.lim[0]);
    answer_all(0);
    assert_true(r.done && r.v.allowed);
    /* 255 unused; a second idle later they go back. */
    w.ring[0].now_ms += LEASE_IDLE_MS;
    on_sweep(&w.lim[0]->sweep);
    assert_int_equal(w.ring[0].met.rl_returned, 255);
    answer_all(0);
    assert_int_equal(bucket_fit(model_user("ringup:rl:u:dave"), fake.now, 64000, 64000),
                     64000 - 257);
    assert_int_equal(w.lim[0]->nusers, 0);
    free_world(&w);
}

/* Redis down: each process takes its share (limit / instances seen). */
static void test_fallback_share(void **state)
{
    struct world w;
    struct req r;
    unsigned allowed = 0;
    unsigned i;

    (void)state;
    setup_world(&w, 10, 0);
    fake.up = false;
    proc.instances = 2;
    for (i = 0; i < 8; i++) {
        take(w.lim[i % 2], &r, "erin", 1);
        assert_true(r.done);
        allowed += r.v.allowed;
        if (!r.v.allowed) {
            assert_int_equal(r.v.limit, 5);
            assert_int_equal(r.v.retry_s, 12); /* 5 a minute: one per 12 s */
        }
    }
    assert_int_equal(allowed, 5);
    assert_int_equal(w.ring[0].met.rl_local + w.ring[1].met.rl_local, 8);
    assert_int_equal(fake.evals, 0);
    free_world(&w);
}

/* A call that fails (connection lost): its waiters are decided locally, none is lost. */
static void test_call_fails(void **state)
{
    struct world w;
    struct req r[2];

    (void)state;
    setup_world(&w, 10, 0);
    take(w.lim[0], &r[0], "frank", 1);
    take(w.lim[0], &r[1], "frank", 1);
    flush(w.lim[0]);
    answer_all(-ECONNABORTED);
    assert_true(r[0].done && r[0].v.allowed);
    assert_true(r[1].done && r[1].v.allowed);
    assert_int_equal(w.ring[0].met.rl_local, 2);
    free_world(&w);
}

/* Permits given back (a form refused later) go back to Redis at once: others see them. */
static void test_give(void **state)
{
    struct world w;
    struct req r;
    unsigned i;

    (void)state;
    setup_world(&w, 10, 0);
    for (i = 0; i < 10; i++) {
        take(w.lim[0], &r, "gina", 1);
        flush(w.lim[0]);
        answer_all(0);
        assert_true(r.done && r.v.allowed);
    }
    lim_give(w.lim[0], "gina", 2);
    assert_int_equal(fake.nq, 1);
    answer_all(0);
    take(w.lim[1], &r, "gina", 2);
    flush(w.lim[1]);
    answer_all(0);
    assert_true(r.done && r.v.allowed);
    take(w.lim[1], &r, "gina", 1);
    flush(w.lim[1]);
    answer_all(0);
    assert_true(r.done && !r.v.allowed);
    /* Redis down: back to the local buckets. */
    fake.up = false;
    take(w.lim[0], &r, "gina", 10);
    assert_true(r.done && r.v.allowed);
    lim_give(w.lim[0], "gina", 3);
    take(w.lim[0], &r, "gina", 3);
    assert_true(r.done && r.v.allowed);
    take(w.lim[0], &r, "gina", 1);
    assert_true(r.done && !r.v.allowed);
    free_world(&w);
}

/* A refusal for a form's further files does not refuse a single upload that fits. */
static void test_refusal_by_need(void **state)
{
    struct world w;
    struct req r[3];

    (void)state;
    setup_world(&w, 3, 0);
    take(w.lim[0], &r[0], "hal", 2);
    flush(w.lim[0]);
    answer_all(0);
    assert_true(r[0].done && r[0].v.allowed);
    take(w.lim[0], &r[1], "hal", 2); /* 1 left: does not fit */
    flush(w.lim[0]);
    take(w.lim[0], &r[2], "hal", 1); /* comes while the call is out */
    answer_all(0);
    assert_true(r[1].done && !r[1].v.allowed);
    assert_int_equal(r[1].v.remaining, 1);
    assert_false(r[2].done);
    flush(w.lim[0]);
    answer_all(0);
    assert_true(r[2].done && r[2].v.allowed);
    free_world(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_one_by_one),
        cmocka_unit_test(test_global),
        cmocka_unit_test(test_coalesce),
        cmocka_unit_test(test_lease_block),
        cmocka_unit_test(test_fallback_share),
        cmocka_unit_test(test_call_fails),
        cmocka_unit_test(test_give),
        cmocka_unit_test(test_refusal_by_need),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for engine/db/redis.c against the real Redis at $REDIS_URL (the
 * devstack's), driven by a real ring on the test thread; the TCP, password
 * and db cases run against a redis-server this test starts on 127.0.0.1.
 * Without REDIS_URL every test fails: a test that needs Redis never skips.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/db/redis.c"
#include "engine/db/rlock.h"

#define NRES 256      /* answers a test can collect, by tag */
#define WAIT_MS 10000 /* upper bound of any wait: a broken module fails, it does not hang */

struct res {
    int calls;       /* times the callback ran for this tag (must end at 1) */
    int err;         /* its err */
    bool is_err;     /* a Redis error reply */
    bool is_int;     /* an integer reply */
    long long ival;  /* the integer */
    size_t len;      /* the string's length */
    char str[512];   /* the string (status, bulk, error), truncated */
    size_t elements; /* an array's length */
};

static struct res res[NRES];
static int answered;

struct rig {
    struct cfg cfg;
    struct ring r;
    struct redis_pool *p;
    int ups;   /* state hook: times told up */
    int downs; /* times told down */
};

static void on_answer(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct res *x = &res[tag % NRES];
    const char *s;
    size_t len = 0;

    (void)ud;
    x->calls++;
    x->err = err;
    x->is_err = redis_reply_is_error(reply);
    x->is_int = redis_reply_int(reply, &x->ival);
    s = redis_reply_str(reply, &len);
    x->len = len;
    if (s != NULL)
        memcpy(x->str, s, len < sizeof(x->str) ? len : sizeof(x->str));
    x->elements = redis_reply_len(reply);
    answered++;
}

static void on_state(void *ctx, bool up)
{
    struct rig *g = ctx;

    if (up)
        g->ups++;
    else
        g->downs++;
}

static void reset(void)
{
    memset(res, 0, sizeof(res));
    answered = 0;
}

/* A rig on url (NULL: $REDIS_URL) with the given command timeout. */
static struct rig *rig_new(const char *url, uint32_t timeout_ms)
{
    struct rig *g = calloc(1, sizeof(*g));
    char err[256];

    assert_non_null(g);
    if (url == NULL)
        url = getenv("REDIS_URL");
    if (url == NULL || url[0] == '\0')
        fail_msg("REDIS_URL is not set: run under tools/run-tests or the devstack's env");
    cfg_defaults(&g->cfg);
    snprintf(g->cfg.redis_url, sizeof(g->cfg.redis_url), "%s", url);
    g->cfg.redis_command_timeout = timeout_ms;
    g->cfg.redis_pool_min = 1;
    g->cfg.redis_pool_max = 2;
    g->cfg.redis_retry_delay = 100;
    g->cfg.redis_retry_attempts = 3;
    if (redis_setup(&g->cfg, err, sizeof(err)) != 0)
        fail_msg("redis_setup: %s", err);
    assert_int_equal(ring_init(&g->r, &g->cfg, 0), 0);
    g->p = redis_pool_new(&g->r, &g->cfg, 1);
    redis_pool_on_state(g->p, on_state, g);
    reset();
    return g;
}

static void turn(struct rig *g)
{
    assert_int_equal(ring_turn(&g->r, 20), 0);
}

/* Turn the ring until *flag-like cond holds or WAIT_MS passed; returns cond. */
#define SPIN(g, cond)                                                                              \
    ({                                                                                             \
        uint64_t until_ = tmr_now_ms() + WAIT_MS;                                                  \
        while (!(cond) && tmr_now_ms() < until_)                                                   \
            turn(g);                                                                               \
        (cond);                                                                                    \
    })

static void rig_free(struct rig *g)
{
    redis_pool_stop(g->p);
    assert_true(SPIN(g, redis_pool_stopped(g->p)));
    /* Let the poll removals reach the kernel before the ring goes. */
    turn(g);
    redis_pool_free(g->p);
    ring_fini(&g->r);
    free(g);
}

/* Send a formatted command as tag and wait for its one answer. */
static struct res *ask(struct rig *g, uint64_t tag, const char *fmt, ...)
{
    va_list ap;
    int ret = -ENOTCONN;
    struct rconn *c = pick(g->p);

    assert_non_null(c);
    va_start(ap, fmt);
    {
        struct rcmd *q = cmd_new(g->p, on_answer, NULL, tag);
        if (redisvAsyncCommand(c->ac, on_reply, q, fmt, ap) == REDIS_OK) {
            fifo_push(c, q);
            ret = 0;
        } else {
            cmd_put(g->p, q);
        }
    }
    va_end(ap);
    assert_int_equal(ret, 0);
    assert_true(SPIN(g, res[tag].calls > 0));
    return &res[tag];
}

static void test_commands(void **state)
{
    struct rig *g = rig_new(NULL, 5000);
    static const char bin[] = "a\0b\r\nc$3\r\n";
    const char *argv[3] = {"SET", "ringup:test:bin", bin};
    size_t lens[3] = {3, 15, sizeof(bin) - 1};
    const char *gv[2] = {"GET", "ringup:test:bin"};
    size_t gl[2] = {3, 15};
    struct res *x;

    (void)state;
    assert_false(redis_up(g->p));
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 0, "PING"), -ENOTCONN);
    assert_true(SPIN(g, redis_up(g->p)));
    assert_int_equal(g->ups, 1);

    assert_int_equal(redis_cmdv(g->p, on_answer, NULL, 1, 3, argv, lens), 0);
    assert_int_equal(redis_cmdv(g->p, on_answer, NULL, 2, 2, gv, gl), 0);
    /* Never answered from inside the call. */
    assert_int_equal(res[1].calls, 0);
    assert_true(SPIN(g, answered == 2));
    assert_int_equal(res[1].err, 0);
    assert_string_equal(res[1].str, "OK");
    assert_int_equal(res[2].len, sizeof(bin) - 1);
    assert_memory_equal(res[2].str, bin, sizeof(bin) - 1);

    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 3, "DEL %s", "ringup:test:n"), 0);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 4, "INCRBY %s %d", "ringup:test:n", 41), 0);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 5, "NOSUCHCOMMAND"), 0);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 6, "MGET %s %s", "ringup:test:n", "nokey"),
                     0);
    assert_int_equal(redis_cmd(g->p, NULL, NULL, 7, "DEL %s", "ringup:test:bin"), 0);
    assert_true(SPIN(g, answered == 6));
    assert_true(res[4].is_int);
    assert_int_equal(res[4].ival, 41);
    assert_true(res[5].is_err);
    assert_int_equal(res[5].err, 0);
    assert_int_equal(res[6].elements, 2);
    assert_int_equal(res[7].calls, 0); /* fire-and-forget: no callback */
    x = ask(g, 8, "EXISTS %s", "ringup:test:bin");
    assert_int_equal(x->ival, 0);
    assert_true(g->r.met.redis.errors[MET_RE_REPLY] >= 1);
    assert_true(g->r.met.redis.commands >= 7);
    assert_int_equal(redis_cmdv(g->p, on_answer, NULL, 9, 0, argv, lens), -E2BIG);
    rig_free(g);
}

/* A turn's commands leave in one write (two when the first turn's POLLOUT raced). */
static void test_pipeline(void **state)
{
    struct rig *g = rig_new(NULL, 5000);
    uint64_t writes;
    int i;

    (void)state;
    assert_true(SPIN(g, redis_up(g->p)));
    ask(g, 0, "DEL %s", "ringup:test:pipe");
    reset();
    writes = g->r.met.redis.writes;
    for (i = 0; i < 100; i++)
        assert_int_equal(redis_cmd(g->p, on_answer, NULL, (uint64_t)i, "INCR ringup:test:pipe"), 0);
    assert_true(SPIN(g, answered == 100));
    for (i = 0; i < 100; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].ival, i + 1); /* in order */
    }
    assert_true(g->r.met.redis.writes - writes >= 1);
    assert_true(g->r.met.redis.writes - writes <= 2);
    rig_free(g);
}

/* Past REDIS_SPILL commands in flight on the only connection, the slice opens another. */
static void test_spill(void **state)
{
    struct rig *g = rig_new(NULL, 5000);
    int n = REDIS_SPILL + 100;
    int i;

    (void)state;
    assert_true(SPIN(g, redis_up(g->p)));
    assert_int_equal(g->p->nopen, 1);
    reset();
    for (i = 0; i < n; i++)
        assert_int_equal(redis_cmd(g->p, on_answer, NULL, (uint64_t)i % NRES, "PING"), 0);
    assert_true(SPIN(g, answered == n));
    assert_true(SPIN(g, g->p->nready == 2));
    assert_int_equal(g->r.met.redis.open, 2);
    assert_int_equal(g->r.met.redis.inflight, 0);
    /* No more than the slice's max (2), however backed up. */
    for (i = 0; i < 2 * n; i++)
        assert_int_equal(redis_cmd(g->p, NULL, NULL, 0, "PING"), 0);
    assert_true(SPIN(g, g->r.met.redis.inflight == 0));
    assert_int_equal(g->p->nopen, 2);
    rig_free(g);
}

static struct redis_script echo = {
    .name = "echo", .src = "return ARGV[1] .. ':' .. KEYS[1] .. ':test-script'", .sha = ""};

static void test_noscript(void **state)
{
    struct rig *g = rig_new(NULL, 5000);
    const char *argv[2] = {"k1", "v1"};
    size_t lens[2] = {2, 2};
    uint64_t noscript;

    (void)state;
    redis_script_init(&echo);
    assert_int_equal(strlen(echo.sha), 40);
    assert_true(SPIN(g, redis_up(g->p)));
    ask(g, 0, "SCRIPT FLUSH");
    noscript = g->r.met.redis.noscript;
    assert_int_equal(redis_eval(g->p, &echo, on_answer, NULL, 1, 1, 2, argv, lens), 0);
    assert_true(SPIN(g, res[1].calls > 0));
    assert_int_equal(res[1].calls, 1);
    assert_int_equal(res[1].err, 0);
    assert_string_equal(res[1].str, "v1:k1:test-script");
    assert_int_equal(g->r.met.redis.noscript, noscript + 1);
    /* Loaded now: EVALSHA answers at once. */
    assert_int_equal(redis_eval(g->p, &echo, on_answer, NULL, 2, 1, 2, argv, lens), 0);
    assert_true(SPIN(g, res[2].calls > 0));
    assert_string_equal(res[2].str, "v1:k1:test-script");
    assert_int_equal(g->r.met.redis.noscript, noscript + 1);
    rig_free(g);
}

/* CLIENT PAUSE longer than the timeout: -ETIMEDOUT, once, then the pool recovers. */
static void test_timeout(void **state)
{
    struct rig *g = rig_new(NULL, 300);
    struct res *x;
    int tries;

    (void)state;
    assert_true(SPIN(g, redis_up(g->p)));
    x = ask(g, 0, "CLIENT PAUSE %d ALL", 1500);
    assert_int_equal(x->err, 0);
    assert_false(x->is_err);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 1, "PING"), 0);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 2, "PING"), 0);
    assert_true(SPIN(g, res[1].calls > 0 && res[2].calls > 0));
    assert_int_equal(res[1].err, -ETIMEDOUT);
    assert_int_equal(res[2].err, -ETIMEDOUT);
    assert_int_equal(res[1].calls, 1);
    assert_int_equal(res[2].calls, 1);
    assert_true(g->r.met.redis.errors[MET_RE_TIMEOUT] >= 2);
    /* Recovery: a reconnect, and a PING answered once the pause is over. */
    for (tries = 0; tries < 20; tries++) {
        uint64_t tag = 10 + (uint64_t)tries;
        assert_true(SPIN(g, redis_up(g->p)));
        if (redis_cmd(g->p, on_answer, NULL, tag, "PING") != 0)
            continue;
        assert_true(SPIN(g, res[tag].calls > 0));
        if (res[tag].err == 0)
            break;
        assert_int_equal(res[tag].err, -ETIMEDOUT);
    }
    assert_true(tries < 20);
    assert_string_equal(res[10 + tries].str, "PONG");
    assert_true(g->r.met.redis.reconnects >= 1);
    rig_free(g);
}

/* CLIENT KILL of our own connection: the hooks hear down then up, commands go on. */
static void test_reconnect(void **state)
{
    struct rig *g = rig_new(NULL, 5000);
    struct res *x;
    long long id;

    (void)state;
    assert_true(SPIN(g, redis_up(g->p)));
    x = ask(g, 0, "CLIENT ID");
    assert_true(x->is_int);
    id = x->ival;
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 1, "CLIENT KILL ID %lld SKIPME no", id), 0);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 2, "PING"), 0);
    assert_true(SPIN(g, res[1].calls > 0 && res[2].calls > 0));
    assert_int_equal(res[1].calls, 1);
    assert_int_equal(res[2].calls, 1);
    /* Whether Redis ran the PING behind the kill is its business; it is answered once. */
    assert_true(res[2].err == 0 || res[2].err == -ECONNABORTED);
    assert_true(SPIN(g, g->downs == 1 && redis_up(g->p)));
    assert_int_equal(g->ups, 2);
    x = ask(g, 3, "PING");
    assert_int_equal(x->err, 0);
    assert_string_equal(x->str, "PONG");
    assert_true(g->r.met.redis.errors[MET_RE_CONN] >= 1);
    rig_free(g);
}

/* Stopping fails what is in flight with -ESHUTDOWN, once each, and refuses more. */
static void test_stop(void **state)
{
    struct rig *g = rig_new(NULL, 5000);
    int i;

    (void)state;
    assert_true(SPIN(g, redis_up(g->p)));
    for (i = 0; i < 10; i++)
        assert_int_equal(redis_cmd(g->p, on_answer, NULL, (uint64_t)i, "PING"), 0);
    redis_pool_stop(g->p);
    assert_true(redis_pool_stopped(g->p));
    assert_int_equal(answered, 10);
    for (i = 0; i < 10; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].err, -ESHUTDOWN);
    }
    assert_false(redis_up(g->p));
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 20, "PING"), -ESHUTDOWN);
    assert_int_equal(g->downs, 1);
    rig_free(g);
}

/* ---- locks ---- */

struct lock_res {
    int calls;
    int result;
};

static void on_lock(void *ud, int result)
{
    struct lock_res *x = ud;

    x->calls++;
    x->result = result;
}

/* Run one lock operation and wait for its result. */
static int lock_op(struct rig *g, struct rlock *l, int (*op)(struct rlock *, rlock_cb, void *))
{
    struct lock_res x = {0, 0};

    assert_int_equal(op(l, on_lock, &x), 0);
    assert_true(SPIN(g, x.calls > 0));
    assert_int_equal(x.calls, 1);
    assert_true(SPIN(g, rlock_idle(l)));
    return x.result;
}

static void test_locks(void **state)
{
    static const char key[] = "ringup:test:lock";
    struct rig *g = rig_new(NULL, 5000);
    struct rlock a;
    struct rlock b;
    struct res *x;

    (void)state;
    rlock_setup();
    assert_true(SPIN(g, redis_up(g->p)));
    ask(g, 0, "DEL %s", key);
    assert_int_equal(rlock_init(&a, g->p, &g->r, key, sizeof(key) - 1, 5000), 0);
    assert_int_equal(rlock_init(&b, g->p, &g->r, key, sizeof(key) - 1, 5000), 0);

    /* One owner at a time; the other can neither release nor extend it. */
    assert_int_equal(lock_op(g, &a, rlock_acquire), RLOCK_HELD);
    assert_int_equal(lock_op(g, &b, rlock_acquire), RLOCK_NOT_HELD);
    assert_int_equal(lock_op(g, &b, rlock_release), RLOCK_NOT_HELD);
    assert_int_equal(lock_op(g, &b, rlock_extend), RLOCK_NOT_HELD);
    assert_int_equal(lock_op(g, &a, rlock_extend), RLOCK_HELD);
    x = ask(g, 1, "GET %s", key);
    assert_int_equal(x->len, RLOCK_OWNER_LEN);
    assert_memory_equal(x->str, a.owner, RLOCK_OWNER_LEN);
    assert_string_not_equal(a.owner, b.owner);
    /* Release frees it for the next owner. */
    assert_int_equal(lock_op(g, &a, rlock_release), RLOCK_HELD);
    assert_int_equal(lock_op(g, &b, rlock_acquire), RLOCK_HELD);
    assert_int_equal(lock_op(g, &b, rlock_release), RLOCK_HELD);

    /* A stale owner: a's lock expired and b took it; a cannot release or extend b's. */
    a.ttl_ms = 100;
    assert_int_equal(lock_op(g, &a, rlock_acquire), RLOCK_HELD);
    {
        uint64_t until = tmr_now_ms() + 300;
        while (tmr_now_ms() < until)
            turn(g);
    }
    assert_int_equal(lock_op(g, &b, rlock_acquire), RLOCK_HELD);
    assert_int_equal(lock_op(g, &a, rlock_release), RLOCK_NOT_HELD);
    assert_int_equal(lock_op(g, &a, rlock_extend), RLOCK_NOT_HELD);
    x = ask(g, 2, "GET %s", key);
    assert_memory_equal(x->str, b.owner, RLOCK_OWNER_LEN);
    assert_int_equal(lock_op(g, &b, rlock_release), RLOCK_HELD);
    rig_free(g);
}

/* The keep-alive holds a lock well past its ttl; release ends it. */
static void test_lock_keepalive(void **state)
{
    static const char key[] = "ringup:test:lock:ka";
    struct rig *g = rig_new(NULL, 5000);
    struct lock_res lost = {0, 0};
    struct rlock a;
    struct rlock b;
    struct res *x;
    uint64_t until;

    (void)state;
    rlock_setup();
    assert_true(SPIN(g, redis_up(g->p)));
    ask(g, 0, "DEL %s", key);
    assert_int_equal(rlock_init(&a, g->p, &g->r, key, sizeof(key) - 1, 300), 0);
    assert_int_equal(rlock_init(&b, g->p, &g->r, key, sizeof(key) - 1, 300), 0);
    assert_int_equal(lock_op(g, &a, rlock_acquire), RLOCK_HELD);
    rlock_keepalive(&a, on_lock, &lost);
    until = tmr_now_ms() + 1200; /* four ttls */
    while (tmr_now_ms() < until)
        turn(g);
    assert_int_equal(lost.calls, 0);
    assert_int_equal(lock_op(g, &b, rlock_acquire), RLOCK_NOT_HELD);
    x = ask(g, 1, "GET %s", key);
    assert_memory_equal(x->str, a.owner, RLOCK_OWNER_LEN);
    assert_int_equal(lock_op(g, &a, rlock_release), RLOCK_HELD);
    x = ask(g, 2, "EXISTS %s", key);
    assert_int_equal(x->ival, 0);
    assert_true(SPIN(g, rlock_idle(&a)));
    rig_free(g);
}

/* ---- TCP with a password and a db, on a redis-server of our own ---- */

static pid_t server_pid;
static int server_port;

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool accepts(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

    if (fd >= 0)
        close(fd);
    return ok;
}

static int server_start(void **state)
{
    char port[16];
    int i;

    (void)state;
    server_port = free_port();
    snprintf(port, sizeof(port), "%d", server_port);
    server_pid = fork();
    if (server_pid < 0)
        return -1;
    if (server_pid == 0) {
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", port,
               "--requirepass", "s3cret", "--save", "", "--appendonly", "no", "--loglevel",
               "warning", (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 500 && !accepts(server_port); i++)
        usleep(10000);
    return accepts(server_port) ? 0 : -1;
}

static int server_stop(void **state)
{
    (void)state;
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    return 0;
}

static void test_tcp_auth_db(void **state)
{
    char url[128];
    struct rig *g;
    struct res *x;

    (void)state;
    snprintf(url, sizeof(url), "redis://:s3cret@127.0.0.1:%d/3", server_port);
    g = rig_new(url, 5000);
    assert_true(SPIN(g, redis_up(g->p)));
    x = ask(g, 0, "CLIENT INFO");
    assert_int_equal(x->err, 0);
    assert_non_null(strstr(x->str, " db=3 "));
    rig_free(g);

    /* An ACL user and its password. */
    snprintf(url, sizeof(url), "redis://default:s3cret@localhost:%d/2", server_port);
    g = rig_new(url, 5000);
    assert_true(SPIN(g, redis_up(g->p)));
    x = ask(g, 0, "CLIENT INFO");
    assert_non_null(strstr(x->str, " db=2 "));
    assert_non_null(strstr(x->str, " user=default "));
    rig_free(g);
}

static void test_tcp_wrong_password(void **state)
{
    char url[128];
    struct rig *g;
    uint64_t until;

    (void)state;
    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d", server_port);
    g = rig_new(url, 5000);
    /* Several attempts (100 ms apart) come and go; none is ever ready. */
    until = tmr_now_ms() + 700;
    while (tmr_now_ms() < until) {
        turn(g);
        assert_false(redis_up(g->p));
    }
    assert_int_equal(g->ups, 0);
    assert_true(g->p->fails >= 2);
    assert_int_equal(redis_cmd(g->p, on_answer, NULL, 0, "PING"), -ENOTCONN);
    rig_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),  cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_noscript),  cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_reconnect), cmocka_unit_test(test_stop),
        cmocka_unit_test(test_locks),     cmocka_unit_test(test_lock_keepalive),
        cmocka_unit_test(test_spill),
    };
    const struct CMUnitTest tcp[] = {
        cmocka_unit_test(test_tcp_auth_db),
        cmocka_unit_test(test_tcp_wrong_password),
    };
    int failed;

    signal(SIGPIPE, SIG_IGN);
    failed = cmocka_run_group_tests_name("redis", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("redis_tcp", tcp, server_start, server_stop);
    return failed != 0;
}

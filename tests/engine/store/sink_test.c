/*
 * Unit tests for engine/store/sink.c, driven on a real ring on the test
 * thread with a temporary STORAGE_DIR: buffered spans to a linked object,
 * FSYNC with the shard directories made and synced, abort before and during
 * an op, a failure told once, a body spliced from a socket pair, and O_DIRECT
 * where the machine allows it.
 */
/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/store/sink.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#define TURNS_MAX 2000 /* loop turns a test waits for its sink at most */

/* One test's world: the ring, the pools and what the callbacks saw. */
struct world {
    struct cfg cfg;
    struct ring ring;
    struct xfer xfer;
    struct sink_pool pool;
    char dir[64];
    /* the caller's side */
    struct sink *s;
    int opened;
    enum sink_mode mode;
    int taken;
    int done;
    int read_done;
    int gets;         /* sock_get() calls */
    int puts;         /* sock_put() calls */
    uint64_t sock_in; /* bytes sock_put() reported */
    int sock;         /* what sock_get() lends, -1: none */
    bool abort_taken; /* taken() aborts the sink */
    struct sink_result res;
    char id[STORE_ID_LEN + 1];
    char key[STORE_KEY_MAX];
};

static void cb_opened(void *ctx, enum sink_mode mode)
{
    struct world *w = ctx;

    w->opened++;
    w->mode = mode;
}

static void cb_taken(void *ctx)
{
    struct world *w = ctx;

    w->taken++;
    if (w->abort_taken) {
        sink_abort(w->s);
        w->s = NULL;
    }
}

static int cb_sock_get(void *ctx)
{
    struct world *w = ctx;

    assert_int_equal(w->gets, w->puts); /* one op on the socket at a time */
    w->gets++;
    return w->sock;
}

static bool cb_sock_put(void *ctx, uint64_t n)
{
    struct world *w = ctx;

    w->puts++;
    w->sock_in += n;
    return true;
}

static void cb_read_done(void *ctx)
{
    struct world *w = ctx;

    w->read_done++;
}

static void cb_done(void *ctx, const struct sink_result *res)
{
    struct world *w = ctx;

    w->done++;
    w->res = *res;
    if (res->err == 0) {
        snprintf(w->id, sizeof(w->id), "%s", res->id);
        snprintf(w->key, sizeof(w->key), "%s", res->key);
    }
    w->res.id = w->id;
    w->res.key = w->key;
    w->s = NULL;
}

static const struct sink_cbs cbs = {cb_opened,   cb_taken,     cb_sock_get,
                                    cb_sock_put, cb_read_done, cb_done};

static struct world *world_new(bool fsync, bool direct)
{
    struct world *w = calloc(1, sizeof(*w));

    assert_non_null(w);
    cfg_defaults(&w->cfg);
    w->cfg.fsync = fsync;
    snprintf(w->dir, sizeof(w->dir), "/tmp/sink_test.XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    snprintf(w->cfg.storage_dir, sizeof(w->cfg.storage_dir), "%s/store", w->dir);
    assert_int_equal(store_init(&w->cfg), 0);
    assert_int_equal(ring_init(&w->ring, &w->cfg, 0), 0);
    xfer_init(&w->xfer, &w->ring, direct && w->ring.has_ftruncate);
    sink_pool_init(&w->pool, &w->ring, &w->xfer);
    w->sock = -1;
    return w;
}

static void world_free(struct world *w)
{
    char cmd[128];

    sink_pool_fini(&w->pool);
    xfer_fini(&w->xfer);
    ring_fini(&w->ring);
    close(store_dirfd());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
    assert_int_equal(system(cmd), 0);
    free(w);
}

/* Turn the loop until *flag reaches want (or the pool is empty when flag is NULL). */
static void turn_until(struct world *w, const int *flag, int want)
{
    int i;

    for (i = 0; i < TURNS_MAX; i++) {
        if (flag != NULL ? *flag >= want : w->pool.used == 0)
            return;
        assert_int_equal(ring_turn(&w->ring, 50), 0);
    }
    fail_msg("the sink did not get there in %d turns", TURNS_MAX);
}

static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n);
    size_t i;

    assert_non_null(p);
    for (i = 0; i < n; i++)
        p[i] = (char)((i * 131 + seed * 7 + i / 977) & 0xff);
    return p;
}

/* The object under key holds exactly want[0..n). */
static void expect_object(struct world *w, const char *key, const char *want, size_t n)
{
    struct stat st;
    char *got;
    int fd = openat(store_dirfd(), key, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, n);
    got = malloc(n + 1);
    assert_non_null(got);
    assert_int_equal(pread(fd, got, n + 1, 0), (ssize_t)n);
    assert_memory_equal(got, want, n);
    free(got);
    close(fd);
    (void)w;
}

/* Regular files anywhere under objects/ (a failed or aborted sink leaves none). */
static int objects(struct world *w)
{
    char cmd[160];
    char line[32];
    FILE *f;
    int n = -1;

    snprintf(cmd, sizeof(cmd), "find '%s/store/objects' -type f | wc -l", w->dir);
    f = popen(cmd, "r");
    assert_non_null(f);
    if (fgets(line, sizeof(line), f) != NULL)
        n = atoi(line);
    pclose(f);
    return n;
}

/* Spans to the page cache, committed: the object is linked with its bytes, once. */
static void test_buffered_commit(void **state)
{
    struct world *w = world_new(false, false);
    const size_t n = 200000;
    char *data = pattern(n, 1);
    size_t off = 0;

    (void)state;
    w->s = sink_open(&w->pool, SINK_BUFFERED, SINK_BUFFERED, &cbs, w);
    assert_int_equal(sink_mode(w->s), SINK_BUFFERED);
    turn_until(w, &w->opened, 1);
    assert_int_equal(w->mode, SINK_BUFFERED);
    assert_int_equal(w->ring.met.up_files_open, 1);
    while (off < n) {
        size_t len = n - off < 70000 ? n - off : 70000;
        int before = w->taken;

        assert_false(sink_write(w->s, data + off, len));
        turn_until(w, &w->taken, before + 1);
        off += len;
    }
    assert_int_equal(w->done, 0);
    sink_commit(w->s);
    turn_until(w, &w->done, 1);
    assert_int_equal(w->res.err, 0);
    assert_int_equal(w->res.size, n);
    assert_true(strstr(w->key, w->id) != NULL);
    expect_object(w, w->key, data, n);
    assert_int_equal(w->ring.met.sink_committed, 1);
    assert_int_equal(w->ring.met.up_bytes_buffered, n);
    assert_int_equal(w->ring.met.up_files_open, 0);
    assert_int_equal(w->ring.met.dir_syncs, 0);
    assert_int_equal(w->pool.used, 0);
    assert_int_equal(w->done, 1);
    free(data);
    world_free(w);
}

/*
 * FSYNC: the first object of a shard makes objects/ab and objects/ab/cd and
 * syncs the three directories it changed; the next one in the same shard syncs one.
 */
static void test_fsync_commit(void **state)
{
    struct world *w = world_new(true, false);
    char first[STORE_KEY_MAX];
    char *data = pattern(5000, 2);
    int round;

    (void)state;
    for (round = 0; round < 2; round++) {
        w->done = 0;
        w->opened = 0;
        w->s = sink_open(&w->pool, SINK_BUFFERED, SINK_BUFFERED, &cbs, w);
        if (round == 1) {
            /* The same shard as the first: its id is made to share the first's. */
            memcpy(w->s->id + 34, w->id + 34, 2);
            w->s->id[7] = w->id[7];
            w->s->id[9] = w->id[9];
            store_key(w->s->id, w->s->key);
            store_shard_dirs(w->s->id, w->s->dir, w->s->shard); /* read when submitted */
        }
        turn_until(w, &w->opened, 1);
        assert_false(sink_write(w->s, data, 5000));
        turn_until(w, &w->taken, round + 1);
        sink_commit(w->s);
        turn_until(w, &w->done, 1);
        assert_int_equal(w->res.err, 0);
        expect_object(w, w->key, data, 5000);
        if (round == 0) {
            snprintf(first, sizeof(first), "%s", w->key);
            assert_int_equal(w->ring.met.dir_syncs, 3);
        }
    }
    assert_int_equal(w->ring.met.dir_syncs, 4);
    expect_object(w, first, data, 5000);
    assert_int_equal(w->ring.met.sink_committed, 2);
    free(data);
    world_free(w);
}

/* Aborted between spans, and with its open in flight: no callback, no file, the slots back. */
static void test_abort(void **state)
{
    struct world *w = world_new(false, false);
    char *data = pattern(4096, 3);
    struct sink *slot;
    uint32_t gen;

    (void)state;
    w->s = sink_open(&w->pool, SINK_BUFFERED, SINK_BUFFERED, &cbs, w);
    turn_until(w, &w->opened, 1);
    assert_false(sink_write(w->s, data, 4096));
    turn_until(w, &w->taken, 1);
    sink_abort(w->s);
    assert_int_equal(w->pool.used, 0);
    assert_int_equal(w->ring.met.up_files_open, 0);

    /* The open in flight: the slot waits for it, closes what it made, then is free. */
    w->s = sink_open(&w->pool, SINK_BUFFERED, SINK_BUFFERED, &cbs, w);
    slot = w->s;
    gen = slot->gen;
    sink_abort(w->s);
    assert_int_equal(w->pool.used, 1);
    assert_int_equal(sink_pool_draining(&w->pool), 1);
    assert_int_equal(slot->gen, gen);
    turn_until(w, NULL, 0);
    assert_int_equal(sink_pool_draining(&w->pool), 0);
    /* Freed once its CQE was back: a later CQE of the old generation finds another. */
    assert_int_equal(slot->state, ST_FREE);
    assert_int_equal(slot->gen, gen + 1);
    assert_int_equal(w->opened, 1);
    assert_int_equal(w->done, 0);
    assert_int_equal(w->ring.met.up_files_open, 0);
    assert_int_equal(w->ring.met.sink_aborted, 2);
    assert_int_equal(objects(w), 0);

    /* From inside a callback: the slot goes once the callback's entry returns. */
    w->abort_taken = true;
    w->opened = 0;
    w->s = sink_open(&w->pool, SINK_BUFFERED, SINK_BUFFERED, &cbs, w);
    turn_until(w, &w->opened, 1);
    assert_false(sink_write(w->s, data, 4096));
    turn_until(w, NULL, 0);
    assert_null(w->s);
    assert_int_equal(w->taken, 2);
    assert_int_equal(w->done, 0);
    assert_int_equal(w->ring.met.sink_aborted, 3);
    assert_int_equal(w->ring.met.up_files_open, 0);
    assert_int_equal(objects(w), 0);
    free(data);
    world_free(w);
}

/* A storage directory gone: the open fails, told once, nothing left open. */
static void test_failure_once(void **state)
{
    struct world *w = world_new(false, false);
    char cmd[160];
    int i;

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/store'", w->dir);
    assert_int_equal(system(cmd), 0);
    w->s = sink_open(&w->pool, SINK_BUFFERED, SINK_BUFFERED, &cbs, w);
    turn_until(w, &w->done, 1);
    for (i = 0; i < 5; i++)
        assert_int_equal(ring_turn(&w->ring, 10), 0);
    assert_int_equal(w->done, 1);
    assert_int_equal(w->opened, 0);
    assert_true(w->res.err < 0);
    assert_int_equal(w->res.step, SINK_STEP_OPEN);
    assert_string_equal(sink_step_name(w->res.step), "open");
    assert_int_equal(w->ring.met.sink_failed[MET_SF_IO], 1);
    assert_int_equal(w->ring.met.up_files_open, 0);
    assert_int_equal(w->pool.used, 0);
    world_free(w);
}

/* Write to a non-blocking socket what it takes now. */
static size_t feed_socket(int fd, const char *p, size_t n)
{
    ssize_t r = write(fd, p, n);

    return r > 0 ? (size_t)r : 0;
}

/*
 * A body read from a socket: spans first, then the rest spliced while the
 * peer sends in pieces (the sink polls an empty socket); every op on the
 * socket is lent and given back.
 */
static void test_splice_from_socket(void **state)
{
    struct world *w = world_new(false, false);
    const size_t head = 3000;
    const size_t n = 900000;
    char *data = pattern(n, 4);
    size_t sent = head;
    int sv[2];
    int i;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    w->sock = sv[0];
    w->s = sink_open(&w->pool, SINK_SPLICE, SINK_BUFFERED, &cbs, w);
    turn_until(w, &w->opened, 1);
    assert_false(sink_write(w->s, data, head));
    turn_until(w, &w->taken, 1);
    sink_read(w->s, n - head, false);
    for (i = 0; i < TURNS_MAX && w->read_done == 0; i++) {
        if (sent < n)
            sent += feed_socket(sv[1], data + sent, n - sent < 50000 ? n - sent : 50000);
        assert_int_equal(ring_turn(&w->ring, 20), 0);
    }
    assert_int_equal(w->read_done, 1);
    assert_int_equal(w->gets, w->puts);
    assert_true(w->gets >= 2);
    assert_int_equal(w->sock_in, n - head);
    assert_int_equal(w->done, 0);
    sink_commit(w->s);
    turn_until(w, &w->done, 1);
    assert_int_equal(w->res.err, 0);
    assert_int_equal(w->res.size, n);
    expect_object(w, w->key, data, n);
    assert_int_equal(w->ring.met.up_bytes_spliced, n - head);
    assert_int_equal(w->ring.met.pipes_in_use, 0);
    close(sv[0]);
    close(sv[1]);
    free(data);
    world_free(w);
}

/* The peer closes mid-body: a source failure, told once, no file. */
static void test_socket_cut(void **state)
{
    struct world *w = world_new(false, false);
    char *data = pattern(10000, 5);
    int sv[2];

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    w->sock = sv[0];
    w->s = sink_open(&w->pool, SINK_SPLICE, SINK_BUFFERED, &cbs, w);
    turn_until(w, &w->opened, 1);
    assert_int_equal(feed_socket(sv[1], data, 10000), 10000);
    close(sv[1]);
    sink_read(w->s, 50000, false);
    turn_until(w, &w->done, 1);
    assert_int_equal(w->res.step, SINK_STEP_SOURCE);
    assert_int_equal(w->read_done, 0);
    assert_int_equal(w->gets, w->puts);
    assert_int_equal(w->ring.met.sink_failed[MET_SF_SOURCE], 1);
    assert_int_equal(w->ring.met.pipes_in_use, 0);
    assert_int_equal(objects(w), 0);
    close(sv[0]);
    free(data);
    world_free(w);
}

/*
 * O_DIRECT: spans copied into the registered buffer, the rest read from a
 * socket, the padded last write cut to size. Skipped where no buffer could be
 * registered (RLIMIT_MEMLOCK) or the filesystem refuses O_DIRECT.
 */
static void test_direct(void **state)
{
    struct world *w = world_new(false, true);
    const size_t head = 700000;
    const size_t n = 1500000 + 123;
    char *data = pattern(n, 6);
    size_t off = 0;
    size_t sent = head;
    int sv[2];
    int i;

    (void)state;
    if (!xfer_direct(&w->xfer)) {
        free(data);
        world_free(w);
        skip();
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    w->sock = sv[0];
    w->s = sink_open(&w->pool, SINK_DIRECT, SINK_BUFFERED, &cbs, w);
    assert_int_equal(sink_mode(w->s), SINK_DIRECT);
    turn_until(w, &w->opened, 1);
    if (w->mode != SINK_DIRECT) {
        sink_abort(w->s);
        close(sv[0]);
        close(sv[1]);
        free(data);
        world_free(w);
        skip();
    }
    while (off < head) {
        size_t len = head - off < 100000 ? head - off : 100000;
        int before = w->taken;

        if (!sink_write(w->s, data + off, len))
            turn_until(w, &w->taken, before + 1);
        off += len;
    }
    sink_read(w->s, n - head, false);
    for (i = 0; i < TURNS_MAX && w->read_done == 0 && w->done == 0; i++) {
        if (sent < n)
            sent += feed_socket(sv[1], data + sent, n - sent < 40000 ? n - sent : 40000);
        assert_int_equal(ring_turn(&w->ring, 20), 0);
    }
    assert_int_equal(w->done, 0);
    assert_int_equal(w->read_done, 1);
    assert_int_equal(w->gets, w->puts);
    assert_int_equal(w->ring.met.dbufs_in_use, 0);
    sink_commit(w->s);
    turn_until(w, &w->done, 1);
    assert_int_equal(w->res.err, 0);
    assert_int_equal(w->res.size, n);
    expect_object(w, w->key, data, n);
    assert_int_equal(w->ring.met.up_bytes_direct, n);
    close(sv[0]);
    close(sv[1]);
    free(data);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffered_commit),
        cmocka_unit_test(test_fsync_commit),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_failure_once),
        cmocka_unit_test(test_splice_from_socket),
        cmocka_unit_test(test_socket_cut),
        cmocka_unit_test(test_direct),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * ring: a worker's event loop. Set-up of the listener on the main thread,
 * then everything else on the worker's own thread: ring creation, provided
 * buffers, multishot accept, CQE dispatch, timers, log flushing, shutdown.
 */
#include "engine/ring.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "proto/http.h"

#define LISTEN_BACKLOG 4096
#define ACCEPT_RETRY_MS 100
#define RING_FILES_MAX 65536 /* direct descriptors per worker, at most */

static int make_listener(const struct cfg *cfg)
{
    struct addrinfo hints;
    struct addrinfo *ai;
    char port[8];
    int one = 1;
    int fd;
    int ret;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    ret = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (ret != 0) {
        log_error("listen failed", "addr=%s error=%s", cfg->listen, gai_strerror(ret));
        return -EINVAL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
        goto out_free;
    }
    /* Accepted sockets inherit TCP_NODELAY: one setsockopt here, none per connection. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        ret = -errno;
        close(fd);
        goto out_free;
    }
    freeaddrinfo(ai);
    return fd;

out_free:
    freeaddrinfo(ai);
    log_error("listen failed", "addr=%s error=%s", cfg->listen, strerror(-ret));
    return ret;
}

int ring_setup(struct ring *r, const struct cfg *cfg, uint32_t id)
{
    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->id = id;
    r->listen_fd = make_listener(cfg);
    if (r->listen_fd < 0)
        return r->listen_fd;
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->wake_fd < 0) {
        int ret = -errno;
        close(r->listen_fd);
        return ret;
    }
    return 0;
}

struct io_uring_sqe *ring_sqe(struct ring *r)
{
    struct io_uring_sqe *sqe;

    while ((sqe = io_uring_get_sqe(r->uring)) == NULL)
        io_uring_submit(r->uring);
    return sqe;
}

void ring_tick_date(struct ring *r)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == r->date_sec)
        return;
    r->date_sec = ts.tv_sec;
    http_format_date(r->date, ts.tv_sec);
}

static void arm_accept(struct ring *r)
{
    struct io_uring_sqe *sqe = ring_sqe(r);

    io_uring_prep_multishot_accept_direct(sqe, r->listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, ring_ud(RING_OP_ACCEPT, 0, 0));
    r->accept_armed = true;
}

static void arm_wake(struct ring *r)
{
    struct io_uring_sqe *sqe = ring_sqe(r);

    io_uring_prep_read(sqe, r->wake_fd, &r->wake_val, sizeof(r->wake_val), 0);
    io_uring_sqe_set_data64(sqe, ring_ud(RING_OP_WAKE, 0, 0));
    r->wake_armed = true;
}

static void on_accept_retry(struct tmr *t)
{
    struct ring *r = (struct ring *)((char *)t - offsetof(struct ring, accept_retry));

    if (!r->stopping && !r->accept_armed && r->listen_fd >= 0)
        arm_accept(r);
}

static void on_accept(struct ring *r, int res, uint32_t flags)
{
    static __thread uint64_t last_warn;

    if (!(flags & IORING_CQE_F_MORE))
        r->accept_armed = false;
    if (res >= 0) {
        conn_accept(r, res);
    } else if (res != -ECANCELED) {
        met_inc(&r->met.accept_errors);
        if (r->now_ms - last_warn >= 1000) {
            last_warn = r->now_ms;
            log_warn("accept failed", "error=%s worker=%u", strerror(-res), r->id);
        }
    }
    if (r->accept_armed)
        return;
    if (r->stopping) {
        /* The cancel landed: only now does the socket stop listening. */
        if (r->listen_fd >= 0) {
            close(r->listen_fd);
            r->listen_fd = -1;
        }
        return;
    }
    if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS)
        tmr_set(&r->timers, &r->accept_retry, r->now_ms + ACCEPT_RETRY_MS);
    else
        arm_accept(r);
}

static void on_stop_timer(struct tmr *t)
{
    struct ring *r = (struct ring *)((char *)t - offsetof(struct ring, stop_timer));

    log_warn("shutdown timeout, closing connections", "open=%u worker=%u", r->conns.open, r->id);
    conn_close_all(r);
}

static void begin_stop(struct ring *r)
{
    struct io_uring_sqe *sqe;

    if (r->stopping)
        return;
    r->stopping = true;
    tmr_cancel(&r->timers, &r->accept_retry);
    if (r->accept_armed) {
        sqe = ring_sqe(r);
        io_uring_prep_cancel64(sqe, ring_ud(RING_OP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_OP_NONE, 0, 0));
    } else if (r->listen_fd >= 0) {
        close(r->listen_fd);
        r->listen_fd = -1;
    }
    conn_drain(r);
    tmr_set(&r->timers, &r->stop_timer, r->now_ms + r->cfg->shutdown_timeout);
}

static void on_wake(struct ring *r, int res)
{
    r->wake_armed = false;
    if (__atomic_load_n(&r->stop_requested, __ATOMIC_ACQUIRE))
        begin_stop(r);
    if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED)
        log_warn("wake read failed", "error=%s", strerror(-res));
    if (!r->stopping)
        arm_wake(r);
}

/* Submit the collected log lines, unless a write is still in flight. */
static void flush_log(struct ring *r)
{
    struct io_uring_sqe *sqe;

    if (r->log.dropped != r->log_dropped_seen) {
        met_add(&r->met.log_dropped, r->log.dropped - r->log_dropped_seen);
        r->log_dropped_seen = r->log.dropped;
    }
    if (r->log_inflight || r->log.len == 0)
        return;
    r->log_len = r->log.len;
    r->log_off = 0;
    r->log.active ^= 1;
    r->log.len = 0;
    sqe = ring_sqe(r);
    io_uring_prep_write(sqe, STDERR_FILENO, r->log.buf[r->log.active ^ 1], (unsigned)r->log_len,
                        (uint64_t)-1);
    io_uring_sqe_set_data64(sqe, ring_ud(RING_OP_LOG, 0, 0));
    r->log_inflight = true;
}

static void on_log(struct ring *r, int res)
{
    char *b = r->log.buf[r->log.active ^ 1];
    struct io_uring_sqe *sqe;

    if (res > 0 && r->log_off + (size_t)res < r->log_len) {
        /* A short write: send the rest of the same buffer. */
        r->log_off += (size_t)res;
        sqe = ring_sqe(r);
        io_uring_prep_write(sqe, STDERR_FILENO, b + r->log_off, (unsigned)(r->log_len - r->log_off),
                            (uint64_t)-1);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_OP_LOG, 0, 0));
        return;
    }
    r->log_inflight = false;
}

/* The one place user_data is decoded. */
static void dispatch(struct ring *r, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    enum ring_op_kind kind = (enum ring_op_kind)(ud >> 56);
    uint32_t gen = (uint32_t)(ud >> RING_UD_IDX_BITS);
    uint32_t idx = (uint32_t)ud & RING_UD_IDX_MAX;

    switch (kind) {
    case RING_OP_ACCEPT:
        on_accept(r, cqe->res, cqe->flags);
        break;
    case RING_OP_RECV:
        conn_on_recv(r, idx, gen, cqe->res, cqe->flags);
        break;
    case RING_OP_SEND:
        conn_on_send(r, idx, gen, cqe->res);
        break;
    case RING_OP_SHUTDOWN:
    case RING_OP_CANCEL:
    case RING_OP_CLOSE:
        conn_on_done(r, idx, gen);
        break;
    case RING_OP_CONN:
        conn_on_op(r, idx, gen, cqe->res);
        break;
    case RING_OP_DB:
        if ((idx >> 8) < r->ndb)
            db_on_poll(&r->db[idx >> 8], (uint8_t)idx, gen, cqe->res);
        break;
    case RING_OP_WAKE:
        on_wake(r, cqe->res);
        break;
    case RING_OP_LOG:
        on_log(r, cqe->res);
        break;
    case RING_OP_NONE:
    case RING_OP__MAX:
        break;
    }
}

/* Slots in a worker's table of direct descriptors. */
static unsigned ring_files(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur > RING_FILES_MAX)
        return RING_FILES_MAX;
    return (unsigned)rl.rlim_cur;
}

/* Which of the newer opcodes this kernel has (fallbacks are chosen from these). */
static void probe_ops(struct ring *r)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(r->uring);

    if (p == NULL)
        return;
    r->has_fd_install = io_uring_opcode_supported(p, RING_OP_FIXED_FD_INSTALL);
    r->has_ftruncate = io_uring_opcode_supported(p, RING_OP_FTRUNCATE);
    io_uring_free_probe(p);
}

static int init_uring(struct ring *r)
{
    struct io_uring_params p;
    unsigned maxw[2] = {4, 4};
    const char *what;
    int ret;

    r->uring = calloc(1, sizeof(*r->uring));
    if (r->uring == NULL)
        log_oom();
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
              IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = RING_CQ_ENTRIES;
    ret = io_uring_queue_init_params(RING_ENTRIES, r->uring, &p);
    if (ret < 0) {
        what = "io_uring setup failed";
        goto out_free_uring;
    }
    /* Bound the kernel's async workers (bounded and unbounded) for this ring. */
    io_uring_register_iowq_max_workers(r->uring, maxw);
    /*
     * Sockets live in a table of direct descriptors, outside the process's
     * descriptor table: each worker's table may be as large as RLIMIT_NOFILE.
     */
    ret = io_uring_register_files_sparse(r->uring, ring_files());
    if (ret < 0) {
        what = "registered file table failed";
        goto out_exit_uring;
    }
    ret = buf_ring_init(&r->bufs, r->uring, 0, RING_BUFS, RING_BUF_SIZE);
    if (ret < 0) {
        what = "provided buffer ring failed";
        goto out_exit_uring;
    }
    met_set(&r->met.bufs_total, RING_BUFS);
    probe_ops(r);
    /* O_DIRECT uploads end with a truncate to the exact size: no ftruncate op, no O_DIRECT. */
    xfer_init(r, r->cfg->direct_io_threshold > 0 && r->has_ftruncate);
    return 0;

out_exit_uring:
    io_uring_queue_exit(r->uring);
out_free_uring:
    log_error(what, "error=%s worker=%u", strerror(-ret), r->id);
    free(r->uring);
    r->uring = NULL;
    return ret;
}

static bool done(struct ring *r)
{
    unsigned i;

    if (!r->stopping || r->conns.open != 0 || r->listen_fd >= 0)
        return false;
    /* Requests are all answered: the database slices can go. */
    if (!r->db_stopped) {
        for (i = 0; i < r->ndb; i++)
            db_pool_stop(&r->db[i]);
        r->db_stopped = true;
    }
    return true;
}

/*
 * This worker's share of a pool size: total / workers, the remainder going
 * to the first workers, so the slices add up to the total exactly.
 */
static uint32_t slice(uint32_t total, const struct ring *r)
{
    uint32_t w = r->cfg->workers;

    return total / w + (r->id < total % w ? 1 : 0);
}

static void init_db(struct ring *r)
{
    const struct cfg *c = r->cfg;
    uint32_t max = c->db_pool_max < c->db_max_connections ? c->db_pool_max : c->db_max_connections;
    uint32_t min = c->db_pool_min < max ? c->db_pool_min : max;

    db_pool_init(&r->db[0], r, 0, c->database_url, "primary", slice(min, r), slice(max, r));
    r->ndb = 1;
    if (c->db_read_url[0] != '\0') {
        db_pool_init(&r->db[1], r, 1, c->db_read_url, "read", slice(min, r), slice(max, r));
        r->ndb = 2;
    }
}

/* Per-turn bookkeeping before the ring waits: timers, batches, buffers, logs. */
static void before_wait(struct ring *r)
{
    r->now_ms = tmr_now_ms();
    ring_tick_date(r);
    tmr_expire(&r->timers, r->now_ms);
    conn_tick(r);
    for (unsigned i = 0; i < r->ndb; i++)
        db_tick(&r->db[i]);
    if (r->bufs.br != NULL) {
        buf_commit(&r->bufs);
        met_set(&r->met.bufs_free, r->bufs.free);
    }
    flush_log(r);
}

/*
 * Submit, wait for a completion (or the next timer, or max_wait_ms when not
 * UINT64_MAX) and dispatch every ready CQE. Returns 0 or -errno.
 */
static int wait_and_dispatch(struct ring *r, uint64_t max_wait_ms)
{
    struct __kernel_timespec ts;
    struct __kernel_timespec *tsp = NULL;
    struct io_uring_cqe *cqe;
    uint64_t next = tmr_next(&r->timers);
    unsigned head;
    unsigned n = 0;
    int ret;

    if (max_wait_ms != UINT64_MAX && (next == UINT64_MAX || next > r->now_ms + max_wait_ms))
        next = r->now_ms + max_wait_ms;
    if (next != UINT64_MAX) {
        uint64_t wait = next > r->now_ms ? next - r->now_ms : 0;
        ts.tv_sec = (long long)(wait / 1000);
        ts.tv_nsec = (long long)(wait % 1000) * 1000000;
        tsp = &ts;
    }
    ret = io_uring_submit_and_wait_timeout(r->uring, &cqe, 1, tsp, NULL);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
        return ret;
    r->now_ms = tmr_now_ms();
    io_uring_for_each_cqe(r->uring, head, cqe)
    {
        dispatch(r, cqe);
        n++;
    }
    io_uring_cq_advance(r->uring, n);
    return 0;
}

static void loop(struct ring *r)
{
    while (!done(r)) {
        int ret;

        before_wait(r);
        if (done(r))
            break;
        ret = wait_and_dispatch(r, UINT64_MAX);
        if (ret < 0) {
            log_error("io_uring wait failed", "error=%s worker=%u", strerror(-ret), r->id);
            r->exit_code = 1;
            return;
        }
    }
}

int ring_init_local(struct ring *r, const struct cfg *cfg)
{
    int ret;

    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->listen_fd = -1;
    r->wake_fd = -1;
    tmr_heap_init(&r->timers);
    conn_pool_init(&r->conns);
    met_register(&r->met);
    ret = init_uring(r);
    if (ret < 0)
        return ret;
    r->now_ms = tmr_now_ms();
    init_db(r);
    auth_cache_init(&r->auth);
    return 0;
}

int ring_turn(struct ring *r, uint64_t max_wait_ms)
{
    before_wait(r);
    return wait_and_dispatch(r, max_wait_ms);
}

void ring_fini_local(struct ring *r)
{
    for (unsigned i = 0; i < r->ndb; i++)
        db_pool_stop(&r->db[i]);
    ring_teardown(r);
}

static void *run(void *arg)
{
    struct ring *r = arg;
    int ret;

    log_attach(&r->log);
    r->log.buf[0] = malloc(LOG_BUF_SIZE);
    r->log.buf[1] = malloc(LOG_BUF_SIZE);
    if (r->log.buf[0] == NULL || r->log.buf[1] == NULL)
        log_oom();
    tmr_heap_init(&r->timers);
    tmr_init(&r->accept_retry, on_accept_retry);
    tmr_init(&r->stop_timer, on_stop_timer);
    conn_pool_init(&r->conns);

    ret = init_uring(r);
    r->setup_status = ret;
    __atomic_store_n(&r->ready, 1, __ATOMIC_RELEASE);
    if (ret < 0) {
        __atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
        return NULL;
    }

    r->now_ms = tmr_now_ms();
    ring_tick_date(r);
    init_db(r);
    auth_cache_init(&r->auth);
    arm_accept(r);
    arm_wake(r);
    loop(r);

    /* Whatever the last turn logged goes out before the ring does. */
    log_attach(NULL);
    if (r->log_inflight) {
        struct io_uring_cqe *cqe;
        while (r->log_inflight && io_uring_wait_cqe(r->uring, &cqe) == 0) {
            dispatch(r, cqe);
            io_uring_cqe_seen(r->uring, cqe);
        }
    }
    if (r->log.len > 0 && write(STDERR_FILENO, r->log.buf[r->log.active], r->log.len) < 0) {
        /* stderr is gone: nothing left to tell. */
    }
    __atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

int ring_start(struct ring *r)
{
    struct timespec ts = {0, 1000000};
    int ret;

    ret = pthread_create(&r->thread, NULL, run, r);
    if (ret != 0)
        return -ret;
    while (!__atomic_load_n(&r->ready, __ATOMIC_ACQUIRE))
        nanosleep(&ts, NULL);
    if (r->setup_status < 0) {
        pthread_join(r->thread, NULL);
        return r->setup_status;
    }
    return 0;
}

int ring_join(struct ring *r)
{
    pthread_join(r->thread, NULL);
    return r->exit_code;
}

void ring_stop(struct ring *r)
{
    uint64_t one = 1;

    __atomic_store_n(&r->stop_requested, 1, __ATOMIC_RELEASE);
    if (write(r->wake_fd, &one, sizeof(one)) < 0) {
        /* The counter only saturates; the worker is awake either way. */
    }
}

void ring_teardown(struct ring *r)
{
    if (r->uring != NULL) {
        xfer_fini(r);
        buf_ring_exit(&r->bufs, r->uring);
        io_uring_queue_exit(r->uring);
        free(r->uring);
        r->uring = NULL;
    }
    conn_pool_free(&r->conns);
    auth_cache_free(&r->auth);
    for (unsigned i = 0; i < r->ndb; i++)
        db_pool_free(&r->db[i]);
    tmr_heap_free(&r->timers);
    free(r->log.buf[0]);
    free(r->log.buf[1]);
    r->log.buf[0] = NULL;
    r->log.buf[1] = NULL;
    if (r->listen_fd >= 0)
        close(r->listen_fd);
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    r->listen_fd = -1;
    r->wake_fd = -1;
}

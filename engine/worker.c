/*
 * worker: set-up of the listener on the main thread, then everything else on
 * the worker's own thread: the ring, the tenants, multishot accept, the wake
 * eventfd, log flushing, shutdown.
 */
#include "engine/worker.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/core/conn.h"
#include "engine/db/events.h"
#include "engine/db/limit.h"
#include "engine/db/redis.h"
#include "engine/routes/progress.h"

#define LISTEN_BACKLOG 4096
#define ACCEPT_RETRY_MS 100
#define EVENTS_FLUSH_MS 2000 /* the most a stop waits for Redis to take the event backlog */

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

int worker_setup(struct worker *w, const struct cfg *cfg, uint32_t id)
{
    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->id = id;
    w->listen_fd = make_listener(cfg);
    if (w->listen_fd < 0)
        return w->listen_fd;
    w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake_fd < 0) {
        int ret = -errno;
        close(w->listen_fd);
        return ret;
    }
    return 0;
}

/* ---- accept ---- */

static void arm_accept(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);

    io_uring_prep_multishot_accept_direct(sqe, w->listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, ring_ud(w->kind_accept, 0, 0));
    w->accept_armed = true;
}

static void on_accept_retry(struct tmr *t)
{
    struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, accept_retry));

    if (!w->stopping && !w->accept_armed && w->listen_fd >= 0)
        arm_accept(w);
}

static void on_accept(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    static __thread uint64_t last_warn;
    struct worker *w = ctx;
    struct ring *r = &w->ring;
    int res = cqe->res;

    (void)idx;
    (void)gen;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        w->accept_armed = false;
    if (res >= 0) {
        conn_accept(w->conns, res);
    } else if (res != -ECANCELED) {
        met_inc(&r->met.accept_errors);
        if (r->now_ms - last_warn >= 1000) {
            last_warn = r->now_ms;
            log_warn("accept failed", "error=%s worker=%u", strerror(-res), w->id);
        }
    }
    if (w->accept_armed)
        return;
    if (w->stopping) {
        /* The cancel landed: only now does the socket stop listening. */
        if (w->listen_fd >= 0) {
            close(w->listen_fd);
            w->listen_fd = -1;
        }
        return;
    }
    if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS)
        tmr_set(&r->timers, &w->accept_retry, r->now_ms + ACCEPT_RETRY_MS);
    else
        arm_accept(w);
}

/* ---- stop ---- */

static void on_stop_timer(struct tmr *t)
{
    struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, stop_timer));

    log_warn("shutdown timeout, closing connections", "open=%u worker=%u", conn_pool_open(w->conns),
             w->id);
    conn_close_all(w->conns);
}

static void begin_stop(struct worker *w)
{
    struct ring *r = &w->ring;
    struct io_uring_sqe *sqe;

    if (w->stopping)
        return;
    w->stopping = true;
    tmr_cancel(&r->timers, &w->accept_retry);
    if (w->accept_armed) {
        sqe = ring_sqe(r);
        io_uring_prep_cancel64(sqe, ring_ud(w->kind_accept, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_KIND_NONE, 0, 0));
    } else if (w->listen_fd >= 0) {
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    conn_drain(w->conns);
    tmr_set(&r->timers, &w->stop_timer, r->now_ms + w->cfg->shutdown_timeout);
}

static void arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);

    io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
    io_uring_sqe_set_data64(sqe, ring_ud(w->kind_wake, 0, 0));
    w->wake_armed = true;
}

static void on_wake(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct worker *w = ctx;

    (void)idx;
    (void)gen;
    w->wake_armed = false;
    if (__atomic_load_n(&w->stop_requested, __ATOMIC_ACQUIRE))
        begin_stop(w);
    if (cqe->res < 0 && cqe->res != -EAGAIN && cqe->res != -EINTR && cqe->res != -ECANCELED)
        log_warn("wake read failed", "error=%s", strerror(-cqe->res));
    if (!w->stopping)
        arm_wake(w);
}

/* ---- the log ---- */

/* Submit the collected log lines, unless a write is still in flight (a turn hook). */
static void flush_log(void *ctx)
{
    struct worker *w = ctx;
    struct io_uring_sqe *sqe;

    if (w->log.dropped != w->log_dropped_seen) {
        met_add(&w->ring.met.log_dropped, w->log.dropped - w->log_dropped_seen);
        w->log_dropped_seen = w->log.dropped;
    }
    if (w->log_inflight || w->log.len == 0)
        return;
    w->log_len = w->log.len;
    w->log_off = 0;
    w->log.active ^= 1;
    w->log.len = 0;
    sqe = ring_sqe(&w->ring);
    io_uring_prep_write(sqe, STDERR_FILENO, w->log.buf[w->log.active ^ 1], (unsigned)w->log_len,
                        (uint64_t)-1);
    io_uring_sqe_set_data64(sqe, ring_ud(w->kind_log, 0, 0));
    w->log_inflight = true;
}

static void on_log(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct worker *w = ctx;
    char *b = w->log.buf[w->log.active ^ 1];
    struct io_uring_sqe *sqe;
    int res = cqe->res;

    (void)idx;
    (void)gen;
    if (res > 0 && w->log_off + (size_t)res < w->log_len) {
        /* A short write: send the rest of the same buffer. */
        w->log_off += (size_t)res;
        sqe = ring_sqe(&w->ring);
        io_uring_prep_write(sqe, STDERR_FILENO, b + w->log_off, (unsigned)(w->log_len - w->log_off),
                            (uint64_t)-1);
        io_uring_sqe_set_data64(sqe, ring_ud(w->kind_log, 0, 0));
        return;
    }
    w->log_inflight = false;
}

/* ---- the tenants ---- */

/*
 * This worker's share of a pool size: total / workers, the remainder going
 * to the first workers, so the slices add up to the total exactly.
 */
static uint32_t slice(uint32_t total, const struct worker *w)
{
    uint32_t n = w->cfg->workers;

    return total / n + (w->id < total % n ? 1 : 0);
}

static void init_db(struct worker *w)
{
    const struct cfg *c = w->cfg;
    uint32_t max = c->db_pool_max < c->db_max_connections ? c->db_pool_max : c->db_max_connections;
    uint32_t min = c->db_pool_min < max ? c->db_pool_min : max;

    db_pool_init(&w->db[0], &w->ring, 0, c->database_url, "primary", slice(min, w), slice(max, w));
    w->ndb = 1;
    if (c->db_read_url[0] != '\0') {
        db_pool_init(&w->db[1], &w->ring, 1, c->db_read_url, "read", slice(min, w), slice(max, w));
        w->ndb = 2;
    }
}

/* The tenants, in dependency order: what a tenant uses is made before it. */
static void init_tenants(struct worker *w)
{
    struct ring *r = &w->ring;

    w->kind_accept = ring_kind_add(r, "accept", on_accept, w);
    w->kind_wake = ring_kind_add(r, "wake", on_wake, w);
    w->kind_log = ring_kind_add(r, "log", on_log, w);
    tmr_init(&w->accept_retry, on_accept_retry);
    tmr_init(&w->stop_timer, on_stop_timer);
    init_db(w);
    w->redis = redis_pool_new(r, w->cfg, w->cfg->workers);
    w->lim = lim_new(r, w->cfg, w->redis, w->id);
    w->events = events_new(r, w->redis);
    w->progress = progress_new(r, w->redis);
    auth_cache_init(&w->auth);
    w->router = (struct router){.ring = r,
                                .cfg = w->cfg,
                                .db = w->db,
                                .ndb = w->ndb,
                                .redis = w->redis,
                                .auth = &w->auth,
                                .xfer = &w->xfer,
                                .lim = w->lim,

                                .events = w->events,
                                .progress = w->progress};
    w->conns = conn_pool_new(r, &router_handler, &w->router);
    w->router.conns = w->conns;
    /* O_DIRECT uploads end with a truncate to the exact size: no ftruncate op, no O_DIRECT. */
    xfer_init(&w->xfer, r, w->cfg->direct_io_threshold > 0 && r->has_ftruncate);
    sink_pool_init(&w->sinks, r, &w->xfer);
    w->router.sinks = &w->sinks;
    ring_on_turn(r, flush_log, w);
}

/* Reverse order of init_tenants(), after the loop ended. */
static void fini_tenants(struct worker *w)
{
    sink_pool_fini(&w->sinks);
    xfer_fini(&w->xfer);
    conn_pool_free(w->conns);
    w->conns = NULL;
    auth_cache_free(&w->auth);
    lim_free(w->lim);
    w->lim = NULL;
    /* The pool stopped: no event callback is pending any more. */
    progress_free(w->progress);
    events_free(w->events);
    redis_pool_free(w->redis);
    w->redis = NULL;
    for (unsigned i = 0; i < w->ndb; i++)
        db_pool_free(&w->db[i]);
}

static bool done(struct worker *w)
{
    unsigned i;

    /* Sinks given up by closed connections finish their last op first. */
    if (!w->stopping || conn_pool_open(w->conns) != 0 || sink_pool_draining(&w->sinks) != 0 ||
        w->listen_fd >= 0)
        return false;
    /*
     * Requests are all answered: the events they made go to Redis while it
     * takes them, for EVENTS_FLUSH_MS from now (not from the stop: requests
     * that took long to finish made events too).
     */
    if (!w->events_stopping) {
        events_stop(w->events, w->ring.now_ms + EVENTS_FLUSH_MS);
        w->events_stopping = true;
    }
    if (events_draining(w->events))
        return false;
    /* Then the database and Redis slices can go (leases first). */
    if (!w->db_stopped) {
        for (i = 0; i < w->ndb; i++)
            db_pool_stop(&w->db[i]);
        lim_stop(w->lim);
        redis_pool_stop(w->redis);
        w->db_stopped = true;
    }
    /* The loop turns until every Redis context is closed (no poll of theirs in flight). */
    return redis_pool_stopped(w->redis);
}

static void loop(struct worker *w)
{
    while (!done(w)) {
        int ret = ring_turn(&w->ring, UINT64_MAX);
        if (ret < 0) {
            log_error("io_uring wait failed", "error=%s worker=%u", strerror(-ret), w->id);
            w->exit_code = 1;
            return;
        }
    }
}

/* Whatever the last turn logged goes out before the ring does. */
static void last_log(struct worker *w)
{
    log_attach(NULL);
    flush_log(w);
    while (w->log_inflight) {
        struct io_uring_cqe *cqe;
        if (io_uring_submit_and_wait(w->ring.uring, 1) < 0 ||
            io_uring_wait_cqe(w->ring.uring, &cqe) != 0)
            break;
        ring_dispatch(&w->ring, cqe);
        io_uring_cqe_seen(w->ring.uring, cqe);
    }
    if (w->log.len > 0 && write(STDERR_FILENO, w->log.buf[w->log.active], w->log.len) < 0) {
        /* stderr is gone: nothing left to tell. */
    }
}

static void *run(void *arg)
{
    struct worker *w = arg;
    int ret;

    log_attach(&w->log);
    w->log.buf[0] = malloc(LOG_BUF_SIZE);
    w->log.buf[1] = malloc(LOG_BUF_SIZE);
    if (w->log.buf[0] == NULL || w->log.buf[1] == NULL)
        log_oom();
    ret = ring_init(&w->ring, w->cfg, w->id);
    w->setup_status = ret;
    __atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
    if (ret < 0) {
        __atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    init_tenants(w);
    arm_accept(w);
    arm_wake(w);
    loop(w);
    last_log(w);
    fini_tenants(w);
    __atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

int worker_start(struct worker *w)
{
    struct timespec ts = {0, 1000000};
    int ret;

    ret = pthread_create(&w->thread, NULL, run, w);
    if (ret != 0)
        return -ret;
    while (!__atomic_load_n(&w->ready, __ATOMIC_ACQUIRE))
        nanosleep(&ts, NULL);
    if (w->setup_status < 0) {
        pthread_join(w->thread, NULL);
        return w->setup_status;
    }
    return 0;
}

int worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
    return w->exit_code;
}

void worker_stop(struct worker *w)
{
    uint64_t one = 1;

    __atomic_store_n(&w->stop_requested, 1, __ATOMIC_RELEASE);
    if (write(w->wake_fd, &one, sizeof(one)) < 0) {
        /* The counter only saturates; the worker is awake either way. */
    }
}

void worker_teardown(struct worker *w)
{
    ring_fini(&w->ring);
    free(w->log.buf[0]);
    free(w->log.buf[1]);
    w->log.buf[0] = NULL;
    w->log.buf[1] = NULL;
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    w->listen_fd = -1;
    w->wake_fd = -1;
}

/*
 * ring: the loop. Creation of the io_uring and its buffers, the table of op
 * kinds, per-turn hooks, the poll seam, waiting and dispatch.
 */
#include "engine/core/ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <liburing.h>

#include "engine/core/log.h"
#include "proto/http.h"

#define RING_FILES_MAX 65536 /* direct descriptors per worker, at most */
#define WATCH_NONE UINT32_MAX

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

uint8_t ring_kind_add(struct ring *r, const char *name, ring_cqe_fn fn, void *ctx)
{
    uint8_t kind = r->nkinds;

    if (kind >= RING_KINDS) {
        log_error("too many op kinds", "kind=%s", name);
        abort();
    }
    r->kinds[kind] = (struct ring_kind){fn, ctx, name};
    r->nkinds++;
    return kind;
}

void ring_on_turn(struct ring *r, ring_turn_fn fn, void *ctx)
{
    if (r->nturns >= RING_TURN_HOOKS) {
        log_error("too many turn hooks", "worker=%u", r->id);
        abort();
    }
    r->turns[r->nturns++] = (struct ring_turn){fn, ctx};
}

/* The one place user_data is decoded: the kind picks the handler. */
void ring_dispatch(struct ring *r, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    uint8_t kind = (uint8_t)(ud >> 56);
    const struct ring_kind *k;

    if (kind == RING_KIND_NONE || kind >= r->nkinds)
        return;
    k = &r->kinds[kind];
    k->fn(k->ctx, (uint32_t)ud & RING_UD_IDX_MAX, (uint32_t)(ud >> RING_UD_IDX_BITS), cqe);
}

/* ---- the poll seam ---- */

static struct ring_watch *watch_get(const struct ring *r, uint32_t watch)
{
    return watch != 0 && watch <= r->nwatches ? &r->watches[watch - 1] : NULL;
}

static uint32_t watch_new(struct ring *r)
{
    uint32_t i;

    if (r->watch_free == WATCH_NONE) {
        uint32_t n = r->nwatches ? r->nwatches * 2 : 16;
        struct ring_watch *w = realloc(r->watches, n * sizeof(*w));
        if (w == NULL)
            log_oom();
        memset(w + r->nwatches, 0, (n - r->nwatches) * sizeof(*w));
        for (i = n; i-- > r->nwatches;) {
            w[i].next = r->watch_free;
            r->watch_free = i;
        }
        r->watches = w;
        r->nwatches = n;
    }
    i = r->watch_free;
    r->watch_free = r->watches[i].next;
    return i + 1;
}

void ring_poll_add(struct ring *r, uint32_t *watch, int fd, unsigned mask, ring_poll_fn fn,
                   void *ctx)
{
    struct ring_watch *w = watch_get(r, *watch);
    struct io_uring_sqe *sqe;
    uint64_t ud;

    if (w == NULL) {
        *watch = watch_new(r);
        w = watch_get(r, *watch);
    }
    w->fn = fn;
    w->ctx = ctx;
    ud = ring_ud(r->kind_poll, w->gen, *watch - 1);
    if (w->armed && w->fd == fd) {
        if ((w->mask | mask) == w->mask)
            return;
        /* Widen the armed poll (e.g. to POLLOUT: the library has output to push). */
        w->mask |= mask;
        sqe = ring_sqe(r);
        io_uring_prep_poll_update(sqe, ud, ud, w->mask, IORING_POLL_UPDATE_EVENTS);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_KIND_NONE, 0, 0));
        return;
    }
    w->fd = fd;
    w->mask = mask;
    w->armed = true;
    sqe = ring_sqe(r);
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, ud);
}

void ring_poll_del(struct ring *r, uint32_t *watch)
{
    struct ring_watch *w = watch_get(r, *watch);
    struct io_uring_sqe *sqe;

    if (w == NULL)
        return;
    if (w->armed) {
        sqe = ring_sqe(r);
        io_uring_prep_poll_remove(sqe, ring_ud(r->kind_poll, w->gen, *watch - 1));
        io_uring_sqe_set_data64(sqe, ring_ud(RING_KIND_NONE, 0, 0));
    }
    /* A CQE still on its way carries the old generation: it is dropped. */
    w->gen++;
    w->armed = false;
    w->fn = NULL;
    w->next = r->watch_free;
    r->watch_free = *watch - 1;
    *watch = 0;
}

bool ring_poll_armed(const struct ring *r, uint32_t watch)
{
    const struct ring_watch *w = watch_get(r, watch);

    return w != NULL && w->armed;
}

static void on_poll(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct ring *r = ctx;
    struct ring_watch *w;

    if (idx >= r->nwatches)
        return;
    w = &r->watches[idx];
    if (w->gen != gen || !w->armed)
        return;
    w->armed = false;
    w->fn(w->ctx, cqe->res);
}

/* ---- creation ---- */

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

int ring_init(struct ring *r, const struct cfg *cfg, uint32_t id)
{
    struct io_uring_params p;
    unsigned maxw[2] = {4, 4};
    const char *what;
    int ret;

    r->cfg = cfg;
    r->id = id;
    r->watch_free = WATCH_NONE;
    tmr_heap_init(&r->timers);
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
    r->nkinds = 1; /* RING_KIND_NONE */
    r->kind_poll = ring_kind_add(r, "poll", on_poll, r);
    r->now_ms = tmr_now_ms();
    ring_tick_date(r);
    return 0;

out_exit_uring:
    io_uring_queue_exit(r->uring);
out_free_uring:
    log_error(what, "error=%s worker=%u", strerror(-ret), id);
    free(r->uring);
    r->uring = NULL;
    tmr_heap_free(&r->timers);
    return ret;
}

void ring_fini(struct ring *r)
{
    if (r->uring != NULL) {
        buf_ring_exit(&r->bufs, r->uring);
        io_uring_queue_exit(r->uring);
        free(r->uring);
        r->uring = NULL;
    }
    free(r->watches);
    r->watches = NULL;
    r->nwatches = 0;
    tmr_heap_free(&r->timers);
}

/* ---- turning ---- */

/* Per-turn bookkeeping before the ring waits: timers, the tenants' hooks, buffers. */
static void before_wait(struct ring *r)
{
    uint8_t i;

    r->now_ms = tmr_now_ms();
    ring_tick_date(r);
    tmr_expire(&r->timers, r->now_ms);
    for (i = 0; i < r->nturns; i++)
        r->turns[i].fn(r->turns[i].ctx);
    buf_commit(&r->bufs);
    met_set(&r->met.bufs_free, r->bufs.free);
}

int ring_turn(struct ring *r, uint64_t max_wait_ms)
{
    struct __kernel_timespec ts;
    struct __kernel_timespec *tsp = NULL;
    struct io_uring_cqe *cqe;
    uint64_t next;
    unsigned head;
    unsigned n = 0;
    int ret;

    before_wait(r);
    next = tmr_next(&r->timers);
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
        ring_dispatch(r, cqe);
        n++;
    }
    io_uring_cq_advance(r->uring, n);
    return 0;
}

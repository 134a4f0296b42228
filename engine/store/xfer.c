/*
 * xfer: splice pipes and O_DIRECT buffers of one worker (see xfer.h).
 */
#include "engine/store/xfer.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/core/log.h"
#include "engine/core/ring.h"

static void arm_timer(struct xfer *x);

static void queue_push(struct xfer *x, struct xfer_queue *q, xfer_wait_fn fn, void *ctx,
                       uint64_t key)
{
    struct ring *r = x->ring;
    struct xfer_waiter *w;

    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 64;
        struct xfer_waiter *ws = malloc(cap * sizeof(*ws));
        uint32_t i;

        if (ws == NULL)
            log_oom();
        for (i = 0; i < q->count; i++)
            ws[i] = q->w[(q->head + i) % q->cap];
        free(q->w);
        q->w = ws;
        q->head = 0;
        q->cap = cap;
    }
    w = &q->w[(q->head + q->count) % q->cap];
    w->fn = fn;
    w->ctx = ctx;
    w->key = key;
    w->due = r->now_ms + r->cfg->connection_timeout;
    q->count++;
    if (!tmr_armed(&x->timer))
        arm_timer(x);
}

static struct xfer_waiter queue_pop(struct xfer_queue *q)
{
    struct xfer_waiter w = q->w[q->head];

    q->head = (q->head + 1) % q->cap;
    q->count--;
    return w;
}

/* Call the first waiter (those that gave up left the queue with xfer_cancel). */
static void queue_wake(struct xfer_queue *q)
{
    struct xfer_waiter w = queue_pop(q);

    w.fn(w.ctx, 0);
}

/* Drop every entry of key, keeping the order of the others. */
static void queue_remove(struct xfer_queue *q, uint64_t key)
{
    uint32_t kept = 0;
    uint32_t i;

    for (i = 0; i < q->count; i++) {
        struct xfer_waiter w = q->w[(q->head + i) % q->cap];
        if (w.key != key)
            q->w[(q->head + kept++) % q->cap] = w;
    }
    q->count = kept;
}

static void queue_free(struct xfer_queue *q)
{
    free(q->w);
    memset(q, 0, sizeof(*q));
}

/* The timer follows the earlier of the two heads: each queue is in due order. */
static void arm_timer(struct xfer *x)
{
    struct ring *r = x->ring;
    uint64_t due = UINT64_MAX;

    if (x->pipe_wait.count > 0)
        due = x->pipe_wait.w[x->pipe_wait.head].due;
    if (x->dbuf_wait.count > 0 && x->dbuf_wait.w[x->dbuf_wait.head].due < due)
        due = x->dbuf_wait.w[x->dbuf_wait.head].due;
    if (due == UINT64_MAX)
        tmr_cancel(&r->timers, &x->timer);
    else
        tmr_set(&r->timers, &x->timer, due);
}

/* Waits past CONNECTION_TIMEOUT: the pool stayed lent out; the waiter gives up. */
static void expire(struct xfer *x, struct xfer_queue *q)
{
    struct ring *r = x->ring;

    while (q->count > 0 && q->w[q->head].due <= r->now_ms) {
        struct xfer_waiter w = queue_pop(q);

        met_inc(&r->met.xfer_wait_timeouts);
        w.fn(w.ctx, -ETIMEDOUT);
    }
}

static void on_timer(struct tmr *t)
{
    struct xfer *x = (struct xfer *)((char *)t - offsetof(struct xfer, timer));
    expire(x, &x->pipe_wait);
    expire(x, &x->dbuf_wait);
    arm_timer(x);
}

void xfer_cancel(struct xfer *x, uint64_t key)
{
    if (x->pipe_wait.count == 0 && x->dbuf_wait.count == 0)
        return;
    queue_remove(&x->pipe_wait, key);
    queue_remove(&x->dbuf_wait, key);
    arm_timer(x);
}

static void init_direct(struct xfer *x)
{
    struct ring *r = x->ring;
    struct iovec iov[XFER_DBUFS];
    size_t total = (size_t)XFER_DBUFS * XFER_DBUF_SIZE;
    char *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ret;
    int i;

    if (mem == MAP_FAILED) {
        log_warn("O_DIRECT buffers unavailable", "error=%s worker=%u", strerror(errno), r->id);
        return;
    }
    for (i = 0; i < XFER_DBUFS; i++) {
        iov[i].iov_base = mem + (size_t)i * XFER_DBUF_SIZE;
        iov[i].iov_len = XFER_DBUF_SIZE;
    }
    ret = io_uring_register_buffers(r->uring, iov, XFER_DBUFS);
    if (ret < 0) {
        /* Typically RLIMIT_MEMLOCK: large bodies then take the splice or buffered path. */
        log_warn("O_DIRECT buffers not registered", "error=%s worker=%u", strerror(-ret), r->id);
        munmap(mem, total);
        return;
    }
    x->dbuf_mem = mem;
    for (i = XFER_DBUFS; i-- > 0;)
        x->dbuf_free[x->ndbuf_free++] = (uint16_t)i;
    met_set(&r->met.dbufs_total, XFER_DBUFS);
}

void xfer_init(struct xfer *x, struct ring *r, bool direct)
{
    memset(x, 0, sizeof(*x));
    x->ring = r;
    tmr_init(&x->timer, on_timer);
    x->pipe_size = 65536;
    if (direct)
        init_direct(x);
}

void xfer_fini(struct xfer *x)
{
    struct ring *r = x->ring;
    uint32_t i;

    if (r == NULL)
        return;

    for (i = 0; i < x->nidle; i++) {
        close(x->idle[i].rd);
        close(x->idle[i].wr);
    }
    if (x->dbuf_mem != NULL) {
        io_uring_unregister_buffers(r->uring);
        munmap(x->dbuf_mem, (size_t)XFER_DBUFS * XFER_DBUF_SIZE);
    }
    tmr_cancel(&r->timers, &x->timer);
    queue_free(&x->pipe_wait);
    queue_free(&x->dbuf_wait);
    memset(x, 0, sizeof(*x));
}

/* A new pipe, as large as the kernel lets this process make it. */
static int pipe_open(struct xfer *x, struct xfer_pipe *p)
{
    int fds[2];
    int size;

    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    /* Unprivileged users past pipe-user-pages-soft keep the default size: fine. */
    size = fcntl(fds[1], F_SETPIPE_SZ, XFER_PIPE_SIZE);
    if (size < 0)
        size = fcntl(fds[1], F_GETPIPE_SZ);
    if (size > 0 && (uint32_t)size > x->pipe_size)
        x->pipe_size = (uint32_t)size;
    p->rd = fds[0];
    p->wr = fds[1];
    return 0;
}

bool xfer_pipe_get(struct xfer *x, struct xfer_pipe *p, xfer_wait_fn fn, void *ctx, uint64_t key,
                   int *err)
{
    struct ring *r = x->ring;
    int ret;

    *err = 0;
    if (x->nidle > 0) {
        *p = x->idle[--x->nidle];
        met_inc(&r->met.pipes_in_use);
        return true;
    }
    if (x->open == XFER_PIPES) {
        if (fn == NULL)
            return false;
        met_inc(&r->met.pipe_waits);
        queue_push(x, &x->pipe_wait, fn, ctx, key);
        return false;
    }
    ret = pipe_open(x, p);
    if (ret < 0) {
        *err = ret;
        return false;
    }
    x->open++;
    met_set(&r->met.pipes_open, x->open);
    met_inc(&r->met.pipes_in_use);
    return true;
}

void xfer_pipe_put(struct xfer *x, struct xfer_pipe p, bool empty)
{
    struct ring *r = x->ring;

    met_dec(&r->met.pipes_in_use);
    if (empty) {
        x->idle[x->nidle++] = p;
    } else {
        /* Bytes may be left in it: a new pipe is cheaper than draining this one. */
        close(p.rd);
        close(p.wr);
        x->open--;
        met_set(&r->met.pipes_open, x->open);
    }
    /* A waiter that no longer needs one takes nothing: wake the next. */
    while (x->pipe_wait.count > 0 && (x->nidle > 0 || x->open < XFER_PIPES))
        queue_wake(&x->pipe_wait);
    arm_timer(x);
}

bool xfer_direct(const struct xfer *x)
{
    return x->dbuf_mem != NULL;
}

int xfer_dbuf_get(struct xfer *x, xfer_wait_fn fn, void *ctx, uint64_t key)
{
    struct ring *r = x->ring;

    if (x->ndbuf_free == 0) {
        if (fn == NULL)
            return -1;
        met_inc(&r->met.dbuf_waits);
        queue_push(x, &x->dbuf_wait, fn, ctx, key);
        return -1;
    }
    met_inc(&r->met.dbufs_in_use);
    return x->dbuf_free[--x->ndbuf_free];
}

void xfer_dbuf_put(struct xfer *x, int idx)
{
    struct ring *r = x->ring;

    x->dbuf_free[x->ndbuf_free++] = (uint16_t)idx;
    met_dec(&r->met.dbufs_in_use);
    while (x->dbuf_wait.count > 0 && x->ndbuf_free > 0)
        queue_wake(&x->dbuf_wait);
    arm_timer(x);
}

char *xfer_dbuf_addr(const struct xfer *x, int idx)
{
    return x->dbuf_mem + (size_t)idx * XFER_DBUF_SIZE;
}

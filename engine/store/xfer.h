/*
 * xfer: what one worker lends to zero-copy transfers. Splice pipes come from
 * a bounded pool and are held only while a splice pair (into the pipe, out of
 * it) runs; O_DIRECT buffers are aligned slabs registered with the ring
 * (fixed buffers), held while a transfer fills and writes one, never while it
 * waits for its client. A transfer that finds the pool lent out queues and is
 * called back, in order, when one is given back; a wait that lasts
 * CONNECTION_TIMEOUT ends with the callback's -ETIMEDOUT instead, and a
 * transfer that gives up takes its waits out of the queues (xfer_cancel). The
 * waiters are whoever asks (storage sinks, downloads): a callback, its context
 * and a key; xfer knows no connection.
 */
#ifndef ENGINE_STORE_XFER_H
#define ENGINE_STORE_XFER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/tmr.h"

struct ring;

#define XFER_PIPES 64               /* pipes one worker keeps open at most */
#define XFER_PIPE_SIZE (1u << 20)   /* pipe capacity asked for (F_SETPIPE_SZ) */
#define XFER_DBUFS 16               /* O_DIRECT buffers per worker */
#define XFER_DBUF_SIZE (512u << 10) /* bytes per O_DIRECT buffer */
#define XFER_ALIGN 4096u            /* O_DIRECT alignment of memory, offsets and lengths */

struct xfer_pipe {
    int rd; /* read end */
    int wr; /* write end */
};

/*
 * A waiter is called back with 0 when what it waits for may be had (it asks
 * again then), or with -ETIMEDOUT after CONNECTION_TIMEOUT.
 */
typedef void (*xfer_wait_fn)(void *ctx, int res);

/* One transfer waiting for a pipe or a buffer. */
struct xfer_waiter {
    xfer_wait_fn fn; /* called with 0 when served, -ETIMEDOUT at due */
    void *ctx;       /* the waiter's */
    uint64_t key;    /* what xfer_cancel() finds it by */
    uint64_t due;    /* monotonic ms at which the wait times out */
};

/*
 * Transfers waiting for a pipe or a buffer, first come first served. Every
 * wait lasts the same CONNECTION_TIMEOUT, so the head is also the first due.
 */
struct xfer_queue {
    struct xfer_waiter *w; /* ring of cap entries */
    uint32_t head;
    uint32_t count;
    uint32_t cap;
};

struct xfer {
    struct ring *ring;                 /* the owning worker's loop, for the timer */
    struct tmr timer;                  /* the first due wait of either queue */
    struct xfer_pipe idle[XFER_PIPES]; /* pipes open and empty */
    uint32_t nidle;
    uint32_t open;      /* pipes open: idle or lent */
    uint32_t pipe_size; /* capacity of a pipe, bytes */
    struct xfer_queue pipe_wait;
    char *dbuf_mem;                 /* XFER_DBUFS * XFER_DBUF_SIZE, registered; NULL: no O_DIRECT */
    uint16_t dbuf_free[XFER_DBUFS]; /* indexes of free buffers */
    uint32_t ndbuf_free;
    struct xfer_queue dbuf_wait;
};

/*
 * Set up a worker's pools; registers the O_DIRECT buffers with its ring when
 * direct is true (a failure only disables O_DIRECT, logged). Never fails.
 */
void xfer_init(struct xfer *x, struct ring *r, bool direct);
void xfer_fini(struct xfer *x);

/*
 * A pipe for one splice pair: true and *p, or false when the pool is lent out
 * (then fn(ctx, 0) runs once one comes back, unless fn is NULL; call
 * xfer_pipe_get() again there; fn(ctx, -ETIMEDOUT) runs instead after
 * CONNECTION_TIMEOUT) or no pipe can be made (-errno in *err, fn not queued).
 * key is the waiter's for xfer_cancel(): unique among those that wait.
 */
bool xfer_pipe_get(struct xfer *x, struct xfer_pipe *p, xfer_wait_fn fn, void *ctx, uint64_t key,
                   int *err);

/* Give a pipe back; empty is false when bytes may be left in it (it is closed). */
void xfer_pipe_put(struct xfer *x, struct xfer_pipe p, bool empty);

/* Whether O_DIRECT buffers are available on this worker at all. */
bool xfer_direct(const struct xfer *x);

/*
 * An O_DIRECT buffer index, or -1 when all are lent: then fn(ctx, 0) runs
 * when one is back (call xfer_dbuf_get() again there), or fn(ctx,
 * -ETIMEDOUT) after CONNECTION_TIMEOUT; a NULL fn queues nothing. key as
 * for xfer_pipe_get().
 */
int xfer_dbuf_get(struct xfer *x, xfer_wait_fn fn, void *ctx, uint64_t key);
void xfer_dbuf_put(struct xfer *x, int idx);
char *xfer_dbuf_addr(const struct xfer *x, int idx);

/*
 * Take the waiter of key out of every queue: its callbacks will not run.
 * Call when a transfer gives up, whether or not it waits.
 */
void xfer_cancel(struct xfer *x, uint64_t ref);

#endif /* ENGINE_STORE_XFER_H */

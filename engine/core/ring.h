/*
 * ring: one worker's event loop and nothing else. It owns the io_uring
 * (SINGLE_ISSUER | DEFER_TASKRUN), the provided-buffer ring, the timers,
 * the cached Date and the worker's metrics and log buffer, and it turns:
 * run the per-turn hooks, submit, wait, hand every completion to the
 * handler of its op kind. It names no tenant: each subsystem registers its
 * op kinds (ring_kind_add) and its per-turn work (ring_on_turn) at init.
 *
 * user_data is tagged: op kind (8 bits), generation (32), slot index (24).
 * The kind picks the handler; the handler checks the generation against its
 * slot, so a late CQE for a reused slot is dropped (32 bits of generation
 * take years of churn on one slot to wrap). This is H2O's command pointer
 * and liburing's proxy example's tagged data, with a table of kinds.
 *
 * Foreign sockets (libpq, hiredis) plug in through one seam: ring_poll_add/
 * ring_poll_del, a one-shot readiness watch with a callback.
 */
#ifndef ENGINE_CORE_RING_H
#define ENGINE_CORE_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/buf.h"
#include "engine/core/cfg.h"
#include "engine/core/met.h"
#include "engine/core/tmr.h"

struct io_uring;
struct io_uring_sqe;
struct io_uring_cqe;

#define RING_UD_IDX_BITS 24 /* slot index bits of user_data: 16M slots per kind */
#define RING_UD_IDX_MAX ((1u << RING_UD_IDX_BITS) - 1)
#define RING_KINDS 32     /* op kinds a ring can register */
#define RING_KIND_NONE 0  /* completions nobody waits for (cancels, closes of spent files) */
#define RING_TURN_HOOKS 8 /* per-turn hooks a ring can register */

static inline uint64_t ring_ud(uint8_t kind, uint32_t gen, uint32_t idx)
{
    return (uint64_t)kind << 56 | (uint64_t)gen << RING_UD_IDX_BITS | (idx & RING_UD_IDX_MAX);
}

#define RING_ENTRIES 4096           /* submission queue entries */
#define RING_CQ_ENTRIES 32768       /* completion queue entries */
#define RING_BUFS 512               /* provided receive buffers per worker */
#define RING_BUF_SIZE 32768         /* bytes per receive buffer */
#define RING_OP_FIXED_FD_INSTALL 54 /* opcodes newer than liburing 2.3's header */
#define RING_OP_FTRUNCATE 55

/*
 * The handler of an op kind: ctx is what was registered with it, idx and gen
 * come from the CQE's user_data.
 */
typedef void (*ring_cqe_fn)(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe);

/* Work before each wait (batches, re-arms); ctx as registered. */
typedef void (*ring_turn_fn)(void *ctx);

/* A foreign socket is ready: res is the poll's revents, or -errno. */
typedef void (*ring_poll_fn)(void *ctx, int res);

struct ring_kind {
    ring_cqe_fn fn;
    void *ctx;
    const char *name; /* for logs */
};

struct ring_turn {
    ring_turn_fn fn;
    void *ctx;
};

/* A readiness watch of the poll seam (see ring_poll_add). */
struct ring_watch {
    ring_poll_fn fn;
    void *ctx;
    int fd;
    uint32_t gen;  /* bumped when disarmed: a late CQE is dropped */
    uint32_t mask; /* events armed */
    uint32_t next; /* free list link */
    bool armed;    /* a poll is in flight */
};

struct ring {
    struct io_uring *uring; /* the worker's ring */
    const struct cfg *cfg;  /* shared, read-only */
    uint32_t id;            /* worker index, 0-based */
    uint64_t now_ms;        /* monotonic ms at the start of this loop turn */
    int64_t date_sec;       /* second of the cached Date */
    char date[30];          /* IMF-fixdate for response heads */
    struct buf_ring bufs;   /* provided receive buffers */
    struct tmr_heap timers; /* this worker's timers */
    bool has_fd_install;    /* the kernel installs direct descriptors as files (6.8) */
    bool has_ftruncate;     /* the kernel has IORING_OP_FTRUNCATE (6.9) */
    struct met_worker met;  /* this worker's metrics */
    struct ring_kind kinds[RING_KINDS];
    uint8_t nkinds;    /* kinds registered (0 is RING_KIND_NONE) */
    uint8_t kind_poll; /* the poll seam's kind */
    struct ring_turn turns[RING_TURN_HOOKS];
    uint8_t nturns;
    struct ring_watch *watches; /* the poll seam's watches */
    uint32_t nwatches;          /* allocated */
    uint32_t watch_free;        /* first free watch, UINT32_MAX if none */
};

/*
 * Create the ring on the calling thread (a SINGLE_ISSUER ring is driven by
 * the thread that made it): io_uring, direct descriptor table, provided
 * buffers, timers. r is zeroed by the caller, who may have registered its
 * metrics (met_register) already. Returns 0 or -errno (logged).
 */
int ring_init(struct ring *r, const struct cfg *cfg, uint32_t id);

/* Free what ring_init() made. */
void ring_fini(struct ring *r);

/* Register an op kind's handler; returns the kind for ring_ud(). Init only. */
uint8_t ring_kind_add(struct ring *r, const char *name, ring_cqe_fn fn, void *ctx);

/* Register work to run before each wait, in registration order. Init only. */
void ring_on_turn(struct ring *r, ring_turn_fn fn, void *ctx);

/*
 * One loop turn: per-turn hooks, then submit, wait for a completion (or the
 * next timer, or max_wait_ms when not UINT64_MAX) and dispatch every ready
 * CQE. Returns 0 or -errno.
 */
int ring_turn(struct ring *r, uint64_t max_wait_ms);

/* Dispatch one CQE (a caller draining the ring at the end). */
void ring_dispatch(struct ring *r, const struct io_uring_cqe *cqe);

/*
 * A submission queue entry; submits to make room when the queue is full.
 * Never returns NULL.
 */
struct io_uring_sqe *ring_sqe(struct ring *r);

/* Refresh r->date if the second changed (once per loop turn). */
void ring_tick_date(struct ring *r);

/*
 * The poll seam for foreign sockets (libpq, hiredis): watch fd for mask
 * (POLLIN, POLLOUT). fn(ctx, revents or -errno) runs once, when the socket
 * is ready; arm again for more. Arming an armed watch widens it to the new
 * mask (a poll update). *watch is 0 before the first add; ring_poll_del()
 * disarms it (fn does not run for it any more) and sets it back to 0.
 */
void ring_poll_add(struct ring *r, uint32_t *watch, int fd, unsigned mask, ring_poll_fn fn,
                   void *ctx);
void ring_poll_del(struct ring *r, uint32_t *watch);

/* True while the watch has a poll in flight. */
bool ring_poll_armed(const struct ring *r, uint32_t watch);

#endif /* ENGINE_CORE_RING_H */

/*
 * ring: one worker's runtime. Each worker thread owns a struct ring: its
 * io_uring (SINGLE_ISSUER | DEFER_TASKRUN), its SO_REUSEPORT listener with
 * multishot accept, its provided-buffer ring, its timers, connections,
 * metrics and log buffer. Nothing here is touched by another thread except
 * the stop flag and the wake eventfd.
 *
 * user_data is tagged: op kind (8 bits), generation (32), slot index (24),
 * decoded in one place (ring_dispatch), so a late CQE for a reused slot is
 * recognised by its stale generation and dropped. 32 bits of generation take
 * years of churn on one slot to wrap (16 bits wrapped in about a second).
 */
#ifndef ENGINE_RING_H
#define ENGINE_RING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/auth.h"
#include "engine/buf.h"
#include "engine/cfg.h"
#include "engine/conn.h"
#include "engine/db.h"
#include "engine/log.h"
#include "engine/met.h"
#include "engine/tmr.h"
#include "engine/xfer.h"

struct io_uring;
struct io_uring_sqe;

enum ring_op_kind {
    RING_OP_NONE,     /* ignored completions (e.g. cancels of ring-level ops) */
    RING_OP_ACCEPT,   /* multishot accept on the listener */
    RING_OP_RECV,     /* a connection's multishot receive */
    RING_OP_SEND,     /* a connection's send */
    RING_OP_SHUTDOWN, /* a connection's shutdown(SHUT_WR) before lingering */
    RING_OP_CANCEL,   /* a connection's cancel of its own ops */
    RING_OP_CLOSE,    /* a connection's close of its direct descriptor */
    RING_OP_DB,       /* a poll on a database connection's socket (idx: pool << 8 | slot) */
    RING_OP_CONN,     /* a route's own op on a connection (a file write...) */
    RING_OP_WAKE,     /* read of the wake eventfd */
    RING_OP_LOG,      /* write of the log buffer to stderr */
    RING_OP__MAX,
};

#define RING_UD_IDX_BITS 24 /* slot index bits of user_data: 16M slots per kind */
#define RING_UD_IDX_MAX ((1u << RING_UD_IDX_BITS) - 1)

static inline uint64_t ring_ud(enum ring_op_kind kind, uint32_t gen, uint32_t idx)
{
    return (uint64_t)kind << 56 | (uint64_t)gen << RING_UD_IDX_BITS | (idx & RING_UD_IDX_MAX);
}

#define RING_ENTRIES 4096           /* submission queue entries */
#define RING_CQ_ENTRIES 32768       /* completion queue entries */
#define RING_BUFS 512               /* provided receive buffers per worker */
#define RING_BUF_SIZE 32768         /* bytes per receive buffer */
#define RING_OP_FIXED_FD_INSTALL 54 /* opcodes newer than liburing 2.3's header */
#define RING_OP_FTRUNCATE 55

struct ring {
    struct io_uring *uring;         /* the worker's ring */
    const struct cfg *cfg;          /* shared, read-only */
    uint32_t id;                    /* worker index, 0-based */
    int listen_fd;                  /* this worker's SO_REUSEPORT listener, -1 once closed */
    int wake_fd;                    /* eventfd another thread writes to wake us */
    uint64_t wake_val;              /* target of the eventfd read */
    bool accept_armed;              /* multishot accept in flight */
    bool wake_armed;                /* eventfd read in flight */
    bool log_inflight;              /* a log write is in flight */
    bool stopping;                  /* shutdown began: no accepts, drain connections */
    int stop_requested;             /* set by the main thread (atomic) */
    uint64_t now_ms;                /* monotonic ms at the start of this loop turn */
    int64_t date_sec;               /* second of the cached Date */
    char date[30];                  /* IMF-fixdate for response heads */
    struct buf_ring bufs;           /* provided receive buffers */
    struct tmr_heap timers;         /* this worker's timers */
    struct tmr accept_retry;        /* re-arms accept after EMFILE/ENFILE */
    struct tmr stop_timer;          /* SHUTDOWN_TIMEOUT */
    struct conn_pool conns;         /* connection slots */
    struct db_pool db[2];           /* database slices: primary, read replica */
    uint8_t ndb;                    /* pools in use: 1, or 2 with DB_READ_URL */
    bool db_stopped;                /* db_pool_stop() done at shutdown */
    struct auth_cache auth;         /* bearer tokens seen lately */
    struct xfer xfer;               /* splice pipes and O_DIRECT buffers */
    bool has_fd_install;            /* the kernel installs direct descriptors as files (6.8) */
    bool has_ftruncate;             /* the kernel has IORING_OP_FTRUNCATE (6.9) */
    struct met_worker met;          /* this worker's metrics */
    struct log_buf log;             /* this worker's log lines */
    size_t log_off;                 /* bytes of the in-flight log buffer already written */
    size_t log_len;                 /* bytes in the in-flight log buffer */
    unsigned long log_dropped_seen; /* log.dropped already counted in met */
    pthread_t thread;               /* the worker thread */
    int setup_status;               /* the thread's set-up result, written before ready */
    int ready;                      /* set (atomic) once setup_status is valid */
    int finished;                   /* set (atomic) when the thread is about to end */
    int exit_code;                  /* 0 on a clean stop */
};

/*
 * Prepare a worker on the main thread: its listener (bound to the configured
 * address with SO_REUSEPORT, backlog 4096) and its wake eventfd. Returns 0 or
 * -errno, logging what failed.
 */
int ring_setup(struct ring *r, const struct cfg *cfg, uint32_t id);

/*
 * Start the worker thread. The thread creates its own io_uring (a
 * SINGLE_ISSUER ring must be created and driven by one thread) and buffers;
 * ring_start() waits until it has, and returns its status: 0 or -errno.
 */
int ring_start(struct ring *r);

/* Wait for the worker to finish; returns its exit code (0 after a clean stop). */
int ring_join(struct ring *r);

/* True once the worker thread is done (any thread). */
static inline bool ring_finished(const struct ring *r)
{
    return __atomic_load_n(&r->finished, __ATOMIC_ACQUIRE) != 0;
}

/* Ask a worker to stop (any thread). */
void ring_stop(struct ring *r);

/*
 * Drive a ring on the calling thread, without listener or thread (tools and
 * benchmarks that exercise the database slices): init, then ring_turn() as
 * often as needed (each turn runs timers and batches, submits, waits up to
 * max_wait_ms for a completion and dispatches), then fini. Returns 0 or -errno.
 */
int ring_init_local(struct ring *r, const struct cfg *cfg);
int ring_turn(struct ring *r, uint64_t max_wait_ms);
void ring_fini_local(struct ring *r);

/* Free what ring_setup() created (after the thread joined). */
void ring_teardown(struct ring *r);

/*
 * A submission queue entry; submits to make room when the queue is full.
 * Never returns NULL.
 */
struct io_uring_sqe *ring_sqe(struct ring *r);

/* Refresh r->date if the second changed (once per loop turn). */
void ring_tick_date(struct ring *r);

#endif /* ENGINE_RING_H */

/*
 * worker: one core, composed. A worker owns a thread and everything that
 * thread drives: its ring (the loop), its SO_REUSEPORT listener with
 * multishot accept, the wake eventfd, the log flusher, and the tenants:
 * connection slots, database and Redis slices, the token cache, the transfer pools,
 * the storage sinks and the routes. It inits them in dependency order,
 * stops them in reverse, and starts and ends the thread. Nothing here is
 * touched by another thread except the stop flag and the wake eventfd.
 */
#ifndef ENGINE_WORKER_H
#define ENGINE_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/core/cfg.h"
#include "engine/core/log.h"
#include "engine/core/ring.h"
#include "engine/core/tmr.h"
#include "engine/db/auth.h"
#include "engine/db/db.h"
#include "engine/routes/router.h"
#include "engine/store/sink.h"
#include "engine/store/xfer.h"

struct conn_pool;
struct redis_pool;
struct lim;
struct events;
struct progress;

struct worker {
    struct ring ring;      /* the loop */
    const struct cfg *cfg; /* shared, read-only */
    uint32_t id;           /* worker index, 0-based */
    int listen_fd;         /* this worker's SO_REUSEPORT listener, -1 once closed */
    int wake_fd;           /* eventfd another thread writes to wake us */
    uint64_t wake_val;     /* target of the eventfd read */
    uint8_t kind_accept;   /* op kinds of the worker's own ops */
    uint8_t kind_wake;
    uint8_t kind_log;
    bool accept_armed;              /* multishot accept in flight */
    bool wake_armed;                /* eventfd read in flight */
    bool log_inflight;              /* a log write is in flight */
    bool stopping;                  /* shutdown began: no accepts, drain connections */
    int stop_requested;             /* set by the main thread (atomic) */
    struct tmr accept_retry;        /* re-arms accept after EMFILE/ENFILE */
    struct tmr stop_timer;          /* SHUTDOWN_TIMEOUT */
    struct conn_pool *conns;        /* connection slots */
    struct db_pool db[2];           /* database slices: primary, read replica */
    uint8_t ndb;                    /* pools in use: 1, or 2 with DB_READ_URL */
    bool db_stopped;                /* db_pool_stop() done at shutdown */
    struct redis_pool *redis;       /* the Redis slice */
    struct lim *lim;                /* the upload rate limits */
    struct auth_cache auth;         /* bearer tokens seen lately */
    struct xfer xfer;               /* splice pipes and O_DIRECT buffers */
    struct sink_pool sinks;         /* storage sinks */
    struct router router;           /* what the routes reach of this worker */
    struct events *events;          /* file events waiting for Redis */
    struct progress *progress;      /* uploads whose progress Redis shows */
    bool events_stopping;           /* events_stop() done at shutdown */
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
int worker_setup(struct worker *w, const struct cfg *cfg, uint32_t id);

/*
 * Start the worker thread. The thread creates its own ring (a SINGLE_ISSUER
 * ring must be created and driven by one thread) and tenants; worker_start()
 * waits until it has, and returns its status: 0 or -errno.
 */
int worker_start(struct worker *w);

/* Wait for the worker to finish; returns its exit code (0 after a clean stop). */
int worker_join(struct worker *w);

/* True once the worker thread is done (any thread). */
static inline bool worker_finished(const struct worker *w)
{
    return __atomic_load_n(&w->finished, __ATOMIC_ACQUIRE) != 0;
}

/* Ask a worker to stop (any thread). */
void worker_stop(struct worker *w);

/* Free what worker_setup() created (after the thread joined). */
void worker_teardown(struct worker *w);

#endif /* ENGINE_WORKER_H */

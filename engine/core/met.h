/*
 * met: metrics. Each worker owns a struct met_worker and is its only writer
 * (plain increments through met_inc, no locked instructions); /metrics sums
 * all workers with relaxed loads. Registered at start-up, before threads run.
 */
#ifndef ENGINE_CORE_MET_H
#define ENGINE_CORE_MET_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/prom.h"

#define MET_MAX_WORKERS 256
#define MET_DUR_BUCKETS 14 /* request duration bounds, see met.c */
#define MET_DB_POOLS 2     /* primary, read replica */

/* Upload routes and the reasons an upload fails, as metric labels. */
enum met_up_route { MET_UP_PUT, MET_UP_POST, MET_UP_TUS, MET_UP__N };
enum met_up_fail {
    MET_UF_TOO_LARGE,     /* grew past MAX_FILE_SIZE */
    MET_UF_STORAGE_FULL,  /* no space (507) */
    MET_UF_STORAGE_ERROR, /* any other storage error */
    MET_UF_DATABASE,      /* the row could not be written */
    MET_UF_CLIENT_GONE,   /* the connection closed mid-upload */
    MET_UF__N,
};

/* A rate-limit decision, as a metric label. */
enum met_rl { MET_RL_ALLOWED, MET_RL_REJECTED_USER, MET_RL_REJECTED_GLOBAL, MET_RL__N };

/* Why a storage sink failed, as a metric label. */
enum met_sink_fail {
    MET_SF_NO_SPACE, /* ENOSPC, EDQUOT */
    MET_SF_IO,       /* any other error of the filesystem */
    MET_SF_SOURCE,   /* the socket it read from failed or ended early */
    MET_SF_BUSY,     /* a pipe or O_DIRECT buffer stayed lent for CONNECTION_TIMEOUT */
    MET_SF__N,
};

/* One database pool of one worker. */
struct met_db {
    uint64_t open;                     /* gauge: connections open or opening */
    uint64_t busy;                     /* gauge: connections with queries in flight */
    uint64_t max;                      /* gauge: connections allowed */
    uint64_t waiting;                  /* gauge: queries waiting for a connection */
    uint64_t queries;                  /* queries answered or failed */
    uint64_t errors;                   /* queries failed */
    uint64_t dur[MET_DUR_BUCKETS + 1]; /* query duration histogram */
    uint64_t dur_us_sum;               /* sum of query durations, µs */
};

/* Why a Redis command failed, as a metric label. */
enum met_redis_err {
    MET_RE_TIMEOUT, /* no answer within REDIS_COMMAND_TIMEOUT */
    MET_RE_CONN,    /* the connection was lost (or the pool stopped) */
    MET_RE_REPLY,   /* Redis answered with an error */
    MET_RE__N,
};

/* One worker's Redis slice. */
struct met_redis {
    uint64_t open;                     /* gauge: connections open or opening */
    uint64_t busy;                     /* gauge: connections with commands in flight */
    uint64_t inflight;                 /* gauge: commands in flight */
    uint64_t max;                      /* gauge: connections the slice may open */
    uint64_t up;                       /* gauge: 1 while a connection is ready */
    uint64_t commands;                 /* commands answered or failed */
    uint64_t errors[MET_RE__N];        /* commands failed, by kind */
    uint64_t writes;                   /* socket writes (a turn's commands go in one) */
    uint64_t reconnects;               /* connections opened to replace lost or failed ones */
    uint64_t noscript;                 /* EVALSHA answered NOSCRIPT and sent again as EVAL */
    uint64_t dur[MET_DUR_BUCKETS + 1]; /* command duration histogram */
    uint64_t dur_us_sum;               /* sum of command durations, µs */
};

struct met_worker {
    uint64_t conn_open;                    /* gauge: connections open now */
    uint64_t conn_accepted;                /* connections accepted */
    uint64_t conn_rejected;                /* connections refused at MAX_CONNECTIONS */
    uint64_t conn_timed_out;               /* connections cut by CONNECTION_TIMEOUT */
    uint64_t accept_errors;                /* accept failures (EMFILE, ENFILE, ...) */
    uint64_t bytes_received;               /* bytes read from sockets */
    uint64_t bytes_sent;                   /* bytes written to sockets */
    uint64_t recv_enobufs;                 /* receives stopped for want of a provided buffer */
    uint64_t bufs_free;                    /* gauge: provided receive buffers on the ring */
    uint64_t bufs_total;                   /* gauge: provided receive buffers in all */
    uint64_t heads_in_use;                 /* gauge: request heads held by requests in progress */
    uint64_t log_dropped;                  /* log lines dropped (stderr too slow) */
    uint64_t req_by_code[600];             /* requests answered, by status code */
    uint64_t req_dur[MET_DUR_BUCKETS + 1]; /* request duration histogram */
    uint64_t req_dur_us_sum;               /* sum of request durations, µs */
    uint64_t db_rejected;                  /* requests refused: database wait queue full */
    uint64_t auth_cache_hits;              /* bearer tokens resolved from the worker's cache */
    uint64_t auth_cache_misses;            /* bearer tokens not answered from the cache */
    uint64_t auth_lookups;                 /* token lookups sent to the database */
    uint64_t auth_coalesced;               /* requests that waited for a lookup in flight */
    uint64_t auth_refused;                 /* requests refused: too many lookups in flight */
    uint64_t auth_strikeouts;              /* connections closed for too many bad tokens */
    struct met_db db[MET_DB_POOLS];        /* database pools */
    struct met_redis redis;                /* the Redis slice */
    uint64_t up_started[MET_UP__N];        /* uploads whose file was created, by route */
    uint64_t up_completed[MET_UP__N];      /* uploads answered 201, by route */
    uint64_t up_failed[MET_UP__N][MET_UF__N]; /* uploads that failed, by route and reason */
    uint64_t up_bytes_buffered;               /* body bytes written from receive buffers */
    uint64_t up_files_open;                   /* gauge: files held open by uploads in flight */
    uint64_t up_bytes_spliced;                /* body bytes spliced socket -> pipe -> file */
    uint64_t up_bytes_direct;                 /* body bytes written with O_DIRECT */
    uint64_t dl_bytes_spliced;                /* download bytes spliced file -> pipe -> socket */
    uint64_t dl_bytes_buffered;               /* download bytes read into output buffers */
    uint64_t pipes_in_use;                    /* gauge: splice pipes lent out */
    uint64_t pipes_open;                      /* gauge: splice pipes open (lent or pooled) */
    uint64_t pipe_waits;                      /* splices that waited for a free pipe */
    uint64_t dbufs_in_use;                    /* gauge: O_DIRECT buffers lent out */
    uint64_t dbufs_total;                     /* gauge: O_DIRECT buffers */
    uint64_t dbuf_waits;                      /* O_DIRECT reads that waited for a free buffer */
    uint64_t dbuf_fallbacks;     /* O_DIRECT-sized bodies that found no buffer: page cache */
    uint64_t xfer_wait_timeouts; /* waits for a pipe or buffer cut at CONNECTION_TIMEOUT */
    uint64_t dir_syncs;          /* fsyncs of directories whose entries an upload made */
    uint64_t up_unknown;         /* uploads whose rows' commit was unknown: looked up */
    uint64_t up_kept;            /* uploads whose files were kept for fsck (outcome unknown) */
    uint64_t up_dur[MET_DUR_BUCKETS + 1]; /* upload duration histogram (head to 201) */
    uint64_t up_dur_us_sum;

    uint64_t sinks_open;             /* gauge: storage sinks in use (aborted ones finishing too) */
    uint64_t sink_committed;         /* sinks that committed their object */
    uint64_t sink_failed[MET_SF__N]; /* sinks that failed, by reason */
    uint64_t sink_aborted;           /* sinks their caller gave up before the outcome */

    uint64_t rl_decisions[MET_RL__N];      /* rate-limit decisions, by outcome and scope */
    uint64_t rl_lease_calls;               /* lease calls sent to Redis */
    uint64_t rl_leased;                    /* permits leased from Redis */
    uint64_t rl_returned;                  /* unused permits given back to Redis */
    uint64_t rl_local;                     /* decisions of the local fallback (Redis away) */
    uint64_t rl_shared;                    /* gauge: 1 while the worker's limits go through Redis */
    uint64_t rl_instances;                 /* gauge (worker 0): instances seen lately */
    uint64_t mcache_hits;                  /* GET /v1/files/{id} answered from Redis */
    uint64_t mcache_misses;                /* looked up in Redis, answered by the database */
    uint64_t mcache_stores;                /* entries sent to Redis after a miss */
    uint64_t mcache_invalidations;         /* tombstones sent to Redis */
    uint64_t mcache_invalidations_skipped; /* tombstones not sent: Redis down */
    uint64_t progress_writes;              /* upload progress records sent to Redis */
    uint64_t progress_skipped;             /* progress records not sent: Redis down */
    uint64_t events_sent;                  /* events Redis acknowledged */
    uint64_t events_backlog;               /* gauge: events waiting for Redis */
    uint64_t events_dropped;               /* events dropped: the backlog was full */
};

/* Single-writer increment: the owner thread only. */
static inline void met_add(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline void met_inc(uint64_t *c)
{
    met_add(c, 1);
}

static inline void met_dec(uint64_t *c)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) - 1, __ATOMIC_RELAXED);
}

static inline void met_set(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, v, __ATOMIC_RELAXED);
}

/* Register a worker's metrics (start-up only, before workers run). */
void met_register(struct met_worker *m);

/* Count one answered request (owner thread). */
void met_request(struct met_worker *m, int status, uint64_t dur_us);

/* Count one finished upload (owner thread). */
void met_upload_done(struct met_worker *m, enum met_up_route route, uint64_t dur_us);

/* Count one database query of a pool (owner thread). */
void met_db_query(struct met_db *m, bool failed, uint64_t dur_us);

/* Count one Redis command answered or failed (owner thread). */
void met_redis_cmd(struct met_redis *m, uint64_t dur_us);

/* Render every family in Prometheus text into b. Any thread. */
void met_render(struct prom_buf *b);

#endif /* ENGINE_CORE_MET_H */

/*
 * db: a worker's slice of PostgreSQL connections, driven from its ring.
 *
 * Each worker owns one pool per server (primary, and the read replica when
 * DB_READ_URL is set). Connections are opened with PQconnectStartParams and
 * PQconnectPoll, put in pipeline mode, and prepare every statement of
 * enum db_stmt once; queries are PQsendQueryPrepared + PQpipelineSync, so
 * queries of one loop turn leave in one write and a failed one does not
 * abort its neighbours. Readiness comes from poll SQEs on PQsocket: no libpq
 * call on a worker ever blocks (PQsetnonblocking).
 *
 * DB_QUERY_TIMEOUT is the server's statement_timeout (PostgreSQL cancels the
 * statement itself); a query that still has no answer DB_QUERY_GRACE_MS
 * later fails and its connection is dropped. Requests wait in a bounded
 * queue when every connection is busy; past DB_WAIT_MAX db_query() refuses.
 * A lost connection is reopened with backoff; its idempotent queries are
 * retried once, the others fail with -ECONNABORTED (their outcome unknown).
 */
#ifndef ENGINE_DB_DB_H
#define ENGINE_DB_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/core/met.h"
#include "engine/core/tmr.h"

struct ring;
struct pg_conn;
struct pg_result;

#define DB_PARAMS_MAX 8    /* parameters per statement */
#define DB_PARAM_BYTES 640 /* parameter bytes per query, copied in */
#define DB_BATCH_MAX 1000  /* rows in one batched INSERT */
#define DB_PIPE_MAX 16     /* queries in flight on one connection */
#define DB_BATCHES_OUT 1   /* batched inserts in flight per pool; rows gather meanwhile */
#define DB_WAIT_MAX 1024   /* queries waiting for a connection, per pool */
#define DB_QUERY_GRACE_MS 2000
#define DB_BACKOFF_MIN_MS 100
#define DB_BACKOFF_MAX_MS 5000

/* The prepared statements; their SQL lives in db.c. */
enum db_stmt {
    DB_TOKEN_LOOKUP,    /* $1 token hash (bytea) -> user_name of an unrevoked token */
    DB_FILE_GET,        /* $1 id, $2 owner -> one file's metadata */
    DB_FILE_LIST,       /* $1 owner, $2 limit -> newest files */
    DB_FILE_LIST_AFTER, /* $1 owner, $2 limit, $3 created_at, $4 id -> files before the cursor */
    DB_FILE_DELETE,     /* $1 id, $2 owner -> storage_key, size, sha256, mime of the deleted row */
    DB_FILE_INSERT,
    /* one files row: id, owner, name, size, status, storage_key, priority */
    DB_FILE_INSERT_MANY, /* the same seven columns as arrays: many rows, one statement */
    DB_FILE_CONTENT,     /* $1 id, $2 owner -> storage_key, size, name, mime, sha256, status */
    DB_FILE_RECORDED,    /* $1 id, $2 storage_key -> one row if that file's row is in */
    DB_STMT__MAX,
};

/*
 * Completion of a query, on the ring thread. res is valid only during the
 * call (db owns it). err: 0 with res a PGRES_TUPLES_OK / COMMAND_OK result;
 * -EINVAL with res the server's error; -ETIMEDOUT (statement timeout or no
 * answer in time: whether it ran is unknown); -EIO (never sent: no
 * connection could be had, res NULL); -ECONNABORTED (sent, and the
 * connection was lost before the answer: whether it ran and committed is
 * unknown, res NULL).
 */
typedef void (*db_cb)(void *ud, uint64_t tag, struct pg_result *res, int err);

/* One query, from the pool's free list; parameters are copied into it. */
struct db_query {
    struct db_query *next;
    db_cb cb;              /* NULL for the pool's own statements (prepare) */
    void *ud;              /* callback context */
    uint64_t tag;          /* callback context (e.g. a connection reference) */
    uint64_t start_ns;     /* when it was queued, for the duration histogram */
    uint64_t deadline_ms;  /* fail it when still unanswered then */
    struct pg_result *res; /* the result collected so far */
    uint8_t stmt;          /* enum db_stmt, or DB_STMT__MAX + n for prepare of stmt n */
    uint8_t nparams;
    uint8_t binary;  /* bit i: parameter i is binary */
    uint8_t retries; /* times re-sent after a lost connection */
    uint16_t group;  /* a files row: rows of its group from this one on (see db_insert_files) */
    uint32_t plen[DB_PARAMS_MAX];
    uint32_t poff[DB_PARAMS_MAX];
    char *pext;            /* heap parameters of a batch (else pbuf), freed with the query */
    struct db_query *rows; /* a batch: the row queries it carries */
    char pbuf[DB_PARAM_BYTES];
};

/* One files row to insert (all strings NUL-terminated, copied by db_insert_file). */
struct db_file_row {
    const char *id; /* UUID text */
    const char *owner;
    const char *name;
    uint64_t size;
    const char *status; /* e.g. "queued" */
    const char *storage_key;
    int priority;
};

enum db_conn_state {
    DB_FREE,       /* slot unused */
    DB_CONNECTING, /* PQconnectPoll in progress */
    DB_PREPARING,  /* statements being prepared */
    DB_READY,      /* takes queries */
};

/* What the next PQgetResult of the oldest in-flight query should give. */
enum db_stage { DB_EXPECT_RESULT, DB_EXPECT_END, DB_EXPECT_SYNC };

struct db_pool;

struct db_conn {
    struct pg_conn *pg;       /* libpq connection */
    struct db_pool *pool;     /* owner */
    int fd;                   /* PQsocket, -1 when none */
    uint32_t gen;             /* bumped per connection attempt: stale polls are dropped */
    uint8_t idx;              /* slot in the pool */
    uint8_t state;            /* enum db_conn_state */
    uint8_t stage;            /* enum db_stage */
    uint8_t want_out : 1;     /* libpq has unsent output */
    uint8_t closing : 1;      /* dropped: waiting for its poll to come back */
    uint32_t watch;           /* the ring's poll watch of fd (ring_poll_add), 0 if none */
    uint32_t poll_mask;       /* what the next poll should wait for while connecting */
    uint32_t depth;           /* queries in flight */
    struct db_query *q_first; /* in flight, oldest first */
    struct db_query *q_last;
    uint64_t idle_since_ms; /* when depth last dropped to 0 */
    struct tmr timer;       /* connect timeout, query deadline, idle timeout */
};

#define DB_CONNS_MAX 255

struct db_pool {
    struct ring *ring;
    uint8_t id;               /* 0 primary, 1 read replica */
    const char *conninfo;     /* libpq conninfo or URL */
    const char *name;         /* "primary" or "read", for logs and metrics */
    char timeout_opt[96];     /* "-c statement_timeout=N[ -c synchronous_commit=off]" */
    uint32_t min;             /* connections kept open */
    uint32_t max;             /* connections at most */
    uint32_t open;            /* slots not DB_FREE */
    uint32_t ready;           /* connections in DB_READY */
    uint32_t query_timeout;   /* ms */
    uint32_t connect_timeout; /* ms */
    uint32_t idle_timeout;    /* ms */
    struct db_conn conns[DB_CONNS_MAX];
    struct db_query *wait_first; /* waiting for a connection, oldest first */
    struct db_query *wait_last;
    uint32_t waiting;
    struct db_query *free_q;      /* spare query structs */
    struct db_query *batch_first; /* rows to insert, gathered during this loop turn */
    struct db_query *batch_last;
    uint32_t batched;     /* rows in the batch */
    uint32_t batches_out; /* batched inserts sent and not answered */
    bool batch_off;       /* insert row by row (for measurements) */
    uint64_t backoff_ms;  /* next reconnect delay after a failure */
    uint64_t retry_at_ms; /* no new connection before this */
    bool failing;         /* the last connection attempt failed */
    bool stopping;        /* closing down: no new connections */
    struct tmr timer;     /* reconnect backoff and wait-queue deadlines */
    struct met_db *m;     /* this pool's metrics in the worker's met */
};

/*
 * Resolve the host name of pool id's conninfo (0 primary, 1 read) once, on
 * the main thread before workers start, so that no worker ever blocks in
 * getaddrinfo: connections then carry hostaddr= with the address found.
 * Socket directories, literal addresses and multi-host lists are left to * libpq. A name that does
 * not resolve makes that pool's connections fail at once (never a lookup on a worker) until a later
 * db_resolve() succeeds. Main thread. Returns 0, or -EINVAL / -EHOSTUNREACH with err set.
 */
int db_resolve(uint8_t id, const char *conninfo, char *err, size_t errlen);

/* True while pool id's host name is unresolved (main thread: try db_resolve() again). */
bool db_unresolved(uint8_t id);

/*
 * Set up a pool on the ring r (ring thread): its sockets are watched through
 * r's poll seam, its batches go out from a turn hook. Opens min connections
 * in the background. Never fails: connection problems surface per query.
 */
void db_pool_init(struct db_pool *p, struct ring *r, uint8_t id, const char *conninfo,
                  const char *name, uint32_t min, uint32_t max);

/* Close every connection; failing what is queued or in flight with -EIO. */
void db_pool_stop(struct db_pool *p);

/* Free what db_pool_init() allocated (after the ring stopped). */
void db_pool_free(struct db_pool *p);

/*
 * Queue a prepared statement. vals[i] points to lens[i] bytes (text unless
 * bit i of binary is set); they are copied. idempotent queries are re-sent
 * once after a lost connection. Returns 0 (cb will be called exactly once,
 * never from inside db_query), -EAGAIN when the wait queue is full, -E2BIG
 * when the parameters do not fit.
 */
int db_query(struct db_pool *p, enum db_stmt stmt, const char *const *vals, const int *lens,
             unsigned n, unsigned binary, bool idempotent, db_cb cb, void *ud, uint64_t tag);

/*
 * Insert the files rows of one request, rows[0..n), as one unit: they commit
 * together or not at all. Rows inserted during one loop turn leave together
 * as one multi-row INSERT (one round trip, one commit); if that statement
 * fails, each request's rows are retried alone, so one bad row fails only its
 * own request. cb runs once per row (tag + i), with the same err for each.
 * Not idempotent: rows whose connection is lost fail with -ECONNABORTED (the
 * caller finds out whether they are in, e.g. with DB_FILE_RECORDED). Returns
 * 0, or -EAGAIN / -E2BIG like db_query() (then no row is queued).
 */
int db_insert_files(struct db_pool *p, const struct db_file_row *rows, unsigned n, db_cb cb,
                    void *ud, uint64_t tag);

/* db_insert_files() of one row. */
int db_insert_file(struct db_pool *p, const struct db_file_row *row, db_cb cb, void *ud,
                   uint64_t tag);

/*
 * ---- rows of the statements' results ----
 * For a db_cb's res (err 0) of the statement named; row < db_rows(res).
 * Strings point into res: valid during the callback only. The column order
 * is db.c's business.
 */

/* Rows in a result. */
int db_rows(const struct pg_result *res);

/* DB_TOKEN_LOOKUP: the token's user. */
const char *db_token_user(const struct pg_result *res, int row);

/* One file's metadata: a row of DB_FILE_GET, DB_FILE_LIST or DB_FILE_LIST_AFTER. */
struct db_file_meta {
    const char *id;           /* UUID text */
    const char *name;         /* the stored file name */
    uint64_t size;            /* bytes */
    const char *mime;         /* sniffed type, NULL until known */
    const char *sha256;       /* lowercase hex, NULL until hashed */
    const char *status;       /* uploading, queued, processing, ready, rejected, failed */
    const char *created_at;   /* RFC 3339 UTC with microseconds (NULL only if the row has none) */
    const char *processed_at; /* the same, NULL until processed */
    const char *error;        /* why it failed or was rejected, else NULL */
};
void db_file_meta_get(const struct pg_result *res, int row, struct db_file_meta *m);

/* A row of DB_FILE_CONTENT: what a download needs. */
struct db_file_content {
    const char *storage_key; /* objects/ab/cd/<id>, relative to STORAGE_DIR */
    uint64_t size;           /* bytes */
    const char *name;        /* the stored file name */
    const char *mime;        /* NULL until sniffed */
    const char *sha256;      /* NULL until hashed */
    const char *status;      /* as in struct db_file_meta */
};
void db_file_content_get(const struct pg_result *res, int row, struct db_file_content *f);

/* DB_FILE_DELETE: the storage key of the deleted row. */
const char *db_file_deleted_key(const struct pg_result *res, int row);

/* A row of DB_FILE_DELETE: where its bytes were and what its file.deleted event says. */
struct db_file_deleted {
    const char *storage_key; /* objects/ab/cd/<id> */
    uint64_t size;           /* bytes */
    const char *sha256;      /* NULL until processed */
    const char *mime;        /* NULL until processed */
};
void db_file_deleted_get(const struct pg_result *res, int row, struct db_file_deleted *d);

#endif /* ENGINE_DB_DB_H */

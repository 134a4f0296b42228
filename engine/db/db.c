/*
 * db: PostgreSQL connection slices in the ring. See db.h for the model.
 */
#include "engine/db/db.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <liburing.h>

#include "engine/core/log.h"
#include "engine/core/ring.h"

/*
 * Result columns, next to the SQL that selects them (keep both in the same
 * order): callers read rows only through the accessors at the end of this
 * file.
 */
enum token_col { TOKEN_USER }; /* DB_TOKEN_LOOKUP: user_name */

/* FILE_COLS: a file's metadata, for DB_FILE_GET, DB_FILE_LIST and DB_FILE_LIST_AFTER. */
enum file_col {
    FILE_ID,
    FILE_NAME,
    FILE_SIZE,
    FILE_MIME,
    FILE_SHA256,
    FILE_STATUS,
    FILE_CREATED,
    FILE_PROCESSED,
    FILE_ERROR,
};
#define FILE_COLS                                                                                  \
    "id::text, name, size, mime, sha256, status, "                                                 \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "                \
    "to_char(processed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), error"

/* DB_FILE_DELETE: RETURNING storage_key, and what the file.deleted event tells */
enum delete_col { DELETE_KEY, DELETE_SIZE, DELETE_SHA256, DELETE_MIME };

/* DB_FILE_CONTENT: storage_key, size, name, mime, sha256, status */
enum content_col {
    CONTENT_KEY,
    CONTENT_SIZE,
    CONTENT_NAME,
    CONTENT_MIME,
    CONTENT_SHA256,
    CONTENT_STATUS,
};

/* Statement SQL, indexed by enum db_stmt; names are "s<n>". */
static const struct {
    const char *sql;
    int nparams;
} stmts[DB_STMT__MAX] = {
    [DB_TOKEN_LOOKUP] = {"SELECT user_name FROM api_tokens WHERE token_hash = $1::bytea AND "
                         "revoked_at IS NULL",
                         1},
    [DB_FILE_GET] = {"SELECT " FILE_COLS " FROM files WHERE id = $1::uuid AND owner = $2", 2},
    [DB_FILE_LIST] = {"SELECT " FILE_COLS " FROM files WHERE owner = $1 "
                      "ORDER BY created_at DESC, id DESC LIMIT $2::integer",
                      2},
    [DB_FILE_LIST_AFTER] = {"SELECT " FILE_COLS " FROM files WHERE owner = $1 AND "
                            "(created_at, id) < ($3::timestamptz, $4::uuid) "
                            "ORDER BY created_at DESC, id DESC LIMIT $2::integer",
                            4},
    [DB_FILE_DELETE] = {"DELETE FROM files WHERE id = $1::uuid AND owner = $2 "
                        "RETURNING storage_key, size, sha256, mime",
                        2},
#define INSERT_COLS "INSERT INTO files (id, owner, name, size, status, storage_key, priority) "
    [DB_FILE_INSERT] = {INSERT_COLS "VALUES ($1::uuid, $2, $3, $4::bigint, $5, $6, $7::smallint)",
                        7},
    [DB_FILE_INSERT_MANY] = {INSERT_COLS "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], "
                                         "$4::bigint[], $5::text[], $6::text[], $7::smallint[])",
                             7},
#undef INSERT_COLS
    [DB_FILE_CONTENT] = {"SELECT storage_key, size, name, mime, sha256, status FROM files "
                         "WHERE id = $1::uuid AND owner = $2",
                         2},
    [DB_FILE_RECORDED] = {"SELECT 1 FROM files WHERE id = $1::uuid AND storage_key = $2", 2},
#undef FILE_COLS
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Per pool (primary, read): the address a host name resolved to at start-up,
 * "" when the conninfo names a socket directory, an address, several hosts or
 * a hostaddr of its own. Written by db_resolve() before workers start.
 */
static char hostaddrs[2][INET6_ADDRSTRLEN];
static bool unresolved[2]; /* the name did not resolve: fail fast, never resolve on a worker */
static pthread_mutex_t addr_lock = PTHREAD_MUTEX_INITIALIZER; /* main thread re-resolves */

static void conn_timer(struct tmr *t);
static void pool_timer(struct tmr *t);
static void dispatch_waiting(struct db_pool *p);
static void drop(struct db_conn *c, int err);

static struct db_query *query_get(struct db_pool *p)
{
    struct db_query *q = p->free_q;

    if (q != NULL) {
        p->free_q = q->next;
    } else {
        q = malloc(sizeof(*q));
        if (q == NULL)
            log_oom();
    }
    memset(q, 0, offsetof(struct db_query, plen));
    q->pext = NULL;
    q->rows = NULL;
    return q;
}

static void query_put(struct db_pool *p, struct db_query *q)
{
    if (q->res != NULL)
        PQclear(q->res);
    q->res = NULL;
    free(q->pext);
    q->pext = NULL;
    q->next = p->free_q;
    p->free_q = q;
}

static void gauges(struct db_pool *p)
{
    uint32_t busy = 0;
    unsigned i;

    for (i = 0; i < p->max; i++)
        if (p->conns[i].state == DB_READY && p->conns[i].depth > 0)
            busy++;
    met_set(&p->m->open, p->open);
    met_set(&p->m->busy, busy);
    met_set(&p->m->waiting, p->waiting);
}

static void finish_batch(struct db_pool *p, struct db_query *b, int err);

/* Hand a finished query to its owner and recycle it. */
static void complete(struct db_pool *p, struct db_query *q, int err)
{
    uint64_t us = (now_ns() - q->start_ns) / 1000;

    if (q->rows != NULL) {
        p->batches_out--;
        finish_batch(p, q, err);
        query_put(p, q);
        return;
    }
    if (q->cb != NULL) {
        met_db_query(p->m, err != 0, us);
        if (err == -EINVAL && q->res != NULL)
            log_warn("database query failed", "pool=%s stmt=%u error=%s", p->name,
                     (unsigned)q->stmt, PQresultErrorMessage(q->res));
        q->cb(q->ud, q->tag,
              err == -EIO || err == -ETIMEDOUT || err == -ECONNABORTED ? NULL : q->res, err);
    }
    query_put(p, q);
}

static void on_poll(void *ctx, int res);
static void on_turn(void *ctx);

/* Wait for the socket through the ring's poll seam (an armed poll is widened, never narrowed). */
static void arm_poll(struct db_conn *c, uint32_t mask)
{
    ring_poll_add(c->pool->ring, &c->watch, c->fd, mask, on_poll, c);
}

/* Arm the timer for the connection's next deadline. */
static void set_timer(struct db_conn *c)
{
    struct db_pool *p = c->pool;
    struct ring *r = p->ring;

    if (c->state == DB_CONNECTING || c->state == DB_PREPARING)
        return; /* the connect deadline stays */
    if (c->q_first != NULL)
        tmr_set(&r->timers, &c->timer, c->q_first->deadline_ms);
    else if (p->open > p->min)
        tmr_set(&r->timers, &c->timer, c->idle_since_ms + p->idle_timeout);
    else
        tmr_cancel(&r->timers, &c->timer);
}

/* Put a query on the wire of a ready connection. */
static int send_query(struct db_conn *c, struct db_query *q)
{
    const char *vals[DB_PARAMS_MAX];
    int lens[DB_PARAMS_MAX];
    int fmts[DB_PARAMS_MAX];
    char name[8];
    unsigned i;
    int ok;

    if (q->stmt >= DB_STMT__MAX) {
        unsigned s = q->stmt - DB_STMT__MAX;
        snprintf(name, sizeof(name), "s%u", s);
        ok = PQsendPrepare(c->pg, name, stmts[s].sql, stmts[s].nparams, NULL);
    } else {
        for (i = 0; i < q->nparams; i++) {
            vals[i] = (q->pext != NULL ? q->pext : q->pbuf) + q->poff[i];
            lens[i] = q->plen[i];
            fmts[i] = (q->binary >> i) & 1;
        }
        snprintf(name, sizeof(name), "s%u", (unsigned)q->stmt);
        ok = PQsendQueryPrepared(c->pg, name, q->nparams, vals, lens, fmts, 0);
    }
    if (!ok || !PQpipelineSync(c->pg))
        return -EIO;
    q->next = NULL;
    if (c->q_last != NULL)
        c->q_last->next = q;
    else
        c->q_first = q;
    c->q_last = q;
    c->depth++;
    c->want_out = 1;
    return 0;
}

/* Push libpq's output; arm the poll for what comes next. */
static void pump_out(struct db_conn *c)
{
    int f = PQflush(c->pg);

    if (f < 0) {
        drop(c, -EIO);
        return;
    }
    c->want_out = f > 0;
    if (c->depth > 0 || c->want_out)
        arm_poll(c, POLLIN | (c->want_out ? POLLOUT : 0));
}

/* Fail or re-queue what was in flight on a dropped connection, then free it. */
static void drop(struct db_conn *c, int err)
{
    struct db_pool *p = c->pool;
    struct ring *r = p->ring;
    struct db_query *retry_first = NULL;
    struct db_query *retry_last = NULL;
    uint32_t retried = 0;
    struct db_query *q;

    tmr_cancel(&r->timers, &c->timer);
    ring_poll_del(r, &c->watch);
    if (c->state == DB_READY)
        p->ready--;
    while ((q = c->q_first) != NULL) {
        c->q_first = q->next;
        if (q->res != NULL) {
            PQclear(q->res);
            q->res = NULL;
        }
        /* Only idempotent queries come with retries == 0 (see db_query). */
        if (q->cb != NULL && err == -EIO && q->retries == 0 && !p->stopping) {
            q->retries++;
            retried++;
            q->next = NULL;
            if (retry_last != NULL)
                retry_last->next = q;
            else
                retry_first = q;
            retry_last = q;
        } else {
            /* It was sent: a lost connection leaves its outcome unknown. */
            complete(p, q, err == -EIO ? -ECONNABORTED : err);
        }
    }
    /* Re-sent queries go first: they have waited longest. */
    if (retry_first != NULL) {
        retry_last->next = p->wait_first;
        if (p->wait_first == NULL)
            p->wait_last = retry_last;
        p->wait_first = retry_first;
        p->waiting += retried;
    }
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
    c->fd = -1;
    c->q_last = NULL;
    c->depth = 0;
    c->state = DB_FREE;
    c->gen++;
    p->open--;
    /* Keep DB_POOL_MIN open: reopen (after any backoff) from the pool timer. */
    if (!p->stopping && p->open < p->min && !tmr_armed(&p->timer))
        tmr_set(&r->timers, &p->timer, p->retry_at_ms > r->now_ms ? p->retry_at_ms : r->now_ms);
    gauges(p);
}

/* A connection attempt failed: back off, and fail waiters if nothing can serve them. */
static void connect_failed(struct db_conn *c, const char *why)
{
    struct db_pool *p = c->pool;
    struct ring *r = p->ring;
    uint64_t delay = p->backoff_ms;

    /* One line when the pool starts failing, not one per attempt. */
    if (!p->failing)
        log_warn("database connection failed", "pool=%s worker=%u retry_ms=%llu error=%s", p->name,
                 r->id, (unsigned long long)delay, why);
    drop(c, -EIO);
    p->failing = true;
    p->retry_at_ms = r->now_ms + delay;
    p->backoff_ms = delay * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : delay * 2;
    if (p->ready == 0) {
        struct db_query *q;
        while ((q = p->wait_first) != NULL) {
            p->wait_first = q->next;
            p->waiting--;
            complete(p, q, -EIO);
        }
        p->wait_last = NULL;
    }
    tmr_set(&r->timers, &p->timer, p->retry_at_ms);
    gauges(p);
}

static void start_connect(struct db_pool *p)
{
    static const char *const keys[] = {"dbname", "application_name", "options", "hostaddr", NULL};
    const char *vals[5];
    char addr[INET6_ADDRSTRLEN];
    bool bad_name;
    struct ring *r = p->ring;
    struct db_conn *c = NULL;
    unsigned i;
    for (i = 0; i < p->max; i++) {
        if (p->conns[i].state == DB_FREE) {
            c = &p->conns[i];
            break;
        }
    }
    if (c == NULL)
        return;
    vals[0] = p->conninfo;
    vals[1] = "ringup";
    vals[2] = p->timeout_opt;
    /* A host name resolved on the main thread: PQconnectStart must not resolve it here. */
    pthread_mutex_lock(&addr_lock);
    memcpy(addr, hostaddrs[p->id], sizeof(addr));
    bad_name = unresolved[p->id];
    pthread_mutex_unlock(&addr_lock);
    vals[3] = addr[0] != '\0' ? addr : NULL;
    vals[4] = NULL;
    c->pool = p;
    c->idx = (uint8_t)i;
    c->state = DB_CONNECTING;
    c->stage = DB_EXPECT_RESULT;
    c->depth = 0;
    c->q_first = NULL;
    c->q_last = NULL;
    c->want_out = 0;
    p->open++;
    if (bad_name) {
        connect_failed(c, "the database host name does not resolve (retried every 10 s)");
        return;
    }
    /* expand_dbname: the first value is a whole conninfo string or URL. */
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        connect_failed(c, c->pg != NULL ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    PQsetnonblocking(c->pg, 1);
    c->fd = PQsocket(c->pg);
    tmr_set(&r->timers, &c->timer, r->now_ms + p->connect_timeout);
    /* PQconnectStart wants a writable socket before the first PQconnectPoll. */
    arm_poll(c, POLLOUT);
    gauges(p);
}

/* Connected: enter pipeline mode and prepare every statement. */
static void connected(struct db_conn *c)
{
    struct db_pool *p = c->pool;
    unsigned s;

    if (!PQenterPipelineMode(c->pg)) {
        connect_failed(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = DB_PREPARING;
    for (s = 0; s < DB_STMT__MAX; s++) {
        struct db_query *q = query_get(p);
        q->stmt = (uint8_t)(DB_STMT__MAX + s);
        q->start_ns = now_ns();
        q->deadline_ms = UINT64_MAX;
        if (send_query(c, q) < 0) {
            query_put(p, q);
            connect_failed(c, PQerrorMessage(c->pg));
            return;
        }
    }
    pump_out(c);
}

static void continue_connect(struct db_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        c->fd = PQsocket(c->pg);
        arm_poll(c, POLLIN);
        break;
    case PGRES_POLLING_WRITING:
        c->fd = PQsocket(c->pg);
        arm_poll(c, POLLOUT);
        break;
    case PGRES_POLLING_OK:
        c->fd = PQsocket(c->pg);
        connected(c);
        break;
    default:
        connect_failed(c, PQerrorMessage(c->pg));
        break;
    }
}

/* The oldest in-flight query has its answer. */
static void finish_oldest(struct db_conn *c, int err)
{
    struct db_pool *p = c->pool;
    struct db_query *q = c->q_first;

    c->q_first = q->next;
    if (c->q_first == NULL)
        c->q_last = NULL;
    c->depth--;
    c->stage = DB_EXPECT_RESULT;
    if (q->stmt >= DB_STMT__MAX) {
        /* One of our prepares: the connection is ready after the last one. */
        char why[256];
        bool bad = err != 0;
        if (bad)
            snprintf(why, sizeof(why),
                     "preparing statements failed (has `ringup migrate` run?): %s",
                     q->res != NULL ? PQresultErrorMessage(q->res) : "no result");
        query_put(p, q);
        if (bad) {
            connect_failed(c, why);
            return;
        }
        if (c->q_first == NULL && c->state == DB_PREPARING) {
            struct ring *r = p->ring;
            c->state = DB_READY;
            p->ready++;
            if (p->failing)
                log_info("database connection restored", "pool=%s worker=%u", p->name, r->id);
            p->failing = false;
            p->backoff_ms = DB_BACKOFF_MIN_MS;
            c->idle_since_ms = r->now_ms;
            tmr_cancel(&r->timers, &c->timer);
        }
        return;
    }
    complete(p, q, err);
}

static int result_error(PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    /* 57014: canceled by statement_timeout. */
    if (state != NULL && strcmp(state, "57014") == 0)
        return -ETIMEDOUT;
    return -EINVAL;
}

/* Read every answer that is complete; returns false if the connection was dropped. */
static bool read_results(struct db_conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        drop(c, -EIO);
        return false;
    }
    while (c->q_first != NULL && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        struct db_query *q = c->q_first;

        switch (c->stage) {
        case DB_EXPECT_RESULT:
            if (res == NULL) {
                drop(c, -EIO);
                return false;
            }
            q->res = res;
            c->stage = DB_EXPECT_END;
            break;
        case DB_EXPECT_END:
            if (res != NULL) {
                /* A second result for one statement: keep the last. */
                PQclear(q->res);
                q->res = res;
                break;
            }
            c->stage = DB_EXPECT_SYNC;
            break;
        case DB_EXPECT_SYNC:
            if (res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                if (res != NULL)
                    PQclear(res);
                drop(c, -EIO);
                return false;
            }
            PQclear(res);
            {
                ExecStatusType st = PQresultStatus(q->res);
                int err = 0;
                if (st == PGRES_FATAL_ERROR)
                    err = result_error(q->res);
                else if (st == PGRES_PIPELINE_ABORTED)
                    err = -EIO;
                else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
                    err = -EINVAL;
                finish_oldest(c, err);
                if (c->state == DB_FREE)
                    return false;
            }
            break;
        }
    }
    return true;
}

static void on_poll(void *ctx, int res)
{
    struct db_conn *c = ctx;
    struct db_pool *p = c->pool;
    struct ring *r = p->ring;

    if (c->state == DB_FREE)
        return;
    if (res < 0 && res != -ECANCELED) {
        drop(c, -EIO);
        dispatch_waiting(p);
        return;
    }
    if (res == -ECANCELED)
        return;
    if (c->state == DB_CONNECTING) {
        continue_connect(c);
        if (c->state == DB_PREPARING || c->state == DB_READY)
            dispatch_waiting(p);
        return;
    }
    if (!read_results(c)) {
        dispatch_waiting(p);
        return;
    }
    if (c->depth == 0)
        c->idle_since_ms = r->now_ms;
    pump_out(c);
    if (c->state != DB_FREE)
        set_timer(c);
    dispatch_waiting(p);
    gauges(p);
}

/* Pick the connection for the next waiting query, or NULL (then maybe open one). */
static struct db_conn *pick(struct db_pool *p)
{
    struct db_conn *best = NULL;
    unsigned i;

    for (i = 0; i < p->max; i++) {
        struct db_conn *c = &p->conns[i];
        if (c->state != DB_READY || c->depth >= DB_PIPE_MAX)
            continue;
        if (c->depth == 0)
            return c;
        if (best == NULL || c->depth < best->depth)
            best = c;
    }
    return best;
}

static bool connecting(const struct db_pool *p)
{
    unsigned i;

    for (i = 0; i < p->max; i++)
        if (p->conns[i].state == DB_CONNECTING || p->conns[i].state == DB_PREPARING)
            return true;
    return false;
}

static void dispatch_waiting(struct db_pool *p)
{
    struct ring *r = p->ring;

    while (p->wait_first != NULL) {
        struct db_conn *c = pick(p);
        struct db_query *q;

        /* A busy pool grows before it pipelines behind a slow query. */
        if ((c == NULL || c->depth > 0) && !p->stopping && p->open < p->max && !connecting(p) &&
            r->now_ms >= p->retry_at_ms)
            start_connect(p);
        if (c == NULL)
            break;
        q = p->wait_first;
        p->wait_first = q->next;
        if (p->wait_first == NULL)
            p->wait_last = NULL;
        p->waiting--;
        if (send_query(c, q) < 0) {
            complete(p, q, -EIO);
            drop(c, -EIO);
            continue;
        }
        set_timer(c);
    }
    if (p->wait_first != NULL)
        tmr_set(&r->timers, &p->timer,
                p->retry_at_ms > r->now_ms ? p->retry_at_ms : p->wait_first->deadline_ms);
    gauges(p);
}

/* Deadline of a connection: connect timeout, oldest query's deadline, or idle close. */
static void conn_timer(struct tmr *t)
{
    struct db_conn *c = (struct db_conn *)((char *)t - offsetof(struct db_conn, timer));
    struct db_pool *p = c->pool;
    struct ring *r = p->ring;

    if (c->state == DB_FREE)
        return;
    if (c->state != DB_READY) {
        connect_failed(c, "connection timed out (DB_CONNECTION_TIMEOUT)");
        return;
    }
    if (c->q_first != NULL) {
        if (c->q_first->deadline_ms > r->now_ms) {
            set_timer(c);
            return;
        }
        log_warn("database query timed out, dropping its connection", "pool=%s worker=%u", p->name,
                 r->id);
        drop(c, -ETIMEDOUT);
        dispatch_waiting(p);
        return;
    }
    if (p->open > p->min && c->idle_since_ms + p->idle_timeout <= r->now_ms) {
        drop(c, -EIO);
        return;
    }
    set_timer(c);
}

/* Backoff over, or the oldest waiter's deadline passed. */
static void pool_timer(struct tmr *t)
{
    struct db_pool *p = (struct db_pool *)((char *)t - offsetof(struct db_pool, timer));
    struct ring *r = p->ring;
    struct db_query *q;

    while ((q = p->wait_first) != NULL && q->deadline_ms <= r->now_ms) {
        p->wait_first = q->next;
        if (p->wait_first == NULL)
            p->wait_last = NULL;
        p->waiting--;
        complete(p, q, -ETIMEDOUT);
    }
    if (!p->stopping && p->open < p->min && !connecting(p) && r->now_ms >= p->retry_at_ms)
        start_connect(p);
    dispatch_waiting(p);
}

/* True for a literal IPv4 or IPv6 address. */
static bool is_address(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

int db_resolve(uint8_t id, const char *conninfo, char *err, size_t errlen)
{
    PQconninfoOption *opts;
    PQconninfoOption *o;
    const char *host = NULL;
    bool has_addr = false;
    struct addrinfo hints;
    struct addrinfo *ai;
    char *perr = NULL;
    int ret = 0;
    char found[INET6_ADDRSTRLEN] = "";

    if (conninfo[0] == '\0')
        goto publish;
    opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) {
        snprintf(err, errlen, "%s", perr != NULL ? perr : "cannot parse the conninfo");
        PQfreemem(perr);
        ret = -EINVAL;
        goto publish;
    }
    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            has_addr = true;
    }
    if (host == NULL || has_addr || host[0] == '/' || host[0] == '@' || strchr(host, ',') ||
        is_address(host))
        goto out;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    ret = getaddrinfo(host, NULL, &hints, &ai);
    if (ret != 0) {
        snprintf(err, errlen, "cannot resolve host %s: %s", host, gai_strerror(ret));
        ret = -EHOSTUNREACH;
        goto out;
    }
    if (ai->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr, found,
                  sizeof(found));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr, found,
                  sizeof(found));
    freeaddrinfo(ai);
out:
    PQconninfoFree(opts);
publish:
    pthread_mutex_lock(&addr_lock);
    memcpy(hostaddrs[id], found, sizeof(found));
    unresolved[id] = ret == -EHOSTUNREACH;
    pthread_mutex_unlock(&addr_lock);
    return ret;
}

bool db_unresolved(uint8_t id)
{
    bool v;

    pthread_mutex_lock(&addr_lock);
    v = unresolved[id];
    pthread_mutex_unlock(&addr_lock);
    return v;
}

void db_pool_init(struct db_pool *p, struct ring *r, uint8_t id, const char *conninfo,
                  const char *name, uint32_t min, uint32_t max)
{
    const struct cfg *cfg = r->cfg;
    unsigned i;

    memset(p, 0, sizeof(*p));
    p->ring = r;
    p->id = id;
    p->conninfo = conninfo;
    p->name = name;
    p->max = max > DB_CONNS_MAX ? DB_CONNS_MAX : max;
    p->min = min > p->max ? p->max : min;
    p->query_timeout = cfg->db_query_timeout;
    p->connect_timeout = cfg->db_connection_timeout;
    p->idle_timeout = cfg->db_pool_idle_timeout;
    p->backoff_ms = DB_BACKOFF_MIN_MS;
    /*
     * FSYNC=false answers 201 before the file is durable: waiting for the row's WAL
     * flush buys nothing then, so such sessions commit asynchronously (a crash of the
     * database may lose the last moment's rows, never make them inconsistent).
     */
    snprintf(p->timeout_opt, sizeof(p->timeout_opt), "-c statement_timeout=%u%s",
             cfg->db_query_timeout, cfg->fsync ? "" : " -c synchronous_commit=off");
    for (i = 0; i < DB_CONNS_MAX; i++) {
        p->conns[i].fd = -1;
        p->conns[i].idx = (uint8_t)i;
        p->conns[i].pool = p;
        tmr_init(&p->conns[i].timer, conn_timer);
    }
    tmr_init(&p->timer, pool_timer);
    p->m = &r->met.db[id];
    met_set(&p->m->max, p->max);
    ring_on_turn(r, on_turn, p);
    for (i = 0; i < p->min; i++)
        start_connect(p);
}

/* A query with its parameters copied in, or NULL with *err set. */
static struct db_query *make_query(struct db_pool *p, enum db_stmt stmt, const char *const *vals,
                                   const int *lens, unsigned n, unsigned binary, bool idempotent,
                                   db_cb cb, void *ud, uint64_t tag, int *err)
{
    struct ring *r = p->ring;
    struct db_query *q;
    size_t off = 0;
    unsigned i;

    *err = -E2BIG;
    if (n > DB_PARAMS_MAX)
        return NULL;
    /* Text parameters travel NUL-terminated (libpq ignores their lengths). */
    for (i = 0; i < n; i++)
        off += (size_t)lens[i] + 1;
    if (off > DB_PARAM_BYTES)
        return NULL;
    *err = -EAGAIN;
    if (p->waiting + p->batched >= DB_WAIT_MAX || p->stopping)
        return NULL;
    *err = -EIO;
    if (p->failing && p->ready == 0 && r->now_ms < p->retry_at_ms)
        return NULL;
    q = query_get(p);
    q->cb = cb;
    q->ud = ud;
    q->tag = tag;
    q->stmt = (uint8_t)stmt;
    q->nparams = (uint8_t)n;
    q->binary = (uint8_t)binary;
    q->retries = idempotent ? 0 : 1;
    q->start_ns = now_ns();
    q->deadline_ms = r->now_ms + p->query_timeout + DB_QUERY_GRACE_MS;
    off = 0;
    for (i = 0; i < n; i++) {
        memcpy(q->pbuf + off, vals[i], (size_t)lens[i]);
        q->pbuf[off + (size_t)lens[i]] = '\0';
        q->poff[i] = (uint32_t)off;
        q->plen[i] = (uint32_t)lens[i];
        off += (size_t)lens[i] + 1;
    }
    q->next = NULL;
    *err = 0;
    return q;
}

static void enqueue(struct db_pool *p, struct db_query *q)
{
    q->next = NULL;
    if (p->wait_last != NULL)
        p->wait_last->next = q;
    else
        p->wait_first = q;
    p->wait_last = q;
    p->waiting++;
    met_set(&p->m->waiting, p->waiting);
}

int db_query(struct db_pool *p, enum db_stmt stmt, const char *const *vals, const int *lens,
             unsigned n, unsigned binary, bool idempotent, db_cb cb, void *ud, uint64_t tag)
{
    int err;
    struct db_query *q = make_query(p, stmt, vals, lens, n, binary, idempotent, cb, ud, tag, &err);

    if (q == NULL)
        return err;
    enqueue(p, q);
    return 0;
}

/* One row's query (stmt DB_FILE_INSERT), or NULL with *err. */
static struct db_query *make_row(struct db_pool *p, const struct db_file_row *row, db_cb cb,
                                 void *ud, uint64_t tag, int *err)
{
    char size[24];
    char prio[12];
    const char *vals[7] = {row->id,     row->owner,       row->name, size,
                           row->status, row->storage_key, prio};
    int lens[7];
    unsigned i;

    snprintf(size, sizeof(size), "%llu", (unsigned long long)row->size);
    snprintf(prio, sizeof(prio), "%d", row->priority);
    for (i = 0; i < 7; i++)
        lens[i] = (int)strlen(vals[i]);
    return make_query(p, DB_FILE_INSERT, vals, lens, 7, 0, false, cb, ud, tag, err);
}

int db_insert_files(struct db_pool *p, const struct db_file_row *rows, unsigned n, db_cb cb,
                    void *ud, uint64_t tag)
{
    struct db_query *first = NULL;
    struct db_query *last = NULL;
    unsigned i;
    int err;

    if (n == 0 || n > DB_BATCH_MAX)
        return -E2BIG;
    if (p->waiting + p->batched + n > DB_WAIT_MAX)
        return -EAGAIN;
    for (i = 0; i < n; i++) {
        struct db_query *q = make_row(p, &rows[i], cb, ud, tag + i, &err);
        if (q == NULL)
            goto out_put_rows;
        q->group = (uint16_t)(n - i);
        if (last != NULL)
            last->next = q;
        else
            first = q;
        last = q;
    }
    /* Gathered until the end of the loop turn: see flush_batch(). */
    if (p->batch_last != NULL)
        p->batch_last->next = first;
    else
        p->batch_first = first;
    p->batch_last = last;
    p->batched += n;
    return 0;

out_put_rows:
    while (first != NULL) {
        struct db_query *q = first;
        first = q->next;
        query_put(p, q);
    }
    return err;
}

int db_insert_file(struct db_pool *p, const struct db_file_row *row, db_cb cb, void *ud,
                   uint64_t tag)
{
    return db_insert_files(p, row, 1, cb, ud, tag);
}

/* A growing buffer of array literals. */
struct abuf {
    char *p;
    size_t len;
    size_t cap;
};

static void ab_put(struct abuf *b, const char *s, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap * 2 > b->len + n ? b->cap * 2 : b->len + n + 4096;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            log_oom();
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Column col of every row as one array literal: {"a","b"} (quoted) or {1,2}. */
static void ab_array(struct abuf *b, struct db_query *rows, unsigned col, bool quote)
{
    struct db_query *q;
    size_t i;

    ab_put(b, "{", 1);
    for (q = rows; q != NULL; q = q->next) {
        const char *v = q->pbuf + q->poff[col];
        if (q != rows)
            ab_put(b, ",", 1);
        if (!quote) {
            ab_put(b, v, q->plen[col]);
            continue;
        }
        ab_put(b, "\"", 1);
        for (i = 0; i < q->plen[col]; i++) {
            if (v[i] == '"' || v[i] == '\\')
                ab_put(b, "\\", 1);
            ab_put(b, v + i, 1);
        }
        ab_put(b, "\"", 1);
    }
    ab_put(b, "}", 2); /* with its NUL */
}

/* The last row of the group that starts at q. */
static struct db_query *group_end(struct db_query *q)
{
    uint16_t g;

    for (g = q->group; g > 1; g--)
        q = q->next;
    return q;
}

/*
 * Send rows (a list of whole groups): one row as a plain INSERT, more as one
 * INSERT ... SELECT FROM unnest(), so they commit together.
 */
static void send_rows(struct db_pool *p, struct db_query *rows)
{
    static const bool quoted[7] = {false, true, true, false, true, true, false};
    struct abuf b = {NULL, 0, 0};
    struct db_query *bq;
    unsigned col;

    if (rows->next == NULL) {
        enqueue(p, rows);
        return;
    }
    bq = query_get(p);
    for (col = 0; col < 7; col++) {
        bq->poff[col] = (uint32_t)b.len;
        ab_array(&b, rows, col, quoted[col]);
        bq->plen[col] = (uint32_t)(b.len - bq->poff[col] - 1);
    }
    bq->pext = b.p;
    bq->rows = rows;
    bq->stmt = DB_FILE_INSERT_MANY;
    bq->nparams = 7;
    bq->retries = 1;
    bq->start_ns = rows->start_ns;
    bq->deadline_ms = rows->deadline_ms;
    p->batches_out++;
    enqueue(p, bq);
}

/*
 * Send the rows gathered this turn, about DB_BATCH_MAX a statement; a group
 * (one request's rows) is never split. With batch_off, each group alone.
 */
static void flush_batch(struct db_pool *p)
{
    while (p->batch_first != NULL) {
        struct db_query *rows = p->batch_first;
        struct db_query *last = group_end(rows);
        unsigned n = rows->group;

        while (!p->batch_off && last->next != NULL && n + last->next->group <= DB_BATCH_MAX) {
            n += last->next->group;
            last = group_end(last->next);
        }
        p->batch_first = last->next;
        last->next = NULL;
        p->batched -= n;
        send_rows(p, rows);
    }
    p->batch_last = NULL;
}

/*
 * A batch is answered: its rows succeed together, or fail together when the
 * connection was lost or the statement timed out (whether it committed is
 * unknown), or, after an error that one request's rows may have caused (say,
 * a duplicate id), each request's rows are re-sent alone: a group that fails
 * alone fails for good.
 */
static void finish_batch(struct db_pool *p, struct db_query *b, int err)
{
    struct db_query *q = b->rows;
    bool alone = group_end(q)->next == NULL;

    b->rows = NULL;
    while (q != NULL) {
        struct db_query *last = group_end(q);
        struct db_query *next = last->next;

        last->next = NULL;
        if (err == -EINVAL && !alone && !p->stopping) {
            send_rows(p, q);
        } else {
            while (q != NULL) {
                struct db_query *row = q;
                q = row->next;
                complete(p, row, err);
            }
        }
        q = next;
    }
}

/* End of a loop turn: send what was queued (one write per connection). */
static void on_turn(void *ctx)
{
    struct db_pool *p = ctx;
    unsigned i;

    /*
     * Group the rows: while DB_BATCHES_OUT batches are on their way, the rows of later
     * turns wait for an answer and then go together, in one statement (group commit:
     * about 10 rows a statement without it, at 17k uploads/s; an idle pool sends at once).
     */
    if (p->batch_first != NULL &&
        (p->batches_out < DB_BATCHES_OUT || p->batched >= DB_BATCH_MAX || p->stopping))
        flush_batch(p);
    if (p->wait_first != NULL)
        dispatch_waiting(p);
    for (i = 0; i < p->max; i++) {
        struct db_conn *c = &p->conns[i];
        if ((c->state == DB_READY || c->state == DB_PREPARING) && c->want_out)
            pump_out(c);
    }
}

void db_pool_stop(struct db_pool *p)
{
    struct ring *r = p->ring;
    struct db_query *q;
    unsigned i;

    p->stopping = true;
    tmr_cancel(&r->timers, &p->timer);
    while ((q = p->batch_first) != NULL) {
        p->batch_first = q->next;
        p->batched--;
        complete(p, q, -EIO);
    }
    p->batch_last = NULL;
    while ((q = p->wait_first) != NULL) {
        p->wait_first = q->next;
        p->waiting--;
        complete(p, q, -EIO);
    }
    p->wait_last = NULL;
    for (i = 0; i < p->max; i++)
        if (p->conns[i].state != DB_FREE)
            drop(&p->conns[i], -EIO);
}

void db_pool_free(struct db_pool *p)
{
    struct db_query *q;

    while ((q = p->free_q) != NULL) {
        p->free_q = q->next;
        free(q);
    }
}

/* ---- rows of the statements' results ---- */

/* A column's text, or NULL for SQL NULL. */
static const char *nullable(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

int db_rows(const struct pg_result *res)
{
    return PQntuples(res);
}

const char *db_token_user(const struct pg_result *res, int row)
{
    return PQgetvalue(res, row, TOKEN_USER);
}

void db_file_meta_get(const struct pg_result *res, int row, struct db_file_meta *m)
{
    m->id = PQgetvalue(res, row, FILE_ID);
    m->name = PQgetvalue(res, row, FILE_NAME);
    m->size = strtoull(PQgetvalue(res, row, FILE_SIZE), NULL, 10);
    m->mime = nullable(res, row, FILE_MIME);
    m->sha256 = nullable(res, row, FILE_SHA256);
    m->status = PQgetvalue(res, row, FILE_STATUS);
    m->created_at = nullable(res, row, FILE_CREATED);
    m->processed_at = nullable(res, row, FILE_PROCESSED);
    m->error = nullable(res, row, FILE_ERROR);
}

void db_file_content_get(const struct pg_result *res, int row, struct db_file_content *f)
{
    f->storage_key = PQgetvalue(res, row, CONTENT_KEY);
    f->size = strtoull(PQgetvalue(res, row, CONTENT_SIZE), NULL, 10);
    f->name = PQgetvalue(res, row, CONTENT_NAME);
    f->mime = nullable(res, row, CONTENT_MIME);
    f->sha256 = nullable(res, row, CONTENT_SHA256);
    f->status = PQgetvalue(res, row, CONTENT_STATUS);
}

const char *db_file_deleted_key(const struct pg_result *res, int row)
{
    return PQgetvalue(res, row, DELETE_KEY);
}

void db_file_deleted_get(const struct pg_result *res, int row, struct db_file_deleted *d)
{
    d->storage_key = PQgetvalue(res, row, DELETE_KEY);
    d->size = strtoull(PQgetvalue(res, row, DELETE_SIZE), NULL, 10);
    d->sha256 = nullable(res, row, DELETE_SHA256);
    d->mime = nullable(res, row, DELETE_MIME);
}

/* met: per-worker counters, summed at scrape time. */
#include "engine/core/met.h"

#include <stdio.h>
#include <string.h>

static struct met_worker *workers[MET_MAX_WORKERS];
static unsigned nworkers;

/* Upper bounds of the request duration buckets, seconds. */
static const double dur_bounds[MET_DUR_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};

void met_register(struct met_worker *m)
{
    if (nworkers < MET_MAX_WORKERS)
        workers[nworkers++] = m;
}

static unsigned bucket(uint64_t dur_us)
{
    unsigned i = 0;

    while (i < MET_DUR_BUCKETS && (double)dur_us > dur_bounds[i] * 1e6)
        i++;
    return i;
}

void met_request(struct met_worker *m, int status, uint64_t dur_us)
{
    if (status >= 100 && status < 600)
        met_inc(&m->req_by_code[status]);
    met_inc(&m->req_dur[bucket(dur_us)]);
    met_add(&m->req_dur_us_sum, dur_us);
}

void met_upload_done(struct met_worker *m, enum met_up_route route, uint64_t dur_us)
{
    met_inc(&m->up_completed[route]);
    met_inc(&m->up_dur[bucket(dur_us)]);
    met_add(&m->up_dur_us_sum, dur_us);
}

static uint64_t sum(size_t off);

#define SUM(field) sum(offsetof(struct met_worker, field))

static void scalar(struct prom_buf *b, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    prom_family(b, name, type, help);
    prom_sample(b, name, NULL, (double)v);
}

static const char *const up_routes[MET_UP__N] = {"put", "post", "tus"};
static const char *const up_fails[MET_UF__N] = {"too_large", "storage_full", "storage_error",
                                                "database", "client_gone"};

static const char *const sink_fails[MET_SF__N] = {"no_space", "io_error", "source", "busy"};

static void render_sinks(struct prom_buf *b)
{
    char labels[64];
    unsigned f;

    scalar(b, "ringup_sinks_open", "gauge",
           "Storage sinks in use, aborted ones whose last op is still in flight included.",
           SUM(sinks_open));
    scalar(b, "ringup_sink_committed_total", "counter",
           "Storage sinks that committed their object (written, synced with FSYNC, linked).",
           SUM(sink_committed));
    prom_family(b, "ringup_sink_failed_total", "counter",
                "Storage sinks that failed, by reason (no_space; io_error: any other filesystem "
                "error; source: the socket read from failed; busy: no pipe or O_DIRECT buffer "
                "within CONNECTION_TIMEOUT).");
    for (f = 0; f < MET_SF__N; f++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", sink_fails[f]);
        prom_sample(b, "ringup_sink_failed_total", labels,
                    (double)sum(offsetof(struct met_worker, sink_failed) + f * sizeof(uint64_t)));
    }
    scalar(b, "ringup_sink_aborted_total", "counter",
           "Storage sinks given up by their caller before an outcome (the client went away, "
           "the request failed); what they made is removed.",
           SUM(sink_aborted));
}

/*
 * The rate limits. The mode is 1 only while every worker goes through Redis:
 * a worker deciding locally means the instance's counts are its own.
 */
static void render_ratelimit(struct prom_buf *b)
{
    static const char *const outcomes[MET_RL__N] = {"outcome=\"allowed\"",
                                                    "outcome=\"rejected\",scope=\"user\"",
                                                    "outcome=\"rejected\",scope=\"global\""};
    unsigned i;

    prom_family(b, "ringup_ratelimit_decisions_total", "counter",
                "Rate-limit decisions on uploads, by outcome and, when rejected, the limit "
                "that refused (user: UPLOAD_RATE_LIMIT, global: GLOBAL_RATE_LIMIT).");
    for (i = 0; i < MET_RL__N; i++)
        prom_sample(b, "ringup_ratelimit_decisions_total", outcomes[i],
                    (double)sum(offsetof(struct met_worker, rl_decisions) + i * sizeof(uint64_t)));
    scalar(b, "ringup_ratelimit_redis_calls_total", "counter",
           "Lease calls sent to Redis (each decides the uploads of one user that waited).",
           SUM(rl_lease_calls));
    scalar(b, "ringup_ratelimit_permits_leased_total", "counter",
           "Permits taken from the shared buckets in Redis.", SUM(rl_leased));
    scalar(b, "ringup_ratelimit_permits_returned_total", "counter",
           "Leased permits left unused and given back to Redis.", SUM(rl_returned));
    scalar(b, "ringup_ratelimit_local_decisions_total", "counter",
           "Decisions of the local fallback (Redis unreachable): each instance enforces its "
           "share of the limits.",
           SUM(rl_local));
    scalar(b, "ringup_ratelimit_instances", "gauge",
           "Instances seen through Redis in the last 30 s: the fallback gives each "
           "1/instances of the limits.",
           SUM(rl_instances));
    scalar(b, "ringup_ratelimit_mode", "gauge",
           "1 while the rate limits are shared through Redis, 0 while decided locally.",
           nworkers > 0 && SUM(rl_shared) == nworkers ? 1 : 0);
}

static void render_uploads(struct prom_buf *b)
{
    uint64_t counts[MET_DUR_BUCKETS + 1];
    char labels[64];
    unsigned r;
    unsigned f;
    unsigned i;

    prom_family(b, "ringup_uploads_started_total", "counter", "Uploads whose file was created.");
    for (r = 0; r < MET_UP__N; r++) {
        snprintf(labels, sizeof(labels), "route=\"%s\"", up_routes[r]);
        prom_sample(b, "ringup_uploads_started_total", labels,
                    (double)sum(offsetof(struct met_worker, up_started) + r * sizeof(uint64_t)));
    }
    prom_family(b, "ringup_uploads_completed_total", "counter", "Uploads stored and answered 201.");
    for (r = 0; r < MET_UP__N; r++) {
        snprintf(labels, sizeof(labels), "route=\"%s\"", up_routes[r]);
        prom_sample(b, "ringup_uploads_completed_total", labels,
                    (double)sum(offsetof(struct met_worker, up_completed) + r * sizeof(uint64_t)));
    }
    prom_family(b, "ringup_uploads_failed_total", "counter",
                "Uploads that failed after their file was created, by reason.");
    for (r = 0; r < MET_UP__N; r++) {
        for (f = 0; f < MET_UF__N; f++) {
            snprintf(labels, sizeof(labels), "route=\"%s\",reason=\"%s\"", up_routes[r],
                     up_fails[f]);
            prom_sample(b, "ringup_uploads_failed_total", labels,
                        (double)sum(offsetof(struct met_worker, up_failed) +
                                    (r * MET_UF__N + f) * sizeof(uint64_t)));
        }
    }
    prom_family(b, "ringup_upload_bytes_total", "counter",
                "Upload body bytes written to files, by path (buffered: from receive buffers; "
                "spliced: socket to pipe to file; direct: O_DIRECT from registered buffers).");
    prom_sample(b, "ringup_upload_bytes_total", "path=\"buffered\"",
                (double)sum(offsetof(struct met_worker, up_bytes_buffered)));
    prom_sample(b, "ringup_upload_bytes_total", "path=\"spliced\"",
                (double)sum(offsetof(struct met_worker, up_bytes_spliced)));
    prom_sample(b, "ringup_upload_bytes_total", "path=\"direct\"",
                (double)sum(offsetof(struct met_worker, up_bytes_direct)));
    prom_family(b, "ringup_download_bytes_total", "counter",
                "Download body bytes sent, by path (spliced: file to pipe to socket).");
    prom_sample(b, "ringup_download_bytes_total", "path=\"buffered\"",
                (double)sum(offsetof(struct met_worker, dl_bytes_buffered)));
    prom_sample(b, "ringup_download_bytes_total", "path=\"spliced\"",
                (double)sum(offsetof(struct met_worker, dl_bytes_spliced)));
    scalar(b, "ringup_upload_files_open", "gauge",
           "Files held open by uploads in flight (direct descriptors included).",
           SUM(up_files_open));
    scalar(b, "ringup_splice_pipes_in_use", "gauge", "Splice pipes lent to a transfer now.",
           SUM(pipes_in_use));
    scalar(b, "ringup_splice_pipes_open", "gauge", "Splice pipes open (lent or pooled).",
           SUM(pipes_open));
    scalar(b, "ringup_splice_pipe_waits_total", "counter",
           "Splices that waited for a pipe (the per-worker pool was lent out).", SUM(pipe_waits));
    scalar(b, "ringup_direct_buffers_in_use", "gauge",
           "O_DIRECT upload buffers lent to an upload now.", SUM(dbufs_in_use));
    scalar(b, "ringup_direct_buffers", "gauge", "O_DIRECT upload buffers registered.",
           SUM(dbufs_total));
    scalar(b, "ringup_direct_buffer_waits_total", "counter",
           "O_DIRECT reads that waited for a free buffer.", SUM(dbuf_waits));
    scalar(b, "ringup_direct_buffer_fallbacks_total", "counter",
           "Bodies over DIRECT_IO_THRESHOLD that found every O_DIRECT buffer lent and took "
           "the page-cache path instead of waiting.",
           SUM(dbuf_fallbacks));
    scalar(b, "ringup_transfer_wait_timeouts_total", "counter",
           "Waits for a splice pipe or an O_DIRECT buffer cut after CONNECTION_TIMEOUT.",
           SUM(xfer_wait_timeouts));
    scalar(b, "ringup_storage_dir_syncs_total", "counter",
           "Directory fsyncs after a link or mkdir made an entry (FSYNC).", SUM(dir_syncs));
    scalar(b, "ringup_upload_commit_unknown_total", "counter",
           "Uploads whose row insert lost its connection or timed out, so that whether it "
           "committed was looked up before answering.",
           SUM(up_unknown));
    scalar(b, "ringup_upload_kept_for_fsck_total", "counter",
           "Uploads whose commit stayed unknown: files kept for ringup fsck to decide.",
           SUM(up_kept));
    for (i = 0; i <= MET_DUR_BUCKETS; i++)
        counts[i] = sum(offsetof(struct met_worker, up_dur) + i * sizeof(uint64_t));
    prom_family(b, "ringup_upload_duration_seconds", "histogram",
                "Time from an upload's first byte to its 201.");
    prom_histogram(b, "ringup_upload_duration_seconds", NULL, dur_bounds, counts, MET_DUR_BUCKETS,
                   (double)sum(offsetof(struct met_worker, up_dur_us_sum)) / 1e6);
}

void met_db_query(struct met_db *m, bool failed, uint64_t dur_us)
{
    met_inc(&m->queries);
    if (failed)
        met_inc(&m->errors);
    met_inc(&m->dur[bucket(dur_us)]);
    met_add(&m->dur_us_sum, dur_us);
}

static uint64_t load(const uint64_t *v)
{
    return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static const char *const pool_names[MET_DB_POOLS] = {"primary", "read"};

/* One gauge or counter of the database pools, per worker and pool. */
static void db_family(struct prom_buf *b, const char *name, const char *type, const char *help,
                      size_t off)
{
    char labels[64];
    unsigned w;
    unsigned p;

    prom_family(b, name, type, help);
    for (w = 0; w < nworkers; w++) {
        for (p = 0; p < MET_DB_POOLS; p++) {
            const struct met_db *d = &workers[w]->db[p];
            if (load(&d->max) == 0)
                continue;
            snprintf(labels, sizeof(labels), "pool=\"%s\",worker=\"%u\"", pool_names[p], w);
            prom_sample(b, name, labels, (double)load((const uint64_t *)((const char *)d + off)));
        }
    }
}

static void render_db(struct prom_buf *b)
{
    uint64_t counts[MET_DUR_BUCKETS + 1];
    char labels[32];
    unsigned p;
    unsigned w;
    unsigned i;

    db_family(b, "ringup_db_connections_open", "gauge",
              "Database connections open or opening, per worker slice.",
              offsetof(struct met_db, open));
    db_family(b, "ringup_db_connections_in_use", "gauge",
              "Database connections with queries in flight.", offsetof(struct met_db, busy));
    db_family(b, "ringup_db_connections_max", "gauge",
              "Database connections a worker's slice may open.", offsetof(struct met_db, max));
    db_family(b, "ringup_db_wait_queue", "gauge", "Queries waiting for a database connection.",
              offsetof(struct met_db, waiting));
    db_family(b, "ringup_db_queries_total", "counter", "Database queries answered or failed.",
              offsetof(struct met_db, queries));
    db_family(b, "ringup_db_query_errors_total", "counter",
              "Database queries that failed (error, timeout, lost connection).",
              offsetof(struct met_db, errors));
    prom_family(b, "ringup_db_query_duration_seconds", "histogram",
                "Time from queueing a query to its answer.");
    for (p = 0; p < MET_DB_POOLS; p++) {
        double sum = 0;
        bool any = false;
        memset(counts, 0, sizeof(counts));
        for (w = 0; w < nworkers; w++) {
            const struct met_db *d = &workers[w]->db[p];
            if (load(&d->max) == 0)
                continue;
            any = true;
            for (i = 0; i <= MET_DUR_BUCKETS; i++)
                counts[i] += load(&d->dur[i]);
            sum += (double)load(&d->dur_us_sum) / 1e6;
        }
        if (!any)
            continue;
        snprintf(labels, sizeof(labels), "pool=\"%s\"", pool_names[p]);
        prom_histogram(b, "ringup_db_query_duration_seconds", labels, dur_bounds, counts,
                       MET_DUR_BUCKETS, sum);
    }
}

void met_redis_cmd(struct met_redis *m, uint64_t dur_us)
{
    met_inc(&m->commands);
    met_inc(&m->dur[bucket(dur_us)]);
    met_add(&m->dur_us_sum, dur_us);
}

/* One gauge of the Redis slices, per worker (workers without a slice are left out). */
static void redis_family(struct prom_buf *b, const char *name, const char *help, size_t off)
{
    char labels[32];
    unsigned w;

    prom_family(b, name, "gauge", help);
    for (w = 0; w < nworkers; w++) {
        const struct met_redis *d = &workers[w]->redis;
        if (load(&d->max) == 0)
            continue;
        snprintf(labels, sizeof(labels), "worker=\"%u\"", w);
        prom_sample(b, name, labels, (double)load((const uint64_t *)((const char *)d + off)));
    }
}

static uint64_t redis_sum(size_t off)
{
    uint64_t s = 0;
    unsigned w;

    for (w = 0; w < nworkers; w++)
        s += load((const uint64_t *)((const char *)&workers[w]->redis + off));
    return s;
}

static void render_redis(struct prom_buf *b)
{
    static const char *const kinds[MET_RE__N] = {"timeout", "conn", "reply"};
    uint64_t counts[MET_DUR_BUCKETS + 1];
    char labels[32];
    unsigned k;
    unsigned i;

    redis_family(b, "ringup_redis_connections_open", "Redis connections open or opening.",
                 offsetof(struct met_redis, open));
    redis_family(b, "ringup_redis_connections_in_use", "Redis connections with commands in flight.",
                 offsetof(struct met_redis, busy));
    redis_family(b, "ringup_redis_connections_max", "Redis connections a worker's slice may open.",
                 offsetof(struct met_redis, max));
    redis_family(b, "ringup_redis_commands_in_flight", "Redis commands sent and not answered.",
                 offsetof(struct met_redis, inflight));
    redis_family(b, "ringup_redis_up", "1 while the worker has a ready Redis connection.",
                 offsetof(struct met_redis, up));
    scalar(b, "ringup_redis_commands_total", "counter", "Redis commands answered or failed.",
           redis_sum(offsetof(struct met_redis, commands)));
    prom_family(b, "ringup_redis_errors_total", "counter",
                "Redis commands that failed, by kind (timeout, lost connection, error reply).");
    for (k = 0; k < MET_RE__N; k++) {
        snprintf(labels, sizeof(labels), "kind=\"%s\"", kinds[k]);
        prom_sample(b, "ringup_redis_errors_total", labels,
                    (double)redis_sum(offsetof(struct met_redis, errors) + k * sizeof(uint64_t)));
    }
    scalar(b, "ringup_redis_writes_total", "counter",
           "Socket writes to Redis (a loop turn's commands leave in one).",
           redis_sum(offsetof(struct met_redis, writes)));
    scalar(b, "ringup_redis_reconnects_total", "counter",
           "Redis connections opened to replace lost or failed ones.",
           redis_sum(offsetof(struct met_redis, reconnects)));
    scalar(b, "ringup_redis_noscript_reloads_total", "counter",
           "Script calls answered NOSCRIPT and sent again as EVAL.",
           redis_sum(offsetof(struct met_redis, noscript)));
    for (i = 0; i <= MET_DUR_BUCKETS; i++)
        counts[i] = redis_sum(offsetof(struct met_redis, dur) + i * sizeof(uint64_t));
    prom_family(b, "ringup_redis_command_duration_seconds", "histogram",
                "Time from sending a Redis command to its answer.");
    prom_histogram(b, "ringup_redis_command_duration_seconds", NULL, dur_bounds, counts,
                   MET_DUR_BUCKETS,
                   (double)redis_sum(offsetof(struct met_redis, dur_us_sum)) / 1e6);
}

/* Sum one field over all workers; off is its offset in struct met_worker. */
static uint64_t sum(size_t off)
{
    uint64_t s = 0;
    unsigned i;

    for (i = 0; i < nworkers; i++)
        s += __atomic_load_n((const uint64_t *)((const char *)workers[i] + off), __ATOMIC_RELAXED);
    return s;
}

/* What Redis accelerates: the metadata cache, upload progress, the event stream. */
static void render_notify(struct prom_buf *b)
{
    scalar(b, "ringup_meta_cache_hits_total", "counter",
           "File metadata reads answered from Redis, without the database.", SUM(mcache_hits));
    scalar(b, "ringup_meta_cache_misses_total", "counter",
           "File metadata reads looked up in Redis and answered by the database.",
           SUM(mcache_misses));
    scalar(b, "ringup_meta_cache_stores_total", "counter",
           "File metadata entries sent to Redis after a miss.", SUM(mcache_stores));
    scalar(b, "ringup_meta_cache_invalidations_total", "counter",
           "Tombstones sent to Redis for changed or deleted files.", SUM(mcache_invalidations));
    scalar(b, "ringup_meta_cache_invalidations_skipped_total", "counter",
           "Tombstones not sent because Redis was down (entries expire on their own).",
           SUM(mcache_invalidations_skipped));
    scalar(b, "ringup_progress_writes_total", "counter", "Upload progress records sent to Redis.",
           SUM(progress_writes));
    scalar(b, "ringup_progress_skipped_total", "counter",
           "Upload progress records not sent because Redis was down.", SUM(progress_skipped));
    scalar(b, "ringup_events_sent_total", "counter",
           "File events Redis acknowledged (stream and channel).", SUM(events_sent));
    scalar(b, "ringup_events_backlog", "gauge", "File events waiting for Redis.",
           SUM(events_backlog));
    scalar(b, "ringup_events_dropped_total", "counter",
           "File events dropped because the backlog was full.", SUM(events_dropped));
}

void met_render(struct prom_buf *b)
{
    uint64_t counts[MET_DUR_BUCKETS + 1];
    char labels[32];
    unsigned code;
    unsigned i;

    scalar(b, "ringup_workers", "gauge", "Event-loop threads.", nworkers);
    scalar(b, "ringup_connections_open", "gauge", "Connections open now.", SUM(conn_open));
    scalar(b, "ringup_connections_accepted_total", "counter", "Connections accepted.",
           SUM(conn_accepted));
    scalar(b, "ringup_connections_rejected_total", "counter",
           "Connections answered 503 and closed at MAX_CONNECTIONS.", SUM(conn_rejected));
    scalar(b, "ringup_connections_timed_out_total", "counter",
           "Connections closed by CONNECTION_TIMEOUT (idle, slow head or stalled body).",
           SUM(conn_timed_out));
    scalar(b, "ringup_accept_errors_total", "counter", "Failed accepts (descriptor limits).",
           SUM(accept_errors));
    scalar(b, "ringup_received_bytes_total", "counter", "Bytes read from client sockets.",
           SUM(bytes_received));
    scalar(b, "ringup_sent_bytes_total", "counter", "Bytes written to client sockets.",
           SUM(bytes_sent));
    scalar(b, "ringup_recv_buffers_free", "gauge", "Provided receive buffers ready for the kernel.",
           SUM(bufs_free));
    scalar(b, "ringup_recv_buffers_total", "gauge", "Provided receive buffers in all.",
           SUM(bufs_total));
    scalar(b, "ringup_recv_enobufs_total", "counter",
           "Receives that stopped because no receive buffer was free.", SUM(recv_enobufs));
    scalar(b, "ringup_request_heads_in_use", "gauge",
           "Request head buffers held by requests in progress.", SUM(heads_in_use));
    scalar(b, "ringup_log_dropped_total", "counter", "Log lines dropped because stderr lagged.",
           SUM(log_dropped));

    prom_family(b, "ringup_requests_total", "counter", "Requests answered, by status code.");
    for (code = 100; code < 600; code++) {
        uint64_t v = sum(offsetof(struct met_worker, req_by_code) + code * sizeof(uint64_t));
        if (v == 0)
            continue;
        snprintf(labels, sizeof(labels), "code=\"%u\"", code);
        prom_sample(b, "ringup_requests_total", labels, (double)v);
    }

    for (i = 0; i <= MET_DUR_BUCKETS; i++)
        counts[i] = sum(offsetof(struct met_worker, req_dur) + i * sizeof(uint64_t));
    prom_family(b, "ringup_request_duration_seconds", "histogram",
                "Time from a request's first byte to its response being queued.");
    prom_histogram(b, "ringup_request_duration_seconds", NULL, dur_bounds, counts, MET_DUR_BUCKETS,
                   (double)SUM(req_dur_us_sum) / 1e6);

    scalar(b, "ringup_db_rejected_total", "counter",
           "Requests answered 503 because the database wait queue was full.", SUM(db_rejected));
    scalar(b, "ringup_auth_cache_hits_total", "counter", "Bearer tokens resolved from cache.",
           SUM(auth_cache_hits));
    scalar(b, "ringup_auth_cache_misses_total", "counter",
           "Bearer tokens not answered from the worker's cache.", SUM(auth_cache_misses));
    scalar(b, "ringup_auth_lookups_total", "counter", "Token lookups sent to the database.",
           SUM(auth_lookups));
    scalar(b, "ringup_auth_coalesced_total", "counter",
           "Requests answered by another request's token lookup in flight.", SUM(auth_coalesced));
    scalar(b, "ringup_auth_refused_total", "counter",
           "Requests answered 503 because too many token lookups were in flight.",
           SUM(auth_refused));
    scalar(b, "ringup_auth_strikeouts_total", "counter",
           "Connections closed after presenting too many bad tokens.", SUM(auth_strikeouts));
    render_db(b);
    render_redis(b);
    render_uploads(b);
    render_sinks(b);
    render_ratelimit(b);
    render_notify(b);
}

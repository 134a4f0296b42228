/*
 * dbload: files-row inserts per second through ringup's own database slice,
 * with the per-turn batching (one multi-row INSERT per loop turn) on or off.
 * Runs one ring on this thread, like one worker without HTTP.
 *
 *   DATABASE_URL=... dbload [--rows N] [--inflight W] [--batch on|off] [--pool N]
 *                           [--dup-every K]
 *
 * --dup-every K gives every K-th row the id of the row before it, so that
 * batches fail and fall back to row-by-row inserts: exactly the duplicates
 * must fail. Prints one line: rows, inflight, batch, seconds, rows_per_s,
 * failed; exits 0 when exactly the expected rows failed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/core/cfg.h"
#include "engine/core/log.h"
#include "engine/core/ring.h"
#include "engine/db/db.h"
#include "engine/store/store.h"

struct load {
    unsigned long issued;
    unsigned long done;
    unsigned long failed;
    int first_err;
};

static void on_row(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct load *l = ud;

    (void)tag;
    (void)res;
    l->done++;
    if (err != 0) {
        l->failed++;
        if (l->first_err == 0)
            l->first_err = err;
    }
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static struct cfg cfg;
    static struct ring r;
    static struct db_pool db;
    char err[CFG_ERR_MAX];
    unsigned long rows = 20000;
    unsigned long inflight = 256;
    unsigned pool = 4;
    unsigned long dup_every = 0;
    char prev_id[37] = "";
    bool batch = true;
    struct load l = {0, 0, 0, 0};
    char owner[32];
    double t0;
    double secs;
    int i;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0)
            rows = strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--inflight") == 0)
            inflight = strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--pool") == 0)
            pool = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--dup-every") == 0)
            dup_every = strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = strcmp(argv[i + 1], "off") != 0;
        else
            break;
    }
    if (i < argc || rows == 0 || inflight == 0 || pool == 0) {
        fprintf(stderr, "usage: dbload [--rows N] [--inflight W] [--batch on|off] [--pool N] "
                        "[--dup-every K]\n");
        return 2;
    }
    if (cfg_load(&cfg, 0, NULL, err, sizeof(err)) < 0 ||
        cfg_resolve_paths(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "dbload: %s\n", err);
        return 2;
    }
    cfg.workers = 1;
    cfg.db_pool_min = pool;
    cfg.db_pool_max = pool;
    cfg.db_max_connections = pool;
    log_setup(CFG_LOG_WARN, cfg.log_format, "dbload");
    if (ring_init(&r, &cfg, 0) < 0) {
        fprintf(stderr, "dbload: cannot set up a ring\n");
        return 1;
    }
    db_pool_init(&db, &r, 0, cfg.database_url, "primary", pool, pool);
    db.batch_off = !batch;
    snprintf(owner, sizeof(owner), "dbload-%d", (int)getpid());

    /* Let the slice open its connections before the clock starts. */
    t0 = now_s();
    while (db.ready < pool && now_s() - t0 < 10)
        ring_turn(&r, 10);

    t0 = now_s();
    while (l.done < rows && now_s() - t0 < 300) {
        while (l.issued < rows && l.issued - l.done < inflight) {
            char id[37];
            char name[32];
            char key[64];
            struct db_file_row row;
            int ret;

            if (dup_every != 0 && l.issued % dup_every == dup_every - 1 && prev_id[0] != '\0')
                memcpy(id, prev_id, sizeof(id));
            else
                store_new_id(id);
            memcpy(prev_id, id, sizeof(prev_id));
            snprintf(name, sizeof(name), "row-%lu \"q\"", l.issued);
            snprintf(key, sizeof(key), "objects/%.2s/%.2s/%s", id, id + 2, id);
            row.id = id;
            row.owner = owner;
            row.name = name;
            row.size = l.issued;
            row.status = "queued";
            row.storage_key = key;
            row.priority = 0;
            ret = db_insert_file(&db, &row, on_row, &l, 0);
            if (ret == -EAGAIN)
                break;
            if (ret < 0) {
                l.done++;
                l.failed++;
                if (l.first_err == 0)
                    l.first_err = ret;
            }
            l.issued++;
        }
        if (ring_turn(&r, 100) < 0)
            break;
    }
    secs = now_s() - t0;
    printf("rows=%lu inflight=%lu pool=%u batch=%s seconds=%.3f rows_per_s=%.0f failed=%lu%s%s\n",
           l.done, inflight, pool, batch ? "on" : "off", secs, (double)l.done / secs, l.failed,
           l.first_err != 0 ? " first_error=" : "", l.first_err != 0 ? strerror(-l.first_err) : "");
    db_pool_stop(&db);
    db_pool_free(&db);
    ring_fini(&r);
    return l.done == rows && l.failed == (dup_every != 0 ? rows / dup_every : 0) ? 0 : 1;
}

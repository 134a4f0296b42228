/* srv: start-up, signal handling and shutdown of the worker threads. */
#include "engine/srv.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/db/db.h"
#include "engine/db/events.h"
#include "engine/db/limit.h"
#include "engine/db/redis.h"
#include "engine/db/rlock.h"
#include "engine/store/store.h"
#include "engine/worker.h"

#define VERSION_STRING "0.1.0"

/*
 * Workers write stderr with positionless writes from several threads; on a
 * regular file that is only safe with O_APPEND.
 */
static void stderr_append(void)
{
    struct stat st;
    int fl;

    if (fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
        fl = fcntl(STDERR_FILENO, F_GETFL);
        if (fl >= 0)
            fcntl(STDERR_FILENO, F_SETFL, fl | O_APPEND);
    }
}

#define RESOLVE_TICKS 100 /* 100 ms ticks between lookups of an unresolved database host */

/* The main thread looks up what the workers may not: a database host that did not resolve. */
static void retry_resolve(const struct cfg *cfg)
{
    const char *urls[2] = {cfg->database_url, cfg->db_read_url};
    char err[256];
    uint8_t id;

    for (id = 0; id < 2; id++)
        if (db_unresolved(id) && db_resolve(id, urls[id], err, sizeof(err)) == 0)
            log_info("database host resolved", "pool=%s", id == 0 ? "primary" : "read");
}

static bool all_finished(struct worker *workers, uint32_t n)
{
    uint32_t i;

    for (i = 0; i < n; i++)
        if (!worker_finished(&workers[i]))
            return false;
    return true;
}

static bool any_finished(struct worker *workers, uint32_t n)
{
    uint32_t i;

    for (i = 0; i < n; i++)
        if (worker_finished(&workers[i]))
            return true;
    return false;
}

static void stop_all(struct worker *workers, uint32_t n)
{
    uint32_t i;

    for (i = 0; i < n; i++)
        worker_stop(&workers[i]);
}

int srv_serve(const struct cfg *cfg)
{
    struct timespec tick = {0, 100 * 1000000};
    struct worker *workers;
    uint32_t started = 0;
    uint32_t set_up = 0;
    bool stopping = false;
    int status = 0;
    sigset_t set;
    unsigned long ticks = 0;
    uint32_t i;
    int ret;

    stderr_append();
    /* Workers inherit this mask: signals are taken only here, by sigtimedwait. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    {
        char err[256];
        if (db_resolve(0, cfg->database_url, err, sizeof(err)) < 0 ||
            db_resolve(1, cfg->db_read_url, err, sizeof(err)) < 0) {
            /* Not fatal: the server serves what needs no database; queries get 503. */
            log_warn("database host not resolved at start-up", "error=%s", err);
        }
    }
    {
        char err[256];
        /* REDIS_URL's form was checked at load: what fails here is the host's lookup. */
        if (redis_setup(cfg, err, sizeof(err)) < 0)
            log_warn("redis not set up: serving without it", "error=%s", err);
        rlock_setup();
        events_setup();
    }
    ret = store_init(cfg);
    if (ret < 0) {
        log_error("storage directory unusable", "dir=%s error=%s", cfg->storage_dir,
                  strerror(-ret));
        return 1;
    }
    log_info("storage ready", "dir=%s link=%s", cfg->storage_dir,
             store_flink() ? "descriptor" : "proc-path");
    lim_setup(cfg);
    workers = calloc(cfg->workers, sizeof(*workers));
    if (workers == NULL)
        log_oom();
    for (set_up = 0; set_up < cfg->workers; set_up++) {
        if (worker_setup(&workers[set_up], cfg, set_up) < 0) {
            status = 1;
            goto out_teardown;
        }
        met_register(&workers[set_up].ring.met);
    }
    for (started = 0; started < cfg->workers; started++) {
        ret = worker_start(&workers[started]);
        if (ret < 0) {
            log_error("worker start failed", "worker=%u error=%s", started, strerror(-ret));
            status = 1;
            stopping = true;
            stop_all(workers, started);
            goto out_join;
        }
    }
    log_info("listening", "addr=%s workers=%u version=%s", cfg->listen, cfg->workers,
             VERSION_STRING);
    while (!all_finished(workers, cfg->workers)) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig < 0 && ++ticks % RESOLVE_TICKS == 0)
            retry_resolve(cfg);
        if (sig < 0) {
            if (!stopping && any_finished(workers, cfg->workers)) {
                log_error("a worker ended, stopping", "workers=%u", cfg->workers);
                status = 1;
                stopping = true;
                stop_all(workers, cfg->workers);
            }
            continue;
        }
        if (stopping) {
            log_warn("second signal, exiting now", "signal=%s", strsignal(sig));
            _exit(1);
        }
        log_info("stopping", "signal=%s shutdown_timeout_ms=%u", strsignal(sig),
                 cfg->shutdown_timeout);
        stopping = true;
        stop_all(workers, cfg->workers);
    }

out_join:
    for (i = 0; i < started; i++)
        if (worker_join(&workers[i]) != 0)
            status = 1;
out_teardown:
    for (i = 0; i < set_up; i++)
        worker_teardown(&workers[i]);
    free(workers);
    if (status == 0)
        log_info("stopped", "workers=%u", cfg->workers);
    return status;
}

/*
 * events: file events through Redis, with a per-worker backlog; see events.h.
 */
#include "engine/db/events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/core/tmr.h"
#include "engine/db/redis.h"

#define RETRY_MS 250 /* after a failed or refused send while Redis is up */

/*
 * XADD and PUBLISH of every event in ARGV, in order, in one atomic call:
 * the stream and the channel never disagree, and a batch is all or nothing.
 * The channel is named as the stream (KEYS[1]).
 */
static struct redis_script script = {
    .name = "events",
    .src = "for i = 1, #ARGV do\n"
           "  redis.call('XADD', KEYS[1], 'MAXLEN', '~', '100000', '*', 'event', ARGV[i])\n"
           "  redis.call('PUBLISH', KEYS[1], ARGV[i])\n"
           "end\n"
           "return #ARGV\n",
};

static const char *const type_names[] = {
    [EVENTS_FILE_QUEUED] = "file.queued",     [EVENTS_FILE_READY] = "file.ready",
    [EVENTS_FILE_REJECTED] = "file.rejected", [EVENTS_FILE_FAILED] = "file.failed",
    [EVENTS_FILE_DELETED] = "file.deleted",
};

struct events {
    struct ring *ring;        /* timers, metrics, the clock */
    struct redis_pool *redis; /* where events go */
    char **q;                 /* the backlog: JSON texts, a circular array of cap */
    size_t *lens;             /* their lengths */
    uint32_t cap;             /* EVENTS_BACKLOG_MAX */
    uint32_t head;            /* the oldest event */
    uint32_t count;           /* events in the backlog */
    uint32_t inflight;        /* events from head on carried by the script in flight */
    bool stopping;            /* events_stop() ran */
    bool gave_up;             /* stopping, and the deadline passed */
    struct tmr retry;         /* sends again after a failure while Redis is up */
    struct tmr deadline;      /* the end of the flush at shutdown */
};

static void kick(struct events *e);

void events_setup(void)
{
    redis_script_init(&script);
}

size_t events_format_time(char out[EVENTS_TIME_MAX], int64_t at_us)
{
    time_t sec = (time_t)(at_us / 1000000);
    struct tm tm;
    size_t n;

    gmtime_r(&sec, &tm);
    n = strftime(out, EVENTS_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, EVENTS_TIME_MAX - n, ".%06dZ", (int)(at_us % 1000000));
    return n;
}

static void add_nullable(cJSON *o, const char *key, const char *val)
{
    if (val == NULL)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddStringToObject(o, key, val);
}

char *events_json(enum events_type type, const struct events_file *f, int64_t at_us)
{
    char at[EVENTS_TIME_MAX];
    cJSON *o = cJSON_CreateObject();
    char *text;

    if (o == NULL)
        log_oom();
    events_format_time(at, at_us);
    cJSON_AddStringToObject(o, "type", type_names[type]);
    cJSON_AddStringToObject(o, "id", f->id);
    cJSON_AddStringToObject(o, "owner", f->owner);
    cJSON_AddNumberToObject(o, "size", (double)f->size);
    add_nullable(o, "sha256", f->sha256);
    add_nullable(o, "mime", f->mime);
    cJSON_AddStringToObject(o, "at", at);
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL)
        log_oom();
    return text;
}

static struct events *of_retry(struct tmr *t)
{
    return (struct events *)((char *)t - offsetof(struct events, retry));
}

static void on_retry(struct tmr *t)
{
    kick(of_retry(t));
}

static void on_deadline(struct tmr *t)
{
    struct events *e = (struct events *)((char *)t - offsetof(struct events, deadline));

    e->gave_up = true;
}

static void on_state(void *ctx, bool up)
{
    if (up)
        kick(ctx);
}

struct events *events_new(struct ring *r, struct redis_pool *p)
{
    struct events *e = calloc(1, sizeof(*e));

    if (e == NULL)
        log_oom();
    e->ring = r;
    e->redis = p;
    e->cap = EVENTS_BACKLOG_MAX;
    e->q = calloc(e->cap, sizeof(*e->q));
    e->lens = calloc(e->cap, sizeof(*e->lens));
    if (e->q == NULL || e->lens == NULL)
        log_oom();
    tmr_init(&e->retry, on_retry);
    tmr_init(&e->deadline, on_deadline);
    if (p != NULL)
        redis_pool_on_state(p, on_state, e);
    return e;
}

static uint32_t slot(const struct events *e, uint32_t i)
{
    return (e->head + i) % e->cap;
}

/* Free the oldest n events (acknowledged). */
static void pop(struct events *e, uint32_t n)
{
    while (n-- > 0) {
        free(e->q[e->head]);
        e->q[e->head] = NULL;
        e->head = slot(e, 1);
        e->count--;
    }
    met_set(&e->ring->met.events_backlog, e->count);
}

/*
 * Make room in a full backlog: drop the oldest event that is not in flight.
 * The in-flight ones, at the head, move up one slot over it. False when every
 * event is in flight (then the new one is dropped instead).
 */
static bool drop_oldest(struct events *e)
{
    uint32_t j;

    if (e->inflight == e->count)
        return false;
    free(e->q[slot(e, e->inflight)]);
    for (j = e->inflight; j > 0; j--) {
        e->q[slot(e, j)] = e->q[slot(e, j - 1)];
        e->lens[slot(e, j)] = e->lens[slot(e, j - 1)];
    }
    e->q[e->head] = NULL;
    e->head = slot(e, 1);
    e->count--;
    return true;
}

static void later(struct events *e)
{
    if (!tmr_armed(&e->retry))
        tmr_set(&e->ring->timers, &e->retry, e->ring->now_ms + RETRY_MS);
}

/* The script's answer: its events are in Redis (drop them from the backlog), or not (retry). */
static void on_sent(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct events *e = ud;
    uint32_t n = e->inflight;

    (void)tag;
    e->inflight = 0;
    if (err == -ESHUTDOWN)
        return;
    if (err != 0 || redis_reply_is_error(reply)) {
        /* Unknown or refused: the same events go again (at least once), in order. */
        later(e);
        return;
    }
    met_add(&e->ring->met.events_sent, n);
    pop(e, n);
    kick(e);
}

/* Send the oldest events, unless a batch is in flight or Redis is down. */
static void kick(struct events *e)
{
    const char *argv[1 + EVENTS_BATCH];
    size_t lens[1 + EVENTS_BATCH];
    uint32_t n;
    uint32_t i;
    int ret;

    if (e->inflight > 0 || e->count == 0 || e->redis == NULL || !redis_up(e->redis))
        return;
    n = e->count < EVENTS_BATCH ? e->count : EVENTS_BATCH;
    argv[0] = EVENTS_STREAM;
    lens[0] = sizeof(EVENTS_STREAM) - 1;
    for (i = 0; i < n; i++) {
        argv[1 + i] = e->q[slot(e, i)];
        lens[1 + i] = e->lens[slot(e, i)];
    }
    ret = redis_eval(e->redis, &script, on_sent, e, 0, 1, (int)(1 + n), argv, lens);
    if (ret == 0) {
        e->inflight = n;
        return;
    }
    /* -ENOTCONN: the pool's state callback kicks again when it is up. */
    if (ret != -ENOTCONN && ret != -ESHUTDOWN)
        later(e);
}

void events_emit(struct events *e, enum events_type type, const struct events_file *f)
{
    struct timespec ts;
    int64_t at_us;
    char *text;

    clock_gettime(CLOCK_REALTIME, &ts);
    at_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (e->count == e->cap) {
        met_inc(&e->ring->met.events_dropped);
        if (!drop_oldest(e))
            return;
    }
    text = events_json(type, f, at_us);
    e->q[slot(e, e->count)] = text;
    e->lens[slot(e, e->count)] = strlen(text);
    e->count++;
    met_set(&e->ring->met.events_backlog, e->count);
    kick(e);
}

uint32_t events_pending(const struct events *e)
{
    return e->count;
}

void events_stop(struct events *e, uint64_t deadline_ms)
{
    e->stopping = true;
    tmr_set(&e->ring->timers, &e->deadline, deadline_ms);
    kick(e);
}

bool events_draining(const struct events *e)
{
    return e->stopping && !e->gave_up && e->count > 0 && e->redis != NULL && redis_up(e->redis);
}

void events_free(struct events *e)
{
    if (e == NULL)
        return;
    tmr_cancel(&e->ring->timers, &e->retry);
    tmr_cancel(&e->ring->timers, &e->deadline);
    if (e->count > 0)
        log_warn("events not sent to redis", "lost=%u worker=%u", e->count, e->ring->id);
    pop(e, e->count);
    free(e->q);
    free(e->lens);
    free(e);
}

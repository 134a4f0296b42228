/*
 * events: file state changes, told to the world through Redis (API.md,
 * "Events (Notify)").
 *
 * Each event is a JSON object appended to the stream ringup:events (XADD
 * MAXLEN ~ 100000, one field "event") and published on the channel of the
 * same name, both by one Lua script, so a consumer never sees one without
 * the other. Delivery is at least once: an event stays in the worker's
 * backlog until Redis acknowledged the script that carried it, and a script
 * whose answer was lost (timeout, lost connection) is sent again, so a
 * consumer may see an event twice (the stream entry ids differ; the event's
 * own fields do not).
 *
 * The backlog is per worker and bounded (EVENTS_BACKLOG_MAX). While Redis
 * is down events wait there; when it comes back they leave in order, one
 * script of up to EVENTS_BATCH events at a time (one in flight keeps the
 * order across the pool's connections). A full backlog drops its oldest
 * event not in flight: events describe states that later events supersede,
 * so after a long outage the newest are the ones closest to the truth, and
 * the stream's own MAXLEN trims the oldest too. Drops are counted. Nothing
 * here ever waits. Ring thread, except events_setup().
 */
#ifndef ENGINE_DB_EVENTS_H
#define ENGINE_DB_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring;
struct redis_pool;
struct events;

#define EVENTS_STREAM "ringup:events" /* the stream, and the channel */
#define EVENTS_BACKLOG_MAX 10000      /* events a worker holds for Redis */
#define EVENTS_BATCH 32               /* events one script carries */
#define EVENTS_TIME_MAX 32            /* "2026-01-02T03:04:05.678901Z" and its NUL */

enum events_type {
    EVENTS_FILE_QUEUED,   /* the upload's row committed */
    EVENTS_FILE_READY,    /* processed */
    EVENTS_FILE_REJECTED, /* processing refused it */
    EVENTS_FILE_FAILED,   /* processing failed */
    EVENTS_FILE_DELETED,  /* DELETE removed its row */
};

/* The file an event is about; strings are copied into the event. */
struct events_file {
    const char *id;     /* UUID text */
    const char *owner;  /* the user name */
    uint64_t size;      /* bytes */
    const char *sha256; /* lowercase hex, or NULL until known */
    const char *mime;   /* or NULL until known */
};

/* Load the script's SHA1 (main thread, before workers start). */
void events_setup(void);

/* at_us (µs since the epoch, UTC) as RFC 3339 into out. Returns its length. */
size_t events_format_time(char out[EVENTS_TIME_MAX], int64_t at_us);

/* The event's JSON, NUL-terminated, allocated (the caller frees it). */
char *events_json(enum events_type type, const struct events_file *f, int64_t at_us);

/* A worker's event queue on ring r, sending through p. Never fails. */
struct events *events_new(struct ring *r, struct redis_pool *p);

/* Queue the event of f now (the clock is read here); sends it as soon as Redis takes it. */
void events_emit(struct events *e, enum events_type type, const struct events_file *f);

/* Events queued and not acknowledged yet. */
uint32_t events_pending(const struct events *e);

/*
 * Shutdown: go on sending until the backlog is empty, Redis is down, or
 * deadline_ms (ring time) passed. events_draining() says which.
 */
void events_stop(struct events *e, uint64_t deadline_ms);

/* True while a stopping queue still has events it can send. */
bool events_draining(const struct events *e);

/* Free the queue (after the Redis pool stopped); what is left is lost, and logged. */
void events_free(struct events *e);

#endif /* ENGINE_DB_EVENTS_H */

/*
 * limit: the upload rate limits of API.md, UPLOAD_RATE_LIMIT per user and
 * GLOBAL_RATE_LIMIT for the deployment, exact across every instance that
 * shares a Redis, with a local fallback while Redis is away.
 *
 * Each limit is a GCRA bucket (bucket.h) kept in Redis and changed only by
 * one Lua script, so concurrent instances cannot race. A worker leases
 * permits for a user (debited from the user's and the global bucket
 * together) in blocks of bucket_block(): with small limits a block is one
 * permit and every upload is decided in Redis; with high limits a round
 * trip buys many uploads, admitted with no Redis call. Permits left unused
 * for a second go back. While Redis is down, each process decides with
 * local buckets holding its share (the limit over the instances seen
 * lately); the shared buckets come back with Redis.
 *
 * One struct lim per worker (ring thread); the local fallback and the count
 * of instances are the process's, behind a mutex and an atomic.
 */
#ifndef ENGINE_DB_LIMIT_H
#define ENGINE_DB_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ring;
struct cfg;
struct redis_pool;
struct lim;

/* Which limit a verdict describes. */
enum lim_scope { LIM_USER, LIM_GLOBAL };

/* A decision, and the headers that tell a client about it. */
struct lim_verdict {
    bool allowed;
    uint8_t scope;      /* enum lim_scope: the limit that refused, else the tighter one */
    uint32_t limit;     /* that limit, per minute (RateLimit-Limit) */
    uint32_t remaining; /* permits left in it (RateLimit-Remaining) */
    uint32_t reset_s;   /* seconds until it is full again (RateLimit-Reset) */
    uint32_t retry_s;   /* refused: seconds until the request fits (Retry-After) */
};

struct lim_wait;

/* A decision that waited for Redis; ring thread. The caller's wait is its own again. */
typedef void (*lim_cb)(struct lim_wait *w, const struct lim_verdict *v);

/* A request waiting for a decision: embedded by the caller, linked by lim_take(). */
struct lim_wait {
    struct lim_wait *next;
    lim_cb cb;
    uint32_t n; /* permits asked */
};

/* Main thread, before workers start: the scripts' SHA1s, the process's fallback. */
void lim_setup(const struct cfg *cfg);

/* A worker's limiter on ring r (ring thread); worker 0 also counts the instances. */
struct lim *lim_new(struct ring *r, const struct cfg *cfg, struct redis_pool *redis, uint32_t id);

/* True when a limit is set (either is not 0). */
bool lim_on(const struct lim *l);

/*
 * Take n permits for user. true: decided now, *v says how. false: asking
 * Redis; cb(w, verdict) comes later on this ring, exactly once, and w must
 * stay valid until then. A refusal takes nothing.
 */
bool lim_take(struct lim *l, const char *user, uint32_t n, lim_cb cb, struct lim_wait *w,
              struct lim_verdict *v);

/* Give back n permits user took and did not use (a request refused later). */
void lim_give(struct lim *l, const char *user, uint32_t n);

/* Shutdown: return held permits, stop the timers (before the Redis pool stops). */
void lim_stop(struct lim *l);

/* Free the limiter (after the ring stopped; nothing waits any more). */
void lim_free(struct lim *l);

#endif /* ENGINE_DB_LIMIT_H */

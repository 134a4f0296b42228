/*
 * rlock: distributed locks in Redis (one PATCH of a tus upload at a time,
 * across instances). acquire is SET key owner NX PX ttl with a fresh random
 * owner token (128 bits, hex); release and extend are Lua scripts that act
 * only while the key still holds our token, so an owner whose lock expired
 * and went to someone else can neither release nor extend it. A keep-alive
 * extends a held lock every ttl/3 on the worker's timers until release.
 *
 * The caller owns struct rlock (embedded or allocated) and drives it from
 * its ring thread, one operation at a time; it frees the struct only when
 * rlock_idle() is true (no command of it in flight).
 */
#ifndef ENGINE_DB_RLOCK_H
#define ENGINE_DB_RLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/core/tmr.h"

struct redis_pool;
struct ring;

#define RLOCK_KEY_MAX 200  /* bytes of a lock's key */
#define RLOCK_OWNER_LEN 32 /* hex characters of an owner token */
#define RLOCK_HELD 1       /* result: the lock is ours (acquired, extended, released by us) */
#define RLOCK_NOT_HELD 0   /* result: another owner has it, or nobody (expired) */

/*
 * An operation's outcome, on the ring thread: RLOCK_HELD, RLOCK_NOT_HELD or
 * -errno (-ENOTCONN: Redis down; -ETIMEDOUT, -ECONNABORTED: unknown whether
 * it ran; -ESHUTDOWN). For a keep-alive's on_lost, RLOCK_NOT_HELD only.
 */
typedef void (*rlock_cb)(void *ud, int result);

struct rlock {
    struct redis_pool *pool; /* the worker's Redis slice */
    struct ring *ring;       /* its timers */
    char key[RLOCK_KEY_MAX]; /* the lock's key */
    size_t keylen;
    char owner[RLOCK_OWNER_LEN + 1]; /* token of the last acquire */
    uint32_t ttl_ms;                 /* PX of acquire and extend */
    bool held;                       /* we believe we hold it */
    bool op_busy;                    /* a caller's operation is in flight */
    bool ka_on;                      /* the keep-alive runs */
    bool ka_busy;                    /* a keep-alive extend is in flight */
    uint64_t valid_until_ms;         /* held at least until then (ring time) */
    rlock_cb cb;                     /* the operation in flight's callback */
    void *ud;
    rlock_cb on_lost; /* keep-alive: the lock was lost */
    void *lost_ud;
    struct tmr timer; /* keep-alive */
};

/* Compute the scripts' SHA1s (main thread, before workers start). */
void rlock_setup(void);

/* Prepare l for key (keylen < RLOCK_KEY_MAX bytes) with ttl_ms. Returns 0 or -ENAMETOOLONG. */
int rlock_init(struct rlock *l, struct redis_pool *p, struct ring *r, const char *key,
               size_t keylen, uint32_t ttl_ms);

/* Try to take the lock: cb gets RLOCK_HELD or RLOCK_NOT_HELD. Returns 0 or -errno (-EBUSY). */
int rlock_acquire(struct rlock *l, rlock_cb cb, void *ud);

/* Push the lock's expiry ttl_ms ahead if it is still ours. Same returns. */
int rlock_extend(struct rlock *l, rlock_cb cb, void *ud);

/* Give the lock up if it is still ours (stops the keep-alive). Same returns. */
int rlock_release(struct rlock *l, rlock_cb cb, void *ud);

/* Extend the held lock every ttl/3 until released; on_lost hears when it is gone. */
void rlock_keepalive(struct rlock *l, rlock_cb on_lost, void *ud);

/* True when no command of l is in flight: l may be freed. */
bool rlock_idle(const struct rlock *l);

#endif /* ENGINE_DB_RLOCK_H */

/*
 * bucket: the arithmetic of a rate limit, pure (no clock, no lock, no I/O).
 *
 * A limit of L per minute is a GCRA, the generic cell rate algorithm: a
 * token bucket holding L permits, refilled at one permit every T = 60000/L
 * ms, kept as one number, the theoretical arrival time (TAT, ms): when the
 * bucket will be full again. Its debt at time now is max(0, TAT - now); n
 * permits fit while debt + n*T <= 60000. So the state is O(1) however high
 * the limit, and the time until n permits fit is exact (Retry-After).
 *
 * The TAT is kept as the debt at the time of the last change (at + debt):
 * as one double on a clock of 10^12 ms, adding a permit of 60000/L ms
 * rounds to the clock's ulp, and a million single debits drift by a whole
 * permit; a debt stays under 60000 ms, where a double is exact to 10^-11.
 *
 * The limiter's local fallback uses these functions with TAT on the
 * process's monotonic clock; the Redis script of limit.c does the same sums
 * on Redis's clock. A limit of 0 is no limit: everything fits.
 */
#ifndef ENGINE_DB_BUCKET_H
#define ENGINE_DB_BUCKET_H

#include <stdint.h>

/* A bucket: its TAT is at + debt (ms). Zeroed: full. */
struct bucket {
    double at;   /* when debt was last set */
    double debt; /* ms until full, as of at */
};

#define BUCKET_PERIOD_MS 60000.0 /* the limits are per minute */
#define BUCKET_BLOCK_MAX 256     /* the most permits one lease takes */
#define BUCKET_BLOCK_DIV 64      /* a lease takes at most 1/64 of the tighter limit */

/* How many permits, up to want, fit in the bucket now (0..want). */
uint32_t bucket_fit(const struct bucket *b, double now, uint32_t limit, uint32_t want);

/* Take n permits at now (the caller checked that they fit). */
void bucket_debit(struct bucket *b, double now, uint32_t limit, uint32_t n);

/* Give n unused permits back at now (never past a full bucket). */
void bucket_credit(struct bucket *b, double now, uint32_t limit, uint32_t n);

/* Milliseconds until n permits fit (0: they fit now). */
uint64_t bucket_retry_ms(const struct bucket *b, double now, uint32_t limit, uint32_t n);

/* Milliseconds until the bucket is full again (RateLimit-Reset). */
uint64_t bucket_reset_ms(const struct bucket *b, double now);

/* Whole seconds of ms, rounded up (an honest Retry-After). */
uint32_t bucket_secs(uint64_t ms);

/*
 * One process's share of a limit while the instances cannot agree through
 * Redis: limit / instances, rounded down so that the shares add up to no
 * more than the limit, and at least 1 (a limit is never turned into a ban).
 * 0 stays 0 (no limit).
 */
uint32_t bucket_share(uint32_t limit, uint32_t instances);

/*
 * The lease block: how many permits a worker takes from Redis at once.
 * 1/64 of the tighter limit (limits of 0 left out), between 1 and
 * BUCKET_BLOCK_MAX: small limits are decided one by one in Redis (exact),
 * high ones buy up to 256 uploads per round trip while a lease is never
 * more than 1/64 of what the whole deployment may do in a minute.
 */
uint32_t bucket_block(uint32_t user_limit, uint32_t global_limit);

#endif /* ENGINE_DB_BUCKET_H */

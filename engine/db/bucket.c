/*
 * bucket: GCRA sums; see bucket.h. Times are ms as doubles: the local
 * fallback passes its monotonic clock, the Redis script mirrors these sums
 * with Redis's clock.
 */
#include "engine/db/bucket.h"

#include <math.h>

/*
 * Slack of float sums, in permits: L debits of T add up to 60000 ms give or
 * take a few ulps, and must still leave the bucket exactly empty, not one
 * permit short.
 */
#define SLACK 1e-6

/* The debt now: what was owed at b->at, less the time since (a clock that went back: none). */
static double debt_of(const struct bucket *b, double now)
{
    double d = now > b->at ? b->debt - (now - b->at) : b->debt;

    return d > 0 ? d : 0.0;
}

uint32_t bucket_fit(const struct bucket *b, double now, uint32_t limit, uint32_t want)
{
    double room;

    if (limit == 0)
        return want;
    room = floor((BUCKET_PERIOD_MS - debt_of(b, now)) * limit / BUCKET_PERIOD_MS + SLACK);
    if (room <= 0)
        return 0;
    return room < want ? (uint32_t)room : want;
}

void bucket_debit(struct bucket *b, double now, uint32_t limit, uint32_t n)
{
    if (limit == 0)
        return;
    b->debt = debt_of(b, now) + n * (BUCKET_PERIOD_MS / limit);
    b->at = now > b->at ? now : b->at;
}

void bucket_credit(struct bucket *b, double now, uint32_t limit, uint32_t n)
{
    double d;

    if (limit == 0)
        return;
    d = debt_of(b, now) - n * (BUCKET_PERIOD_MS / limit);
    b->debt = d > 0 ? d : 0.0;
    b->at = now > b->at ? now : b->at;
}

uint64_t bucket_retry_ms(const struct bucket *b, double now, uint32_t limit, uint32_t n)
{
    double wait;

    if (limit == 0)
        return 0;
    /* Fits when debt + n*T <= period: the debt must fall by the excess. */
    wait = debt_of(b, now) + n * (BUCKET_PERIOD_MS / limit) - BUCKET_PERIOD_MS;
    if (wait <= SLACK * BUCKET_PERIOD_MS / limit)
        return 0;
    return (uint64_t)ceil(wait);
}

uint64_t bucket_reset_ms(const struct bucket *b, double now)
{
    return (uint64_t)ceil(debt_of(b, now));
}

uint32_t bucket_secs(uint64_t ms)
{
    return (uint32_t)((ms + 999) / 1000);
}

uint32_t bucket_share(uint32_t limit, uint32_t instances)
{
    uint32_t s;

    if (limit == 0)
        return 0;
    s = limit / (instances > 0 ? instances : 1);
    return s > 0 ? s : 1;
}

uint32_t bucket_block(uint32_t user_limit, uint32_t global_limit)
{
    uint32_t tight = user_limit;
    uint32_t b;

    if (tight == 0 || (global_limit != 0 && global_limit < tight))
        tight = global_limit;
    b = tight / BUCKET_BLOCK_DIV;
    if (b < 1)
        return 1;
    return b < BUCKET_BLOCK_MAX ? b : BUCKET_BLOCK_MAX;
}

/*
 * hist: log-bucket histogram (see hist.h). Pure arithmetic; no I/O.
 */
#include "bench/load/hist.h"

#include <math.h>
#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned hist_index(uint64_t v)
{
    unsigned e;

    if (v < HIST_SUB)
        return (unsigned)v;
    e = 63u - (unsigned)__builtin_clzll(v); /* e >= HIST_SUB_BITS */
    /* Bucket row e - HIST_SUB_BITS + 1; the HIST_SUB_BITS bits below the top one pick the column.
     */
    return (e - HIST_SUB_BITS + 1) * HIST_SUB +
           (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

uint64_t hist_bucket_low(unsigned i)
{
    unsigned row = i / HIST_SUB;
    unsigned col = i % HIST_SUB;

    if (row == 0)
        return col;
    return (uint64_t)(HIST_SUB + col) << (row - 1);
}

uint64_t hist_bucket_high(unsigned i)
{
    unsigned row = i / HIST_SUB;

    if (row == 0)
        return i;
    return hist_bucket_low(i) + ((uint64_t)1 << (row - 1)) - 1;
}

void hist_record(struct hist *h, uint64_t v)
{
    h->bucket[hist_index(v)]++;
    h->count++;
    h->sum += (long double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    unsigned i;

    if (src->count == 0)
        return;
    for (i = 0; i < HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    long double r;
    uint64_t rank;
    uint64_t seen = 0;
    uint64_t lo;
    uint64_t hi;
    uint64_t mid;
    unsigned i;

    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max;
    if (q <= 0.0)
        return h->min;
    /* q is binary: 0.9 * 10 is 9.0000000000000002; a relative nudge keeps it the 9th value. */
    r = (long double)q * (long double)h->count;
    rank = (uint64_t)ceill(r - r * 1e-12L);
    if (rank == 0)
        rank = 1;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank)
            break;
    }
    if (i == HIST_BUCKETS)
        return h->max;
    lo = hist_bucket_low(i);
    hi = hist_bucket_high(i);
    mid = lo + (hi - lo) / 2;
    if (mid < h->min)
        mid = h->min;
    if (mid > h->max)
        mid = h->max;
    return mid;
}

double hist_mean(const struct hist *h)
{
    if (h->count == 0)
        return 0.0;
    return (double)(h->sum / (long double)h->count);
}

/*
 * hist: a latency histogram with logarithmic buckets. Values (microseconds,
 * or any unsigned 64-bit quantity) below 32 are counted exactly; above,
 * each power of two is cut into 32 linear sub-buckets, so a bucket is at
 * most 1/32 of its lower bound wide and a reported percentile (the
 * bucket's midpoint, clamped to the recorded min and max) is within 1/64
 * (1.6 %) of a recorded value. Fixed size, no allocation, and mergeable by
 * adding counts, so per-thread and per-process histograms combine exactly.
 */
#ifndef BENCH_LOAD_HIST_H
#define BENCH_LOAD_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 5                /* log2 of the sub-buckets per power of two */
#define HIST_SUB (1u << HIST_SUB_BITS) /* sub-buckets per power of two */
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB) /* enough for UINT64_MAX */

struct hist {
    uint64_t count;                /* values recorded */
    uint64_t min;                  /* smallest value (UINT64_MAX while empty) */
    uint64_t max;                  /* largest value (0 while empty) */
    long double sum;               /* sum of values, for the mean (no overflow at 2^64) */
    uint64_t bucket[HIST_BUCKETS]; /* counts per bucket */
};

/* Empty the histogram. */
void hist_init(struct hist *h);

/* The bucket index of v; exposed for the tests. */
unsigned hist_index(uint64_t v);

/* The smallest and largest value that fall into bucket i. */
uint64_t hist_bucket_low(unsigned i);
uint64_t hist_bucket_high(unsigned i);

/* Count one value. */
void hist_record(struct hist *h, uint64_t v);

/* Add every count of src to dst (dst = dst + src). */
void hist_merge(struct hist *dst, const struct hist *src);

/*
 * The value at quantile q (0..1, nearest rank: the smallest recorded value
 * with at least ceil(q * count) values at or below it), as the midpoint of
 * its bucket clamped to [min, max]. 0 when empty; q >= 1 gives max exactly.
 */
uint64_t hist_quantile(const struct hist *h, double q);

/* The exact mean of the recorded values; 0 when empty. */
double hist_mean(const struct hist *h);

#endif /* BENCH_LOAD_HIST_H */

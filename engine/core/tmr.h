/*
 * tmr: per-worker timers in a binary min-heap keyed by deadline (ms on the
 * monotonic clock). Owners embed a struct tmr; the heap never allocates per
 * timer. One heap per worker, used only by its thread.
 */
#ifndef ENGINE_CORE_TMR_H
#define ENGINE_CORE_TMR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TMR_NONE UINT32_MAX /* heap_idx of a timer that is not armed */

struct tmr;
typedef void (*tmr_fn)(struct tmr *t);

struct tmr {
    uint64_t deadline; /* ms, monotonic */
    uint32_t heap_idx; /* position in the heap, TMR_NONE when disarmed */
    tmr_fn fn;         /* called once at expiry, after the timer is disarmed */
};

struct tmr_heap {
    struct tmr **v; /* v[0] expires first */
    uint32_t n;     /* armed timers */
    uint32_t cap;   /* slots allocated in v */
};

/* Current monotonic time in ms (coarse clock: ~1-4 ms resolution is plenty). */
uint64_t tmr_now_ms(void);

void tmr_heap_init(struct tmr_heap *h);
void tmr_heap_free(struct tmr_heap *h);

/* Prepare an embedded timer (disarmed). */
void tmr_init(struct tmr *t, tmr_fn fn);

/* Arm or re-arm t to fire at deadline. Grows the heap (aborts on no memory). */
void tmr_set(struct tmr_heap *h, struct tmr *t, uint64_t deadline);

/* Disarm t if armed. */
void tmr_cancel(struct tmr_heap *h, struct tmr *t);

static inline bool tmr_armed(const struct tmr *t)
{
    return t->heap_idx != TMR_NONE;
}

/*
 * Fire every timer whose deadline <= now, earliest first. A callback may arm
 * or cancel any timer. Returns the number fired.
 */
unsigned tmr_expire(struct tmr_heap *h, uint64_t now);

/* The earliest deadline, or UINT64_MAX when none is armed. */
uint64_t tmr_next(const struct tmr_heap *h);

#endif /* ENGINE_CORE_TMR_H */

/* tmr: binary min-heap of embedded timers. */
#include "engine/core/tmr.h"

#include <stdlib.h>
#include <time.h>

#include "engine/core/log.h"

uint64_t tmr_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void tmr_heap_init(struct tmr_heap *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
}

void tmr_heap_free(struct tmr_heap *h)
{
    free(h->v);
    tmr_heap_init(h);
}

void tmr_init(struct tmr *t, tmr_fn fn)
{
    t->deadline = 0;
    t->heap_idx = TMR_NONE;
    t->fn = fn;
}

static void place(struct tmr_heap *h, uint32_t i, struct tmr *t)
{
    h->v[i] = t;
    t->heap_idx = i;
}

static void sift_up(struct tmr_heap *h, uint32_t i)
{
    struct tmr *t = h->v[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->v[parent]->deadline <= t->deadline)
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(struct tmr_heap *h, uint32_t i)
{
    struct tmr *t = h->v[i];

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->deadline < h->v[c]->deadline)
            c++;
        if (t->deadline <= h->v[c]->deadline)
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, t);
}

void tmr_set(struct tmr_heap *h, struct tmr *t, uint64_t deadline)
{
    if (tmr_armed(t)) {
        uint64_t old = t->deadline;
        t->deadline = deadline;
        if (deadline < old)
            sift_up(h, t->heap_idx);
        else if (deadline > old)
            sift_down(h, t->heap_idx);
        return;
    }
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 256;
        struct tmr **v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            log_oom();
        h->v = v;
        h->cap = cap;
    }
    t->deadline = deadline;
    h->v[h->n] = t;
    t->heap_idx = h->n++;
    sift_up(h, t->heap_idx);
}

void tmr_cancel(struct tmr_heap *h, struct tmr *t)
{
    uint32_t i = t->heap_idx;
    struct tmr *last;

    if (i == TMR_NONE)
        return;
    t->heap_idx = TMR_NONE;
    last = h->v[--h->n];
    if (i == h->n)
        return;
    place(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->deadline > last->deadline)
        sift_up(h, i);
    else
        sift_down(h, i);
}

unsigned tmr_expire(struct tmr_heap *h, uint64_t now)
{
    unsigned fired = 0;

    while (h->n > 0 && h->v[0]->deadline <= now) {
        struct tmr *t = h->v[0];
        tmr_cancel(h, t);
        t->fn(t);
        fired++;
    }
    return fired;
}

uint64_t tmr_next(const struct tmr_heap *h)
{
    return h->n > 0 ? h->v[0]->deadline : UINT64_MAX;
}

/*
 * buf: a worker's provided-buffer ring for multishot receives. The kernel
 * picks a free buffer for each completion; the buffer then belongs to the
 * connection that got it until buf_put() hands it back. An idle connection
 * holds none. Memory is one mmap'ed slab, touched only as buffers are used.
 */
#ifndef ENGINE_CORE_BUF_H
#define ENGINE_CORE_BUF_H

#include <stdint.h>

struct io_uring;
struct io_uring_buf_ring;

#define BUF_NONE UINT16_MAX /* no buffer id */

struct buf_ring {
    struct io_uring_buf_ring *br; /* the ring shared with the kernel */
    char *base;                   /* buffer memory: count * size bytes */
    uint32_t size;                /* bytes per buffer */
    uint32_t count;               /* buffers, a power of two <= 32768 */
    uint32_t free;                /* buffers on the ring (kernel-visible or pending) */
    uint32_t pending;             /* buffers added since the last buf_commit() */
    uint16_t bgid;                /* buffer group id */
    uint16_t *next;               /* per buffer: next id in a connection's input queue */
    uint32_t *len;                /* per buffer: bytes the kernel put in it */
};

/*
 * Create and register the ring on uring. Returns 0 or -errno (-EINVAL when
 * the kernel lacks provided-buffer rings).
 */
int buf_ring_init(struct buf_ring *b, struct io_uring *uring, uint16_t bgid, uint32_t count,
                  uint32_t size);

/* Unregister and free (the ring must be quiescent). */
void buf_ring_exit(struct buf_ring *b, struct io_uring *uring);

static inline char *buf_addr(const struct buf_ring *b, uint16_t bid)
{
    return b->base + (uint64_t)bid * b->size;
}

/* The kernel consumed a buffer. */
static inline void buf_taken(struct buf_ring *b)
{
    b->free--;
}

/* Hand a buffer back; visible to the kernel at the next buf_commit(). */
void buf_put(struct buf_ring *b, uint16_t bid);

/* Publish the buffers handed back since the last commit (once per loop turn). */
void buf_commit(struct buf_ring *b);

#endif /* ENGINE_CORE_BUF_H */

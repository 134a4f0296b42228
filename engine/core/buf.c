/* buf: provided-buffer ring, set up by hand (liburing 2.3 has no io_uring_setup_buf_ring). */
#include "engine/core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <liburing.h>

#include "engine/core/log.h"

int buf_ring_init(struct buf_ring *b, struct io_uring *uring, uint16_t bgid, uint32_t count,
                  uint32_t size)
{
    struct io_uring_buf_reg reg;
    size_t ring_bytes = count * sizeof(struct io_uring_buf);
    uint32_t i;
    int ret;

    memset(b, 0, sizeof(*b));
    if (count == 0 || count > 32768 || (count & (count - 1)) != 0)
        return -EINVAL;
    b->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (b->br == MAP_FAILED)
        return -errno;
    b->base = mmap(NULL, (size_t)count * size, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (b->base == MAP_FAILED) {
        ret = -errno;
        goto out_unmap_ring;
    }
    b->next = malloc(count * sizeof(*b->next));
    b->len = calloc(count, sizeof(*b->len));
    if (b->next == NULL || b->len == NULL)
        log_oom();

    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)b->br;
    reg.ring_entries = count;
    reg.bgid = bgid;
    ret = io_uring_register_buf_ring(uring, &reg, 0);
    if (ret < 0)
        goto out_free;

    io_uring_buf_ring_init(b->br);
    b->size = size;
    b->count = count;
    b->bgid = bgid;
    for (i = 0; i < count; i++) {
        b->next[i] = BUF_NONE;
        io_uring_buf_ring_add(b->br, b->base + (size_t)i * size, size, (unsigned short)i,
                              io_uring_buf_ring_mask(count), (int)i);
    }
    io_uring_buf_ring_advance(b->br, (int)count);
    b->free = count;
    return 0;

out_free:
    free(b->next);
    free(b->len);
    munmap(b->base, (size_t)count * size);
out_unmap_ring:
    munmap(b->br, ring_bytes);
    memset(b, 0, sizeof(*b));
    return ret;
}

void buf_ring_exit(struct buf_ring *b, struct io_uring *uring)
{
    if (b->br == NULL)
        return;
    io_uring_unregister_buf_ring(uring, b->bgid);
    munmap(b->base, (size_t)b->count * b->size);
    munmap(b->br, b->count * sizeof(struct io_uring_buf));
    free(b->next);
    free(b->len);
    memset(b, 0, sizeof(*b));
}

void buf_put(struct buf_ring *b, uint16_t bid)
{
    io_uring_buf_ring_add(b->br, buf_addr(b, bid), b->size, bid, io_uring_buf_ring_mask(b->count),
                          (int)b->pending);
    b->pending++;
    b->free++;
    b->next[bid] = BUF_NONE;
}

void buf_commit(struct buf_ring *b)
{
    if (b->pending == 0)
        return;
    io_uring_buf_ring_advance(b->br, (int)b->pending);
    b->pending = 0;
}

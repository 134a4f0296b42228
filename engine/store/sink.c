/*
 * sink: one object's bytes to disk, through the ring (see sink.h). A sink is
 * a slot with one op in flight at most; s->op says which, and the pool's one
 * handler switches on it. Entries from the loop (a CQE, a pipe or buffer
 * given back, a wait timed out) are bracketed by enter()/leave(), so that a
 * caller may abort the sink from inside a callback: the slot is let go only
 * once the outermost entry returns.
 */
#include "engine/store/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/store/xfer.h"

#define SINK_YIELD                                                                                 \
    32768 /* an O_DIRECT read this short is a slow client: it gives its buffer back */

enum sink_state {
    ST_FREE,       /* in the free list */
    ST_OPENING,    /* the file is being made */
    ST_OPEN,       /* takes spans */
    ST_READING,    /* reads the socket */
    ST_READ,       /* every byte is in: waits for sink_commit() */
    ST_COMMITTING, /* last O_DIRECT write, fdatasync, link, directory syncs */
    ST_STOPPED,    /* the caller is going away: waits for sink_abort() */
    ST_DONE,       /* the outcome is told: the slot goes when the loop's entry returns */
};

/* The op in flight: what its CQE means. */
enum sink_op {
    OP_NONE,
    OP_OPEN,
    OP_WRITE,      /* a span, from the caller's memory */
    OP_DWRITE,     /* the O_DIRECT buffer */
    OP_TRUNCATE,   /* an O_DIRECT file to its size */
    OP_SPLICE_IN,  /* socket -> pipe */
    OP_SPLICE_OUT, /* pipe -> file */
    OP_RECV,       /* socket -> O_DIRECT buffer */
    OP_POLL,       /* the socket is empty: wait for it */
    OP_FSYNC,
    OP_INSTALL, /* a direct descriptor installed as a file, for linkat */
    OP_LINK,
    OP_MKDIR,
    OP_DIROPEN,
    OP_DIRSYNC,
    OP_FAIL,      /* a nop: a failure found inside an API call is told from the loop */
    OP_READ_DONE, /* a nop: sink_read() of nothing */
};

/* The link step: a missing shard makes objects/ab, then objects/ab/cd, then links again. */
enum link_step { LINK_FIRST, LINK_MKDIR_TOP, LINK_MKDIR_SUB, LINK_RELINK };

struct sink {
    struct sink_pool *pool;
    const struct sink_cbs *cb; /* the caller's callbacks */
    void *ctx;                 /* and their context */
    struct sink *next;         /* free list link */
    uint32_t idx;              /* slot index in the pool */
    uint32_t gen;              /* bumped when the slot is freed: a late CQE is dropped */
    uint8_t state;             /* enum sink_state */
    uint8_t op;                /* enum sink_op in flight, OP_NONE if none */
    uint8_t mode;              /* enum sink_mode in use */
    uint8_t fallback;          /* the mode when O_DIRECT is not to be had */
    uint8_t link;              /* enum link_step */
    uint8_t dsync;             /* FSYNC: directories synced so far */
    uint8_t dsync_n;           /* FSYNC: directories to sync (1, or 3 after mkdir) */
    uint8_t err_step;          /* OP_FAIL: the step of err */
    uint16_t depth;            /* loop entries in progress (enter/leave) */
    bool aborted;              /* given up: tell nothing, drop everything */
    bool draining;             /* aborted with its op in flight (counted in the pool) */
    bool fixed;                /* fd is a direct descriptor */
    bool linked;               /* the name exists: removed on failure or abort */
    bool sock_fixed;           /* the socket is a direct descriptor */
    bool piped;                /* pipe is lent to this sink */
    bool finishing;            /* O_DIRECT: the padded last write, then the truncate */
    bool finished;             /* O_DIRECT: the file has its size, the buffer went back */
    bool yielding;             /* O_DIRECT: give the buffer back after the write in flight */
    int err;                   /* OP_FAIL: the failure to tell */
    int fd;                    /* the nameless file, -1 when closed */
    int tmpfd;                 /* a process descriptor of it for linkat, or -1 */
    int dirfd;                 /* FSYNC: the directory being synced, -1 if none */
    int dbuf;                  /* O_DIRECT buffer lent to this sink, -1 if none */
    uint64_t written;          /* bytes in the file (its size) */
    const char *wptr;          /* the span being taken: what is left of it */
    size_t wlen;
    uint64_t left;         /* socket bytes still to read */
    struct xfer_pipe pipe; /* splice: the pipe of the pair in flight */
    uint32_t in_pipe;      /* splice: bytes in the pipe not yet in the file */
    uint32_t fill;         /* O_DIRECT: bytes in the buffer (or tail) not yet written */
    uint32_t dlen;         /* O_DIRECT: length of the write in flight */
    uint64_t doff;         /* O_DIRECT: bytes written (a multiple of XFER_ALIGN) */
    char *tail;            /* O_DIRECT: fill bytes kept while the buffer is given back */
    char id[STORE_ID_LEN + 1];
    char key[STORE_KEY_MAX]; /* objects/ab/cd/<id> */
    char shard[16];          /* objects/ab/cd, where the file is made; "." if missing */
    char dir[16];            /* the directory being made or synced */
    char proc[32];           /* /proc/self/fd/N, for linkat without AT_EMPTY_PATH */
};

static const char *const step_names[] = {
    [SINK_STEP_OPEN] = "open",
    [SINK_STEP_WRITE] = "write",
    [SINK_STEP_SOURCE] = "socket",
    [SINK_STEP_PIPE] = "pipe",
    [SINK_STEP_BUFFER] = "direct buffer",
    [SINK_STEP_SPLICE] = "splice",
    [SINK_STEP_TRUNCATE] = "truncate",
    [SINK_STEP_FDATASYNC] = "fdatasync",
    [SINK_STEP_INSTALL] = "install",
    [SINK_STEP_LINK] = "link",
    [SINK_STEP_MKDIR] = "mkdir",
    [SINK_STEP_DIR_OPEN] = "open directory",
    [SINK_STEP_DIR_SYNC] = "fsync directory",
};

const char *sink_step_name(enum sink_step step)
{
    return (unsigned)step < sizeof(step_names) / sizeof(step_names[0]) ? step_names[step] : "?";
}

/* ---- slots ---- */

static struct sink *slot_at(const struct sink_pool *p, uint32_t idx)
{
    uint32_t c = idx / SINK_CHUNK;

    return c < p->nchunks ? &p->chunks[c][idx % SINK_CHUNK] : NULL;
}

static struct sink *slot_take(struct sink_pool *p)
{
    struct sink *s;

    if (p->free == NULL) {
        struct sink *chunk;
        uint32_t base = p->nchunks * SINK_CHUNK;
        uint32_t i;

        if (base + SINK_CHUNK - 1 > RING_UD_IDX_MAX) {
            log_error("too many storage sinks", "worker=%u", p->ring->id);
            abort();
        }
        p->chunks = realloc(p->chunks, (p->nchunks + 1) * sizeof(*p->chunks));
        chunk = calloc(SINK_CHUNK, sizeof(*chunk));
        if (p->chunks == NULL || chunk == NULL)
            log_oom();
        p->chunks[p->nchunks++] = chunk;
        for (i = SINK_CHUNK; i-- > 0;) {
            chunk[i].pool = p;
            chunk[i].idx = base + i;
            chunk[i].next = p->free;
            p->free = &chunk[i];
        }
    }
    s = p->free;
    p->free = s->next;
    p->used++;
    met_set(&p->ring->met.sinks_open, p->used);
    return s;
}

static void slot_free(struct sink *s)
{
    struct sink_pool *p = s->pool;

    free(s->tail);
    s->tail = NULL;
    s->gen++;
    s->state = ST_FREE;
    s->next = p->free;
    p->free = s;
    p->used--;
    met_set(&p->ring->met.sinks_open, p->used);
}

/* ---- ops ---- */

static uint64_t sink_ud(const struct sink *s)
{
    return ring_ud(s->pool->kind, s->gen, s->idx);
}

static struct io_uring_sqe *op_sqe(struct sink *s, enum sink_op op)
{
    struct io_uring_sqe *sqe = ring_sqe(s->pool->ring);

    io_uring_sqe_set_data64(sqe, sink_ud(s));
    s->op = op;
    return sqe;
}

/* Submit entry flags for an op on the file. */
static void use_file(struct io_uring_sqe *sqe, const struct sink *s)
{
    if (s->fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static char *dbuf_addr(const struct sink *s)
{
    return xfer_dbuf_addr(s->pool->xfer, s->dbuf);
}

/* ---- releasing ---- */

/* Close the file's descriptors; a nameless file's blocks go with it. */
static void close_file(struct sink *s)
{
    struct ring *r = s->pool->ring;

    if (s->tmpfd >= 0)
        close(s->tmpfd);
    s->tmpfd = -1;
    if (s->fd < 0)
        return;
    met_dec(&r->met.up_files_open);
    if (s->fixed) {
        struct io_uring_sqe *sqe = ring_sqe(r);
        io_uring_prep_close_direct(sqe, (unsigned)s->fd);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_KIND_NONE, 0, 0));
    } else {
        close(s->fd);
    }
    s->fd = -1;
}

/* Give back the pipe and buffer, and leave the queues: others may have them. */
static void give_back(struct sink *s)
{
    struct xfer *x = s->pool->xfer;

    xfer_cancel(x, sink_ud(s));
    if (s->piped)
        /* Bytes left in it (a splice cut short): it is closed, not pooled. */
        xfer_pipe_put(x, s->pipe, s->in_pipe == 0);
    s->piped = false;
    s->in_pipe = 0;
    if (s->dbuf >= 0)
        xfer_dbuf_put(x, s->dbuf);
    s->dbuf = -1;
}

/* Drop everything the sink made or borrowed. */
static void drop(struct sink *s)
{
    give_back(s);
    if (s->dirfd >= 0)
        close(s->dirfd);
    s->dirfd = -1;
    close_file(s);
    if (s->linked)
        store_unlink(s->key); /* an error path: a metadata syscall */
    s->linked = false;
}

static void enter(struct sink *s)
{
    s->depth++;
}

/* The outermost entry returns: a sink told its outcome, or aborted and idle, goes. */
static void leave(struct sink *s)
{
    if (--s->depth > 0)
        return;
    if (s->state == ST_DONE) {
        slot_free(s);
    } else if (s->aborted && s->op == OP_NONE) {
        if (s->draining)
            s->pool->draining--;
        drop(s);
        slot_free(s);
    }
}

/* Tell the outcome; the slot is freed by leave(). */
static void report(struct sink *s, int err, enum sink_step step)
{
    struct sink_result res = {err, step, s->id, s->key, s->written};

    s->state = ST_DONE;
    s->cb->done(s->ctx, &res);
}

static enum met_sink_fail fail_reason(int err, enum sink_step step)
{
    if (step == SINK_STEP_SOURCE)
        return MET_SF_SOURCE;
    if (err == -ETIMEDOUT && (step == SINK_STEP_PIPE || step == SINK_STEP_BUFFER))
        return MET_SF_BUSY;
    if (err == -ENOSPC || err == -EDQUOT)
        return MET_SF_NO_SPACE;
    return MET_SF_IO;
}

/* The sink failed (from the loop): nothing it made stays; tell the caller. */
static void fail(struct sink *s, int err, enum sink_step step)
{
    met_inc(&s->pool->ring->met.sink_failed[fail_reason(err, step)]);
    drop(s);
    report(s, err, step);
}

/* A failure found inside an API call: told from the loop, never from the caller's own call. */
static void fail_soon(struct sink *s, int err, enum sink_step step)
{
    s->err = err;
    s->err_step = (uint8_t)step;
    io_uring_prep_nop(op_sqe(s, OP_FAIL));
}

/* The caller is going away: lend nothing back, wait for sink_abort(). */
static void stop(struct sink *s)
{
    give_back(s);
    s->state = ST_STOPPED;
}

/* The socket for one op, from the caller: -1 (and stopped) if it is going away. */
static int sock_take(struct sink *s)
{
    int fd = s->cb->sock_get(s->ctx);

    if (fd < 0)
        stop(s);
    return fd;
}

/* The socket op is over: give it back. false: stop here (going away, or aborted meanwhile). */
static bool sock_give(struct sink *s, uint64_t n)
{
    bool ok = s->cb->sock_put(s->ctx, n);

    if (s->aborted)
        return false;
    if (!ok)
        stop(s);
    return ok;
}

/* ---- open ---- */

/*
 * Create the file, nameless, in the shard directory it will be linked into:
 * its inode is allocated near that directory (spread over the tree, not all in
 * STORAGE_DIR's block group) and the link stays within one directory.
 */
static void submit_open(struct sink *s)
{
    struct io_uring_sqe *sqe = op_sqe(s, OP_OPEN);
    int flags = O_TMPFILE | O_WRONLY | (s->mode == SINK_DIRECT ? O_DIRECT : 0);

    if (s->fixed)
        /* liburing 2.3 adds 1 to the index itself: ALLOC - 1 asks for any free slot. */
        io_uring_prep_openat_direct(sqe, store_dirfd(), s->shard, flags, 0640,
                                    IORING_FILE_INDEX_ALLOC - 1);
    else
        io_uring_prep_openat(sqe, store_dirfd(), s->shard, flags | O_CLOEXEC, 0640);
}

struct sink *sink_open(struct sink_pool *p, enum sink_mode mode, enum sink_mode fallback,
                       const struct sink_cbs *cb, void *ctx)
{
    struct sink *s = slot_take(p);
    uint32_t idx = s->idx;
    uint32_t gen = s->gen;

    memset(s, 0, sizeof(*s));
    s->pool = p;
    s->idx = idx;
    s->gen = gen;
    s->cb = cb;
    s->ctx = ctx;
    s->fd = -1;
    s->tmpfd = -1;
    s->dirfd = -1;
    s->dbuf = -1;
    s->fixed = p->ring->has_fd_install;
    s->fallback = (uint8_t)fallback;
    s->mode = (uint8_t)mode;
    if (mode == SINK_DIRECT) {
        /* The buffer now or not at all (see sink.h). */
        s->dbuf = xfer_direct(p->xfer) ? xfer_dbuf_get(p->xfer, NULL, NULL, 0) : -1;
        if (s->dbuf < 0) {
            if (xfer_direct(p->xfer))
                met_inc(&p->ring->met.dbuf_fallbacks);
            s->mode = (uint8_t)fallback;
        }
    }
    store_new_id(s->id);
    store_key(s->id, s->key);
    store_shard_dirs(s->id, s->dir, s->shard);
    s->state = ST_OPENING;
    submit_open(s);
    return s;
}

enum sink_mode sink_mode(const struct sink *s)
{
    return (enum sink_mode)s->mode;
}

static void on_open(struct sink *s, int res)
{
    if (res == -ENOENT && strcmp(s->shard, ".") != 0) {
        /* The shard is not made yet (ringup init-storage makes them all): STORAGE_DIR then. */
        snprintf(s->shard, sizeof(s->shard), ".");
        submit_open(s);
        return;
    }
    if (res == -EINVAL && s->mode == SINK_DIRECT) {
        /* This filesystem takes no O_DIRECT: the page cache it is. */
        give_back(s);
        s->mode = s->fallback;
        submit_open(s);
        return;
    }
    if (res < 0) {
        fail(s, res, SINK_STEP_OPEN);
        return;
    }
    s->fd = res;
    met_inc(&s->pool->ring->met.up_files_open);
    if (!s->fixed)
        snprintf(s->proc, sizeof(s->proc), "/proc/self/fd/%d", res);
    s->state = ST_OPEN;
    if (s->cb->opened != NULL)
        s->cb->opened(s->ctx, (enum sink_mode)s->mode);
}

/* ---- spans ---- */

static void submit_write(struct sink *s)
{
    struct io_uring_sqe *sqe = op_sqe(s, OP_WRITE);

    io_uring_prep_write(sqe, s->fd, s->wptr, (unsigned)s->wlen, s->written);
    use_file(sqe, s);
}

/* Write len bytes (a multiple of XFER_ALIGN) from the buffer's start at doff. */
static void direct_write(struct sink *s, uint32_t len)
{
    struct io_uring_sqe *sqe = op_sqe(s, OP_DWRITE);

    s->dlen = len;
    io_uring_prep_write_fixed(sqe, s->fd, dbuf_addr(s), len, s->doff, s->dbuf);
    use_file(sqe, s);
}

/* Copy the span into the buffer, writing it when it fills; false: a write is in flight. */
static bool direct_copy(struct sink *s)
{
    while (s->wlen > 0) {
        uint32_t room = XFER_DBUF_SIZE - s->fill;
        uint32_t n = s->wlen < room ? (uint32_t)s->wlen : room;

        memcpy(dbuf_addr(s) + s->fill, s->wptr, n);
        s->fill += n;
        s->wptr += n;
        s->wlen -= n;
        if (s->fill == XFER_DBUF_SIZE) {
            direct_write(s, XFER_DBUF_SIZE);
            return false;
        }
    }
    return true;
}

bool sink_write(struct sink *s, const void *p, size_t n)
{
    s->wptr = p;
    s->wlen = n;
    if (n == 0)
        return true;
    if (s->mode == SINK_DIRECT)
        return direct_copy(s);
    submit_write(s);
    return false;
}

static void on_write(struct sink *s, int res)
{
    if (res <= 0) {
        fail(s, res == 0 ? -EIO : res, SINK_STEP_WRITE);
        return;
    }
    s->written += (uint64_t)res;
    met_add(&s->pool->ring->met.up_bytes_buffered, (uint64_t)res);
    s->wptr += res;
    s->wlen -= (size_t)res;
    if (s->wlen > 0) {
        submit_write(s);
        return;
    }
    s->cb->taken(s->ctx);
}

/* ---- O_DIRECT: socket -> registered aligned buffer -> file ---- */

static void direct_read(struct sink *s);
static void end_file(struct sink *s);

static void submit_truncate(struct sink *s)
{
    struct io_uring_sqe *sqe = op_sqe(s, OP_TRUNCATE);

    io_uring_prep_rw(RING_OP_FTRUNCATE, sqe, s->fd, NULL, 0, s->written);
    use_file(sqe, s);
}

/* Every byte is in: write the rest padded to the alignment, then cut the file to size. */
static void direct_finish(struct sink *s)
{
    uint32_t len = (s->fill + XFER_ALIGN - 1) & ~(XFER_ALIGN - 1);

    s->finishing = true;
    s->written = s->doff + s->fill;
    if (len == 0) {
        submit_truncate(s);
        return;
    }
    memset(dbuf_addr(s) + s->fill, 0, len - s->fill);
    direct_write(s, len);
}

static void on_dbuf(void *ctx, int res);

/* Borrow a buffer back after a yield (on_dbuf follows when all are lent), with what it kept. */
static bool direct_borrow(struct sink *s)
{
    if (s->dbuf >= 0)
        return true;
    s->dbuf = xfer_dbuf_get(s->pool->xfer, on_dbuf, s, sink_ud(s));
    if (s->dbuf < 0)
        return false;
    if (s->fill > 0)
        memcpy(dbuf_addr(s), s->tail, s->fill);
    return true;
}

static void direct_readable(struct sink *s)
{
    if (direct_borrow(s))
        direct_read(s);
}

/* A buffer came back, or none did within CONNECTION_TIMEOUT. */
static void on_dbuf(void *ctx, int res)
{
    struct sink *s = ctx;

    enter(s);
    if (res == -ETIMEDOUT)
        fail(s, res, SINK_STEP_BUFFER);
    else
        direct_readable(s);
    leave(s);
}

static void poll_socket(struct sink *s)
{
    struct io_uring_sqe *sqe;
    int fd = sock_take(s);

    if (fd < 0)
        return;
    sqe = op_sqe(s, OP_POLL);
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    if (s->sock_fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
}

/*
 * A slow client: keep the unaligned rest aside, give the buffer back, wait for
 * the socket. A buffer is never held while the socket is waited for, or
 * sixteen clients that trickle would hold every buffer of the worker.
 */
static void direct_yield(struct sink *s)
{
    s->yielding = false;
    if (s->tail == NULL && posix_memalign((void **)&s->tail, XFER_ALIGN, XFER_ALIGN) != 0)
        log_oom();
    memcpy(s->tail, dbuf_addr(s), s->fill); /* less than XFER_ALIGN */
    xfer_dbuf_put(s->pool->xfer, s->dbuf);
    s->dbuf = -1;
    poll_socket(s);
}

static void on_dwrite(struct sink *s, int res)
{
    uint32_t len = s->dlen;

    if (res < 0 || (uint32_t)res != len) {
        /* O_DIRECT writes whole blocks: a short one is a full disk. */
        fail(s, res < 0 ? res : -ENOSPC, SINK_STEP_WRITE);
        return;
    }
    met_add(&s->pool->ring->met.up_bytes_direct, s->fill < len ? s->fill : len);
    s->doff += len;
    if (s->fill > len)
        memmove(dbuf_addr(s), dbuf_addr(s) + len, s->fill - len);
    s->fill = s->fill > len ? s->fill - len : 0;
    if (s->finishing) {
        submit_truncate(s);
        return;
    }
    if (s->state == ST_OPEN) {
        /* A span: copy on, then it is taken. */
        if (direct_copy(s))
            s->cb->taken(s->ctx);
        return;
    }
    if (s->yielding) {
        direct_yield(s);
        return;
    }
    direct_read(s);
}

static void on_truncate(struct sink *s, int res)
{
    if (res < 0) {
        fail(s, res, SINK_STEP_TRUNCATE);
        return;
    }
    xfer_dbuf_put(s->pool->xfer, s->dbuf);
    s->dbuf = -1;
    s->finishing = false;
    s->finished = true;
    if (s->state == ST_READING) {
        s->state = ST_READ;
        s->cb->read_done(s->ctx);
        return;
    }
    end_file(s);
}

/*
 * Read what the socket holds now into the buffer. MSG_DONTWAIT: an empty
 * socket completes with -EAGAIN instead of parking the read (and the buffer)
 * in the kernel until the client sends again.
 */
static void direct_read(struct sink *s)
{
    uint32_t room = XFER_DBUF_SIZE - s->fill;
    uint32_t n = s->left < room ? (uint32_t)s->left : room;
    struct io_uring_sqe *sqe;
    int fd = sock_take(s);

    if (fd < 0)
        return;
    sqe = op_sqe(s, OP_RECV);
    io_uring_prep_recv(sqe, fd, dbuf_addr(s) + s->fill, n, MSG_DONTWAIT);
    if (s->sock_fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static void on_recv(struct sink *s, int res)
{
    uint32_t aligned;

    if (!sock_give(s, res > 0 ? (uint64_t)res : 0))
        return;
    if (res == -EAGAIN) {
        /* The socket is empty: wait for it without the buffer (below). */
        res = 0;
    } else if (res <= 0) {
        /* The client went away mid-body (0) or the socket failed. */
        fail(s, res == 0 ? -ECONNRESET : res, SINK_STEP_SOURCE);
        return;
    }
    s->fill += (uint32_t)res;
    s->left -= (uint64_t)res;
    if (s->left == 0) {
        direct_finish(s);
        return;
    }
    if (s->fill == XFER_DBUF_SIZE) {
        direct_write(s, XFER_DBUF_SIZE);
        return;
    }
    if ((uint32_t)res >= SINK_YIELD) {
        direct_read(s);
        return;
    }
    /* A short read (or none): the client is slower than the disk. */
    aligned = s->fill & ~(XFER_ALIGN - 1);
    s->yielding = true;
    if (aligned > 0)
        direct_write(s, aligned);
    else
        direct_yield(s);
}

/* ---- splice: socket -> pooled pipe -> file ---- */

static void on_pipe(void *ctx, int res);

/* Borrow a pipe, splice the next piece into it (again when a pipe or the socket is ready). */
static void splice_next(struct sink *s)
{
    struct xfer *x = s->pool->xfer;
    struct io_uring_sqe *sqe;
    uint32_t n;
    int err;
    int fd;

    if (!s->piped) {
        if (!xfer_pipe_get(x, &s->pipe, on_pipe, s, sink_ud(s), &err)) {
            if (err != 0)
                fail_soon(s, err, SINK_STEP_PIPE);
            return; /* on_pipe follows when a pipe comes back */
        }
        s->piped = true;
    }
    fd = sock_take(s);
    if (fd < 0)
        return;
    n = s->left < x->pipe_size ? (uint32_t)s->left : x->pipe_size;
    sqe = op_sqe(s, OP_SPLICE_IN);
    /* Non-blocking on the socket: an io-wq worker never waits for a client. */
    io_uring_prep_splice(sqe, fd, -1, s->pipe.wr, -1, n,
                         SPLICE_F_NONBLOCK | SPLICE_F_MOVE |
                             (s->sock_fixed ? SPLICE_F_FD_IN_FIXED : 0));
}

/* A pipe came back, or none did within CONNECTION_TIMEOUT. */
static void on_pipe(void *ctx, int res)
{
    struct sink *s = ctx;

    enter(s);
    if (res == -ETIMEDOUT)
        fail(s, res, SINK_STEP_PIPE);
    else
        splice_next(s);
    leave(s);
}

static void submit_splice_out(struct sink *s)
{
    struct io_uring_sqe *sqe = op_sqe(s, OP_SPLICE_OUT);

    io_uring_prep_splice(sqe, s->pipe.rd, -1, s->fd, (int64_t)s->written, s->in_pipe,
                         SPLICE_F_MOVE);
    use_file(sqe, s);
}

static void on_splice_in(struct sink *s, int res)
{
    if (res > 0)
        s->in_pipe = (uint32_t)res;
    if (!sock_give(s, res > 0 ? (uint64_t)res : 0))
        return;
    if (res == -EAGAIN) {
        /* Nothing to read yet: give the pipe back and wait for the socket. */
        xfer_pipe_put(s->pool->xfer, s->pipe, true);
        s->piped = false;
        poll_socket(s);
        return;
    }
    if (res <= 0) {
        /* The client went away mid-body (0) or the socket failed. */
        fail(s, res == 0 ? -ECONNRESET : res, SINK_STEP_SOURCE);
        return;
    }
    s->left -= (uint64_t)res;
    submit_splice_out(s);
}

static void on_splice_out(struct sink *s, int res)
{
    if (res <= 0) {
        fail(s, res == 0 ? -EIO : res, SINK_STEP_SPLICE);
        return;
    }
    s->written += (uint64_t)res;
    s->in_pipe -= (uint32_t)res;
    met_add(&s->pool->ring->met.up_bytes_spliced, (uint64_t)res);
    if (s->in_pipe > 0) {
        submit_splice_out(s);
        return;
    }
    xfer_pipe_put(s->pool->xfer, s->pipe, true);
    s->piped = false;
    if (s->left > 0) {
        splice_next(s);
        return;
    }
    s->state = ST_READ;
    s->cb->read_done(s->ctx);
}

void sink_read(struct sink *s, uint64_t len, bool fixed)
{
    s->left = len;
    s->sock_fixed = fixed;
    s->state = ST_READING;
    if (s->mode == SINK_DIRECT) {
        if (len == 0)
            direct_finish(s);
        else
            direct_read(s);
        return;
    }
    if (len == 0)
        io_uring_prep_nop(op_sqe(s, OP_READ_DONE));
    else
        splice_next(s);
}

/* Something on the socket: go on reading. */
static void on_poll(struct sink *s, int res)
{
    if (!sock_give(s, 0))
        return;
    if (res < 0) {
        fail(s, res, SINK_STEP_SOURCE);
        return;
    }
    if (s->mode == SINK_DIRECT)
        direct_readable(s);
    else
        splice_next(s);
}

/* ---- commit: sync, link, sync the directories ---- */

static void submit_link(struct sink *s)
{
    struct io_uring_sqe *sqe;

    if (s->fixed && s->tmpfd < 0) {
        /* linkat needs a path: install the direct descriptor as a file for this one step. */
        sqe = op_sqe(s, OP_INSTALL);
        io_uring_prep_rw(RING_OP_FIXED_FD_INSTALL, sqe, s->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_FIXED_FILE;
        return;
    }
    sqe = op_sqe(s, OP_LINK);
    if (store_flink() && s->link != LINK_RELINK)
        /*
         * By the descriptor: no walk through /proc. The relink after an ENOENT goes
         * through /proc, in case this kernel refused the descriptor for this file.
         */
        io_uring_prep_linkat(sqe, s->fixed ? s->tmpfd : s->fd, "", store_dirfd(), s->key,
                             AT_EMPTY_PATH);
    else
        /* linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc path does not. */
        io_uring_prep_linkat(sqe, AT_FDCWD, s->proc, store_dirfd(), s->key, AT_SYMLINK_FOLLOW);
}

/* The file is complete: make it durable, then give it its name. */
static void end_file(struct sink *s)
{
    struct io_uring_sqe *sqe;

    s->state = ST_COMMITTING;
    s->link = LINK_FIRST;
    if (!s->pool->ring->cfg->fsync) {
        submit_link(s);
        return;
    }
    sqe = op_sqe(s, OP_FSYNC);
    io_uring_prep_fsync(sqe, s->fd, IORING_FSYNC_DATASYNC);
    use_file(sqe, s);
}

void sink_commit(struct sink *s)
{
    s->state = ST_COMMITTING;
    if (s->mode == SINK_DIRECT && !s->finished)
        direct_finish(s);
    else
        end_file(s);
}

static void on_fsync(struct sink *s, int res)
{
    if (res < 0) {
        fail(s, res, SINK_STEP_FDATASYNC);
        return;
    }
    submit_link(s);
}

static void on_install(struct sink *s, int res)
{
    if (res < 0) {
        fail(s, res, SINK_STEP_INSTALL);
        return;
    }
    s->tmpfd = res;
    snprintf(s->proc, sizeof(s->proc), "/proc/self/fd/%d", res);
    submit_link(s);
}

/* The object is whole and named: the name is the caller's now. */
static void committed(struct sink *s)
{
    close_file(s);
    s->linked = false;
    met_inc(&s->pool->ring->met.sink_committed);
    report(s, 0, SINK_STEP_LINK);
}

/*
 * FSYNC: the directories whose entries the link (and any mkdir) changed,
 * deepest first: objects/ab/cd, then objects/ab and objects.
 */
static void sync_next_dir(struct sink *s)
{
    struct io_uring_sqe *sqe;
    char *slash;
    unsigned i;

    if (s->dsync == s->dsync_n) {
        committed(s);
        return;
    }
    /* The path outlives this call: the kernel reads it when the open is submitted. */
    snprintf(s->dir, sizeof(s->dir), "%.*s", (int)(sizeof(s->dir) - 1), s->key);
    for (i = 0; i <= s->dsync; i++) {
        slash = strrchr(s->dir, '/');
        if (slash != NULL)
            *slash = '\0';
    }
    sqe = op_sqe(s, OP_DIROPEN);
    io_uring_prep_openat(sqe, store_dirfd(), s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
}

static void submit_mkdir(struct sink *s)
{
    io_uring_prep_mkdirat(op_sqe(s, OP_MKDIR), store_dirfd(), s->dir, 0750);
}

static void on_link(struct sink *s, int res)
{
    char sub[16];

    if (res == -ENOENT && s->link == LINK_FIRST) {
        /* First file of its shard: make objects/ab, then objects/ab/cd, then link again. */
        store_shard_dirs(s->id, s->dir, sub);
        s->link = LINK_MKDIR_TOP;
        submit_mkdir(s);
        return;
    }
    if (res < 0) {
        fail(s, res, SINK_STEP_LINK);
        return;
    }
    s->linked = true;
    if (!s->pool->ring->cfg->fsync) {
        committed(s);
        return;
    }
    /* The name is durable only with its directory: objects/ab/cd, and after mkdir its parents. */
    s->dsync = 0;
    s->dsync_n = s->link == LINK_FIRST ? 1 : 3;
    sync_next_dir(s);
}

static void on_mkdir(struct sink *s, int res)
{
    char top[16];

    if (res < 0 && res != -EEXIST) {
        fail(s, res, SINK_STEP_MKDIR);
        return;
    }
    if (s->link == LINK_MKDIR_TOP) {
        store_shard_dirs(s->id, top, s->dir);
        s->link = LINK_MKDIR_SUB;
        submit_mkdir(s);
        return;
    }
    /* Both shard directories exist: a second ENOENT is an error, not another mkdir. */
    s->link = LINK_RELINK;
    submit_link(s);
}

static void on_diropen(struct sink *s, int res)
{
    struct io_uring_sqe *sqe;

    if (res < 0) {
        fail(s, res, SINK_STEP_DIR_OPEN);
        return;
    }
    s->dirfd = res;
    sqe = op_sqe(s, OP_DIRSYNC);
    io_uring_prep_fsync(sqe, s->dirfd, 0);
}

static void on_dirsync(struct sink *s, int res)
{
    close(s->dirfd);
    s->dirfd = -1;
    if (res < 0) {
        fail(s, res, SINK_STEP_DIR_SYNC);
        return;
    }
    met_inc(&s->pool->ring->met.dir_syncs);
    s->dsync++;
    sync_next_dir(s);
}

/* ---- the op kind's handler ---- */

/* An aborted sink's op came back: record what it made, so that leave() undoes it. */
static void reap(struct sink *s, enum sink_op op, int res)
{
    switch (op) {
    case OP_OPEN:
        if (res >= 0) {
            s->fd = res;
            met_inc(&s->pool->ring->met.up_files_open);
        }
        break;
    case OP_INSTALL:
        if (res >= 0)
            s->tmpfd = res;
        break;
    case OP_LINK:
        if (res == 0)
            s->linked = true;
        break;
    case OP_DIROPEN:
        if (res >= 0)
            s->dirfd = res;
        break;
    case OP_SPLICE_IN:
        if (res > 0)
            s->in_pipe = (uint32_t)res;
        break;
    case OP_SPLICE_OUT:
        if (res > 0)
            s->in_pipe -= (uint32_t)res;
        break;
    default:
        break;
    }
}

static void run(struct sink *s, enum sink_op op, int res)
{
    switch (op) {
    case OP_OPEN:
        on_open(s, res);
        break;
    case OP_WRITE:
        on_write(s, res);
        break;
    case OP_DWRITE:
        on_dwrite(s, res);
        break;
    case OP_TRUNCATE:
        on_truncate(s, res);
        break;
    case OP_SPLICE_IN:
        on_splice_in(s, res);
        break;
    case OP_SPLICE_OUT:
        on_splice_out(s, res);
        break;
    case OP_RECV:
        on_recv(s, res);
        break;
    case OP_POLL:
        on_poll(s, res);
        break;
    case OP_FSYNC:
        on_fsync(s, res);
        break;
    case OP_INSTALL:
        on_install(s, res);
        break;
    case OP_LINK:
        on_link(s, res);
        break;
    case OP_MKDIR:
        on_mkdir(s, res);
        break;
    case OP_DIROPEN:
        on_diropen(s, res);
        break;
    case OP_DIRSYNC:
        on_dirsync(s, res);
        break;
    case OP_FAIL:
        fail(s, s->err, (enum sink_step)s->err_step);
        break;
    case OP_READ_DONE:
        s->state = ST_READ;
        s->cb->read_done(s->ctx);
        break;
    case OP_NONE:
        break;
    }
}

static void on_cqe(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct sink *s = slot_at(ctx, idx);
    enum sink_op op;

    if (s == NULL || s->state == ST_FREE || s->gen != gen || s->op == OP_NONE)
        return;
    op = (enum sink_op)s->op;
    s->op = OP_NONE;
    enter(s);
    if (s->aborted)
        reap(s, op, cqe->res);
    else
        run(s, op, cqe->res);
    leave(s);
}

/* ---- the pool ---- */

void sink_pool_init(struct sink_pool *p, struct ring *r, struct xfer *x)
{
    memset(p, 0, sizeof(*p));
    p->ring = r;
    p->xfer = x;
    p->kind = ring_kind_add(r, "sink", on_cqe, p);
}

void sink_abort(struct sink *s)
{
    struct io_uring_sqe *sqe;

    if (s->aborted || s->state == ST_DONE || s->state == ST_FREE)
        return;
    s->aborted = true;
    met_inc(&s->pool->ring->met.sink_aborted);
    xfer_cancel(s->pool->xfer, sink_ud(s));
    if (s->op == OP_POLL) {
        /* A poll may wait for a long time: end it, the sink goes when it comes back. */
        sqe = ring_sqe(s->pool->ring);
        io_uring_prep_cancel64(sqe, sink_ud(s), 0);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_KIND_NONE, 0, 0));
    }
    if (s->op != OP_NONE) {
        /* leave() drops it once the op is back. */
        s->draining = true;
        s->pool->draining++;
        return;
    }
    if (s->depth > 0)
        return; /* leave() drops it once the loop's entry returns */
    drop(s);
    slot_free(s);
}

uint32_t sink_pool_draining(const struct sink_pool *p)
{
    return p->draining;
}

void sink_pool_fini(struct sink_pool *p)
{
    uint32_t c;
    uint32_t i;

    if (p->ring == NULL)
        return;
    /* The loop is over: no CQE comes back any more, so nothing goes through the ring. */
    for (c = 0; c < p->nchunks; c++) {
        for (i = 0; i < SINK_CHUNK; i++) {
            struct sink *s = &p->chunks[c][i];

            if (s->state == ST_FREE)
                continue;
            if (s->piped) {
                close(s->pipe.rd);
                close(s->pipe.wr);
            }
            if (s->dirfd >= 0)
                close(s->dirfd);
            if (s->tmpfd >= 0)
                close(s->tmpfd);
            if (s->fd >= 0 && !s->fixed)
                close(s->fd);
            if (s->linked && s->state != ST_DONE)
                store_unlink(s->key);
            free(s->tail);
        }
        free(p->chunks[c]);
    }
    free(p->chunks);
    memset(p, 0, sizeof(*p));
}

/*
 * sink: bytes to a committed object. A sink makes one nameless file
 * (O_TMPFILE) in the shard directory of a fresh id, takes its bytes, and on
 * commit makes them durable (fdatasync with FSYNC), links the file to
 * objects/ab/cd/<id> (making the shard directories when missing, and with
 * FSYNC syncing every directory whose entries changed) and closes it. It
 * tells its caller the outcome once: committed (id, key, size) or failed
 * (-errno and the step); nothing it made survives a failure.
 *
 * Bytes come three ways (enum sink_mode): spans the caller holds, written
 * from where they lie; or read from a socket, either spliced socket -> pooled
 * pipe -> file (never entering user space) or read into a registered aligned
 * buffer and written with O_DIRECT, the buffer given back whenever the socket
 * runs dry. A sink knows no HTTP, no connection and no row: the caller lends
 * it memory and a socket, and the callbacks say when the sink is done with
 * them, so the caller keeps their owner alive (conn_pin) exactly that long.
 *
 * Sinks are slots of a per-worker pool, addressed in user_data by (index,
 * generation) under the pool's op kind; a sink runs one op at a time. An
 * aborted sink whose op is in flight lives on until its CQE comes back, then
 * closes its file or removes its name. Every callback comes from the loop (a
 * completion, a pool given back, a timer), never from inside a call of this
 * API, and a callback may call any function here, sink_abort() included.
 * Worker thread only.
 */
#ifndef ENGINE_STORE_SINK_H
#define ENGINE_STORE_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/store/store.h"

struct ring;
struct xfer;
struct sink;

#define SINK_CHUNK 256 /* slots allocated at a time */

/* How the bytes reach the file. */
enum sink_mode {
    SINK_BUFFERED, /* spans written from the caller's memory (page cache) */
    SINK_SPLICE,   /* spans as above, then the rest spliced from a socket */
    SINK_DIRECT,   /* spans copied, then the rest read, into an O_DIRECT buffer */
};

/* Where a sink failed (sink_step_name() gives the word for logs). */
enum sink_step {
    SINK_STEP_OPEN,      /* creating the nameless file */
    SINK_STEP_WRITE,     /* writing to it */
    SINK_STEP_SOURCE,    /* reading the socket: it failed, or ended before its bytes */
    SINK_STEP_PIPE,      /* getting a splice pipe */
    SINK_STEP_BUFFER,    /* getting an O_DIRECT buffer back after giving it up */
    SINK_STEP_SPLICE,    /* splicing the pipe into the file */
    SINK_STEP_TRUNCATE,  /* cutting an O_DIRECT file to its size */
    SINK_STEP_FDATASYNC, /* FSYNC: syncing the file */
    SINK_STEP_INSTALL,   /* making a direct descriptor a file for linkat */
    SINK_STEP_LINK,      /* giving the file its name */
    SINK_STEP_MKDIR,     /* making a missing shard directory */
    SINK_STEP_DIR_OPEN,  /* FSYNC: opening a directory to sync */
    SINK_STEP_DIR_SYNC,  /* FSYNC: syncing it */
};

/*
 * The outcome. err 0: committed, and the object's name is the caller's from
 * now on (remove it with store_unlink(key) if the caller's own record of it
 * fails). Else -errno at step, and nothing is left on disk; -ETIMEDOUT at
 * SINK_STEP_PIPE or SINK_STEP_BUFFER means the worker stayed too busy.
 */
struct sink_result {
    int err;
    enum sink_step step;
    const char *id;  /* the object's id (valid during the callback) */
    const char *key; /* objects/ab/cd/<id>, relative to STORAGE_DIR (idem) */
    uint64_t size;   /* bytes in the object */
};

/*
 * What a sink tells its caller; ctx is sink_open()'s. Only done is required;
 * the others are called for the calls that need them.
 */
struct sink_cbs {
    /*
     * The file is made: bytes may come. mode is the one in use, which for
     * SINK_DIRECT may have become the fallback (a filesystem without O_DIRECT).
     */
    void (*opened)(void *ctx, enum sink_mode mode);
    /* The span of sink_write() is no longer read: its memory is the caller's again. */
    void (*taken)(void *ctx);
    /*
     * sink_read(): the sink is about to submit an op on the socket. Return
     * the socket's descriptor, valid (pinned) until sock_put(), or -1 if the
     * caller is going away: the sink then stops and waits for sink_abort().
     */
    int (*sock_get)(void *ctx);
    /*
     * That op is over; n bytes came from the socket. false: the caller is
     * going away, as for sock_get().
     */
    bool (*sock_put)(void *ctx, uint64_t n);
    /* sink_read(): every byte is in (and written): the sink waits for sink_commit(). */
    void (*read_done)(void *ctx);
    /*
     * The outcome, once; the sink is gone when it returns. A span or socket op
     * the caller lent and that got no taken() or sock_put() ends with it.
     */
    void (*done)(void *ctx, const struct sink_result *res);
};

/* A worker's sinks (the worker allocates it; fields are the pool's). */
struct sink_pool {
    struct ring *ring;    /* the worker's loop */
    struct xfer *xfer;    /* pipes and O_DIRECT buffers */
    uint8_t kind;         /* the op kind of every sink op */
    struct sink **chunks; /* chunks of SINK_CHUNK slots */
    uint32_t nchunks;     /* chunks allocated */
    struct sink *free;    /* free slots */
    uint32_t used;        /* slots in use (aborted ones finishing included) */
    uint32_t draining;    /* aborted sinks whose op is still in flight */
};

/*
 * Set up a worker's pool and register its op kind with r; x lends pipes and
 * buffers. Worker thread, at init; never fails.
 */
void sink_pool_init(struct sink_pool *p, struct ring *r, struct xfer *x);

/*
 * Free the pool after the loop ended: sinks still in use lose their files
 * (closed, names removed) without callbacks. Before xfer_fini().
 */
void sink_pool_fini(struct sink_pool *p);

/*
 * Aborted sinks whose last op is still in flight: a stopping worker turns its
 * loop until none is left, so that what they made is removed.
 */
uint32_t sink_pool_draining(const struct sink_pool *p);

/*
 * A new sink: its file is being made, opened() or done() follows. mode is
 * how bytes will come; a SINK_DIRECT sink borrows its O_DIRECT buffer now or
 * takes fallback (SINK_BUFFERED or SINK_SPLICE) at once: a body queued for
 * a buffer would hold a file and its client's receive buffers while others
 * write theirs. sink_mode() tells which. cb and ctx outlive the sink. Never
 * fails (allocation aborts).
 */
struct sink *sink_open(struct sink_pool *p, enum sink_mode mode, enum sink_mode fallback,
                       const struct sink_cbs *cb, void *ctx);

/* The mode in use (after any fallback). */
enum sink_mode sink_mode(const struct sink *s);

/*
 * Append n bytes at p, after opened() and before sink_read(); one span at a
 * time. true: the span is taken already (copied into an O_DIRECT buffer), no
 * callback follows; false: p stays the caller's to keep valid until taken()
 * (or done()).
 */
bool sink_write(struct sink *s, const void *p, size_t n);

/*
 * Read the next len bytes from a socket (SINK_SPLICE or SINK_DIRECT sinks,
 * after any spans): the sink asks for it with sock_get() before each op and
 * gives it back with sock_put(); fixed: the descriptor is a direct one. Reads
 * never wait in the kernel: an empty socket is polled, without holding a pipe
 * or a buffer. read_done() follows, or done() with a failure.
 */
void sink_read(struct sink *s, uint64_t len, bool fixed);

/* Every byte is in: make the object durable and name it; done() follows. */
void sink_commit(struct sink *s);

/*
 * Give the sink up, from any state before done(): no callback follows. Its
 * file is closed and its name removed, now or when its op in flight comes
 * back; what it borrowed goes back.
 */
void sink_abort(struct sink *s);

/* A word for a step, for logs ("open", "fdatasync", ...). */
const char *sink_step_name(enum sink_step step);

#endif /* ENGINE_STORE_SINK_H */

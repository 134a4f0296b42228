/*
 * conn: connection slots, receive queue, HTTP feeding, output chain,
 * timeouts and closing. All of it runs on the owning worker's thread.
 */
#include "engine/core/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/core/buf.h"
#include "engine/core/log.h"
#include "engine/core/ring.h"

#define POOL_CACHE 64 /* head and output buffers kept for reuse per worker */

enum conn_state {
    CONN_IDLE,    /* between requests: no request bytes seen */
    CONN_HEAD,    /* a request head is arriving */
    CONN_BODY,    /* head complete, body (if any) arriving */
    CONN_LINGER,  /* output sent, write side shut, draining input before close */
    CONN_CLOSING, /* ops cancelled, waiting for their CQEs */
};

/*
 * What becomes of the body of the request in progress (state CONN_BODY).
 * Each request starts at BODY_DISCARD; the handler's verdict and calls move
 * it on:
 *
 *   DISCARD --CONN_SKIP_BODY--> SKIP --skipped--> head() again --> DISCARD
 *   DISCARD --conn_take_body()--> TAKEN --end--> ENDED
 *   DISCARD or TAKEN --conn_detach_body()--> HANDOVER --receive stopped--> DETACHED
 *   DETACHED --conn_body_read()--> ENDED
 *   any but SKIP --answered--> DISCARD
 */
enum conn_body {
    BODY_DISCARD,  /* bytes are skipped (up to CONN_DISCARD_MAX): no handler wants them */
    BODY_SKIP,     /* skipped for a handler that answers once the body is over */
    BODY_TAKEN,    /* spans go to body_fn, the end to end_fn */
    BODY_HANDOVER, /* as TAKEN; once the receive stops, the handler reads the socket */
    BODY_DETACHED, /* the handler reads the rest of the body from the socket itself */
    BODY_ENDED,    /* end_fn was called */
};

/* Output chain link: bytes [off, len) of data still to send. */
struct obuf {
    struct obuf *next;
    uint32_t off;
    uint32_t len;
    uint32_t cap;
    char data[];
};

struct conn {
    int fd;                   /* the socket: a direct descriptor (registered file slot) */
    uint32_t idx;             /* slot index in the pool */
    uint32_t gen;             /* slot generation: bumped when the slot is freed */
    uint8_t state;            /* enum conn_state */
    uint8_t body;             /* enum conn_body */
    uint8_t recv_armed : 1;   /* multishot recv in flight */
    uint8_t recv_cancel : 1;  /* a cancel of the recv is in flight */
    uint8_t send_busy : 1;    /* a send is in flight */
    uint8_t close_after : 1;  /* close once the output is sent */
    uint8_t answered : 1;     /* the request in progress has its response queued */
    uint8_t peer_eof : 1;     /* the client shut its write side */
    uint8_t starved : 1;      /* waiting for receive buffers */
    uint8_t reject : 1;       /* accepted past MAX_CONNECTIONS: answer 503, close */
    uint8_t closed : 1;       /* the close of the direct descriptor is submitted */
    uint8_t waiting : 1;      /* the handler answers later (e.g. after a database query) */
    uint8_t done_pending : 1; /* the message ended while the handler was still waiting */
    uint8_t held_done : 1;    /* the held body span ended the message */
    uint8_t sends : 1;        /* the handler sends (splices) the response body itself */
    uint8_t drain_all : 1;    /* drain_fn waits for the whole output, not CONN_OUT_LOW */
    uint8_t head_compact : 1; /* hp.head is a right-sized copy (malloc), not a pool buffer */
    uint32_t held;            /* bytes of in_first the handler still reads (a write in flight) */
    uint32_t pins;            /* other subsystems' ops reading what the connection owns */
    conn_body_fn body_fn;     /* the body's spans (BODY_TAKEN, BODY_HANDOVER) */
    conn_end_fn end_fn;       /* the body's end */
    conn_op_fn op_fn;         /* completion of the handler's op in flight */
    conn_op_fn drain_fn;      /* called once when queued output falls to CONN_OUT_LOW */
    conn_op_fn detach_fn;     /* called once the socket is the handler's to read */
    void *rdata;              /* handler state of the request in progress */
    void (*rdata_free)(void *rdata); /* frees rdata if the connection closes first */
    void (*rdata_reap)(void *rdata, conn_op_fn fn, int res); /* see conn_set_reap */
    uint16_t inflight;                                       /* ops in flight */
    uint16_t in_first;      /* first queued receive buffer, BUF_NONE if none */
    uint16_t in_last;       /* last queued receive buffer */
    uint16_t in_count;      /* queued receive buffers */
    uint32_t in_off;        /* bytes of in_first already consumed */
    uint32_t discard;       /* body bytes skipped for the current request */
    int status;             /* status of the response to the current request */
    uint64_t out_bytes;     /* bytes queued on the output chain */
    uint64_t req_start_ns;  /* monotonic ns of the current request's first byte */
    uint64_t active_ms;     /* last progress (bytes in or out), monotonic ms */
    struct obuf *out_first; /* output chain, sent in order */
    struct obuf *out_last;
    struct conn *next;      /* free list / deferred-free list link */
    struct ring *ring;      /* the owning worker's loop */
    struct conn_pool *pool; /* the owning pool */
    struct tmr timer;       /* CONNECTION_TIMEOUT and lingering */
    struct http_parser hp;  /* request parser; hp.head is held only mid-request */
};

struct conn_pool {
    struct ring *ring;
    const struct conn_handler *handler; /* answers every request */
    void *ctx;                          /* the handler's, given back by conn_ctx() */
    uint8_t kind_recv;                  /* op kinds: the multishot receive */
    uint8_t kind_send;                  /* a send */
    uint8_t kind_done;                  /* shutdown, cancel, close: only counted */
    uint8_t kind_op;                    /* the handler's own ops (conn_op_sqe) */
    bool stopping;                      /* shutdown began: close after each request */
    struct conn **chunks;               /* chunks of CONN_CHUNK slots */
    uint32_t nchunks;                   /* chunks allocated */
    struct conn *free;                  /* free slots */
    struct conn *dead;                  /* closed slots to free at the end of the loop turn */
    uint32_t open;                      /* connections open (incl. closing) */
    struct http_head **heads;           /* cached head buffers */
    uint32_t nheads;
    struct obuf **obufs; /* cached CONN_OBUF_SIZE output buffers */
    uint32_t nobufs;
    uint64_t *starved; /* conn_ref() of connections waiting for buffers */
    uint32_t nstarved;
    uint32_t starved_cap;
};

/* Connections open in the whole process (rejected ones excepted): MAX_CONNECTIONS. */
static uint32_t conns_total;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_recv(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe);
static void on_send(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe);
static void on_done(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe);
static void on_op(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe);
static void on_turn(void *ctx);

struct conn_pool *conn_pool_new(struct ring *r, const struct conn_handler *handler, void *ctx)
{
    struct conn_pool *p = calloc(1, sizeof(*p));

    if (p == NULL)
        log_oom();
    p->ring = r;
    p->handler = handler;
    p->ctx = ctx;
    p->heads = malloc(POOL_CACHE * sizeof(*p->heads));
    p->obufs = malloc(POOL_CACHE * sizeof(*p->obufs));
    if (p->heads == NULL || p->obufs == NULL)
        log_oom();
    p->kind_recv = ring_kind_add(r, "conn-recv", on_recv, p);
    p->kind_send = ring_kind_add(r, "conn-send", on_send, p);
    p->kind_done = ring_kind_add(r, "conn-done", on_done, p);
    p->kind_op = ring_kind_add(r, "conn-op", on_op, p);
    ring_on_turn(r, on_turn, p);
    return p;
}

uint32_t conn_pool_open(const struct conn_pool *p)
{
    return p->open;
}

void conn_pool_free(struct conn_pool *p)
{
    uint32_t i;

    if (p == NULL)
        return;
    for (i = 0; i < p->nchunks; i++)
        free(p->chunks[i]);
    for (i = 0; i < p->nheads; i++)
        free(p->heads[i]);
    for (i = 0; i < p->nobufs; i++)
        free(p->obufs[i]);
    free(p->chunks);
    free(p->heads);
    free(p->obufs);
    free(p->starved);
    free(p);
}

static struct conn *slot(struct conn_pool *p, uint32_t idx)
{
    return &p->chunks[idx / CONN_CHUNK][idx % CONN_CHUNK];
}

/* The live connection a CQE names, or NULL for a stale one. */
static struct conn *lookup(struct conn_pool *p, uint32_t idx, uint32_t gen)
{
    struct conn *c;

    if (idx / CONN_CHUNK >= p->nchunks)
        return NULL;
    c = slot(p, idx);
    if (c->fd < 0 || c->gen != gen)
        return NULL;
    return c;
}

/*
 * Each slot holds a direct descriptor, so a worker never has more slots than
 * its descriptor table (65,536): far below the 2^24 indexes user_data carries.
 */
static void grow(struct conn_pool *p)
{
    struct conn **chunks;
    struct conn *chunk;
    uint32_t i;

    if ((uint64_t)(p->nchunks + 1) * CONN_CHUNK > (uint64_t)RING_UD_IDX_MAX + 1)
        log_oom();
    chunks = realloc(p->chunks, (p->nchunks + 1) * sizeof(*chunks));
    chunk = calloc(CONN_CHUNK, sizeof(*chunk));
    if (chunks == NULL || chunk == NULL)
        log_oom();
    p->chunks = chunks;
    p->chunks[p->nchunks] = chunk;
    for (i = CONN_CHUNK; i-- > 0;) {
        chunk[i].idx = p->nchunks * CONN_CHUNK + i;
        chunk[i].fd = -1;
        chunk[i].next = p->free;
        p->free = &chunk[i];
    }
    p->nchunks++;
}

/* A free slot, cleared but for its index and generation. */
static struct conn *slot_take(struct conn_pool *p)
{
    struct conn *c;
    uint32_t idx;
    uint32_t gen;

    if (p->free == NULL)
        grow(p);
    c = p->free;
    p->free = c->next;
    idx = c->idx;
    gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->idx = idx;
    c->gen = gen;
    return c;
}

/*
 * The slot's connection is gone: every reference to it is stale from now on
 * (new generation). It is reused only after this loop turn (slots_reclaim).
 */
static void slot_retire(struct conn_pool *p, struct conn *c)
{
    c->fd = -1;
    c->gen++;
    c->next = p->dead;
    p->dead = c;
}

/* End of a loop turn: retired slots become free, last in, first out. */
static void slots_reclaim(struct conn_pool *p)
{
    while (p->dead != NULL) {
        struct conn *c = p->dead;
        p->dead = c->next;
        c->next = p->free;
        p->free = c;
    }
}

static struct http_head *head_get(struct conn_pool *p)
{
    struct ring *r = p->ring;
    struct http_head *h;

    if (p->nheads > 0) {
        h = p->heads[--p->nheads];
    } else {
        h = malloc(sizeof(*h));
        if (h == NULL)
            log_oom();
    }
    met_inc(&r->met.heads_in_use);
    return h;
}

static void head_put(struct conn_pool *p, struct http_head *h)
{
    met_dec(&p->ring->met.heads_in_use);
    if (p->nheads < POOL_CACHE)
        p->heads[p->nheads++] = h;
    else
        free(h);
}

static struct obuf *obuf_get(struct conn_pool *p, size_t n)
{
    struct obuf *o;

    if (n <= CONN_OBUF_SIZE && p->nobufs > 0) {
        o = p->obufs[--p->nobufs];
    } else {
        size_t cap = n > CONN_OBUF_SIZE ? n : CONN_OBUF_SIZE;
        o = malloc(sizeof(*o) + cap);
        if (o == NULL)
            log_oom();
        o->cap = (uint32_t)cap;
    }
    o->next = NULL;
    o->off = 0;
    o->len = 0;
    return o;
}

static void obuf_put(struct conn_pool *p, struct obuf *o)
{
    if (o->cap == CONN_OBUF_SIZE && p->nobufs < POOL_CACHE)
        p->obufs[p->nobufs++] = o;
    else
        free(o);
}

static void release_head(struct conn *c)
{
    if (c->hp.head == NULL)
        return;
    if (c->head_compact) {
        met_dec(&c->ring->met.heads_in_use);
        free(c->hp.head);
    } else {
        head_put(c->pool, c->hp.head);
    }
    c->hp.head = NULL;
    c->head_compact = 0;
}

/*
 * A request with a Content-Length body may stay in flight for long (a slow
 * upload): it keeps a right-sized copy of its head, not a 17 KiB head buffer.
 */
static void compact_head(struct conn *c)
{
    struct http_head *h = c->hp.head;
    size_t n = http_head_size(h);
    struct http_head *small = malloc(n);

    if (small == NULL)
        log_oom();
    memcpy(small, h, n);
    small->cap = h->len;
    head_put(c->pool, h);
    met_inc(&c->ring->met.heads_in_use);
    c->hp.head = small;
    c->head_compact = 1;
}

/* Give every queued receive buffer back. */
static void drop_input(struct conn *c)
{
    struct buf_ring *b = &c->ring->bufs;

    while (c->in_first != BUF_NONE) {
        uint16_t bid = c->in_first;
        c->in_first = b->next[bid];
        buf_put(b, bid);
    }
    c->in_count = 0;
    c->in_off = 0;
}

static void enqueue_input(struct conn *c, uint16_t bid, uint32_t len)
{
    struct buf_ring *b = &c->ring->bufs;

    b->len[bid] = len;
    b->next[bid] = BUF_NONE;
    if (c->in_first == BUF_NONE) {
        c->in_first = bid;
        c->in_off = 0;
    } else {
        b->next[c->in_last] = bid;
    }
    c->in_last = bid;
    c->in_count++;
}

/* n bytes of the first queued buffer were consumed. */
static void consume(struct conn *c, size_t n)
{
    struct buf_ring *b = &c->ring->bufs;
    uint16_t bid = c->in_first;

    c->in_off += (uint32_t)n;
    if (c->in_off < b->len[bid])
        return;
    c->in_first = b->next[bid];
    c->in_off = 0;
    c->in_count--;
    buf_put(b, bid);
}

static void arm_recv(struct conn *c)
{
    struct ring *r = c->ring;
    struct io_uring_sqe *sqe = ring_sqe(r);

    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT | IOSQE_FIXED_FILE;
    sqe->buf_group = r->bufs.bgid;
    io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_recv, c->gen, c->idx));
    c->recv_armed = 1;
    c->inflight++;
}

static void cancel_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = ring_sqe(c->ring);

    io_uring_prep_cancel64(sqe, ring_ud(c->pool->kind_recv, c->gen, c->idx), 0);
    io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_done, c->gen, c->idx));
    c->recv_cancel = 1;
    c->inflight++;
}

/* The receive has stopped and every received byte went to the handler: the socket is its. */
static void maybe_detach(struct conn *c)
{
    conn_op_fn fn = c->detach_fn;

    if (c->body != BODY_HANDOVER || c->recv_armed || c->recv_cancel || c->in_first != BUF_NONE ||
        c->waiting || c->state != CONN_BODY || c->answered || c->close_after || c->hp.msg_done)
        return;
    c->detach_fn = NULL;
    c->body = BODY_DETACHED;
    fn(c, 0);
}

/* The handler moves bytes on the socket itself (reads the body, or sends the response). */
static bool handler_io(const struct conn *c)
{
    return c->body == BODY_DETACHED || c->sends;
}

/*
 * Receive while there is room: a connection stops reading when its queued
 * input or output passes a bound (backpressure), or when buffers ran out.
 */
static void update_recv(struct conn *c)
{
    bool want = !c->peer_eof && !c->starved && c->state != CONN_CLOSING &&
                c->in_count < CONN_INPUT_MAX && c->out_bytes < CONN_OUT_HIGH &&
                c->body != BODY_HANDOVER && !handler_io(c);

    if (want && !c->recv_armed)
        arm_recv(c);
    else if (!want && c->recv_armed && !c->recv_cancel && !c->peer_eof && c->state != CONN_CLOSING)
        cancel_recv(c);
    maybe_detach(c);
}

static void flush(struct conn *c)
{
    struct io_uring_sqe *sqe;
    struct obuf *o = c->out_first;

    if (c->send_busy || o == NULL || c->state == CONN_CLOSING)
        return;
    sqe = ring_sqe(c->ring);
    io_uring_prep_send(sqe, c->fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_send, c->gen, c->idx));
    c->send_busy = 1;
    c->inflight++;
}

/* When the timer should fire next for the connection's state. */
static uint64_t due(const struct conn *c)
{
    uint64_t t = c->ring->cfg->connection_timeout;

    switch (c->state) {
    case CONN_HEAD:
        return c->req_start_ns / 1000000 + t;
    case CONN_LINGER:
        return c->timer.deadline;
    default:
        return c->active_ms + t;
    }
}

static void finalize(struct conn *c)
{
    struct ring *r = c->ring;
    struct conn_pool *p = c->pool;

    if (c->fd < 0 || c->state != CONN_CLOSING || c->inflight != 0 || c->pins != 0)
        return;
    if (!c->closed) {
        /* Release the direct descriptor; the slot is freed when that completes. */
        struct io_uring_sqe *sqe = ring_sqe(r);
        io_uring_prep_close_direct(sqe, (unsigned)c->fd);
        io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_done, c->gen, c->idx));
        c->closed = 1;
        c->inflight++;
        return;
    }
    while (c->out_first != NULL) {
        struct obuf *o = c->out_first;
        c->out_first = o->next;
        obuf_put(p, o);
    }
    c->out_last = NULL;
    c->held = 0;
    drop_input(c);
    if (c->rdata != NULL && c->rdata_free != NULL)
        c->rdata_free(c->rdata);
    c->rdata = NULL;
    c->rdata_free = NULL;
    c->rdata_reap = NULL;
    if (!c->reject)
        __atomic_sub_fetch(&conns_total, 1, __ATOMIC_RELAXED);
    p->open--;
    met_set(&r->met.conn_open, p->open);
    slot_retire(p, c);
}

void conn_close(struct conn *c)
{
    struct io_uring_sqe *sqe;

    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    tmr_cancel(&c->ring->timers, &c->timer);
    /* A held buffer may still be read by the handler's op (or a pinning one): it goes back in
     * finalize. */
    if (c->held == 0)
        drop_input(c);
    release_head(c);
    /*
     * Ops on the socket end now: the connection's own, and a pinning
     * subsystem's (a storage sink's poll) that would otherwise wait for the
     * client, holding the pin and the socket open.
     */
    if (c->inflight > 0 || c->pins > 0) {
        sqe = ring_sqe(c->ring);
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD_FIXED);
        io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_done, c->gen, c->idx));
        c->inflight++;
    }
    finalize(c);
}

/* Output is sent and the connection must close: shut the write side, drain, close. */
static void start_linger(struct conn *c)
{
    struct ring *r = c->ring;
    struct io_uring_sqe *sqe;
    uint64_t t =
        r->cfg->connection_timeout < CONN_LINGER_MS ? r->cfg->connection_timeout : CONN_LINGER_MS;

    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    c->state = CONN_LINGER;
    drop_input(c);
    release_head(c);
    sqe = ring_sqe(r);
    io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_done, c->gen, c->idx));
    c->inflight++;
    tmr_set(&r->timers, &c->timer, r->now_ms + t);
    update_recv(c);
}

static void on_timer(struct tmr *t)
{
    struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
    struct ring *r = c->ring;
    uint64_t when = due(c);

    if (c->state == CONN_CLOSING)
        return;
    if (c->state == CONN_LINGER) {
        conn_close(c);
        return;
    }
    if (handler_io(c)) {
        /* The handler moves the bytes; the client's silence is what counts. */
        if (c->active_ms + r->cfg->connection_timeout > r->now_ms) {
            tmr_set(&r->timers, t, c->active_ms + r->cfg->connection_timeout);
            return;
        }
        met_inc(&r->met.conn_timed_out);
        conn_close(c);
        return;
    }
    if (c->waiting &&
        (c->out_first == NULL || c->active_ms + r->cfg->connection_timeout > r->now_ms)) {
        /*
         * The server is the slow one (a database answer, a disk write): the handler's
         * own timeouts apply. But output that the client has not taken for
         * CONNECTION_TIMEOUT (a download nobody reads) is the client's stall.
         */
        uint64_t next = r->now_ms + r->cfg->connection_timeout;
        if (c->out_first != NULL && c->active_ms + r->cfg->connection_timeout < next)
            next = c->active_ms + r->cfg->connection_timeout;
        tmr_set(&r->timers, t, next);
        return;
    }
    if (c->waiting) {
        met_inc(&r->met.conn_timed_out);
        conn_close(c);
        return;
    }
    if (when > r->now_ms) {
        tmr_set(&r->timers, t, when);
        return;
    }
    met_inc(&r->met.conn_timed_out);
    if ((c->state == CONN_HEAD || c->state == CONN_BODY) && !c->answered && !c->close_after &&
        c->out_first == NULL) {
        c->pool->handler->fail(c, -ETIMEDOUT, c->state == CONN_BODY ? c->hp.head : NULL);
        flush(c);
        tmr_set(&r->timers, t, r->now_ms + CONN_LINGER_MS);
        return;
    }
    conn_close(c);
}

static void start_request(struct conn *c)
{
    c->state = CONN_HEAD;
    c->answered = 0;
    c->body = BODY_DISCARD;
    c->waiting = 0;
    c->done_pending = 0;
    c->sends = 0;
    c->body_fn = NULL;
    c->end_fn = NULL;
    c->detach_fn = NULL;
    c->drain_fn = NULL;
    c->held = 0;
    c->held_done = 0;
    c->discard = 0;
    c->req_start_ns = now_ns();
}

/* The request is over: its message is read and its response queued. */
static void complete_request(struct conn *c)
{
    /* A body that ended in what was received never needed the socket handed over. */
    c->body = BODY_DISCARD;
    c->detach_fn = NULL;
    c->sends = 0;
    release_head(c);
    c->state = CONN_IDLE;
    if (c->pool->stopping)
        conn_close_after(c);
}

/* Ask the handler again after a skipped body; it may answer later (waiting). */
static void ask_after_skip(struct conn *c)
{
    c->body = BODY_DISCARD;
    if (c->pool->handler->head(c, c->hp.head, &c->hp, true) == CONN_PENDING)
        c->waiting = 1;
}

/* The handler takes the body and has not seen its end. */
static bool body_taken(const struct conn *c)
{
    return (c->body == BODY_TAKEN || c->body == BODY_HANDOVER || c->body == BODY_DETACHED) &&
           c->end_fn != NULL;
}

/* The request's message is read to its end. */
static void finish_request(struct conn *c)
{
    if (c->waiting) {
        /* The handler is busy (opening its file...): come back when it resumes us. */
        c->done_pending = 1;
        return;
    }
    if (body_taken(c) && !c->answered) {
        c->body = BODY_ENDED;
        if (c->end_fn(c) == CONN_PENDING)
            c->waiting = 1;
    }
    if (c->body == BODY_SKIP)
        ask_after_skip(c);
    if (c->waiting) {
        c->done_pending = 1;
        return;
    }
    complete_request(c);
}

/* A parse error: answer it and close; a request already answered just closes. */
static void fail(struct conn *c, int err)
{
    if (c->answered) {
        conn_close_after(c);
        return;
    }
    if (c->state == CONN_IDLE)
        start_request(c);
    c->body = BODY_DISCARD;
    c->pool->handler->fail(c, err, c->hp.head_done ? c->hp.head : NULL);
}

/*
 * Body bytes of a request whose handler takes none. While the handler waits,
 * skip up to CONN_DISCARD_MAX, then have it answer and close; bytes after an
 * answer are skipped the same way.
 */
static void skip_body(struct conn *c, size_t n)
{
    c->discard += (uint32_t)(n > CONN_DISCARD_MAX ? CONN_DISCARD_MAX : n);
    if (c->discard < CONN_DISCARD_MAX)
        return;
    conn_close_after(c);
    if (c->body == BODY_SKIP)
        ask_after_skip(c);
}

/*
 * The client shut its write side and every byte it sent is parsed: nothing
 * more can arrive. The connection closes once what is queued is sent: the
 * answers to requests it sent in full, or, for a request cut short, whatever
 * was already said. A handler still working on a request answers it first.
 */
static void after_peer_eof(struct conn *c)
{
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER || c->waiting ||
        c->in_first != BUF_NONE || handler_io(c))
        return;
    conn_close_after(c);
    if (c->out_first == NULL)
        start_linger(c); /* with peer_eof: closes now */
}

/* Feed queued input to the parser while nothing holds it back. */
static void process(struct conn *c)
{
    struct ring *r = c->ring;

    while (c->in_first != BUF_NONE && !c->close_after && !c->waiting &&
           c->out_bytes < CONN_OUT_HIGH && c->state != CONN_CLOSING) {
        uint16_t bid = c->in_first;
        const char *data = buf_addr(&r->bufs, bid) + c->in_off;
        size_t len = r->bufs.len[bid] - c->in_off;
        struct http_ev ev;
        ssize_t n;

        if (c->hp.head == NULL)
            http_begin(&c->hp, head_get(c->pool));
        n = http_feed(&c->hp, data, len, &ev);
        if (n < 0) {
            fail(c, (int)n);
            break;
        }
        if (c->state == CONN_IDLE && http_started(&c->hp))
            start_request(c);
        if (ev.body.len != 0 && (c->body == BODY_TAKEN || c->body == BODY_HANDOVER) &&
            c->body_fn != NULL && !c->answered) {
            /* The handler reads these bytes in place: hold the buffer until it resumes us. */
            if (c->body_fn(c, ev.body) == CONN_PENDING) {
                c->waiting = 1;
                c->held = (uint32_t)n;
                c->held_done = ev.kind == HTTP_EV_DONE;
                break;
            }
            consume(c, (size_t)n);
        } else {
            consume(c, (size_t)n);
            if (ev.body.len != 0)
                skip_body(c, ev.body.len);
        }
        if (ev.kind == HTTP_EV_HEAD) {
            enum conn_verdict v;

            if (http_content_length(&c->hp) > 0)
                compact_head(c);
            v = c->pool->handler->head(c, c->hp.head, &c->hp, false);
            c->state = CONN_BODY;
            if (v == CONN_SKIP_BODY)
                c->body = BODY_SKIP;
            c->waiting = v == CONN_PENDING;
            if (!http_has_body(&c->hp)) {
                /* The message is complete: collect its end without input. */
                n = http_feed(&c->hp, "", 0, &ev);
                if (n == 0 && ev.kind == HTTP_EV_DONE)
                    finish_request(c);
            }
        } else if (ev.kind == HTTP_EV_DONE) {
            finish_request(c);
        }
    }
    if (c->state == CONN_CLOSING)
        return;
    if (c->close_after && !c->waiting)
        drop_input(c);
    if (c->state == CONN_IDLE)
        release_head(c);
    if (c->peer_eof)
        after_peer_eof(c);
    if (c->state == CONN_CLOSING)
        return;
    flush(c);
    update_recv(c);
}

uint64_t conn_ref(const struct conn *c)
{
    return (uint64_t)c->gen << 32 | c->idx;
}

struct conn *conn_deref(struct conn_pool *p, uint64_t ref)
{
    struct conn *c = lookup(p, (uint32_t)ref, (uint32_t)(ref >> 32));

    if (c == NULL || c->state == CONN_CLOSING || !c->waiting)
        return NULL;
    return c;
}

void conn_resume(struct conn *c)
{
    c->waiting = 0;
    if (c->held != 0) {
        consume(c, c->held);
        c->held = 0;
        if (c->held_done) {
            c->held_done = 0;
            finish_request(c);
            if (c->waiting) {
                flush(c);
                update_recv(c);
                return;
            }
        }
    }
    if (c->done_pending) {
        c->done_pending = 0;
        finish_request(c);
        if (c->waiting) {
            flush(c);
            update_recv(c);
            return;
        }
    }
    if (c->close_after && c->state != CONN_LINGER && c->out_first == NULL) {
        /* Nothing to send (cannot happen for an answer, but stay safe). */
        start_linger(c);
        return;
    }
    process(c);
}

const struct http_head *conn_head(const struct conn *c)
{
    return c->hp.head;
}

void conn_take_body(struct conn *c, conn_body_fn body, conn_end_fn end)
{
    if (c->body != BODY_HANDOVER)
        c->body = BODY_TAKEN;
    c->body_fn = body;
    c->end_fn = end;
}

void conn_pin(struct conn *c)
{
    c->pins++;
}

struct conn *conn_unpin(struct conn_pool *p, uint64_t ref)
{
    struct conn *c = lookup(p, (uint32_t)ref, (uint32_t)(ref >> 32));

    if (c == NULL || c->pins == 0)
        return NULL;
    c->pins--;
    if (c->state == CONN_CLOSING) {
        finalize(c);
        return NULL;
    }
    return c;
}

struct io_uring_sqe *conn_op_sqe(struct conn *c, conn_op_fn fn)
{
    struct io_uring_sqe *sqe = ring_sqe(c->ring);

    io_uring_sqe_set_data64(sqe, ring_ud(c->pool->kind_op, c->gen, c->idx));
    c->op_fn = fn;
    c->inflight++;
    return sqe;
}

void conn_on_drain(struct conn *c, conn_op_fn fn)
{
    c->drain_all = 0;
    if (c->out_bytes <= CONN_OUT_LOW && !c->send_busy) {
        fn(c, 0);
        return;
    }
    c->drain_fn = fn;
}

void conn_on_sent(struct conn *c, conn_op_fn fn)
{
    c->drain_all = 1;
    if (c->out_first == NULL && !c->send_busy) {
        fn(c, 0);
        return;
    }
    c->drain_fn = fn;
}

struct conn *conn_find(struct conn_pool *p, uint64_t ref)
{
    struct conn *c = lookup(p, (uint32_t)ref, (uint32_t)(ref >> 32));

    return c != NULL && c->state != CONN_CLOSING ? c : NULL;
}

void conn_detach_body(struct conn *c, conn_op_fn fn)
{
    if (fn == NULL && c->body == BODY_HANDOVER)
        c->body = BODY_TAKEN;
    else if (fn != NULL && c->body != BODY_ENDED)
        c->body = BODY_HANDOVER;
    c->detach_fn = fn;
}

void conn_poll(struct conn *c, unsigned events, conn_op_fn fn)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, fn);

    io_uring_prep_poll_add(sqe, c->fd, events);
    sqe->flags |= IOSQE_FIXED_FILE;
}

void conn_io_progress(struct conn *c, uint64_t n, bool in)
{
    c->active_ms = c->ring->now_ms;
    met_add(in ? &c->ring->met.bytes_received : &c->ring->met.bytes_sent, n);
}

void conn_body_read(struct conn *c)
{
    if (http_body_done(&c->hp) < 0) {
        /* The handler read a body the parser does not know of: a bug, not the client's. */
        log_error("body read around the parser without one", "worker=%u", c->ring->id);
        conn_close(c);
        return;
    }
    finish_request(c);
    process(c);
}

void conn_route_sends(struct conn *c, bool on)
{
    c->sends = on;
    c->active_ms = c->ring->now_ms;
}

void conn_flush(struct conn *c)
{
    flush(c);
}

void conn_set_rdata(struct conn *c, void *rdata, void (*free_fn)(void *rdata))
{
    c->rdata = rdata;
    c->rdata_free = free_fn;
    c->rdata_reap = NULL;
}

void conn_set_reap(struct conn *c, void (*reap)(void *rdata, conn_op_fn fn, int res))
{
    c->rdata_reap = reap;
}

static void on_op(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct conn *c = lookup(ctx, idx, gen);
    int res = cqe->res;

    if (c == NULL)
        return;
    c->inflight--;
    if (c->state == CONN_CLOSING) {
        if (c->rdata != NULL && c->rdata_reap != NULL)
            c->rdata_reap(c->rdata, c->op_fn, res);
        finalize(c);
        return;
    }
    c->op_fn(c, res);
}

void conn_accept(struct conn_pool *p, int fd)
{
    struct ring *r = p->ring;
    uint32_t total = __atomic_add_fetch(&conns_total, 1, __ATOMIC_RELAXED);
    bool reject = total > r->cfg->max_connections;
    struct conn *c;

    if (reject) {
        __atomic_sub_fetch(&conns_total, 1, __ATOMIC_RELAXED);
        met_inc(&r->met.conn_rejected);
    } else {
        met_inc(&r->met.conn_accepted);
    }
    c = slot_take(p);
    c->fd = fd;
    c->ring = r;
    c->pool = p;
    c->state = CONN_IDLE;
    c->reject = reject;
    c->in_first = BUF_NONE;
    c->in_last = BUF_NONE;
    c->active_ms = r->now_ms;
    http_init(&c->hp);
    tmr_init(&c->timer, on_timer);
    p->open++;
    met_set(&r->met.conn_open, p->open);

    if (reject || p->stopping) {
        start_request(c);
        p->handler->fail(c, -EBUSY, NULL);
    }
    tmr_set(&r->timers, &c->timer, due(c));
    flush(c);
    update_recv(c);
}

static void on_recv(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct conn_pool *p = ctx;
    struct ring *r = p->ring;
    struct conn *c = lookup(p, idx, gen);
    uint32_t flags = cqe->flags;
    int res = cqe->res;

    if (flags & IORING_CQE_F_BUFFER)
        buf_taken(&r->bufs);
    if (c == NULL) {
        if (flags & IORING_CQE_F_BUFFER)
            buf_put(&r->bufs, (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT));
        return;
    }
    if (!(flags & IORING_CQE_F_MORE)) {
        c->recv_armed = 0;
        c->inflight--;
    }
    if (res > 0) {
        uint16_t bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
        met_add(&r->met.bytes_received, (uint64_t)res);
        c->active_ms = r->now_ms;
        if (c->state == CONN_CLOSING || c->state == CONN_LINGER || c->close_after) {
            buf_put(&r->bufs, bid);
        } else {
            enqueue_input(c, bid, (uint32_t)res);
            process(c);
        }
    } else if (res == 0) {
        c->peer_eof = 1;
        if (c->state == CONN_LINGER)
            conn_close(c);
        else
            after_peer_eof(c);
    } else if (res == -ENOBUFS) {
        met_inc(&r->met.recv_enobufs);
        if (c->state != CONN_CLOSING && !c->starved) {
            if (p->nstarved == p->starved_cap) {
                uint32_t cap = p->starved_cap ? p->starved_cap * 2 : 64;
                uint64_t *v = realloc(p->starved, cap * sizeof(*v));
                if (v == NULL)
                    log_oom();
                p->starved = v;
                p->starved_cap = cap;
            }
            p->starved[p->nstarved++] = conn_ref(c);
            c->starved = 1;
        }
    } else if (res != -ECANCELED) {
        conn_close(c);
    }
    if (c->state == CONN_CLOSING)
        finalize(c);
    else
        update_recv(c);
}

static void on_send(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct conn_pool *p = ctx;
    struct ring *r = p->ring;
    struct conn *c = lookup(p, idx, gen);
    int res = cqe->res;
    struct obuf *o;

    if (c == NULL)
        return;
    c->inflight--;
    c->send_busy = 0;
    if (c->state == CONN_CLOSING) {
        finalize(c);
        return;
    }
    if (res < 0) {
        conn_close(c);
        return;
    }
    met_add(&r->met.bytes_sent, (uint64_t)res);
    c->active_ms = r->now_ms;
    o = c->out_first;
    o->off += (uint32_t)res;
    c->out_bytes -= (uint64_t)res;
    if (o->off == o->len) {
        c->out_first = o->next;
        if (c->out_first == NULL)
            c->out_last = NULL;
        obuf_put(p, o);
    }
    if (c->drain_fn != NULL &&
        (c->drain_all ? c->out_first == NULL : c->out_bytes <= CONN_OUT_LOW)) {
        conn_op_fn fn = c->drain_fn;
        c->drain_fn = NULL;
        fn(c, 0);
        if (c->state == CONN_CLOSING)
            return;
    }
    if (c->out_first != NULL) {
        flush(c);
        return;
    }
    if (c->close_after) {
        /* A handler still producing the response (a download) finishes first. */
        if (c->state != CONN_LINGER && !c->waiting)
            start_linger(c);
        return;
    }
    /* Output drained: input held back by it may go on. */
    process(c);
}

/* A shutdown, cancel or close completed: only counted. */
static void on_done(void *ctx, uint32_t idx, uint32_t gen, const struct io_uring_cqe *cqe)
{
    struct conn *c = lookup(ctx, idx, gen);

    (void)cqe;
    if (c == NULL)
        return;
    c->inflight--;
    c->recv_cancel = 0;
    if (c->state == CONN_CLOSING)
        finalize(c);
    else
        update_recv(c);
}

/* End of a loop turn: free closed slots, re-arm receives that waited for buffers. */
static void on_turn(void *ctx)
{
    struct conn_pool *p = ctx;
    struct ring *r = p->ring;
    uint32_t i;
    uint32_t n;

    slots_reclaim(p);
    if (p->nstarved == 0 || r->bufs.free == 0)
        return;
    n = p->nstarved;
    p->nstarved = 0;
    for (i = 0; i < n; i++) {
        uint64_t key = p->starved[i];
        struct conn *c = lookup(p, (uint32_t)key, (uint32_t)(key >> 32));
        if (c == NULL || !c->starved)
            continue;
        c->starved = 0;
        update_recv(c);
    }
}

/* Call fn on every open connection that is not closing. */
static void each_conn(struct conn_pool *p, void (*fn)(struct conn *c))
{
    uint32_t i;

    for (i = 0; i < p->nchunks * CONN_CHUNK; i++) {
        struct conn *c = slot(p, i);
        if (c->fd >= 0 && c->state != CONN_CLOSING)
            fn(c);
    }
}

static void drain_one(struct conn *c)
{
    if (c->state == CONN_IDLE && c->out_first == NULL && c->in_first == BUF_NONE) {
        conn_close(c);
        return;
    }
    if (c->state == CONN_IDLE || (c->state == CONN_BODY && c->answered))
        conn_close_after(c);
    /*
     * Answered is not finished: a handler still sending the body (a splice in
     * flight, its output chain empty) closes the connection when it is done.
     */
    if (c->close_after && c->out_first == NULL && c->state != CONN_LINGER && !c->waiting)
        start_linger(c);
}

void conn_drain(struct conn_pool *p)
{
    p->stopping = true;
    each_conn(p, drain_one);
}

void conn_close_all(struct conn_pool *p)
{
    each_conn(p, conn_close);
}

char *conn_out_reserve(struct conn *c, size_t n)
{
    struct obuf *o = c->out_last;

    if (o == NULL || o->cap - o->len < n) {
        o = obuf_get(c->pool, n);
        if (c->out_last != NULL)
            c->out_last->next = o;
        else
            c->out_first = o;
        c->out_last = o;
    }
    return o->data + o->len;
}

void conn_out_commit(struct conn *c, size_t n)
{
    c->out_last->len += (uint32_t)n;
    c->out_bytes += n;
}

void conn_close_after(struct conn *c)
{
    c->close_after = 1;
}

bool conn_closing(const struct conn *c)
{
    return c->pool->stopping || c->close_after;
}

const char *conn_date(const struct conn *c)
{
    return c->ring->date;
}

uint64_t conn_elapsed_us(const struct conn *c)
{
    return (now_ns() - c->req_start_ns) / 1000;
}

struct ring *conn_ring(const struct conn *c)
{
    return c->ring;
}

struct conn_pool *conn_pool(const struct conn *c)
{
    return c->pool;
}

void *conn_ctx(const struct conn *c)
{
    return c->pool->ctx;
}

int conn_fd(const struct conn *c)
{
    return c->fd;
}

const struct http_parser *conn_parser(const struct conn *c)
{
    return &c->hp;
}

void *conn_rdata(const struct conn *c)
{
    return c->rdata;
}

bool conn_body_detached(const struct conn *c)
{
    return c->body == BODY_DETACHED;
}

uint32_t conn_worker(const struct conn *c)
{
    return c->ring->id;
}

void conn_answered(struct conn *c, int status)
{
    c->answered = 1;
    c->detach_fn = NULL;
    if (c->body == BODY_HANDOVER)
        c->body = BODY_DISCARD;
    if (c->state != CONN_IDLE) {
        if (c->body != BODY_SKIP)
            c->body = BODY_DISCARD;
        c->sends = 0;
    }
    c->status = status;
    met_request(&c->ring->met, status, conn_elapsed_us(c));
}

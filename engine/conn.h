/*
 * conn: client connections of one worker. A connection is a slot in the
 * worker's pool, addressed in user_data by (index, generation). It receives
 * through the worker's multishot recv into provided buffers, queues the
 * buffers it has not consumed yet, feeds them to proto/http, hands events to
 * route_*, and sends what the routes queue on its output chain.
 *
 * Lifetime: created at accept, closed by conn_close() from any state. Close
 * cancels every op of the connection and frees the slot only after the last
 * CQE came back, at the end of the loop turn.
 */
#ifndef ENGINE_CONN_H
#define ENGINE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tmr.h"
#include "proto/http.h"

struct ring;
struct conn;
struct io_uring_sqe;

/* Completion of a route's own op (a file write...), with the CQE's result. */
typedef void (*conn_op_fn)(struct conn *c, int res);
#define CONN_CHUNK 1024        /* slots allocated at a time */
#define CONN_OUT_HIGH 262144   /* output bytes queued before input is paused */
#define CONN_DISCARD_MAX 65536 /* body bytes skipped for a route that takes none */
#define CONN_LINGER_MS 2000    /* longest lingering close */
#define CONN_INPUT_MAX 8       /* queued receive buffers before recv is paused */
#define CONN_OBUF_SIZE 16384   /* bytes of a standard output buffer */
#define CONN_OUT_LOW 65536     /* queued output at which a waiting producer is called */

enum conn_state {
    CONN_IDLE,    /* between requests: no request bytes seen */
    CONN_HEAD,    /* a request head is arriving */
    CONN_BODY,    /* head complete, body (if any) arriving */
    CONN_LINGER,  /* output sent, write side shut, draining input before close */
    CONN_CLOSING, /* ops cancelled, waiting for their CQEs */
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
    uint8_t recv_armed : 1;   /* multishot recv in flight */
    uint8_t recv_cancel : 1;  /* a cancel of the recv is in flight */
    uint8_t send_busy : 1;    /* a send is in flight */
    uint8_t close_after : 1;  /* close once the output is sent */
    uint8_t answered : 1;     /* the request in progress has its response queued */
    uint8_t peer_eof : 1;     /* the client shut its write side */
    uint8_t starved : 1;      /* waiting for receive buffers */
    uint8_t reject : 1;       /* accepted past MAX_CONNECTIONS: answer 503, close */
    uint8_t skipping : 1;     /* skipping the body of a request its route will answer */
    uint8_t closed : 1;       /* the close of the direct descriptor is submitted */
    uint8_t waiting : 1;      /* the route answers later (e.g. after a database query) */
    uint8_t done_pending : 1; /* the message ended while the route was still waiting */
    uint8_t takes_body : 1;   /* the route consumes the body (route_body / route_body_end) */
    uint8_t held_done : 1;    /* the held body span ended the message */
    uint8_t body_ended : 1;   /* route_body_end() was called for this request */
    uint8_t detach : 1;       /* the route reads the rest of the body: stop receiving */
    uint8_t route_io : 1;     /* the route moves bytes on the socket itself (splice, O_DIRECT) */
    uint8_t drain_all : 1;    /* drain_fn waits for the whole output, not CONN_OUT_LOW */
    uint8_t head_compact : 1; /* hp.head is a right-sized copy (malloc), not a pool buffer */
    uint32_t held;            /* bytes of in_first the route still reads (a write in flight) */
    conn_op_fn op_fn;         /* completion of the route's file op in flight */
    conn_op_fn drain_fn;      /* called once when queued output falls to CONN_OUT_LOW */
    conn_op_fn detach_fn;     /* called once the socket is the route's to read */
    void *rdata;              /* route state of the request in progress */
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
    struct conn *next;     /* free list / deferred-free list link */
    struct ring *ring;     /* owning worker */
    struct tmr timer;      /* CONNECTION_TIMEOUT and lingering */
    struct http_parser hp; /* request parser; hp.head is held only mid-request */
};

/* A worker's connection slots, head buffers and output buffers. */
struct conn_pool {
    struct conn **chunks;     /* chunks of CONN_CHUNK slots */
    uint32_t nchunks;         /* chunks allocated */
    struct conn *free;        /* free slots */
    struct conn *dead;        /* closed slots to free at the end of the loop turn */
    uint32_t open;            /* connections open (incl. closing) */
    struct http_head **heads; /* cached head buffers */
    uint32_t nheads;
    struct obuf **obufs; /* cached CONN_OBUF_SIZE output buffers */
    uint32_t nobufs;
    uint64_t *starved; /* conn_ref() of connections waiting for buffers */
    uint32_t nstarved;
    uint32_t starved_cap;
};

void conn_pool_init(struct conn_pool *p);
void conn_pool_free(struct conn_pool *p);

/* A new socket from accept, as a direct descriptor (ring thread). Takes ownership of fd. */
void conn_accept(struct ring *r, int fd);

/* Completions, decoded by ring_dispatch. */
void conn_on_recv(struct ring *r, uint32_t idx, uint32_t gen, int res, uint32_t flags);
void conn_on_send(struct ring *r, uint32_t idx, uint32_t gen, int res);
void conn_on_done(struct ring *r, uint32_t idx, uint32_t gen); /* shutdown/cancel/close CQE */

/* End of a loop turn: free closed slots, re-arm receives that waited for buffers. */
void conn_tick(struct ring *r);

/* Shutdown began: close idle connections, let the others finish their request. */
void conn_drain(struct ring *r);

/* Close every connection now (shutdown timeout). */
void conn_close_all(struct ring *r);

/* Close a connection (any state); logs nothing, the caller decides. */
void conn_close(struct conn *c);

/* ---- for route handlers ---- */

/*
 * Room for n bytes at the end of the output chain. Never fails (aborts when
 * out of memory). Follow with conn_out_commit() of at most n bytes before any
 * other call on c, and never hold reserved space across an asynchronous op:
 * the chain is sent and freed as the client takes it, so space reserved for
 * a read still in flight could go out empty and be freed under the read.
 */
char *conn_out_reserve(struct conn *c, size_t n);
void conn_out_commit(struct conn *c, size_t n);

/* Close the connection once its output has been sent (lingering close). */
void conn_close_after(struct conn *c);

/* True when the connection closes after this response (shutdown, close requested). */
bool conn_closing(const struct conn *c);

/* The cached Date header value of the connection's worker. */
const char *conn_date(const struct conn *c);

/* Microseconds since the current request's first byte. */
uint64_t conn_elapsed_us(const struct conn *c);

/* The worker index, for logs. */
uint32_t conn_worker(const struct conn *c);

/* The owning worker. */
struct ring *conn_ring(const struct conn *c);

/* Mark the current request answered with status (for metrics and the access log). */
void conn_answered(struct conn *c, int status);

/*
 * A reference that survives the connection: a route that answers later keeps
 * this instead of a pointer, and conn_deref() gives the connection back, or
 * NULL if it closed (or stopped waiting) meanwhile.
 */
uint64_t conn_ref(const struct conn *c);
struct conn *conn_deref(struct ring *r, uint64_t ref);

/* A route that returned ROUTE_PENDING has queued its answer: go on with the connection. */
void conn_resume(struct conn *c);

/* The current request's head (valid until the request completes). */
const struct http_head *conn_head(const struct conn *c);

/* ---- routes that take a body ---- */

/*
 * From now on the current request's body goes to route_body() and its end
 * to route_body_end() instead of being skipped. Call before answering.
 */
void conn_take_body(struct conn *c);

/*
 * A submission entry for a route's own op on this connection (e.g. writing a
 * body span to a file); fn(c, res) runs at its completion, or not at all if
 * the connection closed meanwhile (then the reap hook, if any, sees res and
 * rdata_free cleans up). One at a time.
 */
struct io_uring_sqe *conn_op_sqe(struct conn *c, conn_op_fn fn);

/*
 * Per-request route state: conn calls free_fn(rdata) if the connection
 * closes while it is set. A route that finishes clears it (NULL, NULL).
 */
void conn_set_rdata(struct conn *c, void *rdata, void (*free_fn)(void *rdata));

/*
 * For rdata set last (conn_set_rdata clears it): when the connection is closing
 * and the route's op completes, conn calls reap(rdata, fn, res), fn being the
 * op's callback, before free_fn. An op that made something (a descriptor, a
 * link) records it there, so that free_fn releases it too.
 */
void conn_set_reap(struct conn *c, void (*reap)(void *rdata, conn_op_fn fn, int res));

/*
 * Call fn(c, 0) once, when the queued output has fallen to CONN_OUT_LOW (at
 * once if it already has): a producer (a download) fills the output in
 * steps without letting it grow unbounded.
 */
void conn_on_drain(struct conn *c, conn_op_fn fn);

/* Send what is queued now (routes that fill the output outside a request event). */
void conn_flush(struct conn *c);

/* Like conn_on_drain(), but once every queued byte has been sent. */
void conn_on_sent(struct conn *c, conn_op_fn fn);

/*
 * The connection, by conn_ref(), if it is open and not closing (whether or
 * not it waits): for pools that call queued connections back.
 */
struct conn *conn_find(struct ring *r, uint64_t ref);

/* ---- routes that move bytes on the socket themselves ---- */

/*
 * The route reads the rest of the current Content-Length body from the
 * socket itself (splice, O_DIRECT). The receive is stopped; bytes already
 * received still go to route_body(); then fn(c, 0) runs with the socket the
 * route's (c->fd, a direct descriptor) and http_content_length() bytes left
 * in it. If the body ends in what was already received, fn never runs and
 * route_body_end() comes as usual. While the route reads, CONNECTION_TIMEOUT
 * counts from its last conn_io_progress(); past it the connection is closed.
 * A NULL fn takes the request back (the connection receives as before).
 */
void conn_detach_body(struct conn *c, conn_op_fn fn);

/*
 * Wait until the socket is ready for events (POLLIN, POLLOUT): fn(c, mask or
 * -errno) runs then, as for conn_op_sqe(). For routes that move bytes on the
 * socket themselves.
 */
void conn_poll(struct conn *c, unsigned events, conn_op_fn fn);

/* The route moved n bytes on the socket (reads count as received bytes when in is true). */
void conn_io_progress(struct conn *c, uint64_t n, bool in);

/*
 * The route read the body's last byte: the message is complete, the
 * connection receives again, and route_body_end() follows (from this call).
 */
void conn_body_read(struct conn *c);

/*
 * The route sends (splices) a response body itself after conn_on_sent():
 * stalls count against CONNECTION_TIMEOUT from its last conn_io_progress().
 * on is false once it is done.
 */
void conn_route_sends(struct conn *c, bool on);

/* A route op CQE (ring dispatch). */
void conn_on_op(struct ring *r, uint32_t idx, uint32_t gen, int res);

#endif /* ENGINE_CONN_H */

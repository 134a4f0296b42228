/*
 * conn: client connections of one worker. A connection is a slot in the
 * worker's pool, addressed in user_data by (index, generation). It receives
 * through the worker's multishot recv into provided buffers, queues the
 * buffers it has not consumed yet, feeds them to proto/http, hands events to
 * the handler its pool was given, and sends what the handler queues on its
 * output chain. It knows no route, no storage and no database.
 *
 * Lifetime: created at accept, closed by conn_close() from any state. Close
 * cancels every op of the connection and frees the slot only after the last
 * CQE came back, at the end of the loop turn.
 */
#ifndef ENGINE_CORE_CONN_H
#define ENGINE_CORE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/core/tmr.h"
#include "proto/http.h"

struct ring;
struct conn;
struct io_uring_sqe;

/* Completion of a handler's own op (a file read...), with the CQE's result. */
typedef void (*conn_op_fn)(struct conn *c, int res);

/* What a request's handler did with an event of the request. */
enum conn_verdict {
    CONN_ANSWERED,  /* the response is queued (or nothing is left to do with these bytes) */
    CONN_SKIP_BODY, /* takes no body: skip it, then call head() again with skipped true */
    CONN_PENDING,   /* answers (or finishes with the bytes) later, then calls conn_resume() */
    CONN_READ_BODY, /* not answered yet: the body goes to the callbacks of conn_take_body() */
};

/*
 * The request handler, given to the pool at start-up: conn knows requests
 * only through it. head() runs when a request head is complete (skipped
 * false), or when the body of a request that takes none was skipped to its
 * end or to CONN_DISCARD_MAX (skipped true: it must answer now). fail()
 * answers a connection-level failure: -EBADMSG (malformed, 400), -EMSGSIZE
 * (head too large, 431), -ETIMEDOUT (too slow, 408), -ENOTSUP (501), -EBUSY
 * (connection cap, 503), h being the head if one was parsed; conn closes
 * the connection after that answer.
 */
struct conn_handler {
    enum conn_verdict (*head)(struct conn *c, const struct http_head *h,
                              const struct http_parser *p, bool skipped);
    void (*fail)(struct conn *c, int err, const struct http_head *h);
};

/*
 * A request's body, span by span: the bytes stay valid until the handler
 * calls conn_resume() after CONN_PENDING; CONN_ANSWERED: done with them.
 */
typedef enum conn_verdict (*conn_body_fn)(struct conn *c, struct http_span body);

/* The body ended (message complete); CONN_PENDING if the answer comes later. */
typedef enum conn_verdict (*conn_end_fn)(struct conn *c);
#define CONN_CHUNK 1024        /* slots allocated at a time */
#define CONN_OUT_HIGH 262144   /* output bytes queued before input is paused */
#define CONN_DISCARD_MAX 65536 /* body bytes skipped for a handler that takes none */
#define CONN_LINGER_MS 2000    /* longest lingering close */
#define CONN_INPUT_MAX 8       /* queued receive buffers before recv is paused */
#define CONN_OBUF_SIZE 16384   /* bytes of a standard output buffer */
#define CONN_OUT_LOW 65536     /* queued output at which a waiting producer is called */

/* A worker's connection slots, head buffers and output buffers (opaque). */
struct conn_pool;

/*
 * The pool of a worker: its ops are registered as op kinds of r, its
 * end-of-turn work as a turn hook. handler answers every request; ctx is
 * what conn_ctx() gives the handler back.
 */
struct conn_pool *conn_pool_new(struct ring *r, const struct conn_handler *handler, void *ctx);
void conn_pool_free(struct conn_pool *p);

/* Connections open (closing ones included). */
uint32_t conn_pool_open(const struct conn_pool *p);

/* A new socket from accept, as a direct descriptor (ring thread). Takes ownership of fd. */
void conn_accept(struct conn_pool *p, int fd);

/* Shutdown began: close idle connections, let the others finish their request. */
void conn_drain(struct conn_pool *p);

/* Close every connection now (shutdown timeout). */
void conn_close_all(struct conn_pool *p);

/* Close a connection (any state); logs nothing, the caller decides. */
void conn_close(struct conn *c);

/* ---- for handlers ---- */

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

/* The owning worker's ring. */
struct ring *conn_ring(const struct conn *c);

/* The owning pool. */
struct conn_pool *conn_pool(const struct conn *c);

/* What the pool's creator gave for the handler (conn_pool_new's ctx). */
void *conn_ctx(const struct conn *c);

/* The socket, a direct descriptor: for handlers that move bytes on it themselves. */
int conn_fd(const struct conn *c);

/* The request parser of the request in progress. */
const struct http_parser *conn_parser(const struct conn *c);

/* The handler's state of the request in progress (conn_set_rdata), or NULL. */
void *conn_rdata(const struct conn *c);

/* True while the handler reads the body from the socket itself (conn_detach_body). */
bool conn_body_detached(const struct conn *c);

/* Mark the current request answered with status (for metrics and the access log). */
void conn_answered(struct conn *c, int status);

/*
 * A reference that survives the connection: a handler that answers later keeps
 * this instead of a pointer, and conn_deref() gives the connection back, or
 * NULL if it closed (or stopped waiting) meanwhile.
 */
uint64_t conn_ref(const struct conn *c);
struct conn *conn_deref(struct conn_pool *p, uint64_t ref);

/*
 * An op of another subsystem (a storage sink's write of held body bytes, or
 * its splice from the socket) reads what the connection owns: the connection
 * is not freed, even when closing, until the op is over and conn_unpin() says
 * so (nginx's request count). conn_unpin() gives the connection back if it is
 * open and not closing, else NULL (and a closing one may be freed then).
 */
void conn_pin(struct conn *c);
struct conn *conn_unpin(struct conn_pool *p, uint64_t ref);

/* A handler that returned CONN_PENDING is done (answered, or done with the bytes): go on. */
void conn_resume(struct conn *c);

/* The current request's head (valid until the request completes). */
const struct http_head *conn_head(const struct conn *c);

/* ---- handlers that take a body ---- */

/*
 * From now on the current request's body goes to body(), and its end to
 * end(), instead of being skipped (nginx's read_client_request_body with its
 * post handler). Call before answering; for this request only.
 */
void conn_take_body(struct conn *c, conn_body_fn body, conn_end_fn end);

/*
 * A submission entry for a handler's own op on this connection (e.g. reading a
 * body span to a file); fn(c, res) runs at its completion, or not at all if
 * the connection closed meanwhile (then the reap hook, if any, sees res and
 * rdata_free cleans up). One at a time.
 */
struct io_uring_sqe *conn_op_sqe(struct conn *c, conn_op_fn fn);

/*
 * Per-request handler state: conn calls free_fn(rdata) if the connection
 * closes while it is set. A handler that finishes clears it (NULL, NULL).
 */
void conn_set_rdata(struct conn *c, void *rdata, void (*free_fn)(void *rdata));

/*
 * For rdata set last (conn_set_rdata clears it): when the connection is closing
 * and the handler's op completes, conn calls reap(rdata, fn, res), fn being the
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

/* Send what is queued now (handlers that fill the output outside a request event). */
void conn_flush(struct conn *c);

/* Like conn_on_drain(), but once every queued byte has been sent. */
void conn_on_sent(struct conn *c, conn_op_fn fn);

/*
 * The connection, by conn_ref(), if it is open and not closing (whether or
 * not it waits): for pools that call queued connections back.
 */
struct conn *conn_find(struct conn_pool *p, uint64_t ref);

/* ---- handlers that move bytes on the socket themselves ---- */

/*
 * The handler reads the rest of the current Content-Length body from the
 * socket itself (splice, O_DIRECT). The receive is stopped; bytes already
 * received still go to the body callback; then fn(c, 0) runs with the socket
 * the handler's (conn_fd(), a direct descriptor) and http_content_length() left
 * in it. If the body ends in what was already received, fn never runs and
 * the end callback comes as usual. While the handler reads, CONNECTION_TIMEOUT
 * counts from its last conn_io_progress(); past it the connection is closed.
 * A NULL fn takes the request back (the connection receives as before).
 */
void conn_detach_body(struct conn *c, conn_op_fn fn);

/*
 * Wait until the socket is ready for events (POLLIN, POLLOUT): fn(c, mask or
 * -errno) runs then, as for conn_op_sqe(). For handlers that move bytes on the
 * socket themselves.
 */
void conn_poll(struct conn *c, unsigned events, conn_op_fn fn);

/* The handler moved n bytes on the socket (reads count as received bytes when in is true). */
void conn_io_progress(struct conn *c, uint64_t n, bool in);

/*
 * The handler read the body's last byte: the message is complete, the
 * connection receives again, and the end callback follows (from this call).
 */
void conn_body_read(struct conn *c);

/*
 * The handler sends (splices) a response body itself after conn_on_sent():
 * stalls count against CONNECTION_TIMEOUT from its last conn_io_progress().
 * on is false once it is done.
 */
void conn_route_sends(struct conn *c, bool on);

#endif /* ENGINE_CORE_CONN_H */

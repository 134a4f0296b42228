/*
 * ringup-load: an io_uring HTTP/1.1 upload load generator for ringup.
 *
 *   ringup-load [options] SCENARIO URL     (ringup-load --help for the options)
 *
 * One thread per core, each with its own ring and its own share of the
 * connections; past PROC_CONNS_MAX connections per process (the descriptor
 * limit), worker processes are forked, each with its threads. Every thread
 * writes its counters and latency histogram into one slot of a shared
 * anonymous mapping; the parent reads the counters once a second for the
 * progress line and merges every slot at the end.
 *
 * A connection has at most one op in flight (connect, sendmsg, recv or a
 * timeout), so user_data names the op kind, the connection's generation
 * and its slot, and a connection is never closed with an op in flight.
 * Bodies are sent in slices of one shared read-only pattern buffer.
 *
 * Traffic goes only to 127.0.0.0/8; a run stops by itself (duration, request
 * count, or per-request timeouts).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "bench/load/hist.h"
#include "bench/load/req.h"

#define PATTERN_SIZE (1u << 20) /* bytes of the shared body pattern */
#define PROC_CONNS_MAX 15000    /* connections per process, at most */
#define FD_RESERVE 256          /* descriptors kept for rings, pipes, stdio */
#define SRC_ADDRS_MAX 250       /* source addresses 127.0.0.1 .. 127.0.0.N */
#define SRC_CONNS 2000          /* one more source address per this many connections */
#define CONNECTS_MAX 512        /* connects in flight per thread */
#define TUS_CHUNK (1u << 20)    /* bytes per tus PATCH */
#define HEAD_MAX 1024           /* bytes of a request head (and multipart preamble) */
#define TOKEN_MAX 512           /* longest accepted token */
#define PRIME_MAX 8             /* files uploaded before a get run */
#define SCAN_NS 100000000ull    /* timeout scan interval */
#define BACKOFF_NS 100000000ull /* wait after a failed connect */
#define TRICKLE_PIECES_PER_S 10 /* a trickling connection sends this often */
#define RBUF_BUDGET (32u << 20) /* receive buffer bytes per thread */
#define RBUF_MIN 4096
#define RBUF_MAX 65536
#define STATUS_MAX 600
#define NS_PER_S 1000000000ull
#define THREADS_MAX 256
#define CONNS_MAX 1000000

enum scenario { SC_PUT, SC_MULTIPART, SC_TUS, SC_GET, SC_IDLE };

static const char *const scenario_names[] = {"put", "multipart", "tus", "get", "idle"};

enum err_kind { ERR_CONNECT, ERR_SEND, ERR_RECV, ERR_TIMEOUT, ERR_CLOSED, ERR__N };

static const char *const err_names[ERR__N] = {"connect", "send", "recv", "timeout", "closed"};

/* Op kinds in user_data. */
enum op_kind { OP_CONNECT = 1, OP_SEND, OP_RECV, OP_SLEEP, OP_HOLD, OP_CANCEL };

/* What a connection is doing. */
enum conn_phase {
    PH_IDLE,    /* no op: parked, or between steps */
    PH_WAITQ,   /* waiting for a connect slot (CONNECTS_MAX) */
    PH_CONNECT, /* connect in flight */
    PH_SEND,    /* sendmsg in flight */
    PH_RECV,    /* recv of a response in flight */
    PH_SLEEP,   /* timeout in flight: trickle pause or connect backoff */
    PH_HOLD,    /* idle scenario: recv in flight that only a close or stray bytes complete */
    PH_DEAD,    /* idle scenario: failed, not retried */
};

/* The message a connection sends next. */
enum conn_job {
    JOB_NEW,    /* a new request of the scenario (when one may start) */
    JOB_MAIN,   /* the scenario's request: PUT, multipart POST, GET, tus creation, healthz */
    JOB_PATCH,  /* tus: the next PATCH of the upload */
    JOB_VERIFY, /* GET /v1/files/{id} after a 201 */
};

/* Command-line settings; read-only once the run starts. */
struct opts {
    enum scenario sc;       /* what to send */
    struct req_url url;     /* where */
    unsigned conns;         /* connections in all */
    unsigned threads;       /* threads in all (over every process) */
    unsigned procs;         /* processes */
    double duration;        /* seconds (when requests == 0) */
    uint64_t requests;      /* -n: stop after this many; 0 = by duration */
    uint64_t size;          /* body bytes (no --sizes) */
    struct req_sizes sizes; /* --sizes, n == 0 when unused */
    double rate;            /* open loop: requests/s in all; 0 = closed loop */
    bool no_keepalive;      /* a connection per request */
    const char *token;      /* bearer token or NULL */
    uint64_t trickle;       /* bytes/s per connection, 0 = full speed */
    double verify;          /* fraction of 201s checked */
    uint64_t timeout_ns;    /* per-request timeout */
    bool json;              /* JSON on stdout */
    bool quiet;             /* no progress line */
    unsigned nsrc;          /* source addresses to rotate over */
};

/*
 * One thread's results. Lives in the shared mapping; written only by its
 * thread (counters with relaxed atomic stores, so the parent's progress
 * reads are well defined), read in full by the parent after `done`.
 */
struct stats {
    uint64_t requests;           /* requests answered (a tus upload counts once) */
    uint64_t ok;                 /* ... with every expected status */
    uint64_t bytes_sent;         /* bytes on the wire, heads included */
    uint64_t bytes_received;     /* bytes on the wire, heads included */
    uint64_t payload;            /* file bytes uploaded or downloaded (for MB/s) */
    uint64_t verified;           /* verify GETs that matched */
    uint64_t verify_failed;      /* verify GETs that did not (status or size) */
    uint64_t open_at_end;        /* idle: connections still held at the end */
    uint64_t end_ns;             /* when the thread finished (CLOCK_MONOTONIC) */
    uint64_t errors[ERR__N];     /* socket errors by kind */
    uint64_t status[STATUS_MAX]; /* responses by status code */
    struct hist lat;             /* latency, microseconds */
    int done;                    /* set (release) when the thread finished */
};

/* The shared mapping: made before any fork, so every process sees it. */
struct shared {
    uint64_t start_ns;   /* run start (CLOCK_MONOTONIC is system-wide) */
    uint64_t issued;     /* closed loop with -n: requests handed out */
    int stop;            /* set by SIGINT/SIGTERM */
    struct stats slot[]; /* one per thread */
};

/* One connection; owned by its worker, never freed while busy. */
struct conn {
    int fd;                      /* socket, -1 when none */
    uint32_t idx;                /* slot in the worker's array */
    uint16_t gen;                /* bumped at each close: stale CQEs are dropped */
    uint8_t phase;               /* enum conn_phase */
    uint8_t job;                 /* enum conn_job: the message being (or to be) sent */
    bool busy;                   /* an op is in flight */
    bool cancelled;              /* a cancel was sent for the op in flight (timeout) */
    uint64_t t_sched;            /* the request's scheduled start (latency base), ns */
    uint64_t deadline;           /* the message must be answered by then, ns; 0 = none */
    uint64_t size;               /* file bytes of the request */
    uint64_t tus_off;            /* tus: bytes acknowledged */
    uint64_t body_len;           /* body bytes of the message being sent */
    uint64_t body_off;           /* ... already sent */
    uint64_t body_pat;           /* offset in the pattern where the body starts */
    uint32_t head_len;           /* bytes in head */
    uint32_t head_off;           /* ... already sent */
    uint32_t tail_off;           /* epilogue bytes already sent (multipart) */
    uint32_t tail_len;           /* epilogue bytes to send (multipart), else 0 */
    uint64_t pieces;             /* trickle: send ops so far */
    struct msghdr msg;           /* sendmsg header; the kernel reads it after submit */
    struct iovec iov[3];         /* head, body slice, epilogue */
    struct __kernel_timespec ts; /* timeout op's duration */
    char *rbuf;                  /* receive buffer (rcap bytes of the worker's slab) */
    char head[HEAD_MAX];         /* request head (+ multipart preamble) */
    char path[REQ_LOC_MAX];      /* tus Location path, or the verify GET's path */
    struct req_resp resp;        /* response parser */
};

/* One thread: a ring and its share of the connections. */
struct worker {
    unsigned gidx;          /* global thread index (slot in the shared mapping) */
    unsigned nconns;        /* connections */
    unsigned first_conn;    /* global index of the first one (source address rotation) */
    struct io_uring ring;   /* this thread's ring */
    struct conn *conns;     /* nconns connections */
    char *rbufs;            /* receive buffer slab */
    uint32_t rcap;          /* bytes per receive buffer */
    struct stats *st;       /* this thread's slot */
    struct sockaddr_in dst; /* the server; read by connect ops */
    uint64_t rng;           /* xorshift state */
    uint64_t seq;           /* file name counter */
    unsigned active;        /* connections with an op in flight */
    unsigned connecting;    /* connects in flight */
    uint32_t *waitq;        /* connections waiting for a connect slot (FIFO ring) */
    unsigned wq_head;       /* next to pop */
    unsigned wq_len;        /* entries */
    uint32_t *parked;       /* open loop: connections waiting for an arrival (stack) */
    unsigned nparked;       /* entries */
    uint64_t next_k;        /* open loop: this thread's next arrival number */
    uint64_t deadline;      /* duration mode: no new request after this, ns */
    bool stopping;          /* no new requests; finish those in flight */
    bool closing;           /* teardown: CQEs only release connections */
    unsigned idle_pending;  /* idle: connections not yet holding or dead */
    uint64_t hold_until;    /* idle: end of the hold, ns; 0 until every connection settled */
    char boundary[48];      /* multipart boundary */
    char epilogue[64];      /* multipart epilogue */
    uint32_t epi_len;       /* bytes in epilogue */
    char pid_tag[16];       /* file name prefix, unique per run */
    pthread_t tid;          /* the thread */
};

static struct opts O;
static struct shared *S;
static char *pattern; /* PATTERN_SIZE read-only bytes shared by every connection */
static char prime_ids[PRIME_MAX][64];
static unsigned nprime;
static pid_t run_pid; /* the parent's pid: names files of this run */

/* ---- small helpers ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(struct worker *w)
{
    uint64_t x = w->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w->rng = x;
    return x;
}

/* Single-writer counter add, readable by the progress thread. */
static inline void st_add(uint64_t *field, uint64_t v)
{
    __atomic_store_n(field, *field + v, __ATOMIC_RELAXED);
}

static inline uint64_t st_load(const uint64_t *field)
{
    return __atomic_load_n(field, __ATOMIC_RELAXED);
}

static inline uint64_t ud(enum op_kind kind, uint16_t gen, uint32_t idx)
{
    return (uint64_t)kind << 56 | (uint64_t)gen << 32 | idx;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe;

    while ((sqe = io_uring_get_sqe(&w->ring)) == NULL)
        io_uring_submit(&w->ring);
    return sqe;
}

static void arm(struct worker *w, struct conn *c, struct io_uring_sqe *sqe, enum op_kind kind)
{
    io_uring_sqe_set_data64(sqe, ud(kind, c->gen, c->idx));
    c->busy = true;
    c->cancelled = false;
    w->active++;
}

static void count_error(struct worker *w, enum err_kind k)
{
    st_add(&w->st->errors[k], 1);
}

static void count_status(struct worker *w, int status)
{
    if (status > 0 && status < STATUS_MAX)
        st_add(&w->st->status[status], 1);
}

/* ---- connection steps ---- */

static void conn_next(struct worker *w, struct conn *c);
static void start_send(struct worker *w, struct conn *c);

static void close_socket(struct worker *w, struct conn *c)
{
    (void)w;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->gen++;
}

/* Wait BACKOFF_NS, then start over (after a failed connect). */
static void sleep_backoff(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe;

    c->phase = PH_SLEEP;
    c->ts.tv_sec = 0;
    c->ts.tv_nsec = (long long)BACKOFF_NS;
    sqe = get_sqe(w);
    io_uring_prep_timeout(sqe, &c->ts, 0, 0);
    arm(w, c, sqe, OP_SLEEP);
}

/* Connect now (a slot is free). */
static void do_connect(struct worker *w, struct conn *c)
{
    struct sockaddr_in src;
    struct io_uring_sqe *sqe;
    int one = 1;
    int fd;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto out_fail;
    memset(&src, 0, sizeof(src));
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001u + (w->first_conn + c->idx) % O.nsrc);
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
        close(fd);
        goto out_fail;
    }
    c->fd = fd;
    c->phase = PH_CONNECT;
    w->connecting++;
    sqe = get_sqe(w);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&w->dst, sizeof(w->dst));
    arm(w, c, sqe, OP_CONNECT);
    return;

out_fail:
    /* EMFILE and the like: count it and retry after the backoff, like a refused connect. */
    count_error(w, ERR_CONNECT);
    c->job = JOB_NEW;
    if (O.sc == SC_IDLE) {
        c->phase = PH_DEAD;
        w->idle_pending--;
        return;
    }
    sleep_backoff(w, c);
}

/* Connect, or queue for a connect slot. */
static void open_conn(struct worker *w, struct conn *c)
{
    if (w->connecting >= CONNECTS_MAX) {
        w->waitq[(w->wq_head + w->wq_len) % w->nconns] = c->idx;
        w->wq_len++;
        c->phase = PH_WAITQ;
        return;
    }
    do_connect(w, c);
}

/* A connect finished (either way): let a queued connection have the slot. */
static void connect_slot_free(struct worker *w, uint64_t now)
{
    w->connecting--;
    if (w->closing)
        return;
    while (w->wq_len > 0 && w->connecting < CONNECTS_MAX) {
        struct conn *c = &w->conns[w->waitq[w->wq_head]];

        w->wq_head = (w->wq_head + 1) % w->nconns;
        w->wq_len--;
        if (c->deadline && now > c->deadline) {
            count_error(w, ERR_TIMEOUT);
            c->job = JOB_NEW;
            c->phase = PH_IDLE;
            if (O.sc == SC_IDLE) {
                c->phase = PH_DEAD;
                w->idle_pending--;
            } else {
                conn_next(w, c);
            }
            continue;
        }
        do_connect(w, c);
    }
}

/*
 * A failure ends the message: count it, drop the socket, and go on (idle:
 * the connection stays dead; otherwise a new request, after a backoff for a
 * failed connect).
 */
static void conn_fail(struct worker *w, struct conn *c, enum err_kind k)
{
    count_error(w, k);
    close_socket(w, c);
    c->job = JOB_NEW;
    c->phase = PH_IDLE;
    if (O.sc == SC_IDLE) {
        /* Only connections not yet holding fail here; a held one ends in OP_HOLD. */
        w->idle_pending--;
        c->phase = PH_DEAD;
        return;
    }
    if (k == ERR_CONNECT && !w->stopping) {
        sleep_backoff(w, c);
        return;
    }
    conn_next(w, c);
}

/* Set the message's path from a Location value (absolute URLs lose scheme and host). */
static int set_path(struct conn *c, const char *loc)
{
    const char *p = loc;

    if (strncmp(p, "http://", 7) == 0 || strncmp(p, "https://", 8) == 0) {
        p = strchr(p + (p[4] == 's' ? 8 : 7), '/');
        if (p == NULL)
            return -EINVAL;
    }
    if (p[0] != '/' || strlen(p) >= sizeof(c->path))
        return -EINVAL;
    memcpy(c->path, p, strlen(p) + 1);
    return 0;
}

/* Build the head (and body plan) of the connection's job. 0 or -EMSGSIZE. */
static int build(struct worker *w, struct conn *c)
{
    struct req_common rc = {O.url.host, O.token, O.no_keepalive};
    char name[80];
    size_t head_only;
    int n = -EINVAL;

    c->body_len = 0;
    c->body_off = 0;
    c->body_pat = 0;
    c->tail_len = 0;
    c->tail_off = 0;
    c->head_off = 0;
    c->pieces = 0;
    switch ((enum conn_job)c->job) {
    case JOB_MAIN:
        switch (O.sc) {
        case SC_PUT:
            snprintf(name, sizeof(name), "%s-%u-%" PRIu64 ".bin", w->pid_tag, w->gidx, ++w->seq);
            n = req_put(c->head, sizeof(c->head), &rc, name, c->size);
            c->body_len = c->size;
            break;
        case SC_MULTIPART:
            snprintf(name, sizeof(name), "%s-%u-%" PRIu64 ".bin", w->pid_tag, w->gidx, ++w->seq);
            n = req_multipart(c->head, sizeof(c->head), &rc, w->boundary, name, c->size,
                              &head_only);
            c->body_len = c->size;
            c->tail_len = w->epi_len;
            break;
        case SC_TUS:
            n = req_tus_create(c->head, sizeof(c->head), &rc, c->size);
            break;
        case SC_GET:
            n = req_get(c->head, sizeof(c->head), &rc, c->path);
            break;
        case SC_IDLE:
            rc.close = false;
            n = req_get(c->head, sizeof(c->head), &rc, "/healthz");
            break;
        }
        break;
    case JOB_PATCH:
        c->body_len = c->size - c->tus_off < TUS_CHUNK ? c->size - c->tus_off : TUS_CHUNK;
        c->body_pat = c->tus_off;
        n = req_tus_patch(c->head, sizeof(c->head), &rc, c->path, c->tus_off, c->body_len);
        break;
    case JOB_VERIFY:
        n = req_get(c->head, sizeof(c->head), &rc, c->path);
        break;
    case JOB_NEW:
        break;
    }
    if (n < 0)
        return n;
    c->head_len = (uint32_t)n;
    return 0;
}

/* Send the connection's job: on its socket, or after a connect. */
static void start_job(struct worker *w, struct conn *c, uint64_t now)
{
    if (build(w, c) < 0) {
        /* Cannot happen with the limits checked at start; fail loudly rather than loop. */
        fprintf(stderr, "ringup-load: request head too long\n");
        abort();
    }
    c->deadline = now + O.timeout_ns;
    req_resp_init(&c->resp);
    if (c->fd < 0)
        open_conn(w, c);
    else
        start_send(w, c);
}

/* A new request of the scenario, scheduled at sched. */
static void start_request(struct worker *w, struct conn *c, uint64_t sched, uint64_t now)
{
    c->job = JOB_MAIN;
    c->t_sched = sched;
    c->tus_off = 0;
    c->size = O.sizes.n ? req_pick_size(&O.sizes, rnd(w)) : O.size;
    if (O.sc == SC_GET && nprime > 0)
        snprintf(c->path, sizeof(c->path), "/v1/files/%s/content",
                 prime_ids[(w->gidx + c->idx) % nprime]);
    start_job(w, c, now);
}

/* Open loop: the scheduled time of this thread's arrival k. */
static uint64_t arrival_ns(const struct worker *w, uint64_t k)
{
    double idx = (double)w->gidx + (double)k * (double)O.threads;

    return S->start_ns + (uint64_t)(idx * 1e9 / O.rate);
}

/* Open loop: may arrival k start at all (count and duration)? */
static bool arrival_allowed(const struct worker *w, uint64_t k)
{
    if (O.requests)
        return (uint64_t)w->gidx + k * O.threads < O.requests;
    return arrival_ns(w, k) < w->deadline;
}

static void park(struct worker *w, struct conn *c)
{
    c->phase = PH_IDLE;
    c->job = JOB_NEW;
    if (O.rate > 0 && !w->stopping)
        w->parked[w->nparked++] = c->idx;
}

/* The connection is free: continue its request, or start a new one when allowed. */
static void conn_next(struct worker *w, struct conn *c)
{
    uint64_t now = now_ns();

    c->phase = PH_IDLE;
    if (c->job == JOB_PATCH || c->job == JOB_VERIFY) {
        start_job(w, c, now);
        return;
    }
    c->job = JOB_NEW;
    if (w->stopping || __atomic_load_n(&S->stop, __ATOMIC_RELAXED)) {
        park(w, c);
        return;
    }
    if (O.rate > 0) {
        if (!arrival_allowed(w, w->next_k)) {
            w->stopping = true;
            park(w, c);
            return;
        }
        if (arrival_ns(w, w->next_k) > now) {
            park(w, c);
            return;
        }
        start_request(w, c, arrival_ns(w, w->next_k++), now);
        return;
    }
    if (O.requests) {
        if (__atomic_fetch_add(&S->issued, 1, __ATOMIC_RELAXED) >= O.requests) {
            w->stopping = true;
            park(w, c);
            return;
        }
    } else if (now >= w->deadline) {
        w->stopping = true;
        park(w, c);
        return;
    }
    start_request(w, c, now, now);
}

/* Trickle: bytes per send op. */
static uint64_t trickle_piece(void)
{
    uint64_t p = O.trickle / TRICKLE_PIECES_PER_S;

    return p == 0 ? 1 : p;
}

/*
 * Send what is left of the message: head, body slice, epilogue, in that
 * order, at most one trickle piece. The epilogue joins only an op that ends
 * the body, and the body only one that ends the head.
 */
static void start_send(struct worker *w, struct conn *c)
{
    uint64_t budget = O.trickle ? trickle_piece() : UINT64_MAX;
    uint64_t pos = (c->body_pat + c->body_off) % PATTERN_SIZE;
    uint64_t hl = c->head_len - c->head_off;
    uint64_t bl = 0;
    uint64_t tl = 0;
    struct io_uring_sqe *sqe;
    unsigned n = 0;

    if (hl > budget)
        hl = budget;
    budget -= hl;
    if (c->head_off + hl == c->head_len) {
        bl = c->body_len - c->body_off;
        if (bl > PATTERN_SIZE - pos)
            bl = PATTERN_SIZE - pos;
        if (bl > budget)
            bl = budget;
        budget -= bl;
        if (c->body_off + bl == c->body_len) {
            tl = c->tail_len - c->tail_off;
            if (tl > budget)
                tl = budget;
        }
    }
    if (hl > 0) {
        c->iov[n].iov_base = c->head + c->head_off;
        c->iov[n++].iov_len = hl;
    }
    if (bl > 0) {
        c->iov[n].iov_base = pattern + pos;
        c->iov[n++].iov_len = bl;
    }
    if (tl > 0) {
        c->iov[n].iov_base = w->epilogue + c->tail_off;
        c->iov[n++].iov_len = tl;
    }
    memset(&c->msg, 0, sizeof(c->msg));
    c->msg.msg_iov = c->iov;
    c->msg.msg_iovlen = n;
    c->phase = PH_SEND;
    sqe = get_sqe(w);
    io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
    arm(w, c, sqe, OP_SEND);
}

static void arm_recv(struct worker *w, struct conn *c, enum op_kind kind)
{
    struct io_uring_sqe *sqe = get_sqe(w);

    c->phase = kind == OP_HOLD ? PH_HOLD : PH_RECV;
    io_uring_prep_recv(sqe, c->fd, c->rbuf, w->rcap, 0);
    arm(w, c, sqe, kind);
}

/* Advance the send offsets by n bytes, in the order they were queued. */
static void advance(struct conn *c, uint64_t n)
{
    uint64_t l = c->head_len - c->head_off;

    if (l > n)
        l = n;
    c->head_off += (uint32_t)l;
    n -= l;
    l = c->body_len - c->body_off;
    if (l > n)
        l = n;
    c->body_off += l;
    n -= l;
    c->tail_off += (uint32_t)n;
}

static bool send_done(const struct conn *c)
{
    return c->head_off == c->head_len && c->body_off == c->body_len && c->tail_off == c->tail_len;
}

/* Record the end of a request: latency from its scheduled start. */
static void finish_request(struct worker *w, struct conn *c, bool ok, uint64_t now,
                           uint64_t payload)
{
    hist_record(&w->st->lat, (now - c->t_sched) / 1000);
    st_add(&w->st->requests, 1);
    if (ok)
        st_add(&w->st->ok, 1);
    st_add(&w->st->payload, payload);
    c->job = JOB_NEW;
}

/* The whole response of the connection's job is in c->resp. */
static void on_response(struct worker *w, struct conn *c, uint64_t now)
{
    struct req_resp *r = &c->resp;
    int status = r->status;
    char id[64];
    uint64_t size;

    switch ((enum conn_job)c->job) {
    case JOB_MAIN:
        count_status(w, status);
        switch (O.sc) {
        case SC_PUT:
        case SC_MULTIPART:
            finish_request(w, c, status == 201, now, c->size);
            if (status == 201 && O.verify > 0 && !__atomic_load_n(&S->stop, __ATOMIC_RELAXED) &&
                (double)(rnd(w) >> 11) * 0x1.0p-53 < O.verify) {
                if (req_json_str(r->keep, r->keep_len, "id", id, sizeof(id)) > 0 &&
                    snprintf(c->path, sizeof(c->path), "/v1/files/%s", id) < (int)sizeof(c->path)) {
                    c->job = JOB_VERIFY;
                } else {
                    st_add(&w->st->verify_failed, 1);
                }
            }
            break;
        case SC_GET:
            finish_request(w, c, status == 200, now, r->body_seen);
            break;
        case SC_TUS:
            if (status == 201 && r->loc_len > 0 && set_path(c, r->location) == 0) {
                if (c->size == 0) {
                    finish_request(w, c, true, now, 0);
                } else {
                    c->job = JOB_PATCH;
                    c->tus_off = 0;
                }
            } else {
                finish_request(w, c, false, now, 0);
            }
            break;
        case SC_IDLE:
            finish_request(w, c, status == 200, now, 0);
            break;
        }
        break;
    case JOB_PATCH:
        count_status(w, status);
        if (status == 204) {
            c->tus_off += c->body_len;
            if (c->tus_off >= c->size)
                finish_request(w, c, true, now, c->size);
        } else {
            finish_request(w, c, false, now, c->tus_off);
        }
        break;
    case JOB_VERIFY:
        if (status == 200 && req_json_u64(r->keep, r->keep_len, "size", &size) == 0 &&
            size == c->size)
            st_add(&w->st->verified, 1);
        else
            st_add(&w->st->verify_failed, 1);
        c->job = JOB_NEW;
        break;
    case JOB_NEW:
        break;
    }
    if (O.sc == SC_IDLE) {
        w->idle_pending--;
        if (r->close) {
            /* The server means to close: the connection cannot be held. */
            count_error(w, ERR_CLOSED);
            close_socket(w, c);
            c->phase = PH_DEAD;
            return;
        }
        c->deadline = 0;
        arm_recv(w, c, OP_HOLD);
        return;
    }
    if (r->close || O.no_keepalive)
        close_socket(w, c);
    conn_next(w, c);
}

/* A send failed with the peer gone: an early answer may be waiting. True if one was. */
static bool salvage_answer(struct worker *w, struct conn *c, uint64_t now)
{
    ssize_t n = recv(c->fd, c->rbuf, w->rcap, MSG_DONTWAIT);
    int used;

    if (n <= 0)
        return false;
    st_add(&w->st->bytes_received, (uint64_t)n);
    used = req_resp_feed(&c->resp, c->rbuf, (size_t)n);
    if (used < 0 || !req_resp_done(&c->resp))
        return false;
    c->resp.close = true;
    on_response(w, c, now);
    return true;
}

/* ---- completions ---- */

static void on_cqe(struct worker *w, const struct io_uring_cqe *cqe, uint64_t now)
{
    uint64_t data = io_uring_cqe_get_data64(cqe);
    enum op_kind kind = (enum op_kind)(data >> 56);
    uint16_t gen = (uint16_t)(data >> 32);
    uint32_t idx = (uint32_t)data;
    struct conn *c;
    int res = cqe->res;
    int used;

    if (data == LIBURING_UDATA_TIMEOUT || kind == OP_CANCEL || idx >= w->nconns)
        return;
    c = &w->conns[idx];
    if (gen != c->gen || !c->busy)
        return; /* stale: the connection moved on */
    c->busy = false;
    w->active--;
    if (kind == OP_CONNECT)
        connect_slot_free(w, now);
    if (w->closing) {
        c->phase = PH_IDLE;
        return;
    }
    if (c->cancelled && kind != OP_HOLD && kind != OP_SLEEP) {
        conn_fail(w, c, ERR_TIMEOUT);
        return;
    }
    switch (kind) {
    case OP_CONNECT:
        if (res < 0) {
            conn_fail(w, c, ERR_CONNECT);
            return;
        }
        start_send(w, c);
        return;
    case OP_SEND:
        if (res < 0) {
            if ((res == -EPIPE || res == -ECONNRESET) && salvage_answer(w, c, now))
                return;
            conn_fail(w, c, ERR_SEND);
            return;
        }
        st_add(&w->st->bytes_sent, (uint64_t)res);
        advance(c, (uint64_t)res);
        c->pieces++;
        if (send_done(c)) {
            arm_recv(w, c, OP_RECV);
        } else if (O.trickle) {
            struct io_uring_sqe *sqe = get_sqe(w);
            uint64_t ns = NS_PER_S * (uint64_t)res / O.trickle;

            c->phase = PH_SLEEP;
            c->ts.tv_sec = (long long)(ns / NS_PER_S);
            c->ts.tv_nsec = (long long)(ns % NS_PER_S);
            io_uring_prep_timeout(sqe, &c->ts, 0, 0);
            arm(w, c, sqe, OP_SLEEP);
        } else {
            start_send(w, c);
        }
        return;
    case OP_SLEEP:
        if (c->fd >= 0 && c->job != JOB_NEW) {
            /* A trickle pause: go on sending unless the message ran out of time. */
            if (now > c->deadline) {
                conn_fail(w, c, ERR_TIMEOUT);
                return;
            }
            start_send(w, c);
            return;
        }
        conn_next(w, c); /* the backoff after a failed connect ended */
        return;
    case OP_RECV:
        if (res < 0) {
            conn_fail(w, c, ERR_RECV);
            return;
        }
        if (res == 0) {
            if (req_resp_eof(&c->resp) == 0 && c->resp.status != 0) {
                c->resp.close = true;
                on_response(w, c, now);
                return;
            }
            conn_fail(w, c, ERR_CLOSED);
            return;
        }
        st_add(&w->st->bytes_received, (uint64_t)res);
        used = req_resp_feed(&c->resp, c->rbuf, (size_t)res);
        if (used < 0) {
            conn_fail(w, c, ERR_RECV);
            return;
        }
        if (!req_resp_done(&c->resp)) {
            arm_recv(w, c, OP_RECV);
            return;
        }
        if (used < res) {
            /* Bytes after the answer to a request we did not pipeline: a broken stream. */
            count_error(w, ERR_RECV);
            c->resp.close = true;
        }
        on_response(w, c, now);
        return;
    case OP_HOLD:
        /* Any completion of a held connection ends it: a close, an error or stray bytes. */
        count_error(w, res == 0 ? ERR_CLOSED : ERR_RECV);
        close_socket(w, c);
        c->phase = PH_DEAD;
        return;
    case OP_CANCEL:
        return;
    }
}

/* Cancel the op of every connection past its deadline. */
static void scan_timeouts(struct worker *w, uint64_t now)
{
    unsigned i;

    for (i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        struct io_uring_sqe *sqe;
        enum op_kind kind;

        if (c->phase == PH_WAITQ && c->deadline && now > c->deadline) {
            /* Removed lazily: connect_slot_free() skips it when its turn comes. */
            continue;
        }
        if (!c->busy || c->cancelled || c->deadline == 0 || now <= c->deadline)
            continue;
        switch (c->phase) {
        case PH_CONNECT:
            kind = OP_CONNECT;
            break;
        case PH_SEND:
            kind = OP_SEND;
            break;
        case PH_RECV:
            kind = OP_RECV;
            break;
        default:
            continue; /* sleeps end by themselves and check the deadline */
        }
        sqe = get_sqe(w);
        io_uring_prep_cancel64(sqe, ud(kind, c->gen, c->idx), 0);
        io_uring_sqe_set_data64(sqe, ud(OP_CANCEL, 0, 0));
        c->cancelled = true;
    }
}

/* Start parked connections on the arrivals that are due (open loop). */
static void dispatch_arrivals(struct worker *w, uint64_t now)
{
    while (w->nparked > 0 && !w->stopping) {
        struct conn *c;

        if (!arrival_allowed(w, w->next_k)) {
            w->stopping = true;
            break;
        }
        if (arrival_ns(w, w->next_k) > now)
            break;
        c = &w->conns[w->parked[--w->nparked]];
        start_request(w, c, arrival_ns(w, w->next_k++), now);
    }
}

/* Teardown: end every op in flight (bounded), so no buffer is freed under the kernel. */
static void quiesce(struct worker *w)
{
    uint64_t until = now_ns() + 2 * NS_PER_S;
    unsigned i;

    w->closing = true;
    for (i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];

        if (!c->busy)
            continue;
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
        if (c->phase == PH_SLEEP || c->phase == PH_CONNECT) {
            struct io_uring_sqe *sqe = get_sqe(w);

            io_uring_prep_cancel64(
                sqe, ud(c->phase == PH_SLEEP ? OP_SLEEP : OP_CONNECT, c->gen, c->idx), 0);
            io_uring_sqe_set_data64(sqe, ud(OP_CANCEL, 0, 0));
        }
    }
    while (w->active > 0 && now_ns() < until) {
        struct __kernel_timespec ts = {0, 50000000};
        struct io_uring_cqe *cqe;
        unsigned head;
        unsigned seen = 0;
        int ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);

        if (ret < 0 && ret != -ETIME && ret != -EINTR)
            break;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            on_cqe(w, cqe, 0);
            seen++;
        }
        io_uring_cq_advance(&w->ring, seen);
    }
}

static int ring_init(struct worker *w)
{
    struct io_uring_params p;
    unsigned cq = 4096;
    int ret;

    while (cq < 2 * w->nconns && cq < 65536)
        cq <<= 1;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = cq;
    ret = io_uring_queue_init_params(2048, &w->ring, &p);
    if (ret == -EINVAL) {
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = cq;
        ret = io_uring_queue_init_params(2048, &w->ring, &p);
    }
    return ret;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t now;
    uint64_t next_scan;
    unsigned i;
    int ret;

    ret = ring_init(w);
    if (ret < 0) {
        fprintf(stderr, "ringup-load: io_uring_queue_init: %s\n", strerror(-ret));
        st_add(&w->st->errors[ERR_CONNECT], w->nconns);
        goto out_done;
    }
    now = now_ns();
    next_scan = now + SCAN_NS;
    w->idle_pending = O.sc == SC_IDLE ? w->nconns : 0;
    for (i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];

        if (O.sc == SC_IDLE) {
            start_request(w, c, now, now);
            continue;
        }
        conn_next(w, c);
    }
    for (;;) {
        struct __kernel_timespec ts;
        struct io_uring_cqe *cqe;
        uint64_t wake;
        unsigned head;
        unsigned seen = 0;

        now = now_ns();
        if (__atomic_load_n(&S->stop, __ATOMIC_RELAXED))
            w->stopping = true;
        if (O.sc == SC_IDLE) {
            if (w->idle_pending == 0 && w->hold_until == 0)
                w->hold_until = now + (uint64_t)(O.duration * 1e9);
            if (__atomic_load_n(&S->stop, __ATOMIC_RELAXED) ||
                (w->hold_until && now >= w->hold_until))
                break;
        } else {
            if (!O.requests && now >= w->deadline)
                w->stopping = true;
            if (O.rate > 0)
                dispatch_arrivals(w, now);
            if (w->stopping && w->active == 0 && w->wq_len == 0)
                break;
        }
        if (now >= next_scan) {
            scan_timeouts(w, now);
            next_scan = now + SCAN_NS;
        }
        wake = next_scan;
        if (O.rate > 0 && w->nparked > 0 && !w->stopping && arrival_ns(w, w->next_k) < wake)
            wake = arrival_ns(w, w->next_k);
        if (!O.requests && O.sc != SC_IDLE && !w->stopping && w->deadline < wake)
            wake = w->deadline;
        if (w->hold_until && w->hold_until < wake)
            wake = w->hold_until;
        wake = wake > now ? wake - now : 0;
        ts.tv_sec = (long long)(wake / NS_PER_S);
        ts.tv_nsec = (long long)(wake % NS_PER_S);
        ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
        if (ret < 0 && ret != -ETIME && ret != -EINTR) {
            fprintf(stderr, "ringup-load: io_uring wait: %s\n", strerror(-ret));
            break;
        }
        now = now_ns();
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            on_cqe(w, cqe, now);
            seen++;
        }
        io_uring_cq_advance(&w->ring, seen);
    }
    if (O.sc == SC_IDLE) {
        uint64_t open = 0;

        for (i = 0; i < w->nconns; i++)
            open += w->conns[i].phase == PH_HOLD && w->conns[i].busy;
        st_add(&w->st->open_at_end, open);
    }
    st_add(&w->st->end_ns, now_ns());
    quiesce(w);
    io_uring_queue_exit(&w->ring);
out_done:
    for (i = 0; i < w->nconns; i++)
        if (w->conns[i].fd >= 0)
            close(w->conns[i].fd);
    if (w->st->end_ns == 0)
        st_add(&w->st->end_ns, now_ns());
    __atomic_store_n(&w->st->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- per process ---- */

/* Connections of global thread g, and the global index of its first. */
static unsigned thread_conns(unsigned g, unsigned *first)
{
    unsigned base = O.conns / O.threads;
    unsigned extra = O.conns % O.threads;

    *first = g * base + (g < extra ? g : extra);
    return base + (g < extra ? 1 : 0);
}

/* Threads [t0, t1) of process p. */
static void proc_threads(unsigned p, unsigned *t0, unsigned *t1)
{
    unsigned base = O.threads / O.procs;
    unsigned extra = O.threads % O.procs;

    *t0 = p * base + (p < extra ? p : extra);
    *t1 = *t0 + base + (p < extra ? 1 : 0);
}

/* A process's threads, from proc_start() to proc_join(). */
struct proc {
    struct worker *ws; /* its workers */
    unsigned t0;       /* first global thread index */
    unsigned n;        /* workers */
    unsigned started;  /* threads running */
};

/* Set up and start process p's threads. 0 or -errno (the slots of threads that never ran are
 * marked done, so nobody waits for them). */
static int proc_start(struct proc *pr, unsigned p)
{
    unsigned t1;
    unsigned t;
    int ret = 0;

    proc_threads(p, &pr->t0, &t1);
    pr->n = t1 - pr->t0;
    pr->started = 0;
    pr->ws = calloc(pr->n, sizeof(*pr->ws));
    if (pr->ws == NULL)
        ret = -ENOMEM;
    for (t = 0; ret == 0 && t < pr->n; t++) {
        struct worker *w = &pr->ws[t];
        unsigned slots;
        unsigned i;

        w->gidx = pr->t0 + t;
        w->nconns = thread_conns(w->gidx, &w->first_conn);
        w->st = &S->slot[w->gidx];
        w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)w->gidx * 0xbf58476d1ce4e5b9ull) ^
                 (uint64_t)getpid() << 20 ^ now_ns();
        if (w->rng == 0)
            w->rng = 1;
        w->deadline = S->start_ns + (uint64_t)(O.duration * 1e9);
        w->dst.sin_family = AF_INET;
        w->dst.sin_port = htons(O.url.port);
        w->dst.sin_addr.s_addr = htonl(O.url.addr);
        snprintf(w->pid_tag, sizeof(w->pid_tag), "ld%d", (int)run_pid);
        snprintf(w->boundary, sizeof(w->boundary), "ringupload%016" PRIx64, rnd(w));
        w->epi_len =
            (uint32_t)req_multipart_epilogue(w->epilogue, sizeof(w->epilogue), w->boundary);
        w->rcap = RBUF_BUDGET / (w->nconns ? w->nconns : 1);
        w->rcap = w->rcap < RBUF_MIN ? RBUF_MIN : w->rcap > RBUF_MAX ? RBUF_MAX : w->rcap;
        w->rcap &= ~1023u;
        slots = w->nconns ? w->nconns : 1;
        w->conns = calloc(slots, sizeof(*w->conns));
        w->rbufs = malloc((size_t)w->rcap * slots);
        w->waitq = calloc(slots, sizeof(*w->waitq));
        w->parked = calloc(slots, sizeof(*w->parked));
        if (w->conns == NULL || w->rbufs == NULL || w->waitq == NULL || w->parked == NULL) {
            ret = -ENOMEM;
            break;
        }
        for (i = 0; i < w->nconns; i++) {
            w->conns[i].fd = -1;
            w->conns[i].idx = i;
            w->conns[i].rbuf = w->rbufs + (size_t)i * w->rcap;
        }
    }
    for (t = 0; ret == 0 && t < pr->n; t++) {
        ret = -pthread_create(&pr->ws[t].tid, NULL, worker_main, &pr->ws[t]);
        if (ret == 0)
            pr->started++;
    }
    if (ret < 0) {
        fprintf(stderr, "ringup-load: starting threads: %s\n", strerror(-ret));
        __atomic_store_n(&S->stop, 1, __ATOMIC_RELAXED);
        for (t = pr->t0 + pr->started; t < t1; t++)
            __atomic_store_n(&S->slot[t].done, 1, __ATOMIC_RELEASE);
    }
    return ret;
}

/* Wait for the threads of proc_start() and free the workers. */
static void proc_join(struct proc *pr)
{
    unsigned t;

    for (t = 0; t < pr->started; t++)
        pthread_join(pr->ws[t].tid, NULL);
    for (t = 0; pr->ws != NULL && t < pr->n; t++) {
        free(pr->ws[t].conns);
        free(pr->ws[t].rbufs);
        free(pr->ws[t].waitq);
        free(pr->ws[t].parked);
    }
    free(pr->ws);
    pr->ws = NULL;
}

/* ---- priming (get): a few uploads with a plain blocking socket ---- */

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* PUT one file of size bytes; its id into id. 0, -errno, or -EBADMSG for a non-201. */
static int prime_one(unsigned k, char *id, size_t cap, int *status)
{
    struct req_common rc = {O.url.host, O.token, true};
    struct timeval tv = {(time_t)(O.timeout_ns / NS_PER_S), 0};
    struct sockaddr_in sa;
    struct req_resp *r;
    char head[HEAD_MAX];
    char name[64];
    char buf[16384];
    uint64_t off;
    int fd;
    int n;
    int ret;

    r = malloc(sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    *status = 0;
    snprintf(name, sizeof(name), "ld%d-get-%u.bin", (int)getpid(), k);
    n = req_put(head, sizeof(head), &rc, name, O.size);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (n < 0 || fd < 0) {
        ret = n < 0 ? n : -errno;
        goto out_free;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(O.url.port);
    sa.sin_addr.s_addr = htonl(O.url.addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        ret = -errno;
        goto out_close;
    }
    ret = send_all(fd, head, (size_t)n);
    for (off = 0; ret == 0 && off < O.size;) {
        uint64_t l = O.size - off < PATTERN_SIZE ? O.size - off : PATTERN_SIZE;

        ret = send_all(fd, pattern, (size_t)l);
        off += l;
    }
    if (ret < 0)
        goto out_close;
    req_resp_init(r);
    while (!req_resp_done(r)) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            ret = got < 0 ? -errno : req_resp_eof(r);
            if (ret < 0)
                goto out_close;
            break;
        }
        if (req_resp_feed(r, buf, (size_t)got) < 0) {
            ret = -EBADMSG;
            goto out_close;
        }
    }
    *status = r->status;
    if (r->status != 201 || req_json_str(r->keep, r->keep_len, "id", id, cap) <= 0)
        ret = -EBADMSG;
out_close:
    close(fd);
out_free:
    free(r);
    return ret;
}

static int prime(void)
{
    unsigned want = O.threads < PRIME_MAX ? O.threads : PRIME_MAX;
    unsigned k;

    for (k = 0; k < want; k++) {
        int status;
        int ret = prime_one(k, prime_ids[k], sizeof(prime_ids[k]), &status);

        if (ret < 0) {
            if (ret == -EBADMSG)
                fprintf(stderr, "ringup-load: get: uploading a file to fetch failed (status %d)\n",
                        status);
            else
                fprintf(stderr, "ringup-load: get: uploading a file to fetch failed: %s\n",
                        strerror(-ret));
            return ret;
        }
        nprime++;
    }
    return 0;
}

/* ---- results ---- */

struct total {
    struct stats st; /* every slot summed */
    double elapsed;  /* seconds from start to the last thread's end */
};

static void merge(struct total *t)
{
    unsigned i;
    unsigned k;
    uint64_t end = 0;

    memset(t, 0, sizeof(*t));
    hist_init(&t->st.lat);
    for (i = 0; i < O.threads; i++) {
        const struct stats *s = &S->slot[i];

        t->st.requests += s->requests;
        t->st.ok += s->ok;
        t->st.bytes_sent += s->bytes_sent;
        t->st.bytes_received += s->bytes_received;
        t->st.payload += s->payload;
        t->st.verified += s->verified;
        t->st.verify_failed += s->verify_failed;
        t->st.open_at_end += s->open_at_end;
        for (k = 0; k < ERR__N; k++)
            t->st.errors[k] += s->errors[k];
        for (k = 0; k < STATUS_MAX; k++)
            t->st.status[k] += s->status[k];
        hist_merge(&t->st.lat, &s->lat);
        if (s->end_ns > end)
            end = s->end_ns;
    }
    if (end < S->start_ns)
        end = now_ns();
    t->elapsed = (double)(end - S->start_ns) / 1e9;
    if (t->elapsed <= 0)
        t->elapsed = 1e-9;
}

static uint64_t total_errors(const struct stats *s)
{
    uint64_t n = 0;
    unsigned k;

    for (k = 0; k < ERR__N; k++)
        n += s->errors[k];
    return n;
}

static void print_json(const struct total *t)
{
    const struct stats *s = &t->st;
    const char *sep = "";
    unsigned k;

    printf("{\"scenario\":\"%s\",\"connections\":%u,\"threads\":%u,\"processes\":%u,"
           "\"duration_s\":%.3f,\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"status\":{",
           scenario_names[O.sc], O.conns, O.threads, O.procs, t->elapsed, s->requests, s->ok);
    for (k = 0; k < STATUS_MAX; k++) {
        if (s->status[k] == 0)
            continue;
        printf("%s\"%u\":%" PRIu64, sep, k, s->status[k]);
        sep = ",";
    }
    printf("},\"errors\":{");
    for (k = 0; k < ERR__N; k++)
        printf("%s\"%s\":%" PRIu64, k ? "," : "", err_names[k], s->errors[k]);
    printf("},\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64
           ",\"requests_per_s\":%.2f,\"mb_per_s\":%.3f,",
           s->bytes_sent, s->bytes_received, (double)s->requests / t->elapsed,
           (double)s->payload / t->elapsed / 1e6);
    printf("\"latency_us\":{\"p50\":%" PRIu64 ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64
           ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 ",\"mean\":%.1f},",
           hist_quantile(&s->lat, 0.5), hist_quantile(&s->lat, 0.9), hist_quantile(&s->lat, 0.99),
           hist_quantile(&s->lat, 0.999), s->lat.count ? s->lat.max : 0, hist_mean(&s->lat));
    printf("\"verified\":%" PRIu64 ",\"verify_failed\":%" PRIu64 ",\"open_at_end\":", s->verified,
           s->verify_failed);
    if (O.sc == SC_IDLE)
        printf("%" PRIu64 "}\n", s->open_at_end);
    else
        printf("null}\n");
    fflush(stdout);
}

static void print_human(FILE *f, const struct total *t)
{
    const struct stats *s = &t->st;
    unsigned k;

    fprintf(f, "%s %s: %u connections, %u threads, %u processes, %.2f s\n", scenario_names[O.sc],
            O.url.host, O.conns, O.threads, O.procs, t->elapsed);
    fprintf(f, "  requests   %" PRIu64 " (%" PRIu64 " ok), %.1f req/s, %.2f MB/s\n", s->requests,
            s->ok, (double)s->requests / t->elapsed, (double)s->payload / t->elapsed / 1e6);
    fprintf(f, "  status    ");
    for (k = 0; k < STATUS_MAX; k++)
        if (s->status[k])
            fprintf(f, " %u:%" PRIu64, k, s->status[k]);
    fprintf(f, "\n  errors    ");
    for (k = 0; k < ERR__N; k++)
        fprintf(f, " %s:%" PRIu64, err_names[k], s->errors[k]);
    fprintf(f,
            "\n  latency    p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, "
            "mean %.2f ms\n",
            hist_quantile(&s->lat, 0.5) / 1e3, hist_quantile(&s->lat, 0.9) / 1e3,
            hist_quantile(&s->lat, 0.99) / 1e3, hist_quantile(&s->lat, 0.999) / 1e3,
            (s->lat.count ? s->lat.max : 0) / 1e3, hist_mean(&s->lat) / 1e3);
    fprintf(f, "  bytes      sent %" PRIu64 ", received %" PRIu64 "\n", s->bytes_sent,
            s->bytes_received);
    if (O.verify > 0 && (O.sc == SC_PUT || O.sc == SC_MULTIPART))
        fprintf(f, "  verify     %" PRIu64 " ok, %" PRIu64 " failed\n", s->verified,
                s->verify_failed);
    if (O.sc == SC_IDLE)
        fprintf(f, "  open       %" PRIu64 " of %u at the end\n", s->open_at_end, O.conns);
}

/*
 * The progress line, once a second, until every thread is done. With worker
 * processes (pids != NULL), a child that exits is reaped here (its wait
 * status into wstatus[p], pids[p] set to 0), and once none is left the wait
 * ends even if a crashed child left slots undone.
 */
static void monitor(pid_t *pids, int *wstatus)
{
    bool tty = !O.quiet && isatty(STDERR_FILENO);
    uint64_t last_req = 0;
    uint64_t last_pay = 0;
    uint64_t next = now_ns() + NS_PER_S;
    bool printed = false;

    for (;;) {
        struct timespec ts = {0, 50000000};
        bool all = true;
        unsigned i;

        for (i = 0; i < O.threads; i++)
            if (!__atomic_load_n(&S->slot[i].done, __ATOMIC_ACQUIRE))
                all = false;
        if (pids != NULL) {
            bool alive = false;
            unsigned p;

            for (p = 0; p < O.procs; p++) {
                if (pids[p] > 0 && waitpid(pids[p], &wstatus[p], WNOHANG) == pids[p])
                    pids[p] = 0;
                if (pids[p] > 0)
                    alive = true;
            }
            if (!alive)
                all = true;
        }
        if (all)
            break;
        nanosleep(&ts, NULL);
        if (tty && now_ns() >= next) {
            uint64_t req = 0;
            uint64_t pay = 0;
            uint64_t err = 0;
            unsigned k;

            for (i = 0; i < O.threads; i++) {
                req += st_load(&S->slot[i].requests);
                pay += st_load(&S->slot[i].payload);
                for (k = 0; k < ERR__N; k++)
                    err += st_load(&S->slot[i].errors[k]);
            }
            fprintf(stderr,
                    "\r%6.1fs  requests %" PRIu64 "  %.0f req/s  %.2f MB/s  errors %" PRIu64 "   ",
                    (double)(now_ns() - S->start_ns) / 1e9, req, (double)(req - last_req),
                    (double)(pay - last_pay) / 1e6, err);
            last_req = req;
            last_pay = pay;
            next += NS_PER_S;
            printed = true;
        }
    }
    if (printed)
        fprintf(stderr, "\n");
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: ringup-load [options] SCENARIO URL\n"
               "  SCENARIO   put | multipart | tus | get | idle\n"
               "  URL        http://127.x.y.z:PORT (loopback 127.0.0.0/8 only)\n"
               "  -c, --connections N    concurrent connections (default 100)\n"
               "  -d, --duration SECS    run time (default 10); -n, --requests N stops after N\n"
               "  -t, --threads N        threads, one io_uring each (default: online CPUs)\n"
               "  -s, --size SIZE        body bytes, suffixes k/m (KiB/MiB), default 16k\n"
               "      --sizes DIST       size distribution with weights, e.g. 16k:70,1m:25,10m:5\n"
               "  -r, --rate R           open loop: R requests/s in all (default closed loop)\n"
               "      --no-keepalive     a new connection per request\n"
               "  -T, --token TOKEN      Authorization: Bearer TOKEN (default: env RINGUP_TOKEN)\n"
               "      --trickle BPS      each connection sends at BPS bytes/s\n"
               "      --verify FRACTION  check this fraction of 201s with GET /v1/files/{id} "
               "(default 0.01)\n"
               "      --timeout SECS     per-request timeout (default 30)\n"
               "      --json             JSON report on stdout (summary on stderr)\n"
               "      --quiet            no progress line\n"
               "Exit status: 0 all answers as expected and no errors, 1 otherwise, 2 usage.\n");
}

/* A usage error: one line naming it, the usage, exit 2. */
__attribute__((noreturn, format(printf, 1, 2))) static void bad_usage(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "ringup-load: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    usage(stderr);
    exit(2);
}

static double parse_pos_double(const char *s, const char *what, bool zero_ok)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < 0 || (!zero_ok && v == 0))
        bad_usage("bad value for %s", what);
    return v;
}

static uint64_t parse_count(const char *s, const char *what, uint64_t max)
{
    uint64_t v;

    if (s[0] == '+' || s[0] == '-' || req_parse_size(s, &v) < 0 || v == 0 || v > max)
        bad_usage("bad value for %s", what);
    return v;
}

enum long_only {
    OPT_SIZES = 256,
    OPT_NO_KEEPALIVE,
    OPT_TRICKLE,
    OPT_VERIFY,
    OPT_TIMEOUT,
    OPT_JSON,
    OPT_QUIET,
    OPT_HELP,
};

static void parse_args(int argc, char **argv)
{
    static const struct option longs[] = {
        {"connections", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"size", required_argument, NULL, 's'},
        {"sizes", required_argument, NULL, OPT_SIZES},
        {"rate", required_argument, NULL, 'r'},
        {"no-keepalive", no_argument, NULL, OPT_NO_KEEPALIVE},
        {"token", required_argument, NULL, 'T'},
        {"trickle", required_argument, NULL, OPT_TRICKLE},
        {"verify", required_argument, NULL, OPT_VERIFY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *env_token = getenv("RINGUP_TOKEN");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    bool threads_set = false;
    unsigned i;
    int ret;
    int ch;

    O.conns = 100;
    O.duration = 10;
    O.size = 16384;
    O.verify = 0.01;
    O.timeout_ns = 30 * NS_PER_S;
    O.threads = cpus > 0 ? (unsigned)cpus : 1;
    O.token = env_token != NULL && env_token[0] != '\0' ? env_token : NULL;
    while ((ch = getopt_long(argc, argv, "c:d:n:t:s:r:T:", longs, NULL)) != -1) {
        switch (ch) {
        case 'c':
            O.conns = (unsigned)parse_count(optarg, "--connections", CONNS_MAX);
            break;
        case 'd':
            O.duration = parse_pos_double(optarg, "--duration", false);
            break;
        case 'n':
            O.requests = parse_count(optarg, "--requests", UINT64_MAX >> 2);
            break;
        case 't':
            O.threads = (unsigned)parse_count(optarg, "--threads", THREADS_MAX);
            threads_set = true;
            break;
        case 's':
            if (req_parse_size(optarg, &O.size) < 0)
                bad_usage("bad --size %s", optarg);
            break;
        case OPT_SIZES:
            if (req_parse_sizes(optarg, &O.sizes) < 0)
                bad_usage("bad --sizes %s (want SIZE:WEIGHT,...)", optarg);
            break;
        case 'r':
            O.rate = parse_pos_double(optarg, "--rate", false);
            break;
        case OPT_NO_KEEPALIVE:
            O.no_keepalive = true;
            break;
        case 'T':
            O.token = optarg;
            break;
        case OPT_TRICKLE:
            O.trickle = parse_count(optarg, "--trickle", UINT64_MAX >> 2);
            break;
        case OPT_VERIFY:
            O.verify = parse_pos_double(optarg, "--verify", true);
            if (O.verify > 1)
                bad_usage("bad value for %s (0..1)", "--verify");
            break;
        case OPT_TIMEOUT:
            O.timeout_ns = (uint64_t)(parse_pos_double(optarg, "--timeout", false) * 1e9);
            break;
        case OPT_JSON:
            O.json = true;
            break;
        case OPT_QUIET:
            O.quiet = true;
            break;
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (argc - optind != 2)
        bad_usage("%s", "want SCENARIO and URL");
    for (i = 0; i < sizeof(scenario_names) / sizeof(scenario_names[0]); i++)
        if (strcmp(argv[optind], scenario_names[i]) == 0)
            break;
    if (i == sizeof(scenario_names) / sizeof(scenario_names[0]))
        bad_usage("unknown scenario %s", argv[optind]);
    O.sc = (enum scenario)i;
    ret = req_parse_url(argv[optind + 1], &O.url);
    if (ret == -EPERM)
        bad_usage("refusing %s: only 127.0.0.0/8 may be targeted", argv[optind + 1]);
    if (ret < 0)
        bad_usage("bad URL %s (want http://127.x.y.z:PORT)", argv[optind + 1]);
    if (O.token != NULL && (strlen(O.token) > TOKEN_MAX || strpbrk(O.token, "\r\n") != NULL))
        bad_usage("%s", "bad token (too long, or a line break)");
    if (O.sc == SC_GET && O.sizes.n)
        bad_usage("%s", "get uses one --size, not --sizes");
    if (!threads_set && O.threads > THREADS_MAX)
        O.threads = THREADS_MAX;
    if (O.threads > O.conns)
        O.threads = O.conns;
}

/* The first global thread index of process p. */
static unsigned proc_first_thread(unsigned p)
{
    unsigned t0;
    unsigned t1;

    proc_threads(p, &t0, &t1);
    return t0;
}

/* Connections of process p (the sum over its threads). */
static uint64_t proc_conns(unsigned p)
{
    unsigned t0;
    unsigned t1;
    unsigned first;
    uint64_t n = 0;

    proc_threads(p, &t0, &t1);
    for (; t0 < t1; t0++)
        n += thread_conns(t0, &first);
    return n;
}

/*
 * Raise the soft descriptor limit to the hard one, then pick the process
 * count: enough that no process holds more than PROC_CONNS_MAX connections
 * (or the limit less a reserve), with at least one thread each.
 */
static void plan_processes(void)
{
    struct rlimit rl;
    uint64_t per = PROC_CONNS_MAX;
    unsigned p;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            rl.rlim_cur < per + FD_RESERVE)
            per = rl.rlim_cur > 2 * FD_RESERVE ? rl.rlim_cur - FD_RESERVE : FD_RESERVE;
    }
    O.procs = (unsigned)((O.conns + per - 1) / per);
    if (O.threads < O.procs)
        O.threads = O.procs;
    for (;;) {
        for (p = 0; p < O.procs; p++)
            if (proc_conns(p) > per)
                break;
        if (p == O.procs || O.procs == O.threads)
            break;
        O.procs++;
    }
    O.nsrc = 1 + O.conns / SRC_CONNS;
    if (O.nsrc > SRC_ADDRS_MAX)
        O.nsrc = SRC_ADDRS_MAX;
}

static void on_signal(int sig)
{
    (void)sig;
    if (S != NULL)
        __atomic_store_n(&S->stop, 1, __ATOMIC_RELAXED);
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    struct total *t;
    pid_t *pids = NULL;
    int *wstatus = NULL;
    size_t shared_len;
    bool failed = false;
    int rc = 0;
    uint64_t x = 0x2545f4914f6cdd1dull;
    unsigned i;
    unsigned p;

    parse_args(argc, argv);
    plan_processes();

    pattern = malloc(PATTERN_SIZE);
    t = malloc(sizeof(*t));
    if (pattern == NULL || t == NULL) {
        fprintf(stderr, "ringup-load: out of memory\n");
        return 1;
    }
    for (i = 0; i < PATTERN_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (char)(x >> 24);
    }
    shared_len = sizeof(*S) + (size_t)O.threads * sizeof(S->slot[0]);
    S = mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (S == MAP_FAILED) {
        fprintf(stderr, "ringup-load: mmap: %s\n", strerror(errno));
        return 1;
    }
    for (i = 0; i < O.threads; i++)
        hist_init(&S->slot[i].lat);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (O.sc == SC_GET && prime() < 0) {
        free(t);
        free(pattern);
        munmap(S, shared_len);
        return 1;
    }

    fflush(stdout);
    fflush(stderr);
    run_pid = getpid();
    S->start_ns = now_ns();
    if (O.procs == 1) {
        struct proc pr;

        if (proc_start(&pr, 0) < 0)
            failed = true;
        monitor(NULL, NULL);
        proc_join(&pr);
    } else {
        pids = calloc(O.procs, sizeof(*pids));
        wstatus = calloc(O.procs, sizeof(*wstatus));
        if (pids == NULL || wstatus == NULL)
            return 1;
        for (p = 0; p < O.procs; p++) {
            pids[p] = fork();
            if (pids[p] < 0) {
                fprintf(stderr, "ringup-load: fork: %s\n", strerror(errno));
                __atomic_store_n(&S->stop, 1, __ATOMIC_RELAXED);
                pids[p] = 0;
                wstatus[p] = 1 << 8; /* as if exit(1) */
                failed = true;
                for (i = 0; i < O.threads; i++)
                    if (i >= proc_first_thread(p))
                        __atomic_store_n(&S->slot[i].done, 1, __ATOMIC_RELEASE);
                break;
            }
            if (pids[p] == 0) {
                struct proc pr;
                int ret = proc_start(&pr, p);

                proc_join(&pr);
                _exit(ret < 0 ? 1 : 0);
            }
        }
        monitor(pids, wstatus);
        for (p = 0; p < O.procs; p++) {
            if (pids[p] > 0)
                waitpid(pids[p], &wstatus[p], 0);
            if (!WIFEXITED(wstatus[p]) || WEXITSTATUS(wstatus[p]) != 0) {
                fprintf(stderr, "ringup-load: worker process %u failed\n", p);
                failed = true;
            }
        }
        free(pids);
        free(wstatus);
    }
    merge(t);
    if (O.json) {
        print_json(t);
        print_human(stderr, t);
    } else {
        print_human(stdout, t);
    }
    fflush(stdout);
    if (failed || t->st.requests != t->st.ok || total_errors(&t->st) != 0 ||
        t->st.verify_failed != 0 || t->st.requests == 0 ||
        (O.sc == SC_IDLE && t->st.open_at_end != O.conns))
        rc = 1;
    free(t);
    free(pattern);
    munmap(S, shared_len);
    return rc;
}

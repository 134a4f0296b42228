/*
 * redis: a worker's Redis slice on its ring. See redis.h for the model.
 *
 * Ownership of a command: redis_cmdv() takes a record from the pool's free
 * list and hands it to hiredis as the reply callback's privdata. hiredis
 * calls that callback exactly once per command: with the reply, or with
 * NULL when the context is freed (timeout, lost connection, stop). Only that
 * call gives the record back and calls the user's callback, so no command is
 * answered twice; the connection's fail_err, set before the context is
 * freed, says which error the NULL calls carry.
 *
 * A connection is alive from redisAsyncConnect*() to hiredis's cleanup
 * hook, which runs once, after every pending callback, whoever freed the
 * context (we, or hiredis on a read error or a failed connect). The hook
 * is where the slot is counted closed and a reconnect is planned.
 */
#include "engine/db/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/sha.h>

#include "engine/core/cfg.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/core/tmr.h"

#define REDIS_SPILL 512      /* commands in flight on a connection before the next one is used */
#define REDIS_HOOKS 4        /* state hooks per pool */
#define REDIS_SLOW_MIN 1000  /* the slow retry's bounds, ms: never a busy loop... */
#define REDIS_SLOW_MAX 60000 /* ...and a Redis back is picked up within a minute */
#define REDIS_CAP_RECHECK_MS 1000 /* look again for a free slot under REDIS_MAX_CONNECTIONS */

enum rconn_state {
    RC_CLOSED,     /* slot free: no context */
    RC_CONNECTING, /* connect(2) in progress */
    RC_HANDSHAKE,  /* AUTH / SELECT sent, answers awaited */
    RC_READY,      /* takes commands */
    RC_CLOSING,    /* its context is being freed: no new commands */
};

struct rconn;

/* A command in flight (pooled; see the head comment for its owner). */
struct rcmd {
    struct rconn *c;             /* connection it was sent on */
    struct rcmd *next;           /* FIFO of c, or the pool's free list */
    redis_cb cb;                 /* the caller's completion, may be NULL */
    void *ud;                    /* cb's first argument */
    uint64_t tag;                /* cb's tag */
    uint64_t sent_ms;            /* ring time it was (re)sent: its timeout runs from here */
    uint64_t sent_us;            /* monotonic µs it was first sent: its latency */
    struct redis_script *script; /* redis_eval(): sent again as EVAL on NOSCRIPT */
    char *eval;                  /* the formatted EVALSHA, kept for that resend */
    size_t evallen;
};

/* One connection of a slice. */
struct rconn {
    struct redis_pool *p;   /* owner */
    redisAsyncContext *ac;  /* NULL when CLOSED */
    enum rconn_state state; /* see enum */
    uint32_t watch;         /* ring poll seam watch, 0 when none */
    unsigned armed_mask;    /* events of the watch while armed */
    bool want_read;         /* hiredis asked for POLLIN (addRead) */
    bool want_write;        /* hiredis asked for POLLOUT (addWrite) */
    bool in_event;          /* inside on_poll: it re-arms once at the end */
    bool was_ready;         /* reached READY: its loss is not a failed attempt */
    bool used;              /* the slot had a connection before: opening it reconnects */
    int fail_err;           /* error of the commands failed when it closes */
    uint32_t hs_pending;    /* handshake answers awaited */
    struct rcmd *head;      /* commands in flight, oldest first */
    struct rcmd *tail;
    uint32_t inflight; /* commands in the FIFO */
    struct tmr timer;  /* connect/handshake deadline, or the oldest command's */
};

struct redis_hook {
    redis_state_fn fn;
    void *ctx;
};

struct redis_pool {
    struct ring *r;
    const struct cfg *cfg;
    struct met_redis *m;    /* the worker's metrics */
    struct rconn *conns;    /* max slots */
    uint32_t min;           /* connections opened at start and kept */
    uint32_t max;           /* this worker's slice */
    uint32_t nopen;         /* slots not CLOSED */
    uint32_t nready;        /* slots READY */
    uint32_t nbusy;         /* slots with commands in flight */
    uint32_t fails;         /* failed attempts since the last ready connection */
    uint64_t retry_at_ms;   /* the next attempt, ring time */
    bool stopping;          /* redis_pool_stop() ran */
    bool up;                /* a connection is ready (state hooks told) */
    bool warned;            /* this failure streak is logged */
    struct tmr timer;       /* opens and reopens connections */
    struct rcmd *free_cmds; /* records not in flight */
    struct redis_hook hooks[REDIS_HOOKS];
    uint8_t nhooks;
    char last_err[128]; /* why the last attempt failed, for the log */
};

/* REDIS_URL as redis_setup() left it: written once on the main thread before workers start. */
static struct redis_addr g_addr;
static char g_ip[INET6_ADDRSTRLEN]; /* numeric address of g_addr.host */
static bool g_ready;                /* parsed (and resolved) */
static uint32_t g_total;            /* connections of every worker (atomic) */

static void on_poll(void *ctx, int res);
static void conn_closed(struct rconn *c);

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- set-up (main thread) ---- */

void redis_script_init(struct redis_script *s)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    int i;

    SHA1((const unsigned char *)s->src, strlen(s->src), md);
    for (i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

/* A host name to the numeric address workers connect to (getaddrinfo blocks: main thread). */
static int resolve(const char *host, char *ip, size_t iplen, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    const void *addr;
    int ret;

    ret = getaddrinfo(host, NULL, &hints, &res);
    if (ret != 0) {
        snprintf(err, errlen, "REDIS_URL: host %s not resolved: %s", host, gai_strerror(ret));
        return -EINVAL;
    }
    if (res->ai_family == AF_INET6)
        addr = &((const struct sockaddr_in6 *)(const void *)res->ai_addr)->sin6_addr;
    else
        addr = &((const struct sockaddr_in *)(const void *)res->ai_addr)->sin_addr;
    if (inet_ntop(res->ai_family, addr, ip, (socklen_t)iplen) == NULL) {
        snprintf(err, errlen, "REDIS_URL: host %s: %s", host, strerror(errno));
        freeaddrinfo(res);
        return -EINVAL;
    }
    freeaddrinfo(res);
    return 0;
}

int redis_setup(const struct cfg *cfg, char *err, size_t errlen)
{
    int ret;

    g_ready = false;
    ret = redis_url_parse(cfg->redis_url, &g_addr, err, errlen);
    if (ret < 0)
        return ret;
    if (!g_addr.is_unix) {
        ret = resolve(g_addr.host, g_ip, sizeof(g_ip), err, errlen);
        if (ret < 0)
            return ret;
    }
    g_ready = true;
    return 0;
}

uint64_t redis_slow_retry_ms(const struct cfg *cfg)
{
    uint64_t ms = (uint64_t)cfg->redis_retry_delay * 10;

    if (ms < REDIS_SLOW_MIN)
        ms = REDIS_SLOW_MIN;
    return ms > REDIS_SLOW_MAX ? REDIS_SLOW_MAX : ms;
}

/* ---- the process-wide cap ---- */

/* Take a slot under REDIS_MAX_CONNECTIONS; false when every slot is taken. */
static bool slot_take(uint32_t cap)
{
    uint32_t n = __atomic_load_n(&g_total, __ATOMIC_RELAXED);

    do {
        if (n >= cap)
            return false;
    } while (!__atomic_compare_exchange_n(&g_total, &n, n + 1, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return true;
}

static void slot_give(void)
{
    __atomic_fetch_sub(&g_total, 1, __ATOMIC_RELAXED);
}

/* ---- state ---- */

static void tell(struct redis_pool *p, bool up)
{
    unsigned i;

    p->up = up;
    met_set(&p->m->up, up ? 1 : 0);
    for (i = 0; i < p->nhooks; i++)
        p->hooks[i].fn(p->hooks[i].ctx, up);
}

/* c takes no more commands (its context is going away). */
static void leave_ready(struct rconn *c)
{
    if (c->state == RC_READY)
        c->p->nready--;
    if (c->state != RC_CLOSED)
        c->state = RC_CLOSING;
}

static void become_ready(struct rconn *c)
{
    struct redis_pool *p = c->p;

    c->state = RC_READY;
    c->was_ready = true;
    tmr_cancel(&p->r->timers, &c->timer);
    p->nready++;
    p->fails = 0;
    p->warned = false;
    if (!p->up) {
        log_info("redis up", "worker=%u", p->r->id);
        tell(p, true);
    }
    /* The rest of the minimum follows the first connection that works. */
    if (p->nopen < p->min && !p->stopping)
        tmr_set(&p->r->timers, &p->timer, p->r->now_ms);
}

/* ---- the event adapter: hiredis's hooks onto the ring's poll seam ---- */

/* Arm the one-shot watch for what hiredis wants (on_poll re-arms once at its end). */
static void arm(struct rconn *c)
{
    unsigned mask = (c->want_read ? POLLIN : 0) | (c->want_write ? POLLOUT : 0);

    if (c->in_event || c->ac == NULL || mask == 0)
        return;
    /*
     * Widening an armed poll in place (a poll update) did not fire on the
     * kernels this runs on: replace the watch instead (a remove and an add).
     */
    if (ring_poll_armed(c->p->r, c->watch)) {
        if ((c->armed_mask | mask) == c->armed_mask)
            return;
        ring_poll_del(c->p->r, &c->watch);
    }
    c->armed_mask = mask;
    ring_poll_add(c->p->r, &c->watch, c->ac->c.fd, mask, on_poll, c);
}

static void ev_add_read(void *d)
{
    struct rconn *c = d;

    c->want_read = true;
    arm(c);
}

static void ev_del_read(void *d)
{
    struct rconn *c = d;

    c->want_read = false;
}

static void ev_add_write(void *d)
{
    struct rconn *c = d;

    c->want_write = true;
    arm(c);
}

static void ev_del_write(void *d)
{
    struct rconn *c = d;

    c->want_write = false;
}

/* hiredis is done with the context (it is freed right after): the slot closes. */
static void ev_cleanup(void *d)
{
    struct rconn *c = d;

    if (c->ac == NULL)
        return;
    if (c->ac->err != 0)
        snprintf(c->p->last_err, sizeof(c->p->last_err), "%s", c->ac->errstr);
    conn_closed(c);
}

/* Drop c's context: its commands in flight fail with err (one call each, from hiredis). */
static void conn_drop(struct rconn *c, int err)
{
    if (c->ac == NULL || c->state == RC_CLOSING)
        return;
    c->fail_err = err;
    leave_ready(c);
    tmr_cancel(&c->p->r->timers, &c->timer);
    /* Inside one of its callbacks, hiredis defers this to the callback's end. */
    redisAsyncFree(c->ac);
}

static void on_poll(void *ctx, int res)
{
    struct rconn *c = ctx;
    redisAsyncContext *ac = c->ac;

    if (ac == NULL)
        return;
    if (res < 0) {
        snprintf(c->p->last_err, sizeof(c->p->last_err), "poll: %s", strerror(-res));
        conn_drop(c, -ECONNABORTED);
        return;
    }
    c->in_event = true;
    if ((res & (POLLOUT | POLLERR | POLLHUP)) && c->want_write) {
        if ((ac->c.flags & REDIS_CONNECTED) && sdslen(ac->c.obuf) > 0)
            met_inc(&c->p->m->writes);
        redisAsyncHandleWrite(ac);
    }
    if (c->ac != NULL && (res & (POLLIN | POLLERR | POLLHUP)) && c->state != RC_CONNECTING)
        redisAsyncHandleRead(c->ac);
    c->in_event = false;
    arm(c);
}

/* ---- commands in flight ---- */

static struct rcmd *cmd_get(struct redis_pool *p)
{
    struct rcmd *q = p->free_cmds;

    if (q == NULL) {
        q = malloc(sizeof(*q));
        if (q == NULL)
            log_oom();
    } else {
        p->free_cmds = q->next;
    }
    return q;
}

static void cmd_put(struct redis_pool *p, struct rcmd *q)
{
    q->next = p->free_cmds;
    p->free_cmds = q;
}

/* Append q to c's FIFO; the timer watches the oldest. */
static void fifo_push(struct rconn *c, struct rcmd *q)
{
    struct redis_pool *p = c->p;

    q->c = c;
    q->next = NULL;
    q->sent_ms = p->r->now_ms;
    if (c->tail != NULL)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    if (c->inflight++ == 0) {
        p->nbusy++;
        met_set(&p->m->busy, p->nbusy);
    }
    met_inc(&p->m->inflight);
    if (!tmr_armed(&c->timer))
        tmr_set(&p->r->timers, &c->timer, q->sent_ms + p->cfg->redis_command_timeout);
}

/* Take the oldest command off c's FIFO (replies come in order: it is q). */
static void fifo_pop(struct rconn *c, struct rcmd *q)
{
    struct redis_pool *p = c->p;

    if (c->head != q) {
        /* Never happens with an ordered protocol; keep the FIFO sound if it did. */
        log_error("redis reply out of order", "worker=%u", p->r->id);
        abort();
    }
    c->head = q->next;
    if (c->head == NULL)
        c->tail = NULL;
    if (--c->inflight == 0) {
        p->nbusy--;
        met_set(&p->m->busy, p->nbusy);
    }
    met_dec(&p->m->inflight);
}

/* Complete q: metrics, record back to the pool, then the caller's callback. */
static void cmd_finish(struct redis_pool *p, struct rcmd *q, redisReply *reply, int err)
{
    redis_cb cb = q->cb;
    void *ud = q->ud;
    uint64_t tag = q->tag;

    met_redis_cmd(p->m, now_us() - q->sent_us);
    if (err == -ETIMEDOUT)
        met_inc(&p->m->errors[MET_RE_TIMEOUT]);
    else if (err != 0)
        met_inc(&p->m->errors[MET_RE_CONN]);
    else if (reply->type == REDIS_REPLY_ERROR)
        met_inc(&p->m->errors[MET_RE_REPLY]);
    if (q->eval != NULL)
        redisFreeCommand(q->eval);
    q->eval = NULL;
    cmd_put(p, q);
    if (cb != NULL)
        cb(ud, tag, reply, err);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/*
 * A script call answered NOSCRIPT: send the same call as EVAL (which loads
 * the script) on the same connection. EVALSHA's formatted command is
 * "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n<rest>"; EVAL's replaces the first
 * two arguments. Returns 0 (q is in flight again) or -errno.
 */
static int resend_eval(struct rconn *c, struct rcmd *q)
{
    const char *hdr_end = memchr(q->eval, '\n', q->evallen);
    size_t hdr;
    size_t skip;
    size_t srclen = strlen(q->script->src);
    char *cmd;
    int n;
    int ret;

    if (hdr_end == NULL)
        return -EINVAL;
    hdr = (size_t)(hdr_end + 1 - q->eval);
    skip = hdr + sizeof("$7\r\nEVALSHA\r\n$40\r\n") - 1 + 40 + 2;
    if (skip > q->evallen)
        return -EINVAL;
    cmd = malloc(hdr + 32 + srclen + (q->evallen - skip));
    if (cmd == NULL)
        log_oom();
    memcpy(cmd, q->eval, hdr);
    n = sprintf(cmd + hdr, "$4\r\nEVAL\r\n$%zu\r\n", srclen);
    memcpy(cmd + hdr + (size_t)n, q->script->src, srclen);
    memcpy(cmd + hdr + (size_t)n + srclen, "\r\n", 2);
    memcpy(cmd + hdr + (size_t)n + srclen + 2, q->eval + skip, q->evallen - skip);
    ret = redisAsyncFormattedCommand(c->ac, on_reply, q, cmd,
                                     hdr + (size_t)n + srclen + 2 + (q->evallen - skip));
    free(cmd);
    if (ret != REDIS_OK)
        return -ECONNABORTED;
    q->script = NULL;
    fifo_push(c, q);
    return 0;
}

static bool is_noscript(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
           memcmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* hiredis's callback of every command: exactly once per command. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rcmd *q = privdata;
    struct rconn *c = q->c;
    struct redis_pool *p = c->p;
    redisReply *reply = r;

    (void)ac;
    fifo_pop(c, q);
    if (reply == NULL) {
        leave_ready(c);
        cmd_finish(p, q, NULL, c->fail_err);
        return;
    }
    if (q->script != NULL && is_noscript(reply)) {
        met_inc(&p->m->noscript);
        if (resend_eval(c, q) == 0)
            return;
        cmd_finish(p, q, NULL, -ECONNABORTED);
        return;
    }
    cmd_finish(p, q, reply, 0);
}

/* ---- connections ---- */

static void hs_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rconn *c = privdata;
    struct redis_pool *p = c->p;
    redisReply *reply = r;

    if (reply == NULL || c->state != RC_HANDSHAKE)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(p->last_err, sizeof(p->last_err), "%.*s", (int)reply->len, reply->str);
        if (!p->warned) {
            log_warn("redis refused the connection's set-up", "worker=%u error=%s", p->r->id,
                     p->last_err);
            p->warned = true;
        }
        /* A bad password is a failed attempt: retried with the reconnect policy. */
        conn_drop(c, -ECONNABORTED);
        (void)ac;
        return;
    }
    if (--c->hs_pending == 0)
        become_ready(c);
}

/* AUTH and SELECT first: the connection is ready only once both succeeded. */
static void handshake(struct rconn *c)
{
    char db[16];
    int ret = REDIS_OK;

    c->state = RC_HANDSHAKE;
    c->hs_pending = 0;
    if (g_addr.password[0] != '\0') {
        if (g_addr.user[0] != '\0')
            ret = redisAsyncCommand(c->ac, hs_reply, c, "AUTH %s %s", g_addr.user, g_addr.password);
        else
            ret = redisAsyncCommand(c->ac, hs_reply, c, "AUTH %s", g_addr.password);
        c->hs_pending++;
    }
    if (ret == REDIS_OK && g_addr.db != 0) {
        snprintf(db, sizeof(db), "%u", g_addr.db);
        ret = redisAsyncCommand(c->ac, hs_reply, c, "SELECT %s", db);
        c->hs_pending++;
    }
    if (ret != REDIS_OK) {
        conn_drop(c, -ECONNABORTED);
        return;
    }
    if (c->hs_pending == 0)
        become_ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;

    if (status != REDIS_OK) {
        snprintf(c->p->last_err, sizeof(c->p->last_err), "%s", ac->errstr);
        return; /* hiredis frees the context: ev_cleanup follows */
    }
    handshake(c);
}

/* Open slot c: a non-blocking connect to the numeric address. Returns 0 or -errno. */
static int conn_open(struct rconn *c)
{
    struct redis_pool *p = c->p;
    redisAsyncContext *ac;

    if (!g_ready) {
        snprintf(p->last_err, sizeof(p->last_err), "REDIS_URL not set up");
        return -EINVAL;
    }
    if (!slot_take(p->cfg->redis_max_connections))
        return -EAGAIN;
    /* Every attempt on a slot that had a connection counts, refused at once or not. */
    if (c->used)
        met_inc(&p->m->reconnects);
    c->used = true;
    if (g_addr.is_unix)
        ac = redisAsyncConnectUnix(g_addr.path);
    else
        ac = redisAsyncConnect(g_ip, g_addr.port);
    if (ac == NULL)
        log_oom();
    if (ac->err != 0) {
        snprintf(p->last_err, sizeof(p->last_err), "%s", ac->errstr);
        redisAsyncFree(ac);
        slot_give();
        return -ECONNREFUSED;
    }
    c->ac = ac;
    c->state = RC_CONNECTING;
    c->fail_err = -ECONNABORTED;
    c->want_read = false;
    c->want_write = false;
    c->was_ready = false;
    c->hs_pending = 0;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    p->nopen++;
    met_set(&p->m->open, p->nopen);
    /* Connect and handshake share the command timeout. */
    tmr_set(&p->r->timers, &c->timer, p->r->now_ms + p->cfg->redis_command_timeout);
    /* Setting the callback asks for POLLOUT: connect(2) completes with it. */
    redisAsyncSetConnectCallback(ac, on_connect);
    return 0;
}

/* When the next attempt may run after a failure streak of p->fails. */
static uint64_t retry_delay(const struct redis_pool *p)
{
    if (p->fails < p->cfg->redis_retry_attempts)
        return p->cfg->redis_retry_delay;
    return redis_slow_retry_ms(p->cfg);
}

static void attempt_failed(struct redis_pool *p)
{
    p->fails++;
    if (!p->warned) {
        log_warn("redis unreachable, retrying", "worker=%u error=%s retry_ms=%llu", p->r->id,
                 p->last_err, (unsigned long long)retry_delay(p));
        p->warned = true;
    }
    p->retry_at_ms = p->r->now_ms + retry_delay(p);
    tmr_set(&p->r->timers, &p->timer, p->retry_at_ms);
}

/* The context of c is gone (ev_cleanup): count it closed and plan the next attempt. */
static void conn_closed(struct rconn *c)
{
    struct redis_pool *p = c->p;
    struct ring *r = p->r;
    bool was_ready = c->was_ready;

    leave_ready(c);
    ring_poll_del(r, &c->watch);
    tmr_cancel(&r->timers, &c->timer);
    c->ac = NULL;
    c->state = RC_CLOSED;
    c->want_read = false;
    c->want_write = false;
    p->nopen--;
    met_set(&p->m->open, p->nopen);
    slot_give();
    if (p->up && p->nready == 0) {
        if (!p->stopping)
            log_warn("redis down", "worker=%u error=%s", r->id,
                     p->last_err[0] != '\0' ? p->last_err : "connection closed");
        p->warned = true;
        tell(p, false);
    }
    if (p->stopping)
        return;
    if (was_ready) {
        /* A lost connection is reopened at once; failures then follow the policy. */
        p->retry_at_ms = r->now_ms;
        tmr_set(&r->timers, &p->timer, r->now_ms);
        return;
    }
    attempt_failed(p);
}

static struct rconn *free_slot(struct redis_pool *p)
{
    uint32_t i;

    for (i = 0; i < p->max; i++)
        if (p->conns[i].state == RC_CLOSED)
            return &p->conns[i];
    return NULL;
}

/* Keep min connections open; after failures, one attempt at a time. */
static void pool_tick(struct tmr *t)
{
    struct redis_pool *p =
        (struct redis_pool *)(void *)((char *)t - offsetof(struct redis_pool, timer));
    struct ring *r = p->r;

    if (p->stopping)
        return;
    if (r->now_ms < p->retry_at_ms) {
        tmr_set(&r->timers, &p->timer, p->retry_at_ms);
        return;
    }
    while (p->nopen < p->min) {
        struct rconn *c = free_slot(p);
        int ret;
        if (c == NULL)
            break;
        ret = conn_open(c);
        if (ret == -EAGAIN) {
            /* Other workers hold every slot: look again later. */
            tmr_set(&r->timers, &p->timer, r->now_ms + REDIS_CAP_RECHECK_MS);
            break;
        }
        if (ret < 0) {
            attempt_failed(p);
            break;
        }
        if (p->fails > 0 || p->nready == 0)
            break; /* a probe: the rest follow once it is ready */
    }
}

/* A connection's deadline: connect/handshake too slow, or its oldest command unanswered. */
static void conn_tick(struct tmr *t)
{
    struct rconn *c = (struct rconn *)(void *)((char *)t - offsetof(struct rconn, timer));
    struct redis_pool *p = c->p;
    uint64_t timeout = p->cfg->redis_command_timeout;

    if (c->ac == NULL || c->state == RC_CLOSING)
        return;
    if (c->state == RC_CONNECTING || c->state == RC_HANDSHAKE) {
        snprintf(p->last_err, sizeof(p->last_err), "connect timed out");
        conn_drop(c, -ETIMEDOUT);
        return;
    }
    if (c->head == NULL)
        return;
    if (c->head->sent_ms + timeout > p->r->now_ms) {
        tmr_set(&p->r->timers, &c->timer, c->head->sent_ms + timeout);
        return;
    }
    snprintf(p->last_err, sizeof(p->last_err), "command timed out");
    log_warn("redis command timed out, reconnecting", "worker=%u in_flight=%u timeout_ms=%llu",
             p->r->id, c->inflight, (unsigned long long)timeout);
    conn_drop(c, -ETIMEDOUT);
}

/* ---- the pool ---- */

static uint32_t share(uint32_t total, uint32_t id, uint32_t workers)
{
    uint32_t n = total / workers + (id < total % workers ? 1 : 0);

    return n > 0 ? n : 1;
}

struct redis_pool *redis_pool_new(struct ring *r, const struct cfg *cfg, uint32_t workers)
{
    struct redis_pool *p = calloc(1, sizeof(*p));
    uint32_t max = cfg->redis_pool_max < cfg->redis_max_connections ? cfg->redis_pool_max
                                                                    : cfg->redis_max_connections;
    uint32_t min = cfg->redis_pool_min < max ? cfg->redis_pool_min : max;
    uint32_t i;

    if (p == NULL)
        log_oom();
    if (workers == 0)
        workers = 1;
    p->r = r;
    p->cfg = cfg;
    p->m = &r->met.redis;
    p->max = share(max, r->id, workers);
    p->min = share(min, r->id, workers);
    if (p->min > p->max)
        p->min = p->max;
    p->conns = calloc(p->max, sizeof(*p->conns));
    if (p->conns == NULL)
        log_oom();
    for (i = 0; i < p->max; i++) {
        p->conns[i].p = p;
        tmr_init(&p->conns[i].timer, conn_tick);
    }
    tmr_init(&p->timer, pool_tick);
    met_set(&p->m->max, p->max);
    met_set(&p->m->up, 0);
    tmr_set(&r->timers, &p->timer, tmr_now_ms());
    return p;
}

void redis_pool_on_state(struct redis_pool *p, redis_state_fn fn, void *ctx)
{
    if (p->nhooks >= REDIS_HOOKS) {
        log_error("too many redis state hooks", "max=%d", REDIS_HOOKS);
        abort();
    }
    p->hooks[p->nhooks].fn = fn;
    p->hooks[p->nhooks].ctx = ctx;
    p->nhooks++;
}

bool redis_up(const struct redis_pool *p)
{
    return p != NULL && p->nready > 0 && !p->stopping;
}

/*
 * The connection for a command: the first ready one with room, so a turn's
 * commands share one write; a backed-up slice grows by one connection.
 */
static struct rconn *pick(struct redis_pool *p)
{
    struct rconn *best = NULL;
    uint32_t i;

    for (i = 0; i < p->max; i++) {
        struct rconn *c = &p->conns[i];
        if (c->state != RC_READY)
            continue;
        if (c->inflight < REDIS_SPILL)
            return c;
        if (best == NULL || c->inflight < best->inflight)
            best = c;
    }
    if (best != NULL && p->nopen == p->nready && p->nopen < p->max && p->fails == 0) {
        struct rconn *c = free_slot(p);
        if (c != NULL && conn_open(c) < 0)
            attempt_failed(p);
    }
    return best;
}

/* A record for a new command on c (not yet in its FIFO). */
static struct rcmd *cmd_new(struct redis_pool *p, redis_cb cb, void *ud, uint64_t tag)
{
    struct rcmd *q = cmd_get(p);

    q->cb = cb;
    q->ud = ud;
    q->tag = tag;
    q->script = NULL;
    q->eval = NULL;
    q->evallen = 0;
    q->sent_us = now_us();
    return q;
}

int redis_cmdv(struct redis_pool *p, redis_cb cb, void *ud, uint64_t tag, int argc,
               const char *const *argv, const size_t *lens)
{
    struct rconn *c;
    struct rcmd *q;

    if (p->stopping)
        return -ESHUTDOWN;
    if (argc <= 0 || argc > REDIS_ARGS_MAX)
        return -E2BIG;
    c = pick(p);
    if (c == NULL)
        return -ENOTCONN;
    q = cmd_new(p, cb, ud, tag);
    if (redisAsyncCommandArgv(c->ac, on_reply, q, argc, (const char **)argv, lens) != REDIS_OK) {
        cmd_put(p, q);
        return -ENOTCONN;
    }
    fifo_push(c, q);
    return 0;
}

int redis_cmd(struct redis_pool *p, redis_cb cb, void *ud, uint64_t tag, const char *fmt, ...)
{
    struct rconn *c;
    struct rcmd *q;
    va_list ap;
    int ret;

    if (p->stopping)
        return -ESHUTDOWN;
    c = pick(p);
    if (c == NULL)
        return -ENOTCONN;
    q = cmd_new(p, cb, ud, tag);
    va_start(ap, fmt);
    ret = redisvAsyncCommand(c->ac, on_reply, q, fmt, ap);
    va_end(ap);
    if (ret != REDIS_OK) {
        cmd_put(p, q);
        return -EINVAL;
    }
    fifo_push(c, q);
    return 0;
}

int redis_eval(struct redis_pool *p, struct redis_script *s, redis_cb cb, void *ud, uint64_t tag,
               int nkeys, int argc, const char *const *argv, const size_t *lens)
{
    const char *v[REDIS_ARGS_MAX + 3];
    size_t l[REDIS_ARGS_MAX + 3];
    char nk[12];
    struct rconn *c;
    struct rcmd *q;
    char *cmd;
    int len;
    int i;

    if (p->stopping)
        return -ESHUTDOWN;
    if (argc < 0 || argc > REDIS_ARGS_MAX || nkeys < 0 || nkeys > argc)
        return -E2BIG;
    c = pick(p);
    if (c == NULL)
        return -ENOTCONN;
    v[0] = "EVALSHA";
    l[0] = 7;
    v[1] = s->sha;
    l[1] = 40;
    l[2] = (size_t)snprintf(nk, sizeof(nk), "%d", nkeys);
    v[2] = nk;
    for (i = 0; i < argc; i++) {
        v[3 + i] = argv[i];
        l[3 + i] = lens[i];
    }
    len = redisFormatCommandArgv(&cmd, argc + 3, v, l);
    if (len < 0)
        log_oom();
    q = cmd_new(p, cb, ud, tag);
    q->script = s;
    q->eval = cmd;
    q->evallen = (size_t)len;
    if (redisAsyncFormattedCommand(c->ac, on_reply, q, cmd, (size_t)len) != REDIS_OK) {
        redisFreeCommand(cmd);
        cmd_put(p, q);
        return -ENOTCONN;
    }
    fifo_push(c, q);
    return 0;
}

void redis_pool_stop(struct redis_pool *p)
{
    uint32_t i;

    if (p->stopping)
        return;
    p->stopping = true;
    tmr_cancel(&p->r->timers, &p->timer);
    for (i = 0; i < p->max; i++)
        conn_drop(&p->conns[i], -ESHUTDOWN);
    if (p->up)
        tell(p, false);
}

bool redis_pool_stopped(const struct redis_pool *p)
{
    uint32_t i;

    for (i = 0; i < p->max; i++)
        if (p->conns[i].state != RC_CLOSED)
            return false;
    return true;
}

void redis_pool_free(struct redis_pool *p)
{
    struct rcmd *q;
    uint32_t i;

    if (p == NULL)
        return;
    /* A pool freed without a stop (start-up failed): close what is open first. */
    if (!p->stopping)
        redis_pool_stop(p);
    for (i = 0; i < p->max; i++)
        tmr_cancel(&p->r->timers, &p->conns[i].timer);
    while ((q = p->free_cmds) != NULL) {
        p->free_cmds = q->next;
        free(q);
    }
    met_set(&p->m->open, 0);
    met_set(&p->m->busy, 0);
    met_set(&p->m->up, 0);
    free(p->conns);
    free(p);
}

/* ---- replies ---- */

bool redis_reply_int(const struct redisReply *reply, long long *v)
{
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER)
        return false;
    *v = reply->integer;
    return true;
}

const char *redis_reply_str(const struct redisReply *reply, size_t *len)
{
    if (reply == NULL || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS &&
                          reply->type != REDIS_REPLY_ERROR))
        return NULL;
    *len = reply->len;
    return reply->str;
}

bool redis_reply_is_error(const struct redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ERROR;
}

const struct redisReply *redis_reply_at(const struct redisReply *reply, size_t i)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || i >= reply->elements)
        return NULL;
    return reply->element[i];
}

size_t redis_reply_len(const struct redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return 0;
    return reply->elements;
}

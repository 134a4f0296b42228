/*
 * limit: the rate limiter; see limit.h.
 *
 * Why leases. A Redis round trip per upload costs a few tens of µs of a
 * worker's loop and caps a deployment at Redis's script rate. A worker
 * instead takes a block of permits at once and admits from it locally.
 * Blocks never break the bound: a permit is debited from both buckets in
 * Redis before any request uses it, so at no time are more than the limit
 * admitted across all instances, and over any interval t at most
 * limit + limit * t / 60 s (the burst, then the refill). Permits a worker
 * holds and does not use come back after LEASE_IDLE_MS; those of a killed
 * instance are lost to the bucket, which refills at the limit's rate. The
 * block is small against the limit (bucket_block: 1/64, at most 256), and
 * 1 for limits under 128 a minute, where every decision goes to Redis.
 *
 * Why one script. Taking from the user's and the global bucket must be one
 * step: two commands would let another instance see one debited and not
 * the other. The script also reads Redis's clock (TIME), so instances with
 * skewed clocks agree. Each key holds "at debt" (bucket.h: the TAT as the
 * debt at the last change; Lua prints doubles with %.17g, no digit lost)
 * and expires when the bucket is full, so idle users cost Redis nothing.
 *
 * Requests of one user that wait during a loop turn share one call (want:
 * all they ask, plus a block to prefetch), and every call of a turn leaves
 * in one write (redis.c pipelines a turn's commands).
 *
 * The fallback. While Redis is down, or a call fails, the process decides
 * with its own buckets behind a mutex, each holding the limit divided by
 * the instances seen in the last INSTANCE_WINDOW_MS (worker 0 counts them
 * in a sorted set), so that together the instances stay near the limit.
 */
#include "engine/db/limit.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/cfg.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/core/tmr.h"
#include "engine/db/auth.h"
#include "engine/db/bucket.h"
#include "engine/db/redis.h"

#define KEY_USER "ringup:rl:u:"          /* + user: a user's bucket */
#define KEY_GLOBAL "ringup:rl:g"         /* the deployment's bucket */
#define KEY_INSTANCES "ringup:instances" /* sorted set: instance id by last heartbeat (ms) */
#define KEY_MAX (sizeof(KEY_USER) + AUTH_USER_MAX)
#define LEASE_IDLE_MS 1000       /* permits unused this long go back to Redis */
#define SWEEP_MS 1000            /* how often a worker looks for idle leases */
#define HEARTBEAT_MS 5000        /* worker 0 says the instance is alive this often */
#define INSTANCE_WINDOW_MS 30000 /* instances seen within this count */
#define USERS_MAX 16384          /* users a worker tracks at once; past it: local decisions */
#define USER_HEADS 1024          /* hash chains of a worker's users (a power of 2) */
#define LOCAL_SLOTS 4096         /* the fallback's user buckets (a power of 2) */
#define LOCAL_PROBES 16          /* slots a user's bucket may be in */
#define WANT_MAX 65536           /* the most one lease call asks for */
#define WARN_EVERY_MS 10000      /* one warning per worker this often, at most */

/*
 * KEYS: the user's bucket, the global one. ARGV: op ("take" or "give"),
 * need, want, user limit, global limit (0: off). take grants j permits,
 * need <= j <= want, from both buckets, and returns {j, scope, 0,
 * remaining, reset_ms} for the tighter limit (scope 0 user, 1 global); or
 * refuses: {0, scope, retry_ms, remaining, reset_ms} for the limit that
 * refused, retry_ms being when need permits fit. give credits want to both
 * and returns 0. The sums are bucket.c's.
 */
static const char lease_src[] =
    "local P = 60000\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local function load(k)\n"
    "  local v = redis.call('GET', k)\n"
    "  if not v then return 0 end\n"
    "  local at, d = string.match(v, '^(%S+) (%S+)$')\n"
    "  if not at then return 0 end\n"
    "  d = tonumber(d) - math.max(0, now - tonumber(at))\n"
    "  if d < 0 then return 0 end\n"
    "  return d\n"
    "end\n"
    "local function save(k, d)\n"
    "  if d <= 0 then redis.call('DEL', k) return end\n"
    "  redis.call('SET', k, string.format('%.17g %.17g', now, d), 'PX', math.ceil(d) + 1000)\n"
    "end\n"
    "local function fit(d, l, want)\n"
    "  if l == 0 then return want end\n"
    "  local f = math.floor((P - d) * l / P + 1e-6)\n"
    "  if f < 0 then return 0 end\n"
    "  if f > want then return want end\n"
    "  return f\n"
    "end\n"
    "local function retry(d, l, n)\n"
    "  if l == 0 then return 0 end\n"
    "  local w = d + n * P / l - P\n"
    "  if w <= 1e-6 * P / l then return 0 end\n"
    "  return math.ceil(w)\n"
    "end\n"
    "local need, want = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local lim = {tonumber(ARGV[4]), tonumber(ARGV[5])}\n"
    "local d = {load(KEYS[1]), load(KEYS[2])}\n"
    "if ARGV[1] == 'give' then\n"
    "  for i = 1, 2 do\n"
    "    if lim[i] > 0 then save(KEYS[i], d[i] - want * P / lim[i]) end\n"
    "  end\n"
    "  return 0\n"
    "end\n"
    "local j = want\n"
    "for i = 1, 2 do j = math.min(j, fit(d[i], lim[i], want)) end\n"
    "local s = 1\n"
    "if j < need then\n"
    "  local r = -1\n"
    "  for i = 1, 2 do\n"
    "    local w = retry(d[i], lim[i], need)\n"
    "    if lim[i] > 0 and w > r then r = w; s = i end\n"
    "  end\n"
    "  return {0, s - 1, r, fit(d[s], lim[s], lim[s]), math.ceil(d[s])}\n"
    "end\n"
    "for i = 1, 2 do\n"
    "  if lim[i] > 0 then d[i] = d[i] + j * P / lim[i]; save(KEYS[i], d[i]) end\n"
    "end\n"
    "local best = -1\n"
    "for i = 1, 2 do\n"
    "  if lim[i] > 0 then\n"
    "    local f = fit(d[i], lim[i], lim[i])\n"
    "    if best < 0 or f < best then best = f; s = i end\n"
    "  end\n"
    "end\n"
    "return {j, s - 1, 0, best, math.ceil(d[s])}\n";

/*
 * KEYS: the instances' sorted set. ARGV: this instance's id, the window
 * (ms). Marks the instance alive at Redis's time, forgets those not seen
 * within the window, returns how many are left.
 */
static const char heartbeat_src[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local w = tonumber(ARGV[2])\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)\n"
    "redis.call('PEXPIRE', KEYS[1], w)\n"
    "return redis.call('ZCARD', KEYS[1])\n";

static struct redis_script lease_script = {.name = "ratelimit", .src = lease_src};
static struct redis_script heartbeat_script = {.name = "instances", .src = heartbeat_src};

/* ---- the process's fallback ---- */

struct local_slot {
    char user[AUTH_USER_MAX + 1]; /* "" when never used */
    struct bucket b;
};

/* Shared by the workers of the process: the only state they share here. */
static struct {
    pthread_mutex_t mu;
    struct bucket global;
    struct local_slot *slots; /* LOCAL_SLOTS */
    uint32_t instances;       /* atomic: instances seen lately, at least 1 */
} proc = {.mu = PTHREAD_MUTEX_INITIALIZER, .instances = 1};

/* A worker's user: the permits it holds for them, the requests waiting for Redis. */
struct lim_user {
    struct lim *l;
    struct lim_user *hnext; /* hash chain */
    struct lim_user *dnext; /* the list of users with a call to send */
    struct lim_wait *head;  /* waiting, oldest first */
    struct lim_wait *tail;
    uint32_t held;      /* permits leased and not used */
    uint64_t used_ms;   /* last take or lease */
    bool inflight;      /* a lease call is out */
    uint32_t need;      /* the call out: the fewest permits it may grant */
    bool dirty;         /* on the send list */
    uint8_t scope;      /* the last answer: tighter limit */
    uint32_t remaining; /* the last answer: permits left in Redis */
    uint64_t reset_at;  /* the last answer: when that bucket is full (ms, ring clock) */
    char user[AUTH_USER_MAX + 1];
};

struct lim {
    struct ring *ring;
    const struct cfg *cfg;
    struct redis_pool *redis;
    uint32_t id;
    uint32_t ulimit; /* UPLOAD_RATE_LIMIT */
    uint32_t glimit; /* GLOBAL_RATE_LIMIT */
    uint32_t block;  /* bucket_block() */
    uint32_t nusers; /* users tracked */
    bool stopped;
    uint64_t warned; /* last warning (ms) */
    struct lim_user *heads[USER_HEADS];
    struct lim_user *dirty; /* users with waiters and no call out */
    struct tmr sweep;
    struct tmr heartbeat;
};

void lim_setup(const struct cfg *cfg)
{
    (void)cfg;
    redis_script_init(&lease_script);
    redis_script_init(&heartbeat_script);
    proc.slots = calloc(LOCAL_SLOTS, sizeof(*proc.slots));
    if (proc.slots == NULL)
        log_oom();
}

bool lim_on(const struct lim *l)
{
    return l->ulimit != 0 || l->glimit != 0;
}

/* FNV-1a: users are short and trusted (a token's owner). */
static uint32_t hash_user(const char *u)
{
    uint32_t h = 2166136261u;

    while (*u != '\0')
        h = (h ^ (uint8_t)*u++) * 16777619u;
    return h;
}

static uint32_t secs_until(uint64_t at, uint64_t now)
{
    return at > now ? bucket_secs(at - now) : 0;
}

static void count(struct lim *l, const struct lim_verdict *v)
{
    struct met_worker *m = &l->ring->met;

    met_inc(&m->rl_decisions[v->allowed             ? MET_RL_ALLOWED
                             : v->scope == LIM_USER ? MET_RL_REJECTED_USER
                                                    : MET_RL_REJECTED_GLOBAL]);
}

/* The local bucket of user (mu held): its slot, or the least owing of its probes, taken over. */
static struct bucket *local_bucket(const char *user, double now)
{
    uint32_t h = hash_user(user);
    struct local_slot *pick = NULL;
    double least = 0;
    unsigned i;

    for (i = 0; i < LOCAL_PROBES; i++) {
        struct local_slot *s = &proc.slots[(h + i) & (LOCAL_SLOTS - 1)];
        double owed;

        if (strcmp(s->user, user) == 0)
            return &s->b;
        owed = (double)bucket_reset_ms(&s->b, now);
        if (pick == NULL || owed < least) {
            pick = s;
            least = owed;
        }
    }
    /*
     * A full bucket (owed 0) is the same as none. Taking over one that owes
     * lets its user start afresh: only past LOCAL_SLOTS busy users at once,
     * and only while Redis is down.
     */
    snprintf(pick->user, sizeof(pick->user), "%s", user);
    pick->b = (struct bucket){0, 0};
    return &pick->b;
}

/* Decide locally with this process's share of each limit (Redis down or failing). */
static void decide_local(struct lim *l, const char *user, uint32_t n, struct lim_verdict *v)
{
    uint32_t inst = __atomic_load_n(&proc.instances, __ATOMIC_RELAXED);
    uint32_t us = bucket_share(l->ulimit, inst);
    uint32_t gs = bucket_share(l->glimit, inst);
    double now = (double)l->ring->now_ms;
    struct bucket *ub;
    uint32_t ufit;
    uint32_t gfit;

    met_inc(&l->ring->met.rl_local);
    pthread_mutex_lock(&proc.mu);
    ub = local_bucket(user, now);
    ufit = bucket_fit(ub, now, us, n);
    gfit = bucket_fit(&proc.global, now, gs, n);
    v->allowed = ufit >= n && gfit >= n;
    if (v->allowed) {
        bucket_debit(ub, now, us, n);
        bucket_debit(&proc.global, now, gs, n);
        ufit = bucket_fit(ub, now, us, us);
        gfit = bucket_fit(&proc.global, now, gs, gs);
        v->scope = us == 0 || (gs != 0 && gfit < ufit) ? LIM_GLOBAL : LIM_USER;
        v->retry_s = 0;
    } else {
        uint64_t ur = bucket_retry_ms(ub, now, us, n);
        uint64_t gr = bucket_retry_ms(&proc.global, now, gs, n);

        v->scope = gs != 0 && gr > ur ? LIM_GLOBAL : LIM_USER;
        v->retry_s = bucket_secs(ur > gr ? ur : gr);
    }
    if (v->scope == LIM_USER) {
        v->limit = us;
        v->remaining = bucket_fit(ub, now, us, us);
        v->reset_s = bucket_secs(bucket_reset_ms(ub, now));
    } else {
        v->limit = gs;
        v->remaining = bucket_fit(&proc.global, now, gs, gs);
        v->reset_s = bucket_secs(bucket_reset_ms(&proc.global, now));
    }
    pthread_mutex_unlock(&proc.mu);
    count(l, v);
}

static void warn_redis(struct lim *l, const char *what, int err)
{
    if (l->ring->now_ms - l->warned < WARN_EVERY_MS && l->warned != 0)
        return;
    l->warned = l->ring->now_ms;
    log_warn("rate limits decided locally", "reason=%s error=%s worker=%u", what,
             err != 0 ? strerror(-err) : "reply", l->id);
}

/* ---- a worker's users ---- */

static struct lim_user *find(struct lim *l, const char *user)
{
    struct lim_user *e = l->heads[hash_user(user) & (USER_HEADS - 1)];

    while (e != NULL && strcmp(e->user, user) != 0)
        e = e->hnext;
    return e;
}

static struct lim_user *add(struct lim *l, const char *user)
{
    struct lim_user **head = &l->heads[hash_user(user) & (USER_HEADS - 1)];
    struct lim_user *e;

    if (l->nusers >= USERS_MAX)
        return NULL;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        log_oom();
    e->l = l;
    snprintf(e->user, sizeof(e->user), "%s", user);
    e->hnext = *head;
    *head = e;
    l->nusers++;
    return e;
}

/* The verdict of a take from held permits, as the last answer of Redis left them. */
static void held_verdict(const struct lim *l, const struct lim_user *e, struct lim_verdict *v)
{
    v->allowed = true;
    v->scope = e->scope;
    v->limit = e->scope == LIM_USER ? l->ulimit : l->glimit;
    v->remaining = e->remaining + e->held;
    if (v->remaining > v->limit)
        v->remaining = v->limit;
    v->reset_s = secs_until(e->reset_at, l->ring->now_ms);
    v->retry_s = 0;
}

static void enqueue(struct lim *l, struct lim_user *e)
{
    if (e->dirty || e->inflight)
        return;
    e->dirty = true;
    e->dnext = l->dirty;
    l->dirty = e;
}

bool lim_take(struct lim *l, const char *user, uint32_t n, lim_cb cb, struct lim_wait *w,
              struct lim_verdict *v)
{
    struct lim_user *e = find(l, user);

    if (e != NULL && e->head == NULL && e->held >= n) {
        /* The hot path: permits this worker already holds. */
        e->held -= n;
        e->used_ms = l->ring->now_ms;
        held_verdict(l, e, v);
        count(l, v);
        return true;
    }
    if (l->stopped || !redis_up(l->redis)) {
        decide_local(l, user, n, v);
        return true;
    }
    if (e == NULL)
        e = add(l, user);
    if (e == NULL) {
        decide_local(l, user, n, v);
        return true;
    }
    w->next = NULL;
    w->cb = cb;
    w->n = n;
    if (e->tail != NULL)
        e->tail->next = w;
    else
        e->head = w;
    e->tail = w;
    e->used_ms = l->ring->now_ms;
    enqueue(l, e);
    return false;
}

static struct lim_wait *pop(struct lim_user *e)
{
    struct lim_wait *w = e->head;

    e->head = w->next;
    if (e->head == NULL)
        e->tail = NULL;
    w->next = NULL;
    return w;
}

/* Every waiter of e decided locally (Redis failed them). */
static void waiters_local(struct lim *l, struct lim_user *e)
{
    while (e->head != NULL) {
        struct lim_wait *w = pop(e);
        struct lim_verdict v;

        decide_local(l, e->user, w->n, &v);
        w->cb(w, &v);
    }
}

/* Send or fail: a give of n permits of user to Redis, fire-and-forget. */
static void give_redis(struct lim *l, const char *user, uint32_t n)
{
    char key[KEY_MAX];
    char want[16];
    char ul[16];
    char gl[16];
    const char *argv[7];
    size_t lens[7];
    int i;

    snprintf(key, sizeof(key), KEY_USER "%s", user);
    snprintf(want, sizeof(want), "%u", n);
    snprintf(ul, sizeof(ul), "%u", l->ulimit);
    snprintf(gl, sizeof(gl), "%u", l->glimit);
    argv[0] = key;
    argv[1] = KEY_GLOBAL;
    argv[2] = "give";
    argv[3] = "0";
    argv[4] = want;
    argv[5] = ul;
    argv[6] = gl;
    for (i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    /* Lost if Redis is away: the buckets refill at the limit's rate anyway. */
    if (redis_eval(l->redis, &lease_script, NULL, NULL, 0, 2, 7, argv, lens) == 0)
        met_add(&l->ring->met.rl_returned, n);
}

/* Parse a take's answer; false when it is not one. */
static bool parse_take(const struct redisReply *reply, long long out[5])
{
    size_t i;

    if (redis_reply_len(reply) != 5)
        return false;
    for (i = 0; i < 5; i++)
        if (!redis_reply_int(redis_reply_at(reply, i), &out[i]) || out[i] < 0)
            return false;
    return true;
}

static void verdict_of(const struct lim *l, const long long a[5], bool allowed,
                       struct lim_verdict *v)
{
    v->allowed = allowed;
    v->scope = a[1] == 0 ? LIM_USER : LIM_GLOBAL;
    v->limit = v->scope == LIM_USER ? l->ulimit : l->glimit;
    v->remaining = (uint32_t)a[3];
    v->reset_s = bucket_secs((uint64_t)a[4]);
    v->retry_s = allowed ? 0 : bucket_secs((uint64_t)a[2]);
    if (!allowed && v->retry_s == 0)
        v->retry_s = 1;
}

/* A lease call answered: serve the waiters from the grant, refuse them, or ask again. */
static void on_lease(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct lim_user *e = ud;
    struct lim *l = e->l;
    struct lim_verdict v;
    long long a[5];

    (void)tag;
    e->inflight = false;
    if (err != 0 || redis_reply_is_error(reply) || !parse_take(reply, a)) {
        warn_redis(l, err != 0 ? "call failed" : "bad reply", err);
        waiters_local(l, e);
        return;
    }
    e->held += (uint32_t)a[0];
    met_add(&l->ring->met.rl_leased, (uint64_t)a[0]);
    e->scope = a[1] == 0 ? LIM_USER : LIM_GLOBAL;
    e->remaining = (uint32_t)a[3];
    e->reset_at = l->ring->now_ms + (uint64_t)a[4];
    e->used_ms = l->ring->now_ms;
    if (a[0] == 0) {
        /*
         * Refused: no waiter asking as much as the call's need fits now.
         * One asking less (it came during the call, behind a form's
         * further files) asks again next turn.
         */
        verdict_of(l, a, false, &v);
        while (e->head != NULL && e->head->n >= e->need + e->held) {
            struct lim_wait *w = pop(e);
            count(l, &v);
            w->cb(w, &v);
        }
        if (e->head != NULL)
            enqueue(l, e);
        return;
    }
    while (e->head != NULL && e->head->n <= e->held) {
        struct lim_wait *w = pop(e);

        e->held -= w->n;
        verdict_of(l, a, true, &v);
        v.remaining = e->remaining + e->held;
        count(l, &v);
        w->cb(w, &v);
    }
    if (e->head != NULL)
        enqueue(l, e); /* asks for more than the grant: another call, next turn */
}

/* Send user e's lease call: what its waiters need, and a block more to hold. */
static void send_lease(struct lim *l, struct lim_user *e)
{
    char key[KEY_MAX];
    char need[16];
    char want[16];
    char ul[16];
    char gl[16];
    const char *argv[7];
    size_t lens[7];
    uint64_t sum = 0;
    struct lim_wait *w;
    int ret;
    int i;

    for (w = e->head; w != NULL; w = w->next)
        sum += w->n;
    sum = sum - e->held + l->block - 1;
    snprintf(key, sizeof(key), KEY_USER "%s", e->user);
    e->need = e->head->n - e->held;
    snprintf(need, sizeof(need), "%u", e->need);
    snprintf(want, sizeof(want), "%u", (unsigned)(sum < WANT_MAX ? sum : WANT_MAX));
    snprintf(ul, sizeof(ul), "%u", l->ulimit);
    snprintf(gl, sizeof(gl), "%u", l->glimit);
    argv[0] = key;
    argv[1] = KEY_GLOBAL;
    argv[2] = "take";
    argv[3] = need;
    argv[4] = want;
    argv[5] = ul;
    argv[6] = gl;
    for (i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    ret = redis_eval(l->redis, &lease_script, on_lease, e, 0, 2, 7, argv, lens);
    if (ret == 0) {
        e->inflight = true;
        met_inc(&l->ring->met.rl_lease_calls);
        return;
    }
    warn_redis(l, "not sent", ret);
    waiters_local(l, e);
}

/* A turn hook: the calls of the turn's waiting users leave together. */
static void flush(void *ctx)
{
    struct lim *l = ctx;

    while (l->dirty != NULL) {
        struct lim_user *e = l->dirty;

        l->dirty = e->dnext;
        e->dnext = NULL;
        e->dirty = false;
        if (!e->inflight && e->head != NULL)
            send_lease(l, e);
    }
}

/*
 * Back to where they came from at once, not held: the user's next request
 * may reach another worker or instance, which must see them (exact counts
 * with small limits). Gives are rare (a refused form, a client gone).
 */
void lim_give(struct lim *l, const char *user, uint32_t n)
{
    uint32_t inst;
    double now;

    if (!lim_on(l) || n == 0)
        return;
    if (!l->stopped && redis_up(l->redis)) {
        give_redis(l, user, n);
        return;
    }
    inst = __atomic_load_n(&proc.instances, __ATOMIC_RELAXED);
    now = (double)l->ring->now_ms;
    pthread_mutex_lock(&proc.mu);
    bucket_credit(local_bucket(user, now), now, bucket_share(l->ulimit, inst), n);
    bucket_credit(&proc.global, now, bucket_share(l->glimit, inst), n);
    pthread_mutex_unlock(&proc.mu);
}

/* Return the permits of users idle for LEASE_IDLE_MS; forget users with nothing left. */
static void on_sweep(struct tmr *t)
{
    struct lim *l = (struct lim *)((char *)t - offsetof(struct lim, sweep));
    uint64_t now = l->ring->now_ms;
    unsigned i;

    for (i = 0; i < USER_HEADS; i++) {
        struct lim_user **pe = &l->heads[i];

        while (*pe != NULL) {
            struct lim_user *e = *pe;
            bool idle =
                !e->inflight && !e->dirty && e->head == NULL && now - e->used_ms >= LEASE_IDLE_MS;

            if (idle && e->held > 0) {
                give_redis(l, e->user, e->held);
                e->held = 0;
            }
            if (idle) {
                *pe = e->hnext;
                free(e);
                l->nusers--;
                continue;
            }
            pe = &e->hnext;
        }
    }
    if (!l->stopped)
        tmr_set(&l->ring->timers, &l->sweep, now + SWEEP_MS);
}

/* ---- instances ---- */

static void on_heartbeat_reply(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct lim *l = ud;
    long long n;

    (void)tag;
    if (err != 0 || !redis_reply_int(reply, &n) || n <= 0)
        return;
    __atomic_store_n(&proc.instances, (uint32_t)n, __ATOMIC_RELAXED);
    met_set(&l->ring->met.rl_instances, (uint64_t)n);
}

static void heartbeat(struct lim *l)
{
    char window[16];
    const char *argv[3];
    size_t lens[3];

    snprintf(window, sizeof(window), "%u", INSTANCE_WINDOW_MS);
    argv[0] = KEY_INSTANCES;
    argv[1] = l->cfg->instance_id;
    argv[2] = window;
    lens[0] = strlen(argv[0]);
    lens[1] = strlen(argv[1]);
    lens[2] = strlen(argv[2]);
    /* Down: the count stays what it was last, the divisor of the fallback. */
    redis_eval(l->redis, &heartbeat_script, on_heartbeat_reply, l, 0, 1, 3, argv, lens);
}

static void on_heartbeat(struct tmr *t)
{
    struct lim *l = (struct lim *)((char *)t - offsetof(struct lim, heartbeat));

    if (l->stopped)
        return;
    heartbeat(l);
    tmr_set(&l->ring->timers, &l->heartbeat, l->ring->now_ms + HEARTBEAT_MS);
}

/* Redis came or went: the mode gauge; back, worker 0 says it is alive at once. */
static void on_state(void *ctx, bool up)
{
    struct lim *l = ctx;

    met_set(&l->ring->met.rl_shared, up ? 1 : 0);
    if (up && l->id == 0 && !l->stopped)
        heartbeat(l);
    log_info(up ? "rate limits shared" : "rate limits local", "worker=%u", l->id);
}

struct lim *lim_new(struct ring *r, const struct cfg *cfg, struct redis_pool *redis, uint32_t id)
{
    struct lim *l = calloc(1, sizeof(*l));

    if (l == NULL)
        log_oom();
    l->ring = r;
    l->cfg = cfg;
    l->redis = redis;
    l->id = id;
    l->ulimit = cfg->upload_rate_limit;
    l->glimit = cfg->global_rate_limit;
    l->block = bucket_block(l->ulimit, l->glimit);
    tmr_init(&l->sweep, on_sweep);
    tmr_init(&l->heartbeat, on_heartbeat);
    met_set(&r->met.rl_shared, redis_up(redis) ? 1 : 0);
    redis_pool_on_state(redis, on_state, l);
    if (!lim_on(l))
        return l;
    ring_on_turn(r, flush, l);
    tmr_set(&r->timers, &l->sweep, r->now_ms + SWEEP_MS);
    if (id == 0)
        tmr_set(&r->timers, &l->heartbeat, r->now_ms + HEARTBEAT_MS);
    return l;
}

void lim_stop(struct lim *l)
{
    unsigned i;

    if (l->stopped)
        return;
    l->stopped = true;
    tmr_cancel(&l->ring->timers, &l->sweep);
    tmr_cancel(&l->ring->timers, &l->heartbeat);
    for (i = 0; i < USER_HEADS; i++) {
        struct lim_user *e;

        for (e = l->heads[i]; e != NULL; e = e->hnext) {
            if (e->held > 0 && redis_up(l->redis))
                give_redis(l, e->user, e->held);
            e->held = 0;
        }
    }
    if (l->id == 0 && lim_on(l) && redis_up(l->redis))
        redis_cmd(l->redis, NULL, NULL, 0, "ZREM %s %s", KEY_INSTANCES, l->cfg->instance_id);
}

void lim_free(struct lim *l)
{
    unsigned i;

    if (l == NULL)
        return;
    for (i = 0; i < USER_HEADS; i++) {
        while (l->heads[i] != NULL) {
            struct lim_user *e = l->heads[i];

            l->heads[i] = e->hnext;
            free(e);
        }
    }
    free(l);
}

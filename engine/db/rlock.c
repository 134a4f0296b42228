/*
 * rlock: distributed locks on the Redis slice. See rlock.h for the model.
 */
#include "engine/db/rlock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "engine/core/log.h"
#include "engine/core/ring.h"
#include "engine/db/redis.h"

/* Delete the key only while it still holds our token. */
static struct redis_script release_script = {
    .name = "rlock_release",
    .src = "if redis.call('get', KEYS[1]) == ARGV[1] then "
           "return redis.call('del', KEYS[1]) else return 0 end",
    .sha = "",
};

/* Push the expiry only while the key still holds our token. */
static struct redis_script extend_script = {
    .name = "rlock_extend",
    .src = "if redis.call('get', KEYS[1]) == ARGV[1] then "
           "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
    .sha = "",
};

void rlock_setup(void)
{
    redis_script_init(&release_script);
    redis_script_init(&extend_script);
}

static void ka_tick(struct tmr *t);

int rlock_init(struct rlock *l, struct redis_pool *p, struct ring *r, const char *key,
               size_t keylen, uint32_t ttl_ms)
{
    memset(l, 0, sizeof(*l));
    if (keylen >= RLOCK_KEY_MAX)
        return -ENAMETOOLONG;
    l->pool = p;
    l->ring = r;
    memcpy(l->key, key, keylen);
    l->keylen = keylen;
    l->ttl_ms = ttl_ms > 0 ? ttl_ms : 1;
    tmr_init(&l->timer, ka_tick);
    return 0;
}

/* A fresh owner token: 128 random bits in hex. */
static int new_owner(struct rlock *l)
{
    unsigned char b[RLOCK_OWNER_LEN / 2];
    size_t i;

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return -EIO;
    for (i = 0; i < sizeof(b); i++)
        snprintf(l->owner + 2 * i, 3, "%02x", b[i]);
    return 0;
}

static void ka_stop(struct rlock *l)
{
    l->ka_on = false;
    tmr_cancel(&l->ring->timers, &l->timer);
}

/* Finish the caller's operation with result. */
static void op_done(struct rlock *l, int result)
{
    rlock_cb cb = l->cb;

    l->op_busy = false;
    l->cb = NULL;
    if (cb != NULL)
        cb(l->ud, result);
}

/* 1 or 0 of a script, or the error as -errno. */
static int script_result(struct redisReply *reply, int err)
{
    long long v;

    if (err != 0)
        return err;
    if (!redis_reply_int(reply, &v))
        return -EPROTO;
    return v == 1 ? RLOCK_HELD : RLOCK_NOT_HELD;
}

static void on_acquire(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct rlock *l = ud;
    size_t len;
    const char *s;

    (void)tag;
    if (err != 0) {
        op_done(l, err);
        return;
    }
    if (redis_reply_is_error(reply)) {
        op_done(l, -EPROTO);
        return;
    }
    /* SET NX answers OK when it set the key, nil when the key exists. */
    s = redis_reply_str(reply, &len);
    l->held = s != NULL && len == 2 && memcmp(s, "OK", 2) == 0;
    if (l->held)
        l->valid_until_ms = l->ring->now_ms + l->ttl_ms;
    op_done(l, l->held ? RLOCK_HELD : RLOCK_NOT_HELD);
}

int rlock_acquire(struct rlock *l, rlock_cb cb, void *ud)
{
    char ttl[16];
    const char *argv[6];
    size_t lens[6];
    int ret;

    if (l->op_busy)
        return -EBUSY;
    if (new_owner(l) < 0)
        return -EIO;
    snprintf(ttl, sizeof(ttl), "%u", l->ttl_ms);
    argv[0] = "SET";
    argv[1] = l->key;
    argv[2] = l->owner;
    argv[3] = "NX";
    argv[4] = "PX";
    argv[5] = ttl;
    lens[0] = 3;
    lens[1] = l->keylen;
    lens[2] = RLOCK_OWNER_LEN;
    lens[3] = 2;
    lens[4] = 2;
    lens[5] = strlen(ttl);
    ret = redis_cmdv(l->pool, on_acquire, l, 0, 6, argv, lens);
    if (ret < 0)
        return ret;
    l->op_busy = true;
    l->cb = cb;
    l->ud = ud;
    return 0;
}

/* Send the extend script; cb as a redis_cb with l as ud. */
static int send_extend(struct rlock *l, void (*cb)(void *, uint64_t, struct redisReply *, int))
{
    char ttl[16];
    const char *argv[3];
    size_t lens[3];

    snprintf(ttl, sizeof(ttl), "%u", l->ttl_ms);
    argv[0] = l->key;
    argv[1] = l->owner;
    argv[2] = ttl;
    lens[0] = l->keylen;
    lens[1] = RLOCK_OWNER_LEN;
    lens[2] = strlen(ttl);
    /* The tag carries the send time: the lock holds ttl from then, not from the answer. */
    return redis_eval(l->pool, &extend_script, cb, l, l->ring->now_ms, 1, 3, argv, lens);
}

static void on_extend(void *ud, uint64_t sent_ms, struct redisReply *reply, int err)
{
    struct rlock *l = ud;
    int result = script_result(reply, err);

    if (result == RLOCK_HELD)
        l->valid_until_ms = sent_ms + l->ttl_ms;
    else if (result == RLOCK_NOT_HELD)
        l->held = false;
    op_done(l, result);
}

int rlock_extend(struct rlock *l, rlock_cb cb, void *ud)
{
    int ret;

    if (l->op_busy)
        return -EBUSY;
    ret = send_extend(l, on_extend);
    if (ret < 0)
        return ret;
    l->op_busy = true;
    l->cb = cb;
    l->ud = ud;
    return 0;
}

static void on_release(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct rlock *l = ud;
    int result = script_result(reply, err);

    (void)tag;
    if (result >= 0)
        l->held = false;
    op_done(l, result);
}

int rlock_release(struct rlock *l, rlock_cb cb, void *ud)
{
    const char *argv[2] = {l->key, l->owner};
    size_t lens[2] = {l->keylen, RLOCK_OWNER_LEN};
    int ret;

    if (l->op_busy)
        return -EBUSY;
    ka_stop(l);
    ret = redis_eval(l->pool, &release_script, on_release, l, 0, 1, 2, argv, lens);
    if (ret < 0)
        return ret;
    l->op_busy = true;
    l->cb = cb;
    l->ud = ud;
    return 0;
}

/* The keep-alive's lock is gone: stop and tell its owner once. */
static void ka_lost(struct rlock *l)
{
    l->held = false;
    ka_stop(l);
    if (l->on_lost != NULL)
        l->on_lost(l->lost_ud, RLOCK_NOT_HELD);
}

static void on_ka_extend(void *ud, uint64_t sent_ms, struct redisReply *reply, int err)
{
    struct rlock *l = ud;
    int result = script_result(reply, err);

    l->ka_busy = false;
    if (!l->ka_on)
        return; /* released meanwhile */
    if (result == RLOCK_HELD) {
        l->valid_until_ms = sent_ms + l->ttl_ms;
        return;
    }
    /* An error leaves the lock ours until valid_until_ms: the next tick tries again. */
    if (result == RLOCK_NOT_HELD || l->ring->now_ms >= l->valid_until_ms)
        ka_lost(l);
}

static void ka_tick(struct tmr *t)
{
    struct rlock *l = (struct rlock *)(void *)((char *)t - offsetof(struct rlock, timer));
    uint64_t every = l->ttl_ms / 3 > 0 ? l->ttl_ms / 3 : 1;

    if (!l->ka_on)
        return;
    if (l->ring->now_ms >= l->valid_until_ms) {
        ka_lost(l);
        return;
    }
    tmr_set(&l->ring->timers, &l->timer, l->ring->now_ms + every);
    if (!l->ka_busy && send_extend(l, on_ka_extend) == 0)
        l->ka_busy = true;
}

void rlock_keepalive(struct rlock *l, rlock_cb on_lost, void *ud)
{
    uint64_t every = l->ttl_ms / 3 > 0 ? l->ttl_ms / 3 : 1;

    l->on_lost = on_lost;
    l->lost_ud = ud;
    l->ka_on = true;
    tmr_set(&l->ring->timers, &l->timer, l->ring->now_ms + every);
}

bool rlock_idle(const struct rlock *l)
{
    return !l->op_busy && !l->ka_busy;
}

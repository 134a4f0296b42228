/*
 * redis: a worker's slice of Redis connections, driven from its ring.
 *
 * hiredis async contexts whose event hooks (addRead/delRead/addWrite/
 * delWrite/cleanup) are the ring's poll seam (ring_poll_add/del): no call on
 * a worker ever blocks on Redis. Commands queued during one loop turn leave
 * in one write (hiredis buffers them; the write happens when the socket's
 * POLLOUT comes back, after the turn). Replies come back in order, so each
 * connection keeps its commands in flight in a FIFO, and the oldest one past
 * REDIS_COMMAND_TIMEOUT fails it and every later one on that connection
 * (-ETIMEDOUT), and the connection is dropped and reopened.
 *
 * Each worker owns REDIS_POOL_MIN..REDIS_POOL_MAX split across workers, and
 * a process-wide count keeps every worker's connections together under
 * REDIS_MAX_CONNECTIONS. A lost connection is reopened REDIS_RETRY_ATTEMPTS
 * times REDIS_RETRY_DELAY apart, then slowly (redis_slow_retry_ms()) for as
 * long as the process lives: a Redis back hours later is picked up.
 *
 * Redis is an accelerator: while no connection is up, redis_cmd() refuses at
 * once (-ENOTCONN) and callers go on without it (local rate limits, the
 * database for metadata, the event backlog).
 */
#ifndef ENGINE_DB_REDIS_H
#define ENGINE_DB_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/db/redis_url.h"

struct ring;
struct cfg;
struct redisReply;
struct redis_pool;

#define REDIS_ARGS_MAX 64 /* arguments of one command (redis_cmdv) */

/*
 * Completion of a command, on the ring thread. err 0: reply is the server's
 * answer (which may be a REDIS_REPLY_ERROR; see redis_reply_*), valid
 * during the call only. Else reply is NULL and err is -ETIMEDOUT (no answer
 * within REDIS_COMMAND_TIMEOUT: whether it ran is unknown), -ECONNABORTED
 * (sent, then the connection was lost: unknown too) or -ESHUTDOWN (the pool
 * is stopping). Called exactly once per accepted command, never from inside
 * redis_cmd().
 */
typedef void (*redis_cb)(void *ud, uint64_t tag, struct redisReply *reply, int err);

/* A connection's state changed: up is true when the pool has a ready connection. */
typedef void (*redis_state_fn)(void *ctx, bool up);

/*
 * A Lua script, defined once (static) by the module that uses it: the SHA1
 * is computed by redis_script_init() at start-up (main thread). Calls go out
 * as EVALSHA; a NOSCRIPT answer (a restarted or flushed Redis) sends the
 * same call again as EVAL, which loads the script, and the caller's callback
 * sees only that second answer.
 */
struct redis_script {
    const char *name; /* for logs and metrics */
    const char *src;  /* Lua source */
    char sha[41];     /* lowercase hex SHA1 of src, set by redis_script_init() */
};

/* Compute s->sha (main thread, before workers start). */
void redis_script_init(struct redis_script *s);

/*
 * Parse REDIS_URL once on the main thread before workers start (and resolve
 * a host name to an address, so that no worker calls getaddrinfo). Returns 0
 * or -EINVAL with err set.
 */
int redis_setup(const struct cfg *cfg, char *err, size_t errlen);

/*
 * Set up the worker's pool on ring r (ring thread) and open its minimum
 * connections in the background. Never fails: a Redis that is down only
 * means redis_up() is false.
 */
struct redis_pool *redis_pool_new(struct ring *r, const struct cfg *cfg, uint32_t workers);

/* Register fn to hear when the pool goes up or down (at most 4 per pool). */
void redis_pool_on_state(struct redis_pool *p, redis_state_fn fn, void *ctx);

/* True while a connection is ready for commands. */
bool redis_up(const struct redis_pool *p);

/*
 * Send a command: argv[i] is lens[i] bytes (binary safe). Returns 0 (cb will
 * be called exactly once; cb may be NULL for fire-and-forget), or -ENOTCONN
 * (no ready connection: not sent, cb not called), -ESHUTDOWN, -E2BIG.
 */
int redis_cmdv(struct redis_pool *p, redis_cb cb, void *ud, uint64_t tag, int argc,
               const char *const *argv, const size_t *lens);

/* redis_cmdv() with a printf-like format, as hiredis's redisvFormatCommand (%s, %b, %d...). */
int redis_cmd(struct redis_pool *p, redis_cb cb, void *ud, uint64_t tag, const char *fmt, ...);

/*
 * Call a script: EVALSHA sha nkeys keys... args...; argv holds the nkeys
 * keys then the arguments. Same returns and callback as redis_cmdv().
 */
int redis_eval(struct redis_pool *p, struct redis_script *s, redis_cb cb, void *ud, uint64_t tag,
               int nkeys, int argc, const char *const *argv, const size_t *lens);

/* Close down: fail what is in flight with -ESHUTDOWN, close every connection. */
void redis_pool_stop(struct redis_pool *p);

/* True once every connection of a stopped pool is closed (no poll in flight). */
bool redis_pool_stopped(const struct redis_pool *p);

/* Free the pool (after the ring stopped). */
void redis_pool_free(struct redis_pool *p);

/* How long the slow retry waits between attempts once REDIS_RETRY_ATTEMPTS ran out. */
uint64_t redis_slow_retry_ms(const struct cfg *cfg);

/* ---- replies (NULL-safe) ---- */

/* True when reply is an integer; its value in *v. */
bool redis_reply_int(const struct redisReply *reply, long long *v);

/* A string or status reply's bytes (NULL otherwise), length in *len. */
const char *redis_reply_str(const struct redisReply *reply, size_t *len);

/* True when reply is a Redis error (then its text in redis_reply_str()). */
bool redis_reply_is_error(const struct redisReply *reply);

/* Element i of an array reply, or NULL. */
const struct redisReply *redis_reply_at(const struct redisReply *reply, size_t i);

/* Elements of an array reply (0 for anything else). */
size_t redis_reply_len(const struct redisReply *reply);

#endif /* ENGINE_DB_REDIS_H */

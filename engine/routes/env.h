/*
 * env: what every route reaches. Its worker (struct router, the ctx of each
 * connection) and the request going through the router's phases (struct
 * route_req). A header of types only, so that the router and the modules
 * it calls (access, limits, files, ...) share them without including each
 * other.
 */
#ifndef ENGINE_ROUTES_ENV_H
#define ENGINE_ROUTES_ENV_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/conn.h"
#include "engine/db/auth.h"
#include "engine/db/limit.h"
#include "engine/db/token.h"
#include "proto/http.h"

struct ring;
struct cfg;
struct db_pool;
struct redis_pool;
struct auth_cache;
struct xfer;
struct sink_pool;
struct events;
struct progress;
struct route;

/* What the routes reach of their worker (conn_ctx() of each connection). */
struct router {
    struct ring *ring;
    const struct cfg *cfg;
    struct conn_pool *conns;
    struct db_pool *db; /* [0] primary, [1] read replica when ndb is 2 */
    uint8_t ndb;
    struct redis_pool *redis; /* the worker's Redis slice (redis_up() says if usable) */
    struct auth_cache *auth;
    struct xfer *xfer;
    struct sink_pool *sinks;   /* storage sinks */
    struct lim *lim;           /* the upload rate limits */
    struct events *events;     /* file events, with their backlog (db/events.h) */
    struct progress *progress; /* upload progress records (routes/progress.h) */
};

/* The router of a connection's worker. */
static inline struct router *router_of(const struct conn *c)
{
    return conn_ctx(c);
}

/* Who may use a route. */
enum route_auth {
    ROUTE_OPEN,  /* no token (service routes) */
    ROUTE_TOKEN, /* a valid bearer token */
    ROUTE_ANON,  /* a valid bearer token, or none under ALLOW_ANONYMOUS (user "anonymous") */
};

/* What a phase did with a request. */
enum route_rc {
    ROUTE_NEXT,     /* done with it: the next phase runs */
    ROUTE_ANSWERED, /* answered it: no further phase runs */
    ROUTE_PENDING,  /* goes on later: the phase calls route_continue() then */
};

#define ROUTE_CAPS_MAX 2 /* captures ({id}, {name}) in one path pattern */

struct route_req;

/* The router's continuation of a request whose phase went on later (route_continue). */
typedef void (*route_resume_fn)(struct conn *c, struct route_req *q, enum route_rc rc);

/*
 * A request matched to a route, from its head until its handler is done
 * with it. The router allocates it (the table entry's size: a route's own
 * state embeds this struct first), runs its phases, then hands it to the
 * handler, which owns it from then on and frees it with free(). A phase
 * that answers later keeps it meanwhile and frees it only when the
 * connection is gone (conn_deref() is NULL); else it gives it back with
 * route_continue(). Captures are spans of the request's head, not decoded:
 * valid until the request completes (copy what outlives it).
 */
struct route_req {
    const struct route *route;            /* the table entry (the router's) */
    struct router *rt;                    /* the worker */
    uint64_t conn;                        /* conn_ref() of the requester */
    route_resume_fn resume;               /* set by the router */
    uint8_t phase;                        /* the phase running (the router's enum) */
    uint8_t auth;                         /* enum route_auth of the route */
    bool close;                           /* the response closes the connection */
    uint8_t ncap;                         /* captures in cap[] */
    struct http_span cap[ROUTE_CAPS_MAX]; /* the path's captures, raw, in order (see above) */
    char user[AUTH_USER_MAX + 1];         /* after the auth phase: the caller ("" for OPEN) */
    struct auth_wait wait;                /* auth: linked while waiting for a token lookup */
    uint8_t hash[TOK_HASH_LEN];           /* auth: the bearer token's hash */
    uint16_t cost;                        /* permits of the rate limits it takes (parse phase) */
    struct lim_wait lim;                  /* limits: linked while Redis decides */
};

/* A phase of a request (parse, auth, limits): what it did with q. */
typedef enum route_rc (*route_step_fn)(struct conn *c, struct route_req *q);

/* A route's handler: owns q from the call on; what conn should do next. */
typedef enum conn_verdict (*route_handler_fn)(struct conn *c, struct route_req *q);

/*
 * A phase that returned ROUTE_PENDING is done with q: ROUTE_NEXT (the next
 * phase runs) or ROUTE_ANSWERED (it answered; the router frees q and the
 * connection goes on). Ring thread, with the connection conn_deref() gave.
 */
static inline void route_continue(struct conn *c, struct route_req *q, enum route_rc rc)
{
    q->resume(c, q, rc);
}

#endif /* ENGINE_ROUTES_ENV_H */

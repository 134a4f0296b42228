/*
 * router: the request handler of a worker's connections. It matches a
 * request to its route and answers connection-level failures; every route
 * reaches the rest of its worker through struct router.
 */
#ifndef ENGINE_ROUTES_ROUTER_H
#define ENGINE_ROUTES_ROUTER_H

#include <stdint.h>

#include "engine/core/conn.h"

struct ring;
struct cfg;
struct db_pool;
struct auth_cache;
struct xfer;
struct sink_pool;

/* What the routes reach of their worker (conn_ctx() of each connection). */
struct router {
    struct ring *ring;
    const struct cfg *cfg;
    struct conn_pool *conns;
    struct db_pool *db; /* [0] primary, [1] read replica when ndb is 2 */
    uint8_t ndb;
    struct auth_cache *auth;
    struct xfer *xfer;
    struct sink_pool *sinks; /* storage sinks */
};

/* The handler given to conn_pool_new(), with a struct router as its ctx. */
extern const struct conn_handler router_handler;

/* The router of a connection's worker. */
static inline struct router *router_of(const struct conn *c)
{
    return conn_ctx(c);
}

#endif /* ENGINE_ROUTES_ROUTER_H */

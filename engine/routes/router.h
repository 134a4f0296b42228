/*
 * router: the request handler of a worker's connections. It matches each
 * request against one table of routes and runs the matched route through
 * its phases; it answers connection-level failures. What the routes reach
 * of their worker (struct router, router_of) is in env.h.
 */
#ifndef ENGINE_ROUTES_ROUTER_H
#define ENGINE_ROUTES_ROUTER_H

#include "engine/core/conn.h"
#include "engine/routes/env.h"

/* The handler given to conn_pool_new(), with a struct router as its ctx. */
extern const struct conn_handler router_handler;

#endif /* ENGINE_ROUTES_ROUTER_H */

/*
 * access: the router's auth phase. Who is asking: a bearer token resolved
 * through the worker's cache, else one coalesced database lookup per token
 * (see auth.h for the caps that keep a flood of unknown tokens away from the
 * database); ALLOW_ANONYMOUS for the routes that admit it.
 */
#ifndef ENGINE_ROUTES_ACCESS_H
#define ENGINE_ROUTES_ACCESS_H

#include "engine/routes/env.h"

/*
 * Resolve q's caller into q->user, as q->auth says. ROUTE_NEXT: known (or
 * anonymous, or an open route). ROUTE_ANSWERED: refused (401, or 503 when
 * the lookup cannot be made). ROUTE_PENDING: a lookup is in flight; its
 * answer continues q (route_continue) or, if the connection is gone, frees
 * it. Ring thread.
 */
enum route_rc access_check(struct conn *c, struct route_req *q);

#endif /* ENGINE_ROUTES_ACCESS_H */

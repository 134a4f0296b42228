/*
 * limits: the router's limits phase, after auth and before the handler
 * (nginx's PREACCESS): where a request learns whether it may run now. The
 * rate limits of API.md (UPLOAD_RATE_LIMIT per user, GLOBAL_RATE_LIMIT) and
 * backpressure belong here: they need the caller the auth phase found, and
 * must answer (429, 503) before a byte of a body is read.
 */
#ifndef ENGINE_ROUTES_LIMITS_H
#define ENGINE_ROUTES_LIMITS_H

#include <stdbool.h>

#include "engine/routes/env.h"

struct lim_verdict;

/*
 * May q run now? A request whose parse phase set q->cost takes that many
 * permits of the rate limits. ROUTE_NEXT: yes. ROUTE_ANSWERED: refused,
 * answered 429. ROUTE_PENDING: Redis decides; the answer continues q
 * (route_continue) or, if the connection is gone, frees it and gives its
 * permits back. Ring thread.
 */
enum route_rc limits_check(struct conn *c, struct route_req *q);

/*
 * Answer 429 rate_limited with Retry-After and the RateLimit-* lines of
 * verdict v (refused). close: the body is unread.
 */
void limits_refuse(struct conn *c, const struct lim_verdict *v, bool close);

#endif /* ENGINE_ROUTES_LIMITS_H */

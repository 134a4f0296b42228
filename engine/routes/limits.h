/*
 * limits: the router's limits phase, after auth and before the handler
 * (nginx's PREACCESS): where a request learns whether it may run now. The
 * rate limits of API.md (UPLOAD_RATE_LIMIT per user, GLOBAL_RATE_LIMIT) and
 * backpressure belong here: they need the caller the auth phase found, and
 * must answer (429, 503) before a byte of a body is read.
 */
#ifndef ENGINE_ROUTES_LIMITS_H
#define ENGINE_ROUTES_LIMITS_H

#include "engine/routes/env.h"

/*
 * May q run now? ROUTE_NEXT: yes. ROUTE_ANSWERED: refused, answered.
 * ROUTE_PENDING: asking (a shared count); the answer continues q
 * (route_continue) or, if the connection is gone, frees it. No limit is
 * enforced yet: always ROUTE_NEXT. Ring thread.
 */
enum route_rc limits_check(struct conn *c, struct route_req *q);

#endif /* ENGINE_ROUTES_LIMITS_H */

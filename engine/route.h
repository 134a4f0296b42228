/*
 * route: request handlers, the only engine code that speaks HTTP statuses
 * and headers. conn calls in at each request event and for connection-level
 * failures; handlers answer through conn_out_reserve()/conn_out_commit().
 */
#ifndef ENGINE_ROUTE_H
#define ENGINE_ROUTE_H

#include "proto/http.h"

struct conn;

/*
 * A request head is complete. The handler answers before returning (every
 * route of this version answers at once; the body of a request whose route
 * takes none is skipped by conn). Ring thread.
 */
void route_head(struct conn *c, const struct http_head *h, const struct http_parser *p);

/*
 * A connection-level failure to answer: -EBADMSG (malformed request, 400),
 * -EMSGSIZE (head too large, 431), -ETIMEDOUT (request too slow, 408),
 * -ENOTSUP (CONNECT, 501), -EBUSY (connection cap, 503). Queues the error response and closes the
 * connection after it. h is the request head if one was parsed, else NULL.
 */
void route_fail(struct conn *c, int err, const struct http_head *h);

#endif /* ENGINE_ROUTE_H */

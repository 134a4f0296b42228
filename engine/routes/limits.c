/*
 * limits: the limits phase; see limits.h. A request costs what its parse
 * phase said (an upload: 1; a form's further files are charged by upload.c
 * once the form is read); the limiter (engine/db/limit.h) decides now, or
 * after one Redis call, then the request goes on or is answered 429 with
 * its body unread.
 */
#include "engine/routes/limits.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/core/conn.h"
#include "engine/db/limit.h"
#include "engine/routes/reply.h"

void limits_refuse(struct conn *c, const struct lim_verdict *v, bool close)
{
    char extra[160];

    snprintf(extra, sizeof(extra),
             "Retry-After: %u\r\nRateLimit-Limit: %u\r\nRateLimit-Remaining: %u\r\n"
             "RateLimit-Reset: %u\r\n",
             v->retry_s, v->limit, v->remaining, v->reset_s);
    reply_error(c, conn_head(c), 429, "rate_limited",
                v->scope == LIM_USER ? "Too many uploads for this user; retry after Retry-After."
                                     : "Too many uploads on this service; retry after Retry-After.",
                close, extra);
}

static struct route_req *req_of(struct lim_wait *w)
{
    return (struct route_req *)((char *)w - offsetof(struct route_req, lim));
}

/*
 * Refused: 429 before the body, closing (the client may be sending it
 * already; reading it to keep the connection would cost what the limit
 * saves).
 */
static enum route_rc decided(struct conn *c, const struct lim_verdict *v)
{
    if (v->allowed)
        return ROUTE_NEXT;
    limits_refuse(c, v, true);
    return ROUTE_ANSWERED;
}

/* Redis answered for a waiting request: go on, or free it if its connection is gone. */
static void on_decided(struct lim_wait *w, const struct lim_verdict *v)
{
    struct route_req *q = req_of(w);
    struct conn *c = conn_deref(q->rt->conns, q->conn);

    if (c == NULL) {
        if (v->allowed)
            lim_give(q->rt->lim, q->user, q->cost);
        free(q);
        return;
    }
    route_continue(c, q, decided(c, v));
}

enum route_rc limits_check(struct conn *c, struct route_req *q)
{
    struct lim_verdict v;

    if (q->cost == 0 || q->rt->lim == NULL || !lim_on(q->rt->lim))
        return ROUTE_NEXT;
    if (!lim_take(q->rt->lim, q->user, q->cost, on_decided, &q->lim, &v))
        return ROUTE_PENDING;
    return decided(c, &v);
}

/*
 * access: the auth phase; see access.h.
 *
 * A request whose token is not cached waits for one query; requests with the
 * same uncached token share it (auth_flight_join), each linked by the
 * struct auth_wait in its struct route_req. The query's callback answers or
 * continues every waiter, and frees those whose connection is gone.
 *
 * Without a token, ALLOW_ANONYMOUS lets a client upload and read a file by
 * its id as user "anonymous" (ROUTE_ANON routes), nothing more: listing,
 * deleting and links would hand every anonymous file to anyone.
 */
#include "engine/routes/access.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "engine/core/cfg.h"
#include "engine/core/conn.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/db/auth.h"
#include "engine/db/db.h"
#include "engine/db/token.h"
#include "engine/routes/reply.h"

#define BEARER "Bearer "

/* Token lookups in flight never take more than a quarter of a pool's wait queue (auth.h). */
_Static_assert(AUTH_FLIGHTS <= DB_WAIT_MAX / 4, "token lookups would crowd the database queue");

static void unauthorized(struct conn *c, const struct http_head *h, bool close)
{
    reply_error(c, h, 401, "unauthorized", "A valid bearer token is required.", close,
                "WWW-Authenticate: Bearer\r\n");
}

/*
 * A bad token (malformed or unknown): 401. Past AUTH_STRIKES_MAX on one
 * connection the 401 closes it: a client that keeps presenting tokens is
 * guessing, and must pay a new connection for each further few guesses.
 */
static void refuse_token(struct conn *c, const struct http_head *h, struct route_req *q)
{
    bool close = q->close;

    if (auth_strike(q->rt->auth, q->conn) >= AUTH_STRIKES_MAX && !close) {
        met_inc(&q->rt->ring->met.auth_strikeouts);
        close = true;
    }
    unauthorized(c, h, close);
}

static struct route_req *req_of(struct auth_wait *w)
{
    return (struct route_req *)((char *)w - offsetof(struct route_req, wait));
}

/* A token lookup answered: its answer goes to every request that waited for it. */
static void on_token(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct auth_wait *w = auth_flight_end(ud);
    struct route_req *first = req_of(w);
    struct router *r = first->rt;
    const char *user = NULL;

    (void)tag;
    if (err == 0 && db_rows(res) > 0)
        user = db_token_user(res, 0);
    if (err == 0)
        auth_cache_put(r->auth, first->hash, user, r->ring->now_ms);
    while (w != NULL) {
        struct route_req *q = req_of(w);
        struct conn *c;

        w = w->next;
        c = conn_deref(q->rt->conns, q->conn);
        if (c == NULL) {
            free(q);
            continue;
        }
        if (err != 0) {
            reply_db_error(c, err, q->close);
            route_continue(c, q, ROUTE_ANSWERED);
        } else if (user == NULL) {
            refuse_token(c, conn_head(c), q);
            route_continue(c, q, ROUTE_ANSWERED);
        } else {
            snprintf(q->user, sizeof(q->user), "%s", user);
            route_continue(c, q, ROUTE_NEXT);
        }
    }
}

/*
 * Ask the database who owns q's token, or wait for the lookup of the same
 * token already in flight. known: the token was valid lately (a renewal,
 * outside the cap on unknown tokens). Past the cap the request is refused
 * with 503 at once: queueing it would hand the database's wait queue to
 * whoever sends the most unknown tokens.
 */
static enum route_rc lookup(struct conn *c, const struct http_head *h, struct route_req *q,
                            bool known)
{
    struct router *r = q->rt;
    struct auth_flight *f;
    const char *vals[1];
    int lens[1];
    bool started;
    int ret;

    f = auth_flight_join(r->auth, q->hash, known, &q->wait, &started);
    if (f == NULL) {
        met_inc(&r->ring->met.auth_refused);
        reply_error(c, h, 503, "overloaded", "Too many token lookups are in flight; retry later.",
                    q->close, "Retry-After: 1\r\n");
        return ROUTE_ANSWERED;
    }
    if (!started) {
        met_inc(&r->ring->met.auth_coalesced);
        return ROUTE_PENDING;
    }
    met_inc(&r->ring->met.auth_lookups);
    vals[0] = (const char *)q->hash;
    lens[0] = TOK_HASH_LEN;
    ret = db_query(&r->db[0], DB_TOKEN_LOOKUP, vals, lens, 1, 1, true, on_token, f, q->conn);
    if (ret == 0)
        return ROUTE_PENDING;
    /* Nobody joined meanwhile (same loop turn): q is the flight's only waiter. */
    auth_flight_end(f);
    if (ret == -EAGAIN)
        met_inc(&r->ring->met.db_rejected);
    reply_db_error(c, ret, q->close);
    return ROUTE_ANSWERED;
}

enum route_rc access_check(struct conn *c, struct route_req *q)
{
    const struct http_head *h;
    struct router *r = q->rt;
    struct http_span auth;
    const char *user;

    if (q->auth == ROUTE_OPEN)
        return ROUTE_NEXT;
    h = conn_head(c);
    if (!http_header(h, "authorization", &auth)) {
        if (q->auth == ROUTE_ANON && r->cfg->allow_anonymous) {
            snprintf(q->user, sizeof(q->user), "anonymous");
            return ROUTE_NEXT;
        }
        unauthorized(c, h, q->close);
        return ROUTE_ANSWERED;
    }
    if (auth.len <= sizeof(BEARER) - 1 || strncasecmp(auth.p, BEARER, sizeof(BEARER) - 1) != 0 ||
        !tok_wellformed(auth.p + sizeof(BEARER) - 1, auth.len - (sizeof(BEARER) - 1))) {
        refuse_token(c, h, q);
        return ROUTE_ANSWERED;
    }
    tok_hash(auth.p + sizeof(BEARER) - 1, auth.len - (sizeof(BEARER) - 1), q->hash);
    switch (auth_cache_get(r->auth, q->hash, r->ring->now_ms, &user)) {
    case AUTH_VALID:
        met_inc(&r->ring->met.auth_cache_hits);
        snprintf(q->user, sizeof(q->user), "%s", user);
        return ROUTE_NEXT;
    case AUTH_INVALID:
        met_inc(&r->ring->met.auth_cache_hits);
        refuse_token(c, h, q);
        return ROUTE_ANSWERED;
    case AUTH_EXPIRED:
        met_inc(&r->ring->met.auth_cache_misses);
        return lookup(c, h, q, true);
    case AUTH_MISS:
        break;
    }
    met_inc(&r->ring->met.auth_cache_misses);
    return lookup(c, h, q, false);
}

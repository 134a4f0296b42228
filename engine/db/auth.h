/*
 * auth: a worker's bookkeeping of bearer-token lookups, so that
 * authenticating a request is rarely a database round trip and so that
 * clients with unknown tokens cannot take the database from everyone else.
 *
 * - Known tokens: keyed by the token's SHA-256, a user is trusted for
 *   AUTH_TTL_MS (a revoked token stops working within that time). An entry
 *   that expired is kept until its slot is needed: it says the token was
 *   valid lately, so its renewal may use lookups that unknown tokens cannot.
 * - Unknown tokens: remembered for AUTH_NEG_TTL_MS in a table of their own,
 *   so that a flood of random tokens never evicts a user's entry.
 * - Lookups in flight: requests with the same uncached token wait on one
 *   lookup and are all answered by it. Lookups of tokens not known valid are
 *   capped per worker (AUTH_LOOKUPS_MAX); past the cap the caller refuses
 *   the request rather than queue a query.
 * - Bad tokens per connection: counted, so that a connection that keeps
 *   trying tokens can be closed.
 *
 * Fixed size, no allocation after init; ring thread only.
 */
#ifndef ENGINE_DB_AUTH_H
#define ENGINE_DB_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#define AUTH_USER_MAX 64 /* longest user name */

/* Known tokens per worker, in sets of AUTH_WAYS (both powers of two). */
#define AUTH_SLOTS 1024
/* Two ways: two users whose hashes share a set do not evict each other on every request. */
#define AUTH_WAYS 2
/* How long a known token is trusted without the database. */
#define AUTH_TTL_MS 5000
/*
 * How long an unknown token is refused without the database. Short: a
 * token created just after a client tried it works a second later. It only
 * helps against the same bad token repeated (a misconfigured client); random
 * tokens never repeat, which is what the lookup cap is for.
 */
#define AUTH_NEG_TTL_MS 1000
/* Unknown tokens remembered per worker (power of two, direct-mapped). */
#define AUTH_NEG_SLOTS 1024
/*
 * Lookups of tokens not known valid in flight per worker: 1/8 of a pool's
 * wait queue (DB_WAIT_MAX 1024). Even when the database stalls, a flood of
 * unknown tokens holds at most this many queries, and the rest of the queue
 * stays for uploads and the queries of users whose tokens are cached. One
 * lookup takes about a millisecond, so this still allows ~100,000 lookups
 * per second per worker when the database is well.
 */
#define AUTH_LOOKUPS_MAX 128
/*
 * Further lookups in flight kept for renewing tokens that were valid lately
 * (an expired entry): a user whose entry expires during a flood renews it
 * instead of meeting the cap. Together with AUTH_LOOKUPS_MAX: 1/4 of the
 * wait queue at most.
 */
#define AUTH_RENEW_MAX 128
#define AUTH_FLIGHTS (AUTH_LOOKUPS_MAX + AUTH_RENEW_MAX) /* lookups in flight at most */
/*
 * Bad tokens (malformed or unknown) one connection may present; the last
 * one is answered 401 and the connection closed. A client with a wrong
 * token learns it on the first 401; one that keeps trying is guessing, and
 * closing makes each further batch of guesses cost it a new connection.
 * (Lookups in flight per connection need no cap of their own: a connection
 * runs one request at a time, so it has at most one.)
 */
#define AUTH_STRIKES_MAX 4
/* Connections whose bad tokens are counted at once (power of two, direct-mapped). */
#define AUTH_STRIKE_SLOTS 4096

/* A known token. */
struct auth_entry {
    uint8_t hash[32];             /* SHA-256 of the token */
    uint64_t expires_ms;          /* trusted until then; 0: empty slot */
    char user[AUTH_USER_MAX + 1]; /* the token's user */
};

/* An unknown token. */
struct auth_neg {
    uint8_t hash[32];    /* SHA-256 of the token */
    uint64_t expires_ms; /* refused until then; 0: empty slot */
};

/*
 * A request waiting for a lookup: the caller embeds it in its request state
 * and finds the request again from it. Owned by the caller throughout; the
 * flight only links it.
 */
struct auth_wait {
    struct auth_wait *next; /* next waiter of the same flight */
};

/* One lookup in flight and the requests waiting for its answer. */
struct auth_flight {
    uint8_t hash[32];        /* the token looked up */
    bool busy;               /* a lookup is in flight */
    bool known;              /* a renewal of a token valid lately (not counted in the cap) */
    struct auth_wait *first; /* waiters in arrival order; the first started the lookup */
    struct auth_wait *last;
    struct auth_cache *cache; /* owner */
};

/* Bad tokens seen on one connection. */
struct auth_strike {
    uint64_t conn; /* the connection's reference (conn_ref) */
    uint32_t bad;  /* bad tokens it presented; 0: empty slot */
};

struct auth_cache {
    struct auth_entry *slots;    /* AUTH_SLOTS known tokens */
    struct auth_neg *neg;        /* AUTH_NEG_SLOTS unknown tokens */
    struct auth_flight *flights; /* AUTH_FLIGHTS lookups */
    uint32_t lookups;            /* flights busy */
    uint32_t unknown;            /* ... of which for tokens not known valid */
    struct auth_strike *strikes; /* AUTH_STRIKE_SLOTS connections */
};

/* What the cache says about a token. */
enum auth_state {
    AUTH_MISS,    /* nothing: look it up (counts against AUTH_LOOKUPS_MAX) */
    AUTH_VALID,   /* *user is its user */
    AUTH_INVALID, /* looked up lately and not found: refuse it */
    AUTH_EXPIRED, /* valid until lately: look it up again (a renewal) */
};

/* Allocate the tables (aborts when out of memory). */
void auth_cache_init(struct auth_cache *ac);

/* Free them; no flight may be busy. */
void auth_cache_free(struct auth_cache *ac);

/* Look a token hash up; *user is set for AUTH_VALID only (valid until the next put). */
enum auth_state auth_cache_get(const struct auth_cache *ac, const uint8_t hash[32], uint64_t now_ms,
                               const char **user);

/*
 * Remember a lookup's answer: user, or NULL when the token is not valid (it
 * then also loses any entry as a known token). A user longer than
 * AUTH_USER_MAX is not remembered.
 */
void auth_cache_put(struct auth_cache *ac, const uint8_t hash[32], const char *user,
                    uint64_t now_ms);

/*
 * Wait for the lookup of hash: join the one in flight, or start one.
 * *started is true when w is the first waiter: the caller sends the query
 * and ends the flight with auth_flight_end() when it answers (or fails to
 * be sent). known: the token was valid lately (AUTH_EXPIRED). Returns the
 * flight, or NULL when the lookup would pass AUTH_LOOKUPS_MAX (unknown
 * tokens) or AUTH_FLIGHTS: the caller refuses the request, w is not linked.
 */
struct auth_flight *auth_flight_join(struct auth_cache *ac, const uint8_t hash[32], bool known,
                                     struct auth_wait *w, bool *started);

/*
 * The lookup answered (or was never sent): the flight is free again and its
 * waiters, in arrival order, are the caller's to answer.
 */
struct auth_wait *auth_flight_end(struct auth_flight *f);

/*
 * The connection conn (its conn_ref()) presented a bad token. Returns how
 * many it has presented so far (1 for its first). Two connections open at
 * once share a count only when AUTH_STRIKE_SLOTS slot indexes apart; the
 * later one then starts again from 1.
 */
uint32_t auth_strike(struct auth_cache *ac, uint64_t conn);

#endif /* ENGINE_DB_AUTH_H */

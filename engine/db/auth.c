/* auth: token cache, lookups in flight and bad-token counts of one worker. */
#include "engine/db/auth.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/log.h"

#define SETS (AUTH_SLOTS / AUTH_WAYS)

_Static_assert((AUTH_SLOTS & (AUTH_SLOTS - 1)) == 0, "AUTH_SLOTS must be a power of two");
_Static_assert((AUTH_WAYS & (AUTH_WAYS - 1)) == 0 && AUTH_WAYS <= AUTH_SLOTS,
               "AUTH_WAYS must be a power of two not above AUTH_SLOTS");
_Static_assert((AUTH_NEG_SLOTS & (AUTH_NEG_SLOTS - 1)) == 0,
               "AUTH_NEG_SLOTS must be a power of two");
_Static_assert((AUTH_STRIKE_SLOTS & (AUTH_STRIKE_SLOTS - 1)) == 0,
               "AUTH_STRIKE_SLOTS must be a power of two");

void auth_cache_init(struct auth_cache *ac)
{
    unsigned i;

    memset(ac, 0, sizeof(*ac));
    ac->slots = calloc(AUTH_SLOTS, sizeof(*ac->slots));
    ac->neg = calloc(AUTH_NEG_SLOTS, sizeof(*ac->neg));
    ac->flights = calloc(AUTH_FLIGHTS, sizeof(*ac->flights));
    ac->strikes = calloc(AUTH_STRIKE_SLOTS, sizeof(*ac->strikes));
    if (ac->slots == NULL || ac->neg == NULL || ac->flights == NULL || ac->strikes == NULL)
        log_oom();
    for (i = 0; i < AUTH_FLIGHTS; i++)
        ac->flights[i].cache = ac;
}

void auth_cache_free(struct auth_cache *ac)
{
    free(ac->slots);
    free(ac->neg);
    free(ac->flights);
    free(ac->strikes);
    memset(ac, 0, sizeof(*ac));
}

/* The hash is uniformly random: its first bytes pick the set or slot. */
static uint32_t key(const uint8_t hash[32])
{
    uint32_t k;

    memcpy(&k, hash, sizeof(k));
    return k;
}

static struct auth_entry *set_of(const struct auth_cache *ac, const uint8_t hash[32])
{
    return &ac->slots[(key(hash) & (SETS - 1)) * AUTH_WAYS];
}

static struct auth_neg *neg_of(const struct auth_cache *ac, const uint8_t hash[32])
{
    return &ac->neg[key(hash) & (AUTH_NEG_SLOTS - 1)];
}

/* The way of the set holding hash, or NULL. Compared in constant time: hashes of secrets. */
static struct auth_entry *find(const struct auth_cache *ac, const uint8_t hash[32])
{
    struct auth_entry *set = set_of(ac, hash);
    unsigned w;

    for (w = 0; w < AUTH_WAYS; w++)
        if (set[w].expires_ms != 0 && CRYPTO_memcmp(set[w].hash, hash, 32) == 0)
            return &set[w];
    return NULL;
}

enum auth_state auth_cache_get(const struct auth_cache *ac, const uint8_t hash[32], uint64_t now_ms,
                               const char **user)
{
    const struct auth_entry *e = find(ac, hash);
    const struct auth_neg *n;

    if (e != NULL) {
        if (e->expires_ms <= now_ms)
            return AUTH_EXPIRED;
        *user = e->user;
        return AUTH_VALID;
    }
    n = neg_of(ac, hash);
    if (n->expires_ms > now_ms && CRYPTO_memcmp(n->hash, hash, 32) == 0)
        return AUTH_INVALID;
    return AUTH_MISS;
}

/* The way to overwrite: an empty one, else the one that expires first (the least renewed). */
static struct auth_entry *victim(struct auth_entry *set)
{
    struct auth_entry *v = &set[0];
    unsigned w;

    for (w = 0; w < AUTH_WAYS; w++) {
        if (set[w].expires_ms == 0)
            return &set[w];
        if (set[w].expires_ms < v->expires_ms)
            v = &set[w];
    }
    return v;
}

void auth_cache_put(struct auth_cache *ac, const uint8_t hash[32], const char *user,
                    uint64_t now_ms)
{
    struct auth_entry *e = find(ac, hash);
    struct auth_neg *n = neg_of(ac, hash);
    size_t len;

    if (user == NULL) {
        if (e != NULL)
            memset(e, 0, sizeof(*e)); /* revoked: no longer a token valid lately */
        memcpy(n->hash, hash, 32);
        n->expires_ms = now_ms + AUTH_NEG_TTL_MS;
        return;
    }
    if (n->expires_ms != 0 && CRYPTO_memcmp(n->hash, hash, 32) == 0)
        n->expires_ms = 0; /* created since it was refused */
    len = strlen(user);
    if (len > AUTH_USER_MAX)
        return; /* not a user this server created: never cache it */
    if (e == NULL)
        e = victim(set_of(ac, hash));
    memcpy(e->hash, hash, 32);
    memcpy(e->user, user, len);
    e->user[len] = '\0';
    e->expires_ms = now_ms + AUTH_TTL_MS;
}

struct auth_flight *auth_flight_join(struct auth_cache *ac, const uint8_t hash[32], bool known,
                                     struct auth_wait *w, bool *started)
{
    struct auth_flight *free_f = NULL;
    struct auth_flight *f;
    unsigned i;

    w->next = NULL;
    /* A linear walk: at most AUTH_FLIGHTS entries, and only on a cache miss. */
    for (i = 0; i < AUTH_FLIGHTS; i++) {
        f = &ac->flights[i];
        if (!f->busy) {
            if (free_f == NULL)
                free_f = f;
            continue;
        }
        if (CRYPTO_memcmp(f->hash, hash, 32) == 0) {
            f->last->next = w;
            f->last = w;
            *started = false;
            return f;
        }
    }
    if (free_f == NULL || (!known && ac->unknown >= AUTH_LOOKUPS_MAX))
        return NULL;
    f = free_f;
    memcpy(f->hash, hash, 32);
    f->busy = true;
    f->known = known;
    f->first = w;
    f->last = w;
    ac->lookups++;
    if (!known)
        ac->unknown++;
    *started = true;
    return f;
}

struct auth_wait *auth_flight_end(struct auth_flight *f)
{
    struct auth_cache *ac = f->cache;
    struct auth_wait *w = f->first;

    ac->lookups--;
    if (!f->known)
        ac->unknown--;
    f->busy = false;
    f->first = NULL;
    f->last = NULL;
    return w;
}

uint32_t auth_strike(struct auth_cache *ac, uint64_t conn)
{
    /* The reference's low bits are the connection's slot: distinct among open connections. */
    struct auth_strike *s = &ac->strikes[conn & (AUTH_STRIKE_SLOTS - 1)];

    if (s->bad == 0 || s->conn != conn) {
        s->conn = conn;
        s->bad = 0;
    }
    if (s->bad < UINT32_MAX)
        s->bad++;
    return s->bad;
}

/*
 * auth: a worker's cache of bearer-token lookups, so that authenticating a
 * request is not a database round trip. Keyed by the token's SHA-256; holds
 * the user for AUTH_TTL_MS (a revoked token stops working within that time)
 * and remembers unknown tokens for AUTH_NEG_TTL_MS (a flood of bad tokens
 * does not become a flood of queries). Direct-mapped, fixed size, no
 * allocation after init; ring thread only.
 */
#ifndef ENGINE_AUTH_H
#define ENGINE_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#define AUTH_SLOTS 1024      /* cache entries per worker (power of two) */
#define AUTH_TTL_MS 5000     /* how long a known token is trusted without the database */
#define AUTH_NEG_TTL_MS 1000 /* how long an unknown token is refused without the database */
#define AUTH_USER_MAX 64     /* longest user name */

struct auth_entry {
    uint8_t hash[32];             /* SHA-256 of the token */
    uint64_t expires_ms;          /* 0: empty slot */
    char user[AUTH_USER_MAX + 1]; /* "" for an unknown token */
};

struct auth_cache {
    struct auth_entry *slots; /* AUTH_SLOTS entries */
};

void auth_cache_init(struct auth_cache *ac);
void auth_cache_free(struct auth_cache *ac);

/*
 * Look a token hash up. Returns true on a live entry: *user is the user, or
 * "" for a token known to be invalid. False: ask the database.
 */
bool auth_cache_get(const struct auth_cache *ac, const uint8_t hash[32], uint64_t now_ms,
                    const char **user);

/* Remember a lookup's answer (user NULL: the token is not valid). */
void auth_cache_put(struct auth_cache *ac, const uint8_t hash[32], const char *user,
                    uint64_t now_ms);

#endif /* ENGINE_AUTH_H */

/* auth: direct-mapped token cache. */
#include "engine/auth.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"

void auth_cache_init(struct auth_cache *ac)
{
    ac->slots = calloc(AUTH_SLOTS, sizeof(*ac->slots));
    if (ac->slots == NULL)
        log_oom();
}

void auth_cache_free(struct auth_cache *ac)
{
    free(ac->slots);
    ac->slots = NULL;
}

/* The hash is uniformly random: its first bytes pick the slot. */
static struct auth_entry *slot(const struct auth_cache *ac, const uint8_t hash[32])
{
    uint32_t k;

    memcpy(&k, hash, sizeof(k));
    return &ac->slots[k & (AUTH_SLOTS - 1)];
}

bool auth_cache_get(const struct auth_cache *ac, const uint8_t hash[32], uint64_t now_ms,
                    const char **user)
{
    const struct auth_entry *e = slot(ac, hash);

    if (e->expires_ms <= now_ms || CRYPTO_memcmp(e->hash, hash, 32) != 0)
        return false;
    *user = e->user;
    return true;
}

void auth_cache_put(struct auth_cache *ac, const uint8_t hash[32], const char *user,
                    uint64_t now_ms)
{
    struct auth_entry *e = slot(ac, hash);
    size_t n = user != NULL ? strlen(user) : 0;

    if (n > AUTH_USER_MAX)
        return; /* not a user this server created: never cache it */
    memcpy(e->hash, hash, 32);
    memcpy(e->user, user != NULL ? user : "", n);
    e->user[n] = '\0';
    e->expires_ms = now_ms + (user != NULL ? AUTH_TTL_MS : AUTH_NEG_TTL_MS);
}

/*
 * mcache: the file metadata cache in Redis; see mcache.h.
 */
#include "engine/db/mcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/log.h"
#include "engine/core/met.h"

#define KEY_PREFIX "ringup:meta:"
#define TAG_ENTRY 'M'
#define TAG_TOMB 'T'

size_t mcache_key(char *out, const char *id)
{
    int n = snprintf(out, MCACHE_KEY_MAX, KEY_PREFIX "%s", id);

    /* Ids are UUIDs (36 bytes): the key always fits. */
    return n < MCACHE_KEY_MAX ? (size_t)n : MCACHE_KEY_MAX - 1;
}

size_t mcache_encoded_len(const char *owner, size_t body_len)
{
    return 1 + strlen(owner) + 1 + body_len;
}

size_t mcache_encode(char *out, const char *owner, const char *body, size_t body_len)
{
    size_t olen = strlen(owner);

    out[0] = TAG_ENTRY;
    memcpy(out + 1, owner, olen);
    out[1 + olen] = '\0';
    memcpy(out + 2 + olen, body, body_len);
    return 2 + olen + body_len;
}

int mcache_decode(const char *p, size_t len, struct mcache_val *v)
{
    const char *nul;

    if (len == 1 && p[0] == TAG_TOMB)
        return MCACHE_TOMB;
    if (len < 2 || p[0] != TAG_ENTRY)
        return -EBADMSG;
    nul = memchr(p + 1, '\0', len - 1);
    /* An entry has an owner and a body; anything else was not written by us. */
    if (nul == NULL || nul == p + 1 || nul + 1 == p + len)
        return -EBADMSG;
    v->owner = p + 1;
    v->owner_len = (size_t)(nul - v->owner);
    v->body = nul + 1;
    v->body_len = (size_t)(p + len - v->body);
    return MCACHE_ENTRY;
}

bool mcache_owned_by(const struct mcache_val *v, const char *user)
{
    return strlen(user) == v->owner_len && memcmp(user, v->owner, v->owner_len) == 0;
}

int mcache_lookup(struct redis_pool *p, const char *id, redis_cb cb, void *ud, uint64_t tag)
{
    char key[MCACHE_KEY_MAX];
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, 0};

    /* A Redis that is down answers nothing: the database does, at once. */
    if (p == NULL || !redis_up(p))
        return -ENOTCONN;
    lens[1] = mcache_key(key, id);
    return redis_cmdv(p, cb, ud, tag, 2, argv, lens);
}

void mcache_store(struct redis_pool *p, struct met_worker *m, const char *id, const char *owner,
                  const char *body, size_t body_len)
{
    char key[MCACHE_KEY_MAX];
    char ttl[24];
    const char *argv[7] = {"SET", key, NULL, "NX", "PX", ttl, NULL};
    size_t lens[6];
    char *val;

    if (p == NULL || !redis_up(p))
        return;
    val = malloc(mcache_encoded_len(owner, body_len));
    if (val == NULL)
        log_oom();
    argv[2] = val;
    lens[0] = 3;
    lens[1] = mcache_key(key, id);
    lens[2] = mcache_encode(val, owner, body, body_len);
    lens[3] = 2;
    lens[4] = 2;
    lens[5] = (size_t)snprintf(ttl, sizeof(ttl), "%u", MCACHE_TTL_MS);
    /* The arguments are formatted into the command at once: val may go after the call. */
    if (redis_cmdv(p, NULL, NULL, 0, 6, argv, lens) == 0)
        met_inc(&m->mcache_stores);
    free(val);
}

void mcache_invalidate(struct redis_pool *p, struct met_worker *m, const char *id)
{
    static const char tomb[1] = {TAG_TOMB};
    char key[MCACHE_KEY_MAX];
    char ttl[24];
    const char *argv[5] = {"SET", key, tomb, "PX", ttl};
    size_t lens[5];

    if (p == NULL || !redis_up(p)) {
        /* The entry, if any, lives out its MCACHE_TTL_MS: the bound on staleness without Redis. */
        met_inc(&m->mcache_invalidations_skipped);
        return;
    }
    lens[0] = 3;
    lens[1] = mcache_key(key, id);
    lens[2] = 1;
    lens[3] = 2;
    lens[4] = (size_t)snprintf(ttl, sizeof(ttl), "%u", MCACHE_TOMB_MS);
    if (redis_cmdv(p, NULL, NULL, 0, 5, argv, lens) == 0)
        met_inc(&m->mcache_invalidations);
    else
        met_inc(&m->mcache_invalidations_skipped);
}

/*
 * mcache: the file metadata cache in Redis, for GET /v1/files/{id}.
 *
 * One key per file, ringup:meta:<id>, holding either an entry (the owner
 * and the exact JSON body the database path answered) or a tombstone left
 * by a delete. Readers try the key first and, on a miss, store what the
 * database gave with SET ... NX, so that a reader which fetched the row
 * before a delete cannot put back the entry the delete replaced with its
 * tombstone. Every write is fire-and-forget: nothing waits on Redis, and a
 * Redis that is down only means every read goes to PostgreSQL.
 *
 * What changes a file's metadata must call mcache_invalidate() after its
 * change committed. Today that is DELETE only; the job runner that moves a
 * file to processing, ready, rejected or failed must do the same once its
 * UPDATE committed (a tombstone, not a DEL: a reader holding the old row
 * must not store it back).
 *
 * The value: "M" owner '\0' body for an entry (an owner holds no NUL), "T"
 * for a tombstone. Ring thread, except the pure encoders.
 */
#ifndef ENGINE_DB_MCACHE_H
#define ENGINE_DB_MCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/db/redis.h"

struct met_worker;

#define MCACHE_TTL_MS 60000  /* an entry lives this long after a miss stored it */
#define MCACHE_TOMB_MS 60000 /* a tombstone outlives any read that began before its delete */
#define MCACHE_KEY_MAX 64    /* "ringup:meta:" and a UUID, with room */

/* What a cached value says. */
enum mcache_kind {
    MCACHE_ENTRY, /* the metadata: owner and body */
    MCACHE_TOMB,  /* deleted lately: no such file */
};

/* A decoded value: spans into the value's bytes. */
struct mcache_val {
    const char *owner; /* MCACHE_ENTRY: the owner, owner_len bytes */
    size_t owner_len;
    const char *body; /* MCACHE_ENTRY: the JSON answered to GET /v1/files/{id} */
    size_t body_len;
};

/* The key of file id into out (MCACHE_KEY_MAX bytes). Returns its length. */
size_t mcache_key(char *out, const char *id);

/* Bytes mcache_encode() writes for owner and a body of body_len bytes. */
size_t mcache_encoded_len(const char *owner, size_t body_len);

/* Encode an entry into out (mcache_encoded_len() bytes). Returns its length. */
size_t mcache_encode(char *out, const char *owner, const char *body, size_t body_len);

/* Decode a value: MCACHE_ENTRY (v filled), MCACHE_TOMB, or -EBADMSG (not ours). */
int mcache_decode(const char *p, size_t len, struct mcache_val *v);

/* True when a decoded entry belongs to user. */
bool mcache_owned_by(const struct mcache_val *v, const char *user);

/*
 * GET the key of id; cb gets the reply (nil on a miss). Returns 0 (cb will
 * be called) or a negative errno (not sent: go to the database). Counts
 * nothing: the caller knows whether the answer was a hit.
 */
int mcache_lookup(struct redis_pool *p, const char *id, redis_cb cb, void *ud, uint64_t tag);

/*
 * Store the entry of id after a miss (SET NX PX MCACHE_TTL_MS), unless Redis
 * is down. Copies what it needs; never waits.
 */
void mcache_store(struct redis_pool *p, struct met_worker *m, const char *id, const char *owner,
                  const char *body, size_t body_len);

/* The metadata of id changed or went: write its tombstone (SET PX MCACHE_TOMB_MS). */
void mcache_invalidate(struct redis_pool *p, struct met_worker *m, const char *id);

#endif /* ENGINE_DB_MCACHE_H */

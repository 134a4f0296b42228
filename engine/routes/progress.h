/*
 * progress: upload progress in Redis, readable from any instance.
 *
 * A PUT or multipart POST that carries X-Progress-Id (as nginx's
 * upload-progress module takes it) is tracked: its record, a JSON object,
 * lives in Redis under ringup:progress:<owner>:<id>, so that only its owner
 * finds it (another user's lookup misses: 404), and
 *
 *   GET /v1/uploads/{id}/progress
 *
 * answers it as is. The record is written when the upload starts, then at
 * most every PROGRESS_EVERY_MS while bytes arrive (checked against the
 * ring's clock when they do, never written per receive), and by a per-worker
 * timer for an upload that stalls, so its record does not expire while the
 * upload lives; then once more with the outcome, "done" with the file ids or
 * "error" with a code, kept PROGRESS_KEEP_MS. Every write sets the expiry
 * too, so an instance that dies leaves nothing behind for long. Writes are
 * fire-and-forget; while Redis is down they are skipped (counted), and the
 * route answers 503.
 *
 * Ring thread, except progress_id_ok() and progress_key() (pure).
 */
#ifndef ENGINE_ROUTES_PROGRESS_H
#define ENGINE_ROUTES_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/db/auth.h"
#include "engine/routes/env.h"

struct ring;
struct redis_pool;
struct progress;

#define PROGRESS_ID_MAX 64        /* X-Progress-Id: 1..64 of [A-Za-z0-9._-] */
#define PROGRESS_EVERY_MS 250     /* the most often one upload's record is written */
#define PROGRESS_KEEP_MS 60000    /* a record lives this long after its last write */
#define PROGRESS_REFRESH_MS 20000 /* a stalled upload's record is written again this often */
#define PROGRESS_KEY_MAX (sizeof("ringup:progress:") + AUTH_USER_MAX + 1 + PROGRESS_ID_MAX)

/* One tracked upload: embedded in the upload's state, zeroed before progress_begin(). */
struct progress_up {
    struct progress *pg;      /* the worker's tracker; NULL: not tracked (or ended) */
    struct progress_up *prev; /* the tracker's list of uploads in flight */
    struct progress_up *next;
    uint64_t received;          /* body bytes received so far */
    uint64_t expected;          /* Content-Length, when known */
    bool has_expected;          /* false for a chunked body */
    uint64_t written;           /* received as last written */
    uint64_t last_ms;           /* ring time of the last write */
    char key[PROGRESS_KEY_MAX]; /* ringup:progress:<owner>:<id> */
};

/* A request of the progress route: the router's part, then the id. */
struct progress_req {
    struct route_req rq;          /* first: allocated and freed as one block */
    char id[PROGRESS_ID_MAX + 1]; /* {id}; "" when not a valid id (no record has it) */
};

/* True when p[0..len) is a valid progress id. */
bool progress_id_ok(const char *p, size_t len);

/* The key of user's id into out (PROGRESS_KEY_MAX bytes). Returns its length. */
size_t progress_key(char *out, const char *user, const char *id, size_t id_len);

/* A worker's tracker on ring r, writing through p (NULL: never writes). */
struct progress *progress_new(struct ring *r, struct redis_pool *p);

/* Free the tracker (no upload tracked any more). */
void progress_free(struct progress *pg);

/*
 * The X-Progress-Id of h, checked: 0 and *id set (or id->len 0 when there
 * is none), or -EINVAL (malformed: the request is refused with 400).
 */
int progress_header(const struct http_head *h, struct http_span *id);

/*
 * Start tracking an upload of owner whose head h may carry X-Progress-Id
 * (checked by the route's door already); expected is its Content-Length,
 * 0 when has_expected is false. Writes the first record.
 */
void progress_begin(struct progress_up *u, struct progress *pg, const char *owner,
                    const struct http_head *h, uint64_t expected, bool has_expected);

/* n more body bytes arrived. */
void progress_add(struct progress_up *u, uint64_t n);

/* The upload's files are recorded: the final record, "done" with their ids. */
void progress_done(struct progress_up *u, const char *const *ids, uint32_t n);

/* The upload failed (code: API.md's error code): the final record, "error". */
void progress_fail(struct progress_up *u, const char *code);

/* Parse step: keeps a valid {id}; a malformed one is 404 after auth. ROUTE_NEXT. */
enum route_rc progress_parse(struct conn *c, struct route_req *q);

/* Handler of GET /v1/uploads/{id}/progress; owns q. */
enum conn_verdict progress_get(struct conn *c, struct route_req *q);

#endif /* ENGINE_ROUTES_PROGRESS_H */

/*
 * files: the /v1/files metadata routes, as the router's table calls them.
 *
 *   GET    /v1/files?limit=N&after=CURSOR   the caller's files, newest first
 *   GET    /v1/files/{id}                   one file's metadata
 *   DELETE /v1/files/{id}                   the row goes, then its bytes (204)
 *   GET    /v1/files/{id}/content           the bytes (download.c)
 *   POST   /v1/files/{id}/link              not served yet (404)
 *
 * Each route has a parse step, run by the router before the auth phase (a
 * malformed request answers the same with or without a token), and a
 * handler, run once the caller is known. Ring thread.
 */
#ifndef ENGINE_ROUTES_FILES_H
#define ENGINE_ROUTES_FILES_H

#include <stdint.h>

#include "engine/routes/env.h"
#include "proto/ids.h"

/* A /v1/files request: the router's part, then what the parse step found. */
struct files_req {
    struct route_req rq;             /* first: allocated and freed as one block */
    char id[IDS_UUID_LEN + 1];       /* {id}; the nil UUID when not a UUID (no row has it) */
    unsigned limit;                  /* list: ?limit */
    char after_ts[IDS_TS_LEN + 1];   /* list: ?after, decoded: created_at ... */
    char after_id[IDS_UUID_LEN + 1]; /* ... and id; "" without a cursor */
};

/* Parse steps: ROUTE_NEXT, or ROUTE_ANSWERED (400 for a bad ?limit or ?after). */
enum route_rc files_parse_id(struct conn *c, struct route_req *q);
enum route_rc files_parse_list(struct conn *c, struct route_req *q);

/*
 * Handlers of a struct files_req whose caller is known (q->user): each owns
 * q from the call on. They answer later (CONN_PENDING, after a query) or,
 * when the query cannot be queued, at once (CONN_ANSWERED).
 */
enum conn_verdict files_list(struct conn *c, struct route_req *q);
enum conn_verdict files_get(struct conn *c, struct route_req *q);
enum conn_verdict files_delete(struct conn *c, struct route_req *q);
enum conn_verdict files_content(struct conn *c, struct route_req *q);
enum conn_verdict files_link(struct conn *c, struct route_req *q);

#endif /* ENGINE_ROUTES_FILES_H */

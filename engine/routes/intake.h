/*
 * intake: the door of the upload routes, PUT /v1/files/{name} and POST
 * /v1/uploads, as the router's table calls them. What is checked before the
 * caller is known and before a byte of the body is read (a length, its
 * bound, the file name), then the hand-over to upload.c once auth and
 * limits passed. Ring thread.
 */
#ifndef ENGINE_ROUTES_INTAKE_H
#define ENGINE_ROUTES_INTAKE_H

#include <stdint.h>

#include "engine/routes/env.h"
#include "proto/ids.h"

/* An upload request: the router's part, then what the door found. */
struct intake_req {
    struct route_req rq;         /* first: allocated and freed as one block */
    char name[IDS_NAME_MAX + 1]; /* the sanitized file name of a raw body */
    uint64_t expected;           /* Content-Length, 0 if chunked */
};

/*
 * The parse step: ROUTE_NEXT, or ROUTE_ANSWERED and closing: 411 without a
 * length, 413 past MAX_FILE_SIZE (a form: MAX_FILES_PER_REQUEST of them),
 * 400 for a name that is not UTF-8 or a malformed X-Progress-Id.
 */
enum route_rc intake_parse(struct conn *c, struct route_req *q);

/* The handler: upload_begin() for the known caller; owns q (frees it). */
enum conn_verdict intake_begin(struct conn *c, struct route_req *q);

#endif /* ENGINE_ROUTES_INTAKE_H */

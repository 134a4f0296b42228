/*
 * route: what the router and upload.c share. upload.c's entry point (its
 * header until upload.c has one of its own), and the old names of the reply
 * functions upload.c still calls.
 */
#ifndef ENGINE_ROUTES_ROUTE_H
#define ENGINE_ROUTES_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/conn.h"
#include "engine/routes/reply.h"

/*
 * Start storing the body of an authenticated PUT /v1/files/{name} or POST
 * /v1/uploads (upload.c): user is the caller, name the sanitized file name
 * (a raw body's), expected its Content-Length (0 if chunked), for the
 * free-space check; close: the response closes the connection.
 */
enum conn_verdict route_upload_begin(struct conn *c, const char *user, const char *name,
                                     uint64_t expected, bool close);

/*
 * The old names of reply.h's functions, for upload.c only: to be removed
 * once upload.c calls reply_*() (and includes env.h, not router.h).
 */
#define ROUTE_JSON REPLY_JSON
#define route_respond reply_respond
#define route_respond_head reply_head
#define route_error reply_error

#endif /* ENGINE_ROUTES_ROUTE_H */

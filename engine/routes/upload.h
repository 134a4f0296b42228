/*
 * upload: the bodies of PUT /v1/files/{name} and POST /v1/uploads (a raw
 * body, or multipart/form-data), taken to storage sinks, recorded as rows,
 * answered 201 with their JSON.
 */
#ifndef ENGINE_ROUTES_UPLOAD_H
#define ENGINE_ROUTES_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/conn.h"

/*
 * Start storing the body of an authenticated PUT /v1/files/{name} or POST
 * /v1/uploads (upload.c): user is the caller, name the sanitized file name
 * (a raw body's), expected its Content-Length (0 if chunked), for the
 * free-space check; close: the response closes the connection.
 */
enum conn_verdict upload_begin(struct conn *c, const char *user, const char *name,
                               uint64_t expected, bool close);

#endif /* ENGINE_ROUTES_UPLOAD_H */

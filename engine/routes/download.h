/*
 * download: GET/HEAD /v1/files/{id}/content, once the files route found the
 * row: the stored bytes spliced (or read in steps) to the socket.
 */
#ifndef ENGINE_ROUTES_DOWNLOAD_H
#define ENGINE_ROUTES_DOWNLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/conn.h"

/*
 * Send a stored file to an authenticated GET/HEAD of /v1/files/{id}/content:
 * key, size, name, mime (NULL: octet-stream) and sha256 (NULL until known)
 * come from its row and are copied. Honours Range. Returns CONN_ANSWERED
 * (answered already: 416) or CONN_PENDING (the download resumes the
 * connection when it has sent everything). Ring thread.
 */
enum conn_verdict download_begin(struct conn *c, const char *key, uint64_t size, const char *name,
                                 const char *mime, const char *sha256, bool close);

#endif /* ENGINE_ROUTES_DOWNLOAD_H */

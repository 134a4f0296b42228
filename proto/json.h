/*
 * json: the small JSON writers the hot path needs (error bodies), without
 * allocation. Parsing and larger documents use cJSON in the route handlers.
 */
#ifndef PROTO_JSON_H
#define PROTO_JSON_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Write s as a JSON string (quotes included) into out. Control characters,
 * quote and backslash are escaped; bytes >= 0x80 pass through (callers pass
 * UTF-8). Returns bytes written, or -ENOSPC.
 */
ssize_t json_quote(char *out, size_t cap, const char *s, size_t len);

/*
 * Write the error body of API.md: {"error":{"code":"...","message":"..."}}.
 * Returns bytes written, or -ENOSPC.
 */
ssize_t json_error(char *out, size_t cap, const char *code, const char *message);

#endif /* PROTO_JSON_H */

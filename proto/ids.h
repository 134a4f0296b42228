/*
 * ids: the identifiers clients send back to us, checked and coded without
 * I/O or allocation: file ids (canonical UUID text), unpadded base64url, and
 * list cursors (base64url of "<created_at>|<id>", opaque to clients).
 */
#ifndef PROTO_IDS_H
#define PROTO_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define IDS_UUID_LEN 36   /* 8-4-4-4-12 hex digits */
#define IDS_TS_LEN 27     /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
#define IDS_CURSOR_MAX 96 /* an encoded cursor, bytes, NUL included */

/* A canonical UUID (either case); anything else names no file. */
bool ids_uuid_ok(const char *s, size_t n);

/*
 * A timestamp in the exact form cursors carry (UTC, microseconds) that names
 * a real instant: years 0001-9999, days that exist in their month, hours to
 * 23, minutes and seconds to 59.
 */
bool ids_ts_ok(const char *s, size_t n);

/* Unpadded base64url of in[0..n) into out (room for (n * 4 + 2) / 3 + 1); returns the length. */
size_t ids_b64url_encode(char *out, const unsigned char *in, size_t n);

/* Decode unpadded base64url; returns the byte count, or -EBADMSG / -ENOSPC. */
int ids_b64url_decode(unsigned char *out, size_t cap, const char *in, size_t n);

/*
 * A cursor for the row (ts, id) into out[IDS_CURSOR_MAX]; returns its length,
 * or -EINVAL when ts or id is not well formed.
 */
int ids_cursor_encode(char out[IDS_CURSOR_MAX], const char *ts, const char *id);

/*
 * Decode a cursor into ts[IDS_TS_LEN + 1] and id[IDS_UUID_LEN + 1]. Returns 0,
 * or -EBADMSG for anything a page did not hand out.
 */
int ids_cursor_decode(const char *in, size_t n, char ts[IDS_TS_LEN + 1], char id[IDS_UUID_LEN + 1]);

/*
 * Whether s[0..n) is UTF-8 text a database column takes: RFC 3629 sequences
 * only (no overlong forms, no UTF-16 surrogates, nothing past U+10FFFF, no
 * truncated sequence) and no NUL byte.
 */
bool ids_utf8_ok(const char *s, size_t n);

#define IDS_NAME_MAX 255 /* bytes of a stored file name */

/*
 * A client's file name (a URL path segment) made safe to keep as metadata:
 * %XX decoded; '/', '\\' and control bytes (0x00-0x1f, 0x7f) become '_'; a
 * name of dots only becomes "_"; cut to IDS_NAME_MAX bytes without splitting
 * a UTF-8 sequence; empty becomes "file". Never used as a path. Returns the
 * length written to out (NUL-terminated), or -EILSEQ when the decoded name
 * (all of it, not only the part kept) is not UTF-8 (ids_utf8_ok): the caller
 * refuses the request (400). out then still holds a valid name, each byte
 * that broke a sequence turned into '_', for a caller that stores it anyway.
 */
int ids_filename(const char *in, size_t n, char out[IDS_NAME_MAX + 1]);

#endif /* PROTO_IDS_H */

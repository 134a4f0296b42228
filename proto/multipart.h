/*
 * multipart: a streaming multipart/form-data parser (RFC 7578 over RFC
 * 2046). Pure code over byte spans: no I/O, no clock, no allocation. The
 * caller owns the parser (fixed size, about 10 KiB) and every input buffer.
 *
 * The body is fed in receive-buffer pieces with mp_feed(), which stops at
 * each event: a part's headers parsed, a span of its body, its end, the close
 * delimiter. Body bytes are not copied: a data span points into the fed
 * buffer, except for the few bytes that ended one buffer looking like the
 * start of a delimiter and then turned out not to be one; those are kept in
 * the parser (struct mp_parser.carry) and reported from there.
 *
 * A delimiter is CRLF "--" boundary, then optional transport padding (spaces
 * and tabs, at most MP_PAD_MAX) and CRLF, or "--" for the close delimiter.
 * The first delimiter may open the body without its CRLF. Anything else that
 * resembles one is part data. Bytes before the first delimiter (the
 * preamble) and after the close delimiter (the epilogue) are ignored.
 */
#ifndef PROTO_MULTIPART_H
#define PROTO_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MP_BOUNDARY_MAX 70   /* boundary length, bytes (RFC 2046 5.1.1) */
#define MP_PAD_MAX 16        /* transport padding after a boundary; more is not a delimiter */
#define MP_HEADER_MAX 8192   /* one part's header block, bytes, blank line included */
#define MP_NAME_MAX 256      /* form field name, bytes */
#define MP_FILENAME_MAX 1024 /* file name after decoding, bytes of UTF-8 */
#define MP_CTYPE_MAX 256     /* a part's Content-Type value, bytes */
/* Bytes that may be held back: CRLF "--" boundary, padding, then CR or '-'. */
#define MP_CARRY_MAX (4 + MP_BOUNDARY_MAX + MP_PAD_MAX + 1)

/* A span of bytes. */
struct mp_span {
    const char *p;
    size_t len;
};

/*
 * What a part's headers say. Each string is NUL-terminated and has its
 * length beside it. None holds a control character, but content_type may
 * hold tabs (legal in a header value).
 */
struct mp_part {
    char name[MP_NAME_MAX + 1];          /* the name parameter of Content-Disposition */
    char filename[MP_FILENAME_MAX + 1];  /* filename* decoded (checked UTF-8) if given, else
                                            filename unquoted (bytes as sent); "" when neither
                                            is. Not a safe path: may hold '/' and ".." */
    char content_type[MP_CTYPE_MAX + 1]; /* Content-Type as sent, "" when absent */
    uint16_t name_len;                   /* bytes in name */
    uint16_t filename_len;               /* bytes in filename */
    uint16_t content_type_len;           /* bytes in content_type */
    bool is_file; /* a filename or filename* parameter was given (it may be empty) */
};

enum mp_ev_kind {
    MP_EV_NONE,       /* all input consumed, need more */
    MP_EV_PART_BEGIN, /* a part's headers are parsed: see part */
    MP_EV_DATA,       /* data holds the next bytes of the part's body */
    MP_EV_PART_END,   /* the part's body is complete */
    MP_EV_DONE,       /* the close delimiter was seen; later input is ignored */
};

/* What one mp_feed() call found. */
struct mp_event {
    enum mp_ev_kind kind;
    const struct mp_part *part; /* PART_BEGIN and later: the current part, in the parser */
    struct mp_span data;        /* DATA: body bytes (never empty); else {NULL, 0} */
};

enum mp_state {
    MP_S_PREAMBLE, /* before the first delimiter; bytes are ignored */
    MP_S_HEADERS,  /* in a part's header block */
    MP_S_BODY,     /* in a part's body */
    MP_S_CLOSE,    /* the close delimiter ended a part; DONE is still to report */
    MP_S_DONE,     /* DONE reported; the epilogue is ignored */
    MP_S_ERROR,    /* dead: err says why */
};

/*
 * One body's parser. Owned by the caller (per request), prepared with
 * mp_init(); nothing in it needs freeing. Fields are read-only to callers.
 */
struct mp_parser {
    enum mp_state state;             /* where in the body we are */
    int err;                         /* MP_S_ERROR: the error, negative errno */
    uint8_t dlen;                    /* bytes in delim */
    uint8_t hold;                    /* carry[0..hold): a delimiter prefix held back */
    char delim[4 + MP_BOUNDARY_MAX]; /* CRLF "--" boundary */
    char carry[MP_CARRY_MAX];        /* held-back bytes, or data reported from here */
    uint32_t hlen;                   /* bytes in hbuf */
    uint32_t line;                   /* offset in hbuf of the header line in progress */
    uint32_t parts;                  /* PART_BEGIN events so far */
    uint32_t files;                  /* of those, parts with is_file */
    uint64_t part_bytes;             /* body bytes of the current part reported so far */
    struct mp_part part;             /* the current part */
    char hbuf[MP_HEADER_MAX];        /* the current part's header block */
};

/*
 * Find the boundary parameter in a Content-Type value: multipart/form-data
 * (case-insensitive) with boundary=XYZ or boundary="XYZ" among any other
 * parameters. The boundary (1..MP_BOUNDARY_MAX characters of RFC 2046 bchars,
 * not ending in a space) is written to out, NUL-terminated. Returns its
 * length, or -EBADMSG for another type, a missing, empty, duplicated, too
 * long or ill-formed boundary, or a malformed value.
 */
int mp_boundary(const char *content_type, size_t len, char out[MP_BOUNDARY_MAX + 1]);

/*
 * Prepare p for a body with the given boundary (as mp_boundary() returns
 * it; p keeps a copy). An invalid boundary leaves p dead with -EINVAL.
 */
void mp_init(struct mp_parser *p, const char *boundary, size_t blen);

/*
 * Feed body bytes. Consumes some of data, stops at the first event, and
 * returns the bytes consumed; call again with the rest, also with zero bytes
 * left (an event may be pending with nothing left to consume). MP_EV_NONE
 * means every byte was consumed. A DATA span points into data (valid as
 * long as data is), or, for bytes held back from an earlier buffer, into
 * p->carry: valid only until the next mp_feed() call, so a caller that
 * writes it asynchronously copies it or waits before feeding again. Bytes
 * consumed but not yet reported are copied into p: a buffer may be released
 * once the spans into it are written. part strings stay valid until the next
 * PART_BEGIN. Preamble and epilogue are skipped without limit (nothing is
 * stored); the caller's body limit bounds them.
 *
 * Returns -EBADMSG for a malformed part header block (bare LF, folded or
 * malformed lines, no Content-Disposition: form-data with a name, duplicate
 * Content-Disposition or Content-Type, a bad filename* value), -EMSGSIZE for
 * a header block over MP_HEADER_MAX or a name, filename or content type over
 * its limit, -EINVAL after a bad mp_init(). After an error p is dead: every
 * later call returns the same error.
 */
ssize_t mp_feed(struct mp_parser *p, const char *data, size_t len, struct mp_event *ev);

/*
 * The body ended (after mp_feed() consumed all of it). Returns 0 if the
 * close delimiter was seen, -EBADMSG if it was not (a truncated body), or the
 * error p died of.
 */
int mp_finish(const struct mp_parser *p);

/* The state's name ("body"), for logs. */
const char *mp_state_name(enum mp_state s);

#endif /* PROTO_MULTIPART_H */

/*
 * intake: the upload routes' door; see intake.h.
 */
#include "engine/routes/intake.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/core/cfg.h"
#include "engine/core/conn.h"
#include "engine/routes/progress.h"
#include "engine/routes/reply.h"
#include "engine/routes/upload.h"

/* The router frees a request it did not hand over as the struct route_req it begins with. */
_Static_assert(offsetof(struct intake_req, rq) == 0, "struct route_req must come first");

/* The file name of a raw POST: X-Filename, else Content-Disposition's filename, else "file". */
static struct http_span post_name(const struct http_head *h)
{
    struct http_span v;
    struct http_span none = {"file", 4};
    const char *f;
    const char *end;

    if (http_header(h, "x-filename", &v) && v.len > 0)
        return v;
    if (!http_header(h, "content-disposition", &v))
        return none;
    f = memmem(v.p, v.len, "filename=", 9);
    if (f == NULL)
        return none;
    f += 9;
    end = v.p + v.len;
    if (f < end && *f == '"') {
        const char *q = memchr(f + 1, '"', (size_t)(end - f - 1));
        v.p = f + 1;
        v.len = q != NULL ? (size_t)(q - f - 1) : (size_t)(end - f - 1);
    } else {
        const char *semi = memchr(f, ';', (size_t)(end - f));
        v.p = f;
        v.len = semi != NULL ? (size_t)(semi - f) : (size_t)(end - f);
    }
    return v.len > 0 ? v : none;
}

enum route_rc intake_parse(struct conn *c, struct route_req *q)
{
    struct intake_req *in = (struct intake_req *)q;
    const struct http_head *h = conn_head(c);
    const struct http_parser *p = conn_parser(c);
    const struct cfg *cfg = q->rt->cfg;
    struct http_span cl;
    struct http_span ct;
    struct http_span name;
    struct http_span pid;
    uint64_t limit = cfg->max_file_size;
    bool post = h->method == HTTP_POST;

    if (!http_chunked(p) && !http_header(h, "content-length", &cl)) {
        reply_error(c, h, 411, "length_required",
                    "An upload needs Content-Length or Transfer-Encoding: chunked.", true, NULL);
        return ROUTE_ANSWERED;
    }
    /* A form carries up to MAX_FILES_PER_REQUEST files, each checked as it grows. */
    if (post && http_header(h, "content-type", &ct) && ct.len >= 10 &&
        strncasecmp(ct.p, "multipart/", 10) == 0)
        limit = limit * cfg->max_files_per_request + (1u << 20);
    if (http_content_length(p) > limit) {
        reply_error(c, h, 413, "too_large", "The file is larger than MAX_FILE_SIZE.", true, NULL);
        return ROUTE_ANSWERED;
    }
    if (progress_header(h, &pid) < 0) {
        reply_error(c, h, 400, "bad_request",
                    "X-Progress-Id must be 1 to 64 of the characters A-Z a-z 0-9 . _ -.", true,
                    NULL);
        return ROUTE_ANSWERED;
    }
    in->expected = http_content_length(p);
    /* One permit of the rate limits: a form's further files are charged once it is read. */
    q->cost = 1;
    /* PUT names the file in its path; a POST in its headers (a form: in each part). */
    name = post ? post_name(h) : q->cap[0];
    if (ids_filename(name.p, name.len, in->name) < 0) {
        /* The row would be refused after the whole body, as a 503 the client retries forever. */
        reply_error(c, h, 400, "bad_request", "The file name is not valid UTF-8.", true, NULL);
        return ROUTE_ANSWERED;
    }
    return ROUTE_NEXT;
}

enum conn_verdict intake_begin(struct conn *c, struct route_req *q)
{
    struct intake_req *in = (struct intake_req *)q;
    enum conn_verdict v = upload_begin(c, q->user, in->name, in->expected, q->close);

    free(in);
    return v;
}

/*
 * req: request heads, response parsing and value parsing for ringup-load
 * (see req.h). Pure code: no I/O, no clock, no allocation.
 */
#include "bench/load/req.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MP_FIELD "file" /* the form field of the file part */

/* ---- value parsers ---- */

/* Parse decimal digits [p, end) into *out; 0 or -EINVAL (empty, non-digit, overflow). */
static int parse_u64(const char *p, const char *end, uint64_t *out)
{
    uint64_t v = 0;

    if (p == end)
        return -EINVAL;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

int req_parse_url(const char *s, struct req_url *u)
{
    const char *p;
    const char *end;
    uint64_t octet[4];
    uint64_t port = 80;
    unsigned i;

    if (strncmp(s, "http://", 7) != 0)
        return -EINVAL;
    p = s + 7;
    for (i = 0; i < 4; i++) {
        end = p;
        while (*end >= '0' && *end <= '9')
            end++;
        /* No leading zeros (inet_aton would read them as octal) and at most 3 digits. */
        if (end - p > 3 || (end - p > 1 && *p == '0') || parse_u64(p, end, &octet[i]) < 0 ||
            octet[i] > 255)
            return -EINVAL;
        p = end;
        if (i < 3) {
            if (*p != '.')
                return -EINVAL;
            p++;
        }
    }
    if (*p == ':') {
        p++;
        end = p;
        while (*end >= '0' && *end <= '9')
            end++;
        if (end - p > 5 || parse_u64(p, end, &port) < 0 || port == 0 || port > 65535)
            return -EINVAL;
        p = end;
    }
    if (*p == '/')
        p++;
    if (*p != '\0')
        return -EINVAL;
    if (octet[0] != 127)
        return -EPERM;
    u->addr = (uint32_t)(octet[0] << 24 | octet[1] << 16 | octet[2] << 8 | octet[3]);
    u->port = (uint16_t)port;
    snprintf(u->host, sizeof(u->host), "%u.%u.%u.%u:%u", (unsigned)octet[0], (unsigned)octet[1],
             (unsigned)octet[2], (unsigned)octet[3], (unsigned)port);
    return 0;
}

/* Parse a size in [p, end). */
static int parse_size_span(const char *p, const char *end, uint64_t *out)
{
    unsigned shift = 0;
    uint64_t v;

    if (end > p) {
        switch (end[-1]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            break;
        }
        if (shift)
            end--;
    }
    if (parse_u64(p, end, &v) < 0 || v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = v << shift;
    return 0;
}

int req_parse_size(const char *s, uint64_t *out)
{
    return parse_size_span(s, s + strlen(s), out);
}

int req_parse_sizes(const char *s, struct req_sizes *d)
{
    const char *p = s;

    memset(d, 0, sizeof(*d));
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        uint64_t size;
        uint64_t weight;

        if (d->n == REQ_SIZES_MAX || colon == NULL || parse_size_span(p, colon, &size) < 0 ||
            parse_u64(colon + 1, end, &weight) < 0 || weight == 0 || d->total > UINT32_MAX ||
            weight > UINT32_MAX)
            return -EINVAL;
        d->size[d->n] = size;
        d->weight[d->n] = weight;
        d->total += weight;
        d->n++;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

uint64_t req_pick_size(const struct req_sizes *d, uint64_t r)
{
    uint64_t x = r % d->total;
    unsigned i;

    for (i = 0; i + 1 < d->n; i++) {
        if (x < d->weight[i])
            return d->size[i];
        x -= d->weight[i];
    }
    return d->size[d->n - 1];
}

/* ---- builders ---- */

/* A bounded writer: appends until out of room, then remembers that it overflowed. */
struct wr {
    char *p;    /* output */
    size_t cap; /* bytes available */
    size_t len; /* bytes written (or wanted, once over) */
};

__attribute__((format(printf, 2, 3))) static void wr_fmt(struct wr *w, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(w->len < w->cap ? w->p + w->len : NULL, w->len < w->cap ? w->cap - w->len : 0,
                  fmt, ap);
    va_end(ap);
    /* vsnprintf wrote a NUL we do not count; the head is not NUL-terminated. */
    w->len += n > 0 ? (size_t)n : 0;
}

/* Host, Authorization and Connection; the caller adds the rest. */
static void wr_common(struct wr *w, const struct req_common *c)
{
    wr_fmt(w, "Host: %s\r\n", c->host);
    if (c->token != NULL)
        wr_fmt(w, "Authorization: Bearer %s\r\n", c->token);
    if (c->close)
        wr_fmt(w, "Connection: close\r\n");
}

/* Finish: the length, or -EMSGSIZE when the text (and vsnprintf's NUL) did not fit. */
static int wr_end(const struct wr *w)
{
    if (w->len >= w->cap || w->len > INT32_MAX)
        return -EMSGSIZE;
    return (int)w->len;
}

int req_put(char *out, size_t cap, const struct req_common *c, const char *name, uint64_t len)
{
    struct wr w = {out, cap, 0};

    wr_fmt(&w, "PUT /v1/files/%s HTTP/1.1\r\n", name);
    wr_common(&w, c);
    wr_fmt(&w,
           "Content-Type: application/octet-stream\r\n"
           "Content-Length: %" PRIu64 "\r\n\r\n",
           len);
    return wr_end(&w);
}

/* The part's preamble; written by req_multipart and measured by req_multipart_preamble_len. */
static void wr_preamble(struct wr *w, const char *boundary, const char *filename)
{
    wr_fmt(w,
           "--%s\r\n"
           "Content-Disposition: form-data; name=\"" MP_FIELD "\"; filename=\"%s\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n",
           boundary, filename);
}

size_t req_multipart_preamble_len(const char *boundary, const char *filename)
{
    struct wr w = {NULL, 0, 0};

    wr_preamble(&w, boundary, filename);
    return w.len;
}

int req_multipart_epilogue(char *out, size_t cap, const char *boundary)
{
    struct wr w = {out, cap, 0};

    wr_fmt(&w, "\r\n--%s--\r\n", boundary);
    return wr_end(&w);
}

int req_multipart(char *out, size_t cap, const struct req_common *c, const char *boundary,
                  const char *filename, uint64_t file_len, size_t *head_len)
{
    struct wr w = {out, cap, 0};
    size_t pre = req_multipart_preamble_len(boundary, filename);
    size_t epi = strlen(boundary) + 8;
    int ret;

    wr_fmt(&w, "POST /v1/uploads HTTP/1.1\r\n");
    wr_common(&w, c);
    wr_fmt(&w,
           "Content-Type: multipart/form-data; boundary=%s\r\n"
           "Content-Length: %" PRIu64 "\r\n\r\n",
           boundary, (uint64_t)pre + file_len + (uint64_t)epi);
    ret = wr_end(&w);
    if (ret < 0)
        return ret;
    *head_len = w.len;
    wr_preamble(&w, boundary, filename);
    return wr_end(&w);
}

int req_tus_create(char *out, size_t cap, const struct req_common *c, uint64_t len)
{
    struct wr w = {out, cap, 0};

    wr_fmt(&w, "POST /v1/tus/ HTTP/1.1\r\n");
    wr_common(&w, c);
    wr_fmt(&w,
           "Tus-Resumable: 1.0.0\r\n"
           "Upload-Length: %" PRIu64 "\r\n"
           "Content-Length: 0\r\n\r\n",
           len);
    return wr_end(&w);
}

int req_tus_patch(char *out, size_t cap, const struct req_common *c, const char *path,
                  uint64_t offset, uint64_t len)
{
    struct wr w = {out, cap, 0};

    wr_fmt(&w, "PATCH %s HTTP/1.1\r\n", path);
    wr_common(&w, c);
    wr_fmt(&w,
           "Tus-Resumable: 1.0.0\r\n"
           "Upload-Offset: %" PRIu64 "\r\n"
           "Content-Type: application/offset+octet-stream\r\n"
           "Content-Length: %" PRIu64 "\r\n\r\n",
           offset, len);
    return wr_end(&w);
}

int req_get(char *out, size_t cap, const struct req_common *c, const char *path)
{
    struct wr w = {out, cap, 0};

    wr_fmt(&w, "GET %s HTTP/1.1\r\n", path);
    wr_common(&w, c);
    wr_fmt(&w, "\r\n");
    return wr_end(&w);
}

/* ---- response parser ---- */

void req_resp_init(struct req_resp *r)
{
    r->state = REQ_RESP_STATUS;
    r->status = 0;
    r->close = false;
    r->keep_alive = false;
    r->http10 = false;
    r->has_length = false;
    r->chunked = false;
    r->length = 0;
    r->body_seen = 0;
    r->chunk_left = 0;
    r->head_bytes = 0;
    r->line_len = 0;
    r->keep_len = 0;
    r->loc_len = 0;
    r->location[0] = '\0';
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Case-insensitive search for token tok in a comma-separated list [p, end). */
static bool has_token(const char *p, const char *end, const char *tok)
{
    size_t tl = strlen(tok);

    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        const char *te;

        if (e == NULL)
            e = end;
        while (p < e && is_ows(*p))
            p++;
        te = e;
        while (te > p && is_ows(te[-1]))
            te--;
        if ((size_t)(te - p) == tl && strncasecmp(p, tok, tl) == 0)
            return true;
        p = e < end ? e + 1 : end;
    }
    return false;
}

static int parse_status_line(struct req_resp *r, const char *p, size_t n)
{
    /* "HTTP/1.x SSS" then SP reason or nothing */
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
        p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
        (n > 12 && p[12] != ' '))
        return -EBADMSG;
    r->http10 = p[7] == '0';
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    return 0;
}

static int parse_header_line(struct req_resp *r, const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);
    const char *v;
    const char *ve = p + n;
    size_t name_len;
    uint64_t len;

    if (colon == NULL || colon == p || is_ows(p[0]))
        return -EBADMSG; /* no name, or obsolete line folding */
    name_len = (size_t)(colon - p);
    if (is_ows(colon[-1]))
        return -EBADMSG;
    v = colon + 1;
    while (v < ve && is_ows(*v))
        v++;
    while (ve > v && is_ows(ve[-1]))
        ve--;
    if (name_len == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
        if (parse_u64(v, ve, &len) < 0)
            return -EBADMSG;
        if (r->has_length && len != r->length)
            return -EBADMSG;
        r->has_length = true;
        r->length = len;
    } else if (name_len == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
        if (!has_token(v, ve, "chunked"))
            return -EBADMSG; /* a coding we cannot undo */
        r->chunked = true;
    } else if (name_len == 10 && strncasecmp(p, "Connection", 10) == 0) {
        if (has_token(v, ve, "close"))
            r->close = true;
        if (has_token(v, ve, "keep-alive"))
            r->keep_alive = true;
    } else if (name_len == 8 && strncasecmp(p, "Location", 8) == 0) {
        size_t l = (size_t)(ve - v);

        if (l > REQ_LOC_MAX - 1)
            l = REQ_LOC_MAX - 1;
        memcpy(r->location, v, l);
        r->location[l] = '\0';
        r->loc_len = (uint32_t)l;
    }
    return 0;
}

/* The head ended: decide how the body is delimited. */
static int end_of_head(struct req_resp *r)
{
    if (r->http10 && !r->keep_alive)
        r->close = true;
    if (r->status < 200) {
        /* Interim: forget it and read the final response. */
        uint64_t head = r->head_bytes;

        req_resp_init(r);
        r->head_bytes = head;
        return 0;
    }
    if (r->chunked && r->has_length)
        return -EBADMSG; /* ambiguous framing */
    if (r->status == 204 || r->status == 304)
        r->state = REQ_RESP_DONE;
    else if (r->chunked)
        r->state = REQ_RESP_CHUNK;
    else if (r->has_length)
        r->state = r->length == 0 ? REQ_RESP_DONE : REQ_RESP_BODY;
    else {
        r->state = REQ_RESP_EOF_BODY;
        r->close = true;
    }
    return 0;
}

/* A chunk-size line: hex digits, optional extensions. */
static int parse_chunk_size(struct req_resp *r, const char *p, size_t n)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        char ch = p[i];
        unsigned d;

        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
            d = (unsigned)((ch | 0x20) - 'a' + 10);
        else
            break;
        if (v >> 60)
            return -EBADMSG;
        v = v << 4 | d;
    }
    if (i == 0 || (i < n && p[i] != ';' && !is_ows(p[i])))
        return -EBADMSG;
    r->chunk_left = v;
    r->state = v == 0 ? REQ_RESP_TRAILER : REQ_RESP_CHUNK_DATA;
    return 0;
}

/* One complete line (CRLF or LF stripped) in the current state. */
static int on_line(struct req_resp *r, const char *p, size_t n)
{
    switch (r->state) {
    case REQ_RESP_STATUS:
        if (parse_status_line(r, p, n) < 0)
            return -EBADMSG;
        r->state = REQ_RESP_HEADER;
        return 0;
    case REQ_RESP_HEADER:
        if (n == 0)
            return end_of_head(r);
        return parse_header_line(r, p, n);
    case REQ_RESP_CHUNK:
        return parse_chunk_size(r, p, n);
    case REQ_RESP_CHUNK_END:
        if (n != 0)
            return -EBADMSG;
        r->state = REQ_RESP_CHUNK;
        return 0;
    case REQ_RESP_TRAILER:
        if (n == 0)
            r->state = REQ_RESP_DONE;
        return 0;
    default:
        return -EBADMSG;
    }
}

/* Keep the first body bytes for the caller and count them. */
static void take_body(struct req_resp *r, const char *p, size_t n)
{
    if (r->keep_len < REQ_KEEP_MAX) {
        size_t k = REQ_KEEP_MAX - r->keep_len;

        if (k > n)
            k = n;
        memcpy(r->keep + r->keep_len, p, k);
        r->keep_len += (uint32_t)k;
    }
    r->body_seen += n;
}

int req_resp_feed(struct req_resp *r, const char *p, size_t n)
{
    size_t used = 0;

    while (used < n && r->state != REQ_RESP_DONE) {
        const char *s = p + used;
        size_t left = n - used;
        const char *nl;
        size_t take;
        size_t len;
        int ret;

        switch (r->state) {
        case REQ_RESP_BODY:
            take = r->length - r->body_seen < left ? (size_t)(r->length - r->body_seen) : left;
            take_body(r, s, take);
            used += take;
            if (r->body_seen == r->length)
                r->state = REQ_RESP_DONE;
            continue;
        case REQ_RESP_EOF_BODY:
            take_body(r, s, left);
            used += left;
            continue;
        case REQ_RESP_CHUNK_DATA:
            take = r->chunk_left < left ? (size_t)r->chunk_left : left;
            take_body(r, s, take);
            r->chunk_left -= take;
            used += take;
            if (r->chunk_left == 0)
                r->state = REQ_RESP_CHUNK_END;
            continue;
        default:
            break;
        }
        /* Line states: gather up to LF. */
        nl = memchr(s, '\n', left);
        take = nl != NULL ? (size_t)(nl - s) + 1 : left;
        if (r->line_len + take > REQ_LINE_MAX)
            return -EMSGSIZE;
        memcpy(r->line + r->line_len, s, take);
        r->line_len += (uint32_t)take;
        used += take;
        if (r->state == REQ_RESP_STATUS || r->state == REQ_RESP_HEADER)
            r->head_bytes += take;
        if (nl == NULL)
            continue;
        len = r->line_len - 1;
        if (len > 0 && r->line[len - 1] == '\r')
            len--;
        r->line_len = 0;
        ret = on_line(r, r->line, len);
        if (ret < 0)
            return ret;
    }
    return (int)used;
}

int req_resp_eof(struct req_resp *r)
{
    if (r->state == REQ_RESP_EOF_BODY) {
        r->state = REQ_RESP_DONE;
        return 0;
    }
    return r->state == REQ_RESP_DONE ? 0 : -EBADMSG;
}

/* ---- JSON lookups ---- */

/* The position just after `"key"` `:` and whitespace, or NULL. */
static const char *json_value(const char *doc, size_t len, const char *key)
{
    const char *end = doc + len;
    size_t kl = strlen(key);
    const char *p = doc;

    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));

        if (q == NULL || (size_t)(end - q) < kl + 2)
            return NULL;
        if (memcmp(q + 1, key, kl) == 0 && q[kl + 1] == '"') {
            const char *v = q + kl + 2;

            while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
                v++;
            if (v < end && *v == ':') {
                v++;
                while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
                    v++;
                return v;
            }
        }
        p = q + 1;
    }
    return NULL;
}

int req_json_str(const char *doc, size_t len, const char *key, char *out, size_t cap)
{
    const char *end = doc + len;
    const char *v = json_value(doc, len, key);
    const char *q;

    if (v == NULL || v >= end || *v != '"')
        return -ENOENT;
    v++;
    q = v;
    while (q < end && *q != '"' && *q != '\\')
        q++;
    if (q >= end || *q != '"')
        return -ENOENT;
    if ((size_t)(q - v) + 1 > cap)
        return -EMSGSIZE;
    memcpy(out, v, (size_t)(q - v));
    out[q - v] = '\0';
    return (int)(q - v);
}

int req_json_u64(const char *doc, size_t len, const char *key, uint64_t *out)
{
    const char *end = doc + len;
    const char *v = json_value(doc, len, key);
    const char *e;

    if (v == NULL)
        return -ENOENT;
    e = v;
    while (e < end && *e >= '0' && *e <= '9')
        e++;
    if (e < end && (*e == '.' || *e == 'e' || *e == 'E'))
        return -EINVAL;
    return parse_u64(v, e, out);
}

/*
 * http: llhttp glue. The callbacks only copy head spans into the attached
 * struct http_head, record body spans, and pause at events; http_feed()
 * turns each pause into one struct http_ev.
 */
#include "proto/http.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Copy a head fragment to the end of the head storage. */
static int head_append(struct http_parser *p, const char *at, size_t len)
{
    struct http_head *h = p->head;

    if (len > h->cap - h->len) {
        p->err = -EMSGSIZE;
        return -1;
    }
    memcpy(h->buf + h->len, at, len);
    h->len += (uint32_t)len;
    return 0;
}

static int on_message_begin(llhttp_t *ll)
{
    struct http_parser *p = ll->data;

    p->begun = 1;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    struct http_parser *p = ll->data;

    if (head_append(p, at, len) < 0)
        return -1;
    p->head->url_len = (uint16_t)p->head->len;
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    struct http_parser *p = ll->data;
    struct http_head *h = p->head;

    if (!p->in_field) {
        if (h->nhdr == HTTP_MAX_HEADERS) {
            p->err = -EMSGSIZE;
            return -1;
        }
        h->hdr[h->nhdr].name_off = (uint16_t)h->len;
        h->hdr[h->nhdr].name_len = 0;
        h->hdr[h->nhdr].val_off = 0;
        h->hdr[h->nhdr].val_len = 0;
        p->in_field = 1;
    }
    if (head_append(p, at, len) < 0)
        return -1;
    h->hdr[h->nhdr].name_len += (uint16_t)len;
    return 0;
}

/* A field name is a token of at least one character (RFC 9110 5.1); llhttp 8 lets ": x" pass. */
static int on_header_field_complete(llhttp_t *ll)
{
    struct http_parser *p = ll->data;
    struct http_head *h = p->head;

    if (!p->in_field || h->hdr[h->nhdr].name_len == 0) {
        p->err = -EBADMSG;
        return -1;
    }
    p->in_field = 0;
    h->hdr[h->nhdr].val_off = (uint16_t)h->len;
    h->nhdr++;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    struct http_parser *p = ll->data;
    struct http_hdr *hd = &p->head->hdr[p->head->nhdr - 1];

    if (head_append(p, at, len) < 0)
        return -1;
    hd->val_len += (uint16_t)len;
    return 0;
}

/* Values keep no trailing whitespace (llhttp drops only the leading part). */
static int on_header_value_complete(llhttp_t *ll)
{
    struct http_parser *p = ll->data;
    struct http_head *h = p->head;
    struct http_hdr *hd = &h->hdr[h->nhdr - 1];

    while (hd->val_len > 0) {
        char c = h->buf[hd->val_off + hd->val_len - 1];
        if (c != ' ' && c != '\t')
            break;
        hd->val_len--;
    }
    return 0;
}

/*
 * Whether the head's Transfer-Encoding is one field holding exactly
 * "chunked" (any case; llhttp dropped the leading whitespace, we the trailing
 * one). Two fields are one list (RFC 9110 5.3), so they never are.
 */
static bool te_is_chunked(const struct http_head *h)
{
    const struct http_hdr *te = NULL;
    uint16_t i;

    for (i = 0; i < h->nhdr; i++) {
        const struct http_hdr *hd = &h->hdr[i];
        if (hd->name_len == 17 &&
            strncasecmp(h->buf + hd->name_off, "transfer-encoding", 17) == 0) {
            if (te != NULL)
                return false;
            te = hd;
        }
    }
    return te != NULL && te->val_len == 7 && strncasecmp(h->buf + te->val_off, "chunked", 7) == 0;
}

/*
 * Reject framing that two parsers could read differently before the caller
 * sees the head. llhttp itself refuses Content-Length with Transfer-Encoding
 * and duplicate Content-Lengths, but it reports the head of a request whose
 * Transfer-Encoding does not end in chunked and only fails afterwards, and it
 * accepts Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1: faulty framing), an
 * empty Transfer-Encoding, and HTTP/0.9 request lines. CONNECT is not served
 * (501).
 *
 * Transfer codings: a list whose last coding is not chunked leaves the body's
 * length unknown, and RFC 9112 6.3 demands 400 and close; that holds before
 * anything else, so "chunked, gzip" is 400 even though gzip is not
 * implemented either. A list that does end in chunked frames the body, but
 * we decode no other coding ("gzip, chunked" would be stored still gzipped),
 * so anything but a lone "chunked" is 501 (RFC 9112 6.1: a coding the server
 * does not understand), and the connection closes unread.
 */
static int on_headers_complete(llhttp_t *ll)
{
    struct http_parser *p = ll->data;
    struct http_span te;

    if (ll->http_major != 1) {
        p->err = -EBADMSG;
        return -1;
    }
    if (ll->flags & F_TRANSFER_ENCODING) {
        if (!(ll->flags & F_CHUNKED) || (ll->flags & F_CONTENT_LENGTH) || ll->http_minor == 0) {
            p->err = -EBADMSG;
            return -1;
        }
        if (!te_is_chunked(p->head)) {
            p->err = -ENOTSUP;
            p->why = "transfer coding other than chunked";
            return -1;
        }
    } else if (http_header(p->head, "transfer-encoding", &te)) {
        /* An empty Transfer-Encoding sets no llhttp flag: a proxy may still see one. */
        p->err = -EBADMSG;
        return -1;
    }
    if (ll->method == HTTP_CONNECT) {
        p->err = -ENOTSUP;
        p->why = "CONNECT is not supported";
        return -1;
    }
    p->head->method = ll->method;
    p->head->http_minor = ll->http_minor;
    p->head_done = 1;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct http_parser *p = ll->data;

    /* llhttp closes an open span at the end of each buffer, even an empty one. */
    if (len == 0)
        return 0;
    /* Every body span is followed by a pause before the next one. */
    if (p->body.len != 0 && p->body.p + p->body.len != at) {
        p->err = -EPROTO;
        return -1;
    }
    if (p->body.len == 0)
        p->body.p = at;
    p->body.len += len;
    return 0;
}

/* The last chunk (size 0): what follows up to the message's end is trailers. */
static int on_chunk_header(llhttp_t *ll)
{
    struct http_parser *p = ll->data;

    if (ll->content_length == 0)
        p->in_trailers = 1;
    return 0;
}

/* Pause after a chunk so that the next chunk's span is reported separately. */
static int on_chunk_complete(llhttp_t *ll)
{
    struct http_parser *p = ll->data;

    return p->body.len != 0 ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct http_parser *p = ll->data;

    p->msg_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
    .on_message_complete = on_message_complete,
};

void http_init(struct http_parser *p)
{
    memset(p, 0, sizeof(*p));
    llhttp_init(&p->ll, HTTP_REQUEST, &settings);
    p->ll.data = p;
}

void http_begin(struct http_parser *p, struct http_head *h)
{
    h->len = 0;
    h->cap = HTTP_HEAD_MAX;
    h->url_len = 0;
    h->nhdr = 0;
    h->method = 0;
    h->http_minor = 1;
    p->head = h;
    p->head_raw = 0;
    p->in_field = 0;
    p->begun = 0;
    p->head_done = 0;
    p->msg_done = 0;
    p->in_trailers = 0;
    p->tail[0] = '\0';
    p->tail[1] = '\0';
}

int http_body_done(struct http_parser *p)
{
    if (p->err != 0 || !p->head_done || p->msg_done || http_content_length(p) == 0)
        return -EINVAL;
    /* llhttp waits for the bytes it was promised: start it afresh, as for a new message. */
    llhttp_reset(&p->ll);
    p->msg_done = 1;
    return 0;
}

size_t http_head_size(const struct http_head *h)
{
    return offsetof(struct http_head, buf) + h->len;
}

bool http_started(const struct http_parser *p)
{
    return p->begun;
}

/* Account raw head bytes and enforce HTTP_HEAD_MAX on them; an overflow kills the parser. */
static int count_head(struct http_parser *p, size_t n)
{
    if (n > HTTP_HEAD_MAX || p->head_raw + n > HTTP_HEAD_MAX) {
        p->err = -EMSGSIZE;
        return -EMSGSIZE;
    }
    p->head_raw += (uint32_t)n;
    return 0;
}

/*
 * In a head, CR and LF come only as CRLF. Even strict, llhttp 8 takes a bare
 * LF to end the request line or the head, and skips a bare CR or LF before a
 * request line, where a proxy may read on: "\r\n\nGET /x" would hide a
 * request. Header lines themselves are already held to CRLF.
 */
static bool crlf_only(const struct http_parser *p, const char *s, size_t n)
{
    char prev = p->tail[1];
    size_t i;

    for (i = 0; i < n; i++) {
        if ((s[i] == '\n') != (prev == '\r'))
            return false;
        prev = s[i];
    }
    return true;
}

/*
 * Obsolete line folding (RFC 9112 5.2): a field line that starts with SP or
 * HTAB continues the previous one. llhttp 8 unfolds it silently, so
 * "Transfer-Encoding:\r\n chunked" is chunked here while a proxy that does
 * not unfold sees an empty Transfer-Encoding: refuse it (400), as 5.2 allows,
 * rather than replace it. In a header section an LF followed by SP or HTAB is
 * always a fold (or, after the request line, whitespace llhttp refuses too).
 * The caller passes only header-section bytes: the head, or the bytes from
 * the last chunk on, which hold no body.
 */
static bool has_fold(const struct http_parser *p, const char *s, size_t n)
{
    char prev = p->tail[1];
    size_t i;

    for (i = 0; i < n; i++) {
        if (prev == '\n' && (s[i] == ' ' || s[i] == '\t'))
            return true;
        prev = s[i];
    }
    return false;
}

/* Remember the last two bytes consumed, across feeds. */
static void note_tail(struct http_parser *p, const char *data, size_t used)
{
    if (used >= 2) {
        p->tail[0] = data[used - 2];
        p->tail[1] = data[used - 1];
    } else if (used == 1) {
        p->tail[0] = p->tail[1];
        p->tail[1] = data[0];
    }
}

ssize_t http_feed(struct http_parser *p, const char *data, size_t len, struct http_ev *ev)
{
    bool was_in_head = !p->head_done;
    /* A new request needs http_begin() after the previous message completed. */
    enum llhttp_errno rc;
    size_t used;

    ev->kind = HTTP_EV_NONE;
    ev->body.p = NULL;
    ev->body.len = 0;
    if (p->err != 0)
        return p->err;
    p->body.p = NULL;
    p->body.len = 0;

    rc = llhttp_execute(&p->ll, data, len);
    switch (rc) {
    case HPE_OK:
        used = len;
        break;
    case HPE_PAUSED:
        used = (size_t)(llhttp_get_error_pos(&p->ll) - data);
        llhttp_resume(&p->ll);
        break;
    case HPE_PAUSED_UPGRADE:
        /* Upgrade is not offered: carry on as plain HTTP/1.1. */
        used = (size_t)(llhttp_get_error_pos(&p->ll) - data);
        llhttp_resume_after_upgrade(&p->ll);
        break;
    default:
        /* A callback that refused the request said why in p->err. */
        if (p->err == 0)
            p->err = -EBADMSG;
        return p->err;
    }

    /*
     * Count only what was consumed: a feed that resumes after an upgrade
     * pause consumes nothing, and its bytes come back in the next call.
     */
    if (was_in_head && count_head(p, used) < 0)
        return -EMSGSIZE;

    if (was_in_head && !crlf_only(p, data, used)) {
        p->err = -EBADMSG;
        return -EBADMSG;
    }
    /*
     * A feed that reached the last chunk holds no body bytes: the previous
     * feed paused after its chunk (on_chunk_complete). Its first byte may
     * follow a body byte in tail, but then it is not SP or HTAB, or llhttp
     * had refused it.
     */
    if ((was_in_head || (p->in_trailers && p->body.len == 0)) && has_fold(p, data, used)) {
        p->err = -EBADMSG;
        p->why = "obsolete line folding";
        return -EBADMSG;
    }
    /* llhttp takes a bare LF as the empty line that ends the trailers, too. */
    note_tail(p, data, used);
    if (p->msg_done && http_chunked(p) && (p->tail[0] != '\r' || p->tail[1] != '\n')) {
        p->err = -EBADMSG;
        return -EBADMSG;
    }

    /* Headers complete and message complete each pause: one event per feed. */
    ev->body = p->body;
    if (p->msg_done)
        ev->kind = HTTP_EV_DONE;
    else if (p->head_done && was_in_head)
        ev->kind = HTTP_EV_HEAD;
    return (ssize_t)used;
}

const char *http_error_reason(const struct http_parser *p)
{
    llhttp_errno_t e = llhttp_get_errno(&p->ll);
    const char *r = llhttp_get_error_reason(&p->ll);

    if (p->why != NULL)
        return p->why;
    if (p->err == -EMSGSIZE)
        return "request head too large";
    /* Refusals of our own, made in a callback or after llhttp accepted the bytes. */
    if (e == HPE_CB_HEADERS_COMPLETE)
        return "ambiguous message framing or HTTP version";
    if (e == HPE_CB_HEADER_FIELD_COMPLETE)
        return "empty header name";
    if (p->err != 0 && (e == HPE_OK || e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE))
        return "bare CR or LF in the head or trailers";
    return r != NULL ? r : llhttp_errno_name(e);
}

bool http_keep_alive(const struct http_parser *p)
{
    if (p->ll.method == HTTP_CONNECT)
        return false;
    return llhttp_should_keep_alive(&p->ll) != 0;
}

bool http_chunked(const struct http_parser *p)
{
    return (p->ll.flags & F_CHUNKED) != 0;
}

uint64_t http_content_length(const struct http_parser *p)
{
    if (http_chunked(p) || !(p->ll.flags & F_CONTENT_LENGTH))
        return 0;
    return p->ll.content_length;
}

bool http_has_body(const struct http_parser *p)
{
    return http_chunked(p) || http_content_length(p) > 0;
}

struct http_span http_url(const struct http_head *h)
{
    struct http_span s = {h->buf, h->url_len};

    return s;
}

struct http_span http_path(const struct http_head *h)
{
    struct http_span s = {h->buf, h->url_len};
    const char *q = memchr(h->buf, '?', h->url_len);

    if (q != NULL)
        s.len = (size_t)(q - h->buf);
    return s;
}

bool http_query_param(const struct http_head *h, const char *key, struct http_span *val)
{
    struct http_span url = http_url(h);
    const char *q = memchr(url.p, '?', url.len);
    const char *end = url.p + url.len;
    size_t klen = strlen(key);

    if (q == NULL)
        return false;
    q++;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - q) > klen && memcmp(q, key, klen) == 0 && q[klen] == '=') {
            val->p = q + klen + 1;
            val->len = (size_t)(stop - val->p);
            return true;
        }
        q = stop + 1;
    }
    return false;
}

/* Decimal digits at *p (advanced past them); false if none or overflow. */
static bool range_num(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;

    while (*p < end && **p >= '0' && **p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(**p - '0');
        (*p)++;
    }
    *out = v;
    return *p > s;
}

int http_range(const char *v, size_t n, uint64_t size, uint64_t *first, uint64_t *last)
{
    const char *p = v;
    const char *end = v + n;
    uint64_t a = 0;
    uint64_t b = 0;
    bool has_a;
    bool has_b;

    if (n < 6 || strncasecmp(v, "bytes=", 6) != 0)
        return -ENOENT;
    p += 6;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    has_a = range_num(&p, end, &a);
    if (p >= end || *p != '-')
        return -ENOENT;
    p++;
    has_b = range_num(&p, end, &b);
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p != end || (!has_a && !has_b))
        return -ENOENT; /* several ranges, or garbage: serve it all */
    if (!has_a) {
        /* The last b bytes. */
        if (b == 0 || size == 0)
            return -ERANGE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 0;
    }
    if (has_b && b < a)
        return -ENOENT;
    if (a >= size)
        return -ERANGE;
    *first = a;
    *last = !has_b || b >= size ? size - 1 : b;
    return 0;
}

const char *http_method_name(const struct http_head *h)
{
    return llhttp_method_name((llhttp_method_t)h->method);
}

static bool name_eq(const char *a, size_t alen, const char *b)
{
    size_t i;

    for (i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i];
        unsigned char y = (unsigned char)b[i];
        if (y == '\0')
            return false;
        if (x >= 'A' && x <= 'Z')
            x += 'a' - 'A';
        if (y >= 'A' && y <= 'Z')
            y += 'a' - 'A';
        if (x != y)
            return false;
    }
    return b[alen] == '\0';
}

bool http_header(const struct http_head *h, const char *name, struct http_span *val)
{
    uint16_t i;

    for (i = 0; i < h->nhdr; i++) {
        const struct http_hdr *hd = &h->hdr[i];
        if (name_eq(h->buf + hd->name_off, hd->name_len, name)) {
            val->p = h->buf + hd->val_off;
            val->len = hd->val_len;
            return true;
        }
    }
    return false;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 460:
        return "Checksum Mismatch";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    default:
        return "Unknown";
    }
}

/* A bounded appender: once it overflows, every later append is a no-op. */
struct out {
    char *p;
    size_t len;
    size_t cap;
    bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->full || n > o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, tmp + i, sizeof(tmp) - i);
}

ssize_t http_write_head(char *buf, size_t cap, const struct http_resp *r)
{
    struct out o = {buf, 0, cap, false};

    puts_(&o, "HTTP/1.1 ");
    put_u64(&o, (uint64_t)r->status);
    put(&o, " ", 1);
    puts_(&o, http_reason(r->status));
    puts_(&o, "\r\nServer: ringup\r\n");
    if (r->date != NULL) {
        puts_(&o, "Date: ");
        puts_(&o, r->date);
        puts_(&o, "\r\n");
    }
    if (r->content_type != NULL) {
        puts_(&o, "Content-Type: ");
        puts_(&o, r->content_type);
        puts_(&o, "\r\n");
    }
    if (r->status != 204 && (r->status < 100 || r->status > 199)) {
        puts_(&o, "Content-Length: ");
        put_u64(&o, r->content_length);
        puts_(&o, "\r\n");
    }
    if (r->close)
        puts_(&o, "Connection: close\r\n");
    if (r->extra != NULL)
        puts_(&o, r->extra);
    puts_(&o, "\r\n");
    return o.full ? -ENOSPC : (ssize_t)o.len;
}

#define HTTP_DATE_MIN (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define HTTP_DATE_MAX 253402300799LL   /* 9999-12-31T23:59:59Z */

static char *two_digits(char *o, int v)
{
    o[0] = (char)('0' + v / 10 % 10);
    o[1] = (char)('0' + v % 10);
    return o + 2;
}

void http_format_date(char out[30], int64_t unix_seconds)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t;
    struct tm tm;
    char *o = out;

    /*
     * IMF-fixdate has a four-digit year: clamp to 0001..9999, which also keeps
     * gmtime_r() from failing (years past INT_MAX) and leaving tm unset.
     */
    if (unix_seconds < HTTP_DATE_MIN)
        unix_seconds = HTTP_DATE_MIN;
    if (unix_seconds > HTTP_DATE_MAX)
        unix_seconds = HTTP_DATE_MAX;
    t = (time_t)unix_seconds;
    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    memcpy(o, days[tm.tm_wday % 7], 3);
    o += 3;
    *o++ = ',';
    *o++ = ' ';
    o = two_digits(o, tm.tm_mday);
    *o++ = ' ';
    memcpy(o, months[tm.tm_mon % 12], 3);
    o += 3;
    *o++ = ' ';
    o = two_digits(o, (tm.tm_year + 1900) / 100 % 100);
    o = two_digits(o, (tm.tm_year + 1900) % 100);
    *o++ = ' ';
    o = two_digits(o, tm.tm_hour);
    *o++ = ':';
    o = two_digits(o, tm.tm_min);
    *o++ = ':';
    o = two_digits(o, tm.tm_sec);
    memcpy(o, " GMT", 5);
}

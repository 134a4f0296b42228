/*
 * Fuzz target for proto/http.c.
 *
 * Input: byte 0 holds mode flags, bytes 1-2 a split point (little endian,
 * taken modulo the payload length + 1), the rest is the payload: bytes from a
 * client. The payload is fed the way the engine feeds it (act on each event,
 * http_begin() after each DONE, keep calling while events come), once whole
 * and once cut as the flags say; both runs must tell the same story. Every
 * head is checked against the framing rules a proxy in front would apply,
 * and a response head is written for it into a small buffer.
 */
#include "proto/http.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tests/fuzz/digest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MODE_BYTES 0x01 /* feed byte by byte (payloads up to BYTES_MAX) */
#define MODE_EMPTY 0x02 /* feed an empty buffer before each piece */
#define MODE_CLOSE 0x04 /* response: Connection: close */
#define MODE_DATE 0x08  /* response: a Date from the split bytes */
#define BYTES_MAX 1024

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* One run over the payload: parser, head, and a digest of what happened. */
struct run {
    struct http_parser p;
    struct http_head *h; /* heap, so ASan sees overruns */
    uint64_t digest;     /* FNV-1a over every event and its contents */
    uint64_t body_hash;  /* FNV-1a over the body of the message in progress */
    uint64_t body_len;   /* body bytes of the message in progress */
    uint64_t cl;         /* Content-Length of the message in progress */
    int chunked;         /* the message in progress is chunked */
    int in_msg;          /* between HEAD and DONE */
    int err;             /* first error, sticky */
    unsigned events;     /* HEAD and DONE events */
    uint16_t nhdr_head;  /* fields in the head, before any trailers */
    char tail[4];        /* the last four bytes consumed, across feeds */
    uint8_t mode;        /* MODE_* */
    uint16_t split;      /* the split bytes, for response parameters */
};

static void mix(struct run *r, const void *p, size_t n)
{
    r->digest = digest_add(r->digest, p, n);
}

static void mix_u64(struct run *r, uint64_t v)
{
    mix(r, &v, sizeof(v));
}

/* Shift the bytes just consumed into r->tail. */
static void note_tail(struct run *r, const char *p, size_t n)
{
    size_t i;

    for (i = n > 4 ? n - 4 : 0; i < n; i++) {
        memmove(r->tail, r->tail + 1, 3);
        r->tail[3] = p[i];
    }
}

/* A head, and the trailers of a chunked body, end in an empty line: CRLF CRLF, no bare LF. */
static void check_crlf_end(const struct run *r)
{
    CHECK(memcmp(r->tail, "\r\n\r\n", 4) == 0);
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int name_is(const struct http_head *h, const struct http_hdr *hd, const char *name)
{
    size_t n = strlen(name);
    size_t i;

    if (hd->name_len != n)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h->buf[hd->name_off + i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != (unsigned char)name[i])
            return 0;
    }
    return 1;
}

/* Names are tokens; values hold no CTL but HTAB, and no outer whitespace. */
static void check_fields(const struct http_head *h, uint16_t from)
{
    uint16_t i;
    uint16_t j;

    CHECK(h->nhdr <= HTTP_MAX_HEADERS);
    CHECK(h->len <= HTTP_HEAD_MAX);
    for (i = from; i < h->nhdr; i++) {
        const struct http_hdr *hd = &h->hdr[i];
        CHECK(hd->name_len > 0);
        CHECK((size_t)hd->name_off + hd->name_len <= h->len);
        CHECK((size_t)hd->val_off + hd->val_len <= h->len);
        for (j = 0; j < hd->name_len; j++)
            CHECK(is_tchar((unsigned char)h->buf[hd->name_off + j]));
        for (j = 0; j < hd->val_len; j++) {
            unsigned char c = (unsigned char)h->buf[hd->val_off + j];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (hd->val_len > 0) {
            char first = h->buf[hd->val_off];
            char last = h->buf[hd->val_off + hd->val_len - 1];
            CHECK(first != ' ' && first != '\t' && last != ' ' && last != '\t');
        }
    }
}

/* A response head for this request, into a cap from the split bytes, agrees with a roomy one. */
static void check_response(struct run *r, const struct http_span *ct)
{
    static const char *const extras[] = {NULL, "", "Retry-After: 1\r\n", "X-A: b\r\nX-B: c\r\n"};
    char type[64];
    char date[30];
    char big[512];
    char *small;
    size_t cap = r->split % 160;
    struct http_resp resp;
    ssize_t n_big;
    ssize_t n_small;

    memset(&resp, 0, sizeof(resp));
    resp.status = 100 + (int)(r->digest % 500);
    resp.content_length = r->cl;
    resp.close = (r->mode & MODE_CLOSE) != 0;
    resp.extra = extras[(r->mode >> 4) & 3];
    if (ct != NULL) {
        size_t n = ct->len < sizeof(type) - 1 ? ct->len : sizeof(type) - 1;
        memcpy(type, ct->p, n);
        type[n] = '\0';
        resp.content_type = type;
    }
    if (r->mode & MODE_DATE) {
        int64_t t = (int64_t)(r->digest ^ ((uint64_t)r->split << 48));
        http_format_date(date, t);
        CHECK(strlen(date) == 29);
        resp.date = date;
    }
    n_big = http_write_head(big, sizeof(big), &resp);
    CHECK(n_big > 0);
    CHECK(big[n_big - 4] == '\r' && big[n_big - 3] == '\n');
    CHECK(big[n_big - 2] == '\r' && big[n_big - 1] == '\n');
    CHECK(strlen(http_reason(resp.status)) > 0);
    small = malloc(cap > 0 ? cap : 1);
    CHECK(small != NULL);
    n_small = http_write_head(small, cap, &resp);
    if ((size_t)n_big <= cap) {
        CHECK(n_small == n_big);
        CHECK(memcmp(small, big, (size_t)n_big) == 0);
    } else {
        CHECK(n_small == -ENOSPC);
    }
    free(small);
}

static void on_head(struct run *r)
{
    struct http_head *h = r->h;
    struct http_span url = http_url(h);
    struct http_span path = http_path(h);
    struct http_span v;
    struct http_span ct;
    const char *method = http_method_name(h);
    int has_ct = http_header(h, "content-type", &ct);
    unsigned n_cl = 0;
    unsigned n_te = 0;
    uint64_t cl_val = 0;
    uint16_t i;
    size_t j;

    CHECK(!r->in_msg);
    CHECK(http_started(&r->p));
    check_crlf_end(r);
    CHECK(method != NULL && strcmp(method, "CONNECT") != 0);
    CHECK(h->http_minor <= 1);
    CHECK(url.p == h->buf && url.len == h->url_len && url.len <= h->len);
    CHECK(path.p == h->buf && path.len <= url.len);
    CHECK(memchr(path.p, '?', path.len) == NULL);
    for (j = 0; j < url.len; j++) {
        unsigned char c = (unsigned char)url.p[j];
        CHECK(c > 0x20 && c != 0x7f);
    }
    check_fields(h, 0);

    /* Framing: what the head says must be what the parser will do. */
    for (i = 0; i < h->nhdr; i++) {
        const struct http_hdr *hd = &h->hdr[i];
        if (name_is(h, hd, "content-length")) {
            n_cl++;
            CHECK(hd->val_len > 0);
            for (j = 0; j < hd->val_len; j++) {
                char c = h->buf[hd->val_off + j];
                CHECK(c >= '0' && c <= '9');
                cl_val = cl_val * 10 + (uint64_t)(c - '0');
            }
        } else if (name_is(h, hd, "transfer-encoding")) {
            /* The only coding taken is a lone "chunked": others are 501, never a head. */
            n_te++;
            CHECK(hd->val_len == 7 && strncasecmp(h->buf + hd->val_off, "chunked", 7) == 0);
        }
    }
    r->chunked = http_chunked(&r->p);
    r->cl = http_content_length(&r->p);
    CHECK(n_cl <= 1);
    CHECK(!(n_cl && n_te));
    CHECK(n_te <= 1);
    CHECK(r->chunked == (n_te > 0));
    if (r->chunked)
        CHECK(h->http_minor == 1 && r->cl == 0);
    else
        CHECK(r->cl == cl_val);
    CHECK(http_has_body(&r->p) == (r->chunked || r->cl > 0));
    if (http_header(h, "host", &v))
        CHECK(v.p >= h->buf && v.p + v.len <= h->buf + h->len);

    r->in_msg = 1;
    r->body_len = 0;
    r->body_hash = DIGEST_INIT;
    r->events++;
    mix(r, "H", 1);
    mix(r, method, strlen(method));
    mix(r, url.p, url.len);
    mix_u64(r, h->http_minor);
    mix_u64(r, h->nhdr);
    for (i = 0; i < h->nhdr; i++) {
        mix(r, h->buf + h->hdr[i].name_off, h->hdr[i].name_len);
        mix(r, ":", 1);
        mix(r, h->buf + h->hdr[i].val_off, h->hdr[i].val_len);
    }
    mix_u64(r, (uint64_t)http_keep_alive(&r->p));
    mix_u64(r, r->cl);
    mix_u64(r, (uint64_t)r->chunked);
    check_response(r, has_ct ? &ct : NULL);
}

static void on_done(struct run *r)
{
    CHECK(r->in_msg);
    if (!r->chunked)
        CHECK(r->body_len == r->cl);
    else
        check_crlf_end(r);
    /* Trailers, if any, follow the head's fields under the same rules. */
    check_fields(r->h, r->nhdr_head);
    r->in_msg = 0;
    r->events++;
    mix(r, "D", 1);
    mix_u64(r, r->body_len);
    mix_u64(r, r->body_hash);
    mix_u64(r, (uint64_t)http_keep_alive(&r->p));
    mix_u64(r, r->h->nhdr);
    http_begin(&r->p, r->h);
    CHECK(!http_started(&r->p));
}

/* Feed one receive buffer (copied to an exact-size heap block) until it is used up. */
static void feed(struct run *r, const uint8_t *data, size_t len)
{
    char *buf;
    size_t off = 0;
    size_t steps = 0;
    int idle = 0;

    if (r->err != 0)
        return;
    buf = malloc(len > 0 ? len : 1);
    CHECK(buf != NULL);
    if (len > 0)
        memcpy(buf, data, len);
    for (;;) {
        struct http_ev ev;
        ssize_t n = http_feed(&r->p, buf + off, len - off, &ev);

        CHECK(++steps <= 4 * len + 16);
        if (n < 0) {
            CHECK(n == -EBADMSG || n == -EMSGSIZE || n == -ENOTSUP);
            CHECK(http_error_reason(&r->p) != NULL);
            CHECK(http_feed(&r->p, buf, len, &ev) == n);
            r->err = (int)n;
            break;
        }
        CHECK((size_t)n <= len - off);
        if (ev.body.len > 0) {
            CHECK(r->in_msg);
            CHECK(ev.body.p >= buf + off && ev.body.p + ev.body.len <= buf + off + n);
            r->body_len += ev.body.len;
            if (!r->chunked)
                CHECK(r->body_len <= r->cl);
            r->body_hash = digest_add(r->body_hash, ev.body.p, ev.body.len);
        } else {
            CHECK(ev.body.p == NULL);
        }
        note_tail(r, buf + off, (size_t)n);
        off += (size_t)n;
        if (ev.kind == HTTP_EV_HEAD) {
            on_head(r);
            r->nhdr_head = r->h->nhdr;
            idle = 0;
        } else if (ev.kind == HTTP_EV_DONE) {
            on_done(r);
            idle = 0;
        } else if (off == len) {
            break;
        } else if (n == 0) {
            /* Resuming after an upgrade consumes nothing, once. */
            CHECK(++idle < 2);
        } else {
            idle = 0;
        }
    }
    free(buf);
}

static void run_init(struct run *r, uint8_t mode, uint16_t split)
{
    memset(r, 0, sizeof(*r));
    r->h = malloc(sizeof(*r->h));
    CHECK(r->h != NULL);
    r->digest = DIGEST_INIT;
    r->mode = mode;
    r->split = split;
    http_init(&r->p);
    http_begin(&r->p, r->h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run whole;
    struct run cut;
    const uint8_t *in;
    size_t len;
    size_t at;
    uint8_t mode;
    uint16_t split;
    size_t i;

    if (size < 3)
        return 0;
    mode = data[0];
    split = (uint16_t)(data[1] | data[2] << 8);
    in = data + 3;
    len = size - 3;
    at = split % (len + 1);

    run_init(&whole, mode, split);
    feed(&whole, in, len);

    run_init(&cut, mode, split);
    if ((mode & MODE_BYTES) && len <= BYTES_MAX) {
        for (i = 0; i < len; i++) {
            if (mode & MODE_EMPTY)
                feed(&cut, in + i, 0);
            feed(&cut, in + i, 1);
        }
    } else {
        if (mode & MODE_EMPTY)
            feed(&cut, in, 0);
        feed(&cut, in, at);
        if (mode & MODE_EMPTY)
            feed(&cut, in + at, 0);
        feed(&cut, in + at, len - at);
    }

    /*
     * Cutting the input changes nothing, but for a request with two faults
     * (a head too large and malformed, a bare LF before a CONNECT) which one
     * is noticed first: the events must agree, and both runs fail or neither.
     * Body bytes of a message that fails may or may not have been reported
     * before the error, so bodies count only at DONE.
     */
    CHECK(whole.events == cut.events);
    CHECK(whole.digest == cut.digest);
    CHECK((whole.err == 0) == (cut.err == 0));

    free(whole.h);
    free(cut.h);
    return 0;
}

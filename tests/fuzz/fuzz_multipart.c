/*
 * Fuzz target for proto/multipart.c.
 *
 * Input: byte 0 holds mode flags, bytes 1-2 a split point (little endian,
 * taken modulo the body length + 1), the rest is the body. With MODE_CT the
 * body's first line (up to LF) is a Content-Type value instead, and the
 * boundary mp_boundary() finds in it is used; otherwise bits 4-6 pick a fixed
 * boundary. The body is fed the way the upload route feeds it (act on each
 * event, keep calling while events come, mp_finish() at the end), once whole
 * and once cut as the flags say; both runs must tell the same story. The
 * whole run is also checked against a plain statement of the delimiter rule:
 * each part's data ends at a delimiter and holds none.
 */
#include "proto/multipart.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/digest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MODE_BYTES 0x01 /* feed byte by byte (bodies up to BYTES_MAX) */
#define MODE_EMPTY 0x02 /* feed an empty buffer before each piece */
#define MODE_CT 0x04    /* the boundary comes from a Content-Type line in the input */
#define MODE_THREE 0x08 /* cut the second piece once more */
#define BYTES_MAX 4096
#define CT_MAX 256 /* longest Content-Type line taken from the input */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const boundaries[8] = {
    "B",
    "xyz",
    "a b",
    "ends-",
    "--",
    "XyZ-42",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "1234567890123456789012345678901234567890123456789012345678901234567890",
};

/* One run over the body: parser and a digest of what happened. */
struct run {
    struct mp_parser *p; /* heap, so ASan sees overruns */
    const char *boundary;
    uint64_t digest;    /* FNV-1a over every event and its contents */
    uint64_t data_hash; /* FNV-1a over the data of the part in progress */
    uint64_t data_len;  /* data bytes of the part in progress */
    int err;            /* first error, sticky */
    int in_part;        /* between PART_BEGIN and PART_END */
    int done;           /* DONE seen */
    unsigned events;    /* events other than DATA */
    unsigned parts;     /* PART_BEGIN events */
    unsigned files;     /* of those, with is_file */
    int whole;          /* fed in one buffer: events are checked against the body */
    enum { EXP_NOTHING, EXP_BEGIN, EXP_DONE } next; /* whole run: the next event but DATA */
    size_t mark;       /* EXP_BEGIN: where the header block starts; EXP_DONE: where DONE is */
    const char *body;  /* whole run, while fed: the buffer; else NULL */
    size_t body_len;   /* bytes in body */
    size_t data_start; /* offset in body of the part's first data byte */
};

static void mix(struct run *r, const void *p, size_t n)
{
    r->digest = digest_add(r->digest, p, n);
}

static void mix_u64(struct run *r, uint64_t v)
{
    mix(r, &v, sizeof(v));
}

/*
 * The rule, restated: a delimiter starts at s[0] if s holds CRLF "--"
 * boundary, then "--", or at most MP_PAD_MAX spaces and tabs and CRLF.
 * Returns its length (*close set for "--"), or 0.
 */
static size_t delim_at(const char *s, size_t n, const char *boundary, int *close)
{
    size_t blen = strlen(boundary);
    size_t k = 4 + blen;
    size_t pad = 0;

    *close = 0;
    if (n < k || memcmp(s, "\r\n--", 4) != 0 || memcmp(s + 4, boundary, blen) != 0)
        return 0;
    if (n - k >= 2 && s[k] == '-' && s[k + 1] == '-') {
        *close = 1;
        return k + 2;
    }
    while (k < n && (s[k] == ' ' || s[k] == '\t')) {
        k++;
        pad++;
    }
    if (pad <= MP_PAD_MAX && n - k >= 2 && s[k] == '\r' && s[k + 1] == '\n')
        return k + 2;
    return 0;
}

/*
 * The whole run: where the first delimiter ends, in a body that may open
 * with one without its CRLF. Sets r->next and r->mark.
 */
static void find_first(struct run *r, const char *body, size_t len)
{
    char *v = malloc(len + 2);
    size_t i;

    CHECK(v != NULL);
    memcpy(v, "\r\n", 2);
    if (len > 0)
        memcpy(v + 2, body, len);
    r->next = EXP_NOTHING;
    for (i = 0; i < len + 2; i++) {
        int close;
        size_t n;

        if (v[i] != '\r')
            continue;
        n = delim_at(v + i, len + 2 - i, r->boundary, &close);
        if (n > 0) {
            r->next = close ? EXP_DONE : EXP_BEGIN;
            r->mark = i + n - 2;
            break;
        }
    }
    free(v);
}

static void check_str(const char *s, size_t len, size_t max, int tabs)
{
    size_t i;

    CHECK(len <= max);
    CHECK(s[len] == '\0');
    for (i = 0; i < len; i++)
        CHECK(((unsigned char)s[i] >= 0x20 && s[i] != 0x7f) || (tabs && s[i] == '\t'));
}

static void on_begin(struct run *r, const struct mp_part *pt, size_t at)
{
    CHECK(!r->in_part && !r->done);
    CHECK(pt == &r->p->part);
    check_str(pt->name, pt->name_len, MP_NAME_MAX, 0);
    check_str(pt->filename, pt->filename_len, MP_FILENAME_MAX, 0);
    check_str(pt->content_type, pt->content_type_len, MP_CTYPE_MAX, 1);
    CHECK(pt->is_file || pt->filename_len == 0);
    r->parts++;
    r->files += pt->is_file;
    CHECK(r->p->parts == r->parts && r->p->files == r->files);
    CHECK(r->p->part_bytes == 0);
    if (r->body != NULL) {
        /* The header block is every byte from the delimiter to the blank line. */
        CHECK(r->next == EXP_BEGIN);
        CHECK(at >= r->mark + 4 && memcmp(r->body + at - 4, "\r\n\r\n", 4) == 0);
        CHECK(r->p->hlen == at - r->mark);
        CHECK(memcmp(r->p->hbuf, r->body + r->mark, r->p->hlen) == 0);
        r->data_start = at;
        r->next = EXP_NOTHING;
    }
    r->in_part = 1;
    r->data_hash = DIGEST_INIT;
    r->data_len = 0;
    r->events++;
    mix(r, "B", 1);
    mix(r, pt->name, (size_t)pt->name_len + 1);
    mix(r, pt->filename, (size_t)pt->filename_len + 1);
    mix(r, pt->content_type, (size_t)pt->content_type_len + 1);
    mix_u64(r, pt->is_file);
}

static void on_end(struct run *r, size_t at)
{
    CHECK(r->in_part);
    CHECK(r->p->part_bytes == r->data_len);
    if (r->body != NULL) {
        size_t i;
        size_t end = r->data_start + r->data_len;
        int close;

        /* The data ran up to a delimiter, which was consumed, and held none. */
        CHECK(delim_at(r->body + end, at - end, r->boundary, &close) == at - end);
        for (i = r->data_start; i < end; i++) {
            int c2;
            if (r->body[i] == '\r')
                CHECK(delim_at(r->body + i, r->body_len - i, r->boundary, &c2) == 0);
        }
        r->next = close ? EXP_DONE : EXP_BEGIN;
        r->mark = at;
    }
    r->in_part = 0;
    r->events++;
    mix(r, "E", 1);
    mix_u64(r, r->data_len);
    mix_u64(r, r->data_hash);
}

/* Feed one receive buffer (copied to an exact-size heap block) until it is used up. */
static void feed(struct run *r, const uint8_t *data, size_t len, size_t base)
{
    char *buf;
    size_t off = 0;
    size_t steps = 0;

    if (r->err != 0)
        return;
    buf = malloc(len > 0 ? len : 1);
    CHECK(buf != NULL);
    if (len > 0)
        memcpy(buf, data, len);
    if (r->whole) {
        r->body = buf;
        r->body_len = len;
        find_first(r, buf, len);
    }
    for (;;) {
        struct mp_event ev;
        ssize_t n = mp_feed(r->p, buf + off, len - off, &ev);

        CHECK(++steps <= 4 * len + 16);
        if (n < 0) {
            CHECK(n == -EBADMSG || n == -EMSGSIZE);
            CHECK(ev.kind == MP_EV_NONE && ev.data.p == NULL);
            CHECK(mp_feed(r->p, buf, len, &ev) == n);
            CHECK(mp_finish(r->p) == n);
            /* Only a header block can be malformed. */
            if (r->body != NULL)
                CHECK(r->next == EXP_BEGIN);
            r->err = (int)n;
            break;
        }
        CHECK((size_t)n <= len - off);
        if (ev.kind == MP_EV_DATA) {
            const char *c = r->p->carry;
            CHECK(r->in_part);
            CHECK(ev.data.len > 0);
            if (ev.data.p >= c && ev.data.p < c + sizeof(r->p->carry)) {
                /* Held-back bytes: only a cut run has any, and they consume nothing new. */
                CHECK(!r->whole);
                CHECK(ev.data.p + ev.data.len <= c + sizeof(r->p->carry));
                CHECK(n == 0);
            } else {
                CHECK(ev.data.p >= buf + off && ev.data.p + ev.data.len <= buf + off + n);
                if (r->body != NULL)
                    CHECK((size_t)(ev.data.p - buf) == r->data_start + r->data_len);
            }
            r->data_len += ev.data.len;
            r->data_hash = digest_add(r->data_hash, ev.data.p, ev.data.len);
            CHECK(r->p->part_bytes == r->data_len);
        } else {
            CHECK(ev.data.p == NULL && ev.data.len == 0);
        }
        off += (size_t)n;
        switch (ev.kind) {
        case MP_EV_PART_BEGIN:
            on_begin(r, ev.part, base + off);
            break;
        case MP_EV_DATA:
            break;
        case MP_EV_PART_END:
            on_end(r, base + off);
            break;
        case MP_EV_DONE:
            CHECK(!r->in_part && !r->done);
            if (r->body != NULL)
                CHECK(r->next == EXP_DONE && r->mark == base + off);
            CHECK(mp_finish(r->p) == 0);
            r->done = 1;
            r->events++;
            mix(r, "D", 1);
            break;
        case MP_EV_NONE:
            CHECK(off == len);
            goto out;
        }
    }
out:
    r->body = NULL;
    free(buf);
}

static void run_init(struct run *r, const char *boundary)
{
    memset(r, 0, sizeof(*r));
    r->p = malloc(sizeof(*r->p));
    CHECK(r->p != NULL);
    memset(r->p, 0x5a, sizeof(*r->p));
    r->boundary = boundary;
    r->digest = DIGEST_INIT;
    mp_init(r->p, boundary, strlen(boundary));
    CHECK(mp_finish(r->p) == -EBADMSG);
}

/* The end of the body: what mp_finish() says goes into the digest. */
static int run_finish(struct run *r)
{
    int rc = mp_finish(r->p);

    if (r->err != 0)
        CHECK(rc == r->err);
    else
        CHECK((rc == 0) == r->done && (rc == 0 || rc == -EBADMSG));
    mix_u64(r, (uint64_t)(int64_t)rc);
    free(r->p);
    return rc;
}

/* A boundary from a Content-Type line; NULL when the line has none. */
static const char *boundary_from(const uint8_t **in, size_t *len, char out[MP_BOUNDARY_MAX + 1])
{
    const uint8_t *nl = memchr(*in, '\n', *len < CT_MAX ? *len : CT_MAX);
    size_t n = nl != NULL ? (size_t)(nl - *in) : (*len < CT_MAX ? *len : CT_MAX);
    char *ct = malloc(n > 0 ? n : 1);
    int rc;
    int i;

    CHECK(ct != NULL);
    if (n > 0)
        memcpy(ct, *in, n);
    rc = mp_boundary(ct, n, out);
    free(ct);
    *in += n + (nl != NULL);
    *len -= n + (nl != NULL);
    if (rc < 0) {
        CHECK(rc == -EBADMSG);
        return NULL;
    }
    CHECK(rc >= 1 && rc <= MP_BOUNDARY_MAX && out[rc] == '\0' && (size_t)rc == strlen(out));
    CHECK(out[rc - 1] != ' ');
    for (i = 0; i < rc; i++)
        CHECK(out[i] == ' ' || (out[i] >= '0' && out[i] <= '9') ||
              (out[i] >= 'a' && out[i] <= 'z') || (out[i] >= 'A' && out[i] <= 'Z') ||
              strchr("'()+_,-./:=?", out[i]) != NULL);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char bbuf[MP_BOUNDARY_MAX + 1];
    const char *boundary;
    struct run whole;
    struct run cut;
    const uint8_t *in;
    size_t len;
    size_t at;
    size_t at2;
    uint8_t mode;
    uint16_t split;
    size_t i;
    int rc_whole;
    int rc_cut;

    if (size < 3)
        return 0;
    mode = data[0];
    split = (uint16_t)(data[1] | data[2] << 8);
    in = data + 3;
    len = size - 3;
    boundary = boundaries[(mode >> 4) & 7];
    if (mode & MODE_CT) {
        boundary = boundary_from(&in, &len, bbuf);
        if (boundary == NULL)
            return 0;
    }
    at = split % (len + 1);
    at2 = at + (size_t)split * 7 % (len - at + 1);

    run_init(&whole, boundary);
    whole.whole = 1;
    feed(&whole, in, len, 0);
    rc_whole = run_finish(&whole);

    run_init(&cut, boundary);
    if ((mode & MODE_BYTES) && len <= BYTES_MAX) {
        for (i = 0; i < len; i++) {
            if (mode & MODE_EMPTY)
                feed(&cut, in + i, 0, i);
            feed(&cut, in + i, 1, i);
        }
    } else {
        if (mode & MODE_EMPTY)
            feed(&cut, in, 0, 0);
        feed(&cut, in, at, 0);
        if (mode & MODE_EMPTY)
            feed(&cut, in + at, 0, at);
        if (mode & MODE_THREE) {
            feed(&cut, in + at, at2 - at, at);
            feed(&cut, in + at2, len - at2, at2);
        } else {
            feed(&cut, in + at, len - at, at);
        }
    }
    rc_cut = run_finish(&cut);

    /* Cutting the input changes nothing: not the events, not the error. */
    CHECK(whole.events == cut.events);
    CHECK(whole.digest == cut.digest);
    CHECK(whole.err == cut.err);
    CHECK(rc_whole == rc_cut);
    return 0;
}

/*
 * Unit tests for proto/multipart.c. A body is driven the way the upload
 * route drives it: feed each receive buffer, act on every event, keep
 * calling while events come, call mp_finish() at the end of the body. The
 * driver writes a transcript (part headers, each part's data, ends, done,
 * errors); split tests compare transcripts, so input may be cut anywhere and
 * must give the same result.
 */
#include "proto/multipart.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#define B "XyZ-42" /* the boundary of most tests */
#define CT "multipart/form-data; boundary=" B
#define DL "\r\n--" B /* a delimiter, without its CRLF */
#define CD "Content-Disposition: form-data; "

/* A growing text buffer for transcripts. */
struct tx {
    char *s;    /* NUL-terminated text, or NULL while empty */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
};

static void tx_reserve(struct tx *t, size_t more)
{
    if (t->len + more + 1 > t->cap) {
        t->cap = (t->len + more + 1) * 2;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
}

__attribute__((format(printf, 2, 3))) static void tx_add(struct tx *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    tx_reserve(t, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

/* Append bytes, escaped: \\ \r \n and \xNN for other non-printables. */
static void tx_esc(struct tx *t, const char *p, size_t n)
{
    size_t i;

    tx_reserve(t, 4 * n);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\') {
            t->s[t->len++] = '\\';
            t->s[t->len++] = '\\';
        } else if (c == '\r') {
            t->s[t->len++] = '\\';
            t->s[t->len++] = 'r';
        } else if (c == '\n') {
            t->s[t->len++] = '\\';
            t->s[t->len++] = 'n';
        } else if (c < 0x20 || c >= 0x7f) {
            t->len += (size_t)snprintf(t->s + t->len, 5, "\\x%02x", c);
        } else {
            t->s[t->len++] = (char)c;
        }
    }
    t->s[t->len] = '\0';
}

static const char *tx_str(const struct tx *t)
{
    return t->s != NULL ? t->s : "";
}

/* Record a part's start, its data and its end, as the driver does. */
static void tx_part(struct tx *t, const char *name, const char *filename, bool is_file,
                    const char *ct, const char *data, size_t len)
{
    tx_add(t, "BEGIN name=[");
    tx_esc(t, name, strlen(name));
    tx_add(t, "] file=%d filename=[", is_file);
    tx_esc(t, filename, strlen(filename));
    tx_add(t, "] ct=[");
    tx_esc(t, ct, strlen(ct));
    tx_add(t, "]\nEND %zu [", len);
    tx_esc(t, data, len);
    tx_add(t, "]\n");
}

/* One simulated request body: parser, transcript, the part in progress. */
struct drv {
    struct mp_parser *p; /* heap, so ASan sees overruns */
    struct tx tx;        /* what happened */
    char *data;          /* data of the part in progress */
    size_t data_len;     /* bytes in data */
    size_t data_cap;     /* bytes allocated for data */
    int err;             /* first error, sticky */
    bool in_part;        /* between PART_BEGIN and PART_END */
    bool done;           /* DONE seen */
    unsigned begins;     /* PART_BEGIN events */
    unsigned files;      /* of those, files */
    unsigned spans;      /* DATA events */
    unsigned carried;    /* DATA events reported from the parser's carry buffer */
};

static void drv_init_b(struct drv *d, const char *boundary)
{
    memset(d, 0, sizeof(*d));
    d->p = malloc(sizeof(*d->p));
    assert_non_null(d->p);
    memset(d->p, 0xa5, sizeof(*d->p));
    mp_init(d->p, boundary, strlen(boundary));
}

static void drv_init(struct drv *d)
{
    drv_init_b(d, B);
}

static void drv_free(struct drv *d)
{
    free(d->p);
    free(d->tx.s);
    free(d->data);
}

static void add_data(struct drv *d, struct mp_span s)
{
    if (d->data_len + s.len > d->data_cap) {
        d->data_cap = (d->data_len + s.len) * 2;
        d->data = realloc(d->data, d->data_cap);
        assert_non_null(d->data);
    }
    memcpy(d->data + d->data_len, s.p, s.len);
    d->data_len += s.len;
    d->spans++;
}

static void check_str(const char *s, size_t len, size_t max, int tabs)
{
    size_t i;

    assert_true(len <= max);
    assert_int_equal(strlen(s), len);
    for (i = 0; i < len; i++)
        assert_true(!is_ctl((unsigned char)s[i]) || (tabs && s[i] == '\t'));
}

static void record_begin(struct drv *d, const struct mp_part *pt)
{
    assert_non_null(pt);
    assert_ptr_equal(pt, &d->p->part);
    check_str(pt->name, pt->name_len, MP_NAME_MAX, 0);
    check_str(pt->filename, pt->filename_len, MP_FILENAME_MAX, 0);
    check_str(pt->content_type, pt->content_type_len, MP_CTYPE_MAX, 1);
    if (!pt->is_file)
        assert_int_equal(pt->filename_len, 0);
    tx_add(&d->tx, "BEGIN name=[");
    tx_esc(&d->tx, pt->name, pt->name_len);
    tx_add(&d->tx, "] file=%d filename=[", pt->is_file);
    tx_esc(&d->tx, pt->filename, pt->filename_len);
    tx_add(&d->tx, "] ct=[");
    tx_esc(&d->tx, pt->content_type, pt->content_type_len);
    tx_add(&d->tx, "]\n");
}

/*
 * Feed one receive buffer. It is copied to an exact-size heap block first,
 * so that a span pointing outside it is an ASan error and nothing may keep
 * pointing into it afterwards. Returns 0, or the parser's error.
 */
static int drive(struct drv *d, const char *in, size_t len)
{
    char *buf;
    size_t off = 0;
    size_t steps = 0;

    if (d->err != 0)
        return d->err;
    buf = malloc(len > 0 ? len : 1);
    assert_non_null(buf);
    if (len > 0)
        memcpy(buf, in, len);
    for (;;) {
        struct mp_event ev;
        ssize_t n = mp_feed(d->p, buf + off, len - off, &ev);

        assert_true(++steps <= 4 * len + 16);
        if (n < 0) {
            d->err = (int)n;
            tx_add(&d->tx, "ERR %d\n", d->err);
            assert_int_equal(ev.kind, MP_EV_NONE);
            assert_null(ev.data.p);
            /* Dead: the same error again, consuming nothing. */
            assert_int_equal(mp_feed(d->p, buf, len, &ev), n);
            assert_int_equal(mp_finish(d->p), n);
            assert_int_equal(d->p->state, MP_S_ERROR);
            break;
        }
        assert_true((size_t)n <= len - off);
        if (ev.kind == MP_EV_DATA) {
            const char *c = d->p->carry;
            assert_true(d->in_part);
            assert_true(ev.data.len > 0);
            if (ev.data.p >= c && ev.data.p < c + sizeof(d->p->carry)) {
                assert_true(ev.data.p + ev.data.len <= c + sizeof(d->p->carry));
                d->carried++;
            } else {
                assert_true(ev.data.p >= buf + off &&
                            ev.data.p + ev.data.len <= buf + off + (size_t)n);
            }
            add_data(d, ev.data);
            assert_int_equal(d->p->part_bytes, d->data_len);
        } else {
            assert_null(ev.data.p);
            assert_int_equal(ev.data.len, 0);
        }
        off += (size_t)n;
        switch (ev.kind) {
        case MP_EV_PART_BEGIN:
            assert_false(d->in_part);
            assert_false(d->done);
            d->in_part = true;
            d->begins++;
            d->files += ev.part->is_file;
            assert_int_equal(d->p->parts, d->begins);
            assert_int_equal(d->p->files, d->files);
            assert_int_equal(d->p->part_bytes, 0);
            record_begin(d, ev.part);
            break;
        case MP_EV_DATA:
            break;
        case MP_EV_PART_END:
            assert_true(d->in_part);
            assert_ptr_equal(ev.part, &d->p->part);
            d->in_part = false;
            tx_add(&d->tx, "END %zu [", d->data_len);
            tx_esc(&d->tx, d->data, d->data_len);
            tx_add(&d->tx, "]\n");
            d->data_len = 0;
            break;
        case MP_EV_DONE:
            assert_false(d->in_part);
            assert_false(d->done);
            d->done = true;
            tx_add(&d->tx, "DONE\n");
            break;
        case MP_EV_NONE:
            assert_int_equal(off, len);
            goto out;
        }
    }
out:
    free(buf);
    return d->err;
}

static int drive_str(struct drv *d, const char *in)
{
    return drive(d, in, strlen(in));
}

/* The body ended: record what mp_finish() says. */
static void drv_finish(struct drv *d)
{
    int rc;

    if (d->err != 0)
        return;
    rc = mp_finish(d->p);
    assert_int_equal(rc == 0, d->done);
    tx_add(&d->tx, "FINISH %d\n", rc);
}

/* The transcript of an input cut at the given points (sorted, within len). */
static char *run_cuts_b(const char *boundary, const char *in, size_t len, const size_t *cut,
                        size_t ncut)
{
    struct drv d;
    size_t prev = 0;
    size_t i;
    char *s;

    drv_init_b(&d, boundary);
    for (i = 0; i <= ncut; i++) {
        size_t end = i < ncut ? cut[i] : len;
        drive(&d, in + prev, end - prev);
        prev = end;
    }
    drv_finish(&d);
    s = strdup(tx_str(&d.tx));
    assert_non_null(s);
    drv_free(&d);
    return s;
}

static char *run_whole_b(const char *boundary, const char *in, size_t len)
{
    return run_cuts_b(boundary, in, len, NULL, 0);
}

/*
 * Every two-piece split, byte-by-byte feeding, byte-by-byte feeding with
 * empty buffers between, and (for short inputs) every three-piece split
 * give the transcript of the whole input.
 */
static void check_splits_b(const char *boundary, const char *in, size_t len)
{
    char *whole = run_whole_b(boundary, in, len);
    size_t cut[2];
    size_t i;
    size_t j;
    struct drv d;

    for (i = 0; i <= len; i++) {
        char *got;
        cut[0] = i;
        got = run_cuts_b(boundary, in, len, cut, 1);
        if (strcmp(got, whole) != 0)
            fail_msg("split at %zu:\n%s\n--- whole:\n%s", i, got, whole);
        free(got);
    }
    drv_init_b(&d, boundary);
    for (i = 0; i < len && d.err == 0; i++) {
        drive(&d, in + i, 0);
        drive(&d, in + i, 1);
    }
    drv_finish(&d);
    if (strcmp(tx_str(&d.tx), whole) != 0)
        fail_msg("byte by byte:\n%s\n--- whole:\n%s", tx_str(&d.tx), whole);
    drv_free(&d);
    if (len <= 160) {
        for (i = 0; i <= len; i++) {
            for (j = i; j <= len; j++) {
                char *got;
                cut[0] = i;
                cut[1] = j;
                got = run_cuts_b(boundary, in, len, cut, 2);
                if (strcmp(got, whole) != 0)
                    fail_msg("split at %zu,%zu:\n%s\n--- whole:\n%s", i, j, got, whole);
                free(got);
            }
        }
    }
    free(whole);
}

/* The whole input gives want, and so does every way of cutting it. */
static void expect_n(const char *in, size_t len, const char *want)
{
    char *got = run_whole_b(B, in, len);

    if (strcmp(got, want) != 0)
        fail_msg("got:\n%s\n--- want:\n%s", got, want);
    free(got);
    check_splits_b(B, in, len);
}

static void expect(const char *in, const char *want)
{
    expect_n(in, strlen(in), want);
}

/* The input fails with err once its header block is read, after the events in before. */
static void expect_err(const char *in, const char *before, int err)
{
    char want[4096];

    snprintf(want, sizeof(want), "%sERR %d\n", before, err);
    expect(in, want);
}

static void test_field_and_file(void **state)
{
    const char *in = "--" B "\r\n" CD "name=\"title\"\r\n"
                     "\r\n"
                     "Hello, world" DL "\r\n" CD "name=\"upload\"; filename=\"a.txt\"\r\n"
                     "Content-Type: text/plain\r\n"
                     "\r\n"
                     "line 1\r\nline 2\r\n" DL "--\r\n";

    (void)state;
    expect(in, "BEGIN name=[title] file=0 filename=[] ct=[]\n"
               "END 12 [Hello, world]\n"
               "BEGIN name=[upload] file=1 filename=[a.txt] ct=[text/plain]\n"
               "END 16 [line 1\\r\\nline 2\\r\\n]\n"
               "DONE\n"
               "FINISH 0\n");
}

static void test_five_files(void **state)
{
    char in[2048];
    struct tx want = {NULL, 0, 0};
    struct drv d;
    size_t len = 0;
    int i;

    (void)state;
    for (i = 0; i < 5; i++) {
        char name[16];
        char data[64];
        snprintf(name, sizeof(name), "f%d.bin", i);
        snprintf(data, sizeof(data), "contents of file %d%.*s", i, i * 7, "-\r\n-\r-\n--------");
        len += (size_t)snprintf(in + len, sizeof(in) - len,
                                "%s--" B "\r\n" CD "name=\"files[]\"; filename=\"%s\"\r\n"
                                "Content-Type: application/octet-stream\r\n\r\n%s",
                                i == 0 ? "" : "\r\n", name, data);
        tx_part(&want, "files[]", name, true, "application/octet-stream", data, strlen(data));
    }
    len += (size_t)snprintf(in + len, sizeof(in) - len, DL "--");
    tx_add(&want, "DONE\nFINISH 0\n");
    expect_n(in, len, tx_str(&want));

    drv_init(&d);
    drive(&d, in, len);
    assert_int_equal(d.p->parts, 5);
    assert_int_equal(d.p->files, 5);
    assert_int_equal(mp_finish(d.p), 0);
    assert_int_equal(d.p->state, MP_S_DONE);
    drv_free(&d);
    free(want.s);
}

static void test_empty_body(void **state)
{
    (void)state;
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\n" DL "\r\n" CD "name=\"b\"; filename=\"\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n" DL "\r\n" CD "name=\"c\"\r\n\r\n" DL
           "--",
           "BEGIN name=[a] file=0 filename=[] ct=[]\n"
           "END 0 []\n"
           "BEGIN name=[b] file=1 filename=[] ct=[application/octet-stream]\n"
           "END 0 []\n"
           "BEGIN name=[c] file=0 filename=[] ct=[]\n"
           "END 0 []\n"
           "DONE\n"
           "FINISH 0\n");
}

/* Things that resemble a delimiter inside data stay data. */
static void test_lookalikes(void **state)
{
    (void)state;
    /* "--" boundary without the CRLF. */
    expect("--" B "\r\n" CD "name=\"f\"\r\n\r\n"
           "a--" B "\r\nb--" B "--\n--" B DL "--",
           "BEGIN name=[f] file=0 filename=[] ct=[]\n"
           "END 31 [a--XyZ-42\\r\\nb--XyZ-42--\\n--XyZ-42]\n"
           "DONE\nFINISH 0\n");
    /* CRLF "--" and part of the boundary, then other bytes. */
    expect("--" B "\r\n" CD "name=\"f\"\r\n\r\n"
           "x\r\n--XyZ-4!\r\n--X\r\n--\r\n-\r\n\r\r\n" DL "--",
           "BEGIN name=[f] file=0 filename=[] ct=[]\n"
           "END 28 [x\\r\\n--XyZ-4!\\r\\n--X\\r\\n--\\r\\n-\\r\\n\\r\\r\\n]\n"
           "DONE\nFINISH 0\n");
    /* The whole boundary, then a byte that is neither padding, CR nor "--". */
    expect("--" B "\r\n" CD "name=\"f\"\r\n\r\n"
           "1" DL "x2" DL "-x3" DL "\rx4" DL " x5" DL "\t\rx6" DL "\n7" DL "0" DL "--",
           "BEGIN name=[f] file=0 filename=[] ct=[]\n"
           "END 89 [1\\r\\n--XyZ-42x2\\r\\n--XyZ-42-x3\\r\\n--XyZ-42\\rx4\\r\\n--XyZ-42 "
           "x5\\r\\n--XyZ-42\\x09\\rx6\\r\\n--XyZ-42\\n7\\r\\n--XyZ-420]\n"
           "DONE\nFINISH 0\n");
    /* A look-alike right before the real delimiter. */
    expect("--" B "\r\n" CD "name=\"f\"\r\n\r\n"
           "\r\n--" B "\r" DL "\r\n" CD "name=\"g\"\r\n\r\n\r\n--" B "-" DL "--",
           "BEGIN name=[f] file=0 filename=[] ct=[]\n"
           "END 11 [\\r\\n--XyZ-42\\r]\n"
           "BEGIN name=[g] file=0 filename=[] ct=[]\n"
           "END 11 [\\r\\n--XyZ-42-]\n"
           "DONE\nFINISH 0\n");
    /* A longer boundary that starts with ours is not ours. */
    expect("--" B "\r\n" CD "name=\"f\"\r\n\r\n"
           "\r\n--" B "-43\r\n" DL "--",
           "BEGIN name=[f] file=0 filename=[] ct=[]\n"
           "END 15 [\\r\\n--XyZ-42-43\\r\\n]\n"
           "DONE\nFINISH 0\n");
}

/* The CRLF before a delimiter belongs to it; the ones before that are data. */
static void test_crlf_edges(void **state)
{
    (void)state;
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nx\r" DL "\r\n" CD "name=\"b\"\r\n\r\nx\r\n" DL
           "\r\n" CD "name=\"c\"\r\n\r\nx\r\n-" DL "\r\n" CD "name=\"d\"\r\n\r\n\r\n" DL "\r\n" CD
           "name=\"e\"\r\n\r\n\r\n\r\n" DL "\r\n" CD "name=\"f\"\r\n\r\n\r" DL "--",
           "BEGIN name=[a] file=0 filename=[] ct=[]\n"
           "END 2 [x\\r]\n"
           "BEGIN name=[b] file=0 filename=[] ct=[]\n"
           "END 3 [x\\r\\n]\n"
           "BEGIN name=[c] file=0 filename=[] ct=[]\n"
           "END 4 [x\\r\\n-]\n"
           "BEGIN name=[d] file=0 filename=[] ct=[]\n"
           "END 2 [\\r\\n]\n"
           "BEGIN name=[e] file=0 filename=[] ct=[]\n"
           "END 4 [\\r\\n\\r\\n]\n"
           "BEGIN name=[f] file=0 filename=[] ct=[]\n"
           "END 1 [\\r]\n"
           "DONE\nFINISH 0\n");
}

static void test_preamble_epilogue(void **state)
{
    (void)state;
    /* A preamble, with look-alikes of its own; an epilogue with anything in it. */
    expect("This is a preamble.\r\n--" B "x\r\n--" B "-\r\n--" B " z\r\n"
           "--" B "\r\n" CD "name=\"a\"\r\n\r\nA" DL "--\r\n"
           "epilogue\r\n--" B "\r\n" CD "name=\"b\"\r\n\r\nB" DL "--\r\n\x01\xff",
           "BEGIN name=[a] file=0 filename=[] ct=[]\n"
           "END 1 [A]\n"
           "DONE\nFINISH 0\n");
    /* The first delimiter with its CRLF, and an empty preamble before it. */
    expect(DL "\r\n" CD "name=\"a\"\r\n\r\nA" DL "--", "BEGIN name=[a] file=0 filename=[] ct=[]\n"
                                                       "END 1 [A]\n"
                                                       "DONE\nFINISH 0\n");
    /* A preamble that ends in what could have been a delimiter. */
    expect("--" B "x--" B "-\r\r\n--" B "\r\n" CD "name=\"a\"\r\n\r\nA" DL "--",
           "BEGIN name=[a] file=0 filename=[] ct=[]\n"
           "END 1 [A]\n"
           "DONE\nFINISH 0\n");
    /* A body of nothing but the close delimiter has no parts. */
    expect("--" B "--", "DONE\nFINISH 0\n");
    expect("junk\r\n--" B "--\r\nmore", "DONE\nFINISH 0\n");
}

/* Transport padding after a boundary: spaces and tabs up to MP_PAD_MAX. */
static void test_padding(void **state)
{
    char in[512];
    char want[512];
    int n;

    (void)state;
    expect("--" B " \t \r\n" CD "name=\"a\"\r\n\r\nA" DL "\t\r\n" CD "name=\"b\"\r\n\r\nB" DL
           "--  \r\n",
           "BEGIN name=[a] file=0 filename=[] ct=[]\n"
           "END 1 [A]\n"
           "BEGIN name=[b] file=0 filename=[] ct=[]\n"
           "END 1 [B]\n"
           "DONE\nFINISH 0\n");
    /* Exactly MP_PAD_MAX is a delimiter. */
    n = snprintf(in, sizeof(in),
                 "--" B "\r\n" CD "name=\"a\"\r\n\r\nA" DL "%*s\r\n" CD "name=\"b\"\r\n\r\nB" DL
                 "--",
                 MP_PAD_MAX, "");
    expect_n(in, (size_t)n,
             "BEGIN name=[a] file=0 filename=[] ct=[]\n"
             "END 1 [A]\n"
             "BEGIN name=[b] file=0 filename=[] ct=[]\n"
             "END 1 [B]\n"
             "DONE\nFINISH 0\n");
    /* One more is data. */
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=\"a\"\r\n\r\nA" DL "%*s\r\nB" DL "--",
                 MP_PAD_MAX + 1, "");
    snprintf(want, sizeof(want),
             "BEGIN name=[a] file=0 filename=[] ct=[]\n"
             "END %d [A\\r\\n--" B "%*s\\r\\nB]\n"
             "DONE\nFINISH 0\n",
             1 + 2 + 2 + (int)strlen(B) + MP_PAD_MAX + 1 + 2 + 1, MP_PAD_MAX + 1, "");
    expect_n(in, (size_t)n, want);
    /* Padding before "--" does not make a close delimiter. */
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nA" DL " --" DL "--",
           "BEGIN name=[a] file=0 filename=[] ct=[]\n"
           "END 14 [A\\r\\n--XyZ-42 --]\n"
           "DONE\nFINISH 0\n");
}

static void test_missing_final(void **state)
{
    (void)state;
    expect("", "FINISH -74\n");
    expect("preamble only\r\n", "FINISH -74\n");
    expect("--" B, "FINISH -74\n");
    expect("--" B "\r\n", "FINISH -74\n");
    expect("--" B "\r\n" CD "name=\"a\"\r\n", "FINISH -74\n");
    /* The data of a part cut short may or may not have been reported: no END. */
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nsome data",
           "BEGIN name=[a] file=0 filename=[] ct=[]\nFINISH -74\n");
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nsome data" DL,
           "BEGIN name=[a] file=0 filename=[] ct=[]\nFINISH -74\n");
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nsome data" DL "-",
           "BEGIN name=[a] file=0 filename=[] ct=[]\nFINISH -74\n");
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nsome data" DL "\r\n",
           "BEGIN name=[a] file=0 filename=[] ct=[]\nEND 9 [some data]\nFINISH -74\n");
    /* "--" is enough; the CRLF after it is epilogue. */
    expect("--" B "\r\n" CD "name=\"a\"\r\n\r\nsome data" DL "--",
           "BEGIN name=[a] file=0 filename=[] ct=[]\nEND 9 [some data]\nDONE\nFINISH 0\n");
}

/* A header block of exactly size bytes (blank line included), and the rest of a body. */
static size_t big_head(char *out, size_t cap, size_t size)
{
    const char *start = "--" B "\r\n";
    const char *first = CD "name=\"a\"\r\nX-Pad: ";
    const char *end = "\r\n\r\nA" DL "--";
    size_t len = strlen(start);
    size_t pad = size - strlen(first) - 4;

    assert_true(len + size + strlen(end) < cap);
    memcpy(out, start, len);
    memcpy(out + len, first, strlen(first));
    len += strlen(first);
    memset(out + len, 'p', pad);
    len += pad;
    memcpy(out + len, end, strlen(end));
    return len + strlen(end);
}

static void test_headers_too_big(void **state)
{
    char *in = malloc(MP_HEADER_MAX + 256);
    char *got;
    size_t len;
    size_t i;

    (void)state;
    assert_non_null(in);
    len = big_head(in, MP_HEADER_MAX + 256, MP_HEADER_MAX);
    got = run_whole_b(B, in, len);
    assert_string_equal(got,
                        "BEGIN name=[a] file=0 filename=[] ct=[]\nEND 1 [A]\nDONE\nFINISH 0\n");
    free(got);
    len = big_head(in, MP_HEADER_MAX + 256, MP_HEADER_MAX + 1);
    got = run_whole_b(B, in, len);
    assert_string_equal(got, "ERR -90\n");
    free(got);
    /* Some splits, and byte by byte. */
    for (i = 0; i <= len; i += 97) {
        size_t cut = i;
        got = run_cuts_b(B, in, len, &cut, 1);
        assert_string_equal(got, "ERR -90\n");
        free(got);
    }
    {
        struct drv d;
        drv_init(&d);
        for (i = 0; i < len && d.err == 0; i++)
            drive(&d, in + i, 1);
        assert_int_equal(d.err, -EMSGSIZE);
        drv_free(&d);
    }
    /* Many short lines count too. */
    len = 0;
    len += (size_t)sprintf(in, "--" B "\r\n" CD "name=\"a\"\r\n");
    while (len < MP_HEADER_MAX + 64)
        len += (size_t)sprintf(in + len, "X: y\r\n");
    got = run_whole_b(B, in, len);
    assert_string_equal(got, "ERR -90\n");
    free(got);
    free(in);
}

/* The whole input, fed at once, gives want. */
static void expect_whole_n(const char *in, size_t len, const char *want)
{
    char *got = run_whole_b(B, in, len);

    if (strcmp(got, want) != 0)
        fail_msg("got:\n%s\n--- want:\n%s", got, want);
    free(got);
}

static void test_field_limits(void **state)
{
    char in[4096];
    char want[4096];
    char s[2048];
    int n;

    (void)state;
    memset(s, 'n', MP_NAME_MAX + 1);
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=\"%.*s\"\r\n\r\n" DL "--", MP_NAME_MAX, s);
    snprintf(want, sizeof(want),
             "BEGIN name=[%.*s] file=0 filename=[] ct=[]\nEND 0 []\nDONE\nFINISH 0\n", MP_NAME_MAX,
             s);
    expect_whole_n(in, (size_t)n, want);
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=%.*s\r\n\r\n" DL "--", MP_NAME_MAX + 1, s);
    expect_whole_n(in, (size_t)n, "ERR -90\n");

    memset(s, 'f', MP_FILENAME_MAX + 1);
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a; filename=\"%.*s\"\r\n\r\n" DL "--",
                 MP_FILENAME_MAX, s);
    snprintf(want, sizeof(want),
             "BEGIN name=[a] file=1 filename=[%.*s] ct=[]\nEND 0 []\nDONE\nFINISH 0\n",
             MP_FILENAME_MAX, s);
    expect_whole_n(in, (size_t)n, want);
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a; filename=\"%.*s\"\r\n\r\n" DL "--",
                 MP_FILENAME_MAX + 1, s);
    expect_whole_n(in, (size_t)n, "ERR -90\n");
    /* Escapes count after decoding: 1024 quotes in 2048 bytes fit. */
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a; filename=\"");
    for (int i = 0; i < MP_FILENAME_MAX; i++)
        n += snprintf(in + n, sizeof(in) - (size_t)n, "\\\"");
    n += snprintf(in + n, sizeof(in) - (size_t)n, "\"\r\n\r\n" DL "--");
    {
        struct drv d;
        drv_init(&d);
        drive(&d, in, (size_t)n);
        assert_int_equal(d.err, 0);
        assert_int_equal(d.p->part.filename_len, MP_FILENAME_MAX);
        assert_int_equal(d.p->part.filename[0], '"');
        drv_free(&d);
    }
    /* filename* counts decoded UTF-8: %C3%A9 is two bytes; ISO-8859-1 %E9 becomes two. */
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a; filename*=UTF-8''");
    for (int i = 0; i < MP_FILENAME_MAX / 2; i++)
        n += snprintf(in + n, sizeof(in) - (size_t)n, "%%C3%%A9");
    n += snprintf(in + n, sizeof(in) - (size_t)n, "\r\n\r\n" DL "--");
    {
        struct drv d;
        drv_init(&d);
        drive(&d, in, (size_t)n);
        assert_int_equal(d.err, 0);
        assert_int_equal(d.p->part.filename_len, MP_FILENAME_MAX);
        drv_free(&d);
    }
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a; filename*=iso-8859-1'en'");
    for (int i = 0; i < MP_FILENAME_MAX / 2; i++)
        n += snprintf(in + n, sizeof(in) - (size_t)n, "%%E9");
    n += snprintf(in + n, sizeof(in) - (size_t)n, "x\r\n\r\n" DL "--");
    expect_whole_n(in, (size_t)n, "ERR -90\n");

    memset(s, 't', MP_CTYPE_MAX + 1);
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a\r\nContent-Type: %.*s\r\n\r\n" DL "--",
                 MP_CTYPE_MAX, s);
    snprintf(want, sizeof(want),
             "BEGIN name=[a] file=0 filename=[] ct=[%.*s]\nEND 0 []\nDONE\nFINISH 0\n",
             MP_CTYPE_MAX, s);
    expect_whole_n(in, (size_t)n, want);
    n = snprintf(in, sizeof(in), "--" B "\r\n" CD "name=a\r\nContent-Type: %.*s\r\n\r\n" DL "--",
                 MP_CTYPE_MAX + 1, s);
    expect_whole_n(in, (size_t)n, "ERR -90\n");
}

/* RFC 8187 (formerly 5987) filename*, which wins over filename. */
static void test_filename_ext(void **state)
{
    (void)state;
    expect("--" B "\r\n" CD "name=\"f\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt\r\n"
           "\r\nx" DL "--",
           "BEGIN name=[f] file=1 filename=[na\\xc3\\xafve r\\xc3\\xa9sum\\xc3\\xa9.txt] ct=[]\n"
           "END 1 [x]\nDONE\nFINISH 0\n");
    /* Both orders: filename* wins. */
    expect("--" B "\r\n" CD "name=f; filename=\"plain.txt\"; filename*=utf-8'en'%E2%82%AC.txt\r\n"
           "\r\n" DL "\r\n" CD "name=g; filename*=UTF-8''%E2%82%AC.txt; filename=\"plain.txt\"\r\n"
           "\r\n" DL "--",
           "BEGIN name=[f] file=1 filename=[\\xe2\\x82\\xac.txt] ct=[]\nEND 0 []\n"
           "BEGIN name=[g] file=1 filename=[\\xe2\\x82\\xac.txt] ct=[]\nEND 0 []\n"
           "DONE\nFINISH 0\n");
    /* ISO-8859-1 becomes UTF-8. */
    expect("--" B "\r\n" CD "name=f; filename*=ISO-8859-1''caf%E9\r\n\r\n" DL "--",
           "BEGIN name=[f] file=1 filename=[caf\\xc3\\xa9] ct=[]\nEND 0 []\nDONE\nFINISH 0\n");
    expect("--" B "\r\n" CD "name=f; filename*=UTF-8''\r\n\r\n" DL "--",
           "BEGIN name=[f] file=1 filename=[] ct=[]\nEND 0 []\nDONE\nFINISH 0\n");
    /* Malformed ext-values. */
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''a%2\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''a%zz\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8'a\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=a.txt\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=KOI8-R''a\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=\"UTF-8''a\"\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''a'b\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8'e n'a\r\n\r\n" DL "--", "", -EBADMSG);
    /* Invalid UTF-8: a lone continuation byte, an overlong, a surrogate, a truncated sequence. */
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''%80\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''%C0%AF\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''%ED%A0%80\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''%E2%82\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''%F4%90%80%80\r\n\r\n" DL "--", "",
               -EBADMSG);
    /* Control characters, encoded or not, never reach a file name. */
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''a%0D%0Ab\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''a%00b\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename=\"a\tb\"\r\n\r\n" DL "--", "", -EBADMSG);
    /* Two of the same parameter are ambiguous. */
    expect_err("--" B "\r\n" CD "name=f; filename*=UTF-8''a; filename*=UTF-8''b\r\n\r\n" DL "--",
               "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; filename=a; filename=b\r\n\r\n" DL "--", "", -EBADMSG);
    expect_err("--" B "\r\n" CD "name=f; name=g\r\n\r\n" DL "--", "", -EBADMSG);
}

static void test_quoted_filename(void **state)
{
    (void)state;
    expect("--" B "\r\n" CD "name=\"my \\\"field\\\"\"; filename=\"say \\\"hi\\\".txt\"\r\n"
           "\r\n" DL "\r\n" CD "name=\"w\"; filename=\"C:\\Users\\me\\a.txt\"\r\n"
           "\r\n" DL "\r\n" CD "name=\"w\"; filename=\"back\\\\slash\\\\\"\r\n"
           "\r\n" DL "\r\n" CD "name=w; filename=plain.txt ; foo=\"bar;baz\";\r\n"
           "\r\n" DL "\r\n" CD "name=\"sp ace;=\"; filename=\"\xc3\xa9t\xc3\xa9.png\"\r\n"
           "\r\n" DL "--",
           "BEGIN name=[my \"field\"] file=1 filename=[say \"hi\".txt] ct=[]\nEND 0 []\n"
           "BEGIN name=[w] file=1 filename=[C:\\\\Users\\\\me\\\\a.txt] ct=[]\nEND 0 []\n"
           "BEGIN name=[w] file=1 filename=[back\\\\slash\\\\] ct=[]\nEND 0 []\n"
           "BEGIN name=[w] file=1 filename=[plain.txt] ct=[]\nEND 0 []\n"
           "BEGIN name=[sp ace;=] file=1 filename=[\\xc3\\xa9t\\xc3\\xa9.png] ct=[]\nEND 0 []\n"
           "DONE\nFINISH 0\n");
    /* An escaped quote does not end the string. */
    expect_err("--" B "\r\n" CD "name=\"a\\\"\r\n\r\n" DL "--", "", -EBADMSG);
}

/* Header names and the disposition type are case-insensitive; other headers are skipped. */
static void test_header_forms(void **state)
{
    (void)state;
    expect("--" B "\r\nX-Other: 1\r\ncontent-disposition:FORM-DATA;NAME=a;FileName=b.c\r\n"
           "CONTENT-TYPE:  image/png ; x=1 \t\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           "data" DL "--",
           "BEGIN name=[a] file=1 filename=[b.c] ct=[image/png ; x=1]\n"
           "END 4 [data]\nDONE\nFINISH 0\n");
    /* A tab inside a value is legal and kept. */
    expect("--" B "\r\n" CD "name=a\r\nContent-Type: text/plain;\tcharset=utf-8\r\n\r\n" DL "--",
           "BEGIN name=[a] file=0 filename=[] ct=[text/plain;\\x09charset=utf-8]\n"
           "END 0 []\nDONE\nFINISH 0\n");
}

static void test_bad_headers(void **state)
{
    static const char *const bad[] = {
        /* No Content-Disposition at all, or an empty header block. */
        "--" B "\r\nContent-Type: text/plain\r\n\r\nx" DL "--",
        "--" B "\r\n\r\nx" DL "--",
        /* Not form-data, or no name. */
        "--" B "\r\nContent-Disposition: attachment; name=a\r\n\r\n" DL "--",
        "--" B "\r\nContent-Disposition: form-datax; name=a\r\n\r\n" DL "--",
        "--" B "\r\nContent-Disposition: form-data\r\n\r\n" DL "--",
        "--" B "\r\nContent-Disposition: form-data; filename=a\r\n\r\n" DL "--",
        "--" B "\r\nContent-Disposition: \r\n\r\n" DL "--",
        /* Twice the same header. */
        "--" B "\r\n" CD "name=a\r\n" CD "name=b\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n" DL "--",
        /* Malformed lines: bare LF, bare CR, folding, no colon, empty name, space before colon. */
        "--" B "\r\n" CD "name=a\nX: y\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\n\n" DL "--",
        "--" B "\r\n" CD "name=a\rX: y\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\n foo\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\nfoo\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\n: x\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\nX : y\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\r\nX: a\x01z\r\n\r\n" DL "--",
        /* Malformed parameters. */
        "--" B "\r\n" CD "name=\"a\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a b\r\n\r\n" DL "--",
        "--" B "\r\n" CD "=a\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a;;\r\n\r\n" DL "--",
        "--" B "\r\n" CD "name=a\\b\r\n\r\n" DL "--",
        "--" B "\r\nContent-Disposition: form-data name=a\r\n\r\n" DL "--",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *got = run_whole_b(B, bad[i], strlen(bad[i]));
        if (strcmp(got, "ERR -74\n") != 0)
            fail_msg("case %zu: %s", i, got);
        free(got);
        check_splits_b(B, bad[i], strlen(bad[i]));
    }
    /* The second part is bad: the first is reported in full before the error. */
    expect_err("--" B "\r\n" CD "name=a\r\n\r\nA" DL "\r\nBad\r\n\r\nB" DL "--",
               "BEGIN name=[a] file=0 filename=[] ct=[]\nEND 1 [A]\n", -EBADMSG);
}

static void test_boundary(void **state)
{
    static const struct {
        const char *in;
        const char *want; /* NULL: -EBADMSG */
    } cases[] = {
        {"multipart/form-data; boundary=abc", "abc"},
        {"Multipart/Form-Data;BOUNDARY=abc", "abc"},
        {"  multipart/form-data ; charset=utf-8; boundary=\"a b:c\" ; x=\"y;z\"  ", "a b:c"},
        {"multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
         "----WebKitFormBoundary7MA4YWxkTrZu0gW"},
        {"multipart/form-data; boundary=----=_Part_0_1.2", "----=_Part_0_1.2"},
        {"multipart/form-data; boundary=\"'()+_,-./:=?\"", "'()+_,-./:=?"},
        {"multipart/form-data; boundary=1234567890123456789012345678901234567890123456789012345678"
         "901234567890",
         "1234567890123456789012345678901234567890123456789012345678901234567890"},
        {"multipart/form-data; boundary=abc;", "abc"},
        {"multipart/form-data; boundary=1234567890123456789012345678901234567890123456789012345678"
         "9012345678901",
         NULL},
        {"multipart/form-data; boundary=\"\"", NULL},
        {"multipart/form-data; boundary=", NULL},
        {"multipart/form-data; boundary", NULL},
        {"multipart/form-data", NULL},
        {"multipart/form-data;", NULL},
        {"multipart/mixed; boundary=abc", NULL},
        {"multipart/form-data2; boundary=abc", NULL},
        {"text/plain; boundary=abc", NULL},
        {"", NULL},
        {"multipart/form-data; boundary=\"abc \"", NULL},
        {"multipart/form-data; boundary=\"a\\\"b\"", NULL},
        {"multipart/form-data; boundary=\"a\rb\"", NULL},
        {"multipart/form-data; boundary=a*b", NULL},
        {"multipart/form-data; boundary=\"abc", NULL},
        {"multipart/form-data; boundary=abc; boundary=abc", NULL},
        {"multipart/form-data; boundary=abc x", NULL},
        {"multipart/form-data boundary=abc", NULL},
        {"multipart/form-data; =abc", NULL},
    };
    char out[MP_BOUNDARY_MAX + 1];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].in);
        char *in = malloc(len + 1);
        int rc;

        assert_non_null(in);
        memcpy(in, cases[i].in, len);
        memset(out, 'Z', sizeof(out));
        rc = mp_boundary(in, len, out);
        if (cases[i].want == NULL) {
            if (rc != -EBADMSG)
                fail_msg("case %zu [%s]: %d", i, cases[i].in, rc);
        } else {
            if (rc != (int)strlen(cases[i].want) || strcmp(out, cases[i].want) != 0)
                fail_msg("case %zu [%s]: %d [%s]", i, cases[i].in, rc, rc >= 0 ? out : "");
        }
        free(in);
    }
    assert_int_equal(mp_boundary(NULL, 0, out), -EBADMSG);
}

static void test_init_invalid(void **state)
{
    static const char *const bad[] = {"", "a\rb", "a\nb", "abc ", "a*b", "\x80"};
    struct mp_parser *p = malloc(sizeof(*p));
    struct mp_event ev;
    size_t i;

    (void)state;
    assert_non_null(p);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mp_init(p, bad[i], strlen(bad[i]));
        assert_int_equal(mp_feed(p, "--x\r\n", 5, &ev), -EINVAL);
        assert_int_equal(ev.kind, MP_EV_NONE);
        assert_int_equal(mp_finish(p), -EINVAL);
    }
    mp_init(p, "x", 71);
    assert_int_equal(mp_finish(p), -EINVAL);
    mp_init(p, "a b", 3);
    assert_int_equal(mp_feed(p, "--a b--", 7, &ev), 7);
    assert_int_equal(ev.kind, MP_EV_DONE);
    free(p);
}

/* After DONE everything is epilogue, fed in any pieces. */
static void test_after_done(void **state)
{
    struct drv d;

    (void)state;
    drv_init(&d);
    assert_int_equal(drive_str(&d, "--" B "\r\n" CD "name=a\r\n\r\nA" DL "--"), 0);
    assert_true(d.done);
    assert_int_equal(drive_str(&d, DL "\r\n" CD "name=b\r\n\r\n"), 0);
    assert_int_equal(drive_str(&d, "\r\n--" B), 0);
    assert_int_equal(d.begins, 1);
    assert_int_equal(mp_finish(d.p), 0);
    drv_free(&d);
}

/* A held-back look-alike comes back from the parser's buffer; the rest from the input. */
static void test_carry_spans(void **state)
{
    const char *in = "--" B "\r\n" CD "name=a\r\n\r\nabc\r\n--XyZ-4x" DL "--";
    size_t len = strlen(in);
    size_t cut = strlen("--" B "\r\n" CD "name=a\r\n\r\nabc\r\n--XyZ-");
    struct drv d;

    (void)state;
    drv_init(&d);
    drive(&d, in, len);
    assert_int_equal(d.carried, 0);
    assert_int_equal(d.spans, 1);
    drv_free(&d);

    drv_init(&d);
    drive(&d, in, cut);
    assert_int_equal(d.p->hold, 8);
    assert_int_equal(d.spans, 1);
    drive(&d, in + cut, len - cut);
    assert_int_equal(d.carried, 1);
    assert_int_equal(d.spans, 3);
    drv_finish(&d);
    assert_string_equal(tx_str(&d.tx), "BEGIN name=[a] file=0 filename=[] ct=[]\n"
                                       "END 13 [abc\\r\\n--XyZ-4x]\n"
                                       "DONE\nFINISH 0\n");
    drv_free(&d);
}

/* Large bodies come in few, large spans: one per buffer, more only at a CR. */
static void test_large_body(void **state)
{
    size_t size = 1 << 20;
    size_t head = strlen("--" B "\r\n" CD "name=a; filename=big\r\n\r\n");
    size_t len = head + size + strlen(DL "--");
    char *in = malloc(len);
    struct drv d;
    size_t i;

    (void)state;
    assert_non_null(in);
    memcpy(in, "--" B "\r\n" CD "name=a; filename=big\r\n\r\n", head);
    for (i = 0; i < size; i++)
        in[head + i] = (char)('a' + i % 26);
    memcpy(in + head + size, DL "--", strlen(DL "--"));
    drv_init(&d);
    for (i = 0; i < len; i += 4096)
        drive(&d, in + i, len - i < 4096 ? len - i : 4096);
    assert_true(d.done);
    assert_true(d.spans <= len / 4096 + 2);
    assert_int_equal(d.carried, 0);
    assert_int_equal(mp_finish(d.p), 0);
    drv_free(&d);
    free(in);
}

/* xorshift64*: deterministic bytes for the random bodies. */
static uint64_t rnd_state;

static uint64_t rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 0x2545f4914f6cdd1dULL;
}

static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* A growing byte buffer. */
struct bytes {
    char *p;
    size_t len;
    size_t cap;
};

static void put(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void puts_(struct bytes *b, const char *s)
{
    put(b, s, strlen(s));
}

/*
 * Where a delimiter of boundary starts in s[0..n), looking at most at the
 * bytes after: a simple re-statement of the rule, for checking the generator.
 */
static bool delim_at(const char *s, size_t n, const char *boundary)
{
    size_t blen = strlen(boundary);
    size_t k;
    size_t pad = 0;

    if (n < 4 + blen || memcmp(s, "\r\n--", 4) != 0 || memcmp(s + 4, boundary, blen) != 0)
        return false;
    k = 4 + blen;
    if (k + 1 < n && s[k] == '-' && s[k + 1] == '-')
        return true;
    while (k < n && (s[k] == ' ' || s[k] == '\t') && pad < MP_PAD_MAX + 1) {
        k++;
        pad++;
    }
    return pad <= MP_PAD_MAX && k + 1 < n && s[k] == '\r' && s[k + 1] == '\n';
}

/* Random part data, rich in things that resemble the delimiter. */
static void gen_data(struct bytes *b, const char *boundary)
{
    size_t blen = strlen(boundary);
    size_t pieces = rnd_below(12);
    size_t i;

    for (i = 0; i < pieces; i++) {
        char tmp[256];
        size_t n;
        size_t k;

        switch (rnd_below(9)) {
        case 0: /* random bytes, NULs and CRs among them */
            n = rnd_below(sizeof(tmp));
            for (k = 0; k < n; k++)
                tmp[k] = (char)rnd();
            put(b, tmp, n);
            break;
        case 1:
            n = rnd_below(16);
            memset(tmp, rnd_below(2) ? '\0' : '\r', n);
            put(b, tmp, n);
            break;
        case 2: /* "--" boundary, no CRLF */
            puts_(b, "--");
            puts_(b, boundary);
            break;
        case 3: /* a prefix of the delimiter */
            puts_(b, "\r\n--");
            put(b, boundary, rnd_below(blen + 1));
            break;
        case 4: /* the delimiter and a wrong byte */
            puts_(b, "\r\n--");
            puts_(b, boundary);
            put(b, &"x-\r\n \t\0"[rnd_below(7)], 1);
            break;
        case 5: /* the delimiter, padding, and no CRLF */
            puts_(b, "\r\n--");
            puts_(b, boundary);
            n = rnd_below(MP_PAD_MAX + 3);
            for (k = 0; k < n; k++)
                tmp[k] = rnd_below(2) ? ' ' : '\t';
            put(b, tmp, n);
            puts_(b, rnd_below(2) ? "\r" : "\rx");
            break;
        case 6: /* too much padding: data */
            puts_(b, "\r\n--");
            puts_(b, boundary);
            memset(tmp, ' ', MP_PAD_MAX + 1);
            put(b, tmp, MP_PAD_MAX + 1);
            puts_(b, "\r\n");
            break;
        case 7:
            puts_(b, "\r\n-\r\n--\r\r\n");
            break;
        default:
            puts_(b, "plain text ");
            break;
        }
    }
}

/*
 * Break every real delimiter that starts inside b[from..), followed by next:
 * its CR becomes a NUL, which no delimiter holds, so none appears instead.
 */
static void defuse(struct bytes *b, size_t from, const char *boundary, const char *next)
{
    size_t end = b->len;
    size_t i;

    puts_(b, next);
    for (i = from; i < end; i++)
        if (b->p[i] == '\r' && delim_at(b->p + i, b->len - i, boundary))
            b->p[i] = '\0';
    b->len = end;
}

static void test_random(void **state)
{
    static const char *const boundaries[] = {
        "B",
        "xyz",
        "a b",
        "ends-",
        "----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "1234567890123456789012345678901234567890123456789012345678901234567890",
    };
    int round;

    (void)state;
    rnd_state = 0x9e3779b97f4a7c15ULL;
    for (round = 0; round < 60; round++) {
        const char *boundary = boundaries[round % 6];
        struct bytes in = {NULL, 0, 0};
        struct tx want = {NULL, 0, 0};
        size_t parts = 1 + rnd_below(4);
        size_t i;
        char *got;

        if (rnd_below(2)) {
            /* A preamble, itself free of delimiters (the body starts after a virtual CRLF). */
            puts_(&in, "\r\n");
            gen_data(&in, boundary);
            defuse(&in, 0, boundary, "\r\n--");
            if (in.p[0] != '\r')
                in.p[2] = '\0'; /* it opened with "--" boundary */
            memmove(in.p, in.p + 2, in.len - 2);
            in.len -= 2;
            puts_(&in, "\r\n");
        }
        for (i = 0; i < parts; i++) {
            char head[160];
            char name[16];
            char fname[32];
            bool file = rnd_below(2);
            size_t start;
            size_t pad = rnd_below(4);

            snprintf(name, sizeof(name), "p%zu", i);
            fname[0] = '\0';
            if (file)
                snprintf(fname, sizeof(fname), "f%zu.bin", i);
            puts_(&in, "--");
            puts_(&in, boundary);
            while (pad-- > 0)
                puts_(&in, rnd_below(2) ? " " : "\t");
            snprintf(head, sizeof(head), "\r\n" CD "name=\"%s\"%s%s%s\r\n%s\r\n", name,
                     file ? "; filename=\"" : "", fname, file ? "\"" : "",
                     file ? "Content-Type: application/octet-stream\r\n" : "");
            puts_(&in, head);
            start = in.len;
            gen_data(&in, boundary);
            defuse(&in, start, boundary, "\r\n--");
            tx_part(&want, name, fname, file, file ? "application/octet-stream" : "", in.p + start,
                    in.len - start);
            puts_(&in, "\r\n");
        }
        puts_(&in, "--");
        puts_(&in, boundary);
        puts_(&in, "--");
        tx_add(&want, "DONE\nFINISH 0\n");
        if (rnd_below(2))
            gen_data(&in, boundary);

        got = run_whole_b(boundary, in.p, in.len);
        if (strcmp(got, tx_str(&want)) != 0)
            fail_msg("round %d:\n%s\n--- want:\n%s", round, got, tx_str(&want));
        free(got);
        check_splits_b(boundary, in.p, in.len);
        /* Some random three-piece splits, for the longer bodies. */
        for (i = 0; i < 64 && in.len > 0; i++) {
            size_t cut[2] = {rnd_below(in.len + 1), rnd_below(in.len + 1)};
            if (cut[0] > cut[1]) {
                size_t t = cut[0];
                cut[0] = cut[1];
                cut[1] = t;
            }
            got = run_cuts_b(boundary, in.p, in.len, cut, 2);
            assert_string_equal(got, tx_str(&want));
            free(got);
        }
        free(in.p);
        free(want.s);
    }
}

static void test_state_name(void **state)
{
    (void)state;
    assert_string_equal(mp_state_name(MP_S_PREAMBLE), "preamble");
    assert_string_equal(mp_state_name(MP_S_HEADERS), "headers");
    assert_string_equal(mp_state_name(MP_S_BODY), "body");
    assert_string_equal(mp_state_name(MP_S_CLOSE), "close");
    assert_string_equal(mp_state_name(MP_S_DONE), "done");
    assert_string_equal(mp_state_name(MP_S_ERROR), "error");
    assert_string_equal(mp_state_name((enum mp_state)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_and_file),  cmocka_unit_test(test_five_files),
        cmocka_unit_test(test_empty_body),      cmocka_unit_test(test_lookalikes),
        cmocka_unit_test(test_crlf_edges),      cmocka_unit_test(test_preamble_epilogue),
        cmocka_unit_test(test_padding),         cmocka_unit_test(test_missing_final),
        cmocka_unit_test(test_headers_too_big), cmocka_unit_test(test_field_limits),
        cmocka_unit_test(test_filename_ext),    cmocka_unit_test(test_quoted_filename),
        cmocka_unit_test(test_header_forms),    cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_boundary),        cmocka_unit_test(test_init_invalid),
        cmocka_unit_test(test_after_done),      cmocka_unit_test(test_carry_spans),
        cmocka_unit_test(test_large_body),      cmocka_unit_test(test_random),
        cmocka_unit_test(test_state_name),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

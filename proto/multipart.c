/*
 * multipart: the delimiter scan and the part header parser.
 *
 * In a body the scan jumps from CR to CR with memchr() and compares the
 * delimiter only there. That is enough because a boundary holds no CR: a
 * delimiter can only start at a CR, and the bytes of a failed match (CRLF
 * "--" boundary, padding, then CR or '-') contain no CR but their first and,
 * possibly, their last, so no other delimiter can start inside one. When a
 * buffer ends inside a possible delimiter the rest of the buffer is copied to
 * carry and consumed; the next buffer either completes the delimiter or
 * turns the held bytes back into data, reported from carry.
 *
 * The first delimiter may come without its CRLF: mp_init() puts a CRLF in
 * carry, as if the body had started with one, and the preamble (which is
 * never reported) swallows it when the body does not open with "--" boundary.
 */
#include "proto/multipart.h"

#include <errno.h>
#include <string.h>

/* The outcome of matching input against the delimiter. */
enum match {
    M_FAIL,  /* not a delimiter */
    M_MORE,  /* a delimiter so far: need more bytes */
    M_DELIM, /* a delimiter line, CRLF included */
    M_CLOSE, /* a close delimiter, the trailing "--" included */
};

/* RFC 2046 bchars, space aside. */
static bool is_bchar_nospace(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("'()+_,-./:=?", c) != NULL);
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* RFC 8187 attr-char. */
static bool is_attr_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$&+-.^_`|~", c) != NULL);
}

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static size_t skip_ows(const char *s, size_t i, size_t n)
{
    while (i < n && is_ows(s[i]))
        i++;
    return i;
}

/* s[0..n) equals the lower-case literal lit, ASCII case-insensitively. */
static bool ieq(const char *s, size_t n, const char *lit)
{
    size_t i;

    if (strlen(lit) != n)
        return false;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1..MP_BOUNDARY_MAX bchars, the last not a space. */
static bool boundary_ok(const char *b, size_t n)
{
    size_t i;

    if (n == 0 || n > MP_BOUNDARY_MAX || b[n - 1] == ' ')
        return false;
    for (i = 0; i < n; i++)
        if (b[i] != ' ' && !is_bchar_nospace((unsigned char)b[i]))
            return false;
    return true;
}

/* Well-formed UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        unsigned lo = 0x80;
        unsigned hi = 0xbf;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return false;
        i += k + 1;
    }
    return true;
}

/*
 * One parameter of a header value: OWS ";" OWS name OWS "=" OWS value, the
 * value a quoted-string or a run of visible ASCII other than ";", '"' and
 * '\'. Spans point into the value.
 */
struct param {
    const char *name; /* the parameter name, a token */
    size_t nlen;      /* bytes in name */
    const char *val;  /* the value, inside the quotes if quoted, still escaped */
    size_t vlen;      /* bytes in val */
    bool quoted;      /* val came from a quoted-string */
};

/* Parse the parameter at s[*i..n). Returns 1 and fills *pr, 0 at the end, or -EBADMSG. */
static int next_param(const char *s, size_t n, size_t *i, struct param *pr)
{
    size_t k = skip_ows(s, *i, n);
    size_t start;

    if (k == n)
        return 0;
    if (s[k] != ';')
        return -EBADMSG;
    k = skip_ows(s, k + 1, n);
    if (k == n) {
        /* A trailing ";" is common and harmless. */
        *i = k;
        return 0;
    }
    start = k;
    while (k < n && is_tchar((unsigned char)s[k]))
        k++;
    if (k == start)
        return -EBADMSG;
    pr->name = s + start;
    pr->nlen = k - start;
    k = skip_ows(s, k, n);
    if (k == n || s[k] != '=')
        return -EBADMSG;
    k = skip_ows(s, k + 1, n);
    if (k < n && s[k] == '"') {
        start = ++k;
        while (k < n && s[k] != '"') {
            /* A backslash pairs with the next byte, whatever it is. */
            if (s[k] == '\\' && ++k == n)
                return -EBADMSG;
            k++;
        }
        if (k == n)
            return -EBADMSG;
        pr->val = s + start;
        pr->vlen = k - start;
        pr->quoted = true;
        k++;
    } else {
        start = k;
        while (k < n && s[k] > 0x20 && s[k] < 0x7f && s[k] != ';' && s[k] != '"' && s[k] != '\\')
            k++;
        if (k == start)
            return -EBADMSG;
        pr->val = s + start;
        pr->vlen = k - start;
        pr->quoted = false;
    }
    *i = k;
    return 1;
}

/*
 * Decode a parameter value into out[0..cap] (NUL-terminated), or only
 * measure it when out is NULL. In a quoted value "\"" and "\\" stand for the
 * second byte; any other backslash is kept, since browsers send Windows paths
 * unescaped. Returns the length, -EMSGSIZE past cap, or -EBADMSG for a
 * control character.
 */
static int decode_plain(const struct param *pr, char *out, size_t cap)
{
    size_t len = 0;
    size_t i;

    for (i = 0; i < pr->vlen; i++) {
        unsigned char c = (unsigned char)pr->val[i];

        if (pr->quoted && c == '\\' && i + 1 < pr->vlen &&
            (pr->val[i + 1] == '"' || pr->val[i + 1] == '\\'))
            c = (unsigned char)pr->val[++i];
        if (is_ctl(c))
            return -EBADMSG;
        if (len == cap)
            return -EMSGSIZE;
        if (out != NULL)
            out[len] = (char)c;
        len++;
    }
    if (out != NULL)
        out[len] = '\0';
    return (int)len;
}

/*
 * Decode an RFC 8187 ext-value (charset'language'pct-encoded) into UTF-8 in
 * out[0..cap], NUL-terminated. UTF-8 and ISO-8859-1 are understood. Returns
 * the length, -EMSGSIZE past cap, or -EBADMSG for another charset, a
 * malformed value, invalid UTF-8 or a control character.
 */
static int decode_ext(const struct param *pr, char *out, size_t cap)
{
    const char *v = pr->val;
    size_t n = pr->vlen;
    const char *q1;
    const char *q2;
    bool latin1;
    size_t len = 0;
    size_t i;

    if (pr->quoted)
        return -EBADMSG;
    q1 = memchr(v, '\'', n);
    if (q1 == NULL)
        return -EBADMSG;
    if (ieq(v, (size_t)(q1 - v), "utf-8"))
        latin1 = false;
    else if (ieq(v, (size_t)(q1 - v), "iso-8859-1"))
        latin1 = true;
    else
        return -EBADMSG;
    q2 = memchr(q1 + 1, '\'', n - (size_t)(q1 + 1 - v));
    if (q2 == NULL)
        return -EBADMSG;
    for (i = (size_t)(q1 + 1 - v); i < (size_t)(q2 - v); i++) {
        unsigned char c = (unsigned char)v[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-'))
            return -EBADMSG;
    }
    for (i = (size_t)(q2 + 1 - v); i < n; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c == '%') {
            int hi;
            int lo;
            if (n - i < 3 || (hi = hexval((unsigned char)v[i + 1])) < 0 ||
                (lo = hexval((unsigned char)v[i + 2])) < 0)
                return -EBADMSG;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (!is_attr_char(c)) {
            return -EBADMSG;
        }
        if (is_ctl(c))
            return -EBADMSG;
        if (latin1 && c >= 0x80) {
            if (cap - len < 2)
                return -EMSGSIZE;
            out[len++] = (char)(0xc0 | c >> 6);
            out[len++] = (char)(0x80 | (c & 0x3f));
            continue;
        }
        if (len == cap)
            return -EMSGSIZE;
        out[len++] = (char)c;
    }
    if (!latin1 && !utf8_ok((const unsigned char *)out, len))
        return -EBADMSG;
    out[len] = '\0';
    return (int)len;
}

/*
 * Content-Disposition: form-data with a name, and a filename and/or
 * filename*, into p->part. Duplicate parameters are refused: two readers
 * could pick different ones. Other parameters are ignored.
 */
static int parse_disposition(struct mp_part *pt, const char *v, size_t n)
{
    struct param pr;
    bool have_name = false;
    bool have_plain = false;
    bool have_ext = false;
    size_t k = 0;
    int rc;

    while (k < n && is_tchar((unsigned char)v[k]))
        k++;
    if (!ieq(v, k, "form-data"))
        return -EBADMSG;
    while ((rc = next_param(v, n, &k, &pr)) > 0) {
        if (ieq(pr.name, pr.nlen, "name")) {
            if (have_name)
                return -EBADMSG;
            have_name = true;
            rc = decode_plain(&pr, pt->name, MP_NAME_MAX);
            if (rc < 0)
                return rc;
            pt->name_len = (uint16_t)rc;
        } else if (ieq(pr.name, pr.nlen, "filename")) {
            if (have_plain)
                return -EBADMSG;
            have_plain = true;
            /* filename* wins (RFC 6266 4.3); a plain filename after it is only checked. */
            rc = decode_plain(&pr, have_ext ? NULL : pt->filename, MP_FILENAME_MAX);
            if (rc < 0)
                return rc;
            if (!have_ext)
                pt->filename_len = (uint16_t)rc;
        } else if (ieq(pr.name, pr.nlen, "filename*")) {
            if (have_ext)
                return -EBADMSG;
            have_ext = true;
            rc = decode_ext(&pr, pt->filename, MP_FILENAME_MAX);
            if (rc < 0)
                return rc;
            pt->filename_len = (uint16_t)rc;
        }
    }
    if (rc < 0)
        return rc;
    if (!have_name)
        return -EBADMSG;
    pt->is_file = have_plain || have_ext;
    return 0;
}

/*
 * Parse a complete header block, b[0..n) (lines ending in CRLF, the blank
 * line excluded), into p->part.
 */
static int parse_block(struct mp_parser *p, const char *b, size_t n)
{
    struct mp_part *pt = &p->part;
    bool have_cd = false;
    bool have_ct = false;
    size_t i = 0;

    pt->name[0] = '\0';
    pt->filename[0] = '\0';
    pt->content_type[0] = '\0';
    pt->name_len = 0;
    pt->filename_len = 0;
    pt->content_type_len = 0;
    pt->is_file = false;
    while (i < n) {
        const char *line = b + i;
        const char *nl = memchr(line, '\n', n - i);
        size_t len = (size_t)(nl - line) - 1; /* without the CRLF */
        size_t colon;
        size_t vs;
        size_t ve;
        size_t k;
        int rc;

        i += len + 2;
        for (k = 0; k < len; k++)
            if (is_ctl((unsigned char)line[k]) && line[k] != '\t')
                return -EBADMSG;
        for (colon = 0; colon < len && is_tchar((unsigned char)line[colon]); colon++)
            ;
        /* Also refuses obsolete line folding: a line that starts with whitespace. */
        if (colon == 0 || colon == len || line[colon] != ':')
            return -EBADMSG;
        vs = skip_ows(line, colon + 1, len);
        ve = len;
        while (ve > vs && is_ows(line[ve - 1]))
            ve--;
        if (ieq(line, colon, "content-disposition")) {
            if (have_cd)
                return -EBADMSG;
            have_cd = true;
            rc = parse_disposition(pt, line + vs, ve - vs);
            if (rc < 0)
                return rc;
        } else if (ieq(line, colon, "content-type")) {
            if (have_ct)
                return -EBADMSG;
            have_ct = true;
            if (ve - vs > MP_CTYPE_MAX)
                return -EMSGSIZE;
            memcpy(pt->content_type, line + vs, ve - vs);
            pt->content_type[ve - vs] = '\0';
            pt->content_type_len = (uint16_t)(ve - vs);
        }
    }
    return have_cd ? 0 : -EBADMSG;
}

int mp_boundary(const char *content_type, size_t len, char out[MP_BOUNDARY_MAX + 1])
{
    const char *s = content_type;
    struct param pr;
    bool found = false;
    size_t start = skip_ows(s, 0, len);
    size_t k = start;
    int blen = 0;
    int rc;

    if (len == 0)
        return -EBADMSG;
    while (k < len && s[k] != ';' && !is_ows(s[k]))
        k++;
    if (!ieq(s + start, k - start, "multipart/form-data"))
        return -EBADMSG;
    while ((rc = next_param(s, len, &k, &pr)) > 0) {
        if (!ieq(pr.name, pr.nlen, "boundary"))
            continue;
        if (found)
            return -EBADMSG;
        found = true;
        blen = decode_plain(&pr, out, MP_BOUNDARY_MAX);
        if (blen < 0 || !boundary_ok(out, (size_t)blen))
            return -EBADMSG;
    }
    if (rc < 0 || !found)
        return -EBADMSG;
    return blen;
}

void mp_init(struct mp_parser *p, const char *boundary, size_t blen)
{
    p->state = MP_S_PREAMBLE;
    p->err = 0;
    p->hlen = 0;
    p->line = 0;
    p->parts = 0;
    p->files = 0;
    p->part_bytes = 0;
    memset(&p->part, 0, sizeof(p->part));
    if (!boundary_ok(boundary, blen)) {
        p->state = MP_S_ERROR;
        p->err = -EINVAL;
        p->dlen = 0;
        p->hold = 0;
        return;
    }
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, blen);
    p->dlen = (uint8_t)(4 + blen);
    /* As if the body began with CRLF, so that it may open with "--" boundary. */
    memcpy(p->carry, "\r\n", 2);
    p->hold = 2;
}

/*
 * Extend a match of the delimiter by one byte: pos bytes matched so far, the
 * last of them last (when pos > 0), c the next.
 */
static enum match dl_next(const struct mp_parser *p, size_t pos, char last, char c)
{
    if (pos < p->dlen)
        return c == p->delim[pos] ? M_MORE : M_FAIL;
    if (pos > p->dlen) {
        if (last == '\r')
            return c == '\n' ? M_DELIM : M_FAIL;
        if (last == '-')
            return c == '-' ? M_CLOSE : M_FAIL;
        /* last was transport padding */
    }
    if (c == '\r')
        return M_MORE;
    if (c == '-')
        return pos == p->dlen ? M_MORE : M_FAIL;
    if (is_ows(c))
        return pos - p->dlen < MP_PAD_MAX ? M_MORE : M_FAIL;
    return M_FAIL;
}

/*
 * Match s[0..n) against the delimiter from pos bytes matched (the last of
 * them last). On M_DELIM and M_CLOSE *used is the bytes of s taken; on M_MORE
 * all of s was.
 */
static enum match dl_run(const struct mp_parser *p, size_t pos, char last, const char *s, size_t n,
                         size_t *used)
{
    size_t i = 0;

    if (pos < p->dlen) {
        i = p->dlen - pos < n ? p->dlen - pos : n;
        if (memcmp(s, p->delim + pos, i) != 0)
            return M_FAIL;
    }
    for (; i < n; i++) {
        enum match r = dl_next(p, pos + i, i > 0 ? s[i - 1] : last, s[i]);

        if (r == M_FAIL)
            return M_FAIL;
        if (r != M_MORE) {
            *used = i + 1;
            return r;
        }
    }
    *used = n;
    return M_MORE;
}

static void report_data(struct mp_parser *p, struct mp_event *ev, const char *at, size_t len)
{
    ev->kind = MP_EV_DATA;
    ev->data.p = at;
    ev->data.len = len;
    p->part_bytes += len;
}

/* A delimiter was matched in the preamble or a body. */
static void delimiter(struct mp_parser *p, enum match r, struct mp_event *ev)
{
    if (p->state == MP_S_BODY) {
        ev->kind = MP_EV_PART_END;
        p->state = r == M_CLOSE ? MP_S_CLOSE : MP_S_HEADERS;
    } else if (r == M_CLOSE) {
        /* "--" boundary "--" alone: a body without parts; the caller counts them. */
        ev->kind = MP_EV_DONE;
        p->state = MP_S_DONE;
    } else {
        p->state = MP_S_HEADERS;
    }
    p->hlen = 0;
    p->line = 0;
}

/* The preamble or a part body: report data up to a delimiter. */
static ssize_t body_step(struct mp_parser *p, const char *s, size_t n, struct mp_event *ev)
{
    bool body = p->state == MP_S_BODY;
    size_t used = 0;
    size_t i = 0;
    enum match r;

    if (p->hold > 0) {
        r = dl_run(p, p->hold, p->carry[p->hold - 1], s, n, &used);
        if (r == M_MORE) {
            if (n > sizeof(p->carry) - p->hold)
                return -EPROTO; /* dl_next() bounds a match; not reached */
            memcpy(p->carry + p->hold, s, n);
            p->hold += (uint8_t)n;
            return (ssize_t)n;
        }
        if (r == M_FAIL) {
            /*
             * Every held byte is data: a new delimiter could only start at a
             * held CR, the first (which failed) or a last one after the
             * padding, and that one failed on the byte after it. s is
             * scanned afresh on the next call.
             */
            if (body)
                report_data(p, ev, p->carry, p->hold);
            p->hold = 0;
            return 0;
        }
        p->hold = 0;
        delimiter(p, r, ev);
        return (ssize_t)used;
    }
    for (;;) {
        const char *cr = memchr(s + i, '\r', n - i);
        size_t j;

        if (cr == NULL) {
            if (body && n > 0)
                report_data(p, ev, s, n);
            return (ssize_t)n;
        }
        j = (size_t)(cr - s);
        if (j + 1 < n && s[j + 1] != '\n') {
            i = j + 1;
            continue;
        }
        r = dl_run(p, 0, '\0', s + j, n - j, &used);
        if (r == M_FAIL) {
            i = j + 1;
            continue;
        }
        if (r == M_MORE) {
            memcpy(p->carry, s + j, n - j);
            p->hold = (uint8_t)(n - j);
            if (body && j > 0)
                report_data(p, ev, s, j);
            return (ssize_t)n;
        }
        if (body && j > 0) {
            /* Data first; the next call finds the delimiter again, at 0. */
            report_data(p, ev, s, j);
            return (ssize_t)j;
        }
        delimiter(p, r, ev);
        return (ssize_t)(j + used);
    }
}

/* A part's header block: copy lines into hbuf up to the blank line, then parse. */
static ssize_t head_step(struct mp_parser *p, const char *s, size_t n, struct mp_event *ev)
{
    const char *nl = memchr(s, '\n', n);
    size_t take = nl != NULL ? (size_t)(nl - s) + 1 : n;
    int rc;

    if (take > MP_HEADER_MAX - p->hlen)
        return -EMSGSIZE;
    memcpy(p->hbuf + p->hlen, s, take);
    p->hlen += (uint32_t)take;
    if (nl == NULL)
        return (ssize_t)take;
    if (p->hlen - p->line < 2 || p->hbuf[p->hlen - 2] != '\r')
        return -EBADMSG;
    if (p->hlen - p->line > 2) {
        p->line = p->hlen;
        return (ssize_t)take;
    }
    rc = parse_block(p, p->hbuf, p->line);
    if (rc < 0)
        return rc;
    p->state = MP_S_BODY;
    p->parts++;
    if (p->part.is_file)
        p->files++;
    p->part_bytes = 0;
    ev->kind = MP_EV_PART_BEGIN;
    return (ssize_t)take;
}

ssize_t mp_feed(struct mp_parser *p, const char *data, size_t len, struct mp_event *ev)
{
    size_t off = 0;

    ev->kind = MP_EV_NONE;
    ev->data.p = NULL;
    ev->data.len = 0;
    ev->part = NULL;
    if (p->state == MP_S_ERROR)
        return p->err;
    for (;;) {
        ssize_t n;

        if (p->state == MP_S_CLOSE) {
            p->state = MP_S_DONE;
            ev->kind = MP_EV_DONE;
            break;
        }
        if (off == len)
            break;
        switch (p->state) {
        case MP_S_PREAMBLE:
        case MP_S_BODY:
            n = body_step(p, data + off, len - off, ev);
            break;
        case MP_S_HEADERS:
            n = head_step(p, data + off, len - off, ev);
            break;
        case MP_S_DONE:
            n = (ssize_t)(len - off);
            break;
        default:
            n = -EPROTO;
            break;
        }
        if (n < 0) {
            p->state = MP_S_ERROR;
            p->err = (int)n;
            ev->kind = MP_EV_NONE;
            ev->data.p = NULL;
            ev->data.len = 0;
            return n;
        }
        off += (size_t)n;
        if (ev->kind != MP_EV_NONE)
            break;
    }
    if (p->parts > 0)
        ev->part = &p->part;
    return (ssize_t)off;
}

int mp_finish(const struct mp_parser *p)
{
    switch (p->state) {
    case MP_S_CLOSE:
    case MP_S_DONE:
        return 0;
    case MP_S_ERROR:
        return p->err;
    default:
        return -EBADMSG;
    }
}

const char *mp_state_name(enum mp_state s)
{
    switch (s) {
    case MP_S_PREAMBLE:
        return "preamble";
    case MP_S_HEADERS:
        return "headers";
    case MP_S_BODY:
        return "body";
    case MP_S_CLOSE:
        return "close";
    case MP_S_DONE:
        return "done";
    case MP_S_ERROR:
        return "error";
    }
    return "unknown";
}
